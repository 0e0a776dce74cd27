package ladder

import (
	"fmt"
	"slices"
	"strings"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

// noNonMeshCallers holds a climb that would make the namespace STRICT (or keep it STRICT under
// default-deny) while the Kubernetes API shows callers that can never speak mTLS reaching its
// Services on ports the spec does not exempt: STRICT would refuse them, and for a webhook that
// means API writes failing across the cluster. It needs no telemetry, so it runs whether or not
// the traffic gates are skipped.
var noNonMeshCallers = Gate{Name: "NoNonMeshCallers", Callers: true, Check: func(c Climb) *Verdict {
	if len(c.NS.ExemptionProblems) > 0 {
		return &Verdict{RecheckAfter: TrafficPoll, Blocked: Blocked{Reason: meshv1.ReasonNonMeshCallers, Message: fmt.Sprintf(
			"spec.namespaces[].plaintextPorts cannot be applied here: %s. The step to %s waits, since the ports the spec exempts would not be exempted.",
			strings.Join(c.NS.ExemptionProblems, "; "), c.To)}}
	}
	var open []NonMeshCaller
	for _, nc := range c.NS.NonMeshCallers {
		if !Exempted(c.NS.PlaintextPorts, nc.Service, nc.Port) {
			open = append(open, nc)
		}
	}
	if len(open) == 0 {
		return nil
	}
	parts := make([]string, 0, min(len(open), maxCallers)+1)
	for _, nc := range open[:min(len(open), maxCallers)] {
		parts = append(parts, fmt.Sprintf("%s makes %s call Service %s port %d", nc.Object, nc.Caller, nc.Service, nc.Port))
	}
	if len(open) > maxCallers {
		parts = append(parts, fmt.Sprintf("and %d more", len(open)-maxCallers))
	}
	// Looked at again: the objects that call it are not watched, and may go.
	return &Verdict{RecheckAfter: TrafficPoll, Blocked: Blocked{Reason: meshv1.ReasonNonMeshCallers, Message: fmt.Sprintf(
		"%d caller(s) outside the mesh reach the namespace's Services, and STRICT mTLS would refuse them: %s. Exempt those ports (spec.namespaces[].plaintextPorts: {service: %s, port: %d}) to keep them accepting plaintext, or move the callers into the mesh.",
		len(open), strings.Join(parts, "; "), open[0].Service, open[0].Port)}}
}}

// Exempted reports whether the spec exempts a Service port from STRICT.
func Exempted(ports []meshv1.ServicePortRef, service string, port int32) bool {
	return slices.Contains(ports, meshv1.ServicePortRef{Service: service, Port: port})
}

// ChecksCallers says whether the callers the Kubernetes API shows are looked up for a namespace
// in this pass: its next climb passes a gate that judges them. Held namespaces, namespaces at
// their target and namespaces with a step running are not looked at.
func ChecksCallers(ns Namespace, s Settings) bool {
	return nextClimbPasses(ns, s, func(g Gate) bool { return g.Callers })
}

// nextClimbPasses says whether the namespace's next climb, about to be decided in this pass,
// passes a gate of the kind is tells: what such gates judge is gathered for it. Held namespaces,
// namespaces at their target and namespaces with a step running are not climbing.
func nextClimbPasses(ns Namespace, s Settings, is func(Gate) bool) bool {
	current := ns.Current
	if !Valid(current) {
		current = meshv1.LevelOff
	}
	held := ns.State.Hold != nil && ns.State.Hold.Generation == s.Generation
	if held || ns.State.Step != nil || Rank(ns.Target) <= Rank(current) {
		return false
	}
	return slices.ContainsFunc(rungFor(ns, levelAbove(current)).Gates, is)
}

// portList names Service ports for a message: "webhook:443, web:80".
func portList(ports []meshv1.ServicePortRef) string {
	parts := make([]string, len(ports))
	for i, p := range ports {
		parts[i] = fmt.Sprintf("%s:%d", p.Service, p.Port)
	}
	return strings.Join(parts, ", ")
}
