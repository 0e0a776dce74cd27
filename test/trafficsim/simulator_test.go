package trafficsim

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// The fake client stands in for the cluster here: this tests the simulator's own bookkeeping,
// not anything the operator sends to an API server.

func pod(ns, name, app, sa string, proxy bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "-" + name), Labels: map[string]string{"app": app}},
		Spec:       corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "x"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	if proxy {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-proxy", Image: "proxyv2"})
	}
	return p
}

func istioObject(t *testing.T, doc string) *unstructured.Unstructured {
	u := fromYAML(t, doc)
	u.SetAPIVersion("security.istio.io/v1")
	return u
}

func newFakeReader(t *testing.T, objs ...client.Object) client.WithWatch {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	for _, gvk := range []schema.GroupVersionKind{PeerAuthenticationGVK, AuthorizationPolicyGVK, VirtualServiceGVK} {
		scheme.AddKnownTypeWithName(gvk, &unstructured.Unstructured{})
		scheme.AddKnownTypeWithName(gvk.GroupVersion().WithKind(gvk.Kind+"List"), &unstructured.UnstructuredList{})
	}
	return fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
}

// scrape parses a text exposition the way Prometheus would, asking for OpenMetrics first to prove
// the endpoint answers in the classic text format regardless.
func scrape(t *testing.T, h http.Handler, url string) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	var body []byte
	var ctype string
	req := httptest.NewRequest(http.MethodGet, "/stats/prometheus", nil)
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
	if h != nil {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		body, ctype = rec.Body.Bytes(), rec.Header().Get("Content-Type")
	} else {
		r, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Header = req.Header
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		body, _ = io.ReadAll(resp.Body)
		ctype = resp.Header.Get("Content-Type")
	}
	if !strings.HasPrefix(ctype, "text/plain") || !strings.Contains(ctype, "version=0.0.4") {
		t.Fatalf("content type %q, want the classic text format", ctype)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, body)
	}
	return mfs, string(body)
}

// value sums the series of family name whose labels include want; found reports any match.
func value(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (sum float64, found bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		found = true
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return sum, found
}

func expect(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels map[string]string, want float64) {
	t.Helper()
	got, found := value(mfs, name, labels)
	if !found || got != want {
		t.Errorf("%s%v = %v (found %v), want %v", name, labels, got, found, want)
	}
}

const (
	paDoc = `
metadata: {namespace: shop, name: default, creationTimestamp: "2026-01-01T00:00:00Z"}
kind: PeerAuthentication
spec: {mtls: {mode: PERMISSIVE}}`
	allowNothingDoc = `
kind: AuthorizationPolicy
metadata: {namespace: shop, name: allow-nothing, annotations: {istio.io/dry-run: "true"}}
spec: {}`
	allowWebDoc = `
kind: AuthorizationPolicy
metadata: {namespace: shop, name: allow-web, annotations: {istio.io/dry-run: "true"}}
spec: {rules: [{from: [{source: {namespaces: [web]}}]}]}`
)

var (
	frontToAPI = Flow{From: Workload{"web", "front"}, To: Workload{"shop", "api"}, Port: 8080, Protocol: HTTP, PerSecond: 10}
	cronToAPI  = Flow{From: Workload{"legacy", "cron"}, To: Workload{"shop", "api"}, Port: 8080, Protocol: HTTP, PerSecond: 4}
	extToAPI   = Flow{External: true, To: Workload{"shop", "api"}, Port: 9000, Protocol: TCP, PerSecond: 2}
)

// TestSimulatorEndToEnd runs Step against a fake cluster and reads the series back through
// Handler and a pod endpoint, then restarts a pod and tightens mTLS.
func TestSimulatorEndToEnd(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newFakeReader(t,
		pod("shop", "api-1", "api", "api", true), pod("shop", "api-2", "api", "api", true),
		pod("web", "front-1", "front", "front", true), pod("legacy", "cron-1", "cron", "", false),
		istioObject(t, paDoc), istioObject(t, allowNothingDoc), istioObject(t, allowWebDoc))
	sim := New(c, Options{RefusedStat: true})
	sim.SetFlows([]Flow{frontToAPI, cronToAPI, extToAPI})
	if err := sim.Step(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	checkObserveSeries(t, sim)
	checkPodEndpoint(t, ctx, sim)
	checkRestart(t, ctx, c, sim)
	checkStrict(t, ctx, c, sim)
}

// checkObserveSeries: PERMISSIVE destination, dry-run ZeroTrust policies.
func checkObserveSeries(t *testing.T, sim *Simulator) {
	mfs, _ := scrape(t, sim.Handler(), "")
	api1 := map[string]string{"namespace": "shop", "pod": "api-1", "reporter": "destination"}
	expect(t, mfs, "istio_requests_total", with(api1, "source_workload", "front", "source_workload_namespace", "web",
		"source_principal", "spiffe://cluster.local/ns/web/sa/front", "destination_principal", "spiffe://cluster.local/ns/shop/sa/api",
		"connection_security_policy", "mutual_tls", "response_code", "200", "destination_service", "api.shop.svc.cluster.local"), 5)
	expect(t, mfs, "istio_requests_total", with(api1, "source_workload", "cron", "source_workload_namespace", "legacy",
		"source_principal", "unknown", "connection_security_policy", "none", "response_code", "200"), 2)
	expect(t, mfs, "istio_requests_total", map[string]string{"namespace": "web", "pod": "front-1", "reporter": "source",
		"destination_workload": "api", "connection_security_policy": "unknown", "response_code": "200"}, 10)
	expect(t, mfs, "istio_tcp_connections_opened_total", with(api1, "source_workload", "unknown", "connection_security_policy", "none"), 1)
	expect(t, mfs, "istio_tcp_connections_closed_total", with(api1, "source_workload", "unknown"), 1)
	rbac := map[string]string{"namespace": "shop", "pod": "api-1", "http_conn_manager_prefix": "inbound_0.0.0.0_8080"}
	expect(t, mfs, "envoy_http_rbac", with(rbac, "authz_dry_run_action", "allow", "authz_dry_run_result", "allowed"), 5)
	expect(t, mfs, "envoy_http_rbac", with(rbac, "authz_dry_run_action", "allow", "authz_dry_run_result", "denied"), 2)
	expect(t, mfs, "envoy_http_rbac", with(rbac, "authz_enforce_result", "denied"), 0) // exists at zero
	if _, found := value(mfs, "istio_requests_total", map[string]string{"pod": "cron-1"}); found {
		t.Error("a pod without proxy reported series")
	}
	want := map[FlowKey]Counts{
		frontToAPI.Key(): {Succeeded: 10}, cronToAPI.Key(): {Succeeded: 4, DryRunDenied: 4}, extToAPI.Key(): {Succeeded: 2, DryRunDenied: 2}, // the dry-run allow-nothing also shadows TCP
	}
	for k, w := range want {
		if got := sim.Outcomes()[k]; got != w {
			t.Errorf("Outcomes[%+v] = %+v, want %+v", k, got, w)
		}
	}
}

// checkPodEndpoint: a pod's own endpoint has its series without namespace/pod labels, and the
// Envoy counters keep their names (no "_total" added).
func checkPodEndpoint(t *testing.T, ctx context.Context, sim *Simulator) {
	if err := sim.ServePods(ctx); err != nil {
		t.Fatal(err)
	}
	addr, ok := sim.PodAddress("shop", "api-1")
	if !ok {
		t.Fatal("no endpoint for shop/api-1")
	}
	if _, ok := sim.PodAddress("legacy", "cron-1"); ok {
		t.Error("a pod without proxy got an endpoint")
	}
	mfs, body := scrape(t, nil, "http://"+addr+"/stats/prometheus")
	expect(t, mfs, "istio_requests_total", map[string]string{"reporter": "destination", "source_workload": "front"}, 5)
	if _, found := value(mfs, "istio_requests_total", map[string]string{"namespace": "shop"}); found {
		t.Error("pod endpoint carries a namespace label")
	}
	if !strings.Contains(body, "# TYPE envoy_http_rbac counter") || strings.Contains(body, "envoy_http_rbac_total") {
		t.Errorf("envoy_http_rbac not exposed under its own name:\n%s", body)
	}
	expect(t, mfs, "envoy_server_uptime", map[string]string{}, 1) // one Step of a second

	// The same endpoint through the one listener the operator's URL template reaches.
	srv := httptest.NewServer(sim.PodsHandler())
	defer srv.Close()
	mfs, _ = scrape(t, nil, srv.URL+"/pods/shop/api-1/stats/prometheus")
	expect(t, mfs, "istio_requests_total", map[string]string{"reporter": "destination", "source_workload": "front"}, 5)
	for _, missing := range []string{"/pods/legacy/cron-1/stats/prometheus", "/pods/shop/gone-1/stats/prometheus"} {
		resp, err := http.Get(srv.URL + missing)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s, want 404 (no proxy there)", missing, resp.Status)
		}
	}
}

// checkRestart: a deleted pod's series and endpoint go; a new pod starts from zero.
func checkRestart(t *testing.T, ctx context.Context, c client.Client, sim *Simulator) {
	if err := c.Delete(ctx, pod("shop", "api-1", "api", "api", true)); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, pod("shop", "api-3", "api", "api", true)); err != nil {
		t.Fatal(err)
	}
	if err := sim.Step(ctx, 0); err != nil {
		t.Fatal(err)
	}
	mfs, _ := scrape(t, sim.Handler(), "")
	if _, found := value(mfs, "istio_requests_total", map[string]string{"pod": "api-1"}); found {
		t.Error("series of the deleted pod api-1 remain")
	}
	if _, found := value(mfs, "istio_requests_total", map[string]string{"pod": "api-3"}); found {
		t.Error("new pod api-3 has request series before any request")
	}
	if _, ok := sim.PodAddress("shop", "api-1"); ok {
		t.Error("deleted pod still has an endpoint")
	}
	if _, ok := sim.PodAddress("shop", "api-3"); !ok {
		t.Error("new pod has no endpoint while ServePods runs")
	}
	if err := sim.Step(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	mfs, _ = scrape(t, sim.Handler(), "")
	front := map[string]string{"reporter": "destination", "source_workload": "front"}
	front["pod"] = "api-3"
	expect(t, mfs, "istio_requests_total", front, 5)
	front["pod"] = "api-2"
	expect(t, mfs, "istio_requests_total", front, 10)
}

// checkStrict: STRICT refuses the plaintext callers unreported; an enforced allow-nothing denies
// the mTLS caller with 403 on both sides while the dry-run allow-web still shadow-allows it.
func checkStrict(t *testing.T, ctx context.Context, c client.Client, sim *Simulator) {
	strict := istioObject(t, strings.Replace(paDoc, "PERMISSIVE", "STRICT", 1))
	enforced := istioObject(t, strings.Replace(allowNothingDoc, `"true"`, `"false"`, 1))
	for _, u := range []*unstructured.Unstructured{strict, enforced} {
		cur := &unstructured.Unstructured{}
		cur.SetGroupVersionKind(u.GroupVersionKind())
		if err := c.Get(ctx, client.ObjectKeyFromObject(u), cur); err != nil {
			t.Fatal(err)
		}
		u.SetResourceVersion(cur.GetResourceVersion())
		if err := c.Update(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	if err := sim.Step(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	mfs, _ := scrape(t, sim.Handler(), "")
	api2 := func(kv ...string) map[string]string {
		m := map[string]string{"namespace": "shop", "pod": "api-2"}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	expect(t, mfs, "istio_requests_total", api2("source_workload", "cron"), 4) // unchanged: refused
	expect(t, mfs, "istio_tcp_connections_opened_total", api2("source_workload", "unknown"), 2)
	expect(t, mfs, "istio_requests_total", api2("reporter", "destination", "source_workload", "front", "response_code", "403", "response_flags", "-"), 5)
	expect(t, mfs, "istio_requests_total", map[string]string{"pod": "front-1", "reporter": "source", "response_code": "403"}, 10)
	expect(t, mfs, "envoy_http_rbac", api2("authz_enforce_result", "denied"), 5)
	expect(t, mfs, "envoy_http_rbac", api2("authz_dry_run_action", "allow", "authz_dry_run_result", "allowed"), 15)
	// The refused plaintext connections (cron's 4, the external caller's 2) count on the
	// destinations' inbound listeners, and only there.
	expect(t, mfs, "envoy_listener_no_filter_chain_match", map[string]string{"namespace": "shop", "listener_address": "0.0.0.0_15006"}, 6)
	expect(t, mfs, "envoy_listener_no_filter_chain_match", map[string]string{"namespace": "web"}, 0)
	got := sim.Outcomes()
	if o := got[cronToAPI.Key()]; o.Refused != 4 {
		t.Errorf("cron outcomes %+v, want 4 refused", o)
	}
	if o := got[extToAPI.Key()]; o.Refused != 2 {
		t.Errorf("external outcomes %+v, want 2 refused", o)
	}
	if o := got[frontToAPI.Key()]; o.Denied != 10 || o.Succeeded != 20 {
		t.Errorf("front outcomes %+v, want 20 succeeded, 10 denied", o)
	}
}

// TestSimulatorRunUnavailable runs the real-time loop against a destination without pods: the
// caller's sidecar reports 503 UH (no healthy upstream) and Outcomes count the calls Unavailable.
func TestSimulatorRunUnavailable(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sim := New(newFakeReader(t, pod("web", "front-1", "front", "front", true)), Options{})
	flow := Flow{From: Workload{"web", "front"}, To: Workload{"shop", "gone"}, Port: 8080, Protocol: HTTP, PerSecond: 1000}
	sim.SetFlows([]Flow{flow})
	done := make(chan struct{})
	go func() { sim.Run(ctx, 10*time.Millisecond); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for sim.Outcomes()[flow.Key()].Unavailable == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	o := sim.Outcomes()[flow.Key()]
	if o.Unavailable == 0 || o.Succeeded != 0 {
		t.Fatalf("outcomes %+v, want only unavailable calls", o)
	}
	mfs, _ := scrape(t, sim.Handler(), "")
	expect(t, mfs, "istio_requests_total", map[string]string{"pod": "front-1", "reporter": "source",
		"response_code": "503", "response_flags": "UH", "destination_service": "gone.shop.svc.cluster.local"}, float64(o.Unavailable))
}

// TestSimulatorRefusedStatNeedsTheStatsMatcher: without RefusedStat (Istio's default stats
// matcher) a proxy exports no no_filter_chain_match at all, refused connections or not.
func TestSimulatorRefusedStatNeedsTheStatsMatcher(t *testing.T) {
	ctx := context.Background()
	strict := istioObject(t, strings.Replace(paDoc, "PERMISSIVE", "STRICT", 1))
	c := newFakeReader(t, pod("shop", "api-1", "api", "api", true), pod("legacy", "cron-1", "cron", "", false), strict)
	sim := New(c, Options{})
	sim.SetFlows([]Flow{cronToAPI})
	if err := sim.Step(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	mfs, _ := scrape(t, sim.Handler(), "")
	if _, found := value(mfs, "envoy_listener_no_filter_chain_match", nil); found {
		t.Fatal("no_filter_chain_match exported without the stats matcher including it")
	}
	if o := sim.Outcomes()[cronToAPI.Key()]; o.Refused != 4 {
		t.Fatalf("cron outcomes %+v, want 4 refused", o)
	}
}

// TestSimulatorLocalhostOnlyApplication: the proxy of a workload whose application listens on
// localhost only answers 503 with flag UF as the destination, and closes TCP connections with
// UF; the caller's proxy reports the 503 as the upstream's answer, with no flag of its own.
func TestSimulatorLocalhostOnlyApplication(t *testing.T) {
	ctx := context.Background()
	c := newFakeReader(t, pod("shop", "api-1", "api", "api", true), pod("web", "front-1", "front", "front", true))
	sim := New(c, Options{})
	sim.SetFlows([]Flow{frontToAPI, extToAPI})
	sim.SetLocalhostOnly(Workload{"shop", "api"})
	if err := sim.Step(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	mfs, _ := scrape(t, sim.Handler(), "")
	api1 := map[string]string{"namespace": "shop", "pod": "api-1", "reporter": "destination"}
	expect(t, mfs, "istio_requests_total", with(api1, "source_workload", "front", "response_code", "503", "response_flags", "UF"), 10)
	expect(t, mfs, "istio_requests_total", map[string]string{"pod": "front-1", "reporter": "source", "response_code": "503", "response_flags": "-"}, 10)
	expect(t, mfs, "istio_tcp_connections_closed_total", with(api1, "source_workload", "unknown", "response_flags", "UF"), 2)
	if o := sim.Outcomes()[frontToAPI.Key()]; o.AppUnreachable != 10 || o.Succeeded != 0 {
		t.Errorf("front outcomes %+v, want 10 the application's proxy could not pass on", o)
	}
}

// with is base with the given label pairs added or replaced.
func with(base map[string]string, kv ...string) map[string]string {
	m := map[string]string{}
	for k, v := range base {
		m[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// TestSimulatorRouteTimeouts: a VirtualService for a workload's Service (short name or full,
// bound to sidecars; the oldest of several) times out the requests its application answers too
// slowly: the caller's proxy reports them 504 with flag UT, the destination's with code 0 and
// flag DC. A VirtualService bound only to a gateway, or with a first route that matches, times
// out nothing.
func TestSimulatorRouteTimeouts(t *testing.T) {
	vs := func(doc string) *unstructured.Unstructured {
		u := fromYAML(t, doc)
		u.SetAPIVersion("networking.istio.io/v1")
		return u
	}
	slow := frontToAPI
	slow.Latency = 300 * time.Millisecond
	tests := map[string]struct {
		docs     []string
		timedOut int64
	}{
		"a route timeout shorter than the application": {docs: []string{`
kind: VirtualService
metadata: {namespace: shop, name: api, creationTimestamp: "2026-01-01T00:00:00Z"}
spec: {hosts: [api], http: [{route: [{destination: {host: api}}], timeout: 0.100s}]}`}, timedOut: 10},
		"the full host name, a longer timeout": {docs: []string{`
kind: VirtualService
metadata: {namespace: other, name: api, creationTimestamp: "2026-01-01T00:00:00Z"}
spec: {hosts: [api.shop.svc.cluster.local], http: [{route: [{destination: {host: api.shop.svc.cluster.local}}], timeout: 2s}]}`}},
		"the oldest of two for the host wins": {docs: []string{`
kind: VirtualService
metadata: {namespace: shop, name: newer, creationTimestamp: "2026-02-01T00:00:00Z"}
spec: {hosts: [api], http: [{route: [{destination: {host: api}}], timeout: 0.100s}]}`, `
kind: VirtualService
metadata: {namespace: shop, name: older, creationTimestamp: "2026-01-01T00:00:00Z"}
spec: {hosts: [api], http: [{route: [{destination: {host: api}}]}]}`}},
		"bound to a gateway only": {docs: []string{`
kind: VirtualService
metadata: {namespace: shop, name: api, creationTimestamp: "2026-01-01T00:00:00Z"}
spec: {hosts: [api], gateways: [ingress/gw], http: [{route: [{destination: {host: api}}], timeout: 0.100s}]}`}},
		"a first route with a match is not evaluated": {docs: []string{`
kind: VirtualService
metadata: {namespace: shop, name: api, creationTimestamp: "2026-01-01T00:00:00Z"}
spec: {hosts: [api], http: [{match: [{uri: {prefix: /v2}}], route: [{destination: {host: api}}], timeout: 0.100s}]}`}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			objs := []client.Object{pod("shop", "api-1", "api", "api", true), pod("web", "front-1", "front", "front", true)}
			for _, d := range tc.docs {
				objs = append(objs, vs(d))
			}
			sim := New(newFakeReader(t, objs...), Options{})
			sim.SetFlows([]Flow{slow})
			if err := sim.Step(context.Background(), time.Second); err != nil {
				t.Fatal(err)
			}
			if o := sim.Outcomes()[slow.Key()]; o.TimedOut != tc.timedOut || o.Succeeded != 10-tc.timedOut {
				t.Fatalf("outcomes %+v, want %d timed out", o, tc.timedOut)
			}
			if tc.timedOut == 0 {
				return
			}
			mfs, _ := scrape(t, sim.Handler(), "")
			expect(t, mfs, "istio_requests_total", map[string]string{"pod": "front-1", "reporter": "source", "response_code": "504", "response_flags": "UT"}, 10)
			expect(t, mfs, "istio_requests_total", map[string]string{"pod": "api-1", "reporter": "destination", "response_code": "0", "response_flags": "DC"}, 10)
		})
	}
}
