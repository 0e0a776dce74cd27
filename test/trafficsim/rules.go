package trafficsim

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// MTLSMode is a PeerAuthentication mutual TLS mode; the simulator needs it to decide whether a
// destination sidecar refuses, accepts or downgrades a connection.
type MTLSMode string

// The PeerAuthentication modes, spelled as in the API.
const (
	ModeUnset      MTLSMode = "UNSET"
	ModeDisable    MTLSMode = "DISABLE"
	ModePermissive MTLSMode = "PERMISSIVE"
	ModeStrict     MTLSMode = "STRICT"
)

func (m MTLSMode) unset() bool { return m == "" || m == ModeUnset }

// Action is an AuthorizationPolicy action; the simulator needs it to build Envoy's per-action
// RBAC filters.
type Action string

// The AuthorizationPolicy actions, spelled as in the API ("" means ALLOW).
const (
	ActionAllow  Action = "ALLOW"
	ActionDeny   Action = "DENY"
	ActionAudit  Action = "AUDIT"
	ActionCustom Action = "CUSTOM"
)

// Outcome is what became of one simulated request or connection, so tests can assert what the
// metrics should show.
type Outcome string

// The outcomes of a simulated call.
const (
	Succeeded   Outcome = "Succeeded"   // reached the application
	Refused     Outcome = "Refused"     // plaintext refused by a STRICT destination
	Denied      Outcome = "Denied"      // denied by an enforced authorization policy
	Unavailable Outcome = "Unavailable" // the destination workload had no running pod
	// AppUnreachable: the destination's proxy accepted the call but could not connect to its
	// application (see BehindProxy).
	AppUnreachable Outcome = "AppUnreachable"
	// TimedOut: the caller's proxy gave up on the request at its route's timeout (see
	// RouteTimeout).
	TimedOut Outcome = "TimedOut"
)

// Peer is one end of a simulated call as the rules see it: a pod of a workload (or an external
// caller), its identity and whether it runs the proxy.
type Peer struct {
	Namespace      string
	Workload       string // the Deployment's name
	ServiceAccount string // "" means "default"
	Labels         map[string]string
	HasProxy       bool
	External       bool   // outside the mesh and the cluster: no proxy, no identity
	Cluster        string // Istio's cluster ID, for the *_cluster labels
}

// Principal is the SPIFFE identity Istio issues to the peer's service account.
func (p Peer) Principal(trustDomain string) string {
	sa := p.ServiceAccount
	if sa == "" {
		sa = "default"
	}
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", trustDomain, p.Namespace, sa)
}

// Identity is what a proxy reports about one side of a call in the standard metrics' source_* or
// destination_* labels.
type Identity struct {
	Workload, Namespace, Principal, App, Version string
	CanonicalService, CanonicalRevision, Cluster string
}

// UnknownIdentity is how Envoy's stats filter labels a peer it knows nothing about (real output
// shows canonical revision "latest" there).
func UnknownIdentity() Identity {
	return Identity{Workload: "unknown", Namespace: "unknown", Principal: "unknown", App: "unknown",
		Version: "unknown", CanonicalService: "unknown", CanonicalRevision: "latest", Cluster: "unknown"}
}

// Identity labels a known workload; principal is "unknown" unless the call used mTLS. Canonical
// names follow Istio's label precedence (service.istio.io/canonical-*, app.kubernetes.io/*, app/version).
func (p Peer) Identity(principal string) Identity {
	first := func(fallback string, keys ...string) string {
		for _, k := range keys {
			if v := p.Labels[k]; v != "" {
				return v
			}
		}
		return fallback
	}
	return Identity{
		Workload: p.Workload, Namespace: p.Namespace, Principal: principal,
		App:               first("unknown", "app"),
		Version:           first("unknown", "version"),
		CanonicalService:  first(p.Workload, "service.istio.io/canonical-name", "app.kubernetes.io/name", "app"),
		CanonicalRevision: first("latest", "service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"),
		Cluster:           p.Cluster,
	}
}

// ReportedSource is how the destination sidecar names its caller: the peer certificate with
// mTLS; metadata discovery by IP for plaintext from an in-cluster pod (principal unknown);
// nothing at all for an external caller.
func ReportedSource(caller Peer, mtls bool, trustDomain string) Identity {
	if caller.External {
		return UnknownIdentity()
	}
	principal := "unknown"
	if mtls {
		principal = caller.Principal(trustDomain)
	}
	return caller.Identity(principal)
}

// ClientUsesMTLS is Istio's auto mTLS: a caller's sidecar originates Istio mTLS to a destination
// that has a sidecar, unless the destination disabled mTLS for the port.
func ClientUsesMTLS(callerProxy, destProxy bool, destMode MTLSMode) bool {
	return callerProxy && destProxy && destMode != ModeDisable
}

// PeerAuthn is the part of a PeerAuthentication the mode resolution reads.
type PeerAuthn struct {
	Namespace, Name string
	Created         time.Time
	Selector        map[string]string // empty: namespace-wide, or mesh-wide in the root namespace
	Mode            MTLSMode
	PortModes       map[int]MTLSMode // portLevelMtls; honoured only with a selector
}

func olderPeerAuthn(cur, cand *PeerAuthn) *PeerAuthn {
	switch {
	case cur == nil, cand.Created.Before(cur.Created):
		return cand
	case cur.Created.Before(cand.Created):
		return cur
	case cand.Name != cur.Name:
		if cand.Name < cur.Name {
			return cand
		}
		return cur
	case cand.Namespace < cur.Namespace:
		return cand
	}
	return cur
}

// ResolveMTLSMode is the effective mTLS mode of a destination pod's port, composed as Istio's
// ComposePeerAuthentication does: mesh, then namespace, then workload, then port level, each
// overriding the previous one unless UNSET; PERMISSIVE when nothing says otherwise.
func ResolveMTLSMode(rootNamespace string, dest Peer, port int, policies []PeerAuthn) MTLSMode {
	var mesh, namespace, workload *PeerAuthn
	for i := range policies {
		p := &policies[i]
		if (p.Namespace != dest.Namespace && p.Namespace != rootNamespace) || !selects(p.Selector, dest.Labels) {
			continue
		}
		switch {
		case len(p.Selector) == 0 && p.Namespace == rootNamespace:
			mesh = olderPeerAuthn(mesh, p)
		case len(p.Selector) == 0:
			namespace = olderPeerAuthn(namespace, p)
		case p.Namespace != rootNamespace:
			workload = olderPeerAuthn(workload, p)
		}
	}
	mode := ModePermissive
	for _, p := range []*PeerAuthn{mesh, namespace, workload} {
		if p != nil && !p.Mode.unset() {
			mode = p.Mode
		}
	}
	if workload != nil {
		if m, ok := workload.PortModes[port]; ok && !m.unset() {
			mode = m
		}
	}
	return mode
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// AuthzPolicy is the part of an AuthorizationPolicy the simulated RBAC filters read.
type AuthzPolicy struct {
	Namespace, Name string
	Selector        map[string]string
	TargetRef       bool   // has targetRef(s): such policies never attach to sidecars
	Action          Action // "" means ALLOW
	DryRun          bool   // istio.io/dry-run: evaluated as shadow rules only
	Rules           []Rule // none: the policy matches nothing
}

// Rule is one AuthorizationPolicy rule: it matches when one From and one To entry match (an empty
// list matches anything).
type Rule struct {
	From        []Source
	To          []Operation
	Unsupported []string // fields the simulator cannot evaluate: the rule then never matches
}

// Source is a rule's from[].source, limited to the identity fields the simulator supports.
type Source struct {
	Principals, NotPrincipals, Namespaces, NotNamespaces []string
}

// Operation is a rule's to[].operation, limited to ports.
type Operation struct {
	Ports, NotPorts []int
}

func (p AuthzPolicy) action() Action {
	if p.Action == "" {
		return ActionAllow
	}
	return p.Action
}

func (p AuthzPolicy) appliesTo(rootNamespace string, dest Peer) bool {
	return (p.Namespace == dest.Namespace || p.Namespace == rootNamespace) && !p.TargetRef && selects(p.Selector, dest.Labels)
}

// principalMatches follows Istio's StringMatcherWithPrefix over the peer's URI SAN; principal ""
// means no mTLS peer, which Envoy's "authenticated" matcher never matches.
func principalMatches(pattern, principal string) bool {
	if principal == "" {
		return false
	}
	const uri = "spiffe://"
	switch {
	case pattern == "*":
		return true
	case strings.HasPrefix(pattern, "*"):
		return regexp.MustCompile("^" + uri + ".*" + regexp.QuoteMeta(pattern[1:]) + "$").MatchString(principal)
	case strings.HasSuffix(pattern, "*"):
		return strings.HasPrefix(principal, uri+strings.TrimSuffix(pattern, "*"))
	}
	return principal == uri+pattern
}

// namespaceMatches follows Istio's srcNamespaceGenerator: ".*/ns/<ns>/.*" over the peer's URI
// SAN, each "*" in the value standing for ".*".
func namespaceMatches(pattern, principal string) bool {
	if principal == "" {
		return false
	}
	parts := strings.Split(pattern, "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile("^.*/ns/" + strings.Join(parts, ".*") + "/.*$").MatchString(principal)
}

func anyMatch(patterns []string, principal string, match func(string, string) bool) bool {
	for _, p := range patterns {
		if match(p, principal) {
			return true
		}
	}
	return false
}

func (s Source) matches(principal string) bool {
	if len(s.Principals) > 0 && !anyMatch(s.Principals, principal, principalMatches) {
		return false
	}
	if anyMatch(s.NotPrincipals, principal, principalMatches) {
		return false
	}
	if len(s.Namespaces) > 0 && !anyMatch(s.Namespaces, principal, namespaceMatches) {
		return false
	}
	return !anyMatch(s.NotNamespaces, principal, namespaceMatches)
}

func (o Operation) matches(port int) bool {
	has := func(ports []int) bool {
		for _, p := range ports {
			if p == port {
				return true
			}
		}
		return false
	}
	return (len(o.Ports) == 0 || has(o.Ports)) && !has(o.NotPorts)
}

func (r Rule) matches(port int, principal string) bool {
	if len(r.Unsupported) > 0 {
		return false
	}
	from := len(r.From) == 0
	for _, s := range r.From {
		from = from || s.matches(principal)
	}
	to := len(r.To) == 0
	for _, o := range r.To {
		to = to || o.matches(port)
	}
	return from && to
}

// Matches reports whether any rule of the policy matches a call to port from principal ("" for
// a plaintext caller). A policy without rules matches nothing.
func (p AuthzPolicy) Matches(port int, principal string) bool {
	for _, r := range p.Rules {
		if r.matches(port, principal) {
			return true
		}
	}
	return false
}

// FilterResult is what one Envoy RBAC filter (one per action) did with a call; the simulator
// turns it into the filter's rbac stats.
type FilterResult struct {
	Action        Action // DENY or ALLOW
	Enforced      bool   // the filter has enforced rules (allowed/denied stats move)
	Shadow        bool   // the filter has dry-run rules (shadow stats move)
	Evaluated     bool   // the call reached the filter (false after an earlier denial)
	Allowed       bool   // enforced result, when Enforced and Evaluated
	ShadowAllowed bool   // shadow result, when Shadow and Evaluated
}

// AuthzResult is the outcome of a destination sidecar's authorization of one call.
type AuthzResult struct {
	Denied       bool           // an enforced filter denied the call
	ShadowDenied bool           // a reached filter's dry-run rules would have denied it
	Filters      []FilterResult // the workload's RBAC filters in Envoy's order, DENY before ALLOW
}

// Authorize runs the destination's RBAC filters as Istio builds them: policies grouped by action
// (DENY then ALLOW; CUSTOM and AUDIT ignored), dry-run ones as each filter's shadow rules, the
// shadow engine evaluated before the enforced one, and evaluation stopping at the first denial.
func Authorize(rootNamespace string, dest Peer, port int, principal string, policies []AuthzPolicy) AuthzResult {
	var res AuthzResult
	for _, action := range []Action{ActionDeny, ActionAllow} {
		var enforced, shadow []AuthzPolicy
		for _, p := range policies {
			if p.action() != action || !p.appliesTo(rootNamespace, dest) {
				continue
			}
			if p.DryRun {
				shadow = append(shadow, p)
			} else {
				enforced = append(enforced, p)
			}
		}
		if len(enforced)+len(shadow) == 0 {
			continue
		}
		f := FilterResult{Action: action, Enforced: len(enforced) > 0, Shadow: len(shadow) > 0, Evaluated: !res.Denied}
		if f.Evaluated && f.Shadow {
			f.ShadowAllowed = engineAllows(action, shadow, port, principal)
			res.ShadowDenied = res.ShadowDenied || !f.ShadowAllowed
		}
		if f.Evaluated && f.Enforced {
			f.Allowed = engineAllows(action, enforced, port, principal)
			res.Denied = !f.Allowed
		}
		res.Filters = append(res.Filters, f)
	}
	return res
}

// engineAllows is Envoy's RBAC engine: ALLOW allows on a match, DENY denies on a match.
func engineAllows(action Action, policies []AuthzPolicy, port int, principal string) bool {
	matched := false
	for _, p := range policies {
		matched = matched || p.Matches(port, principal)
	}
	if action == ActionDeny {
		return !matched
	}
	return matched
}

// Mesh is the configuration the rules evaluate a call against.
type Mesh struct {
	RootNamespace string
	TrustDomain   string
	PeerAuthns    []PeerAuthn
	AuthzPolicies []AuthzPolicy
}

// Verdict is everything the simulator needs to report one call.
type Verdict struct {
	Outcome        Outcome
	Mode           MTLSMode    // the destination's effective mode (destination with a proxy)
	MTLS           bool        // the call used mTLS
	DestReports    bool        // the destination sidecar reports the call
	SecurityPolicy string      // connection_security_policy the destination reports
	Source         Identity    // the caller as the destination reports it
	Authz          AuthzResult // filters of the destination (evaluated unless refused)
}

// Decide applies the rules to one call from caller to dest's port.
func Decide(m Mesh, caller, dest Peer, port int) Verdict {
	v := Verdict{Outcome: Succeeded}
	if !dest.HasProxy {
		return v
	}
	v.Mode = ResolveMTLSMode(m.RootNamespace, dest, port, m.PeerAuthns)
	v.MTLS = ClientUsesMTLS(caller.HasProxy && !caller.External, true, v.Mode)
	principal := ""
	if v.MTLS {
		principal = caller.Principal(m.TrustDomain)
	}
	v.Authz = Authorize(m.RootNamespace, dest, port, principal, m.AuthzPolicies)
	if v.Mode == ModeStrict && !v.MTLS {
		v.Outcome = Refused
		v.Authz = AuthzResult{Filters: unevaluated(v.Authz.Filters)}
		return v
	}
	v.DestReports = true
	v.SecurityPolicy = "none"
	if v.MTLS {
		v.SecurityPolicy = "mutual_tls"
	}
	v.Source = ReportedSource(caller, v.MTLS, m.TrustDomain)
	if v.Authz.Denied {
		v.Outcome = Denied
	}
	return v
}

// BehindProxy applies what happens between a destination's proxy and its application to a call
// the proxy accepted: an application that listens on localhost only is out of the proxy's
// reach. Since Istio 1.10 the sidecar forwards inbound traffic to the pod's IP, not to localhost
// ("Upcoming networking changes in Istio 1.10",
// https://istio.io/latest/blog/2021/upcoming-networking-changes/), so such an application,
// reachable before its pod was injected, is not behind its proxy: the proxy's upstream
// connection fails, and it answers 503 with Envoy's flag UF (it closes a TCP connection with
// UF). Without a proxy the caller reaches the application directly, on the pod's IP, as before.
func BehindProxy(v Verdict, dest Peer, localhostOnly bool) Verdict {
	if dest.HasProxy && localhostOnly && v.DestReports && v.Outcome == Succeeded {
		v.Outcome = AppUnreachable
	}
	return v
}

// RouteTimeout applies the timeout of the route the caller's proxy takes to the destination
// (VirtualService http[].timeout, https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPRoute):
// Envoy's router gives up on a request its upstream has not answered within it and answers the
// caller 504, logging the response flag UT, "upstream request timeout in addition to 504
// response code" (https://www.envoyproxy.io/docs/envoy/latest/configuration/observability/access_log/usage#config-access-log-format-response-flags).
// Only a caller with a proxy has a route; an HTTP call the destination's application answers
// after latency, where latency exceeds a timeout set (zero is none), times out.
func RouteTimeout(v Verdict, caller Peer, proto Protocol, latency, timeout time.Duration) Verdict {
	if v.Outcome == Succeeded && proto == HTTP && caller.HasProxy && !caller.External && timeout > 0 && latency > timeout {
		v.Outcome = TimedOut
	}
	return v
}

func unevaluated(fs []FilterResult) []FilterResult {
	out := make([]FilterResult, len(fs))
	for i, f := range fs {
		out[i] = FilterResult{Action: f.Action, Enforced: f.Enforced, Shadow: f.Shadow}
	}
	return out
}

// parsePort reads an AuthorizationPolicy port value; Istio's validation accepts only numbers.
func parsePort(v string) (int, error) {
	p, err := strconv.Atoi(v)
	if err != nil || p < 0 || p > 65535 {
		return 0, fmt.Errorf("invalid port %q", v)
	}
	return p, nil
}
