package monitoring

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"

	"github.com/meshwright/meshwright/internal/metrics"
)

var repoRoot = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}()

// rule is one alerting rule of a PrometheusRule.
type rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

type prometheusRule struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   map[string]any `json:"metadata"`
	Spec       struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []rule `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// controllerRuntimeMetrics are the metrics controller-runtime serves beside the operator's
// own that the dashboard uses.
var controllerRuntimeMetrics = []string{"controller_runtime_reconcile_errors_total", "controller_runtime_reconcile_total"}

// selectorsIn parses a PromQL expression, as Prometheus would, and returns the metric names it
// selects.
func selectorsIn(t *testing.T, expr string) []string {
	t.Helper()
	// Grafana's variables are not PromQL: give them a value first.
	expr = strings.NewReplacer(`"$installation"`, `"default"`, "$__rate_interval", "5m").Replace(expr)
	node, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		t.Errorf("%q is not valid PromQL: %v", expr, err)
		return nil
	}
	var names []string
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			names = append(names, vs.Name)
		}
		return nil
	})
	return names
}

// exported says whether the operator's metrics endpoint serves a metric of this name.
func exported(name string) bool {
	return slices.Contains(metrics.Names(), name) || slices.Contains(controllerRuntimeMetrics, name)
}

// TestAlerts: every alert is valid PromQL over metrics the operator exports, has a severity, a
// summary and a description, and the chart ships the same rules as config/prometheus.
func TestAlerts(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "config", "prometheus", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pr prometheusRule
	if err := yaml.UnmarshalStrict(raw, &pr); err != nil {
		t.Fatalf("config/prometheus/rules.yaml: %v", err)
	}
	if pr.Kind != "PrometheusRule" || len(pr.Spec.Groups) == 0 {
		t.Fatalf("config/prometheus/rules.yaml is not a PrometheusRule with groups")
	}
	var alerts []string
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			names := selectorsIn(t, r.Expr)
			if len(names) == 0 {
				t.Errorf("alert %s selects no metric", r.Alert)
			}
			for _, n := range names {
				if !exported(n) {
					t.Errorf("alert %s uses %s, which the operator does not export (it exports %v)", r.Alert, n, metrics.Names())
				}
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s needs a severity label and summary and description annotations", r.Alert)
			}
		}
	}
	for _, want := range []string{"MeshwrightCAExpiringSoon", "MeshwrightRolloutStalled", "MeshwrightDegraded"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s (have %v)", want, alerts)
		}
	}
	chart, err := os.ReadFile(filepath.Join(repoRoot, "charts", "meshwright", "files", "prometheus-rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if string(chart) != string(raw) {
		t.Error("charts/meshwright/files/prometheus-rules.yaml differs from config/prometheus/rules.yaml: run make manifests")
	}
}

// grafanaPanel is what the test reads of a dashboard panel.
type grafanaPanel struct {
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// TestDashboard: every panel queries metrics the operator exports with valid PromQL, the
// installation variable lists installations, and the chart ships the same dashboard.
func TestDashboard(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "config", "grafana", "meshwright-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID        string         `json:"uid"`
		Panels     []grafanaPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	if dash.UID == "" || len(dash.Panels) < 6 {
		t.Fatalf("the dashboard has uid %q and %d panels; want a uid and the rollout's panels", dash.UID, len(dash.Panels))
	}
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, target := range p.Targets {
			for _, n := range selectorsIn(t, target.Expr) {
				used[n] = true
				if !exported(n) {
					t.Errorf("panel %q uses %s, which the operator does not export", p.Title, n)
				}
			}
		}
	}
	for _, want := range []string{metrics.NamespacesName, metrics.BlockedName, metrics.InProgressName, metrics.CAExpiryName, metrics.RollbacksName, metrics.StageDurationName + "_bucket"} {
		if !used[want] {
			t.Errorf("no panel shows %s", want)
		}
	}
	var installation bool
	for _, v := range dash.Templating.List {
		if q, ok := v.Query.(string); ok && v.Name == "installation" {
			installation = strings.Contains(q, metrics.ConditionName)
		}
	}
	if !installation {
		t.Error("the dashboard has no installation variable listing the installations")
	}
	chart, err := os.ReadFile(filepath.Join(repoRoot, "charts", "meshwright", "files", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if string(chart) != string(raw) {
		t.Error("charts/meshwright/files/grafana-dashboard.json differs from config/grafana: run make manifests")
	}
}

// TestSelectorsInCatchesMistakes: the check above can fail: a misspelt metric and broken
// PromQL are both caught.
func TestSelectorsInCatchesMistakes(t *testing.T) {
	if names := selectorsIn(t, `sum(meshwright_namespace{level="Observe"})`); len(names) != 1 || exported(names[0]) {
		t.Errorf("meshwright_namespace (misspelt) reported as exported: %v", names)
	}
	bad := `sum(meshwright_namespaces`
	if _, err := parser.NewParser(parser.Options{}).ParseExpr(bad); err == nil {
		t.Errorf("%q parsed", bad)
	}
}
