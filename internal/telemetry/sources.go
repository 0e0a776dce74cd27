package telemetry

import (
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/meshspec"
	"github.com/meshwright/meshwright/internal/stages"
	"github.com/meshwright/meshwright/internal/traffic"
)

// Sources reads a pass's telemetry from the source a MeshInstallation names: Prometheus when
// spec.telemetry.prometheus is set, else the embedded source. It keeps the Prometheus client
// while its settings and Secrets are unchanged, and the embedded source's reads between passes.
type Sources struct {
	// Secrets reads the Secrets spec.telemetry.prometheus names (the API server: Secrets are
	// not cached).
	Secrets client.Reader
	// Embedded is the source without a Prometheus.
	Embedded *Embedded

	// MinInterval is how long a namespace's reading over a window is reused: a pass runs on
	// every pod event of a rollout, and the gates look again every ladder.TrafficPoll anyway.
	// Zero is DefaultMinInterval.
	MinInterval time.Duration
	// Clock tells when a reading was taken; nil is the real clock.
	Clock clock.PassiveClock

	mu      sync.Mutex
	prom    *Prometheus
	promKey [sha256.Size]byte
	recent  map[readKey]recentRead
}

// DefaultMinInterval is Sources.MinInterval's default.
const DefaultMinInterval = 10 * time.Second

// readKey names a reading: where from, of which namespace, over what window.
type readKey struct {
	source, namespace string
	window            time.Duration
}

// recentRead is a reading and when it was taken.
type recentRead struct {
	reading traffic.Reading
	at      time.Time
}

// reuse splits namespaces into those with a reading from source over window recent enough to
// reuse (returned in out) and those to read now.
func (s *Sources) reuse(source string, namespaces []string, phases map[string]time.Time, window time.Duration, now time.Time) (out map[string]traffic.Reading, toRead []string) {
	interval := s.MinInterval
	if interval == 0 {
		interval = DefaultMinInterval
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out = make(map[string]traffic.Reading, len(namespaces))
	for k, r := range s.recent {
		if now.Sub(r.at) >= interval {
			delete(s.recent, k) // stale: forget it, so the map holds only the last interval's
		}
	}
	for _, ns := range namespaces {
		if r, ok := s.recent[readKey{source, ns, window}]; ok && !judgedBefore(r.at, window, phases[ns], now) {
			out[ns] = r.reading
			continue
		}
		toRead = append(toRead, ns)
	}
	return out, toRead
}

// judgedBefore reports whether a reading taken at `at` would be judged as the phase's window when
// it is not: once a phase of the ladder that began at phase is a whole window old (the gate
// judges it: the observe window elapsed, the soak ended), a reading whose window began before
// the phase (taken before a dry-run started, say) is no evidence of it.
func judgedBefore(at time.Time, window time.Duration, phase, now time.Time) bool {
	return !now.Before(phase.Add(window)) && at.Add(-window).Before(phase)
}

// remember keeps readings for reuse, unless they say the source could not be read: a source
// that failed is asked again on the next pass.
func (s *Sources) remember(source string, readings map[string]traffic.Reading, window time.Duration, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.recent == nil {
		s.recent = map[readKey]recentRead{}
	}
	for ns, r := range readings {
		if r.Unavailable == "" && r.Unreachable == "" {
			s.recent[readKey{source, ns, window}] = recentRead{reading: r, at: now}
		}
	}
}

// Read reads the namespaces' traffic over the window. A reading is reused for MinInterval,
// unless the namespace's phase on the ladder, which began at phases[ns] (ladder.State.PhaseStart),
// is a window old and the reading's window began before it (see judgedBefore). The embedded source reads at most limit
// namespaces (the first ones), so that its cost follows maxNamespacesInProgress; the others get
// no reading and wait. Prometheus answers for all of them in the same queries.
func (s *Sources) Read(ctx context.Context, mesh *meshv1.MeshInstallation, namespaces []string, phases map[string]time.Time, window time.Duration, limit int) map[string]traffic.Reading {
	if len(namespaces) == 0 {
		return nil
	}
	now := stages.Now(s.Clock)
	spec := mesh.Spec.Telemetry.Prometheus
	if spec == nil {
		out, toRead := s.reuse("embedded", namespaces[:min(limit, len(namespaces))], phases, window, now)
		if len(toRead) > 0 {
			read := s.Embedded.Read(ctx, toRead, window)
			s.remember("embedded", read, window, now)
			maps.Copy(out, read)
		}
		return out
	}
	out, toRead := s.reuse(spec.URL, namespaces, phases, window, now)
	if len(toRead) == 0 {
		return out
	}
	src, err := s.prometheus(ctx, mesh, spec)
	if err != nil {
		for _, ns := range toRead {
			out[ns] = traffic.Reading{Source: "Prometheus at " + spec.URL, Unavailable: err.Error()}
		}
		return out
	}
	read := src.Read(ctx, toRead, window)
	s.remember(spec.URL, read, window, now)
	maps.Copy(out, read)
	return out
}

// prometheus is the client for spec, built again when its settings or Secrets change.
func (s *Sources) prometheus(ctx context.Context, mesh *meshv1.MeshInstallation, spec *meshv1.PrometheusSource) (*Prometheus, error) {
	cfg := PrometheusConfig{URL: spec.URL, InsecureSkipVerify: spec.InsecureSkipVerify}
	ns := meshspec.ControlPlaneNamespace(mesh)
	if spec.BearerToken != nil {
		token, err := s.secretKey(ctx, ns, *spec.BearerToken)
		if err != nil {
			return nil, err
		}
		cfg.BearerToken = string(token)
	}
	if spec.CA != nil {
		ca, err := s.secretKey(ctx, ns, *spec.CA)
		if err != nil {
			return nil, err
		}
		cfg.CA = ca
	}
	key := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%s\x00%v", cfg.URL, cfg.BearerToken, cfg.CA, cfg.InsecureSkipVerify))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.prom != nil && s.promKey == key {
		return s.prom, nil
	}
	p, err := NewPrometheus(cfg)
	if err != nil {
		return nil, err
	}
	if s.prom != nil {
		// A token or CA changed: the old client's idle connections would linger.
		s.prom.closeIdle()
	}
	s.prom, s.promKey = p, key
	return p, nil
}

// secretKey reads one key of a Secret, saying what to fix when it is not there.
func (s *Sources) secretKey(ctx context.Context, namespace string, ref meshv1.SecretKeyRef) ([]byte, error) {
	var secret corev1.Secret
	if err := s.Secrets.Get(ctx, client.ObjectKey{Namespace: namespace, Name: ref.Name}, &secret); err != nil {
		return nil, fmt.Errorf("reading Secret %s/%s for spec.telemetry.prometheus: %w", namespace, ref.Name, err)
	}
	v, ok := secret.Data[ref.Key]
	if !ok {
		return nil, fmt.Errorf("the Secret %s/%s has no key %q, which spec.telemetry.prometheus names", namespace, ref.Name, ref.Key)
	}
	return v, nil
}
