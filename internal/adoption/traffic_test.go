package adoption

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/policy"
	"github.com/meshwright/meshwright/internal/traffic"
)

// recordedReads is a TrafficReader for the stage's wiring: it answers what the test sets and
// records what it was asked. The sources themselves are tested against a real Prometheus and
// real stats endpoints (internal/telemetry, test/telemetry).
type recordedReads struct {
	answer map[string]traffic.Reading
	asked  [][]string
	window time.Duration
	limit  int
}

func (r *recordedReads) Read(_ context.Context, _ *meshv1.MeshInstallation, namespaces []string, _ map[string]time.Time, window time.Duration, limit int) map[string]traffic.Reading {
	r.asked, r.window, r.limit = append(r.asked, namespaces), window, limit
	return r.answer
}

// observedNamespace creates a namespace that has stood at Observe since `since`, with one
// injected Ready pod, targeting the level its target-level label names.
func observedNamespace(t *testing.T, name string, target ladder.Level, since time.Time) {
	t.Helper()
	teamNamespace(t, name)
	ctx := context.Background()
	if err := k8s.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "web-1"}}); err != nil {
		t.Fatal(err)
	}
	runPod(t, name, "web-2", true)
	state, _ := json.Marshal(ladder.State{Since: since})
	ns := getNS(t, name)
	ns.Labels[meshv1.LabelLevel], ns.Labels[InjectionLabel], ns.Labels[meshv1.LabelTargetLevel] = string(meshv1.LevelObserve), "default", string(target)
	ns.Labels["gate"] = "on" // this test's installation enrols these only
	ns.Annotations = map[string]string{meshv1.AnnotationLadder: string(state)}
	if err := k8s.Update(ctx, ns); err != nil {
		t.Fatal(err)
	}
}

// hasStrict tells whether the namespace carries the ladder's STRICT PeerAuthentication.
func hasStrict(t *testing.T, namespace string) bool {
	t.Helper()
	pa := &unstructured.Unstructured{}
	pa.SetGroupVersionKind(policy.PeerAuthenticationGVK)
	err := k8s.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: policy.StrictName}, pa)
	return err == nil
}

// TestTrafficGateAgainstTheAPIServer: the stage reads traffic only for the namespaces about to
// go STRICT, over the observe time, bounded by maxNamespacesInProgress; a plaintext caller holds
// the namespace at Observe with no STRICT policy written, and the step starts once the reading
// is clean. With trafficGates: Skip nothing is read and the step starts on pods alone.
func TestTrafficGateAgainstTheAPIServer(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	observedNamespace(t, "gate-shop", meshv1.LevelMutualTLS, now.Add(-time.Hour))
	observedNamespace(t, "gate-done", meshv1.LevelObserve, now.Add(-time.Hour))
	mesh := meshFor("gate")
	mesh.Spec.Namespaces[0].Selector.MatchLabels = map[string]string{"gate": "on"}
	// Namespaces other tests of the package left with the ladder's record walk down in the
	// same passes: enough slots for them too.
	mesh.Spec.Rollout.MaxNamespacesInProgress = 10
	mesh.Spec.Rollout.ObserveTime = &metav1.Duration{Duration: 20 * time.Minute}
	reads := &recordedReads{answer: map[string]traffic.Reading{"gate-shop": {Source: "Prometheus at http://prom", Inbound: traffic.Inbound{
		Reporting: true, Covered: 20 * time.Minute, Plaintext: map[traffic.Caller]float64{{Namespace: "legacy", Workload: "client"}: 12}}}}}
	stage := newStage(k8s, now)
	stage.Traffic = reads

	res, err := stage.Reconcile(ctx, mesh)
	if err != nil {
		t.Fatal(err)
	}
	if len(reads.asked) != 1 || !slices.Equal(reads.asked[0], []string{"gate-shop"}) || reads.window != 20*time.Minute || reads.limit != 10 {
		t.Fatalf("asked %v over %v with limit %d; want gate-shop only, over the observe time, maxNamespacesInProgress at most", reads.asked, reads.window, reads.limit)
	}
	i := slices.IndexFunc(res.Namespaces.Blocked, func(b meshv1.BlockedNamespace) bool { return b.Name == "gate-shop" })
	if i < 0 || res.Namespaces.Blocked[i].Reason != meshv1.ReasonPlaintextTraffic || !strings.Contains(res.Namespaces.Blocked[i].Message, "legacy/client") {
		t.Fatalf("blocked: %+v, want gate-shop held by PlaintextTraffic naming legacy/client", res.Namespaces.Blocked)
	}
	if hasStrict(t, "gate-shop") || getNS(t, "gate-shop").Labels[meshv1.LabelLevel] != string(meshv1.LevelObserve) {
		t.Fatal("a namespace held by a plaintext caller got STRICT")
	}

	clean := reads.answer["gate-shop"]
	clean.Plaintext = map[traffic.Caller]float64{}
	reads.answer["gate-shop"] = clean
	if _, err := stage.Reconcile(ctx, mesh); err != nil {
		t.Fatal(err)
	}
	if !hasStrict(t, "gate-shop") {
		t.Fatal("a clean reading did not let the step to MutualTLS start")
	}

	observedNamespace(t, "gate-skip", meshv1.LevelMutualTLS, now)
	mesh.Spec.Rollout.TrafficGates = meshv1.TrafficGatesSkip
	asked := len(reads.asked)
	if _, err := stage.Reconcile(ctx, mesh); err != nil {
		t.Fatal(err)
	}

	if len(reads.asked) != asked || !hasStrict(t, "gate-skip") {
		t.Fatalf("with Skip: %d more reads, STRICT %v; want none, and the step started on pods alone", len(reads.asked)-asked, hasStrict(t, "gate-skip"))
	}
}

// TestAnnounceTrafficHold: a namespace newly held by a traffic gate gets a Warning Event with
// the evidence once: not again while the status already reports the same reason, nor for a
// hold of another kind, nor when it may be among the blocked namespaces the status leaves out.
func TestAnnounceTrafficHold(t *testing.T) {
	held := ladder.Decision{TrafficHeld: true, Blocked: ladder.Blocked{Reason: meshv1.ReasonPlaintextTraffic, Message: "legacy/client calls in plaintext"}}
	tests := map[string]struct {
		decision ladder.Decision
		status   *meshv1.NamespacesStatus
		want     bool
	}{
		"first held":                     {decision: held, want: true},
		"held for another reason before": {decision: held, status: &meshv1.NamespacesStatus{BlockedCount: 1, Blocked: []meshv1.BlockedNamespace{{Name: "shop", Reason: meshv1.ReasonTelemetryMissing}}}, want: true},
		"already reported":               {decision: held, status: &meshv1.NamespacesStatus{BlockedCount: 1, Blocked: []meshv1.BlockedNamespace{{Name: "shop", Reason: meshv1.ReasonPlaintextTraffic}}}},
		"maybe among those not listed":   {decision: held, status: &meshv1.NamespacesStatus{BlockedCount: 11, Blocked: []meshv1.BlockedNamespace{{Name: "other"}}}},
		"held by pods, not traffic":      {decision: ladder.Decision{Blocked: ladder.Blocked{Reason: meshv1.ReasonPodsNotReady}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			mesh := &meshv1.MeshInstallation{Status: meshv1.MeshInstallationStatus{Namespaces: tc.status}}
			plan := &NamespacePlan{Namespace: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, Decision: tc.decision}
			announceTrafficHold(mesh, plan)
			e := plan.Decision.Event
			if (e != nil) != tc.want {
				t.Fatalf("event %+v, want one: %v", e, tc.want)
			}
			if e != nil && (!e.Warning || e.Reason != meshv1.ReasonPlaintextTraffic || e.Message != "legacy/client calls in plaintext") {
				t.Errorf("event %+v, want a Warning with the hold's reason and evidence", e)
			}
		})
	}
}
