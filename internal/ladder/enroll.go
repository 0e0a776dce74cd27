package ladder

import (
	"fmt"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

// neverEnrolled are namespaces no selector can put into the mesh: the cluster's own. The
// control plane's and the operator's namespaces are added by the caller.
var neverEnrolled = []string{metav1.NamespaceSystem, metav1.NamespacePublic, "kube-node-lease"}

// Enrollment is the target a namespace gets from the spec.
type Enrollment struct {
	Target Level
	// AllowFrom are the namespaces whose workloads may call this one at ZeroTrust.
	AllowFrom []string
	// PlaintextPorts are the Service ports exempted from STRICT.
	PlaintextPorts []meshv1.ServicePortRef
	// Invalid, when set, says why the namespace's override label was ignored.
	Invalid string
	// DataPlane is the matched rule's dataPlaneMode ("" when it says nothing, or no rule matched).
	DataPlane meshv1.DataPlaneKind
	// Ambient is the data plane the spec asks for the namespace (the rule's dataPlaneMode, else
	// spec.dataPlane.mode); the caller sets it (Namespace.AmbientWanted).
	Ambient bool
	// Waypoint is the matched rule's waypoint: the namespace is to have one in ambient mode.
	Waypoint bool
	// Resilience is the matched rule's change to spec.resilience (nil: none).
	Resilience *meshv1.NamespaceResilience
}

// Enroll gives a namespace its target level: its meshwright.io/target-level label if it has a
// valid one, else the level of the first rule of spec.namespaces whose selector matches it,
// else Off. excluded namespaces (and kube-system, kube-public, kube-node-lease) are always Off.
func Enroll(name string, nsLabels map[string]string, rules []meshv1.NamespaceRule, excluded []string) Enrollment {
	if slices.Contains(excluded, name) || slices.Contains(neverEnrolled, name) {
		return Enrollment{Target: meshv1.LevelOff}
	}
	var e Enrollment
	matched := false
	for i, r := range rules {
		sel, err := metav1.LabelSelectorAsSelector(r.Selector.LabelSelector())
		if err != nil || !sel.Matches(labels.Set(nsLabels)) {
			continue
		}
		e.Target, matched = r.Level, true
		if !Valid(r.Level) {
			// The API's schema refuses such a rule; one that got past it enrolls nothing.
			e.Target = meshv1.LevelOff
			e.Invalid = fmt.Sprintf("spec.namespaces[%d].level %q is not a level; the namespace stays Off", i, r.Level)
		}
		for _, a := range r.AllowFrom {
			e.AllowFrom = append(e.AllowFrom, a.Namespace)
		}
		e.PlaintextPorts, e.DataPlane, e.Waypoint, e.Resilience = r.PlaintextPorts, r.DataPlaneMode, r.Waypoint, r.Resilience
		break
	}
	if !matched {
		e.Target = meshv1.LevelOff
	}
	if v, ok := nsLabels[meshv1.LabelTargetLevel]; ok {
		if Valid(Level(v)) {
			e.Target = Level(v)
		} else {
			e.Invalid = fmt.Sprintf("label %s=%q is not a level (Off, Observe, MutualTLS or ZeroTrust); it is ignored", meshv1.LabelTargetLevel, v)
		}
	}
	return e
}
