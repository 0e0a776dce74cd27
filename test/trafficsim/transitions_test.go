package trafficsim

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/policy"
)

// The operator's policy writes judged by the simulator's rules (Istio's documented semantics,
// pinned by the other tests of this package): this is a judgement by a simulator, not a
// measurement on a real data plane.

// policyState is the namespace's policies at one moment, keyed by kind and name.
type policyState map[string]*unstructured.Unstructured

func key(u *unstructured.Unstructured) string { return u.GetKind() + "/" + u.GetName() }

// listed is the state as the ladder lists it before pruning: PeerAuthentications, then
// AuthorizationPolicies, each by name (the API server's order).
func (s policyState) listed() []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, gvk := range policy.Kinds() {
		var names []string
		for k, u := range s {
			if u.GetKind() == gvk.Kind {
				names = append(names, k)
			}
		}
		slices.Sort(names)
		for _, k := range names {
			out = append(out, s[k])
		}
	}
	return out
}

// mesh is what the simulator's rules read from the state: the operator's mesh-wide PERMISSIVE
// policy beside the namespace's.
func (s policyState) mesh() Mesh {
	m := Mesh{RootNamespace: "istio-system", TrustDomain: "cluster.local"}
	m.PeerAuthns = append(m.PeerAuthns, parsePeerAuthn(policy.MeshWide("m", m.RootNamespace)))
	for _, u := range s.listed() {
		if u.GetKind() == policy.PeerAuthenticationGVK.Kind {
			m.PeerAuthns = append(m.PeerAuthns, parsePeerAuthn(u))
		} else {
			p, _ := parseAuthzPolicy(u)
			m.AuthzPolicies = append(m.AuthzPolicies, p)
		}
	}
	return m
}

// nsPolicies is one position of a namespace: its ladder effects, allowFrom and exemptions.
type nsPolicies struct {
	effects    ladder.Effects
	allowFrom  []string
	exemptions []policy.Exemption
}

func (n nsPolicies) desired() []*unstructured.Unstructured {
	return policy.ForNamespace("m", "shop", n.allowFrom, n.exemptions, n.effects)
}

// call is one kind of call into shop the judgement checks.
type call struct {
	caller Peer
	dest   Peer
	port   int
}

func (c call) String() string {
	from := c.caller.Namespace + "/" + c.caller.Workload
	if c.caller.External {
		from = "external"
	}
	return fmt.Sprintf("%s → shop/%s:%d", from, c.dest.Workload, c.port)
}

// shopCalls: shop's web pods serve a webhook on 8443 (the exempted port of Service hook) and the
// app on 8080; its api pods serve 8080. Callers: shop itself, legacy (in the mesh, the allowFrom
// of some positions), stranger (in the mesh, never allowed), a pod outside the mesh, and the
// kube-apiserver (external).
func shopCalls() []call {
	web := Peer{Namespace: "shop", Workload: "web", Labels: map[string]string{"app": "web"}, HasProxy: true}
	api := Peer{Namespace: "shop", Workload: "api", Labels: map[string]string{"app": "api"}, HasProxy: true}
	callers := []Peer{
		{Namespace: "shop", Workload: "front", HasProxy: true},
		{Namespace: "legacy", Workload: "client", HasProxy: true},
		{Namespace: "stranger", Workload: "x", HasProxy: true},
		{Namespace: "outside", Workload: "plain"},
		{External: true},
	}
	var out []call
	for _, caller := range callers {
		for _, dest := range []Peer{web, api} {
			for _, port := range []int{8080, 8443} {
				out = append(out, call{caller, dest, port})
			}
		}
	}
	return out
}

// admitted is whether each call reaches its application under state.
func admitted(s policyState, calls []call) []bool {
	m := s.mesh()
	out := make([]bool, len(calls))
	for i, c := range calls {
		out[i] = Decide(m, c.caller, c.dest, c.port).Outcome == Succeeded
	}
	return out
}

// move replays the ladder's writes from one position to another (syncPolicies: every desired
// policy applied in ForNamespace's order, then the stale ones deleted in Stale's order) and
// returns, for every write, the calls admitted both before and after the move that the write
// leaves refused or denied.
func move(from, to nsPolicies) []string {
	state := policyState{}
	for _, u := range from.desired() {
		state[key(u)] = u
	}
	calls := shopCalls()
	before := admitted(state, calls)
	after := func() []bool {
		end := policyState{}
		for _, u := range to.desired() {
			end[key(u)] = u
		}
		return admitted(end, calls)
	}()
	var broken []string
	check := func(write string) {
		now := admitted(state, calls)
		for i, c := range calls {
			if before[i] && after[i] && !now[i] {
				v := Decide(state.mesh(), c.caller, c.dest, c.port)
				broken = append(broken, fmt.Sprintf("after %s: %s %s", write, c, v.Outcome))
			}
		}
	}
	desired := to.desired()
	for _, u := range desired {
		state[key(u)] = u
		dry := ""
		if u.GetAnnotations()[policy.DryRunAnnotation] == "true" {
			dry = " (dry-run)"
		}
		check("applying " + key(u) + dry)
	}
	for _, u := range policy.Stale(desired, state.listed()) {
		delete(state, key(u))
		check("deleting " + key(u))
	}
	return broken
}

// TestPolicyMovesNeverBreakACallBothEndsAdmit: every move of a namespace between ladder positions
// (any two of Observe, MutualTLS, ZeroTrust in its dry-run and enforced, with and without an
// exempted webhook port, and allowFrom changes at ZeroTrust; all but backToDryRun), replayed
// write by write as the ladder makes it, never refuses or denies, at any write, a call that both the start and the end
// admit. A call that only one end admits may change at any write: that is the move itself.
func TestPolicyMovesNeverBreakACallBothEndsAdmit(t *testing.T) {
	hook := []policy.Exemption{{Service: "hook", Selector: map[string]string{"app": "web"}, Ports: []int32{8443}}}
	effects := map[string]ladder.Effects{
		"Observe":           {Inject: true},
		"MutualTLS":         {Inject: true, Strict: true},
		"ZeroTrust dry-run": {Inject: true, Strict: true, Authorization: true, DryRun: true},
		"ZeroTrust":         {Inject: true, Strict: true, Authorization: true},
	}
	positions := map[string]nsPolicies{}
	for name, e := range effects {
		for _, allow := range [][]string{nil, {"legacy"}} {
			for _, x := range [][]policy.Exemption{nil, hook} {
				label := fmt.Sprintf("%s allowFrom=%v exempt=%v", name, allow, x != nil)
				positions[label] = nsPolicies{effects: e, allowFrom: allow, exemptions: x}
			}
		}
	}
	for fromName, from := range positions {
		for toName, to := range positions {
			if fromName == toName || backToDryRun(from, to) {
				continue
			}
			t.Run(fromName+" → "+toName, func(t *testing.T) {
				if broken := move(from, to); len(broken) > 0 {
					t.Errorf("calls both ends admit are broken mid-move:\n%s", strings.Join(broken, "\n"))
				}
			})
		}
	}
}

// backToDryRun is a move from enforced AuthorizationPolicies back to their dry-run, which the
// ladder never makes: the dry-run is only the first phase of a climb from MutualTLS, and a
// ZeroTrust climb that fails is rolled back to MutualTLS, removing them (ladder.EffectsOf).
// ForNamespace writes dry-run policies in the enforcing order, since proxyless gRPC enforces
// them, so this move would have a window.
func backToDryRun(from, to nsPolicies) bool {
	return from.effects.Authorization && !from.effects.DryRun && to.effects.Authorization && to.effects.DryRun
}

// TestMoveJudgementCanFail: the judgement above catches a write order with a window: STRICT
// applied before the exemption that keeps the webhook's port PERMISSIVE.
func TestMoveJudgementCanFail(t *testing.T) {
	hook := policy.Exemption{Service: "hook", Selector: map[string]string{"app": "web"}, Ports: []int32{8443}}
	state := policyState{}
	calls := shopCalls()
	before := admitted(state, calls)
	desired := policy.ForNamespace("m", "shop", nil, []policy.Exemption{hook}, ladder.Effects{Inject: true, Strict: true})
	if len(desired) != 2 || desired[1].GetName() != policy.StrictName {
		t.Fatalf("desired = %v, want the exemption then STRICT", desired)
	}
	state[key(desired[1])] = desired[1] // the wrong order: STRICT alone first
	now := admitted(state, calls)
	for i, c := range calls {
		if c.caller.External && c.dest.Workload == "web" && c.port == 8443 {
			if !before[i] || now[i] {
				t.Errorf("%s: admitted before %v, with STRICT alone %v; want true, false", c, before[i], now[i])
			}
			return
		}
	}
	t.Fatal("no external call to the webhook port among the calls")
}
