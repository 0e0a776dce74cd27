package ladder

import (
	"fmt"
	"strings"
	"time"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/names"
)

// AmbientMigrationGates must pass, in order, before a namespace in the mesh with sidecars
// migrates to ambient mode at its level (the spec asks for Ambient). They are the rung gates
// that mean something for a change that keeps the level: the injection label is the operator's
// to take off, every pod is Ready so that the migration can be judged, and every workload's pods
// will be ztunnel's once restarted without the proxy. A new check is one entry here.
var AmbientMigrationGates = []Gate{injectionOwned, podsReady, sidecarsNotRequested, podsMigratable, workloadsStayInAmbient, waypointReady}

var (
	// sidecarsNotRequested holds a migration while a workload's pod template asks Istio's
	// injector for the proxy itself (sidecar.istio.io/inject=true, or an istio.io/rev label):
	// its pods would come back with one, and the migration would never end.
	sidecarsNotRequested = Gate{Name: "SidecarsNotRequested", Check: func(c Climb) *Verdict {
		asking := workloadsWhere(c.NS, func(w Workload) bool { return w.SidecarRequested && !isGateway(w) })
		if len(asking) == 0 {
			return nil
		}
		return &Verdict{Blocked: Blocked{Reason: meshv1.ReasonSidecarsRequested, Message: fmt.Sprintf(
			"%d workload(s) ask Istio's injector for the proxy in their pod template (the label sidecar.istio.io/inject=true, or istio.io/rev): %s. Restarted for ambient mode, their pods would come back with it, so the migration from sidecars waits. Remove the label from their pod templates, or keep the namespace on sidecars (dataPlaneMode: Sidecar in its rule).",
			len(asking), names.List(asking))}}
	}}
	// podsMigratable holds a migration that could not take every pod off the proxy, or would
	// break the pods it restarts: pods with the proxy that no step restarts (a bare pod, a
	// workload restarted only by hand), which would keep it and time the migration out into a
	// rollback after restarting everything else twice; and proxyless gRPC pods, whose
	// application takes its configuration from the agent the injector gives them, and would
	// come back without it.
	podsMigratable = Gate{Name: "PodsMigratable", Check: func(c Climb) *Verdict {
		var parts []string
		if stuck := c.NS.Pods.StuckSidecars; len(stuck) > 0 {
			parts = append(parts, fmt.Sprintf("%d pod(s) run Istio's proxy and no step restarts them: %s. Resume a paused Deployment, or switch an OnDelete or partitioned workload to a rolling update, for the migration; recreate a bare pod after it", len(stuck), names.List(stuck)))
		}
		if grpc := c.NS.Pods.Proxyless; len(grpc) > 0 {
			parts = append(parts, fmt.Sprintf("%d pod(s) run Istio's proxyless gRPC (template grpc-agent): %s. Their application reads its xDS bootstrap from the agent, which ambient mode does not give them; keep the namespace on sidecars (dataPlaneMode: Sidecar in its rule)", len(grpc), names.List(grpc)))
		}
		if len(parts) == 0 {
			return nil
		}
		return &Verdict{Blocked: Blocked{Reason: meshv1.ReasonPodsNotMigratable, Message: "The migration from sidecars to ambient mode waits: " + strings.Join(parts, "; ") + "."}}
	}}
	// workloadsStayInAmbient holds, at a level with STRICT mTLS, a migration that would restart
	// pods out of the mesh: a template labelled istio.io/dataplane-mode=none keeps its pods out
	// of ambient mode, and without the proxy nothing carries their traffic, which STRICT refuses.
	workloadsStayInAmbient = Gate{Name: "WorkloadsStayInAmbient", Check: func(c Climb) *Verdict {
		if !rungOf(c.From).Carries.Strict {
			return nil
		}
		out := workloadsWhere(c.NS, func(w Workload) bool { return w.AmbientExcluded && !isGateway(w) })
		if len(out) == 0 {
			return nil
		}
		return &Verdict{Blocked: Blocked{Reason: meshv1.ReasonPodsOutsideAmbient, Message: fmt.Sprintf(
			"%d workload(s) label their pod template istio.io/dataplane-mode=none: %s. Restarted without the proxy they would be outside ambient mode, and STRICT mTLS would cut them off, so the migration from sidecars waits. Remove the label, or keep the namespace on sidecars (dataPlaneMode: Sidecar in its rule).",
			len(out), names.List(out))}}
	}}
)

// isGateway tells a gateway of Istio's, whether istiod deployed it for a Gateway API Gateway or
// Istio's gateway chart did: an Envoy of its own, which keeps it in ambient mode.
func isGateway(w Workload) bool { return w.Gateway || w.GatewayTemplate }

// workloadsWhere names the workloads ("Kind/name") for which is holds.
func workloadsWhere(ns Namespace, is func(Workload) bool) []string {
	var out []string
	for _, w := range ns.Workloads {
		if is(w) {
			out = append(out, w.Kind+"/"+w.Name)
		}
	}
	return out
}

// startMigration begins moving a namespace in the mesh with sidecars onto ambient mode at its
// level, in the order Istio documents for it (ambient/migrate): the ambient label on, the
// injection label off, then the workloads restarted, within the same budget as a step, so that
// their pods come back without the proxy and Istio CNI hands their traffic to ztunnel. The two
// labels change in one write of the namespace (see dataPlaneEffects): no pod is created between
// them, so none runs without the proxy while the namespace lacks the ambient label. The
// migration completes once no pod runs the proxy and every pod is Ready and redirected; one
// that times out is rolled back to sidecars.
func startMigration(d *Decision, ns Namespace, s Settings, mayStart bool, now time.Time) {
	if v := migrationHeld(d.Level, d.State, ns, s, now); v != nil {
		d.apply(v)
		return
	}
	if !mayStart {
		d.Waiting = "waiting for a free slot to move from sidecars to ambient mode (spec.rollout.maxNamespacesInProgress)"
		return
	}
	d.State.Step = &Step{To: d.Level, DataPlane: meshv1.DataPlaneAmbient, Started: now, ID: fmt.Sprintf("ambient-%d", now.UnixMilli())}
	d.InProgress = true
	d.Event = &Event{Reason: "DataPlaneMigrationStarted", Message: fmt.Sprintf(
		"Moving from sidecars to ambient mode at %s: the namespace is labelled %s=%s and loses its injection label, then its workloads restart without Istio's proxy.",
		d.Level, "istio.io/dataplane-mode", "ambient")}
	planRestarts(d, ns, s)
}

// migrationHeld runs AmbientMigrationGates for a namespace at level: the first verdict that holds
// the migration, or nil.
func migrationHeld(level Level, st State, ns Namespace, s Settings, now time.Time) *Verdict {
	c := Climb{NS: ns, State: st, Settings: s, From: level, To: level, Now: now}
	for _, g := range AmbientMigrationGates {
		if v := g.Check(c); v != nil {
			return v
		}
	}
	return nil
}

// migratesNext reports a namespace with sidecars, in the mesh with no step, whose spec asks for
// ambient mode and whose migration passes its gates: it migrates before anything else. One whose
// migration is held moves between revisions meanwhile, so that an upgrade is not held by it.
func migratesNext(d Decision, ns Namespace, s Settings, now time.Time) bool {
	return otherDataPlane(d, ns) && ns.AmbientWanted && (!behind(d.Level, d.State, s) || migrationHeld(d.Level, d.State, ns, s, now) == nil)
}

// dataPlaneEffects says which of the data planes' labels a namespace in the mesh carries: the
// ambient label in ambient mode, the injection label with sidecars. A migration carries both
// labels or the ambient one alone, never the injection label alone: moving onto ambient mode,
// the injection label goes as the ambient label comes, in one write; moving back (its
// rollback), the injection label returns first and the ambient label stays until the step
// ends, so a pod without the proxy is never outside both data planes (Istio's order).
func dataPlaneEffects(e Effects, ambient bool, step *Step) Effects {
	switch {
	case !e.Inject:
		e.Ambient, e.Sidecars = false, false
	case step != nil && step.DataPlane != "":
		e.Ambient, e.Sidecars = true, step.DataPlane == meshv1.DataPlaneSidecar
	default:
		e.Ambient, e.Sidecars = ambient, !ambient
	}
	return e
}

// sidecarsLeft counts the running pods with Istio's proxy that a migration to ambient mode still
// waits for: all of them but those of CronJobs and Jobs, which finish with theirs (their next
// pods come without it), and those of Istio's gateways and waypoints, which keep theirs.
func sidecarsLeft(ns Namespace) int {
	n := ns.Pods.Total - len(ns.Pods.Uninjected)
	for _, w := range ns.Workloads {
		if (w.RunsToCompletion || isGateway(w)) && w.Injected {
			n -= w.Pods
		}
	}
	return max(n, 0)
}

// unproxiedPending says which pods a migration's rollback waits for: those still without the
// proxy that the injector would give one.
func unproxiedPending(p Pods) string {
	return fmt.Sprintf("%d pod(s) still run without Istio's proxy: %s", len(p.Unproxied), names.List(p.Unproxied))
}
