package e2e

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/policy"
	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
	"github.com/meshwright/meshwright/test/proxyless"
)

// The RealTraffic tests judge the ladder by calls that really cross the policies the operator
// writes: the workloads are Istio proxyless gRPC processes (see package proxyless), with
// certificates from the local istiod signed by the operator's CA, and mTLS and authorization
// enforced by gRPC's xDS data plane. Envoy is not run: these tests judge only what proxyless
// judges faithfully (STRICT refusing plaintext, identities and certificates, ALLOW and DENY by
// principal or namespace; see docs/testing.md).

// realTrafficPort is where the proxyless servers listen.
const realTrafficPort = 8080

// startRunner plays the pods of a node of its own as proxyless workloads until the test ends,
// reporting what went wrong running them if the test failed.
func startRunner(t *testing.T, cl *cluster.Cluster, ist *cluster.Istiod) *proxyless.Runner {
	t.Helper()
	r, err := proxyless.Start(context.Background(), proxyless.Options{Cluster: cl, Istiod: ist})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("proxyless workloads: problems %v", r.Problems())
			for _, log := range r.Logs() {
				t.Logf("%s:\n%s", log, tailFile(log, 25))
			}
		}
		r.Stop()
	})
	return r
}

// deployWorkloads creates each workload's namespace (labelled), Deployment and Service.
func deployWorkloads(t *testing.T, c client.Client, node string, labels map[string]map[string]string, ws ...proxyless.Workload) {
	t.Helper()
	ctx := context.Background()
	for ns, l := range labels {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: l}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range ws {
		dep, svc := w.Objects(node)
		if svc != nil {
			if err := c.Create(ctx, svc); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Create(ctx, dep); err != nil {
			t.Fatal(err)
		}
	}
}

// callsTo waits until what a workload's calls to target came to since before satisfies ok, and
// returns it.
func callsTo(t *testing.T, r *proxyless.Runner, namespace, app, target string, before proxyless.Counts, what string, ok func(proxyless.Counts) bool) proxyless.Counts {
	t.Helper()
	var got proxyless.Counts
	framework.Eventually(t, 2*time.Minute, fmt.Sprintf("%s/%s → %s: %s", namespace, app, target, what), func() (bool, error) {
		all, err := r.Calls(namespace, app)
		if err != nil {
			return false, err
		}
		got = all[target].Since(before)
		return ok(got), fmt.Errorf("calls since: %s; runner problems: %v", got, r.Problems())
	})
	return all(t, r, namespace, app)[target]
}

func all(t *testing.T, r *proxyless.Runner, namespace, app string) map[string]proxyless.Counts {
	t.Helper()
	got, err := r.Calls(namespace, app)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// plaintextCalls waits until the plaintext driver's calls to a Service since before satisfy ok.
func plaintextCalls(t *testing.T, r *proxyless.Runner, namespace, service string, before proxyless.Counts, what string, ok func(proxyless.Counts) bool) proxyless.Counts {
	t.Helper()
	framework.Eventually(t, 2*time.Minute, "plaintext calls to "+namespace+"/"+service+": "+what, func() (bool, error) {
		got := r.PlaintextCalls(namespace, service).Since(before)
		return ok(got), fmt.Errorf("calls since: %s", got)
	})
	return r.PlaintextCalls(namespace, service)
}

// TestRealTrafficMutualTLSRefusesPlaintext: server (namespace who) is called by a proxyless
// caller (namespace callers) and by a plaintext caller outside the mesh. At Observe, both get
// through, seen as plaintext (a proxyless server under PERMISSIVE serves plaintext only). Once
// the operator moves who to MutualTLS, the plaintext caller is refused, and the proxyless caller,
// given the ISTIO_MUTUAL DestinationRule proxyless clients need to send mTLS, is answered and
// seen by the server with its SPIFFE identity, from a certificate chained to the operator's root.
func TestRealTrafficMutualTLSRefusesPlaintext(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	cl, c := framework.StartCluster(t, cluster.Options{})
	installCRD(t, cl)
	runOperatorAs(t, cl.Kubeconfig, "default")
	createMesh(t, c, &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1.MeshInstallationSpec{
		// Proxyless workloads report no istio_requests_total: the traffic gates have nothing to
		// read, so these steps are gated on pods only.
		Rollout:    meshv1.RolloutSpec{TrafficGates: meshv1.TrafficGatesSkip, SoakTime: &metav1.Duration{Duration: time.Second}},
		Namespaces: gatedSpecRules,
	}})
	ist := useLocalIstiod(t, cl, c, "default")
	r := startRunner(t, cl, ist)

	target := proxyless.Target("who", "server", realTrafficPort)
	deployWorkloads(t, c, r.Node(), map[string]map[string]string{"who": {"ladder": "observe"}, "callers": {"ladder": "observe"}},
		proxyless.Workload{Namespace: "who", Name: "server", Port: realTrafficPort},
		proxyless.Workload{Namespace: "callers", Name: "caller", Calls: []string{target}})
	r.CallPlaintext("who", "server", realTrafficPort)
	for _, ns := range []string{"who", "callers"} {
		waitLevel(t, c, ns, meshv1.LevelObserve)
	}

	observed := callsTo(t, r, "callers", "caller", target, proxyless.Counts{}, "answered in plaintext at Observe", func(got proxyless.Counts) bool {
		return got.Seen["plaintext"] >= 5
	})
	plain := plaintextCalls(t, r, "who", "server", proxyless.Counts{}, "answered at Observe", func(got proxyless.Counts) bool { return got.OK >= 5 })

	setLabel(t, c, "who", "ladder", "mtls")
	waitLevel(t, c, "who", meshv1.LevelMutualTLS)
	if !strictIn(t, c, "who") {
		t.Fatal("who at MutualTLS without its STRICT PeerAuthentication")
	}
	// istiod pushes the policy within seconds: calls made meanwhile may still be answered.
	refused := plaintextCalls(t, r, "who", "server", plain, "refused at MutualTLS", func(got proxyless.Counts) bool {
		return got.Failed["Unavailable"] >= 5
	})
	// STRICT is in force: from now on no call may be answered in plaintext.
	inForce := all(t, r, "callers", "caller")[target]

	// Proxyless clients send mTLS only under an ISTIO_MUTUAL DestinationRule (Envoy's auto-mTLS
	// does not apply to them); the operator does not write one yet, so the test does.
	applyYAML(t, cl, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: server-mtls
  namespace: who
spec:
  host: server.who.svc.cluster.local
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
`)
	caller := "spiffe://cluster.local/ns/callers/sa/default"
	got := callsTo(t, r, "callers", "caller", target, observed, "answered over mTLS and seen as "+caller, func(got proxyless.Counts) bool {
		return got.Seen[caller] >= 5
	})
	if n := got.Since(inForce).Seen["plaintext"]; n != 0 {
		t.Errorf("%d calls of callers/caller answered in plaintext under STRICT", n)
	}
	if p := r.PlaintextCalls("who", "server").Since(refused); p.OK != 0 || p.FailedTotal() == 0 {
		t.Errorf("plaintext calls under STRICT: %s; want every one refused", p)
	}
	checkWorkloadCertChainsToRoot(t, c, r, "callers", "caller")
}

// waitLevel waits until a namespace stands at level with no step under way.
func waitLevel(t *testing.T, c client.Client, namespace string, level meshv1.AdoptionLevel) {
	t.Helper()
	framework.Eventually(t, 3*time.Minute, namespace+" at "+string(level), func() (bool, error) {
		ns := framework.GetNamespace(t, c, namespace)
		return ns.Labels[meshv1.LabelLevel] == string(level) && stateOf(ns).Step == nil, standing(c, ns)
	})
}

// setLabel sets one label of a namespace.
func setLabel(t *testing.T, c client.Client, namespace, key, value string) {
	t.Helper()
	ns := framework.GetNamespace(t, c, namespace)
	patch := client.MergeFrom(ns.DeepCopy())
	ns.Labels[key] = value
	if err := c.Patch(context.Background(), ns, patch); err != nil {
		t.Fatal(err)
	}
}

// strictIn tells whether a namespace carries the ladder's STRICT PeerAuthentication.
func strictIn(t *testing.T, c client.Client, namespace string) bool {
	t.Helper()
	pa := &unstructured.Unstructured{}
	pa.SetGroupVersionKind(policy.PeerAuthenticationGVK)
	return c.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: policy.StrictName}, pa) == nil
}

// checkWorkloadCertChainsToRoot checks that the certificate the agent of each of a workload's
// pods got from istiod names the pod's identity and chains to the root of the cacerts Secret
// the operator issued (the agents write theirs under the pod's directory, OUTPUT_CERTS).
func checkWorkloadCertChainsToRoot(t *testing.T, c client.Client, r *proxyless.Runner, namespace, app string) {
	t.Helper()
	ca := &corev1.Secret{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "istio-system", Name: "cacerts"}, ca); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	for _, root := range framework.Certificates(t, ca.Data["ca.crt"]) {
		roots.AddCert(root)
	}
	checked := 0
	for _, p := range framework.Pods(t, c, namespace) {
		if p.Labels["app"] != app || p.DeletionTimestamp != nil {
			continue
		}
		chain, err := os.ReadFile(filepath.Join(r.CertDir(namespace, p.Name), "cert-chain.pem"))
		if err != nil {
			t.Fatalf("pod %s: the agent's certificate: %v", p.Name, err)
		}
		certs := framework.Certificates(t, chain)
		inter := x509.NewCertPool()
		for _, ic := range certs[1:] {
			inter.AddCert(ic)
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("pod %s: its workload certificate does not chain to the operator's root: %v", p.Name, err)
		}
		want := "spiffe://cluster.local/ns/" + namespace + "/sa/default"
		if len(certs[0].URIs) != 1 || certs[0].URIs[0].String() != want {
			t.Errorf("pod %s: certificate for %v, want %s", p.Name, certs[0].URIs, want)
		}
		checked++
	}
	if checked == 0 {
		t.Fatalf("no running pod of %s/%s", namespace, app)
	}
}
