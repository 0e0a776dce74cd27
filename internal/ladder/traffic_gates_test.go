package ladder

import (
	"strings"
	"testing"
	"time"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/traffic"
)

// TestNoPlaintextCallers: a namespace at Observe goes STRICT only after the observe time, and
// only when telemetry that could be read, covers the window and shows the namespace's proxies
// reporting, shows no plaintext caller. Each way of not seeing holds it with its own reason;
// Skip gates on pods only; a namespace already at its level is never judged again.
func TestNoPlaintextCallers(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	observed := now.Add(-time.Hour) // at Observe for an hour
	legacy := traffic.Caller{Namespace: "legacy", Workload: "client"}
	outside := traffic.Caller{Namespace: traffic.Unknown, Workload: traffic.Unknown}
	reading := func(mod func(*traffic.Reading)) *traffic.Reading {
		r := &traffic.Reading{Source: "Prometheus at http://prom", Inbound: traffic.Inbound{Reporting: true, Covered: 10 * time.Minute, Plaintext: map[traffic.Caller]float64{}}}
		if mod != nil {
			mod(r)
		}
		return r
	}
	tests := map[string]struct {
		current Level
		since   time.Time
		traffic *traffic.Reading
		skip    bool
		noPods  bool
		exempt  bool
		// proxyless names pods running proxyless gRPC, of the namespace's two.
		proxyless []string
		// wantStep is the level a step starts to; else the namespace is held with wantReason
		// (blocked) or waits with wantWaiting, and its message holds wantMessage.
		wantStep    Level
		wantReason  string
		wantWaiting string
		wantMessage []string
	}{
		"no plaintext caller over the window: STRICT": {current: meshv1.LevelObserve, since: observed, traffic: reading(nil), wantStep: meshv1.LevelMutualTLS},
		"still within the observe time":               {current: meshv1.LevelObserve, since: now.Add(-time.Minute), traffic: reading(nil), wantWaiting: "watching its inbound traffic at Observe until 2026-12-05T12:09:00Z"},
		"traffic not read in this pass":               {current: meshv1.LevelObserve, since: observed, wantWaiting: "waiting for its traffic to be read"},
		"the source saw only part of the window": {current: meshv1.LevelObserve, since: observed, traffic: reading(func(r *traffic.Reading) { r.Covered = 4 * time.Minute }),
			wantWaiting: "has seen 4m0s of the 10m0s window"},
		"a plaintext caller in the cluster": {current: meshv1.LevelObserve, since: observed, traffic: reading(func(r *traffic.Reading) { r.Plaintext[legacy] = 40 }),
			wantReason: meshv1.ReasonPlaintextTraffic, wantMessage: []string{"legacy/client (40 calls: enrol namespace legacy at Observe or higher", "stays at Observe"}},
		"a caller outside the mesh is named as such": {current: meshv1.LevelObserve, since: observed, traffic: reading(func(r *traffic.Reading) { r.Plaintext[outside] = 3; r.Plaintext[legacy] = 1 }),
			wantReason: meshv1.ReasonPlaintextTraffic, wantMessage: []string{"2 caller(s)", "a caller outside the mesh (3 calls: route it through an Istio gateway", "; legacy/client (1 calls"}},
		"a share of a call at the window's edge holds, named with one call": {current: meshv1.LevelObserve, since: observed, traffic: reading(func(r *traffic.Reading) { r.Plaintext[legacy] = 0.2 }),
			wantReason: meshv1.ReasonPlaintextTraffic, wantMessage: []string{"legacy/client (1 calls"}},
		"with exempted ports, a caller outside the mesh is left to them": {current: meshv1.LevelObserve, since: observed, exempt: true,
			traffic: reading(func(r *traffic.Reading) { r.Plaintext[outside] = 3 }), wantStep: meshv1.LevelMutualTLS},
		"with exempted ports, a plaintext caller in the cluster still holds it": {current: meshv1.LevelObserve, since: observed, exempt: true,
			traffic: reading(func(r *traffic.Reading) { r.Plaintext[outside] = 3; r.Plaintext[legacy] = 1 }), wantReason: meshv1.ReasonPlaintextTraffic, wantMessage: []string{"1 caller(s)", "legacy/client"}},
		"the source did not answer": {current: meshv1.LevelObserve, since: observed, traffic: reading(func(r *traffic.Reading) { r.Unavailable = "connection refused" }),
			wantReason: meshv1.ReasonTelemetryUnavailable, wantMessage: []string{"Prometheus at http://prom did not answer (connection refused)", "trafficGates: Skip"}},
		"no proxy of the namespace reports": {current: meshv1.LevelObserve, since: observed, traffic: reading(func(r *traffic.Reading) { r.Reporting = false }),
			wantReason: meshv1.ReasonTelemetryMissing, wantMessage: []string{"no series of the namespace's proxies", "port 15020"}},
		"proxies that cannot be reached": {current: meshv1.LevelObserve, since: observed, traffic: reading(func(r *traffic.Reading) { r.Unreachable = "web-1 (no route)" }),
			wantReason: meshv1.ReasonTrafficUnverified, wantMessage: []string{"web-1 (no route)", "spec.telemetry.prometheus"}},
		"Skip gates on pods only": {current: meshv1.LevelObserve, since: now, skip: true, wantStep: meshv1.LevelMutualTLS},
		"every proxy is proxyless gRPC: no telemetry to wait for, STRICT on its spec": {current: meshv1.LevelObserve, since: observed, proxyless: []string{"grpc-0", "grpc-1"},
			traffic: reading(func(r *traffic.Reading) { r.Reporting = false }), wantStep: meshv1.LevelMutualTLS},
		"every proxy is proxyless gRPC, traffic not read: STRICT on its spec, no observe time": {current: meshv1.LevelObserve, since: now.Add(-time.Minute), proxyless: []string{"grpc-0", "grpc-1"}, wantStep: meshv1.LevelMutualTLS},
		"one proxyless pod beside an Envoy one: the Envoy one must report": {current: meshv1.LevelObserve, since: observed, proxyless: []string{"grpc-0"},
			traffic: reading(func(r *traffic.Reading) { r.Reporting = false }), wantReason: meshv1.ReasonTelemetryMissing},
		"no pod for STRICT to cut off":                  {current: meshv1.LevelObserve, since: now, noPods: true, wantStep: meshv1.LevelMutualTLS},
		"a climb onto Observe is not judged on traffic": {current: meshv1.LevelOff, traffic: reading(func(r *traffic.Reading) { r.Plaintext[legacy] = 40 }), wantStep: meshv1.LevelObserve},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ns := Namespace{Name: "shop", Current: tc.current, State: State{Since: tc.since}, Target: meshv1.LevelMutualTLS, Traffic: tc.traffic,
				Pods: Pods{Total: 2, Ready: 2}, Workloads: []Workload{{Kind: "Deployment", Name: "web", Pods: 2, Injected: tc.current != meshv1.LevelOff, Uninjected: tc.current == meshv1.LevelOff, RolledOut: true}}}
			if tc.noPods {
				ns.Pods, ns.Workloads = Pods{}, nil
			}
			if tc.exempt {
				ns.PlaintextPorts = []meshv1.ServicePortRef{{Service: "hook", Port: 443}}
			}
			ns.Pods.Proxyless = tc.proxyless
			s := Settings{StepTimeout: 10 * time.Minute, SoakTime: time.Hour, ObserveTime: 10 * time.Minute, TrafficGates: !tc.skip}
			d := Decide(ns, s, true, now)
			if tc.wantStep != "" {
				if d.State.Step == nil || d.State.Step.To != tc.wantStep {
					t.Fatalf("want a step to %s, got %+v (blocked %+v, waiting %q)", tc.wantStep, d.State.Step, d.Blocked, d.Waiting)
				}
				return
			}
			if d.State.Step != nil {
				t.Fatalf("a step started: %+v", d.State.Step)
			}
			checkHeld(t, d, tc.wantReason, tc.wantWaiting, tc.wantMessage)
			if d.RecheckAfter <= 0 || d.RecheckAfter > TrafficPoll {
				t.Errorf("looked at again after %v, want within %v: the gate must watch", d.RecheckAfter, TrafficPoll)
			}
		})
	}

	t.Run("a namespace at its level is not walked down by plaintext traffic", func(t *testing.T) {
		ns := Namespace{Name: "shop", Current: meshv1.LevelMutualTLS, Target: meshv1.LevelMutualTLS, Pods: Pods{Total: 2, Ready: 2},
			Traffic: reading(func(r *traffic.Reading) { r.Plaintext[legacy] = 40 })}
		d := Decide(ns, Settings{TrafficGates: true, ObserveTime: 10 * time.Minute, StepTimeout: time.Minute}, true, now)
		if d.State.Step != nil || d.Level != meshv1.LevelMutualTLS || d.Blocked.Reason != "" {
			t.Fatalf("%+v", d)
		}
	})
}

// TestTrafficWindow: telemetry is read only for namespaces whose traffic a gate or a bake judges,
// over the window it judges: the observe time before STRICT, the soak time of a ZeroTrust
// dry-run, the bake time of a climb from its start. So its cost follows the namespaces about to
// step or stepping, not the cluster.
func TestTrafficWindow(t *testing.T) {
	gates := Settings{TrafficGates: true, Generation: 3, ObserveTime: time.Minute, SoakTime: time.Hour, BakeTime: 5 * time.Minute}
	dryRun := &Step{To: meshv1.LevelZeroTrust, ID: "zerotrust-1"}
	tests := map[string]struct {
		ns       Namespace
		settings Settings
		want     time.Duration // 0: not read
	}{
		"at Observe, target MutualTLS":           {ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS}, settings: gates, want: time.Minute},
		"at Observe, target ZeroTrust":           {ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelZeroTrust}, settings: gates, want: time.Minute},
		"a ZeroTrust dry-run":                    {ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelZeroTrust, State: State{Step: dryRun}}, settings: gates, want: time.Hour},
		"ZeroTrust enforced, settling":           {ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelZeroTrust, State: State{Step: &Step{To: meshv1.LevelZeroTrust, ID: "z", Enforced: true}}}, settings: gates, want: 5 * time.Minute},
		"a step to Observe running":              {ns: Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelObserve, State: State{Step: &Step{To: meshv1.LevelObserve, ID: "o"}}}, settings: gates, want: 5 * time.Minute},
		"a step without a bake time":             {ns: Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelObserve, State: State{Step: &Step{To: meshv1.LevelObserve, ID: "o"}}}, settings: Settings{TrafficGates: true, ObserveTime: time.Minute}},
		"off, climbing onto Observe":             {ns: Namespace{Current: meshv1.LevelOff, Target: meshv1.LevelMutualTLS}, settings: gates},
		"at its target":                          {ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelObserve}, settings: gates},
		"a step to MutualTLS running":            {ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS, State: State{Step: &Step{To: meshv1.LevelMutualTLS, ID: "m"}}}, settings: gates, want: 5 * time.Minute},
		"held for this spec":                     {ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS, State: State{Hold: &Hold{Generation: 3}}}, settings: gates},
		"held for an earlier spec":               {ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS, State: State{Hold: &Hold{Generation: 2}}}, settings: gates, want: time.Minute},
		"traffic gates skipped":                  {ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS}, settings: Settings{ObserveTime: time.Minute}},
		"at MutualTLS, soaking before ZeroTrust": {ns: Namespace{Current: meshv1.LevelMutualTLS, Target: meshv1.LevelZeroTrust}, settings: gates, want: time.Hour},
		"every proxy proxyless gRPC":             {ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS, Pods: Pods{Total: 3, Uninjected: []string{"job"}, Proxyless: []string{"a", "b"}}}, settings: gates},
		"proxyless gRPC beside Envoy":            {ns: Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelMutualTLS, Pods: Pods{Total: 3, Proxyless: []string{"a", "b"}}}, settings: gates, want: time.Minute},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := TrafficWindow(tc.ns, tc.settings)
			if ok != (tc.want > 0) || got != tc.want {
				t.Fatalf("TrafficWindow = %v, %v; want %v", got, ok, tc.want)
			}
		})
	}
}

// TestWouldDenyTraffic: a ZeroTrust dry-run is enforced only when the reading over the whole
// soak shows no caller from outside the namespace and its allowFrom, and no request the dry-run
// policies would have denied; otherwise it stays in dry-run, blocked, naming the callers and
// the allowFrom entry that would admit each. Cannot-see holds it as before STRICT.
func TestWouldDenyTraffic(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	soak := 10 * time.Minute
	step := &Step{To: meshv1.LevelZeroTrust, ID: "zerotrust-1", Started: now.Add(-soak - time.Second)}
	ingress, self, outside := traffic.Caller{Namespace: "ingress", Workload: "nginx"}, traffic.Caller{Namespace: "shop", Workload: "web"}, traffic.Caller{Namespace: traffic.Unknown, Workload: traffic.Unknown}
	reading := func(mod func(*traffic.Reading)) *traffic.Reading {
		r := &traffic.Reading{Source: "Prometheus at http://prom", Inbound: traffic.NewInbound(soak)}
		r.Reporting = true
		r.Callers[self] = 100
		if mod != nil {
			mod(r)
		}
		return r
	}
	tests := map[string]struct {
		traffic     *traffic.Reading
		allowFrom   []string
		exempt      []meshv1.ServicePortRef
		skip        bool
		wantReason  string
		wantWaiting string
		wantMessage []string
	}{
		"only the namespace itself calls: enforced": {traffic: reading(nil)},
		"a caller allowFrom admits: enforced":       {traffic: reading(func(r *traffic.Reading) { r.Callers[ingress] = 5 }), allowFrom: []string{"ingress"}},
		"a caller outside allowFrom": {traffic: reading(func(r *traffic.Reading) { r.Callers[ingress] = 5 }), wantReason: meshv1.ReasonWouldDenyTraffic,
			wantMessage: []string{"1 caller(s) came from outside allowFrom: ingress/nginx (5 calls: add {namespace: ingress} to allowFrom)", "stay in dry-run"}},
		"a caller outside the mesh": {traffic: reading(func(r *traffic.Reading) { r.Callers[outside] = 2 }), wantReason: meshv1.ReasonWouldDenyTraffic,
			wantMessage: []string{"a caller outside the mesh (2 calls: it has no mesh identity"}},
		"a caller outside the mesh, with exempted ports: judged by shadow denials": {traffic: reading(func(r *traffic.Reading) { r.Callers[outside] = 2 }),
			exempt: []meshv1.ServicePortRef{{Service: "hook", Port: 443}}},
		"a caller outside allowFrom, with exempted ports": {traffic: reading(func(r *traffic.Reading) { r.Callers[ingress] = 5 }), exempt: []meshv1.ServicePortRef{{Service: "hook", Port: 443}},
			wantReason: meshv1.ReasonWouldDenyTraffic, wantMessage: []string{"ingress/nginx"}},
		"shadow denials alone": {traffic: reading(func(r *traffic.Reading) { r.ShadowDenied = 7 }), allowFrom: []string{"ingress"}, wantReason: meshv1.ReasonWouldDenyTraffic,
			wantMessage: []string{"would have denied 7 request(s)"}},
		"the source saw part of the soak": {traffic: reading(func(r *traffic.Reading) { r.Covered = time.Minute }), wantWaiting: "has seen 1m0s of the 10m0s soak"},
		"the source did not answer":       {traffic: reading(func(r *traffic.Reading) { r.Unavailable = "timeout" }), wantReason: meshv1.ReasonTelemetryUnavailable},
		"Skip enforces on pods alone":     {traffic: reading(func(r *traffic.Reading) { r.Callers[ingress] = 5 }), skip: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ns := Namespace{Name: "shop", Current: meshv1.LevelMutualTLS, Target: meshv1.LevelZeroTrust, State: State{Since: now.Add(-2 * time.Hour), Step: step},
				Pods: Pods{Total: 2, Ready: 2}, Traffic: tc.traffic, AllowFrom: tc.allowFrom, PlaintextPorts: tc.exempt}
			d := Decide(ns, Settings{TrafficGates: !tc.skip, SoakTime: soak, StepTimeout: time.Minute, ObserveTime: time.Minute}, true, now)
			enforced := d.State.Step != nil && d.State.Step.Enforced
			if tc.wantReason == "" && tc.wantWaiting == "" {
				if !enforced {
					t.Fatalf("not enforced: blocked %+v, waiting %q", d.Blocked, d.Waiting)
				}
				return
			}
			if enforced || d.State.Step == nil || !d.InProgress {
				t.Fatalf("step %+v: want it still in dry-run, in progress", d.State.Step)
			}
			checkHeld(t, d, tc.wantReason, tc.wantWaiting, tc.wantMessage)
		})
	}
}

// TestZeroTrustWithEmptyAllowFrom: a climb to ZeroTrust with nobody in allowFrom (a namespace
// raised by its target-level label, say) is reported: its StepStarted Event is a warning saying
// that only the namespace's own workloads will be allowed. With allowFrom it is not.
func TestZeroTrustWithEmptyAllowFrom(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	for name, allowFrom := range map[string][]string{"empty": nil, "listed": {"ingress"}} {
		t.Run(name, func(t *testing.T) {
			ns := Namespace{Name: "vault", Current: meshv1.LevelMutualTLS, Target: meshv1.LevelZeroTrust, State: State{Since: now.Add(-2 * time.Hour)},
				Pods: Pods{Total: 1, Ready: 1}, AllowFrom: allowFrom}
			d := Decide(ns, Settings{SoakTime: time.Hour, StepTimeout: time.Minute}, true, now)
			if d.Event == nil || d.Event.Reason != "StepStarted" {
				t.Fatalf("event %+v, want the step to ZeroTrust started", d.Event)
			}
			warned := d.Event.Warning && strings.Contains(d.Event.Message, "allowFrom is empty")
			if warned != (allowFrom == nil) {
				t.Fatalf("event %+v: warned %v, want %v", d.Event, warned, allowFrom == nil)
			}
		})
	}
}

// TestLeavingTheMeshChecksWhomItCalls: a step down that takes a namespace's pods out of the mesh
// waits while its proxies are seen calling namespaces that accept only mTLS (their calls would go
// out in plaintext and be refused), naming them; other steps down are not held, nor is a
// namespace whose callees all accept plaintext, nor one whose calls cannot be seen (a step down
// is the way out for proxies that misbehave).
func TestLeavingTheMeshChecksWhomItCalls(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	window := 10 * time.Minute
	calling := func(dests map[string]float64) *traffic.Reading {
		r := &traffic.Reading{Source: "the proxies' stats endpoints (port 15020)", Inbound: traffic.NewInbound(window)}
		r.Reporting = true
		for d, n := range dests {
			r.CallsTo[d] = n
		}
		return r
	}
	tests := map[string]struct {
		current, target Level
		traffic         *traffic.Reading
		skip            bool
		wantStep        Level
		wantReason      string
		wantWaiting     string
		wantMessage     []string
	}{
		"calls a STRICT namespace": {current: meshv1.LevelObserve, target: meshv1.LevelOff, traffic: calling(map[string]float64{"orders": 38, "storefront": 5, "legacy": 1}),
			wantReason: meshv1.ReasonCallsStrictNamespaces, wantMessage: []string{"1 namespace(s)", "orders/* (38 calls: STRICT)", "keep this one at Observe"}},
		"calls only namespaces that accept plaintext": {current: meshv1.LevelObserve, target: meshv1.LevelOff, traffic: calling(map[string]float64{"storefront": 5}), wantStep: meshv1.LevelOff},
		"its own namespace does not count":            {current: meshv1.LevelObserve, target: meshv1.LevelOff, traffic: calling(map[string]float64{"legacy": 5}), wantStep: meshv1.LevelOff},
		"cannot see whom it calls: only evidence holds a step down": {current: meshv1.LevelObserve, target: meshv1.LevelOff,
			traffic: &traffic.Reading{Source: "Prometheus at http://p", Unavailable: "timeout"}, wantStep: meshv1.LevelOff},
		"not read in this pass":              {current: meshv1.LevelObserve, target: meshv1.LevelOff, wantStep: meshv1.LevelOff},
		"Skip walks it down anyway":          {current: meshv1.LevelObserve, target: meshv1.LevelOff, traffic: calling(map[string]float64{"orders": 38}), skip: true, wantStep: meshv1.LevelOff},
		"MutualTLS to Observe stays in mesh": {current: meshv1.LevelMutualTLS, target: meshv1.LevelOff, traffic: calling(map[string]float64{"orders": 38}), wantStep: meshv1.LevelObserve},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ns := Namespace{Name: "legacy", Current: tc.current, Target: tc.target, State: State{Since: now.Add(-time.Hour)}, Pods: Pods{Total: 2, Ready: 2}, Traffic: tc.traffic}
			s := Settings{TrafficGates: !tc.skip, ObserveTime: window, SoakTime: time.Hour, StepTimeout: time.Minute,
				Strict: map[string]bool{"orders": true, "legacy": true}}
			d := Decide(ns, s, true, now)
			if tc.wantStep != "" {
				if d.State.Step == nil || d.State.Step.To != tc.wantStep {
					t.Fatalf("want a step to %s, got %+v (blocked %+v, waiting %q)", tc.wantStep, d.State.Step, d.Blocked, d.Waiting)
				}
				return
			}
			if d.State.Step != nil || d.TrafficHeld != (tc.wantReason != "") {
				t.Fatalf("step %+v (traffic held %v): want none, held by traffic: %v", d.State.Step, d.TrafficHeld, tc.wantReason != "")
			}
			checkHeld(t, d, tc.wantReason, tc.wantWaiting, tc.wantMessage)
		})
	}
	if w, ok := TrafficWindow(Namespace{Current: meshv1.LevelObserve, Target: meshv1.LevelOff}, Settings{TrafficGates: true, ObserveTime: window}); !ok || w != window {
		t.Errorf("a namespace about to leave the mesh is read over %v (%v), want the observe time", w, ok)
	}
}

// TestDryRunLastsTheObserveTimeUnderTrafficGates: with a soak shorter than the observe time, a
// ZeroTrust dry-run under the traffic gates lasts the observe time, so that there is a window of
// traffic to judge; without the gates it lasts the soak.
func TestDryRunLastsTheObserveTimeUnderTrafficGates(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	ns := Namespace{Name: "shop", Current: meshv1.LevelMutualTLS, Target: meshv1.LevelZeroTrust, Pods: Pods{Total: 1, Ready: 1},
		State: State{Since: now.Add(-time.Hour), Step: &Step{To: meshv1.LevelZeroTrust, ID: "zerotrust-1", Started: now.Add(-5 * time.Second)}}}
	for gates, wantDryRun := range map[bool]bool{true: true, false: false} {
		s := Settings{TrafficGates: gates, SoakTime: time.Second, ObserveTime: 10 * time.Second, StepTimeout: time.Minute}
		d := Decide(ns, s, true, now)
		if inDryRun := d.State.Step != nil && !d.State.Step.Enforced; inDryRun != wantDryRun {
			t.Errorf("gates %v: still in dry-run %v after 5s, want %v (step %+v)", gates, inDryRun, wantDryRun, d.State.Step)
		}
		if w, _ := TrafficWindow(ns, s); gates && w != 10*time.Second {
			t.Errorf("the dry-run is read over %v, want the observe time", w)
		}
	}
}

// checkHeld: the decision holds the namespace with reason (or waits with a message containing
// waiting), and the blocked message holds each of messages.
func checkHeld(t *testing.T, d Decision, reason, waiting string, messages []string) {
	t.Helper()
	if d.Blocked.Reason != reason || !strings.Contains(d.Waiting, waiting) {
		t.Fatalf("blocked %+v, waiting %q; want reason %q, waiting %q", d.Blocked, d.Waiting, reason, waiting)
	}
	for _, m := range messages {
		if !strings.Contains(d.Blocked.Message, m) {
			t.Errorf("message %q lacks %q", d.Blocked.Message, m)
		}
	}
}
