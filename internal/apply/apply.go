// Package apply writes the operator's desired objects with server-side apply under one field
// manager, and only when the object in the cluster does not already hold every field the
// operator wants: a pass that changes nothing makes no write request. Fields other managers own
// (istiod's webhook caBundle, an HPA's replicas, a user's annotations) are never in the desired
// objects, so they are never fought over.
package apply

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Applier applies desired objects. Client should read from the manager's cache (with
// unstructured caching on), so checking for a difference costs no request.
type Applier struct {
	Client       client.Client
	FieldManager string
}

// Apply makes the cluster hold desired, and reports whether it had to write.
func (a *Applier) Apply(ctx context.Context, desired *unstructured.Unstructured) (bool, error) {
	current := &unstructured.Unstructured{}
	current.SetGroupVersionKind(desired.GroupVersionKind())
	err := a.Client.Get(ctx, client.ObjectKeyFromObject(desired), current)
	switch {
	case err == nil && Contains(current.Object, desired.Object):
		return false, nil
	case err != nil && !apierrors.IsNotFound(err):
		return false, fmt.Errorf("reading %s %s: %w", desired.GetKind(), desired.GetName(), err)
	}
	if err := a.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(desired.DeepCopy()),
		client.FieldOwner(a.FieldManager), client.ForceOwnership); err != nil {
		return false, fmt.Errorf("applying %s %s: %w", desired.GetKind(), desired.GetName(), err)
	}
	return true, nil
}

// Contains reports whether every field set in want has the same value in have: maps compared
// key by key (extra keys in have are fine: defaults, other managers' fields), lists element by
// element, numbers by value whatever their Go type.
func Contains(have, want any) bool {
	switch w := want.(type) {
	case map[string]any:
		h, ok := have.(map[string]any)
		if !ok {
			return false
		}
		for k, wv := range w {
			hv, ok := h[k]
			if !ok {
				if isEmpty(wv) {
					continue
				}
				return false
			}
			if !Contains(hv, wv) {
				return false
			}
		}
		return true
	case []any:
		h, ok := have.([]any)
		if !ok || len(h) != len(w) {
			return false
		}
		for i := range w {
			if !Contains(h[i], w[i]) {
				return false
			}
		}
		return true
	default:
		if wn, ok := number(want); ok {
			hn, ok := number(have)
			return ok && hn == wn
		}
		return have == want
	}
}

// isEmpty is true for values the API server drops when it stores an object: an empty map or
// list, or nil. They are not a difference.
func isEmpty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	}
	return false
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int:
		return float64(n), true
	case int32:
		return float64(n), true
	case int64:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}
