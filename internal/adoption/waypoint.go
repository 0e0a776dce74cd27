package adoption

import (
	"context"
	"fmt"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/gatewayapi"
	"github.com/meshwright/meshwright/internal/installed"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/waypoint"
)

// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=gateways,verbs=get;list;watch;create;update;patch;delete

// gatewayCRD is the name of the Gateway API's Gateway CRD.
const gatewayCRD = "gateways." + gatewayapi.Group

// waypoints reads the installation's waypoint Gateways, by namespace, when the Gateway API is
// served; unavailable says why none can be read or created otherwise. The CRD is looked at
// first (in the operator's cache, which holds every CRD), so that a cluster without the Gateway
// API costs no request for a kind the API server does not serve.
func (p Planner) waypoints(ctx context.Context, mesh *meshv1.MeshInstallation) (map[string]*unstructured.Unstructured, string, error) {
	crd := &unstructured.Unstructured{}
	crd.SetGroupVersionKind(apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinition"))
	if err := p.Policies.Get(ctx, client.ObjectKey{Name: gatewayCRD}, crd); apierrors.IsNotFound(err) {
		return nil, "the Gateway API's CRDs are not installed (no " + gatewayCRD + ")", nil
	} else if err != nil {
		return nil, "", fmt.Errorf("reading the CRD %s: %w", gatewayCRD, err)
	}
	if !installed.ConditionTrue(crd, "Established") {
		return nil, "the CRD " + gatewayCRD + " is not Established yet", nil
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(waypoint.GVK.GroupVersion().WithKind(waypoint.GVK.Kind + "List"))
	if err := p.Policies.List(ctx, list, client.MatchingLabels{meshv1.LabelInstallation: mesh.Name}); err != nil {
		return nil, "", fmt.Errorf("listing the waypoints' Gateways: %w", err)
	}
	out := map[string]*unstructured.Unstructured{}
	for i := range list.Items {
		if gw := &list.Items[i]; gw.GetName() == waypoint.Name {
			out[gw.GetNamespace()] = gw
		}
	}
	return out, "", nil
}

// waypointOf is what the ladder reads of a namespace's waypoint: wanted when its rule asks for
// one and the spec puts it, enrolled, in ambient mode; labelled when istio.io/use-waypoint names
// the operator's Gateway (one of someone else's by that name is theirs).
func waypointOf(c *NamespacePlan, gw *unstructured.Unstructured, unavailable string) ladder.Waypoint {
	return ladder.Waypoint{
		Wanted:      c.Enrollment.Waypoint && c.Enrollment.Ambient && c.Enrollment.Target != meshv1.LevelOff,
		Programmed:  waypoint.Programmed(gw),
		Labelled:    gw != nil && c.Namespace.Labels[waypoint.UseLabel] == waypoint.Name,
		Unavailable: unavailable,
	}
}

// applyWaypoint makes the namespace's waypoint Gateway what the operator wants, before the
// namespace is written: its label may only come once the Gateway exists.
func (s *Stage) applyWaypoint(ctx context.Context, mesh *meshv1.MeshInstallation, c *NamespacePlan, e ladder.Effects) error {
	if !e.Waypoint || c.Waypoint.Unavailable != "" {
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

// removeWaypoint deletes a waypoint no longer wanted, after the namespace is written: the
// effects keep it while the namespace still carries istio.io/use-waypoint.
func (s *Stage) removeWaypoint(ctx context.Context, c *NamespacePlan, e ladder.Effects) error {
	if e.Waypoint || c.gateway == nil || c.gateway.GetDeletionTimestamp() != nil {
		return nil
	}
	if err := s.Client.Delete(ctx, c.gateway); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting the waypoint of namespace %s: %w", c.Namespace.Name, err)
	}
	return nil
}

// removeWaypoints deletes every waypoint of the installation, on its removal (after the
// namespaces' labels are off).
func (s *Stage) removeWaypoints(ctx context.Context, mesh *meshv1.MeshInstallation) error {
	gateways, _, err := s.planner().waypoints(ctx, mesh)
	if err != nil {
		return err
	}
	for _, gw := range gateways {
		if err := s.Client.Delete(ctx, gw); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting the waypoint of namespace %s: %w", gw.GetNamespace(), err)
		}
	}
	return nil
}
