package ladder

import (
	"strings"
	"testing"
	"time"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/traffic"
)

// TestBake: a climb whose change is complete bakes for the bake time before it counts as done;
// its traffic compared with the baseline from before the change. A regression (plaintext
// refused, 403s grown, calls halved; at Observe, calls the proxies could not pass on to the
// application) rolls it back with TrafficRegressed and the evidence; a reading that cannot be
// judged neither rolls back nor completes (at Observe, until the bake time is over, then it
// completes with a warning); Skip does not bake.
func TestBake(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	bakeTime := 5 * time.Minute
	legacy := traffic.Caller{Namespace: "legacy", Workload: "client"}
	reading := func(mod func(*traffic.Reading)) *traffic.Reading {
		r := &traffic.Reading{Source: "Prometheus at http://prom", Inbound: traffic.NewInbound(bakeTime)}
		r.Reporting = true
		r.Callers[traffic.Caller{Namespace: "shop", Workload: "web"}] = 300 // 1/s, as before
		if mod != nil {
			mod(r)
		}
		return r
	}
	steady := &Baseline{Inbound: 1}
	tests := map[string]struct {
		to       Level
		baking   time.Duration // how long ago the bake started; 0: not yet
		baseline *Baseline
		traffic  *traffic.Reading
		skip     bool
		// proxyless makes the namespace's one pod a proxyless gRPC one.
		proxyless bool
		// want is "bake" (still baking), "done" (completed), "rollback" (reverted with
		// TrafficRegressed), or a blocked reason (the step stays, baking, held by it).
		want        string
		wantMessage []string
		wantEvent   string
	}{
		"Observe: the proxies cannot reach the application": {to: meshv1.LevelObserve, baking: time.Minute, traffic: reading(func(r *traffic.Reading) { r.Unreached[legacy] = 20; r.Callers[legacy] = 20 }),
			want: "rollback", wantMessage: []string{"its proxies could not pass 20 of the 320 call(s) they received on to the application", "legacy/client (20 calls", "must listen on the pod's IP", "held at Off"}},
		"Observe: a stray failure is not a regression": {to: meshv1.LevelObserve, baking: bakeTime, traffic: reading(func(r *traffic.Reading) { r.Unreached[legacy] = 2; r.Callers[legacy] = 2 }), want: "done"},
		"Observe: a few failures among many calls are not a regression": {to: meshv1.LevelObserve, baking: bakeTime, traffic: reading(func(r *traffic.Reading) { r.Unreached[legacy] = 10; r.Callers[legacy] = 10 }),
			want: "done"},
		"Observe: callers in the mesh fail to connect": {to: meshv1.LevelObserve, baking: time.Minute, traffic: reading(func(r *traffic.Reading) { r.Failed[legacy] = 4 }),
			want: "rollback", wantMessage: []string{"4 call(s) of callers in the mesh failed to connect"}},
		"the bake time is over, but the source saw only part of it": {to: meshv1.LevelObserve, baking: bakeTime, traffic: reading(func(r *traffic.Reading) { r.Covered = 4 * time.Minute }),
			want: "bake"},
		"Observe: clean over the whole bake": {to: meshv1.LevelObserve, baking: bakeTime, traffic: reading(nil), want: "done", wantEvent: "LevelReached"},
		"Observe: unread within the bake time waits": {to: meshv1.LevelObserve, baking: time.Minute, traffic: reading(func(r *traffic.Reading) { r.Reporting = false }),
			want: meshv1.ReasonTelemetryMissing},
		"Observe: unread once the bake time is over completes, with a warning": {to: meshv1.LevelObserve, baking: bakeTime, traffic: reading(func(r *traffic.Reading) { r.Reporting = false }),
			want: "done", wantEvent: "LevelReachedUnbaked", wantMessage: []string{"Reached Observe without its bake", "has no series of the namespace's proxies"}},
		"the change just completed: the bake starts": {to: meshv1.LevelMutualTLS, baseline: steady, traffic: reading(nil), want: "bake"},
		"clean, within the bake time":                {to: meshv1.LevelMutualTLS, baking: time.Minute, baseline: steady, traffic: reading(nil), want: "bake"},
		"clean over the whole bake: done":            {to: meshv1.LevelMutualTLS, baking: bakeTime, baseline: steady, traffic: reading(nil), want: "done"},
		"plaintext refused after STRICT": {to: meshv1.LevelMutualTLS, baking: time.Minute, baseline: steady, traffic: reading(func(r *traffic.Reading) { r.Refused = 4 }),
			want: "rollback", wantMessage: []string{"the proxies refused 4 plaintext connection(s)", "envoy_listener_no_filter_chain_match", "held at Observe"}},
		"plaintext refused, with no baseline read": {to: meshv1.LevelMutualTLS, baking: time.Minute, traffic: reading(func(r *traffic.Reading) { r.Refused = 1 }), want: "rollback"},
		"callers in the mesh fail to connect": {to: meshv1.LevelMutualTLS, baking: time.Minute, baseline: steady, traffic: reading(func(r *traffic.Reading) { r.Failed[legacy] = 9 }),
			want: "rollback", wantMessage: []string{"9 call(s) of callers in the mesh failed to connect", "legacy/client (9 calls: check that legacy/client's proxies send Istio mTLS"}},
		"as many connection failures as before": {to: meshv1.LevelMutualTLS, baking: bakeTime, baseline: &Baseline{Inbound: 1, Failed: 0.1}, traffic: reading(func(r *traffic.Reading) { r.Failed[legacy] = 9 }),
			want: "done"},
		"the calls fell by more than half": {to: meshv1.LevelMutualTLS, baking: bakeTime, baseline: steady, traffic: reading(func(r *traffic.Reading) {
			r.Callers[traffic.Caller{Namespace: "shop", Workload: "web"}] = 100
		}), want: "rollback", wantMessage: []string{"fell from 1.00/s before the step to 0.33/s"}},
		"the calls fell, judged only once the bake is whole": {to: meshv1.LevelMutualTLS, baking: time.Minute, baseline: steady, traffic: reading(func(r *traffic.Reading) {
			r.Callers[traffic.Caller{Namespace: "shop", Workload: "web"}] = 100
		}), want: "bake"},
		"too few calls before to judge a fall": {to: meshv1.LevelMutualTLS, baking: bakeTime, baseline: &Baseline{Inbound: 0.01}, traffic: reading(func(r *traffic.Reading) {
			r.Callers = map[traffic.Caller]float64{}
		}), want: "done"},
		"403s after enforcing": {to: meshv1.LevelZeroTrust, baking: time.Minute, baseline: steady, traffic: reading(func(r *traffic.Reading) { r.Denied[legacy] = 12 }),
			want: "rollback", wantMessage: []string{"12 request(s) were answered with 403", "legacy/client (12 calls: add {namespace: legacy} to allowFrom)", "held at MutualTLS"}},
		"403s as many as before: the application's own": {to: meshv1.LevelZeroTrust, baking: bakeTime, baseline: &Baseline{Inbound: 1, Denied: 0.04}, traffic: reading(func(r *traffic.Reading) { r.Denied[legacy] = 12 }),
			want: "done"},
		"the source did not answer: no rollback, no completion": {to: meshv1.LevelMutualTLS, baking: bakeTime, baseline: steady, traffic: reading(func(r *traffic.Reading) { r.Unavailable = "timeout" }),
			want: meshv1.ReasonTelemetryUnavailable},
		"not read in this pass": {to: meshv1.LevelMutualTLS, baking: bakeTime, baseline: steady, want: "bake"},
		"every proxy proxyless gRPC: nothing to read, done with a warning": {to: meshv1.LevelMutualTLS, baking: time.Minute, baseline: steady, proxyless: true,
			want: "done", wantEvent: "LevelReachedUnbaked", wantMessage: []string{"runs proxyless gRPC (web-0), which reports no telemetry"}},
		"Skip does not bake": {to: meshv1.LevelMutualTLS, baseline: steady, traffic: reading(func(r *traffic.Reading) { r.Refused = 4 }), skip: true, want: "done"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			from := levelBelow(tc.to)
			step := &Step{To: tc.to, ID: "x-1", Started: now.Add(-time.Hour), Enforced: tc.to == meshv1.LevelZeroTrust, Baseline: tc.baseline}
			if tc.baking > 0 {
				step.Baking = now.Add(-tc.baking)
			}
			ns := Namespace{Name: "shop", Current: from, Target: tc.to, State: State{Since: now.Add(-2 * time.Hour), Step: step}, Traffic: tc.traffic,
				AllowFrom: []string{"gw"}, Pods: Pods{Total: 1, Ready: 1}, Workloads: []Workload{{Kind: "Deployment", Name: "web", Pods: 1, Injected: true, RolledOut: true}}}
			if tc.proxyless {
				ns.Pods.Proxyless = []string{"web-0"}
			}
			s := Settings{Generation: 4, TrafficGates: !tc.skip, BakeTime: bakeTime, SoakTime: time.Minute, ObserveTime: time.Minute, StepTimeout: 10 * time.Minute}
			d := Decide(ns, s, true, now)
			st := d.State.Step
			switch tc.want {
			case "bake":
				if st == nil || st.Rollback || st.Baking.IsZero() || !strings.Contains(d.Waiting, "baking") && !d.Unread {
					t.Fatalf("want the step baking; step %+v, waiting %q, blocked %+v", st, d.Waiting, d.Blocked)
				}
				if d.RecheckAfter <= 0 || d.RecheckAfter > TrafficPoll {
					t.Errorf("looked at again after %v, want within %v", d.RecheckAfter, TrafficPoll)
				}
			case "done":
				if st != nil || d.Level != tc.to {
					t.Fatalf("want the step complete at %s; level %s, step %+v, blocked %+v, waiting %q", tc.to, d.Level, st, d.Blocked, d.Waiting)
				}
				if tc.wantEvent != "" && (d.Event == nil || d.Event.Reason != tc.wantEvent) {
					t.Errorf("event %+v, want %s", d.Event, tc.wantEvent)
				}
				for _, m := range tc.wantMessage {
					if d.Event == nil || !strings.Contains(d.Event.Message, m) {
						t.Errorf("event %+v lacks %q", d.Event, m)
					}
				}
			case "rollback":
				if st == nil || !st.Rollback || st.To != from || st.Reason != meshv1.ReasonTrafficRegressed {
					t.Fatalf("want a rollback to %s for TrafficRegressed; step %+v", from, st)
				}
				if d.Event == nil || !d.Event.Warning || d.Event.Reason != meshv1.ReasonTrafficRegressed {
					t.Errorf("event %+v, want a Warning TrafficRegressed", d.Event)
				}
				for _, m := range tc.wantMessage {
					if !strings.Contains(st.Message, m) {
						t.Errorf("message %q lacks %q", st.Message, m)
					}
				}
				if d.Effects.Strict != EffectsOf(from, nil).Strict || d.Effects.Authorization {
					t.Errorf("effects %+v while reverting to %s", d.Effects, from)
				}
			default:
				if st == nil || st.Rollback || d.Blocked.Reason != tc.want {
					t.Fatalf("want the step kept, held by %s; step %+v, blocked %+v", tc.want, st, d.Blocked)
				}
				if d.RecheckAfter <= 0 || d.RecheckAfter > TrafficPoll {
					t.Errorf("looked at again after %v, want within %v", d.RecheckAfter, TrafficPoll)
				}
			}
		})
	}
}

// TestTrafficRegressedHolds: the rollback of a regressed step completes into a hold with the
// evidence, which keeps the namespace where it is until the spec changes.
func TestTrafficRegressedHolds(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	rollback := &Step{To: meshv1.LevelObserve, ID: "observe-1", Started: now.Add(-time.Minute), Rollback: true, Reason: meshv1.ReasonTrafficRegressed, Message: "the proxies refused 4 plaintext connection(s)"}
	ns := Namespace{Name: "shop", Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS, State: State{Since: now.Add(-time.Hour), Step: rollback},
		Pods: Pods{Total: 1, Ready: 1}, Workloads: []Workload{{Kind: "Deployment", Name: "web", Pods: 1, Injected: true, RolledOut: true}}, Traffic: cleanReading(time.Minute)}
	s := Settings{Generation: 4, TrafficGates: true, BakeTime: time.Minute, ObserveTime: time.Minute, StepTimeout: 10 * time.Minute}
	d := Decide(ns, s, true, now)
	if d.State.Step != nil || d.State.Hold == nil || d.Blocked.Reason != meshv1.ReasonTrafficRegressed || !strings.Contains(d.Blocked.Message, "refused 4") {
		t.Fatalf("want a hold with the evidence; state %+v, blocked %+v", d.State, d.Blocked)
	}
	ns.State = d.State
	if again := Decide(ns, s, true, now.Add(time.Hour)); again.State.Step != nil || again.Blocked.Reason != meshv1.ReasonTrafficRegressed {
		t.Fatalf("the hold did not keep the namespace: %+v", again)
	}
	s.Generation++
	if released := Decide(ns, s, true, now.Add(time.Hour)); released.State.Hold != nil {
		t.Fatalf("a spec change did not release the hold: %+v", released.State)
	}
}

// TestBaselineAndBakeWindow: a climb to MutualTLS records what its gate read as the baseline; a
// ZeroTrust step replaces it with its dry-run's traffic when it enforces; the controller reads a
// baking namespace's traffic over the bake time; a paused bake does not count the time paused.
func TestBaselineAndBakeWindow(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	s := Settings{Generation: 1, TrafficGates: true, BakeTime: 3 * time.Minute, ObserveTime: time.Minute, SoakTime: time.Minute, StepTimeout: 10 * time.Minute}
	r := cleanReading(time.Minute)
	r.Callers[traffic.Caller{Namespace: "shop", Workload: "web"}] = 120
	ns := Namespace{Name: "shop", Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS, State: State{Since: now.Add(-time.Hour)}, Traffic: r,
		Pods: Pods{Total: 1, Ready: 1}, Workloads: []Workload{{Kind: "Deployment", Name: "web", Pods: 1, Injected: true, RolledOut: true}}}
	d := Decide(ns, s, true, now)
	if d.State.Step == nil || d.State.Step.Baseline == nil || d.State.Step.Baseline.Inbound != 2 {
		t.Fatalf("want a step with the gate's reading as baseline (2 calls/s); %+v", d.State.Step)
	}

	dry := &Step{To: meshv1.LevelZeroTrust, ID: "zt-1", Started: now.Add(-2 * time.Minute)}
	zt := Namespace{Name: "shop", Current: meshv1.LevelMutualTLS, Target: meshv1.LevelZeroTrust, State: State{Since: now.Add(-time.Hour), Step: dry}, Traffic: r,
		Pods: ns.Pods, Workloads: ns.Workloads}
	if w, ok := TrafficWindow(zt, s); !ok || w != dryRunTime(s) {
		t.Fatalf("dry-run window %v %v", w, ok)
	}
	d = Decide(zt, s, true, now)
	if d.State.Step == nil || !d.State.Step.Enforced || d.State.Step.Baseline == nil || d.State.Step.Baseline.Inbound != 2 {
		t.Fatalf("want the step enforced with the dry-run's traffic as baseline; %+v", d.State.Step)
	}

	baking := &Step{To: meshv1.LevelMutualTLS, ID: "m-1", Started: now.Add(-time.Hour), Baking: now.Add(-time.Minute)}
	ns.State.Step = baking
	if w, ok := TrafficWindow(ns, s); !ok || w != s.BakeTime {
		t.Fatalf("bake window %v %v, want the bake time", w, ok)
	}
	s.Paused = true
	paused := Decide(ns, s, true, now)
	ns.State = paused.State
	s.Paused = false
	resumed := Decide(ns, s, true, now.Add(10*time.Minute))
	if got := resumed.State.Step.Baking; !got.Equal(baking.Baking.Add(10 * time.Minute)) {
		t.Fatalf("bake start after a 10m pause = %v, want it moved on by 10m", got)
	}
}

// TestPhaseStart: the phase a reading must lie in begins when the level was reached, the step
// started, its dry-run was enforced (Started moves on), or its bake began.
func TestPhaseStart(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	tests := map[string]struct {
		st   State
		want time.Time
	}{
		"at its level": {st: State{Since: now}, want: now},
		"stepping":     {st: State{Since: now, Step: &Step{ID: "s", Started: now.Add(time.Minute)}}, want: now.Add(time.Minute)},
		"enforced":     {st: State{Since: now, Step: &Step{ID: "s", Started: now.Add(2 * time.Minute), Enforced: true}}, want: now.Add(2 * time.Minute)},
		"baking":       {st: State{Since: now, Step: &Step{ID: "s", Started: now.Add(2 * time.Minute), Baking: now.Add(3 * time.Minute)}}, want: now.Add(3 * time.Minute)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := tc.st.PhaseStart(); !got.Equal(tc.want) {
				t.Fatalf("PhaseStart = %v, want %v", got, tc.want)
			}
		})
	}
}
