package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
)

// caRecord reads the operator's record on cacerts: the rotation phase ("" outside one) and the
// root generation.
func caRecord(t *testing.T, c client.Client) (string, int) {
	t.Helper()
	s := &corev1.Secret{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "istio-system", Name: "cacerts"}, s); err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Generation int `json:"generation"`
		Rotation   *struct {
			Phase string `json:"phase"`
		} `json:"rotation"`
	}
	if v, ok := s.Annotations[meshv1.AnnotationCA]; ok {
		if err := json.Unmarshal([]byte(v), &rec); err != nil {
			t.Fatalf("annotation %s: %v", meshv1.AnnotationCA, err)
		}
	}
	if rec.Rotation == nil {
		return "", rec.Generation
	}
	return rec.Rotation.Phase, rec.Generation
}

func waitPhase(t *testing.T, c client.Client, phase string) {
	t.Helper()
	framework.Eventually(t, 2*time.Minute, "rotation phase "+phase, func() (bool, error) {
		got, _ := caRecord(t, c)
		return got == phase, nil
	})
}

// rootsIn reads a namespace's istio-ca-root-cert; nil when istiod has not written it.
func rootsIn(t *testing.T, c client.Client, namespace string) []*x509.Certificate {
	t.Helper()
	cm := &corev1.ConfigMap{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: "istio-ca-root-cert"}, cm); err != nil {
		if client.IgnoreNotFound(err) == nil {
			return nil
		}
		t.Fatal(err)
	}
	return framework.Certificates(t, []byte(cm.Data["root-cert.pem"]))
}

// trustWatch checks, several times a second for the whole test, that every namespace's
// istio-ca-root-cert verifies the chain of every running pod with the proxy: a pod holds a
// certificate of the intermediate istiod's files held when it was created (the one before too,
// for a pod created within istiod's reload delay of a change). It also keeps the most roots each
// namespace's bundle held.
type trustWatch struct {
	mu         sync.Mutex
	violations []string
	maxRoots   map[string]int
	samples    int
}

func watchTrust(t *testing.T, c client.Client, ist *cluster.Istiod, namespaces []string) *trustWatch {
	t.Helper()
	tw := &trustWatch{maxRoots: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	parse := func(data []byte) *x509.Certificate {
		b, _ := pem.Decode(data)
		if b == nil {
			return nil
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil
		}
		return cert
	}
	const reload = 300 * time.Millisecond
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			history := ist.CAHistory()
			for _, ns := range namespaces {
				cm := &corev1.ConfigMap{}
				if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "istio-ca-root-cert"}, cm); err != nil {
					continue
				}
				var roots []*x509.Certificate
				rest := []byte(cm.Data["root-cert.pem"])
				for {
					var b *pem.Block
					b, rest = pem.Decode(rest)
					if b == nil {
						break
					}
					if r, err := x509.ParseCertificate(b.Bytes); err == nil {
						roots = append(roots, r)
					}
				}
				pods := &corev1.PodList{}
				if err := c.List(ctx, pods, client.InNamespace(ns)); err != nil {
					continue
				}
				tw.mu.Lock()
				tw.samples++
				tw.maxRoots[ns] = max(tw.maxRoots[ns], len(roots))
				for _, p := range pods.Items {
					if p.DeletionTimestamp != nil || p.Annotations["sidecar.istio.io/status"] == "" {
						continue
					}
					// Creation times are whole seconds: the pod was created within the second.
					created := p.CreationTimestamp.Time
					for i, h := range history {
						// h was in istiod's files from h.At until the next change.
						if i+1 < len(history) && !history[i+1].At.After(created.Add(-reload)) {
							continue
						}
						if !h.At.Before(created.Add(time.Second)) {
							break
						}
						inter := parse(h.Intermediate)
						trusted := false
						for _, r := range roots {
							trusted = trusted || (inter != nil && inter.CheckSignatureFrom(r) == nil)
						}
						if !trusted && len(tw.violations) < 10 {
							tw.violations = append(tw.violations, fmt.Sprintf("%s: istio-ca-root-cert (%d roots) does not verify the intermediate that signed pod %s (created %s)",
								ns, len(roots), p.Name, created.Format(time.RFC3339Nano)))
						}
					}
				}
				tw.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(150 * time.Millisecond):
			}
		}
	}()
	return tw
}

func (tw *trustWatch) check(t *testing.T, wantRoots int) {
	t.Helper()
	tw.mu.Lock()
	defer tw.mu.Unlock()
	for _, v := range tw.violations {
		t.Error(v)
	}
	for ns, n := range tw.maxRoots {
		if n != wantRoots {
			t.Errorf("%s: istio-ca-root-cert held at most %d roots during the rotation, want %d (both, while signing switched)", ns, n, wantRoots)
		}
	}
	if tw.samples == 0 {
		t.Error("the trust bundles were never sampled")
	}
	tw.maxRoots = map[string]int{}
}

// TestRootRotation rotates the mesh root twice with a real cert-manager and a real istiod whose
// CA files follow the cacerts Secret as a kubelet's mount would (held back now and then, as the
// kubelet's sync delay holds them). First on `meshwright.io/rotate-root`, with the operator
// killed in each phase: Trust (istiod not reloaded yet), Switch (istiod not reloaded yet: no
// workload may restart), Switch (a namespace restarting), Drop (istiod not reloaded yet). Then
// by switching spec.certificates.issuerRef to the user's own CA. Throughout, every
// namespace's istio-ca-root-cert verifies every running proxy's chain; during each rotation it
// holds both roots, and at the end only the new one.
func TestRootRotation(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	ctx := context.Background()
	cl, c := framework.StartCluster(t, cluster.Options{})
	namespaces := []string{"rot-a", "rot-b"}
	for _, ns := range namespaces {
		framework.MakeNamespace(t, c, ns, map[string]string{"ladder": "rot"}, map[string]func(*appsv1.Deployment){"web": nil, "api": nil})
		framework.WaitAvailable(t, c, ns)
	}
	steps := watchSteps(t, cl)
	installCRD(t, cl)
	op := startOperator(t, cl.Kubeconfig, "default", false)
	port, err := cluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(cluster.WebhookValues(port))
	if err != nil {
		t.Fatal(err)
	}
	mesh := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1.MeshInstallationSpec{
		ControlPlane: meshv1.ControlPlaneSpec{Values: &apiextensionsv1.JSON{Raw: raw}},
		Certificates: meshv1.CertificatesSpec{TrustPropagation: &metav1.Duration{Duration: 3 * time.Second}},
		Rollout:      meshv1.RolloutSpec{TrafficGates: meshv1.TrafficGatesSkip, MaxNamespacesInProgress: 1, SoakTime: &metav1.Duration{Duration: time.Second}},
		Namespaces:   []meshv1.NamespaceRule{{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "rot"}}, Level: meshv1.LevelMutualTLS}},
	}}
	createMesh(t, c, mesh)
	ist := startIstiod(t, cl, cluster.IstiodOptions{Port: port, MultiRoot: true, SyncCA: true})
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		m := &meshv1.MeshInstallation{}
		if err := c.Get(ctx, client.ObjectKey{Name: "default"}, m); err == nil {
			b, _ := json.MarshalIndent(m.Status, "", "  ")
			t.Logf("status: %s", b)
		}
		for _, ns := range namespaces {
			t.Logf("%s: %s", ns, framework.GetNamespace(t, c, ns).Annotations[meshv1.AnnotationLadder])
			pods := &corev1.PodList{}
			_ = c.List(ctx, pods, client.InNamespace(ns))
			for _, p := range pods.Items {
				t.Logf("  pod %s created %s deleting %v phase %s", p.Name, p.CreationTimestamp.Format(time.RFC3339Nano), p.DeletionTimestamp != nil, p.Status.Phase)
			}
		}
	})
	framework.WaitCondition(t, c, "default", meshv1.ConditionReady, metav1.ConditionTrue, meshv1.ReasonAllStagesReady, 3*time.Minute)
	framework.Eventually(t, time.Minute, "istiod's root in every namespace", func() (bool, error) {
		for _, ns := range append([]string{"istio-system"}, namespaces...) {
			if len(rootsIn(t, c, ns)) != 1 {
				return false, nil
			}
		}
		return true, nil
	})
	oldRoot := rootsIn(t, c, "istio-system")[0]
	if phase, gen := caRecord(t, c); phase != "" || gen != 0 {
		t.Fatalf("a fresh installation is at generation %d, phase %q: want 0 and no rotation", gen, phase)
	}
	trust := watchTrust(t, c, ist, append([]string{"istio-system"}, namespaces...))
	if multiRoot(t, c) {
		t.Fatal("istiod runs with ISTIO_MULTIROOT_MESH before any rotation: installations that never rotate must keep istiod as it was")
	}

	// Trust, killed before istiod reloads.
	ist.HoldCA(true)
	annotate := func(v string) {
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, meshv1.AnnotationRotateRoot, v)
		if err := c.Patch(ctx, &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
			t.Fatal(err)
		}
	}
	annotate("first")
	waitPhase(t, c, "Trust")
	op = restartOperator(t, cl, op, "rotation phase Trust, istiod still on the old files")
	time.Sleep(2 * time.Second)
	if phase, _ := caRecord(t, c); phase != "Trust" || len(rootsIn(t, c, "rot-a")) != 1 {
		t.Fatalf("phase %s with %d roots in rot-a: the rotation must wait in Trust until istiod publishes both roots", phase, len(rootsIn(t, c, "rot-a")))
	}
	ist.HoldCA(false)
	framework.Eventually(t, time.Minute, "both roots published", func() (bool, error) {
		return len(rootsIn(t, c, "rot-b")) == 2, nil
	})
	// Held again before the Switch reaches istiod: no workload may restart while istiod still
	// signs with the old intermediate.
	ist.HoldCA(true)
	waitPhase(t, c, "Switch")
	time.Sleep(3 * time.Second)
	m := &meshv1.MeshInstallation{}
	if err := c.Get(ctx, client.ObjectKey{Name: "default"}, m); err != nil {
		t.Fatal(err)
	}
	if cond := meta.FindStatusCondition(m.Status.Conditions, meshv1.ConditionCertificatesReady); cond == nil || cond.Reason != meshv1.ReasonRotatingRoot ||
		!strings.Contains(cond.Message, "still serves a certificate of the old one") {
		t.Errorf("CertificatesReady = %+v, want RotatingRoot waiting for istiod to load the new intermediate", cond)
	}
	if r := m.Status.Certificates.Rotation; r == nil || r.Phase != meshv1.RotationSwitch || r.SigningSince != nil {
		t.Errorf("status.certificates.rotation = %+v, want Switch without signingSince", r)
	}
	for _, ns := range namespaces {
		if st := stateOf(framework.GetNamespace(t, c, ns)); st.Step != nil {
			t.Fatalf("%s started %+v before istiod loaded the new intermediate", ns, *st.Step)
		}
	}
	op = restartOperator(t, cl, op, "rotation phase Switch, istiod still on the old intermediate")
	ist.HoldCA(false)

	var killedNS string
	framework.Eventually(t, 2*time.Minute, "a namespace restarting its workloads for the rotation", func() (bool, error) {
		for _, ns := range namespaces {
			if st := stateOf(framework.GetNamespace(t, c, ns)); st.Step != nil && st.Step.Refresh {
				killedNS = ns
				return true, nil
			}
		}
		return false, nil
	})
	op = restartOperator(t, cl, op, "rotation phase Switch, "+killedNS+" restarting")
	// Held once more, so that the Drop phase waits on istiod and the operator is killed in it.
	ist.HoldCA(true)
	waitPhase(t, c, "Drop")
	restartOperator(t, cl, op, "rotation phase Drop, istiod still publishing both roots")
	deleteMeshWhileRunning(t, c)
	time.Sleep(2 * time.Second)
	if phase, _ := caRecord(t, c); phase != "Drop" || len(rootsIn(t, c, "rot-a")) != 2 {
		t.Fatalf("phase %s with %d roots in rot-a: the rotation must wait in Drop until istiod publishes the new root alone", phase, len(rootsIn(t, c, "rot-a")))
	}
	ist.HoldCA(false)

	done := func(gen int32, rotatedFor string) *meshv1.MeshInstallation {
		t.Helper()
		m := &meshv1.MeshInstallation{}
		framework.Eventually(t, 2*time.Minute, fmt.Sprintf("the rotation to generation %d to finish", gen), func() (bool, error) {
			if err := c.Get(ctx, client.ObjectKey{Name: "default"}, m); err != nil {
				return false, err
			}
			cert := m.Status.Certificates
			cond := meta.FindStatusCondition(m.Status.Conditions, meshv1.ConditionCertificatesReady)
			return cert != nil && cert.Generation == gen && cert.Rotation == nil && cert.RotatedFor == rotatedFor &&
				cond != nil && cond.Reason == meshv1.ReasonCAReady && meta.IsStatusConditionTrue(m.Status.Conditions, meshv1.ConditionReady), nil
		})
		cacerts := &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: "istio-system", Name: "cacerts"}, cacerts); err != nil {
			t.Fatal(err)
		}
		want := framework.Certificates(t, cacerts.Data["ca.crt"])
		if len(want) != 1 {
			t.Fatalf("cacerts publishes %d roots after the rotation, want 1", len(want))
		}
		framework.Eventually(t, time.Minute, "only the new root in every namespace", func() (bool, error) {
			for _, ns := range append([]string{"istio-system"}, namespaces...) {
				got := rootsIn(t, c, ns)
				if len(got) != 1 || !got[0].Equal(want[0]) {
					return false, nil
				}
			}
			return true, nil
		})
		return m
	}
	done(1, "first")
	if !multiRoot(t, c) {
		t.Error("istiod's Deployment lacks ISTIO_MULTIROOT_MESH=true after a rotation")
	}
	newRoot := rootsIn(t, c, "istio-system")[0]
	if newRoot.Equal(oldRoot) {
		t.Fatal("the root did not change")
	}
	trust.check(t, 2)
	for _, gone := range []struct{ kind, name string }{
		{"Certificate", "meshwright-root-ca"}, {"Issuer", "meshwright-root-ca"}, {"Certificate", "meshwright-istio-ca"},
	} {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("cert-manager.io/v1")
		u.SetKind(gone.kind)
		if framework.Exists(t, c, u, "istio-system", gone.name) {
			t.Errorf("%s %s of the old root is still there", gone.kind, gone.name)
		}
	}
	if framework.Exists(t, c, &corev1.Secret{}, "istio-system", "meshwright-root-ca") || !framework.Exists(t, c, &corev1.Secret{}, "istio-system", "meshwright-root-ca-1") {
		t.Error("the old root's Secret must be gone and the new one's there")
	}
	if steps.maxAtOnce > 1 {
		t.Errorf("%d namespaces restarted at once, want one at a time (maxNamespacesInProgress 1)", steps.maxAtOnce)
	}
	dep := &appsv1.Deployment{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: killedNS, Name: "web"}, dep); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(dep.Spec.Template.Annotations[meshv1.AnnotationRestartedFor], "certificates-") {
		t.Errorf("%s/web was last restarted for %q, want the rotation's restart", killedNS, dep.Spec.Template.Annotations[meshv1.AnnotationRestartedFor])
	}

	// The second rotation: to the user's own CA, by a change of spec.certificates.issuerRef.
	applyYAML(t, cl, corpCA)
	patch := `{"spec":{"certificates":{"issuerRef":{"kind":"ClusterIssuer","name":"corp-ca"}}}}`
	if err := c.Patch(ctx, &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatal(err)
	}
	m = done(2, "first")
	if got := m.Status.Certificates.Issuer; got != "ClusterIssuer/corp-ca" {
		t.Errorf("status.certificates.issuer = %q, want ClusterIssuer/corp-ca", got)
	}
	corpRoot := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "cert-manager", Name: "corp-root"}, corpRoot); err != nil {
		t.Fatal(err)
	}
	if got := rootsIn(t, c, "rot-a"); len(got) != 1 || !got[0].Equal(framework.Certificates(t, corpRoot.Data["tls.crt"])[0]) {
		t.Error("rot-a does not trust the corporate root alone")
	}
	trust.check(t, 2)
	for _, name := range []string{"meshwright-root-ca-1", "meshwright-istio-ca-1"} {
		if framework.Exists(t, c, &corev1.Secret{}, "istio-system", name) {
			t.Errorf("Secret %s of the previous generation is still there", name)
		}
	}
	if phase, gen := caRecord(t, c); phase != "" || gen != 2 {
		t.Errorf("record: generation %d, phase %q", gen, phase)
	}

	// A renewal: cert-manager reissues the intermediate and the operator composes cacerts from
	// it. While istiod's files are held it keeps signing with the old one, which the operator
	// reports; once they follow, the report clears.
	ist.HoldCA(true)
	if err := c.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "meshwright-istio-ca-2"}}); err != nil {
		t.Fatal(err)
	}
	m = framework.WaitCondition(t, c, "default", meshv1.ConditionDegraded, metav1.ConditionTrue, meshv1.ReasonIstiodCANotLoaded, 2*time.Minute)
	if cond := meta.FindStatusCondition(m.Status.Conditions, meshv1.ConditionDegraded); !strings.Contains(cond.Message, "has not reloaded the renewed CA") {
		t.Errorf("Degraded = %+v", cond)
	}
	ist.HoldCA(false)
	framework.WaitCondition(t, c, "default", meshv1.ConditionDegraded, metav1.ConditionFalse, meshv1.ReasonAsExpected, 2*time.Minute)
}

// multiRoot reports whether istiod's Deployment runs with ISTIO_MULTIROOT_MESH=true.
func multiRoot(t *testing.T, c client.Client) bool {
	t.Helper()
	dep := &appsv1.Deployment{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "istio-system", Name: "istiod"}, dep); err != nil {
		t.Fatal(err)
	}
	for _, ctr := range dep.Spec.Template.Spec.Containers {
		for _, e := range ctr.Env {
			if e.Name == "ISTIO_MULTIROOT_MESH" && e.Value == "true" {
				return true
			}
		}
	}
	return false
}
