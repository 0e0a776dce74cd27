// Package apply writes the operator's desired objects with server-side apply under one field
// manager, and only when the object in the cluster does not already hold every field the
// operator wants: a pass that changes nothing makes no write request. Fields other managers own
// (istiod's webhook caBundle, an HPA's replicas, a user's annotations) are never in the desired
// objects, so they are never fought over.
package apply

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"sort"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// Applier applies desired objects. Client should read from the manager's cache (with
// unstructured caching on), so checking for a difference costs no request.
type Applier struct {
	Client       client.Client
	FieldManager string
	// Uncached reads an object as the API server has it, for the rare comparison the cache's
	// slimmed copy cannot settle (see SlimCRD); nil compares what the cache has.
	Uncached client.Reader

	mu sync.Mutex
	// verified remembers, per object and desired hash, the resourceVersion at which the object
	// was last found to hold everything desired. The same resourceVersion is the same object, so
	// a pass over unchanged objects skips comparing them field by field (Istio's CRDs alone are
	// megabytes of schema).
	verified map[verifiedKey]string
	// written remembers the objects this Applier wrote that its cache has not shown since: the
	// pass a watch event starts can run before the cache holds an object written a moment ago
	// (the CRDs an install applies at once), and would write it again.
	written map[verifiedKey]bool
}

// verifiedKey names an object and the hash of what the operator wants of it.
type verifiedKey struct {
	gvk                   string
	namespace, name, hash string
}

// maxVerified bounds the memo: objects deleted since they were verified leave entries behind,
// and starting afresh only costs one comparison per object.
const maxVerified = 20000

// HashAnnotation records a hash of what the operator last applied. Comparing fields tells when
// the cluster lacks something the operator wants; the hash also tells when the operator stopped
// wanting a field (a value the user removed), so the apply that drops it is not skipped.
const HashAnnotation = "meshwright.io/applied-hash"

// Apply makes the cluster hold desired, and reports whether it had to write. desired is
// modified: it gets the hash annotation.
func (a *Applier) Apply(ctx context.Context, desired *unstructured.Unstructured) (bool, error) {
	if _, stamped := desired.GetAnnotations()[HashAnnotation]; !stamped {
		StampHash(desired)
	}
	current := &unstructured.Unstructured{}
	current.SetGroupVersionKind(desired.GroupVersionKind())
	key := verifiedKey{gvk: desired.GroupVersionKind().String(), namespace: desired.GetNamespace(), name: desired.GetName(),
		hash: desired.GetAnnotations()[HashAnnotation]}
	// current is only read: the cache's own copy does.
	err := a.Client.Get(ctx, client.ObjectKeyFromObject(desired), current, client.UnsafeDisableDeepCopy)
	switch {
	case apierrors.IsNotFound(err) && a.wasWritten(key):
		held, err := a.heldLive(ctx, desired)
		if err != nil || held {
			return false, err
		}
	case err == nil:
		a.setWritten(key, false)
		rv := current.GetResourceVersion()
		if a.wasVerified(key, rv) {
			return false, nil
		}
		diff, err := a.difference(ctx, current, desired)
		if err != nil {
			return false, err
		}
		if diff == "" {
			a.remember(key, rv)
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
	a.setWritten(key, true)
	return true, nil
}

// Update writes desired's content over the object the cache holds, never creating it: an object
// that is not there (deleted since the caller decided to keep it) is left absent, and one deleted
// or changed between the cache's read and the write is left as the API server has it (the write
// is a merge patch under the read's resourceVersion: an apply would create it again). Desired's
// top-level fields replace the object's; its labels and annotations are added. It reports
// whether it wrote.
func (a *Applier) Update(ctx context.Context, desired *unstructured.Unstructured) (bool, error) {
	if _, stamped := desired.GetAnnotations()[HashAnnotation]; !stamped {
		StampHash(desired)
	}
	current := &unstructured.Unstructured{}
	current.SetGroupVersionKind(desired.GroupVersionKind())
	switch err := a.Client.Get(ctx, client.ObjectKeyFromObject(desired), current, client.UnsafeDisableDeepCopy); {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("reading %s %s: %w", desired.GetKind(), desired.GetName(), err)
	}
	diff, err := a.difference(ctx, current, desired)
	if err != nil || diff == "" {
		return false, err
	}
	// A merge patch under the read's resourceVersion: unlike an apply, it never creates.
	base := current.DeepCopy()
	over := current.DeepCopy()
	for k, v := range desired.Object {
		if k != "metadata" && k != "apiVersion" && k != "kind" {
			over.Object[k] = v
		}
	}
	over.SetLabels(merged(current.GetLabels(), desired.GetLabels()))
	over.SetAnnotations(merged(current.GetAnnotations(), desired.GetAnnotations()))
	if err := a.Client.Patch(ctx, over, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}), client.FieldOwner(a.FieldManager)); err != nil {
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return false, nil
		}
		return false, fmt.Errorf("updating %s %s: %w", desired.GetKind(), desired.GetName(), err)
	}
	return true, nil
}

// merged is a copy of a with b's entries over it.
func merged(a, b map[string]string) map[string]string {
	out := make(map[string]string, len(a)+len(b))
	maps.Copy(out, a)
	maps.Copy(out, b)
	return out
}

// heldLive reports whether the API server already holds desired, for an object this Applier
// wrote and its cache does not show yet. It costs a read, not a write; without Uncached it says
// no. The live object is compared whole: where the API server normalised what was written (a
// CRD's schema can be), it says no and the object is written again, as it was before this
// check. The written entries of a desired form that changed while the cache lagged stay until
// maxVerified starts the memo afresh.
func (a *Applier) heldLive(ctx context.Context, desired *unstructured.Unstructured) (bool, error) {
	if a.Uncached == nil {
		return false, nil
	}
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(desired.GroupVersionKind())
	switch err := a.Uncached.Get(ctx, client.ObjectKeyFromObject(desired), live); {
	case apierrors.IsNotFound(err):
		return false, nil // deleted since: written again
	case err != nil:
		return false, fmt.Errorf("reading %s %s: %w", desired.GetKind(), desired.GetName(), err)
	}
	return Difference(live.Object, desired.Object) == "", nil
}

// difference is Difference of the object in the cache and desired. For a CRD the cache keeps
// without its schemas (SlimCRD), the other fields are compared and the schemas by digest; when the
// digests differ (the API server may have normalised a schema, or someone changed it), the CRD
// is read whole through Uncached and compared field by field.
func (a *Applier) difference(ctx context.Context, current, desired *unstructured.Unstructured) (string, error) {
	digest, slim := slimmed(current)
	if !slim {
		return Difference(current.Object, desired.Object), nil
	}
	if diff := Difference(current.Object, withoutSchemas(desired)); diff != "" {
		return diff, nil
	}
	if digest == schemaDigest(desired) {
		return "", nil
	}
	if a.Uncached == nil {
		return ".spec.versions[].schema", nil
	}
	whole := &unstructured.Unstructured{}
	whole.SetGroupVersionKind(desired.GroupVersionKind())
	if err := a.Uncached.Get(ctx, client.ObjectKeyFromObject(desired), whole); err != nil {
		if apierrors.IsNotFound(err) {
			return "(gone)", nil
		}
		return "", fmt.Errorf("reading %s %s: %w", desired.GetKind(), desired.GetName(), err)
	}
	return Difference(whole.Object, desired.Object), nil
}

func (a *Applier) wasVerified(key verifiedKey, resourceVersion string) bool {
	if resourceVersion == "" {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.verified[key] == resourceVersion
}

func (a *Applier) remember(key verifiedKey, resourceVersion string) {
	if resourceVersion == "" {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.verified == nil || len(a.verified) >= maxVerified {
		a.verified = make(map[verifiedKey]string)
	}
	a.verified[key] = resourceVersion
}

func (a *Applier) wasWritten(key verifiedKey) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.written[key]
}

// setWritten records that the object was written (true) or that the cache shows it (false).
func (a *Applier) setWritten(key verifiedKey, written bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case !written:
		delete(a.written, key)
	case a.written == nil || len(a.written) >= maxVerified:
		a.written = map[verifiedKey]bool{key: true}
	default:
		a.written[key] = true
	}
}

// StampHash puts the hash of the object, without the annotation itself, on the object. Apply
// does it; a caller that adds fields it copied from the cluster (values another manager owns)
// stamps the hash first, so that those fields changing does not count as the operator wanting
// something new.
func StampHash(u *unstructured.Unstructured) {
	c := runtime.DeepCopyJSON(u.Object)
	unstructured.RemoveNestedField(c, "metadata", "annotations", HashAnnotation)
	if ann, _, _ := unstructured.NestedMap(c, "metadata", "annotations"); len(ann) == 0 {
		unstructured.RemoveNestedField(c, "metadata", "annotations")
	}
	if meta, _, _ := unstructured.NestedMap(c, "metadata"); len(meta) == 0 {
		delete(c, "metadata")
	}
	b, _ := json.Marshal(c) // maps marshal with sorted keys: a stable hash
	sum := sha256.Sum256(b)
	ann := u.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[HashAnnotation] = hex.EncodeToString(sum[:12])
	u.SetAnnotations(ann)
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
		if !ok {
			return orRoot(path)
		}
		if names, ok := namedElements(h); ok && allNamed(w) {
			// A list keyed by name (containers, env, ports, volumes): each wanted element must be
			// there; elements others added (a mutating webhook's env var) are not a difference.
			for _, we := range w {
				name := we.(map[string]any)["name"].(string)
				he, found := names[name]
				if !found {
					return fmt.Sprintf("%s[name=%s]", orRoot(path), name)
				}
				if d := difference(he, we, fmt.Sprintf("%s[name=%s]", path, name)); d != "" {
					return d
				}
			}
			return ""
		}
		if len(h) != len(w) {
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
		if isQuantityPath(path) && sameQuantity(have, want) {
			return ""
		}
		return fmt.Sprintf("%s (have %v, want %v)", orRoot(path), have, want)
	}
}

// isQuantityPath tells where the API server normalises resource quantities: only there is
// "2048Mi" the same as "2Gi" (elsewhere "1000" and "1k" are different strings).
func isQuantityPath(path string) bool {
	return strings.Contains(path, ".resources.") || strings.Contains(path, ".overhead.") ||
		strings.HasSuffix(path, ".averageValue") || strings.HasSuffix(path, ".value") && strings.Contains(path, ".metrics")
}

// namedElements indexes a list whose elements all have a string name.
func namedElements(list []any) (map[string]any, bool) {
	out := make(map[string]any, len(list))
	for _, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			return nil, false
		}
		name, ok := m["name"].(string)
		if !ok {
			return nil, false
		}
		out[name] = m
	}
	return out, true
}

func allNamed(list []any) bool {
	_, ok := namedElements(list)
	return ok && len(list) > 0
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

// Release removes the given labels from an object the operator leaves behind on purpose (a
// namespace, Istio's CRDs), so nothing marks it as the operator's any more and nothing of the
// operator's later selects it.
func Release(ctx context.Context, c client.Client, obj client.Object, labels ...string) error {
	patch := map[string]any{"metadata": map[string]any{"labels": map[string]any{}}}
	for _, l := range labels {
		patch["metadata"].(map[string]any)["labels"].(map[string]any)[l] = nil
	}
	b, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	if err := c.Patch(ctx, obj, client.RawPatch(types.MergePatchType, b)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("releasing %s %s: %w", obj.GetObjectKind().GroupVersionKind().Kind, obj.GetName(), err)
	}
	return nil
}
