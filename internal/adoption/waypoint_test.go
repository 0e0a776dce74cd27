package adoption

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/ambient"
	"github.com/meshwright/meshwright/internal/gatewayapi"
	"github.com/meshwright/meshwright/internal/installed"
	"github.com/meshwright/meshwright/internal/render"
	"github.com/meshwright/meshwright/internal/stages"
	"github.com/meshwright/meshwright/internal/waypoint"
)

// installGatewayCRD installs the Gateway API's Gateway CRD, as ambient mode's control plane
// does, and waits for it to be Established.
func installGatewayCRD(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	crds, err := render.Decode(gatewayapi.StandardCRDs)
	if err != nil {
		t.Fatal(err)
	}
	for _, crd := range crds {
		if crd.GetName() == gatewayCRD {
			if err := k8s.Create(ctx, crd); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		crd := &unstructured.Unstructured{}
		crd.SetAPIVersion("apiextensions.k8s.io/v1")
		crd.SetKind("CustomResourceDefinition")
		err := k8s.Get(ctx, client.ObjectKey{Name: gatewayCRD}, crd)
		return err == nil && installed.ConditionTrue(crd, "Established"), nil
	}); err != nil {
		t.Fatalf("the Gateway CRD was not Established: %v", err)
	}
}

// gatewayIn reads the operator's waypoint in a namespace; nil when there is none.
func gatewayIn(t *testing.T, namespace string) *unstructured.Unstructured {
	t.Helper()
	gw := &unstructured.Unstructured{}
	gw.SetGroupVersionKind(waypoint.GVK)
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: waypoint.Name}, gw); err != nil {
		if client.IgnoreNotFound(err) != nil {
			t.Fatal(err)
		}
		return nil
	}
	return gw
}

// programWaypoint plays istiod: the Gateway is Programmed for its generation.
func programWaypoint(t *testing.T, namespace string) {
	t.Helper()
	gw := gatewayIn(t, namespace)
	gw.Object["status"] = map[string]any{"conditions": []any{map[string]any{"type": "Programmed", "status": "True", "reason": "Programmed",
		"message": "deployed", "observedGeneration": gw.GetGeneration(), "lastTransitionTime": "2026-12-07T10:00:00Z"}}}
	if err := k8s.Status().Update(context.Background(), gw); err != nil {
		t.Fatal(err)
	}
}

// TestWaypointAgainstTheAPIServer: a namespace whose rule asks for a waypoint, in ambient mode,
// gets the Gateway first and steps into ambient mode only once it is Programmed, with
// istio.io/use-waypoint; held with WaitingForWaypoint meanwhile, and while the Gateway API is not
// installed. Asked no longer, the label goes first and the Gateway a pass later; the
// installation's removal deletes the Gateway.
func TestWaypointAgainstTheAPIServer(t *testing.T) {
	ctx := context.Background()
	const name = "team-waypoint"
	teamNamespace(t, name)
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), getNS(t, name)) })
	// A label of its own: the other tests' namespaces stay (Terminating) with theirs.
	ns := getNS(t, name)
	ns.Labels["waypoint-test"] = "on"
	if err := k8s.Update(ctx, ns); err != nil {
		t.Fatal(err)
	}
	mesh := meshFor("ladder-waypoint")
	mesh.Spec.DataPlane.Mode = meshv1.DataPlaneAmbient
	mesh.Spec.Namespaces[0].Selector.MatchLabels = map[string]string{"waypoint-test": "on"}
	mesh.Spec.Rollout.MaxNamespacesInProgress = 100 // the other tests' namespaces may hold steps
	mesh.Spec.Namespaces[0].Waypoint = true
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	held := func(res stages.Result, want string) {
		t.Helper()
		if len(res.Namespaces.Blocked) != 1 || res.Namespaces.Blocked[0].Reason != meshv1.ReasonWaitingForWaypoint || !strings.Contains(res.Namespaces.Blocked[0].Message, want) {
			t.Fatalf("%+v: want held by WaitingForWaypoint, saying %q", res.Namespaces, want)
		}
		if ns := getNS(t, name); ns.Labels[ambient.Label] != "" || ns.Labels[waypoint.UseLabel] != "" {
			t.Fatalf("labels %v while the waypoint does not serve: want neither the ambient label nor %s", ns.Labels, waypoint.UseLabel)
		}
	}
	labels := func() map[string]string { t.Helper(); return getNS(t, name).Labels }

	held(reconcileAt(t, mesh, now), "the Gateway API's CRDs are not installed")
	installGatewayCRD(t)
	held(reconcileAt(t, mesh, now), "waits until Gateway "+name+"/waypoint (class istio-waypoint) is Programmed")
	if gw := gatewayIn(t, name); gw == nil || gw.GetLabels()[meshv1.LabelInstallation] != mesh.Name {
		t.Fatalf("the waypoint Gateway: %v; want it created, the installation's", gw)
	}

	programWaypoint(t, name)
	reconcileAt(t, mesh, now)
	if l := labels(); l[ambient.Label] != ambient.Enabled || l[waypoint.UseLabel] != waypoint.Name {
		t.Fatalf("labels %v once the waypoint serves: want the ambient label and %s=%s", l, waypoint.UseLabel, waypoint.Name)
	}

	// No longer asked for: the label goes first, the Gateway in the next pass.
	mesh.Spec.Namespaces[0].Waypoint = false
	reconcileAt(t, mesh, now.Add(time.Minute))
	if l := labels(); l[waypoint.UseLabel] != "" || gatewayIn(t, name) == nil {
		t.Fatalf("waypoint set back to false: labels %v, Gateway %v; want the label off and the Gateway kept for now", l, gatewayIn(t, name) != nil)
	}
	reconcileAt(t, mesh, now.Add(2*time.Minute))
	if gatewayIn(t, name) != nil {
		t.Fatal("the waypoint was not removed once the label was off")
	}

	// Asked for again by a namespace already in ambient mode: the label once it serves.
	mesh.Spec.Namespaces[0].Waypoint = true
	reconcileAt(t, mesh, now.Add(3*time.Minute))
	if l := labels(); l[waypoint.UseLabel] != "" || gatewayIn(t, name) == nil {
		t.Fatalf("asked for again: labels %v, Gateway %v; want the Gateway and no label until it is Programmed", l, gatewayIn(t, name) != nil)
	}
	programWaypoint(t, name)
	reconcileAt(t, mesh, now.Add(4*time.Minute))
	if l := labels(); l[waypoint.UseLabel] != waypoint.Name || l[ambient.Label] != ambient.Enabled {
		t.Fatalf("asked for again, Programmed: labels %v", l)
	}

	if done, err := newStage(k8s, now).Cleanup(ctx, mesh); err != nil || !done {
		t.Fatalf("Cleanup = %v, %v", done, err)
	}
	if l := labels(); l[waypoint.UseLabel] != "" || gatewayIn(t, name) != nil {
		t.Fatalf("after the installation's removal: labels %v, Gateway %v; want both gone", l, gatewayIn(t, name) != nil)
	}
}
