package telemetry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshwright/meshwright/internal/names"
	"github.com/meshwright/meshwright/internal/revision"
	"github.com/meshwright/meshwright/internal/traffic"
)

// StatsPort is where every injected pod serves its proxy's and its app's merged metrics
// (/stats/prometheus), Istio's default.
const StatsPort = 15020

// Embedded reads the proxies' own merged metrics, for the namespaces a pass asks about only, so
// its cost follows maxNamespacesInProgress, not the cluster's size. A proxy's counters are
// cumulative since it started: the source keeps its reads of each pod and measures a window as
// the growth between them, a counter that went down being a proxy that restarted and counts
// again from zero. It sees a window only from its first read of a pod (or the pod's start),
// which Covered reports; an operator restart starts its view again.
type Embedded struct {
	// Pods lists the namespaces' pods (the ladder's cache).
	Pods client.Reader
	// HTTP fetches the stats; nil is a client with a scrapeTimeout timeout.
	HTTP *http.Client
	// URLTemplate is where a pod's merged metrics are read, with {namespace}, {name} and {ip}
	// replaced by the pod's; empty is DefaultURLTemplate. It is the seam the local cluster's
	// e2e uses: kwok's pod IPs route nowhere, so the tests point it at the traffic simulator,
	// which serves each simulated pod's endpoint under its namespace and name.
	URLTemplate string
	// Clock is the time of reads; nil is the real clock.
	Clock clock.PassiveClock

	mu   sync.Mutex
	pods map[types.UID]*podReads
	// since is when the source first read each namespace it still follows: it has seen
	// nothing of the pods that went before.
	since map[string]time.Time
}

// podReads are the reads of one pod's proxy, oldest first, and the window they were kept for.
type podReads struct {
	namespace string
	started   time.Time
	reads     []statsRead
	window    time.Duration
}

// statsRead is one read of a proxy's stats: the counters the gates follow, and Envoy's uptime.
type statsRead struct {
	at       time.Time
	uptime   float64
	counters map[counterKey]float64
}

// Name says where the readings come from, for messages.
func (e *Embedded) Name() string {
	return fmt.Sprintf("the proxies' stats endpoints (port %d)", StatsPort)
}

// Read implements Source: it reads every proxy of the namespaces now and measures the window
// from the reads it has kept.
func (e *Embedded) Read(ctx context.Context, namespaces []string, window time.Duration) map[string]traffic.Reading {
	now := e.now()
	out := make(map[string]traffic.Reading, len(namespaces))
	for _, ns := range namespaces {
		out[ns] = e.readNamespace(ctx, ns, window, now)
	}
	e.forget(now)
	return out
}

// scrapeConcurrency bounds the proxies read at once: a namespace of many pods is read in
// about the time of its slowest few, and an unreachable one costs one timeout, not one per pod.
const scrapeConcurrency = 16

// scrapeTimeout bounds one read: a proxy's stats come back in milliseconds, and a pod the
// operator cannot reach must not hold a pass for long.
const scrapeTimeout = 3 * time.Second

// readNamespace reads one namespace's proxies and measures its window.
func (e *Embedded) readNamespace(ctx context.Context, ns string, window time.Duration, now time.Time) traffic.Reading {
	// It reads the namespace's own proxies, never ztunnel: a namespace in ambient mode has none.
	r := traffic.Reading{Source: e.Name(), Inbound: traffic.NewInbound(window), ZtunnelUnread: true}
	var pods corev1.PodList
	if err := e.Pods.List(ctx, &pods, client.InNamespace(ns)); err != nil {
		r.Unavailable = fmt.Sprintf("listing the pods of %s: %v", ns, err)
		return r
	}
	var proxies []*corev1.Pod
	for i := range pods.Items {
		pod := &pods.Items[i]
		// A proxyless gRPC pod runs no Envoy: its agent's stats hold none of Istio's standard
		// metrics, and the gates judge such pods by their spec instead.
		if pod.DeletionTimestamp.IsZero() && pod.Status.Phase == corev1.PodRunning && revision.HasProxy(pod) && !revision.Proxyless(pod) {
			proxies = append(proxies, pod)
		}
	}
	reads, errs := e.scrapeAll(ctx, proxies)
	var unreachable []string
	for i, pod := range proxies {
		if errs[i] != nil {
			unreachable = append(unreachable, fmt.Sprintf("%s (%v)", pod.Name, errs[i]))
			continue
		}
		r.Reporting = true
		reads[i].at = now
		growth, covered := e.record(pod, reads[i], window)
		r.Covered = min(r.Covered, covered)
		add(&r.Inbound, growth)
	}
	listed := map[types.UID]bool{}
	for _, pod := range proxies {
		listed[pod.UID] = true
	}
	add(&r.Inbound, e.departed(ns, listed, window, now))
	r.Covered = min(r.Covered, e.seenSince(ns, now))
	if len(unreachable) > 0 {
		sort.Strings(unreachable)
		r.Unreachable = fmt.Sprintf("%d proxy stats endpoint(s) could not be read: %s", len(unreachable), names.List(unreachable))
	}
	return r
}

// scrapeAll reads the pods' stats, scrapeConcurrency at a time; the i-th read or error is the
// i-th pod's.
func (e *Embedded) scrapeAll(ctx context.Context, pods []*corev1.Pod) ([]statsRead, []error) {
	reads, errs := make([]statsRead, len(pods)), make([]error, len(pods))
	var g errgroup.Group
	g.SetLimit(scrapeConcurrency)
	for i, pod := range pods {
		g.Go(func() error {
			reads[i], errs[i] = e.scrape(ctx, pod)
			return nil
		})
	}
	_ = g.Wait()
	return reads, errs
}

// departed is the growth, within the window, of the namespace's pods read before that are gone
// now (a rollout, a restart for a rotation, an eviction): their calls happened all the same.
func (e *Embedded) departed(ns string, listed map[types.UID]bool, window time.Duration, now time.Time) map[counterKey]float64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[counterKey]float64{}
	from := now.Add(-window)
	for uid, p := range e.pods {
		if p.namespace != ns || listed[uid] {
			continue
		}
		for k, n := range growth(keepFrom(p.reads, from), p.started, from) {
			out[k] += n
		}
	}
	return out
}

// seenSince is how long the source has followed the namespace: what went before its first read
// (pods already gone, an operator restart) it cannot have seen.
func (e *Embedded) seenSince(ns string, now time.Time) time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.since == nil {
		e.since = map[string]time.Time{}
	}
	first, ok := e.since[ns]
	if !ok {
		e.since[ns], first = now, now
	}
	return now.Sub(first)
}

// add adds a proxy's counters' growth to a namespace's inbound traffic.
func add(in *traffic.Inbound, growth map[counterKey]float64) {
	for k, n := range growth {
		switch k.kind {
		case countInbound:
			in.Callers[k.caller] += n
		case countPlaintext:
			in.Plaintext[k.caller] += n
		case countShadowDenied:
			in.ShadowDenied += n
		case countCallsTo:
			in.CallsTo[k.caller.Namespace] += n
		case countDenied:
			in.Denied[k.caller] += n
		case countRefused:
			in.Refused += n
		case countUnreached:
			in.Unreached[k.caller] += n
		case countErrors:
			in.Errors[k.caller] += n
		case countTimedOut:
			in.TimedOut[k.caller] += n
		}
	}
}

// record keeps a pod's read and returns how much its plaintext counters grew within the window,
// and how much of the window its reads cover.
func (e *Embedded) record(pod *corev1.Pod, read statsRead, window time.Duration) (map[counterKey]float64, time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.pods == nil {
		e.pods = map[types.UID]*podReads{}
	}
	p := e.pods[pod.UID]
	if p == nil {
		p = &podReads{namespace: pod.Namespace, started: pod.CreationTimestamp.Time}
		e.pods[pod.UID] = p
	}
	p.reads, p.window = append(p.reads, read), window
	from := read.at.Add(-window)
	p.reads = keepFrom(p.reads, from)
	return growth(p.reads, p.started, from), coverage(p.reads, p.started, from, read.at)
}

// keepFrom drops the reads that no window ending later can need: all before from but the last
// of them, which is the baseline of a window starting at from.
func keepFrom(reads []statsRead, from time.Time) []statsRead {
	first := 0
	for i := range reads {
		if !reads[i].at.After(from) {
			first = i
		}
	}
	return reads[first:]
}

// growth is how much counters grew within the window starting at from: from zero at the proxy's
// start when it started within the window, and a counter that went down counting from zero again.
// The reads are as far apart as the passes that made them, often more than a window: the growth
// of the interval that straddles the window's start is counted in proportion to the part of it
// inside the window (the rate taken as even over the interval, as Prometheus's increase()
// extrapolates), so that the counts are the window's and a rate drawn from them is not inflated
// by calls made before it. A caller seen only in that interval still counts above zero: a gate
// that holds on any plaintext call holds on it.
func growth(reads []statsRead, started, from time.Time) map[counterKey]float64 {
	out := map[counterKey]float64{}
	var prev *statsRead
	if len(reads) > 0 && !started.After(from) {
		// A proxy older than the window: the first read kept (the last before the window, or
		// the first within it) is the baseline.
		prev = &reads[0]
		reads = reads[1:]
	}
	for i := range reads {
		r := &reads[i]
		// Envoy's uptime going down is a restarted proxy: every counter starts again from
		// zero, even one that has grown back past its old value since.
		restarted := prev == nil || r.uptime < prev.uptime
		share := 1.0
		if prev != nil {
			share = shareWithin(prev, r, restarted, from)
		}
		for c, v := range r.counters {
			base := 0.0
			if !restarted {
				base = prev.counters[c]
			}
			d := v - base
			if d < 0 {
				d = v // a counter that went down with no uptime to tell: a restart too
			}
			out[c] += d * share
		}
		prev = r
	}
	for c, v := range out {
		if v <= 0 {
			delete(out, c)
		}
	}
	return out
}

// shareWithin is the part of the interval a read's growth covers that lies after from: the
// interval since the previous read, or since the proxy's restart when it restarted in between.
func shareWithin(prev, r *statsRead, restarted bool, from time.Time) float64 {
	start := prev.at
	if restarted {
		start = r.at.Add(-time.Duration(r.uptime * float64(time.Second)))
	}
	if !start.Before(from) || !r.at.After(start) {
		return 1
	}
	if !r.at.After(from) {
		return 0
	}
	return r.at.Sub(from).Seconds() / r.at.Sub(start).Seconds()
}

// coverage is how much of the window ending at now the reads see: all of it when the proxy
// started within it or a read precedes it, else from the first read.
func coverage(reads []statsRead, started, from, now time.Time) time.Duration {
	if started.After(from) || (len(reads) > 0 && !reads[0].at.After(from)) {
		return now.Sub(from)
	}
	return now.Sub(reads[0].at)
}

// forgetAfter is the least time a pod's reads are kept after its last read: a pass reads each
// window's namespaces separately, so one window's read must not drop another window's pods.
const forgetAfter = 5 * time.Minute

// forget drops the reads of pods not read for a whole window (and forgetAfter): gone, or in
// namespaces no longer watched. Their reads could not measure a window ending later anyway. A
// namespace none of whose pods is kept is forgotten too: reading it again starts over.
func (e *Embedded) forget(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	followed := map[string]bool{}
	for uid, p := range e.pods {
		if last := p.reads[len(p.reads)-1].at; now.Sub(last) > max(p.window, forgetAfter) {
			delete(e.pods, uid)
			continue
		}
		followed[p.namespace] = true
	}
	for ns, first := range e.since {
		if !followed[ns] && now.Sub(first) > forgetAfter {
			delete(e.since, ns)
		}
	}
}

// DefaultURLTemplate is a pod's merged metrics as Istio serves them.
const DefaultURLTemplate = "http://{ip}:15020/stats/prometheus"

// StatsURL is where a pod's merged metrics are read under a URL template.
func StatsURL(template string, pod *corev1.Pod) string {
	if template == "" {
		template = DefaultURLTemplate
	}
	return strings.NewReplacer("{namespace}", pod.Namespace, "{name}", pod.Name, "{ip}", pod.Status.PodIP).Replace(template)
}

// scrape reads one pod's merged metrics.
func (e *Embedded) scrape(ctx context.Context, pod *corev1.Pod) (statsRead, error) {
	if pod.Status.PodIP == "" && (e.URLTemplate == "" || strings.Contains(e.URLTemplate, "{ip}")) {
		return statsRead{}, fmt.Errorf("no pod IP yet")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, StatsURL(e.URLTemplate, pod), nil)
	if err != nil {
		return statsRead{}, err
	}
	hc := e.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: scrapeTimeout}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return statsRead{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		return statsRead{}, fmt.Errorf("GET %s: %s", req.URL, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxStatsBytes+1))
	if err != nil {
		return statsRead{}, fmt.Errorf("reading %s: %w", req.URL, err)
	}
	if len(body) > maxStatsBytes {
		// Cut between two lines it would still parse, without the series sorted after the cut.
		return statsRead{}, fmt.Errorf("%s serves more than %d bytes of stats", req.URL, maxStatsBytes)
	}
	return parseStats(bytes.NewReader(body))
}

// now is the time on the source's clock.
func (e *Embedded) now() time.Time {
	if e.Clock == nil {
		return time.Now()
	}
	return e.Clock.Now()
}
