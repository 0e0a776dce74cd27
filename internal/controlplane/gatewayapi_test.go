package controlplane

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/apply"
	"github.com/meshwright/meshwright/internal/gatewayapi"
	"github.com/meshwright/meshwright/internal/installed"
	"github.com/meshwright/meshwright/internal/render"
	"github.com/meshwright/meshwright/internal/stages"
)

// gatewayAPICRDsIn are the Gateway API's CRDs in the API server, by name.
func gatewayAPICRDsIn(t *testing.T) map[string]*unstructured.Unstructured {
	t.Helper()
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(crdGVK.GroupVersion().WithKind(crdGVK.Kind + "List"))
	if err := k8s.List(context.Background(), list); err != nil {
		t.Fatal(err)
	}
	out := map[string]*unstructured.Unstructured{}
	for i := range list.Items {
		if gatewayapi.IsCRD(list.Items[i].GetName()) {
			out[list.Items[i].GetName()] = &list.Items[i]
		}
	}
	return out
}

// removeGatewayAPI deletes the Gateway API's CRDs and waits until they are gone.
func removeGatewayAPI(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for _, crd := range gatewayAPICRDsIn(t) {
		if err := k8s.Delete(ctx, crd); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return len(gatewayAPICRDsIn(t)) == 0, nil
	}); err != nil {
		t.Fatalf("the Gateway API's CRDs were not removed: %v", err)
	}
}

// labelAll gives every Gateway API CRD to an installation (its label), as docs/ambient.md tells.
func labelAll(t *testing.T, installation string) {
	t.Helper()
	patch := []byte(`{"metadata":{"labels":{"` + meshv1.LabelInstallation + `":"` + installation + `"}}}`)
	for _, crd := range gatewayAPICRDsIn(t) {
		if err := k8s.Patch(context.Background(), crd, client.RawPatch(types.MergePatchType, patch)); err != nil {
			t.Fatal(err)
		}
	}
}

// ambientReady runs the stage until it is Ready, playing the node agents' DaemonSets Ready.
func ambientReady(t *testing.T, stage *Stage, mesh *meshv1.MeshInstallation, ns string) stages.Result {
	t.Helper()
	for range 10 {
		res := untilSettled(t, stage, mesh, ns)
		switch res.Reason {
		case meshv1.ReasonWaitingForCNI:
			markDaemonSetReady(t, 1)
		case meshv1.ReasonWaitingForZtunnel:
			markNodeAgentReady(t, render.ZTunnelDaemonSet, 1)
		default:
			if res.State != stages.Ready {
				t.Fatalf("ambient mode: %+v, want Ready", res)
			}
			return res
		}
	}
	t.Fatal("the stage never became Ready in ambient mode")
	return stages.Result{}
}

// TestGatewayAPICRDs: in ambient mode the stage installs the Gateway API's standard-channel
// CRDs when the cluster has none, as the installation's, and is Ready once they are Established;
// removing the installation keeps them, released, unless removeCRDsOnDelete (and then only if
// all are still its own). CRDs someone else installed, or replaced with a newer release, are
// left as they are: not written, and not deleted even with removeCRDsOnDelete.
func TestGatewayAPICRDs(t *testing.T) {
	const ns = "istio-gateway-api"
	removeGatewayAPI(t) // another test of the package may have left them, released
	want, err := render.Decode(gatewayapi.StandardCRDs)
	if err != nil {
		t.Fatal(err)
	}
	stage := &Stage{Client: k8s, Reader: k8s, Workloads: k8s, Applier: &apply.Applier{Client: k8s, FieldManager: "meshwright"}}
	ambientMesh := func(name string, removeCRDs bool) *meshv1.MeshInstallation {
		mesh := meshIn(t, name, ns)
		mesh.Spec.DataPlane.Mode = meshv1.DataPlaneAmbient
		mesh.Spec.ControlPlane.RemoveCRDsOnDelete = removeCRDs
		return mesh
	}

	mesh := ambientMesh("gateway-api", false)
	res := ambientReady(t, stage, mesh, ns)
	crds := gatewayAPICRDsIn(t)
	if len(crds) != len(want) || !strings.Contains(res.Message, "Gateway API CRDs v1.6.3 (standard channel) installed for waypoints") {
		t.Fatalf("ambient mode installed %d Gateway API CRDs (%v), want %d; message %q", len(crds), slices.Sorted(maps.Keys(crds)), len(want), res.Message)
	}
	for name, crd := range crds {
		if crd.GetLabels()[meshv1.LabelInstallation] != mesh.Name || !installed.ConditionTrue(crd, "Established") {
			t.Errorf("%s: labels %v, Established %v; want the installation's, Established", name, crd.GetLabels(), installed.ConditionTrue(crd, "Established"))
		}
	}
	// Overwritten with a newer release (kubectl apply keeps the operator's labels): left alone.
	setRelease := func(release string) {
		t.Helper()
		patch := []byte(`{"metadata":{"annotations":{"` + gatewayapi.BundleVersionAnnotation + `":"` + release + `"}}}`)
		if err := k8s.Patch(context.Background(), crds["httproutes."+gatewayapi.Group], client.RawPatch(types.MergePatchType, patch)); err != nil {
			t.Fatal(err)
		}
	}
	setRelease("v1.99.0")
	res = ambientReady(t, stage, mesh, ns)
	if got := gatewayAPICRDsIn(t)["httproutes."+gatewayapi.Group].GetAnnotations()[gatewayapi.BundleVersionAnnotation]; got != "v1.99.0" ||
		!strings.Contains(res.Message, "installed by someone else (release v1.99.0)") {
		t.Fatalf("a newer release over the operator's: release now %q, message %q; want it left alone", got, res.Message)
	}
	setRelease("v1.6.3")
	cleanUp(t, stage, mesh)
	if crds = gatewayAPICRDsIn(t); len(crds) != len(want) {
		t.Fatalf("%d Gateway API CRDs after the installation's removal, want all %d kept", len(crds), len(want))
	}
	versions := map[string]string{}
	for name, crd := range crds {
		if _, ok := crd.GetLabels()[meshv1.LabelInstallation]; ok {
			t.Errorf("%s kept with the installation's label: %v", name, crd.GetLabels())
		}
		versions[name] = crd.GetResourceVersion()
	}

	// Now they are someone else's: another installation leaves them as they are.
	mesh = ambientMesh("gateway-api-2", false)
	res = ambientReady(t, stage, mesh, ns)
	if !strings.Contains(res.Message, "The Gateway API CRDs in the cluster were installed by someone else (release v1.6.3) and are left as they are") {
		t.Errorf("with someone else's Gateway API: message %q", res.Message)
	}
	cleanUp(t, stage, mesh)
	for name, crd := range gatewayAPICRDsIn(t) {
		if crd.GetResourceVersion() != versions[name] {
			t.Errorf("%s, someone else's, was written (resourceVersion %s, was %s)", name, crd.GetResourceVersion(), versions[name])
		}
	}

	// Given to an installation (its label on every one, as docs/ambient.md says), then one
	// handed over to someone else (the label taken off): under removeCRDsOnDelete the
	// installation's removal releases them all rather than deleting any.
	mesh = ambientMesh("gateway-api-3", true)
	labelAll(t, mesh.Name)
	ambientReady(t, stage, mesh, ns)
	handOver := []byte(`{"metadata":{"labels":{"` + meshv1.LabelInstallation + `":null}}}`)
	if err := k8s.Patch(context.Background(), gatewayAPICRDsIn(t)["grpcroutes."+gatewayapi.Group], client.RawPatch(types.MergePatchType, handOver)); err != nil {
		t.Fatal(err)
	}
	cleanUp(t, stage, mesh)
	for name, crd := range gatewayAPICRDsIn(t) {
		if _, ok := crd.GetLabels()[meshv1.LabelInstallation]; ok || crd.GetDeletionTimestamp() != nil {
			t.Errorf("%s after removing an installation whose Gateway API was partly someone else's: labels %v, deleted %v; want it kept, released",
				name, crd.GetLabels(), crd.GetDeletionTimestamp())
		}
	}
	if n := len(gatewayAPICRDsIn(t)); n != len(want) {
		t.Fatalf("%d Gateway API CRDs left, want all %d", n, len(want))
	}

	// All the operator's: removed with the installation under removeCRDsOnDelete.
	mesh = ambientMesh("gateway-api-4", true)
	labelAll(t, mesh.Name)
	ambientReady(t, stage, mesh, ns)
	cleanUp(t, stage, mesh)
	// The API server takes its time removing CRDs (its finalizer backs off): Cleanup touches the
	// stuck ones, as the operator's passes would.
	if err := wait.PollUntilContextTimeout(context.Background(), time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := stage.Cleanup(ctx, mesh)
		return len(gatewayAPICRDsIn(t)) == 0, err
	}); err != nil {
		t.Fatalf("removeCRDsOnDelete: the operator's Gateway API CRDs were not removed: %v", slices.Sorted(maps.Keys(gatewayAPICRDsIn(t))))
	}
}

// TestOfGateway: what istiod made for a Gateway (owned by it) is never the chart's to prune, even
// with the operator's labels on it; objects owned by other kinds or groups are.
func TestOfGateway(t *testing.T) {
	tests := map[string]struct {
		owners []metav1.OwnerReference
		want   bool
	}{
		"no owner":            {},
		"a waypoint's":        {owners: []metav1.OwnerReference{{APIVersion: "gateway.networking.k8s.io/v1", Kind: "Gateway", Name: "waypoint"}}, want: true},
		"a v1beta1 Gateway's": {owners: []metav1.OwnerReference{{APIVersion: "gateway.networking.k8s.io/v1beta1", Kind: "Gateway", Name: "waypoint"}}, want: true},
		"another group's":     {owners: []metav1.OwnerReference{{APIVersion: "networking.istio.io/v1", Kind: "Gateway", Name: "ingress"}}},
		"a ReplicaSet's":      {owners: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "istiod-5c"}}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			o := &unstructured.Unstructured{Object: map[string]any{}}
			o.SetOwnerReferences(tt.owners)
			if got := ofGateway(o); got != tt.want {
				t.Errorf("ofGateway = %v, want %v", got, tt.want)
			}
		})
	}
}
