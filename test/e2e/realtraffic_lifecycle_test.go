package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/revision"
	"github.com/meshwright/meshwright/test/cluster"
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
