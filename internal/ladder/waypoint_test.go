package ladder

import (
	"testing"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

// TestWaypointEffects: the Gateway comes as soon as it is wanted and goes only once the label is
// off; the label comes with the ambient label once the Gateway is Programmed, and stays while
// the waypoint is wanted.
func TestWaypointEffects(t *testing.T) {
	ambient := Effects{Inject: true, Ambient: true}
	tests := map[string]struct {
		e                    Effects
		w                    Waypoint
		gateway, useWaypoint bool
	}{
		"not wanted":                                       {e: ambient},
		"wanted, not in the mesh yet":                      {e: Effects{}, w: Waypoint{Wanted: true}, gateway: true},
		"wanted, with sidecars":                            {e: Effects{Inject: true, Sidecars: true}, w: Waypoint{Wanted: true, Programmed: true}, gateway: true},
		"wanted, in ambient mode, not serving":             {e: ambient, w: Waypoint{Wanted: true}, gateway: true},
		"wanted, in ambient mode, Programmed":              {e: ambient, w: Waypoint{Wanted: true, Programmed: true}, gateway: true, useWaypoint: true},
		"labelled, no longer Programmed":                   {e: ambient, w: Waypoint{Wanted: true, Labelled: true}, gateway: true, useWaypoint: true},
		"no longer wanted, still labelled":                 {e: ambient, w: Waypoint{Labelled: true, Programmed: true}, gateway: true},
		"no longer wanted, label off":                      {e: ambient, w: Waypoint{Programmed: true}},
		"wanted, no Gateway API":                           {e: ambient, w: Waypoint{Wanted: true, Unavailable: "no CRD"}},
		"labelled, wanted, no Gateway API: the label kept": {e: ambient, w: Waypoint{Wanted: true, Labelled: true, Unavailable: "no CRD"}, useWaypoint: true},
		"not read: as it is":                               {e: ambient, w: Waypoint{Wanted: true, Labelled: true, Unread: "forbidden"}, gateway: true, useWaypoint: true},
		"not read, not labelled: as it is":                 {e: ambient, w: Waypoint{Wanted: true, Programmed: true, Unread: "forbidden"}},
		"labelled, not wanted, no Gateway API":             {e: ambient, w: Waypoint{Labelled: true, Unavailable: "no CRD"}},
		"someone else's Gateway, labelled":                 {e: ambient, w: Waypoint{Wanted: true, Labelled: true, Conflict: "theirs"}, useWaypoint: true},
		"someone else's Gateway, not labelled":             {e: ambient, w: Waypoint{Wanted: true, Programmed: true, Conflict: "theirs"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got := waypointEffects(tt.e, tt.w)
			if got.Waypoint != tt.gateway || got.UseWaypoint != tt.useWaypoint {
				t.Errorf("Gateway %v, label %v; want %v, %v", got.Waypoint, got.UseWaypoint, tt.gateway, tt.useWaypoint)
			}
		})
	}
}

func TestWaypointReady(t *testing.T) {
	tests := map[string]struct {
		w       Waypoint
		reason  string
		waiting bool
	}{
		"not wanted":                      {},
		"wanted, Programmed":              {w: Waypoint{Wanted: true, Programmed: true}},
		"wanted, not Programmed: waiting": {w: Waypoint{Wanted: true}, waiting: true},
		"wanted, no Gateway API":          {w: Waypoint{Wanted: true, Unavailable: "no CRD"}, reason: meshv1.ReasonWaitingForWaypoint},
		"wanted, someone else's Gateway":  {w: Waypoint{Wanted: true, Programmed: true, Conflict: "theirs"}, reason: meshv1.ReasonWaypointConflict},
		"wanted, not read: waiting":       {w: Waypoint{Wanted: true, Unread: "forbidden"}, waiting: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			v := waypointReady.Check(Climb{NS: Namespace{Name: "shop", Waypoint: tt.w}, To: meshv1.LevelObserve})
			if v == nil {
				v = &Verdict{}
			}
			// No recheck (the operator's Gateway is watched), but for someone else's, which is not.
			if v.Blocked.Reason != tt.reason || (v.Waiting != "") != tt.waiting || (v.RecheckAfter != 0) != (tt.reason == meshv1.ReasonWaypointConflict) {
				t.Errorf("verdict %+v, want blocked by %q, waiting %v, a recheck only for someone else's Gateway", v, tt.reason, tt.waiting)
			}
		})
	}
}

// TestWaypointPending: a namespace in ambient mode at its level is not at its target until its
// traffic goes through the waypoint its rule asks for; one whose label sends traffic to a waypoint
// that no longer serves is blocked, with the reason.
func TestWaypointPending(t *testing.T) {
	ambient := Effects{Inject: true, Ambient: true}
	tests := map[string]struct {
		level   Level
		e       Effects
		w       Waypoint
		pending bool
		reason  string
	}{
		"not wanted":                             {level: meshv1.LevelMutualTLS, e: ambient},
		"in use":                                 {level: meshv1.LevelMutualTLS, e: Effects{Inject: true, Ambient: true, Waypoint: true, UseWaypoint: true}, w: Waypoint{Wanted: true, Programmed: true, Labelled: true}},
		"Programmed, labelled this pass":         {level: meshv1.LevelMutualTLS, e: Effects{Inject: true, Ambient: true, Waypoint: true, UseWaypoint: true}, w: Waypoint{Wanted: true, Programmed: true}},
		"made, not Programmed yet":               {level: meshv1.LevelMutualTLS, e: Effects{Inject: true, Ambient: true, Waypoint: true}, w: Waypoint{Wanted: true}, pending: true},
		"labelled, stopped serving":              {level: meshv1.LevelMutualTLS, e: Effects{Inject: true, Ambient: true, Waypoint: true, UseWaypoint: true}, w: Waypoint{Wanted: true, Labelled: true}, pending: true, reason: meshv1.ReasonWaitingForWaypoint},
		"labelled, istiod catching up":           {level: meshv1.LevelMutualTLS, e: Effects{Inject: true, Ambient: true, Waypoint: true, UseWaypoint: true}, w: Waypoint{Wanted: true, Labelled: true, Updating: true}, pending: true},
		"not read (the plugin)":                  {level: meshv1.LevelMutualTLS, e: Effects{Inject: true, Ambient: true, Waypoint: true, UseWaypoint: true}, w: Waypoint{Wanted: true, Labelled: true, Unread: "forbidden"}, pending: true},
		"someone else's Gateway":                 {level: meshv1.LevelZeroTrust, e: ambient, w: Waypoint{Wanted: true, Conflict: "theirs"}, pending: true, reason: meshv1.ReasonWaypointConflict},
		"with sidecars: waits for the migration": {level: meshv1.LevelMutualTLS, e: Effects{Inject: true, Sidecars: true, Waypoint: true}, w: Waypoint{Wanted: true}},
		"off":                                    {level: meshv1.LevelOff, e: Effects{Waypoint: true}, w: Waypoint{Wanted: true}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			d := Decision{Level: tt.level, Effects: tt.e}
			got := waypointPending(&d, Namespace{Name: "shop", Waypoint: tt.w})
			if got != tt.pending || d.Blocked.Reason != tt.reason || tt.pending && tt.reason == "" && d.Waiting == "" {
				t.Errorf("pending %v, blocked %+v, waiting %q; want pending %v, blocked by %q", got, d.Blocked, d.Waiting, tt.pending, tt.reason)
			}
		})
	}
}
