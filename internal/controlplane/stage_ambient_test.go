package controlplane

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/ambient"
	"github.com/meshwright/meshwright/internal/apply"
	"github.com/meshwright/meshwright/internal/render"
	"github.com/meshwright/meshwright/internal/stages"
)

// istiodAmbient reads whether the istiod Deployment in ns runs with ambient mode on.
func istiodAmbient(t *testing.T, ns string) bool {
	t.Helper()
	dep := &appsv1.Deployment{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "istiod"}, dep); err != nil {
		t.Fatal(err)
	}
	for _, e := range dep.Spec.Template.Spec.Containers[0].Env {
		if e.Name == "PILOT_ENABLE_AMBIENT" {
			return e.Value == "true"
		}
	}
	return false
}

// TestAmbientInstallAndRemovalOrder: spec.dataPlane.mode Ambient installs Istio's ambient profile
// (istiod with ambient on, Istio CNI, ztunnel in the node agents' namespace) and the stage is
// Ready only once both node agents are, CNI first (Istio's order); set back to Sidecar,
// ztunnel and the profile stay while a namespace the ladder put into ambient mode carries the
// label, or Istio CNI has not released a pod it redirected (their traffic needs them), and go
// once none does; Cleanup waits for the pods too, then removes ztunnel.
func TestAmbientInstallAndRemovalOrder(t *testing.T) {
	const ns = "istio-ambient-order"
	ctx := context.Background()
	mesh := meshIn(t, "ambient-order", ns)
	mesh.Spec.DataPlane.Mode = meshv1.DataPlaneAmbient
	stage := &Stage{Client: k8s, Reader: k8s, Workloads: k8s, Applier: &apply.Applier{Client: k8s, FieldManager: "meshwright"}}
	ztunnel := func() bool { return exists(t, &appsv1.DaemonSet{}, render.CNINamespace, render.ZTunnelDaemonSet) }

	res := untilSettled(t, stage, mesh, ns)
	if res.Reason != meshv1.ReasonWaitingForCNI || !strings.Contains(res.Message, "ambient mode needs it") {
		t.Fatalf("before Istio CNI is Ready: %+v, want WaitingForCNI", res)
	}
	if !ztunnel() || !istiodAmbient(t, ns) {
		t.Fatalf("ztunnel applied %v, istiod ambient %v; want both", ztunnel(), istiodAmbient(t, ns))
	}
	markDaemonSetReady(t, 2)
	for range 3 {
		if res = untilSettled(t, stage, mesh, ns); res.Reason != meshv1.ReasonWaitingForCNI {
			break
		}
	}
	if res.State != stages.NotReady || res.Reason != meshv1.ReasonWaitingForZtunnel || !strings.Contains(res.Message, "spec.dataPlane.mode is Ambient") {
		t.Fatalf("Istio CNI Ready, ztunnel not: %+v, want WaitingForZtunnel", res)
	}
	markNodeAgentReady(t, render.ZTunnelDaemonSet, 2)
	if res = untilSettled(t, stage, mesh, ns); res.State != stages.Ready || !strings.Contains(res.Message, "ztunnel Ready on every node") {
		t.Fatalf("both node agents Ready: %+v", res)
	}

	// Back to Sidecar while the ladder's namespace is still in ambient mode: kept.
	inAmbient := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop-ambient-order",
		Labels:      map[string]string{ambient.Label: ambient.Enabled},
		Annotations: map[string]string{meshv1.AnnotationLadder: `{"level":"Observe"}`}}}
	if err := k8s.Create(ctx, inAmbient); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, inAmbient) })
	mesh.Spec.DataPlane.Mode = meshv1.DataPlaneSidecar
	if res = untilSettled(t, stage, mesh, ns); res.State != stages.Ready || !ztunnel() || !istiodAmbient(t, ns) || !strings.Contains(res.Message, "stays while shop-ambient-order use it") {
		t.Fatalf("Sidecar with a namespace in ambient mode: %+v, ztunnel %v, istiod ambient %v; want both kept", res, ztunnel(), istiodAmbient(t, ns))
	}
	// Its label off, a pod Istio CNI has not released yet keeps ztunnel.
	redirected := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "still-redirected", Namespace: ns,
		Annotations: map[string]string{ambient.RedirectionAnnotation: ambient.RedirectionEnabled}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	if err := k8s.Create(ctx, redirected); err != nil {
		t.Fatal(err)
	}
	delete(inAmbient.Labels, ambient.Label)
	if err := k8s.Update(ctx, inAmbient); err != nil {
		t.Fatal(err)
	}
	if res = untilSettled(t, stage, mesh, ns); !ztunnel() || !strings.Contains(res.Message, "until Istio CNI has released the 1 pod(s) it redirected") {
		t.Fatalf("no namespace in ambient mode, a pod still redirected: %+v, ztunnel %v; want ztunnel kept", res, ztunnel())
	}
	if err := k8s.Delete(ctx, redirected, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	res = untilSettled(t, stage, mesh, ns)
	if res.State != stages.Ready || ztunnel() || istiodAmbient(t, ns) {
		t.Fatalf("Sidecar, no namespace in ambient mode: %+v, ztunnel %v, istiod ambient %v; want both gone", res, ztunnel(), istiodAmbient(t, ns))
	}
	if !exists(t, &appsv1.DaemonSet{}, render.CNINamespace, render.CNIDaemonSet) {
		t.Fatal("Istio CNI was removed with ambient mode; spec.dataPlane.cni Auto keeps it once installed")
	}

	// One rule in ambient mode is enough.
	mesh.Spec.Namespaces = []meshv1.NamespaceRule{{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"team": "lite"}},
		Level: meshv1.LevelObserve, DataPlaneMode: meshv1.DataPlaneAmbient}}
	for range 3 {
		if res = untilSettled(t, stage, mesh, ns); res.Reason != meshv1.ReasonWaitingForZtunnel {
			break
		}
		markNodeAgentReady(t, render.ZTunnelDaemonSet, 2)
	}
	if !ztunnel() || !istiodAmbient(t, ns) || !strings.Contains(res.Message, "spec.namespaces[0].dataPlaneMode is Ambient") {
		t.Fatalf("a rule in ambient mode: %+v, ztunnel %v, istiod ambient %v", res, ztunnel(), istiodAmbient(t, ns))
	}
	// The uninstall waits for Istio CNI to release a pod it redirected before ztunnel goes.
	redirected.ResourceVersion = ""
	if err := k8s.Create(ctx, redirected); err != nil {
		t.Fatal(err)
	}
	if done, err := stage.Cleanup(ctx, mesh); err != nil || done || !ztunnel() {
		t.Fatalf("Cleanup with a pod still redirected: done %v, %v, ztunnel %v; want it waiting, ztunnel kept", done, err, ztunnel())
	}
	if err := k8s.Delete(ctx, redirected, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	cleanUp(t, stage, mesh)
	if ztunnel() {
		t.Fatal("ztunnel left after the installation's removal")
	}
}
