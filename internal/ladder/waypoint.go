package ladder

import (
	"fmt"
	"time"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

// waypointEffects adds a namespace's waypoint to its effects, in Istio's order: the Gateway as
// soon as the spec wants it (before the namespace steps into ambient mode: waypointReady waits for
// it), the label once the namespace carries the ambient label and the Gateway is Programmed;
// removing it, the label first, the Gateway only once the label is gone. A label already on stays
// while the waypoint is wanted, even if the Gateway stops serving or cannot be read for a while:
// taking it off would let the namespace's traffic bypass the L7 policy the waypoint enforces. A
// Gateway by that name that is someone else's is never written, and the label that may point at
// it is left as it is; so is everything when the waypoint could not be read.
func waypointEffects(e Effects, w Waypoint) Effects {
	if w.Conflict != "" || w.Unread != "" {
		e.UseWaypoint = w.Labelled
		e.Waypoint = w.Unread != "" && w.Conflict == "" && w.Labelled
		return e
	}
	want := w.Wanted && w.Unavailable == ""
	e.UseWaypoint = w.Wanted && e.Ambient && (w.Labelled || want && w.Programmed)
	// Without a Gateway API to read, no Gateway can be the operator's: none is kept (nor has
	// policies attached), and none is deleted either.
	e.Waypoint = w.Unavailable == "" && (want || w.Labelled)
	return e
}

// ConflictRecheck is how often a namespace held by someone else's waypoint is looked at again:
// the operator watches only its own Gateways.
const ConflictRecheck = time.Minute

// waypointReady holds a step into ambient mode (a climb from Off, or a migration from sidecars)
// while the namespace's waypoint, which its rule asks for, does not serve yet: Istio's order is
// the waypoint first, so that the namespace's traffic meets its L7 policy from the first moment.
// No recheck: the Gateway's status and the Gateway API's CRDs are watched.
var waypointReady = Gate{Name: "WaypointReady", Check: func(c Climb) *Verdict {
	h := waypointHold(c.NS)
	switch {
	case h.blocked.Reason != "":
		return &Verdict{Blocked: h.blocked, RecheckAfter: h.recheck}
	case h.waiting != "":
		return &Verdict{Waiting: h.waiting + "; the step into ambient mode waits for it (Istio's order: the waypoint first)", Unread: h.unread}
	}
	return nil
}}

// hold is what keeps a namespace's wanted waypoint from serving.
type hold struct {
	blocked Blocked
	waiting string
	unread  bool
	recheck time.Duration
}

// waypointHold says what keeps a namespace's wanted waypoint from serving: blocked when it cannot
// come without the user (no Gateway API or one too old, someone else's Gateway by its name),
// waiting while istiod has not programmed it yet, or while it could not be read.
func waypointHold(ns Namespace) hold {
	w := ns.Waypoint
	switch {
	case !w.Wanted:
		return hold{}
	case w.Conflict != "":
		return hold{recheck: ConflictRecheck, blocked: Blocked{Reason: meshv1.ReasonWaypointConflict, Message: fmt.Sprintf(
			"The namespace's rule asks for a waypoint, and %s. The operator writes and deletes neither: remove yours to let the operator make its own, or remove waypoint from the rule to keep yours.", w.Conflict)}}
	case w.Unread != "":
		return hold{waiting: "its waypoint was not read: " + w.Unread, unread: true}
	case w.Unavailable != "":
		return hold{blocked: Blocked{Reason: meshv1.ReasonWaitingForWaypoint, Message: fmt.Sprintf(
			"The namespace's rule asks for a waypoint, and %s. Install the Gateway API's standard CRDs, v1.2 or newer (ambient mode installs them unless the operator runs with --istio-crds=external), or remove waypoint from the rule.", w.Unavailable)}}
	case !w.Programmed:
		return hold{waiting: fmt.Sprintf("waiting for its waypoint, Gateway %s/waypoint (class istio-waypoint), to be Programmed, which istiod reports once it has deployed it (`kubectl get gateway -n %s waypoint` shows why not)", ns.Name, ns.Name)}
	}
	return hold{}
}

// waypointPending reports, for a namespace in ambient mode with no step running, what its
// waypoint still lacks: it is not at its target until its traffic goes through the waypoint its
// rule asks for, and one that stopped serving while the label sends traffic to it is worth
// telling (that traffic fails), unless istiod is only catching up with a change of the Gateway.
func waypointPending(d *Decision, ns Namespace) bool {
	if d.State.Step != nil || !InMesh(d.Level) || !d.Effects.Ambient || !ns.Waypoint.Wanted {
		return false
	}
	h := waypointHold(ns)
	if d.Blocked.Reason == "" {
		d.Blocked = h.blocked
	}
	if h.recheck > 0 && (d.RecheckAfter == 0 || h.recheck < d.RecheckAfter) {
		d.RecheckAfter = h.recheck
	}
	if w := ns.Waypoint; h.waiting != "" && w.Labelled && !w.Updating && !h.unread && d.Blocked.Reason == "" {
		d.Blocked = Blocked{Reason: meshv1.ReasonWaitingForWaypoint, Message: "The namespace's traffic goes through its waypoint, which does not serve: " + h.waiting + "."}
	}
	if h.waiting != "" && d.Waiting == "" {
		d.Waiting = h.waiting
	}
	d.Unread = d.Unread || h.unread
	return h.blocked.Reason != "" || h.waiting != "" || !d.Effects.UseWaypoint
}
