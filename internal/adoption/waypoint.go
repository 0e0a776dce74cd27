package adoption

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
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
	"github.com/meshwright/meshwright/internal/apply"
	"github.com/meshwright/meshwright/internal/gatewayapi"
	"github.com/meshwright/meshwright/internal/installed"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/policy"
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

// readWaypoints reads the operator's Gateways named waypoint (Planner.Gateways), and adds the
// namespaces holding them to withObjects: they are looked at, and their waypoint removed, even
// once nothing else makes them candidates.
func (p Planner) readWaypoints(ctx context.Context, mesh *meshv1.MeshInstallation, withObjects map[string]bool) (waypointGateways, error) {
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
	if why := gatewayapi.WaypointsUnsupported(gatewayCRD, installed.ConditionTrue(u, "Established"), installed.ServedVersions(u), u.GetAnnotations()[gatewayapi.BundleVersionAnnotation]); why != "" {
		return waypointGateways{unavailable: why}, nil
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(waypoint.GVK.GroupVersion().WithKind(waypoint.GVK.Kind + "List"))
	gateways := p.Gateways
	if gateways == nil {
		gateways = p.Policies
	}
	// The first List of a cache waits for its informer to sync: bounded, so that a list or
	// watch that keeps failing (a role without them) fails the pass rather than hangs it.
	listCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := gateways.List(listCtx, list, client.MatchingLabels{meshv1.LabelManagedBy: meshv1.ManagedByValue}); p.AsUser && apierrors.IsForbidden(err) {
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

// setWaypoint gives a namespace's plan what the ladder reads of its waypoint: wanted as
// wantsWaypoint says; labelled when its traffic goes to the Gateway named waypoint in it. A
// Gateway by that name that is not the operator's, or a label sending the traffic to another
// waypoint, is a conflict. Only the operator's own Gateways are listed: where one is wanted, or the label names
// one, and none of the operator's is there, the API server is asked whether someone else's is.
func (p Planner) setWaypoint(ctx context.Context, c *NamespacePlan, mesh *meshv1.MeshInstallation, read waypointGateways) error {
	l, name := c.Namespace.Labels, c.Namespace.Name
	c.gateway, c.gatewaysRead = nil, read.byNamespace != nil
	c.Waypoint = ladder.Waypoint{
		Wanted:      wantsWaypoint(c),
		Labelled:    usesWaypoint(l, name),
		Unavailable: read.unavailable,
		Unread:      read.unread,
	}
	gw := read.byNamespace[name]
	if gw == nil && (c.Waypoint.Wanted || c.Waypoint.Labelled) && c.gatewaysRead {
		var err error
		if gw, err = p.gatewayNamed(ctx, name); err != nil {
			return err
		}
	}
	switch {
	case gw != nil && ours(gw, mesh):
		c.gateway = gw
		c.Waypoint.Programmed, c.Waypoint.Updating = waypoint.Programmed(gw), waypoint.Updating(gw)
	case gw != nil:
		c.Waypoint.Conflict = fmt.Sprintf("Gateway %s/%s is not the operator's (it lacks %s=%s)", gw.GetNamespace(), gw.GetName(), meshv1.LabelInstallation, mesh.Name)
	}
	if to := l[waypoint.UseLabel]; c.Waypoint.Wanted && to != "" && !c.Waypoint.Labelled {
		c.Waypoint.Conflict = fmt.Sprintf("its label %s=%s (%s=%q) sends its traffic to another waypoint", waypoint.UseLabel, to, waypoint.NamespaceLabel, l[waypoint.NamespaceLabel])
	}
	return nil
}

// wantsWaypoint tells whether a namespace is to have its waypoint: its rule asks for one and it
// is enrolled to be in ambient mode, or, on its way out, the ladder still has it in ambient mode
// (in the mesh or stepping, the ambient label on). An ambient label someone else put on a
// namespace the ladder has at Off asks for nothing.
func wantsWaypoint(c *NamespacePlan) bool {
	e := c.Enrollment
	leaving := c.Namespace.Labels[ambient.Label] == ambient.Enabled && (ladder.InMesh(c.Current) || c.State.Step != nil)
	return e.Waypoint && (e.Ambient && e.Target != meshv1.LevelOff || leaving)
}

// gatewayNamed reads the namespace's Gateway named waypoint from the API server, whoever's it
// is; nil when there is none.
func (p Planner) gatewayNamed(ctx context.Context, namespace string) (*unstructured.Unstructured, error) {
	api := p.API
	if api == nil {
		api = p.Policies
	}
	gw := &unstructured.Unstructured{}
	gw.SetGroupVersionKind(waypoint.GVK)
	if err := api.Get(ctx, client.ObjectKey{Namespace: namespace, Name: waypoint.Name}, gw); apierrors.IsNotFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("reading Gateway %s/%s: %w", namespace, waypoint.Name, err)
	}
	return gw, nil
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
	// Stamped as the Applier does, also when created: the next pass then finds nothing to write.
	apply.StampHash(gw)
	if c.gateway == nil {
		if err := s.Client.Create(ctx, gw, client.FieldOwner(s.FieldManager)); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating the waypoint of namespace %s: %w", c.Namespace.Name, err)
		}
		return nil
	}
	// Compared with the pass's copy (from the Gateways' cache): the Applier would read it
	// through the manager's cache, which would then hold every Gateway of the cluster.
	if apply.Difference(c.gateway.Object, gw.Object) == "" {
		return nil
	}
	if err := s.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(gw), client.FieldOwner(s.FieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("applying the waypoint of namespace %s: %w", c.Namespace.Name, err)
	}
	return nil
}

// putWaypointLabel sends the namespace's traffic through the operator's waypoint, before the
// namespace's other labels are written (istio.io/use-waypoint does nothing until the ambient
// label is on: the namespace's traffic meets the waypoint from its first moment in ambient
// mode), and ZeroTrust's policies attached to the waypoint before it. The label is written by
// merge patch, never by the namespace's apply: a label someone else set is then never owned by
// the operator, so never taken off by it (takeWaypointLabel).
func (s *Stage) putWaypointLabel(ctx context.Context, mesh *meshv1.MeshInstallation, c *NamespacePlan, e ladder.Effects) error {
	if !e.UseWaypoint || c.Waypoint.Labelled || c.gateway == nil {
		return nil
	}
	for _, p := range policy.AtWaypoint(mesh.Name, c.Namespace.Name, c.Enrollment.AllowFrom, e) {
		if _, err := s.Applier.Apply(ctx, p); err != nil {
			return fmt.Errorf("applying %s/%s before the namespace's traffic goes through its waypoint: %w", c.Namespace.Name, p.GetName(), err)
		}
	}
	// Over the version the decision was taken on: a stale cache is a conflict, taken again.
	rv, err := patchLabels(ctx, s.Client, c.Namespace.Name, c.Namespace.ResourceVersion, map[string]any{waypoint.UseLabel: waypoint.Name})
	c.patchedAt = rv
	return err
}

// takeWaypointLabel takes istio.io/use-waypoint off once the effects no longer want it, when it
// is the operator's to take (dropsWaypointLabel): before the waypoint goes, since traffic sent to
// a deleted waypoint is lost.
func (s *Stage) takeWaypointLabel(ctx context.Context, c *NamespacePlan, e ladder.Effects) error {
	drop, err := s.dropsWaypointLabel(ctx, c, e)
	if err != nil || !drop {
		return err
	}
	return unlabelWaypoint(ctx, s.Client, c.Namespace.Name)
}

// unlabelWaypoint takes istio.io/use-waypoint off a namespace only while it still names the
// waypoint in it (a JSON patch that tests the value first): one set meanwhile to another
// waypoint is someone else's, and stays. The resourceVersion cannot guard it: the namespace's
// apply of the same pass has just changed it.
func unlabelWaypoint(ctx context.Context, c client.Client, namespace string) error {
	path := "/metadata/labels/" + strings.ReplaceAll(waypoint.UseLabel, "/", "~1")
	patch, err := json.Marshal([]map[string]any{{"op": "test", "path": path, "value": waypoint.Name}, {"op": "remove", "path": path}})
	if err != nil {
		return err
	}
	err = c.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, client.RawPatch(types.JSONPatchType, patch), client.FieldOwner(NamespaceFieldManager))
	switch {
	case apierrors.IsInvalid(err), apierrors.IsNotFound(err):
		return nil // the label no longer names the waypoint, or the namespace is gone
	case err != nil:
		return fmt.Errorf("taking %s off namespace %s: %w", waypoint.UseLabel, namespace, err)
	}
	return nil
}

// retireWaypoint deletes a waypoint no longer wanted, after the namespace is written: only once
// the API server (not the cache, which may be behind) shows that the namespace's label no longer
// sends traffic to it, and waypointGrace after that was first seen (AnnotationUnusedSince; taken
// off again whenever the waypoint is kept or its label seen). It returns how long until it looks
// again.
func (s *Stage) retireWaypoint(ctx context.Context, c *NamespacePlan, e ladder.Effects) (time.Duration, error) {
	if c.gateway == nil || c.gateway.GetDeletionTimestamp() != nil {
		return 0, nil
	}
	since, marked := c.gateway.GetAnnotations()[AnnotationUnusedSince]
	if e.Waypoint {
		return 0, s.unmark(ctx, c.gateway, marked)
	}
	var ns corev1.Namespace
	if err := s.api().Get(ctx, client.ObjectKey{Name: c.Namespace.Name}, &ns); err != nil {
		return 0, fmt.Errorf("reading namespace %s before deleting its waypoint: %w", c.Namespace.Name, err)
	}
	if usesWaypoint(ns.Labels, ns.Name) {
		return 0, s.unmark(ctx, c.gateway, marked)
	}
	at, err := time.Parse(time.RFC3339, since)
	if err != nil {
		return waypointGrace, s.annotateWaypoint(ctx, c.gateway, s.now().UTC().Format(time.RFC3339))
	}
	if left := at.Add(waypointGrace).Sub(s.now()); left > 0 {
		return left, nil
	}
	uid := c.gateway.GetUID()
	if err := s.Client.Delete(ctx, c.gateway, client.Preconditions{UID: &uid}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return 0, fmt.Errorf("deleting the waypoint of namespace %s: %w", c.Namespace.Name, err)
	}
	return 0, nil
}

// unmark takes AnnotationUnusedSince off a waypoint in use again, when it carries it.
func (s *Stage) unmark(ctx context.Context, gw *unstructured.Unstructured, marked bool) error {
	if !marked {
		return nil
	}
	return s.annotateWaypoint(ctx, gw, nil)
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

// removeWaypoints takes the installation's waypoints away on its removal, at once (the mesh is
// going): the label that sends a namespace's traffic to one first (whoever set it, as the API
// server shows it), then the Gateways.
func (s *Stage) removeWaypoints(ctx context.Context, mesh *meshv1.MeshInstallation) error {
	read, err := s.planner().waypoints(ctx)
	if err != nil || read.unavailable != "" {
		return err
	}
	for name, gw := range read.byNamespace {
		if !ours(gw, mesh) {
			continue
		}
		var ns corev1.Namespace
		if err := s.api().Get(ctx, client.ObjectKey{Name: name}, &ns); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("reading namespace %s before deleting its waypoint: %w", name, err)
		}
		if usesWaypoint(ns.Labels, name) {
			if err := unlabelWaypoint(ctx, s.Client, name); err != nil {
				return err
			}
		}
		if err := s.Client.Delete(ctx, gw); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting the waypoint of namespace %s: %w", name, err)
		}
	}
	return nil
}
