package trafficsim

import (
	"testing"
	"time"
)

// Docs the cases cite:
//   AUTO-MTLS  https://istio.io/latest/docs/concepts/security/#auto-mutual-tls
//   PA         https://istio.io/latest/docs/reference/config/security/peer_authentication/
//   PA-CODE    istio.io/istio pilot/pkg/security/authn/policy_applier.go ComposePeerAuthentication
//   PA-CONCEPT https://istio.io/latest/docs/concepts/security/#peer-authentication
//   AUTHZ      https://istio.io/latest/docs/concepts/security/#authorization-policies
//   AP         https://istio.io/latest/docs/reference/config/security/authorization-policy/
//   SEC-2021-4 https://istio.io/latest/news/security/istio-security-2021-004/
//   DRY-RUN    https://istio.io/latest/docs/tasks/security/authorization/authz-dry-run/
//   METRICS    https://istio.io/latest/docs/reference/config/metrics/

const root = "istio-system"

var (
	appPod    = Peer{Namespace: "shop", Workload: "api", ServiceAccount: "api", Labels: map[string]string{"app": "api"}, HasProxy: true, Cluster: "Kubernetes"}
	plainPod  = Peer{Namespace: "legacy", Workload: "cron", Labels: map[string]string{"app": "cron"}, Cluster: "Kubernetes"}
	meshPod   = Peer{Namespace: "web", Workload: "front", ServiceAccount: "front", Labels: map[string]string{"app": "front"}, HasProxy: true, Cluster: "Kubernetes"}
	outsider  = Peer{External: true}
	frontSpID = "spiffe://cluster.local/ns/web/sa/front"
	t0        = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

// TestSimulatorClientUsesMTLS pins the caller side: Istio's auto mTLS.
func TestSimulatorClientUsesMTLS(t *testing.T) {
	tests := map[string]struct {
		callerProxy, destProxy bool
		mode                   MTLSMode
		want                   bool
	}{
		// AUTO-MTLS: a sidecar sends Istio mTLS to a destination that has a sidecar.
		"proxy to proxy (permissive)": {true, true, ModePermissive, true},
		"proxy to proxy (strict)":     {true, true, ModeStrict, true},
		// AUTO-MTLS: plaintext to workloads without a sidecar.
		"proxy to plain pod": {true, false, ModePermissive, false},
		// AUTO-MTLS: no caller sidecar, nobody originates mTLS.
		"plain caller": {false, true, ModeStrict, false},
		// AUTO-MTLS: istiod does not configure mTLS to a destination whose peer authentication is DISABLE.
		"destination DISABLE": {true, true, ModeDisable, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := ClientUsesMTLS(tc.callerProxy, tc.destProxy, tc.mode); got != tc.want {
				t.Errorf("ClientUsesMTLS = %v, want %v", got, tc.want)
			}
		})
	}
}

func pa(ns, name string, age time.Duration, sel map[string]string, mode MTLSMode, ports map[int]MTLSMode) PeerAuthn {
	return PeerAuthn{Namespace: ns, Name: name, Created: t0.Add(-age), Selector: sel, Mode: mode, PortModes: ports}
}

// TestSimulatorResolveMTLSMode pins PeerAuthentication precedence and inheritance.
func TestSimulatorResolveMTLSMode(t *testing.T) {
	api := map[string]string{"app": "api"}
	tests := map[string]struct {
		policies []PeerAuthn
		port     int
		want     MTLSMode
	}{
		// PA: "UNSET ... Otherwise treated as PERMISSIVE" — nothing configured at all.
		"no policy is permissive": {nil, 8080, ModePermissive},
		// PA-CONCEPT: a mesh-wide policy lives in the root namespace without a selector.
		"mesh strict": {[]PeerAuthn{pa(root, "default", 0, nil, ModeStrict, nil)}, 8080, ModeStrict},
		// PA-CONCEPT: namespace-wide policy overrides mesh-wide.
		"namespace over mesh": {[]PeerAuthn{pa(root, "default", 0, nil, ModeStrict, nil), pa("shop", "ns", 0, nil, ModePermissive, nil)}, 8080, ModePermissive},
		// PA-CONCEPT: workload-specific policy overrides namespace-wide.
		"workload over namespace": {[]PeerAuthn{pa("shop", "ns", 0, nil, ModePermissive, nil), pa("shop", "w", 0, api, ModeStrict, nil)}, 8080, ModeStrict},
		// PA: "UNSET: Inherit from parent" — namespace UNSET falls back to mesh.
		"namespace UNSET inherits mesh": {[]PeerAuthn{pa(root, "default", 0, nil, ModeStrict, nil), pa("shop", "ns", 0, nil, ModeUnset, nil)}, 8080, ModeStrict},
		// PA: an absent mtls block is UNSET too.
		"workload without mode inherits namespace": {[]PeerAuthn{pa("shop", "ns", 0, nil, ModeStrict, nil), pa("shop", "w", 0, api, "", nil)}, 8080, ModeStrict},
		// PA: portLevelMtls overrides the workload's mode for that port.
		"port level override":   {[]PeerAuthn{pa("shop", "w", 0, api, ModeStrict, map[int]MTLSMode{9090: ModeDisable})}, 9090, ModeDisable},
		"port level other port": {[]PeerAuthn{pa("shop", "w", 0, api, ModeStrict, map[int]MTLSMode{9090: ModeDisable})}, 8080, ModeStrict},
		// PA-CODE: a port-level UNSET inherits the workload level.
		"port level UNSET inherits": {[]PeerAuthn{pa("shop", "ns", 0, nil, ModeStrict, nil), pa("shop", "w", 0, api, "", map[int]MTLSMode{8080: ModeUnset})}, 8080, ModeStrict},
		// PA: portLevelMtls "only apply when a workload selector is specified".
		"port level ignored without selector": {[]PeerAuthn{pa("shop", "ns", 0, nil, ModeStrict, map[int]MTLSMode{8080: ModeDisable})}, 8080, ModeStrict},
		// PA: the selector must match the workload's labels.
		"selector not matching": {[]PeerAuthn{pa("shop", "w", 0, map[string]string{"app": "other"}, ModeStrict, nil)}, 8080, ModePermissive},
		// PA-CONCEPT: a namespace policy applies only to its own namespace.
		"other namespace": {[]PeerAuthn{pa("web", "ns", 0, nil, ModeStrict, nil)}, 8080, ModePermissive},
		// PA-CONCEPT: "If there are more than one ... policy for a given namespace, the oldest one wins".
		"oldest namespace policy wins": {[]PeerAuthn{pa("shop", "new", time.Minute, nil, ModeStrict, nil), pa("shop", "old", time.Hour, nil, ModeDisable, nil)}, 8080, ModeDisable},
		// PA-CODE (configCompareByCreationTime): equal creation times fall back to the name.
		"tie broken by name": {[]PeerAuthn{pa("shop", "b", 0, nil, ModeStrict, nil), pa("shop", "a", 0, nil, ModeDisable, nil)}, 8080, ModeDisable},
		// PA-CODE: a policy with a selector in the root namespace is not a workload policy elsewhere.
		"root namespace selector ignored": {[]PeerAuthn{pa(root, "sel", 0, api, ModeStrict, nil)}, 8080, ModePermissive},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := ResolveMTLSMode(root, appPod, tc.port, tc.policies); got != tc.want {
				t.Errorf("ResolveMTLSMode = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestSimulatorDecideTransport pins what a destination sidecar does with plaintext and mTLS per mode.
func TestSimulatorDecideTransport(t *testing.T) {
	strict := []PeerAuthn{pa("shop", "ns", 0, nil, ModeStrict, nil)}
	disable := []PeerAuthn{pa("shop", "ns", 0, nil, ModeDisable, nil)}
	noProxyDest := appPod
	noProxyDest.HasProxy = false
	tests := map[string]struct {
		caller, dest Peer
		pas          []PeerAuthn
		want         Outcome
		destReports  bool
		csp          string
	}{
		// PA: STRICT "Connection is an mTLS tunnel" — a plaintext caller is refused; nobody reports it.
		"STRICT refuses plaintext pod": {plainPod, appPod, strict, Refused, false, ""},
		"STRICT refuses external":      {outsider, appPod, strict, Refused, false, ""},
		// PA + AUTO-MTLS: an injected caller speaks mTLS, so STRICT accepts it.
		"STRICT accepts mTLS": {meshPod, appPod, strict, Succeeded, true, "mutual_tls"},
		// PA: PERMISSIVE "can be either plaintext or mTLS"; METRICS: connection_security_policy="none".
		"PERMISSIVE accepts plaintext": {plainPod, appPod, nil, Succeeded, true, "none"},
		"PERMISSIVE with mTLS caller":  {meshPod, appPod, nil, Succeeded, true, "mutual_tls"},
		// PA: DISABLE "Connection is not tunneled"; AUTO-MTLS sends plaintext there.
		"DISABLE with mTLS-capable caller": {meshPod, appPod, disable, Succeeded, true, "none"},
		// AUTHZ/PA apply in the destination's sidecar: without one the call just succeeds, unreported there.
		"destination without proxy": {plainPod, noProxyDest, strict, Succeeded, false, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			v := Decide(Mesh{RootNamespace: root, TrustDomain: "cluster.local", PeerAuthns: tc.pas}, tc.caller, tc.dest, 8080)
			if v.Outcome != tc.want || v.DestReports != tc.destReports || v.SecurityPolicy != tc.csp {
				t.Errorf("Decide = %s reports=%v csp=%q, want %s reports=%v csp=%q",
					v.Outcome, v.DestReports, v.SecurityPolicy, tc.want, tc.destReports, tc.csp)
			}
		})
	}
}

// TestSimulatorReportedSource pins how the destination names its caller in source_* labels.
func TestSimulatorReportedSource(t *testing.T) {
	tests := map[string]struct {
		caller                         Peer
		mtls                           bool
		workload, namespace, principal string
	}{
		// METRICS: with mTLS the destination knows the peer's workload and principal.
		"mTLS names the peer": {meshPod, true, "front", "web", frontSpID},
		// Package assumption (metadata discovery by IP): plaintext in-cluster caller is named, principal unknown.
		"plaintext pod via metadata discovery": {plainPod, false, "cron", "legacy", "unknown"},
		// METRICS: "unknown" when the source is outside the mesh.
		"external caller": {outsider, false, "unknown", "unknown", "unknown"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := ReportedSource(tc.caller, tc.mtls, "cluster.local")
			if got.Workload != tc.workload || got.Namespace != tc.namespace || got.Principal != tc.principal {
				t.Errorf("ReportedSource = %+v, want %s/%s/%s", got, tc.workload, tc.namespace, tc.principal)
			}
		})
	}
}

func allowFrom(name string, dryRun bool, rules ...Rule) AuthzPolicy {
	return AuthzPolicy{Namespace: "shop", Name: name, Action: ActionAllow, DryRun: dryRun, Rules: rules}
}

func denyFrom(name string, dryRun bool, rules ...Rule) AuthzPolicy {
	return AuthzPolicy{Namespace: "shop", Name: name, Action: ActionDeny, DryRun: dryRun, Rules: rules}
}

func fromNS(ns ...string) Rule    { return Rule{From: []Source{{Namespaces: ns}}} }
func notFromNS(ns ...string) Rule { return Rule{From: []Source{{NotNamespaces: ns}}} }
func fromP(p ...string) Rule      { return Rule{From: []Source{{Principals: p}}} }

// TestSimulatorBehindProxy pins the localhost rule: since Istio 1.10 the sidecar forwards inbound
// traffic to the pod's IP, so an application listening on localhost only is out of its proxy's
// reach (https://istio.io/latest/blog/2021/upcoming-networking-changes/), and reached directly
// without one.
func TestSimulatorBehindProxy(t *testing.T) {
	noProxyDest := appPod
	noProxyDest.HasProxy = false
	accepted := Verdict{Outcome: Succeeded, DestReports: true}
	tests := map[string]struct {
		v             Verdict
		dest          Peer
		localhostOnly bool
		want          Outcome
	}{
		"a proxy cannot reach an application on localhost":     {accepted, appPod, true, AppUnreachable},
		"an application on the pod's IP is reached":            {accepted, appPod, false, Succeeded},
		"without a proxy the caller reaches it directly":       {Verdict{Outcome: Succeeded}, noProxyDest, true, Succeeded},
		"a call refused before the application stays so":       {Verdict{Outcome: Refused}, appPod, true, Refused},
		"a call denied by a policy never reaches the upstream": {Verdict{Outcome: Denied, DestReports: true}, appPod, true, Denied},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := BehindProxy(tc.v, tc.dest, tc.localhostOnly).Outcome; got != tc.want {
				t.Errorf("BehindProxy = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestSimulatorRouteTimeout pins RouteTimeout to Envoy's router: a request its upstream answers
// after the route's timeout is answered 504 by the caller's proxy (flag UT); only a caller with a
// proxy has a route, only HTTP has requests, and no timeout set is none.
func TestSimulatorRouteTimeout(t *testing.T) {
	caller := Peer{Namespace: "web", Workload: "front", HasProxy: true}
	plain := caller
	plain.HasProxy = false
	ok := Verdict{Outcome: Succeeded, DestReports: true}
	tests := map[string]struct {
		v                Verdict
		caller           Peer
		proto            Protocol
		latency, timeout time.Duration
		want             Outcome
	}{
		"slower than the timeout":              {ok, caller, HTTP, 300 * time.Millisecond, 100 * time.Millisecond, TimedOut},
		"within the timeout":                   {ok, caller, HTTP, 50 * time.Millisecond, 100 * time.Millisecond, Succeeded},
		"no timeout set":                       {ok, caller, HTTP, time.Hour, 0, Succeeded},
		"a caller without a proxy waits":       {ok, plain, HTTP, 300 * time.Millisecond, 100 * time.Millisecond, Succeeded},
		"TCP has no request timeout":           {ok, caller, TCP, 300 * time.Millisecond, 100 * time.Millisecond, Succeeded},
		"a denied request is answered 403":     {Verdict{Outcome: Denied, DestReports: true}, caller, HTTP, 300 * time.Millisecond, 100 * time.Millisecond, Denied},
		"an external caller has no route":      {ok, Peer{External: true}, HTTP, 300 * time.Millisecond, 100 * time.Millisecond, Succeeded},
		"exactly the timeout is still in time": {ok, caller, HTTP, 100 * time.Millisecond, 100 * time.Millisecond, Succeeded},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := RouteTimeout(tc.v, tc.caller, tc.proto, tc.latency, tc.timeout).Outcome; got != tc.want {
				t.Errorf("RouteTimeout = %s, want %s", got, tc.want)
			}
		})
	}
}
