package e2e

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/controllers"
	"github.com/meshwright/meshwright/internal/writecount"
	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
)

// TestOperatorReportsTheSample runs the operator binary against the local cluster as it runs in
// a cluster, applies config/samples/ and reads the result back from the API server.
func TestOperatorReportsTheSample(t *testing.T) {
	ctx := context.Background()
	op := runOperator(t, lc)

	if err := cluster.ApplyFiles(ctx, lc.RESTConfig(), filepath.Join(repoRoot, "config", "samples", "meshwright_v1alpha1_meshinstallation.yaml")); err != nil {
		t.Fatal(err)
	}
	// The Certificates and ControlPlane stages complete (the real cert-manager, istiod's pods on
	// kwok), the injection webhook is served (by Istio's real istiod, a local process), the
	// mesh-wide policy is applied and, with no team namespace in this cluster, the ladder has
	// nothing to do: the installation is Ready.
	useLocalIstiod(t, lc, k8s, "default")
	mesh := &meshv1.MeshInstallation{}
	framework.Eventually(t, 120*time.Second, "Ready=True on the sample", func() (bool, error) {
		if err := k8s.Get(ctx, client.ObjectKey{Name: "default"}, mesh); err != nil {
			return false, err
		}
		return mesh.Status.ObservedGeneration == mesh.Generation &&
			meta.IsStatusConditionTrue(mesh.Status.Conditions, meshv1.ConditionReady), nil
	})
	if len(mesh.Finalizers) != 1 || mesh.Finalizers[0] != meshv1.Finalizer {
		t.Fatalf("finalizers = %v, want [%s]", mesh.Finalizers, meshv1.Finalizer)
	}
	wantConds := map[string]string{
		meshv1.ConditionCertificatesReady: meshv1.ReasonCAReady,
		meshv1.ConditionControlPlaneReady: meshv1.ReasonControlPlaneReady,
		meshv1.ConditionInjectionReady:    meshv1.ReasonWebhookServing,
		meshv1.ConditionPoliciesReady:     meshv1.ReasonMeshPolicyApplied,
		meshv1.ConditionAdoptionReady:     meshv1.ReasonNamespacesAtTarget,
		meshv1.ConditionReady:             meshv1.ReasonAllStagesReady,
		meshv1.ConditionProgressing:       meshv1.ReasonAsExpected,
		meshv1.ConditionDegraded:          meshv1.ReasonAsExpected,
	}
	for typ, reason := range wantConds {
		if c := meta.FindStatusCondition(mesh.Status.Conditions, typ); c == nil || c.Reason != reason {
			t.Errorf("condition %s = %+v, want reason %s", typ, c, reason)
		}
	}
	if mesh.Status.Stage != meshv1.StageComplete {
		t.Errorf("stage = %q, want Complete", mesh.Status.Stage)
	}
	if mesh.Status.Certificates == nil || mesh.Status.Certificates.NotAfter == nil {
		t.Fatalf("status.certificates.notAfter is not set: %+v", mesh.Status.Certificates)
	}

	// cacerts holds an intermediate CA that chains to the operator's root.
	cacerts, root := &corev1.Secret{}, &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "istio-system", Name: "cacerts"}, cacerts); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "istio-system", Name: "meshwright-root-ca"}, root); err != nil {
		t.Fatal(err)
	}
	inter, rootCert := framework.Certificate(t, cacerts.Data["tls.crt"]), framework.Certificate(t, root.Data["tls.crt"])
	if !inter.IsCA || !rootCert.IsCA {
		t.Fatal("the intermediate or the root is not a CA")
	}
	pool := x509.NewCertPool()
	pool.AddCert(rootCert)
	if _, err := inter.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("cacerts does not chain to the root: %v", err)
	}
	if !mesh.Status.Certificates.NotAfter.Time.Equal(inter.NotAfter) {
		t.Errorf("status.certificates.notAfter = %s, want %s", mesh.Status.Certificates.NotAfter, inter.NotAfter)
	}
	// A pass over the converged installation writes nothing (cert-manager's defaults and
	// status included).
	passesWriteNothing(t, lc, "the converged installation")

	// The operator held the leader-election lease while it worked.
	lease := &metav1.PartialObjectMetadata{}
	lease.SetGroupVersionKind(coordinationLease)
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "default", Name: "meshwright.meshwright.io"}, lease); err != nil {
		t.Fatalf("leader-election lease: %v", err)
	}

	// Istio's CRDs are kept on delete (they hold users' policies): count them now.
	installedCRDs := istioCRDs(t, k8s)
	if installedCRDs < 10 {
		t.Fatalf("found %d Istio CRDs, want Istio's CRDs installed", installedCRDs)
	}

	// Deleting the sample removes what it created: the running operator cleans up, releases
	// the kept CRDs, and removes the finalizer.
	if err := k8s.Delete(ctx, mesh); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 30*time.Second, "the MeshInstallation to be deleted", func() (bool, error) {
		err := k8s.Get(ctx, client.ObjectKey{Name: "default"}, &meshv1.MeshInstallation{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	// Nothing the operator created is left behind.
	owned := client.MatchingLabels{meshv1.LabelInstallation: "default"}
	for _, list := range []client.ObjectList{&cmv1.CertificateList{}, &cmv1.IssuerList{}, &corev1.SecretList{},
		&appsv1.DeploymentList{}, &corev1.ConfigMapList{}, &corev1.ServiceList{}, &corev1.ServiceAccountList{},
		&rbacv1.ClusterRoleList{}, &rbacv1.ClusterRoleBindingList{}, &admissionv1.MutatingWebhookConfigurationList{},
		&admissionv1.ValidatingWebhookConfigurationList{}, &apiextensionsv1.CustomResourceDefinitionList{}, &corev1.NamespaceList{}} {
		framework.Eventually(t, 30*time.Second, fmt.Sprintf("no %T with the operator's labels", list), func() (bool, error) {
			if err := k8s.List(ctx, list, owned); err != nil {
				return false, err
			}
			return meta.LenList(list) == 0, nil
		})
	}

	if kept := istioCRDs(t, k8s); kept != installedCRDs {
		t.Fatalf("%d of %d Istio CRDs are left; deleting the installation must keep them", kept, installedCRDs)
	}

	// SIGTERM stops it cleanly, within its graceful-shutdown timeout.
	if err := op.stop(syscall.SIGTERM, 45*time.Second); err != nil {
		t.Fatal(err)
	}
}

// operator is the operator binary running against a local cluster.
type operator struct {
	cmd    *exec.Cmd
	exited chan error
	done   bool
	// metrics is the URL of its metrics endpoint (plain HTTP on 127.0.0.1).
	metrics string
}

// runOperator installs the CRD and starts the operator binary as it runs in a cluster (leader
// election on); it is killed at the end of the test, and its log shown if the test failed.
func runOperator(t *testing.T, cl *cluster.Cluster) *operator {
	t.Helper()
	installCRD(t, cl)
	return runOperatorAs(t, cl.Kubeconfig, "default")
}

// installCRD installs the MeshInstallation CRD of config/crd.
func installCRD(t *testing.T, cl *cluster.Cluster) {
	t.Helper()
	if err := cluster.ApplyFiles(context.Background(), cl.RESTConfig(), filepath.Join(repoRoot, "config", "crd", "bases", "meshwright.io_meshinstallations.yaml")); err != nil {
		t.Fatal(err)
	}
}

// runOperatorAs starts the operator binary with a kubeconfig (one that impersonates the
// operator's ServiceAccount, say) and its namespace, which holds its leader-election Lease.
func runOperatorAs(t *testing.T, kubeconfig, namespace string, args ...string) *operator {
	t.Helper()
	return startOperator(t, kubeconfig, namespace, true, args...)
}

// startOperator starts the operator binary; leaderElect off suits tests that kill it with
// SIGKILL, after which a new one would wait out the old one's lease.
func startOperator(t *testing.T, kubeconfig, namespace string, leaderElect bool, args ...string) *operator {
	t.Helper()
	return startOperatorBin(t, managerBin, kubeconfig, namespace, leaderElect, args...)
}

// startOperatorBin is startOperator with another build of the operator (a previous release's).
func startOperatorBin(t *testing.T, bin, kubeconfig, namespace string, leaderElect bool, args ...string) *operator {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "manager.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	metricsPort, err := cluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if bin == managerBin {
		// This build runs with the permissions it ships, as in a real install. (A previous
		// release's binary keeps the kubeconfig it is given: its role was its own.)
		kubeconfig = asShippedRBAC(t, kubeconfig, namespace)
	}
	cmd := exec.Command(bin, "--kubeconfig="+kubeconfig,
		fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", metricsPort), "--metrics-secure=false",
		"--health-probe-bind-address=127.0.0.1:0",
		fmt.Sprintf("--leader-elect=%v", leaderElect), "--leader-election-namespace="+namespace, "--zap-log-level=debug")
	cmd.Args = append(cmd.Args, args...)
	// TMPDIR: its chart cache (under os.TempDir) is its own, as a pod's would be.
	cmd.Env = append(os.Environ(), "POD_NAMESPACE="+namespace, "TMPDIR="+t.TempDir())
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	op := &operator{cmd: cmd, exited: make(chan error, 1), metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)}
	go func() { op.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if t.Failed() {
			// A failed test may have a stuck reconcile: SIGQUIT makes the operator print every
			// goroutine's stack to its log before it exits.
			_ = op.stop(syscall.SIGQUIT, 10*time.Second)
		}
		// SIGTERM first: the operator then releases its leader lease, and the next test's
		// operator does not wait out the lease (15s) to start.
		if err := op.stop(syscall.SIGTERM, 30*time.Second); err != nil {
			t.Error(err)
			_ = op.stop(syscall.SIGKILL, 10*time.Second)
		}
		logFile.Close()
		if t.Failed() || os.Getenv("E2E_SHOW_OPERATOR_LOG") != "" {
			b, _ := os.ReadFile(logPath)
			t.Logf("operator log:\n%s", ownGoroutines(string(b)))
		}
	})
	return op
}

// stop signals the operator and waits for it to exit; an error if it does not in time or
// exits with a failure after SIGTERM.
func (o *operator) stop(sig syscall.Signal, timeout time.Duration) error {
	if o.done {
		return nil
	}
	if err := o.cmd.Process.Signal(sig); err != nil {
		return err
	}
	select {
	case err := <-o.exited:
		o.done = true
		if sig == syscall.SIGTERM && err != nil {
			return fmt.Errorf("the operator exited with %w on SIGTERM", err)
		}
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("the operator did not exit within %s of %s", timeout, sig)
	}
}

var coordinationLease = schema.GroupVersionKind{Group: "coordination.k8s.io", Version: "v1", Kind: "Lease"}

// ownGoroutines shortens a goroutine dump in a log to the goroutines that run the operator's
// own code; the log before the dump is kept whole.
func ownGoroutines(log string) string {
	i := strings.Index(log, "\ngoroutine ")
	if i < 0 {
		return log
	}
	var kept []string
	for _, g := range strings.Split(log[i+1:], "\n\n") {
		if strings.Contains(g, "github.com/meshwright/meshwright/") {
			kept = append(kept, g)
		}
	}
	return log[:i] + "\n--- goroutines in the operator's code at SIGQUIT ---\n" + strings.Join(kept, "\n\n")
}

// passesWriteNothing runs two passes of a reconciler of its own (configured as runOperator's
// operator: its namespace is "default") over the converged installation "default" and fails on
// any write: every desired object is found as it should be, so nothing is sent.
func passesWriteNothing(t *testing.T, cl *cluster.Cluster, what string) {
	t.Helper()
	base, err := client.NewWithWatch(cl.RESTConfig(), client.Options{Scheme: framework.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	writes := &writecount.Counter{}
	counted := writes.Wrap(base, interceptor.Funcs{})
	r := &controllers.MeshInstallationReconciler{Client: counted, Stages: controllers.NewStages(controllers.StageDeps{
		Client: counted, APIReader: base, Mapper: base.RESTMapper(), KubeVersion: "v1.37.2", OperatorNamespace: "default"})}
	for pass := 1; pass <= 2; pass++ {
		if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Name: "default"}}); err != nil {
			t.Fatal(err)
		}
		if n := writes.Total(); n != 0 {
			t.Fatalf("pass %d over %s made %d writes: %v", pass, what, n, writes.Writes())
		}
	}
}

// deleteMeshWhileRunning deletes the installation "default" at the end of the test, before the
// clean-ups registered earlier: call it after starting an operator that replaced another, so
// that one still runs to release the installation.
func deleteMeshWhileRunning(t *testing.T, c client.Client) {
	t.Helper()
	ctx := context.Background()
	t.Cleanup(func() {
		_ = c.Delete(ctx, &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}})
		framework.Eventually(t, 60*time.Second, "the MeshInstallation to be deleted", func() (bool, error) {
			err := c.Get(ctx, client.ObjectKey{Name: "default"}, &meshv1.MeshInstallation{})
			return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
		})
	})
}

// createMesh creates the installation and deletes it at the end of the test, waiting until the
// operator has cleaned up and released it.
func createMesh(t *testing.T, c client.Client, mesh *meshv1.MeshInstallation) {
	t.Helper()
	ctx := context.Background()
	if err := c.Create(ctx, mesh); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Delete(ctx, mesh)
		framework.Eventually(t, 60*time.Second, "the MeshInstallation to be deleted", func() (bool, error) {
			err := c.Get(ctx, client.ObjectKeyFromObject(mesh), &meshv1.MeshInstallation{})
			return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
		})
	})
}
