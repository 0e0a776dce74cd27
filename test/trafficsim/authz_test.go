package trafficsim

import "testing"

// TestSimulatorAuthorize pins the simulated RBAC decision (enforced and dry-run) to Istio's authorization semantics.
func TestSimulatorAuthorize(t *testing.T) {
	tests := map[string]struct {
		policies     []AuthzPolicy
		principal    string // "" = plaintext caller
		port         int
		denied       bool
		shadowDenied bool
	}{
		// AUTHZ: "If there are no ALLOW policies for the workload, allow the request."
		"no policy allows": {nil, "", 8080, false, false},
		// AUTHZ: "If there are any DENY policies that match the request, deny the request" — before ALLOW.
		"DENY before ALLOW": {[]AuthzPolicy{allowFrom("all", false, Rule{}), denyFrom("web", false, fromNS("web"))}, frontSpID, 8080, true, false},
		// AUTHZ: allow-nothing: an ALLOW policy with no rules matches nothing, so everything is denied.
		"allow-nothing": {[]AuthzPolicy{allowFrom("allow-nothing", false)}, frontSpID, 8080, true, false},
		// AP: a rule {} (allow-all example) matches every request.
		"empty rule allows all": {[]AuthzPolicy{allowFrom("allow-all", false, Rule{})}, "", 8080, false, false},
		// AUTHZ: "If any of the ALLOW policies match the request, allow the request."
		"ALLOW namespaces with peer": {[]AuthzPolicy{allowFrom("nothing", false), allowFrom("web", false, fromNS("web"))}, frontSpID, 8080, false, false},
		// AP Source.namespaces "requires mTLS enabled"; SEC-2021-4: never matches plaintext.
		"ALLOW namespaces without peer": {[]AuthzPolicy{allowFrom("web", false, fromNS("web"))}, "", 8080, true, false},
		"ALLOW namespaces other ns":     {[]AuthzPolicy{allowFrom("shop", false, fromNS("shop"))}, frontSpID, 8080, true, false},
		// AP: prefix and suffix wildcards in namespaces.
		"namespaces prefix wildcard": {[]AuthzPolicy{allowFrom("w", false, fromNS("we*"))}, frontSpID, 8080, false, false},
		"namespaces suffix wildcard": {[]AuthzPolicy{allowFrom("w", false, fromNS("*eb"))}, frontSpID, 8080, false, false},
		// SEC-2021-4: "notNamespaces will be compared to an empty value when mTLS is not used" — it matches.
		"ALLOW notNamespaces without peer allows": {[]AuthzPolicy{allowFrom("not-foo", false, notFromNS("foo"))}, "", 8080, false, false},
		"DENY notNamespaces without peer denies":  {[]AuthzPolicy{denyFrom("not-shop", false, notFromNS("shop"))}, "", 8080, true, false},
		"DENY notNamespaces own ns with peer":     {[]AuthzPolicy{denyFrom("not-web", false, notFromNS("web"))}, frontSpID, 8080, false, false},
		// AP Source.principals: exact, prefix "*", suffix "*", and "*" (any authenticated peer).
		"principals exact":            {[]AuthzPolicy{allowFrom("p", false, fromP("cluster.local/ns/web/sa/front"))}, frontSpID, 8080, false, false},
		"principals suffix wildcard":  {[]AuthzPolicy{allowFrom("p", false, fromP("*/sa/front"))}, frontSpID, 8080, false, false},
		"principals prefix wildcard":  {[]AuthzPolicy{allowFrom("p", false, fromP("cluster.local/ns/web/*"))}, frontSpID, 8080, false, false},
		"principals star needs peer":  {[]AuthzPolicy{allowFrom("p", false, fromP("*"))}, "", 8080, true, false},
		"principals mismatch":         {[]AuthzPolicy{allowFrom("p", false, fromP("cluster.local/ns/web/sa/back"))}, frontSpID, 8080, true, false},
		"notPrincipals without peer":  {[]AuthzPolicy{denyFrom("p", false, Rule{From: []Source{{NotPrincipals: []string{"*"}}}})}, "", 8080, true, false},
		"notPrincipals matching peer": {[]AuthzPolicy{denyFrom("p", false, Rule{From: []Source{{NotPrincipals: []string{"*"}}}})}, frontSpID, 8080, false, false},
		// AP Operation.ports / notPorts.
		"ports match":    {[]AuthzPolicy{allowFrom("p", false, Rule{To: []Operation{{Ports: []int{8080}}}})}, "", 8080, false, false},
		"ports mismatch": {[]AuthzPolicy{allowFrom("p", false, Rule{To: []Operation{{Ports: []int{9090}}}})}, "", 8080, true, false},
		"notPorts":       {[]AuthzPolicy{denyFrom("p", false, Rule{To: []Operation{{NotPorts: []int{8080}}}})}, "", 9090, true, false},
		// DRY-RUN: a dry-run policy is evaluated (shadow result) but never enforced.
		"dry-run allow-nothing shadow denies": {[]AuthzPolicy{allowFrom("allow-nothing", true)}, frontSpID, 8080, false, true},
		"dry-run allow same ns passes":        {[]AuthzPolicy{allowFrom("allow-nothing", true), allowFrom("web", true, fromNS("web"))}, frontSpID, 8080, false, false},
		"dry-run DENY matching":               {[]AuthzPolicy{denyFrom("web", true, fromNS("web"))}, frontSpID, 8080, false, true},
		// DRY-RUN + AUTHZ order: the ALLOW filter (and its shadow rules) is not reached after a DENY.
		"enforced DENY skips ALLOW shadow": {[]AuthzPolicy{denyFrom("web", false, fromNS("web")), allowFrom("allow-nothing", true)}, frontSpID, 8080, true, false},
		// AP: rules this simulator cannot evaluate never match (logged as unsupported).
		"unsupported rule never matches": {[]AuthzPolicy{allowFrom("p", false, Rule{Unsupported: []string{"when"}})}, frontSpID, 8080, true, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := Authorize(root, appPod, tc.port, tc.principal, tc.policies)
			if got.Denied != tc.denied || got.ShadowDenied != tc.shadowDenied {
				t.Errorf("Authorize = denied %v shadowDenied %v, want %v %v (filters %+v)", got.Denied, got.ShadowDenied, tc.denied, tc.shadowDenied, got.Filters)
			}
		})
	}
}

// TestSimulatorAuthorizeSelection pins which AuthorizationPolicies attach to a sidecar workload.
func TestSimulatorAuthorizeSelection(t *testing.T) {
	nothing := AuthzPolicy{Action: ActionAllow} // allow-nothing: applied means denied
	at := func(ns string, mod func(*AuthzPolicy)) []AuthzPolicy {
		p := nothing
		p.Namespace, p.Name = ns, "p"
		if mod != nil {
			mod(&p)
		}
		return []AuthzPolicy{p}
	}
	tests := map[string]struct {
		policies []AuthzPolicy
		applies  bool
	}{
		// AUTHZ: a policy without selector applies to every workload of its namespace.
		"same namespace": {at("shop", nil), true},
		// AUTHZ: a policy in the root namespace applies to all namespaces.
		"root namespace": {at(root, nil), true},
		// AUTHZ: other namespaces' policies do not apply.
		"other namespace": {at("web", nil), false},
		// AP selector: must match the workload's labels.
		"selector match":    {at("shop", func(p *AuthzPolicy) { p.Selector = map[string]string{"app": "api"} }), true},
		"selector mismatch": {at("shop", func(p *AuthzPolicy) { p.Selector = map[string]string{"app": "db"} }), false},
		// AP targetRef(s): for gateways/waypoints, never a sidecar.
		"targetRef ignored": {at("shop", func(p *AuthzPolicy) { p.TargetRef = true }), false},
		// Simulator scope: CUSTOM (external authorizer) and AUDIT never deny here.
		"CUSTOM ignored": {at("shop", func(p *AuthzPolicy) { p.Action = ActionCustom }), false},
		"AUDIT ignored":  {at("shop", func(p *AuthzPolicy) { p.Action = ActionAudit }), false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Authorize(root, appPod, 8080, frontSpID, tc.policies).Denied; got != tc.applies {
				t.Errorf("allow-nothing applied = %v, want %v", got, tc.applies)
			}
		})
	}
}

// TestSimulatorRBACFilters pins the per-action RBAC filters whose stats the simulator exports.
func TestSimulatorRBACFilters(t *testing.T) {
	tests := map[string]struct {
		policies []AuthzPolicy
		want     []FilterResult
	}{
		// Envoy RBAC (DRY-RUN): dry-run ALLOW policies are the ALLOW filter's shadow rules only.
		"dry-run only": {[]AuthzPolicy{allowFrom("allow-nothing", true)},
			[]FilterResult{{Action: ActionAllow, Shadow: true, Evaluated: true, ShadowAllowed: false}}},
		// Istio's builder: one filter per action, DENY first; each moves its own enforce stats.
		"deny and allow": {[]AuthzPolicy{allowFrom("all", false, Rule{}), denyFrom("none", false)},
			[]FilterResult{{Action: ActionDeny, Enforced: true, Evaluated: true, Allowed: true},
				{Action: ActionAllow, Enforced: true, Evaluated: true, Allowed: true}}},
		// Envoy's HTTP RBAC filter stops the chain on a denial: the next filter is not evaluated.
		"denied stops": {[]AuthzPolicy{denyFrom("all", false, Rule{}), allowFrom("x", true, Rule{})},
			[]FilterResult{{Action: ActionDeny, Enforced: true, Evaluated: true, Allowed: false},
				{Action: ActionAllow, Shadow: true}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := Authorize(root, appPod, 8080, frontSpID, tc.policies).Filters
			if len(got) != len(tc.want) {
				t.Fatalf("filters = %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("filter %d = %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}
