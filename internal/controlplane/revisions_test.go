package controlplane

import (
	"context"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/apply"
	"github.com/meshwright/meshwright/internal/charts"
	"github.com/meshwright/meshwright/internal/charts/chartstest"
	"github.com/meshwright/meshwright/internal/installed"
	"github.com/meshwright/meshwright/internal/revision"
	"github.com/meshwright/meshwright/internal/stages"
	"github.com/meshwright/meshwright/internal/writecount"
)

// markAvailable plays the Deployment controller for istiod, which envtest does not run.
func markAvailable(t *testing.T, namespace, name string) {
	t.Helper()
	ctx := context.Background()
	dep := &appsv1.Deployment{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, dep); err != nil {
		t.Fatal(err)
	}
	dep.Status = appsv1.DeploymentStatus{ObservedGeneration: dep.Generation, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1,
		Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable"}}}
	if err := k8s.Status().Update(ctx, dep); err != nil {
		t.Fatal(err)
	}
}

func exists(t *testing.T, obj client.Object, namespace, name string) bool {
	t.Helper()
	err := k8s.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, obj)
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil && obj.GetDeletionTimestamp() == nil
}

func webhook(name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("admissionregistration.k8s.io/v1")
	u.SetKind("MutatingWebhookConfiguration")
	return u
}

// pass runs the stage once and records status.revisions as the controller would.
func pass(t *testing.T, stage *Stage, mesh *meshv1.MeshInstallation) stages.Result {
	t.Helper()
	res, err := stage.Reconcile(context.Background(), mesh)
	if err != nil {
		t.Fatal(err)
	}
	if res.Revisions != nil {
		mesh.Status.Revisions = res.Revisions
	}
	return res
}

func labelNamespace(t *testing.T, name, rev string) {
	t.Helper()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(ns), ns); apierrors.IsNotFound(err) {
		ns.Labels = map[string]string{revision.Label: rev}
		if err := k8s.Create(ctx, ns); err != nil {
			t.Fatal(err)
		}
		return
	} else if err != nil {
		t.Fatal(err)
	}
	ns.Labels = map[string]string{revision.Label: rev}
	if err := k8s.Update(ctx, ns); err != nil {
		t.Fatal(err)
	}
}

// setLadder writes a namespace's ladder record as the adoption stage would.
func setLadder(t *testing.T, name, state string) {
	t.Helper()
	ns := &corev1.Namespace{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, ns); err != nil {
		t.Fatal(err)
	}
	metav1.SetMetaDataAnnotation(&ns.ObjectMeta, meshv1.AnnotationLadder, state)
	if err := k8s.Update(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
}

// TestRevisionBasedUpgrade: a new spec.version, from a chart repository, is installed as a
// second revision beside the first; the old revision stays while a namespace selects it; an
// upgrade set back makes the old revision active again and the new one retires; a revision is
// removed (its istiod and webhook, never the shared base objects) only once nothing uses it.
func TestRevisionBasedUpgrade(t *testing.T) {
	const ns = "istio-upgrade"
	repo := chartstest.Serve(t, chartstest.Options{Versions: []string{"1.31.5"}})
	mesh := meshIn(t, "upgrade", ns)
	stage := &Stage{Client: k8s, Reader: k8s, Workloads: k8s, Applier: &apply.Applier{Client: k8s, FieldManager: "meshwright"},
		Charts: &charts.Source{CacheDir: t.TempDir()}}
	dep := func(name string) bool { return exists(t, &appsv1.Deployment{}, ns, name) }

	passCRDs(t, stage, mesh)
	markAvailable(t, ns, "istiod")
	if res := pass(t, stage, mesh); res.State != stages.Ready || res.Reason != meshv1.ReasonControlPlaneReady {
		t.Fatalf("first installation: %+v", res)
	}
	if got := mesh.Status.Revisions; len(got) != 1 || got[0].Name != revision.Default || got[0].Version != "1.31.4" || !got[0].Active {
		t.Fatalf("revisions = %+v, want default at 1.31.4", got)
	}
	labelNamespace(t, "shop-upgrade", revision.Default)

	// The upgrade: a second revision from the repository, the first one untouched.
	mesh.Spec.Version = "1.31.5"
	mesh.Spec.ControlPlane.ChartSource = &meshv1.ChartSource{Repository: repo.URL}
	res := pass(t, stage, mesh)
	if res.Reason != meshv1.ReasonWaitingForIstiod || !strings.Contains(res.Message, "istiod-1-31-5") {
		t.Fatalf("upgrade pass: %+v", res)
	}
	if !dep("istiod") || !dep("istiod-1-31-5") || !exists(t, webhook(""), "", "istio-sidecar-injector-"+ns) || !exists(t, webhook(""), "", "istio-sidecar-injector-1-31-5-"+ns) {
		t.Fatalf("both revisions must run during the upgrade: %v %v %v %v", dep("istiod"), dep("istiod-1-31-5"), exists(t, webhook(""), "", "istio-sidecar-injector-"+ns), exists(t, webhook(""), "", "istio-sidecar-injector-1-31-5-"+ns))
	}
	newDep := &appsv1.Deployment{}
	exists(t, newDep, ns, "istiod-1-31-5")
	if newDep.Labels[meshv1.LabelRevision] != "1-31-5" || newDep.Labels[meshv1.LabelIstioVersion] != "1.31.5" || !strings.HasSuffix(newDep.Spec.Template.Spec.Containers[0].Image, ":1.31.5") {
		t.Errorf("istiod-1-31-5: labels %v, image %s", newDep.Labels, newDep.Spec.Template.Spec.Containers[0].Image)
	}
	markAvailable(t, ns, "istiod-1-31-5")
	res = pass(t, stage, mesh)
	if res.State != stages.Ready || res.Reason != meshv1.ReasonRevisionRetiring || !strings.Contains(res.Message, "shop-upgrade") {
		t.Fatalf("with a namespace on the old revision: %+v", res)
	}
	want := []meshv1.RevisionStatus{{Name: "1-31-5", Version: "1.31.5", Active: true}, {Name: revision.Default, Version: "1.31.4", Namespaces: 1}}
	if !slices.Equal(mesh.Status.Revisions, want) {
		t.Errorf("revisions = %+v, want %+v", mesh.Status.Revisions, want)
	}
	if !dep("istiod") {
		t.Fatal("the old revision was removed while a namespace selects it")
	}
	// A retiring revision is not rebuilt: losing its istiod while it serves is Degraded.
	if err := k8s.Delete(context.Background(), &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "istiod"}}); err != nil {
		t.Fatal(err)
	}
	if res = pass(t, stage, mesh); !res.Degraded || res.State != stages.Ready || !strings.Contains(res.Message, "istiod of revision default is missing") {
		t.Fatalf("a serving retiring revision without istiod: %+v", res)
	}

	// Set back: the old revision is active again (rebuilt), the new one retires while it is used.
	// Status is lost first (restored from a backup without it): the revision history is the
	// operator's record, so the default revision is still rebuilt under its own name.
	mesh.Status = meshv1.MeshInstallationStatus{}
	labelNamespace(t, "shop-upgrade", "1-31-5")
	mesh.Spec.Version = ""
	if res = pass(t, stage, mesh); res.Reason != meshv1.ReasonWaitingForIstiod || !dep("istiod") {
		t.Fatalf("set back: the default revision must be rebuilt: %+v", res)
	}
	markAvailable(t, ns, "istiod")
	res = pass(t, stage, mesh)
	if res.Reason != meshv1.ReasonRevisionRetiring || mesh.Status.Revisions[0].Name != revision.Default || !dep("istiod-1-31-5") {
		t.Fatalf("set back: %+v, revisions %+v", res, mesh.Status.Revisions)
	}
	labelNamespace(t, "shop-upgrade", revision.Default)
	res = pass(t, stage, mesh)
	if res.Reason != meshv1.ReasonControlPlaneReady || dep("istiod-1-31-5") || exists(t, webhook(""), "", "istio-sidecar-injector-1-31-5-"+ns) {
		t.Fatalf("once unused the new revision must go: %+v", res)
	}
	if !dep("istiod") || !exists(t, &corev1.ServiceAccount{}, ns, "istio-reader-service-account") {
		t.Fatal("the active revision and the shared objects must stay")
	}

	// Upgrade again and move the namespace: a pod the default revision injected still holds it;
	// once it is gone the default revision goes, base objects stay.
	mesh.Spec.Version = "1.31.5"
	pass(t, stage, mesh)
	markAvailable(t, ns, "istiod-1-31-5")
	labelNamespace(t, "shop-upgrade", "1-31-5")
	// In a namespace of its own, which no injection webhook selects (envtest cannot call them).
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bare-upgrade"}}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bare", Namespace: "bare-upgrade", Annotations: map[string]string{revision.PodAnnotation: revision.Default}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}, {Name: "istio-proxy", Image: "proxy"}}}}
	if err := k8s.Create(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	res = pass(t, stage, mesh)
	if res.Reason != meshv1.ReasonRevisionRetiring || !strings.Contains(res.Message, "0 namespace(s) and 1 pod(s)") || !dep("istiod") {
		t.Fatalf("a pod of the default revision must keep it: %+v", res)
	}
	if err := k8s.Delete(context.Background(), pod, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	// A move still running from the default revision keeps it: its rollback goes back there.
	setLadder(t, "shop-upgrade", `{"step":{"to":"Observe","started":"2026-11-26T10:00:00Z","id":"m","revision":"1-31-5","from":"default"}}`)
	res = pass(t, stage, mesh)
	if res.Reason != meshv1.ReasonRevisionRetiring || !dep("istiod") {
		t.Fatalf("a namespace moving from the default revision must keep it: %+v", res)
	}
	setLadder(t, "shop-upgrade", `{"revision":"1-31-5"}`)
	res = pass(t, stage, mesh)
	if res.Reason != meshv1.ReasonControlPlaneReady || dep("istiod") || exists(t, webhook(""), "", "istio-sidecar-injector-"+ns) {
		t.Fatalf("the unused default revision must go: %+v", res)
	}
	if !dep("istiod-1-31-5") || !exists(t, &corev1.ServiceAccount{}, ns, "istio-reader-service-account") {
		t.Fatal("the new revision and the shared objects must stay")
	}
	if got := mesh.Status.Revisions; len(got) != 1 || got[0].Name != "1-31-5" || got[0].Namespaces != 1 {
		t.Errorf("revisions = %+v", got)
	}
	// With the old istiod gone, the version is still told (status, then labels).
	if active, err := installed.ActiveRevision(context.Background(), k8s, mesh); err != nil || active != "1-31-5" {
		t.Errorf("ActiveRevision = %q, %v", active, err)
	}
}

// TestChartSourceFailures: a version the repository lacks is UnsupportedVersion (Failed, the
// message lists what it has); an unreachable repository is ChartSourceUnavailable and nothing
// is installed; once the version is installed and serving, losing the repository (an operator
// restart with an empty cache) keeps the stage Ready, Degraded, and writes nothing.
func TestChartSourceFailures(t *testing.T) {
	const ns = "istio-chartsource"
	repo := chartstest.Serve(t, chartstest.Options{Versions: []string{"1.31.5"}})
	mesh := meshIn(t, "chartsource", ns)
	mesh.Spec.ControlPlane.ChartSource = &meshv1.ChartSource{Repository: repo.URL, InsecureHTTP: true}
	var writes writecount.Counter
	c := writes.Wrap(k8s, interceptor.Funcs{})
	newStage := func() *Stage {
		return &Stage{Client: c, Reader: c, Workloads: c, Applier: &apply.Applier{Client: c, FieldManager: "meshwright"}, Charts: &charts.Source{CacheDir: t.TempDir()}}
	}
	tests := []struct {
		name    string
		version string
		fail    int
		state   stages.State
		reason  string
		says    string
	}{
		{"a version the repository lacks", "1.99.0", 0, stages.Failed, meshv1.ReasonUnsupportedVersion, "1.31.5"},
		{"the repository answers 500", "1.31.5", 500, stages.NotReady, meshv1.ReasonChartSourceUnavailable, "untouched"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			repo.Fail(tc.fail)
			defer repo.Fail(0)
			mesh.Spec.Version = tc.version
			before := len(writes.Writes())
			res, err := newStage().Reconcile(context.Background(), mesh)
			if err != nil {
				t.Fatal(err)
			}
			if res.State != tc.state || res.Reason != tc.reason || !strings.Contains(res.Message, tc.says) {
				t.Errorf("result = %+v", res)
			}
			if got := writes.Writes()[before:]; len(got) > 0 {
				t.Errorf("wrote without the charts: %v", got)
			}
		})
	}

	mesh.Spec.Version = "1.31.5"
	stage := newStage()
	passCRDs(t, stage, mesh)
	markAvailable(t, ns, "istiod") // a first installation is the default revision, whatever its version
	if res := pass(t, stage, mesh); res.State != stages.Ready || res.Degraded {
		t.Fatalf("installed from the repository: %+v", res)
	}
	repo.Fail(500)
	defer repo.Fail(0)
	before := len(writes.Writes())
	res := pass(t, newStage(), mesh)
	if res.State != stages.Ready || !res.Degraded || res.Reason != meshv1.ReasonChartSourceUnavailable || !strings.Contains(res.Message, "default keeps serving") {
		t.Errorf("repository lost with the revision serving: %+v", res)
	}
	if got := writes.Writes()[before:]; len(got) > 0 {
		t.Errorf("wrote without the charts: %v", got)
	}
}

// TestLadderRevisions: the revisions a namespace's record keeps installed are those a running
// move goes between and, during a migration to ambient mode (whose namespace no longer carries
// the injection label) or its rollback, the revision the namespace was on: the rollback puts
// its label back, and its injector must still be there.
func TestLadderRevisions(t *testing.T) {
	tests := map[string]struct {
		record string
		want   []string
	}{
		"no record":                   {"", nil},
		"not a record":                {"{", nil},
		"no step":                     {`{"revision":"1-31-4"}`, nil},
		"a move":                      {`{"step":{"to":"MutualTLS","id":"r","revision":"1-31-5","from":"default"}}`, []string{"1-31-5", "default"}},
		"a migration":                 {`{"revision":"1-31-4","step":{"to":"MutualTLS","id":"a","dataPlane":"Ambient"}}`, []string{"1-31-4"}},
		"a migration, default":        {`{"step":{"to":"Observe","id":"a","dataPlane":"Ambient"}}`, []string{"default"}},
		"the rollback of a migration": {`{"revision":"1-31-4","step":{"to":"MutualTLS","id":"b","rollback":true,"dataPlane":"Sidecar"}}`, []string{"1-31-4"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := ladderRevisions(tc.record); !slices.Equal(got, tc.want) {
				t.Errorf("ladderRevisions = %v, want %v", got, tc.want)
			}
		})
	}
}
