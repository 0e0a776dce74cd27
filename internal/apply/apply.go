// Package apply writes the operator's desired objects with server-side apply under one field
// manager, and only when the object in the cluster does not already hold every field the
// operator wants: a pass that changes nothing makes no write request. Fields other managers own
// (istiod's webhook caBundle, an HPA's replicas, a user's annotations) are never in the desired
// objects, so they are never fought over.
package apply

import (
	"context"
	"fmt"
	"sort"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
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
	case err == nil:
		diff := Difference(current.Object, desired.Object)
		if diff == "" {
			return false, nil
		}
		log.FromContext(ctx).V(1).Info("applying", "kind", desired.GetKind(), "name", desired.GetName(), "namespace", desired.GetNamespace(), "difference", diff)
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
// element, numbers by value whatever their Go type, quantities by value.
func Contains(have, want any) bool { return Difference(have, want) == "" }

// Difference returns the path of the first field of want that have does not hold, or "" when
// have contains want. The operator logs it to say why it writes.
func Difference(have, want any) string { return difference(have, want, "") }

func difference(have, want any, path string) string {
	switch w := want.(type) {
	case map[string]any:
		h, ok := have.(map[string]any)
		if !ok {
			return orRoot(path)
		}
		for _, k := range sortedKeys(w) {
			wv := w[k]
			hv, ok := h[k]
			if !ok {
				if isEmpty(wv) {
					continue
				}
				return path + "." + k
			}
			if d := difference(hv, wv, path+"."+k); d != "" {
				return d
			}
		}
		return ""
	case []any:
		h, ok := have.([]any)
		if !ok || len(h) != len(w) {
			return orRoot(path)
		}
		for i := range w {
			if d := difference(h[i], w[i], fmt.Sprintf("%s[%d]", path, i)); d != "" {
				return d
			}
		}
		return ""
	default:
		if have == want {
			return ""
		}
		if wn, ok := number(want); ok {
			if hn, ok := number(have); ok && hn == wn {
				return ""
			}
		}
		if sameQuantity(have, want) {
			return ""
		}
		return fmt.Sprintf("%s (have %v, want %v)", orRoot(path), have, want)
	}
}

func orRoot(path string) string {
	if path == "" {
		return "."
	}
	return path
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// isEmpty is true for values the API server drops when it stores an object (Kubernetes' Go
// types omit empty fields): nil, an empty map, list or string, false and zero. Absent, they
// are not a difference.
func isEmpty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	case string:
		return x == ""
	case bool:
		return !x
	}
	if n, ok := number(v); ok {
		return n == 0
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

// sameQuantity treats two resource quantities as equal when their values are: the API server
// stores "2048Mi" as "2Gi" and a CPU of 1 as "1", and neither is a difference worth a write.
func sameQuantity(have, want any) bool {
	hs, ok := have.(string)
	if !ok {
		return false
	}
	if _, isString := want.(string); !isString {
		if _, isNumber := number(want); !isNumber {
			return false
		}
	}
	hq, err := resource.ParseQuantity(hs)
	if err != nil {
		return false
	}
	wq, err := resource.ParseQuantity(fmt.Sprint(want))
	if err != nil {
		return false
	}
	return hq.Cmp(wq) == 0
}
