package controlplane

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/apply"
	"github.com/meshwright/meshwright/internal/charts"
	"github.com/meshwright/meshwright/internal/charts/chartstest"
	"github.com/meshwright/meshwright/internal/render"
	"github.com/meshwright/meshwright/internal/stages"
)

// markDaemonSetReady plays the DaemonSet controller, which envtest does not run: the current
// spec Ready on nodes nodes.
func markDaemonSetReady(t *testing.T, nodes int32) {
	t.Helper()
	markNodeAgentReady(t, render.CNIDaemonSet, nodes)
}

// markNodeAgentReady plays the DaemonSet controller for a node agent's DaemonSet (Istio CNI's or
// ztunnel's) in the node agents' namespace.
func markNodeAgentReady(t *testing.T, name string, nodes int32) {
	t.Helper()
	ctx := context.Background()
	ds := &appsv1.DaemonSet{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: render.CNINamespace, Name: name}, ds); err != nil {
		t.Fatal(err)
	}
	ds.Status = appsv1.DaemonSetStatus{ObservedGeneration: ds.Generation, DesiredNumberScheduled: nodes, CurrentNumberScheduled: nodes,
		UpdatedNumberScheduled: nodes, NumberReady: nodes, NumberAvailable: nodes}
	if err := k8s.Status().Update(ctx, ds); err != nil {
		t.Fatal(err)
	}
}

// injectorValues reads the values istiod's injector reads (its ConfigMap in namespace ns).
func injectorValues(t *testing.T, ns string) (cniOn bool, values string) {
	t.Helper()
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "istio-sidecar-injector"}, cm); err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{"data": map[string]any{"values": cm.Data["values"]}}}
	return injectsForCNI(u), cm.Data["values"]
}

// untilSettled runs passes, playing the Deployment controller for istiod, until the stage
// reports something other than waiting for istiod or CRDs.
func untilSettled(t *testing.T, stage *Stage, mesh *meshv1.MeshInstallation, ns string) stages.Result {
	t.Helper()
	istiodWaits := 0
	for crdWaits := 0; crdWaits < 300 && istiodWaits < 20; {
		res := pass(t, stage, mesh)
		switch res.Reason {
		case meshv1.ReasonWaitingForCRDs:
			// New CRDs (the Gateway API's are large) take the API server a moment: a minute at most.
			crdWaits++
			time.Sleep(200 * time.Millisecond)
			continue
		case meshv1.ReasonWaitingForIstiod:
			istiodWaits++
			markAvailable(t, ns, "istiod")
			continue
		}
		return res
	}
	t.Fatalf("the stage kept waiting for CRDs or istiod (%d passes waiting for istiod)", istiodWaits)
	return stages.Result{}
}

// TestCNIInstallAndRemovalOrder: with spec.dataPlane.cni Enabled, Istio's cni chart is applied in
// a namespace of its own allowed privileged pods, and istiod is told to inject for it only once
// its DaemonSet is Ready (until then the stage waits, WaitingForCNI); with Disabled, istiod stops
// injecting for it first and the chart's objects go in the next pass, the namespace handed back.
// Auto installs it once an enrolled namespace enforces restricted, and keeps it.
func TestCNIInstallAndRemovalOrder(t *testing.T) {
	const ns = "istio-cni-order"
	ctx := context.Background()
	mesh := meshIn(t, "cni-order", ns)
	mesh.Spec.DataPlane.CNI = meshv1.ModeEnabled
	stage := &Stage{Client: k8s, Reader: k8s, Workloads: k8s, Applier: &apply.Applier{Client: k8s, FieldManager: "meshwright"}}
	ds := func() bool { return exists(t, &appsv1.DaemonSet{}, render.CNINamespace, render.CNIDaemonSet) }

	res := untilSettled(t, stage, mesh, ns)
	if res.State != stages.NotReady || res.Reason != meshv1.ReasonWaitingForCNI || !strings.Contains(res.Message, "spec.dataPlane.cni is Enabled") {
		t.Fatalf("before the DaemonSet is Ready: %+v, want WaitingForCNI", res)
	}
	if on, _ := injectorValues(t, ns); on || !ds() {
		t.Fatalf("before the DaemonSet is Ready: istiod injects for CNI %v, DaemonSet exists %v; want the DaemonSet and istiod not told", on, ds())
	}
	cniNS := &corev1.Namespace{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: render.CNINamespace}, cniNS); err != nil || cniNS.Labels[render.LabelPodSecurityEnforce] != "privileged" {
		t.Fatalf("namespace %s: %v, labels %v; want it allowed privileged pods", render.CNINamespace, err, cniNS.Labels)
	}
	ctrl := &corev1.Namespace{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: ns}, ctrl); err != nil || ctrl.Labels[render.LabelPodSecurityEnforce] != "" {
		t.Fatalf("the control plane's namespace got a Pod Security level: %v", ctrl.Labels)
	}

	markDaemonSetReady(t, 3)
	res = untilSettled(t, stage, mesh, ns)
	if res.Reason == meshv1.ReasonWaitingForCNI && strings.Contains(res.Message, "told to inject for it next") {
		res = untilSettled(t, stage, mesh, ns) // Ready between the render and the check
	}
	on, values := injectorValues(t, ns)
	if res.State != stages.Ready || !strings.Contains(res.Message, "Istio CNI Ready") || !on || !strings.Contains(values, `"RuntimeDefault"`) {
		t.Fatalf("with the DaemonSet Ready: %+v; istiod injects for CNI %v; values %s", res, on, values)
	}

	// Removal: istiod first; the DaemonSet once no pod injected for it runs.
	reliant := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "injected-for-cni", Namespace: ns},
		Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Name: "istio-validation", Image: "proxy"}},
			Containers: []corev1.Container{{Name: "app", Image: "app"}, {Name: "istio-proxy", Image: "proxy"}}}}
	if err := k8s.Create(ctx, reliant); err != nil {
		t.Fatal(err)
	}
	mesh.Spec.DataPlane.CNI = meshv1.ModeDisabled
	untilSettled(t, stage, mesh, ns)
	if on, _ := injectorValues(t, ns); on || !ds() {
		t.Fatalf("first pass with Disabled: istiod injects for CNI %v, DaemonSet exists %v; want istiod told first, the DaemonSet kept", on, ds())
	}
	if res := untilSettled(t, stage, mesh, ns); res.State != stages.Ready || !ds() || !strings.Contains(res.Message, "stays while 1 pod(s) injected for it run") {
		t.Fatalf("second pass with Disabled, a pod injected for CNI running: %+v, DaemonSet exists %v", res, ds())
	}
	if err := k8s.Delete(ctx, reliant, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	if res := untilSettled(t, stage, mesh, ns); res.State != stages.Ready || ds() {
		t.Fatalf("with the pod gone: %+v, DaemonSet exists %v", res, ds())
	}
	if err := k8s.Get(ctx, client.ObjectKey{Name: render.CNINamespace}, cniNS); err != nil || cniNS.Labels[render.LabelPodSecurityEnforce] != "" || cniNS.Labels[meshv1.LabelInstallation] != "" {
		t.Fatalf("namespace %s after removal: %v, labels %v; want it handed back", render.CNINamespace, err, cniNS.Labels)
	}

	// Auto: a restricted namespace enrolled brings it back; dropping the rule keeps it.
	mesh.Spec.DataPlane.CNI = meshv1.ModeAuto
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop-restricted-cni",
		Labels: map[string]string{render.LabelPodSecurityEnforce: "restricted", "team": "cni"}}}); err != nil {
		t.Fatal(err)
	}
	if res := untilSettled(t, stage, mesh, ns); res.State != stages.Ready || ds() {
		t.Fatalf("Auto, the restricted namespace not enrolled: %+v, DaemonSet exists %v", res, ds())
	}
	mesh.Spec.Namespaces = []meshv1.NamespaceRule{{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"team": "cni"}}, Level: meshv1.LevelMutualTLS}}
	if res := untilSettled(t, stage, mesh, ns); res.Reason != meshv1.ReasonWaitingForCNI || !strings.Contains(res.Message, "Pod Security refuses istio-init in shop-restricted-cni") || !ds() {
		t.Fatalf("Auto, the restricted namespace enrolled: %+v, DaemonSet exists %v", res, ds())
	}
	mesh.Spec.Namespaces = nil
	if res := untilSettled(t, stage, mesh, ns); res.Reason != meshv1.ReasonWaitingForCNI || !strings.Contains(res.Message, "installed before") || !ds() {
		t.Fatalf("Auto, nothing needing it any more: %+v, DaemonSet exists %v; want it kept", res, ds())
	}
	cleanUp(t, stage, mesh)
	if err := k8s.Get(ctx, client.ObjectKey{Name: render.CNINamespace}, cniNS); err != nil || cniNS.Labels[render.LabelPodSecurityEnforce] != "" || ds() {
		t.Fatalf("namespace %s after the installation's removal: %v, labels %v, DaemonSet left %v", render.CNINamespace, err, cniNS.Labels, ds())
	}
}

// cleanUp runs the stage's Cleanup until it is done.
func cleanUp(t *testing.T, stage *Stage, mesh *meshv1.MeshInstallation) {
	t.Helper()
	// Under removeCRDsOnDelete the API server takes a while to remove each CRD: a minute at most.
	for range 300 {
		done, err := stage.Cleanup(context.Background(), mesh)
		if err != nil {
			t.Fatal(err)
		}
		if done {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("Cleanup never finished")
}

// cniVersion is the Istio version the CNI DaemonSet is rendered at (its label and image).
func cniVersion(t *testing.T) string {
	t.Helper()
	ds := &appsv1.DaemonSet{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: render.CNINamespace, Name: render.CNIDaemonSet}, ds); err != nil {
		t.Fatal(err)
	}
	v := ds.Labels[meshv1.LabelIstioVersion]
	if image := ds.Spec.Template.Spec.Containers[0].Image; !strings.HasSuffix(image, ":"+v) {
		t.Fatalf("the CNI DaemonSet is labelled %s and runs %s", v, image)
	}
	return v
}

// TestCNIUpgradedAfterTheControlPlane: in a revision-based upgrade Istio CNI keeps its version
// while the old revision is installed (Istio's order: the control plane first; a CNI works with
// its own minor's control plane and the next), and takes the new one once the new revision is
// alone and Available, from the same chart repository as istiod.
func TestCNIUpgradedAfterTheControlPlane(t *testing.T) {
	const ns = "istio-cni-upgrade"
	// 1.31.6, which no other test's namespaces use (revision 1-31-6 retires once unused).
	repo := chartstest.Serve(t, chartstest.Options{Versions: []string{"1.31.6"}})
	mesh := meshIn(t, "cni-upgrade", ns)
	mesh.Spec.DataPlane.CNI = meshv1.ModeEnabled
	stage := &Stage{Client: k8s, Reader: k8s, Workloads: k8s, Applier: &apply.Applier{Client: k8s, FieldManager: "meshwright"},
		Charts: &charts.Source{CacheDir: t.TempDir()}}
	untilSettled(t, stage, mesh, ns)
	markDaemonSetReady(t, 2)
	for range 3 {
		if res := untilSettled(t, stage, mesh, ns); res.State == stages.Ready {
			break
		}
	}
	if v := cniVersion(t); v != "1.31.4" {
		t.Fatalf("CNI installed at %s, want 1.31.4", v)
	}

	mesh.Spec.Version = "1.31.6"
	mesh.Spec.ControlPlane.ChartSource = &meshv1.ChartSource{Repository: repo.URL}
	if res := pass(t, stage, mesh); res.Reason != meshv1.ReasonWaitingForIstiod {
		t.Fatalf("upgrade pass: %+v", res)
	}
	if v := cniVersion(t); v != "1.31.4" {
		t.Fatalf("CNI at %s while the new control plane is not Available, want it kept at 1.31.4", v)
	}
	markAvailable(t, ns, "istiod-1-31-6")
	pass(t, stage, mesh) // the old revision, unused, retires
	if v := cniVersion(t); v != "1.31.4" {
		t.Fatalf("CNI at %s in the pass that retired the old revision, want it kept at 1.31.4", v)
	}
	if res := pass(t, stage, mesh); res.State != stages.Ready || exists(t, &appsv1.Deployment{}, ns, "istiod") {
		t.Fatalf("after the old revision retired: %+v", res)
	}
	if v := cniVersion(t); v != "1.31.6" {
		t.Fatalf("CNI at %s with the new revision alone and Available, want 1.31.6", v)
	}

	// Back to the embedded version with the chart source gone: the CNI's charts (1.31.6) are
	// not at hand while the 1.31.6 revision is installed, so the CNI is left as it runs, and
	// the upgrade goes on; once that revision retires, the CNI follows.
	mesh.Spec.Version, mesh.Spec.ControlPlane.ChartSource = "", nil
	res := pass(t, stage, mesh)
	if res.State == stages.Failed || res.Reason != meshv1.ReasonWaitingForIstiod {
		t.Fatalf("set back without the chart source: %+v", res)
	}
	if v := cniVersion(t); v != "1.31.6" {
		t.Fatalf("CNI at %s while its charts are not at hand, want it left at 1.31.6", v)
	}
	markAvailable(t, ns, "istiod-1-31-4")
	for range 3 {
		res = pass(t, stage, mesh)
	}
	if v := cniVersion(t); res.State != stages.Ready || v != "1.31.4" || exists(t, &appsv1.Deployment{}, ns, "istiod-1-31-6") {
		t.Fatalf("after the 1.31.6 revision retired: %+v, CNI at %s", res, v)
	}
	cleanUp(t, stage, mesh)
}

// TestCNIInstalledBySomeoneElseIsUsed: an Istio CNI DaemonSet the operator did not install (its
// pods labelled k8s-app=istio-cni-node, here in kube-system) is used as it is: the operator
// installs none beside it and takes none over, and tells istiod to inject for it once it is Ready.
func TestCNIInstalledBySomeoneElseIsUsed(t *testing.T) {
	const ns = "istio-cni-foreign"
	ctx := context.Background()
	labels := map[string]string{"k8s-app": render.CNIDaemonSet}
	theirs := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: render.CNIDaemonSet, Namespace: "kube-system", Labels: labels},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "install-cni", Image: "istio/install-cni"}}}}}}
	if err := k8s.Create(ctx, theirs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, theirs) })
	mesh := meshIn(t, "cni-foreign", ns)
	mesh.Spec.DataPlane.CNI = meshv1.ModeEnabled
	stage := &Stage{Client: k8s, Reader: k8s, Workloads: k8s, Applier: &apply.Applier{Client: k8s, FieldManager: "meshwright"}}
	res := untilSettled(t, stage, mesh, ns)
	if res.Reason != meshv1.ReasonWaitingForCNI || !strings.Contains(res.Message, "kube-system/istio-cni-node") {
		t.Fatalf("their DaemonSet not Ready: %+v", res)
	}
	if exists(t, &appsv1.DaemonSet{}, render.CNINamespace, render.CNIDaemonSet) {
		t.Fatal("the operator installed a second Istio CNI beside someone else's")
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(theirs), theirs); err != nil {
		t.Fatal(err)
	}
	theirs.Status = appsv1.DaemonSetStatus{ObservedGeneration: theirs.Generation, DesiredNumberScheduled: 2, UpdatedNumberScheduled: 2, NumberReady: 2, NumberAvailable: 2}
	if err := k8s.Status().Update(ctx, theirs); err != nil {
		t.Fatal(err)
	}
	res = untilSettled(t, stage, mesh, ns)
	if res.State != stages.Ready || !strings.Contains(res.Message, "installed by someone else as kube-system/istio-cni-node") {
		t.Fatalf("their DaemonSet Ready: %+v", res)
	}
	if on, _ := injectorValues(t, ns); !on {
		t.Fatal("istiod was not told to inject for their Istio CNI")
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(theirs), theirs); err != nil || theirs.Labels[meshv1.LabelManagedBy] != "" {
		t.Fatalf("their DaemonSet was taken over: %v %v", err, theirs.Labels)
	}
	cleanUp(t, stage, mesh)
}
