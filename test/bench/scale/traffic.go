package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
	"github.com/meshwright/meshwright/test/trafficsim"
)

// traffic is what a size's rollout reads under the traffic gates: the traffic simulator (kwok
// runs no proxies; see test/trafficsim) and, for the Prometheus source, a real Prometheus
// scraping it. The gates' cost is what is measured, not a data plane.
type traffic struct {
	mode      string
	telemetry meshv1.TelemetrySpec
	// args are the manager's extra flags (where the embedded source reads a pod's stats).
	args []string
	prom *cluster.Prometheus
	stop func()
}

// startTraffic starts the simulator, each namespace's web calling itself once a second (in
// mTLS once injected, so no gate holds a namespace for it), and, for "prometheus", a Prometheus
// scraping it. Mode "" starts nothing: the gates are skipped.
func startTraffic(ctx context.Context, c client.Reader, mode string, namespaces int) (*traffic, error) {
	t := &traffic{mode: mode, stop: func() {}}
	switch mode {
	case "":
		return t, nil
	case "embedded", "prometheus":
	default:
		return nil, fmt.Errorf(`-traffic-gates: %q is none of "", "embedded", "prometheus"`, mode)
	}
	flows := make([]trafficsim.Flow, 0, namespaces)
	for i := range namespaces {
		web := trafficsim.Workload{Namespace: fmt.Sprintf("scale-%04d", i), Name: "web"}
		flows = append(flows, trafficsim.Flow{From: web, To: web, Port: 8080, Protocol: trafficsim.HTTP, PerSecond: 1})
	}
	sim, stopSim := framework.RunSimulatedTraffic(c, logr.Discard(), flows...)
	t.stop = stopSim
	if mode == "embedded" {
		t.args = []string{"--proxy-stats-url=" + sim.ProxyStatsURL()}
		return t, nil
	}
	dir, err := os.MkdirTemp("", "scale-prometheus-")
	if err != nil {
		stopSim()
		return nil, err
	}
	if t.prom, err = cluster.StartPrometheus(ctx, "", dir, []cluster.ScrapeTarget{sim.ScrapeTarget()}); err != nil {
		stopSim()
		return nil, err
	}
	t.telemetry = meshv1.TelemetrySpec{Prometheus: &meshv1.PrometheusSource{URL: t.prom.URL}}
	t.stop = func() {
		t.prom.Stop()
		stopSim()
		_ = os.RemoveAll(dir)
	}
	return t, nil
}

// count reads what the gates cost: the operator's readings (meshwright_traffic_reads_total)
// and, with Prometheus, the queries it answered.
func (t *traffic) count(r *result, op *process) error {
	if t.mode == "" {
		return nil
	}
	reads, err := op.metric("meshwright_traffic_reads_total", "")
	if err != nil {
		return err
	}
	r.TrafficReads = int(reads)
	if t.prom != nil {
		q, err := scrapeURL(t.prom.URL+"/metrics", "prometheus_http_requests_total")
		if err != nil {
			return err
		}
		for labels, v := range q {
			if strings.Contains(labels, `handler="/api/v1/query"`) {
				r.PromQueries += int(v)
			}
		}
	}
	return nil
}
