// Package telemetry tests the operator's telemetry sources against the real parts they read: a
// real Prometheus server (built by `make cluster-bins`) scraping Istio's standard metrics. The
// series are served by the test itself, as a proxy's merged metrics would carry them after
// Istio's standard scrape configuration (namespace and pod labels); no proxy runs here.
package telemetry

import (
	"context"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshwright/meshwright/internal/telemetry"
	"github.com/meshwright/meshwright/internal/traffic"
	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
)

// istioSeries serves, for Prometheus to scrape, what proxies in three namespaces report: shop
// receives plaintext calls from legacy/client and from outside the mesh, and mTLS calls from
// shop/web, some of which its dry-run policies would deny; quiet has a proxy that receives
// nothing but whose dry-run policies (named as before Istio 1.23) would deny something;
// unscraped has none. Once ztunnel starts (startZtunnel), a ztunnel in istio-cni reports its build
// gauge and what amb's pods, in ambient mode, receive: mTLS from shop/web, plaintext from outside
// the mesh (its connection_security_policy "unknown", as ztunnel writes it).
func istioSeries(t *testing.T) (addr string, tick, startZtunnel func()) {
	reg := prometheus.NewRegistry()
	up := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "envoy_server_uptime", Help: "Envoy's uptime."}, []string{"namespace", "pod"})
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_requests_total", Help: "Istio's requests."},
		[]string{"namespace", "pod", "reporter", "source_workload_namespace", "source_workload", "destination_workload_namespace", "connection_security_policy", "response_code", "response_flags"})
	// Envoy's listener stat, as the operator's stats matcher exports it: the inbound listener's
	// count is plaintext refused under STRICT, the outbound listener's is not.
	noChain := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envoy_listener_no_filter_chain_match", Help: "Envoy's listener stat."},
		[]string{"namespace", "pod", "listener_address"})
	conns := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_connections_opened_total", Help: "Istio's TCP connections."},
		[]string{"namespace", "pod", "reporter", "source_workload_namespace", "source_workload", "destination_workload_namespace", "connection_security_policy"})
	closed := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_connections_closed_total", Help: "Istio's TCP connections."},
		[]string{"namespace", "pod", "reporter", "source_workload_namespace", "source_workload", "destination_workload_namespace", "response_flags"})
	// Envoy's RBAC stats as Istio 1.23 and later name them, and as earlier releases did.
	rbac := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envoy_http_rbac", Help: "Envoy's RBAC filter."},
		[]string{"namespace", "pod", "http_conn_manager_prefix", "authz_dry_run_action", "authz_dry_run_result"})
	rbacBefore123 := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envoy_http_inbound_0_0_0_0_8080_rbac", Help: "Envoy's RBAC filter."},
		[]string{"namespace", "pod", "authz_dry_run_action", "authz_dry_run_result"})
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "istio_build", Help: "Istio component build info."}, []string{"namespace", "pod", "component", "tag"})
	var ztunnel atomic.Bool
	reg.MustRegister(up, requests, conns, closed, rbac, rbacBefore123, noChain, build)
	up.WithLabelValues("shop", "web-1").Set(100)
	up.WithLabelValues("quiet", "idle-1").Set(100)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	startZtunnel = func() {
		build.WithLabelValues("istio-cni", "ztunnel-x7k2p", "ztunnel", "1.31.4").Set(1)
		ztunnel.Store(true)
	}
	return strings.TrimPrefix(srv.URL, "http://"), func() {
		if ztunnel.Load() {
			conns.WithLabelValues("istio-cni", "ztunnel-x7k2p", "destination", "shop", "web", "amb", "mutual_tls").Add(2)
			conns.WithLabelValues("istio-cni", "ztunnel-x7k2p", "destination", "unknown", "unknown", "amb", "unknown").Add(1)
			// amb's waypoint: ztunnel sees it as the caller; the waypoint reports the callers
			// behind it, one of them refused by its policy (and, whatever it writes of the
			// connection's security, none in plaintext: they came through ztunnel's tunnel).
			conns.WithLabelValues("istio-cni", "ztunnel-x7k2p", "destination", "amb", "waypoint", "amb", "mutual_tls").Add(3)
			requests.WithLabelValues("amb", "waypoint-5d9f", "waypoint", "orders", "api", "amb", "unknown", "200", "-").Add(2)
			requests.WithLabelValues("amb", "waypoint-5d9f", "waypoint", "rogue", "x", "amb", "mutual_tls", "403", "-").Add(1)
		}
		requests.WithLabelValues("shop", "web-1", "destination", "legacy", "client", "shop", "none", "200", "-").Add(3)
		requests.WithLabelValues("shop", "web-1", "destination", "shop", "web", "shop", "mutual_tls", "200", "-").Add(10)
		requests.WithLabelValues("shop", "web-1", "destination", "shop", "web", "shop", "mutual_tls", "403", "-").Add(2)
		requests.WithLabelValues("legacy", "client-1", "source", "legacy", "client", "shop", "unknown", "200", "-").Add(3)
		// A caller in the mesh failing to connect to shop (UF), and one finding no endpoint
		// (UH), which is not a connection failure of the step's making.
		requests.WithLabelValues("orders", "api-1", "source", "orders", "api", "shop", "unknown", "503", "UF").Add(1)
		requests.WithLabelValues("orders", "api-1", "source", "orders", "api", "shop", "unknown", "503", "UH").Add(4)
		// shop's proxy failing to reach its application, for a request and a connection.
		requests.WithLabelValues("shop", "web-1", "destination", "legacy", "client", "shop", "none", "503", "UF,URX").Add(1)
		closed.WithLabelValues("shop", "web-1", "destination", "unknown", "unknown", "shop", "UF").Add(1)
		closed.WithLabelValues("shop", "web-1", "destination", "unknown", "unknown", "shop", "-").Add(1)
		noChain.WithLabelValues("shop", "web-1", "0.0.0.0_15006").Add(1)
		noChain.WithLabelValues("shop", "web-1", "0.0.0.0_15001").Add(5)
		conns.WithLabelValues("shop", "web-1", "destination", "unknown", "unknown", "shop", "none").Add(1)
		rbac.WithLabelValues("shop", "web-1", "inbound_0.0.0.0_8080", "allow", "denied").Add(2)
		rbac.WithLabelValues("shop", "web-1", "inbound_0.0.0.0_8080", "allow", "allowed").Add(10)
		rbacBefore123.WithLabelValues("quiet", "idle-1", "deny", "denied").Add(1)
	}, startZtunnel
}

// TestPrometheusSource: the source asks a real Prometheus, in one batch for every namespace,
// which namespaces' proxies report, who called them in plaintext, who was answered 403, how
// many plaintext connections their inbound listeners refused, whose calls failed to connect, and
// which calls their proxies could not pass on to their application; it answers "unavailable"
// for each while the server is down, and reads again once it is back.
func TestPrometheusSource(t *testing.T) {
	ctx := context.Background()
	bin, err := cluster.DefaultBinDir()
	if err != nil {
		t.Fatal(err)
	}
	addr, tick, startZtunnel := istioSeries(t)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				tick()
			}
		}
	}()
	prom, err := cluster.StartPrometheus(ctx, bin, t.TempDir(), []cluster.ScrapeTarget{{Address: addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer prom.Stop()
	src, err := telemetry.NewPrometheus(telemetry.PrometheusConfig{URL: prom.URL})
	if err != nil {
		t.Fatal(err)
	}
	namespaces := []string{"shop", "quiet", "unscraped", "amb"}
	legacy, outside := traffic.Caller{Namespace: "legacy", Workload: "client"}, traffic.Caller{Namespace: traffic.Unknown, Workload: traffic.Unknown}
	var got map[string]traffic.Reading
	framework.Eventually(t, 60*time.Second, "Prometheus to show shop's plaintext callers", func() (bool, error) {
		got = src.Read(ctx, namespaces, time.Minute)
		return got["shop"].Reporting && got["quiet"].Reporting && got["shop"].Plaintext[legacy] > 0 && got["shop"].Plaintext[outside] > 0 && got["shop"].Refused > 0 && len(got["shop"].Failed) > 0, nil
	})
	// The inbound listener's refusals only: the outbound listener's grew five times as fast.
	if inbound := got["shop"].Refused; inbound >= 5*got["shop"].Callers[legacy]/3 {
		t.Errorf("shop refused %.0f, want the inbound listener's alone (about %.0f)", inbound, got["shop"].Callers[legacy]/3)
	}
	shop := got["shop"]
	if !shop.Reporting || shop.Unavailable != "" || len(shop.Plaintext) != 2 || !strings.Contains(shop.Source, prom.URL) {
		t.Errorf("shop: %+v, want reporting, legacy/client and the outside caller only in plaintext (mTLS and source-side series left out)", shop)
	}
	if web := (traffic.Caller{Namespace: "shop", Workload: "web"}); len(shop.Callers) != 3 || shop.Callers[web] == 0 || shop.ShadowDenied == 0 {
		t.Errorf("shop: %+v, want three callers (shop/web in mTLS among them) and shadow denials", shop)
	}
	if web := (traffic.Caller{Namespace: "shop", Workload: "web"}); len(shop.Denied) != 1 || shop.Denied[web] == 0 || shop.Denied[web] >= shop.Callers[web] {
		t.Errorf("shop denied %v, want shop/web's 403s only, fewer than its calls", shop.Denied)
	}
	if orders := (traffic.Caller{Namespace: "orders", Workload: "api"}); len(shop.Failed) != 1 || shop.Failed[orders] == 0 || shop.Failed[orders] >= 4*shop.Callers[legacy]/3 {
		t.Errorf("shop failed %v, want orders/api's UF requests only (about a third of legacy's calls)", shop.Failed)
	}
	if len(shop.Unreached) != 2 || shop.Unreached[legacy] == 0 || shop.Unreached[legacy] >= shop.Callers[legacy] || shop.Unreached[outside] == 0 {
		t.Errorf("shop unreached %v, want legacy/client's UF,URX requests (a quarter of its calls) and the outside caller's UF connections", shop.Unreached)
	}
	if shop.Refused == 0 {
		t.Errorf("shop: no refused connection read, want the inbound listener's no_filter_chain_match")
	}
	if q := got["quiet"]; !q.Reporting || len(q.Plaintext) != 0 || q.ShadowDenied == 0 || q.Refused != 0 {
		t.Errorf("quiet: %+v, want reporting with no plaintext caller, and the shadow denials under the name before Istio 1.23", q)
	}
	if u := got["unscraped"]; u.Reporting || u.Unavailable != "" {
		t.Errorf("unscraped: %+v, want answered but not reporting", u)
	}
	for ns, r := range got {
		if r.ZtunnelReporting || r.ZtunnelUnread {
			t.Errorf("%s before ztunnel runs: %+v, want ztunnel neither reporting nor unread", ns, r)
		}
	}

	// ztunnel starts: once scraped over a whole (short) window, every reading says it reports,
	// and amb's inbound is what it saw.
	startZtunnel()
	started := time.Now()
	web := traffic.Caller{Namespace: "shop", Workload: "web"}
	const short = 3 * time.Second
	framework.Eventually(t, 60*time.Second, "Prometheus to show ztunnel reporting amb's callers", func() (bool, error) {
		got = src.Read(ctx, namespaces, short)
		return got["amb"].ZtunnelReporting && got["amb"].Plaintext[outside] > 0 && got["amb"].Callers[web] > 0 && len(got["amb"].Denied) > 0, nil
	})
	api, rogue := traffic.Caller{Namespace: "orders", Workload: "api"}, traffic.Caller{Namespace: "rogue", Workload: "x"}
	if amb := got["amb"]; amb.Reporting || len(amb.Plaintext) != 1 || len(amb.Callers) != 5 || amb.Callers[api] == 0 || len(amb.Denied) != 1 || amb.Denied[rogue] == 0 || !got["shop"].ZtunnelReporting {
		t.Errorf("amb: %+v, shop ztunnel reporting %v; want no sidecar reporting, the outside caller alone in plaintext, shop/web in mTLS, the callers behind its waypoint (rogue/x refused by it), and ztunnel reporting for every namespace", amb, got["shop"].ZtunnelReporting)
	}
	// Over a window longer than ztunnel has been scraped, it vouches for nothing: its series
	// began within it.
	if long := src.Read(ctx, namespaces, 5*time.Minute)["amb"]; long.ZtunnelReporting && time.Since(started) < 4*time.Minute {
		t.Errorf("amb over 5 minutes, ztunnel scraped for %s: %+v, want ztunnel not vouching for the whole window", time.Since(started).Round(time.Second), long)
	}

	prom.Stop()
	for ns, r := range src.Read(ctx, namespaces, time.Minute) {
		if r.Unavailable == "" {
			t.Errorf("%s with Prometheus stopped: %+v, want unavailable", ns, r)
		}
	}
	if err := prom.Start(ctx); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 60*time.Second, "the source to read again once Prometheus is back", func() (bool, error) {
		r := src.Read(ctx, namespaces, time.Minute)["shop"]
		return r.Unavailable == "" && r.Plaintext[legacy] > 0, nil
	})
}
