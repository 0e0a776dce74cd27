package controllers

import (
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/meshwright/meshwright/internal/adoption"
	"github.com/meshwright/meshwright/internal/ambient"
)

// TestLadderPredicateOnJobsAndPods: a Job's or CronJob's status moving (active pods, the last
// schedule) starts no pass; what the ladder reads of them (their template, a Job finishing,
// deletion) does. A pod's IP changing starts none; Istio CNI redirecting it to ztunnel does.
func TestLadderPredicateOnJobsAndPods(t *testing.T) {
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
	redirected := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{ambient.RedirectionAnnotation: ambient.RedirectionEnabled}}}
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
		"Istio CNI redirects a pod":    {&corev1.Pod{}, redirected, true},
		"a pod's IP changes":           {&corev1.Pod{}, &corev1.Pod{Status: corev1.PodStatus{PodIP: "10.0.0.1"}}, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := (ladderPredicate{}).Update(event.UpdateEvent{ObjectOld: tc.old, ObjectNew: tc.new}); got != tc.want {
				t.Errorf("Update = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestLadderPredicatesTellObservations: every event of a kind the ladder observes is recorded
// as a change of its namespace before any predicate may drop it (a pod's status churn starts no
// pass, yet the memo must not keep what it saw before); a deleted Namespace is forgotten.
func TestLadderPredicatesTellObservations(t *testing.T) {
	pod := func(ip string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}, Status: corev1.PodStatus{PodIP: ip}}
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	tests := map[string]struct {
		run         func(p predicatesUnderTest) bool
		wantPass    bool
		wantChanged bool
	}{
		"a pod created": {run: func(p predicatesUnderTest) bool { return p.create(pod("")) }, wantPass: true, wantChanged: true},
		"a pod's IP moved (no pass)": {run: func(p predicatesUnderTest) bool {
			return p.update(pod("10.0.0.1"), pod("10.0.0.2"))
		}, wantPass: false, wantChanged: true},
		"a service deleted": {run: func(p predicatesUnderTest) bool { return p.delete(svc) }, wantPass: true, wantChanged: true},
		"a namespace relabelled": {run: func(p predicatesUnderTest) bool {
			return p.update(ns, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"team": "x"}}})
		}, wantPass: true, wantChanged: false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			obs := adoption.NewObservations()
			p := predicatesUnderTest{ladderPredicates(obs)}
			if got := tc.run(p); got != tc.wantPass {
				t.Errorf("the event starts a pass: %v, want %v", got, tc.wantPass)
			}
			if changed := obs.LastChange("shop") > 0; changed != tc.wantChanged {
				t.Errorf("recorded as a change of namespace shop: %v, want %v", changed, tc.wantChanged)
			}
		})
	}

	// A deleted namespace's record goes.
	obs := adoption.NewObservations()
	p := predicatesUnderTest{ladderPredicates(obs)}
	p.create(pod(""))
	p.delete(ns)
	if obs.LastChange("shop") != 0 {
		t.Error("a deleted namespace is still counted")
	}
}

// predicatesUnderTest evaluates predicates as controller-runtime's sources do: in order, the
// first false one ends the evaluation.
type predicatesUnderTest struct {
	list []predicate.TypedPredicate[client.Object]
}

func (p predicatesUnderTest) create(o client.Object) bool {
	for _, pr := range p.list {
		if !pr.Create(event.CreateEvent{Object: o}) {
			return false
		}
	}
	return true
}

func (p predicatesUnderTest) update(old, updated client.Object) bool {
	for _, pr := range p.list {
		if !pr.Update(event.UpdateEvent{ObjectOld: old, ObjectNew: updated}) {
			return false
		}
	}
	return true
}

func (p predicatesUnderTest) delete(o client.Object) bool {
	for _, pr := range p.list {
		if !pr.Delete(event.DeleteEvent{Object: o}) {
			return false
		}
	}
	return true
}
