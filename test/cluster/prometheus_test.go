package cluster

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"
)

// TestPrometheusScrapesQueriesAndSurvivesARestart is the harness's Prometheus as the traffic
// gates will use it: it scrapes a target on 127.0.0.1 with the target's labels and the series'
// own, answers PromQL through client_golang's query API, fails queries while stopped, keeps its
// samples across a restart on the same URL, and follows a new targets file without a restart.
func TestPrometheusScrapesQueriesAndSurvivesARestart(t *testing.T) {
	reg := prometheus.NewRegistry()
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshwright_test_requests_total", Help: "Requests served, by response code.",
	}, []string{"response_code"})
	// A series that carries its own namespace, as Istio's do: honor_labels keeps it.
	own := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshwright_test_own_namespace_total", Help: "A series with its own namespace label.",
		ConstLabels: prometheus.Labels{"namespace": "payments"},
	})
	reg.MustRegister(requests, own)
	requests.WithLabelValues("200").Add(3)
	own.Inc()
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	ctx := context.Background()
	p, err := StartPrometheus(ctx, "", t.TempDir(), []ScrapeTarget{{
		Address: strings.TrimPrefix(srv.URL, "http://"),
		Labels:  map[string]string{"namespace": "shop", "pod": "web-1"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	for _, addr := range listenAddrs(t, p.proc.PID) {
		if !strings.HasPrefix(addr, "127.0.0.1:") {
			t.Errorf("prometheus listens on %s; every listener must bind 127.0.0.1", addr)
		}
	}
	client, err := api.NewClient(api.Config{Address: p.URL})
	if err != nil {
		t.Fatal(err)
	}
	q := promv1.NewAPI(client)

	start := time.Now()
	waitForValue(t, p, q, `up{job="local",namespace="shop",pod="web-1"}`, 1)
	waitForValue(t, p, q, `meshwright_test_requests_total{namespace="shop",pod="web-1",response_code="200"}`, 3)
	seenAt := time.Now()
	t.Logf("first samples queryable after %v; prometheus RSS %s", seenAt.Sub(start).Round(time.Millisecond), vmRSS(p.proc.PID))
	waitForValue(t, p, q, `meshwright_test_own_namespace_total{namespace="payments",pod="web-1"}`, 1)
	if v, err := queryVector(ctx, q, `meshwright_test_own_namespace_total{exported_namespace!=""}`, time.Now()); err != nil || len(v) != 0 {
		t.Errorf("honor_labels: want no exported_namespace series, got %v (%v)", v, err)
	}

	p.Stop()
	if v, err := queryVector(ctx, q, "up", time.Now()); err == nil {
		t.Fatalf("a query to a stopped Prometheus succeeded: %v", v)
	}
	requests.WithLabelValues("200").Add(2)
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// The sample scraped before the stop is still there: same data directory.
	if v, err := queryVector(ctx, q, `meshwright_test_requests_total{pod="web-1",response_code="200"}`, seenAt); err != nil || len(v) != 1 || v[0].Value != 3 {
		t.Fatalf("after a restart, want the sample of before the stop (3) at %v, got %v (%v)", seenAt, v, err)
	}
	waitForValue(t, p, q, `meshwright_test_requests_total{pod="web-1",response_code="200"}`, 5)

	// A second target on a custom path, added by rewriting the targets file only.
	mux := http.NewServeMux()
	mux.Handle("/stats/prometheus", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv2 := httptest.NewServer(mux)
	defer srv2.Close()
	if err := p.SetTargets([]ScrapeTarget{
		{Address: strings.TrimPrefix(srv.URL, "http://"), Labels: map[string]string{"namespace": "shop", "pod": "web-1"}},
		{Address: strings.TrimPrefix(srv2.URL, "http://"), Path: "/stats/prometheus", Labels: map[string]string{"namespace": "shop", "pod": "web-2"}},
	}); err != nil {
		t.Fatal(err)
	}
	waitForValue(t, p, q, `up{namespace="shop",pod="web-2"}`, 1)
	waitForValue(t, p, q, `meshwright_test_requests_total{pod="web-2",response_code="200"}`, 5)
}

// TestPrometheusWithoutBinarySaysWhatToRun: a missing binary is an error naming the make
// target that builds it, never a skipped test.
func TestPrometheusWithoutBinarySaysWhatToRun(t *testing.T) {
	_, err := StartPrometheus(context.Background(), t.TempDir(), t.TempDir(), nil)
	if err == nil || !strings.Contains(err.Error(), "make cluster-bins") {
		t.Fatalf("want an error that points at `make cluster-bins`, got %v", err)
	}
}

// TestPrometheusRefusesBadTargets: a targets file Prometheus would reject is refused when
// written, not logged by Prometheus while the old targets stay.
func TestPrometheusRefusesBadTargets(t *testing.T) {
	p := &Prometheus{Dir: t.TempDir()}
	for _, bad := range []ScrapeTarget{
		{Address: ""},
		{Address: "http://127.0.0.1:9090"},
		{Address: "127.0.0.1:9090", Path: "metrics"},
		{Address: "127.0.0.1:9090", Labels: map[string]string{"bad-name": "x"}},
		{Address: "127.0.0.1:9090", Labels: map[string]string{"__address__": "x"}},
	} {
		if err := p.SetTargets([]ScrapeTarget{bad}); err == nil {
			t.Errorf("SetTargets(%+v) succeeded", bad)
		}
	}
}

// waitForValue waits up to 15 s (a scrape a second) for query to return one sample of value want.
func waitForValue(t *testing.T, p *Prometheus, q promv1.API, query string, want float64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var v model.Vector
	var err error
	for time.Now().Before(deadline) {
		v, err = queryVector(context.Background(), q, query, time.Now())
		if err == nil && len(v) == 1 && float64(v[0].Value) == want {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s: want one sample of %v within 15s, got %v (%v); prometheus log %s:\n%s", query, want, v, err, p.LogPath(), tail(p.LogPath(), 20))
}

// queryVector runs an instant query that must return a vector.
func queryVector(ctx context.Context, q promv1.API, query string, at time.Time) (model.Vector, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, _, _, err := q.Query(ctx, query, at)
	if err != nil {
		return nil, err
	}
	v, ok := res.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("%s: want a vector, got a %s", query, res.Type())
	}
	return v, nil
}

// vmRSS reads a process's resident memory from /proc, for the log.
func vmRSS(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return err.Error()
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			return strings.Join(strings.Fields(strings.TrimPrefix(line, "VmRSS:")), " ")
		}
	}
	return "unknown"
}
