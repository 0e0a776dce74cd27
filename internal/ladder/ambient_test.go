package ladder

import (
	"strings"
	"testing"
	"time"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/traffic"
)

// TestDecideAmbient: a namespace in ambient mode climbs and walks down the same levels by its
// label alone: no step restarts a workload or waits for one (its pods have no proxy to get),
// a step waits only for its pods to be Ready and the settle time, and under the traffic gates
// an enforcing climb is held since ambient mode's telemetry is not read.
func TestDecideAmbient(t *testing.T) {
	sidecarless := []Workload{deploy("web", uninjected), deploy("api", uninjected)}
	observe := &Step{To: meshv1.LevelObserve, Started: t0, ID: "observe-1", Revision: DefaultRevision}
	strict := &Step{To: meshv1.LevelMutualTLS, Started: t0, ID: "mutualtls-1"}
	down := &Step{To: meshv1.LevelOff, Started: t0, ID: "off-1"}
	noRestart := func(t *testing.T, d Decision) {
		t.Helper()
		if len(d.Restart) > 0 {
			t.Errorf("restart = %v: ambient mode restarts nothing", d.Restart)
		}
	}
	runDecideCases(t, map[string]decideCase{
		"off to observe: the ambient label, no restart": {
			ns:       Namespace{Ambient: true, AmbientWanted: true, Current: meshv1.LevelOff, Target: meshv1.LevelMutualTLS, Pods: readyPods(4), Workloads: sidecarless},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				noRestart(t, d)
				if d.State.Step == nil || d.State.Step.To != meshv1.LevelObserve || !d.Effects.Inject || !d.Effects.Ambient {
					t.Fatalf("decision = %+v, effects %+v; want a step to Observe carrying the ambient label", d.State.Step, d.Effects)
				}
				if !d.State.Ambient {
					t.Error("the record does not say the namespace enters the mesh in ambient mode")
				}
			},
		},
		"observe waits only for the settle time, not for sidecars": {
			ns:  Namespace{Ambient: true, AmbientWanted: true, Current: meshv1.LevelOff, Target: meshv1.LevelMutualTLS, State: State{Step: observe, Ambient: true}, Pods: readyPods(4), Workloads: sidecarless},
			now: t0.Add(time.Second),
			check: func(t *testing.T, d Decision) {
				noRestart(t, d)
				if d.Waiting != "letting the change settle" {
					t.Errorf("waiting = %q, want the settle time only", d.Waiting)
				}
			},
		},
		"observe completes with every pod Ready and none injected": {
			ns:  Namespace{Ambient: true, AmbientWanted: true, Current: meshv1.LevelOff, Target: meshv1.LevelMutualTLS, State: State{Step: observe, Ambient: true}, Pods: readyPods(4), Workloads: sidecarless},
			now: t0.Add(Settle),
			check: func(t *testing.T, d Decision) {
				if d.Level != meshv1.LevelObserve || d.State.Step != nil || d.Event == nil || d.Event.Reason != "LevelReached" {
					t.Errorf("decision = %+v, event %+v", d, d.Event)
				}
			},
		},
		"observe waits for Istio CNI to redirect every pod, and is rolled back when it does not": {
			ns: Namespace{Ambient: true, AmbientWanted: true, Current: meshv1.LevelOff, Target: meshv1.LevelObserve, State: State{Step: observe, Ambient: true},
				Pods: Pods{Total: 2, Ready: 2, Uncaptured: []string{"web-1"}}, Workloads: sidecarless},
			now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if !strings.Contains(d.Waiting, "pods Istio CNI has not redirected to ztunnel: web-1") {
					t.Errorf("waiting = %q", d.Waiting)
				}
				timedOut := Decide(Namespace{Ambient: true, AmbientWanted: true, Current: meshv1.LevelOff, Target: meshv1.LevelObserve, State: State{Step: observe, Ambient: true},
					Pods: Pods{Total: 2, Ready: 2, Uncaptured: []string{"web-1"}}, Workloads: sidecarless}, settings(), false, t0.Add(11*time.Minute))
				if st := timedOut.State.Step; st == nil || !st.Rollback || timedOut.Effects.Inject || len(timedOut.Restart) > 0 {
					t.Errorf("after the step timeout: step %+v, effects %+v, restart %v; want a rollback taking the label off, restarting nothing", st, timedOut.Effects, timedOut.Restart)
				}
			},
		},
		"observe waits for a pod not Ready": {
			ns:  Namespace{Ambient: true, AmbientWanted: true, Current: meshv1.LevelOff, Target: meshv1.LevelObserve, State: State{Step: observe, Ambient: true}, Pods: Pods{Total: 2, Ready: 1, NotReady: []string{"web-1"}}, Workloads: sidecarless},
			now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				noRestart(t, d)
				if !strings.Contains(d.Waiting, "pods not Ready: web-1") || strings.Contains(d.Waiting, "restart") {
					t.Errorf("waiting = %q", d.Waiting)
				}
			},
		},
		"under the traffic gates, read by the embedded source: STRICT is held, ztunnel unread": {
			ns: Namespace{Ambient: true, AmbientWanted: true, Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS, State: State{Since: t0.Add(-time.Hour), Ambient: true}, Pods: readyPods(4), Workloads: sidecarless,
				Traffic: &traffic.Reading{Source: "the proxies' stats endpoints", ZtunnelUnread: true, Inbound: traffic.NewInbound(time.Minute)}},
			s:        func(s *Settings) { s.TrafficGates, s.ObserveTime = true, time.Minute },
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Blocked.Reason != meshv1.ReasonAmbientTrafficUnread {
					t.Errorf("step %+v, blocked %+v; want held with AmbientTrafficUnread", d.State.Step, d.Blocked)
				}
			},
		},
		"under the traffic gates, ztunnel read through Prometheus and clean: STRICT starts": {
			ns: Namespace{Ambient: true, AmbientWanted: true, Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS, State: State{Since: t0.Add(-time.Hour), Ambient: true}, Pods: readyPods(4), Workloads: sidecarless,
				Traffic: &traffic.Reading{Source: "Prometheus", Inbound: traffic.Inbound{ZtunnelReporting: true, Covered: time.Minute, Callers: map[traffic.Caller]float64{{Namespace: "shop", Workload: "web"}: 5}}}},
			s:        func(s *Settings) { s.TrafficGates, s.ZtunnelRead, s.ObserveTime = true, true, time.Minute },
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step == nil || d.State.Step.To != meshv1.LevelMutualTLS || len(d.Restart) > 0 {
					t.Errorf("step %+v, blocked %+v, restart %v; want STRICT started, nothing restarted", d.State.Step, d.Blocked, d.Restart)
				}
			},
		},
		"at ZeroTrust's dry-run end, a caller from outside allowFrom seen by ztunnel holds enforcement": {
			ns: Namespace{Ambient: true, AmbientWanted: true, Current: meshv1.LevelMutualTLS, Target: meshv1.LevelZeroTrust, Pods: readyPods(2), Workloads: sidecarless, AllowFrom: []string{"shop"},
				State: State{Since: t0.Add(-2 * time.Hour), Ambient: true, Step: &Step{To: meshv1.LevelZeroTrust, Started: t0.Add(-time.Hour), ID: "zerotrust-1"}},
				Traffic: &traffic.Reading{Source: "Prometheus", Inbound: traffic.Inbound{ZtunnelReporting: true, Covered: time.Hour,
					Callers: map[traffic.Caller]float64{{Namespace: "shop", Workload: "web"}: 5, {Namespace: "batch", Workload: "report"}: 2}}}},
			s:   func(s *Settings) { s.TrafficGates, s.ZtunnelRead, s.ObserveTime = true, true, time.Minute },
			now: t0,
			check: func(t *testing.T, d Decision) {
				if st := d.State.Step; st == nil || st.Enforced || d.Blocked.Reason != meshv1.ReasonWouldDenyTraffic || !strings.Contains(d.Blocked.Message, "batch/report") {
					t.Errorf("step %+v, blocked %+v; want the dry-run held, naming batch/report", st, d.Blocked)
				}
				if !d.Effects.DryRun || !d.Effects.Ambient {
					t.Errorf("effects %+v: want the policies in dry-run, in ambient mode", d.Effects)
				}
			},
		},
		"gated on pods only, STRICT starts with no restart": {
			ns:       Namespace{Ambient: true, AmbientWanted: true, Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS, State: State{Since: t0.Add(-time.Hour), Ambient: true}, Pods: readyPods(4), Workloads: sidecarless},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				noRestart(t, d)
				if d.State.Step == nil || d.State.Step.To != meshv1.LevelMutualTLS || !d.Effects.Strict || !d.Effects.Ambient {
					t.Errorf("step %+v, effects %+v", d.State.Step, d.Effects)
				}
			},
		},
		"STRICT completes without sidecars": {
			ns:  Namespace{Ambient: true, AmbientWanted: true, Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS, State: State{Step: strict, Ambient: true}, Pods: readyPods(4), Workloads: sidecarless},
			now: t0.Add(Settle),
			check: func(t *testing.T, d Decision) {
				if d.Level != meshv1.LevelMutualTLS || d.State.Step != nil {
					t.Errorf("decision = %+v", d)
				}
			},
		},
		"a pod left out of ambient mode holds STRICT": {
			ns: Namespace{Ambient: true, AmbientWanted: true, Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS, State: State{Since: t0.Add(-time.Hour), Ambient: true},
				Pods: Pods{Total: 2, Ready: 2, OutsideAmbient: []string{"host-agent"}}, Workloads: sidecarless},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Blocked.Reason != meshv1.ReasonPodsOutsideAmbient {
					t.Errorf("step %+v, blocked %+v", d.State.Step, d.Blocked)
				}
			},
		},
		"leaving the mesh takes the label off and restarts nothing": {
			ns:  Namespace{Ambient: true, AmbientWanted: true, Current: meshv1.LevelObserve, Target: meshv1.LevelOff, State: State{Step: down, Ambient: true}, Pods: readyPods(4), Workloads: sidecarless},
			now: t0.Add(time.Second),
			check: func(t *testing.T, d Decision) {
				noRestart(t, d)
				if d.Level != meshv1.LevelOff || d.State.Step != nil || d.Effects.Inject || d.State.Ambient {
					t.Errorf("decision = %+v, effects %+v: want Off at once, unlabelled, its record no longer ambient", d, d.Effects)
				}
			},
		},
		"in ambient mode, Sidecar asked: held, and a climb does not start": {
			ns: Namespace{Ambient: true, Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS, State: State{Since: t0.Add(-time.Hour), Ambient: true},
				Pods: readyPods(2), Workloads: sidecarless},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Blocked.Reason != meshv1.ReasonDataPlaneChangeUnsupported || !d.Effects.Ambient {
					t.Errorf("step %+v, blocked %+v, effects %+v", d.State.Step, d.Blocked, d.Effects)
				}
			},
		},
		"an upgrade moves no namespace in ambient mode (it carries no revision label)": {
			ns: Namespace{Ambient: true, AmbientWanted: true, Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, State: State{Since: t0.Add(-time.Hour), Ambient: true},
				Pods: readyPods(2), Workloads: sidecarless},
			s:        func(s *Settings) { s.Revision = "1-31-5" },
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.RevisionBehind || !d.AtTarget(meshv1.LevelMutualTLS) || d.Event != nil {
					t.Errorf("decision %+v: want it left at its target", d)
				}
			},
		},
		"in the mesh with its record lost, the planner's data plane is recorded": {
			ns:       Namespace{Ambient: true, AmbientWanted: true, Current: meshv1.LevelObserve, Target: meshv1.LevelObserve, Pods: readyPods(2), Workloads: sidecarless},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if !d.State.Ambient || !d.Effects.Ambient || len(d.Restart) > 0 {
					t.Errorf("record %+v, effects %+v, restart %v", d.State, d.Effects, d.Restart)
				}
			},
		},
		"on the other data plane, a lower target still walks it down": {
			ns: Namespace{Ambient: true, Current: meshv1.LevelObserve, Target: meshv1.LevelOff, State: State{Since: t0.Add(-time.Hour), Ambient: true},
				Pods: readyPods(2), Workloads: sidecarless},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step == nil || d.State.Step.To != meshv1.LevelOff {
					t.Errorf("step %+v, blocked %+v: want a step to Off", d.State.Step, d.Blocked)
				}
			},
		},
	})
}

// TestInAmbient: a namespace's data plane is its record's once it is in the mesh or stepping,
// and the spec's from Off.
func TestInAmbient(t *testing.T) {
	step := &Step{To: meshv1.LevelObserve, ID: "observe-1"}
	tests := map[string]struct {
		current      Level
		st           State
		wanted, want bool
	}{
		"off, ambient wanted":          {current: meshv1.LevelOff, wanted: true, want: true},
		"off, sidecars wanted":         {current: meshv1.LevelOff},
		"entering in ambient mode":     {current: meshv1.LevelOff, st: State{Step: step, Ambient: true}, want: true},
		"entering with sidecars":       {current: meshv1.LevelOff, st: State{Step: step}, wanted: true},
		"in the mesh with sidecars":    {current: meshv1.LevelMutualTLS, wanted: true},
		"in the mesh in ambient mode":  {current: meshv1.LevelMutualTLS, st: State{Ambient: true}, want: true},
		"a record from before ambient": {current: meshv1.LevelObserve, st: State{Revision: "1-31-5"}, wanted: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := InAmbient(tc.current, tc.st, tc.wanted); got != tc.want {
				t.Errorf("InAmbient = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestAmbientReadsTraffic: the controller reads the traffic of a namespace in ambient mode about
// to go STRICT, over the observe time, as it does with sidecars (ztunnel's series judge it).
func TestAmbientReadsTraffic(t *testing.T) {
	s := settings()
	s.TrafficGates, s.ObserveTime = true, time.Minute
	for _, ambient := range []bool{false, true} {
		ns := Namespace{Ambient: ambient, Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS, Pods: readyPods(2)}
		s.ZtunnelRead = true
		if w, read := TrafficWindow(ns, s); !read || w != time.Minute {
			t.Errorf("ambient %v: the climb to MutualTLS reads %s (%v), want the observe time", ambient, w, read)
		}
		// The embedded source reads no ztunnel: a namespace in ambient mode takes no read of its
		// budget (maxNamespacesInProgress), which would hold the namespaces it can read.
		s.ZtunnelRead = false
		if w, read := TrafficWindow(ns, s); read == ambient {
			t.Errorf("ambient %v, ztunnel not read: reads %s (%v)", ambient, w, read)
		}
	}
}
