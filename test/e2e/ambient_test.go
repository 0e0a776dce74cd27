package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/policy"
	"github.com/meshwright/meshwright/internal/waypoint"
	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
)

// ztunnelNamespace is where the operator runs ztunnel, beside Istio CNI (render.CNINamespace).
const ztunnelNamespace = "istio-cni"

// TestAmbientFreshInstall: a fresh install with spec.dataPlane.mode Ambient installs ztunnel and
// Istio CNI in ambient mode, takes a namespace to ZeroTrust without restarting its pods (the same
// UIDs), labelled istio.io/dataplane-mode=ambient and never for injection, with STRICT and
// enforced AuthorizationPolicies; its step into the mesh waits until every pod is redirected to
// ztunnel; and Istio's real istiod, with ambient on, lists its workloads with the HBONE tunnel.
// Beside it, a namespace whose rule says Sidecar goes to MutualTLS the sidecar way at the same
// time (its pods restarted with the proxy, which istiod lists as ending HBONE themselves). Deleting
// the installation removes ztunnel and Istio CNI and hands both namespaces back.
// kwok runs no node agent, so the redirection is written by the named simulator of Istio CNI's
// node agent (test/ambientsim): what this shows is the orchestration and istiod's acceptance,
// not that ztunnel carries a packet.
func TestAmbientFreshInstall(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	ctx := context.Background()
	cl, c := framework.StartCluster(t, cluster.Options{})
	// istiod's ambient index lists only pods with an IP: a node from whose range kwok gives them one.
	if err := cl.AddNode(ctx, cluster.NodeOptions{Name: "kwok-ambient", CPU: "32", Memory: "64Gi", PodCIDR: "10.244.1.0/24", Labels: map[string]string{"pool": "ambient"}}); err != nil {
		t.Fatal(err)
	}
	onAmbientNode := func(d *appsv1.Deployment) { d.Spec.Template.Spec.NodeSelector = map[string]string{"pool": "ambient"} }
	// The waypoint's pod, which istiod deploys, needs an IP too (istiod programs a waypoint once
	// its Service has an endpoint): the other nodes are cordoned, so it lands there.
	var nodes corev1.NodeList
	if err := c.List(ctx, &nodes); err != nil {
		t.Fatal(err)
	}
	for i := range nodes.Items {
		if n := &nodes.Items[i]; n.Name != "kwok-ambient" {
			patch := client.MergeFrom(n.DeepCopy())
			n.Spec.Unschedulable = true
			if err := c.Patch(ctx, n, patch); err != nil {
				t.Fatal(err)
			}
		}
	}
	framework.MakeNamespace(t, c, "amb", map[string]string{"ladder": "zt"}, map[string]func(*appsv1.Deployment){"web": onAmbientNode, "api": onAmbientNode})
	// Beside it, a namespace whose rule keeps sidecars.
	framework.MakeNamespace(t, c, "side", map[string]string{"ladder": "mtls"}, map[string]func(*appsv1.Deployment){"shop": onAmbientNode})
	framework.WaitAvailable(t, c, "amb")
	framework.WaitAvailable(t, c, "side")
	before, sideBefore := podUIDs(t, c, "amb"), podUIDs(t, c, "side")

	runOperator(t, cl)
	createMesh(t, c, &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1.MeshInstallationSpec{
		DataPlane: meshv1.DataPlaneSpec{Mode: meshv1.DataPlaneAmbient},
		Rollout: meshv1.RolloutSpec{TrafficGates: meshv1.TrafficGatesSkip, SoakTime: &metav1.Duration{Duration: 3 * time.Second},
			StepTimeout: &metav1.Duration{Duration: 3 * time.Minute}},
		Namespaces: []meshv1.NamespaceRule{
			{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "zt"}}, Level: meshv1.LevelZeroTrust, Waypoint: true},
			{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "mtls"}}, Level: meshv1.LevelMutualTLS, DataPlaneMode: meshv1.DataPlaneSidecar},
		},
	}})
	ist := useLocalIstiodWith(t, cl, c, "default", cluster.IstiodOptions{Ambient: true, ZtunnelNamespace: ztunnelNamespace})

	// Into the mesh by its label; the step waits for the node agent to redirect its pods.
	framework.Eventually(t, 3*time.Minute, "amb labelled into ambient mode, its step waiting for the pods' redirection", func() (bool, error) {
		ns := framework.GetNamespace(t, c, "amb")
		mesh := &meshv1.MeshInstallation{}
		if err := c.Get(ctx, client.ObjectKey{Name: "default"}, mesh); err != nil {
			return false, err
		}
		cond := meta.FindStatusCondition(mesh.Status.Conditions, meshv1.ConditionAdoptionReady)
		return ns.Labels["istio.io/dataplane-mode"] == "ambient" && cond != nil && strings.Contains(cond.Message, "Istio CNI has not redirected"), nil
	})
	// Not redirected yet, istiod lists them without the HBONE tunnel.
	checkListedAmbient(t, ist, "amb", len(before), tunnelNone)
	framework.StartAmbientCapture(t, c, ztunnelNamespace)

	framework.Eventually(t, 3*time.Minute, "amb at ZeroTrust and side at MutualTLS", func() (bool, error) {
		amb, side := framework.GetNamespace(t, c, "amb"), framework.GetNamespace(t, c, "side")
		return amb.Labels[meshv1.LabelLevel] == string(meshv1.LevelZeroTrust) && stateOf(amb).Step == nil &&
			side.Labels[meshv1.LabelLevel] == string(meshv1.LevelMutualTLS) && stateOf(side).Step == nil, nil
	})
	checkSidecarsBeside(t, c, "side", sideBefore)
	ns := framework.GetNamespace(t, c, "amb")
	for _, k := range []string{"istio.io/rev", "istio-injection"} {
		if v, ok := ns.Labels[k]; ok {
			t.Errorf("amb carries %s=%s: ambient mode needs no injection label", k, v)
		}
	}
	if after := podUIDs(t, c, "amb"); !maps.Equal(after, before) {
		t.Errorf("pods before %v, after %v: ambient mode must restart none", before, after)
	}
	for _, p := range framework.Pods(t, c, "amb") {
		if isWaypointPod(&p) {
			continue
		}
		if len(p.Spec.Containers) != 1 || len(p.Spec.InitContainers) != 0 {
			t.Errorf("pod %s has containers %v, init containers %v: want the application's only", p.Name, containerNames(p.Spec.Containers), containerNames(p.Spec.InitContainers))
		}
	}
	if _, ok := policyExists(t, c, peerAuthenticationGVK, "amb", "meshwright-strict"); !ok {
		t.Error("amb has no STRICT PeerAuthentication")
	}
	for _, name := range []string{"meshwright-allow-nothing", "meshwright-allow"} {
		p, ok := policyExists(t, c, authorizationPolicyGVK, "amb", name)
		if !ok || p.GetAnnotations()["istio.io/dry-run"] != "" {
			t.Errorf("AuthorizationPolicy amb/%s: present %v, annotations %v; want it enforced", name, ok, p)
		}
	}
	mesh := &meshv1.MeshInstallation{}
	if err := c.Get(ctx, client.ObjectKey{Name: "default"}, mesh); err != nil {
		t.Fatal(err)
	}
	if ns := mesh.Status.Namespaces; ns == nil || ns.Ambient != 1 || ns.MutualTLS != 1 || ns.ZeroTrust != 1 {
		t.Errorf("status.namespaces = %+v, want amb counted in ambient mode, side not", ns)
	}
	checkNodeAgentsReady(t, c, mesh)
	checkWaypoint(t, c, "amb")
	checkListedAmbient(t, ist, "amb", len(before), tunnelZtunnel)
	checkListedAmbient(t, ist, "side", len(sideBefore), tunnelNative)
	checkUninstalled(t, c, "amb", "side")
}

// checkUninstalled deletes the installation and checks that ztunnel and Istio CNI go with it, the
// Gateway API's CRDs it installed stay, and that the namespaces are handed back without the
// operator's labels. The ambient capture
// simulator must still run: the uninstall waits for Istio CNI to release the pods it redirected.
func checkUninstalled(t *testing.T, c client.Client, namespaces ...string) {
	t.Helper()
	ctx := context.Background()
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := c.Get(ctx, client.ObjectKey{Name: "gateways.gateway.networking.k8s.io"}, crd); err != nil || crd.Labels[meshv1.LabelInstallation] != "default" {
		t.Errorf("the Gateway CRD before the uninstall: %v, labels %v; want it installed by the operator", err, crd.Labels)
	}
	if err := c.Delete(ctx, &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}}); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, time.Minute, "the MeshInstallation to be deleted", func() (bool, error) {
		err := c.Get(ctx, client.ObjectKey{Name: "default"}, &meshv1.MeshInstallation{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	for _, name := range []string{"ztunnel", "istio-cni-node"} {
		err := c.Get(ctx, client.ObjectKey{Namespace: ztunnelNamespace, Name: name}, &appsv1.DaemonSet{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("DaemonSet %s/%s after the uninstall: %v, want it gone", ztunnelNamespace, name, err)
		}
	}
	if len(namespaces) > 0 {
		gw := &unstructured.Unstructured{}
		gw.SetGroupVersionKind(waypoint.GVK)
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespaces[0], Name: waypoint.Name}, gw); !apierrors.IsNotFound(err) {
			t.Errorf("the waypoint of %s after the uninstall: %v, want it gone", namespaces[0], err)
		}
	}
	// The Gateway API's CRDs the operator installed are kept (no removeCRDsOnDelete), released.
	crd = &apiextensionsv1.CustomResourceDefinition{}
	if err := c.Get(ctx, client.ObjectKey{Name: "gateways.gateway.networking.k8s.io"}, crd); err != nil {
		t.Errorf("the Gateway CRD after the uninstall: %v, want it kept", err)
	} else if v, ok := crd.Labels[meshv1.LabelInstallation]; ok {
		t.Errorf("the Gateway CRD kept with the installation's label %s=%s", meshv1.LabelInstallation, v)
	}
	for _, name := range namespaces {
		ns := framework.GetNamespace(t, c, name)
		for _, k := range []string{"istio.io/dataplane-mode", "istio.io/rev", meshv1.LabelLevel} {
			if v, ok := ns.Labels[k]; ok {
				t.Errorf("namespace %s keeps %s=%s after the uninstall", name, k, v)
			}
		}
	}
}

// checkSidecarsBeside: a namespace whose rule keeps sidecars, in an ambient mesh, is in the mesh
// the sidecar way: its injection label, its pods restarted with Istio's proxy, STRICT, and no
// ambient label.
func checkSidecarsBeside(t *testing.T, c client.Client, namespace string, before map[string]string) {
	t.Helper()
	ns := framework.GetNamespace(t, c, namespace)
	if ns.Labels["istio.io/rev"] != "default" || ns.Labels["istio.io/dataplane-mode"] != "" {
		t.Errorf("namespace %s labels %v: want istio.io/rev=default and no ambient label", namespace, ns.Labels)
	}
	for _, p := range framework.Pods(t, c, namespace) {
		if !p.DeletionTimestamp.IsZero() {
			continue
		}
		if _, old := before[p.Name]; old || !slices.ContainsFunc(slices.Concat(p.Spec.InitContainers, p.Spec.Containers), func(ctr corev1.Container) bool { return ctr.Name == "istio-proxy" }) {
			t.Errorf("pod %s/%s: restarted %v, containers %v; want it restarted with Istio's proxy", namespace, p.Name, !old,
				containerNames(slices.Concat(p.Spec.InitContainers, p.Spec.Containers)))
		}
	}
	if _, ok := policyExists(t, c, peerAuthenticationGVK, namespace, "meshwright-strict"); !ok {
		t.Errorf("%s has no STRICT PeerAuthentication", namespace)
	}
}

// checkNodeAgentsReady: ztunnel's and Istio CNI's DaemonSets are Ready beside each other, and
// the ControlPlane stage says ambient mode is in place.
func checkNodeAgentsReady(t *testing.T, c client.Client, mesh *meshv1.MeshInstallation) {
	t.Helper()
	for _, name := range []string{"ztunnel", "istio-cni-node"} {
		ds := &appsv1.DaemonSet{}
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: ztunnelNamespace, Name: name}, ds); err != nil {
			t.Errorf("DaemonSet %s/%s: %v", ztunnelNamespace, name, err)
			continue
		}
		if ds.Status.DesiredNumberScheduled == 0 || ds.Status.NumberReady != ds.Status.DesiredNumberScheduled {
			t.Errorf("DaemonSet %s: %d of %d nodes Ready", name, ds.Status.NumberReady, ds.Status.DesiredNumberScheduled)
		}
	}
	cond := meta.FindStatusCondition(mesh.Status.Conditions, meshv1.ConditionControlPlaneReady)
	if cond == nil || !strings.Contains(cond.Message, "ztunnel Ready on every node") {
		t.Errorf("ControlPlaneReady = %+v, want it to say ztunnel is Ready", cond)
	}
}

// How istiod's ambient index says a workload is reached.
const (
	// tunnelNone: no HBONE tunnel; ztunnel would send it plaintext.
	tunnelNone = "none"
	// tunnelZtunnel: HBONE through the node's ztunnel (the pod is redirected, in ambient mode).
	tunnelZtunnel = "ztunnel"
	// tunnelNative: HBONE terminated by the pod's own sidecar (nativeTunnel), which an istiod
	// with ambient on gives injected pods so that they talk to ambient ones.
	tunnelNative = "sidecar"
)

// checkListedAmbient reads istiod's ambient index (/debug/ambientz) until it lists want
// workloads of the namespace, every one reached as tunnel says.
func checkListedAmbient(t *testing.T, ist *cluster.Istiod, namespace string, want int, tunnel string) {
	t.Helper()
	last := "nothing"
	framework.Eventually(t, time.Minute, fmt.Sprintf("istiod listing %d workloads of %s, reached by %s", want, namespace, tunnel), func() (bool, error) {
		resp, err := http.Get(ist.HTTP + "/debug/ambientz")
		if err != nil {
			return false, nil //nolint:nilerr // istiod may be busy: asked again
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			return false, nil //nolint:nilerr // asked again
		}
		var index struct {
			Workloads []map[string]any `json:"workloads"`
		}
		if err := json.Unmarshal(body, &index); err != nil {
			return false, fmt.Errorf("istiod's /debug/ambientz: %w", err)
		}
		matching, listed := 0, 0
		var seen []string
		for _, w := range index.Workloads {
			if w["namespace"] != namespace || strings.HasPrefix(fmt.Sprint(w["name"]), waypoint.Name+"-") {
				continue // the waypoint's own pod is not one of the namespace's workloads
			}
			listed++
			got := tunnelNone
			if strings.Contains(fmt.Sprint(w["tunnelProtocol"], w["tunnel_protocol"]), "HBONE") {
				got = tunnelZtunnel
				if w["nativeTunnel"] == true || w["native_tunnel"] == true {
					got = tunnelNative
				}
			}
			seen = append(seen, fmt.Sprintf("%v: %s", w["name"], got))
			if got == tunnel {
				matching++
			}
		}
		last = strings.Join(seen, ", ")
		if len(seen) == 0 {
			last = "none of it; its index: " + string(body[:min(len(body), 2000)])
		}
		return listed == want && matching == want, lazyError(func() string { return "istiod lists " + last })
	})
}

// checkWaypoint: the namespace's waypoint, which its rule asks for, is the operator's Gateway of
// class istio-waypoint, Programmed by the real istiod, which deployed it (its Deployment, whose
// pod kwok plays), and the namespace sends its traffic there (istio.io/use-waypoint).
func checkWaypoint(t *testing.T, c client.Client, namespace string) {
	t.Helper()
	gw := &unstructured.Unstructured{}
	gw.SetGroupVersionKind(waypoint.GVK)
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: waypoint.Name}, gw); err != nil {
		t.Fatalf("the waypoint of %s: %v", namespace, err)
	}
	if !waypoint.Programmed(gw) || gw.GetLabels()[meshv1.LabelInstallation] != "default" {
		t.Errorf("the waypoint of %s: Programmed %v, labels %v, status %v", namespace, waypoint.Programmed(gw), gw.GetLabels(), gw.Object["status"])
	}
	if !framework.Exists(t, c, &appsv1.Deployment{}, namespace, waypoint.Name) {
		t.Errorf("istiod deployed no waypoint Deployment in %s", namespace)
	}
	if v := framework.GetNamespace(t, c, namespace).Labels[waypoint.UseLabel]; v != waypoint.Name {
		t.Errorf("%s labelled %s=%q, want %q", namespace, waypoint.UseLabel, v, waypoint.Name)
	}
	// ZeroTrust's policies, attached to the waypoint too (istiod's validating webhook let them in):
	// behind the waypoint, the destination's ztunnel sees only the waypoint's identity.
	for _, name := range []string{policy.WaypointAllowName, policy.WaypointAllowNothingName} {
		ap := &unstructured.Unstructured{}
		ap.SetGroupVersionKind(policy.AuthorizationPolicyGVK)
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, ap); err != nil {
			t.Errorf("AuthorizationPolicy %s/%s at the waypoint: %v", namespace, name, err)
			continue
		}
		if refs, _, _ := unstructured.NestedSlice(ap.Object, "spec", "targetRefs"); len(refs) != 1 {
			t.Errorf("AuthorizationPolicy %s/%s: targetRefs %v, want the waypoint's Gateway", namespace, name, refs)
		}
	}
}

// isWaypointPod tells a waypoint's pod, which istiod deploys (labelled with its Gateway's name).
func isWaypointPod(p *corev1.Pod) bool {
	return p.Labels["gateway.networking.k8s.io/gateway-name"] != ""
}
