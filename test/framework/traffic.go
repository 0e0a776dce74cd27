package framework

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/trafficsim"
)

// SimulatedTraffic is the traffic simulator (package trafficsim) running against a test's
// cluster: it stands in for the Envoy proxies kwok cannot run, so what the gates read from it
// shows what they would do with real proxies' telemetry, not that a real data plane behaves so.
type SimulatedTraffic struct {
	Sim *trafficsim.Simulator
	// URL serves every simulated pod's series at /metrics (for Prometheus) and each pod's own
	// merged metrics at /pods/<namespace>/<name>/stats/prometheus (for the embedded source).
	URL string
}

// StartSimulatedTraffic runs the simulator over c, stepping every 500 ms, until the test ends.
func StartSimulatedTraffic(t testing.TB, c client.Reader, flows ...trafficsim.Flow) *SimulatedTraffic {
	t.Helper()
	s, stop := RunSimulatedTraffic(c, testr.NewWithInterface(t, testr.Options{}), flows...)
	t.Cleanup(stop)
	return s
}

// RunSimulatedTraffic runs the simulator over c, stepping every 500 ms, serving it on a local
// port, until stop is called (for programs with no test, such as the benchmarks).
func RunSimulatedTraffic(c client.Reader, log logr.Logger, flows ...trafficsim.Flow) (s *SimulatedTraffic, stop func()) {
	// RefusedStat: the operator installs its revisions with the stats matcher that exports it.
	sim := trafficsim.New(c, trafficsim.Options{Log: log, RefusedStat: true})
	sim.SetFlows(flows)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", sim.Handler())
	mux.Handle("GET /pods/", sim.PodsHandler())
	srv := httptest.NewServer(mux)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sim.Run(ctx, 500*time.Millisecond)
	}()
	return &SimulatedTraffic{Sim: sim, URL: srv.URL}, func() {
		cancel()
		<-done
		srv.Close()
	}
}

// ProxyStatsURL is the operator's --proxy-stats-url that reads each pod's stats from the
// simulator: kwok's pod IPs route nowhere.
func (s *SimulatedTraffic) ProxyStatsURL() string {
	return s.URL + "/pods/{namespace}/{name}/stats/prometheus"
}

// ScrapeTarget is the simulator as a Prometheus target: its series carry the pods' namespace and
// pod labels, as Istio's standard scrape configuration gives them.
func (s *SimulatedTraffic) ScrapeTarget() cluster.ScrapeTarget {
	return cluster.ScrapeTarget{Address: strings.TrimPrefix(s.URL, "http://"), Path: "/metrics"}
}
