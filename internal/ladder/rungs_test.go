package ladder

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/traffic"
)

// TestEveryRungIsCounted fails when a level is added to Rungs and forgotten in the places that
// list levels outside this package: the API's enum (what a user may write) and the status count
// (what kubectl, the metrics and the plugin show).
func TestEveryRungIsCounted(t *testing.T) {
	var st meshv1.NamespacesStatus
	seen := map[*int32]Level{}
	for _, r := range Rungs {
		p := st.AtLevel(r.Level)
		if p == nil {
			t.Errorf("status.namespaces has no count for %s (meshv1.NamespacesStatus.AtLevel)", r.Level)
			continue
		}
		if other, dup := seen[p]; dup {
			t.Errorf("%s and %s share one status count", r.Level, other)
		}
		seen[p] = r.Level
	}

	b, err := os.ReadFile("../../config/crd/bases/meshwright.io_meshinstallations.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal(b, &crd); err != nil {
		t.Fatal(err)
	}
	rule := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties["namespaces"].Items.Schema
	var enum []Level
	for _, v := range rule.Properties["level"].Enum {
		enum = append(enum, Level(strings.Trim(string(v.Raw), `"`)))
	}
	if !slices.Equal(enum, Levels()) {
		t.Errorf("the CRD's level enum is %v, the ladder's rungs %v: update the +kubebuilder:validation:Enum of AdoptionLevel", enum, Levels())
	}
}

// TestRungs pins the table: what each level carries, the gates a climb onto it passes in order,
// and which level runs its policies in dry-run first.
func TestRungs(t *testing.T) {
	tests := map[Level]struct {
		carries Effects
		gates   []string
		dryRun  bool
	}{
		meshv1.LevelOff:       {},
		meshv1.LevelObserve:   {carries: Effects{Inject: true}, gates: []string{"InjectionLabelOwned", "PodsReady", "PodsAdmitted", "JobsNeedNativeSidecars"}},
		meshv1.LevelMutualTLS: {carries: Effects{Inject: true, Strict: true}, gates: []string{"InjectionLabelOwned", "PodsReady", "PodsInjected", "ProxylessMTLS", "PeerAuthenticationOwned", "NoNonMeshCallers", "NoPlaintextCallers"}},
		meshv1.LevelZeroTrust: {carries: Effects{Inject: true, Strict: true, Authorization: true}, dryRun: true,
			gates: []string{"InjectionLabelOwned", "PodsReady", "PodsInjected", "ProxylessMTLS", "ProxylessDryRun", "PeerAuthenticationOwned", "NoNonMeshCallers", "SoakedBelow"}},
	}
	if len(Rungs) != len(tests) {
		t.Fatalf("%d rungs, %d in this table", len(Rungs), len(tests))
	}
	for i, r := range Rungs {
		want, ok := tests[r.Level]
		if !ok {
			t.Errorf("rung %d, %s, is not in this table", i, r.Level)
			continue
		}
		var gates []string
		for _, g := range r.Gates {
			gates = append(gates, g.Name)
		}
		if r.Carries != want.carries || !slices.Equal(gates, want.gates) || r.DryRunFirst != want.dryRun {
			t.Errorf("%s carries %+v, gates %v, dry-run first %v; want %+v, %v, %v", r.Level, r.Carries, gates, r.DryRunFirst, want.carries, want.gates, want.dryRun)
		}
		if Rank(r.Level) != i {
			t.Errorf("Rank(%s) = %d, want %d", r.Level, Rank(r.Level), i)
		}
	}
	if Rank("Unknown") != 0 || Valid("Unknown") {
		t.Error("an unknown level must rank as the lowest and not be valid")
	}
}

// TestAmbientRungs pins the gates of ambient mode's table, and keeps it in step with Rungs:
// the same levels in the same order, the same effects and dry-run, since everything that
// counts levels or derives effects reads Rungs.
func TestAmbientRungs(t *testing.T) {
	gates := map[Level][]string{
		meshv1.LevelOff:       nil,
		meshv1.LevelObserve:   {"InjectionLabelOwned", "PodsReady", "WaypointReady"},
		meshv1.LevelMutualTLS: {"InjectionLabelOwned", "PodsReady", "PodsCaptured", "PeerAuthenticationOwned", "NoNonMeshCallers", "NoPlaintextCallers"},
		meshv1.LevelZeroTrust: {"InjectionLabelOwned", "PodsReady", "PodsCaptured", "PeerAuthenticationOwned", "NoNonMeshCallers", "SoakedBelow", "NoCallersOutsideAllowFrom"},
	}
	if len(AmbientRungs) != len(Rungs) {
		t.Fatalf("%d ambient rungs, %d rungs", len(AmbientRungs), len(Rungs))
	}
	for i, r := range AmbientRungs {
		sidecar := Rungs[i]
		if r.Level != sidecar.Level || r.Carries != sidecar.Carries || r.DryRunFirst != sidecar.DryRunFirst {
			t.Errorf("ambient rung %d is %s carrying %+v (dry-run %v), Rungs has %s carrying %+v (dry-run %v)",
				i, r.Level, r.Carries, r.DryRunFirst, sidecar.Level, sidecar.Carries, sidecar.DryRunFirst)
		}
		var names []string
		for _, g := range r.Gates {
			names = append(names, g.Name)
			if g.Admission {
				t.Errorf("ambient %s has gate %s, which judges restarted pods: ambient mode restarts none", r.Level, g.Name)
			}
		}
		if !slices.Equal(names, gates[r.Level]) {
			t.Errorf("ambient %s gates %v, want %v", r.Level, names, gates[r.Level])
		}
		if len(r.Bake) > 0 {
			t.Errorf("ambient %s bakes on what ztunnel does not report in a form the bake reads", r.Level)
		}
	}
}

// TestGates runs each gate on its own: what lets a climb go on, and what holds it with which reason.
func TestGates(t *testing.T) {
	s := settings()
	since := t0.Add(-30 * time.Second) // half of settings()'s one-minute soak
	tests := map[string]struct {
		gate        Gate
		climb       Climb
		wantReason  string
		wantWaiting string
		wantRecheck time.Duration
	}{
		"injection label ours": {gate: injectionOwned, climb: Climb{}},
		"someone else's injection label": {gate: injectionOwned, climb: Climb{NS: Namespace{InjectionConflict: "istio-injection=disabled is someone else's"}},
			wantReason: meshv1.ReasonInjectionLabelConflict},
		"every pod Ready": {gate: podsReady, climb: Climb{NS: Namespace{Pods: readyPods(3)}}},
		"a pod not Ready": {gate: podsReady, climb: Climb{NS: Namespace{Pods: Pods{Total: 2, Ready: 1, NotReady: []string{"web-1"}}}, To: meshv1.LevelObserve},
			wantReason: meshv1.ReasonPodsNotReady},
		"every pod injected": {gate: podsInjected, climb: Climb{NS: Namespace{Pods: readyPods(2)}}},
		"a pod without the proxy": {gate: podsInjected, climb: Climb{NS: Namespace{Pods: Pods{Total: 1, Ready: 1, Uninjected: []string{"legacy-0"}}}},
			wantReason: meshv1.ReasonUninjectedPods},
		"no proxyless pod serving plaintext": {gate: proxylessMTLS, climb: Climb{NS: Namespace{Pods: readyPods(2)}}},
		"a proxyless pod serving plaintext": {gate: proxylessMTLS, climb: Climb{NS: Namespace{Pods: Pods{Total: 1, Ready: 1, ProxylessPlaintext: []string{"grpc-0"}}}, To: meshv1.LevelMutualTLS},
			wantReason: meshv1.ReasonProxylessPlaintext},
		"proxyless pods, traffic gates skipped":    {gate: proxylessDryRun, climb: Climb{NS: Namespace{Pods: Pods{Total: 1, Ready: 1, Proxyless: []string{"grpc-0"}}}, To: meshv1.LevelZeroTrust}},
		"no proxyless pod under the traffic gates": {gate: proxylessDryRun, climb: Climb{NS: Namespace{Pods: readyPods(2)}, Settings: Settings{TrafficGates: true}, To: meshv1.LevelZeroTrust}},
		"proxyless pods under the traffic gates: no dry run for them": {gate: proxylessDryRun, climb: Climb{NS: Namespace{Pods: Pods{Total: 2, Ready: 2, Proxyless: []string{"grpc-0"}}},
			Settings: Settings{TrafficGates: true}, To: meshv1.LevelZeroTrust}, wantReason: meshv1.ReasonProxylessNoDryRun},
		"every pod in ambient mode": {gate: podsCaptured, climb: Climb{NS: Namespace{Ambient: true, Pods: readyPods(2)}}},
		"a pod left out of ambient mode": {gate: podsCaptured, climb: Climb{NS: Namespace{Ambient: true, Pods: Pods{Total: 2, Ready: 2, OutsideAmbient: []string{"node-agent-0"}}}, To: meshv1.LevelMutualTLS},
			wantReason: meshv1.ReasonPodsOutsideAmbient},
		"a pod not redirected yet": {gate: podsCaptured, climb: Climb{NS: Namespace{Ambient: true, Pods: Pods{Total: 2, Ready: 2, Uncaptured: []string{"web-2"}}}, To: meshv1.LevelMutualTLS},
			wantWaiting: "waiting for Istio CNI to redirect 1 pod(s) to ztunnel before MutualTLS: web-2", wantRecheck: Settle},
		"ambient, read by a source that does not read ztunnel": {gate: noPlaintextCallers, climb: ambientClimb(&traffic.Reading{Source: "the proxies", ZtunnelUnread: true, Inbound: traffic.NewInbound(time.Hour)}),
			wantReason: meshv1.ReasonAmbientTrafficUnread, wantRecheck: TrafficPoll},
		"ambient, ztunnel not scraped": {gate: noPlaintextCallers, climb: ambientClimb(&traffic.Reading{Source: "Prometheus", Inbound: traffic.Inbound{Reporting: true, Covered: time.Hour}}),
			wantReason: meshv1.ReasonTelemetryMissing, wantRecheck: TrafficPoll},
		"ambient, ztunnel saw a plaintext caller": {gate: noPlaintextCallers, climb: ambientClimb(&traffic.Reading{Source: "Prometheus", Inbound: traffic.Inbound{ZtunnelReporting: true, Covered: time.Hour,
			Plaintext: map[traffic.Caller]float64{{Namespace: "legacy", Workload: "client"}: 3}}}), wantReason: meshv1.ReasonPlaintextTraffic, wantRecheck: TrafficPoll},
		"ambient, ztunnel saw only mTLS": {gate: noPlaintextCallers, climb: ambientClimb(&traffic.Reading{Source: "Prometheus", Inbound: traffic.Inbound{ZtunnelReporting: true, Covered: time.Hour,
			Callers: map[traffic.Caller]float64{{Namespace: "shop", Workload: "web"}: 3}}})},
		"ambient ZeroTrust, read by the embedded source": {gate: noCallersOutsideAllowFrom, climb: toZeroTrust(nil, Settings{TrafficGates: true, ObserveTime: 10 * time.Minute}),
			wantReason: meshv1.ReasonAmbientTrafficUnread, wantRecheck: TrafficPoll},
		"ambient ZeroTrust, a caller from outside allowFrom in mTLS": {gate: noCallersOutsideAllowFrom, climb: toZeroTrust(&traffic.Reading{Source: "Prometheus", Inbound: traffic.Inbound{ZtunnelReporting: true, Covered: time.Hour,
			Callers: map[traffic.Caller]float64{{Namespace: "shop", Workload: "web"}: 3, {Namespace: "batch", Workload: "report"}: 1}}}, Settings{TrafficGates: true, ZtunnelRead: true, ObserveTime: 10 * time.Minute}),
			wantReason: meshv1.ReasonWouldDenyTraffic, wantRecheck: TrafficPoll},
		"ambient ZeroTrust, plaintext STRICT refuses already is not counted": {gate: noCallersOutsideAllowFrom, climb: toZeroTrust(&traffic.Reading{Source: "Prometheus", Inbound: traffic.Inbound{ZtunnelReporting: true, Covered: time.Hour,
			Callers:   map[traffic.Caller]float64{{Namespace: "shop", Workload: "web"}: 3, {Namespace: traffic.Unknown, Workload: traffic.Unknown}: 4},
			Plaintext: map[traffic.Caller]float64{{Namespace: traffic.Unknown, Workload: traffic.Unknown}: 4}}}, Settings{TrafficGates: true, ZtunnelRead: true, ObserveTime: 10 * time.Minute})},
		"no PeerAuthentication of someone else's": {gate: peerAuthenticationOwned, climb: Climb{}},
		"someone else's PeerAuthentication": {gate: peerAuthenticationOwned, climb: Climb{NS: Namespace{PolicyConflict: "PeerAuthentication legacy/default is PERMISSIVE"}},
			wantReason: meshv1.ReasonPeerAuthenticationConflict},
		"soaked": {gate: soaked, climb: Climb{State: State{Since: t0.Add(-time.Minute)}, Settings: s, From: meshv1.LevelMutualTLS, To: meshv1.LevelZeroTrust, Now: t0}},
		"still soaking": {gate: soaked, climb: Climb{State: State{Since: since}, Settings: s, From: meshv1.LevelMutualTLS, To: meshv1.LevelZeroTrust, Now: t0},
			wantWaiting: "holding MutualTLS for the soak time, until 2026-11-26T10:00:30Z", wantRecheck: 30 * time.Second},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			v := tc.gate.Check(tc.climb)
			if tc.wantReason == "" && tc.wantWaiting == "" {
				if v != nil {
					t.Fatalf("%s held the climb: %+v", tc.gate.Name, *v)
				}
				return
			}
			if v == nil {
				t.Fatalf("%s let the climb go on", tc.gate.Name)
			}
			if v.Blocked.Reason != tc.wantReason || v.Waiting != tc.wantWaiting || v.RecheckAfter != tc.wantRecheck {
				t.Errorf("%s = %+v, want reason %q, waiting %q, recheck %s", tc.gate.Name, *v, tc.wantReason, tc.wantWaiting, tc.wantRecheck)
			}
			if tc.wantReason != "" && v.Blocked.Message == "" {
				t.Errorf("%s blocked with no message", tc.gate.Name)
			}
		})
	}
}

// TestUninjectedPodsNoStepRestarts: the UninjectedPods message names the pods no step restarts,
// with their owners, and says who must restart them.
func TestUninjectedPodsNoStepRestarts(t *testing.T) {
	v := podsInjected.Check(Climb{NS: Namespace{Pods: Pods{Total: 2, Ready: 2, Uninjected: []string{"debug", "web-1"}, Unmanaged: []string{"debug (no controller)"}}}, To: meshv1.LevelMutualTLS})
	if v == nil || v.Blocked.Reason != meshv1.ReasonUninjectedPods || !strings.Contains(v.Blocked.Message, "1 of them no step restarts") ||
		!strings.Contains(v.Blocked.Message, "debug (no controller)") || !strings.Contains(v.Blocked.Message, "delete a bare pod") {
		t.Fatalf("verdict %+v", v)
	}
}

// ambientClimb is a namespace in ambient mode at Observe for an hour, under the traffic gates with
// a ten-minute observe time, about to go STRICT, with its traffic as read.
func ambientClimb(r *traffic.Reading) Climb {
	return Climb{NS: Namespace{Ambient: true, Pods: readyPods(2), Traffic: r}, State: State{Since: t0.Add(-time.Hour)},
		Settings: Settings{TrafficGates: true, ZtunnelRead: !r.ZtunnelUnread, ObserveTime: 10 * time.Minute}, From: meshv1.LevelObserve, To: meshv1.LevelMutualTLS, Now: t0}
}

// toZeroTrust is a namespace in ambient mode at MutualTLS, allowing shop, about to climb to
// ZeroTrust with its traffic as read.
func toZeroTrust(r *traffic.Reading, s Settings) Climb {
	return Climb{NS: Namespace{Name: "pay", Ambient: true, AllowFrom: []string{"shop"}, Pods: readyPods(2), Traffic: r}, State: State{Since: t0.Add(-time.Hour)},
		Settings: s, From: meshv1.LevelMutualTLS, To: meshv1.LevelZeroTrust, Now: t0}
}
