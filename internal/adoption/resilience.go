package adoption

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/apierr"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/meshspec"
	"github.com/meshwright/meshwright/internal/resilience"
)

// +kubebuilder:rbac:groups=networking.istio.io,resources=destinationrules;virtualservices,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=httproutes;grpcroutes,verbs=get;list;watch

// unsupportedInAmbient says why a namespace in ambient mode without a waypoint gets no defaults.
const unsupportedInAmbient = "the namespace is in ambient mode without a waypoint, and ztunnel applies no timeout, retry or connection policy (a waypoint does: set waypoint: true on its rule)"

// resilienceWant is what the spec asks of a plan's namespace's resilience defaults.
func resilienceWant(mesh *meshv1.MeshInstallation, c *NamespacePlan) ladder.ResilienceWant {
	w := ladder.ResilienceWant{Values: resilience.Resolve(mesh.Spec.Resilience, c.Enrollment.Resilience), From: resilience.FromLevel(mesh.Spec.Resilience)}
	if w.Values != nil && c.InAmbient() && !c.Enrollment.Waypoint {
		w.Unsupported = unsupportedInAmbient
	}
	return w
}

// planDefaults builds, for every namespace that carries the defaults, or holds objects of them
// (existing, by namespace), or a record of them, the objects its defaults are, against the objects
// of someone else's in the cluster; and updates the record of what the operator has seen of them
// and what a user deleted. A namespace whose objects must go is planned too, whatever its record
// says (a record deleted by hand, a step cancelled before the cache showed what it wrote).
func (p Planner) planDefaults(ctx context.Context, mesh *meshv1.MeshInstallation, plans []NamespacePlan, existing map[string][]*unstructured.Unstructured) error {
	var others []resilience.Other
	othersRead, routesServed := false, []schema.GroupVersionKind(nil)
	root := meshspec.ControlPlaneNamespace(mesh)
	for i := range plans {
		c := &plans[i]
		c.declined = declinedOf(c.Namespace)
		e := c.Decision.Effects.Resilience
		if e == nil && len(c.Decision.State.ResilienceSeen) == 0 && len(existing[c.Namespace.Name]) == 0 {
			continue
		}
		c.defaults = true
		var services []resilience.Service
		var wanted []string
		if e != nil {
			var err error
			if !othersRead {
				if others, routesServed, err = p.othersOf(ctx); err != nil {
					return err
				}
				othersRead = true
			}
			c.routesServed = routesServed
			if services, err = p.servicesOf(ctx, c.Namespace.Name); err != nil {
				return err
			}
			wanted = keysOf(resilience.Build(mesh.Name, c.Namespace.Name, root, *e, services, others, nil).Objects)
		}
		present := map[string]bool{}
		for _, u := range existing[c.Namespace.Name] {
			present[resilience.Key(u)] = true
		}
		seen := p.Observations.unlessRemoved(c.Namespace.Name, c.Decision.State.ResilienceSeen)
		if err := p.confirmGone(ctx, c.Namespace.Name, wanted, seen, present); err != nil {
			return err
		}
		c.Decision.State.ResilienceSeen, c.declined = resilience.Track(wanted, present, seen, c.declined)
		if e != nil {
			c.Defaults = resilience.Build(mesh.Name, c.Namespace.Name, root, *e, services, others, c.declined)
		}
	}
	return nil
}

// confirmGone reads from the API server each object the cache misses that was seen and is
// still wanted, before Track takes it for declined: the cache of these objects and the ladder's
// record may lag each other (an object just created and recorded, not in the cache yet). One
// found is present. Without a reader past the cache (the plugin), the cache is believed.
func (p Planner) confirmGone(ctx context.Context, namespace string, wanted, seen []string, present map[string]bool) error {
	if p.API == nil {
		return nil
	}
	want := map[string]bool{}
	for _, k := range wanted {
		want[k] = true
	}
	for _, k := range seen {
		if present[k] || !want[k] {
			continue
		}
		kind, name, _ := strings.Cut(k, "/")
		u := &unstructured.Unstructured{}
		for _, gvk := range resilience.Kinds() {
			if gvk.Kind == kind {
				u.SetGroupVersionKind(gvk)
			}
		}
		switch err := p.API.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, u); {
		case err == nil:
			present[k] = u.GetDeletionTimestamp().IsZero()
		case !apierrors.IsNotFound(err):
			return fmt.Errorf("reading %s in %s: %w", k, namespace, err)
		}
	}
	return nil
}

// defaultsByNamespace lists the installation's objects of the defaults, by namespace. A user's
// reader (the plugin) that may not list them reads none.
func (p Planner) defaultsByNamespace(ctx context.Context, mesh *meshv1.MeshInstallation) (map[string][]*unstructured.Unstructured, error) {
	objs, err := listDefaults(ctx, p.Policies, mesh.Name, "")
	if err != nil {
		if p.AsUser && apierrors.IsForbidden(err) {
			return nil, nil
		}
		return nil, err
	}
	out := map[string][]*unstructured.Unstructured{}
	for _, u := range objs {
		out[u.GetNamespace()] = append(out[u.GetNamespace()], u)
	}
	return out, nil
}

// declinedOf reads the record of the defaults a user deleted in a namespace.
func declinedOf(ns *corev1.Namespace) []string {
	raw := ns.Annotations[meshv1.AnnotationResilienceDeclined]
	if raw == "" {
		return nil
	}
	var out []string
	for k := range strings.SplitSeq(raw, ",") {
		if k = strings.TrimSpace(k); k != "" {
			out = append(out, k)
		}
	}
	return out
}

// keysOf names objects in resilience.Key form.
func keysOf(objs []*unstructured.Unstructured) []string {
	out := make([]string, 0, len(objs))
	for _, u := range objs {
		out = append(out, resilience.Key(u))
	}
	return out
}

// othersOf lists the DestinationRules and VirtualServices of the cluster that are not the
// operator's (the operator's cache holds them all: there are few), and the Gateway API's routes
// attached to Services, as the defaults weigh them; and whether the Gateway API serves routes.
func (p Planner) othersOf(ctx context.Context) ([]resilience.Other, []schema.GroupVersionKind, error) {
	routes, served, err := p.routesOf(ctx)
	if err != nil {
		return nil, nil, err
	}
	out := routes
	for _, gvk := range resilience.Kinds() {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := p.Policies.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
			if apierr.Absent(err) {
				continue
			}
			return nil, nil, fmt.Errorf("listing %s: %w", gvk.Kind, err)
		}
		for i := range list.Items {
			u := &list.Items[i]
			if resilience.Ours(u) || !u.GetDeletionTimestamp().IsZero() {
				continue
			}
			out = append(out, otherOf(u))
		}
	}
	return out, served, nil
}

// routesOf lists the Gateway API's HTTPRoutes and GRPCRoutes attached to Services, each as an
// Other naming the hosts of its Services, and the kinds it could list. Without the Gateway API
// (or one too old for a kind) there are none of a kind.
func (p Planner) routesOf(ctx context.Context) (routes []resilience.Other, served []schema.GroupVersionKind, err error) {
	for _, gvk := range resilience.RouteKinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := p.Policies.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
			if apierr.Absent(err) || p.AsUser && apierrors.IsForbidden(err) {
				continue
			}
			return nil, nil, fmt.Errorf("listing %s: %w", gvk.Kind, err)
		}
		served = append(served, gvk)
		for i := range list.Items {
			if o := routeOf(&list.Items[i]); len(o.Hosts) > 0 {
				routes = append(routes, o)
			}
		}
	}
	return routes, served, nil
}

// routeOf reads the Services a route attaches to (parentRefs of kind Service, in the core
// group, in the route's namespace unless one is named).
func routeOf(u *unstructured.Unstructured) resilience.Other {
	o := resilience.Other{Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName(), Sidecars: true}
	refs, _, _ := unstructured.NestedSlice(u.Object, "spec", "parentRefs")
	for _, r := range refs {
		ref, ok := r.(map[string]any)
		if !ok {
			continue
		}
		kind, _ := ref["kind"].(string)
		group, _ := ref["group"].(string)
		name, _ := ref["name"].(string)
		namespace, _ := ref["namespace"].(string)
		if kind != "Service" || group != "" && group != "core" || name == "" {
			continue
		}
		if namespace == "" {
			namespace = u.GetNamespace()
		}
		o.Hosts = append(o.Hosts, resilience.Host(namespace, name))
	}
	return o
}

// otherOf reads the hosts of someone else's DestinationRule or VirtualService.
func otherOf(u *unstructured.Unstructured) resilience.Other {
	o := resilience.Other{Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName()}
	if u.GetKind() == resilience.DestinationRuleGVK.Kind {
		host, _, _ := unstructured.NestedString(u.Object, "spec", "host")
		o.Hosts = []string{host}
		return o
	}
	o.Hosts, _, _ = unstructured.NestedStringSlice(u.Object, "spec", "hosts")
	gateways, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "gateways")
	// A VirtualService with no gateways routes the mesh's calls; with some, only if "mesh" is
	// one of them (Istio's reserved name for every sidecar).
	o.Sidecars = len(gateways) == 0 || slices.Contains(gateways, "mesh")
	return o
}

// servicesOf lists a namespace's Services as the defaults cover them: every one but those of
// type ExternalName (no endpoints of the mesh behind them).
func (p Planner) servicesOf(ctx context.Context, namespace string) ([]resilience.Service, error) {
	var list corev1.ServiceList
	if err := p.Workloads.List(ctx, &list, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing Services in %s: %w", namespace, err)
	}
	var out []resilience.Service
	for _, s := range list.Items {
		if s.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		out = append(out, resilience.Service{Name: s.Name, Headless: s.Spec.ClusterIP == corev1.ClusterIPNone})
	}
	slices.SortFunc(out, func(a, b resilience.Service) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// listDefaults lists the installation's objects of the defaults in a namespace (all namespaces
// for ""), those not being deleted. Without Istio's networking CRDs there are none.
func listDefaults(ctx context.Context, r client.Reader, installation, namespace string) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for _, gvk := range resilience.Kinds() {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		opts := []client.ListOption{client.MatchingLabels{meshv1.LabelInstallation: installation}}
		if namespace != "" {
			opts = append(opts, client.InNamespace(namespace))
		}
		if err := r.List(ctx, list, opts...); err != nil {
			if apierr.Absent(err) {
				continue
			}
			return nil, fmt.Errorf("listing %s in %s: %w", gvk.Kind, namespace, err)
		}
		for i := range list.Items {
			if u := &list.Items[i]; resilience.Ours(u) && u.GetDeletionTimestamp().IsZero() {
				out = append(out, u)
			}
		}
	}
	return out, nil
}

// syncDefaults writes a namespace's defaults (Build's objects, for the values its effects carry)
// and deletes the operator's objects of them it should not hold: all of them once the namespace
// carries none. An object it creates is noted as seen at once, in the record the pass writes
// next, so that a user who deletes it a moment later is heard (resilience.Track). It runs every
// pass for the namespaces that carry defaults: what it reads is the cache, and an unchanged
// object costs no write.
func (s *Stage) syncDefaults(ctx context.Context, c *NamespacePlan, installation string) error {
	current, err := listDefaults(ctx, s.Client, installation, c.Namespace.Name)
	if err != nil {
		return err
	}
	var desired []*unstructured.Unstructured
	if c.Decision.Effects.Resilience != nil {
		desired = c.Defaults.Objects
	}
	seen := map[string]bool{}
	for _, k := range c.Decision.State.ResilienceSeen {
		seen[k] = true
	}
	var now []string
	for _, u := range desired {
		key := resilience.Key(u)
		now = append(now, key) // in Build's order, as Track keeps it: no write for the order
		if seen[key] {
			// Seen to exist: updated, never created again. A user may have deleted it since
			// this pass's plan read the cache; the next pass records that.
			if _, err := s.Applier.Update(ctx, u); err != nil {
				return err
			}
			continue
		}
		if _, err := s.Applier.Apply(ctx, u); err != nil {
			return err
		}
	}
	if len(desired) > 0 {
		c.Decision.State.ResilienceSeen = now
	}
	want := map[string]bool{}
	for _, k := range keysOf(desired) {
		want[k] = true
	}
	for _, u := range current {
		if want[resilience.Key(u)] {
			continue
		}
		if err := s.Client.Delete(ctx, u); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
		s.Observations.removedDefault(c.Namespace.Name, resilience.Key(u))
	}
	return nil
}
