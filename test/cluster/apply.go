package cluster

import (
	"context"
	"fmt"
	"github.com/meshwright/meshwright/test/framework/manifest"
	"os"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// ApplyFiles server-side-applies every object in the YAML files (CRDs such as cert-manager's are
// too large for client-side apply) and waits for applied CRDs to be Established, so the caller
// can create objects of their kinds at once.
func ApplyFiles(ctx context.Context, cfg *rest.Config, paths ...string) error {
	var objs []*unstructured.Unstructured
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		decoded, err := manifest.DecodeAll(b)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		objs = append(objs, decoded...)
	}
	return Apply(ctx, cfg, objs...)
}

// Apply server-side-applies objects with the harness's field manager, CRDs first.
func Apply(ctx context.Context, cfg *rest.Config, objs ...*unstructured.Unstructured) error {
	return apply(ctx, cfg, metav1.PatchOptions{FieldManager: fieldManager, Force: ptr(true)}, objs)
}

// Validate sends objects to the API server as a dry-run apply with strict field validation:
// an unknown or mistyped field, or a value the schema refuses, is an error, and nothing is
// stored. Objects whose CRDs are among them are checked once those CRDs are installed.
func Validate(ctx context.Context, cfg *rest.Config, objs ...*unstructured.Unstructured) error {
	return apply(ctx, cfg, metav1.PatchOptions{FieldManager: fieldManager, Force: ptr(true), DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"}, objs)
}

func ptr[T any](v T) *T { return &v }

func apply(ctx context.Context, cfg *rest.Config, opts metav1.PatchOptions, objs []*unstructured.Unstructured) error {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	crds, rest := manifest.SplitCRDs(objs)
	for _, batch := range [][]*unstructured.Unstructured{crds, rest} {
		for _, o := range batch {
			gvk := o.GroupVersionKind()
			m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				return fmt.Errorf("%s %s: %w", gvk.Kind, o.GetName(), err)
			}
			var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
			if m.Scope.Name() == meta.RESTScopeNameNamespace {
				ns := o.GetNamespace()
				if ns == "" {
					ns = "default"
				}
				ri = dyn.Resource(m.Resource).Namespace(ns)
			}
			data, err := o.MarshalJSON()
			if err != nil {
				return err
			}
			if _, err := ri.Patch(ctx, o.GetName(), types.ApplyPatchType, data, opts); err != nil {
				return fmt.Errorf("applying %s %s: %w", gvk.Kind, o.GetName(), err)
			}
		}
		if len(batch) > 0 && batch[0].GetKind() == "CustomResourceDefinition" && len(opts.DryRun) == 0 {
			if err := waitEstablished(ctx, dyn, batch); err != nil {
				return err
			}
			if err := waitDiscoverable(ctx, dc, batch); err != nil {
				return err
			}
			mapper.Reset()
		}
	}
	return nil
}

func waitEstablished(ctx context.Context, dyn dynamic.Interface, crds []*unstructured.Unstructured) error {
	crdRes := dyn.Resource(crdGVR)
	for _, crd := range crds {
		err := poll(ctx, "CRD "+crd.GetName()+" to be Established", 100*time.Millisecond, nil, func(ctx context.Context) (bool, error) {
			got, err := crdRes.Get(ctx, crd.GetName(), metav1.GetOptions{})
			if err != nil {
				return false, client404(err)
			}
			conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, c := range conds {
				cm, _ := c.(map[string]any)
				if cm["type"] == "Established" && cm["status"] == "True" {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// waitDiscoverable waits until the API server's discovery serves every version of the CRDs'
// resources: discovery catches up with Established a moment later, and a client that maps kinds
// through it (controller-runtime's) refuses a kind it does not list yet ("no matches for kind").
func waitDiscoverable(ctx context.Context, dc discovery.DiscoveryInterface, crds []*unstructured.Unstructured) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, crd := range crds {
		group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
		plural, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "plural")
		versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
		for _, v := range versions {
			vm, _ := v.(map[string]any)
			name, _ := vm["name"].(string)
			if served, _ := vm["served"].(bool); !served || name == "" {
				continue
			}
			gv := group + "/" + name
			err := poll(ctx, "discovery to serve "+plural+" of "+gv, 100*time.Millisecond, nil, func(ctx context.Context) (bool, error) {
				list, err := dc.ServerResourcesForGroupVersion(gv)
				if err != nil {
					return false, err // not served yet (404), or a blip: asked again
				}
				return slices.ContainsFunc(list.APIResources, func(r metav1.APIResource) bool { return r.Name == plural }), nil
			})
			if err != nil {
				return err
			}
		}
	}
	return nil
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
