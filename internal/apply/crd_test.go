package apply

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/meshwright/meshwright/internal/testenv"
	"github.com/meshwright/meshwright/internal/writecount"
)

var cfg *rest.Config

func TestMain(m *testing.M) {
	testenv.Main(m, func(c *rest.Config) error {
		cfg = c
		return nil
	})
}

// widgetCRD is a small CRD whose schema carries a description the API server keeps, and
// optionally an empty format it drops (a normalisation the digest cannot see through).
func widgetCRD(description string, withEmpty bool) *unstructured.Unstructured {
	size := map[string]any{"type": "integer", "description": description}
	if withEmpty {
		size["format"] = ""
	}
	props := map[string]any{"size": size}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "widgets.example.meshwright.io"},
		"spec": map[string]any{
			"group": "example.meshwright.io", "scope": "Namespaced",
			"names": map[string]any{"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object",
					"properties": map[string]any{"spec": map[string]any{"type": "object", "properties": props}}}}}},
		},
	}}
}

// slimCache starts a cache that keeps CRDs as the operator's does (SlimCRD) and returns a
// client reading from it, whose writes are counted.
func slimCache(t *testing.T, w *writecount.Counter) client.Client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	crd := &unstructured.Unstructured{}
	crd.SetGroupVersionKind(apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinition"))
	c, err := cache.New(cfg, cache.Options{Scheme: runtime.NewScheme(), ByObject: map[client.Object]cache.ByObject{crd: {Transform: SlimCRD}}})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Start(ctx) }()
	cl, err := client.NewWithWatch(cfg, client.Options{Cache: &client.CacheOptions{Reader: c, Unstructured: true}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetInformer(ctx, crd); err != nil {
		t.Fatal(err)
	}
	if !c.WaitForCacheSync(ctx) {
		t.Fatal("the cache did not sync")
	}
	return w.Wrap(cl, interceptor.Funcs{})
}

// waitForDigestChange waits until the cache's copy of the CRD shows another schema digest.
func waitForDigestChange(t *testing.T, c client.Client, cached *unstructured.Unstructured) {
	t.Helper()
	before := cached.GetAnnotations()[SchemaDigestAnnotation]
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(cached), cached); err == nil && cached.GetAnnotations()[SchemaDigestAnnotation] != before {
			return
		}
	}
	t.Fatal("the cache never saw the schema change")
}

// countingReader counts the reads that go past the cache.
type countingReader struct {
	client.Reader
	gets atomic.Int32
}

func (r *countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	r.gets.Add(1)
	return r.Reader.Get(ctx, key, obj, opts...)
}

// settle applies desired until the cache shows it (an apply reports no write), at most a few
// seconds.
func settle(t *testing.T, a *Applier, desired func() *unstructured.Unstructured) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		wrote, err := a.Apply(context.Background(), desired())
		if err != nil {
			t.Fatal(err)
		}
		if !wrote {
			return
		}
	}
	t.Fatal("the CRD never settled: every apply wrote")
}

// TestSlimCachedCRDs: the cache holds CRDs without their schemas; the Applier still tells an
// unchanged CRD (no write, no read past the cache), a schema someone changed (re-applied), and a
// schema the API server normalised (one read of the whole CRD, no write).
func TestSlimCachedCRDs(t *testing.T) {
	ctx := context.Background()
	w := &writecount.Counter{}
	c := slimCache(t, w)
	direct, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	uncached := &countingReader{Reader: direct}
	a := &Applier{Client: c, FieldManager: "meshwright", Uncached: uncached}
	desired := func() *unstructured.Unstructured { return widgetCRD("how big", false) }
	normalised := func() *unstructured.Unstructured { return widgetCRD("how big", true) }
	settle(t, a, desired)

	cached := &unstructured.Unstructured{}
	cached.SetGroupVersionKind(desired().GroupVersionKind())
	if err := c.Get(ctx, client.ObjectKey{Name: desired().GetName()}, cached); err != nil {
		t.Fatal(err)
	}
	if _, has, _ := unstructured.NestedFieldNoCopy(cached.Object, "spec", "versions"); !has {
		t.Fatal("the cache dropped the versions")
	}
	if v := cached.Object["spec"].(map[string]any)["versions"].([]any)[0].(map[string]any); v["schema"] != nil || v["name"] != "v1" {
		t.Errorf("cached version %v: want its name and no schema", v)
	}
	if cached.GetAnnotations()[SchemaDigestAnnotation] == "" {
		t.Error("the cached copy has no schema digest")
	}

	// Each step: what happens first, then one Apply of desired by an Applier that has not
	// verified the CRD yet (a new pass after a restart, or after the CRD changed).
	tests := []struct {
		name              string
		change            func()
		desired           func() *unstructured.Unstructured
		wantWrite         bool
		wantUncachedReads int32
	}{
		{name: "unchanged", desired: desired},
		{name: "someone changed the schema", desired: desired, wantWrite: true, wantUncachedReads: 1, change: func() {
			theirs := widgetCRD("changed by hand", false)
			if err := direct.Apply(ctx, client.ApplyConfigurationFromUnstructured(theirs), client.FieldOwner("someone"), client.ForceOwnership); err != nil {
				t.Fatal(err)
			}
			waitForDigestChange(t, c, cached)
		}},
		{name: "a schema the API server normalised", desired: normalised, wantUncachedReads: 1, change: func() {
			settle(t, a, normalised)
		}},
	}
	for _, tc := range tests {
		if tc.change != nil {
			tc.change()
		}
		w.Reset()
		uncached.gets.Store(0)
		fresh := &Applier{Client: c, FieldManager: "meshwright", Uncached: uncached}
		wrote, err := fresh.Apply(ctx, tc.desired())
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if wrote != tc.wantWrite || (w.Total() > 0) != tc.wantWrite {
			t.Errorf("%s: wrote %v (%v), want a write: %v", tc.name, wrote, w.Writes(), tc.wantWrite)
		}
		if n := uncached.gets.Load(); n != tc.wantUncachedReads {
			t.Errorf("%s: %d reads past the cache, want %d", tc.name, n, tc.wantUncachedReads)
		}
		if tc.wantWrite {
			settle(t, fresh, tc.desired)
			continue
		}
		// Verified once, the same resourceVersion is not compared again.
		uncached.gets.Store(0)
		if wrote, _ := fresh.Apply(ctx, tc.desired()); wrote || uncached.gets.Load() != 0 {
			t.Errorf("%s, again: wrote %v, %d reads past the cache; want neither", tc.name, wrote, uncached.gets.Load())
		}
	}
}

func TestSlimCRDIsIdempotent(t *testing.T) {
	crd := widgetCRD("how big", false)
	once, _ := SlimCRD(crd.DeepCopy())
	twice, _ := SlimCRD(once.(*unstructured.Unstructured).DeepCopy())
	a := once.(*unstructured.Unstructured).GetAnnotations()[SchemaDigestAnnotation]
	if b := twice.(*unstructured.Unstructured).GetAnnotations()[SchemaDigestAnnotation]; a == "" || a != b {
		t.Errorf("digest %q after one transform, %q after two", a, b)
	}
	if a != schemaDigest(crd) {
		t.Error("the digest is not of the schemas")
	}
	// Someone's CRD carrying the annotation is slimmed all the same.
	forged := widgetCRD("how big", false)
	forged.SetAnnotations(map[string]string{SchemaDigestAnnotation: "made up"})
	out, _ := SlimCRD(forged)
	if d := out.(*unstructured.Unstructured).GetAnnotations()[SchemaDigestAnnotation]; d != schemaDigest(crd) {
		t.Errorf("a CRD with a made-up digest kept it (%q) or its schemas", d)
	}
}

// TestAWholeCRDIsComparedWhole: a CRD that still holds its schemas is compared field by field,
// whatever digest annotation it carries (a client that is not the slim cache).
func TestAWholeCRDIsComparedWhole(t *testing.T) {
	have := widgetCRD("changed by hand", false)
	want := widgetCRD("how big", false)
	have.SetAnnotations(map[string]string{SchemaDigestAnnotation: schemaDigest(want)})
	if _, ok := slimmed(have); ok {
		t.Fatal("a CRD with its schemas was taken for a slim copy")
	}
	a := &Applier{}
	if diff, err := a.difference(context.Background(), have, want); err != nil || diff == "" {
		t.Errorf("difference = %q, %v; want the schema's description", diff, err)
	}
}
