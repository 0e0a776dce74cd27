package adoption

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/policy"
)

// TestNonMeshCallersAgainstTheAPIServer: an admission webhook served from a namespace at Observe
// holds its step to MutualTLS with NonMeshCallers before any STRICT policy exists, with the
// traffic gates skipped (the check needs no telemetry). Exempting the webhook's port lets the
// step go, with the port-level PERMISSIVE policy written for the webhook's pods; walking back
// down removes it with the STRICT one.
func TestNonMeshCallersAgainstTheAPIServer(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	observedNamespace(t, "hooked", meshv1.LevelMutualTLS, now.Add(-time.Hour))
	// Its target-level label enrols it in any installation: gone (terminating) for the next tests.
	t.Cleanup(func() {
		_ = k8s.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "hooked"}})
	})
	ns := getNS(t, "hooked")
	// Only this test's installation enrols it (other tests enrol ladder=on and gate=on).
	delete(ns.Labels, "gate")
	delete(ns.Labels, "ladder")
	ns.Labels["callers"] = "on"
	if err := k8s.Update(ctx, ns); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "hooked", Name: "hook"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
		Ports: []corev1.ServicePort{{Name: "https", Port: 443, TargetPort: intstr.FromInt32(8443)}}}}
	hook := &admissionv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "hooked-policy"}, Webhooks: []admissionv1.ValidatingWebhook{{
		Name: "validate.hooked.example.com", ClientConfig: admissionv1.WebhookClientConfig{Service: &admissionv1.ServiceReference{Namespace: "hooked", Name: "hook"}},
		SideEffects: ptr.To(admissionv1.SideEffectClassNone), AdmissionReviewVersions: []string{"v1"}, FailurePolicy: ptr.To(admissionv1.Ignore),
		// Matches nothing real: the test's own writes must not call it.
		Rules: []admissionv1.RuleWithOperations{{Operations: []admissionv1.OperationType{admissionv1.Create}, Rule: admissionv1.Rule{APIGroups: []string{"example.com"}, APIVersions: []string{"v1"}, Resources: []string{"nothings"}}}}}}}
	for _, o := range []client.Object{svc, hook} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), hook) })
	mesh := meshFor("callers")
	mesh.Spec.Namespaces[0].Selector.MatchLabels = map[string]string{"callers": "on"}
	mesh.Spec.Rollout.MaxNamespacesInProgress = 10
	mesh.Spec.Rollout.TrafficGates = meshv1.TrafficGatesSkip
	stage := newStage(k8s, now)

	res, err := stage.Reconcile(ctx, mesh)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(res.Namespaces.Blocked, func(b meshv1.BlockedNamespace) bool { return b.Name == "hooked" })
	if i < 0 || res.Namespaces.Blocked[i].Reason != meshv1.ReasonNonMeshCallers || !strings.Contains(res.Namespaces.Blocked[i].Message, "ValidatingWebhookConfiguration/hooked-policy") {
		t.Fatalf("blocked: %+v, want hooked held by NonMeshCallers naming the webhook", res.Namespaces.Blocked)
	}
	if hasStrict(t, "hooked") {
		t.Fatal("a namespace serving an admission webhook got STRICT")
	}

	mesh.Spec.Namespaces[0].PlaintextPorts = []meshv1.ServicePortRef{{Service: "hook", Port: 443}}
	mesh.Generation++
	if _, err := stage.Reconcile(ctx, mesh); err != nil {
		t.Fatal(err)
	}
	if !hasStrict(t, "hooked") {
		t.Fatal("exempting the webhook's port did not let the step to MutualTLS start")
	}
	exempt := &unstructured.Unstructured{}
	exempt.SetGroupVersionKind(policy.PeerAuthenticationGVK)
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "hooked", Name: policy.PlaintextPrefix + "hook"}, exempt); err != nil {
		t.Fatalf("the exemption's PeerAuthentication: %v", err)
	}
	if got := fmt.Sprint(exempt.Object["spec"]); got != "map[mtls:map[mode:STRICT] portLevelMtls:map[8443:map[mode:PERMISSIVE]] selector:map[matchLabels:map[app:web]]]" {
		t.Errorf("exemption = %s, want the webhook's pods STRICT but for 8443", got)
	}

	// Walking down removes the STRICT policy and the exemption with it.
	ns = getNS(t, "hooked")
	ns.Labels[meshv1.LabelTargetLevel] = string(meshv1.LevelObserve)
	if err := k8s.Update(ctx, ns); err != nil {
		t.Fatal(err)
	}
	for pass := 0; pass < 3; pass++ {
		if _, err := stage.Reconcile(ctx, mesh); err != nil {
			t.Fatal(err)
		}
	}
	err = k8s.Get(ctx, client.ObjectKey{Namespace: "hooked", Name: policy.PlaintextPrefix + "hook"}, exempt)
	if hasStrict(t, "hooked") || err == nil {
		t.Errorf("after walking down: STRICT %v, exemption left: %v", hasStrict(t, "hooked"), err == nil)
	}
}
