package adoption

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

func jobTemplate(optOut bool) corev1.PodTemplateSpec {
	t := corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "job", Image: "job"}}}}
	if optOut {
		t.Annotations = map[string]string{optOutKey: "false"}
	}
	return t
}

// TestJobsAgainstTheAPIServer: a namespace at Observe whose CronJob opts out of injection is
// held below MutualTLS with UninjectedPods naming it, though none of its Jobs runs (STRICT would
// cut off the next one); so is one with an unfinished Job that opts out, while a finished one is
// left out. A CronJob that is injected does not hold the step, and is never restarted: the step
// to MutualTLS starts once the opted-out ones are gone.
func TestJobsAgainstTheAPIServer(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	observedNamespace(t, "batch", meshv1.LevelMutualTLS, now.Add(-time.Hour))
	ns := getNS(t, "batch")
	delete(ns.Labels, "gate")
	delete(ns.Labels, "ladder")
	ns.Labels["jobs"] = "on"
	if err := k8s.Update(ctx, ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ns) })
	cron := func(name string, optOut bool) *batchv1.CronJob {
		return &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "batch"}, Spec: batchv1.CronJobSpec{Schedule: "0 3 * * *",
			JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: jobTemplate(optOut)}}}}
	}
	job := func(name string, optOut bool) *batchv1.Job {
		return &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "batch"}, Spec: batchv1.JobSpec{Template: jobTemplate(optOut)}}
	}
	report, nightly, migrate, done := cron("report", true), cron("nightly", false), job("migrate", true), job("done", true)
	for _, o := range []client.Object{report, nightly, migrate, done} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	// envtest runs no Job controller: done's completion is written as it would write it.
	done.Status = batchv1.JobStatus{StartTime: &metav1.Time{Time: now}, CompletionTime: &metav1.Time{Time: now}, Succeeded: 1, Conditions: []batchv1.JobCondition{
		{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue}, {Type: batchv1.JobComplete, Status: corev1.ConditionTrue}}}
	if err := k8s.Status().Update(ctx, done); err != nil {
		t.Fatal(err)
	}
	mesh := meshFor("jobs")
	mesh.Spec.Namespaces[0].Selector.MatchLabels = map[string]string{"jobs": "on"}
	mesh.Spec.Rollout.TrafficGates = meshv1.TrafficGatesSkip
	stage := newStage(k8s, now)

	held := func(want ...string) string {
		t.Helper()
		res, err := stage.Reconcile(ctx, mesh)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(res.Namespaces.Blocked, func(b meshv1.BlockedNamespace) bool { return b.Name == "batch" })
		if i < 0 {
			return ""
		}
		return res.Namespaces.Blocked[i].Reason + ": " + res.Namespaces.Blocked[i].Message
	}
	got := held()
	for _, want := range []string{meshv1.ReasonUninjectedPods, "though none runs now", "CronJob/report", "Job/migrate"} {
		if !strings.Contains(got, want) {
			t.Errorf("held %q: lacks %q", got, want)
		}
	}
	for _, not := range []string{"CronJob/nightly", "Job/done"} {
		if strings.Contains(got, not) {
			t.Errorf("held %q: names %s, which is injected or finished", got, not)
		}
	}
	if hasStrict(t, "batch") {
		t.Fatal("STRICT written while an opted-out CronJob would be cut off")
	}

	for _, o := range []client.Object{report, migrate} {
		if err := k8s.Delete(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	// (envtest runs no garbage collector: they stay, being deleted, which is as good as gone.)
	mesh.Generation++
	if got := held(); got != "" {
		t.Fatalf("still held: %s", got)
	}
	if !hasStrict(t, "batch") {
		t.Fatal("the step to MutualTLS did not start once the opted-out CronJob and Job were gone")
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(nightly), nightly); err != nil {
		t.Fatal(err)
	}
	if got := nightly.Spec.JobTemplate.Spec.Template.Annotations[meshv1.AnnotationRestartedFor]; got != "" {
		t.Errorf("the CronJob was restarted (%q): its next Job is injected anyway", got)
	}
}
