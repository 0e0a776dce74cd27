package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
)

var (
	peerAuthenticationGVK  = schema.GroupVersionKind{Group: "security.istio.io", Version: "v1", Kind: "PeerAuthentication"}
	authorizationPolicyGVK = schema.GroupVersionKind{Group: "security.istio.io", Version: "v1", Kind: "AuthorizationPolicy"}
)

// ladderState is the operator's record on a namespace (meshwright.io/ladder), as far as the
// tests read it.
type ladderState struct {
	Step *struct {
		To       string `json:"to"`
		ID       string `json:"id"`
		Rollback bool   `json:"rollback"`
		Revision string `json:"revision"`
		Refresh  bool   `json:"refresh"`
	} `json:"step"`
	Revision string `json:"revision"`
	Ambient  bool   `json:"ambient"`
	Hold     *struct {
		Reason string `json:"reason"`
	} `json:"hold"`
}

func stateOf(ns *corev1.Namespace) ladderState {
	var s ladderState
	_ = json.Unmarshal([]byte(ns.Annotations[meshv1.AnnotationLadder]), &s)
	return s
}

// meshWithLocalIstiod creates a MeshInstallation, runs the operator, and serves its webhooks
// with a local istiod (see useLocalIstiod); the installation is deleted at the end.
func meshWithLocalIstiod(t *testing.T, cl *cluster.Cluster, c client.Client, spec meshv1.MeshInstallationSpec) *operator {
	t.Helper()
	op := runOperator(t, cl)
	mesh := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: spec}
	createMesh(t, c, mesh)
	useLocalIstiod(t, cl, c, mesh.Name)
	return op
}

// useLocalIstiod points the installation's webhooks at a local istiod through the istiod
// chart's own values, and starts that istiod once the operator has issued cacerts. It is
// stopped at the end of the test, after the clean-ups registered before it.
func useLocalIstiod(t *testing.T, cl *cluster.Cluster, c client.Client, meshName string) *cluster.Istiod {
	t.Helper()
	return useLocalIstiodWith(t, cl, c, meshName, cluster.IstiodOptions{})
}

// useLocalIstiodWith is useLocalIstiod with more of istiod's options (the port and CA sync are
// set here).
func useLocalIstiodWith(t *testing.T, cl *cluster.Cluster, c client.Client, meshName string, opts cluster.IstiodOptions) *cluster.Istiod {
	t.Helper()
	ctx := context.Background()
	port, err := cluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"controlPlane": map[string]any{"values": cluster.WebhookValues(port)}}})
	mesh := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: meshName}}
	if err := c.Patch(ctx, mesh, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
	// Its CA files follow cacerts as a kubelet mount's would: a reissued intermediate reaches it.
	opts.Port, opts.SyncCA = port, true
	return startIstiod(t, cl, opts)
}

// startIstiod starts a local istiod, stopped at the end of the test (its log shown if the test
// failed).
func startIstiod(t *testing.T, cl *cluster.Cluster, opts cluster.IstiodOptions) *cluster.Istiod {
	t.Helper()
	ist, err := cl.StartIstiod(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("istiod log: %s\n%s", ist.LogPath(), tailFile(ist.LogPath(), 40))
		}
		ist.Stop()
	})
	return ist
}

func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stepWatcher follows every namespace's ladder annotation through a watch (events arrive in
// the API server's order) and records how many namespaces were mid-step at once.
type stepWatcher struct {
	mu        sync.Mutex
	stepping  map[string]bool
	maxAtOnce int
	steps     map[string][]string // namespace → the "to" of each step seen, in order
	ids       map[string]string   // namespace → the ID of its last step seen
}

func watchSteps(t *testing.T, cl *cluster.Cluster) *stepWatcher {
	t.Helper()
	wc, err := client.NewWithWatch(cl.RESTConfig(), client.Options{Scheme: framework.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := wc.Watch(ctx, &corev1.NamespaceList{})
	if err != nil {
		t.Fatal(err)
	}
	sw := &stepWatcher{stepping: map[string]bool{}, steps: map[string][]string{}, ids: map[string]string{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			ns, ok := ev.Object.(*corev1.Namespace)
			if !ok {
				continue
			}
			st := stateOf(ns)
			sw.mu.Lock()
			if ev.Type == watch.Deleted || st.Step == nil {
				delete(sw.stepping, ns.Name)
			} else {
				// A new step is a new ID: the same step resumed after a restart keeps its ID.
				if sw.ids[ns.Name] != st.Step.ID {
					sw.steps[ns.Name] = append(sw.steps[ns.Name], st.Step.To)
					sw.ids[ns.Name] = st.Step.ID
				}
				sw.stepping[ns.Name] = true
			}
			sw.maxAtOnce = max(sw.maxAtOnce, len(sw.stepping))
			sw.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); w.Stop(); <-done })
	return sw
}

// watchDryRun records whether an AuthorizationPolicy of the namespace was ever seen in dry-run.
func watchDryRun(t *testing.T, c client.Client, namespace string) func() (dryRun, enforced bool) {
	t.Helper()
	var mu sync.Mutex
	var sawDry, sawEnforced bool
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			list := &unstructured.UnstructuredList{}
			list.SetGroupVersionKind(authorizationPolicyGVK.GroupVersion().WithKind("AuthorizationPolicyList"))
			if err := c.List(ctx, list, client.InNamespace(namespace)); err == nil {
				mu.Lock()
				for _, p := range list.Items {
					if p.GetAnnotations()["istio.io/dry-run"] == "true" {
						sawDry = true
					} else if sawDry {
						sawEnforced = true
					}
				}
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() (bool, bool) { mu.Lock(); defer mu.Unlock(); return sawDry, sawEnforced }
}

func policyExists(t *testing.T, c client.Client, gvk schema.GroupVersionKind, namespace, name string) (*unstructured.Unstructured, bool) {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	err := c.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, u)
	if apierrors.IsNotFound(err) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return u, true
}

// TestAdoptionLadder takes three namespaces up the ladder to Observe, MutualTLS and ZeroTrust
// with Istio's real injector, stops a namespace with an opted-out pod at Observe, never touches
// kube-system, keeps to one namespace in progress at a time, then walks one namespace down.
func TestAdoptionLadder(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	ctx := context.Background()
	cl, c := framework.StartCluster(t, cluster.Options{})
	framework.MakeNamespace(t, c, "shop-observe", map[string]string{"ladder": "observe"}, map[string]func(*appsv1.Deployment){"web": nil})
	framework.MakeNamespace(t, c, "shop-mtls", map[string]string{"ladder": "mtls"}, map[string]func(*appsv1.Deployment){"api": nil, "worker": nil})
	framework.MakeNamespace(t, c, "shop-zt", map[string]string{"ladder": "zt"}, map[string]func(*appsv1.Deployment){"payments": nil})
	framework.MakeNamespace(t, c, "shop-legacy", map[string]string{"ladder": "mtls"}, map[string]func(*appsv1.Deployment){
		"web": nil,
		"mainframe-bridge": func(d *appsv1.Deployment) {
			d.Spec.Template.Annotations = map[string]string{"sidecar.istio.io/inject": "false"}
		},
	})
	// Two namespaces whose pods the API server would refuse once injected: one enforcing Pod
	// Security restricted (istio-init needs NET_ADMIN and NET_RAW), one whose ResourceQuota has
	// room for another pod but not for its proxy.
	refused := admissionRefusedNamespaces(t, c)
	optedOutCronJob(t, c)
	// shop-cron's CronJob is injected: the local cluster's kwok nodes report no kubelet version
	// Istio can read as 1.33 or later, so its injector gives classic sidecars, with which the
	// Jobs would never complete.
	framework.MakeNamespace(t, c, "shop-cron", map[string]string{"ladder": "observe"}, map[string]func(*appsv1.Deployment){"web": nil})
	cronJob(t, c, "shop-cron", false)
	refused["shop-cron"] = []string{meshv1.ReasonJobsNeedNativeSidecars, "CronJob/report", "classic sidecar", "quitquitquit"}
	for _, ns := range []string{"shop-observe", "shop-mtls", "shop-zt", "shop-legacy", "shop-guarded", "shop-tight", "shop-batch", "shop-cron"} {
		framework.WaitAvailable(t, c, ns)
	}
	uids := map[string]map[string]string{"shop-guarded": podUIDs(t, c, "shop-guarded"), "shop-tight": podUIDs(t, c, "shop-tight"), "shop-cron": podUIDs(t, c, "shop-cron")}
	steps := watchSteps(t, cl)
	dryRun := watchDryRun(t, c, "shop-zt")

	op := meshWithLocalIstiod(t, cl, c, meshv1.MeshInstallationSpec{
		Rollout: meshv1.RolloutSpec{TrafficGates: meshv1.TrafficGatesSkip, MaxNamespacesInProgress: 1, SoakTime: &metav1.Duration{Duration: 3 * time.Second},
			StepTimeout: &metav1.Duration{Duration: 2 * time.Minute}},
		// Without Istio CNI, shop-guarded's Pod Security refuses istio-init (TestDataPlaneLetsRestrictedAndJobsIn
		// shows the same namespace let in with it).
		DataPlane: meshv1.DataPlaneSpec{CNI: meshv1.ModeDisabled},
		Namespaces: []meshv1.NamespaceRule{
			{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "observe"}}, Level: meshv1.LevelObserve},
			{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "mtls"}}, Level: meshv1.LevelMutualTLS},
			{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "zt"}}, Level: meshv1.LevelZeroTrust,
				AllowFrom: []meshv1.AllowSource{{Namespace: "shop-observe"}}},
			// Matches every namespace, kube-system included: kube-system must still never be enrolled.
			{Selector: meshv1.NamespaceSelector{MatchExpressions: []meshv1.SelectorRequirement{{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpExists}}}, Level: meshv1.LevelObserve},
		},
	})

	// The rollout as the metrics endpoint shows it while it runs.
	type series = struct {
		name   string
		labels map[string]string
	}
	during := watchMetrics(t, op, map[string]series{"in progress": {"meshwright_namespaces_in_progress", map[string]string{"installation": "default"}}})

	want := map[string]meshv1.AdoptionLevel{"shop-observe": meshv1.LevelObserve, "shop-mtls": meshv1.LevelMutualTLS,
		"shop-zt": meshv1.LevelZeroTrust, "shop-legacy": meshv1.LevelObserve, "shop-batch": meshv1.LevelObserve}
	mesh := &meshv1.MeshInstallation{}
	framework.Eventually(t, 4*time.Minute, "every namespace at its level and shop-legacy blocked", func() (bool, error) {
		for name, level := range want {
			ns := &corev1.Namespace{}
			if err := c.Get(ctx, client.ObjectKey{Name: name}, ns); err != nil {
				return false, err
			}
			if meshv1.AdoptionLevel(ns.Labels[meshv1.LabelLevel]) != level || stateOf(ns).Step != nil {
				return false, nil
			}
		}
		if err := c.Get(ctx, client.ObjectKey{Name: "default"}, mesh); err != nil {
			return false, err
		}
		// The status is written at the end of the pass that saw the last step settle: wait
		// for it to say so rather than read the one before.
		st := mesh.Status.Namespaces
		adoption := meta.FindStatusCondition(mesh.Status.Conditions, meshv1.ConditionAdoptionReady)
		return st != nil && len(st.Blocked) > 0 && st.InProgress == 0 && st.ZeroTrust == 1 &&
			adoption != nil && adoption.Reason == meshv1.ReasonNamespacesBlocked, nil
	})

	// Every pod of the enrolled namespaces carries Istio's proxy, put there by Istio's injector;
	// the opted-out pods alone do not.
	for name := range want {
		pods := &corev1.PodList{}
		if err := c.List(ctx, pods, client.InNamespace(name)); err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) == 0 {
			t.Fatalf("no pods in %s", name)
		}
		for _, p := range pods.Items {
			if !p.DeletionTimestamp.IsZero() {
				continue
			}
			_, annotated := p.Annotations["sidecar.istio.io/status"]
			proxy := slices.ContainsFunc(append(p.Spec.Containers, p.Spec.InitContainers...), func(c corev1.Container) bool { return c.Name == "istio-proxy" })
			optedOut := p.Labels["app"] == "mainframe-bridge"
			if (annotated && proxy) == optedOut {
				t.Errorf("pod %s/%s: injected=%v proxy=%v, opted out=%v", name, p.Name, annotated, proxy, optedOut)
			}
		}
		ns := framework.GetNamespace(t, c, name)
		if ns.Labels["istio.io/rev"] != "default" {
			t.Errorf("namespace %s labels = %v, want istio.io/rev=default", name, ns.Labels)
		}
	}

	// Policies: STRICT where MutualTLS or above, AuthorizationPolicies enforced in shop-zt after a
	// dry-run, the mesh-wide default PERMISSIVE.
	for name, level := range want {
		_, strict := policyExists(t, c, peerAuthenticationGVK, name, "meshwright-strict")
		if strict != (level == meshv1.LevelMutualTLS || level == meshv1.LevelZeroTrust) {
			t.Errorf("namespace %s at %s: STRICT PeerAuthentication present = %v", name, level, strict)
		}
		_, authz := policyExists(t, c, authorizationPolicyGVK, name, "meshwright-allow-nothing")
		if authz != (level == meshv1.LevelZeroTrust) {
			t.Errorf("namespace %s at %s: allow-nothing AuthorizationPolicy present = %v", name, level, authz)
		}
	}
	allow, ok := policyExists(t, c, authorizationPolicyGVK, "shop-zt", "meshwright-allow")
	if !ok {
		t.Fatal("shop-zt has no allow policy")
	}
	if allow.GetAnnotations()["istio.io/dry-run"] != "" {
		t.Errorf("shop-zt's allow policy is still in dry-run: %v", allow.GetAnnotations())
	}
	sources, _, _ := unstructured.NestedSlice(allow.Object, "spec", "rules")
	if got := fmt.Sprint(sources); !strings.Contains(got, "shop-zt") || !strings.Contains(got, "shop-observe") {
		t.Errorf("shop-zt allow rules = %s, want the namespace itself and shop-observe", got)
	}
	if sawDry, sawEnforced := dryRun(); !sawDry || !sawEnforced {
		t.Errorf("shop-zt's AuthorizationPolicies: dry-run seen %v, then enforced %v; want both", sawDry, sawEnforced)
	}
	meshWide, ok := policyExists(t, c, peerAuthenticationGVK, "istio-system", "default")
	if mode, _, _ := unstructured.NestedString(meshWide.Object, "spec", "mtls", "mode"); !ok || mode != "PERMISSIVE" {
		t.Errorf("mesh-wide PeerAuthentication: found %v, mode %q; want PERMISSIVE", ok, mode)
	}
	// A policy of the operator's that someone deletes is restored: its event counts as a change
	// of the namespace, whose policies the ladder leaves alone while nothing of it changes.
	if strictPA, ok := policyExists(t, c, peerAuthenticationGVK, "shop-mtls", "meshwright-strict"); !ok {
		t.Error("shop-mtls has no STRICT PeerAuthentication to delete")
	} else {
		if err := c.Delete(ctx, strictPA); err != nil {
			t.Fatal(err)
		}
		framework.Eventually(t, time.Minute, "shop-mtls's deleted STRICT PeerAuthentication restored", func() (bool, error) {
			p, ok := policyExists(t, c, peerAuthenticationGVK, "shop-mtls", "meshwright-strict")
			return ok && p.GetUID() != strictPA.GetUID(), nil
		})
	}

	// shop-legacy is held at Observe because of the opted-out pods, which the status names.
	var legacy *meshv1.BlockedNamespace
	for i := range mesh.Status.Namespaces.Blocked {
		if mesh.Status.Namespaces.Blocked[i].Name == "shop-legacy" {
			legacy = &mesh.Status.Namespaces.Blocked[i]
		}
	}
	if legacy == nil || legacy.Reason != meshv1.ReasonUninjectedPods || !strings.Contains(legacy.Message, "mainframe-bridge") {
		t.Errorf("status.namespaces.blocked = %+v, want shop-legacy with UninjectedPods naming the mainframe-bridge pods", mesh.Status.Namespaces.Blocked)
	}
	// shop-batch is held at Observe by its opted-out CronJob, though none of its Jobs ran.
	if i := slices.IndexFunc(mesh.Status.Namespaces.Blocked, func(b meshv1.BlockedNamespace) bool { return b.Name == "shop-batch" }); i < 0 ||
		mesh.Status.Namespaces.Blocked[i].Reason != meshv1.ReasonUninjectedPods || !strings.Contains(mesh.Status.Namespaces.Blocked[i].Message, "CronJob/report") {
		t.Errorf("status.namespaces.blocked = %+v, want shop-batch with UninjectedPods naming CronJob/report", mesh.Status.Namespaces.Blocked)
	}
	if jobs := (&batchv1.JobList{}); c.List(ctx, jobs, client.InNamespace("shop-batch")) != nil || len(jobs.Items) > 0 {
		t.Errorf("shop-batch has Jobs (%d): the CronJob was to hold it with none running", len(jobs.Items))
	}
	checkAdmissionRefused(t, c, mesh, refused, uids)
	if mesh.Status.DataPlane == nil || mesh.Status.DataPlane.Sidecars != meshv1.SidecarsClassic || mesh.Status.DataPlane.CNI != meshv1.CNIDisabled {
		t.Errorf("status.dataPlane = %+v, want classic sidecars on nodes whose kubelet version Istio cannot read as 1.33+, without CNI", mesh.Status.DataPlane)
	}
	checkProxyStartsFirst(t, c, "shop-observe")
	// The Injection stage's probe runs in the control-plane namespace; it names the namespaces
	// whose injected pods the API server refuses, as the ladder found them.
	framework.Eventually(t, time.Minute, "InjectionReady to name shop-guarded", func() (bool, error) {
		m := &meshv1.MeshInstallation{}
		err := c.Get(ctx, client.ObjectKey{Name: "default"}, m)
		cond := meta.FindStatusCondition(m.Status.Conditions, meshv1.ConditionInjectionReady)
		return cond != nil && strings.Contains(cond.Message, "shop-guarded") && strings.Contains(cond.Message, "PodAdmissionRefused"), err
	})
	ns := mesh.Status.Namespaces
	if ns.MutualTLS != 1 || ns.ZeroTrust != 1 || ns.Observe < 2 {
		t.Errorf("status.namespaces = %+v, want 1 MutualTLS, 1 ZeroTrust and Observe for the rest", ns)
	}
	if c := meta.FindStatusCondition(mesh.Status.Conditions, meshv1.ConditionAdoptionReady); c == nil || c.Reason != meshv1.ReasonNamespacesBlocked {
		t.Errorf("AdoptionReady = %+v, want NamespacesBlocked", c)
	}
	if c := meta.FindStatusCondition(mesh.Status.Conditions, meshv1.ConditionInjectionReady); c == nil || c.Reason != meshv1.ReasonWebhookServing {
		t.Errorf("InjectionReady = %+v, want WebhookServing", c)
	}
	checkRolloutMetrics(t, op, during, mesh)

	// kube-system is never enrolled, whatever the selectors say.
	ks := framework.GetNamespace(t, c, "kube-system")
	for _, k := range []string{"istio.io/rev", meshv1.LabelLevel} {
		if v, ok := ks.Labels[k]; ok {
			t.Errorf("kube-system carries %s=%s", k, v)
		}
	}
	if _, ok := ks.Annotations[meshv1.AnnotationLadder]; ok {
		t.Error("kube-system carries the ladder annotation")
	}

	// One namespace at a time, one rung at a time.
	steps.mu.Lock()
	atOnce, zt := steps.maxAtOnce, slices.Clone(steps.steps["shop-zt"])
	steps.mu.Unlock()
	if atOnce != 1 {
		t.Errorf("at most %d namespaces were seen mid-step at once; want exactly 1 (maxNamespacesInProgress: 1)", atOnce)
	}
	if strings.Join(zt, ",") != "Observe,MutualTLS,ZeroTrust" {
		t.Errorf("shop-zt's steps = %v, want Observe, MutualTLS, ZeroTrust", zt)
	}
	// Each step is told as Events on the namespace (a cluster-scoped object: its Events are in
	// the default namespace).
	events := &eventsv1.EventList{}
	if err := c.List(ctx, events); err != nil {
		t.Fatal(err)
	}
	reasons := map[string]int{}
	for _, e := range events.Items {
		if e.Regarding.Kind == "Namespace" && e.Regarding.Name == "shop-zt" {
			reasons[e.Reason]++
		}
	}
	if reasons["StepStarted"] < 3 || reasons["LevelReached"] < 3 || reasons["PoliciesEnforced"] != 1 {
		t.Errorf("events on shop-zt by reason = %v, want 3 StepStarted, 3 LevelReached, 1 PoliciesEnforced", reasons)
	}

	// A pass over the converged ladder (one namespace blocked, the rest at target) writes nothing.
	passesWriteNothing(t, cl, "the converged ladder")

	// Lowering a target walks back down the same rungs: the override label takes shop-zt to Observe.
	zns := framework.GetNamespace(t, c, "shop-zt")
	zns.Labels[meshv1.LabelTargetLevel] = string(meshv1.LevelObserve)
	if err := c.Update(ctx, zns); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, time.Minute, "shop-zt to walk down to Observe", func() (bool, error) {
		ns := &corev1.Namespace{}
		if err := c.Get(ctx, client.ObjectKey{Name: "shop-zt"}, ns); err != nil {
			return false, err
		}
		return ns.Labels[meshv1.LabelLevel] == string(meshv1.LevelObserve) && stateOf(ns).Step == nil, nil
	})
	for _, p := range []struct {
		gvk  schema.GroupVersionKind
		name string
	}{{peerAuthenticationGVK, "meshwright-strict"}, {authorizationPolicyGVK, "meshwright-allow-nothing"}, {authorizationPolicyGVK, "meshwright-allow"}} {
		if _, ok := policyExists(t, c, p.gvk, "shop-zt", p.name); ok {
			t.Errorf("%s %s is still in shop-zt at Observe", p.gvk.Kind, p.name)
		}
	}
	steps.mu.Lock()
	zt = slices.Clone(steps.steps["shop-zt"])
	steps.mu.Unlock()
	if strings.Join(zt, ",") != "Observe,MutualTLS,ZeroTrust,MutualTLS,Observe" {
		t.Errorf("shop-zt's steps = %v, want up to ZeroTrust and down through MutualTLS to Observe", zt)
	}
}

// checkRolloutMetrics: the metrics endpoint tells the same story as the status: namespaces per
// level, blocked, none in progress once converged (and some while it ran), the conditions, the
// CA's remaining life, every stage's durations and the ladder's steps.
func checkRolloutMetrics(t *testing.T, op *operator, during *metricWatch, mesh *meshv1.MeshInstallation) {
	t.Helper()
	during.end()
	if got := during.highest("in progress"); got < 1 {
		t.Errorf("meshwright_namespaces_in_progress never rose above %v during the rollout", got)
	}
	families, err := scrape(op.metrics)
	if err != nil {
		t.Fatal(err)
	}
	inst := map[string]string{"installation": mesh.Name}
	with := func(k, v string) map[string]string {
		return map[string]string{"installation": mesh.Name, k: v}
	}
	st := mesh.Status.Namespaces
	for _, w := range []struct {
		what   string
		name   string
		labels map[string]string
		want   float64
	}{
		{"enrolled namespaces still at Off", "meshwright_namespaces", with("level", "Off"), float64(st.Pending)},
		{"namespaces at Observe", "meshwright_namespaces", with("level", "Observe"), float64(st.Observe)},
		{"namespaces at MutualTLS", "meshwright_namespaces", with("level", "MutualTLS"), float64(st.MutualTLS)},
		{"namespaces at ZeroTrust", "meshwright_namespaces", with("level", "ZeroTrust"), float64(st.ZeroTrust)},
		{"blocked namespaces", "meshwright_namespaces_blocked", inst, float64(st.BlockedCount)},
		{"namespaces in progress", "meshwright_namespaces_in_progress", inst, 0},
		{"the Adoption condition's series", "meshwright_condition", map[string]string{"installation": mesh.Name, "type": meshv1.ConditionAdoptionReady, "reason": meshv1.ReasonNamespacesBlocked}, 1},
		{"shop-zt's three steps up, at least", "meshwright_ladder_events_total", with("reason", "StepStarted"), -3},
	} {
		got, ok := sampleOf(families, w.name, w.labels)
		switch {
		case !ok:
			t.Errorf("%s: no %s%v on the metrics endpoint", w.what, w.name, w.labels)
		case w.want < 0 && got < -w.want:
			t.Errorf("%s: %s%v = %v, want at least %v", w.what, w.name, w.labels, got, -w.want)
		case w.want >= 0 && got != w.want:
			t.Errorf("%s: %s%v = %v, want %v as status says", w.what, w.name, w.labels, got, w.want)
		}
	}
	if st.ZeroTrust != 1 || st.BlockedCount < 1 {
		t.Errorf("status.namespaces = %+v: the comparison above needs one at ZeroTrust and one blocked", st)
	}
	if v, ok := sampleOf(families, "meshwright_ca_expiry_seconds", inst); !ok || v <= 0 ||
		mesh.Status.Certificates == nil || v > time.Until(mesh.Status.Certificates.NotAfter.Time).Seconds()+5 {
		t.Errorf("meshwright_ca_expiry_seconds = %v (found %v), want the seconds left until status.certificates.notAfter", v, ok)
	}
	for _, stage := range []meshv1.Stage{meshv1.StageCertificates, meshv1.StageControlPlane, meshv1.StageInjection, meshv1.StagePolicies, meshv1.StageAdoption} {
		if n, ok := sampleOf(families, "meshwright_stage_duration_seconds", map[string]string{"stage": string(stage)}); !ok || n < 1 {
			t.Errorf("meshwright_stage_duration_seconds{stage=%q}: %v passes timed, want some", stage, n)
		}
	}
}

// TestLadderRollsBackAStepThatBreaksPods enrolls a namespace whose node has no room for the
// sidecar's resources: the injected pods stay Pending, so the step is reverted after the step
// timeout, the namespace is held at Off and the installation reports Degraded.
func TestLadderRollsBackAStepThatBreaksPods(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	ctx := context.Background()
	cl, c := framework.StartCluster(t, cluster.Options{})
	taint := corev1.Taint{Key: "pool", Value: "small", Effect: corev1.TaintEffectNoSchedule}
	if err := cl.AddNode(ctx, cluster.NodeOptions{Name: "small", CPU: "300m", Memory: "8Gi", Labels: map[string]string{"pool": "small"}, Taints: []corev1.Taint{taint}}); err != nil {
		t.Fatal(err)
	}
	framework.MakeNamespace(t, c, "tight", map[string]string{"ladder": "observe"}, map[string]func(*appsv1.Deployment){
		"web": func(d *appsv1.Deployment) {
			spec := &d.Spec.Template.Spec
			spec.NodeSelector = map[string]string{"pool": "small"}
			spec.Tolerations = []corev1.Toleration{{Key: "pool", Operator: corev1.TolerationOpEqual, Value: "small", Effect: corev1.TaintEffectNoSchedule}}
			spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}
		},
	})
	framework.WaitAvailable(t, c, "tight")

	op := meshWithLocalIstiod(t, cl, c, meshv1.MeshInstallationSpec{
		Rollout: meshv1.RolloutSpec{TrafficGates: meshv1.TrafficGatesSkip, StepTimeout: &metav1.Duration{Duration: 15 * time.Second}},
		Namespaces: []meshv1.NamespaceRule{
			{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "observe"}}, Level: meshv1.LevelObserve},
		},
	})

	mesh := framework.WaitCondition(t, c, "default", meshv1.ConditionDegraded, metav1.ConditionTrue, meshv1.ReasonRolledBack, 3*time.Minute)
	if mesh.Status.Namespaces == nil {
		t.Fatal("status.namespaces is not set")
	}
	blocked := mesh.Status.Namespaces.Blocked
	if len(blocked) != 1 || blocked[0].Name != "tight" || blocked[0].Reason != meshv1.ReasonRolledBack || !strings.Contains(blocked[0].Message, "not Ready") {
		t.Errorf("status.namespaces.blocked = %+v, want tight, RolledBack, naming the unready pods", blocked)
	}
	ns := framework.GetNamespace(t, c, "tight")
	if ns.Labels[meshv1.LabelLevel] != string(meshv1.LevelOff) || ns.Labels["istio.io/rev"] != "" {
		t.Errorf("tight's labels = %v, want level Off and no injection label", ns.Labels)
	}
	if st := stateOf(ns); st.Hold == nil || st.Hold.Reason != meshv1.ReasonRolledBack {
		t.Errorf("tight's ladder state = %s, want a hold", ns.Annotations[meshv1.AnnotationLadder])
	}
	// The rollback restarted the workload again: its pods are back, Ready and without the proxy.
	framework.Eventually(t, 90*time.Second, "tight's pods to be Ready again without the proxy", func() (bool, error) {
		pods := &corev1.PodList{}
		if err := c.List(ctx, pods, client.InNamespace("tight")); err != nil {
			return false, err
		}
		n := 0
		for _, p := range pods.Items {
			if !p.DeletionTimestamp.IsZero() {
				continue
			}
			if _, injected := p.Annotations["sidecar.istio.io/status"]; injected || !podIsReady(&p) {
				return false, nil
			}
			n++
		}
		return n == 2, nil
	})

	// One rollback on the metrics endpoint, and the Degraded condition the alert fires on.
	families, err := scrape(op.metrics)
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := sampleOf(families, "meshwright_rollbacks_total", map[string]string{"installation": "default"}); n != 1 {
		t.Errorf("meshwright_rollbacks_total = %v (found %v), want 1", n, ok)
	}
	if v, ok := sampleOf(families, "meshwright_condition", map[string]string{"installation": "default", "type": meshv1.ConditionDegraded, "status": "True"}); v != 1 {
		t.Errorf("meshwright_condition{type=Degraded,status=True} = %v (found %v), want 1", v, ok)
	}

	// The hold stays while the spec is unchanged; a spec change releases it and the ladder tries again.
	time.Sleep(3 * time.Second)
	if st := stateOf(framework.GetNamespace(t, c, "tight")); st.Hold == nil || st.Step != nil {
		t.Fatalf("the held namespace moved without a spec change: %+v", st)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: "default"}, mesh); err != nil {
		t.Fatal(err)
	}
	mesh.Spec.Rollout.StepTimeout = &metav1.Duration{Duration: 10 * time.Minute}
	if err := c.Update(ctx, mesh); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 30*time.Second, "the hold to be released by the spec change", func() (bool, error) {
		st := stateOf(framework.GetNamespace(t, c, "tight"))
		return st.Hold == nil && st.Step != nil && st.Step.To == string(meshv1.LevelObserve), nil
	})
}

func podIsReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// TestLadderSurvivesOperatorKills takes two namespaces up to MutualTLS and ZeroTrust while the
// operator is killed (SIGKILL, no clean-up of any kind) at seeded random moments and started
// again. The ladder's state lives on the namespaces, so each new operator resumes the steps where
// they were: the namespaces end at their levels with exactly their policies, every pod injected,
// and never more than one namespace mid-step, across restarts.
// killPoint says where the rollout stood when the operator was killed: the first stage that is
// not Ready, or the ladder steps in progress. `make test-chaos` runs many trials and prints them.
func killPoint(t *testing.T, c client.Client) string {
	t.Helper()
	mesh := &meshv1.MeshInstallation{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: "default"}, mesh); err != nil {
		return "unknown (" + err.Error() + ")"
	}
	for _, cond := range []string{meshv1.ConditionCertificatesReady, meshv1.ConditionControlPlaneReady, meshv1.ConditionInjectionReady, meshv1.ConditionPoliciesReady} {
		if !meta.IsStatusConditionTrue(mesh.Status.Conditions, cond) {
			return "stage " + strings.TrimSuffix(cond, "Ready")
		}
	}
	var steps []string
	nss := &corev1.NamespaceList{}
	if err := c.List(context.Background(), nss); err != nil {
		return "unknown (" + err.Error() + ")"
	}
	for _, ns := range nss.Items {
		if st := stateOf(&ns).Step; st != nil {
			steps = append(steps, fmt.Sprintf("%s %s→%s", ns.Name, ns.Labels[meshv1.LabelLevel], st.To))
		}
	}
	if len(steps) == 0 {
		return "stage Adoption, between steps"
	}
	return "step " + strings.Join(steps, ", ")
}

func TestLadderSurvivesOperatorKills(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	ctx := context.Background()
	seed := time.Now().UnixNano()
	if s := os.Getenv("E2E_SEED"); s != "" {
		if _, err := fmt.Sscan(s, &seed); err != nil {
			t.Fatalf("E2E_SEED=%q: %v", s, err)
		}
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("seed %d (set E2E_SEED to replay the same kill times)", seed)

	cl, c := framework.StartCluster(t, cluster.Options{})
	framework.MakeNamespace(t, c, "kill-mtls", map[string]string{"ladder": "mtls"}, map[string]func(*appsv1.Deployment){"api": nil, "worker": nil})
	framework.MakeNamespace(t, c, "kill-zt", map[string]string{"ladder": "zt"}, map[string]func(*appsv1.Deployment){"payments": nil})
	for _, ns := range []string{"kill-mtls", "kill-zt"} {
		framework.WaitAvailable(t, c, ns)
	}
	steps := watchSteps(t, cl)
	if err := cluster.ApplyFiles(ctx, cl.RESTConfig(), filepath.Join(repoRoot, "config", "crd", "bases", "meshwright.io_meshinstallations.yaml")); err != nil {
		t.Fatal(err)
	}
	op := startOperator(t, cl.Kubeconfig, "default", false)
	mesh := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1.MeshInstallationSpec{
		Rollout: meshv1.RolloutSpec{TrafficGates: meshv1.TrafficGatesSkip, MaxNamespacesInProgress: 1, SoakTime: &metav1.Duration{Duration: 3 * time.Second}},
		Namespaces: []meshv1.NamespaceRule{
			{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "mtls"}}, Level: meshv1.LevelMutualTLS},
			{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "zt"}}, Level: meshv1.LevelZeroTrust},
		},
	}}
	if err := c.Create(ctx, mesh); err != nil {
		t.Fatal(err)
	}
	kills := 0
	var killedAt []string
	kill := func() {
		t.Helper()
		killedAt = append(killedAt, killPoint(t, c))
		if err := op.stop(syscall.SIGKILL, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		kills++
		op = startOperator(t, cl.Kubeconfig, "default", false)
	}
	// Early kills, while the CA and the control plane are set up (istiod can only start after),
	// each a little later than the one before so that the operator gets further every time.
	for i := 0; i < 6 && !controlPlaneRendered(ctx, c); i++ {
		time.Sleep(time.Duration(700*(i+1)+rng.IntN(1500)) * time.Millisecond)
		kill()
	}
	useLocalIstiod(t, cl, c, mesh.Name)

	converged := func() bool {
		for name, level := range map[string]meshv1.AdoptionLevel{"kill-mtls": meshv1.LevelMutualTLS, "kill-zt": meshv1.LevelZeroTrust} {
			ns := &corev1.Namespace{}
			if err := c.Get(ctx, client.ObjectKey{Name: name}, ns); err != nil || ns.Labels[meshv1.LabelLevel] != string(level) || stateOf(ns).Step != nil {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(4 * time.Minute)
	for !converged() {
		if time.Now().After(deadline) {
			t.Fatalf("not converged after 4 minutes and %d kills", kills)
		}
		time.Sleep(time.Duration(1500+rng.IntN(3000)) * time.Millisecond)
		if converged() {
			break
		}
		kill()
	}
	if kills < 3 {
		t.Logf("only %d kills happened before convergence", kills)
	}
	t.Logf("converged after %d kills, at: %s", kills, strings.Join(killedAt, "; "))

	for name, want := range map[string][]string{
		"kill-mtls": {"PeerAuthentication/meshwright-strict"},
		"kill-zt":   {"AuthorizationPolicy/meshwright-allow", "AuthorizationPolicy/meshwright-allow-nothing", "PeerAuthentication/meshwright-strict"},
	} {
		var got []string
		for _, gvk := range []schema.GroupVersionKind{authorizationPolicyGVK, peerAuthenticationGVK} {
			list := &unstructured.UnstructuredList{}
			list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
			if err := c.List(ctx, list, client.InNamespace(name)); err != nil {
				t.Fatal(err)
			}
			for _, p := range list.Items {
				got = append(got, gvk.Kind+"/"+p.GetName())
				if p.GetAnnotations()["istio.io/dry-run"] != "" {
					t.Errorf("%s %s/%s is still in dry-run", gvk.Kind, name, p.GetName())
				}
			}
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("policies in %s = %v, want exactly %v", name, got, want)
		}
		pods := &corev1.PodList{}
		if err := c.List(ctx, pods, client.InNamespace(name)); err != nil {
			t.Fatal(err)
		}
		for _, p := range pods.Items {
			if _, injected := p.Annotations["sidecar.istio.io/status"]; p.DeletionTimestamp.IsZero() && (!injected || !podIsReady(&p)) {
				t.Errorf("pod %s/%s: injected %v, Ready %v", name, p.Name, injected, podIsReady(&p))
			}
		}
	}
	steps.mu.Lock()
	defer steps.mu.Unlock()
	if steps.maxAtOnce != 1 {
		t.Errorf("%d namespaces were mid-step at once across restarts; want 1", steps.maxAtOnce)
	}
	for ns, seen := range steps.steps {
		for i := 1; i < len(seen); i++ {
			if seen[i] == seen[i-1] {
				t.Errorf("%s took the step to %s twice in a row (%v): a restart started it again", ns, seen[i], seen)
			}
		}
	}
}
