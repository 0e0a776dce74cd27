// Package writecount counts the write requests a client makes, by verb. Tests use it to hold
// the operator to its promise that a pass which changes nothing writes nothing.
package writecount

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// Counter counts writes; it is safe for concurrent use.
type Counter struct {
	mu      sync.Mutex
	counts  map[string]int
	objects []string
}

func (w *Counter) add(verb string, obj any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.counts == nil {
		w.counts = map[string]int{}
	}
	w.counts[verb]++
	w.objects = append(w.objects, verb+" "+describe(obj))
}

// Writes lists every write since the last Reset as "verb Kind namespace/name", for messages.
func (w *Counter) Writes() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.objects)
}

func describe(obj any) string {
	if u, ok := obj.(interface{ GetName() *string }); ok && u.GetName() != nil {
		return fmt.Sprintf("%T %s", obj, *u.GetName())
	}
	if o, ok := obj.(client.Object); ok {
		return fmt.Sprintf("%s %s/%s", o.GetObjectKind().GroupVersionKind().Kind, o.GetNamespace(), o.GetName())
	}
	if u, ok := obj.(*unstructured.Unstructured); ok {
		return fmt.Sprintf("%s %s/%s", u.GetKind(), u.GetNamespace(), u.GetName())
	}
	b, _ := json.Marshal(obj)
	if len(b) > 200 {
		b = b[:200]
	}
	return string(b)
}

// Total is the number of writes since the last Reset.
func (w *Counter) Total() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, c := range w.counts {
		n += c
	}
	return n
}

// Counts is the number of writes by verb ("patch", "patch/status", "apply", …).
func (w *Counter) Counts() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.counts)
}

// Reset starts counting from zero.
func (w *Counter) Reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.counts = nil
	w.objects = nil
}

// Wrap returns base with every write counted. Functions set in faults replace the real call
// after it is counted, to inject errors; reads in faults (Get, List) are passed through.
func (w *Counter) Wrap(base client.WithWatch, faults interceptor.Funcs) client.WithWatch {
	return interceptor.NewClient(base, interceptor.Funcs{
		Get:  faults.Get,
		List: faults.List,
		Create: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
			// A dry-run create (the injection probe) stores nothing: it is not a write.
			if co := (&client.CreateOptions{}).ApplyOptions(opts); len(co.DryRun) == 0 {
				w.add("create", o)
			}
			if faults.Create != nil {
				return faults.Create(ctx, c, o, opts...)
			}
			return c.Create(ctx, o, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
			w.add("update", o)
			if faults.Update != nil {
				return faults.Update(ctx, c, o, opts...)
			}
			return c.Update(ctx, o, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, o client.Object, p client.Patch, opts ...client.PatchOption) error {
			w.add("patch", o)
			if faults.Patch != nil {
				return faults.Patch(ctx, c, o, p, opts...)
			}
			return c.Patch(ctx, o, p, opts...)
		},
		Apply: func(ctx context.Context, c client.WithWatch, o runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			w.add("apply", o)
			if faults.Apply != nil {
				return faults.Apply(ctx, c, o, opts...)
			}
			return c.Apply(ctx, o, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.DeleteOption) error {
			w.add("delete", o)
			if faults.Delete != nil {
				return faults.Delete(ctx, c, o, opts...)
			}
			return c.Delete(ctx, o, opts...)
		},
		DeleteAllOf: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.DeleteAllOfOption) error {
			w.add("deletecollection", o)
			return c.DeleteAllOf(ctx, o, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, o client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
			w.add("patch/"+sub, o)
			if faults.SubResourcePatch != nil {
				return faults.SubResourcePatch(ctx, c, sub, o, p, opts...)
			}
			return c.SubResource(sub).Patch(ctx, o, p, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, o client.Object, opts ...client.SubResourceUpdateOption) error {
			w.add("update/"+sub, o)
			return c.SubResource(sub).Update(ctx, o, opts...)
		},
		SubResourceCreate: func(ctx context.Context, c client.Client, sub string, o, so client.Object, opts ...client.SubResourceCreateOption) error {
			w.add("create/"+sub, o)
			return c.SubResource(sub).Create(ctx, o, so, opts...)
		},
	})
}
