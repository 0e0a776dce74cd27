package controllers

import (
	"errors"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

func TestComputeStatus(t *testing.T) {
	now := metav1.NewTime(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))
	tests := map[string]struct {
		obs           observation
		wantReady     metav1.ConditionStatus
		wantReason    string
		wantObserved  int64
		wantVersion   string
		wantStageCond string // reason of every stage condition
	}{
		"active, pass succeeded": {
			obs:       observation{generation: 3, now: now, activeName: "default", active: true, version: "1.31.4"},
			wantReady: metav1.ConditionUnknown, wantReason: meshv1.ReasonPending,
			wantObserved: 3, wantVersion: "1.31.4", wantStageCond: meshv1.ReasonPending,
		},
		"active, pass failed: observedGeneration does not move": {
			obs:       observation{generation: 3, now: now, activeName: "default", active: true, version: "1.31.4", err: errors.New("boom")},
			wantReady: metav1.ConditionUnknown, wantReason: meshv1.ReasonReconcileError,
			wantObserved: 0, wantVersion: "1.31.4", wantStageCond: meshv1.ReasonPending,
		},
		"another installation is active": {
			obs:       observation{generation: 1, now: now, activeName: "other"},
			wantReady: metav1.ConditionFalse, wantReason: meshv1.ReasonConflict,
			wantObserved: 0, wantVersion: "", wantStageCond: meshv1.ReasonPending,
		},
		"listing failed before the arbiter ran": {
			obs:       observation{generation: 1, now: now, err: errors.New("timeout")},
			wantReady: metav1.ConditionUnknown, wantReason: meshv1.ReasonReconcileError,
			wantObserved: 0, wantStageCond: meshv1.ReasonPending,
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
			for _, typ := range meshv1.StageConditionTypes {
				if c := meta.FindStatusCondition(st.Conditions, typ); c == nil || c.Reason != tc.wantStageCond {
					t.Fatalf("%s = %+v, want reason %s", typ, c, tc.wantStageCond)
				}
			}
			if len(st.Conditions) != len(meshv1.StageConditionTypes)+3 {
				t.Fatalf("want %d conditions, got %d", len(meshv1.StageConditionTypes)+3, len(st.Conditions))
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
