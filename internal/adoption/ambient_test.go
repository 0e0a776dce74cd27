package adoption

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/ambient"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/stages"
	"github.com/meshwright/meshwright/internal/traffic"
)

// TestAmbientLadderAgainstTheAPIServer walks a namespace of an Ambient mesh from Off to
// MutualTLS: it is labelled istio.io/dataplane-mode=ambient (never the injection label), its
// Deployment is never restarted, the step waits for Istio CNI to redirect its pod, its record says it is in ambient mode, STRICT is written once it
// climbs; under the traffic gates the climb to MutualTLS is judged on ztunnel's traffic: held
// with no STRICT written when the source does not read ztunnel (AmbientTrafficUnread) or shows a
// plaintext caller, taken when it is clean. Set back to Sidecar, it stays in ambient mode, reported, not moved in place.
func TestAmbientLadderAgainstTheAPIServer(t *testing.T) {
	ctx := context.Background()
	const name = "team-ambient"
	teamNamespace(t, name)
	// Deleted at the end (envtest runs no namespace controller: it stays Terminating, which the
	// ladder skips), so that the other tests' rules, which select ladder=on, do not meet it.
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), getNS(t, name)) })
	mesh := meshFor("ladder-ambient")
	mesh.Spec.DataPlane.Mode = meshv1.DataPlaneAmbient
	mesh.Spec.Namespaces[0].Level = meshv1.LevelMutualTLS
	mesh.Spec.Namespaces[0].Selector.MatchLabels = map[string]string{"ladder": "on", "owner": "team"}
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	pass := func(at time.Time) stages.Result { t.Helper(); return reconcileAt(t, mesh, at) }
	record := func() ladder.State { t.Helper(); return recordOf(t, name) }
	notRestarted := func() {
		t.Helper()
		dep := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: name, Name: "web"}, dep); err != nil {
			t.Fatal(err)
		}
		if got := dep.Spec.Template.Annotations[meshv1.AnnotationRestartedFor]; got != "" {
			t.Fatalf("web was restarted (%s): ambient mode restarts nothing", got)
		}
	}

	pass(now)
	ns := getNS(t, name)
	if ns.Labels[ambient.Label] != ambient.Enabled || ns.Labels[InjectionLabel] != "" {
		t.Fatalf("labels after the first pass = %v, want the ambient label and no injection label", ns.Labels)
	}
	if st := record(); st.Step == nil || st.Step.To != meshv1.LevelObserve || !st.Ambient {
		t.Fatalf("record = %+v, want a step to Observe in ambient mode", st)
	}
	notRestarted()
	if res := pass(now.Add(ladder.Settle)); res.Namespaces.Observe != 0 || !strings.Contains(res.Message, "pods Istio CNI has not redirected to ztunnel: web-1") {
		t.Fatalf("before Istio CNI redirected the pod: %+v %+v; want the step waiting for it", res, res.Namespaces)
	}
	// Istio CNI's node agent's part (envtest runs none): the pod's traffic is handed to ztunnel.
	pod := &corev1.Pod{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: name, Name: "web-1"}, pod); err != nil {
		t.Fatal(err)
	}
	pod.Annotations = map[string]string{ambient.RedirectionAnnotation: ambient.RedirectionEnabled}
	if err := k8s.Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if res := pass(now.Add(ladder.Settle)); res.Namespaces.Observe != 1 {
		t.Fatalf("after the settle time, the pod redirected: %+v", res.Namespaces)
	}

	// Under the traffic gates (the default), its traffic is ztunnel's. Read by a source that does
	// not read ztunnel (the embedded one), or showing a plaintext caller: held at Observe, nothing
	// STRICT. Read through a Prometheus that scrapes ztunnel and clean: STRICT.
	readAs := func(at time.Time, r traffic.Reading) stages.Result {
		t.Helper()
		st := newStage(k8s, at)
		st.Traffic = &recordedReads{answer: map[string]traffic.Reading{name: r}}
		res, err := st.Reconcile(ctx, mesh)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	blockedBy := func(res stages.Result, reason string) {
		t.Helper()
		if len(res.Namespaces.Blocked) != 1 || res.Namespaces.Blocked[0].Reason != reason || hasStrict(t, name) {
			t.Fatalf("under the traffic gates: %+v, STRICT %v; want held by %s", res.Namespaces, hasStrict(t, name), reason)
		}
	}
	window := 20 * time.Minute // the default observe time, or more
	blockedBy(readAs(now.Add(time.Hour), traffic.Reading{Source: "the proxies' stats endpoints", ZtunnelUnread: true, Inbound: traffic.NewInbound(window)}), meshv1.ReasonAmbientTrafficUnread)
	// With a Prometheus (the readings are the test's), ztunnel's telemetry is read.
	mesh.Spec.Telemetry.Prometheus = &meshv1.PrometheusSource{URL: "http://prometheus.monitoring:9090"}
	plaintext := traffic.Reading{Source: "Prometheus", Inbound: traffic.NewInbound(window)}
	plaintext.ZtunnelReporting = true
	plaintext.Plaintext[traffic.Caller{Namespace: "legacy", Workload: "client"}] = 4
	blockedBy(readAs(now.Add(time.Hour), plaintext), meshv1.ReasonPlaintextTraffic)
	clean := traffic.Reading{Source: "Prometheus", Inbound: traffic.NewInbound(window)}
	clean.ZtunnelReporting = true
	readAs(now.Add(time.Hour), clean)
	if !hasStrict(t, name) {
		t.Fatal("with ztunnel's traffic clean, STRICT was not written")
	}
	if res := pass(now.Add(time.Hour + ladder.Settle)); res.State != stages.Ready || res.Namespaces.MutualTLS != 1 || res.Namespaces.Ambient != 1 {
		t.Fatalf("after STRICT settled: %+v %+v", res, res.Namespaces)
	}
	notRestarted()

	// The record deleted, as a hold is released by hand: its labels say it is in ambient mode.
	ns = getNS(t, name)
	delete(ns.Annotations, meshv1.AnnotationLadder)
	if err := k8s.Update(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if res := pass(now.Add(90 * time.Minute)); res.State != stages.Ready || res.Namespaces.Ambient != 1 {
		t.Fatalf("its record deleted: %+v %+v", res, res.Namespaces)
	}
	if ns := getNS(t, name); ns.Labels[ambient.Label] != ambient.Enabled || ns.Labels[InjectionLabel] != "" || !record().Ambient {
		t.Fatalf("its record deleted: labels %v, record %+v; want it kept in ambient mode, and recorded so", ns.Labels, record())
	}

	mesh.Spec.DataPlane.Mode = meshv1.DataPlaneSidecar
	mesh.Generation++
	res := pass(now.Add(2 * time.Hour))
	if res.State == stages.Ready || len(res.Namespaces.Blocked) != 1 || res.Namespaces.Blocked[0].Reason != meshv1.ReasonDataPlaneChangeUnsupported {
		t.Fatalf("Sidecar asked of a namespace in ambient mode: %+v %+v", res, res.Namespaces)
	}
	if ns := getNS(t, name); ns.Labels[ambient.Label] != ambient.Enabled || ns.Labels[InjectionLabel] != "" {
		t.Fatalf("labels = %v: the namespace must be left as it is", ns.Labels)
	}
	notRestarted()

	if done, err := newStage(k8s, now).Cleanup(ctx, mesh); err != nil || !done {
		t.Fatalf("Cleanup = %v, %v", done, err)
	}
	if ns := getNS(t, name); ns.Labels[ambient.Label] != "" {
		t.Errorf("the ambient label is left after clean-up: %v", ns.Labels)
	}
}

// reconcileAt runs one pass of the stage for mesh at a time, or fails the test.
func reconcileAt(t *testing.T, mesh *meshv1.MeshInstallation, at time.Time) stages.Result {
	t.Helper()
	res, err := newStage(k8s, at).Reconcile(context.Background(), mesh)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// recordOf reads the ladder's record of a namespace, or fails the test.
func recordOf(t *testing.T, name string) ladder.State {
	t.Helper()
	var st ladder.State
	if err := json.Unmarshal([]byte(getNS(t, name).Annotations[meshv1.AnnotationLadder]), &st); err != nil {
		t.Fatal(err)
	}
	return st
}
