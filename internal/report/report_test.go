package report

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/adoption"
	"github.com/meshwright/meshwright/internal/ladder"
)

var update = flag.Bool("update", false, "rewrite the golden files from the current output")

// now is the time every recorded state is looked at.
var now = time.Date(2026, 11, 26, 7, 0, 0, 0, time.UTC)

// golden compares got with testdata/<name>, or rewrites it with -update. Every line must fit
// an 80-column terminal.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/report -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the output (go test ./internal/report -update rewrites it); got:\n%s", path, got)
	}
	for i, line := range strings.Split(string(got), "\n") {
		if n := utf8.RuneCountInString(line); n > Width {
			t.Errorf("%s line %d is %d columns wide: %q", name, i+1, n, line)
		}
	}
	if bytes.Contains(got, []byte("\x1b[")) {
		t.Errorf("%s has terminal colours, but it was written without them", name)
	}
}

// eachFixture runs one subtest per recorded state in testdata/<dir>.
func eachFixture(t *testing.T, dir string, test func(t *testing.T, name, path string)) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no recorded states in testdata/%s: %v", dir, err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) { test(t, name, f) })
	}
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestStatusGolden(t *testing.T) {
	eachFixture(t, "status", func(t *testing.T, name, path string) {
		mesh := &meshv1.MeshInstallation{}
		readYAML(t, path, mesh)
		var out bytes.Buffer
		if err := StatusOf(mesh, now).Text(&out, Style{}); err != nil {
			t.Fatal(err)
		}
		golden(t, "status/"+name+".txt", out.Bytes())
	})
}

// planFixture is a recorded cluster state as the planner reads it.
type planFixture struct {
	// ActiveRevision is the revision namespaces move to; default when empty.
	ActiveRevision string                  `json:"activeRevision"`
	Mesh           meshv1.MeshInstallation `json:"mesh"`
	Namespaces     []corev1.Namespace      `json:"namespaces"`
	Observed       map[string]struct {
		Pods           ladder.Pods       `json:"pods"`
		Workloads      []ladder.Workload `json:"workloads"`
		PolicyConflict string            `json:"policyConflict"`
	} `json:"observed"`
}

// planOf decides a recorded state with the operator's code: the candidates and their order,
// then every namespace's decision.
func planOf(t *testing.T, name string) (*meshv1.MeshInstallation, []adoption.NamespacePlan, adoption.Target) {
	t.Helper()
	var fx planFixture
	readYAML(t, filepath.Join("testdata", "plan", name+".yaml"), &fx)
	plans := adoption.Candidates(context.Background(), &fx.Mesh, fx.Namespaces, nil, []string{"istio-system", "meshwright-system"})
	for i := range plans {
		o := fx.Observed[plans[i].Namespace.Name]
		plans[i].Pods, plans[i].Workloads, plans[i].PolicyConflict = o.Pods, o.Workloads, o.PolicyConflict
		plans[i].Admission = adoption.ReaderAdmission(&fx.Mesh, plans[i].Namespace.Name) // as the plugin reads: it creates no dry-run pods
	}
	if fx.ActiveRevision == "" {
		fx.ActiveRevision = "default"
	}
	target := adoption.Target{Revision: fx.ActiveRevision}
	adoption.DecideAll(plans, &fx.Mesh, target, now)
	return &fx.Mesh, plans, target
}

func TestPlanGolden(t *testing.T) {
	eachFixture(t, "plan", func(t *testing.T, name, _ string) {
		mesh, plans, active := planOf(t, name)
		var out bytes.Buffer
		if err := PlanOf(mesh, plans, active).Text(&out, Style{}); err != nil {
			t.Fatal(err)
		}
		golden(t, "plan/"+name+".txt", out.Bytes())
	})
}

// TestPlanWithSpecChange: plan -f's section, with target changes, control-plane changes and a
// spec whose values do not render.
func TestPlanWithSpecChange(t *testing.T) {
	mesh, plans, _ := planOf(t, "mid-rollout")
	tests := map[string]SpecChange{
		"changes": {Targets: []string{"new-team: Off → Observe", "shop-legacy: MutualTLS → Observe"},
			ControlPlane: []string{"changed: Deployment istio-system/istiod (spec.template.spec.containers[0].resources.requests.cpu)", "removed: HorizontalPodAutoscaler istio-system/istiod"}},
		"nothing":         {},
		"does not render": {ControlPlaneError: "Istio's charts do not render with spec.controlPlane.values: template: istiod/templates/deployment.yaml:12: nil pointer"},
	}
	for name, change := range tests {
		t.Run(name, func(t *testing.T) {
			p := PlanOf(mesh, plans, adoption.Target{Revision: "default"})
			p.Spec = &change
			var out bytes.Buffer
			if err := p.Text(&out, Style{}); err != nil {
				t.Fatal(err)
			}
			golden(t, "plan/spec-"+strings.ReplaceAll(name, " ", "-")+".txt", out.Bytes())
		})
	}
}

func TestNamespaceGolden(t *testing.T) {
	eachFixture(t, "namespace", func(t *testing.T, name, path string) {
		var fx struct {
			Plan      string         `json:"plan"`
			Namespace string         `json:"namespace"`
			Events    []HistoryEvent `json:"events"`
		}
		readYAML(t, path, &fx)
		mesh, plans, _ := planOf(t, fx.Plan)
		var pl *adoption.NamespacePlan
		for i := range plans {
			if plans[i].Namespace.Name == fx.Namespace {
				pl = &plans[i]
			}
		}
		var out bytes.Buffer
		if err := NamespaceOf(mesh, fx.Namespace, pl, fx.Events).Text(&out, Style{}); err != nil {
			t.Fatal(err)
		}
		golden(t, "namespace/"+name+".txt", out.Bytes())
	})
	// A namespace the ladder does not look at.
	mesh, _, _ := planOf(t, "mid-rollout")
	var out bytes.Buffer
	if err := NamespaceOf(mesh, "not-enrolled", nil, nil).Text(&out, Style{}); err != nil {
		t.Fatal(err)
	}
	golden(t, "namespace/not-enrolled.txt", out.Bytes())
}

// TestColours: colours only when asked for (a terminal), and then on the marks and reasons.
func TestColours(t *testing.T) {
	mesh := &meshv1.MeshInstallation{}
	readYAML(t, "testdata/status/blocked.yaml", mesh)
	for _, color := range []bool{false, true} {
		var out bytes.Buffer
		if err := StatusOf(mesh, now).Text(&out, Style{Color: color}); err != nil {
			t.Fatal(err)
		}
		if has := bytes.Contains(out.Bytes(), []byte("\x1b[")); has != color {
			t.Errorf("Color %v: ANSI escapes present = %v", color, has)
		}
	}
}

func TestWrap(t *testing.T) {
	tests := map[string]struct {
		text  string
		width int
		want  []string
	}{
		"fits":            {"a b c", 10, []string{"a b c"}},
		"breaks at space": {"aaa bbb ccc", 7, []string{"aaa bbb", "ccc"}},
		"long word whole": {"a verylongword b", 5, []string{"a", "verylongword", "b"}},
		"empty":           {"", 5, nil},
		"runes not bytes": {"→ éé ab", 5, []string{"→ éé", "ab"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := wrap(tc.text, tc.width); strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("wrap(%q, %d) = %q, want %q", tc.text, tc.width, got, tc.want)
			}
		})
	}
}
