package ladder

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

// TestPodsAdmitted: a climb onto Observe (it restarts every workload to inject it) starts only
// when the API server admits the pods as the climb will have them; a refusal holds it with the
// API server's words and the way out, a reader that creates no pods waits and says so, and
// climbs that restart nothing are not judged.
func TestPodsAdmitted(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	psa := AdmissionRefusal{Workload: "Deployment/web", Message: `pods "web-x" is forbidden: violates PodSecurity "baseline:latest": non-default capabilities (container "istio-init" must not include "NET_ADMIN", "NET_RAW" in securityContext.capabilities.add)`}
	quota := AdmissionRefusal{Workload: "StatefulSet/db", Message: `pods "db-x" is forbidden: exceeded quota: small, requested: requests.cpu=100m, used: requests.cpu=900m, limited: requests.cpu=1`}
	tests := map[string]struct {
		current, target Level
		admission       Admission
		wantStep        Level
		wantReason      string
		wantMessage     []string
		wantUnread      bool
	}{
		"admitted: the climb starts": {current: meshv1.LevelOff, target: meshv1.LevelObserve, admission: Admission{Revision: "default"}, wantStep: meshv1.LevelObserve},
		"Pod Security refuses istio-init": {current: meshv1.LevelOff, target: meshv1.LevelObserve, admission: Admission{Revision: "default", Refused: []AdmissionRefusal{psa}},
			wantReason: meshv1.ReasonPodAdmissionRefused, wantMessage: []string{"1 workload(s)", "step to Observe", "revision default", "Deployment/web: pods \"web-x\" is forbidden: violates PodSecurity", "nothing was restarted", "Istio CNI", "spec.dataPlane.cni: Enabled"}},
		"a quota has no room for the proxy": {current: meshv1.LevelOff, target: meshv1.LevelMutualTLS, admission: Admission{Revision: "1-31-5", Refused: []AdmissionRefusal{quota}},
			wantReason: meshv1.ReasonPodAdmissionRefused, wantMessage: []string{"StatefulSet/db: pods \"db-x\" is forbidden: exceeded quota", "revision 1-31-5", "Make room for the proxy"}},
		"both are named": {current: meshv1.LevelOff, target: meshv1.LevelObserve, admission: Admission{Revision: "default", Refused: []AdmissionRefusal{psa, quota}},
			wantReason: meshv1.ReasonPodAdmissionRefused, wantMessage: []string{"2 workload(s)", "Deployment/web", "StatefulSet/db"}},
		"a reader that creates no pods predicts the climb": {current: meshv1.LevelOff, target: meshv1.LevelObserve, admission: Admission{Unchecked: true}, wantStep: meshv1.LevelObserve},
		"… but not one the operator reported held": {current: meshv1.LevelOff, target: meshv1.LevelObserve, admission: Admission{Unchecked: true, Reported: true},
			wantMessage: []string{"as the operator last reported"}, wantUnread: true},
		"no free slot: not checked, waits": {current: meshv1.LevelOff, target: meshv1.LevelObserve, admission: Admission{Deferred: true},
			wantMessage: []string{"waiting for a free slot for the step to Observe"}},
		"a check that could not be made waits": {current: meshv1.LevelOff, target: meshv1.LevelObserve, admission: Admission{Problem: "failed calling webhook"},
			wantMessage: []string{"could not be checked: failed calling webhook"}},
		"a climb to MutualTLS restarts nothing and is not judged": {current: meshv1.LevelObserve, target: meshv1.LevelMutualTLS, admission: Admission{Refused: []AdmissionRefusal{psa}},
			wantStep: meshv1.LevelMutualTLS},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ns := Namespace{Name: "shop", Current: tc.current, State: State{Since: now.Add(-2 * time.Hour)}, Target: tc.target, Admission: tc.admission,
				Pods: Pods{Total: 1, Ready: 1}, Workloads: []Workload{{Kind: "Deployment", Name: "web", Pods: 1, Injected: tc.current != meshv1.LevelOff, Uninjected: tc.current == meshv1.LevelOff, RolledOut: true}}}
			s := Settings{StepTimeout: 10 * time.Minute, SoakTime: time.Minute, ObserveTime: time.Minute}
			if got := ChecksAdmission(ns, s); got != (tc.current == meshv1.LevelOff) {
				t.Errorf("ChecksAdmission = %v, want it for the climb onto Observe only", got)
			}
			d := Decide(ns, s, true, now)
			if tc.wantStep != "" {
				if d.State.Step == nil || d.State.Step.To != tc.wantStep {
					t.Fatalf("want a step to %s, got %+v (blocked %+v, waiting %q)", tc.wantStep, d.State.Step, d.Blocked, d.Waiting)
				}
				return
			}
			if d.State.Step != nil || len(d.Restart) > 0 {
				t.Fatalf("a step started: %+v, restarts %v", d.State.Step, d.Restart)
			}
			if d.Blocked.Reason != tc.wantReason || d.Unread != tc.wantUnread {
				t.Fatalf("blocked %+v unread %v, want reason %q unread %v", d.Blocked, d.Unread, tc.wantReason, tc.wantUnread)
			}
			text := d.Blocked.Message + d.Waiting
			for _, w := range tc.wantMessage {
				if !strings.Contains(text, w) {
					t.Errorf("%q lacks %q", text, w)
				}
			}
			if d.RecheckAfter != AdmissionRecheck {
				t.Errorf("recheck after %s, want %s: what refused the pods is not watched", d.RecheckAfter, AdmissionRecheck)
			}
		})
	}
	// Not climbing: at target, held, or mid-step, nothing is created.
	for name, ns := range map[string]Namespace{
		"at target": {Current: meshv1.LevelObserve, Target: meshv1.LevelObserve},
		"mid-step":  {Current: meshv1.LevelOff, Target: meshv1.LevelObserve, State: State{Step: &Step{To: meshv1.LevelObserve, ID: "x"}}},
		"held":      {Current: meshv1.LevelOff, Target: meshv1.LevelObserve, State: State{Hold: &Hold{Generation: 3}}},
	} {
		if ChecksAdmission(ns, Settings{Generation: 3}) {
			t.Errorf("%s: ChecksAdmission = true, want false", name)
		}
	}
}

// TestJobsOnTheLadder: CronJobs and Jobs are never restarted (their next pods are injected as
// they are created) and a step does not wait for them; one whose template opts out holds STRICT
// even while none of its pods runs.
func TestJobsOnTheLadder(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	web := Workload{Kind: "Deployment", Name: "web", Pods: 1, Uninjected: true, RolledOut: true}
	nightly := Workload{Kind: "CronJob", Name: "nightly", RunsToCompletion: true, RolledOut: true}
	running := Workload{Kind: "Job", Name: "migrate", RunsToCompletion: true, Pods: 1, Uninjected: true, RolledOut: true}
	report := Workload{Kind: "CronJob", Name: "report", RunsToCompletion: true, OptedOut: true, RolledOut: true}
	tests := map[string]struct {
		current, target Level
		workloads       []Workload
		pods            Pods
		sidecars        string
		wantStep        Level
		wantRestart     string
		wantBlocked     string
		wantReason      string
	}{
		"classic sidecars hold a namespace with a CronJob out of the mesh": {current: meshv1.LevelOff, target: meshv1.LevelObserve, workloads: []Workload{nightly, web},
			pods: Pods{Total: 1, Ready: 1, Uninjected: []string{"web-1"}}, sidecars: meshv1.SidecarsClassic, wantBlocked: "CronJob/nightly", wantReason: meshv1.ReasonJobsNeedNativeSidecars},
		"native sidecars let it in": {current: meshv1.LevelOff, target: meshv1.LevelObserve, workloads: []Workload{nightly, web},
			pods: Pods{Total: 1, Ready: 1, Uninjected: []string{"web-1"}}, sidecars: meshv1.SidecarsNative, wantStep: meshv1.LevelObserve, wantRestart: "Deployment/web"},
		"classic sidecars and no Job: in": {current: meshv1.LevelOff, target: meshv1.LevelObserve, workloads: []Workload{web},
			pods: Pods{Total: 1, Ready: 1, Uninjected: []string{"web-1"}}, sidecars: meshv1.SidecarsClassic, wantStep: meshv1.LevelObserve, wantRestart: "Deployment/web"},
		"classic sidecars and an opted-out CronJob: in (held later, below STRICT)": {current: meshv1.LevelOff, target: meshv1.LevelObserve, workloads: []Workload{report, web},
			pods: Pods{Total: 1, Ready: 1, Uninjected: []string{"web-1"}}, sidecars: meshv1.SidecarsClassic, wantStep: meshv1.LevelObserve, wantRestart: "Deployment/web"},
		"the step to Observe restarts the Deployment only": {current: meshv1.LevelOff, target: meshv1.LevelObserve, workloads: []Workload{nightly, running, web},
			pods: Pods{Total: 2, Ready: 2, Uninjected: []string{"migrate-x", "web-1"}}, wantStep: meshv1.LevelObserve, wantRestart: "Deployment/web"},
		"an opted-out CronJob holds STRICT with nothing running": {current: meshv1.LevelObserve, target: meshv1.LevelMutualTLS, workloads: []Workload{nightly, report},
			pods: Pods{}, wantBlocked: "CronJob/report"},
		"an injected CronJob does not": {current: meshv1.LevelObserve, target: meshv1.LevelMutualTLS, workloads: []Workload{nightly},
			pods: Pods{}, wantStep: meshv1.LevelMutualTLS},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ns := Namespace{Name: "batch", Current: tc.current, State: State{Since: now.Add(-2 * time.Hour)}, Target: tc.target, Pods: tc.pods, Workloads: tc.workloads,
				Admission: Admission{Revision: "default", Sidecars: tc.sidecars}}
			d := Decide(ns, Settings{StepTimeout: 10 * time.Minute, SoakTime: time.Minute, MaxUnavailable: intstr.FromString("100%")}, true, now)
			if tc.wantBlocked != "" {
				reason := tc.wantReason
				if reason == "" {
					reason = meshv1.ReasonUninjectedPods
				}
				if d.State.Step != nil || d.Blocked.Reason != reason || !strings.Contains(d.Blocked.Message, tc.wantBlocked) {
					t.Fatalf("step %+v blocked %+v, want %s naming %s", d.State.Step, d.Blocked, reason, tc.wantBlocked)
				}
				return
			}
			if d.State.Step == nil || d.State.Step.To != tc.wantStep {
				t.Fatalf("want a step to %s, got %+v (blocked %+v, waiting %q)", tc.wantStep, d.State.Step, d.Blocked, d.Waiting)
			}
			if got := strings.Join(d.Restart, ","); got != tc.wantRestart {
				t.Errorf("restart %q, want %q", got, tc.wantRestart)
			}
			// Once the Deployment has its proxy, the step does not wait for the Job's pod.
			if tc.wantRestart != "" {
				st := *d.State.Step
				last := len(ns.Workloads) - 1 // web
				ns.State.Step, ns.Workloads[last].Uninjected, ns.Workloads[last].Injected, ns.Workloads[last].RestartedFor = &st, false, true, st.ID
				if pending := incomplete(ns, st, tc.current, true, Settings{}); pending != "" {
					t.Errorf("the step waits for %q; want nothing left (the Job's next pods are injected as they come)", pending)
				}
			}
		})
	}
}

// TestMoveAdmitted: a move to the active revision restarts every injected workload, so it is
// held like a climb while the API server refuses their pods (as the current revision injects
// them, the only injection a namespace labelled for it can be tried with); a move back (an
// upgrade set back) is never held up; MovesNext says when the planner must check.
func TestMoveAdmitted(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	quota := AdmissionRefusal{Workload: "Deployment/web", Message: `pods "web-x" is forbidden: exceeded quota: small`}
	s := Settings{StepTimeout: 10 * time.Minute, SoakTime: time.Minute, MaxUnavailable: intstr.FromString("100%"), Revision: "1-32-0"}
	at := func(rev string, a Admission) Namespace {
		return Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, State: State{Revision: rev}, Pods: readyPods(2), Admission: a,
			Workloads: []Workload{deploy("web", func(w *Workload) { w.Injected, w.Revisions = true, []string{rev} })}}
	}
	refused := Admission{Revision: "default", Refused: []AdmissionRefusal{quota}}

	d := Decide(at("default", refused), s, true, now)
	if d.State.Step != nil || d.Blocked.Reason != meshv1.ReasonPodAdmissionRefused || !strings.Contains(d.Blocked.Message, "the move from revision default to 1-32-0") || d.Restart != nil {
		t.Fatalf("refused: step %+v, blocked %+v, restart %v", d.State.Step, d.Blocked, d.Restart)
	}
	if d := Decide(at("default", Admission{Revision: "default"}), s, true, now); d.State.Step == nil || d.State.Step.Revision != "1-32-0" {
		t.Fatalf("admitted: step %+v, blocked %+v", d.State.Step, d.Blocked)
	}
	back := s
	back.Revision, back.Newer = "default", []string{"1-32-0"}
	if d := Decide(at("1-32-0", refused), back, true, now); d.State.Step == nil || !d.State.Step.Rollback {
		t.Fatalf("a move back was held: step %+v, blocked %+v", d.State.Step, d.Blocked)
	}
	tests := map[string]struct {
		ns   Namespace
		s    Settings
		want bool
	}{
		"on the old revision":       {ns: at("default", Admission{}), s: s, want: true},
		"on the active revision":    {ns: at("1-32-0", Admission{}), s: s},
		"moving back":               {ns: at("1-32-0", Admission{}), s: back},
		"out of the mesh":           {ns: Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelOff}, s: s},
		"leaving the mesh: no move": {ns: func() Namespace { n := at("default", Admission{}); n.Target = meshv1.LevelOff; return n }(), s: s},
		"a step running": {ns: func() Namespace {
			n := at("default", Admission{})
			n.State.Step = &Step{To: meshv1.LevelMutualTLS, ID: "revision-1-32-0-1", Started: now, Revision: "1-32-0", From: "default"}
			return n
		}(), s: s},
		"a malformed step, which Decide drops: checked": {ns: func() Namespace {
			n := at("default", Admission{})
			n.State.Step = &Step{To: meshv1.LevelMutualTLS}
			return n
		}(), s: s, want: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := MovesNext(tc.ns, tc.s); got != tc.want {
				t.Fatalf("MovesNext = %v, want %v", got, tc.want)
			}
			if got := ChecksAdmission(tc.ns, tc.s); tc.want && !got {
				t.Fatal("ChecksAdmission = false for a namespace about to move")
			}
		})
	}
}

// TestWillRestartIsWhatStepsRestart: the workloads the planner dry-runs for a move or a refresh
// (WillRestart) are exactly those planRestarts restarts for that step, budget aside.
func TestWillRestartIsWhatStepsRestart(t *testing.T) {
	switched := time.Date(2026, 12, 6, 11, 0, 0, 0, time.UTC)
	s := Settings{MaxUnavailable: intstr.FromString("100%"), RefreshBefore: switched}
	ws := []Workload{
		deploy("uninjected", func(w *Workload) { w.Uninjected, w.Pods = true, 1 }),
		deploy("old-rev", func(w *Workload) { w.Injected, w.Revisions, w.Pods = true, []string{"default"}, 1 }),
		deploy("new-rev", func(w *Workload) { w.Injected, w.Revisions, w.Pods = true, []string{"1-32-0"}, 1 }),
		deploy("stale", func(w *Workload) {
			w.Injected, w.Revisions, w.Pods, w.Started = true, []string{"1-32-0"}, 1, switched.Add(-time.Hour)
		}),
		deploy("opted-out", func(w *Workload) { w.Uninjected, w.OptedOut, w.Pods = true, true, 1 }),
		deploy("on-delete", func(w *Workload) { w.Uninjected, w.ManualRestart, w.Pods = true, "updateStrategy OnDelete", 1 }),
	}
	for name, step := range map[string]*Step{
		"move":    {To: meshv1.LevelMutualTLS, ID: "m", Revision: "1-32-0", From: "default"},
		"refresh": {To: meshv1.LevelMutualTLS, ID: "r", Refresh: true},
	} {
		t.Run(name, func(t *testing.T) {
			d := Decision{Level: meshv1.LevelMutualTLS, State: State{Step: step}}
			planRestarts(&d, Namespace{Current: meshv1.LevelMutualTLS, Pods: readyPods(len(ws)), Workloads: ws}, s)
			var want []string
			for _, w := range ws {
				if WillRestart(w, step.Revision, step.Refresh, s) {
					want = append(want, w.Kind+"/"+w.Name)
				}
			}
			if strings.Join(d.Restart, ",") != strings.Join(want, ",") || len(want) == 0 {
				t.Fatalf("planRestarts restarts %v, WillRestart says %v", d.Restart, want)
			}
		})
	}
}
