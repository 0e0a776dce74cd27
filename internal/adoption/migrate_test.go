package adoption

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/ambient"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/stages"
)

// TestAmbientMigrationAgainstTheAPIServer moves a namespace at Observe with sidecars to ambient
// mode when the spec asks for it: one write puts the ambient label on and takes the injection
// label off, then its Deployment restarts. A migration whose pods never get redirected times
// out into a rollback that puts the injection label back beside the ambient label and restarts
// the Deployment again; once its pods have the proxy, the ambient label goes and the namespace
// is held on sidecars. A spec change releases it, and the migration completes: the record says
// ambient mode at the same level, reached when the rollback ended; the injection label stays off.
func TestAmbientMigrationAgainstTheAPIServer(t *testing.T) {
	ctx := context.Background()
	const name = "team-migrate"
	teamNamespace(t, name)
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), getNS(t, name)) })
	since := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	now := since.Add(time.Hour)
	if err := k8s.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "web-1"}}); err != nil {
		t.Fatal(err)
	}
	runPod(t, name, "web-2", true)
	state, _ := json.Marshal(ladder.State{Since: since})
	ns := getNS(t, name)
	ns.Labels[meshv1.LabelLevel], ns.Labels[InjectionLabel], ns.Labels["owner"] = string(meshv1.LevelObserve), "default", "migrate"
	ns.Annotations = map[string]string{meshv1.AnnotationLadder: string(state)}
	if err := k8s.Update(ctx, ns); err != nil {
		t.Fatal(err)
	}
	mesh := meshFor("ladder-migrate")
	mesh.Spec.DataPlane.Mode = meshv1.DataPlaneAmbient
	mesh.Spec.Namespaces[0].Selector.MatchLabels = map[string]string{"ladder": "on", "owner": "migrate"}
	pass := func(at time.Time) stages.Result { t.Helper(); return reconcileAt(t, mesh, at) }
	record := func() ladder.State { t.Helper(); return recordOf(t, name) }
	restartedFor := func() string {
		t.Helper()
		dep := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: name, Name: "web"}, dep); err != nil {
			t.Fatal(err)
		}
		rolledOut(t, dep)
		return dep.Spec.Template.Annotations[meshv1.AnnotationRestartedFor]
	}
	labels := func(wantAmbient bool, wantInjection string) {
		t.Helper()
		l := getNS(t, name).Labels
		if (l[ambient.Label] == ambient.Enabled) != wantAmbient || l[InjectionLabel] != wantInjection {
			t.Fatalf("labels = %v, want ambient label %v, injection label %q", l, wantAmbient, wantInjection)
		}
	}
	// replacePod plays the Deployment controller: the old pod goes, a new one runs with or
	// without the proxy, as the injector would give it.
	replacePod := func(old, new string, proxy bool) {
		t.Helper()
		if err := k8s.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: old}}); err != nil {
			t.Fatal(err)
		}
		runPod(t, name, new, proxy)
	}

	pass(now)
	labels(true, "")
	st := record()
	if st.Step == nil || st.Step.DataPlane != meshv1.DataPlaneAmbient || st.Ambient {
		t.Fatalf("record = %+v, want a migration to ambient mode", st)
	}
	first := restartedFor()
	if first != st.Step.ID {
		t.Fatalf("web restarted for %q, want the migration %q", first, st.Step.ID)
	}
	replacePod("web-2", "web-3", false)
	if res := pass(now.Add(time.Minute)); !strings.Contains(res.Message, "pods Istio CNI has not redirected to ztunnel: web-3") {
		t.Fatalf("before Istio CNI redirected the pod: %q", res.Message)
	}

	// Never redirected: the step times out into the rollback, both labels on.
	pass(now.Add(time.Hour))
	labels(true, "default")
	if st := record(); st.Step == nil || !st.Step.Rollback || st.Step.DataPlane != meshv1.DataPlaneSidecar {
		t.Fatalf("record = %+v, want the rollback to sidecars", st)
	}
	if again := restartedFor(); again == first || again == "" {
		t.Fatalf("web restarted for %q: the rollback did not restart it", again)
	}
	replacePod("web-3", "web-4", true)
	rolledBack := now.Add(time.Hour + time.Minute)
	res := pass(rolledBack)
	labels(false, "default")
	if st := record(); st.Step != nil || st.Hold == nil || st.Ambient || len(res.Namespaces.Blocked) != 1 || res.Namespaces.Blocked[0].Reason != meshv1.ReasonRolledBack {
		t.Fatalf("record = %+v, blocked %+v: want sidecars, held", st, res.Namespaces.Blocked)
	}

	// A spec change releases the hold: the migration runs again, and completes.
	mesh.Generation++
	pass(now.Add(2 * time.Hour))
	labels(true, "")
	if third := restartedFor(); third == first || third != record().Step.ID {
		t.Fatalf("web restarted for %q, want the new migration %+v", third, record().Step)
	}
	replacePod("web-4", "web-5", false)
	pod := &corev1.Pod{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: name, Name: "web-5"}, pod); err != nil {
		t.Fatal(err)
	}
	pod.Annotations = map[string]string{ambient.RedirectionAnnotation: ambient.RedirectionEnabled} // Istio CNI's part
	if err := k8s.Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	res = pass(now.Add(2*time.Hour + ladder.Settle))
	labels(true, "")
	if st := record(); st.Step != nil || !st.Ambient || !st.Since.Equal(rolledBack) || res.Namespaces.Ambient != 1 || res.State != stages.Ready {
		t.Fatalf("record = %+v, result %+v %+v: want ambient mode at Observe since the rollback", st, res, res.Namespaces)
	}
}
