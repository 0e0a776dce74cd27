package adoption

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/ambient"
	"github.com/meshwright/meshwright/internal/gatewayapi"
	"github.com/meshwright/meshwright/internal/installed"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/meshspec"
	"github.com/meshwright/meshwright/internal/waypoint"
)

// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=gateways,verbs=get;list;watch;create;update;patch;delete

const (
	// gatewayCRD is the name of the Gateway API's Gateway CRD.
	gatewayCRD = "gateways." + gatewayapi.Group
	// waypointGrace is how long the operator's waypoint outlives the label that sent traffic to
	// it: ztunnel learns that the label is gone from istiod, and connections it set up through
	// the waypoint before that still need it.
	waypointGrace = 30 * time.Second
	// AnnotationUnusedSince on the operator's waypoint says since when no label sends traffic
	// to it; it is deleted waypointGrace later.
	AnnotationUnusedSince = "meshwright.io/unused-since"
)

// waypointGateways is what a pass read of the Gateways named waypoint.
type waypointGateways struct {
	// byNamespace holds each namespace's Gateway named waypoint, whoever's it is; nil when
	// none were read.
	byNamespace map[string]*unstructured.Unstructured
	// unavailable says why no waypoint can be read or created (no Gateway API, or one too
	// old); unread why a user's credentials could not read them (the kubectl plugin).
	unavailable, unread string
}

// readsWaypoints tells whether a pass reads Gateways: the spec puts namespaces in ambient mode
// (a waypoint, or one no longer asked for, may be there), or a namespace still is in it or sends
// its traffic to a waypoint. A mesh of sidecars keeps no cache of the cluster's Gateways.
func readsWaypoints(mesh *meshv1.MeshInstallation, namespaces []corev1.Namespace) bool {
	return meshspec.AmbientWanted(mesh) || slices.ContainsFunc(namespaces, func(ns corev1.Namespace) bool {
		return ns.Labels[waypoint.UseLabel] == waypoint.Name || ns.Labels[ambient.Label] == ambient.Enabled
	})
}

// readWaypoints reads the Gateways named waypoint when the pass needs them, and adds the
// namespaces holding the operator's to withObjects: they are looked at (and their waypoint
// removed) even once nothing else makes them candidates.
func (p Planner) readWaypoints(ctx context.Context, mesh *meshv1.MeshInstallation, namespaces []corev1.Namespace, withObjects map[string]bool) (waypointGateways, error) {
	if !readsWaypoints(mesh, namespaces) {
		return waypointGateways{}, nil
	}
	read, err := p.waypoints(ctx)
	for ns, gw := range read.byNamespace {
		if ours(gw, mesh) {
			withObjects[ns] = true
		}
	}
	return read, err
}

// waypoints reads the Gateways named waypoint, by namespace, when the Gateway API serves them as
// the operator writes them. The CRD is looked at first (in the operator's cache, which holds
// every CRD), so that a cluster without the Gateway API, or with one too old, costs no request
// for a kind or version the API server does not serve.
func (p Planner) waypoints(ctx context.Context) (waypointGateways, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinition"))
	err := p.Policies.Get(ctx, client.ObjectKey{Name: gatewayCRD}, u)
	switch {
	case apierrors.IsNotFound(err):
		return waypointGateways{unavailable: "the Gateway API's CRDs are not installed (no " + gatewayCRD + ")"}, nil
	case p.AsUser && apierrors.IsForbidden(err):
		return waypointGateways{unread: "your credentials may not read the CRD " + gatewayCRD + " (the operator's may)"}, nil
	case err != nil:
		return waypointGateways{}, fmt.Errorf("reading the CRD %s: %w", gatewayCRD, err)
	}
	var served []string
	versions, _, _ := unstructured.NestedSlice(u.Object, "spec", "versions")
	for _, v := range versions {
		if m, ok := v.(map[string]any); ok && m["served"] == true {
			served = append(served, fmt.Sprint(m["name"]))
		}
	}
	if why := gatewayapi.WaypointsUnsupported(gatewayCRD, installed.ConditionTrue(u, "Established"), served, u.GetAnnotations()[gatewayapi.BundleVersionAnnotation]); why != "" {
		return waypointGateways{unavailable: why}, nil
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(waypoint.GVK.GroupVersion().WithKind(waypoint.GVK.Kind + "List"))
	if err := p.Policies.List(ctx, list); p.AsUser && apierrors.IsForbidden(err) {
		return waypointGateways{unread: "your credentials may not list Gateways (the operator's may)"}, nil
	} else if err != nil {
		return waypointGateways{}, fmt.Errorf("listing Gateways: %w", err)
	}
	out := waypointGateways{byNamespace: map[string]*unstructured.Unstructured{}}
	for i := range list.Items {
		if gw := &list.Items[i]; gw.GetName() == waypoint.Name {
			out.byNamespace[gw.GetNamespace()] = gw
		}
	}
	return out, nil
}

// ours tells whether a Gateway is the installation's waypoint.
func ours(gw *unstructured.Unstructured, mesh *meshv1.MeshInstallation) bool {
	l := gw.GetLabels()
	return l[meshv1.LabelInstallation] == mesh.Name && l[meshv1.LabelManagedBy] == meshv1.ManagedByValue
}

// usesWaypoint tells whether a namespace's labels send its traffic to the Gateway named
// waypoint in the namespace itself (istio.io/use-waypoint-namespace, when set, names where the
// waypoint is: elsewhere, it is not this one).
func usesWaypoint(labels map[string]string, namespace string) bool {
	in := labels[waypoint.NamespaceLabel]
	return labels[waypoint.UseLabel] == waypoint.Name && (in == "" || in == namespace)
}

// setWaypoint gives a namespace's plan what the ladder reads of its waypoint: wanted when its
// rule asks for one and the namespace, enrolled, is to be in ambient mode or still carries the
// ambient label; labelled when its traffic goes to the Gateway named waypoint in it. A Gateway by
// that name that is not the operator's is a conflict, and never the plan's gateway.
func setWaypoint(c *NamespacePlan, mesh *meshv1.MeshInstallation, read waypointGateways) {
	e, l := c.Enrollment, c.Namespace.Labels
	c.gateway, c.gatewaysRead = nil, read.byNamespace != nil
	c.Waypoint = ladder.Waypoint{
		Wanted:      e.Waypoint && (e.Ambient && e.Target != meshv1.LevelOff || l[ambient.Label] == ambient.Enabled),
		Labelled:    usesWaypoint(l, c.Namespace.Name),
		Unavailable: read.unavailable,
		Unread:      read.unread,
	}
	if gw := read.byNamespace[c.Namespace.Name]; gw != nil && ours(gw, mesh) {
		c.gateway = gw
		c.Waypoint.Programmed, c.Waypoint.Updating = waypoint.Programmed(gw), waypoint.Updating(gw)
	} else if gw != nil {
		c.Waypoint.Conflict = fmt.Sprintf("Gateway %s/%s is not the operator's (it lacks %s=%s)", gw.GetNamespace(), gw.GetName(), meshv1.LabelInstallation, mesh.Name)
	}
}

// applyWaypoint makes the namespace's waypoint Gateway what the operator wants, before the
// namespace is written: its label may only come once the Gateway exists. One the pass did not
// see is created, never applied: a Gateway someone made since is theirs (the next pass holds the
// namespace with WaypointConflict). A Gateway the effects keep only because the label still
// names it is not created again.
func (s *Stage) applyWaypoint(ctx context.Context, mesh *meshv1.MeshInstallation, c *NamespacePlan, e ladder.Effects) error {
	if w := c.Waypoint; !e.Waypoint || !w.Wanted || w.Unavailable != "" || w.Conflict != "" || w.Unread != "" {
		return nil
	}
	gw, err := waypoint.Gateway(mesh.Name, c.Namespace.Name)
	if err != nil {
		return err
	}
	if c.gateway == nil {
		if err := s.Client.Create(ctx, gw, client.FieldOwner(s.FieldManager)); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating the waypoint of namespace %s: %w", c.Namespace.Name, err)
		}
		return nil
	}
	if _, err := s.Applier.Apply(ctx, gw); err != nil {
		return fmt.Errorf("applying the waypoint of namespace %s: %w", c.Namespace.Name, err)
	}
	if _, retiring := c.gateway.GetAnnotations()[AnnotationUnusedSince]; retiring {
		return s.annotateWaypoint(ctx, c.gateway, nil)
	}
	return nil
}

// removeWaypoint deletes a waypoint no longer wanted, after the namespace is written: only once
// the API server (not the cache, which may be behind) shows that the namespace's label no longer
// sends traffic to it, and waypointGrace after that was first seen (AnnotationUnusedSince). It
// returns how long until it looks again.
func (s *Stage) removeWaypoint(ctx context.Context, c *NamespacePlan, e ladder.Effects) (time.Duration, error) {
	if e.Waypoint || c.gateway == nil || c.gateway.GetDeletionTimestamp() != nil {
		return 0, nil
	}
	var ns corev1.Namespace
	if err := s.api().Get(ctx, client.ObjectKey{Name: c.Namespace.Name}, &ns); err != nil {
		return 0, fmt.Errorf("reading namespace %s before deleting its waypoint: %w", c.Namespace.Name, err)
	}
	if usesWaypoint(ns.Labels, ns.Name) {
		return 0, nil
	}
	since, err := time.Parse(time.RFC3339, c.gateway.GetAnnotations()[AnnotationUnusedSince])
	if err != nil {
		return waypointGrace, s.annotateWaypoint(ctx, c.gateway, s.now().UTC().Format(time.RFC3339))
	}
	if left := since.Add(waypointGrace).Sub(s.now()); left > 0 {
		return left, nil
	}
	uid := c.gateway.GetUID()
	if err := s.Client.Delete(ctx, c.gateway, client.Preconditions{UID: &uid}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return 0, fmt.Errorf("deleting the waypoint of namespace %s: %w", c.Namespace.Name, err)
	}
	return 0, nil
}

// annotateWaypoint sets AnnotationUnusedSince on the operator's waypoint, or takes it off (nil).
func (s *Stage) annotateWaypoint(ctx context.Context, gw *unstructured.Unstructured, since any) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{AnnotationUnusedSince: since}}})
	if err != nil {
		return err
	}
	target := &unstructured.Unstructured{}
	target.SetGroupVersionKind(waypoint.GVK)
	target.SetNamespace(gw.GetNamespace())
	target.SetName(gw.GetName())
	if err := s.Client.Patch(ctx, target, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(s.FieldManager)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("marking the waypoint of namespace %s: %w", gw.GetNamespace(), err)
	}
	return nil
}

// dropsWaypointLabel tells whether the namespace's write takes istio.io/use-waypoint off: it
// sends traffic to the waypoint in the namespace and the effects no longer want it, and the
// label is the operator's to take: its Gateway backs it, or the operator set it (its field
// manager owns it, as the API server says: the cache keeps no managed fields). A label someone
// else set, naming no Gateway of the operator's, is theirs.
func (s *Stage) dropsWaypointLabel(ctx context.Context, c *NamespacePlan, e ladder.Effects) (bool, error) {
	if !c.Waypoint.Labelled || e.UseWaypoint {
		return false, nil
	}
	if c.gateway != nil {
		return true, nil
	}
	var ns corev1.Namespace
	if err := s.api().Get(ctx, client.ObjectKey{Name: c.Namespace.Name}, &ns); err != nil {
		return false, fmt.Errorf("reading namespace %s: %w", c.Namespace.Name, err)
	}
	return ownsField(ns.ManagedFields, NamespaceFieldManager, fieldpath.MakePathOrDie("metadata", "labels", waypoint.UseLabel)), nil
}

// ownsField tells whether manager owns path in an object's managed fields (by apply or update).
func ownsField(managed []metav1.ManagedFieldsEntry, manager string, path fieldpath.Path) bool {
	for _, m := range managed {
		if m.Manager != manager || m.FieldsV1 == nil {
			continue
		}
		set := &fieldpath.Set{}
		if err := set.FromJSON(m.FieldsV1.GetRawReader()); err == nil && set.Has(path) {
			return true
		}
	}
	return false
}

// api reads what must be fresh: the API server, or Reader in tests that give no API.
func (s *Stage) api() client.Reader {
	if s.API != nil {
		return s.API
	}
	return s.Reader
}

// removeWaypoints takes the installation's waypoints away on its removal: the label that sends a
// namespace's traffic to one first (whoever set it), then the Gateways.
func (s *Stage) removeWaypoints(ctx context.Context, mesh *meshv1.MeshInstallation, namespaces []corev1.Namespace) error {
	read, err := s.planner().waypoints(ctx)
	if err != nil || read.unavailable != "" {
		return err
	}
	for ns, gw := range read.byNamespace {
		if !ours(gw, mesh) {
			continue
		}
		i := slices.IndexFunc(namespaces, func(n corev1.Namespace) bool { return n.Name == ns })
		if i >= 0 && usesWaypoint(namespaces[i].Labels, ns) {
			if err := dropLabels(ctx, s.Client, ns, map[string]bool{waypoint.UseLabel: true}); err != nil && !apierrors.IsNotFound(err) {
				return err
			}
		}
		if err := s.Client.Delete(ctx, gw); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting the waypoint of namespace %s: %w", ns, err)
		}
	}
	return nil
}
