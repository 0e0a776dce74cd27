package telemetry

import (
	"maps"
	"math"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshwright/meshwright/internal/traffic"
)

// stats is a proxy's merged metrics in the text format, with Istio's standard label names.
const stats = `# TYPE envoy_server_uptime gauge
envoy_server_uptime 120
# TYPE istio_requests_total counter
istio_requests_total{reporter="destination",source_workload="client",source_workload_namespace="legacy",connection_security_policy="none",response_code="200"} 7
istio_requests_total{reporter="destination",source_workload="client",source_workload_namespace="legacy",connection_security_policy="none",response_code="503",response_flags="UF,URX"} 1
istio_requests_total{reporter="destination",source_workload="web",source_workload_namespace="shop",connection_security_policy="mutual_tls",response_code="200"} 50
istio_requests_total{reporter="destination",source_workload="nginx",source_workload_namespace="ingress",connection_security_policy="mutual_tls",response_code="403"} 6
istio_requests_total{reporter="source",source_workload="web",source_workload_namespace="shop",destination_workload_namespace="orders",connection_security_policy="unknown",response_code="200"} 9
istio_requests_total{reporter="source",source_workload="web",source_workload_namespace="shop",destination_workload_namespace="orders",connection_security_policy="unknown",response_code="503",response_flags="UF"} 2
istio_requests_total{reporter="source",source_workload="web",source_workload_namespace="shop",destination_workload_namespace="shop",connection_security_policy="unknown",response_code="504",response_flags="UT"} 4
istio_requests_total{reporter="source",source_workload="web",source_workload_namespace="shop",destination_workload_namespace="shop",connection_security_policy="unknown",response_code="503",response_flags="UO"} 2
istio_requests_total{reporter="source",source_workload="web",source_workload_namespace="shop",destination_workload_namespace="shop",connection_security_policy="unknown",response_code="200"} 30
istio_requests_total{reporter="source",source_workload="web",source_workload_namespace="shop",destination_workload_namespace="shop",connection_security_policy="unknown",response_code="200",grpc_response_status="4",response_flags="UT"} 3
# TYPE istio_tcp_connections_opened_total counter
istio_tcp_connections_opened_total{reporter="destination",source_workload="unknown",source_workload_namespace="unknown",connection_security_policy="none"} 3
# TYPE istio_tcp_connections_closed_total counter
istio_tcp_connections_closed_total{reporter="destination",source_workload="unknown",source_workload_namespace="unknown",response_flags="UF"} 2
istio_tcp_connections_closed_total{reporter="destination",source_workload="unknown",source_workload_namespace="unknown",response_flags="-"} 1
# TYPE envoy_http_rbac counter
envoy_http_rbac{http_conn_manager_prefix="inbound_0.0.0.0_8080",authz_dry_run_action="allow",authz_dry_run_result="denied"} 4
envoy_http_rbac{http_conn_manager_prefix="inbound_0.0.0.0_8080",authz_dry_run_action="allow",authz_dry_run_result="allowed"} 50
envoy_http_rbac{http_conn_manager_prefix="inbound_0.0.0.0_8080",authz_enforce_result="denied"} 7
# TYPE envoy_listener_no_filter_chain_match counter
envoy_listener_no_filter_chain_match{listener_address="0.0.0.0_15006"} 11
envoy_listener_no_filter_chain_match{listener_address="[__]_15006"} 1
envoy_listener_no_filter_chain_match{listener_address="0.0.0.0_15001"} 40
# TYPE envoy_http_inbound_0_0_0_0_9090_rbac counter
envoy_http_inbound_0_0_0_0_9090_rbac{authz_dry_run_action="deny",authz_dry_run_result="denied"} 1
`

// TestParseStats: what the proxy received as the destination counts, per caller, summed over
// response codes and over requests and connections, with the calls without mTLS and those
// refused with 403 apart; the plaintext connections its inbound listener (IPv4 or IPv6) refused
// count, its outbound listener's do not; what it
// sent as the source counts by destination namespace; the calls it accepted but could not pass
// on to its application (an upstream-connection flag, on a request or a closed connection)
// count by caller; its own calls to its namespace answered with 5xx count by caller, those it
// timed out apart (a call to another namespace's errors is that namespace's callers' to see); the
// dry-run denials count under both RBAC stat names (Istio ≥1.23 and before), enforced ones do
// not; an endpoint without Envoy's uptime is refused, so a wrong port is never a quiet proxy.
func TestParseStats(t *testing.T) {
	legacy, outside, web := traffic.Caller{Namespace: "legacy", Workload: "client"}, traffic.Caller{Namespace: "unknown", Workload: "unknown"}, traffic.Caller{Namespace: "shop", Workload: "web"}
	nginx := traffic.Caller{Namespace: "ingress", Workload: "nginx"}
	tests := map[string]struct {
		text    string
		want    map[counterKey]float64
		wantErr string
	}{
		"callers, plaintext, shadow denials, and the proxy's own calls by destination": {text: stats, want: map[counterKey]float64{
			{kind: countInbound, caller: legacy}: 8, {kind: countPlaintext, caller: legacy}: 8,
			{kind: countInbound, caller: outside}: 3, {kind: countPlaintext, caller: outside}: 3,
			{kind: countInbound, caller: web}:   50,
			{kind: countInbound, caller: nginx}: 6, {kind: countDenied, caller: nginx}: 6,
			{kind: countRefused}:      12,
			{kind: countShadowDenied}: 5,
			{kind: countCallsTo, caller: traffic.Caller{Namespace: "orders"}}: 11, {kind: countCallsTo, caller: traffic.Caller{Namespace: "shop"}}: 39,
			{kind: countErrors, caller: web}: 9, {kind: countTimedOut, caller: web}: 7,
			{kind: countUnreached, caller: legacy}: 1, {kind: countUnreached, caller: outside}: 2,
		}},
		"a quiet proxy":             {text: "# TYPE envoy_server_uptime gauge\nenvoy_server_uptime 5\n", want: map[counterKey]float64{}},
		"untyped samples are read":  {text: "envoy_server_uptime 5\nistio_requests_total{reporter=\"destination\",source_workload=\"a\",source_workload_namespace=\"b\",connection_security_policy=\"none\"} 2\n", want: map[counterKey]float64{{kind: countInbound, caller: traffic.Caller{Namespace: "b", Workload: "a"}}: 2, {kind: countPlaintext, caller: traffic.Caller{Namespace: "b", Workload: "a"}}: 2}},
		"not an Istio proxy":        {text: "# TYPE up gauge\nup 1\n", wantErr: "not an Istio proxy"},
		"not the Prometheus format": {text: "<html>", wantErr: "reading the stats"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := parseStats(strings.NewReader(tc.text))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got.counters, tc.want) {
				t.Fatalf("got %v, want %v", got.counters, tc.want)
			}
		})
	}
}

// TestGrowthOverReads: a window is measured as the growth between reads, with the proxy's start
// as a zero baseline when it started within the window, a counter that went down (the proxy
// restarted) counting again from zero, and the interval that straddles the window's start
// counting in proportion to its part inside the window.
func TestGrowthOverReads(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	a := counterKey{kind: countPlaintext, caller: traffic.Caller{Namespace: "legacy", Workload: "client"}}
	at := func(min int, v float64) statsRead {
		// Envoy's uptime grows with the reads unless a case restarts it (see restartedAt).
		return statsRead{at: t0.Add(time.Duration(min) * time.Minute), uptime: float64(3600 + 60*min), counters: map[counterKey]float64{a: v}}
	}
	restartedAt := func(min int, v float64) statsRead {
		r := at(min, v)
		r.uptime = 30
		return r
	}
	upFor := func(r statsRead, minutes float64) statsRead {
		r.uptime = 60 * minutes
		return r
	}
	tests := map[string]struct {
		reads        []statsRead
		started      time.Time
		from, now    int // minutes after t0
		want         float64
		wantCoverage time.Duration
	}{
		"an old proxy read before the window: growth since that read": {
			reads: []statsRead{at(0, 100), at(5, 100), at(10, 104)}, started: t0.Add(-time.Hour), from: 2, now: 10, want: 4, wantCoverage: 8 * time.Minute},
		"an old proxy first read within the window: only what was seen, and less coverage": {
			reads: []statsRead{at(5, 100), at(10, 104)}, started: t0.Add(-time.Hour), from: 2, now: 10, want: 4, wantCoverage: 5 * time.Minute},
		"a proxy started within the window counts from zero": {
			reads: []statsRead{at(5, 3), at(10, 4)}, started: t0.Add(3 * time.Minute), from: 2, now: 10, want: 4, wantCoverage: 8 * time.Minute},
		"a proxy that restarted counts again from zero": {
			reads: []statsRead{at(0, 100), at(5, 110), at(10, 2)}, started: t0.Add(-time.Hour), from: 0, now: 10, want: 12, wantCoverage: 10 * time.Minute},
		"a proxy that restarted and grew back past its old value, told by its uptime": {
			reads: []statsRead{at(0, 100), at(5, 110), restartedAt(10, 120)}, started: t0.Add(-time.Hour), from: 0, now: 10, want: 130, wantCoverage: 10 * time.Minute},
		"the interval straddling the window's start counts its share": {
			// 40 calls over the 4 minutes between the reads, 1 of them inside the window.
			reads: []statsRead{at(0, 0), at(4, 40)}, started: t0.Add(-time.Hour), from: 3, now: 4, want: 10, wantCoverage: time.Minute},
		"calls in the straddling interval still count above zero": {
			reads: []statsRead{at(0, 0), at(10, 3), at(11, 3)}, started: t0.Add(-time.Hour), from: 9, now: 11, want: 0.3, wantCoverage: 2 * time.Minute},
		"a restart within the window counts whole": {
			reads: []statsRead{at(0, 100), restartedAt(10, 4)}, started: t0.Add(-time.Hour), from: 5, now: 10, want: 4, wantCoverage: 5 * time.Minute},
		"a restart before the window's start counts its share": {
			// restarted 5 minutes before the read at 10: 8 calls since, 3 of the 5 minutes inside.
			reads: []statsRead{at(0, 100), upFor(at(10, 8), 5)}, started: t0.Add(-time.Hour), from: 7, now: 10, want: 4.8, wantCoverage: 3 * time.Minute},
		"no growth is no caller": {
			reads: []statsRead{at(0, 100), at(10, 100)}, started: t0.Add(-time.Hour), from: 0, now: 10, want: 0, wantCoverage: 10 * time.Minute},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			from, now := t0.Add(time.Duration(tc.from)*time.Minute), t0.Add(time.Duration(tc.now)*time.Minute)
			reads := keepFrom(tc.reads, from)
			if got := growth(reads, tc.started, from)[a]; math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("growth %v, want %v", got, tc.want)
			}
			if got := coverage(reads, tc.started, from, now); got != tc.wantCoverage {
				t.Errorf("coverage %v, want %v", got, tc.wantCoverage)
			}
		})
	}
}

// TestQueriesAreBatched: one query answers for every namespace of a pass, with Istio's metric
// and label names.
func TestQueriesAreBatched(t *testing.T) {
	q := CallersQuery([]string{"shop", "pay-ments"}, 10*time.Minute)
	for _, want := range []string{`istio_requests_total|istio_tcp_connections_opened_total`, `reporter=~"destination|waypoint"`, `destination_workload_namespace=~"shop|pay-ments"`, `[10m]`, `offset 10m`,
		`sum by (destination_workload_namespace, source_workload_namespace, source_workload, connection_security_policy, response_code, reporter)`} {
		if !strings.Contains(q, want) {
			t.Errorf("%s\nlacks %s", q, want)
		}
	}
	if q := ReportingQuery([]string{"shop"}, time.Minute); !strings.Contains(q, `count_over_time(envoy_server_uptime{namespace=~"shop"}[1m]) >= 2`) {
		t.Errorf("reporting query %s", q)
	}
	if q := CallsToQuery([]string{"shop"}, time.Minute); !strings.Contains(q, `reporter="source", source_workload_namespace=~"shop"}[1m]`) || !strings.Contains(q, `sum by (source_workload_namespace, destination_workload_namespace)`) {
		t.Errorf("calls-to query %s", q)
	}
	if q := ShadowDeniedQuery([]string{"shop"}, time.Minute); !strings.Contains(q, `{__name__=~"envoy_http_rbac|envoy_http_inbound_.+_rbac", authz_dry_run_result="denied", namespace=~"shop"}[1m]`) {
		t.Errorf("shadow-denied query %s", q)
	}
	if q := FailedQuery([]string{"shop"}, time.Minute); !strings.Contains(q, `{__name__=~"istio_requests_total|istio_tcp_connections_closed_total", reporter=~"source|destination", destination_workload_namespace=~"shop", response_flags=~"(.*,)?(UF|URX|UC)(,.*)?"}[1m]`) ||
		!strings.Contains(q, `sum by (destination_workload_namespace, source_workload_namespace, source_workload, reporter)`) {
		t.Errorf("failed query %s", q)
	}
	if q := ErrorsQuery([]string{"shop"}, time.Minute); !strings.Contains(q, `istio_requests_total{reporter="source", destination_workload_namespace=~"shop", response_code=~"5[0-9][0-9]"}[1m]`) ||
		!strings.Contains(q, `sum by (destination_workload_namespace, source_workload_namespace, source_workload, response_flags)`) {
		t.Errorf("errors query %s", q)
	}
	if q := ProxyFailedQuery([]string{"shop"}, time.Minute); !strings.Contains(q, `istio_requests_total{reporter="source", destination_workload_namespace=~"shop", response_flags=~"(.*,)?(UT|UO|UH)(,.*)?", response_code!~"5[0-9][0-9]"}[1m]`) {
		t.Errorf("proxy-failed query %s", q)
	}
	if q := RefusedQuery([]string{"shop"}, time.Minute); !strings.Contains(q, `envoy_listener_no_filter_chain_match{listener_address=~".*_15006", namespace=~"shop"}[1m]`) || !strings.Contains(q, `sum by (namespace)`) {
		t.Errorf("refused query %s", q)
	}
}

// TestStatsURL: the default reads Istio's port 15020 on the pod's IP; a template names the pod
// by namespace and name where IPs do not route (the local cluster's simulator).
func TestStatsURL(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1"}, Status: corev1.PodStatus{PodIP: "10.1.2.3"}}
	tests := map[string]struct{ template, want string }{
		"Istio's default":     {want: "http://10.1.2.3:15020/stats/prometheus"},
		"through a simulator": {template: "http://127.0.0.1:9/pods/{namespace}/{name}/stats/prometheus", want: "http://127.0.0.1:9/pods/shop/web-1/stats/prometheus"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := StatsURL(tc.template, pod); got != tc.want {
				t.Fatalf("StatsURL = %s, want %s", got, tc.want)
			}
		})
	}
}
