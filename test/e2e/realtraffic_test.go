package e2e

import (
	"context"
	"crypto/x509"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/policy"
	"github.com/meshwright/meshwright/internal/revision"
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

// realTrafficMesh is a cluster of the test's own with the operator, an installation enrolling
// namespaces by rules, a local istiod and a runner playing the pods of its node as proxyless
// workloads. Proxyless workloads report no istio_requests_total: the traffic gates have nothing
// to read, so the steps are gated on pods only.
func realTrafficMesh(t *testing.T, rules []meshv1.NamespaceRule) (*cluster.Cluster, client.Client, *proxyless.Runner) {
	t.Helper()
	return realTrafficMeshWith(t, func(m *meshv1.MeshInstallation) { m.Spec.Namespaces = rules }, cluster.IstiodOptions{})
}

// realTrafficMeshWith is realTrafficMesh with an installation changed by change (from one with
// traffic gates skipped and a soak of a second) and the local istiod started with opts (its
// port and CA sync set here).
func realTrafficMeshWith(t *testing.T, change func(*meshv1.MeshInstallation), opts cluster.IstiodOptions) (*cluster.Cluster, client.Client, *proxyless.Runner) {
	t.Helper()
	cl, c := framework.StartCluster(t, cluster.Options{})
	installCRD(t, cl)
	runOperatorAs(t, cl.Kubeconfig, "default")
	mesh := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1.MeshInstallationSpec{
		Rollout: meshv1.RolloutSpec{TrafficGates: meshv1.TrafficGatesSkip, SoakTime: &metav1.Duration{Duration: time.Second}},
	}}
	change(mesh)
	createMesh(t, c, mesh)
	ist := useLocalIstiodWith(t, cl, c, "default", opts)
	return cl, c, startRunner(t, cl, ist)
}

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
			logs := r.Logs()
			for _, name := range slices.Sorted(maps.Keys(logs)) {
				t.Logf("%s (%s):\n%s", name, logs[name], tailFile(logs[name], 25))
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

// all is what a workload's calls came to so far, by target; an application that has just
// started may not serve its counts yet, so it is asked again for a while.
func all(t *testing.T, r *proxyless.Runner, namespace, app string) map[string]proxyless.Counts {
	t.Helper()
	var got map[string]proxyless.Counts
	framework.Eventually(t, 30*time.Second, "the calls of "+namespace+"/"+app, func() (bool, error) {
		var err error
		got, err = r.Calls(namespace, app)
		return err == nil, err
	})
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

// TestRealTrafficMutualTLS: a proxyless server (namespace who) is called by a proxyless caller
// (namespace callers) and by a plaintext caller outside the mesh. At Observe both get through,
// seen as plaintext: a proxyless server under PERMISSIVE serves plaintext only. Its step to
// MutualTLS is held with ProxylessPlaintext (STRICT would refuse both callers at once, with no
// safe order of changes) and nothing fails meanwhile. Once its owner does what the message says
// (the tlsMode label on the pods, an ISTIO_MUTUAL DestinationRule for the callers), the step
// goes on: at MutualTLS the plaintext caller is refused, and the proxyless caller is answered
// and seen with its SPIFFE identity, from a certificate chained to the operator's root. All of
// it under the traffic gates (the default): proxyless pods report no telemetry, and the gates
// judge them on their spec instead of waiting for series that never come. Asked for ZeroTrust
// then, who waits with ProxylessNoDryRun (gRPC would enforce the dry-run policies at once), and
// no AuthorizationPolicy is written.
func TestRealTrafficMutualTLS(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	cl, c, r := realTrafficMeshWith(t, func(m *meshv1.MeshInstallation) {
		m.Spec.Rollout.TrafficGates = meshv1.TrafficGatesEnforce
		m.Spec.Namespaces = append(slices.Clone(gatedSpecRules), meshv1.NamespaceRule{
			Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "zt"}}, Level: meshv1.LevelZeroTrust})
	}, cluster.IstiodOptions{})

	target := proxyless.Target("who", "server", realTrafficPort)
	deployWorkloads(t, c, r.Node(), map[string]map[string]string{"who": {"ladder": "observe"}, "callers": {"ladder": "observe"}},
		proxyless.Workload{Namespace: "who", Name: "server", Port: realTrafficPort},
		proxyless.Workload{Namespace: "callers", Name: "caller", Call: target})
	r.CallPlaintext("who", "server", realTrafficPort)
	for _, ns := range []string{"who", "callers"} {
		waitLevel(t, c, ns, meshv1.LevelObserve)
	}
	observed := callsTo(t, r, "callers", "caller", target, proxyless.Counts{}, "answered in plaintext at Observe", func(got proxyless.Counts) bool {
		return got.Seen["plaintext"] >= 5
	})
	plain := plaintextCalls(t, r, "who", "server", proxyless.Counts{}, "answered at Observe", func(got proxyless.Counts) bool { return got.OK >= 5 })

	setLabel(t, c, "who", "ladder", "mtls")
	waitBlocked(t, c, "who", meshv1.ReasonProxylessPlaintext, "grpc-agent", "server-", "security.istio.io/tlsMode=istio", "ISTIO_MUTUAL")
	// Held, both callers keep being answered (several calls each, none failed, no STRICT).
	callsTo(t, r, "callers", "caller", target, observed, "answered while who is held", func(got proxyless.Counts) bool {
		return got.OK >= 10 && got.FailedTotal() == 0
	})
	plaintextCalls(t, r, "who", "server", plain, "answered while who is held", func(got proxyless.Counts) bool { return got.OK >= 10 && got.FailedTotal() == 0 })
	if strictIn(t, c, "who") {
		t.Fatal("who got STRICT while held with ProxylessPlaintext")
	}

	// What the message asks: the label on the server's pods (a rollout), and the DestinationRule
	// that makes proxyless callers send mTLS.
	applyYAML(t, cl, istioMutual("who", "server"))
	dep := &appsv1.Deployment{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "who", Name: "server"}, dep); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(dep.DeepCopy())
	dep.Spec.Template.Labels[revision.TLSModeLabel] = "istio"
	if err := c.Patch(context.Background(), dep, patch); err != nil {
		t.Fatal(err)
	}
	waitLevel(t, c, "who", meshv1.LevelMutualTLS)
	if !strictIn(t, c, "who") {
		t.Fatal("who at MutualTLS without its STRICT PeerAuthentication")
	}
	// The new pod may come up after the level is reached: calls made meanwhile may be answered.
	refused := plaintextCalls(t, r, "who", "server", plain, "refused at MutualTLS", func(got proxyless.Counts) bool {
		return got.Failed["Unavailable"] >= 5
	})
	// mTLS is in force: from now on no call may be answered in plaintext.
	inForce := all(t, r, "callers", "caller")[target]
	caller := "spiffe://cluster.local/ns/callers/sa/default"
	got := callsTo(t, r, "callers", "caller", target, inForce, "answered over mTLS and seen as "+caller, func(got proxyless.Counts) bool {
		return got.Seen[caller] >= 5
	})
	if n := got.Since(inForce).Seen["plaintext"]; n != 0 {
		t.Errorf("%d calls of callers/caller answered in plaintext at MutualTLS", n)
	}
	if p := r.PlaintextCalls("who", "server").Since(refused); p.OK != 0 || p.FailedTotal() == 0 {
		t.Errorf("plaintext calls at MutualTLS: %s; want every one refused", p)
	}
	checkWorkloadCertChainsToRoot(t, c, r, "callers", "caller")

	// ZeroTrust under the traffic gates: no dry run can be made for a proxyless server.
	atMutualTLS := all(t, r, "callers", "caller")[target]
	setLabel(t, c, "who", "ladder", "zt")
	waitBlocked(t, c, "who", meshv1.ReasonProxylessNoDryRun, "server-", "istio.io/dry-run", "trafficGates: Skip")
	callsTo(t, r, "callers", "caller", target, atMutualTLS, "answered while who is held below ZeroTrust", func(got proxyless.Counts) bool {
		return got.Seen[caller] >= 5 && got.FailedTotal() == 0
	})
	policies := &unstructured.UnstructuredList{}
	policies.SetGroupVersionKind(schema.GroupVersionKind{Group: "security.istio.io", Version: "v1", Kind: "AuthorizationPolicyList"})
	if err := c.List(context.Background(), policies, client.InNamespace("who")); err != nil {
		t.Fatal(err)
	}
	if len(policies.Items) != 0 {
		t.Errorf("who has %d AuthorizationPolicies while held with ProxylessNoDryRun, want none", len(policies.Items))
	}
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

// istioMutual is the DestinationRule a proxyless client needs to send mTLS to a Service.
func istioMutual(namespace, service string) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: %[2]s-mtls
  namespace: %[1]s
spec:
  host: %[2]s.%[1]s.svc.cluster.local
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
`, namespace, service)
}

// admitted judges, by real calls, whether a caller is admitted by a server: its calls since
// before are answered with its SPIFFE identity and none fails. It returns why not, nil when
// admitted; it waits until the calls say so or 2 minutes pass.
func admitted(r *proxyless.Runner, namespace, app, target string, before proxyless.Counts) error {
	identity := "spiffe://cluster.local/ns/" + namespace + "/sa/default"
	deadline := time.Now().Add(2 * time.Minute)
	for {
		all, err := r.Calls(namespace, app)
		if err != nil {
			return err
		}
		got := all[target].Since(before)
		switch {
		case got.FailedTotal() > 0:
			return fmt.Errorf("%s/%s → %s: %s", namespace, app, target, got)
		case got.Seen[identity] >= 10:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("%s/%s → %s: %s; want 10 answered as %s", namespace, app, target, got, identity)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestRealTrafficZeroTrustAdmitsOnlyAllowFrom: a proxyless server in who is called by proxyless
// callers in callers (listed in allowFrom) and in others (not listed); both caller namespaces
// are at Observe. The server requires mTLS from the start (security.istio.io/tlsMode, with the
// ISTIO_MUTUAL DestinationRule its callers need: Istio's way for proxyless mTLS), so the climb
// changes nothing for its allowed callers. As the operator takes who up to ZeroTrust, no call
// of callers fails, and once ZeroTrust is enforced the caller in others is refused with
// PERMISSION_DENIED while callers' calls are answered with their SPIFFE identity. The same judge
// (admitted) refuses a deliberately wrong policy: a hand-written ALLOW policy naming callers'
// principal in another trust domain, in front of a second server.
func TestRealTrafficZeroTrustAdmitsOnlyAllowFrom(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	cl, c, r := realTrafficMesh(t, []meshv1.NamespaceRule{
		{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "zt"}}, Level: meshv1.LevelZeroTrust,
			AllowFrom: []meshv1.AllowSource{{Namespace: "callers"}}},
		{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "observe"}}, Level: meshv1.LevelObserve},
	})

	mtlsOnly := map[string]string{revision.TLSModeLabel: "istio"}
	who, wrong := proxyless.Target("who", "server", realTrafficPort), proxyless.Target("wrong", "server", realTrafficPort)
	observe := map[string]string{"ladder": "observe"}
	deployWorkloads(t, c, r.Node(), map[string]map[string]string{"who": observe, "callers": observe, "others": observe, "wrong": observe},
		proxyless.Workload{Namespace: "who", Name: "server", Port: realTrafficPort, PodLabels: mtlsOnly},
		proxyless.Workload{Namespace: "wrong", Name: "server", Port: realTrafficPort, PodLabels: mtlsOnly},
		proxyless.Workload{Namespace: "callers", Name: "caller", Call: who},
		proxyless.Workload{Namespace: "callers", Name: "caller-of-wrong", Call: wrong},
		proxyless.Workload{Namespace: "others", Name: "caller", Call: who})
	applyYAML(t, cl, istioMutual("who", "server")+"---\n"+istioMutual("wrong", "server")+`---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: callers-in-another-trust-domain
  namespace: wrong
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["other.example/ns/callers/sa/default"]
`)
	for _, ns := range []string{"who", "callers", "others", "wrong"} {
		waitLevel(t, c, ns, meshv1.LevelObserve)
	}
	// A new caller's first calls may fail while its agent and istiod connect: judged from its
	// first answers on.
	climbing := callsTo(t, r, "callers", "caller", who, proxyless.Counts{}, "answered at Observe", func(got proxyless.Counts) bool { return got.OK >= 5 })
	wrongBefore := callsTo(t, r, "callers", "caller-of-wrong", wrong, proxyless.Counts{}, "refused or answered", func(got proxyless.Counts) bool {
		return got.OK+got.Failed["PermissionDenied"] > 0
	})

	setLabel(t, c, "who", "ladder", "zt")
	waitLevel(t, c, "who", meshv1.LevelZeroTrust)
	callsTo(t, r, "others", "caller", who, all(t, r, "others", "caller")[who], "refused with PERMISSION_DENIED at ZeroTrust",
		func(got proxyless.Counts) bool { return got.Failed["PermissionDenied"] >= 5 && got.OK == 0 })
	if err := admitted(r, "callers", "caller", who, climbing); err != nil {
		t.Errorf("callers is in allowFrom, so no call of its may fail on who's way to ZeroTrust: %v", err)
	}

	// The judge is not blind: a policy that names callers in the wrong trust domain refuses it.
	err := admitted(r, "callers", "caller-of-wrong", wrong, wrongBefore)
	if err == nil || !strings.Contains(err.Error(), "PermissionDenied") {
		t.Errorf("callers → wrong, behind an ALLOW policy for another trust domain: %v; want its calls refused with PermissionDenied", err)
	}
}
