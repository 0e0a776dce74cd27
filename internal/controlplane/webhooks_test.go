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
	"github.com/meshwright/meshwright/internal/writecount"
)

// TestWebhookWriteDoesNotRevertIstiod: the cache lags behind the API server. A pass that has
// to write a webhook configuration (someone stripped one of its labels) while the cache has
// not yet seen istiod raise the validator's failurePolicy to Fail must not apply the stale
// Ignore. When istiod writes again between the operator's read and its write, the write is
// refused with a conflict and the operator reads again; if istiod keeps writing, the pass ends
// with the conflict (and is retried) rather than reverting it.
func TestWebhookWriteDoesNotRevertIstiod(t *testing.T) {
	tests := map[string]struct {
		// istiodWrites is how many of the operator's fresh reads istiod follows with a write.
		istiodWrites int
		// cacheMissing: the cache has not seen the object at all yet.
		cacheMissing bool
		wantConflict bool
	}{
		"the cache has not seen the object yet":             {cacheMissing: true},
		"the write is prepared from the API server's copy":  {},
		"istiod writes once between the read and the write": {istiodWrites: 1},
		"istiod writes after every read":                    {istiodWrites: 100, wantConflict: true},
	}
	ctx := context.Background()
	const ns = "istio-webhooks"
	mesh := meshIn(t, "webhooks", ns)
	live := &Stage{Client: k8s, Reader: k8s, Applier: &apply.Applier{Client: k8s, FieldManager: "meshwright"}}
	passCRDs(t, live, mesh)
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
						if tc.cacheMissing {
							return apierrors.NewNotFound(admissionv1.Resource("validatingwebhookconfigurations"), k.Name)
						}
						stale.DeepCopyInto(u)
						return nil
					}
					return c.Get(ctx, k, obj, opts...)
				},
			})
			writes := tc.istiodWrites
			reader := interceptor.NewClient(k8s, interceptor.Funcs{
				Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
					err := c.Get(ctx, k, obj, opts...)
					if k == key && err == nil && writes > 0 {
						writes--
						touch(t) // a new resourceVersion, as istiod's periodic patch makes
					}
					return err
				},
			})
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

// passCRDs runs passes until Istio's CRDs are Established and everything is applied.
// countedInstallation is an installation in namespace ns, and a stage whose every client counts
// its writes, run until Istio's CRDs are Established.
func countedInstallation(t *testing.T, name, ns string) (*Stage, *meshv1.MeshInstallation, *writecount.Counter) {
	t.Helper()
	mesh := meshIn(t, name, ns)
	writes := &writecount.Counter{}
	c := writes.Wrap(k8s, interceptor.Funcs{})
	stage := &Stage{Client: c, Reader: c, Workloads: c, Applier: &apply.Applier{Client: c, FieldManager: "meshwright"}}
	passCRDs(t, stage, mesh)
	return stage, mesh, writes
}

func passCRDs(t *testing.T, stage *Stage, mesh *meshv1.MeshInstallation) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		res, err := stage.Reconcile(context.Background(), mesh)
		if err != nil {
			t.Fatal(err)
		}
		if res.Reason != meshv1.ReasonWaitingForCRDs {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Istio's CRDs not Established: %s", res.Message)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestVerifiedObjectsAreStillWatched: the applier remembers which objects it found holding
// what it wants, to skip comparing them again; an edit after that (a new resourceVersion) is
// still seen and undone, and an unchanged pass writes nothing.
func TestVerifiedObjectsAreStillWatched(t *testing.T) {
	ctx := context.Background()
	const ns = "istio-memo"
	stage, mesh, writes := countedInstallation(t, "memo", ns)
	for range 2 { // the first pass after the writes verifies every object, the second trusts it
		if _, err := stage.Reconcile(ctx, mesh); err != nil {
			t.Fatal(err)
		}
	}
	before := len(writes.Writes())
	if _, err := stage.Reconcile(ctx, mesh); err != nil {
		t.Fatal(err)
	}
	if got := writes.Writes()[before:]; len(got) != 0 {
		t.Fatalf("an unchanged pass wrote: %v", got)
	}

	tests := map[string]func(cm *corev1.ConfigMap){
		"a value changed":   func(cm *corev1.ConfigMap) { cm.Data["mesh"] = "defaultConfig: {}\n" },
		"a label removed":   func(cm *corev1.ConfigMap) { delete(cm.Labels, meshv1.LabelInstallation) },
		"a key removed":     func(cm *corev1.ConfigMap) { delete(cm.Data, "meshNetworks") },
		"an unrelated edit": func(cm *corev1.ConfigMap) { metav1.SetMetaDataAnnotation(&cm.ObjectMeta, "team", "platform") },
	}
	key := client.ObjectKey{Namespace: ns, Name: "istio"}
	for name, edit := range tests {
		t.Run(name, func(t *testing.T) {
			want := &corev1.ConfigMap{}
			if err := k8s.Get(ctx, key, want); err != nil {
				t.Fatal(err)
			}
			edited := want.DeepCopy()
			edit(edited)
			if err := k8s.Update(ctx, edited, client.FieldOwner("someone")); err != nil {
				t.Fatal(err)
			}
			if _, err := stage.Reconcile(ctx, mesh); err != nil {
				t.Fatal(err)
			}
			got := &corev1.ConfigMap{}
			if err := k8s.Get(ctx, key, got); err != nil {
				t.Fatal(err)
			}
			for k, v := range want.Data {
				if got.Data[k] != v {
					t.Errorf("data %s = %q after the pass, want %q restored", k, got.Data[k], v)
				}
			}
			if got.Labels[meshv1.LabelInstallation] != mesh.Name {
				t.Errorf("labels %v after the pass, want the installation label restored", got.Labels)
			}
		})
	}
}
