package ladder

import (
	"strings"
	"testing"
	"time"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

// TestCertificateRefresh: while a root rotation's Switch phase runs, a namespace in the mesh
// whose proxies started before the switch restarts those workloads, at its level, within its
// budget and slot, before it climbs further and even while it is held; nothing else moves. In
// the Trust phase, only the workloads whose proxies keep the roots they started with restart.
func TestCertificateRefresh(t *testing.T) {
	switched := t0.Add(-time.Minute)
	rotating := func(s *Settings) { s.RefreshBefore = switched }
	startedAt := func(at time.Time) func(*Workload) {
		return func(w *Workload) { w.Injected, w.Started, w.Pods = true, at, 1 }
	}
	old, fresh := startedAt(switched.Add(-time.Hour)), startedAt(switched.Add(time.Second))
	refresh := &Step{To: meshv1.LevelMutualTLS, Refresh: true, Started: t0, ID: "certificates-1"}
	tests := map[string]decideCase{
		"no rotation: at target, nothing restarts": {
			ns:       Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, Pods: readyPods(2), Workloads: []Workload{deploy("a", old)}},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if !d.AtTarget(meshv1.LevelMutualTLS) || d.Restart != nil {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"proxies from before the switch: a refresh step restarts them within the budget": {
			ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, Pods: readyPods(4),
				Workloads: []Workload{deploy("a", old), deploy("b", old), deploy("c", fresh), deploy("d", func(w *Workload) { old(w); w.OptedOut = true })}},
			s: rotating, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				st := d.State.Step
				if st == nil || !st.Refresh || st.To != meshv1.LevelMutualTLS || st.Revision != "" || !d.InProgress {
					t.Fatalf("step = %+v, want a refresh at MutualTLS", st)
				}
				if got := strings.Join(d.Restart, ","); got != "Deployment/a" {
					t.Errorf("restart = %q, want only a (25%% of 4 pods; c is fresh, d opted out)", got)
				}
				if !d.Effects.Strict || d.Effects.Revision != "default" || d.Event == nil || d.Event.Reason != "CertificateRefreshStarted" {
					t.Errorf("effects %+v, event %+v", d.Effects, d.Event)
				}
			},
		},
		"every proxy started after the switch: nothing to do": {
			ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelObserve, Pods: readyPods(1), Workloads: []Workload{deploy("c", fresh)}},
			s:  rotating, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if !d.AtTarget(meshv1.LevelObserve) || d.State.Step != nil {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"out of the mesh: nothing to refresh": {
			ns: Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelOff, Workloads: []Workload{deploy("a", old)}},
			s:  rotating, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil {
					t.Errorf("step = %+v", d.State.Step)
				}
			},
		},
		"no free slot: the refresh waits": {
			ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelObserve, Pods: readyPods(1), Workloads: []Workload{deploy("a", old)}},
			s:  rotating, mayStart: false, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.AtTarget(meshv1.LevelObserve) || !strings.Contains(d.Waiting, "root rotation") {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"paused: the refresh waits": {
			ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelObserve, Pods: readyPods(1), Workloads: []Workload{deploy("a", old)}},
			s:  func(s *Settings) { rotating(s); s.Paused = true }, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || !strings.Contains(d.Waiting, "paused") {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"before climbing: Observe with a MutualTLS target refreshes first": {
			ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS, Pods: readyPods(1), Workloads: []Workload{deploy("a", old)}},
			s:  rotating, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if st := d.State.Step; st == nil || !st.Refresh || st.To != meshv1.LevelObserve {
					t.Errorf("step = %+v, want a refresh at Observe", st)
				}
			},
		},
		"held after a rollback: still refreshed, and still held": {
			ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS, Pods: readyPods(1), Workloads: []Workload{deploy("a", old)},
				State: State{Hold: &Hold{Generation: 3, Reason: meshv1.ReasonRolledBack, Message: "m"}}},
			s: rotating, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if st := d.State.Step; st == nil || !st.Refresh || d.State.Hold == nil {
					t.Errorf("state = %+v", d.State)
				}
			},
		},
		"unready pods do not hold a refresh back, but take the budget": {
			ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelObserve, Pods: Pods{Total: 1, NotReady: []string{"a-1"}},
				Workloads: []Workload{deploy("a", old)}},
			s: rotating, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if st := d.State.Step; st == nil || !st.Refresh || len(d.Restart) != 0 {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"running: waits for the restarted workload to roll out": {
			ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, Pods: readyPods(2), State: State{Step: refresh},
				Workloads: []Workload{deploy("a", func(w *Workload) { old(w); w.RestartedFor, w.RolledOut = "certificates-1", false })}},
			s: rotating, mayStart: true, now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.State.Step == nil || !strings.Contains(d.Waiting, "rolling out") || d.Restart != nil {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"done: every proxy is new; the level and its since stay": {
			ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, Pods: readyPods(2), State: State{Step: refresh, Since: t0.Add(-time.Hour)},
				Workloads: []Workload{deploy("a", func(w *Workload) { fresh(w); w.RestartedFor = "certificates-1" })}},
			s: rotating, mayStart: true, now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Level != meshv1.LevelMutualTLS || !d.State.Since.Equal(t0.Add(-time.Hour)) {
					t.Errorf("state = %+v", d.State)
				}
				if d.Event == nil || d.Event.Reason != "CertificatesRefreshed" || d.State.Hold != nil {
					t.Errorf("event = %+v", d.Event)
				}
			},
		},
		"a workload restarted by hand only: the refresh waits for it, names it, and gives up at the timeout": {
			ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, Pods: readyPods(2), State: State{Step: refresh},
				Workloads: []Workload{{Kind: "StatefulSet", Name: "db", RolledOut: true, ManualRestart: "updateStrategy OnDelete", Injected: true, Started: switched.Add(-time.Hour), Pods: 1}}},
			s: rotating, mayStart: true, now: t0.Add(11 * time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.Restart != nil || d.Event == nil || d.Event.Reason != "CertificateRefreshIncomplete" || !strings.Contains(d.Event.Message, "StatefulSet/db has proxies to restart by hand (updateStrategy OnDelete)") {
					t.Errorf("restart %v, event %+v", d.Restart, d.Event)
				}
			},
		},
		"timed out: no rollback and no hold, a warning": {
			ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, Pods: readyPods(2), State: State{Step: refresh},
				Workloads: []Workload{deploy("a", func(w *Workload) { old(w); w.RestartedFor, w.RolledOut = "certificates-1", false })}},
			s: rotating, mayStart: true, now: t0.Add(11 * time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.State.Hold != nil || d.Level != meshv1.LevelMutualTLS {
					t.Errorf("state = %+v", d.State)
				}
				if d.Event == nil || !d.Event.Warning || d.Event.Reason != "CertificateRefreshIncomplete" {
					t.Errorf("event = %+v", d.Event)
				}
				if !d.State.RefreshGaveUp.Equal(switched) || d.Blocked.Reason != meshv1.ReasonRefreshIncomplete || d.AtTarget(meshv1.LevelMutualTLS) {
					t.Errorf("state %+v, blocked %+v: the namespace must be reported, not restarted again", d.State, d.Blocked)
				}
			},
		},
		"given up for this switch: blocked, no new restart, the slot left free": {
			ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, Pods: readyPods(2), State: State{RefreshGaveUp: switched},
				Workloads: []Workload{deploy("a", old)}},
			s: rotating, mayStart: true, now: t0.Add(12 * time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.InProgress || d.Blocked.Reason != meshv1.ReasonRefreshIncomplete || d.AtTarget(meshv1.LevelMutualTLS) {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"given up for an earlier switch: a new rotation restarts again": {
			ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, Pods: readyPods(2), State: State{RefreshGaveUp: switched.Add(-time.Hour)},
				Workloads: []Workload{deploy("a", old)}},
			s: rotating, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if st := d.State.Step; st == nil || !st.Refresh {
					t.Errorf("step = %+v", st)
				}
			},
		},
		"someone else's injection label: blocked, nothing restarted": {
			ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelObserve, Pods: readyPods(1), Workloads: []Workload{deploy("a", old)},
				InjectionConflict: "istio-injection=disabled"},
			s: rotating, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Restart != nil || d.Blocked.Reason != meshv1.ReasonInjectionLabelConflict {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"Trust phase: only the proxies that keep their roots restart, so that they trust the new one": {
			ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, Pods: readyPods(8),
				Workloads: []Workload{deploy("live", old), deploy("static", func(w *Workload) { old(w); w.StaticTrust = true }),
					deploy("static-fresh", func(w *Workload) { fresh(w); w.StaticTrust = true })}},
			s: func(s *Settings) { rotating(s); s.RefreshForTrust = true }, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if st := d.State.Step; st == nil || !st.Refresh || strings.Join(d.Restart, ",") != "Deployment/static" {
					t.Fatalf("step %+v, restart %v: want only the workload whose proxies started before and keep their roots", st, d.Restart)
				}
				if d.Event == nil || !strings.Contains(d.Event.Message, "trust it before signing switches") {
					t.Errorf("event = %+v", d.Event)
				}
			},
		},
		"Trust phase: every proxy takes the new root live, nothing restarts": {
			ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, Pods: readyPods(2), Workloads: []Workload{deploy("live", old)}},
			s:  func(s *Settings) { rotating(s); s.RefreshForTrust = true }, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if !d.AtTarget(meshv1.LevelMutualTLS) || d.State.Step != nil || d.Restart != nil {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"Trust phase, running: waits for the proxies that do not trust the new root": {
			ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, Pods: readyPods(2), State: State{Step: refresh},
				Workloads: []Workload{deploy("a", func(w *Workload) { old(w); w.StaticTrust, w.RestartedFor, w.RolledOut = true, "certificates-1", true })}},
			s: func(s *Settings) { rotating(s); s.RefreshForTrust = true }, mayStart: true, now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.State.Step == nil || !strings.Contains(d.Waiting, "do not trust the new root") {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"a refresh record at Off is not the operator's: forgotten": {
			ns:       Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelOff, State: State{Step: &Step{To: meshv1.LevelOff, Refresh: true, ID: "x", Started: t0}}},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil {
					t.Errorf("step = %+v", d.State.Step)
				}
			},
		},
	}
	runDecideCases(t, tests)
}

// TestRefreshAdmitted: a root rotation's restarts wait, named PodAdmissionRefused, while the API
// server refuses the restarted pods (as the namespace's revision injects them: exactly what the
// restart gives them); RefreshesNext tells the planner to check.
func TestRefreshAdmitted(t *testing.T) {
	switched := t0.Add(-time.Minute)
	s := settings()
	s.RefreshBefore = switched
	ns := Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, Pods: readyPods(1),
		Workloads: []Workload{deploy("a", func(w *Workload) { w.Injected, w.Started, w.Pods = true, switched.Add(-time.Hour), 1 })}}
	if !RefreshesNext(ns, s) || !ChecksAdmission(ns, s) {
		t.Fatal("a namespace with stale proxies is not checked before its refresh")
	}
	ns.Admission = Admission{Revision: "default", Refused: []AdmissionRefusal{{Workload: "Deployment/a", Message: "exceeded quota"}}}
	d := Decide(ns, s, true, t0)
	if d.State.Step != nil || d.Blocked.Reason != meshv1.ReasonPodAdmissionRefused || !strings.Contains(d.Blocked.Message, "the root rotation's restarts") {
		t.Fatalf("refused: step %+v, blocked %+v", d.State.Step, d.Blocked)
	}
	ns.Admission = Admission{Revision: "default"}
	if d := Decide(ns, s, true, t0); d.State.Step == nil || !d.State.Step.Refresh {
		t.Fatalf("admitted: step %+v, blocked %+v", d.State.Step, d.Blocked)
	}
}
