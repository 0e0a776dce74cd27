package adoption

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/admission"
	"github.com/meshwright/meshwright/internal/apply"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/policy"
	"github.com/meshwright/meshwright/internal/stages"
	"github.com/meshwright/meshwright/internal/testenv"
	"github.com/meshwright/meshwright/internal/traffic"
	"github.com/meshwright/meshwright/internal/writecount"
)

var (
	cfg *rest.Config
	k8s client.WithWatch
)

func TestMain(m *testing.M) {
	testenv.Main(m, func(c *rest.Config) (err error) {
		cfg = c
		if k8s, err = client.NewWithWatch(cfg, client.Options{Scheme: clientgoscheme.Scheme}); err != nil {
			return err
		}
		// The ladder writes Istio's policies: install Istio's CRDs from the charts the operator embeds.
		return testenv.InstallIstioCRDs(context.Background(), k8s)
	})
}

// newStage builds the Adoption stage over c, reading straight from the API server.
func newStage(c client.Client, now time.Time) *Stage {
	return &Stage{Client: c, Reader: k8s, Applier: &apply.Applier{Client: c, FieldManager: "meshwright"}, FieldManager: "meshwright",
		Clock: clocktesting.NewFakePassiveClock(now), Admission: &admission.Checker{Reader: k8s, Writer: c}}
}

// teamNamespace creates a namespace with a Deployment and one Ready pod of it, without the proxy.
func teamNamespace(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"ladder": "on", "owner": "team"}}}); err != nil {
		t.Fatal(err)
	}
	sel := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: name}, Spec: appsv1.DeploymentSpec{
		Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: sel},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web"}}}}}}
	if err := k8s.Create(ctx, dep); err != nil {
		t.Fatal(err)
	}
	rolledOut(t, dep)
	runPod(t, name, "web-1", false)
}

// rolledOut reports a Deployment's rollout as finished, as the Deployment controller would.
func rolledOut(t *testing.T, dep *appsv1.Deployment) {
	t.Helper()
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(dep), dep); err != nil {
		t.Fatal(err)
	}
	dep.Status = appsv1.DeploymentStatus{ObservedGeneration: dep.Generation, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1}
	if err := k8s.Status().Update(context.Background(), dep); err != nil {
		t.Fatal(err)
	}
}

// runPod creates a Ready pod of the Deployment web, with or without Istio's proxy.
func runPod(t *testing.T, namespace, name string, proxy bool) {
	t.Helper()
	ctx := context.Background()
	// Owned as the Deployment controller's pods are: by a ReplicaSet named after the Deployment.
	owner := metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-5d4f8b", UID: "rs-web", Controller: ptr.To(true)}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app": "web"}, OwnerReferences: []metav1.OwnerReference{owner}},
		Spec: corev1.PodSpec{AutomountServiceAccountToken: ptr.To(false), Containers: []corev1.Container{{Name: "web", Image: "web"}}}}
	if proxy {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "istio-proxy", Image: "proxy"})
	}
	if err := k8s.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	if err := k8s.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
}

func meshFor(name string) *meshv1.MeshInstallation {
	return &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1}, Spec: meshv1.MeshInstallationSpec{
		Rollout:    meshv1.RolloutSpec{MaxNamespacesInProgress: 2},
		Namespaces: []meshv1.NamespaceRule{{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "on"}}, Level: meshv1.LevelObserve}},
	}}
}

func getNS(t *testing.T, name string) *corev1.Namespace {
	t.Helper()
	ns := &corev1.Namespace{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, ns); err != nil {
		t.Fatal(err)
	}
	return ns
}

// TestObserveStepAgainstTheAPIServer walks one namespace from Off to Observe: label first, then
// the restart; once the pods carry the proxy the step bakes, its traffic read, and completes
// when the bake time is over; a pass over the result writes nothing; clean-up hands the
// namespace back with the user's labels intact.
func TestObserveStepAgainstTheAPIServer(t *testing.T) {
	ctx := context.Background()
	teamNamespace(t, "team-a")
	mesh := meshFor("ladder-a")
	mesh.Spec.Rollout.BakeTime = &metav1.Duration{Duration: 30 * time.Second}
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	writes := &writecount.Counter{}
	c := writes.Wrap(k8s, interceptor.Funcs{})
	reads := &recordedReads{answer: map[string]traffic.Reading{"team-a": {Source: "Prometheus at http://prom", Inbound: traffic.NewInbound(30 * time.Second)}}}
	stage := func(at time.Time) *Stage {
		st := newStage(c, at)
		st.Traffic = reads
		return st
	}
	clean := reads.answer["team-a"]
	clean.Reporting = true
	reads.answer["team-a"] = clean

	res, err := stage(now).Reconcile(ctx, mesh)
	if err != nil {
		t.Fatal(err)
	}
	if res.State != stages.NotReady || res.Reason != meshv1.ReasonNamespacesProgressing || res.Namespaces.InProgress != 1 || res.Namespaces.Enrolled != 1 {
		t.Fatalf("first pass: %+v %+v", res, res.Namespaces)
	}
	ns := getNS(t, "team-a")
	if ns.Labels[InjectionLabel] != "default" || ns.Labels[meshv1.LabelLevel] != "Off" || ns.Labels["owner"] != "team" {
		t.Errorf("labels after the first pass = %v", ns.Labels)
	}
	var st ladder.State
	if err := json.Unmarshal([]byte(ns.Annotations[meshv1.AnnotationLadder]), &st); err != nil || st.Step == nil || st.Step.To != meshv1.LevelObserve {
		t.Fatalf("ladder annotation = %q (%v)", ns.Annotations[meshv1.AnnotationLadder], err)
	}
	dep := &appsv1.Deployment{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "team-a", Name: "web"}, dep); err != nil {
		t.Fatal(err)
	}
	if got := dep.Spec.Template.Annotations[meshv1.AnnotationRestartedFor]; got != st.Step.ID {
		t.Fatalf("web's template annotation = %q, want the step's ID %q", got, st.Step.ID)
	}
	// The namespace was written before the Deployment: its pods are created injected.
	if w := writes.Writes(); len(w) < 2 || !strings.Contains(w[0], "team-a") || !strings.Contains(w[1], "web") {
		t.Errorf("writes = %v, want the namespace first, then the Deployment", w)
	}

	// The Deployment controller's work: the old pod replaced by an injected one.
	if err := k8s.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "team-a"}}); err != nil {
		t.Fatal(err)
	}
	runPod(t, "team-a", "web-2", true)
	rolledOut(t, dep)

	res, err = stage(now.Add(time.Minute)).Reconcile(ctx, mesh)
	if err != nil {
		t.Fatal(err)
	}
	if res.State != stages.NotReady || res.Namespaces.InProgress != 1 || !strings.Contains(res.Message, "baking") || !slices.Contains(reads.asked[len(reads.asked)-1], "team-a") {
		t.Fatalf("second pass: %+v %+v, want the step baking, its traffic read", res, res.Namespaces)
	}
	res, err = stage(now.Add(90*time.Second)).Reconcile(ctx, mesh)
	if err != nil {
		t.Fatal(err)
	}
	if res.State != stages.Ready || res.Namespaces.Observe != 1 || res.Namespaces.InProgress != 0 {
		t.Fatalf("after the bake: %+v %+v", res, res.Namespaces)
	}
	if ns := getNS(t, "team-a"); ns.Labels[meshv1.LabelLevel] != "Observe" {
		t.Errorf("level = %q, want Observe", ns.Labels[meshv1.LabelLevel])
	}

	writes.Reset()
	if _, err := stage(now.Add(3*time.Minute)).Reconcile(ctx, mesh); err != nil {
		t.Fatal(err)
	}
	if n := writes.Total(); n != 0 {
		t.Errorf("a pass over a namespace at its target made %d writes: %v", n, writes.Writes())
	}

	done, err := newStage(c, now).Cleanup(ctx, mesh)
	if err != nil || !done {
		t.Fatalf("Cleanup = %v, %v", done, err)
	}
	ns = getNS(t, "team-a")
	for _, k := range []string{InjectionLabel, meshv1.LabelLevel} {
		if _, ok := ns.Labels[k]; ok {
			t.Errorf("label %s is left after clean-up: %v", k, ns.Labels)
		}
	}
	if _, ok := ns.Annotations[meshv1.AnnotationLadder]; ok || ns.Labels["owner"] != "team" {
		t.Errorf("after clean-up: labels %v, annotations %v; want only the user's", ns.Labels, ns.Annotations)
	}
}

// TestFailedNamespaceWriteRestartsNothing: the namespace's injection label must be in place
// before any pod restarts, so a failed write of it stops the pass before the restarts.
func TestFailedNamespaceWriteRestartsNothing(t *testing.T) {
	ctx := context.Background()
	teamNamespace(t, "team-b")
	conflict := apierrors.NewConflict(schema.GroupResource{Resource: "namespaces"}, "team-b", fmt.Errorf("the object has been modified"))
	c := interceptor.NewClient(k8s, interceptor.Funcs{
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			if u, ok := obj.(interface{ GetKind() string }); ok && u.GetKind() == "Namespace" {
				return conflict
			}
			return c.Apply(ctx, obj, opts...)
		},
	})
	_, err := newStage(c, time.Now()).Reconcile(ctx, meshFor("ladder-b"))
	if !apierrors.IsConflict(err) {
		t.Fatalf("Reconcile error = %v, want the conflict (the controller requeues it)", err)
	}
	dep := &appsv1.Deployment{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "team-b", Name: "web"}, dep); err != nil {
		t.Fatal(err)
	}
	if v, ok := dep.Spec.Template.Annotations[meshv1.AnnotationRestartedFor]; ok {
		t.Errorf("web was restarted (%s) although its namespace was not labelled", v)
	}
}

// TestOrphanedPoliciesAreRemoved: a namespace whose ladder label and annotation were removed by
// hand still loses the installation's per-namespace policies; the mesh-wide one stays.
func TestOrphanedPoliciesAreRemoved(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{"team-c", meshv1.DefaultControlPlaneNamespace} {
		if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	mesh := meshFor("ladder-c")
	applier := &apply.Applier{Client: k8s, FieldManager: "meshwright"}
	objs := append(policy.ForNamespace(mesh.Name, "team-c", nil, nil, ladder.Effects{Strict: true}), policy.MeshWide(mesh.Name, meshv1.DefaultControlPlaneNamespace))
	for _, o := range objs {
		if _, err := applier.Apply(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := newStage(k8s, time.Now()).Reconcile(ctx, mesh); err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(o.GroupVersionKind())
		err := k8s.Get(ctx, client.ObjectKeyFromObject(o), got)
		wantGone := o.GetNamespace() == "team-c"
		if wantGone != apierrors.IsNotFound(err) {
			t.Errorf("%s %s/%s: get error %v, want removed: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err, wantGone)
		}
	}
}
