package ladder

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/resilience"
	"github.com/meshwright/meshwright/internal/traffic"
)

// defaultsNS is a namespace at level, its target, with ready pods and the spec's defaults from
// MutualTLS up; the values are every default.
func defaultsNS(level Level, mod func(*Namespace)) Namespace {
	ns := Namespace{Name: "shop", Current: level, Target: level, Pods: readyPods(2), State: State{Since: t0.Add(-time.Hour)},
		Resilience: ResilienceWant{Values: resilience.Resolve(&meshv1.ResilienceSpec{}, nil), From: meshv1.LevelMutualTLS}}
	if mod != nil {
		mod(&ns)
	}
	return ns
}

// shorter is the defaults with a request timeout of 100ms.
func shorter() *resilience.Values {
	v := *resilience.Resolve(&meshv1.ResilienceSpec{}, nil)
	v.RequestTimeout = metav1.Duration{Duration: 100 * time.Millisecond}
	return &v
}

// TestResilienceDefaultsStep: from spec.resilience.fromLevel up, a namespace with no step takes a
// step of its own, at its level, that applies the defaults (gated on every pod Ready, within the
// slots, before it climbs on), bakes them under the traffic gates, and records them when done. A
// namespace below the level, out of the mesh, opted out, or whose defaults are recorded already
// takes none; removing them never waits. A step whose values the spec no longer asks for is
// cancelled back to the recorded ones.
func TestResilienceDefaultsStep(t *testing.T) {
	defaults := resilience.Resolve(&meshv1.ResilienceSpec{}, nil)
	applying := func(v *resilience.Values, started time.Time) *Step {
		return &Step{To: meshv1.LevelMutualTLS, Defaults: true, Resilience: v, Started: started, ID: "resilience-1"}
	}
	tests := map[string]decideCase{
		"at MutualTLS with no defaults recorded: a step applies them": {
			ns: defaultsNS(meshv1.LevelMutualTLS, nil), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				st := d.State.Step
				if st == nil || !st.Defaults || st.To != meshv1.LevelMutualTLS || !sameValues(st.Resilience, defaults) || !d.InProgress || d.Restart != nil {
					t.Fatalf("step = %+v, want the defaults applied at MutualTLS, restarting nothing", st)
				}
				if st.Kind(meshv1.LevelMutualTLS) != KindDefaults || !sameValues(d.Effects.Resilience, defaults) || !d.Effects.Strict {
					t.Errorf("kind %s, effects %+v", st.Kind(meshv1.LevelMutualTLS), d.Effects)
				}
				if d.Event == nil || d.Event.Reason != "ResilienceDefaultsStarted" || !strings.Contains(d.Event.Message, "request timeout 15s, 2 retries") {
					t.Errorf("event = %+v", d.Event)
				}
			},
		},
		"below fromLevel: none": {
			ns: defaultsNS(meshv1.LevelObserve, nil), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if !d.AtTarget(meshv1.LevelObserve) || d.Effects.Resilience != nil {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"from Observe, at Observe": {
			ns: defaultsNS(meshv1.LevelObserve, func(ns *Namespace) { ns.Resilience.From = meshv1.LevelObserve }), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step == nil || !d.State.Step.Defaults {
					t.Errorf("step = %+v, want the defaults applied", d.State.Step)
				}
			},
		},
		"recorded already: at target, carried": {
			ns: defaultsNS(meshv1.LevelZeroTrust, func(ns *Namespace) { ns.State.Resilience = defaults }), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if !d.AtTarget(meshv1.LevelZeroTrust) || !sameValues(d.Effects.Resilience, defaults) || d.Event != nil {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"no free slot: waits, not at target": {
			ns: defaultsNS(meshv1.LevelMutualTLS, nil), mayStart: false, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.AtTarget(meshv1.LevelMutualTLS) || !strings.Contains(d.Waiting, "resilience defaults") {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"pods not Ready: held": {
			ns: defaultsNS(meshv1.LevelMutualTLS, func(ns *Namespace) { ns.Pods.NotReady = []string{"web-1"} }), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Blocked.Reason != meshv1.ReasonPodsNotReady || !strings.Contains(d.Blocked.Message, "resilience defaults") {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"applied before the climb on": {
			ns: defaultsNS(meshv1.LevelMutualTLS, func(ns *Namespace) { ns.Target = meshv1.LevelZeroTrust }), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if st := d.State.Step; st == nil || !st.Defaults {
					t.Errorf("step = %+v, want the defaults first", st)
				}
			},
		},
		"the rule opts out: removed at once, no step": {
			ns: defaultsNS(meshv1.LevelMutualTLS, func(ns *Namespace) { ns.State.Resilience, ns.Resilience.Values = defaults, nil }), mayStart: false, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.State.Resilience != nil || d.Effects.Resilience != nil || d.Event == nil || d.Event.Reason != "ResilienceDefaultsRemoved" {
					t.Errorf("decision = %+v, event %+v", d, d.Event)
				}
			},
		},
		"stepping down below fromLevel: gone while the step runs, then removed from the record": {
			ns: defaultsNS(meshv1.LevelMutualTLS, func(ns *Namespace) {
				ns.Target, ns.State.Resilience = meshv1.LevelObserve, defaults
			}), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if st := d.State.Step; st == nil || st.To != meshv1.LevelObserve || d.Effects.Resilience != nil {
					t.Errorf("step = %+v, effects %+v", st, d.Effects)
				}
			},
		},
		"new values: applied by a step, the old ones carried until then": {
			ns: defaultsNS(meshv1.LevelMutualTLS, func(ns *Namespace) { ns.State.Resilience, ns.Resilience.Values = defaults, shorter() }), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if st := d.State.Step; st == nil || !sameValues(st.Resilience, shorter()) || !sameValues(d.Effects.Resilience, shorter()) || !strings.HasPrefix(d.Event.Message, "Changing") {
					t.Errorf("step = %+v, event %+v", st, d.Event)
				}
				if !sameValues(d.State.Resilience, defaults) {
					t.Errorf("the record changed before the step completed: %+v", d.State.Resilience)
				}
			},
		},
		"ambient mode without a waypoint: none": {
			ns: defaultsNS(meshv1.LevelMutualTLS, func(ns *Namespace) { ns.Resilience.Unsupported = "ztunnel applies none" }), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if !d.AtTarget(meshv1.LevelMutualTLS) || d.Effects.Resilience != nil {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"under the traffic gates the step keeps a baseline": {
			ns: defaultsNS(meshv1.LevelMutualTLS, func(ns *Namespace) { ns.Traffic = cleanReading(5 * time.Minute) }),
			s:  func(s *Settings) { s.TrafficGates, s.BakeTime = true, 5*time.Minute }, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if st := d.State.Step; st == nil || st.Baseline == nil {
					t.Errorf("step = %+v, want a baseline", st)
				}
			},
		},
		"pods Ready and settled, no traffic gates: done and recorded": {
			ns: defaultsNS(meshv1.LevelMutualTLS, func(ns *Namespace) { ns.State.Step = applying(defaults, t0.Add(-time.Minute)) }), mayStart: false, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || !sameValues(d.State.Resilience, defaults) || !d.AtTarget(meshv1.LevelMutualTLS) || d.Event == nil || d.Event.Reason != "ResilienceDefaultsApplied" {
					t.Errorf("decision = %+v, event %+v", d, d.Event)
				}
				if !d.State.Since.Equal(t0.Add(-time.Hour)) {
					t.Errorf("the level's time moved: %v", d.State.Since)
				}
			},
		},
		"values changed under the step: cancelled back to the recorded ones": {
			ns: defaultsNS(meshv1.LevelMutualTLS, func(ns *Namespace) {
				ns.State.Step, ns.Resilience.Values = applying(defaults, t0.Add(-time.Minute)), shorter()
			}), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				st := d.State.Step
				if st == nil || !st.Rollback || !st.Cancelled || !st.Defaults || d.Effects.Resilience != nil || d.Event.Reason != "ResilienceDefaultsCancelled" {
					t.Fatalf("step = %+v, effects %+v", st, d.Effects)
				}
			},
		},
		"pods not Ready past the step timeout: rolled back and held": {
			ns: defaultsNS(meshv1.LevelMutualTLS, func(ns *Namespace) {
				ns.State.Step, ns.Pods.NotReady = applying(defaults, t0.Add(-11*time.Minute)), []string{"web-1"}
			}), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				st := d.State.Step
				if st == nil || !st.Rollback || !st.Defaults || d.Effects.Resilience != nil || d.Event.Reason != meshv1.ReasonRolledBack ||
					!strings.Contains(d.Event.Message, "application of the resilience defaults at MutualTLS did not complete") {
					t.Fatalf("step = %+v, event %+v", st, d.Event)
				}
			},
		},
		"a rollback done: held, the recorded defaults kept": {
			ns: defaultsNS(meshv1.LevelMutualTLS, func(ns *Namespace) {
				ns.State.Step = &Step{To: meshv1.LevelMutualTLS, Rollback: true, Defaults: true, Resilience: defaults, Reason: meshv1.ReasonTrafficRegressed, Message: "timeouts", Started: t0.Add(-time.Minute), ID: "x"}
			}), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.State.ResilienceHold == nil || !sameValues(d.State.ResilienceHold.Values, defaults) || d.State.Hold != nil || d.State.Resilience != nil || d.Blocked.Reason != meshv1.ReasonTrafficRegressed ||
					!strings.Contains(d.Event.Message, "resilience defaults the namespace had before") {
					t.Fatalf("decision = %+v, event %+v", d, d.Event)
				}
			},
		},
		"held after a rollback: the defaults are not applied again until the spec changes": {
			ns: defaultsNS(meshv1.LevelMutualTLS, func(ns *Namespace) {
				ns.State.ResilienceHold = &ResilienceHold{Values: defaults, Reason: meshv1.ReasonTrafficRegressed, Message: "timeouts"}
			}), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Blocked.Reason != meshv1.ReasonTrafficRegressed || d.AtTarget(meshv1.LevelMutualTLS) || d.State.ResilienceHold == nil {
					t.Fatalf("decision = %+v", d)
				}
			},
		},
		"other values asked for release that hold": {
			ns: defaultsNS(meshv1.LevelMutualTLS, func(ns *Namespace) {
				ns.State.ResilienceHold = &ResilienceHold{Values: shorter(), Reason: meshv1.ReasonTrafficRegressed, Message: "timeouts"}
			}), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step == nil || !d.State.Step.Defaults || d.State.ResilienceHold != nil {
					t.Fatalf("decision = %+v", d)
				}
			},
		},
		"that hold holds nothing else: the namespace climbs on": {
			ns: defaultsNS(meshv1.LevelMutualTLS, func(ns *Namespace) {
				ns.Target, ns.State.Since = meshv1.LevelZeroTrust, t0.Add(-2*time.Hour)
				ns.State.ResilienceHold = &ResilienceHold{Values: defaults, Reason: meshv1.ReasonTrafficRegressed, Message: "timeouts"}
			}), s: func(s *Settings) { s.SoakTime = time.Minute }, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if st := d.State.Step; st == nil || st.To != meshv1.LevelZeroTrust || d.State.ResilienceHold == nil {
					t.Fatalf("step %+v, hold %+v: want the climb to ZeroTrust, the defaults still held", st, d.State.ResilienceHold)
				}
			},
		},
		"that hold holds no move to the active revision": {
			ns: defaultsNS(meshv1.LevelMutualTLS, func(ns *Namespace) {
				ns.State.ResilienceHold = &ResilienceHold{Values: defaults, Reason: meshv1.ReasonTrafficRegressed, Message: "timeouts"}
				ns.Workloads = []Workload{deploy("web", injected)}
			}), s: func(s *Settings) { s.Revision = "1-31-5" }, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if st := d.State.Step; st == nil || st.Revision != "1-31-5" {
					t.Fatalf("step %+v: want the move to revision 1-31-5", st)
				}
			},
		},
		"under the traffic gates, unread: waits for the baseline": {
			ns: defaultsNS(meshv1.LevelMutualTLS, nil),
			s:  func(s *Settings) { s.TrafficGates, s.BakeTime = true, 5*time.Minute }, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || !d.Unread || !strings.Contains(d.Waiting, "traffic to be read") {
					t.Fatalf("decision = %+v", d)
				}
			},
		},
		"under the traffic gates, read over part of the bake time: waits": {
			ns: defaultsNS(meshv1.LevelMutualTLS, func(ns *Namespace) { ns.Traffic = cleanReading(time.Minute) }),
			s:  func(s *Settings) { s.TrafficGates, s.BakeTime = true, 5*time.Minute }, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || !strings.Contains(d.Waiting, "before applying the resilience defaults") {
					t.Fatalf("decision = %+v", d)
				}
			},
		},
		"in ambient mode with a waypoint: applied, and done without a bake": {
			ns: defaultsNS(meshv1.LevelMutualTLS, func(ns *Namespace) {
				ns.Ambient, ns.State.Ambient = true, true
				ns.State.Step = applying(defaults, t0.Add(-time.Minute))
			}),
			s: func(s *Settings) { s.TrafficGates, s.BakeTime = true, 5*time.Minute }, mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || !sameValues(d.State.Resilience, defaults) {
					t.Fatalf("decision = %+v", d)
				}
			},
		},
	}
	runDecideCases(t, tests)
}

// TestResilienceDefaultsBake: under the traffic gates, a defaults step bakes; callers whose
// errors or timeouts grew roll it back to the recorded defaults, with the evidence.
func TestResilienceDefaultsBake(t *testing.T) {
	bakeTime := 5 * time.Minute
	web := traffic.Caller{Namespace: "front", Workload: "web"}
	reading := func(mod func(*traffic.Reading)) *traffic.Reading {
		r := &traffic.Reading{Source: "Prometheus at http://prom", Inbound: traffic.NewInbound(bakeTime)}
		r.Reporting = true
		r.Callers[web] = 300
		if mod != nil {
			mod(r)
		}
		return r
	}
	tests := map[string]struct {
		baseline *Baseline
		traffic  *traffic.Reading
		baking   time.Duration
		// want is "bake", "done" or "rollback".
		want        string
		wantMessage []string
	}{
		"timeouts appear": {baseline: &Baseline{Inbound: 1}, traffic: reading(func(r *traffic.Reading) { r.Errors[web], r.TimedOut[web] = 40, 40 }), baking: time.Minute,
			want: "rollback", wantMessage: []string{"its callers got 40 failed answer(s), 40 of them timeouts", "front/web", "resilience.timeouts.request", "rolled back to what the namespace had before"}},
		"errors as before":                               {baseline: &Baseline{Inbound: 1, Errors: 0.1}, traffic: reading(func(r *traffic.Reading) { r.Errors[web] = 30 }), baking: bakeTime, want: "done"},
		"no baseline, a few errors among many calls":     {traffic: reading(func(r *traffic.Reading) { r.Errors[web] = 5 }), baking: bakeTime, want: "done"},
		"no baseline, errors a large share of the calls": {traffic: reading(func(r *traffic.Reading) { r.Errors[web] = 60 }), baking: time.Minute, want: "rollback"},
		"clean, still within the bake":                   {baseline: &Baseline{Inbound: 1}, traffic: reading(nil), baking: time.Minute, want: "bake"},
		"unread: waits, no completion without a reading": {baseline: &Baseline{Inbound: 1}, traffic: reading(func(r *traffic.Reading) { r.Reporting = false }), baking: bakeTime, want: "bake"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			defaults := resilience.Resolve(&meshv1.ResilienceSpec{}, nil)
			st := &Step{To: meshv1.LevelMutualTLS, Defaults: true, Resilience: defaults, Started: t0.Add(-10 * time.Minute), ID: "resilience-1", Baseline: tc.baseline,
				Baking: t0.Add(-tc.baking)}
			ns := defaultsNS(meshv1.LevelMutualTLS, func(ns *Namespace) { ns.State.Step, ns.Traffic = st, tc.traffic })
			s := settings()
			s.TrafficGates, s.BakeTime, s.StepTimeout = true, bakeTime, time.Hour
			d := Decide(ns, s, false, t0)
			got := "bake"
			switch {
			case d.State.Step == nil:
				got = "done"
			case d.State.Step.Rollback:
				got = "rollback"
			}
			if got != tc.want {
				t.Fatalf("got %s, want %s: %+v, waiting %q, blocked %+v", got, tc.want, d.State.Step, d.Waiting, d.Blocked)
			}
			for _, m := range tc.wantMessage {
				if d.Event == nil || !strings.Contains(d.Event.Message, m) {
					t.Errorf("event %+v lacks %q", d.Event, m)
				}
			}
			if got == "rollback" && (d.Event.Reason != meshv1.ReasonTrafficRegressed || d.Effects.Resilience != nil || !sameValues(d.State.Step.Resilience, defaults)) {
				t.Errorf("event %+v, effects %+v", d.Event, d.Effects)
			}
		})
	}
}

// TestDefaultsReadTraffic: the traffic of a namespace about to apply its defaults, or baking
// them, is read for the bake's length; one that carries them already is not read for them.
func TestDefaultsReadTraffic(t *testing.T) {
	s := settings()
	s.TrafficGates, s.BakeTime = true, 5*time.Minute
	defaults := resilience.Resolve(&meshv1.ResilienceSpec{}, nil)
	if w, ok := TrafficWindow(defaultsNS(meshv1.LevelMutualTLS, nil), s); !ok || w != s.BakeTime {
		t.Errorf("due: window %v %v", w, ok)
	}
	baking := defaultsNS(meshv1.LevelMutualTLS, func(ns *Namespace) {
		ns.State.Step = &Step{To: meshv1.LevelMutualTLS, Defaults: true, Resilience: defaults, Started: t0, ID: "r"}
	})
	if w, ok := TrafficWindow(baking, s); !ok || w != s.BakeTime {
		t.Errorf("baking: window %v %v", w, ok)
	}
	if _, ok := TrafficWindow(defaultsNS(meshv1.LevelMutualTLS, func(ns *Namespace) { ns.State.Resilience = defaults }), s); ok {
		t.Errorf("carried already, but read")
	}
	if _, ok := TrafficWindow(defaultsNS(meshv1.LevelObserve, nil), s); ok {
		t.Errorf("below fromLevel, but read")
	}
}
