package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/policy"
	"github.com/meshwright/meshwright/internal/revision"
	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
	"github.com/meshwright/meshwright/test/trafficsim"
)

// The traffic gate tests run the operator against the traffic simulator (test/trafficsim), which
// exports the series real Envoy sidecars would report under the cluster's real state (namespace
// labels, injected pods, PeerAuthentications, AuthorizationPolicies). They show what the gates do
// with such telemetry, read through each source; they do not show a real data plane's behaviour.

var (
	legacyToShop   = trafficsim.Flow{From: trafficsim.Workload{Namespace: "legacy", Name: "client"}, To: trafficsim.Workload{Namespace: "shop", Name: "web"}, Port: 8080, Protocol: trafficsim.HTTP, PerSecond: 4}
	outsideToShop  = trafficsim.Flow{External: true, To: trafficsim.Workload{Namespace: "shop", Name: "web"}, Port: 8080, Protocol: trafficsim.TCP, PerSecond: 2}
	legacyToCache  = trafficsim.Flow{From: trafficsim.Workload{Namespace: "legacy", Name: "client"}, To: trafficsim.Workload{Namespace: "cache", Name: "redis"}, Port: 6379, Protocol: trafficsim.TCP, PerSecond: 2}
	observeWindow  = 15 * time.Second
	bakeWindow     = 10 * time.Second
	gatedSpecRules = []meshv1.NamespaceRule{
		{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "mtls"}}, Level: meshv1.LevelMutualTLS},
		{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "observe"}}, Level: meshv1.LevelObserve},
	}
)

// trafficScenario is a cluster with shop (target MutualTLS) called in plaintext by legacy (not
// enrolled) and by a caller outside the mesh; cache (not enrolled yet), whose application
// listens on localhost only, called by legacy; the simulator generating that traffic, and the
// operator reading each pod's stats from the simulator.
func trafficScenario(t *testing.T) (*cluster.Cluster, client.Client, *framework.SimulatedTraffic) {
	t.Helper()
	cl, c := framework.StartCluster(t, cluster.Options{})
	framework.MakeNamespace(t, c, "shop", map[string]string{"ladder": "mtls"}, map[string]func(*appsv1.Deployment){"web": nil})
	framework.MakeNamespace(t, c, "legacy", nil, map[string]func(*appsv1.Deployment){"client": nil})
	framework.MakeNamespace(t, c, "cache", nil, map[string]func(*appsv1.Deployment){"redis": nil})
	for _, ns := range []string{"shop", "legacy", "cache"} {
		framework.WaitAvailable(t, c, ns)
	}
	traffic := framework.StartSimulatedTraffic(t, c, legacyToShop, outsideToShop, legacyToCache)
	traffic.Sim.SetLocalhostOnly(legacyToCache.To)
	installCRD(t, cl)
	runOperatorAs(t, cl.Kubeconfig, "default", "--proxy-stats-url="+traffic.ProxyStatsURL())
	return cl, c, traffic
}

// gatedMesh is the scenario's installation: a short observe window, and telemetry as given.
func gatedMesh(t *testing.T, cl *cluster.Cluster, c client.Client, telemetry meshv1.TelemetrySpec) {
	t.Helper()
	createMesh(t, c, &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1.MeshInstallationSpec{
		Rollout: meshv1.RolloutSpec{ObserveTime: &metav1.Duration{Duration: observeWindow}, SoakTime: &metav1.Duration{Duration: time.Second},
			BakeTime: &metav1.Duration{Duration: bakeWindow}},
		Telemetry: telemetry, Namespaces: gatedSpecRules,
	}})
	useLocalIstiod(t, cl, c, "default")
}

// waitHeldAtObserve waits until shop is blocked with reason (see waitBlocked), and checks that
// it has no STRICT policy meanwhile.
func waitHeldAtObserve(t *testing.T, c client.Client, reason string, want ...string) {
	t.Helper()
	waitBlocked(t, c, "shop", reason, want...)
	if strict(t, c) {
		t.Fatalf("shop got STRICT while held with %s", reason)
	}
}

// waitBlocked waits until the installation reports a namespace blocked with reason, with a
// message holding each of want.
func waitBlocked(t *testing.T, c client.Client, namespace, reason string, want ...string) {
	t.Helper()
	var got meshv1.BlockedNamespace
	framework.Eventually(t, 3*time.Minute, namespace+" held with "+reason, func() (bool, error) {
		mesh := &meshv1.MeshInstallation{}
		if err := c.Get(context.Background(), client.ObjectKey{Name: "default"}, mesh); err != nil {
			return false, err
		}
		got = meshv1.BlockedNamespace{}
		if st := mesh.Status.Namespaces; st != nil {
			if i := slices.IndexFunc(st.Blocked, func(b meshv1.BlockedNamespace) bool { return b.Name == namespace }); i >= 0 {
				got = st.Blocked[i]
			}
		}
		if got.Reason != reason {
			return false, fmt.Errorf("%s blocked with %q: %s", namespace, got.Reason, got.Message)
		}
		for _, w := range want {
			if !strings.Contains(got.Message, w) {
				// The same reason from an earlier reading (another source) may stand for a while.
				return false, fmt.Errorf("%s message %q lacks %q", reason, got.Message, w)
			}
		}
		return true, nil
	})
}

// standing describes where a namespace stands on the ladder, for the message of a wait that
// timed out: its level, its ladder annotation (step, hold, bake), why the installation says it
// is blocked, if it does, and the installation's conditions that are not True (a stage that
// never became ready holds every namespace).
func standing(c client.Client, ns *corev1.Namespace) error {
	blocked, unready := "not blocked", []string{}
	mesh := &meshv1.MeshInstallation{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: "default"}, mesh); err != nil {
		unready = append(unready, "reading the installation: "+err.Error())
	}
	if mesh.Status.Namespaces != nil {
		for _, b := range mesh.Status.Namespaces.Blocked {
			if b.Name == ns.Name {
				blocked = fmt.Sprintf("blocked with %s: %s", b.Reason, b.Message)
			}
		}
	}
	for _, cond := range mesh.Status.Conditions {
		if cond.Status != metav1.ConditionTrue {
			unready = append(unready, fmt.Sprintf("%s=%s %s: %s", cond.Type, cond.Status, cond.Reason, cond.Message))
		}
	}
	return fmt.Errorf("%s at %q, ladder %s, %s; installation conditions not True: %v", ns.Name, ns.Labels[meshv1.LabelLevel],
		ns.Annotations[meshv1.AnnotationLadder], blocked, unready)
}

// strict tells whether shop carries the ladder's STRICT PeerAuthentication.
func strict(t *testing.T, c client.Client) bool {
	t.Helper()
	return strictIn(t, c, "shop")
}

// enrolCacheAndWaitRolledBack enrols cache at Observe: behind its new proxies its application,
// which listens on localhost only, is out of reach, and the bake of the step sees the proxies
// fail to pass legacy's calls on. The step is rolled back: cache is held at Off with
// TrafficRegressed and the evidence, and legacy's calls reach it again.
func enrolCacheAndWaitRolledBack(t *testing.T, c client.Client, traffic *framework.SimulatedTraffic) {
	t.Helper()
	ns := framework.GetNamespace(t, c, "cache")
	patch := client.MergeFrom(ns.DeepCopy())
	ns.Labels = map[string]string{"ladder": "observe"}
	if err := c.Patch(context.Background(), ns, patch); err != nil {
		t.Fatal(err)
	}
	waitBlocked(t, c, "cache", meshv1.ReasonTrafficRegressed, "could not pass", "on to the application", "legacy/client", "must listen on the pod's IP", "held at Off")
	if cache := framework.GetNamespace(t, c, "cache"); cache.Labels[meshv1.LabelLevel] != string(meshv1.LevelOff) || cache.Labels[revision.Label] != "" {
		t.Fatalf("cache %v: want it back at Off, out of the mesh", cache.Labels)
	}
	unreached := traffic.Sim.Outcomes()[legacyToCache.Key()]
	if unreached.AppUnreachable == 0 {
		t.Fatalf("legacy → cache: %+v; want the calls its proxies could not pass on", unreached)
	}
	framework.Eventually(t, time.Minute, "legacy's calls to reach cache again", func() (bool, error) {
		return traffic.Sim.Outcomes()[legacyToCache.Key()].Succeeded > unreached.Succeeded, nil
	})
}

// enrolLegacyAndWaitStrict stops the outside caller, enrols legacy at Observe (its proxies then
// send mTLS), and waits for shop to reach MutualTLS; no call of legacy's was refused on the way.
func enrolLegacyAndWaitStrict(t *testing.T, c client.Client, traffic *framework.SimulatedTraffic) {
	t.Helper()
	ctx := context.Background()
	traffic.Sim.SetFlows([]trafficsim.Flow{legacyToShop, legacyToCache})
	ns := &corev1.Namespace{}
	if err := c.Get(ctx, client.ObjectKey{Name: "legacy"}, ns); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(ns.DeepCopy())
	ns.Labels["ladder"] = "observe"
	if err := c.Patch(ctx, ns, patch); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 4*time.Minute, "shop at MutualTLS once legacy speaks mTLS", func() (bool, error) {
		shop := framework.GetNamespace(t, c, "shop")
		return shop.Labels[meshv1.LabelLevel] == string(meshv1.LevelMutualTLS) && stateOf(shop).Step == nil, standing(c, shop)
	})
	if !strict(t, c) {
		t.Fatal("shop at MutualTLS without its STRICT policy")
	}
	if got := traffic.Sim.Outcomes()[legacyToShop.Key()]; got.Refused != 0 || got.Succeeded == 0 {
		t.Errorf("legacy → shop: %+v; want calls and none refused: the gate let STRICT in only after legacy spoke mTLS", got)
	}
}

// TestTrafficGateEmbeddedSourceWithSimulatedTraffic: with no Prometheus, the operator reads the
// proxies' stats itself (here the simulator's, through --proxy-stats-url). shop holds at Observe
// with PlaintextTraffic naming legacy/client and the caller outside the mesh. cache's step to
// Observe is rolled back by its bake (see enrolCacheAndWaitRolledBack). Once the outside caller
// stops and legacy is enrolled, shop goes STRICT without a call refused. Then legacy's
// target is lowered to Off: it stays in the mesh with CallsStrictNamespaces naming shop, which
// would refuse its calls without its proxies, and none of its calls is refused.
func TestTrafficGateEmbeddedSourceWithSimulatedTraffic(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	cl, c, traffic := trafficScenario(t)
	gatedMesh(t, cl, c, meshv1.TelemetrySpec{})
	waitHeldAtObserve(t, c, meshv1.ReasonPlaintextTraffic, "legacy/client", "a caller outside the mesh", "enrol namespace legacy", "the proxies' stats endpoints")
	enrolCacheAndWaitRolledBack(t, c, traffic)
	enrolLegacyAndWaitStrict(t, c, traffic)

	legacy := framework.GetNamespace(t, c, "legacy")
	patch := client.MergeFrom(legacy.DeepCopy())
	delete(legacy.Labels, "ladder")
	if err := c.Patch(context.Background(), legacy, patch); err != nil {
		t.Fatal(err)
	}
	waitBlocked(t, c, "legacy", meshv1.ReasonCallsStrictNamespaces, "shop/*", "keep this one at Observe")
	if got := framework.GetNamespace(t, c, "legacy").Labels[meshv1.LabelLevel]; got != string(meshv1.LevelObserve) {
		t.Fatalf("legacy at %q, want it kept at Observe", got)
	}
	if got := traffic.Sim.Outcomes()[legacyToShop.Key()]; got.Refused != 0 {
		t.Errorf("legacy → shop: %+v; want none refused", got)
	}
}

// TestTrafficGatePrometheusSourceWithSimulatedTraffic: the same scenario read through a real
// Prometheus scraping the simulator. Prometheus stopped holds shop with TelemetryUnavailable;
// started again, the gate reads it, and cache's step to Observe is rolled back by its bake, read
// through Prometheus; scraping stopped holds shop with TelemetryMissing once the window has no
// series; then legacy is enrolled and shop goes STRICT.
func TestTrafficGatePrometheusSourceWithSimulatedTraffic(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	cl, c, traffic := trafficScenario(t)
	prom, err := cluster.StartPrometheus(context.Background(), "", t.TempDir(), []cluster.ScrapeTarget{traffic.ScrapeTarget()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prom.Stop)
	prom.Stop() // down when the gate first asks
	gatedMesh(t, cl, c, meshv1.TelemetrySpec{Prometheus: &meshv1.PrometheusSource{URL: prom.URL}})
	waitHeldAtObserve(t, c, meshv1.ReasonTelemetryUnavailable, "Prometheus at "+prom.URL+" did not answer")

	if err := prom.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitHeldAtObserve(t, c, meshv1.ReasonPlaintextTraffic, "legacy/client", "a caller outside the mesh", "Prometheus at "+prom.URL)
	enrolCacheAndWaitRolledBack(t, c, traffic)

	if err := prom.SetTargets(nil); err != nil {
		t.Fatal(err)
	}
	waitHeldAtObserve(t, c, meshv1.ReasonTelemetryMissing, "no series of the namespace's proxies")
	if err := prom.SetTargets([]cluster.ScrapeTarget{traffic.ScrapeTarget()}); err != nil {
		t.Fatal(err)
	}
	enrolLegacyAndWaitStrict(t, c, traffic)
}

// TestZeroTrustDryRunGateWithSimulatedTraffic: shop (target ZeroTrust, nobody in allowFrom) serves
// an admission webhook, and is called by legacy (enrolled at Observe, so in mTLS). The webhook
// holds shop at Observe with NonMeshCallers before any STRICT policy exists; once its port is
// exempted (plaintextPorts), shop climbs, and the simulated kube-apiserver's plaintext calls to the
// webhook's pods are never refused or denied, at MutualTLS or ZeroTrust. When the dry-run's soak ends, the traffic
// read from the simulator's proxies shows legacy/client outside allowFrom and the dry-run's
// shadow denials: the policies stay in dry-run with WouldDenyTraffic naming legacy and the entry
// that admits it. Once legacy is added to allowFrom, a whole soak without denials lets the step
// enforce, and no call of legacy's was ever denied. Then the same through a real Prometheus: legacy
// taken out of allowFrom and shop raised again, the dry-run read from Prometheus holds it with
// WouldDenyTraffic until legacy is allowed. A watcher of the namespace's policies sees no moment
// of deny-all (allow-nothing enforced without its allow policy), going up or back down.
func TestZeroTrustDryRunGateWithSimulatedTraffic(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	ctx := context.Background()
	cl, c := framework.StartCluster(t, cluster.Options{})
	framework.MakeNamespace(t, c, "shop", map[string]string{"ladder": "zt"}, map[string]func(*appsv1.Deployment){"web": nil})
	framework.MakeNamespace(t, c, "legacy", map[string]string{"ladder": "observe"}, map[string]func(*appsv1.Deployment){"client": nil})
	framework.WaitAvailable(t, c, "shop")
	framework.WaitAvailable(t, c, "legacy")
	serveWebhook(t, c, "shop", "web", 8443)
	traffic := framework.StartSimulatedTraffic(t, c, legacyToShop, apiServerToHook)
	installCRD(t, cl)
	runOperatorAs(t, cl.Kubeconfig, "default", "--proxy-stats-url="+traffic.ProxyStatsURL())
	mesh := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1.MeshInstallationSpec{
		Rollout: meshv1.RolloutSpec{ObserveTime: &metav1.Duration{Duration: 10 * time.Second}, SoakTime: &metav1.Duration{Duration: 10 * time.Second},
			BakeTime: &metav1.Duration{Duration: bakeWindow}},
		Namespaces: []meshv1.NamespaceRule{
			{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "zt"}}, Level: meshv1.LevelZeroTrust},
			{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "observe"}}, Level: meshv1.LevelObserve},
		},
	}}
	denyAll := watchDenyAll(t, cl, "shop")
	createMesh(t, c, mesh)
	useLocalIstiod(t, cl, c, "default")

	waitBlocked(t, c, "shop", meshv1.ReasonNonMeshCallers, "ValidatingWebhookConfiguration/shop-hook makes the kube-apiserver", "Service hook port 443", "plaintextPorts")
	if strict(t, c) {
		t.Fatal("shop got STRICT while serving an admission webhook nobody exempted")
	}
	if err := c.Get(ctx, client.ObjectKey{Name: "default"}, mesh); err != nil {
		t.Fatal(err)
	}
	mesh.Spec.Namespaces[0].PlaintextPorts = []meshv1.ServicePortRef{{Service: "hook", Port: 443}}
	if err := c.Update(ctx, mesh); err != nil {
		t.Fatal(err)
	}

	waitBlocked(t, c, "shop", meshv1.ReasonWouldDenyTraffic, "legacy/client", "add {namespace: legacy} to allowFrom", "would have denied")
	if shop := framework.GetNamespace(t, c, "shop"); stateOf(shop).Step == nil || shop.Labels[meshv1.LabelLevel] != string(meshv1.LevelMutualTLS) {
		t.Fatalf("shop %v %+v: want the ZeroTrust step still in its dry-run", shop.Labels, stateOf(shop))
	}
	if got := traffic.Sim.Outcomes()[legacyToShop.Key()]; got.DryRunDenied == 0 || got.Denied != 0 {
		t.Fatalf("legacy → shop: %+v; want dry-run denials and no enforced denial", got)
	}

	if err := c.Get(ctx, client.ObjectKey{Name: "default"}, mesh); err != nil {
		t.Fatal(err)
	}
	mesh.Spec.Namespaces[0].AllowFrom = []meshv1.AllowSource{{Namespace: "legacy"}}
	if err := c.Update(ctx, mesh); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 3*time.Minute, "shop at ZeroTrust once legacy is allowed", func() (bool, error) {
		shop := framework.GetNamespace(t, c, "shop")
		return shop.Labels[meshv1.LabelLevel] == string(meshv1.LevelZeroTrust) && stateOf(shop).Step == nil, standing(c, shop)
	})
	if got := traffic.Sim.Outcomes()[legacyToShop.Key()]; got.Denied != 0 || got.Refused != 0 {
		t.Errorf("legacy → shop: %+v; want no call denied or refused on the way to ZeroTrust", got)
	}
	if got := traffic.Sim.Outcomes()[apiServerToHook.Key()]; got.Denied != 0 || got.Refused != 0 || got.Succeeded == 0 {
		t.Errorf("kube-apiserver → webhook: %+v; want calls, none refused or denied: the exempted port stays open at ZeroTrust", got)
	}

	// Down again: the AuthorizationPolicies go, the allow-nothing one first.
	shop := framework.GetNamespace(t, c, "shop")
	patch := client.MergeFrom(shop.DeepCopy())
	shop.Labels[meshv1.LabelTargetLevel] = string(meshv1.LevelMutualTLS)
	if err := c.Patch(ctx, shop, patch); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 2*time.Minute, "shop back at MutualTLS", func() (bool, error) {
		shop := framework.GetNamespace(t, c, "shop")
		return shop.Labels[meshv1.LabelLevel] == string(meshv1.LevelMutualTLS) && stateOf(shop).Step == nil, nil
	})

	// The same gate through a real Prometheus scraping the simulator: legacy is no longer in
	// allowFrom, and shop is raised to ZeroTrust again.
	promURL := readThroughPrometheus(t, c, traffic, func(m *meshv1.MeshInstallation) { m.Spec.Namespaces[0].AllowFrom = nil })
	shop = framework.GetNamespace(t, c, "shop")
	patch = client.MergeFrom(shop.DeepCopy())
	delete(shop.Labels, meshv1.LabelTargetLevel)
	if err := c.Patch(ctx, shop, patch); err != nil {
		t.Fatal(err)
	}
	waitBlocked(t, c, "shop", meshv1.ReasonWouldDenyTraffic, "legacy/client", "add {namespace: legacy} to allowFrom", "would have denied", "Prometheus at "+promURL)
	updateMesh(t, c, func(m *meshv1.MeshInstallation) {
		m.Spec.Namespaces[0].AllowFrom = []meshv1.AllowSource{{Namespace: "legacy"}}
	})
	framework.Eventually(t, 3*time.Minute, "shop at ZeroTrust again once legacy is allowed", func() (bool, error) {
		shop := framework.GetNamespace(t, c, "shop")
		return shop.Labels[meshv1.LabelLevel] == string(meshv1.LevelZeroTrust) && stateOf(shop).Step == nil, standing(c, shop)
	})
	if got := traffic.Sim.Outcomes()[legacyToShop.Key()]; got.Denied != 0 || got.Refused != 0 {
		t.Errorf("legacy → shop: %+v; want no call denied or refused on the way to ZeroTrust", got)
	}
	if seen := denyAll(); len(seen) > 0 {
		t.Errorf("a watcher saw shop deny every call (the allow-nothing policy enforced without the allow policy): %v", seen)
	}
}

// TestBakeRollsBackAStepThatRefusesANewCaller: shop (target MutualTLS) has no caller while it is
// watched at Observe, so its step to STRICT passes the gate. While the step bakes, legacy (not in
// the mesh) starts calling it in plaintext, which STRICT refuses: the bake sees the refusals in
// the proxies' stats (read by the embedded source from the simulator) and rolls the step back,
// the namespace held at Observe with TrafficRegressed and the evidence, the installation Degraded,
// and legacy's calls succeed again. The hold lasts until the spec changes; then the gate takes
// over and holds shop at Observe for legacy's plaintext calls. Then the same through a real
// Prometheus scraping the simulator: the spec now names it, legacy stops calling, shop goes
// STRICT again, legacy calls again during the bake, and the bake, reading Prometheus, rolls the
// step back.
func TestBakeRollsBackAStepThatRefusesANewCaller(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	cl, c := framework.StartCluster(t, cluster.Options{})
	framework.MakeNamespace(t, c, "shop", map[string]string{"ladder": "mtls"}, map[string]func(*appsv1.Deployment){"web": nil})
	framework.MakeNamespace(t, c, "legacy", nil, map[string]func(*appsv1.Deployment){"client": nil})
	framework.WaitAvailable(t, c, "shop")
	framework.WaitAvailable(t, c, "legacy")
	traffic := framework.StartSimulatedTraffic(t, c)
	installCRD(t, cl)
	runOperatorAs(t, cl.Kubeconfig, "default", "--proxy-stats-url="+traffic.ProxyStatsURL())
	mesh := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1.MeshInstallationSpec{
		Rollout:    meshv1.RolloutSpec{ObserveTime: &metav1.Duration{Duration: observeWindow}, BakeTime: &metav1.Duration{Duration: strictBake}},
		Namespaces: gatedSpecRules,
	}}
	createMesh(t, c, mesh)
	useLocalIstiod(t, cl, c, "default")

	refused := callDuringTheBakeAndWaitRolledBack(t, c, traffic, "the proxies' stats endpoints")
	framework.WaitCondition(t, c, "default", meshv1.ConditionDegraded, metav1.ConditionTrue, meshv1.ReasonTrafficRegressed, time.Minute)
	framework.Eventually(t, time.Minute, "legacy's calls to succeed again", func() (bool, error) {
		return traffic.Sim.Outcomes()[legacyToShop.Key()].Succeeded > refused.Succeeded, nil
	})
	// Held until the spec changes: the hold is recorded with the evidence (TestTrafficRegressedHolds
	// shows it keeps the namespace where it is, pass after pass).
	if hold := stateOf(framework.GetNamespace(t, c, "shop")).Hold; hold == nil || hold.Reason != meshv1.ReasonTrafficRegressed {
		t.Fatalf("shop's hold %+v, want one for TrafficRegressed", hold)
	}
	updateMesh(t, c, func(m *meshv1.MeshInstallation) { m.Spec.Rollout.BakeTime = &metav1.Duration{Duration: bakeWindow} })
	waitHeldAtObserve(t, c, meshv1.ReasonPlaintextTraffic, "legacy/client")

	// The same through Prometheus.
	promURL := readThroughPrometheus(t, c, traffic, func(m *meshv1.MeshInstallation) {
		m.Spec.Rollout.BakeTime = &metav1.Duration{Duration: strictBake}
	})
	waitHeldAtObserve(t, c, meshv1.ReasonPlaintextTraffic, "legacy/client", "Prometheus at "+promURL)
	traffic.Sim.SetFlows(nil)
	callDuringTheBakeAndWaitRolledBack(t, c, traffic, "Prometheus at "+promURL)
}

// strictBake is the bake of TestBakeRollsBackAStepThatRefusesANewCaller: long enough for a
// caller started once STRICT is in to be read within it.
const strictBake = 30 * time.Second

// callDuringTheBakeAndWaitRolledBack waits for shop's step to STRICT, has legacy call it in
// plaintext from then on, and waits for the bake, reading source, to roll the step back. It
// returns what had become of legacy's calls then.
func callDuringTheBakeAndWaitRolledBack(t *testing.T, c client.Client, traffic *framework.SimulatedTraffic, source string) trafficsim.Counts {
	t.Helper()
	framework.Eventually(t, 4*time.Minute, "shop's step to STRICT under way", func() (bool, error) {
		return strict(t, c), standing(c, framework.GetNamespace(t, c, "shop"))
	})
	traffic.Sim.SetFlows([]trafficsim.Flow{legacyToShop})
	waitBlocked(t, c, "shop", meshv1.ReasonTrafficRegressed, "refused", "plaintext connection(s)", "envoy_listener_no_filter_chain_match", source, "held at Observe")
	if strict(t, c) || framework.GetNamespace(t, c, "shop").Labels[meshv1.LabelLevel] != string(meshv1.LevelObserve) {
		t.Fatal("shop kept STRICT after its bake saw a caller refused")
	}
	refused := traffic.Sim.Outcomes()[legacyToShop.Key()]
	if refused.Refused == 0 {
		t.Fatalf("legacy → shop: %+v; want the calls STRICT refused", refused)
	}
	return refused
}

// readThroughPrometheus starts a real Prometheus scraping the simulator and points the
// installation's telemetry at it, changing its spec further with change in the same update. It
// returns Prometheus's URL.
func readThroughPrometheus(t *testing.T, c client.Client, traffic *framework.SimulatedTraffic, change func(*meshv1.MeshInstallation)) string {
	t.Helper()
	prom, err := cluster.StartPrometheus(context.Background(), "", t.TempDir(), []cluster.ScrapeTarget{traffic.ScrapeTarget()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prom.Stop)
	updateMesh(t, c, func(m *meshv1.MeshInstallation) {
		m.Spec.Telemetry.Prometheus = &meshv1.PrometheusSource{URL: prom.URL}
		change(m)
	})
	return prom.URL
}

// updateMesh changes the installation's spec, retrying on conflicts with the operator's writes.
func updateMesh(t *testing.T, c client.Client, change func(*meshv1.MeshInstallation)) {
	t.Helper()
	framework.Eventually(t, 30*time.Second, "the MeshInstallation updated", func() (bool, error) {
		mesh := &meshv1.MeshInstallation{}
		if err := c.Get(context.Background(), client.ObjectKey{Name: "default"}, mesh); err != nil {
			return false, err
		}
		change(mesh)
		err := c.Update(context.Background(), mesh)
		return err == nil, err
	})
}

// apiServerToHook is the kube-apiserver calling shop's admission webhook: from outside the mesh,
// in plaintext, on the webhook pods' port.
var apiServerToHook = trafficsim.Flow{External: true, To: trafficsim.Workload{Namespace: "shop", Name: "web"}, Port: 8443, Protocol: trafficsim.TCP, PerSecond: 2}

// serveWebhook makes a workload of a namespace serve an admission webhook, as the API sees it: a
// Service hook (port 443 to the pods' port) and a ValidatingWebhookConfiguration naming it, whose
// rules match nothing, so that no write of the test calls it (kwok's pods serve nothing).
func serveWebhook(t *testing.T, c client.Client, namespace, workload string, port int32) {
	t.Helper()
	ctx := context.Background()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "hook"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": workload},
		Ports: []corev1.ServicePort{{Name: "https", Port: 443, TargetPort: intstr.FromInt32(port)}}}}
	hook := &admissionv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: namespace + "-hook"}, Webhooks: []admissionv1.ValidatingWebhook{{
		Name: "validate." + namespace + ".example.com", ClientConfig: admissionv1.WebhookClientConfig{Service: &admissionv1.ServiceReference{Namespace: namespace, Name: "hook"}},
		SideEffects: ptr.To(admissionv1.SideEffectClassNone), AdmissionReviewVersions: []string{"v1"}, FailurePolicy: ptr.To(admissionv1.Ignore),
		Rules: []admissionv1.RuleWithOperations{{Operations: []admissionv1.OperationType{admissionv1.Create},
			Rule: admissionv1.Rule{APIGroups: []string{"example.com"}, APIVersions: []string{"v1"}, Resources: []string{"nothings"}}}}}}}
	for _, o := range []client.Object{svc, hook} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
}

// watchDenyAll watches a namespace's AuthorizationPolicies, every change in order, and returns
// what it saw of the operator's allow-nothing policy enforced while its allow policy was missing
// or in dry-run: a moment when every call to the namespace is denied.
func watchDenyAll(t *testing.T, cl *cluster.Cluster, namespace string) func() []string {
	t.Helper()
	wc, err := client.NewWithWatch(cl.RESTConfig(), client.Options{Scheme: framework.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var seen []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		enforced := map[string]bool{} // policy name → exists without istio.io/dry-run
		for ctx.Err() == nil {
			list := &unstructured.UnstructuredList{}
			list.SetGroupVersionKind(policy.AuthorizationPolicyGVK.GroupVersion().WithKind("AuthorizationPolicyList"))
			w, err := wc.Watch(ctx, list, client.InNamespace(namespace))
			if err != nil {
				time.Sleep(200 * time.Millisecond) // Istio's CRDs are not installed yet
				continue
			}
			for ev := range w.ResultChan() {
				u, ok := ev.Object.(*unstructured.Unstructured)
				if !ok {
					continue
				}
				enforced[u.GetName()] = ev.Type != watch.Deleted && u.GetAnnotations()[policy.DryRunAnnotation] != "true"
				if enforced[policy.AllowNothingName] && !enforced[policy.AllowName] {
					mu.Lock()
					seen = append(seen, fmt.Sprintf("%s %s at resourceVersion %s", ev.Type, u.GetName(), u.GetResourceVersion()))
					mu.Unlock()
				}
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(seen) }
}
