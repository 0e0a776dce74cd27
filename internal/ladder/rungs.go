package ladder

import (
	"fmt"
	"slices"
	"time"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/names"
)

// Rung is one level of the ladder as data: what a namespace standing on it carries, and what
// must hold before a namespace climbs onto it. Everything that knows the levels (Decide, the
// status counts, the metrics, the plugin's report) reads Rungs, so a new level is one entry here
// and its name in the API's enum; a place that forgets it fails TestEveryRungIsCounted.
type Rung struct {
	// Level names the rung.
	Level Level
	// Carries is what a namespace standing on the rung carries (the revision aside).
	Carries Effects
	// DryRunFirst makes a climb onto the rung run its AuthorizationPolicies in dry-run for the
	// soak time before they are enforced.
	DryRunFirst bool
	// Gates must pass, in order, before a climb onto the rung starts; the first that does not
	// says why the namespace waits.
	Gates []Gate
	// Bake are the comparisons of the namespace's traffic with before the climb, made for
	// spec.rollout.bakeTime once its change took effect (under the traffic gates); the first
	// that sees a regression rolls the climb back. A rung without them completes once its pods
	// are Ready.
	Bake []BakeCheck
	// UnreadBakeCompletes lets a climb onto the rung complete, with a Warning event, when its
	// bake time is over without a reading it could judge, instead of waiting for one. Only for
	// a rung that enforces nothing (Observe): no gate before its step needed telemetry, so
	// waiting for a reading would hold every namespace's entry into the mesh on the telemetry;
	// the climbs that enforce were read before they started, and wait.
	UnreadBakeCompletes bool
}

// Gate is one named check before a climb, as cert-manager's trigger policies are a chain of
// named functions: a new check is one entry in a rung's Gates.
type Gate struct {
	// Name says what the gate checks, for tests and for reading the table.
	Name string
	// Check returns nil when the climb may go on, else what holds it.
	Check func(Climb) *Verdict
	// Traffic marks a gate that judges the namespace's traffic: the controller reads telemetry
	// for a namespace whose next climb passes one (see TrafficWindow).
	Traffic bool
	// Callers marks a gate that judges the callers the Kubernetes API shows: the controller looks
	// them up for a namespace whose next climb passes one (see ChecksCallers).
	Callers bool
	// Admission marks a gate that judges the admission of the pods the climb restarts: the
	// controller creates them with server-side dry run for a namespace whose next climb passes
	// one (see ChecksAdmission).
	Admission bool
}

// Climb is what a gate judges: the namespace as observed, its recorded state, the rollout's
// settings, the levels it would climb from and to, and the time of the pass.
type Climb struct {
	NS       Namespace
	State    State
	Settings Settings
	From, To Level
	Now      time.Time
}

// Verdict is what holds a climb: Blocked when something must change first (it is reported as
// the namespace's blocked reason), else Waiting when only time must pass (looked at again after
// RecheckAfter).
type Verdict struct {
	Blocked      Blocked
	Waiting      string
	RecheckAfter time.Duration
	// Unread is set when a gate waits only because what it judges was not read in this pass
	// (by a reader that cannot, such as the kubectl plugin: it reads no telemetry and creates
	// no dry-run pods).
	Unread bool
}

// The gates a climb passes, each a small function; a rung lists those it needs.
var (
	injectionOwned = Gate{Name: "InjectionLabelOwned", Check: func(c Climb) *Verdict {
		if c.NS.InjectionConflict == "" {
			return nil
		}
		return &Verdict{Blocked: Blocked{Reason: meshv1.ReasonInjectionLabelConflict, Message: c.NS.InjectionConflict}}
	}}
	podsReady = Gate{Name: "PodsReady", Check: func(c Climb) *Verdict {
		if notReady := c.NS.Pods.NotReady; len(notReady) > 0 {
			return &Verdict{Blocked: Blocked{Reason: meshv1.ReasonPodsNotReady, Message: fmt.Sprintf(
				"%d pod(s) are not Ready: %s. The step to %s waits until every pod is Ready, so that what it changes can be judged.", len(notReady), names.List(notReady), c.To)}}
		}
		return nil
	}}
	podsInjected = Gate{Name: "PodsInjected", Check: func(c Climb) *Verdict {
		if uninjected := c.NS.Pods.Uninjected; len(uninjected) > 0 {
			msg := fmt.Sprintf("%d pod(s) run without Istio's proxy and would be cut off by STRICT mTLS: %s. Remove sidecar.istio.io/inject=false or move them out of the namespace, or lower its target to Observe.",
				len(uninjected), names.List(uninjected))
			if unmanaged := c.NS.Pods.Unmanaged; len(unmanaged) > 0 {
				msg += fmt.Sprintf(" %d of them no step restarts (a pod of no Deployment, StatefulSet, DaemonSet, CronJob or Job, or of one whose template change restarts nothing): %s. Restart them yourself (through what created them; delete a bare pod or an OnDelete workload's pods and they come back; resume a paused Deployment) and Istio's injector gives them the proxy.",
					len(unmanaged), names.List(unmanaged))
			}
			return &Verdict{Blocked: Blocked{Reason: meshv1.ReasonUninjectedPods, Message: msg}}
		}
		// A CronJob or Job whose pods will never be injected: none may run now, but the next
		// one would be cut off.
		var never []string
		for _, w := range c.NS.Workloads {
			if w.RunsToCompletion && w.OptedOut {
				never = append(never, w.Kind+"/"+w.Name)
			}
		}
		if len(never) > 0 {
			return &Verdict{Blocked: Blocked{Reason: meshv1.ReasonUninjectedPods, Message: fmt.Sprintf(
				"%d CronJob(s) or Job(s) create pods without Istio's proxy (their template sets sidecar.istio.io/inject=false, or hostNetwork), which STRICT mTLS would cut off when they run, though none runs now: %s. Remove the opt-out from their pod template or move them out of the namespace, or lower its target to Observe.",
				len(never), names.List(never))}}
		}
		return nil
	}}
	// podsCaptured holds STRICT in ambient mode from pods ztunnel does not carry: a pod that
	// opts out (istio.io/dataplane-mode=none) or runs on the node's network keeps sending and
	// receiving plaintext, which STRICT would refuse; one Istio CNI has not redirected yet is
	// waited for. Pods with a sidecar of their own are in the mesh all the same.
	podsCaptured = Gate{Name: "PodsCaptured", Check: func(c Climb) *Verdict {
		if out := c.NS.Pods.OutsideAmbient; len(out) > 0 {
			return &Verdict{Blocked: Blocked{Reason: meshv1.ReasonPodsOutsideAmbient, Message: fmt.Sprintf(
				"%d pod(s) are left out of ambient mode and would be cut off by STRICT mTLS: %s (labelled istio.io/dataplane-mode=none, or on the node's network). Remove the label, or move them out of the namespace, or lower its target to Observe.",
				len(out), names.List(out))}}
		}
		if pending := c.NS.Pods.Uncaptured; len(pending) > 0 {
			return &Verdict{RecheckAfter: Settle, Waiting: fmt.Sprintf("waiting for Istio CNI to redirect %d pod(s) to ztunnel before %s: %s", len(pending), c.To, names.List(pending))}
		}
		return nil
	}}
	// proxylessMTLS holds STRICT from proxyless gRPC pods that serve plaintext: gRPC cannot
	// serve plaintext and mTLS on one port, so under PERMISSIVE istiod gives them a plaintext
	// listener, and STRICT would switch it to mTLS while their callers (proxyless ones send
	// mTLS only under an ISTIO_MUTUAL DestinationRule; Envoy's auto-mTLS looks for the tlsMode
	// label) still send plaintext. No order of changes keeps those calls working, so the owner
	// prepares them first: with the label, the pod requires mTLS already and STRICT changes
	// nothing for it.
	proxylessMTLS = Gate{Name: "ProxylessMTLS", Check: func(c Climb) *Verdict {
		plain := c.NS.Pods.ProxylessPlaintext
		if len(plain) == 0 {
			return nil
		}
		return &Verdict{Blocked: Blocked{Reason: meshv1.ReasonProxylessPlaintext, Message: fmt.Sprintf(
			"%d pod(s) run Istio's proxyless gRPC (template grpc-agent) and serve plaintext under PERMISSIVE: %s. STRICT would refuse their callers until each sent mTLS, which no order of changes makes safe. Label their pod templates security.istio.io/tlsMode=istio and give their Services a DestinationRule with trafficPolicy.tls.mode ISTIO_MUTUAL (Istio's setup for proxyless mTLS; docs/adoption.md), then the step to %s goes on.",
			len(plain), names.List(plain), c.To)}}
	}}
	// proxylessDryRun holds ZeroTrust, under the traffic gates, from namespaces with proxyless
	// gRPC pods: gRPC's RBAC ignores istio.io/dry-run, so the step's dry-run policies would be
	// enforced on them at once, and with no Envoy they report nothing for the dry-run check to
	// read. The step would deny callers before anything could show it denies none.
	proxylessDryRun = Gate{Name: "ProxylessDryRun", Check: func(c Climb) *Verdict {
		pods := c.NS.Pods.Proxyless
		if !c.Settings.TrafficGates || len(pods) == 0 {
			return nil
		}
		return &Verdict{Blocked: Blocked{Reason: meshv1.ReasonProxylessNoDryRun, Message: fmt.Sprintf(
			"%d pod(s) run Istio's proxyless gRPC (template grpc-agent): %s. gRPC enforces AuthorizationPolicies at once (it ignores istio.io/dry-run) and reports no telemetry, so the dry run that shows %s denies no caller cannot be made for them. Check that every caller of these pods is in the namespace or in allowFrom, then set spec.rollout.trafficGates: Skip to take the step on pods only (docs/adoption.md).",
			len(pods), names.List(pods), c.To)}}
	}}
	peerAuthenticationOwned = Gate{Name: "PeerAuthenticationOwned", Check: func(c Climb) *Verdict {
		if c.NS.PolicyConflict == "" {
			return nil
		}
		return &Verdict{Blocked: Blocked{Reason: meshv1.ReasonPeerAuthenticationConflict, Message: c.NS.PolicyConflict}}
	}}
	// soaked holds a namespace where it stands for the soak time before it climbs.
	soaked = Gate{Name: "SoakedBelow", Check: func(c Climb) *Verdict {
		held := c.Now.Sub(c.State.Since)
		if held >= c.Settings.SoakTime {
			return nil
		}
		return &Verdict{
			Waiting:      fmt.Sprintf("holding %s for the soak time, until %s", c.From, c.State.Since.Add(c.Settings.SoakTime).UTC().Format(time.RFC3339)),
			RecheckAfter: c.Settings.SoakTime - held,
		}
	}}
)

// Rungs are the ladder's levels, lowest first.
var Rungs = []Rung{
	{Level: meshv1.LevelOff},
	{
		Level:               meshv1.LevelObserve,
		Carries:             Effects{Inject: true},
		Gates:               []Gate{injectionOwned, podsReady, podsAdmitted, jobsNeedNativeSidecars},
		Bake:                []BakeCheck{applicationUnreached, callersFailing},
		UnreadBakeCompletes: true,
	},
	{
		Level:   meshv1.LevelMutualTLS,
		Carries: Effects{Inject: true, Strict: true},
		Gates:   []Gate{injectionOwned, podsReady, podsInjected, proxylessMTLS, peerAuthenticationOwned, noNonMeshCallers, noPlaintextCallers},
		Bake:    []BakeCheck{plaintextRefused, callersFailing, inboundFell},
	},
	{
		Level:       meshv1.LevelZeroTrust,
		Carries:     Effects{Inject: true, Strict: true, Authorization: true},
		DryRunFirst: true,
		Gates:       []Gate{injectionOwned, podsReady, podsInjected, proxylessMTLS, proxylessDryRun, peerAuthenticationOwned, noNonMeshCallers, soaked},
		Bake:        []BakeCheck{requestsDenied, plaintextRefused, callersFailing, inboundFell},
	},
}

// AmbientRungs are the same levels for a namespace in Istio's ambient mode (Namespace.Ambient):
// the same effects, with the ambient label for the injection label, and the gates that mean
// something there. Entering the mesh restarts nothing, so no admission of restarted pods is
// judged, and no sidecar shapes a Job; what STRICT would cut off is a pod ztunnel does not carry.
// The traffic gates judge what ztunnel reports of the namespace's inbound traffic (the same
// metric names and labels as a sidecar's, read through Prometheus; see reporting): plaintext
// callers before STRICT, and callers from outside allowFrom before ZeroTrust starts and again
// during its dry-run (istiod gives ztunnel no dry-run policy, so nothing is enforced while it
// runs, and there are no shadow denials to count; see noCallersOutsideAllowFrom). Nothing is baked: ztunnel reports no refused or failed connection
// in a form the bake reads yet. TestAmbientRungs keeps its levels, effects and dry-run in step
// with Rungs'.
var AmbientRungs = []Rung{
	{Level: meshv1.LevelOff},
	{
		Level:   meshv1.LevelObserve,
		Carries: Effects{Inject: true},
		Gates:   []Gate{injectionOwned, podsReady, waypointReady},
	},
	{
		Level:   meshv1.LevelMutualTLS,
		Carries: Effects{Inject: true, Strict: true},
		Gates:   []Gate{injectionOwned, podsReady, podsCaptured, peerAuthenticationOwned, noNonMeshCallers, noPlaintextCallers},
	},
	{
		Level:       meshv1.LevelZeroTrust,
		Carries:     Effects{Inject: true, Strict: true, Authorization: true},
		DryRunFirst: true,
		Gates:       []Gate{injectionOwned, podsReady, podsCaptured, peerAuthenticationOwned, noNonMeshCallers, soaked, noCallersOutsideAllowFrom},
	},
}

// rungsOf is the table a namespace climbs by: AmbientRungs in ambient mode, else Rungs.
func rungsOf(ns Namespace) []Rung {
	if ns.Ambient {
		return AmbientRungs
	}
	return Rungs
}

// rungFor is the rung of a level in the namespace's table; an unknown level reads as the lowest.
func rungFor(ns Namespace, l Level) Rung { return rungsOf(ns)[Rank(l)] }

// Levels are the names of Rungs, lowest first.
func Levels() []Level {
	out := make([]Level, len(Rungs))
	for i, r := range Rungs {
		out[i] = r.Level
	}
	return out
}

// Rank orders levels: Off is 0, ZeroTrust 3. An unknown level ranks as Off, so a label a user
// mistyped never makes the operator believe a namespace is further up than it is.
func Rank(l Level) int {
	if i := slices.IndexFunc(Rungs, func(r Rung) bool { return r.Level == l }); i >= 0 {
		return i
	}
	return 0
}

// Valid reports whether l names a rung.
func Valid(l Level) bool {
	return slices.ContainsFunc(Rungs, func(r Rung) bool { return r.Level == l })
}

// rungOf is the rung of a level; an unknown level reads as the lowest.
func rungOf(l Level) Rung { return Rungs[Rank(l)] }

// InMesh reports whether a namespace at level l carries the injection label.
func InMesh(l Level) bool { return rungOf(l).Carries.Inject }

// levelBelow is the rung below l (the lowest stays where it is).
func levelBelow(l Level) Level { return Rungs[max(Rank(l)-1, 0)].Level }

// levelAbove is the rung above l (the highest stays where it is).
func levelAbove(l Level) Level { return Rungs[min(Rank(l)+1, len(Rungs)-1)].Level }

// apply records what holds the namespace.
func (d *Decision) apply(v *Verdict) {
	d.Blocked, d.Waiting, d.RecheckAfter, d.Unread = v.Blocked, v.Waiting, v.RecheckAfter, v.Unread
}

// gate runs the gates of the rung a namespace would climb to; it fills in Blocked or Waiting
// from the first that holds the climb.
func gate(d *Decision, ns Namespace, s Settings, next Level, now time.Time) bool {
	c := Climb{NS: ns, State: d.State, Settings: s, From: d.Level, To: next, Now: now}
	for _, g := range rungFor(ns, next).Gates {
		if v := g.Check(c); v != nil {
			d.apply(v)
			d.TrafficHeld = g.Traffic && v.Blocked.Reason != ""
			return false
		}
	}
	return true
}
