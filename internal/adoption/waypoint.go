package adoption

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/ambient"
	"github.com/meshwright/meshwright/internal/gatewayapi"
	"github.com/meshwright/meshwright/internal/installed"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/waypoint"
)

// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=gateways,verbs=get;list;watch;create;update;patch;delete

// gatewayCRD is the name of the Gateway API's Gateway CRD.
const gatewayCRD = "gateways." + gatewayapi.Group

// waypointGateways is what a pass read of the Gateways named waypoint.
type waypointGateways struct {
	// byNamespace holds each namespace's Gateway named waypoint, whoever's it is.
	byNamespace map[string]*unstructured.Unstructured
	// unavailable says why no waypoint can be read or created (no Gateway API, or one too old).
	unavailable string
}

// needsWaypoints tells whether a namespace makes a pass read Gateways: its rule asks for a
// waypoint, it carries the label that sends its traffic to one, or it is in ambient mode (where
// a waypoint no longer asked for may still be there to delete). Otherwise none is read, so a mesh
// of sidecars keeps no cache of the cluster's Gateways.
func needsWaypoints(c NamespacePlan) bool {
	l := c.Namespace.Labels
	return c.Enrollment.Waypoint || l[waypoint.UseLabel] == waypoint.Name || l[ambient.Label] == ambient.Enabled
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
		return waypointGateways{unavailable: "your credentials may not read the CRD " + gatewayCRD + ", so the plugin cannot tell (the operator can)"}, nil
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
		return waypointGateways{unavailable: "your credentials may not list Gateways, so the plugin cannot tell (the operator can)"}, nil
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

// setWaypoint gives a namespace's plan what the ladder reads of its waypoint: wanted when its
// rule asks for one and the namespace, enrolled, is to be in ambient mode or still carries the
// ambient label; labelled when istio.io/use-waypoint names the waypoint's Gateway; a Gateway by
// that name that is not the operator's is a conflict, and never the plan's gateway.
func setWaypoint(c *NamespacePlan, mesh *meshv1.MeshInstallation, read waypointGateways) {
	e := c.Enrollment
	c.gateway = nil
	c.Waypoint = ladder.Waypoint{
		Wanted:      e.Waypoint && (e.Ambient && e.Target != meshv1.LevelOff || c.Namespace.Labels[ambient.Label] == ambient.Enabled),
		Labelled:    c.Namespace.Labels[waypoint.UseLabel] == waypoint.Name,
		Unavailable: read.unavailable,
	}
	if gw := read.byNamespace[c.Namespace.Name]; gw != nil && ours(gw, mesh) {
		c.gateway = gw
		c.Waypoint.Programmed = waypoint.Programmed(gw)
	} else if gw != nil {
		c.Waypoint.Conflict = fmt.Sprintf("Gateway %s/%s is not the operator's (it lacks %s=%s)", gw.GetNamespace(), gw.GetName(), meshv1.LabelInstallation, mesh.Name)
	}
}

// applyWaypoint makes the namespace's waypoint Gateway what the operator wants, before the
// namespace is written: its label may only come once the Gateway exists. A Gateway the effects
// keep only because the label still names it is not created again.
func (s *Stage) applyWaypoint(ctx context.Context, mesh *meshv1.MeshInstallation, c *NamespacePlan, e ladder.Effects) error {
	if w := c.Waypoint; !e.Waypoint || !w.Wanted || w.Unavailable != "" || w.Conflict != "" {
		return nil
	}
	gw, err := waypoint.Gateway(mesh.Name, c.Namespace.Name)
	if err != nil {
		return err
	}
	if _, err := s.Applier.Apply(ctx, gw); err != nil {
		return fmt.Errorf("applying the waypoint of namespace %s: %w", c.Namespace.Name, err)
	}
	return nil
}

// removeWaypoint deletes a waypoint no longer wanted, after the namespace is written, and only
// once the API server (not the cache, which may be behind) says the namespace no longer carries
// istio.io/use-waypoint: traffic sent to a deleted waypoint is lost.
func (s *Stage) removeWaypoint(ctx context.Context, c *NamespacePlan, e ladder.Effects) error {
	if e.Waypoint || c.gateway == nil || c.gateway.GetDeletionTimestamp() != nil {
		return nil
	}
	api := s.API
	if api == nil {
		api = s.Reader
	}
	var ns corev1.Namespace
	if err := api.Get(ctx, client.ObjectKey{Name: c.Namespace.Name}, &ns); err != nil {
		return fmt.Errorf("reading namespace %s before deleting its waypoint: %w", c.Namespace.Name, err)
	}
	if ns.Labels[waypoint.UseLabel] == waypoint.Name {
		return nil
	}
	uid := c.gateway.GetUID()
	if err := s.Client.Delete(ctx, c.gateway, client.Preconditions{UID: &uid}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting the waypoint of namespace %s: %w", c.Namespace.Name, err)
	}
	return nil
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
		if i >= 0 && namespaces[i].Labels[waypoint.UseLabel] == waypoint.Name {
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
