package e2e

import (
	"fmt"
	"github.com/meshwright/meshwright/test/framework/manifest"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape reads the operator's metrics endpoint as Prometheus would.
func scrape(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(resp.Body)
}

// sampleOf returns the value of the series of name whose labels include labels (a histogram
// gives its sample count); found is false when there is none.
func sampleOf(families map[string]*dto.MetricFamily, name string, labels map[string]string) (value float64, found bool) {
	f, ok := families[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range labels {
			if have[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// metricWatch scrapes an operator every half second while a rollout runs and keeps the
// highest value each watched series reached.
type metricWatch struct {
	mu   sync.Mutex
	max  map[string]float64
	stop chan struct{}
	done chan struct{}
}

// watchMetrics starts scraping op for the series named by key (metric name and labels).
func watchMetrics(t *testing.T, op *operator, series map[string]struct {
	name   string
	labels map[string]string
}) *metricWatch {
	t.Helper()
	w := &metricWatch{max: map[string]float64{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			if families, err := scrape(op.metrics); err == nil {
				w.mu.Lock()
				for key, s := range series {
					if v, ok := sampleOf(families, s.name, s.labels); ok && v > w.max[key] {
						w.max[key] = v
					}
				}
				w.mu.Unlock()
			}
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(w.end)
	return w
}

// end stops the scraping; the maxima stay readable.
func (w *metricWatch) end() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// highest is the highest value a watched series reached.
func (w *metricWatch) highest(key string) float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.max[key]
}

// TestChartShipsAlertsAndDashboard: with prometheusRule and grafanaDashboard enabled, the chart
// renders the PrometheusRule of config/prometheus and the dashboard of config/grafana in a
// ConfigMap that Grafana's sidecar picks up; with the defaults it renders neither.
func TestChartShipsAlertsAndDashboard(t *testing.T) {
	tests := map[string]struct {
		values map[string]any
		want   bool
	}{
		"enabled":  {values: map[string]any{"prometheusRule": map[string]any{"enabled": true}, "grafanaDashboard": map[string]any{"enabled": true}}, want: true},
		"defaults": {values: map[string]any{}, want: false},
	}
	rulesFile, err := os.ReadFile(filepath.Join(repoRoot, "config", "prometheus", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rules := manifest.MustDecodeAll(t, rulesFile)[0]
	dashboard, err := os.ReadFile(filepath.Join(repoRoot, "config", "grafana", "meshwright-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			objs := renderChart(t, tc.values)
			var rule, cm *unstructured.Unstructured
			for _, o := range objs {
				switch {
				case o.GetKind() == "PrometheusRule":
					rule = o
				case o.GetKind() == "ConfigMap" && strings.HasSuffix(o.GetName(), "grafana-dashboard"):
					cm = o
				}
			}
			if (rule != nil) != tc.want || (cm != nil) != tc.want {
				t.Fatalf("PrometheusRule rendered %v, dashboard ConfigMap rendered %v; want %v", rule != nil, cm != nil, tc.want)
			}
			if !tc.want {
				return
			}
			if !equality.Semantic.DeepEqual(rule.Object["spec"], rules.Object["spec"]) {
				t.Error("the chart's PrometheusRule spec differs from config/prometheus/rules.yaml")
			}
			if rule.GetNamespace() != chartNamespace || cm.GetNamespace() != chartNamespace {
				t.Errorf("namespaces %q and %q, want the release's %q", rule.GetNamespace(), cm.GetNamespace(), chartNamespace)
			}
			data, _, _ := unstructured.NestedString(cm.Object, "data", "meshwright-dashboard.json")
			if strings.TrimSpace(data) != strings.TrimSpace(string(dashboard)) {
				t.Error("the chart's dashboard differs from config/grafana/meshwright-dashboard.json")
			}
			if cm.GetLabels()["grafana_dashboard"] != "1" {
				t.Errorf("dashboard ConfigMap labels %v, want grafana_dashboard=1 for Grafana's sidecar", cm.GetLabels())
			}
		})
	}
}
