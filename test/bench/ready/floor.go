package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/watch"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	"github.com/meshwright/meshwright/internal/controlplane"
	"github.com/meshwright/meshwright/internal/render"
	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework/manifest"
)

// floorMethod names how the floor is measured, in the JSON line: floors measured another way (the
// harness's apply client, which ran discovery per kind, before issue #24) are not comparable.
const floorMethod = "ssa-dynamic-restmapper"

// floorFieldManager is the one field manager the floor applies with.
const floorFieldManager = "bench-floor"

// measureFloor applies the rendered control plane to a fresh cluster the fastest direct way, so
// that the operator/floor ratio does not flatter the operator: one client with one RESTMapper
// built (and filled by discovery) before the clock starts, server-side apply with force, the CRDs
// first, concurrently, waited on until Established by a watch, then the rest concurrently, then
// istiod's Deployment waited on until Available. The clock starts at the namespace's creation.
// Only the objects come from the operator's code (controlplane.Input and render), nothing of how
// it applies them.
func measureFloor(parallel int) (time.Duration, error) {
	ctx := context.Background()
	cl, err := cluster.Start(ctx, cluster.Options{})
	if err != nil {
		return 0, err
	}
	defer cl.Stop()
	in, err := controlplane.Input(sample(), "v1.37.2")
	if err != nil {
		return 0, err
	}
	objs, err := render.Render(in)
	if err != nil {
		return 0, err
	}
	c, err := newFloorClient(cl.RESTConfig())
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	crds, rest := manifest.SplitCRDs(objs)
	crdsRV, err := crdsResourceVersion(ctx, c)
	if err != nil {
		return 0, err
	}

	// The namespace is there before the clock starts, as the operator's Certificates stage has
	// made it before the control plane's first write.
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: in.Namespace}}); err != nil {
		return 0, err
	}
	start := time.Now()
	// The watch starts with the applies: it sees every change after crdsRV, so none is missed.
	established := make(chan error, 1)
	go func() { established <- waitEstablished(ctx, c, crdsRV, crds) }()
	if err := applyAll(ctx, c, parallel, crds); err != nil {
		return 0, err
	}
	if err := <-established; err != nil {
		return 0, err
	}
	if err := applyAll(ctx, c, parallel, rest); err != nil {
		return 0, err
	}
	if err := waitAvailable(ctx, c, client.ObjectKey{Namespace: in.Namespace, Name: "istiod"}); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// newFloorClient is a controller-runtime client with a dynamic RESTMapper of its own, which
// discovers the API once and again only for a kind it does not know (the kinds of CRDs just
// established). The mapper is filled here, before the clock starts, as the operator's is before
// the installation is created; the scheme holds only what the floor reads typed.
func newFloorClient(cfg *rest.Config) (client.WithWatch, error) {
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	if _, err := mapper.RESTMapping(apiextensionsv1.Kind("CustomResourceDefinition"), "v1"); err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return client.NewWithWatch(cfg, client.Options{HTTPClient: httpClient, Mapper: mapper, Scheme: scheme})
}

// crdsResourceVersion is the CRDs' collection resourceVersion now, for a watch that misses no
// later change. Read as metadata with a limit of one: the CRDs already there (cert-manager's)
// are megabytes the floor has no use for.
func crdsResourceVersion(ctx context.Context, c client.Client) (string, error) {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinitionList"))
	if err := c.List(ctx, list, client.Limit(1)); err != nil {
		return "", err
	}
	return list.ResourceVersion, nil
}

// applyAll server-side-applies objs with the floor's field manager and force, at most parallel
// at a time (client-go's workqueue.ParallelizeUntil), and stops at the first error. An apply
// whose kind the mapper does not know yet is tried again: a CRD's kind reaches discovery a moment
// after the CRD is Established, and the dynamic RESTMapper asks discovery again on each try.
func applyAll(ctx context.Context, c client.Client, parallel int, objs []*unstructured.Unstructured) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(objs))
	workqueue.ParallelizeUntil(ctx, parallel, len(objs), func(i int) {
		o := objs[i]
		err := retry.OnError(retry.DefaultBackoff, meta.IsNoMatchError, func() error {
			return c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o.DeepCopy()),
				client.FieldOwner(floorFieldManager), client.ForceOwnership)
		})
		if err != nil {
			errs[i] = fmt.Errorf("applying %s %s: %w", o.GetKind(), o.GetName(), err)
			cancel()
		}
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}

// waitEstablished follows the CRDs by a watch from rv (client-go's watchtools.Until, which
// resumes a dropped watch from the last event) until every one of crds is Established.
func waitEstablished(ctx context.Context, c client.WithWatch, rv string, crds []*unstructured.Unstructured) error {
	waiting := sets.New[string]()
	for _, crd := range crds {
		waiting.Insert(crd.GetName())
	}
	lw := &cache.ListWatch{WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
		return c.Watch(ctx, &apiextensionsv1.CustomResourceDefinitionList{}, &client.ListOptions{Raw: &opts})
	}}
	_, err := watchtools.Until(ctx, rv, lw, func(ev watch.Event) (bool, error) {
		if ev.Type == watch.Error {
			return false, apierrors.FromObject(ev.Object)
		}
		if crd, ok := ev.Object.(*apiextensionsv1.CustomResourceDefinition); ok && isEstablished(crd) {
			waiting.Delete(crd.Name)
		}
		return waiting.Len() == 0, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for CRDs %v to be Established: %w", sets.List(waiting), err)
	}
	return nil
}

// isEstablished tells whether the API server serves the CRD's kind.
func isEstablished(crd *apiextensionsv1.CustomResourceDefinition) bool {
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established {
			return c.Status == apiextensionsv1.ConditionTrue
		}
	}
	return false
}

// waitAvailable polls the Deployment every 20 ms, as the operator's progress is followed, until
// it is Available with every replica.
func waitAvailable(ctx context.Context, c client.Client, key client.ObjectKey) error {
	for {
		dep := &appsv1.Deployment{}
		if err := c.Get(ctx, key, dep); err == nil && available(dep) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("deployment %s not Available: %w", key, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
