package ladder

import (
	"fmt"
	"slices"
	"time"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/names"
	"github.com/meshwright/meshwright/internal/traffic"
)

// TrafficPoll is how often a namespace whose traffic a gate watches is looked at again: the
// embedded telemetry source sees a window only through its own reads, and a caller that stops
// should let the step go on soon after its calls leave the window.
const TrafficPoll = 30 * time.Second

// maxCallers bounds the callers a message names.
const maxCallers = 5

// noPlaintextCallers holds a namespace at Observe for the observe time and lets it go STRICT
// only when its proxies received no plaintext call over that window. A source that cannot be
// read, or shows no series of the namespace, holds it too: "cannot see" is never "clean".
var noPlaintextCallers = Gate{Name: "NoPlaintextCallers", Traffic: true, Check: func(c Climb) *Verdict {
	if !c.Settings.TrafficGates || c.NS.Pods.Total == 0 {
		// Skipped, or no pod that STRICT could cut off from its callers.
		return nil
	}
	if unobservable(c.NS) {
		// Nothing to watch. Their plaintext callers are ProxylessMTLS's to hold: with
		// tlsMode=istio the pods refuse plaintext already, and STRICT changes nothing for them.
		return nil
	}
	held := c.Now.Sub(c.State.Since)
	if held < c.Settings.ObserveTime {
		return &Verdict{
			Waiting:      fmt.Sprintf("watching its inbound traffic at %s until %s (spec.rollout.observeTime)", c.From, c.State.Since.Add(c.Settings.ObserveTime).UTC().Format(time.RFC3339)),
			RecheckAfter: min(c.Settings.ObserveTime-held, TrafficPoll),
		}
	}
	r := c.NS.Traffic
	if v := readable(r, c, c.Settings.ObserveTime, "STRICT mTLS would refuse no caller"); v != nil {
		return v
	}
	if v := partial(r, c.Settings.ObserveTime, "watching its inbound traffic", "window"); v != nil {
		return v
	}
	plaintext := judged(r.Plaintext, c.NS)
	if len(plaintext) == 0 {
		return nil
	}
	top := traffic.Top(plaintext, maxCallers)
	return &Verdict{RecheckAfter: TrafficPoll, Blocked: Blocked{Reason: meshv1.ReasonPlaintextTraffic, Message: fmt.Sprintf(
		"%d caller(s) reached the namespace in plaintext in the last %s (%s): %s. STRICT mTLS would refuse them, so the namespace stays at %s until none has called in plaintext for %s.",
		len(plaintext), c.Settings.ObserveTime, r.Source, traffic.Describe(top, plaintextAdvice), c.From, c.Settings.ObserveTime)}}
}}

// TrafficWindow says whether a namespace's traffic is judged in this pass, and over what window,
// so that the controller reads telemetry for it: its next climb passes a traffic gate (the
// observe time), its ZeroTrust policies run, or are about to run, in dry-run (the soak time), it
// climbs onto a rung whose change bakes (the bake time),
// or its next step down takes it out of the mesh (the observe time: whom it calls). Nothing is read when
// the traffic gates are skipped, a namespace is held, it stands at its target, its proxies
// are all proxyless gRPC (they report nothing: see unobservable).
func TrafficWindow(ns Namespace, s Settings) (time.Duration, bool) {
	current := ns.Current
	if !Valid(current) {
		current = meshv1.LevelOff
	}
	held := ns.State.Hold != nil && ns.State.Hold.Generation == s.Generation
	if !s.TrafficGates || held || onlyProxyless(ns.Pods) || ns.Ambient && !s.ZtunnelRead {
		return 0, false
	}
	if want := resilienceWanted(ns, current); s.BakeTime > 0 && want != nil && Rank(ns.Target) >= Rank(current) {
		// Applying resilience defaults: read for the baseline before, and through the bake.
		st := ns.State.Step
		if st == nil && !sameValues(ns.State.Resilience, want) || st != nil && st.Kind(current) == KindDefaults {
			return s.BakeTime, true
		}
	}
	if Rank(ns.Target) == Rank(current) {
		return 0, false
	}
	if st := ns.State.Step; st != nil {
		switch {
		case st.Kind(current) == KindClimb && rungOf(st.To).DryRunFirst && !st.Enforced:
			return dryRunTime(s), true
		case st.Kind(current) == KindClimb && len(rungFor(ns, st.To).Bake) > 0 && s.BakeTime > 0:
			// Read from the change's first moments, not only once the bake began: the
			// embedded source measures growth from its own reads, and a bake it first read at
			// its end would see nothing of it.
			return s.BakeTime, true
		}
		return 0, false
	}
	if Rank(ns.Target) < Rank(current) {
		if leavesMesh(current) {
			return s.ObserveTime, true
		}
		return 0, false
	}
	next := rungFor(ns, levelAbove(current))
	if slices.ContainsFunc(next.Gates, func(g Gate) bool { return g.Traffic }) {
		return s.ObserveTime, true
	}
	if next.DryRunFirst {
		// Read before the dry-run starts too: the embedded source then has a read from the
		// dry-run's first moment, and sees the whole soak when it ends.
		return dryRunTime(s), true
	}
	return 0, false
}

// wouldDeny holds a dry-run from being enforced while it shows callers enforcing would refuse:
// requests the dry-run policies would have denied, or callers from namespaces outside the
// namespace's allowFrom, over the whole dry-run. A reading that cannot be judged holds it too.
func wouldDeny(ns Namespace, s Settings, step Step, now time.Time) *Verdict {
	if !s.TrafficGates || ns.Pods.Total == 0 {
		return nil
	}
	c := Climb{NS: ns, Settings: s, To: step.To, Now: now}
	r := ns.Traffic
	window := dryRunTime(s)
	if v := readable(r, c, window, "enforcing the AuthorizationPolicies would deny no caller"); v != nil {
		return v
	}
	if v := partial(r, window, "reading its traffic during the dry-run", "soak"); v != nil {
		return v
	}
	outside := outsideAllowFrom(r, ns)
	if len(outside) == 0 && r.ShadowDenied == 0 {
		return nil
	}
	msg := fmt.Sprintf("During the dry-run (the last %s, %s)", window, r.Source)
	if len(outside) > 0 {
		msg += fmt.Sprintf(", %d caller(s) came from outside allowFrom: %s", len(outside), traffic.Describe(traffic.Top(outside, maxCallers), allowAdvice))
	}
	if r.ShadowDenied > 0 {
		msg += fmt.Sprintf("; the dry-run policies would have denied %.0f request(s)", r.ShadowDenied)
	}
	msg += ". Enforcing would refuse them, so the AuthorizationPolicies stay in dry-run: admit the callers (spec.namespaces[].allowFrom), or lower the target."
	return &Verdict{RecheckAfter: TrafficPoll, Blocked: Blocked{Reason: meshv1.ReasonWouldDenyTraffic, Message: msg}}
}

// outsideAllowFrom are the callers a reading saw come from outside the namespace and its
// allowFrom, which ZeroTrust's policies would refuse. In ambient mode only their calls in mTLS
// count: ztunnel counts a plaintext connection before STRICT refuses it, and STRICT, in place
// since MutualTLS, refuses those already.
func outsideAllowFrom(r *traffic.Reading, ns Namespace) map[traffic.Caller]float64 {
	outside := map[traffic.Caller]float64{}
	for caller, n := range judged(r.Callers, ns) {
		if ns.Ambient {
			n -= r.Plaintext[caller]
		}
		if n > 0 && caller.Namespace != ns.Name && !slices.Contains(ns.AllowFrom, caller.Namespace) {
			outside[caller] = n
		}
	}
	return outside
}

// noCallersOutsideAllowFrom holds, in ambient mode, a climb to ZeroTrust before it starts while
// ztunnel saw callers from outside the namespace and its allowFrom over the observe time. The
// dry-run that follows is no safeguard there: istiod gives ztunnel no dry-run policy (so it only
// reads callers again), and before Istio 1.25 it gave them, and ztunnel enforced them.
var noCallersOutsideAllowFrom = Gate{Name: "NoCallersOutsideAllowFrom", Traffic: true, Check: func(c Climb) *Verdict {
	if !c.Settings.TrafficGates || c.NS.Pods.Total == 0 {
		return nil
	}
	r := c.NS.Traffic
	if v := readable(r, c, c.Settings.ObserveTime, "ZeroTrust's policies would refuse no caller"); v != nil {
		return v
	}
	if v := partial(r, c.Settings.ObserveTime, "watching its callers", "window"); v != nil {
		return v
	}
	outside := outsideAllowFrom(r, c.NS)
	if len(outside) == 0 {
		return nil
	}
	return &Verdict{RecheckAfter: TrafficPoll, Blocked: Blocked{Reason: meshv1.ReasonWouldDenyTraffic, Message: fmt.Sprintf(
		"In the last %s (%s), %d caller(s) came from outside the namespace and its allowFrom: %s. ZeroTrust's policies would refuse them, so the step to %s does not start: admit the callers (spec.namespaces[].allowFrom), or lower the target.",
		c.Settings.ObserveTime, r.Source, len(outside), traffic.Describe(traffic.Top(outside, maxCallers), allowAdvice), c.To)}}
}}

// allowAdvice says what admits a caller at ZeroTrust.
func allowAdvice(c traffic.Caller) string {
	if c.External() {
		return "it has no mesh identity to allow: route it through an Istio gateway in an allowFrom namespace"
	}
	return fmt.Sprintf("add {namespace: %s} to allowFrom", c.Namespace)
}

// dryRunTime is how long ZeroTrust's policies run in dry-run: the soak time, and under the
// traffic gates at least the observe time, so that there is a window of traffic to judge.
func dryRunTime(s Settings) time.Duration {
	if s.TrafficGates {
		return max(s.SoakTime, s.ObserveTime)
	}
	return s.SoakTime
}

// leavesMesh reports whether a step down from level takes the namespace's pods out of the mesh.
func leavesMesh(level Level) bool { return InMesh(level) && !InMesh(levelBelow(level)) }

// leavingBreaksCalls holds a step down out of the mesh while the namespace's proxies are seen
// calling namespaces that accept only mTLS: without proxies those calls go out in plaintext, and
// STRICT refuses them. Only evidence holds it: a step down is how a user gets a namespace whose
// proxies misbehave out of the mesh, so proxies that cannot be read let it go; proxies that
// answer are watched for one observe window first. Nil when the step may go.
func leavingBreaksCalls(ns Namespace, s Settings, current Level) *Verdict {
	if !s.TrafficGates || !leavesMesh(current) || ns.State.Step != nil || ns.Pods.Total == 0 {
		return nil
	}
	r := ns.Traffic
	if r == nil || r.Unavailable != "" || r.Unreachable != "" || !reporting(r, ns) {
		return nil
	}
	// Its proxies answer: one window tells whom they call (at most observeTime).
	if v := partial(r, s.ObserveTime, "reading whom it calls before it leaves the mesh", "window"); v != nil {
		return v
	}
	callees := map[traffic.Caller]float64{}
	for dest, n := range r.CallsTo {
		if dest != ns.Name && s.Strict[dest] {
			callees[traffic.Caller{Namespace: dest, Workload: "*"}] = n
		}
	}
	if len(callees) == 0 {
		return nil
	}
	return &Verdict{RecheckAfter: TrafficPoll, Blocked: Blocked{Reason: meshv1.ReasonCallsStrictNamespaces, Message: fmt.Sprintf(
		"Leaving the mesh would send its calls in plaintext, and %d namespace(s) it called in the last %s accept only mTLS: %s. Lower those namespaces below MutualTLS first, or keep this one at %s; spec.rollout.trafficGates: Skip walks it down anyway.",
		len(callees), s.ObserveTime, traffic.Describe(traffic.Top(callees, maxCallers), func(traffic.Caller) string { return "STRICT" }), current)}}
}

// plaintextAdvice says what to do about a caller that speaks plaintext.
func plaintextAdvice(c traffic.Caller) string {
	if c.External() {
		return "route it through an Istio gateway, or move it into the mesh"
	}
	return fmt.Sprintf("enrol namespace %s at Observe or higher so that its proxies send mTLS", c.Namespace)
}

// partial makes a gate wait while the source has seen less than the window it judges (an
// embedded source that started reading the namespace recently); doing says what the gate does,
// span names the window in the message.
func partial(r *traffic.Reading, window time.Duration, doing, span string) *Verdict {
	if r.Covered >= window {
		return nil
	}
	return &Verdict{
		Waiting:      fmt.Sprintf("%s: %s has seen %s of the %s %s so far", doing, r.Source, r.Covered.Round(time.Second), window, span),
		RecheckAfter: min(window-r.Covered, TrafficPoll),
	}
}

// readable holds a climb whose traffic was not read, or could not be, over window: nil when r
// can be judged. question says what the reading had to show, for messages.
func readable(r *traffic.Reading, c Climb, window time.Duration, question string) *Verdict {
	skip := "set spec.rollout.trafficGates: Skip to gate on pods only, giving up this check"
	switch {
	case c.NS.Ambient && (!c.Settings.ZtunnelRead || r != nil && r.ZtunnelUnread):
		return &Verdict{RecheckAfter: TrafficPoll, Blocked: Blocked{Reason: meshv1.ReasonAmbientTrafficUnread, Message: fmt.Sprintf(
			"The namespace is in ambient mode, whose traffic ztunnel reports, and the embedded telemetry source reads the namespace's own proxies only, so nothing shows that %s; the step to %s waits. Configure spec.telemetry.prometheus with a Prometheus that scrapes ztunnel (port 15020, /stats/prometheus; docs/ambient.md), or %s.", question, c.To, skip)}}
	case r == nil:
		return &Verdict{Waiting: "waiting for its traffic to be read: the operator reads it for the namespaces about to step (without a Prometheus, spec.rollout.maxNamespacesInProgress at a time)",
			RecheckAfter: TrafficPoll, Unread: true}
	case r.Unavailable != "":
		return &Verdict{RecheckAfter: TrafficPoll, Blocked: Blocked{Reason: meshv1.ReasonTelemetryUnavailable, Message: fmt.Sprintf(
			"%s did not answer (%s), so nothing shows that %s; the step to %s waits. Fix the source (spec.telemetry), or %s.", r.Source, r.Unavailable, question, c.To, skip)}}
	case r.Unreachable != "":
		return &Verdict{RecheckAfter: TrafficPoll, Blocked: Blocked{Reason: meshv1.ReasonTrafficUnverified, Message: fmt.Sprintf(
			"No source can see the namespace's traffic: %s. The step to %s waits. Let the operator reach the proxies' port 15020, or configure spec.telemetry.prometheus, or %s.", r.Unreachable, c.To, skip)}}
	case c.NS.Ambient && !r.ZtunnelReporting:
		return &Verdict{RecheckAfter: TrafficPoll, Blocked: Blocked{Reason: meshv1.ReasonTelemetryMissing, Message: fmt.Sprintf(
			"The namespace is in ambient mode, and %s has no series of ztunnel in the last %s: no series is not the same as no traffic, so the step to %s waits. Scrape ztunnel's metrics (port 15020, /stats/prometheus; docs/ambient.md), or %s.", r.Source, window, c.To, skip)}}
	case !c.NS.Ambient && !r.Reporting:
		return &Verdict{RecheckAfter: TrafficPoll, Blocked: Blocked{Reason: meshv1.ReasonTelemetryMissing, Message: fmt.Sprintf(
			"%s has no series of the namespace's proxies in the last %s: no series is not the same as no traffic, so the step to %s waits. Scrape the proxies' merged metrics (port 15020, /stats/prometheus) with the pods' namespace and pod labels (see docs/adoption.md), or %s.", r.Source, window, c.To, skip)}}
	}
	return nil
}

// reporting reports whether a reading vouches for the namespace's traffic: its proxies have
// series or, in ambient mode, ztunnel has, and the source reads it.
func reporting(r *traffic.Reading, ns Namespace) bool {
	if ns.Ambient {
		return !r.ZtunnelUnread && r.ZtunnelReporting
	}
	return r.Reporting
}

// unobservable reports whether no telemetry can come from the namespace: every pod with Istio's
// proxy runs proxyless gRPC (no Envoy), and no source reports anything of it. What the traffic
// gates ask of such pods, ProxylessMTLS and ProxylessDryRun ask of their spec instead.
func unobservable(ns Namespace) bool {
	return onlyProxyless(ns.Pods) && (ns.Traffic == nil || !ns.Traffic.Reporting)
}

// onlyProxyless reports whether every pod with Istio's proxy runs proxyless gRPC: no Envoy in
// the namespace, so no telemetry source has anything of it to read.
func onlyProxyless(p Pods) bool {
	return len(p.Proxyless) > 0 && len(p.Proxyless) == p.Total-len(p.Uninjected)
}

// unobservedMessage says why a namespace's step was not judged on its traffic.
func unobservedMessage(ns Namespace) string {
	return fmt.Sprintf("every pod with Istio's proxy runs proxyless gRPC (%s), which reports no telemetry: the step was judged on its pods only", names.List(ns.Pods.Proxyless))
}

// judged leaves out of callers those a gate cannot hold against the namespace: with Service ports
// exempted (plaintextPorts), callers outside the mesh, since those ports admit them (a webhook's
// kube-apiserver) and Istio's metrics do not say which port a call came to. The callers outside
// the mesh that the API shows are judged by the NoNonMeshCallers gate, and at ZeroTrust the
// dry-run policies, which admit only the exempted ports, by their shadow denials.
func judged(callers map[traffic.Caller]float64, ns Namespace) map[traffic.Caller]float64 {
	if len(ns.PlaintextPorts) == 0 {
		return callers
	}
	out := make(map[traffic.Caller]float64, len(callers))
	for c, n := range callers {
		if !c.External() {
			out[c] = n
		}
	}
	return out
}

// PhaseStart is when the namespace's current phase on the ladder began: the time it reached its
// level, or its step started (or, for ZeroTrust, was enforced), or the step's bake began. A
// reading of its traffic whose window began before then is no evidence of this phase (one taken
// before a dry-run says nothing of what the dry-run denied).
func (st State) PhaseStart() time.Time {
	t := st.Since
	if s := st.Step; s != nil {
		for _, u := range []time.Time{s.Started, s.Baking} {
			if u.After(t) {
				t = u
			}
		}
	}
	return t
}
