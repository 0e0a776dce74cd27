package trafficsim

import (
	"fmt"
	"net/http"
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
)

// Label names of Istio's standard metrics, in the order Envoy's Istio stats filter emits them.
var (
	peerLabelNames = []string{
		"reporter",
		"source_workload", "source_canonical_service", "source_canonical_revision", "source_workload_namespace",
		"source_principal", "source_app", "source_version", "source_cluster",
		"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
		"destination_version", "destination_service", "destination_canonical_service",
		"destination_canonical_revision", "destination_service_name", "destination_service_namespace",
		"destination_cluster",
	}
	requestLabelNames = append(append([]string{}, peerLabelNames...),
		"request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy")
	tcpLabelNames = append(append([]string{}, peerLabelNames...), "response_flags", "connection_security_policy")
)

// Envoy exports no HELP text; client_golang needs one consistent string per family.
const (
	istioHelp = "Istio standard metric (simulated by trafficsim)"
	rbacHelp  = "Envoy RBAC filter stat (simulated by trafficsim)"
)

// service is the destination_service* labels of a call.
type service struct{ host, name, namespace string }

func serviceOf(w Workload) service {
	return service{host: w.Name + "." + w.Namespace + ".svc.cluster.local", name: w.Name, namespace: w.Namespace}
}

// peerLabels fills the source_*/destination_* labels shared by every standard metric.
func peerLabels(reporter string, src, dst Identity, svc service) prometheus.Labels {
	return prometheus.Labels{
		"reporter":        reporter,
		"source_workload": src.Workload, "source_canonical_service": src.CanonicalService,
		"source_canonical_revision": src.CanonicalRevision, "source_workload_namespace": src.Namespace,
		"source_principal": src.Principal, "source_app": src.App, "source_version": src.Version,
		"source_cluster":       src.Cluster,
		"destination_workload": dst.Workload, "destination_workload_namespace": dst.Namespace,
		"destination_principal": dst.Principal, "destination_app": dst.App, "destination_version": dst.Version,
		"destination_service": svc.host, "destination_canonical_service": dst.CanonicalService,
		"destination_canonical_revision": dst.CanonicalRevision, "destination_service_name": svc.name,
		"destination_service_namespace": svc.namespace, "destination_cluster": dst.Cluster,
	}
}

// podMetrics is one simulated proxy's counters: registered once in the registry its own
// endpoint serves, and once, wrapped with namespace/pod labels, in the one Handler gathers.
type podMetrics struct {
	own, scraped                   *prometheus.Registry
	requests, tcpOpened, tcpClosed *prometheus.CounterVec
	tcpSentBytes, tcpReceivedBytes *prometheus.CounterVec
	rbac                           *rbacCollector
	// uptime is Envoy's envoy_server_uptime, which every Istio sidecar reports (its "server"
	// stats are always kept): the traffic gates read it as "this proxy is scraped".
	uptime prometheus.Gauge
	// noFilterChain is Envoy's listener stat no_filter_chain_match of the inbound listener, nil
	// unless Options.RefusedStat says the proxies export it.
	noFilterChain *prometheus.CounterVec
}

// inboundListener is the address of a sidecar's inbound listener, as Istio's listener_address
// tag extracts it from listener.0.0.0.0_15006.<stat>.
const inboundListener = "0.0.0.0_15006"

func newPodMetrics(namespace, pod string, legacyRBAC, refusedStat bool) *podMetrics {
	vec := func(name string, labels []string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: istioHelp}, labels)
	}
	m := &podMetrics{
		own:              prometheus.NewRegistry(),
		scraped:          prometheus.NewRegistry(),
		requests:         vec("istio_requests_total", requestLabelNames),
		tcpOpened:        vec("istio_tcp_connections_opened_total", tcpLabelNames),
		tcpClosed:        vec("istio_tcp_connections_closed_total", tcpLabelNames),
		tcpSentBytes:     vec("istio_tcp_sent_bytes_total", tcpLabelNames),
		tcpReceivedBytes: vec("istio_tcp_received_bytes_total", tcpLabelNames),
		rbac:             &rbacCollector{legacy: legacyRBAC, series: map[rbacKey]float64{}},
		uptime:           prometheus.NewGauge(prometheus.GaugeOpts{Name: "envoy_server_uptime", Help: "Envoy's uptime in seconds (simulated)."}),
	}
	collectors := []prometheus.Collector{m.requests, m.tcpOpened, m.tcpClosed, m.tcpSentBytes, m.tcpReceivedBytes, m.rbac, m.uptime}
	if refusedStat {
		m.noFilterChain = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envoy_listener_no_filter_chain_match", Help: "Envoy listener stat (simulated by trafficsim)"}, []string{"listener_address"})
		// Envoy creates a listener's stats at zero with the listener.
		m.noFilterChain.WithLabelValues(inboundListener)
		collectors = append(collectors, m.noFilterChain)
	}
	m.own.MustRegister(collectors...)
	prometheus.WrapRegistererWith(prometheus.Labels{"namespace": namespace, "pod": pod}, m.scraped).MustRegister(collectors...)
	return m
}

// rbacKey is one series of Envoy's HTTP RBAC filter stats on one inbound port.
type rbacKey struct {
	port         int
	enforce      string // authz_enforce_result
	dryRunAction string // authz_dry_run_action ("" when the filter has no dry-run rules)
	dryRunResult string // authz_dry_run_result
}

// rbacCollector emits the RBAC stats as Envoy does: one family whose series carry different tag
// sets (enforce vs dry-run), which a CounterVec cannot express. It is an unchecked collector.
type rbacCollector struct {
	legacy bool
	mu     sync.Mutex
	series map[rbacKey]float64
}

func (c *rbacCollector) add(k rbacKey, v float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.series[k] += v
}

// Describe sends nothing: the collector is unchecked because its label sets vary.
func (c *rbacCollector) Describe(chan<- *prometheus.Desc) {}

// Collect emits each series under its Envoy name and tags.
func (c *rbacCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, v := range c.series {
		name := "envoy_http_rbac"
		labels := map[string]string{"http_conn_manager_prefix": fmt.Sprintf("inbound_0.0.0.0_%d", k.port)}
		if c.legacy {
			name = fmt.Sprintf("envoy_http_inbound_0_0_0_0_%d_rbac", k.port)
			labels = map[string]string{}
		}
		for n, val := range map[string]string{"authz_enforce_result": k.enforce, "authz_dry_run_action": k.dryRunAction, "authz_dry_run_result": k.dryRunResult} {
			if val != "" {
				labels[n] = val
			}
		}
		names := make([]string, 0, len(labels))
		for n := range labels {
			names = append(names, n)
		}
		sort.Strings(names)
		values := make([]string, len(names))
		for i, n := range names {
			values[i] = labels[n]
		}
		ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, rbacHelp, names, nil), prometheus.CounterValue, v, values...)
	}
}

// recordFilters advances (or, with n == 0, creates at zero) the stats of the destination's RBAC
// filters for one call on port. Envoy creates all four counters of a filter with its config:
// allowed/denied, and shadow_allowed/shadow_denied under the filter's dry-run action prefix.
func (c *rbacCollector) recordFilters(port int, filters []FilterResult, n float64) {
	for _, f := range filters {
		action := ""
		if f.Shadow {
			action = map[Action]string{ActionAllow: "allow", ActionDeny: "deny"}[f.Action]
		}
		keys := map[rbacKey]float64{
			{port: port, enforce: "allowed"}: 0, {port: port, enforce: "denied"}: 0,
			{port: port, dryRunAction: action, dryRunResult: "allowed"}: 0,
			{port: port, dryRunAction: action, dryRunResult: "denied"}:  0,
		}
		if f.Evaluated && f.Enforced {
			keys[rbacKey{port: port, enforce: result(f.Allowed)}] = n
		}
		if f.Evaluated && f.Shadow {
			keys[rbacKey{port: port, dryRunAction: action, dryRunResult: result(f.ShadowAllowed)}] = n
		}
		for k, v := range keys {
			c.add(k, v)
		}
	}
}

func result(allowed bool) string {
	if allowed {
		return "allowed"
	}
	return "denied"
}

// classicText serves h in the Prometheus text format 0.0.4 whatever the client asks for: Envoy
// and pilot-agent serve that, and OpenMetrics would append "_total" to the envoy_* counters.
func classicText(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.Clone(r.Context())
		r.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
		h.ServeHTTP(w, r)
	})
}

// handlerFor is promhttp's handler over g, in the classic text format.
func handlerFor(g prometheus.Gatherer) http.Handler {
	return classicText(promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
}
