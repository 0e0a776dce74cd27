package controllers

import (
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
)

// TestLadderPredicateOnJobs: a Job's or CronJob's status moving (active pods, the last
// schedule) starts no pass; what the ladder reads of them (their template, a Job finishing,
// deletion) does.
func TestLadderPredicateOnJobs(t *testing.T) {
	now := metav1.Now()
	job := func(gen int64, active int32, done bool) *batchv1.Job {
		j := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "migrate", Generation: gen}, Status: batchv1.JobStatus{Active: active}}
		if done {
			j.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}}
		}
		return j
	}
	cron := func(gen int64, last *metav1.Time, deleting bool) *batchv1.CronJob {
		c := &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: "report", Generation: gen}, Status: batchv1.CronJobStatus{LastScheduleTime: last}}
		if deleting {
			c.DeletionTimestamp = &now
		}
		return c
	}
	tests := map[string]struct {
		old, new client.Object
		want     bool
	}{
		"a Job's pods come and go":     {job(1, 1, false), job(1, 2, false), false},
		"a Job finishes":               {job(1, 1, false), job(1, 0, true), true},
		"a Job's template changes":     {job(1, 1, false), job(2, 1, false), true},
		"a CronJob runs":               {cron(1, nil, false), cron(1, &now, false), false},
		"a CronJob's template changes": {cron(1, nil, false), cron(2, nil, false), true},
		"a CronJob is being deleted":   {cron(1, nil, false), cron(1, nil, true), true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := (ladderPredicate{}).Update(event.UpdateEvent{ObjectOld: tc.old, ObjectNew: tc.new}); got != tc.want {
				t.Errorf("Update = %v, want %v", got, tc.want)
			}
		})
	}
}
