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
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/charts/chartstest"
	"github.com/meshwright/meshwright/internal/revision"
	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
	"github.com/meshwright/meshwright/test/proxyless"
)

// meshCall is one steady flow of calls between two proxyless workloads.
type meshCall struct{ namespace, app, target string }

// noFailedCalls checks that none of the flows' calls failed since the readings in before, and
// that each was answered at least min times since: calls that were not made prove nothing.
func noFailedCalls(t *testing.T, r *proxyless.Runner, flows []meshCall, before map[meshCall]proxyless.Counts, min int, during string) map[meshCall]proxyless.Counts {
	t.Helper()
	now := map[meshCall]proxyless.Counts{}
	for _, f := range flows {
		got := callsTo(t, r, f.namespace, f.app, f.target, before[f], "answered "+during, func(got proxyless.Counts) bool {
			return got.OK >= min || got.FailedTotal() > 0
		})
		if since := got.Since(before[f]); since.FailedTotal() > 0 {
			t.Errorf("%s/%s → %s: %s %s; want none failed", f.namespace, f.app, f.target, since, during)
		}
		now[f] = got
	}
	return now
}

// callingPairs deploys, in each of two namespaces labelled labels, a proxyless server (two
// replicas) and a proxyless caller of the other namespace's server, every pod prepared for mTLS
// (security.istio.io/tlsMode, and the ISTIO_MUTUAL DestinationRule their callers need), and
// returns the two flows of calls.
func callingPairs(t *testing.T, cl *cluster.Cluster, c client.Client, r *proxyless.Runner, namespaces [2]string, labels map[string]string) []meshCall {
	t.Helper()
	mtlsOnly := map[string]string{revision.TLSModeLabel: "istio"}
	var flows []meshCall
	var ws []proxyless.Workload
	for i, ns := range namespaces {
		target := proxyless.Target(namespaces[1-i], "server", realTrafficPort)
		ws = append(ws, proxyless.Workload{Namespace: ns, Name: "server", Port: realTrafficPort, Replicas: 2, PodLabels: mtlsOnly},
			proxyless.Workload{Namespace: ns, Name: "caller", Call: target, PodLabels: mtlsOnly})
		flows = append(flows, meshCall{ns, "caller", target})
	}
	deployWorkloads(t, c, r.Node(), map[string]map[string]string{namespaces[0]: labels, namespaces[1]: labels}, ws...)
	applyYAML(t, cl, istioMutual(namespaces[0], "server")+"---\n"+istioMutual(namespaces[1], "server"))
	return flows
}

// answeredOverMTLS waits until each flow is answered over mTLS, seen with its caller's SPIFFE
// identity, and returns the readings from which later failures count: a new caller's first
// calls may fail while its agent and istiod connect.
func answeredOverMTLS(t *testing.T, r *proxyless.Runner, flows []meshCall) map[meshCall]proxyless.Counts {
	t.Helper()
	out := map[meshCall]proxyless.Counts{}
	for _, f := range flows {
		identity := "spiffe://cluster.local/ns/" + f.namespace + "/sa/default"
		out[f] = callsTo(t, r, f.namespace, f.app, f.target, proxyless.Counts{}, "answered over mTLS", func(got proxyless.Counts) bool {
			return got.Seen[identity] >= 5
		})
	}
	return out
}

// upgradeToFreePort is upgradeTo with a webhook port chosen just before: a port chosen long
// before its istiod starts may be taken meanwhile by another test's cluster.
func upgradeToFreePort(t *testing.T, c client.Client, version, repository string) int {
	t.Helper()
	port, err := cluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	upgradeTo(t, c, version, repository, port)
	return port
}

// appRevision is the revision that injected the pods of an app ("mixed" when they differ), and
// whether they are all Ready.
func appRevision(t *testing.T, c client.Client, namespace, app string) (string, bool) {
	t.Helper()
	revs, ready := map[string]bool{}, true
	for _, p := range framework.Pods(t, c, namespace) {
		if p.Labels["app"] == app {
			revs[p.Annotations["istio.io/rev"]] = true
			ready = ready && podIsReady(&p)
		}
	}
	if len(revs) != 1 {
		return "mixed", ready
	}
	for rev := range revs {
		return rev, ready
	}
	return "", ready
}

// lazyError is an error whose message is made when it is read: a wait's last error is read only
// when the wait times out, so a costly report is not made on every poll.
type lazyError func() string

func (e lazyError) Error() string { return e() }

// movesReport is revisionReport of both namespaces, made when read.
func movesReport(c client.Client, namespaces [2]string) error {
	return lazyError(func() string {
		return revisionReport(c, namespaces[0]) + "; " + revisionReport(c, namespaces[1])
	})
}

// revisionReport says where a namespace stands in a move between revisions, for a failure
// message: its revision label and ladder record, each workload's last restart stamp, and each
// pod's revision, readiness and age. It reads with c alone (no helper that may stop the test:
// it runs while a wait formats its message), and says what it could not read.
func revisionReport(c client.Client, namespace string) string {
	ctx := context.Background()
	var b strings.Builder
	ns := &corev1.Namespace{}
	if err := c.Get(ctx, client.ObjectKey{Name: namespace}, ns); err != nil {
		return fmt.Sprintf("%s: %v", namespace, err)
	}
	fmt.Fprintf(&b, "%s (istio.io/rev=%q, record %s):", namespace, ns.Labels["istio.io/rev"], ns.Annotations[meshv1.AnnotationLadder])
	deps := &appsv1.DeploymentList{}
	if err := c.List(ctx, deps, client.InNamespace(namespace)); err != nil {
		fmt.Fprintf(&b, " deployments: %v;", err)
	}
	for _, d := range deps.Items {
		fmt.Fprintf(&b, " deployment %s restarted for %q (updated %d/%d);", d.Name, d.Spec.Template.Annotations[meshv1.AnnotationRestartedFor], d.Status.UpdatedReplicas, d.Status.Replicas)
	}
	pods := &corev1.PodList{}
	if err := c.List(ctx, pods, client.InNamespace(namespace)); err != nil {
		fmt.Fprintf(&b, " pods: %v;", err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		fmt.Fprintf(&b, " pod %s rev %q ready %v created %s;", p.Name, p.Annotations["istio.io/rev"], podIsReady(p), p.CreationTimestamp.UTC().Format(time.TimeOnly))
	}
	return b.String()
}

// checkCertsChainToRoot checks every workload of callingPairs against the root cacerts holds.
func checkCertsChainToRoot(t *testing.T, c client.Client, r *proxyless.Runner, namespaces [2]string) {
	t.Helper()
	for _, ns := range namespaces {
		for _, app := range []string{"server", "caller"} {
			checkWorkloadCertChainsToRoot(t, c, r, ns, app)
		}
	}
}

// TestRealTrafficRootRotation rotates the mesh root under real calls: two namespaces at
// MutualTLS, each with a proxyless server (two replicas) called over mTLS by the other's
// proxyless caller. Through every phase of the rotation (Trust with its restarts of the
// proxies that keep their roots, Switch with its restarts, Drop) no call fails, each phase sees
// calls answered, and at the end every workload's certificate chains to the new root alone,
// the one cacerts holds. Without the Trust phase's restarts, the proxies restarted onto the new
// intermediate and those not yet restarted refuse each other ("unknown certificate authority").
func TestRealTrafficRootRotation(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	ctx := context.Background()
	namespaces := [2]string{"rot-a", "rot-b"}
	cl, c, r := realTrafficMeshWith(t, func(m *meshv1.MeshInstallation) {
		m.Spec.Certificates.TrustPropagation = &metav1.Duration{Duration: 3 * time.Second}
		m.Spec.Rollout.MaxNamespacesInProgress = 1
		m.Spec.Namespaces = []meshv1.NamespaceRule{{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "rot"}}, Level: meshv1.LevelMutualTLS}}
	}, cluster.IstiodOptions{MultiRoot: true})
	flows := callingPairs(t, cl, c, r, namespaces, map[string]string{"ladder": "rot"})
	for _, ns := range namespaces {
		waitLevel(t, c, ns, meshv1.LevelMutualTLS)
	}
	before := answeredOverMTLS(t, r, flows)

	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"real-traffic"}}}`, meshv1.AnnotationRotateRoot)
	if err := c.Patch(ctx, &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatal(err)
	}
	for _, phase := range []string{"Trust", "Switch", "Drop"} {
		waitPhase(t, c, phase)
		before = noFailedCalls(t, r, flows, before, 3, "in phase "+phase)
	}
	waitPhase(t, c, "")
	noFailedCalls(t, r, flows, before, 10, "after the rotation")
	checkCertsChainToRoot(t, c, r, namespaces)
	if roots := rootsIn(t, c, namespaces[0]); len(roots) != 1 {
		t.Errorf("%s trusts %d roots after the rotation, want the new one alone", namespaces[0], len(roots))
	}
}

// TestRealTrafficRevisionUpgrade upgrades the mesh from Istio 1.31.4 (the embedded charts,
// revision "default") to 1.31.5 (charts served by a Helm repository the test runs, revision
// 1-31-5) under real calls: two namespaces at MutualTLS, each with a proxyless server (two
// replicas) called over mTLS by the other's proxyless caller, each revision served by its own
// local istiod. The namespaces move one at a time; the rollout is paused once the first pod of
// the new revision runs, and with both revisions serving, a caller of one calls a server of the
// other. No call fails, before, during (paused or not) or after the moves; every pod ends
// injected by the new revision, its agent connected to the new istiod and its certificate
// chained to the mesh root; the old revision is removed.
func TestRealTrafficRevisionUpgrade(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	namespaces := [2]string{"rev-a", "rev-b"}
	cl, c := framework.StartCluster(t, cluster.Options{})
	steps := watchSteps(t, cl)
	repo := chartstest.Serve(t, chartstest.Options{Versions: []string{"1.31.5"}})
	installCRD(t, cl)
	runOperatorAs(t, cl.Kubeconfig, "default", "--chart-cache-dir="+t.TempDir())
	createMesh(t, c, &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1.MeshInstallationSpec{
		Rollout:    meshv1.RolloutSpec{TrafficGates: meshv1.TrafficGatesSkip, SoakTime: &metav1.Duration{Duration: time.Second}, MaxNamespacesInProgress: 1},
		Namespaces: []meshv1.NamespaceRule{{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "rev"}}, Level: meshv1.LevelMutualTLS}},
	}})
	r := startRunner(t, cl, startIstiod(t, cl, cluster.IstiodOptions{Port: upgradeToFreePort(t, c, "", repo.URL), SyncCA: true}))
	flows := callingPairs(t, cl, c, r, namespaces, map[string]string{"ladder": "rev"})
	for _, ns := range namespaces {
		waitLevel(t, c, ns, meshv1.LevelMutualTLS)
	}
	before := answeredOverMTLS(t, r, flows)

	r.AddIstiod(startIstiod(t, cl, cluster.IstiodOptions{Port: upgradeToFreePort(t, c, "1.31.5", repo.URL), Revision: "1-31-5", SyncCA: true}))

	// Paused once the first pod of the new revision runs: the moves freeze there, both
	// revisions serve, and at least one flow crosses from one to the other.
	framework.Eventually(t, 3*time.Minute, "a pod injected by revision 1-31-5", func() (bool, error) {
		return revisionsOfPods(t, c, namespaces[0])["1-31-5"]+revisionsOfPods(t, c, namespaces[1])["1-31-5"] > 0,
			movesReport(c, namespaces)
	})
	setPaused(t, c, true)
	var crossing string
	framework.Eventually(t, 2*time.Minute, "a flow from one revision to the other, every pod Ready, the rollout paused", func() (bool, error) {
		crossing = ""
		for i, ns := range namespaces {
			from, fromReady := appRevision(t, c, ns, "caller")
			to, toReady := appRevision(t, c, namespaces[1-i], "server")
			if !fromReady || !toReady {
				return false, lazyError(func() string {
					return fmt.Sprintf("%s/caller or %s/server has a pod not Ready: %v; runner problems: %v", ns, namespaces[1-i], movesReport(c, namespaces), r.Problems())
				})
			}
			if from != to {
				crossing = fmt.Sprintf("%s/caller on %s calling %s/server on %s", ns, from, namespaces[1-i], to)
			}
		}
		return crossing != "", movesReport(c, namespaces)
	})
	t.Logf("rollout paused mid-move: %s", crossing)
	before = noFailedCalls(t, r, flows, before, 3, "up to the pause")
	noFailedCalls(t, r, flows, before, 10, "with both revisions serving ("+crossing+")")
	setPaused(t, c, false)
	framework.Eventually(t, 4*time.Minute, "both namespaces on revision 1-31-5", func() (bool, error) {
		return onRevision(t, c, namespaces[0], "1-31-5", 3) && onRevision(t, c, namespaces[1], "1-31-5", 3),
			lazyError(func() string {
				return fmt.Sprintf("%s; %s; runner problems: %v", revisionReport(c, namespaces[0]), revisionReport(c, namespaces[1]), r.Problems())
			})
	})
	noFailedCalls(t, r, flows, before, 10, "across the upgrade")
	checkCertsChainToRoot(t, c, r, namespaces)
	for _, p := range r.Pods() {
		if p.Istiod != "istiod-1-31-5" {
			t.Errorf("%s/%s reaches %q, want the new revision's istiod-1-31-5", p.Namespace, p.Name, p.Istiod)
		}
	}
	if steps.maxAtOnce != 1 {
		t.Errorf("%d namespaces moved at once, want one at a time (maxNamespacesInProgress 1)", steps.maxAtOnce)
	}
	framework.Eventually(t, 2*time.Minute, "the old revision removed", func() (bool, error) {
		return !framework.Exists(t, c, &appsv1.Deployment{}, "istio-system", "istiod"), nil
	})
}
