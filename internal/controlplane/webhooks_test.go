package controlplane

import (
	"context"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/apply"
	"github.com/meshwright/meshwright/internal/stages"
)

// TestWebhookWriteDoesNotRevertIstiod: the cache lags behind the API server. A pass that has
// to write a webhook configuration (someone stripped one of its labels) while the cache has
// not yet seen istiod raise the validator's failurePolicy to Fail must not apply the stale
// Ignore. When istiod writes again between the operator's read and its write, the write is
// refused with a conflict (the pass is retried) rather than reverting it.
func TestWebhookWriteDoesNotRevertIstiod(t *testing.T) {
	tests := map[string]struct {
		// istiodBetween makes istiod patch the validator again right after the operator's
		// fresh read.
		istiodBetween bool
		wantConflict  bool
	}{
		"the write is prepared from the API server's copy": {},
		"istiod writes between the read and the write":     {istiodBetween: true, wantConflict: true},
	}
	ctx := context.Background()
	const ns = "istio-webhooks"
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	mesh := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "webhooks"},
		Spec: meshv1.MeshInstallationSpec{ControlPlane: meshv1.ControlPlaneSpec{Namespace: ns}}}
	live := &Stage{Client: k8s, Reader: k8s, Applier: &apply.Applier{Client: k8s, FieldManager: "meshwright"}}
	deadline := time.Now().Add(time.Minute)
	for {
		res, err := live.Reconcile(ctx, mesh)
		if err != nil {
			t.Fatal(err)
		}
		if res.Reason != meshv1.ReasonWaitingForCRDs {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Istio's CRDs not Established: %s", res.Message)
		}
		time.Sleep(200 * time.Millisecond)
	}
	key := client.ObjectKey{Name: "istio-validator-" + ns}
	fail, ignore := admissionv1.Fail, admissionv1.Ignore
	// setPolicy writes the validator's failurePolicy as istiod does (an update of its own).
	setPolicy := func(t *testing.T, p admissionv1.FailurePolicyType) {
		t.Helper()
		vwh := &admissionv1.ValidatingWebhookConfiguration{}
		if err := k8s.Get(ctx, key, vwh); err != nil {
			t.Fatal(err)
		}
		for i := range vwh.Webhooks {
			vwh.Webhooks[i].FailurePolicy = &p
		}
		if err := k8s.Update(ctx, vwh, client.FieldOwner("pilot-discovery")); err != nil {
			t.Fatal(err)
		}
	}
	touch := func(t *testing.T) {
		t.Helper()
		vwh := &admissionv1.ValidatingWebhookConfiguration{}
		if err := k8s.Get(ctx, key, vwh); err != nil {
			t.Fatal(err)
		}
		metav1.SetMetaDataAnnotation(&vwh.ObjectMeta, "example.istio.io/patched-at", time.Now().Format(time.RFC3339Nano))
		if err := k8s.Update(ctx, vwh, client.FieldOwner("pilot-discovery")); err != nil {
			t.Fatal(err)
		}
	}

	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			setPolicy(t, ignore)
			// Drift the operator must undo: its installation label is removed.
			vwh := &admissionv1.ValidatingWebhookConfiguration{}
			if err := k8s.Get(ctx, key, vwh); err != nil {
				t.Fatal(err)
			}
			delete(vwh.Labels, meshv1.LabelInstallation)
			if err := k8s.Update(ctx, vwh, client.FieldOwner("someone")); err != nil {
				t.Fatal(err)
			}
			// The cache saw the drift, not what istiod does next.
			stale := &unstructured.Unstructured{}
			stale.SetGroupVersionKind(admissionv1.SchemeGroupVersion.WithKind("ValidatingWebhookConfiguration"))
			if err := k8s.Get(ctx, key, stale); err != nil {
				t.Fatal(err)
			}
			setPolicy(t, fail)

			lagging := interceptor.NewClient(k8s, interceptor.Funcs{
				Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
					if u, ok := obj.(*unstructured.Unstructured); ok && k == key && u.GetKind() == stale.GetKind() {
						stale.DeepCopyInto(u)
						return nil
					}
					return c.Get(ctx, k, obj, opts...)
				},
			})
			reader := client.Reader(k8s)
			if tc.istiodBetween {
				reader = interceptor.NewClient(k8s, interceptor.Funcs{
					Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
						err := c.Get(ctx, k, obj, opts...)
						if k == key && err == nil {
							touch(t) // a new resourceVersion, as istiod's periodic patch makes
						}
						return err
					},
				})
			}
			stage := &Stage{Client: lagging, Reader: reader, Applier: &apply.Applier{Client: lagging, FieldManager: "meshwright"}}
			res, err := stage.Reconcile(ctx, mesh)
			switch {
			case tc.wantConflict && !apierrors.IsConflict(err):
				t.Fatalf("pass: %v (%v %s), want a conflict", err, res.State, res.Reason)
			case !tc.wantConflict && err != nil:
				t.Fatal(err)
			case !tc.wantConflict && res.State == stages.Failed:
				t.Fatalf("pass failed: %s %s", res.Reason, res.Message)
			}

			if err := k8s.Get(ctx, key, vwh); err != nil {
				t.Fatal(err)
			}
			for _, h := range vwh.Webhooks {
				if h.FailurePolicy == nil || *h.FailurePolicy != fail {
					t.Fatalf("webhook %s: failurePolicy %v, want istiod's Fail kept", h.Name, ptr.Deref(h.FailurePolicy, ""))
				}
			}
			if _, restored := vwh.Labels[meshv1.LabelInstallation]; restored == tc.wantConflict {
				t.Fatalf("installation label restored: %v, want %v (labels %v)", restored, !tc.wantConflict, vwh.Labels)
			}
		})
	}
}
