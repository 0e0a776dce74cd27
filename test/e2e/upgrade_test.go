package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/charts/chartstest"
	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
)

// revisionsOfPods counts a namespace's running pods by the revision that injected them ("" for
// pods without the proxy).
func revisionsOfPods(t *testing.T, c client.Client, namespace string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, p := range framework.Pods(t, c, namespace) {
		rev := ""
		if _, injected := p.Annotations["sidecar.istio.io/status"]; injected {
			rev = p.Annotations["istio.io/rev"]
		}
		out[rev]++
	}
	return out
}

// onRevision reports whether a namespace is labelled for rev, has no step running, and all its
// pods are Ready and injected by rev.
func onRevision(t *testing.T, c client.Client, namespace, rev string, pods int) bool {
	t.Helper()
	ns := framework.GetNamespace(t, c, namespace)
	if ns.Labels["istio.io/rev"] != rev || stateOf(ns).Step != nil {
		return false
	}
	got := revisionsOfPods(t, c, namespace)
	return len(got) == 1 && got[rev] == pods
}

// upgradeTo changes spec.version, the chart source and the webhook values (each revision's
// webhooks point at its own local istiod) in one update, as a user upgrading would.
func upgradeTo(t *testing.T, c client.Client, version, repository string, istiodPort int) {
	t.Helper()
	spec := map[string]any{"version": version, "controlPlane": map[string]any{"values": cluster.WebhookValues(istiodPort), "chartSource": map[string]any{"repository": repository, "insecureHTTP": true}}}
	if version == "" {
		spec["version"] = nil
	}
	patch, _ := json.Marshal(map[string]any{"spec": spec})
	if err := c.Patch(context.Background(), &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
}

// settledRevisions waits until the installation is Ready and status.revisions reads want: the
// revisions are counted by the ControlPlane stage, before the ladder's moves of the same pass,
// so they settle a pass after the last move.
func settledRevisions(t *testing.T, c client.Client, want string) *meshv1.MeshInstallation {
	t.Helper()
	mesh := &meshv1.MeshInstallation{}
	framework.Eventually(t, time.Minute, "Ready with status.revisions "+want, func() (bool, error) {
		if err := c.Get(context.Background(), client.ObjectKey{Name: "default"}, mesh); err != nil {
			return false, err
		}
		return meta.IsStatusConditionTrue(mesh.Status.Conditions, meshv1.ConditionReady) && revisionNames(mesh) == want, nil
	})
	return mesh
}

// setPaused sets spec.rollout.paused.
func setPaused(t *testing.T, c client.Client, paused bool) {
	t.Helper()
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"rollout": map[string]any{"paused": paused}}})
	if err := c.Patch(context.Background(), &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
}

// restartOperator kills the operator (SIGKILL: no clean-up of any kind) and starts another.
func restartOperator(t *testing.T, cl *cluster.Cluster, op *operator, phase string, args ...string) *operator {
	t.Helper()
	if err := op.stop(syscall.SIGKILL, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed the operator: %s", phase)
	return startOperator(t, cl.Kubeconfig, "default", false, args...)
}

// startRevisionIstiod runs a local istiod for a revision once the operator has rendered its
// ConfigMaps; it is stopped at the end of the test, or earlier by the caller.
func startRevisionIstiod(t *testing.T, cl *cluster.Cluster, port int, rev string) *cluster.Istiod {
	t.Helper()
	ist, err := cl.StartIstiod(context.Background(), cluster.IstiodOptions{Port: port, Revision: rev})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("istiod %s log: %s\n%s", rev, ist.LogPath(), tailFile(ist.LogPath(), 30))
		}
		ist.Stop()
	})
	return ist
}

func revisionNames(mesh *meshv1.MeshInstallation) string {
	var out []string
	for _, r := range mesh.Status.Revisions {
		s := fmt.Sprintf("%s@%s:%dns/%dpods", r.Name, r.Version, r.Namespaces, r.Pods)
		if r.Active {
			s += "*"
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// TestRevisionBasedUpgrade upgrades the mesh from Istio 1.31.4 (the embedded charts, revision
// "default") to 1.31.5 (charts served by a Helm repository the test runs, revision 1-31-5), each
// revision served by its own local istiod. Both revisions run during the move and namespaces
// switch one at a time; an upgrade set back returns every namespace to the old revision and
// removes the new one; the upgrade done again survives the operator being killed at each phase
// (the new revision installed with the rollout paused, a namespace mid-move: the same move
// resumes, the old revision retiring while a namespace labelled by hand still selects it), and
// ends with the old revision removed and every pod injected by the new one. `kubectl meshwright status` shows both revisions mid-move.
func TestRevisionBasedUpgrade(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	ctx := context.Background()
	cl, c := framework.StartCluster(t, cluster.Options{})
	for _, ns := range []string{"up-a", "up-b"} {
		framework.MakeNamespace(t, c, ns, map[string]string{"ladder": "up"}, map[string]func(*appsv1.Deployment){"web": nil})
		framework.WaitAvailable(t, c, ns)
	}
	steps := watchSteps(t, cl)
	repo := chartstest.Serve(t, chartstest.Options{Versions: []string{"1.31.5"}})

	installCRD(t, cl)
	cacheDir := "--chart-cache-dir=" + t.TempDir()
	op := startOperator(t, cl.Kubeconfig, "default", false, cacheDir)
	mesh := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1.MeshInstallationSpec{
		Rollout: meshv1.RolloutSpec{TrafficGates: meshv1.TrafficGatesSkip, MaxNamespacesInProgress: 1},
		Namespaces: []meshv1.NamespaceRule{
			{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "up"}}, Level: meshv1.LevelObserve},
		},
	}}
	createMesh(t, c, mesh)
	portA, err := cluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	upgradeTo(t, c, "", repo.URL, portA)
	startRevisionIstiod(t, cl, portA, "default")
	framework.WaitCondition(t, c, "default", meshv1.ConditionReady, metav1.ConditionTrue, meshv1.ReasonAllStagesReady, 3*time.Minute)
	for _, ns := range []string{"up-a", "up-b"} {
		if !onRevision(t, c, ns, "default", 2) {
			t.Fatalf("%s is not on revision default: %v", ns, revisionsOfPods(t, c, ns))
		}
	}

	// The upgrade, set back after the first namespace moved.
	portB, err := cluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	upgradeTo(t, c, "1.31.5", repo.URL, portB)
	istiodB := startRevisionIstiod(t, cl, portB, "1-31-5")
	var moved, waiting string
	framework.Eventually(t, 3*time.Minute, "one namespace's pods on revision 1-31-5 while the other's are on default", func() (bool, error) {
		for _, pair := range [][2]string{{"up-a", "up-b"}, {"up-b", "up-a"}} {
			a, b := revisionsOfPods(t, c, pair[0]), revisionsOfPods(t, c, pair[1])
			if len(a) == 1 && a["1-31-5"] == 2 && len(b) == 1 && b["default"] == 2 {
				moved, waiting = pair[0], pair[1]
				return true, nil
			}
		}
		return false, nil
	})
	if !framework.Exists(t, c, &appsv1.Deployment{}, "istio-system", "istiod") || !framework.Exists(t, c, &appsv1.Deployment{}, "istio-system", "istiod-1-31-5") {
		t.Fatal("both revisions' istiod must run while namespaces move")
	}
	out, stderr, err := plugin(t, cl, "status", "-o", "json")
	if err != nil {
		t.Fatalf("kubectl meshwright status: %v\n%s", err, stderr)
	}
	var st struct {
		Revisions []struct {
			Name   string `json:"name"`
			Active bool   `json:"active"`
		} `json:"revisions"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Revisions) != 2 || st.Revisions[0].Name != "1-31-5" || !st.Revisions[0].Active || st.Revisions[1].Name != "default" {
		t.Errorf("kubectl meshwright status shows revisions %+v mid-move, want 1-31-5 (active) and default", st.Revisions)
	}
	t.Logf("%s moved first; setting the version back", moved)
	upgradeTo(t, c, "", repo.URL, portA)
	framework.Eventually(t, 3*time.Minute, "every namespace back on revision default, and 1-31-5 removed", func() (bool, error) {
		if framework.Exists(t, c, &appsv1.Deployment{}, "istio-system", "istiod-1-31-5") {
			return false, nil
		}
		return onRevision(t, c, moved, "default", 2) && onRevision(t, c, waiting, "default", 2), nil
	})
	if framework.Exists(t, c, &admissionregistrationv1.MutatingWebhookConfiguration{}, "", "istio-sidecar-injector-1-31-5") {
		t.Error("the injection webhook of the removed revision is still there")
	}
	settledRevisions(t, c, "default@1.31.4:2ns/4pods*")
	istiodB.Stop()

	// The upgrade again, with the operator killed at each phase: the new revision installed
	// with the rollout paused, a namespace mid-move, and the old revision kept by a namespace
	// someone else labelled for it.
	framework.MakeNamespace(t, c, "hold-default", map[string]string{"istio.io/rev": "default"}, nil)
	setPaused(t, c, true)
	upgradeTo(t, c, "1.31.5", repo.URL, portB)
	startRevisionIstiod(t, cl, portB, "1-31-5")
	framework.Eventually(t, 3*time.Minute, "revision 1-31-5 serving beside default, the rollout paused", func() (bool, error) {
		m := &meshv1.MeshInstallation{}
		if err := c.Get(ctx, client.ObjectKey{Name: "default"}, m); err != nil {
			return false, err
		}
		return meta.IsStatusConditionTrue(m.Status.Conditions, meshv1.ConditionInjectionReady) &&
			revisionNames(m) == "1-31-5@1.31.5:0ns/0pods* default@1.31.4:3ns/4pods", nil
	})
	families, err := scrape(op.metrics)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		labels map[string]string
		value  float64
	}{
		{map[string]string{"installation": "default", "revision": "1-31-5", "version": "1.31.5", "active": "true"}, 0},
		{map[string]string{"installation": "default", "revision": "default", "version": "1.31.4", "active": "false"}, 3},
	} {
		if v, ok := sampleOf(families, "meshwright_revision_namespaces", want.labels); !ok || v != want.value {
			t.Errorf("meshwright_revision_namespaces%v = %v (found %v), want %v", want.labels, v, ok, want.value)
		}
	}
	op = restartOperator(t, cl, op, "the new revision installed, the rollout paused", cacheDir)
	time.Sleep(3 * time.Second)
	for _, ns := range []string{"up-a", "up-b"} {
		if st := stateOf(framework.GetNamespace(t, c, ns)); st.Step != nil || !onRevision(t, c, ns, "default", 2) {
			t.Fatalf("%s moved while the rollout was paused: %+v", ns, st)
		}
	}
	setPaused(t, c, false)

	var killedNS, killedStep string
	framework.Eventually(t, 3*time.Minute, "a namespace moving to revision 1-31-5", func() (bool, error) {
		for _, ns := range []string{"up-a", "up-b"} {
			if s := stateOf(framework.GetNamespace(t, c, ns)).Step; s != nil && s.Revision == "1-31-5" {
				killedNS, killedStep = ns, s.ID
				return true, nil
			}
		}
		return false, nil
	})
	op = restartOperator(t, cl, op, "namespace "+killedNS+" moving (step "+killedStep+")", cacheDir)
	framework.Eventually(t, 4*time.Minute, "every enrolled namespace on revision 1-31-5, default kept for hold-default", func() (bool, error) {
		m := &meshv1.MeshInstallation{}
		if err := c.Get(ctx, client.ObjectKey{Name: "default"}, m); err != nil {
			return false, err
		}
		cond := meta.FindStatusCondition(m.Status.Conditions, meshv1.ConditionControlPlaneReady)
		return onRevision(t, c, "up-a", "1-31-5", 2) && onRevision(t, c, "up-b", "1-31-5", 2) &&
			cond != nil && cond.Reason == meshv1.ReasonRevisionRetiring && strings.Contains(cond.Message, "hold-default"), nil
	})
	restartOperator(t, cl, op, "the old revision retiring", cacheDir)
	deleteMeshWhileRunning(t, c)
	if !framework.Exists(t, c, &appsv1.Deployment{}, "istio-system", "istiod") {
		t.Fatal("the default revision was removed while hold-default selects it")
	}
	patch := []byte(`{"metadata":{"labels":{"istio.io/rev":null}}}`)
	if err := c.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "hold-default"}}, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 2*time.Minute, "the default revision removed once unused", func() (bool, error) {
		return !framework.Exists(t, c, &appsv1.Deployment{}, "istio-system", "istiod"), nil
	})
	dep := &appsv1.Deployment{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: killedNS, Name: "web"}, dep); err != nil {
		t.Fatal(err)
	}
	if got := dep.Spec.Template.Annotations[meshv1.AnnotationRestartedFor]; got != killedStep {
		t.Errorf("%s/web was last restarted for %q, want the move the operator was killed in (%s): the move must resume, not start again", killedNS, got, killedStep)
	}
	if framework.Exists(t, c, &admissionregistrationv1.MutatingWebhookConfiguration{}, "", "istio-sidecar-injector") {
		t.Error("the default revision's injection webhook is still there")
	}
	mesh = settledRevisions(t, c, "1-31-5@1.31.5:2ns/4pods*")
	if cond := meta.FindStatusCondition(mesh.Status.Conditions, meshv1.ConditionControlPlaneReady); cond == nil || !strings.Contains(cond.Message, "revision 1-31-5") {
		t.Errorf("ControlPlaneReady = %+v, want it to name the revision", cond)
	}
	if steps.maxAtOnce > 1 {
		t.Errorf("%d namespaces moved at once, want one at a time (maxNamespacesInProgress 1)", steps.maxAtOnce)
	}
	if mesh.Status.Version != "1.31.5" {
		t.Errorf("status.version = %s", mesh.Status.Version)
	}
}
