package ladder

import (
	"strings"
	"testing"
	"time"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/traffic"
)

// TestNoNonMeshCallers: a caller outside the mesh that the API shows (a webhook, a load
// balancer…) holds the climb to MutualTLS, and to ZeroTrust, whatever the traffic gates say,
// until its Service port is exempted; an exemption that cannot be rendered holds it too.
func TestNoNonMeshCallers(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	hook := NonMeshCaller{Object: "ValidatingWebhookConfiguration/policy", Caller: "the kube-apiserver", Service: "hook", Port: 443}
	lb := NonMeshCaller{Object: "Service/web (type LoadBalancer)", Caller: "clients outside the cluster", Service: "web", Port: 80}
	tests := map[string]struct {
		current  Level
		target   Level
		callers  []NonMeshCaller
		exempt   []meshv1.ServicePortRef
		problems []string
		gates    bool
		// wantStep is the level a step starts to; else the namespace is blocked with
		// NonMeshCallers and its message holds wantMessage.
		wantStep    Level
		wantMessage []string
		wantEvent   string
	}{
		"none found: STRICT": {current: meshv1.LevelObserve, target: meshv1.LevelMutualTLS, callers: []NonMeshCaller{}, wantStep: meshv1.LevelMutualTLS},
		"a webhook holds the climb to MutualTLS, gates skipped or not": {current: meshv1.LevelObserve, target: meshv1.LevelMutualTLS, callers: []NonMeshCaller{hook},
			wantMessage: []string{"ValidatingWebhookConfiguration/policy makes the kube-apiserver call Service hook port 443", "plaintextPorts: {service: hook, port: 443}"}},
		"the same with the traffic gates on": {current: meshv1.LevelObserve, target: meshv1.LevelMutualTLS, callers: []NonMeshCaller{hook}, gates: true,
			wantMessage: []string{"1 caller(s) outside the mesh"}},
		"every caller is named": {current: meshv1.LevelObserve, target: meshv1.LevelMutualTLS, callers: []NonMeshCaller{hook, lb},
			wantMessage: []string{"2 caller(s)", "Service/web (type LoadBalancer) makes clients outside the cluster call Service web port 80"}},
		"an exempted port lets it go, and the step says so": {current: meshv1.LevelObserve, target: meshv1.LevelMutualTLS, callers: []NonMeshCaller{hook},
			exempt: []meshv1.ServicePortRef{{Service: "hook", Port: 443}}, wantStep: meshv1.LevelMutualTLS, wantEvent: "left accepting plaintext (spec.namespaces[].plaintextPorts): hook:443"},
		"exempting another port of the Service does not": {current: meshv1.LevelObserve, target: meshv1.LevelMutualTLS, callers: []NonMeshCaller{hook},
			exempt: []meshv1.ServicePortRef{{Service: "hook", Port: 8443}}, wantMessage: []string{"Service hook port 443"}},
		"an exemption that cannot be rendered": {current: meshv1.LevelObserve, target: meshv1.LevelMutualTLS, callers: []NonMeshCaller{hook},
			exempt: []meshv1.ServicePortRef{{Service: "hook", Port: 443}}, problems: []string{"Service hook has no selector"}, wantMessage: []string{"cannot be applied here: Service hook has no selector"}},
		"a webhook that appeared at MutualTLS holds ZeroTrust": {current: meshv1.LevelMutualTLS, target: meshv1.LevelZeroTrust, callers: []NonMeshCaller{hook},
			wantMessage: []string{"Service hook port 443"}},
		"a climb onto Observe is not judged": {current: meshv1.LevelOff, target: meshv1.LevelMutualTLS, callers: []NonMeshCaller{hook}, wantStep: meshv1.LevelObserve},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ns := Namespace{Name: "shop", Current: tc.current, State: State{Since: now.Add(-2 * time.Hour)}, Target: tc.target,
				NonMeshCallers: tc.callers, PlaintextPorts: tc.exempt, ExemptionProblems: tc.problems, AllowFrom: []string{"gw"},
				Pods: Pods{Total: 1, Ready: 1}, Workloads: []Workload{{Kind: "Deployment", Name: "web", Pods: 1, Injected: tc.current != meshv1.LevelOff, Uninjected: tc.current == meshv1.LevelOff, RolledOut: true}}}
			s := Settings{StepTimeout: 10 * time.Minute, SoakTime: time.Minute, ObserveTime: time.Minute, TrafficGates: tc.gates}
			if tc.gates && tc.current == meshv1.LevelObserve {
				ns.Traffic = cleanReading(time.Minute)
			}
			d := Decide(ns, s, true, now)
			if tc.wantStep != "" {
				if d.State.Step == nil || d.State.Step.To != tc.wantStep {
					t.Fatalf("want a step to %s, got %+v (blocked %+v, waiting %q)", tc.wantStep, d.State.Step, d.Blocked, d.Waiting)
				}
				if tc.wantEvent != "" && (d.Event == nil || !strings.Contains(d.Event.Message, tc.wantEvent)) {
					t.Errorf("event %+v lacks %q", d.Event, tc.wantEvent)
				}
				return
			}
			if d.State.Step != nil {
				t.Fatalf("a step started: %+v", d.State.Step)
			}
			checkHeld(t, d, meshv1.ReasonNonMeshCallers, "", tc.wantMessage)
			if d.TrafficHeld {
				t.Error("a hold found in the API is not a traffic hold")
			}
		})
	}
}

// TestChecksCallers: the API is searched only for namespaces whose next climb goes STRICT (or
// under default-deny), with no step running and no hold; in every traffic-gate mode.
func TestChecksCallers(t *testing.T) {
	tests := map[string]struct {
		current, target Level
		state           State
		want            bool
	}{
		"Observe to MutualTLS":             {current: meshv1.LevelObserve, target: meshv1.LevelMutualTLS, want: true},
		"MutualTLS to ZeroTrust":           {current: meshv1.LevelMutualTLS, target: meshv1.LevelZeroTrust, want: true},
		"Off, on the way to MutualTLS":     {current: meshv1.LevelOff, target: meshv1.LevelMutualTLS},
		"at its target":                    {current: meshv1.LevelMutualTLS, target: meshv1.LevelMutualTLS},
		"walking down":                     {current: meshv1.LevelMutualTLS, target: meshv1.LevelObserve},
		"a step running":                   {current: meshv1.LevelObserve, target: meshv1.LevelMutualTLS, state: State{Step: &Step{To: meshv1.LevelMutualTLS, ID: "x"}}},
		"held after a rollback":            {current: meshv1.LevelObserve, target: meshv1.LevelMutualTLS, state: State{Hold: &Hold{Generation: 3}}},
		"a hold of an older spec released": {current: meshv1.LevelObserve, target: meshv1.LevelMutualTLS, state: State{Hold: &Hold{Generation: 2}}, want: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			for _, gates := range []bool{true, false} {
				ns := Namespace{Name: "shop", Current: tc.current, Target: tc.target, State: tc.state}
				if got := ChecksCallers(ns, Settings{Generation: 3, TrafficGates: gates}); got != tc.want {
					t.Errorf("trafficGates %v: ChecksCallers = %v, want %v", gates, got, tc.want)
				}
			}
		})
	}
}

// cleanReading is telemetry that saw the namespace's proxies report no plaintext caller, no
// caller outside allowFrom and no shadow denial over the window.
func cleanReading(window time.Duration) *traffic.Reading {
	r := &traffic.Reading{Source: "the proxies' stats endpoints", Inbound: traffic.NewInbound(window)}
	r.Reporting = true
	return r
}
