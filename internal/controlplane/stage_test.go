package controlplane

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshwright/meshwright/internal/apply"
)

func webhookConfig(kind string, hooks ...map[string]any) *unstructured.Unstructured {
	list := make([]any, len(hooks))
	for i, h := range hooks {
		list[i] = h
	}
	return &unstructured.Unstructured{Object: map[string]any{"kind": kind, "webhooks": list}}
}

func TestKeepForeignFields(t *testing.T) {
	tests := map[string]struct {
		kind          string
		desired       map[string]any
		current       map[string]any // nil: the object does not exist yet
		wantBundle    any
		wantPolicy    any
		wantPolicyKey bool
	}{
		"new object keeps the chart's values": {
			kind:    "ValidatingWebhookConfiguration",
			desired: map[string]any{"name": "v.istio.io", "failurePolicy": "Ignore", "clientConfig": map[string]any{}},
			current: nil, wantPolicy: "Ignore", wantPolicyKey: true,
		},
		"istiod's caBundle and failurePolicy are kept on a validator": {
			kind:       "ValidatingWebhookConfiguration",
			desired:    map[string]any{"name": "v.istio.io", "failurePolicy": "Ignore", "clientConfig": map[string]any{}},
			current:    map[string]any{"name": "v.istio.io", "failurePolicy": "Fail", "clientConfig": map[string]any{"caBundle": "QUJD"}},
			wantBundle: "QUJD", wantPolicy: "Fail", wantPolicyKey: true,
		},
		"the injector's failurePolicy is the chart's": {
			kind:       "MutatingWebhookConfiguration",
			desired:    map[string]any{"name": "i.istio.io", "failurePolicy": "Fail", "clientConfig": map[string]any{}},
			current:    map[string]any{"name": "i.istio.io", "failurePolicy": "Ignore", "clientConfig": map[string]any{"caBundle": "QUJD"}},
			wantBundle: "QUJD", wantPolicy: "Fail", wantPolicyKey: true,
		},
		"a webhook the cluster does not have yet": {
			kind:    "MutatingWebhookConfiguration",
			desired: map[string]any{"name": "new.istio.io", "clientConfig": map[string]any{}},
			current: map[string]any{"name": "old.istio.io", "clientConfig": map[string]any{"caBundle": "QUJD"}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			desired := webhookConfig(tc.kind, tc.desired)
			var current *unstructured.Unstructured
			if tc.current != nil {
				current = webhookConfig(tc.kind, tc.current)
			}
			keepForeignFields(desired, current)
			hooks, _, _ := unstructured.NestedSlice(desired.Object, "webhooks")
			h := hooks[0].(map[string]any)
			bundle, _, _ := unstructured.NestedFieldNoCopy(h, "clientConfig", "caBundle")
			if bundle != tc.wantBundle {
				t.Errorf("caBundle = %v, want %v", bundle, tc.wantBundle)
			}
			policy, ok := h["failurePolicy"]
			if ok != tc.wantPolicyKey || policy != tc.wantPolicy {
				t.Errorf("failurePolicy = %v (set %v), want %v", policy, ok, tc.wantPolicy)
			}
		})
	}
}

// TestForeignFieldChangesNeedNoApply: once istiod has patched its caBundle (and raised the
// validator's failurePolicy), the next render of the same chart finds nothing to apply.
func TestForeignFieldChangesNeedNoApply(t *testing.T) {
	rendered := func() *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
			"metadata": map[string]any{"name": "istio-validator"},
			"webhooks": []any{map[string]any{"name": "rev.validation.istio.io", "failurePolicy": "Ignore",
				"clientConfig": map[string]any{"url": "https://127.0.0.1:15017/validate"}}},
		}}
		return u
	}
	// What the operator applied first, then what istiod made of it.
	current := rendered()
	apply.StampHash(current)
	current = prepare(current, nil)
	hooks, _, _ := unstructured.NestedSlice(current.Object, "webhooks")
	hook := hooks[0].(map[string]any)
	hook["failurePolicy"] = "Fail"
	_ = unstructured.SetNestedField(hook, "Y2EtYnVuZGxl", "clientConfig", "caBundle")
	_ = unstructured.SetNestedSlice(current.Object, hooks, "webhooks")

	desired := rendered()
	apply.StampHash(desired)
	desired = prepare(desired, current)
	if diff := apply.Difference(current.Object, desired.Object); diff != "" {
		t.Errorf("an unchanged render differs from the cluster at %s: istiod's fields must not cause an apply", diff)
	}
}

func TestNeedsNudge(t *testing.T) {
	deleted := time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC)
	cleanup := []string{"customresourcecleanup.apiextensions.k8s.io"}
	tests := map[string]struct {
		finalizers  []string
		annotations map[string]string
		now         time.Time
		want        bool
	}{
		"just deleted":                       {finalizers: cleanup, now: deleted.Add(5 * time.Second)},
		"terminating past the patience":      {finalizers: cleanup, now: deleted.Add(crdRemovalPatience), want: true},
		"only someone else's finalizer left": {finalizers: []string{"example.com/hold"}, now: deleted.Add(time.Hour)},
		"touched a moment ago": {finalizers: cleanup, now: deleted.Add(time.Minute),
			annotations: map[string]string{AnnotationRemovalNudge: deleted.Add(50 * time.Second).Format(time.RFC3339)}},
		"touched long ago": {finalizers: cleanup, now: deleted.Add(time.Minute), want: true,
			annotations: map[string]string{AnnotationRemovalNudge: deleted.Add(30 * time.Second).Format(time.RFC3339)}},
		"an unreadable time": {finalizers: cleanup, now: deleted.Add(time.Minute), want: true,
			annotations: map[string]string{AnnotationRemovalNudge: "yesterday"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := needsNudge(tc.finalizers, tc.annotations, deleted, tc.now); got != tc.want {
				t.Errorf("needsNudge = %v, want %v", got, tc.want)
			}
		})
	}
}
