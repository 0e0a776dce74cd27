package ladder

import (
	"fmt"
	"strings"
	"time"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/names"
	"github.com/meshwright/meshwright/internal/resilience"
)

// ResilienceWant is what the spec asks of a namespace's resilience defaults (spec.resilience and
// its rule's override): the values, and the level from which the namespace carries them.
type ResilienceWant struct {
	// Values are the defaults in force for the namespace; nil when the spec asks for none (no
	// spec.resilience, or its rule opts out).
	Values *resilience.Values
	// From is the lowest level that carries them.
	From Level
	// Unsupported, when set, says why they cannot apply in the namespace's data plane (ambient
	// mode without a waypoint: ztunnel applies no route or connection policy): none is written.
	Unsupported string
}

// resilienceWanted is the defaults a namespace at level carries: its values from From up, in the
// mesh, where its data plane applies them; nil otherwise.
func resilienceWanted(ns Namespace, level Level) *resilience.Values {
	r := ns.Resilience
	if r.Values == nil || r.Unsupported != "" || !InMesh(level) || Rank(level) < Rank(r.From) {
		return nil
	}
	return r.Values
}

// sameValues reports whether two records of the defaults are the same (nil is none).
func sameValues(a, b *resilience.Values) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

// resilienceDue reports a namespace with no step whose recorded defaults are not the ones its
// level carries now, and that may change them: removing them is always due; applying them is
// not while a rolled-back application of the same values holds it (State.ResilienceHold).
func resilienceDue(d Decision, ns Namespace) bool {
	want := resilienceWanted(ns, d.Level)
	return d.State.Step == nil && !sameValues(d.State.Resilience, want) && (want == nil || d.State.ResilienceHold == nil)
}

// resiliencePending reports a namespace that does not carry the defaults its level asks for, with
// no step running: it is not at its target. Held after a rollback, it says so.
func resiliencePending(d *Decision, ns Namespace) bool {
	want := resilienceWanted(ns, d.Level)
	if d.State.Step != nil || want == nil || sameValues(d.State.Resilience, want) {
		return false
	}
	if h := d.State.ResilienceHold; h != nil && d.Blocked.Reason == "" {
		d.Blocked = Blocked{Reason: h.Reason, Message: h.Message}
	}
	return true
}

// resilienceEffects is the defaults a namespace carries in this pass: a defaults step's while it
// runs (its rollback's, the recorded ones), none as soon as its level (or the level a step takes
// it down to) no longer carries them (removing them is never held up), else the recorded ones.
func resilienceEffects(d Decision, ns Namespace) *resilience.Values {
	st, level := d.State.Step, d.Level
	if st != nil && st.Kind(d.Level) == KindDefaults {
		return st.Resilience
	}
	if st != nil && !st.Rollback && Rank(st.To) < Rank(d.Level) {
		level = st.To
	}
	if resilienceWanted(ns, level) == nil {
		return nil
	}
	return d.State.Resilience
}

// startDefaults brings a namespace's defaults to what its level carries. Removing them (or
// taking them off for values that changed) is never held; applying them is a step of its own,
// gated on every pod being Ready and taking a slot, and baked like a climb: its traffic is
// compared with before (DefaultsBake), and a regression rolls it back to the recorded defaults.
func startDefaults(d *Decision, ns Namespace, s Settings, mayStart bool, now time.Time) {
	want := resilienceWanted(ns, d.Level)
	if want == nil {
		d.State.Resilience = nil
		d.Event = &Event{Reason: "ResilienceDefaultsRemoved", Message: fmt.Sprintf("The resilience defaults were removed: %s.", whyNone(ns, d.Level))}
		return
	}
	if notReady := ns.Pods.NotReady; len(notReady) > 0 {
		d.Blocked = Blocked{Reason: meshv1.ReasonPodsNotReady, Message: fmt.Sprintf(
			"%d pod(s) are not Ready: %s. Applying the resilience defaults waits until every pod is Ready, so that what they change can be judged.", len(notReady), names.List(notReady))}
		return
	}
	if v := defaultsBaseline(ns, s, d.Level); v != nil {
		d.apply(v)
		d.TrafficHeld = v.Blocked.Reason != ""
		return
	}
	if !mayStart {
		d.Waiting = "waiting for a free slot to apply the resilience defaults (spec.rollout.maxNamespacesInProgress)"
		return
	}
	d.State.Step = &Step{To: d.Level, Defaults: true, Resilience: want, Started: now, ID: fmt.Sprintf("resilience-%d", now.UnixMilli())}
	if s.TrafficGates {
		d.State.Step.Baseline = baselineOf(ns.Traffic)
	}
	d.InProgress = true
	verb := "Applying"
	if d.State.Resilience != nil {
		verb = "Changing"
	}
	d.Event = &Event{Reason: "ResilienceDefaultsStarted", Message: fmt.Sprintf("%s the resilience defaults at %s (%s).", verb, d.Level, Describe(*want))}
}

// defaultsBaseline holds the application of the defaults, under the traffic gates, until the
// namespace's traffic was read over a whole bake time: the baseline its bake compares with
// ("cannot see" is never "clean"). A namespace whose traffic no source can read (ambient mode,
// only proxyless gRPC pods) is not baked, and needs none.
func defaultsBaseline(ns Namespace, s Settings, level Level) *Verdict {
	if !s.TrafficGates || s.BakeTime <= 0 || ns.Ambient || unobservable(ns) {
		return nil
	}
	c := Climb{NS: ns, Settings: s, From: level, To: level}
	if v := readable(ns.Traffic, c, s.BakeTime, "the resilience defaults would not break a caller"); v != nil {
		return v
	}
	return partial(ns.Traffic, s.BakeTime, "reading its traffic before applying the resilience defaults", "bake time")
}

// whyNone says why a namespace at level carries no defaults.
func whyNone(ns Namespace, level Level) string {
	r := ns.Resilience
	switch {
	case r.Values == nil:
		return "the spec asks for none here (no spec.resilience, or the namespace's rule skips them)"
	case r.Unsupported != "":
		return r.Unsupported
	case !InMesh(level):
		return "the namespace left the mesh"
	}
	return fmt.Sprintf("the namespace is at %s, below spec.resilience.fromLevel %s", level, r.From)
}

// Describe says what defaults are, for an Event or the plugin's plan.
func Describe(v resilience.Values) string {
	timeout := "no request timeout"
	if v.RequestTimeout.Duration > 0 {
		timeout = "request timeout " + v.RequestTimeout.Duration.String()
	}
	retries := "no retries"
	if v.Attempts > 0 {
		retries = fmt.Sprintf("%d retries on %s", v.Attempts, v.RetryOn)
	}
	ejection := "no outlier ejection"
	if v.Consecutive5xxErrors > 0 {
		ejection = fmt.Sprintf("ejection after %d consecutive 5xx", v.Consecutive5xxErrors)
	}
	var limits []string
	for _, l := range []struct {
		n    int32
		what string
	}{{v.MaxConnections, "connections"}, {v.MaxPendingRequests, "pending requests"}, {v.MaxRequests, "requests in flight"}} {
		if l.n > 0 {
			limits = append(limits, fmt.Sprintf("%d %s", l.n, l.what))
		}
	}
	pool := "no connection limits"
	if len(limits) > 0 {
		pool = "at most " + strings.Join(limits, ", ")
	}
	return fmt.Sprintf("%s, %s, %s, %s", timeout, retries, pool, ejection)
}

// cancelDefaults undoes, with no hold, a defaults step whose values the spec no longer asks for
// (they changed, or the target was lowered under it): the namespace goes back to its recorded
// defaults, and the next pass starts over from there.
func cancelDefaults(d *Decision, ns Namespace, step Step, now time.Time) bool {
	if sameValues(step.Resilience, resilienceWanted(ns, d.Level)) && Rank(ns.Target) >= Rank(d.Level) {
		return false
	}
	d.State.Step = &Step{To: d.Level, Started: now, ID: stepID(d.Level, now), Rollback: true, Cancelled: true, Defaults: true}
	d.Event = &Event{Reason: "ResilienceDefaultsCancelled", Message: "The spec no longer asks for these resilience defaults here: the namespace goes back to the ones it had."}
	return true
}

// DefaultsBake are the comparisons a defaults step's bake makes: callers getting more 5xx or
// timeouts (a request timeout shorter than the Service needs, a connection limit too low, an
// ejection too eager), callers failing to connect, calls no longer arriving.
var DefaultsBake = []BakeCheck{callersErrors, callersFailing, inboundFell}
