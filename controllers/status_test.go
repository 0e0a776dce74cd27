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
	tests := map[string]struct {
		obs          observation
		wantReady    metav1.ConditionStatus
		wantReason   string
		wantObserved int64
		wantVersion  string
		// wantStageReasons are the stage conditions' reasons; "" means left unset.
		wantStageReasons []string
	}{
		"every stage ready": {
			obs:       observation{generation: 3, now: now, activeName: "default", active: true, version: "1.31.4", stageTypes: types, outcome: allReady},
			wantReady: metav1.ConditionTrue, wantReason: meshv1.ReasonAllStagesReady,
			wantObserved: 3, wantVersion: "1.31.4", wantStageReasons: []string{"R", "R", "R", "R"},
		},
		"stopped at the second stage": {
			obs:       observation{generation: 3, now: now, activeName: "default", active: true, version: "1.31.4", stageTypes: types, outcome: secondWaiting},
			wantReady: metav1.ConditionFalse, wantReason: "Waiting",
			wantObserved: 3, wantVersion: "1.31.4",
			wantStageReasons: []string{"R", "Waiting", meshv1.ReasonWaitingForPreviousStage, meshv1.ReasonWaitingForPreviousStage},
		},
		"active, pass failed: observedGeneration does not move": {
			obs:       observation{generation: 3, now: now, activeName: "default", active: true, version: "1.31.4", stageTypes: types, outcome: firstErr, err: errors.New("boom")},
			wantReady: metav1.ConditionUnknown, wantReason: meshv1.ReasonReconcileError,
			wantObserved: 0, wantVersion: "1.31.4", wantStageReasons: []string{"", "", "", ""},
		},
		"another installation is active": {
			obs:       observation{generation: 1, now: now, activeName: "other", stageTypes: types},
			wantReady: metav1.ConditionFalse, wantReason: meshv1.ReasonConflict,
			wantObserved: 0, wantVersion: "",
			wantStageReasons: []string{meshv1.ReasonConflict, meshv1.ReasonConflict, meshv1.ReasonConflict, meshv1.ReasonConflict},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			st := meshv1.MeshInstallationStatus{}
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
