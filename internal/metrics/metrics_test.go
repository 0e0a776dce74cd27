package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/traffic"
)

func TestRecordStatus(t *testing.T) {
	notAfter := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	caExpiry.clock = clocktesting.NewFakePassiveClock(notAfter.Add(-90 * time.Minute))
	defer func() { caExpiry.clock = clock.RealClock{} }()

	tests := map[string]struct {
		status        meshv1.MeshInstallationStatus
		wantLevels    map[meshv1.AdoptionLevel]float64
		wantInProg    float64
		wantAmbient   float64
		wantBlocked   float64
		wantCA        bool
		wantCondition map[string]string // type → reason of its one series
	}{
		"mid-rollout": {
			status: meshv1.MeshInstallationStatus{
				Namespaces:   &meshv1.NamespacesStatus{Enrolled: 7, Pending: 3, Observe: 2, MutualTLS: 1, ZeroTrust: 1, InProgress: 2, Ambient: 3, BlockedCount: 1},
				Certificates: &meshv1.CertificatesStatus{NotAfter: &metav1.Time{Time: notAfter}},
				Conditions: []metav1.Condition{{Type: meshv1.ConditionReady, Status: metav1.ConditionFalse, Reason: meshv1.ReasonNamespacesProgressing},
					{Type: meshv1.ConditionDegraded, Status: metav1.ConditionFalse, Reason: meshv1.ReasonAsExpected}},
			},
			wantLevels: map[meshv1.AdoptionLevel]float64{meshv1.LevelOff: 3, meshv1.LevelObserve: 2, meshv1.LevelMutualTLS: 1, meshv1.LevelZeroTrust: 1},
			wantInProg: 2, wantAmbient: 3, wantBlocked: 1, wantCA: true,
			wantCondition: map[string]string{meshv1.ConditionReady: meshv1.ReasonNamespacesProgressing, meshv1.ConditionDegraded: meshv1.ReasonAsExpected},
		},
		"the next pass replaces each condition's series": {
			status: meshv1.MeshInstallationStatus{
				Namespaces: &meshv1.NamespacesStatus{Enrolled: 2, MutualTLS: 2},
				Conditions: []metav1.Condition{{Type: meshv1.ConditionReady, Status: metav1.ConditionTrue, Reason: meshv1.ReasonAllStagesReady}},
			},
			wantLevels:    map[meshv1.AdoptionLevel]float64{meshv1.LevelOff: 0, meshv1.LevelMutualTLS: 2, meshv1.LevelObserve: 0, meshv1.LevelZeroTrust: 0},
			wantCondition: map[string]string{meshv1.ConditionReady: meshv1.ReasonAllStagesReady},
		},
		"before any namespace is looked at": {
			status:     meshv1.MeshInstallationStatus{},
			wantLevels: map[meshv1.AdoptionLevel]float64{meshv1.LevelOff: 0, meshv1.LevelObserve: 0, meshv1.LevelMutualTLS: 0, meshv1.LevelZeroTrust: 0},
		},
		"namespaces walking down from levels they left": {
			status:     meshv1.MeshInstallationStatus{Namespaces: &meshv1.NamespacesStatus{Enrolled: 0, Observe: 1}},
			wantLevels: map[meshv1.AdoptionLevel]float64{meshv1.LevelOff: 0, meshv1.LevelObserve: 1, meshv1.LevelMutualTLS: 0, meshv1.LevelZeroTrust: 0},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			const mesh = "table"
			defer Forget(mesh)
			// A previous pass with other conditions, to see them replaced.
			RecordStatus(mesh, &meshv1.MeshInstallationStatus{Conditions: []metav1.Condition{
				{Type: meshv1.ConditionReady, Status: metav1.ConditionUnknown, Reason: meshv1.ReasonPending}}})
			RecordStatus(mesh, &tc.status)
			// One series per rung of the ladder, none forgotten.
			for _, l := range ladder.Levels() {
				if _, listed := tc.wantLevels[l]; !listed {
					t.Errorf("the case lists no count for %s", l)
				}
			}
			if n := testutil.CollectAndCount(namespaces); n != len(ladder.Levels()) {
				t.Errorf("%d namespaces series, want one per level (%d)", n, len(ladder.Levels()))
			}
			for level, want := range tc.wantLevels {
				if got := testutil.ToFloat64(namespaces.WithLabelValues(mesh, string(level))); got != want {
					t.Errorf("namespaces at %s = %v, want %v", level, got, want)
				}
			}
			if got := testutil.ToFloat64(inProgress.WithLabelValues(mesh)); got != tc.wantInProg {
				t.Errorf("in progress = %v, want %v", got, tc.wantInProg)
			}
			if got := testutil.ToFloat64(ambientNamespaces.WithLabelValues(mesh)); got != tc.wantAmbient {
				t.Errorf("in ambient mode = %v, want %v", got, tc.wantAmbient)
			}
			if got := testutil.ToFloat64(blocked.WithLabelValues(mesh)); got != tc.wantBlocked {
				t.Errorf("blocked = %v, want %v", got, tc.wantBlocked)
			}
			if n := testutil.CollectAndCount(caExpiry); (n == 1) != tc.wantCA {
				t.Errorf("%d CA expiry series, want one: %v", n, tc.wantCA)
			}
			if tc.wantCA {
				if got := testutil.ToFloat64(caExpiry); got != 5400 {
					t.Errorf("CA expiry = %v s, want 5400 (computed when scraped)", got)
				}
			}
			if got, want := testutil.CollectAndCount(condition), len(tc.wantCondition); got != want {
				t.Errorf("%d condition series, want %d (one per condition)", got, want)
			}
			for typ, reason := range tc.wantCondition {
				var status string
				for _, c := range tc.status.Conditions {
					if c.Type == typ {
						status = string(c.Status)
					}
				}
				if got := testutil.ToFloat64(condition.WithLabelValues(mesh, typ, status, reason)); got != 1 {
					t.Errorf("condition %s/%s/%s = %v, want 1", typ, status, reason, got)
				}
			}
		})
	}
}

func TestLadderEventsAndForget(t *testing.T) {
	const mesh = "events"
	LadderEvent(mesh, "StepStarted", false)
	LadderEvent(mesh, meshv1.ReasonRolledBack, true)  // the reverting step starts
	LadderEvent(mesh, meshv1.ReasonRolledBack, false) // and completes
	if got := testutil.ToFloat64(ladderEvents.WithLabelValues(mesh, meshv1.ReasonRolledBack)); got != 2 {
		t.Errorf("RolledBack events = %v, want 2", got)
	}
	if got := testutil.ToFloat64(rollbacks.WithLabelValues(mesh)); got != 1 {
		t.Errorf("rollbacks = %v, want 1", got)
	}
	RecordStatus(mesh, &meshv1.MeshInstallationStatus{Certificates: &meshv1.CertificatesStatus{NotAfter: &metav1.Time{Time: time.Now()}}})
	Forget(mesh)
	for name, c := range map[string]prometheus.Collector{"ladder events": ladderEvents, "rollbacks": rollbacks, "namespaces": namespaces, "in ambient mode": ambientNamespaces, "CA expiry": caExpiry} {
		if n := testutil.CollectAndCount(c); n != 0 {
			t.Errorf("%s: %d series left after Forget", name, n)
		}
	}
}

// TestTrafficReads: each read of a namespace's traffic is counted by what came of it, so that an
// alert can tell a source the gates cannot read from traffic they are right to hold for.
func TestTrafficReads(t *testing.T) {
	const mesh = "reads"
	tests := map[string]struct {
		reading traffic.Reading
		ambient bool
		result  string
	}{
		"read":                  {reading: traffic.Reading{Inbound: traffic.Inbound{Reporting: true}}, result: "read"},
		"source did not answer": {reading: traffic.Reading{Unavailable: "timeout"}, result: "unavailable"},
		"proxies unreachable":   {reading: traffic.Reading{Unreachable: "web-1", Inbound: traffic.Inbound{Reporting: true}}, result: "unreachable"},
		"no series":             {reading: traffic.Reading{}, result: "no_series"},
		// A namespace in ambient mode: no sidecar reports, ztunnel does.
		"read from ztunnel":                          {reading: traffic.Reading{Inbound: traffic.Inbound{ZtunnelReporting: true}}, ambient: true, result: "read"},
		"sidecars without series, ztunnel reporting": {reading: traffic.Reading{Inbound: traffic.Inbound{ZtunnelReporting: true}}, result: "no_series"},
		"ambient, ztunnel silent":                    {reading: traffic.Reading{Inbound: traffic.Inbound{Reporting: true}}, ambient: true, result: "no_series"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			before := testutil.ToFloat64(trafficReads.WithLabelValues(mesh, "embedded", tc.result))
			TrafficRead(mesh, "embedded", tc.reading, tc.ambient)
			if got := testutil.ToFloat64(trafficReads.WithLabelValues(mesh, "embedded", tc.result)); got != before+1 {
				t.Errorf("%s reads = %v, want %v", tc.result, got, before+1)
			}
		})
	}
	Forget(mesh)
	if n := testutil.CollectAndCount(trafficReads); n != 0 {
		t.Errorf("%d traffic read series left after Forget", n)
	}
}

// TestRegister: every metric is served by controller-runtime's registry, under the names the
// alerts and dashboards use; registering twice is harmless.
func TestRegister(t *testing.T) {
	Register()
	Register()
	RecordStatus("registered", &meshv1.MeshInstallationStatus{Certificates: &meshv1.CertificatesStatus{NotAfter: &metav1.Time{Time: time.Now()}},
		Conditions: []metav1.Condition{{Type: meshv1.ConditionReady, Status: metav1.ConditionTrue, Reason: meshv1.ReasonAllStagesReady}}})
	ObserveStage(meshv1.StageControlPlane, time.Millisecond)
	LadderEvent("registered", meshv1.ReasonRolledBack, true)
	defer Forget("registered")
	families, err := ctrlRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]bool{}
	for _, f := range families {
		served[f.GetName()] = true
	}
	for _, name := range []string{NamespacesName, InProgressName, BlockedName, ConditionName, CAExpiryName, StageDurationName, LadderEventsName, RollbacksName} {
		if !served[name] {
			t.Errorf("%s is not served", name)
		}
	}
}

func ctrlRegistry() prometheus.Gatherer { return ctrlmetrics.Registry }

// TestRevisionSeries: one series per revision in status, labelled with its version and whether
// it is active; a revision removed from status loses its series.
func TestRevisionSeries(t *testing.T) {
	const mesh = "revisions"
	defer Forget(mesh)
	RecordStatus(mesh, &meshv1.MeshInstallationStatus{Revisions: []meshv1.RevisionStatus{
		{Name: "1-31-5", Version: "1.31.5", Active: true, Namespaces: 3, Pods: 9},
		{Name: "default", Version: "1.31.4", Namespaces: 1, Pods: 2},
	}})
	if got := testutil.ToFloat64(revisionNamespaces.WithLabelValues(mesh, "1-31-5", "1.31.5", "true")); got != 3 {
		t.Errorf("namespaces of the active revision = %v, want 3", got)
	}
	if got := testutil.ToFloat64(revisionPods.WithLabelValues(mesh, "default", "1.31.4", "false")); got != 2 {
		t.Errorf("pods of the retiring revision = %v, want 2", got)
	}
	RecordStatus(mesh, &meshv1.MeshInstallationStatus{Revisions: []meshv1.RevisionStatus{{Name: "1-31-5", Version: "1.31.5", Active: true, Namespaces: 4, Pods: 11}}})
	if n := testutil.CollectAndCount(revisionNamespaces); n != 1 {
		t.Errorf("%d revision series after the old revision went, want 1", n)
	}
}

// TestRotationSeries: a phase's series while a rotation runs, replaced by the next phase's,
// and none once it is done.
func TestRotationSeries(t *testing.T) {
	const mesh = "rotating"
	defer Forget(mesh)
	since := metav1.NewTime(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
	status := func(phase meshv1.RotationPhase, pending int32) *meshv1.MeshInstallationStatus {
		return &meshv1.MeshInstallationStatus{Certificates: &meshv1.CertificatesStatus{Rotation: &meshv1.RootRotationStatus{Phase: phase, Since: &since, PendingPods: pending}}}
	}
	RecordStatus(mesh, status(meshv1.RotationTrust, 0))
	RecordStatus(mesh, status(meshv1.RotationSwitch, 7))
	if got := testutil.ToFloat64(rotationPhase.WithLabelValues(mesh, "Switch")); got != float64(since.Unix()) {
		t.Errorf("phase start = %v, want %d", got, since.Unix())
	}
	if n := testutil.CollectAndCount(rotationPhase); n != 1 {
		t.Errorf("%d phase series, want only the current phase's", n)
	}
	if got := testutil.ToFloat64(rotationPending.WithLabelValues(mesh)); got != 7 {
		t.Errorf("pending pods = %v, want 7", got)
	}
	RecordStatus(mesh, &meshv1.MeshInstallationStatus{Certificates: &meshv1.CertificatesStatus{Generation: 1}})
	if n := testutil.CollectAndCount(rotationPhase) + testutil.CollectAndCount(rotationPending); n != 0 {
		t.Errorf("%d rotation series after it finished, want 0", n)
	}
}
