package trafficsim

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Workload names a workload: Name is its Deployment's name; its pods are the running pods of
// Namespace labelled app=Name (the test framework's convention).
type Workload struct{ Namespace, Name string }

// Protocol is how a flow talks, which decides the metrics it moves.
type Protocol string

// The simulated protocols.
const (
	HTTP Protocol = "HTTP" // requests: istio_requests_total, HTTP RBAC filter stats
	TCP  Protocol = "TCP"  // connections: istio_tcp_connections_{opened,closed}_total, istio_tcp_*_bytes_total
)

// tcpBytesPerConnection is what each direction of an accepted simulated TCP connection carries.
const tcpBytesPerConnection = 1024

// Flow is steady traffic the simulator generates between two workloads.
type Flow struct {
	From      Workload
	External  bool // a caller outside the cluster and mesh: From is ignored, reported as "unknown"
	To        Workload
	Port      int      // destination (target) port
	Protocol  Protocol // HTTP or TCP
	PerSecond float64  // requests (HTTP) or connections (TCP) per second, spread over both sides' pods
	// Latency is how long the destination's application takes to answer an HTTP request: a
	// route timeout shorter than it times the request out (RouteTimeout).
	Latency time.Duration
}

// FlowKey identifies a flow in Outcomes independently of its rate.
type FlowKey struct {
	From     Workload
	External bool
	To       Workload
	Port     int
	Protocol Protocol
}

// Key is the flow's identity for Outcomes.
func (f Flow) Key() FlowKey {
	k := FlowKey{From: f.From, External: f.External, To: f.To, Port: f.Port, Protocol: f.Protocol}
	if f.External {
		k.From = Workload{}
	}
	return k
}

// Counts is what became of a flow's calls so far, for tests to compare with what the gates saw.
type Counts struct {
	Succeeded, Refused, Denied, Unavailable int64
	DryRunDenied                            int64 // calls a reached dry-run filter would have denied
	AppUnreachable                          int64 // calls the destination's proxy could not pass to its application
	TimedOut                                int64 // requests the caller's proxy timed out (its route's timeout)
}

// Options configure the simulator like the mesh it imitates.
type Options struct {
	RootNamespace       string // mesh config root namespace, where mesh-wide policies live; default istio-system
	TrustDomain         string // default cluster.local
	ClusterID           string // Istio's cluster ID in the *_cluster labels; default Kubernetes
	LegacyRBACStatNames bool   // emit RBAC stats under Istio ≤1.22's names (see the package doc)
	// RefusedStat: the proxies export Envoy's no_filter_chain_match, as Istio's
	// proxyStatsMatcher.inclusionSuffixes makes them (the operator's mesh config sets it for
	// the revisions it installs); a plaintext call a STRICT destination refuses counts there.
	RefusedStat bool
	Log         logr.Logger
}

// Simulator produces the telemetry Envoy sidecars would under the cluster's current state; see
// the package doc for its rules. It is safe for concurrent use.
type Simulator struct {
	reader client.Reader
	opts   Options

	mu    sync.Mutex
	flows []Flow
	// localhostOnly are the workloads whose application listens on localhost only.
	localhostOnly map[Workload]bool
	pods          map[types.UID]*simPod
	carry         map[string]float64
	outcomes      map[FlowKey]Counts
	warned        map[string]bool
	serveCtx      context.Context // set while ServePods runs
}

// simPod is a running pod with a proxy and its simulated counters and endpoint.
type simPod struct {
	info    podInfo
	metrics *podMetrics
	srv     *http.Server
	addr    string
	// uptime is how long the simulator has seen the pod's proxy.
	uptime time.Duration
}

// New returns a simulator reading the cluster through r.
func New(r client.Reader, opts Options) *Simulator {
	if opts.RootNamespace == "" {
		opts.RootNamespace = "istio-system"
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = "cluster.local"
	}
	if opts.ClusterID == "" {
		opts.ClusterID = "Kubernetes"
	}
	return &Simulator{reader: r, opts: opts, pods: map[types.UID]*simPod{}, carry: map[string]float64{},
		outcomes: map[FlowKey]Counts{}, warned: map[string]bool{}}
}

// SetFlows replaces the traffic the simulator generates from the next Step on.
func (s *Simulator) SetFlows(flows []Flow) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flows = append([]Flow(nil), flows...)
}

// SetLocalhostOnly says which workloads' applications listen on localhost only (see
// BehindProxy): a fact of the application, which the cluster's state does not show.
func (s *Simulator) SetLocalhostOnly(workloads ...Workload) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.localhostOnly = map[Workload]bool{}
	for _, w := range workloads {
		s.localhostOnly[w] = true
	}
}

// Outcomes returns, per flow, what became of its calls so far.
func (s *Simulator) Outcomes() map[FlowKey]Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[FlowKey]Counts, len(s.outcomes))
	for k, v := range s.outcomes {
		out[k] = v
	}
	return out
}

// Step reads the cluster state once and advances every counter by rate × elapsed under it. A
// read error leaves every counter as it was.
func (s *Simulator) Step(ctx context.Context, elapsed time.Duration) error {
	snap, err := s.readState(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range snap.unsupported {
		if !s.warned[u] {
			s.warned[u] = true
			s.opts.Log.Info("trafficsim: unsupported policy field", "detail", u)
		}
	}
	errs := []error{s.syncPods(snap)}
	for _, p := range s.pods {
		p.uptime += elapsed
		p.metrics.uptime.Set(p.uptime.Seconds())
	}
	used := map[string]bool{}
	for _, f := range s.flows {
		errs = append(errs, s.simulateFlow(snap, f, elapsed.Seconds(), used))
	}
	for k := range s.carry {
		if !used[k] {
			delete(s.carry, k)
		}
	}
	return errors.Join(errs...)
}

// Run steps on a real-time ticker until ctx ends; errors are logged, not fatal.
func (s *Simulator) Run(ctx context.Context, tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if err := s.Step(ctx, now.Sub(last)); err != nil && ctx.Err() == nil {
				s.opts.Log.Error(err, "trafficsim: step failed")
			}
			last = now
		}
	}
}

// syncPods creates counters (and an endpoint while serving) for new pods with a proxy, and drops
// those of pods that are gone: their series vanish, as a deleted proxy's do.
func (s *Simulator) syncPods(snap *snapshot) error {
	live := map[types.UID]bool{}
	var errs []error
	for _, p := range snap.pods {
		if !p.HasProxy {
			continue
		}
		live[p.UID] = true
		if _, ok := s.pods[p.UID]; ok {
			continue
		}
		sp := &simPod{info: p, metrics: newPodMetrics(p.Namespace, p.Name, s.opts.LegacyRBACStatNames, s.opts.RefusedStat)}
		s.pods[p.UID] = sp
		if s.serveCtx != nil && s.serveCtx.Err() == nil {
			errs = append(errs, sp.serve())
		}
	}
	for uid, sp := range s.pods {
		if !live[uid] {
			sp.stop()
			delete(s.pods, uid)
		}
	}
	return errors.Join(errs...)
}

// Handler serves every simulated pod's series with namespace and pod labels, as Prometheus stores
// them after Istio's kubernetes-pods scrape job.
func (s *Simulator) Handler() http.Handler {
	return handlerFor(prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		s.mu.Lock()
		gs := make(prometheus.Gatherers, 0, len(s.pods))
		for _, p := range s.pods {
			gs = append(gs, p.metrics.scraped)
		}
		s.mu.Unlock()
		return gs.Gather()
	}))
}

// ServePods serves each simulated pod's own GET /stats/prometheus (what pilot-agent serves on
// :15020, without namespace/pod labels) on its own 127.0.0.1 port, for pods present now and
// appearing later, until ctx ends. It returns once the current pods' endpoints listen.
func (s *Simulator) ServePods(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.serveCtx != nil {
		return errors.New("trafficsim: ServePods already running")
	}
	s.serveCtx = ctx
	var errs []error
	for _, sp := range s.pods {
		errs = append(errs, sp.serve())
	}
	go func() {
		<-ctx.Done()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, sp := range s.pods {
			sp.stop()
		}
		s.serveCtx = nil
	}()
	return errors.Join(errs...)
}

// PodsHandler serves each simulated pod's own merged metrics (what :15020/stats/prometheus
// serves, without namespace/pod labels) at /pods/<namespace>/<name>/stats/prometheus: one
// listener for every pod, which the operator's --proxy-stats-url template reaches as
// <url>/pods/{namespace}/{name}/stats/prometheus. A pod without a proxy (or gone) is 404, as
// a real pod's port 15020 would not answer.
func (s *Simulator) PodsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /pods/{namespace}/{name}/stats/prometheus", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		var reg *prometheus.Registry
		for _, sp := range s.pods {
			if sp.info.Namespace == r.PathValue("namespace") && sp.info.Name == r.PathValue("name") {
				reg = sp.metrics.own
			}
		}
		s.mu.Unlock()
		if reg == nil {
			http.NotFound(w, r)
			return
		}
		handlerFor(reg).ServeHTTP(w, r)
	})
	return mux
}

// PodAddress is the host:port of a simulated pod's endpoint, for tests to map its pod IP to.
func (s *Simulator) PodAddress(namespace, pod string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sp := range s.pods {
		if sp.info.Namespace == namespace && sp.info.Name == pod && sp.addr != "" {
			return sp.addr, true
		}
	}
	return "", false
}

func (p *simPod) serve() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("trafficsim: endpoint of pod %s/%s: %w", p.info.Namespace, p.info.Name, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /stats/prometheus", handlerFor(p.metrics.own))
	p.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	p.addr = ln.Addr().String()
	go func(srv *http.Server) { _ = srv.Serve(ln) }(p.srv)
	return nil
}

func (p *simPod) stop() {
	if p.srv != nil {
		_ = p.srv.Close()
		p.srv, p.addr = nil, ""
	}
}

// take adds amount to key's running remainder and returns the whole calls due now, so rates that
// are not whole per step still add up exactly over time.
func (s *Simulator) take(key string, amount float64, used map[string]bool) int64 {
	used[key] = true
	acc := s.carry[key] + amount
	n := math.Floor(acc + 1e-9)
	s.carry[key] = acc - n
	return int64(n)
}
