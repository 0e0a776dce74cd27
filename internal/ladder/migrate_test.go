package ladder

import (
	"strings"
	"testing"
	"time"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

// TestMigrateToAmbient: a namespace in the mesh with sidecars whose spec asks for ambient mode
// migrates at its level, in Istio's order: the ambient label on and the injection label off in
// one write, then its workloads restart within the budget without the proxy; it completes once
// no pod runs the proxy and Istio CNI redirected every one, keeps its level's time, and is
// rolled back to sidecars (both labels until the rollback's restarts are done) when it times
// out or the spec changes back.
func TestMigrateToAmbient(t *testing.T) {
	since := t0.Add(-time.Hour)
	sidecars := []Workload{deploy("web", injected), deploy("api", injected)}
	migrating := &Step{To: meshv1.LevelMutualTLS, DataPlane: meshv1.DataPlaneAmbient, Started: t0, ID: "ambient-1"}
	restarted := func(w *Workload) { w.Uninjected, w.RestartedFor = true, "ambient-1" }
	back := &Step{To: meshv1.LevelMutualTLS, DataPlane: meshv1.DataPlaneSidecar, Rollback: true, Started: t0, ID: "mutualtls-2", Reason: meshv1.ReasonRolledBack}
	at := func(mod func(*Namespace)) Namespace {
		ns := Namespace{AmbientWanted: true, Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, State: State{Since: since},
			Pods: readyPods(4), Workloads: sidecars}
		if mod != nil {
			mod(&ns)
		}
		return ns
	}
	bothLabels := func(t *testing.T, e Effects) {
		t.Helper()
		if !e.Inject || !e.Ambient || !e.Sidecars || e.Revision != DefaultRevision {
			t.Errorf("effects %+v: want both labels, the injection one for the default revision", e)
		}
	}
	runDecideCases(t, map[string]decideCase{
		"starts at its level: ambient label on, injection label off, restarts within the budget": {
			ns: at(nil), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				st := d.State.Step
				if st == nil || st.DataPlane != meshv1.DataPlaneAmbient || st.To != meshv1.LevelMutualTLS || st.Kind(d.Level) != KindMigrate {
					t.Fatalf("step %+v, blocked %+v: want a migration at MutualTLS", st, d.Blocked)
				}
				if e := d.Effects; !e.Inject || !e.Ambient || e.Sidecars || !e.Strict {
					t.Errorf("effects %+v: want the ambient label alone, STRICT kept", e)
				}
				if len(d.Restart) != 1 || d.Event == nil || d.Event.Reason != "DataPlaneMigrationStarted" {
					t.Errorf("restart %v, event %+v: want one workload (25%% of 4 pods, one at a time) and the start told", d.Restart, d.Event)
				}
				if d.AtTarget(meshv1.LevelMutualTLS) || !d.InProgress {
					t.Error("a migrating namespace reads as at its target, or not in progress")
				}
			},
		},
		"waits for a free slot": {
			ns: at(nil), now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || !strings.Contains(d.Waiting, "free slot") || d.Effects.Ambient {
					t.Errorf("step %+v, waiting %q, effects %+v", d.State.Step, d.Waiting, d.Effects)
				}
			},
		},
		"held by unready pods": {
			ns: at(func(ns *Namespace) { ns.Pods = Pods{Total: 2, Ready: 1, NotReady: []string{"web-1"}} }), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Blocked.Reason != meshv1.ReasonPodsNotReady {
					t.Errorf("step %+v, blocked %+v", d.State.Step, d.Blocked)
				}
			},
		},
		"held by a workload asking for the proxy": {
			ns: at(func(ns *Namespace) {
				ns.Workloads = []Workload{deploy("web", injected), deploy("pinned", func(w *Workload) { w.Injected, w.SidecarRequested = true, true })}
			}), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Blocked.Reason != meshv1.ReasonSidecarsRequested || !strings.Contains(d.Blocked.Message, "Deployment/pinned") {
					t.Errorf("step %+v, blocked %+v", d.State.Step, d.Blocked)
				}
			},
		},
		"held at MutualTLS by a workload opting out of ambient mode": {
			ns: at(func(ns *Namespace) {
				ns.Workloads = []Workload{deploy("web", func(w *Workload) { w.Injected, w.AmbientExcluded = true, true })}
			}), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Blocked.Reason != meshv1.ReasonPodsOutsideAmbient {
					t.Errorf("step %+v, blocked %+v", d.State.Step, d.Blocked)
				}
			},
		},
		"not held at Observe by a workload opting out of ambient mode": {
			ns: at(func(ns *Namespace) {
				ns.Current, ns.Target = meshv1.LevelObserve, meshv1.LevelObserve
				ns.Workloads = []Workload{deploy("web", func(w *Workload) { w.Injected, w.AmbientExcluded = true, true })}
			}), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step == nil || d.State.Step.DataPlane != meshv1.DataPlaneAmbient {
					t.Errorf("step %+v, blocked %+v: want the migration", d.State.Step, d.Blocked)
				}
			},
		},
		"before a move between revisions": {
			ns: at(nil), mayStart: true, now: t0, s: func(s *Settings) { s.Revision = "1-32-0" },
			check: func(t *testing.T, d Decision) {
				if st := d.State.Step; st == nil || st.DataPlane != meshv1.DataPlaneAmbient || st.Revision != "" {
					t.Errorf("step %+v: want the migration, not a move", st)
				}
			},
		},
		"held, and behind the active revision: moves between revisions meanwhile": {
			ns: at(func(ns *Namespace) { ns.Pods.Proxyless = []string{"grpc-1"} }), mayStart: true, now: t0,
			s: func(s *Settings) { s.Revision = "1-32-0" },
			check: func(t *testing.T, d Decision) {
				if st := d.State.Step; st == nil || st.Kind(d.Level) != KindMove || st.Revision != "1-32-0" {
					t.Errorf("step %+v, blocked %+v: want the move to 1-32-0, the migration held", st, d.Blocked)
				}
				ns := at(func(ns *Namespace) { ns.Pods.Proxyless = []string{"grpc-1"} })
				if s := (Settings{Revision: "1-32-0", Generation: 3}); !MovesNext(ns, s) {
					t.Error("MovesNext does not predict the move: its pods' admission would not be checked")
				}
				if s := (Settings{Revision: "1-32-0", Generation: 3}); MovesNext(at(nil), s) {
					t.Error("MovesNext predicts a move for a namespace that migrates first")
				}
			},
		},
		"a held namespace stays held": {
			ns: at(func(ns *Namespace) {
				ns.State.Hold = &Hold{Generation: 3, Reason: meshv1.ReasonRolledBack, Message: "reverted"}
			}), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Blocked.Reason != meshv1.ReasonRolledBack {
					t.Errorf("step %+v, blocked %+v", d.State.Step, d.Blocked)
				}
			},
		},
		"waits for the pods with the proxy to restart": {
			ns: at(func(ns *Namespace) {
				ns.State.Step = migrating
				ns.Workloads = []Workload{deploy("web", restarted), deploy("api", injected)}
				ns.Pods = Pods{Total: 4, Ready: 4, Uninjected: []string{"web-1", "web-2"}}
			}), mayStart: true, now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.State.Step == nil || !strings.Contains(d.Waiting, "Deployment/api has pods to restart") || !strings.Contains(d.Waiting, "2 pod(s) still run Istio's proxy") {
					t.Errorf("step %+v, waiting %q", d.State.Step, d.Waiting)
				}
				if len(d.Restart) != 1 || d.Restart[0] != "Deployment/api" {
					t.Errorf("restart %v, want Deployment/api", d.Restart)
				}
			},
		},
		"waits for Istio CNI to redirect the restarted pods": {
			ns: at(func(ns *Namespace) {
				ns.State.Step = migrating
				ns.Workloads = []Workload{deploy("web", restarted), deploy("api", restarted)}
				ns.Pods = Pods{Total: 2, Ready: 2, Uninjected: []string{"api-1", "web-1"}, Uncaptured: []string{"web-1"}}
			}), now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.State.Step == nil || !strings.Contains(d.Waiting, "not redirected to ztunnel: web-1") {
					t.Errorf("step %+v, waiting %q", d.State.Step, d.Waiting)
				}
			},
		},
		"waits for a workload restarted only by hand": {
			ns: at(func(ns *Namespace) {
				ns.State.Step = migrating
				ns.Workloads = []Workload{deploy("web", func(w *Workload) { w.Injected, w.ManualRestart = true, "paused" })}
			}), now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if len(d.Restart) > 0 || !strings.Contains(d.Waiting, "Deployment/web has proxies to restart by hand (paused)") {
					t.Errorf("restart %v, waiting %q", d.Restart, d.Waiting)
				}
			},
		},
		"completes in ambient mode, keeping the level's time": {
			ns: at(func(ns *Namespace) {
				ns.State.Step = migrating
				ns.Workloads = []Workload{deploy("web", restarted), deploy("api", restarted)}
				ns.Pods = Pods{Total: 2, Ready: 2, Uninjected: []string{"api-1", "web-1"}}
			}), now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || !d.State.Ambient || d.State.Revision != "" || !d.State.Since.Equal(since) || d.Level != meshv1.LevelMutualTLS {
					t.Errorf("state %+v, level %s: want ambient mode at MutualTLS since before", d.State, d.Level)
				}
				if e := d.Effects; !e.Ambient || e.Sidecars || !e.Strict {
					t.Errorf("effects %+v: want the ambient label alone", e)
				}
				if d.Event == nil || d.Event.Reason != "DataPlaneMigrated" || !d.AtTarget(meshv1.LevelMutualTLS) {
					t.Errorf("event %+v, at target %v", d.Event, d.AtTarget(meshv1.LevelMutualTLS))
				}
			},
		},
		"starts beside an Istio gateway (its pods ask for the proxy, opt out of ambient mode), not restarting it": {
			ns: at(func(ns *Namespace) {
				ns.Workloads = []Workload{deploy("web", injected), deploy("waypoint", istioGateway)}
			}), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if st := d.State.Step; st == nil || st.DataPlane != meshv1.DataPlaneAmbient {
					t.Fatalf("step %+v, blocked %+v: want the migration started", st, d.Blocked)
				}
				if len(d.Restart) != 1 || d.Restart[0] != "Deployment/web" {
					t.Errorf("restart %v, want web alone: istiod gives the gateway's pods the proxy whatever the labels", d.Restart)
				}
			},
		},
		"starts beside a gateway of Istio's gateway chart (its pods ask for the proxy and the gateway template), not restarting it": {
			ns: at(func(ns *Namespace) {
				ns.Workloads = []Workload{deploy("web", injected), deploy("ingress", chartGateway)}
			}), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if st := d.State.Step; st == nil || st.DataPlane != meshv1.DataPlaneAmbient {
					t.Fatalf("step %+v, blocked %+v: want the migration started", st, d.Blocked)
				}
				if len(d.Restart) != 1 || d.Restart[0] != "Deployment/web" {
					t.Errorf("restart %v, want web alone: the gateway keeps its proxy in ambient mode", d.Restart)
				}
			},
		},
		"completes with a gateway of Istio's gateway chart still on its proxy": {
			ns: at(func(ns *Namespace) {
				ns.State.Step = migrating
				ns.Workloads = []Workload{deploy("web", restarted), deploy("ingress", chartGateway)}
				ns.Pods = Pods{Total: 2, Ready: 2, Uninjected: []string{"web-1"}}
			}), now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || !d.State.Ambient || d.Event == nil || d.Event.Reason != "DataPlaneMigrated" {
					t.Errorf("state %+v, event %+v, waiting %q: want the migration done", d.State, d.Event, d.Waiting)
				}
			},
		},
		"completes with an Istio gateway's pod still on Istio's proxy": {
			ns: at(func(ns *Namespace) {
				ns.State.Step = migrating
				ns.Workloads = []Workload{deploy("web", restarted), deploy("waypoint", istioGateway)}
				ns.Pods = Pods{Total: 2, Ready: 2, Uninjected: []string{"web-1"}}
			}), now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || !d.State.Ambient || d.Event == nil || d.Event.Reason != "DataPlaneMigrated" {
					t.Errorf("state %+v, event %+v, waiting %q: want the migration done", d.State, d.Event, d.Waiting)
				}
			},
		},
		"times out into a rollback that keeps both labels and restarts the pods without the proxy": {
			ns: at(func(ns *Namespace) {
				ns.State.Step = migrating
				ns.Workloads = []Workload{deploy("web", restarted), deploy("api", restarted)}
				ns.Pods = Pods{Total: 2, Ready: 1, NotReady: []string{"web-1"}, Uninjected: []string{"api-1", "web-1"}}
			}), now: t0.Add(10 * time.Minute),
			check: func(t *testing.T, d Decision) {
				st := d.State.Step
				if st == nil || !st.Rollback || st.DataPlane != meshv1.DataPlaneSidecar || d.Event == nil || d.Event.Reason != meshv1.ReasonRolledBack {
					t.Fatalf("step %+v, event %+v: want the rollback to sidecars", st, d.Event)
				}
				if !strings.Contains(st.Message, "migration from sidecars to ambient mode") {
					t.Errorf("message %q", st.Message)
				}
				bothLabels(t, d.Effects)
				if len(d.Restart) == 0 {
					t.Error("the rollback restarts nothing")
				}
			},
		},
		"the rollback ends on sidecars, held, once its restarts are done": {
			ns: at(func(ns *Namespace) {
				ns.State.Step = back
				ns.Workloads = []Workload{deploy("web", injected), deploy("api", injected)}
			}), now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.State.Ambient || d.State.Hold == nil || d.State.Revision != "" {
					t.Errorf("state %+v: want sidecars on the default revision, held", d.State)
				}
				if e := d.Effects; e.Ambient || !e.Sidecars {
					t.Errorf("effects %+v: want the injection label alone", e)
				}
			},
		},
		"the rollback waits for its restarts with both labels": {
			ns: at(func(ns *Namespace) {
				ns.State.Step = back
				ns.Workloads = []Workload{deploy("web", func(w *Workload) { w.Uninjected, w.Injected = true, true })}
			}), now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.State.Step == nil || d.Waiting == "" {
					t.Errorf("step %+v, waiting %q", d.State.Step, d.Waiting)
				}
				bothLabels(t, d.Effects)
			},
		},
		"the rollback does not end, past its timeout, while pods lack the proxy": {
			ns: at(func(ns *Namespace) {
				ns.State.Step = back
				ns.Workloads = []Workload{deploy("web", injected), deploy("db", func(w *Workload) { w.Uninjected, w.ManualRestart = true, "updateStrategy OnDelete" })}
				ns.Pods = Pods{Total: 3, Ready: 3, Uninjected: []string{"db-0"}, Unproxied: []string{"db-0"}, Unmanaged: []string{"db-0 (StatefulSet db: updateStrategy OnDelete)"}}
			}), now: t0.Add(time.Hour),
			check: func(t *testing.T, d Decision) {
				if d.State.Step == nil || d.Blocked.Reason != meshv1.ReasonAmbientRollbackIncomplete || !strings.Contains(d.Blocked.Message, "db-0") {
					t.Fatalf("step %+v, blocked %+v: want the rollback held, naming db-0", d.State.Step, d.Blocked)
				}
				bothLabels(t, d.Effects)
			},
		},
		"a lost record with the ambient label and pods without the proxy: rolled back to sidecars": {
			ns: at(func(ns *Namespace) {
				ns.AmbientLabelled = true
				ns.Workloads = []Workload{deploy("web", func(w *Workload) { w.Uninjected = true })}
				ns.Pods = Pods{Total: 2, Ready: 1, NotReady: []string{"web-2"}, Uninjected: []string{"web-1", "web-2"}, Unproxied: []string{"web-1", "web-2"}}
			}), now: t0,
			check: func(t *testing.T, d Decision) {
				st := d.State.Step
				if st == nil || !st.Rollback || !st.Cancelled || st.DataPlane != meshv1.DataPlaneSidecar {
					t.Fatalf("step %+v, blocked %+v: want a cancelled migration rollback, with no free slot even", st, d.Blocked)
				}
				bothLabels(t, d.Effects)
				if len(d.Restart) != 1 {
					t.Errorf("restart %v, want web", d.Restart)
				}
			},
		},
		"the ambient label on a namespace whose pods all have the proxy: left to whoever set it": {
			ns: at(func(ns *Namespace) { ns.AmbientLabelled, ns.AmbientWanted = true, false }), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Effects.Ambient || !d.Effects.Sidecars {
					t.Errorf("step %+v, effects %+v", d.State.Step, d.Effects)
				}
			},
		},
		"held by pods with the proxy that no step restarts": {
			ns: at(func(ns *Namespace) { ns.Pods.StuckSidecars = []string{"debug (no controller)"} }), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Blocked.Reason != meshv1.ReasonPodsNotMigratable || !strings.Contains(d.Blocked.Message, "debug (no controller)") {
					t.Errorf("step %+v, blocked %+v", d.State.Step, d.Blocked)
				}
			},
		},
		"held by proxyless gRPC pods": {
			ns: at(func(ns *Namespace) { ns.Pods.Proxyless = []string{"grpc-1"} }), mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Blocked.Reason != meshv1.ReasonPodsNotMigratable || !strings.Contains(d.Blocked.Message, "proxyless gRPC") {
					t.Errorf("step %+v, blocked %+v", d.State.Step, d.Blocked)
				}
			},
		},
		"a Job's pods finish with their proxy: not waited for": {
			ns: at(func(ns *Namespace) {
				ns.State.Step = migrating
				ns.Workloads = []Workload{deploy("web", restarted), {Kind: "Job", Name: "report", RunsToCompletion: true, Injected: true, Pods: 1}}
				ns.Pods = Pods{Total: 3, Ready: 3, Uninjected: []string{"web-1", "web-2"}}
			}), now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Event == nil || d.Event.Reason != "DataPlaneMigrated" {
					t.Errorf("step %+v, waiting %q, event %+v", d.State.Step, d.Waiting, d.Event)
				}
			},
		},
		"cancelled when the spec asks for sidecars again": {
			ns: at(func(ns *Namespace) {
				ns.AmbientWanted = false
				ns.State.Step = migrating
			}), now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				st := d.State.Step
				if st == nil || !st.Rollback || !st.Cancelled || st.DataPlane != meshv1.DataPlaneSidecar || d.Event.Reason != "DataPlaneMigrationCancelled" {
					t.Fatalf("step %+v, event %+v", st, d.Event)
				}
				bothLabels(t, d.Effects)
			},
		},
		"paused: both labels stay as they are": {
			ns: at(func(ns *Namespace) { ns.State.Step = migrating }), now: t0.Add(time.Minute),
			s: func(s *Settings) { s.Paused = true },
			check: func(t *testing.T, d Decision) {
				if d.State.Step == nil || d.State.Step.PausedAt.IsZero() || !d.Effects.Ambient || d.Effects.Sidecars || len(d.Restart) > 0 {
					t.Errorf("step %+v, effects %+v, restart %v", d.State.Step, d.Effects, d.Restart)
				}
			},
		},
		"in ambient mode, Sidecar asked: not migrated back": {
			ns:       Namespace{Ambient: true, Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, State: State{Since: since, Ambient: true}, Pods: readyPods(2)},
			mayStart: true, now: t0,
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Blocked.Reason != meshv1.ReasonDataPlaneChangeUnsupported || !d.Effects.Ambient || d.Effects.Sidecars {
					t.Errorf("step %+v, blocked %+v, effects %+v", d.State.Step, d.Blocked, d.Effects)
				}
			},
		},
	})
}

// TestMigrationRecords: a record of a migration, or of its rollback, is the operator's only in
// the shape it writes; anything else is forgotten, and the namespace goes on from its label.
func TestMigrationRecords(t *testing.T) {
	tests := map[string]struct {
		step Step
		want bool
	}{
		"a migration to ambient mode":       {Step{To: meshv1.LevelObserve, DataPlane: meshv1.DataPlaneAmbient, ID: "a"}, true},
		"its rollback":                      {Step{To: meshv1.LevelObserve, DataPlane: meshv1.DataPlaneSidecar, Rollback: true, ID: "a"}, true},
		"a migration to sidecars":           {Step{To: meshv1.LevelObserve, DataPlane: meshv1.DataPlaneSidecar, ID: "a"}, false},
		"a migration naming a revision":     {Step{To: meshv1.LevelObserve, DataPlane: meshv1.DataPlaneAmbient, Revision: "x", ID: "a"}, false},
		"a climb with a data plane":         {Step{To: meshv1.LevelMutualTLS, DataPlane: meshv1.DataPlaneAmbient, ID: "a"}, false},
		"a rollback to ambient mode":        {Step{To: meshv1.LevelObserve, DataPlane: meshv1.DataPlaneAmbient, Rollback: true, ID: "a"}, false},
		"a data plane no one knows":         {Step{To: meshv1.LevelObserve, DataPlane: "Proxyless", ID: "a"}, false},
		"a migration of a namespace at Off": {Step{To: meshv1.LevelOff, DataPlane: meshv1.DataPlaneAmbient, ID: "a"}, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			current := tc.step.To
			if current == meshv1.LevelMutualTLS {
				current = meshv1.LevelObserve
			}
			if got := wellFormed(tc.step, current); got != tc.want {
				t.Errorf("wellFormed = %v, want %v", got, tc.want)
			}
		})
	}
}

// istioGateway is what istiod deploys for a Gateway API Gateway (a waypoint, an ingress
// gateway): its pods carry Istio's proxy, ask the injector for it, and opt out of ambient mode.
func istioGateway(w *Workload) {
	w.Gateway, w.Injected, w.SidecarRequested, w.AmbientExcluded, w.Pods = true, true, true, true, 1
}

// chartGateway is a gateway of Istio's gateway Helm chart: its pod template asks for the proxy
// (sidecar.istio.io/inject=true) with the gateway template.
func chartGateway(w *Workload) {
	w.GatewayTemplate, w.Injected, w.SidecarRequested, w.Pods = true, true, true, 1
}

// TestChartGatewayFollowsRevisions: a gateway of Istio's gateway chart is restarted by a move
// between revisions (its injection follows the namespace's revision), not by a step off the proxy.
func TestChartGatewayFollowsRevisions(t *testing.T) {
	gw := deploy("ingress", chartGateway)
	if !skipsGateway(gw, false, &Step{To: meshv1.LevelOff}) {
		t.Error("a step off the proxy restarts or waits for a gateway of Istio's gateway chart, which keeps its proxy")
	}
	if skipsGateway(gw, true, &Step{To: meshv1.LevelMutualTLS, From: "rev-a", Revision: "rev-b"}) {
		t.Error("a move between revisions skips a gateway of Istio's gateway chart, which would stay on the old revision")
	}
}

// TestIstioGatewayNotRestarted: a step that takes a sidecar namespace's pods off the proxy (out
// of the mesh) neither restarts nor waits for an Istio gateway in it, whose pods keep the proxy;
// a root rotation's refresh does restart it.
func TestIstioGatewayNotRestarted(t *testing.T) {
	down := &Step{To: meshv1.LevelOff, Started: t0, ID: "off-1"}
	runDecideCases(t, map[string]decideCase{
		"leaving the mesh: done once the application's pods are off the proxy": {
			ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelOff, State: State{Since: t0.Add(-time.Hour), Step: down},
				Pods:      Pods{Total: 2, Ready: 2, Uninjected: []string{"web-1"}},
				Workloads: []Workload{deploy("web", func(w *Workload) { w.Uninjected, w.RestartedFor, w.Pods = true, "off-1", 1 }), deploy("gateway", istioGateway)}},
			now: t0.Add(time.Minute),
			check: func(t *testing.T, d Decision) {
				if d.State.Step != nil || d.Level != meshv1.LevelOff || len(d.Restart) != 0 {
					t.Errorf("step %+v, level %s, restart %v, waiting %q: want Off, the gateway left as it is", d.State.Step, d.Level, d.Restart, d.Waiting)
				}
			},
		},
	})
	if !skipsGateway(deploy("gateway", istioGateway), false, down) || skipsGateway(deploy("gateway", istioGateway), true, &Step{To: meshv1.LevelObserve, Refresh: true}) {
		t.Error("a gateway must be skipped by a step off the proxy and restarted by a refresh")
	}
}
