package ladder

import (
	"strings"
	"testing"
	"time"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

func onRevisions(revs ...string) func(*Workload) {
	return func(w *Workload) { w.Injected, w.Revisions = true, revs }
}

// TestRevisionMoves: a namespace in the mesh moves to the active revision as a step of its own,
// at its level, with the same gates, budget, timeout and rollback as a step up the ladder; an
// upgrade set back cancels the move.
func TestRevisionMoves(t *testing.T) {
	upgrade := func(s *Settings) { s.Revision = "1-31-5" }
	move := &Step{To: meshv1.LevelMutualTLS, Revision: "1-31-5", From: "default", Started: t0, ID: "revision-1-31-5-1"}
	tests := map[string]decideCase{
		"the same revision: at target, labelled for it": {
			ns:       Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, Pods: readyPods(2)},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if !d.AtTarget(meshv1.LevelMutualTLS) || d.Effects.Revision != "default" || d.RevisionBehind {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"a new active revision starts a move at the same level": {
			ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, Pods: readyPods(4),
				Workloads: []Workload{deploy("a", onRevisions("default")), deploy("b", onRevisions("default"))}},
			s: upgrade, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				st := d.State.Step
				if st == nil || st.To != meshv1.LevelMutualTLS || st.Revision != "1-31-5" || st.From != "default" || !d.InProgress {
					t.Fatalf("step = %+v, want a move to 1-31-5 at MutualTLS", st)
				}
				if d.Level != meshv1.LevelMutualTLS || !d.Effects.Strict || d.Effects.Revision != "1-31-5" {
					t.Errorf("level %s, effects %+v: the level and its policies stay, the label names the new revision", d.Level, d.Effects)
				}
				if got := strings.Join(d.Restart, ","); got != "Deployment/a" {
					t.Errorf("restart = %q, want one workload (25%% of 4 pods)", got)
				}
				if d.Event == nil || d.Event.Reason != "RevisionMoveStarted" || d.AtTarget(meshv1.LevelMutualTLS) {
					t.Errorf("event = %+v", d.Event)
				}
			},
		},
		"no free slot: the move waits and the namespace is not at target": {
			ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelObserve, Pods: readyPods(1)},
			s:  upgrade, mayStart: false, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || !d.RevisionBehind || d.AtTarget(meshv1.LevelObserve) || !strings.Contains(d.Waiting, "1-31-5") {
					t.Errorf("decision = %+v", d)
				}
				if d.Effects.Revision != "default" {
					t.Errorf("the label must stay on the old revision until the move starts: %+v", d.Effects)
				}
			},
		},
		"paused: no move starts": {
			ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelObserve, Pods: readyPods(1)},
			s:  func(s *Settings) { upgrade(s); s.Paused = true }, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Effects.Revision != "default" {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"unready pods block the move": {
			ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelObserve, Pods: Pods{Total: 2, Ready: 1, NotReady: []string{"web-1"}}},
			s:  upgrade, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Blocked.Reason != meshv1.ReasonPodsNotReady || !strings.Contains(d.Blocked.Message, "revision default to 1-31-5") {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"a target below the level steps down first, without moving": {
			ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelObserve, Pods: readyPods(1)},
			s:  upgrade, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if st := d.State.Step; st == nil || st.To != meshv1.LevelObserve || st.Revision != "" {
					t.Errorf("step = %+v, want a step down on the same revision", st)
				}
			},
		},
		"the move restarts workloads still on the old revision, within the budget": {
			ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, State: State{Step: move}, Pods: readyPods(4),
				Workloads: []Workload{deploy("a", func(w *Workload) { onRevisions("1-31-5")(w); w.RestartedFor = move.ID }), deploy("b", onRevisions("default"))}},
			s: upgrade, mayStart: true, now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if got := strings.Join(d.Restart, ","); got != "Deployment/b" {
					t.Errorf("restart = %q, want b", got)
				}
				if !strings.Contains(d.Waiting, "Deployment/b has pods of another revision") {
					t.Errorf("waiting = %q", d.Waiting)
				}
			},
		},
		"every pod on the new revision and Ready: the move is done": {
			ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, State: State{Step: move, Since: t0.Add(-time.Hour)}, Pods: readyPods(2),
				Workloads: []Workload{deploy("a", onRevisions("1-31-5"))}},
			s: upgrade, mayStart: true, now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.State.Revision != "1-31-5" || d.Level != meshv1.LevelMutualTLS || !d.AtTarget(meshv1.LevelMutualTLS) {
					t.Fatalf("decision = %+v", d)
				}
				if !d.State.Since.Equal(t0.Add(-time.Hour)) {
					t.Errorf("since = %s: a move must not restart the soak of the level", d.State.Since)
				}
				if d.Event == nil || d.Event.Reason != "RevisionMoved" || d.Effects.Revision != "1-31-5" {
					t.Errorf("event %+v, effects %+v", d.Event, d.Effects)
				}
			},
		},
		"a move that does not finish in time goes back to the old revision and is held": {
			ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, State: State{Step: move}, Pods: Pods{Total: 2, Ready: 1, NotReady: []string{"a-2"}},
				Workloads: []Workload{deploy("a", func(w *Workload) { onRevisions("1-31-5")(w); w.RestartedFor = move.ID; w.RolledOut = false })}},
			s: upgrade, mayStart: true, now: t0.Add(11 * time.Minute),
			check: func(t *testing.T, d Decision) {
				st := d.State.Step
				if st == nil || !st.Rollback || st.Revision != "default" || st.To != meshv1.LevelMutualTLS {
					t.Fatalf("step = %+v, want a rollback to revision default", st)
				}
				if d.Effects.Revision != "default" || !d.Effects.Strict {
					t.Errorf("effects = %+v: the label goes back, the level's policies stay", d.Effects)
				}
				if got := strings.Join(d.Restart, ","); got != "Deployment/a" {
					t.Errorf("restart = %q, want the workload on the new revision", got)
				}
				if d.Event == nil || d.Event.Reason != meshv1.ReasonRolledBack || !strings.Contains(d.Event.Message, "move from revision default to 1-31-5") {
					t.Errorf("event = %+v", d.Event)
				}
			},
		},
		"the reverted move completes held on the old revision": {
			ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, State: State{Step: &Step{To: meshv1.LevelMutualTLS, Rollback: true, Revision: "default", ID: "r", Started: t0, Reason: meshv1.ReasonRolledBack, Message: "m"}},
				Pods: readyPods(1), Workloads: []Workload{deploy("a", onRevisions("default"))}},
			s: upgrade, mayStart: true, now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.State.Revision != "" || d.State.Hold == nil || d.Blocked.Reason != meshv1.ReasonRolledBack {
					t.Fatalf("decision = %+v", d)
				}
				if d.AtTarget(meshv1.LevelMutualTLS) {
					t.Error("a namespace held on the old revision is not at its target")
				}
			},
		},
		"held on the old revision: no new move until the spec changes": {
			ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, State: State{Hold: &Hold{Generation: 3, Reason: meshv1.ReasonRolledBack, Message: "m"}}, Pods: readyPods(1)},
			s:  upgrade, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Blocked.Reason != meshv1.ReasonRolledBack {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"an upgrade set back cancels the move, with no hold": {
			ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, State: State{Step: move}, Pods: readyPods(2),
				Workloads: []Workload{deploy("a", onRevisions("1-31-5"))}},
			mayStart: true, now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				st := d.State.Step
				if st == nil || !st.Rollback || !st.Cancelled || st.Revision != "default" {
					t.Fatalf("step = %+v, want a cancelled move back to default", st)
				}
				if got := strings.Join(d.Restart, ","); got != "Deployment/a" || d.Effects.Revision != "default" {
					t.Errorf("restart %q, effects %+v", got, d.Effects)
				}
				if d.Event == nil || d.Event.Reason != "RevisionMoveCancelled" {
					t.Errorf("event = %+v", d.Event)
				}
			},
		},
		"the cancelled move completes on the old revision, not held": {
			ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, State: State{Step: &Step{To: meshv1.LevelMutualTLS, Rollback: true, Cancelled: true, Revision: "default", ID: "r", Started: t0}},
				Pods: readyPods(1), Workloads: []Workload{deploy("a", onRevisions("default"))}},
			mayStart: true, now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.State.Hold != nil || !d.AtTarget(meshv1.LevelMutualTLS) || d.Event == nil || d.Event.Reason != "RevisionMoveUndone" {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"entering the mesh during an upgrade uses the active revision": {
			ns: Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelObserve, Pods: readyPods(1), Workloads: []Workload{deploy("a", uninjected)}},
			s:  upgrade, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if st := d.State.Step; st == nil || st.Revision != "1-31-5" || d.Effects.Revision != "1-31-5" {
					t.Errorf("step %+v, effects %+v", d.State.Step, d.Effects)
				}
			},
		},
		"a step up on the new revision completes recorded on it": {
			ns: Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelObserve, State: State{Step: &Step{To: meshv1.LevelObserve, Revision: "1-31-5", ID: "o", Started: t0}},
				Pods: readyPods(1), Workloads: []Workload{deploy("a", onRevisions("1-31-5"))}},
			s: upgrade, mayStart: true, now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.Level != meshv1.LevelObserve || d.State.Revision != "1-31-5" || !d.AtTarget(meshv1.LevelObserve) {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"a namespace leaving the mesh forgets its revision": {
			ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelOff, State: State{Revision: "1-31-5", Step: &Step{To: meshv1.LevelOff, ID: "x", Started: t0}},
				Pods: readyPods(1), Workloads: []Workload{deploy("a", nil)}},
			s: upgrade, mayStart: true, now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.Level != meshv1.LevelOff || d.State.Revision != "" || d.Effects.Inject {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"an upgrade set back: moving back is not held up by unready pods, paced by the budget": {
			ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, State: State{Revision: "1-31-5"},
				Pods:      Pods{Total: 8, Ready: 6, NotReady: []string{"a-1", "a-2"}},
				Workloads: []Workload{deploy("a", onRevisions("1-31-5")), deploy("b", onRevisions("1-31-5")), deploy("c", onRevisions("1-31-5"))}},
			s: func(s *Settings) { s.Newer = []string{"1-31-5"} }, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				st := d.State.Step
				if st == nil || !st.Rollback || !st.Cancelled || st.Revision != "default" || st.To != meshv1.LevelMutualTLS {
					t.Fatalf("step = %+v, want a move back to default, as a rollback with no hold", st)
				}
				// 25% of 8 pods: two workloads of one pod at a time; a-1 and a-2, unready on
				// the new revision, are what the move back mends, not a reason to wait.
				if got := strings.Join(d.Restart, ","); got != "Deployment/a,Deployment/b" || d.Effects.Revision != "default" {
					t.Errorf("restart %q, effects %+v", got, d.Effects)
				}
				if d.Event == nil || d.Event.Reason != "RevisionMoveBack" {
					t.Errorf("event = %+v", d.Event)
				}
			},
		},
		"moving back waits for a slot like any step": {
			ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelObserve, State: State{Revision: "1-31-5"}, Pods: readyPods(1)},
			s:  func(s *Settings) { s.Newer = []string{"1-31-5"} }, mayStart: false, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || !strings.Contains(d.Waiting, "free slot") {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"moving back completes after its timeout even with pods not Ready, and is not held": {
			ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelObserve,
				State: State{Revision: "1-31-5", Step: &Step{To: meshv1.LevelObserve, Rollback: true, Cancelled: true, Revision: "default", ID: "b", Started: t0}},
				Pods:  Pods{Total: 1, NotReady: []string{"a-1"}}, Workloads: []Workload{deploy("a", func(w *Workload) { onRevisions("default")(w); w.RestartedFor = "b" })}},
			s: func(s *Settings) { s.Newer = []string{"1-31-5"} }, mayStart: true, now: t0.Add(time.Second),
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.State.Revision != "" || d.State.Hold != nil || d.Event == nil || d.Event.Reason != "RevisionMoveUndone" {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"a move at ZeroTrust keeps the policies enforced": {
			ns: Namespace{Current: meshv1.LevelZeroTrust, Target: meshv1.LevelZeroTrust, Pods: readyPods(1), Workloads: []Workload{deploy("a", onRevisions("default"))}},
			s:  upgrade, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step == nil || !d.Effects.Authorization || d.Effects.DryRun {
					t.Errorf("step %+v, effects %+v", d.State.Step, d.Effects)
				}
			},
		},
	}
	runDecideCases(t, tests)
}
