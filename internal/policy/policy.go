// Package policy builds the Istio security policies the operator owns: the mesh-wide PERMISSIVE
// PeerAuthentication, and per namespace the STRICT PeerAuthentication of MutualTLS and the
// AuthorizationPolicies of ZeroTrust. Desired state only: pure functions of the spec and the
// namespace's position on the ladder.
package policy

import (
	"cmp"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meshwright/meshwright/internal/apply"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/waypoint"
)

// Kinds of Istio's security API the operator writes.
var (
	PeerAuthenticationGVK  = schema.GroupVersionKind{Group: "security.istio.io", Version: "v1", Kind: "PeerAuthentication"}
	AuthorizationPolicyGVK = schema.GroupVersionKind{Group: "security.istio.io", Version: "v1", Kind: "AuthorizationPolicy"}
)

// Names of the policies, fixed so users can find them and the operator can prune them.
const (
	// MeshWideName is Istio's convention: a PeerAuthentication named default in the root
	// namespace applies to the whole mesh.
	MeshWideName = "default"
	// StrictName is the namespace's STRICT PeerAuthentication.
	StrictName = "meshwright-strict"
	// AllowNothingName is the namespace's allow-nothing AuthorizationPolicy: with it, only
	// what an ALLOW policy permits gets through.
	AllowNothingName = "meshwright-allow-nothing"
	// AllowName permits calls from the namespace itself and from spec allowFrom.
	AllowName = "meshwright-allow"
	// WaypointAllowName and WaypointAllowNothingName are AllowName and AllowNothingName attached
	// to the namespace's waypoint (targetRefs): traffic through a waypoint reaches the
	// destination's ztunnel with the waypoint's identity, from the namespace itself, so only the
	// waypoint sees the caller's own.
	WaypointAllowName        = "meshwright-waypoint-allow"
	WaypointAllowNothingName = "meshwright-waypoint-allow-nothing"
	// DryRunAnnotation is Istio's switch that makes an AuthorizationPolicy log instead of deny.
	DryRunAnnotation = "istio.io/dry-run"
	// PlaintextPrefix starts the names of the policies of an exemption: the PeerAuthentication
	// and AuthorizationPolicy named PlaintextPrefix+service.
	PlaintextPrefix = "meshwright-plaintext-"
)

// PerNamespace tells the ladder's per-namespace policies from the mesh-wide one, which the
// ladder must never remove.
func PerNamespace(name string) bool {
	return name == StrictName || name == AllowNothingName || name == AllowName || name == WaypointAllowName || name == WaypointAllowNothingName ||
		strings.HasPrefix(name, PlaintextPrefix)
}

// Exemption keeps ports of one Service's pods accepting callers outside the mesh
// (spec.namespaces[].plaintextPorts): PERMISSIVE under STRICT, and open to any caller under
// default-deny.
type Exemption struct {
	// Service names the Service; its policies are named after it.
	Service string
	// Selector is the Service's selector: the pods the policies apply to.
	Selector map[string]string
	// Ports are the pods' ports (the Service's target ports), as Istio's port-level settings
	// want them, sorted.
	Ports []int32
}

// RemovalOrder ranks a per-namespace policy for removal, lowest first: the allow-nothing policy
// goes before the allow policies, so no moment has it without them beside it; the namespace's
// allow policy before the exemptions' (which carry its rules too, see ForNamespace), so no moment
// has an exempted port's pods under the allow policy alone; and the STRICT policy before the
// exemptions, so no moment has an exempted port STRICT.
func RemovalOrder(name string) int {
	switch name {
	case AllowNothingName, WaypointAllowNothingName:
		return 0
	case StrictName:
		return 1
	case AllowName, WaypointAllowName:
		return 2
	}
	return 3
}

// Stale is what the ladder deletes after applying desired (ForNamespace's set, in its order):
// the per-namespace policies of current that desired does not hold, in the order they must go
// (RemovalOrder). Together the two make the whole write sequence of a namespace's move, which
// must admit at every write each call that both its start and its end admit.
func Stale(desired, current []*unstructured.Unstructured) []*unstructured.Unstructured {
	want := map[string]bool{}
	for _, p := range desired {
		want[p.GetKind()+"/"+p.GetName()] = true
	}
	var out []*unstructured.Unstructured
	for _, p := range current {
		if !want[p.GetKind()+"/"+p.GetName()] && PerNamespace(p.GetName()) {
			out = append(out, p)
		}
	}
	slices.SortStableFunc(out, func(a, b *unstructured.Unstructured) int {
		return RemovalOrder(a.GetName()) - RemovalOrder(b.GetName())
	})
	return out
}

// Kinds lists the policy kinds, for watches, pruning and clean-up.
func Kinds() []schema.GroupVersionKind {
	return []schema.GroupVersionKind{PeerAuthenticationGVK, AuthorizationPolicyGVK}
}

// MeshWide is the mesh-wide PeerAuthentication: PERMISSIVE, so that injected and uninjected
// workloads keep talking while namespaces climb the ladder.
func MeshWide(installation, rootNamespace string) *unstructured.Unstructured {
	u := apply.Owned(PeerAuthenticationGVK, installation, rootNamespace, MeshWideName)
	u.Object["spec"] = map[string]any{"mtls": map[string]any{"mode": "PERMISSIVE"}}
	return u
}

// ForNamespace is the set of policies a namespace carries for its effects, in the order they
// must be applied; a policy not in the set is removed (Stale, in RemovalOrder).
//
// Under Istio's semantics an enforced ALLOW policy denies, on the pods it selects, every call that
// no enforced ALLOW policy there matches. So the order is chosen for the moments between writes:
// an exemption's ALLOW carries the namespace's allow rules beside its ports (its pods are never
// under one without the other), and enforcement comes on most specific first (the exemptions',
// then the namespace's allow, then allow-nothing). The dry-run policies are written in the same
// order: proxyless gRPC ignores istio.io/dry-run and enforces them as they come. Applied this
// way, no write denies a call that both the start and the end of the move admit
// (test/trafficsim's TestPolicyMovesNeverBreakACallBothEndsAdmit replays the ladder's moves).
// The ladder never takes enforced policies back to a dry-run (a ZeroTrust climb is rolled back
// to MutualTLS, which removes them; see ladder.EffectsOf), the one move this order would not
// make safe.
func ForNamespace(installation, namespace string, allowFrom []string, exemptions []Exemption, e ladder.Effects) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	if e.Strict {
		// The exemptions first, so that no moment has the namespace STRICT on their ports.
		for _, x := range exemptions {
			out = append(out, exemptPeerAuthentication(installation, namespace, x))
		}
		u := apply.Owned(PeerAuthenticationGVK, installation, namespace, StrictName)
		u.Object["spec"] = map[string]any{"mtls": map[string]any{"mode": "STRICT"}}
		out = append(out, u)
	}
	if !e.Authorization {
		return out
	}
	var authz []*unstructured.Unstructured
	for _, x := range exemptions {
		authz = append(authz, exemptAuthorizationPolicy(installation, namespace, x, allowRule(namespace, allowFrom)))
	}
	allow := apply.Owned(AuthorizationPolicyGVK, installation, namespace, AllowName)
	allow.Object["spec"] = map[string]any{"action": "ALLOW", "rules": []any{allowRule(namespace, allowFrom)}}
	nothing := apply.Owned(AuthorizationPolicyGVK, installation, namespace, AllowNothingName)
	nothing.Object["spec"] = map[string]any{}
	authz = append(authz, allow, nothing)
	for _, u := range authz {
		if e.DryRun {
			u.SetAnnotations(map[string]string{DryRunAnnotation: "true"})
		}
		out = append(out, u)
	}
	return append(out, AtWaypoint(installation, namespace, allowFrom, e)...)
}

// allowRule is the allow policy's rule: calls from the namespace itself and allowFrom. A new map
// each time: no two objects share one.
func allowRule(namespace string, allowFrom []string) map[string]any {
	return map[string]any{"from": []any{map[string]any{"source": map[string]any{"namespaces": allowSources(namespace, allowFrom)}}}}
}

// AtWaypoint is ZeroTrust's allow and allow-nothing policies attached to the namespace's
// waypoint, in that order, while the operator's waypoint is kept (Effects.Waypoint: never someone
// else's Gateway), in dry-run with the others. The adoption stage writes them before the label
// that sends traffic through the waypoint, too.
func AtWaypoint(installation, namespace string, allowFrom []string, e ladder.Effects) []*unstructured.Unstructured {
	if !e.Authorization || !e.Waypoint {
		return nil
	}
	out := []*unstructured.Unstructured{atWaypoint(installation, namespace, WaypointAllowName, allowRule(namespace, allowFrom)),
		atWaypoint(installation, namespace, WaypointAllowNothingName, nil)}
	for _, u := range out {
		if e.DryRun {
			u.SetAnnotations(map[string]string{DryRunAnnotation: "true"})
		}
	}
	return out
}

// KeptExemptions are the exemptions of current (the namespace's policies as listed) that desired
// does not hold, to be kept while some of the namespace's plaintextPorts cannot be resolved
// (removing one would make a webhook's port STRICT): written before desired, the
// PeerAuthentications as they are, the AuthorizationPolicies with their selector and ports but
// the allow rule and dry-run of effects e (a kept one must not keep admitting a namespace taken
// out of allowFrom, nor stay in a dry-run that was enforced), and none without authorization.
func KeptExemptions(installation, namespace string, allowFrom []string, desired, current []*unstructured.Unstructured, e ladder.Effects) []*unstructured.Unstructured {
	want := map[string]*unstructured.Unstructured{}
	for _, p := range desired {
		want[p.GetKind()+"/"+p.GetName()] = p
	}
	var pas, aps []*unstructured.Unstructured
	for _, cur := range current {
		if !strings.HasPrefix(cur.GetName(), PlaintextPrefix) {
			continue
		}
		if d := want[cur.GetKind()+"/"+cur.GetName()]; d != nil {
			keepPorts(d, cur) // a Service with a port resolved and one not: both stay exempted
			continue
		}
		spec, _, _ := unstructured.NestedMap(cur.Object, "spec")
		u := apply.Owned(cur.GroupVersionKind(), installation, namespace, cur.GetName())
		switch cur.GetKind() {
		case PeerAuthenticationGVK.Kind:
			u.Object["spec"] = spec
			pas = append(pas, u)
		case AuthorizationPolicyGVK.Kind:
			rules, _, _ := unstructured.NestedSlice(cur.Object, "spec", "rules")
			if !e.Authorization || len(rules) == 0 {
				continue
			}
			allowRule := map[string]any{"from": []any{map[string]any{"source": map[string]any{"namespaces": allowSources(namespace, allowFrom)}}}}
			u.Object["spec"] = map[string]any{"selector": spec["selector"], "action": "ALLOW", "rules": []any{rules[0], allowRule}}
			if e.DryRun {
				u.SetAnnotations(map[string]string{DryRunAnnotation: "true"})
			}
			aps = append(aps, u)
		}
	}
	return append(pas, aps...)
}

// keepPorts adds to a desired exemption the ports its current version exempts and it does not.
func keepPorts(desired, current *unstructured.Unstructured) {
	switch desired.GetKind() {
	case PeerAuthenticationGVK.Kind:
		had, _, _ := unstructured.NestedMap(current.Object, "spec", "portLevelMtls")
		ports, _, _ := unstructured.NestedMap(desired.Object, "spec", "portLevelMtls")
		for p, v := range had {
			if _, ok := ports[p]; !ok && ports != nil {
				ports[p] = v
			}
		}
		_ = unstructured.SetNestedMap(desired.Object, ports, "spec", "portLevelMtls")
	case AuthorizationPolicyGVK.Kind:
		had := exemptedPorts(current)
		rules, _, _ := unstructured.NestedSlice(desired.Object, "spec", "rules")
		ports := exemptedPorts(desired)
		for _, p := range had {
			if !slices.Contains(ports, p) {
				ports = append(ports, p)
			}
		}
		if len(rules) == 0 {
			return
		}
		slices.SortFunc(ports, func(a, b any) int { // numbers as strings: shorter is smaller
			x, _ := a.(string)
			y, _ := b.(string)
			return cmp.Or(len(x)-len(y), strings.Compare(x, y))
		})
		rules[0] = map[string]any{"to": []any{map[string]any{"operation": map[string]any{"ports": ports}}}}
		_ = unstructured.SetNestedSlice(desired.Object, rules, "spec", "rules")
	}
}

// exemptedPorts are the ports of an exemption's AuthorizationPolicy (its first rule's).
func exemptedPorts(u *unstructured.Unstructured) []any {
	rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
	if len(rules) == 0 {
		return nil
	}
	first, _ := rules[0].(map[string]any)
	to, _ := first["to"].([]any)
	if len(to) == 0 {
		return nil
	}
	op, _, _ := unstructured.NestedSlice(map[string]any{"x": to[0]}, "x", "operation", "ports")
	return op
}

// allowSources is the namespaces the allow rule admits: the namespace itself and allowFrom, once
// each.
func allowSources(namespace string, allowFrom []string) []any {
	sources := []any{namespace}
	for _, ns := range allowFrom {
		if !slices.Contains(sources, any(ns)) {
			sources = append(sources, ns)
		}
	}
	return sources
}

// atWaypoint is an AuthorizationPolicy the namespace's waypoint enforces (attached to its
// Gateway): ALLOW with rule, or allow-nothing without. Written while the waypoint exists, before
// the namespace's traffic is sent through it. A plaintextPorts exemption has no counterpart here:
// callers outside the mesh do not go through a waypoint, and mesh callers that do are judged as
// on any other port.
func atWaypoint(installation, namespace, name string, rule map[string]any) *unstructured.Unstructured {
	u := apply.Owned(AuthorizationPolicyGVK, installation, namespace, name)
	spec := map[string]any{"targetRefs": []any{map[string]any{"group": waypoint.GVK.Group, "kind": waypoint.GVK.Kind, "name": waypoint.Name}}}
	if rule != nil {
		spec["action"], spec["rules"] = "ALLOW", []any{rule}
	}
	u.Object["spec"] = spec
	return u
}

// exemptPeerAuthentication leaves an exemption's ports PERMISSIVE on its Service's pods. Istio
// honours port-level settings only in a policy with a workload selector, keyed by the pods'
// port (not the Service's); the rest of the pods' ports stay STRICT.
func exemptPeerAuthentication(installation, namespace string, x Exemption) *unstructured.Unstructured {
	u := apply.Owned(PeerAuthenticationGVK, installation, namespace, PlaintextPrefix+x.Service)
	ports := map[string]any{}
	for _, p := range x.Ports {
		ports[strconv.Itoa(int(p))] = map[string]any{"mode": "PERMISSIVE"}
	}
	u.Object["spec"] = map[string]any{
		"selector":      map[string]any{"matchLabels": stringMap(x.Selector)},
		"mtls":          map[string]any{"mode": "STRICT"},
		"portLevelMtls": ports,
	}
	return u
}

// exemptAuthorizationPolicy admits any caller (one without a mesh identity too) on an
// exemption's ports of its Service's pods, and what allowRule (the namespace's allow policy's
// rule) admits on all their ports, so that the pods it selects are never, between two writes,
// under it without the allow rule or under the allow policy without it.
func exemptAuthorizationPolicy(installation, namespace string, x Exemption, allowRule map[string]any) *unstructured.Unstructured {
	u := apply.Owned(AuthorizationPolicyGVK, installation, namespace, PlaintextPrefix+x.Service)
	ports := make([]any, len(x.Ports))
	for i, p := range x.Ports {
		ports[i] = strconv.Itoa(int(p))
	}
	u.Object["spec"] = map[string]any{
		"selector": map[string]any{"matchLabels": stringMap(x.Selector)},
		"action":   "ALLOW",
		"rules":    []any{map[string]any{"to": []any{map[string]any{"operation": map[string]any{"ports": ports}}}}, allowRule},
	}
	return u
}

func stringMap(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
