package cni

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/revision"
)

func TestDecide(t *testing.T) {
	tests := map[string]struct {
		mode    meshv1.DataPlaneMode
		needing []string
		cur     Current
		want    Decision
	}{
		"Auto, nothing needs it":                   {mode: meshv1.ModeAuto},
		"empty mode is Auto":                       {needing: []string{"shop"}, want: Decision{Wanted: true, Install: true}},
		"Auto, a namespace needs it, not Ready":    {mode: meshv1.ModeAuto, needing: []string{"shop"}, cur: Current{Installed: true}, want: Decision{Wanted: true, Install: true}},
		"Auto, a namespace needs it, Ready":        {mode: meshv1.ModeAuto, needing: []string{"shop"}, cur: Current{Installed: true, Ready: true}, want: Decision{Wanted: true, Install: true, Istiod: true}},
		"Auto keeps what it installed":             {mode: meshv1.ModeAuto, cur: Current{Installed: true, Ready: true, IstiodInjects: true}, want: Decision{Wanted: true, Install: true, Istiod: true}},
		"a node joining does not turn istiod back": {mode: meshv1.ModeEnabled, cur: Current{Installed: true, IstiodInjects: true}, want: Decision{Wanted: true, Install: true, Istiod: true}},
		"Enabled, not installed yet":               {mode: meshv1.ModeEnabled, want: Decision{Wanted: true, Install: true}},
		"Disabled: istiod first":                   {mode: meshv1.ModeDisabled, needing: []string{"shop"}, cur: Current{Installed: true, Ready: true, IstiodInjects: true}, want: Decision{Install: true}},
		"Disabled: then the DaemonSet":             {mode: meshv1.ModeDisabled, cur: Current{Installed: true, Ready: true}, want: Decision{}},
		"Disabled: kept while pods rely on it":     {mode: meshv1.ModeDisabled, cur: Current{Installed: true, Ready: true, ReliantPods: 3}, want: Decision{Install: true}},
		"someone else's CNI: used, not installed":  {mode: meshv1.ModeAuto, cur: Current{Foreign: "kube-system/istio-cni-node", ForeignReady: true}, want: Decision{Wanted: true, Istiod: true}},
		"someone else's CNI not Ready":             {mode: meshv1.ModeEnabled, cur: Current{Foreign: "kube-system/istio-cni-node"}, want: Decision{Wanted: true}},
		"istiod told by the user's values only":    {mode: meshv1.ModeAuto, cur: Current{IstiodInjects: true}, want: Decision{}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Decide(tc.mode, tc.needing, tc.cur); got != tc.want {
				t.Fatalf("Decide = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestNeeding(t *testing.T) {
	ns := func(name, level string, labels ...string) corev1.Namespace {
		l := map[string]string{"pod-security.kubernetes.io/enforce": level}
		for i := 0; i+1 < len(labels); i += 2 {
			l[labels[i]] = labels[i+1]
		}
		return corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}
	}
	deleting := ns("going", "restricted", "team", "shop")
	now := metav1.Now()
	deleting.DeletionTimestamp = &now
	namespaces := []corev1.Namespace{
		ns("shop", "restricted", "team", "shop"), ns("cart", "baseline", "team", "shop"), ns("web", "privileged", "team", "shop"),
		ns("labs", "restricted"), ns("istio-system", "restricted", "team", "shop"), ns("pinned", "restricted", meshv1.LabelTargetLevel, "Observe"),
		ns("unlabelled", "", "team", "shop"), deleting,
	}
	rules := []meshv1.NamespaceRule{{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"team": "shop"}}, Level: meshv1.LevelMutualTLS}}
	got := Needing(rules, namespaces, []string{"istio-system"})
	if want := []string{"cart", "pinned", "shop"}; !slices.Equal(got, want) {
		t.Fatalf("Needing = %v, want %v (enrolled, enforcing baseline or restricted, not excluded, not going)", got, want)
	}
}

func TestVersion(t *testing.T) {
	rev := func(name, v string, available bool) revision.Installed {
		return revision.Installed{Name: name, Version: v, Available: available}
	}
	tests := map[string]struct {
		installed []revision.Installed
		active    string
		activeRev string
		running   string
		want      string
	}{
		"first installation":                 {active: "1.31.4", activeRev: "default", want: "1.31.4"},
		"steady":                             {installed: []revision.Installed{rev("default", "1.31.4", true)}, active: "1.31.4", activeRev: "default", running: "1.31.4", want: "1.31.4"},
		"revision upgrade under way":         {installed: []revision.Installed{rev("default", "1.31.4", true), rev("1-32-0", "1.32.0", true)}, active: "1.32.0", activeRev: "1-32-0", running: "1.31.4", want: "1.31.4"},
		"installed during an upgrade":        {installed: []revision.Installed{rev("1-32-0", "1.32.0", true), rev("default", "1.31.4", true)}, active: "1.32.0", activeRev: "1-32-0", want: "1.31.4"},
		"old revision gone, new one Ready":   {installed: []revision.Installed{rev("1-32-0", "1.32.0", true)}, active: "1.32.0", activeRev: "1-32-0", running: "1.31.4", want: "1.32.0"},
		"in place, istiod still rolling out": {installed: []revision.Installed{rev("default", "1.32.0", false)}, active: "1.32.0", activeRev: "default", running: "1.31.4", want: "1.31.4"},
		"in place, istiod not rendered yet":  {installed: []revision.Installed{rev("default", "1.31.4", true)}, active: "1.32.0", activeRev: "default", running: "1.31.4", want: "1.31.4"},
		"set back to the old revision":       {installed: []revision.Installed{rev("default", "1.31.4", true), rev("1-32-0", "1.32.0", true)}, active: "1.31.4", activeRev: "default", running: "1.32.0", want: "1.32.0"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Version(tc.active, tc.activeRev, tc.installed, tc.running); got != tc.want {
				t.Fatalf("Version = %s, want %s", got, tc.want)
			}
		})
	}
}
