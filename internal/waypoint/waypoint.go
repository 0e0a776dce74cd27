// Package waypoint is the desired state of a namespace's waypoint in ambient mode: the L7 proxy
// that ztunnel sends the namespace's inbound traffic through once the namespace carries
// istio.io/use-waypoint, so that L7 policy (paths, methods, headers) can be enforced. A
// waypoint is a Gateway API Gateway of class istio-waypoint, which istiod turns into a
// Deployment and a Service; the Gateway's Programmed condition says it serves. Istio's order is
// the waypoint first, the label after; removing it, the label first (the ladder's
// waypointEffects, the adoption stage's applyWaypoint and removeWaypoint).
package waypoint

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/render"
)

const (
	// Name is the name of the Gateway the operator creates in a namespace (istioctl's default).
	Name = "waypoint"
	// ClassName is Istio's GatewayClass for waypoints, which istiod creates.
	ClassName = "istio-waypoint"
	// UseLabel on a namespace sends its inbound traffic through the named waypoint.
	UseLabel = "istio.io/use-waypoint"
	// NamespaceLabel, beside UseLabel, names the namespace of the waypoint when it is another
	// one (a shared waypoint).
	NamespaceLabel = "istio.io/use-waypoint-namespace"
	// ForLabel on a waypoint says what traffic it takes: "service", Istio's default, for the
	// traffic addressed to the namespace's Services.
	ForLabel = "istio.io/waypoint-for"
	// Port is HBONE's port, on which ztunnel reaches the waypoint.
	Port = 15008
	// Component is the operator's component label on the Gateways it creates.
	Component = "waypoint"
	// LabelWaypointOf names, on what istiod deploys for a waypoint, the installation whose it is.
	LabelWaypointOf = "meshwright.io/waypoint-of"
)

// GVK is the Gateway's kind.
var GVK = schema.GroupVersionKind{Group: gatewayv1.GroupName, Version: "v1", Kind: "Gateway"}

// Gateway is the waypoint the operator wants in a namespace of an installation: one listener,
// HBONE on port 15008, as `istioctl waypoint generate` writes it, and the operator's labels.
func Gateway(installation, namespace string) (*unstructured.Unstructured, error) {
	same := gatewayv1.NamespacesFromSame
	gw := &gatewayv1.Gateway{
		TypeMeta: metav1.TypeMeta{APIVersion: GVK.GroupVersion().String(), Kind: GVK.Kind},
		ObjectMeta: metav1.ObjectMeta{Name: Name, Namespace: namespace, Labels: map[string]string{
			ForLabel: "service", meshv1.LabelManagedBy: meshv1.ManagedByValue, meshv1.LabelInstallation: installation,
			render.LabelComponent: Component,
		}},
		Spec: gatewayv1.GatewaySpec{
			GatewayClassName: ClassName,
			// What istiod copies onto the Deployment, Service and ServiceAccount it makes: without
			// it, the Gateway's own labels, and the operator's label would make those objects look
			// like its control plane's (which it prunes).
			Infrastructure: &gatewayv1.GatewayInfrastructure{Labels: map[gatewayv1.LabelKey]gatewayv1.LabelValue{
				LabelWaypointOf: gatewayv1.LabelValue(installation)}},
			Listeners: []gatewayv1.Listener{{Name: "mesh", Port: Port, Protocol: "HBONE",
				AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &same}}}},
		},
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(gw)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: obj}
	unstructured.RemoveNestedField(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	return u, nil
}

// Programmed tells whether a waypoint serves: its Programmed condition is True for its current
// generation (istiod sets it once the waypoint's Deployment and Service are in place).
func Programmed(gw *unstructured.Unstructured) bool {
	c := programmed(gw)
	return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == gw.GetGeneration()
}

// Updating tells a waypoint that was Programmed for an earlier generation and whose latest one
// istiod has not judged yet (after the operator changed the Gateway): it most likely still serves.
func Updating(gw *unstructured.Unstructured) bool {
	c := programmed(gw)
	return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration < gw.GetGeneration()
}

// programmed is the Gateway's Programmed condition; nil when it has none or is being deleted.
func programmed(gw *unstructured.Unstructured) *metav1.Condition {
	if gw == nil || gw.GetDeletionTimestamp() != nil {
		return nil
	}
	var status gatewayv1.GatewayStatus
	raw, found, err := unstructured.NestedMap(gw.Object, "status")
	if err != nil || !found || runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &status) != nil {
		return nil
	}
	return meta.FindStatusCondition(status.Conditions, string(gatewayv1.GatewayConditionProgrammed))
}
