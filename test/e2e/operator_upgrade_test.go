package e2e

import (
	"context"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
)

// previousRelease checks out the code of the last released operator (the commit named in
// testdata/previous-release, bumped at each release) and builds its manager. It returns the
// binary and the checkout, whose CRD the old operator was installed with.
func previousRelease(t *testing.T) (bin, dir string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "previous-release"))
	if err != nil {
		t.Fatal(err)
	}
	rev := strings.TrimSpace(string(raw))
	if err := exec.Command("git", "-C", repoRoot, "cat-file", "-e", rev+"^{commit}").Run(); err != nil {
		// A checkout without history (a source tarball, a shallow clone) cannot build it.
		t.Skipf("the previous release %s is not in this checkout's history (%v): clone the repository with its history to run this test", rev, err)
	}
	dir = t.TempDir()
	archive := exec.Command("sh", "-c", `git -C "$1" archive --format=tar "$2" | tar -x -C "$3"`, "sh", repoRoot, rev, dir)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("checking out %s: %v\n%s", rev, err, out)
	}
	bin = filepath.Join(dir, "manager")
	build := exec.Command("go", "build", "-o", bin, "./cmd")
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the previous release %s: %v\n%s", rev, err, out)
	}
	return bin, dir
}

// podUIDs lists a namespace's pods by name and uid: a restart changes them.
func podUIDs(t *testing.T, c client.Client, namespace string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range framework.Pods(t, c, namespace) {
		if isWaypointPod(&p) {
			continue // istiod's, not the namespace's workloads
		}
		out[p.Name] = string(p.UID)
	}
	return out
}

// TestOperatorUpgradeFromPreviousRelease runs the previous release's operator (built from its
// commit) until a mesh is Ready with a namespace at MutualTLS, then replaces it with this build,
// as `helm upgrade` or OLM would (new CRD, new binary). The new operator adopts the mesh without
// writing to any of its objects (every field-manager entry of the operator's is unchanged: a
// write, even of the same values, would change its time) and without restarting a pod; it only
// updates the MeshInstallation's status (with what the new version reports, such as
// status.revisions).
func TestOperatorUpgradeFromPreviousRelease(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	ctx := context.Background()
	oldBin, oldDir := previousRelease(t)
	cl, c := framework.StartCluster(t, cluster.Options{})
	framework.MakeNamespace(t, c, "keep", map[string]string{"ladder": "mtls"}, map[string]func(*appsv1.Deployment){"web": nil})
	framework.WaitAvailable(t, c, "keep")
	if err := cluster.ApplyFiles(ctx, cl.RESTConfig(), filepath.Join(oldDir, "config", "crd", "bases", "meshwright.io_meshinstallations.yaml")); err != nil {
		t.Fatal(err)
	}
	old := startOperatorBin(t, oldBin, cl.Kubeconfig, "default", false)
	mesh := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1.MeshInstallationSpec{
		Namespaces: []meshv1.NamespaceRule{{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "mtls"}}, Level: meshv1.LevelMutualTLS}},
	}}
	if err := c.Create(ctx, mesh); err != nil {
		t.Fatal(err)
	}
	useLocalIstiod(t, cl, c, mesh.Name)
	framework.WaitCondition(t, c, "default", meshv1.ConditionReady, metav1.ConditionTrue, meshv1.ReasonAllStagesReady, 3*time.Minute)
	time.Sleep(5 * time.Second) // the old operator's last passes settle

	// The new build runs as the shipped ServiceAccount (startOperator): its RBAC is installed
	// now, so that it is part of what was there before the upgrade, not a write of the upgrade.
	asShippedRBAC(t, cl.Kubeconfig, "default")
	before := operatorFields(t, c)
	delete(before, "MeshInstallation /default")
	pods := podUIDs(t, c, "keep")
	ladder := framework.GetNamespace(t, c, "keep").Annotations[meshv1.AnnotationLadder]

	if err := old.stop(syscall.SIGTERM, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	installCRD(t, cl)
	startOperator(t, cl.Kubeconfig, "default", false)
	deleteMeshWhileRunning(t, c)
	framework.Eventually(t, time.Minute, "the new operator to report the revision in use", func() (bool, error) {
		if err := c.Get(ctx, client.ObjectKey{Name: "default"}, mesh); err != nil {
			return false, err
		}
		return len(mesh.Status.Revisions) == 1 && mesh.Status.Revisions[0].Name == "default" && mesh.Status.Revisions[0].Version == "1.31.4", nil
	})
	framework.WaitCondition(t, c, "default", meshv1.ConditionReady, metav1.ConditionTrue, meshv1.ReasonAllStagesReady, time.Minute)
	time.Sleep(10 * time.Second) // a write would show in the field managers' entries, however late

	after := operatorFields(t, c)
	delete(after, "MeshInstallation /default")
	checkNothingWritten(t, before, after)
	if got := podUIDs(t, c, "keep"); !maps.Equal(got, pods) {
		t.Errorf("pods changed with the operator upgrade: %v, were %v", got, pods)
	}
	if got := framework.GetNamespace(t, c, "keep").Annotations[meshv1.AnnotationLadder]; got != ladder {
		t.Errorf("the namespace's ladder record changed: %s, was %s", got, ladder)
	}
}
