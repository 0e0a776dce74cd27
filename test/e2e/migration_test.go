package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
)

// TestAmbientMigration: two namespaces at MutualTLS with sidecars; the spec then asks for ambient
// mode. The operator installs ztunnel and Istio CNI in ambient mode, then migrates each namespace
// at its level in Istio's order. "mig" ends in ambient mode: the ambient label on before the
// injection label goes, its pods restarted without the proxy and redirected to ztunnel, STRICT
// kept, and istiod lists its workloads with HBONE through ztunnel. "fragile" runs an application
// that is Ready only with its proxy (the test's readiness prober says so): its restarted pods never
// come back Ready, the migration times out and is rolled back to sidecars (the injection label
// back beside the ambient label, the pods restarted with the proxy, then the ambient label gone),
// and it is held there at MutualTLS, beside "mig" in ambient mode. A watcher of both namespaces
// checks, in the API server's order of changes, that no pod ever ran without the proxy while its
// namespace lacked the ambient label. The redirection is written by the named simulator of Istio
// CNI's node agent (test/ambientsim): this shows the orchestration and istiod's acceptance, not
// that ztunnel carries a packet. Deleting the installation then removes ztunnel and Istio CNI and
// hands both namespaces back.
func TestAmbientMigration(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	ctx := context.Background()
	cl, c := framework.StartCluster(t, cluster.Options{})
	if err := cl.AddNode(ctx, cluster.NodeOptions{Name: "kwok-ambient", CPU: "32", Memory: "64Gi", PodCIDR: "10.244.2.0/24", Labels: map[string]string{"pool": "ambient"}}); err != nil {
		t.Fatal(err)
	}
	onAmbientNode := func(d *appsv1.Deployment) { d.Spec.Template.Spec.NodeSelector = map[string]string{"pool": "ambient"} }
	framework.MakeNamespace(t, c, "mig", map[string]string{"ladder": "mig"}, map[string]func(*appsv1.Deployment){"web": onAmbientNode, "api": onAmbientNode})
	framework.MakeNamespace(t, c, "fragile", map[string]string{"ladder": "mig"}, map[string]func(*appsv1.Deployment){"shop": onAmbientNode})
	framework.WaitAvailable(t, c, "mig")
	framework.WaitAvailable(t, c, "fragile")

	runOperator(t, cl)
	createMesh(t, c, &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1.MeshInstallationSpec{
		Rollout: meshv1.RolloutSpec{TrafficGates: meshv1.TrafficGatesSkip, SoakTime: &metav1.Duration{Duration: 3 * time.Second},
			StepTimeout: &metav1.Duration{Duration: time.Minute}, MaxNamespacesInProgress: 2},
		Namespaces: []meshv1.NamespaceRule{{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "mig"}}, Level: meshv1.LevelMutualTLS}},
	}})
	ist := useLocalIstiodWith(t, cl, c, "default", cluster.IstiodOptions{Ambient: true, ZtunnelNamespace: ztunnelNamespace})
	framework.Eventually(t, 3*time.Minute, "mig and fragile at MutualTLS with sidecars", func() (bool, error) {
		return atLevel(t, c, "mig", meshv1.LevelMutualTLS) && atLevel(t, c, "fragile", meshv1.LevelMutualTLS), nil
	})
	// fragile's application is Ready only with its proxy from now on: a readiness probe that
	// fails without it. Its pods restart (with the proxy) to carry that.
	readyOnlyWithProxy(t, c, "fragile")
	patchTemplate(t, c, "fragile", "shop", map[string]any{cluster.AnnotationReadyWhenServing: "true"})
	framework.WaitAvailable(t, c, "fragile")

	watch := framework.WatchDataPlanes(t, cl, "mig", "fragile")
	framework.StartAmbientCapture(t, c, ztunnelNamespace)
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"dataPlane": map[string]any{"mode": "Ambient"}}})
	if err := c.Patch(ctx, &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}

	framework.Eventually(t, 4*time.Minute, "mig in ambient mode at MutualTLS, fragile rolled back to sidecars and held", func() (bool, error) {
		mig, fragile := framework.GetNamespace(t, c, "mig"), framework.GetNamespace(t, c, "fragile")
		held := stateOf(fragile).Hold
		return atLevel(t, c, "mig", meshv1.LevelMutualTLS) && stateOf(mig).Ambient &&
			stateOf(fragile).Step == nil && held != nil && held.Reason == meshv1.ReasonRolledBack, nil
	})

	for ns, want := range map[string][]string{
		"mig":     {"istio.io/rev=default", "ambient"},
		"fragile": {"istio.io/rev=default", "ambient", "ambient istio.io/rev=default", "istio.io/rev=default"},
	} {
		if got := watch.Labels(ns); !slices.Equal(got, want) {
			t.Errorf("%s's labels went %q, want %q (Istio's order)", ns, got, want)
		}
		if bad := watch.Unhandled(ns); len(bad) > 0 {
			t.Errorf("%s: pods handled by neither data plane: %v", ns, bad)
		}
	}
	for _, p := range framework.Pods(t, c, "mig") {
		if !p.DeletionTimestamp.IsZero() {
			continue
		}
		if hasIstioProxy(p) || p.Annotations["ambient.istio.io/redirection"] != "enabled" {
			t.Errorf("mig/%s: containers %v, redirection %q; want no proxy, redirected to ztunnel", p.Name, containerNames(p.Spec.Containers), p.Annotations["ambient.istio.io/redirection"])
		}
	}
	checkSidecarsBeside(t, c, "fragile", nil)
	for _, ns := range []string{"mig", "fragile"} {
		if _, ok := policyExists(t, c, peerAuthenticationGVK, ns, "meshwright-strict"); !ok {
			t.Errorf("%s has no STRICT PeerAuthentication", ns)
		}
	}
	mesh := &meshv1.MeshInstallation{}
	if err := c.Get(ctx, client.ObjectKey{Name: "default"}, mesh); err != nil {
		t.Fatal(err)
	}
	if ns := mesh.Status.Namespaces; ns == nil || ns.Ambient != 1 || ns.MutualTLS != 2 || len(ns.Blocked) != 1 || ns.Blocked[0].Name != "fragile" {
		t.Errorf("status.namespaces = %+v, want both at MutualTLS, mig in ambient mode, fragile blocked", ns)
	}
	checkListedAmbient(t, ist, "mig", 4, tunnelZtunnel)
	checkListedAmbient(t, ist, "fragile", 2, tunnelNative)
	checkUninstalled(t, c, "mig", "fragile")
}

// atLevel reports a namespace standing at level with no step running.
func atLevel(t *testing.T, c client.Client, namespace string, level meshv1.AdoptionLevel) bool {
	t.Helper()
	ns := framework.GetNamespace(t, c, namespace)
	return ns.Labels[meshv1.LabelLevel] == string(level) && stateOf(ns).Step == nil
}

func hasIstioProxy(p corev1.Pod) bool {
	return slices.ContainsFunc(slices.Concat(p.Spec.InitContainers, p.Spec.Containers), func(c corev1.Container) bool { return c.Name == "istio-proxy" })
}

// patchTemplate adds annotations to a Deployment's pod template, which restarts its pods.
func patchTemplate(t *testing.T, c client.Client, namespace, name string, annotations map[string]any) {
	t.Helper()
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{"annotations": annotations}}}})
	if err := c.Patch(context.Background(), &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
}

// readyOnlyWithProxy plays the readiness probe of an application that is Ready only with Istio's
// proxy beside it, for the namespace's pods whose readiness kwok leaves to their player
// (cluster.AnnotationReadyWhenServing): each running one with the proxy is marked Ready, as a
// kubelet would on the probe's first success; one without it never is. It runs until the test ends.
func readyOnlyWithProxy(t *testing.T, c client.Client, namespace string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			pods := &corev1.PodList{}
			if err := c.List(ctx, pods, client.InNamespace(namespace)); err == nil {
				for i := range pods.Items {
					p := &pods.Items[i]
					if p.Annotations[cluster.AnnotationReadyWhenServing] != "true" || p.Status.Phase != corev1.PodRunning || !hasIstioProxy(*p) || podIsReady(p) {
						continue
					}
					markReady(ctx, c, p)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// markReady sets a pod's Ready and ContainersReady conditions, and its containers' readiness.
func markReady(ctx context.Context, c client.Client, p *corev1.Pod) {
	now := metav1.Now()
	for _, typ := range []corev1.PodConditionType{corev1.PodReady, corev1.ContainersReady} {
		found := false
		for i := range p.Status.Conditions {
			if p.Status.Conditions[i].Type == typ {
				p.Status.Conditions[i].Status, p.Status.Conditions[i].LastTransitionTime, found = corev1.ConditionTrue, now, true
			}
		}
		if !found {
			p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: typ, Status: corev1.ConditionTrue, LastTransitionTime: now})
		}
	}
	for i := range p.Status.ContainerStatuses {
		p.Status.ContainerStatuses[i].Ready = true
	}
	_ = c.Status().Update(ctx, p) // a conflict or a pod gone: looked at again at the next tick
}
