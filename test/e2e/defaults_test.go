package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
	"github.com/meshwright/meshwright/test/trafficsim"
)

// frontToShop is front's client calling shop's web, whose application takes 300 ms to answer.
var frontToShop = trafficsim.Flow{From: trafficsim.Workload{Namespace: "front", Name: "client"}, To: trafficsim.Workload{Namespace: "shop", Name: "web"},
	Port: 8080, Protocol: trafficsim.HTTP, PerSecond: 4, Latency: 300 * time.Millisecond}

// Istio's networking kinds, written here from Istio's API rather than taken from the operator.
var (
	destinationRuleKind = metav1.GroupVersionKind{Group: "networking.istio.io", Version: "v1", Kind: "DestinationRule"}
	virtualServiceKind  = metav1.GroupVersionKind{Group: "networking.istio.io", Version: "v1", Kind: "VirtualService"}
)

// TestResilienceDefaultsWithSimulatedTraffic: spec.resilience asks for a request timeout of
// 100 ms from MutualTLS up, and shop's web needs 300 ms. shop climbs to MutualTLS with no
// default; then the step that applies them writes its DestinationRule and a VirtualService per
// Service, which the real istiod's validating webhook admits (the same webhook refuses an invalid
// DestinationRule). The traffic simulator times front's calls out under that VirtualService, as
// Envoy would (504, flag UT), Prometheus reads them from front's proxies, and the bake rolls the
// defaults back with TrafficRegressed and the evidence. With a timeout of 5 s, they apply and
// stay; a team's DestinationRule for shop's api is left untouched and reported (partly covered);
// a VirtualService a user deletes is not written again until its record is removed; opting shop
// out removes the operator's objects and nothing else.
func TestResilienceDefaultsWithSimulatedTraffic(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	ctx := context.Background()
	cl, c := framework.StartCluster(t, cluster.Options{})
	framework.MakeNamespace(t, c, "shop", map[string]string{"ladder": "mtls"}, map[string]func(*appsv1.Deployment){"web": nil})
	framework.MakeNamespace(t, c, "front", map[string]string{"ladder": "observe"}, map[string]func(*appsv1.Deployment){"client": nil})
	for _, svc := range []string{"web", "api"} {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: svc}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(8080)}}}}
		if err := c.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	framework.WaitAvailable(t, c, "shop")
	framework.WaitAvailable(t, c, "front")
	traffic := framework.StartSimulatedTraffic(t, c, frontToShop)
	prom, err := cluster.StartPrometheus(ctx, "", t.TempDir(), []cluster.ScrapeTarget{traffic.ScrapeTarget()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prom.Stop)
	installCRD(t, cl)
	runOperatorAs(t, cl.Kubeconfig, "default", "--proxy-stats-url="+traffic.ProxyStatsURL())
	createMesh(t, c, &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1.MeshInstallationSpec{
		Rollout: meshv1.RolloutSpec{ObserveTime: &metav1.Duration{Duration: observeWindow}, SoakTime: &metav1.Duration{Duration: time.Second},
			BakeTime: &metav1.Duration{Duration: bakeWindow}},
		Telemetry:  meshv1.TelemetrySpec{Prometheus: &meshv1.PrometheusSource{URL: prom.URL}},
		Resilience: &meshv1.ResilienceSpec{ResilienceValues: meshv1.ResilienceValues{Timeouts: &meshv1.TimeoutValues{Request: &metav1.Duration{Duration: 100 * time.Millisecond}}}},
		Namespaces: gatedSpecRules,
	}})
	useLocalIstiod(t, cl, c, "default")
	webhookRefusesInvalid(t, c, 3*time.Minute) // once the control plane serves it
	teamDR := createTeamDestinationRule(t, c)

	// At Observe shop carries none; the step to MutualTLS comes first.
	framework.Eventually(t, 4*time.Minute, "shop's step to STRICT under way", func() (bool, error) {
		return strict(t, c), standing(c, framework.GetNamespace(t, c, "shop"))
	})
	if objs := defaultsIn(t, c); len(objs) != 0 {
		t.Fatalf("shop holds %v before it reached MutualTLS", keys(objs))
	}
	framework.Eventually(t, 4*time.Minute, "the defaults applied to shop, with web's 100 ms timeout", func() (bool, error) {
		vs := defaultsIn(t, c)["VirtualService/meshwright-resilience-web"]
		return vs != nil && routeTimeout(vs) == "0.100s", fmt.Errorf("shop holds %v", keys(defaultsIn(t, c)))
	})
	waitBlocked(t, c, "shop", meshv1.ReasonTrafficRegressed, "resilience defaults", "timeouts of their proxies", "front/client", "Prometheus at "+prom.URL, "rolled back")
	framework.Eventually(t, time.Minute, "the defaults rolled back", func() (bool, error) {
		return len(defaultsIn(t, c)) == 0, fmt.Errorf("shop holds %v", keys(defaultsIn(t, c)))
	})
	if got := traffic.Sim.Outcomes()[frontToShop.Key()]; got.TimedOut == 0 {
		t.Fatalf("front → shop: %+v; want the calls the 100 ms timeout cut", got)
	}
	if shop := framework.GetNamespace(t, c, "shop"); shop.Labels[meshv1.LabelLevel] != string(meshv1.LevelMutualTLS) || !strict(t, c) {
		t.Fatalf("shop %v: the rollback of the defaults must leave it at MutualTLS", shop.Labels)
	}

	// A timeout the Service can meet: the defaults apply and stay.
	updateMesh(t, c, func(m *meshv1.MeshInstallation) {
		m.Spec.Resilience.Timeouts.Request = &metav1.Duration{Duration: 5 * time.Second}
	})
	waitDefaults(t, c, "5s", 3)
	webhookRefusesInvalid(t, c, time.Minute)
	framework.Eventually(t, time.Minute, "shop counted as partly covered", func() (bool, error) {
		mesh := &meshv1.MeshInstallation{}
		if err := c.Get(ctx, client.ObjectKey{Name: "default"}, mesh); err != nil || mesh.Status.Namespaces == nil {
			return false, err
		}
		st := mesh.Status.Namespaces
		return st.ResiliencePartial == 1 && st.ResilienceCovered == 0, fmt.Errorf("resilience counts: partial %d, covered %d", st.ResiliencePartial, st.ResilienceCovered)
	})
	checkTeamObjectUntouched(t, c, teamDR)

	deletedStaysDeleted(t, c)

	// Opted out: the operator's objects go, the team's stays.
	updateMesh(t, c, func(m *meshv1.MeshInstallation) {
		m.Spec.Namespaces[0].Resilience = &meshv1.NamespaceResilience{Skip: true}
	})
	framework.Eventually(t, time.Minute, "the defaults removed from shop", func() (bool, error) {
		return len(defaultsIn(t, c)) == 0, fmt.Errorf("shop holds %v", keys(defaultsIn(t, c)))
	})
	checkTeamObjectUntouched(t, c, teamDR)
}

// deletedStaysDeleted deletes web's VirtualService: the operator records it on the namespace and
// does not write it again, until the record is removed (the documented restore).
func deletedStaysDeleted(t *testing.T, c client.Client) {
	t.Helper()
	ctx := context.Background()
	deleted := defaultsIn(t, c)["VirtualService/meshwright-resilience-web"]
	if err := c.Delete(ctx, deleted); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, time.Minute, "the deletion recorded", func() (bool, error) {
		ns := framework.GetNamespace(t, c, "shop")
		got := ns.Annotations[meshv1.AnnotationResilienceDeclined]
		again := "not written again"
		if vs := defaultsIn(t, c)["VirtualService/meshwright-resilience-web"]; vs != nil {
			again = fmt.Sprintf("written again (uid %s, was %s)", vs.GetUID(), deleted.GetUID())
		}
		return got == "VirtualService/meshwright-resilience-web", fmt.Errorf("record %q, the VirtualService %s, ladder %s", got, again, ns.Annotations[meshv1.AnnotationLadder])
	})
	time.Sleep(5 * time.Second) // passes come at least every 10 s while anything moves; a few do
	if _, found := defaultsIn(t, c)["VirtualService/meshwright-resilience-web"]; found {
		t.Fatal("the VirtualService a user deleted was written again")
	}
	ns := framework.GetNamespace(t, c, "shop")
	patch := client.MergeFrom(ns.DeepCopy())
	delete(ns.Annotations, meshv1.AnnotationResilienceDeclined)
	if err := c.Patch(ctx, ns, patch); err != nil {
		t.Fatal(err)
	}
	waitDefaults(t, c, "5s", 3)
}

// waitDefaults waits until shop holds the operator's objects, count of them, web's timeout as
// given, with no step running (the defaults' bake passed).
func waitDefaults(t *testing.T, c client.Client, timeout string, count int) {
	t.Helper()
	framework.Eventually(t, 3*time.Minute, "shop's defaults with web's "+timeout+" timeout", func() (bool, error) {
		objs := defaultsIn(t, c)
		vs := objs["VirtualService/meshwright-resilience-web"]
		shop := framework.GetNamespace(t, c, "shop")
		return len(objs) == count && vs != nil && routeTimeout(vs) == timeout && stateOf(shop).Step == nil, standing(c, shop)
	})
}

// defaultsIn lists the operator's objects of the resilience defaults in shop, by Kind/name.
func defaultsIn(t *testing.T, c client.Client) map[string]*unstructured.Unstructured {
	t.Helper()
	out := map[string]*unstructured.Unstructured{}
	for _, gvk := range []metav1.GroupVersionKind{destinationRuleKind, virtualServiceKind} {
		list := &unstructured.UnstructuredList{}
		list.SetAPIVersion(gvk.Group + "/" + gvk.Version)
		list.SetKind(gvk.Kind + "List")
		if err := c.List(context.Background(), list, client.InNamespace("shop"), client.MatchingLabels{meshv1.LabelManagedBy: meshv1.ManagedByValue}); err != nil {
			t.Fatal(err)
		}
		for i := range list.Items {
			if u := &list.Items[i]; u.GetDeletionTimestamp() == nil {
				out[gvk.Kind+"/"+u.GetName()] = u
			}
		}
	}
	return out
}

func keys(m map[string]*unstructured.Unstructured) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// routeTimeout is a VirtualService's first route's timeout.
func routeTimeout(vs *unstructured.Unstructured) string {
	routes, _, _ := unstructured.NestedSlice(vs.Object, "spec", "http")
	if len(routes) == 0 {
		return ""
	}
	route, _ := routes[0].(map[string]any)
	timeout, _ := route["timeout"].(string)
	return timeout
}

// createTeamDestinationRule writes a team's own DestinationRule for shop's api.
func createTeamDestinationRule(t *testing.T, c client.Client) *unstructured.Unstructured {
	t.Helper()
	dr := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
		"metadata": map[string]any{"name": "api-pool", "namespace": "shop"},
		"spec":     map[string]any{"host": "api", "trafficPolicy": map[string]any{"connectionPool": map[string]any{"tcp": map[string]any{"maxConnections": int64(10)}}}}}}
	if err := c.Create(context.Background(), dr); err != nil {
		t.Fatal(err)
	}
	return dr
}

// checkTeamObjectUntouched fails when the team's DestinationRule changed or is gone.
func checkTeamObjectUntouched(t *testing.T, c client.Client, dr *unstructured.Unstructured) {
	t.Helper()
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(dr.GroupVersionKind())
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(dr), got); err != nil {
		t.Fatalf("the team's DestinationRule: %v", err)
	}
	if got.GetResourceVersion() != dr.GetResourceVersion() {
		t.Fatalf("the team's DestinationRule was changed: resourceVersion %s → %s", dr.GetResourceVersion(), got.GetResourceVersion())
	}
}

// webhookRefusesInvalid shows istiod's validating webhook live: it refuses a DestinationRule
// with an empty connection pool with Istio's own message (pkg/config/validation,
// validateConnectionPool), so the objects the operator wrote meanwhile passed the same webhook.
func webhookRefusesInvalid(t *testing.T, c client.Client, timeout time.Duration) {
	t.Helper()
	bad := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
		"metadata": map[string]any{"name": "invalid", "namespace": "shop"},
		"spec":     map[string]any{"host": "web", "trafficPolicy": map[string]any{"connectionPool": map[string]any{}}}}}
	framework.Eventually(t, timeout, "istiod's validating webhook to refuse an invalid DestinationRule", func() (bool, error) {
		err := c.Create(context.Background(), bad, client.DryRunAll)
		if err == nil {
			return false, fmt.Errorf("an empty connection pool was admitted")
		}
		return strings.Contains(err.Error(), "connection pool must have at least one field"), err
	})
}
