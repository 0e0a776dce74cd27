package ladder

import (
	"fmt"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

// waypointEffects adds a namespace's waypoint to its effects, in Istio's order: the Gateway as
// soon as the spec wants it (before the namespace steps into ambient mode: waypointReady waits for
// it), the label once the namespace carries the ambient label and the Gateway is Programmed;
// removing it, the label first, the Gateway only once the label is gone. A label already on stays
// while the waypoint is wanted, even if the Gateway stops serving for a while: taking it off would
// let the namespace's traffic bypass the L7 policy the waypoint enforces.
func waypointEffects(e Effects, w Waypoint) Effects {
	want := w.Wanted && w.Unavailable == ""
	e.UseWaypoint = want && e.Ambient && (w.Programmed || w.Labelled)
	e.Waypoint = want || w.Labelled
	return e
}

// waypointReady holds a step into ambient mode (a climb from Off, or a migration from sidecars)
// while the namespace's waypoint, which its rule asks for, does not serve yet: Istio's order is
// the waypoint first, so that the namespace's traffic meets its L7 policy from the first moment.
var waypointReady = Gate{Name: "WaypointReady", Check: func(c Climb) *Verdict {
	w := c.NS.Waypoint
	switch {
	case !w.Wanted || w.Programmed:
		return nil
	case w.Unavailable != "":
		return &Verdict{RecheckAfter: Settle, Blocked: Blocked{Reason: meshv1.ReasonWaitingForWaypoint, Message: fmt.Sprintf(
			"The namespace's rule asks for a waypoint, and %s. Install the Gateway API's standard CRDs (ambient mode installs them unless the operator runs with --istio-crds=external), or remove waypoint from the rule.", w.Unavailable)}}
	}
	return &Verdict{RecheckAfter: Settle, Blocked: Blocked{Reason: meshv1.ReasonWaitingForWaypoint, Message: fmt.Sprintf(
		"The namespace's rule asks for a waypoint: the step into ambient mode waits until Gateway %s/waypoint (class istio-waypoint) is Programmed, which istiod reports once it has deployed it. `kubectl get gateway -n %s waypoint` shows why not.", c.NS.Name, c.NS.Name)}}
}}
