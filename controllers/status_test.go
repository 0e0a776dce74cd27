package controllers

import (
	"context"
	"errors"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/stages"
)

type stubStage struct{ name meshv1.Stage }

func (s stubStage) Name() meshv1.Stage    { return s.name }
func (s stubStage) ConditionType() string { return string(s.name) + "Ready" }
func (s stubStage) Reconcile(context.Context, *meshv1.MeshInstallation) (stages.Result, error) {
	return stages.Result{}, nil
}

func TestComputeStatus(t *testing.T) {
	now := metav1.NewTime(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))
	list := []stages.Stage{stubStage{meshv1.StageCertificates}, stubStage{meshv1.StageControlPlane}, stubStage{meshv1.StageInjection}, stubStage{meshv1.StagePolicies}}
	types := stageTypes(list)
	ready := stages.Result{State: stages.Ready, Reason: "R", Message: "ok"}
	var allReady stages.Outcome
	allReady.Current = meshv1.StageComplete
	for _, s := range list {
		allReady.Ran = append(allReady.Ran, stages.Ran{Stage: s, Result: ready})
	}
	secondWaiting := stages.Outcome{Current: meshv1.StageControlPlane, Ran: []stages.Ran{
		{Stage: list[0], Result: ready},
		{Stage: list[1], Result: stages.Result{State: stages.NotReady, Reason: "Waiting", Message: "istiod is starting"}},
	}}
	firstErr := stages.Outcome{Current: meshv1.StageCertificates, Err: errors.New("boom")}
	secondFailed := stages.Outcome{Current: meshv1.StageControlPlane, Ran: []stages.Ran{
		{Stage: list[0], Result: ready},
		{Stage: list[1], Result: stages.Result{State: stages.Failed, Reason: meshv1.ReasonInvalidValues, Message: "values do not render"}},
	}}
	nsStatus := &meshv1.NamespacesStatus{Enrolled: 2, Observe: 1, MutualTLS: 1}
	revs := []meshv1.RevisionStatus{{Name: "default", Version: "1.31.4", Active: true, Namespaces: 2, Pods: 4}}
	degradedReady := stages.Outcome{Current: meshv1.StageComplete}
	for i, s := range list {
		r := ready
		switch i {
		case 1:
			r.Degraded, r.Reason, r.Revisions = true, meshv1.ReasonChartSourceUnavailable, revs
		case 3:
			r.Namespaces = nsStatus
		}
		degradedReady.Ran = append(degradedReady.Ran, stages.Ran{Stage: s, Result: r})
	}
	previous := meshv1.MeshInstallationStatus{Version: "1.31.4", Stage: meshv1.StageComplete, Namespaces: nsStatus.DeepCopy(), Revisions: revs,
		Conditions: []metav1.Condition{{Type: meshv1.ConditionDegraded, Status: metav1.ConditionTrue, Reason: meshv1.ReasonIstiodCANotLoaded, Message: "istiod signs with the old intermediate"}}}
	tests := map[string]struct {
		obs          observation
		before       meshv1.MeshInstallationStatus
		wantReady    metav1.ConditionStatus
		wantReason   string
		wantObserved int64
		wantVersion  string
		// wantStageReasons are the stage conditions' reasons; "" means left unset.
		wantStageReasons []string
		// wantProgressing and wantDegraded are those conditions' status and reason.
		wantProgressing, wantDegraded [2]string
		// check looks at the parts of status copied from the stages' results.
		check func(t *testing.T, st meshv1.MeshInstallationStatus)
	}{
		"every stage ready": {
			obs:       observation{generation: 3, now: now, activeName: "default", active: true, version: "1.31.4", stageTypes: types, outcome: allReady},
			wantReady: metav1.ConditionTrue, wantReason: meshv1.ReasonAllStagesReady,
			wantObserved: 3, wantVersion: "1.31.4", wantStageReasons: []string{"R", "R", "R", "R"},
			wantProgressing: [2]string{"False", meshv1.ReasonAsExpected}, wantDegraded: [2]string{"False", meshv1.ReasonAsExpected},
		},
		"stopped at the second stage": {
			obs:       observation{generation: 3, now: now, activeName: "default", active: true, version: "1.31.4", stageTypes: types, outcome: secondWaiting},
			wantReady: metav1.ConditionFalse, wantReason: "Waiting",
			wantObserved: 3, wantVersion: "1.31.4",
			wantStageReasons: []string{"R", "Waiting", meshv1.ReasonWaitingForPreviousStage, meshv1.ReasonWaitingForPreviousStage},
			wantProgressing:  [2]string{"True", meshv1.ReasonStageInProgress}, wantDegraded: [2]string{"False", meshv1.ReasonAsExpected},
		},
		"the second stage failed: not progressing, with its reason": {
			obs:       observation{generation: 4, now: now, activeName: "default", active: true, version: "1.31.4", stageTypes: types, outcome: secondFailed},
			wantReady: metav1.ConditionFalse, wantReason: meshv1.ReasonInvalidValues,
			wantObserved: 4, wantVersion: "1.31.4",
			wantStageReasons: []string{"R", meshv1.ReasonInvalidValues, meshv1.ReasonWaitingForPreviousStage, meshv1.ReasonWaitingForPreviousStage},
			wantProgressing:  [2]string{"False", meshv1.ReasonInvalidValues}, wantDegraded: [2]string{"False", meshv1.ReasonAsExpected},
		},
		"ready but degraded; namespaces and revisions copied from the stages": {
			obs:       observation{generation: 5, now: now, activeName: "default", active: true, version: "1.31.4", stageTypes: types, outcome: degradedReady},
			wantReady: metav1.ConditionTrue, wantReason: meshv1.ReasonAllStagesReady,
			wantObserved: 5, wantVersion: "1.31.4", wantStageReasons: []string{"R", meshv1.ReasonChartSourceUnavailable, "R", "R"},
			wantProgressing: [2]string{"False", meshv1.ReasonAsExpected}, wantDegraded: [2]string{"True", meshv1.ReasonChartSourceUnavailable},
			check: func(t *testing.T, st meshv1.MeshInstallationStatus) {
				if !equality.Semantic.DeepEqual(st.Namespaces, nsStatus) || !equality.Semantic.DeepEqual(st.Revisions, revs) || st.Stage != meshv1.StageComplete {
					t.Errorf("namespaces %+v, revisions %+v, stage %s; want the stages' own", st.Namespaces, st.Revisions, st.Stage)
				}
				if st.Namespaces == nsStatus {
					t.Error("status shares the stage's NamespacesStatus instead of a copy")
				}
			},
		},
		"active, pass failed: observedGeneration does not move": {
			obs:       observation{generation: 3, now: now, activeName: "default", active: true, version: "1.31.4", stageTypes: types, outcome: firstErr, err: errors.New("boom")},
			wantReady: metav1.ConditionUnknown, wantReason: meshv1.ReasonReconcileError,
			wantObserved: 0, wantVersion: "1.31.4", wantStageReasons: []string{"", "", "", ""},
			wantProgressing: [2]string{"True", meshv1.ReasonReconcileError}, wantDegraded: [2]string{"True", meshv1.ReasonIstiodCANotLoaded},
			before: previous,
			check: func(t *testing.T, st meshv1.MeshInstallationStatus) {
				if !equality.Semantic.DeepEqual(st.Namespaces, nsStatus) || len(st.Revisions) != 1 {
					t.Errorf("a failed pass lost what status said: namespaces %+v, revisions %+v", st.Namespaces, st.Revisions)
				}
			},
		},
		"another installation is active": {
			obs:       observation{generation: 1, now: now, activeName: "other", stageTypes: types},
			wantReady: metav1.ConditionFalse, wantReason: meshv1.ReasonConflict,
			wantObserved: 0, wantVersion: "",
			wantStageReasons: []string{meshv1.ReasonConflict, meshv1.ReasonConflict, meshv1.ReasonConflict, meshv1.ReasonConflict},
			wantProgressing:  [2]string{"False", meshv1.ReasonConflict}, wantDegraded: [2]string{"False", meshv1.ReasonAsExpected},
			before: previous,
			check: func(t *testing.T, st meshv1.MeshInstallationStatus) {
				if st.Stage != "" || st.Namespaces != nil || st.Revisions != nil || st.Certificates != nil {
					t.Errorf("a conflicting installation still reports the mesh: %+v", st)
				}
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			st := *tc.before.DeepCopy()
			computeStatus(&st, tc.obs)
			ready := meta.FindStatusCondition(st.Conditions, meshv1.ConditionReady)
			if ready == nil || ready.Status != tc.wantReady || ready.Reason != tc.wantReason || ready.Message == "" {
				t.Fatalf("Ready = %+v, want %s/%s with a message", ready, tc.wantReady, tc.wantReason)
			}
			if st.ObservedGeneration != tc.wantObserved {
				t.Fatalf("observedGeneration = %d, want %d", st.ObservedGeneration, tc.wantObserved)
			}
			if st.Version != tc.wantVersion {
				t.Fatalf("version = %q, want %q", st.Version, tc.wantVersion)
			}
			for i, typ := range types {
				c := meta.FindStatusCondition(st.Conditions, typ)
				if tc.wantStageReasons[i] == "" {
					if c != nil {
						t.Fatalf("%s = %+v, want it left unset", typ, c)
					}
					continue
				}
				if c == nil || c.Reason != tc.wantStageReasons[i] {
					t.Fatalf("%s = %+v, want reason %s", typ, c, tc.wantStageReasons[i])
				}
			}

			for typ, want := range map[string][2]string{meshv1.ConditionProgressing: tc.wantProgressing, meshv1.ConditionDegraded: tc.wantDegraded} {
				c := meta.FindStatusCondition(st.Conditions, typ)
				if c == nil || string(c.Status) != want[0] || c.Reason != want[1] || c.Message == "" {
					t.Errorf("%s = %+v, want %s/%s with a message", typ, c, want[0], want[1])
				}
			}
			if tc.check != nil {
				tc.check(t, st)
			}

			// Recomputing the same observation later changes nothing: no write, no new
			// lastTransitionTime.
			again := *st.DeepCopy()
			later := tc.obs
			later.now = metav1.NewTime(now.Add(time.Hour))
			computeStatus(&again, later)
			if !equality.Semantic.DeepEqual(st, again) {
				t.Fatalf("recomputing an unchanged observation changed the status:\n%+v\n%+v", st, again)
			}
		})
	}
}

// TestStagesFollowTheAPIList fails when a stage is added to (or moved in) the engine's list and
// not to meshv1.Stages, or the other way round: the conditions, the Ready message and the
// plugin's checklist are made from meshv1.Stages.
func TestStagesFollowTheAPIList(t *testing.T) {
	built := NewStages(StageDeps{})
	if len(built) != len(meshv1.Stages) {
		t.Fatalf("NewStages has %d stages, meshv1.Stages %d", len(built), len(meshv1.Stages))
	}
	for i, s := range built {
		want := meshv1.Stages[i]
		if s.Name() != want.Name || s.ConditionType() != want.Condition {
			t.Errorf("stage %d is %s reported by %s; meshv1.Stages says %s reported by %s", i, s.Name(), s.ConditionType(), want.Name, want.Condition)
		}
		if want.Delivers == "" {
			t.Errorf("meshv1.Stages[%d] (%s) says nothing of what it delivers, for the Ready message", i, want.Name)
		}
	}
	const message = "Every stage is Ready: the mesh CA, Istio's control plane, the injection webhook, the mesh-wide policy, and every enrolled namespace at its target level."
	if got := meshv1.AllStagesReadyMessage(); got != message {
		t.Errorf("Ready message = %q, want %q", got, message)
	}
}

func TestProgressOnly(t *testing.T) {
	base := func(underWay bool) *meshv1.MeshInstallationStatus {
		s := &meshv1.MeshInstallationStatus{
			ObservedGeneration: 2, Stage: meshv1.StageControlPlane,
			Conditions: []metav1.Condition{
				{Type: meshv1.ConditionCertificatesReady, Status: metav1.ConditionTrue, Reason: "CAReady", Message: "The CA is ready."},
				{Type: meshv1.ConditionControlPlaneReady, Status: metav1.ConditionFalse, Reason: "WaitingForCRDs", Message: "Waiting for 15 of Istio's CRDs"},
				{Type: meshv1.ConditionInjectionReady, Status: metav1.ConditionUnknown, Reason: "WaitingForPreviousStage"},
				{Type: meshv1.ConditionReady, Status: metav1.ConditionFalse, Reason: "WaitingForCRDs"},
				{Type: meshv1.ConditionDegraded, Status: metav1.ConditionFalse, Reason: "AsExpected"},
			},
			Namespaces: &meshv1.NamespacesStatus{Enrolled: 3, Observe: 1, BlockedCount: 1, Blocked: []meshv1.BlockedNamespace{{Name: "shop", Reason: "PodsNotReady"}}},
			Revisions:  []meshv1.RevisionStatus{{Name: "default", Version: "1.31.4", Active: true, Namespaces: 1, Pods: 3}},
		}
		if underWay {
			s.Conditions = append(s.Conditions, metav1.Condition{Type: meshv1.ConditionProgressing, Status: metav1.ConditionTrue, Reason: meshv1.ReasonStageInProgress})
		}
		return s
	}
	set := func(s *meshv1.MeshInstallationStatus, conditionType string, status metav1.ConditionStatus, reason string) {
		meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: conditionType, Status: status, Reason: reason, LastTransitionTime: metav1.Now()})
	}
	nextStage := func(s *meshv1.MeshInstallationStatus) {
		s.Stage = meshv1.StageInjection
		set(s, meshv1.ConditionControlPlaneReady, metav1.ConditionTrue, "ControlPlaneReady")
		set(s, meshv1.ConditionInjectionReady, metav1.ConditionFalse, "WebhookNotServing")
		set(s, meshv1.ConditionReady, metav1.ConditionFalse, "WebhookNotServing")
	}
	tests := map[string]struct {
		underWay bool
		change   func(*meshv1.MeshInstallationStatus)
		want     bool
		// oneWay: the change the other way round gives the other answer (a condition that was
		// True and is not any more is news; one that turns True is a step).
		oneWay bool
	}{
		"a message":                  {change: func(s *meshv1.MeshInstallationStatus) { s.Conditions[1].Message = "Waiting for 3 of Istio's CRDs" }, want: true},
		"namespace counts":           {change: func(s *meshv1.MeshInstallationStatus) { s.Namespaces.Observe, s.Namespaces.MutualTLS = 0, 1 }, want: true},
		"a revision's pods":          {change: func(s *meshv1.MeshInstallationStatus) { s.Revisions[0].Pods = 6 }, want: true},
		"a reason":                   {change: func(s *meshv1.MeshInstallationStatus) { s.Conditions[1].Reason = "WaitingForIstiod" }},
		"a condition's status":       {change: func(s *meshv1.MeshInstallationStatus) { s.Conditions[1].Status = metav1.ConditionTrue }},
		"the stage":                  {change: func(s *meshv1.MeshInstallationStatus) { s.Stage = meshv1.StageInjection }},
		"the observed generation":    {change: func(s *meshv1.MeshInstallationStatus) { s.ObservedGeneration = 3 }},
		"which namespace is blocked": {change: func(s *meshv1.MeshInstallationStatus) { s.Namespaces.Blocked[0].Name = "cart" }},
		"a new revision": {change: func(s *meshv1.MeshInstallationStatus) {
			s.Revisions = append(s.Revisions, meshv1.RevisionStatus{Name: "1-32-0"})
		}},
		"namespaces first reported": {change: func(s *meshv1.MeshInstallationStatus) { s.Namespaces = nil }},
		"the intermediate's issuer and expiry": {want: true, change: func(s *meshv1.MeshInstallationStatus) {
			s.Certificates = &meshv1.CertificatesStatus{Issuer: "Issuer/meshwright-root-ca", NotAfter: &metav1.Time{Time: time.Now()}}
		}},
		"the root rotation's record": {change: func(s *meshv1.MeshInstallationStatus) {
			s.Certificates = &meshv1.CertificatesStatus{Generation: 1, RotatedFor: "now"}
		}},
		"under way: a reason": {underWay: true, want: true, change: func(s *meshv1.MeshInstallationStatus) {
			set(s, meshv1.ConditionControlPlaneReady, metav1.ConditionFalse, "WaitingForIstiod")
			set(s, meshv1.ConditionReady, metav1.ConditionFalse, "WaitingForIstiod")
		}},
		"under way: the next stage": {underWay: true, want: true, oneWay: true, change: nextStage},
		"under way: an earlier stage is not Ready any more": {underWay: true, oneWay: true, change: func(s *meshv1.MeshInstallationStatus) {
			set(s, meshv1.ConditionCertificatesReady, metav1.ConditionFalse, "InvalidCA")
			set(s, meshv1.ConditionReady, metav1.ConditionFalse, "InvalidCA")
			s.Stage = meshv1.StageCertificates
		}},
		"a rollout starts": {change: func(s *meshv1.MeshInstallationStatus) {
			set(s, meshv1.ConditionProgressing, metav1.ConditionTrue, meshv1.ReasonStageInProgress)
			set(s, meshv1.ConditionControlPlaneReady, metav1.ConditionFalse, "WaitingForIstiod")
		}},
		"under way: Ready": {underWay: true, change: func(s *meshv1.MeshInstallationStatus) {
			nextStage(s)
			s.Stage = meshv1.StageComplete
			set(s, meshv1.ConditionReady, metav1.ConditionTrue, "AllStagesReady")
			set(s, meshv1.ConditionProgressing, metav1.ConditionFalse, "AsExpected")
		}},
		"under way: a stage stops": {underWay: true, change: func(s *meshv1.MeshInstallationStatus) {
			set(s, meshv1.ConditionControlPlaneReady, metav1.ConditionFalse, "ApplyRejected")
			set(s, meshv1.ConditionProgressing, metav1.ConditionFalse, "ApplyRejected")
		}},
		"under way: a pass fails": {underWay: true, change: func(s *meshv1.MeshInstallationStatus) {
			set(s, meshv1.ConditionReady, metav1.ConditionUnknown, "ReconcileError")
			set(s, meshv1.ConditionProgressing, metav1.ConditionTrue, "ReconcileError")
		}},
		"under way: Degraded": {underWay: true, change: func(s *meshv1.MeshInstallationStatus) {
			set(s, meshv1.ConditionDegraded, metav1.ConditionTrue, "IstiodUnavailable")
		}},
		"under way: the observed generation": {underWay: true, change: func(s *meshv1.MeshInstallationStatus) { s.ObservedGeneration = 3 }},
		"under way: which namespace is blocked": {underWay: true, change: func(s *meshv1.MeshInstallationStatus) {
			s.Namespaces.Blocked = append(s.Namespaces.Blocked, meshv1.BlockedNamespace{Name: "cart", Reason: "TrafficDenied"})
			s.Namespaces.BlockedCount = 2
		}},
		"under way: the root rotation's record": {underWay: true, change: func(s *meshv1.MeshInstallationStatus) {
			s.Certificates = &meshv1.CertificatesStatus{Rotation: &meshv1.RootRotationStatus{Phase: meshv1.RotationTrust}}
		}},
		"under way: a new revision": {underWay: true, want: true, change: func(s *meshv1.MeshInstallationStatus) {
			s.Revisions = append(s.Revisions, meshv1.RevisionStatus{Name: "1-32-0"})
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			a, b := base(tc.underWay), base(tc.underWay)
			tc.change(b)
			if got := progressOnly(a, b); got != tc.want {
				t.Errorf("progressOnly = %v, want %v", got, tc.want)
			}
			if got, want := progressOnly(b, a), tc.want != tc.oneWay; got != want {
				t.Errorf("progressOnly, the other way = %v, want %v", got, want)
			}
		})
	}
}
