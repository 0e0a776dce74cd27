package adoption

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

// TestAdmissionRefusalHoldsTheClimb: a namespace enforcing Pod Security baseline, whose
// Deployment's pods ask for NET_ADMIN (what istio-init asks; envtest runs no injector, so the
// template asks it itself; the e2e suite shows Istio's real injector), is held at Off with
// PodAdmissionRefused quoting the API server, and nothing is written: no injection label, no
// restart. Once the namespace lets such pods in, the same pass starts the step.
func TestAdmissionRefusalHoldsTheClimb(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "guarded", Labels: map[string]string{"guard": "on", "pod-security.kubernetes.io/enforce": "baseline"}}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ns) })
	sel := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "guarded"}, Spec: appsv1.DeploymentSpec{
		Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: sel},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web",
			SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}}}}}}}}}
	if err := k8s.Create(ctx, dep); err != nil {
		t.Fatal(err)
	}
	rolledOut(t, dep)
	runPod(t, "guarded", "web-1", false) // admitted before the namespace enforced anything, say
	mesh := meshFor("guard")
	mesh.Spec.Namespaces[0].Selector.MatchLabels = map[string]string{"guard": "on"}
	stage := newStage(k8s, now)

	res, err := stage.Reconcile(ctx, mesh)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(res.Namespaces.Blocked, func(b meshv1.BlockedNamespace) bool { return b.Name == "guarded" })
	if i < 0 || res.Namespaces.Blocked[i].Reason != meshv1.ReasonPodAdmissionRefused {
		t.Fatalf("blocked: %+v, want guarded held by PodAdmissionRefused", res.Namespaces.Blocked)
	}
	for _, want := range []string{"Deployment/web", `violates PodSecurity "baseline:latest"`, "NET_ADMIN", "nothing was restarted", "Istio CNI"} {
		if msg := res.Namespaces.Blocked[i].Message; !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if got := getNS(t, "guarded"); got.Labels[InjectionLabel] != "" || got.Annotations[meshv1.AnnotationLadder] != "" && strings.Contains(got.Annotations[meshv1.AnnotationLadder], `"step"`) {
		t.Errorf("namespace written: labels %v, ladder %q", got.Labels, got.Annotations[meshv1.AnnotationLadder])
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(dep), dep); err != nil {
		t.Fatal(err)
	}
	if got := dep.Spec.Template.Annotations[meshv1.AnnotationRestartedFor]; got != "" {
		t.Errorf("web was restarted (%q) while its pods would be refused", got)
	}

	// The namespace now lets them in: the step starts in the next pass.
	ns = getNS(t, "guarded")
	ns.Labels["pod-security.kubernetes.io/enforce"] = "privileged"
	if err := k8s.Update(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if _, err := stage.Reconcile(ctx, mesh); err != nil {
		t.Fatal(err)
	}
	if got := getNS(t, "guarded"); got.Labels[InjectionLabel] != "default" {
		t.Errorf("labels %v: want the step to Observe started once the pods are admitted", got.Labels)
	}
}

// TestAdmissionIsCheckedOnlyForAFreeSlot: with one slot (maxNamespacesInProgress: 1) and two
// namespaces waiting to enter the mesh, a pass creates the dry-run pods of the first only; the
// second waits for the slot, its pods not created.
func TestAdmissionIsCheckedOnlyForAFreeSlot(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	for _, name := range []string{"slot-a", "slot-b"} {
		teamNamespace(t, name)
		ns := getNS(t, name)
		delete(ns.Labels, "ladder")
		ns.Labels["slots"] = "on"
		if err := k8s.Update(ctx, ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), ns) })
	}
	var dryRuns []string
	c := interceptor.NewClient(k8s, interceptor.Funcs{Create: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
		if o := (&client.CreateOptions{}).ApplyOptions(opts); len(o.DryRun) > 0 {
			dryRuns = append(dryRuns, obj.GetNamespace()+"/"+obj.GetName())
		}
		return cl.Create(ctx, obj, opts...)
	}})
	mesh := meshFor("slots")
	mesh.Spec.Namespaces[0].Selector.MatchLabels = map[string]string{"slots": "on"}
	mesh.Spec.Rollout.MaxNamespacesInProgress = 1
	res, err := newStage(c, now).Reconcile(ctx, mesh)
	if err != nil {
		t.Fatal(err)
	}
	if len(dryRuns) != 1 || !strings.HasPrefix(dryRuns[0], "slot-a/") {
		t.Errorf("dry-run creates %v, want slot-a's pod only", dryRuns)
	}
	if got := getNS(t, "slot-a"); got.Labels[InjectionLabel] != "default" {
		t.Errorf("slot-a labels %v: want its step to Observe started", got.Labels)
	}
	if got := getNS(t, "slot-b"); got.Labels[InjectionLabel] != "" {
		t.Errorf("slot-b labels %v: want it waiting for the slot", got.Labels)
	}
	if !strings.Contains(res.Message, "slot-b: waiting for a free slot") {
		t.Errorf("message %q: want slot-b waiting for a free slot", res.Message)
	}
}
