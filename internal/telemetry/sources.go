package telemetry

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/meshspec"
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

	mu      sync.Mutex
	prom    *Prometheus
	promKey [sha256.Size]byte
}

// Read reads the namespaces' traffic over the window. The embedded source reads at most limit
// namespaces (the first ones), so that its cost follows maxNamespacesInProgress; the others get
// no reading and wait. Prometheus answers for all of them in the same queries.
func (s *Sources) Read(ctx context.Context, mesh *meshv1.MeshInstallation, namespaces []string, window time.Duration, limit int) map[string]traffic.Reading {
	if len(namespaces) == 0 {
		return nil
	}
	spec := mesh.Spec.Telemetry.Prometheus
	if spec == nil {
		return s.Embedded.Read(ctx, namespaces[:min(limit, len(namespaces))], window)
	}
	src, err := s.prometheus(ctx, mesh, spec)
	if err != nil {
		out := make(map[string]traffic.Reading, len(namespaces))
		for _, ns := range namespaces {
			out[ns] = traffic.Reading{Source: "Prometheus at " + spec.URL, Unavailable: err.Error()}
		}
		return out
	}
	return src.Read(ctx, namespaces, window)
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
