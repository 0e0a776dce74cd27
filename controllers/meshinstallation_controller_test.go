package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientevents "k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/stages"
	"github.com/meshwright/meshwright/internal/writecount"
)

// countingClient wraps the real client and counts every write, including status writes.
func countingClient(t *testing.T, w *writecount.Counter, faults interceptor.Funcs) client.WithWatch {
	t.Helper()
	base, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return w.Wrap(base, faults)
}

func newMesh(t *testing.T, name string) *meshv1.MeshInstallation {
	t.Helper()
	m := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8s.Create(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteMesh(t, name) })
	return m
}

// deleteMesh removes a MeshInstallation even when no controller is left to release its finalizer.
func deleteMesh(t *testing.T, name string) {
	ctx := context.Background()
	m := &meshv1.MeshInstallation{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: name}, m); err != nil {
		return
	}
	_ = k8s.Delete(ctx, m)
	if err := k8s.Get(ctx, client.ObjectKey{Name: name}, m); err == nil && len(m.Finalizers) > 0 {
		m.Finalizers = nil
		_ = k8s.Update(ctx, m)
	}
}

func reconcileOnce(t *testing.T, r *MeshInstallationReconciler, name string) (ctrl.Result, error) {
	t.Helper()
	return r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Name: name}})
}

func getMesh(t *testing.T, name string) *meshv1.MeshInstallation {
	t.Helper()
	m := &meshv1.MeshInstallation{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestFirstPassSetsFinalizerAndEveryCondition(t *testing.T) {
	newMesh(t, "first-pass")
	r := newReconciler(t, k8s)
	if _, err := reconcileOnce(t, r, "first-pass"); err != nil {
		t.Fatal(err)
	}
	m := getMesh(t, "first-pass")
	if !containsString(m.Finalizers, meshv1.Finalizer) {
		t.Fatalf("finalizer %s missing: %v", meshv1.Finalizer, m.Finalizers)
	}
	if m.Status.ObservedGeneration != m.Generation {
		t.Fatalf("observedGeneration = %d, want %d", m.Status.ObservedGeneration, m.Generation)
	}
	if m.Status.Version == "" {
		t.Fatal("status.version is empty; want the default Istio version")
	}
	// envtest has no cert-manager: the first stage says so and nothing past it is touched.
	want := map[string]struct {
		status metav1.ConditionStatus
		reason string
	}{
		meshv1.ConditionCertificatesReady: {metav1.ConditionFalse, meshv1.ReasonCertManagerNotFound},
		meshv1.ConditionControlPlaneReady: {metav1.ConditionUnknown, meshv1.ReasonWaitingForPreviousStage},
		meshv1.ConditionInjectionReady:    {metav1.ConditionUnknown, meshv1.ReasonWaitingForPreviousStage},
		meshv1.ConditionPoliciesReady:     {metav1.ConditionUnknown, meshv1.ReasonWaitingForPreviousStage},
		meshv1.ConditionAdoptionReady:     {metav1.ConditionUnknown, meshv1.ReasonWaitingForPreviousStage},
		meshv1.ConditionReady:             {metav1.ConditionFalse, meshv1.ReasonCertManagerNotFound},
		meshv1.ConditionProgressing:       {metav1.ConditionFalse, meshv1.ReasonCertManagerNotFound},
		meshv1.ConditionDegraded:          {metav1.ConditionFalse, meshv1.ReasonAsExpected},
	}
	for typ, w := range want {
		c := meta.FindStatusCondition(m.Status.Conditions, typ)
		if c == nil {
			t.Fatalf("condition %s missing; have %v", typ, m.Status.Conditions)
		}
		if c.Status != w.status || c.Reason != w.reason || c.ObservedGeneration != m.Generation || c.Message == "" {
			t.Errorf("condition %s = %s/%s gen %d %q; want %s/%s at generation %d with a message", typ, c.Status, c.Reason, c.ObservedGeneration, c.Message, w.status, w.reason, m.Generation)
		}
	}
	if m.Status.Stage != meshv1.StageCertificates {
		t.Errorf("stage = %q, want %q", m.Status.Stage, meshv1.StageCertificates)
	}
}

// newReconciler builds the reconciler with the standard stages over the given client.
func newReconciler(t *testing.T, c client.Client) *MeshInstallationReconciler {
	t.Helper()
	return &MeshInstallationReconciler{Client: c, Stages: NewStages(StageDeps{Client: c, APIReader: k8s, Mapper: k8s.RESTMapper(), KubeVersion: "v1.37.2"})}
}

func TestNoWritesWhenNothingChanged(t *testing.T) {
	newMesh(t, "no-op")
	w := &writecount.Counter{}
	r := newReconciler(t, countingClient(t, w, interceptor.Funcs{}))
	if _, err := reconcileOnce(t, r, "no-op"); err != nil {
		t.Fatal(err)
	}
	if w.Total() == 0 {
		t.Fatal("the first pass wrote nothing; the finalizer and status should have been written")
	}
	for pass := 2; pass <= 3; pass++ {
		w.Reset()
		if _, err := reconcileOnce(t, r, "no-op"); err != nil {
			t.Fatal(err)
		}
		if n := w.Total(); n != 0 {
			t.Fatalf("pass %d with nothing changed made %d writes: %v", pass, n, w.Counts())
		}
	}

	// A spec change is one status write: observedGeneration moves.
	m := getMesh(t, "no-op")
	m.Spec.Rollout.Paused = true
	if err := k8s.Update(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	w.Reset()
	if _, err := reconcileOnce(t, r, "no-op"); err != nil {
		t.Fatal(err)
	}
	if w.Counts()["patch/status"] != 1 || w.Total() != 1 {
		t.Fatalf("after a spec change want exactly one status patch, got %v", w.Counts())
	}
	if got := getMesh(t, "no-op"); got.Status.ObservedGeneration != got.Generation {
		t.Fatalf("observedGeneration %d, want %d", got.Status.ObservedGeneration, got.Generation)
	}
}

func TestErrorPolicy(t *testing.T) {
	gr := schema.GroupResource{Group: meshv1.GroupVersion.Group, Resource: "meshinstallations"}
	tests := map[string]struct {
		funcs interceptor.Funcs
		// check the result of the pass that met the fault.
		wantRequeue  bool
		wantErr      bool
		wantTerminal bool
		// wantReady is the Ready reason written by the faulty pass; empty when no status can be
		// written (the status write itself is what failed).
		wantReady string
	}{
		"conflict writing status is requeued quietly": {
			funcs: interceptor.Funcs{SubResourcePatch: func(ctx context.Context, c client.Client, sub string, o client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
				return apierrors.NewConflict(gr, o.GetName(), errors.New("the object has been modified"))
			}},
			wantRequeue: true,
		},
		"server error listing is retried with backoff and reported": {
			funcs: interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, l client.ObjectList, opts ...client.ListOption) error {
				return apierrors.NewInternalError(errors.New("etcdserver: request timed out"))
			}},
			wantErr:   true,
			wantReady: meshv1.ReasonReconcileError,
		},
		"invalid write is terminal": {
			funcs: interceptor.Funcs{Patch: func(ctx context.Context, c client.WithWatch, o client.Object, p client.Patch, opts ...client.PatchOption) error {
				return apierrors.NewInvalid(schema.GroupKind{Group: gr.Group, Kind: "MeshInstallation"}, o.GetName(), nil)
			}},
			wantErr:      true,
			wantTerminal: true,
		},
	}
	i := 0
	for name, tc := range tests {
		i++
		t.Run(name, func(t *testing.T) {
			meshName := fmt.Sprintf("fault-%d", i)
			newMesh(t, meshName)
			r := newReconciler(t, countingClient(t, &writecount.Counter{}, tc.funcs))
			res, err := reconcileOnce(t, r, meshName)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tc.wantErr)
			}
			if tc.wantTerminal != errors.Is(err, reconcile.TerminalError(nil)) {
				t.Fatalf("terminal = %v, want %v (err %v)", !tc.wantTerminal, tc.wantTerminal, err)
			}
			if tc.wantRequeue && res.RequeueAfter == 0 {
				t.Fatalf("want a requeue, got %+v", res)
			}
			if tc.wantReady != "" {
				c := meta.FindStatusCondition(getMesh(t, meshName).Status.Conditions, meshv1.ConditionReady)
				if c == nil || c.Reason != tc.wantReady {
					t.Fatalf("Ready = %+v, want reason %s", c, tc.wantReady)
				}
				if getMesh(t, meshName).Status.ObservedGeneration != 0 {
					t.Fatal("observedGeneration moved on a failed pass")
				}
			}
		})
	}
}

func TestDeletionReleasesFinalizer(t *testing.T) {
	newMesh(t, "to-delete")
	r := newReconciler(t, k8s)
	if _, err := reconcileOnce(t, r, "to-delete"); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(context.Background(), getMesh(t, "to-delete")); err != nil {
		t.Fatal(err)
	}
	if m := getMesh(t, "to-delete"); m.DeletionTimestamp.IsZero() {
		t.Fatal("the finalizer should hold the object until the controller has run")
	}
	if _, err := reconcileOnce(t, r, "to-delete"); err != nil {
		t.Fatal(err)
	}
	err := k8s.Get(context.Background(), client.ObjectKey{Name: "to-delete"}, &meshv1.MeshInstallation{})
	if !apierrors.IsNotFound(err) {
		t.Fatalf("want the MeshInstallation gone, got %v", err)
	}
}

// TestDeletionRemovesLabelledObjectsEvenIfNoPassSucceeded: clean-up finds what the installation
// created by its labels, so an installation whose passes all failed (observedGeneration 0)
// still leaves nothing behind, and objects without its labels are never touched.
func TestDeletionRemovesLabelledObjectsEvenIfNoPassSucceeded(t *testing.T) {
	ctx := context.Background()
	newMesh(t, "never-ready")
	r := newReconciler(t, k8s)
	if _, err := reconcileOnce(t, r, "never-ready"); err != nil { // adds the finalizer
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cleanup-by-label"}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	ours := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "istio", Labels: map[string]string{
		meshv1.LabelManagedBy: meshv1.ManagedByValue, meshv1.LabelInstallation: "never-ready", "meshwright.io/component": "istiod",
	}}}
	theirs := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "users"}}
	for _, o := range []client.Object{ours, theirs} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	if m := getMesh(t, "never-ready"); m.Status.ObservedGeneration != 0 {
		// The pass above succeeded (as far as envtest, without cert-manager, lets it go): set
		// the status of an installation none of whose passes succeeded.
		m.Status.ObservedGeneration = 0
		if err := k8s.Status().Update(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := k8s.Delete(ctx, getMesh(t, "never-ready")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := reconcileOnce(t, r, "never-ready"); err != nil {
			t.Fatal(err)
		}
		if err := k8s.Get(ctx, client.ObjectKey{Name: "never-ready"}, &meshv1.MeshInstallation{}); apierrors.IsNotFound(err) {
			break
		}
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(ours), &corev1.ConfigMap{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the installation's labelled ConfigMap survived its deletion: %v", err)
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(theirs), &corev1.ConfigMap{}); err != nil {
		t.Fatalf("a ConfigMap without the installation's labels was touched: %v", err)
	}
	if err := k8s.Get(ctx, client.ObjectKey{Name: "never-ready"}, &meshv1.MeshInstallation{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the MeshInstallation is still there: %v", err)
	}
}

// TestSecondInstallationIsConflictUntilTheFirstGoes runs the controller in a manager, so the
// watches are part of what is tested: the second installation takes over without a restart. The
// manager has the operator's cache options and caches, and starts in a cluster without the
// Gateway API (or cert-manager's or Istio's kinds).
func TestSecondInstallationIsConflictUntilTheFirstGoes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:     scheme,
		Cache:      CacheOptions(),
		Client:     ClientOptions(),
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := (&MeshInstallationReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("meshwright")}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	newMesh(t, "aaa-first")
	waitFor(t, "aaa-first to be active", func() bool {
		c := meta.FindStatusCondition(getMesh(t, "aaa-first").Status.Conditions, meshv1.ConditionReady)
		return c != nil && c.Reason == meshv1.ReasonCertManagerNotFound
	})
	time.Sleep(1100 * time.Millisecond) // creation timestamps have one-second resolution
	newMesh(t, "zzz-second")
	waitFor(t, "zzz-second to report Conflict", func() bool {
		c := meta.FindStatusCondition(getMesh(t, "zzz-second").Status.Conditions, meshv1.ConditionReady)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == meshv1.ReasonConflict
	})
	if got := getMesh(t, "zzz-second"); got.Status.ObservedGeneration != 0 || got.Status.Version != "" {
		t.Fatalf("a Conflict installation must not be acted on, got status %+v", got.Status)
	}
	waitFor(t, "a Warning Event for the Conflict", func() bool {
		events := &eventsv1.EventList{}
		if err := k8s.List(ctx, events); err != nil {
			return false
		}
		for _, e := range events.Items {
			if e.Regarding.Name == "zzz-second" && e.Reason == meshv1.ReasonConflict && e.Type == "Warning" {
				return true
			}
		}
		return false
	})

	if err := k8s.Delete(ctx, getMesh(t, "aaa-first")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "zzz-second to take over", func() bool {
		c := meta.FindStatusCondition(getMesh(t, "zzz-second").Status.Conditions, meshv1.ConditionReady)
		return c != nil && c.Reason == meshv1.ReasonCertManagerNotFound
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// scriptedStage reports whatever the test sets, or fails with err; it is the ControlPlane stage
// unless certificates is set.
type scriptedStage struct {
	result       stages.Result
	err          error
	certificates bool
}

func (s *scriptedStage) Name() meshv1.Stage {
	if s.certificates {
		return meshv1.StageCertificates
	}
	return meshv1.StageControlPlane
}

func (s *scriptedStage) ConditionType() string {
	if s.certificates {
		return meshv1.ConditionCertificatesReady
	}
	return meshv1.ConditionControlPlaneReady
}
func (s *scriptedStage) Reconcile(context.Context, *meshv1.MeshInstallation) (stages.Result, error) {
	return s.result, s.err
}

// TestProgressReportsAreCoalesced: during an install, a status change that only moves a message
// or a step (a new reason while the stage is still in progress) waits for the coalescing window
// (no write, a requeue at its end), while its Event is emitted at once; once the window passed,
// the held status is written; a stage that stops or finishes is written at once.
func TestProgressReportsAreCoalesced(t *testing.T) {
	newMesh(t, "coalesce")
	w := &writecount.Counter{}
	clk := clocktesting.NewFakePassiveClock(time.Now())
	stage := &scriptedStage{result: stages.Result{State: stages.NotReady, Reason: "WaitingForCRDs", Message: "Waiting for 15 of Istio's CRDs"}}
	events := clientevents.NewFakeRecorder(100)
	r := &MeshInstallationReconciler{Client: countingClient(t, w, interceptor.Funcs{}), Stages: []stages.Stage{stage}, Clock: clk, Recorder: events}
	pass := func() (ctrl.Result, int) {
		t.Helper()
		w.Reset()
		res, err := reconcileOnce(t, r, "coalesce")
		if err != nil {
			t.Fatal(err)
		}
		return res, w.Counts()["patch/status"]
	}
	message := func() string {
		return meta.FindStatusCondition(getMesh(t, "coalesce").Status.Conditions, meshv1.ConditionControlPlaneReady).Message
	}
	if _, n := pass(); n != 1 {
		t.Fatalf("first pass: %d status writes, want 1", n)
	}

	stage.result.Message = "Waiting for 3 of Istio's CRDs"
	clk.SetTime(clk.Now().Add(2 * time.Second))
	res, n := pass()
	if n != 0 {
		t.Fatalf("a message changed 2 s after the last write: %d status writes, want it held", n)
	}
	if want := StatusCoalesceWindow - 2*time.Second; res.RequeueAfter != want {
		t.Errorf("requeue after %s, want %s (the end of the window)", res.RequeueAfter, want)
	}
	if m := message(); m != "Waiting for 15 of Istio's CRDs" {
		t.Errorf("message %q: the held one was written", m)
	}

	clk.SetTime(clk.Now().Add(StatusCoalesceWindow))
	if _, n := pass(); n != 1 {
		t.Fatalf("after the window: %d status writes, want the held message written", n)
	}
	if m := message(); m != "Waiting for 3 of Istio's CRDs" {
		t.Errorf("message %q after the window", m)
	}

	stage.result.Reason, stage.result.Message = "WaitingForIstiod", "istiod 0 of 1 available"
	drain(events)
	if res, n := pass(); n != 0 {
		t.Fatalf("a new reason while the stage is in progress, within the window: %d status writes, want it held", n)
	} else if res.RequeueAfter != StatusCoalesceWindow {
		t.Errorf("the held step: requeue after %s, want %s (the end of the window)", res.RequeueAfter, StatusCoalesceWindow)
	}
	if got := drain(events); !slices.ContainsFunc(got, func(e string) bool { return strings.Contains(e, "WaitingForIstiod") }) {
		t.Errorf("the held step was told by no Event: %q", got)
	}
	if _, n := pass(); n != 0 {
		t.Fatalf("the held step again: %d status writes, want 0", n)
	}
	if got := drain(events); len(got) != 0 {
		t.Errorf("the held step was told again: %q", got)
	}
	clk.SetTime(clk.Now().Add(StatusCoalesceWindow))
	if _, n := pass(); n != 1 {
		t.Fatalf("the held step at the end of the window: %d status writes, want 1", n)
	}
	if c := meta.FindStatusCondition(getMesh(t, "coalesce").Status.Conditions, meshv1.ConditionControlPlaneReady); c.Reason != "WaitingForIstiod" {
		t.Errorf("after the window ControlPlaneReady's reason is %s, want the held WaitingForIstiod", c.Reason)
	}

	stage.result = stages.Result{State: stages.Failed, Reason: "ApplyRejected", Message: "refused"}
	if _, n := pass(); n != 1 {
		t.Fatalf("a stage that stopped, within the window: %d status writes, want 1 at once", n)
	}
	stage.result = stages.Result{State: stages.NotReady, Reason: "WaitingForIstiod", Message: "istiod 0 of 1 available"}
	if _, n := pass(); n != 1 {
		t.Fatalf("progressing again, within the window: %d status writes, want 1 at once", n)
	}
	stage.result = stages.Result{State: stages.Ready, Reason: "ControlPlaneReady", Message: "ready"}
	if _, n := pass(); n != 1 {
		t.Fatalf("Ready within the window: %d status writes, want 1 at once", n)
	}
	if c := meta.FindStatusCondition(getMesh(t, "coalesce").Status.Conditions, meshv1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Fatalf("Ready = %+v, want True", c)
	}

	// A failed pass is written at once, even when only its message is new: its error may be
	// terminal, and then nothing would come back to write it.
	stage.err = apierrors.NewBadRequest("refused")
	w.Reset()
	if _, err := reconcileOnce(t, r, "coalesce"); err == nil {
		t.Fatal("the failing stage's pass returned no error")
	}
	stage.err = apierrors.NewBadRequest("refused again")
	clk.SetTime(clk.Now().Add(time.Second))
	w.Reset()
	_, _ = reconcileOnce(t, r, "coalesce")
	if n := w.Counts()["patch/status"]; n != 1 {
		t.Fatalf("a failed pass with a new message within the window: %d status writes, want 1", n)
	}
}

// drain returns the Events recorded so far.
func drain(events *clientevents.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-events.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

// TestHeldStepsStay: a step held back from status is the base of the next pass. A failed pass
// keeps it for the stage it did not run (written at once, with no Event telling a step back),
// and the condition keeps the time it changed, not the time it was written.
func TestHeldStepsStay(t *testing.T) {
	newMesh(t, "held-steps")
	w := &writecount.Counter{}
	clk := clocktesting.NewFakePassiveClock(time.Now())
	events := clientevents.NewFakeRecorder(100)
	certs := &scriptedStage{certificates: true, result: stages.Result{State: stages.NotReady, Reason: "Issuing", Message: "issuing"}}
	plane := &scriptedStage{result: stages.Result{State: stages.NotReady, Reason: "WaitingForCRDs", Message: "waiting"}}
	var refuseStatus atomic.Bool
	faults := interceptor.Funcs{SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
		if refuseStatus.Load() {
			return apierrors.NewInternalError(errors.New("etcd timed out"))
		}
		return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
	}}
	r := &MeshInstallationReconciler{Client: countingClient(t, w, faults), Stages: []stages.Stage{certs, plane}, Clock: clk, Recorder: events}
	pass := func() int {
		t.Helper()
		w.Reset()
		_, _ = reconcileOnce(t, r, "held-steps")
		return w.Counts()["patch/status"]
	}
	if n := pass(); n != 1 {
		t.Fatalf("first pass: %d status writes, want 1", n)
	}

	certs.result = stages.Result{State: stages.Ready, Reason: "CAReady", Message: "ready"}
	clk.SetTime(clk.Now().Add(time.Second))
	heldAt := clk.Now()
	if n := pass(); n != 0 {
		t.Fatalf("CertificatesReady turning True while the control plane is applied: %d status writes, want it held", n)
	}
	drain(events)

	certs.err = apierrors.NewServiceUnavailable("etcd is slow")
	clk.SetTime(clk.Now().Add(time.Second)) // conditions' times have a second's resolution
	failedAt := clk.Now()
	if n := pass(); n != 1 {
		t.Fatalf("a failed pass: %d status writes, want 1 at once", n)
	}
	c := meta.FindStatusCondition(getMesh(t, "held-steps").Status.Conditions, meshv1.ConditionCertificatesReady)
	if c.Status != metav1.ConditionTrue || c.Reason != "CAReady" {
		t.Errorf("after a failed pass CertificatesReady is %s/%s, want the held True/CAReady", c.Status, c.Reason)
	}
	if lt := c.LastTransitionTime.Time; lt.Before(heldAt.Truncate(time.Second)) || !lt.Before(failedAt.Truncate(time.Second)) {
		t.Errorf("CertificatesReady changed at %s, written at %s: want the time of the pass that saw it, %s", lt, failedAt, heldAt)
	}
	if got := drain(events); slices.ContainsFunc(got, func(e string) bool { return strings.Contains(e, "CertificatesReady is False") }) {
		t.Errorf("the failed pass told a step back: %q", got)
	}

	// A status write the API server fails: the next pass starts from what was computed, so Ready
	// keeps the time it turned True.
	certs.err, plane.result = nil, stages.Result{State: stages.Ready, Reason: "ControlPlaneReady", Message: "ready"}
	refuseStatus.Store(true)
	clk.SetTime(clk.Now().Add(time.Second))
	readyAt := clk.Now()
	_ = pass()
	refuseStatus.Store(false)
	clk.SetTime(clk.Now().Add(time.Second))
	retriedAt := clk.Now()
	if n := pass(); n != 1 {
		t.Fatalf("the retry: %d status writes, want 1", n)
	}
	ready := meta.FindStatusCondition(getMesh(t, "held-steps").Status.Conditions, meshv1.ConditionReady)
	if ready.Status != metav1.ConditionTrue {
		t.Fatalf("Ready = %s, want True", ready.Status)
	}
	if lt := ready.LastTransitionTime.Time; lt.Before(readyAt.Truncate(time.Second)) || !lt.Before(retriedAt.Truncate(time.Second)) {
		t.Errorf("Ready turned True at %s, want the time of the pass that saw it, %s, not of the retry, %s", lt, readyAt, retriedAt)
	}
}
