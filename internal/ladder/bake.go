package ladder

import (
	"cmp"
	"fmt"
	"time"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/traffic"
)

// Baseline is a namespace's inbound traffic before a step's change, as rates per second, kept on
// the step so that the bake can compare after the change with before it.
type Baseline struct {
	// Inbound is requests and connections received.
	Inbound float64 `json:"inbound"`
	// Denied is requests answered with 403.
	Denied float64 `json:"denied"`
	// Refused is plaintext connections refused (no inbound filter chain matched).
	Refused float64 `json:"refused"`
	// Failed is callers' requests to it that failed to connect.
	Failed float64 `json:"failed,omitempty"`
	// Errors is callers' requests to it answered with 5xx; TimedOut those their proxies timed
	// out.
	Errors   float64 `json:"errors,omitempty"`
	TimedOut float64 `json:"timedOut,omitempty"`
}

// baselineOf is the baseline a reading gives, or nil when it cannot be one (not read, not
// readable, or covering no time).
func baselineOf(r *traffic.Reading) *Baseline {
	if r == nil || r.Unavailable != "" || r.Unreachable != "" || !r.Reporting || r.Covered <= 0 {
		return nil
	}
	secs := r.Covered.Seconds()
	return &Baseline{Inbound: traffic.Total(r.Callers) / secs, Denied: traffic.Total(r.Denied) / secs, Refused: r.Refused / secs, Failed: traffic.Total(r.Failed) / secs,
		Errors: traffic.Total(r.Errors) / secs, TimedOut: traffic.Total(r.TimedOut) / secs}
}

// Bake is what a bake check judges: the traffic read since (about) the step's change took effect,
// the baseline from before it, how long ago the change took effect, and the rollout's settings.
type Bake struct {
	Reading  *traffic.Reading
	Baseline *Baseline
	Elapsed  time.Duration
	Settings Settings
}

// BakeCheck is one comparison a rung's bake makes, as gates are the checks before a climb: a new
// way to see a step break traffic is one entry in a rung's Bake.
type BakeCheck struct {
	// Name says what the check compares.
	Name string
	// Check returns the evidence of a regression, or "" when it sees none.
	Check func(Bake) string
}

// expected is how many events a baseline rate gives over the time a reading covers.
func expected(rate float64, r *traffic.Reading) float64 { return rate * r.Covered.Seconds() }

// grew reports whether a count of bad events is a regression over what the baseline expects: at
// least floor of them, and more than twice as many as expected.
func grew(count, expect, floor float64) bool { return count >= floor && count > 2*expect }

// The checks of a bake, each a small function; a rung lists those it needs.
var (
	// plaintextRefused: STRICT refuses a caller that speaks plaintext, and the destination's
	// proxy counts the connection no inbound filter chain matched. The caller is not known (the
	// proxy refuses it before it learns who it is); the observe window did not see it.
	plaintextRefused = BakeCheck{Name: "PlaintextRefused", Check: func(b Bake) string {
		r, before := b.Reading, 0.0
		if b.Baseline != nil {
			before = expected(b.Baseline.Refused, r)
		}
		if !grew(r.Refused, before, 1) {
			return ""
		}
		return fmt.Sprintf("the proxies refused %.0f plaintext connection(s) (Envoy's envoy_listener_no_filter_chain_match on the inbound listener, %s; %.0f expected from before the step). A caller that speaks plaintext calls the namespace, and STRICT refuses it: one that did not call during the observe window, or started since. Find it (the refused connections' source addresses are in the proxies' access logs, response flag NR), enrol its namespace at Observe or route it through a gateway",
			r.Refused, r.Source, before)
	}}
	// requestsDenied: enforced AuthorizationPolicies answer a caller they do not admit with 403.
	requestsDenied = BakeCheck{Name: "RequestsDenied", Check: func(b Bake) string {
		if b.Baseline == nil {
			return "" // 403s of the application's own cannot be told apart without one
		}
		r := b.Reading
		denied, before := traffic.Total(r.Denied), expected(b.Baseline.Denied, r)
		if !grew(denied, before, 3) {
			return ""
		}
		return fmt.Sprintf("%.0f request(s) were answered with 403 (istio_requests_total{reporter=\"destination\",response_code=\"403\"}, %s; about %.0f expected from before the step): %s",
			denied, r.Source, before, traffic.Describe(traffic.Top(r.Denied, maxCallers), allowAdvice))
	}}
	// callersFailing: a caller in the mesh whose mTLS to the namespace fails (another trust
	// domain, a DestinationRule that turns TLS off) gets 503s with an upstream-connection flag
	// from its own proxy. Seen only through a source that reads the callers' proxies.
	callersFailing = BakeCheck{Name: "CallersFailing", Check: func(b Bake) string {
		r, before := b.Reading, 0.0
		if b.Baseline != nil {
			before = expected(b.Baseline.Failed, r)
		}
		failed := traffic.Total(r.Failed)
		if !grew(failed, before, 3) {
			return ""
		}
		return fmt.Sprintf("%.0f call(s) of callers in the mesh failed to connect (istio_requests_total and istio_tcp_connections_closed_total, reporter=\"source\", response_flags UF, URX or UC; %s; about %.0f expected from before the step): %s",
			failed, r.Source, before, traffic.Describe(traffic.Top(r.Failed, maxCallers), failedAdvice))
	}}
	// applicationUnreached: once in the mesh, calls reach the application through its proxy,
	// which may not reach it where callers did before: an application that listens on localhost
	// only (since Istio 1.10 the sidecar forwards to the pod's IP), or on a port its Service does
	// not target. The proxy then answers 503 (closes the connection) with an upstream-connection
	// flag, on its own report. Before its first step the namespace has no proxy to report, so
	// there is no baseline: a floor, and a share of the calls received, keep the failures an
	// application has anyway (a pod restarting) from rolling the step back.
	applicationUnreached = BakeCheck{Name: "ApplicationUnreached", Check: func(b Bake) string {
		r := b.Reading
		n, calls := traffic.Total(r.Unreached), traffic.Total(r.Callers)
		if n < 3 || n < unreachedShare*calls {
			return ""
		}
		return fmt.Sprintf("its proxies could not pass %.0f of the %.0f call(s) they received on to the application (istio_requests_total and istio_tcp_connections_closed_total, reporter=\"destination\", response_flags UF, URX or UC; %s): %s. An application behind Istio's sidecar must listen on the pod's IP (0.0.0.0), not on localhost only, and on the port its Service targets",
			n, max(calls, n), r.Source, traffic.Describe(traffic.Top(r.Unreached, maxCallers), func(traffic.Caller) string { return "they reached the proxy, not the application" }))
	}}
	// callersErrors: resilience defaults that do not suit a Service show as its callers' errors:
	// a request timeout shorter than it needs (their proxies answer 504, flag UT), connection
	// limits too low (503, UO), an ejection too eager (503, UH), retries that add to an overload.
	// Reported by the callers' proxies, so the embedded source sees only the namespace's calls to
	// itself. Without a baseline, a floor and a share of the calls received keep an application's
	// usual errors from rolling the defaults back.
	callersErrors = BakeCheck{Name: "CallersErrors", Check: func(b Bake) string {
		r := b.Reading
		errs, timedOut := traffic.Total(r.Errors), traffic.Total(r.TimedOut)
		var before, beforeTimedOut float64
		if b.Baseline != nil {
			before, beforeTimedOut = expected(b.Baseline.Errors, r), expected(b.Baseline.TimedOut, r)
		} else if errs < unreachedShare*traffic.Total(r.Callers) {
			return ""
		}
		if !grew(errs, before, 3) && !grew(timedOut, beforeTimedOut, 3) {
			return ""
		}
		return fmt.Sprintf("its callers got %.0f failed answer(s), %.0f of them timeouts of their proxies (istio_requests_total{reporter=\"source\"}, response code 5xx or response flags UT, UO, UH; UT for a timeout; %s; about %.0f and %.0f expected from before): %s",
			errs, timedOut, r.Source, before, beforeTimedOut, traffic.Describe(traffic.Top(r.Errors, maxCallers), errorAdvice))
	}}
	// inboundFell: callers refused or denied outright show as calls that no longer arrive. It is
	// judged once the whole bake is read, on a baseline with enough calls to compare.
	inboundFell = BakeCheck{Name: "InboundFell", Check: func(b Bake) string {
		r := b.Reading
		if b.Baseline == nil || b.Elapsed < b.Settings.BakeTime || r.Covered < b.Settings.BakeTime || b.Baseline.Inbound*b.Settings.BakeTime.Seconds() < minInboundCompared {
			return ""
		}
		now := traffic.Total(r.Callers) / r.Covered.Seconds()
		if now >= b.Baseline.Inbound/2 {
			return ""
		}
		return fmt.Sprintf("the calls it received fell from %.2f/s before the step to %.2f/s (istio_requests_total and istio_tcp_connections_opened_total, reporter=\"destination\", %s): callers that reached it before no longer do",
			b.Baseline.Inbound, now, r.Source)
	}}
)

// unreachedShare is the share of the calls received that its proxies could not pass on to the
// application for a step to Observe to be rolled back: a pod restarting fails a few calls
// whatever the mesh does; an application the proxy cannot reach fails them all.
const unreachedShare = 0.05

// minInboundCompared is how many calls a bake window must have held before the step for a fall
// in calls to be judged: fewer say more about chance than about the step.
const minInboundCompared = 20

// bakes reports whether a step bakes: a climb onto a rung with bake checks, or a step that
// applies resilience defaults, under the traffic gates, in a namespace with pods.
func bakes(ns Namespace, s Settings, step Step, kind StepKind) bool {
	return (kind == KindClimb || kind == KindDefaults) && s.TrafficGates && s.BakeTime > 0 && ns.Pods.Total > 0 && len(bakeChecks(ns, step, kind)) > 0
}

// bakeChecks are the comparisons a step's bake makes: its rung's, or DefaultsBake.
func bakeChecks(ns Namespace, step Step, kind StepKind) []BakeCheck {
	if kind == KindDefaults && ns.Ambient {
		// What a waypoint reports of the calls it routes is not read yet (ambient mode bakes
		// nothing; see AmbientRungs): the defaults apply on pods alone.
		return nil
	}
	if kind == KindDefaults {
		return DefaultsBake
	}
	return rungFor(ns, step.To).Bake
}

// bake runs the bake of a step whose change is complete: it starts its clock, rolls the step back
// when a check sees a regression, and waits out the bake time. It reports whether the pass ends
// there; false once the bake has passed and the step may complete.
func bake(d *Decision, ns Namespace, s Settings, step *Step, kind StepKind, now time.Time) bool {
	if step.Baking.IsZero() {
		step.Baking = now
		d.Waiting = fmt.Sprintf("baking: comparing its traffic with before the step until %s (spec.rollout.bakeTime)", now.Add(s.BakeTime).UTC().Format(time.RFC3339))
		d.RecheckAfter = min(s.BakeTime, TrafficPoll)
		return true
	}
	if unobservable(ns) {
		// Nothing will ever be read to compare: the step completes, with a warning.
		step.Unbaked = unobservedMessage(ns)
		return false
	}
	elapsed := now.Sub(step.Baking)
	r := ns.Traffic
	c := Climb{NS: ns, Settings: s, From: d.Level, To: step.To, Now: now}
	if v := readable(r, c, s.BakeTime, "the step left its traffic as it was"); v != nil {
		// Nothing to judge: no rollback without evidence, and no completion without a reading,
		// unless the rung lets the bake time end the wait, or nothing can ever be read.
		if kind != KindDefaults && rungFor(ns, step.To).UnreadBakeCompletes {
			if elapsed >= s.BakeTime {
				step.Unbaked = cmp.Or(v.Blocked.Message, v.Waiting)
				return false
			}
			v.RecheckAfter = min(cmp.Or(v.RecheckAfter, TrafficPoll), s.BakeTime-elapsed)
		}
		d.apply(v)
		return true
	}
	for _, check := range bakeChecks(ns, *step, kind) {
		if evidence := check.Check(Bake{Reading: r, Baseline: step.Baseline, Elapsed: elapsed, Settings: s}); evidence != "" {
			msg := fmt.Sprintf("In the bake after the step from %s to %s, %s. The step was rolled back; the namespace is held at %s until the spec changes (fix the cause, then change the MeshInstallation's spec, or delete the namespace's %s annotation).",
				d.Level, step.To, evidence, d.Level, meshv1.AnnotationLadder)
			if kind == KindDefaults {
				msg = fmt.Sprintf("In the bake after the resilience defaults were applied at %s, %s. They were rolled back to what the namespace had before; these values are not applied again while the spec asks for them (change spec.resilience, or the rule's resilience for the namespace, such as a longer timeouts.request; or delete the namespace's %s annotation).",
					d.Level, evidence, meshv1.AnnotationLadder)
			}
			revert(d, ns, s, *step, kind, meshv1.ReasonTrafficRegressed, msg, now)
			return true
		}
	}
	if elapsed < s.BakeTime {
		d.Waiting = fmt.Sprintf("baking: comparing its traffic with before the step until %s (spec.rollout.bakeTime)", step.Baking.Add(s.BakeTime).UTC().Format(time.RFC3339))
		d.RecheckAfter = min(s.BakeTime-elapsed, TrafficPoll)
		return true
	}
	if v := partial(r, s.BakeTime, "baking", "bake"); v != nil {
		// A source that began reading the namespace's proxies late in the bake (the embedded
		// source, new pods) has not seen it whole: the step completes on a reading that has.
		d.apply(v)
		return true
	}
	return false
}

// errorAdvice says what to look at for a caller that gets errors after the defaults applied.
func errorAdvice(c traffic.Caller) string {
	return fmt.Sprintf("compare the time %s's requests take with resilience.timeouts.request, and its load with resilience.connectionPool", c)
}

// failedAdvice says what to look at for a caller whose connections fail.
func failedAdvice(c traffic.Caller) string {
	return fmt.Sprintf("check that %s's proxies send Istio mTLS to it (no DestinationRule disabling TLS, the same trust domain)", c)
}
