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
		"not wanted":                           {e: ambient},
		"wanted, not in the mesh yet":          {e: Effects{}, w: Waypoint{Wanted: true}, gateway: true},
		"wanted, with sidecars":                {e: Effects{Inject: true, Sidecars: true}, w: Waypoint{Wanted: true, Programmed: true}, gateway: true},
		"wanted, in ambient mode, not serving": {e: ambient, w: Waypoint{Wanted: true}, gateway: true},
		"wanted, in ambient mode, Programmed":  {e: ambient, w: Waypoint{Wanted: true, Programmed: true}, gateway: true, useWaypoint: true},
		"labelled, no longer Programmed":       {e: ambient, w: Waypoint{Wanted: true, Labelled: true}, gateway: true, useWaypoint: true},
		"no longer wanted, still labelled":     {e: ambient, w: Waypoint{Labelled: true, Programmed: true}, gateway: true},
		"no longer wanted, label off":          {e: ambient, w: Waypoint{Programmed: true}},
		"wanted, no Gateway API":               {e: ambient, w: Waypoint{Wanted: true, Unavailable: "no CRD"}},
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
		blocked bool
	}{
		"not wanted":             {},
		"wanted, Programmed":     {w: Waypoint{Wanted: true, Programmed: true}},
		"wanted, not Programmed": {w: Waypoint{Wanted: true}, blocked: true},
		"wanted, no Gateway API": {w: Waypoint{Wanted: true, Unavailable: "no CRD"}, blocked: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			v := waypointReady.Check(Climb{NS: Namespace{Name: "shop", Waypoint: tt.w}, To: meshv1.LevelObserve})
			if (v != nil) != tt.blocked || v != nil && v.Blocked.Reason != meshv1.ReasonWaitingForWaypoint {
				t.Errorf("verdict %+v, want blocked %v by WaitingForWaypoint", v, tt.blocked)
			}
		})
	}
}
