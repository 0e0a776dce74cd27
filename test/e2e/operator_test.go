package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/test/cluster"
)

// TestOperatorReportsTheSample runs the operator binary against the local cluster as it runs in
// a cluster, applies config/samples/ and reads the result back from the API server.
func TestOperatorReportsTheSample(t *testing.T) {
	ctx := context.Background()
	if err := cluster.ApplyFiles(ctx, lc.RESTConfig(), filepath.Join(repoRoot, "config", "crd", "bases", "meshwright.io_meshinstallations.yaml")); err != nil {
		t.Fatal(err)
	}

	logPath := filepath.Join(t.TempDir(), "manager.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	mgr := exec.Command(managerBin, "--kubeconfig="+lc.Kubeconfig,
		"--metrics-bind-address=127.0.0.1:0", "--metrics-secure=false",
		"--health-probe-bind-address=127.0.0.1:0",
		"--leader-elect", "--leader-election-namespace=default")
	mgr.Stdout, mgr.Stderr = logFile, logFile
	mgr.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := mgr.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- mgr.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = mgr.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("operator log:\n%s", b)
		}
	})

	if err := cluster.ApplyFiles(ctx, lc.RESTConfig(), filepath.Join(repoRoot, "config", "samples", "meshwright_v1alpha1_meshinstallation.yaml")); err != nil {
		t.Fatal(err)
	}
	mesh := &meshv1.MeshInstallation{}
	eventually(t, 60*time.Second, "the operator to report on the sample", func() (bool, error) {
		if err := k8s.Get(ctx, client.ObjectKey{Name: "default"}, mesh); err != nil {
			return false, err
		}
		return mesh.Status.ObservedGeneration == mesh.Generation, nil
	})
	if len(mesh.Finalizers) != 1 || mesh.Finalizers[0] != meshv1.Finalizer {
		t.Fatalf("finalizers = %v, want [%s]", mesh.Finalizers, meshv1.Finalizer)
	}
	for _, typ := range []string{meshv1.ConditionCertificatesReady, meshv1.ConditionControlPlaneReady, meshv1.ConditionInjectionReady,
		meshv1.ConditionPoliciesReady, meshv1.ConditionReady, meshv1.ConditionProgressing, meshv1.ConditionDegraded} {
		c := meta.FindStatusCondition(mesh.Status.Conditions, typ)
		if c == nil || c.Status != metav1.ConditionUnknown || c.Reason != meshv1.ReasonPending {
			t.Fatalf("condition %s = %+v, want Unknown/Pending", typ, c)
		}
	}
	// The operator held the leader-election lease while it worked.
	lease := &metav1.PartialObjectMetadata{}
	lease.SetGroupVersionKind(coordinationLease)
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "default", Name: "meshwright.meshwright.io"}, lease); err != nil {
		t.Fatalf("leader-election lease: %v", err)
	}

	// Deleting the sample releases it: the finalizer is removed by the running operator.
	if err := k8s.Delete(ctx, mesh); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the MeshInstallation to be deleted", func() (bool, error) {
		err := k8s.Get(ctx, client.ObjectKey{Name: "default"}, &meshv1.MeshInstallation{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})

	// SIGTERM stops it cleanly, within its graceful-shutdown timeout.
	if err := mgr.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Fatalf("the operator exited with %v on SIGTERM", err)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("the operator did not exit within 45s of SIGTERM")
	}
}

var coordinationLease = schema.GroupVersionKind{Group: "coordination.k8s.io", Version: "v1", Kind: "Lease"}
