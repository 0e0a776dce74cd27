package ladder

import (
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func settings() Settings {
	return Settings{Generation: 3, MaxUnavailable: intstr.FromString("25%"), SoakTime: time.Minute, StepTimeout: 10 * time.Minute}
}

func readyPods(n int) Pods { return Pods{Total: n, Ready: n} }

func deploy(name string, mod func(*Workload)) Workload {
	w := Workload{Kind: "Deployment", Name: name, RolledOut: true}
	if mod != nil {
		mod(&w)
	}
	return w
}

func uninjected(w *Workload) { w.Uninjected = true }
func injected(w *Workload)   { w.Injected = true }

// decideCase is one case of Decide: a namespace, changes to settings(), and what must hold.
type decideCase struct {
	ns       Namespace
	s        func(*Settings)
	mayStart bool
	now      time.Time
	check    func(t *testing.T, d Decision)
}

func runDecideCases(t *testing.T, tests map[string]decideCase) {
	t.Helper()
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := settings()
			if tc.s != nil {
				tc.s(&s)
			}
			tc.check(t, Decide(tc.ns, s, tc.mayStart, tc.now))
		})
	}
}

func TestDecide(t *testing.T) {
	observeStep := &Step{To: meshv1.LevelObserve, Started: t0, ID: "observe-1"}
	tests := map[string]decideCase{
		"at target: nothing to do": {
			ns:       Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelObserve, Pods: readyPods(2)},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if !d.AtTarget(meshv1.LevelObserve) || d.InProgress || d.Event != nil || d.Restart != nil {
					t.Errorf("decision = %+v", d)
				}
				if !d.Effects.Inject || d.Effects.Strict {
					t.Errorf("effects = %+v, want injection only", d.Effects)
				}
			},
		},
		"off to observe starts with the injection label and a bounded set of restarts": {
			ns: Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelMutualTLS, Pods: readyPods(8),
				Workloads: []Workload{deploy("a", uninjected), deploy("b", uninjected), deploy("c", uninjected)}},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step == nil || d.State.Step.To != meshv1.LevelObserve || !d.InProgress {
					t.Fatalf("step = %+v, want a step to Observe", d.State.Step)
				}
				if !d.Effects.Inject {
					t.Error("the injection label must be on while the step runs")
				}
				// 25% of 8 pods: 2 workloads restart at once.
				if got := strings.Join(d.Restart, ","); got != "Deployment/a,Deployment/b" {
					t.Errorf("restart = %s, want the first two", got)
				}
				if d.Event == nil || d.Event.Reason != "StepStarted" {
					t.Errorf("event = %+v", d.Event)
				}
			},
		},
		"no free slot: the namespace waits": {
			ns:       Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelObserve, Pods: readyPods(1)},
			mayStart: false, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.InProgress || !strings.Contains(d.Waiting, "maxNamespacesInProgress") {
					t.Errorf("decision = %+v", d)
				}
				if d.Effects.Inject {
					t.Error("a waiting namespace must not be labelled")
				}
			},
		},
		"a running step continues without a free slot; restarts wait for the ones rolling": {
			ns: Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelObserve, State: State{Step: observeStep}, Pods: Pods{Total: 4, Ready: 3, NotReady: []string{"a-2"}},
				Workloads: []Workload{deploy("a", func(w *Workload) { w.Uninjected, w.RestartedFor, w.RolledOut = true, "observe-1", false }), deploy("b", uninjected)}},
			mayStart: false, now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if !d.InProgress || d.Restart != nil {
					t.Errorf("in progress %v, restart %v: want no new restart while one rolls (budget 1)", d.InProgress, d.Restart)
				}
				if !strings.Contains(d.Waiting, "Deployment/a is rolling out") && !strings.Contains(d.Waiting, "Deployment/a has pods") {
					t.Errorf("waiting = %q", d.Waiting)
				}
			},
		},
		"observe completes when every workload is injected and every pod Ready": {
			ns: Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelMutualTLS, State: State{Step: observeStep}, Pods: readyPods(3),
				Workloads: []Workload{deploy("a", injected), deploy("opted-out", func(w *Workload) { w.OptedOut, w.Uninjected = true, true })}},
			mayStart: false, now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.Level != meshv1.LevelObserve || d.State.Step != nil || d.InProgress || !d.State.Since.Equal(t0.Add(time.Minute)) {
					t.Errorf("decision = %+v", d)
				}
				if d.Event == nil || d.Event.Reason != "LevelReached" {
					t.Errorf("event = %+v", d.Event)
				}
			},
		},
		"a workload a template change does not restart is neither restarted nor waited for": {
			ns: Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelObserve, State: State{Step: observeStep}, Pods: readyPods(3),
				Workloads: []Workload{deploy("a", injected), {Kind: "StatefulSet", Name: "db", Uninjected: true, RolledOut: true, ManualRestart: "updateStrategy OnDelete"}}},
			mayStart: false, now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.Restart != nil || d.Level != meshv1.LevelObserve || d.State.Step != nil {
					t.Errorf("restart %v, level %s, step %+v: want Observe reached without restarting db", d.Restart, d.Level, d.State.Step)
				}
			},
		},
		"mutual TLS is refused while pods are uninjected, naming them": {
			ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS,
				Pods: Pods{Total: 7, Ready: 7, Uninjected: []string{"p1", "p2", "p3", "p4", "p5", "p6"}}},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.Blocked.Reason != meshv1.ReasonUninjectedPods || d.State.Step != nil || d.Effects.Strict {
					t.Fatalf("decision = %+v", d)
				}
				if !strings.Contains(d.Blocked.Message, "p1, p2, p3, p4, p5 and 1 more") {
					t.Errorf("message = %q", d.Blocked.Message)
				}
			},
		},
		"mutual TLS waits for unready pods": {
			ns:       Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS, Pods: Pods{Total: 2, Ready: 1, NotReady: []string{"x"}}},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.Blocked.Reason != meshv1.ReasonPodsNotReady || d.State.Step != nil {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"mutual TLS step puts STRICT on and completes with Ready pods": {
			ns:       Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS, Pods: readyPods(2), State: State{Step: &Step{To: meshv1.LevelMutualTLS, Started: t0, ID: "m"}}},
			mayStart: true, now: t0.Add(Settle),
			check: func(t *testing.T, d Decision) {
				if d.Level != meshv1.LevelMutualTLS || !d.Effects.Strict || d.State.Step != nil {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"zero trust waits for mutual TLS to soak": {
			ns:       Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelZeroTrust, Pods: readyPods(2), State: State{Since: t0}},
			mayStart: true, now: t0.Add(20 * time.Second),
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.RecheckAfter != 40*time.Second || !strings.Contains(d.Waiting, "soak") {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"zero trust starts in dry-run": {
			ns:       Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelZeroTrust, Pods: readyPods(2), State: State{Since: t0}},
			mayStart: true, now: t0.Add(2 * time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.State.Step == nil || !d.Effects.Authorization || !d.Effects.DryRun || !d.Effects.Strict {
					t.Errorf("decision = %+v effects %+v", d, d.Effects)
				}
			},
		},
		"zero trust dry-run holds for the soak time": {
			ns:       Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelZeroTrust, Pods: readyPods(2), State: State{Step: &Step{To: meshv1.LevelZeroTrust, Started: t0, ID: "z"}}},
			mayStart: true, now: t0.Add(30 * time.Second),
			check: func(t *testing.T, d Decision) {
				if !d.Effects.DryRun || d.State.Step.Enforced || d.RecheckAfter != 30*time.Second {
					t.Errorf("decision = %+v effects %+v", d, d.Effects)
				}
			},
		},
		"zero trust is enforced after the soak, then completes": {
			ns:       Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelZeroTrust, Pods: readyPods(2), State: State{Step: &Step{To: meshv1.LevelZeroTrust, Started: t0, ID: "z"}}},
			mayStart: true, now: t0.Add(61 * time.Second),
			check: func(t *testing.T, d Decision) {
				if !d.State.Step.Enforced || d.Effects.DryRun || !d.Effects.Authorization || d.Event.Reason != "PoliciesEnforced" {
					t.Fatalf("decision = %+v effects %+v", d, d.Effects)
				}
				settling := Decide(Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelZeroTrust, Pods: readyPods(2), State: d.State}, settings(), false, t0.Add(62*time.Second))
				if settling.State.Step == nil || settling.Waiting == "" {
					t.Errorf("one second after enforcement the step must still be settling: %+v", settling)
				}
				next := Decide(Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelZeroTrust, Pods: readyPods(2), State: d.State}, settings(), false, t0.Add(61*time.Second+Settle))
				if next.Level != meshv1.LevelZeroTrust || next.State.Step != nil {
					t.Errorf("after enforcement: %+v", next)
				}
			},
		},
		"a step whose pods stay unready past the timeout is rolled back": {
			ns: Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelObserve, State: State{Step: observeStep}, Pods: Pods{Total: 3, Ready: 2, NotReady: []string{"web-new"}},
				Workloads: []Workload{deploy("web", func(w *Workload) { w.Injected, w.Uninjected, w.RestartedFor = true, true, "observe-1" })}},
			mayStart: false, now: t0.Add(11 * time.Minute),
			check: func(t *testing.T, d Decision) {
				st := d.State.Step
				if st == nil || !st.Rollback || st.To != meshv1.LevelOff || st.Reason != meshv1.ReasonRolledBack {
					t.Fatalf("step = %+v, want a rollback to Off", st)
				}
				if d.Effects.Inject {
					t.Error("the rollback must take the injection label off")
				}
				if strings.Join(d.Restart, ",") != "Deployment/web" {
					t.Errorf("restart = %v, want web restarted again", d.Restart)
				}
				if d.Event == nil || !d.Event.Warning || !strings.Contains(d.Event.Message, "web-new") {
					t.Errorf("event = %+v", d.Event)
				}
			},
		},
		"a rollback that reached the timeout restarts what it still owes before it ends": {
			ns: Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelObserve, Pods: Pods{Total: 8, Ready: 8},
				State: State{Step: &Step{To: meshv1.LevelOff, ID: "rb", Started: t0, Rollback: true, Reason: meshv1.ReasonRolledBack}},
				Workloads: []Workload{deploy("a", func(w *Workload) { w.Injected, w.Pods, w.RestartedFor, w.RolledOut = true, 4, "rb", false }),
					deploy("b", func(w *Workload) { w.Injected, w.Pods = true, 4 })}},
			mayStart: false, now: t0.Add(11 * time.Minute),
			check: func(t *testing.T, d Decision) {
				if strings.Join(d.Restart, ",") != "Deployment/b" || d.State.Step == nil || !d.State.Step.LateSwept {
					t.Fatalf("restart = %v, step %+v: want b restarted although a still rolls (past the timeout), the rollback going on", d.Restart, d.State.Step)
				}
				// b's restart did not stick (its template reverted by someone else): not issued
				// again; the rollback ends.
				ns := Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelObserve, Pods: Pods{Total: 8, Ready: 8}, State: d.State,
					Workloads: []Workload{deploy("a", func(w *Workload) { w.Injected, w.Pods, w.RestartedFor, w.RolledOut = true, 4, "rb", false }),
						deploy("b", func(w *Workload) { w.Injected, w.Pods = true, 4 })}}
				if next := Decide(ns, settings(), false, t0.Add(11*time.Minute+lateRollbackRecheck)); next.State.Step != nil || next.Restart != nil {
					t.Errorf("after the late sweep: step %+v, restart %v; want the rollback ended", next.State.Step, next.Restart)
				}
			},
		},
		"a finished rollback holds the namespace": {
			ns: Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelObserve, Pods: readyPods(2),
				State:     State{Step: &Step{To: meshv1.LevelOff, Started: t0, ID: "off-1", Rollback: true, Reason: meshv1.ReasonRolledBack, Message: "why"}},
				Workloads: []Workload{deploy("web", func(w *Workload) { w.Uninjected, w.RestartedFor = true, "off-1" })}},
			mayStart: true, now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.State.Hold == nil || d.State.Hold.Generation != 3 || d.Blocked.Reason != meshv1.ReasonRolledBack || d.State.Step != nil {
					t.Fatalf("decision = %+v", d)
				}
				again := Decide(Namespace{Current: d.Level, Target: meshv1.LevelObserve, State: d.State, Pods: readyPods(2)}, settings(), true, t0.Add(2*time.Minute))
				if again.State.Step != nil || again.Blocked.Reason != meshv1.ReasonRolledBack {
					t.Errorf("held namespace moved: %+v", again)
				}
			},
		},
		"a spec change releases a hold": {
			ns:       Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelObserve, Pods: readyPods(1), State: State{Hold: &Hold{Generation: 2, Reason: meshv1.ReasonRolledBack}}},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Hold != nil || d.State.Step == nil {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"lowering the target walks down one rung and removes that rung's policy at once": {
			ns:       Namespace{Current: meshv1.LevelZeroTrust, Target: meshv1.LevelObserve, Pods: readyPods(2)},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step == nil || d.State.Step.To != meshv1.LevelMutualTLS || d.Effects.Authorization || !d.Effects.Strict {
					t.Errorf("decision = %+v effects %+v", d, d.Effects)
				}
			},
		},
		"walking down to Off restarts the injected workloads": {
			ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelOff, Pods: readyPods(2),
				Workloads: []Workload{deploy("web", injected), deploy("opted", func(w *Workload) { w.OptedOut = true })}},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.Effects.Inject || strings.Join(d.Restart, ",") != "Deployment/web" {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"paused freezes a namespace mid-step": {
			ns: Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelObserve, State: State{Step: observeStep}, Pods: readyPods(2),
				Workloads: []Workload{deploy("web", uninjected)}},
			s:        func(s *Settings) { s.Paused = true },
			mayStart: true, now: t0.Add(time.Hour),
			check: func(t *testing.T, d Decision) {
				if d.State.Step == nil || d.Restart != nil || !d.Effects.Inject || !d.InProgress || d.Event != nil {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"a disruption budget that allows nothing holds the restart and says so": {
			ns: Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelObserve, State: State{Step: observeStep}, Pods: readyPods(2),
				Workloads: []Workload{deploy("web", func(w *Workload) { w.Uninjected, w.DisruptionBlocked = true, "web-pdb" })}},
			mayStart: true, now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.Restart != nil || d.Blocked.Reason != meshv1.ReasonDisruptionBudget || !strings.Contains(d.Blocked.Message, "web-pdb") {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"observe waits for unready pods": {
			ns:       Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelObserve, Pods: Pods{Total: 2, Ready: 1, NotReady: []string{"crash"}}},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Blocked.Reason != meshv1.ReasonPodsNotReady || d.Effects.Inject {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"someone else's injection label blocks the climb": {
			ns:       Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelObserve, Pods: readyPods(1), InjectionConflict: "istio-injection=disabled"},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Blocked.Reason != meshv1.ReasonInjectionLabelConflict || d.Effects.Inject {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"a PERMISSIVE PeerAuthentication of someone else's blocks MutualTLS": {
			ns:       Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS, Pods: readyPods(1), PolicyConflict: "default is PERMISSIVE"},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Blocked.Reason != meshv1.ReasonPeerAuthenticationConflict || d.Effects.Strict {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"lowering the target under a dry-run undoes it instead of enforcing it": {
			ns:       Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelOff, Pods: readyPods(2), State: State{Step: &Step{To: meshv1.LevelZeroTrust, Started: t0, ID: "z"}}},
			mayStart: false, now: t0.Add(2 * time.Minute),
			check: func(t *testing.T, d Decision) {
				st := d.State.Step
				if st == nil || !st.Rollback || !st.Cancelled || d.Effects.Authorization || !d.Effects.Strict || d.Event.Reason != "StepCancelled" {
					t.Fatalf("decision = %+v effects %+v", d, d.Effects)
				}
				done := Decide(Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelOff, Pods: readyPods(2), State: d.State}, settings(), false, t0.Add(3*time.Minute))
				if done.State.Hold != nil || done.Level != meshv1.LevelMutualTLS || done.State.Step != nil {
					t.Errorf("a cancelled step must finish without a hold: %+v", done)
				}
			},
		},
		"a hold is dropped once the namespace is at its target": {
			ns:       Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelOff, State: State{Hold: &Hold{Generation: 3, Reason: meshv1.ReasonRolledBack}}},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Hold != nil || d.Blocked.Reason != "" {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"a held namespace may still walk down": {
			ns:       Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelObserve, Pods: readyPods(1), State: State{Hold: &Hold{Generation: 3, Reason: meshv1.ReasonRolledBack}}},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step == nil || d.State.Step.To != meshv1.LevelObserve || d.State.Hold != nil {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"time paused does not count against the step": {
			ns:       Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS, Pods: Pods{Total: 1, NotReady: []string{"p"}}, State: State{Step: &Step{To: meshv1.LevelMutualTLS, Started: t0, ID: "m"}}},
			s:        func(s *Settings) { s.Paused = true },
			mayStart: true, now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.State.Step == nil || !d.State.Step.PausedAt.Equal(t0.Add(time.Minute)) {
					t.Fatalf("paused step = %+v", d.State.Step)
				}
				// Resumed 30 minutes later: 1 minute of the 10-minute timeout has run, not 31.
				resumed := Decide(Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS, Pods: Pods{Total: 1, NotReady: []string{"p"}}, State: d.State}, settings(), true, t0.Add(31*time.Minute))
				if st := resumed.State.Step; st == nil || st.Rollback || !st.PausedAt.IsZero() || !st.Started.Equal(t0.Add(30*time.Minute)) {
					t.Errorf("resumed step = %+v, want the same step, its start moved by the pause", st)
				}
			},
		},
		"restarts are budgeted in pods, one workload at least": {
			ns: Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelObserve, Pods: readyPods(40),
				Workloads: []Workload{
					deploy("a", func(w *Workload) { w.Uninjected, w.Pods = true, 10 }), deploy("b", func(w *Workload) { w.Uninjected, w.Pods = true, 10 }),
					deploy("c", func(w *Workload) { w.Uninjected, w.Pods = true, 10 }), deploy("d", func(w *Workload) { w.Uninjected, w.Pods = true, 10 })}},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if strings.Join(d.Restart, ",") != "Deployment/a" {
					t.Errorf("restart = %v, want only a: 25%% of 40 pods is one 10-pod workload", d.Restart)
				}
			},
		},
		"a rollback completes once its own restarts are done, unready pods or not": {
			ns: Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelObserve, Pods: Pods{Total: 2, Ready: 1, NotReady: []string{"crash"}},
				State:     State{Step: &Step{To: meshv1.LevelOff, Started: t0, ID: "off-1", Rollback: true, Reason: meshv1.ReasonRolledBack, Message: "why"}},
				Workloads: []Workload{deploy("web", func(w *Workload) { w.Uninjected, w.RestartedFor = true, "off-1" })}},
			mayStart: false, now: t0.Add(time.Second),
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.InProgress || d.State.Hold == nil {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"a walk down that cannot finish gives its slot back after the timeout": {
			ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelOff, Pods: readyPods(2), State: State{Step: &Step{To: meshv1.LevelOff, Started: t0, ID: "off-2"}},
				Workloads: []Workload{deploy("sts", func(w *Workload) { w.Injected, w.RestartedFor, w.RolledOut = true, "off-2", false })}},
			mayStart: false, now: t0.Add(11 * time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Level != meshv1.LevelOff || d.InProgress || d.Event == nil || d.Event.Reason != "LevelReachedIncomplete" {
					t.Errorf("decision = %+v", d)
				}
			},
		},
	}
	runDecideCases(t, tests)
}

func TestEnroll(t *testing.T) {
	rules := []meshv1.NamespaceRule{
		{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"team": "pay"}}, Level: meshv1.LevelZeroTrust, AllowFrom: []meshv1.AllowSource{{Namespace: "gw"}}},
		{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"team": "lite"}}, Level: meshv1.LevelMutualTLS, DataPlaneMode: meshv1.DataPlaneAmbient},
		{Selector: meshv1.NamespaceSelector{}, Level: meshv1.LevelObserve},
	}
	tests := map[string]struct {
		name      string
		labels    map[string]string
		want      Level
		allow     string
		bad       bool
		dataPlane meshv1.DataPlaneKind
	}{
		"a rule's data plane comes with it":    {name: "lite", labels: map[string]string{"team": "lite"}, want: meshv1.LevelMutualTLS, dataPlane: meshv1.DataPlaneAmbient},
		"first matching rule wins":             {name: "pay", labels: map[string]string{"team": "pay"}, want: meshv1.LevelZeroTrust, allow: "gw"},
		"empty selector matches the rest":      {name: "web", want: meshv1.LevelObserve},
		"kube-system is never enrolled":        {name: "kube-system", labels: map[string]string{"team": "pay"}, want: meshv1.LevelOff},
		"the control plane is never enrolled":  {name: "istio-system", want: meshv1.LevelOff},
		"the operator is never enrolled":       {name: "meshwright-system", want: meshv1.LevelOff},
		"the override label beats the rules":   {name: "web", labels: map[string]string{meshv1.LabelTargetLevel: "MutualTLS"}, want: meshv1.LevelMutualTLS},
		"an override can take a namespace out": {name: "pay", labels: map[string]string{"team": "pay", meshv1.LabelTargetLevel: "Off"}, want: meshv1.LevelOff, allow: "gw"},
		"a bad override is ignored and said":   {name: "web", labels: map[string]string{meshv1.LabelTargetLevel: "Strict"}, want: meshv1.LevelObserve, bad: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := Enroll(tc.name, tc.labels, rules, []string{"istio-system", "meshwright-system"})
			if e.Target != tc.want || strings.Join(e.AllowFrom, ",") != tc.allow || (e.Invalid != "") != tc.bad || e.DataPlane != tc.dataPlane {
				t.Errorf("Enroll = %+v, want %s allow %q invalid %v", e, tc.want, tc.allow, tc.bad)
			}
		})
	}
	if e := Enroll("web", nil, nil, nil); e.Target != meshv1.LevelOff {
		t.Errorf("no rules: %+v, want Off", e)
	}
}

// TestRollbackRestartsArePaced: a rollback (a step timed out or cancelled) restarts within
// maxUnavailablePerNamespace like a forward step, counting only its own restarts in flight (the
// pods the failed step left unready are what it mends), and does not wait for a
// PodDisruptionBudget (those unready pods use up its disruptions); the rollback of a step whose
// traffic regressed, and one that reached the step timeout, restart everything at once.
func TestRollbackRestartsArePaced(t *testing.T) {
	injected := func(pods int, pdb string) func(*Workload) {
		return func(w *Workload) { w.Injected, w.Pods, w.DisruptionBlocked = true, pods, pdb }
	}
	ws := []Workload{deploy("a", injected(2, "a-pdb")), deploy("b", injected(2, "")), deploy("c", injected(2, "")), deploy("d", injected(2, ""))}
	tests := map[string]struct {
		reason  string
		rolling string // a workload the rollback restarted already, still rolling out
		late    bool   // the rollback reached the step timeout
		want    string
	}{
		"timed out: 25% of 8 pods is 2, one workload at a time, PDB or not": {reason: meshv1.ReasonRolledBack, want: "Deployment/a"},
		"timed out, one rolling: the next waits":                            {reason: meshv1.ReasonRolledBack, rolling: "a", want: ""},
		"the rollback itself late: what it owes at once":                    {reason: meshv1.ReasonRolledBack, rolling: "a", late: true, want: "Deployment/b,Deployment/c,Deployment/d"},
		"traffic regressed: everything at once":                             {reason: meshv1.ReasonTrafficRegressed, want: "Deployment/a,Deployment/b,Deployment/c,Deployment/d"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			step := &Step{To: meshv1.LevelOff, ID: "rb", Rollback: true, Reason: tc.reason}
			ns := Namespace{Current: meshv1.LevelObserve, Pods: Pods{Total: 8, Ready: 5, NotReady: []string{"a-1", "b-1", "d-1"}}, Workloads: slices.Clone(ws)}
			for i := range ns.Workloads {
				if ns.Workloads[i].Name == tc.rolling {
					ns.Workloads[i].RestartedFor, ns.Workloads[i].RolledOut = "rb", false
				}
			}
			d := Decision{Level: meshv1.LevelOff, State: State{Step: step}, rollbackLate: tc.late}
			planRestarts(&d, ns, settings())
			if got := strings.Join(d.Restart, ","); got != tc.want {
				t.Fatalf("restart %q, want %q", got, tc.want)
			}
		})
	}
}
