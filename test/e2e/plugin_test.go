package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/report"
	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
)

// plugin runs `kubectl meshwright` (the plugin binary, as kubectl would) against a cluster.
func plugin(t *testing.T, cl *cluster.Cluster, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(pluginBin, append(args, "--kubeconfig="+cl.Kubeconfig)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// TestPluginMidRollout runs the kubectl plugin against the local cluster while a rollout is
// under way: pay has reached MutualTLS and holds it for the soak time before ZeroTrust, web is at
// its target.
// status shows the stages and namespaces; plan says the same as the operator (its summary is
// the AdoptionReady message, computed by the same code); plan -f shows what a new spec would
// change without changing anything, and a spec the API server would refuse is refused with its
// message; namespace shows a namespace's history.
func TestPluginMidRollout(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	ctx := context.Background()
	cl, c := framework.StartCluster(t, cluster.Options{})
	framework.MakeNamespace(t, c, "pay", map[string]string{"ladder": "zt"}, map[string]func(*appsv1.Deployment){"payments": nil})
	framework.MakeNamespace(t, c, "web", map[string]string{"ladder": "observe"}, map[string]func(*appsv1.Deployment){"frontend": nil})
	framework.WaitAvailable(t, c, "pay")
	framework.WaitAvailable(t, c, "web")
	spec := meshv1.MeshInstallationSpec{
		Rollout: meshv1.RolloutSpec{TrafficGates: meshv1.TrafficGatesSkip, MaxNamespacesInProgress: 1, SoakTime: &metav1.Duration{Duration: 30 * time.Minute}},
		Namespaces: []meshv1.NamespaceRule{
			{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "zt"}}, Level: meshv1.LevelZeroTrust},
			{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "observe"}}, Level: meshv1.LevelObserve},
		},
	}
	meshWithLocalIstiod(t, cl, c, spec)
	framework.Eventually(t, 3*time.Minute, "pay to hold MutualTLS and web to reach Observe", func() (bool, error) {
		for name, level := range map[string]meshv1.AdoptionLevel{"pay": meshv1.LevelMutualTLS, "web": meshv1.LevelObserve} {
			ns := &corev1.Namespace{}
			if err := c.Get(ctx, client.ObjectKey{Name: name}, ns); err != nil {
				return false, err
			}
			if ns.Labels[meshv1.LabelLevel] != string(level) || stateOf(ns).Step != nil {
				return false, nil
			}
		}
		return true, nil
	})

	// status: the checklist and the ladder. The counts in status may be up to 10 s behind the
	// namespaces (progress is written at most every StatusCoalesceWindow): wait for them.
	var out string
	framework.Eventually(t, 30*time.Second, "status to count both namespaces settled", func() (bool, error) {
		o, errOut, err := plugin(t, cl, "status")
		if err != nil {
			return false, fmt.Errorf("status: %w\n%s", err, errOut)
		}
		out = o
		return strings.Contains(out, "Namespaces: 2 enrolled, 0 in progress"), fmt.Errorf("status says:\n%s", out)
	})
	for _, want := range []string{"MeshInstallation default", "✓ Certificates", "✓ ControlPlane", "✓ Injection", "✓ Policies", "✗ Adoption",
		"NamespacesProgressing", "Namespaces: 2 enrolled, 0 in progress", "CA expires in", "Control plane\n", "Istio 1.31.4   active"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	var errOut string
	var err error
	if strings.Contains(out, "\x1b[") {
		t.Errorf("status wrote colours to a pipe:\n%s", out)
	}
	var st report.Status
	if out, errOut, err = plugin(t, cl, "status", "-o", "json"); err != nil || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("status -o json: %v %s\n%s", err, errOut, out)
	}
	if st.Namespaces.Enrolled != 2 || st.Namespaces.InProgress != 0 || len(st.Stages) != 5 ||
		len(st.Revisions) != 1 || st.Revisions[0].Namespaces != 2 {
		t.Errorf("status -o json = %+v, want 2 enrolled, none in progress, 5 stages, one revision injecting both namespaces", st)
	}

	// plan: the operator's next moves, from the same code: its summary is the operator's
	// AdoptionReady message (read right after, retried if the operator wrote in between).
	framework.Eventually(t, 30*time.Second, "plan to say what the operator says", func() (bool, error) {
		out, errOut, err := plugin(t, cl, "plan", "-o", "json")
		if err != nil {
			t.Fatalf("plan: %v\n%s", err, errOut)
		}
		var p report.Plan
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			return false, err
		}
		mesh := &meshv1.MeshInstallation{}
		if err := c.Get(ctx, client.ObjectKey{Name: "default"}, mesh); err != nil {
			return false, err
		}
		adoption := meta.FindStatusCondition(mesh.Status.Conditions, meshv1.ConditionAdoptionReady)
		moves := map[string]report.NamespaceMove{}
		for _, m := range p.Namespaces {
			moves[m.Namespace] = m
		}
		pay, web := moves["pay"], moves["web"]
		if pay.Action != report.ActionWait || !strings.Contains(pay.Detail, "holding MutualTLS for the soak time") || web.Action != report.ActionAtTarget {
			t.Fatalf("plan: pay %+v, web %+v; want pay holding MutualTLS for the soak time and web at its target", pay, web)
		}
		if !slices.Equal(pay.Policies, []string{"PeerAuthentication meshwright-strict (STRICT)"}) {
			t.Errorf("plan: pay's policies %v, want its STRICT PeerAuthentication", pay.Policies)
		}
		return adoption != nil && adoption.Message == p.Summary, nil
	})
	out, _, _ = plugin(t, cl, "plan")
	for _, want := range []string{"NAMESPACE", "pay", "holding MutualTLS", "web", "at target"} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}

	// plan -f: a new spec, checked by the API server, planned, and nothing changed.
	before := &meshv1.MeshInstallation{}
	if err := c.Get(ctx, client.ObjectKey{Name: "default"}, before); err != nil {
		t.Fatal(err)
	}
	next := before.DeepCopy()
	next.Spec.Namespaces[1].Level = meshv1.LevelMutualTLS
	values := map[string]any{}
	_ = json.Unmarshal(next.Spec.ControlPlane.Values.Raw, &values)
	values["pilot"] = map[string]any{"resources": map[string]any{"requests": map[string]any{"cpu": "250m"}}}
	raw, _ := json.Marshal(values)
	next.Spec.ControlPlane.Values.Raw = raw
	file := writeManifest(t, next)
	out, errOut, err = plugin(t, cl, "plan", "-f", file, "-o", "json")
	if err != nil {
		t.Fatalf("plan -f: %v\n%s", err, errOut)
	}
	var p report.Plan
	if err := json.Unmarshal([]byte(out), &p); err != nil || p.Spec == nil {
		t.Fatalf("plan -f -o json: %v\n%s", err, out)
	}
	if !slices.Contains(p.Spec.Targets, "web: Observe → MutualTLS") {
		t.Errorf("plan -f targets %v, want web: Observe → MutualTLS", p.Spec.Targets)
	}
	if !slices.ContainsFunc(p.Spec.ControlPlane, func(s string) bool {
		return strings.HasPrefix(s, "changed: Deployment istio-system/istiod") && strings.Contains(s, "cpu")
	}) {
		t.Errorf("plan -f control plane %v, want istiod's Deployment changed at its CPU request", p.Spec.ControlPlane)
	}
	after := &meshv1.MeshInstallation{}
	if err := c.Get(ctx, client.ObjectKey{Name: "default"}, after); err != nil {
		t.Fatal(err)
	}
	if after.Generation != before.Generation {
		t.Errorf("plan -f changed the installation: generation %d → %d", before.Generation, after.Generation)
	}
	bad := before.DeepCopy()
	bad.Spec.Rollout.MaxNamespacesInProgress = 5000
	_, errOut, err = plugin(t, cl, "plan", "-f", writeManifest(t, bad))
	if err == nil || !strings.Contains(errOut, "maxNamespacesInProgress must be a whole number from 1 to 1000") {
		t.Errorf("plan -f with an invalid spec: err %v, stderr %q; want the API server's refusal", err, errOut)
	}

	// namespace: one namespace's state and history.
	out, errOut, err = plugin(t, cl, "namespace", "pay")
	if err != nil {
		t.Fatalf("namespace pay: %v\n%s", err, errOut)
	}
	for _, want := range []string{"Namespace pay: MutualTLS (target ZeroTrust)", "Next: wait", "History", "StepStarted", "Reached MutualTLS"} {
		if !strings.Contains(out, want) {
			t.Errorf("namespace pay lacks %q:\n%s", want, out)
		}
	}
	if _, errOut, err = plugin(t, cl, "namespace", "no-such-namespace"); err == nil || !strings.Contains(errOut, "not found") {
		t.Errorf("namespace no-such-namespace: err %v, stderr %q; want not found", err, errOut)
	}
}

// writeManifest writes a MeshInstallation as a user would keep it: no status, no server fields.
func writeManifest(t *testing.T, mesh *meshv1.MeshInstallation) string {
	t.Helper()
	m := &meshv1.MeshInstallation{TypeMeta: metav1.TypeMeta{APIVersion: meshv1.GroupVersion.String(), Kind: "MeshInstallation"},
		ObjectMeta: metav1.ObjectMeta{Name: mesh.Name}, Spec: mesh.Spec}
	b, err := yaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
