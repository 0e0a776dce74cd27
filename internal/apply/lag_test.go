package apply

import (
	"context"
	"sync/atomic"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/meshwright/meshwright/internal/writecount"
)

// TestCacheLagCostsNoWrite: an object the Applier wrote and its cache does not show yet (the
// pass a watch event starts can run before the cache holds it) is read from the API server,
// not written again; one that is really gone, or wanted otherwise, is written.
func TestCacheLagCostsNoWrite(t *testing.T) {
	ctx := context.Background()
	direct, err := client.NewWithWatch(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var lagging atomic.Bool
	w := &writecount.Counter{}
	cached := w.Wrap(direct, interceptor.Funcs{Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
		if lagging.Load() {
			return apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, key.Name)
		}
		return c.Get(ctx, key, obj, opts...)
	}})
	live := &countingReader{Reader: direct}
	a := &Applier{Client: cached, FieldManager: "meshwright-test", Uncached: live}
	desired := func(value string) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": "lagging", "namespace": "default"},
			"data":     map[string]any{"key": value},
		}}
	}
	step := func(name, value string, wantWrite bool, wantLiveReads int32) {
		t.Helper()
		w.Reset()
		live.gets.Store(0)
		wrote, err := a.Apply(ctx, desired(value))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if wrote != wantWrite || w.Total() != map[bool]int{true: 1}[wantWrite] {
			t.Errorf("%s: wrote = %v with %d writes, want %v", name, wrote, w.Total(), wantWrite)
		}
		if got := live.gets.Load(); got != wantLiveReads {
			t.Errorf("%s: %d reads past the cache, want %d", name, got, wantLiveReads)
		}
	}

	lagging.Store(true)
	step("first apply", "a", true, 0)
	step("again while the cache lags", "a", false, 1)
	step("a new value while the cache lags", "b", true, 0)
	if err := direct.Delete(ctx, desired("b")); err != nil {
		t.Fatal(err)
	}
	step("deleted while the cache lags", "b", true, 1)
	lagging.Store(false)
	step("the cache caught up", "b", false, 0)
	lagging.Store(true) // the cache now says it is gone: believed
	step("gone from a cache that had shown it", "b", true, 0)

	// Without a reader past the cache, an object the cache does not show is written.
	a = &Applier{Client: cached, FieldManager: "meshwright-test"}
	step("no reader past the cache", "c", true, 0)
	step("no reader past the cache, again", "c", true, 0)
}

// TestUpdateNeverCreates: Update writes a changed object over the one the cache holds, never one
// that is gone (the cache shows none: deleted since the caller planned), and not over one deleted
// between the cache's read and the write (the cache lags: the resourceVersion it read refuses
// the write), which an Apply would have created again.
func TestUpdateNeverCreates(t *testing.T) {
	ctx := context.Background()
	direct, err := client.NewWithWatch(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var stale atomic.Pointer[unstructured.Unstructured]
	cached := interceptor.NewClient(direct, interceptor.Funcs{Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
		if s := stale.Load(); s != nil && key.Name == s.GetName() {
			s.DeepCopyInto(obj.(*unstructured.Unstructured))
			return nil
		}
		return c.Get(ctx, key, obj, opts...)
	}})
	a := &Applier{Client: cached, FieldManager: "meshwright-test"}
	desired := func(name, value string) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": name, "namespace": "default"}, "data": map[string]any{"key": value}}}
	}
	exists := func(name string) bool {
		u := desired(name, "")
		return !apierrors.IsNotFound(direct.Get(ctx, client.ObjectKeyFromObject(u), u))
	}

	if wrote, err := a.Update(ctx, desired("update-gone", "a")); err != nil || wrote || exists("update-gone") {
		t.Fatalf("an absent object: wrote %v, err %v, exists %v; want nothing created", wrote, err, exists("update-gone"))
	}
	if _, err := a.Apply(ctx, desired("update-kept", "a")); err != nil {
		t.Fatal(err)
	}
	if wrote, err := a.Update(ctx, desired("update-kept", "a")); err != nil || wrote {
		t.Fatalf("unchanged: wrote %v, err %v", wrote, err)
	}
	if wrote, err := a.Update(ctx, desired("update-kept", "b")); err != nil || !wrote {
		t.Fatalf("changed: wrote %v, err %v", wrote, err)
	}

	// Deleted on the API server while the cache still shows it.
	held := desired("update-kept", "")
	if err := direct.Get(ctx, client.ObjectKeyFromObject(held), held); err != nil {
		t.Fatal(err)
	}
	stale.Store(held)
	if err := direct.Delete(ctx, held); err != nil {
		t.Fatal(err)
	}
	if wrote, err := a.Update(ctx, desired("update-kept", "c")); err != nil || wrote || exists("update-kept") {
		t.Fatalf("deleted under a lagging cache: wrote %v, err %v, exists %v; want it left deleted", wrote, err, exists("update-kept"))
	}
}
