package telemetry

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

// TestSourcesReuseRecentReadings: a namespace's reading over a window is reused for MinInterval
// (a rollout runs a pass on every pod event), read again after it, or when the namespace's phase
// of the ladder is judged and the reading's window began before the phase; a reading that failed
// is not reused: the next pass asks again.
func TestSourcesReuseRecentReadings(t *testing.T) {
	var queries atomic.Int32
	var down atomic.Bool
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		queries.Add(1)
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"success","data":{"resultType":"vector","result":[]}}`))
	}))
	defer api.Close()
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(now)
	s := &Sources{Clock: clk, MinInterval: 10 * time.Second}
	mesh := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "m"}, Spec: meshv1.MeshInstallationSpec{
		Telemetry: meshv1.TelemetrySpec{Prometheus: &meshv1.PrometheusSource{URL: api.URL}}}}
	ctx := context.Background()
	phases := map[string]time.Time{"shop": now.Add(-time.Hour), "orders": now.Add(-time.Hour), "new": now.Add(-time.Hour)}
	read := func(namespaces ...string) int32 {
		before := queries.Load()
		if got := s.Read(ctx, mesh, namespaces, phases, time.Minute, 2); len(got) != len(namespaces) {
			t.Fatalf("readings for %v: %v", namespaces, got)
		}
		return queries.Load() - before
	}

	first := read("shop", "orders")
	if first == 0 {
		t.Fatal("the first read asked nothing")
	}
	if n := read("shop", "orders"); n != 0 {
		t.Errorf("a second pass within the interval made %d queries, want the readings reused", n)
	}
	if n := read("shop", "orders", "new"); n != first {
		t.Errorf("a namespace not read yet took %d queries, want one batch (%d) for it alone", n, first)
	}
	// Five seconds on, a dry-run that began 56 s before the first read is judged over its last
	// minute: that read's minute began before the dry-run, so it is no evidence of it, however
	// recent.
	clk.SetTime(now.Add(5 * time.Second))
	phases["orders"] = now.Add(-56 * time.Second)
	if n := read("orders"); n != first {
		t.Errorf("a phase a window old, read before it began: %d queries, want a new read", n)
	}
	if n := read("orders"); n != 0 {
		t.Errorf("a reading taken within the phase: %d queries, want it reused", n)
	}
	clk.SetTime(now.Add(10 * time.Second))
	if n := read("shop"); n != first {
		t.Errorf("after the interval: %d queries, want a new read", n)
	}

	down.Store(true)
	clk.SetTime(now.Add(30 * time.Second))
	if got := s.Read(ctx, mesh, []string{"shop"}, phases, time.Minute, 2)["shop"]; got.Unavailable == "" {
		t.Fatalf("with the source down: %+v, want unavailable", got)
	}
	down.Store(false)
	if got := s.Read(ctx, mesh, []string{"shop"}, phases, time.Minute, 2)["shop"]; got.Unavailable != "" {
		t.Fatalf("a failed reading was reused: %+v", got)
	}
}
