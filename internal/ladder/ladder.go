// Package ladder decides each namespace's next move on the adoption ladder (Off → Observe →
// MutualTLS → ZeroTrust). It is pure: the controller observes a namespace (its recorded state,
// its pods and workloads), Decide says what the namespace should look like now and what to do
// next, and the controller applies that. The same code can therefore explain a plan without
// touching a cluster, and every rule of the ladder is tested without one.
package ladder

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/names"
	"github.com/meshwright/meshwright/internal/resilience"
	"github.com/meshwright/meshwright/internal/revision"
	"github.com/meshwright/meshwright/internal/traffic"
)

// Level is a rung of the ladder.
type Level = meshv1.AdoptionLevel

// State is the operator's record of a namespace, kept on the namespace itself (see
// meshv1.AnnotationLadder) so that it survives operator restarts and needs no status space.
type State struct {
	// Since is when the namespace reached its current level.
	Since time.Time `json:"since,omitzero"`
	// Step is the step in progress, if any.
	Step *Step `json:"step,omitempty"`
	// Hold, when set, keeps the namespace where it is until the MeshInstallation's spec changes.
	Hold *Hold `json:"hold,omitempty"`
	// Revision is the control-plane revision that injects the namespace's pods; empty means
	// the default revision (so namespaces recorded before revisions existed read the same).
	Revision string `json:"revision,omitempty"`
	// Ambient records that the namespace entered the mesh in Istio's ambient mode (its label
	// the ambient one, not injection): the data plane it stays on until it leaves the mesh,
	// whatever spec.dataPlane.mode says meanwhile.
	Ambient bool `json:"ambient,omitempty"`
	// RefreshGaveUp is the root rotation's switch time (Settings.RefreshBefore) for which a
	// refresh timed out: the namespace is not restarted again for it, and reported blocked.
	RefreshGaveUp time.Time `json:"refreshGaveUp,omitzero"`
	// Resilience is the resilience defaults the namespace carries (spec.resilience), as the
	// step that applied them recorded them: its objects follow this record, so a rollback
	// restores exactly what was there. Nil is none.
	Resilience *resilience.Values `json:"resilience,omitempty"`
	// ResilienceSeen are the objects of the defaults (Kind/name) the operator has seen exist in
	// the namespace: one of them gone while still wanted was deleted by a user, which the
	// operator records instead of creating it again (resilience.Track). Kept by the adoption
	// stage; Decide leaves it as it is.
	ResilienceSeen []string `json:"resilienceSeen,omitempty"`
	// ResilienceHold, set when applying resilience defaults was rolled back, keeps the
	// namespace from applying those values again, while the spec asks for them; unlike Hold it
	// holds nothing else (the namespace climbs, moves and refreshes as before).
	ResilienceHold *ResilienceHold `json:"resilienceHold,omitempty"`
}

// DefaultRevision is the revision of a mesh's first installation.
const DefaultRevision = "default"

// RevisionName reads a recorded revision: empty is the default one.
func RevisionName(r string) string {
	if r == "" {
		return DefaultRevision
	}
	return r
}

// recorded is how a revision is written into State: the default one as empty.
func recorded(r string) string {
	if r == DefaultRevision {
		return ""
	}
	return r
}

// Step is a move of one rung, up or down.
type Step struct {
	// To is the level the step moves to.
	To Level `json:"to"`
	// Started is when the step (or, for ZeroTrust, its current phase) began; the step timeout
	// counts from here.
	Started time.Time `json:"started"`
	// ID names the step on the workloads it restarts, so each is restarted once per step.
	ID string `json:"id"`
	// Rollback marks a step that reverts a failed one; the namespace is held when it completes.
	Rollback bool `json:"rollback,omitempty"`
	// LateSwept marks a rollback that reached the step timeout and restarted, once, everything it
	// still owed: it ends at the next pass (a restart that does not stick, a template reverted
	// by someone else, is not issued again and again).
	LateSwept bool `json:"lateSwept,omitempty"`
	// Reason and Message say why a rollback happens.
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	// Enforced is set on a step to ZeroTrust once its dry-run phase has soaked.
	Enforced bool `json:"enforced,omitempty"`
	// Cancelled marks a rollback that undoes a step whose target was lowered: no hold follows.
	Cancelled bool `json:"cancelled,omitempty"`
	// PausedAt is when spec.rollout.paused froze the step; the time paused does not count
	// against the step's timeout or soak.
	PausedAt time.Time `json:"pausedAt,omitzero"`
	// Revision is the control-plane revision the step puts on the namespace: the active one for
	// a step into the mesh or a move between revisions (To is then the current level), the one
	// it came from for the rollback of a move. Empty keeps the namespace's revision.
	Revision string `json:"revision,omitempty"`
	// From is the revision a move between revisions leaves, to return to on rollback.
	From string `json:"from,omitempty"`
	// DataPlane marks a migration between data planes at the level: the one the step moves the
	// namespace's pods onto (Ambient), or, on the migration's rollback, the one it takes them
	// back to (Sidecar). Empty for every other step.
	DataPlane meshv1.DataPlaneKind `json:"dataPlane,omitempty"`
	// Refresh marks a step that stays at the level and restarts the workloads whose proxies
	// started before a root rotation's switch, so that they get certificates of the new
	// intermediate.
	Refresh bool `json:"refresh,omitempty"`
	// Defaults marks a step that stays at the level and changes the namespace's resilience
	// defaults to Resilience (see startDefaults); on a rollback, one that goes back to the
	// recorded ones.
	Defaults bool `json:"defaults,omitempty"`
	// Resilience is the defaults a Defaults step applies.
	Resilience *resilience.Values `json:"resilience,omitempty"`
	// Baseline is the namespace's traffic before the step's change took effect, for the bake to
	// compare with; nil when none was read (the bake then judges only what needs none).
	Baseline *Baseline `json:"baseline,omitempty"`
	// Baking is when the step's change was complete and settled: its traffic is watched from
	// then on for the bake time before the step counts as done. Zero before.
	Baking time.Time `json:"baking,omitzero"`
	// Unbaked, set in the pass a step completes with its bake time over but its traffic never
	// read (its rung's UnreadBakeCompletes), says why; never recorded.
	Unbaked string `json:"-"`
}

// moves reports whether the step moves the namespace to another revision at its level.
func (st Step) moves(current Level) bool {
	return st.Revision != "" && st.To == current && !st.Rollback
}

// StepKind says what a step does. It is derived from the step's record, so records written by
// earlier releases read the same and no record is rewritten for it.
type StepKind string

// The kinds of step.
const (
	// KindClimb goes one rung up.
	KindClimb StepKind = "Climb"
	// KindDescend goes one rung down.
	KindDescend StepKind = "Descend"
	// KindRollback reverts a step (or a move) back to where the namespace stands.
	KindRollback StepKind = "Rollback"
	// KindMove moves the namespace to another control-plane revision at its level.
	KindMove StepKind = "Move"
	// KindRefresh restarts, at the level, the workloads whose proxies predate a root
	// rotation's switch.
	KindRefresh StepKind = "Refresh"
	// KindMigrate moves the namespace's pods from sidecars to ambient mode at its level.
	KindMigrate StepKind = "Migrate"
	// KindDefaults applies, at the level, the resilience defaults the spec asks for.
	KindDefaults StepKind = "Defaults"
)

// Kind is what the step does to a namespace standing at current.
func (st Step) Kind(current Level) StepKind {
	switch {
	case st.Rollback:
		return KindRollback
	case st.Refresh:
		return KindRefresh
	case st.Defaults && st.To == current:
		return KindDefaults
	case st.DataPlane != "" && st.To == current:
		return KindMigrate
	case st.moves(current):
		return KindMove
	case Rank(st.To) > Rank(current):
		return KindClimb
	default:
		return KindDescend
	}
}

// Hold keeps a namespace where it is after a rollback.
type Hold struct {
	// Generation is the MeshInstallation generation the hold applies to; a spec change
	// releases it.
	Generation int64  `json:"generation"`
	Reason     string `json:"reason"`
	Message    string `json:"message"`
}

// ResilienceHold is a rolled-back application of resilience defaults: the values that broke
// traffic, and why. Other values (the spec changed them, or the namespace moved to another rule)
// are applied; these are not again.
type ResilienceHold struct {
	Values  *resilience.Values `json:"values"`
	Reason  string             `json:"reason"`
	Message string             `json:"message"`
}

// Namespace is what the controller observed of one enrolled (or formerly enrolled) namespace.
type Namespace struct {
	Name string
	// Current is the level on the namespace's label.
	Current Level
	State   State
	// Target is the level the spec (or the namespace's override label) asks for.
	Target Level
	// Ambient is set when the namespace's data plane is Istio's ambient mode (see InAmbient):
	// in the mesh means the ambient label instead of the injection label, no step restarts its
	// pods, and its climbs pass AmbientRungs' gates.
	Ambient bool
	// AmbientWanted is what the spec asks of the namespace (its rule's dataPlaneMode, else
	// spec.dataPlane.mode): a namespace in the mesh with sidecars migrates to ambient mode; one
	// in ambient mode is not moved back (DataPlaneChangeUnsupported).
	AmbientWanted bool
	// AmbientLabelled is true when the namespace carries the ambient label now. With sidecars
	// recorded and no step, it is a migration (or its rollback) whose record was lost: its pods
	// may be on either data plane, so it is rolled back to sidecars (see normalize).
	AmbientLabelled bool
	Pods            Pods
	// Workloads are the namespace's Deployments, StatefulSets, DaemonSets, CronJobs and the
	// Jobs that have not finished.
	Workloads []Workload
	// InjectionConflict, when set, says why the operator must not manage the namespace's
	// injection label (someone else's istio-injection or istio.io/rev label): no step up starts.
	InjectionConflict string
	// PolicyConflict, when set, names a namespace-wide PeerAuthentication of someone else's that
	// would override STRICT: no step to MutualTLS or above starts.
	PolicyConflict string
	// Traffic is what telemetry showed of the namespace's inbound traffic in this pass; nil when
	// it was not read (only namespaces about to take an enforcing step are).
	Traffic *traffic.Reading
	// AllowFrom are the other namespaces whose workloads may call it at ZeroTrust.
	AllowFrom []string
	// NonMeshCallers are the callers outside the mesh that the Kubernetes API shows reaching the
	// namespace's Services; nil when they were not looked for (only namespaces whose next climb
	// goes STRICT are).
	NonMeshCallers []NonMeshCaller
	// PlaintextPorts are the Service ports the spec exempts from STRICT
	// (spec.namespaces[].plaintextPorts).
	PlaintextPorts []meshv1.ServicePortRef
	// ExemptionProblems say why some of PlaintextPorts cannot be rendered (a Service without a
	// selector, a port it does not have): the namespace does not go STRICT without them.
	ExemptionProblems []string
	// Admission is what the API server said of the pods the next climb would restart, created
	// as they will be with server-side dry run (only for namespaces whose next climb passes an
	// admission gate).
	Admission Admission
	// Waypoint is what the spec asks and the cluster holds of the namespace's waypoint.
	Waypoint Waypoint
	// Resilience is what the spec asks of the namespace's resilience defaults.
	Resilience ResilienceWant
}

// Waypoint is a namespace's waypoint in ambient mode (package waypoint): the Gateway the
// operator creates for it and the istio.io/use-waypoint label that sends its traffic there.
type Waypoint struct {
	// Wanted: the namespace's rule asks for one (waypoint: true), and it is enrolled with the
	// spec putting it in ambient mode, or the ladder still has it in ambient mode on its way out.
	Wanted bool
	// Programmed: the operator's Gateway serves (istiod deployed it). Updating: it was
	// Programmed for an earlier generation, and istiod has not caught up with the latest yet.
	Programmed, Updating bool
	// Labelled: the namespace carries istio.io/use-waypoint naming the waypoint's Gateway.
	Labelled bool
	// Unavailable, when set, says why no Gateway can be created (the Gateway API's CRDs are not
	// installed, or too old).
	Unavailable string
	// Conflict, when set, says that a Gateway by the waypoint's name is someone else's, or that
	// the namespace's label sends its traffic to another waypoint.
	Conflict string
	// Unread, when set, says why the waypoint could not be read (the kubectl plugin, with a
	// user's credentials): shown as unread, the namespace's labels taken as they are.
	Unread string
}

// Admission is the outcome of creating, with server-side dry run, the pod of each workload a
// climb would restart, as the climb will have it (injected by the revision it puts on the
// namespace).
type Admission struct {
	// Unchecked is set by a reader that creates no pods (the kubectl plugin): the gate lets the
	// climb be predicted, unless Reported.
	Unchecked bool
	// Reported, with Unchecked, says the operator last reported the namespace held by an
	// admission gate: the gate waits for this reader, which shows the operator's verdict.
	Reported bool
	// Deferred is set when no slot was free for the climb (spec.rollout.maxNamespacesInProgress):
	// its pods are created once one is, so a pass creates only the pods of climbs that can start.
	Deferred bool
	// Problem says why the pods could not be created (the API server or a webhook did not
	// answer): the climb waits, since nothing shows its pods would be admitted.
	Problem string
	// Sidecars is the shape of the proxy in the CronJobs' and Jobs' pods the injector gave back:
	// meshv1.SidecarsNative, meshv1.SidecarsClassic (one classic is enough), or "" when none
	// came back injected.
	Sidecars string
	// Revision is the revision whose injector the pods went through.
	Revision string
	// Refused are the workloads whose pod the API server refused, by kind and name.
	Refused []AdmissionRefusal
}

// AdmissionRefusal is one workload whose restarted pod the API server would refuse.
type AdmissionRefusal struct {
	// Workload is "Deployment/web".
	Workload string
	// Message is the API server's, as it said it.
	Message string
}

// NonMeshCaller is a caller that can never speak mTLS, found in the Kubernetes API: something
// outside the mesh calls one of the namespace's Service ports, and STRICT would refuse it.
type NonMeshCaller struct {
	// Object names what makes the call: "ValidatingWebhookConfiguration/policy-hooks".
	Object string
	// Caller says who calls, and what breaks when it is refused.
	Caller string
	// Service and Port are the Service port it calls.
	Service string
	Port    int32
}

// Pods summarises a namespace's running pods (terminating and finished pods are left out).
type Pods struct {
	Total int `json:"total"`
	Ready int `json:"ready"`
	// Uninjected names pods without Istio's proxy, sorted.
	Uninjected []string `json:"uninjected,omitempty"`
	// Unmanaged names the uninjected pods that no workload the ladder restarts owns (a bare pod,
	// or one of a controller it does not know), each with its owner: a step restarts none of
	// them, so someone else must, sorted.
	Unmanaged []string `json:"unmanaged,omitempty"`
	// NotReady names pods that are not Ready, sorted.
	NotReady []string `json:"notReady,omitempty"`
	// ProxylessPlaintext names pods running Istio's proxyless gRPC (the grpc-agent template)
	// that a Service selects and that serve plaintext under PERMISSIVE (no
	// security.istio.io/tlsMode=istio), sorted. A pod no Service selects only calls.
	ProxylessPlaintext []string `json:"proxylessPlaintext,omitempty"`
	// Proxyless names every pod running Istio's proxyless gRPC, sorted: no Envoy, so no
	// telemetry, and AuthorizationPolicies enforced even in dry-run.
	Proxyless []string `json:"proxyless,omitempty"`
	// Uncaptured names the pods without a proxy that Istio CNI has not redirected to ztunnel
	// (no ambient.istio.io/redirection=enabled, which the CNI's node agent sets once it has),
	// leaving out those in OutsideAmbient, sorted. Only meaningful in ambient mode: a step into
	// it waits for them, as a sidecar step waits for injected pods.
	Uncaptured []string `json:"uncaptured,omitempty"`
	// OutsideAmbient names the pods without a proxy that ambient mode leaves out for good
	// (labelled istio.io/dataplane-mode=none, or on the node's network), sorted: ztunnel never
	// carries their traffic, so STRICT mTLS would cut them off.
	OutsideAmbient []string `json:"outsideAmbient,omitempty"`
	// Unproxied names the pods without a proxy that Istio's injector would give one if they
	// were created again (they do not opt out of injection and are not on the node's network),
	// sorted: the rollback of a migration to ambient mode keeps the ambient label while any runs.
	Unproxied []string `json:"unproxied,omitempty"`
	// StuckSidecars names the pods with the proxy that no step restarts (a bare pod, one of a
	// controller the ladder does not know, or of a workload restarted only by hand), each with
	// its owner, sorted: a migration to ambient mode could not take their proxy away.
	StuckSidecars []string `json:"stuckSidecars,omitempty"`
}

// Workload is a Deployment, StatefulSet, DaemonSet, CronJob or Job, as far as the ladder cares.
type Workload struct {
	// Kind and Name identify it: "Deployment", "web".
	Kind, Name string
	// RunsToCompletion marks a CronJob or a Job: its pods finish, so it is never restarted (its
	// next pods are injected, or not, as they are created), and a template that opts out of
	// injection holds STRICT even while none of its pods runs.
	RunsToCompletion bool
	// ManualRestart says why a template change does not restart its pods (an OnDelete update
	// strategy, a partitioned rolling update, a paused Deployment), "" when it does: a step
	// does not restart it, or wait for it, and its pods without the proxy hold STRICT
	// (Pods.Unmanaged names them) until someone restarts them.
	ManualRestart string
	// RestartedFor is the step ID its pod template was last restarted for.
	RestartedFor string
	// StaticTrust: a proxy of its pods keeps the roots it started with until it restarts
	// (revision.LiveTrust is false: no PROXY_CONFIG_XDS_AGENT, or proxyless gRPC), so a root
	// rotation restarts it before signing switches to the new root.
	StaticTrust bool
	// OptedOut is true when its pod template asks not to be injected.
	OptedOut bool
	// SidecarRequested is true when its pod template asks Istio's injector for the proxy itself
	// (sidecar.istio.io/inject=true, or an istio.io/rev label): its pods get one whatever the
	// namespace's labels say.
	SidecarRequested bool
	// AmbientExcluded is true when its pod template opts out of ambient mode
	// (istio.io/dataplane-mode=none).
	AmbientExcluded bool
	// Gateway is true for what istiod deploys for a Gateway API Gateway (an ingress gateway, a
	// waypoint; its pod template names the Gateway): an Envoy of Istio's whatever the
	// namespace's data plane, which steps neither restart nor wait for but a root rotation's
	// refresh (skipsGateway), and which a migration to ambient mode does not judge.
	Gateway bool
	// GatewayTemplate is true when its pod template asks Istio's injector for the gateway
	// template (inject.istio.io/templates: gateway, as Istio's gateway Helm chart writes it): its
	// pods are an Envoy of their own, a gateway, which keeps its proxy in ambient mode. Steps off
	// the proxy neither restart nor wait for it, and a migration to ambient mode does not judge
	// it; unlike Gateway, it follows the namespace's revision (moves restart it).
	GatewayTemplate bool
	// Uninjected is true when some of its running pods lack the proxy; Injected when some
	// carry it.
	Uninjected, Injected bool
	// Revisions are the revisions that injected its running pods (their istio.io/rev annotation).
	Revisions []string
	// RolledOut is true when the controller of the workload has finished its latest rollout
	// and every replica is updated and available.
	RolledOut bool
	// DisruptionBlocked names a PodDisruptionBudget over its pods that allows no disruption now.
	DisruptionBlocked string
	// Pods is the number of its running pods: what a restart of it costs the namespace's budget.
	Pods int
	// Started is when its oldest running pod with the proxy was created.
	Started time.Time
}

// Settings are the rollout settings of the MeshInstallation.
type Settings struct {
	Generation     int64
	Paused         bool
	MaxUnavailable intstr.IntOrString
	SoakTime       time.Duration
	StepTimeout    time.Duration
	// Revision is the active control-plane revision: namespaces in the mesh move to it.
	// Empty means the default revision.
	Revision string
	// Newer are installed revisions newer than the active one: a namespace on one of them moves
	// back because an upgrade was set back, which is not held up by unready pods.
	Newer []string
	// RefreshBefore, while a root rotation switches to the new intermediate, is the time
	// before which started proxies may hold a certificate of the old one: their workloads are
	// restarted. Zero when no rotation needs it.
	RefreshBefore time.Time
	// RefreshForTrust says the refresh is the rotation's Trust phase instead: proxies started
	// before RefreshBefore may not trust the new root, and only the workloads whose proxies do
	// not take it live (Workload.StaticTrust) restart.
	RefreshForTrust bool
	// TrafficGates holds enforcing steps until telemetry shows they refuse no caller; false
	// (spec.rollout.trafficGates: Skip) gates them on pods only.
	TrafficGates bool
	// ZtunnelRead says the telemetry source reads ztunnel (Prometheus does; the embedded source
	// reads the namespace's own proxies only): without it, the traffic of a namespace in ambient
	// mode is not read at all, and its enforcing climbs are held (AmbientTrafficUnread).
	ZtunnelRead bool
	// ObserveTime is how long a namespace holds Observe, its traffic watched, before STRICT.
	ObserveTime time.Duration
	// BakeTime is how long an enforcing step's traffic is compared with its baseline before the
	// step counts as done (under the traffic gates).
	BakeTime time.Duration
	// Strict are the namespaces whose pods accept only mTLS in this pass (at MutualTLS or
	// above, or stepping there): a namespace that leaves the mesh must not be calling them.
	Strict map[string]bool
}

// Effects are what the namespace must carry at its current position on the ladder. The
// controller makes the cluster match them on every pass, so a deleted label or policy returns.
type Effects struct {
	// Inject: the namespace carries the injection label.
	Inject bool
	// Strict: a STRICT PeerAuthentication for the namespace.
	Strict bool
	// Authorization: the allow-nothing and allow AuthorizationPolicies.
	Authorization bool
	// DryRun: the AuthorizationPolicies carry istio.io/dry-run, so they log instead of deny.
	DryRun bool
	// Revision is the revision the injection label names, when Inject.
	Revision string
	// Ambient: in the mesh (Inject) by the ambient label, istio.io/dataplane-mode=ambient.
	Ambient bool
	// Sidecars: in the mesh (Inject) by the injection label, which gives pods Istio's proxy. A
	// namespace carries one of Ambient and Sidecars, or both while a migration moves its pods
	// from one data plane to the other (see dataPlaneEffects).
	Sidecars bool
	// Waypoint: the operator's waypoint Gateway is kept (and ZeroTrust's policies attached to
	// it); UseWaypoint: the namespace carries istio.io/use-waypoint (see waypointEffects).
	Waypoint, UseWaypoint bool
	// Resilience: the resilience defaults' objects, with these values (nil: none; see
	// resilienceEffects).
	Resilience *resilience.Values
}

// EffectsOf is what a namespace at level current, taking step (nil for none), carries. Going
// up, a step's effect is in place while it runs; going down, it is gone while the step runs.
func EffectsOf(current Level, step *Step) Effects {
	level := current
	if step != nil && !step.Rollback && Rank(step.To) > Rank(current) {
		level = step.To
	}
	if step != nil && Rank(step.To) < Rank(current) {
		level = step.To
	}
	e := rungOf(level).Carries
	if e.Authorization && step != nil && rungOf(step.To).DryRunFirst && step.To != current && !step.Enforced {
		e.DryRun = true
	}
	if step != nil && step.Rollback {
		// A rollback takes away the effect of the step it reverts: the namespace goes back to
		// exactly what its recorded level carries.
		e = EffectsOf(current, nil)
	}
	e.Sidecars = e.Inject
	return e
}

// Event is a step's news, emitted on the Namespace.
type Event struct {
	Warning bool
	Reason  string
	Message string
}

// Decision is what Decide found for one namespace.
type Decision struct {
	// Level and State are what the namespace's label and annotation must say after this pass.
	Level Level
	State State
	// Effects are what the namespace must carry.
	Effects Effects
	// Restart lists workloads ("Kind/name") to restart now, tagged with State.Step.ID.
	Restart []string
	// InProgress is true while a step runs; it counts against maxNamespacesInProgress.
	InProgress bool
	// Blocked, when Reason is set, says why the namespace cannot take its next step.
	Blocked Blocked
	// Waiting says, for a namespace that is neither at its target nor blocked, what it waits
	// for (a free slot, the soak time); for status messages.
	Waiting string
	// Event is set when the namespace's state changed in a way worth telling.
	Event *Event
	// RecheckAfter asks to look again after this long (soak and step timeouts pass silently).
	RecheckAfter time.Duration
	// RevisionBehind is true when the namespace is in the mesh on another revision than the
	// active one, with no move running: it is not at its target yet.
	RevisionBehind bool
	// RefreshPending is true when the namespace runs proxies started before a root rotation's
	// switch, with no step running: it is not at its target yet.
	RefreshPending bool
	// DataPlaneBehind is true when the namespace stands in the mesh on another data plane than
	// the spec asks for (DataPlaneChangeUnsupported): it is not at its target.
	DataPlaneBehind bool
	// WaypointPending is true when the namespace, in ambient mode with no step running, does
	// not send its traffic through the serving waypoint its rule asks for: it is not at its
	// target.
	WaypointPending bool
	// ResiliencePending is true when the namespace, with no step running, does not carry the
	// resilience defaults its level asks for (a step will apply them): it is not at its target.
	ResiliencePending bool
	// Unread is true when a gate waits because what it judges (the namespace's traffic, the
	// admission of its restarted pods) was not read in this pass: the kubectl plugin then shows
	// what the operator last reported.
	Unread bool
	// TrafficHeld is true when Blocked comes from a traffic gate (what the proxies reported, or
	// could not): the controller announces it with an Event when it is new.
	TrafficHeld bool
	// rollbackLate: a rollback that reached the step timeout, which restarts what it still owes
	// at once (planRestarts).
	rollbackLate bool
}

// Blocked is why a namespace is held below its target.
type Blocked struct {
	Reason  string
	Message string
}

// AtTarget reports whether the namespace stands at its target with nothing in progress.
func (d Decision) AtTarget(target Level) bool {
	return d.State.Step == nil && d.Level == target && !d.RevisionBehind && !d.RefreshPending && !d.DataPlaneBehind && !d.WaypointPending && !d.ResiliencePending
}

// InAmbient is the data plane a namespace is on: once it is in the mesh, or stepping, the one
// its record says it entered with; from Off, the one the spec asks for (wanted).
func InAmbient(current Level, st State, wanted bool) bool {
	if InMesh(current) || st.Step != nil {
		return st.Ambient
	}
	return wanted
}

// otherDataPlane reports a namespace standing in the mesh, with no step, on another data plane
// than the spec asks for: it is not moved between them in place.
func otherDataPlane(d Decision, ns Namespace) bool {
	return d.State.Step == nil && InMesh(d.Level) && ns.AmbientWanted != d.State.Ambient
}

// dataPlaneUnchanged is the Blocked of a namespace on another data plane than the spec asks for.
func dataPlaneUnchanged() Blocked {
	return Blocked{Reason: meshv1.ReasonDataPlaneChangeUnsupported, Message: "The namespace is in the mesh in ambient mode, and the spec asks for Sidecar (its rule's dataPlaneMode, or else spec.dataPlane.mode). This version of Meshwright migrates a namespace from sidecars to ambient mode in place, not back, so it stays in ambient mode. To move it, lower its target to Off, then raise it again: its pods restart with sidecars."}
}

// injectedBy is the revision a namespace's injection label names, for its state.
func injectedBy(st State) string {
	if st.Step != nil && st.Step.Revision != "" {
		return st.Step.Revision
	}
	return RevisionName(st.Revision)
}

// behind reports a namespace in the mesh with sidecars, without a step, on another revision than
// the active one.
func behind(level Level, st State, s Settings) bool {
	// A namespace in ambient mode carries no revision label: its pods are not the revision's
	// (ztunnel serves them), so it has nothing to move.
	return st.Step == nil && InMesh(level) && !st.Ambient && RevisionName(st.Revision) != RevisionName(s.Revision)
}

// maxNamed bounds the pod names a message lists.
const maxNamed = 5

// Settle is how long a step's effect must have been in place, with every pod Ready, before the
// step counts as done: a change that makes pods fail shortly after is still the step's to undo.
const Settle = 5 * time.Second

// Decide says where a namespace goes next. mayStart tells whether a new step may begin now
// (fewer than maxNamespacesInProgress namespaces are stepping); a step already running always
// continues. now is the time of the pass.
func Decide(ns Namespace, s Settings, mayStart bool, now time.Time) (d Decision) {
	d = Decision{Level: ns.Current, State: ns.State}
	normalize(&d, ns, s, now)
	defer finish(&d, ns, s)

	refresh := refreshDue(d, ns, s)
	if d.State.Step == nil && d.Level == ns.Target && !behind(d.Level, d.State, s) && !refresh && !otherDataPlane(d, ns) && !resilienceDue(d, ns) {
		// At its target there is nothing to hold back: a hold only keeps a namespace from
		// climbing again.
		d.State.Hold = nil
		return d
	}
	if s.Paused {
		pause(&d, now)
		return d
	}
	resume(&d, now)
	switch {
	case d.State.Step != nil:
		advance(&d, ns, s, now)
	case refresh:
		// Before a hold or a climb: a rotation cannot end while these proxies run.
		startRefresh(&d, ns, s, mayStart, now)
	case d.State.Hold != nil && Rank(ns.Target) >= Rank(d.Level):
		d.Blocked = Blocked{Reason: d.State.Hold.Reason, Message: d.State.Hold.Message}
	case Rank(ns.Target) < Rank(d.Level):
		d.State.Hold = nil
		if v := leavingBreaksCalls(ns, s, d.Level); v != nil {
			d.apply(v)
			d.TrafficHeld = v.Blocked.Reason != ""
			return d
		}
		startStep(&d, ns, s, levelBelow(d.Level), mayStart, now)
	case migratesNext(d, ns, s, now):
		// Sidecars, and the spec asks for ambient mode: the namespace migrates at its level
		// (before any move between revisions, which would restart its pods for nothing, unless
		// the migration is held: see migratesNext).
		d.State.Hold = nil
		startMigration(&d, ns, s, mayStart, now)
	case behind(d.Level, d.State, s):
		// In the mesh on a retiring revision: it moves to the active one before it climbs on.
		d.State.Hold = nil
		startMove(&d, ns, s, mayStart, now)
	case resilienceDue(d, ns):
		// At its level, the defaults it should carry are applied before it climbs on.
		d.State.Hold = nil
		startDefaults(&d, ns, s, mayStart, now)
	case otherDataPlane(d, ns):
		d.State.Hold = nil
		d.Blocked = dataPlaneUnchanged()
	default:
		d.State.Hold = nil
		if next := levelAbove(d.Level); gate(&d, ns, s, next, now) {
			startStep(&d, ns, s, next, mayStart, now)
		}
	}
	return d
}

// normalize reads the recorded state as the operator can trust it: an unknown level is Off, a
// level in the mesh with no time reached starts its clock now (under the traffic gates), a
// hold from an earlier spec is released, and a step no pass writes (an annotation edited by
// hand, or a label changed under a running step) is forgotten, so the namespace goes on from its
// label.
func normalize(d *Decision, ns Namespace, s Settings, now time.Time) {
	if !Valid(d.Level) {
		d.Level = meshv1.LevelOff
	}
	if s.TrafficGates && d.State.Since.IsZero() && InMesh(d.Level) {
		// A record without the time its level was reached (the annotation deleted to release a
		// hold): the observe window starts now, not at the zero time.
		d.State.Since = now
	}
	if d.State.Hold != nil && d.State.Hold.Generation != s.Generation {
		d.State.Hold = nil
	}
	if h := d.State.ResilienceHold; h != nil && !sameValues(h.Values, ns.Resilience.Values) {
		d.State.ResilienceHold = nil // the spec asks for other values (or none): they may apply
	}
	if st := d.State.Step; st != nil && !wellFormed(*st, d.Level) {
		d.State.Step = nil
	}
	if InMesh(d.Level) || d.State.Step != nil {
		// In the mesh, the data plane is the one the planner found it on (its record, or its
		// label when the record was deleted): the record says so from now on.
		d.State.Ambient = ns.Ambient
	}
	if lostMigration(*d, ns) {
		// A migration to ambient mode, or its rollback, whose record was lost (the annotation
		// deleted, or the level label changed under it): the injection label may be off, and
		// pods run without the proxy that only the ambient label keeps in the mesh. It is undone
		// as a cancelled migration is, both labels on until every pod has the proxy again; the
		// migration starts over from there if the spec still asks for it.
		d.State.Step = &Step{To: d.Level, Rollback: true, Cancelled: true, DataPlane: meshv1.DataPlaneSidecar, Started: now, ID: stepID(d.Level, now)}
	}
}

// lostMigration reports a namespace recorded with sidecars, in the mesh with no step, that carries
// the ambient label while pods the injector would give the proxy run without it.
func lostMigration(d Decision, ns Namespace) bool {
	return d.State.Step == nil && InMesh(d.Level) && !d.State.Ambient && ns.AmbientLabelled && len(ns.Pods.Unproxied) > 0
}

// finish derives what follows from where the pass left the namespace: its effects, whether it
// is behind the active revision or runs proxies a root rotation must restart.
func finish(d *Decision, ns Namespace, s Settings) {
	d.Effects = waypointEffects(dataPlaneEffects(EffectsOf(d.Level, d.State.Step), d.State.Ambient, d.State.Step), ns.Waypoint)
	if d.Effects.Inject {
		d.Effects.Revision = injectedBy(d.State)
	}
	d.Effects.Resilience = resilienceEffects(*d, ns)
	d.ResiliencePending = resiliencePending(d, ns)
	d.RevisionBehind = behind(d.Level, d.State, s)
	d.DataPlaneBehind = otherDataPlane(*d, ns)
	d.WaypointPending = waypointPending(d, ns)
	d.RefreshPending = d.State.Step == nil && needsRefresh(d.Level, ns, s)
	if d.RefreshPending && d.Blocked.Reason == "" && d.State.RefreshGaveUp.Equal(s.RefreshBefore) {
		d.Blocked = Blocked{Reason: meshv1.ReasonRefreshIncomplete, Message: fmt.Sprintf(
			"Restarting the workloads whose proxies started before the root rotation's switch did not finish within %s; the rotation waits for them. Find what keeps them from rolling out, then restart them yourself (kubectl rollout restart).", s.StepTimeout)}
	}
}

// refreshDue reports whether a namespace with no step should restart workloads for a root
// rotation now: it stands at or below its target on the active revision, runs stale proxies,
// and has not given up on this rotation already.
func refreshDue(d Decision, ns Namespace, s Settings) bool {
	return d.State.Step == nil && !behind(d.Level, d.State, s) && Rank(ns.Target) >= Rank(d.Level) &&
		needsRefresh(d.Level, ns, s) && !d.State.RefreshGaveUp.Equal(s.RefreshBefore)
}

// pause freezes a running step where it is (spec.rollout.paused): the time paused is not counted
// against its timeout or soak, see resume.
func pause(d *Decision, now time.Time) {
	d.InProgress = d.State.Step != nil
	d.Waiting = "the rollout is paused (spec.rollout.paused)"
	if st := d.State.Step; st != nil && st.PausedAt.IsZero() {
		frozen := *st
		frozen.PausedAt = now
		d.State.Step = &frozen
	}
}

// resume unfreezes a step that was paused, moving its start on by the time it was paused.
func resume(d *Decision, now time.Time) {
	if st := d.State.Step; st != nil && !st.PausedAt.IsZero() {
		resumed := *st
		resumed.Started = resumed.Started.Add(now.Sub(resumed.PausedAt))
		if !resumed.Baking.IsZero() {
			resumed.Baking = resumed.Baking.Add(now.Sub(resumed.PausedAt))
		}
		resumed.PausedAt = time.Time{}
		d.State.Step = &resumed
	}
}

// startStep begins a step of one rung to next, when a slot is free.
func startStep(d *Decision, ns Namespace, s Settings, next Level, mayStart bool, now time.Time) {
	if !mayStart {
		d.Waiting = "waiting for a free slot (spec.rollout.maxNamespacesInProgress)"
		return
	}
	d.State.Step = &Step{To: next, Started: now, ID: stepID(next, now)}
	if !InMesh(d.Level) {
		d.State.Step.Revision = RevisionName(s.Revision)
		d.State.Ambient = ns.Ambient
	}
	if s.TrafficGates && len(rungFor(ns, next).Bake) > 0 {
		// What the gate just judged is what the bake compares with.
		d.State.Step.Baseline = baselineOf(ns.Traffic)
	}
	d.InProgress = true
	d.Event = &Event{Reason: "StepStarted", Message: fmt.Sprintf("Stepping from %s to %s.", d.Level, next)}
	if rungOf(next).DryRunFirst {
		d.Event.Message += fmt.Sprintf(" The AuthorizationPolicies run in dry-run for %s first.", dryRunTime(s))
		d.RecheckAfter = dryRunTime(s)
		if s.TrafficGates {
			d.RecheckAfter = min(d.RecheckAfter, TrafficPoll)
		}
	}
	if rungOf(next).Carries.Strict && !rungOf(d.Level).Carries.Strict && len(ns.PlaintextPorts) > 0 {
		d.Event.Message += fmt.Sprintf(" Service ports left accepting plaintext (spec.namespaces[].plaintextPorts): %s.", portList(ns.PlaintextPorts))
	}
	if rungOf(next).Carries.Authorization && len(ns.AllowFrom) == 0 {
		// Often a namespace raised by its target-level label, which no rule's allowFrom covers.
		d.Event.Warning = true
		d.Event.Message += " Its allowFrom is empty: once enforced, only the namespace's own workloads may call it. List its callers in the allowFrom of a rule of spec.namespaces that selects it."
	}
	planRestarts(d, ns, s)
}

// startMove begins moving a namespace that is in the mesh to the active revision: its injection
// label changes, and its workloads restart (within the same budget as a step) so that every pod
// is injected by the new revision; gated like a step up, on every pod being Ready.
func startMove(d *Decision, ns Namespace, s Settings, mayStart bool, now time.Time) {
	to, from := RevisionName(s.Revision), RevisionName(d.State.Revision)
	if ns.InjectionConflict != "" {
		d.Blocked = Blocked{Reason: meshv1.ReasonInjectionLabelConflict, Message: ns.InjectionConflict}
		return
	}
	back := slices.Contains(s.Newer, from)
	if len(ns.Pods.NotReady) > 0 && !back {
		d.Blocked = Blocked{Reason: meshv1.ReasonPodsNotReady, Message: fmt.Sprintf(
			"%d pod(s) are not Ready: %s. The move from revision %s to %s waits until every pod is Ready, so that what it changes can be judged.", len(ns.Pods.NotReady), names.List(ns.Pods.NotReady), from, to)}
		return
	}
	if !mayStart {
		d.Waiting = fmt.Sprintf("waiting for a free slot to move to revision %s (spec.rollout.maxNamespacesInProgress)", to)
		return
	}
	if v := admissionVerdict(ns.Admission, fmt.Sprintf("the move from revision %s to %s", from, to)); v != nil && !back {
		d.apply(v)
		return
	}
	if back {
		// The upgrade was set back, often because the new revision misbehaves: the namespace
		// goes back like a rollback (not waiting for unready pods or disruption budgets), and
		// is not held if its pods are slow to come back.
		d.State.Step = &Step{To: d.Level, Rollback: true, Cancelled: true, Revision: to, Started: now, ID: fmt.Sprintf("revision-%s-%d", to, now.UnixMilli())}
		d.InProgress = true
		d.Event = &Event{Reason: "RevisionMoveBack", Message: fmt.Sprintf("The upgrade was set back: moving from control-plane revision %s back to %s at %s.", from, to, d.Level)}
		planRestarts(d, ns, s)
		return
	}
	d.State.Step = &Step{To: d.Level, Revision: to, From: from, Started: now, ID: fmt.Sprintf("revision-%s-%d", to, now.UnixMilli())}
	d.InProgress = true
	d.Event = &Event{Reason: "RevisionMoveStarted", Message: fmt.Sprintf("Moving from control-plane revision %s to %s at %s.", from, to, d.Level)}
	planRestarts(d, ns, s)
}

// needsRefresh reports whether a namespace in the mesh has workloads whose proxies started
// before a root rotation's switch.
func needsRefresh(level Level, ns Namespace, s Settings) bool {
	if s.RefreshBefore.IsZero() || !InMesh(level) {
		return false
	}
	return slices.ContainsFunc(ns.Workloads, func(w Workload) bool { return stale(w, s) })
}

// stale reports whether a workload runs proxies the rotation's refresh must restart: started
// before s.RefreshBefore and, in the Trust phase, unable to take the new root live.
func stale(w Workload, s Settings) bool {
	before := s.RefreshBefore
	return !before.IsZero() && !w.OptedOut && !w.RunsToCompletion && w.Injected && !w.Started.IsZero() && w.Started.Before(before) &&
		(!s.RefreshForTrust || w.StaticTrust)
}

// startRefresh restarts, within the namespace's budget and one namespace per free slot, the
// workloads whose proxies hold certificates of a rotated-out intermediate. It waits for no
// readiness: a restart gives a broken pod nothing worse, and the rotation waits for it.
func startRefresh(d *Decision, ns Namespace, s Settings, mayStart bool, now time.Time) {
	if ns.InjectionConflict != "" {
		// Restarted under someone else's injection label, pods might come back without the
		// proxy: the namespace is reported instead.
		d.Blocked = Blocked{Reason: meshv1.ReasonInjectionLabelConflict, Message: ns.InjectionConflict}
		return
	}
	if !mayStart {
		d.Waiting = "waiting for a free slot to restart workloads for the root rotation (spec.rollout.maxNamespacesInProgress)"
		return
	}
	if v := admissionVerdict(ns.Admission, "the root rotation's restarts"); v != nil {
		d.apply(v)
		return
	}
	d.State.Step = &Step{To: d.Level, Refresh: true, Started: now, ID: fmt.Sprintf("certificates-%d", now.UnixMilli())}
	d.InProgress = true
	msg := "Restarting the workloads whose proxies started before the root rotation's switch, so that they get certificates of the new intermediate."
	if s.RefreshForTrust {
		msg = "Restarting the workloads whose proxies started before istiod published the new root and cannot receive it live (proxyless gRPC, or no " +
			revision.ProxyConfigXDSAgentEnv + "), so that they trust it before signing switches to it."
	}
	d.Event = &Event{Reason: "CertificateRefreshStarted", Message: msg}
	planRestarts(d, ns, s)
}

// lateRollbackRecheck is how soon a rollback that restarted what it owed past its timeout is
// looked at again, to end.
const lateRollbackRecheck = 10 * time.Second

// advance moves a running step on: a cancel, the dry-run phase, waiting, completion or rollback.
func advance(d *Decision, ns Namespace, s Settings, now time.Time) {
	step := *d.State.Step
	d.State.Step = &step
	d.InProgress = true
	kind := step.Kind(d.Level)
	if cancel(d, ns, s, step, kind, now) || kind == KindDefaults && cancelDefaults(d, ns, step, now) {
		return
	}
	if kind == KindClimb && rungOf(step.To).DryRunFirst && !step.Enforced && dryRun(d, ns, s, &step, now) {
		return
	}

	d.rollbackLate = step.Rollback && !step.LateSwept && now.Sub(step.Started) >= s.StepTimeout
	planRestarts(d, ns, s)
	forward := kind == KindClimb || kind == KindMove || kind == KindMigrate || kind == KindDefaults
	pending := incomplete(ns, step, d.Level, forward, s)
	if pending == "" && forward && now.Sub(step.Started) < Settle {
		pending = "letting the change settle"
	}
	left := s.StepTimeout - now.Sub(step.Started)
	switch {
	case pending != "" && left > 0:
		d.Waiting = pending
		d.RecheckAfter = left
		if forward && pending == "letting the change settle" {
			d.RecheckAfter = Settle - now.Sub(step.Started)
		}
	case pending != "" && forward:
		timedOut(d, ns, s, step, kind, pending, now)
	case pending != "" && step.Rollback && step.DataPlane == meshv1.DataPlaneSidecar && len(ns.Pods.Unproxied) > 0:
		// Past its timeout, with pods that still lack the proxy: the ambient label is all that
		// keeps them in the mesh, so the rollback does not end (and take it off) until they have
		// it. Said as a block, with what to restart.
		d.Blocked = Blocked{Reason: meshv1.ReasonAmbientRollbackIncomplete, Message: fmt.Sprintf(
			"The migration to ambient mode was rolled back, and %s. The namespace keeps the ambient label, so that ztunnel carries them, until every pod has the proxy again: restart them (kubectl rollout restart; delete a bare pod or an OnDelete workload's pods; resume a paused Deployment), or let the migration run again by changing the MeshInstallation's spec.",
			unproxiedPending(ns.Pods))}
		d.RecheckAfter = lateRollbackRecheck
	case d.rollbackLate && len(d.Restart) > 0:
		// A rollback past its timeout restarted what it still owed: it ends at the next pass,
		// not with templates it never reverted.
		d.State.Step.LateSwept = true
		d.Waiting = pending
		d.RecheckAfter = lateRollbackRecheck
	case pending == "" && bakes(ns, s, step, kind) && bake(d, ns, s, &step, kind, now):
		// Baking: its traffic is compared with before the change (or it was rolled back).
	default:
		// The step is complete, or it walks down (or reverts) and ran out of time: going down
		// is never held up for good; what is left over is said in the Event.
		complete(d, s, step, kind, pending, now)
	}
}

// cancel undoes, with no hold, a move whose revision is no longer the active one (an upgrade set
// back) or whose namespace leaves the mesh, and a climb whose target was lowered under it (a
// ZeroTrust dry-run must not be enforced after the user backed out). It reports whether it did.
func cancel(d *Decision, ns Namespace, s Settings, step Step, kind StepKind, now time.Time) bool {
	switch {
	case kind == KindMove && (RevisionName(s.Revision) != step.Revision || Rank(ns.Target) < Rank(d.Level)):
		d.State.Step = &Step{To: d.Level, Started: now, ID: stepID(d.Level, now), Rollback: true, Cancelled: true, Revision: step.From}
		d.Event = &Event{Reason: "RevisionMoveCancelled", Message: fmt.Sprintf("The move to revision %s is undone: the namespace returns to revision %s.", step.Revision, step.From)}
	case kind == KindMigrate && (!ns.AmbientWanted || Rank(ns.Target) < Rank(d.Level)):
		d.State.Step = &Step{To: d.Level, Started: now, ID: stepID(d.Level, now), Rollback: true, Cancelled: true, DataPlane: meshv1.DataPlaneSidecar}
		d.Event = &Event{Reason: "DataPlaneMigrationCancelled", Message: "The spec no longer asks for ambient mode here (or lowers the target): the namespace's pods go back to sidecars."}
	case kind == KindClimb && Rank(ns.Target) < Rank(step.To):
		d.State.Step = &Step{To: d.Level, Started: now, ID: stepID(d.Level, now), Rollback: true, Cancelled: true}
		d.Event = &Event{Reason: "StepCancelled", Message: fmt.Sprintf("The target was lowered to %s: the step to %s is undone.", ns.Target, step.To)}
	default:
		return false
	}
	planRestarts(d, ns, s)
	return true
}

// dryRun runs the dry-run phase of a climb onto a rung whose policies soak first: it waits out
// the soak, then enforces once every pod is Ready. It reports whether the pass ends there; when
// pods are unready after the soak, the step goes on and times out from the soak's end.
func dryRun(d *Decision, ns Namespace, s Settings, step *Step, now time.Time) bool {
	soakEnd := step.Started.Add(dryRunTime(s))
	if now.Before(soakEnd) {
		d.Waiting = fmt.Sprintf("AuthorizationPolicies in dry-run until %s", soakEnd.UTC().Format(time.RFC3339))
		d.RecheckAfter = soakEnd.Sub(now)
		if s.TrafficGates {
			// The embedded telemetry source sees the dry-run only through reads during it.
			d.RecheckAfter = min(d.RecheckAfter, TrafficPoll)
		}
		return true
	}
	if v := wouldDeny(ns, s, *step, now); v != nil {
		// The dry-run showed callers enforcing would refuse: it goes on in dry-run, holding
		// its slot, until they are admitted (a spec change) or the target is lowered.
		d.apply(v)
		d.TrafficHeld = v.Blocked.Reason != ""
		return true
	}
	if len(ns.Pods.NotReady) == 0 {
		step.Enforced, step.Started = true, now
		if b := baselineOf(ns.Traffic); b != nil {
			// The dry-run's traffic, with nothing enforced yet, is what enforcing is compared with.
			step.Baseline = b
		}
		d.Event = &Event{Reason: "PoliciesEnforced", Message: "The dry-run soaked with every pod Ready: the AuthorizationPolicies are enforced now."}
		d.RecheckAfter = Settle
		return true
	}
	step.Started = soakEnd
	return false
}

// timedOut replaces a climb or a move that did not complete within the step timeout with its
// rollback.
func timedOut(d *Decision, ns Namespace, s Settings, step Step, kind StepKind, pending string, now time.Time) {
	what := fmt.Sprintf("step from %s to %s", d.Level, step.To)
	switch kind {
	case KindMove:
		what = fmt.Sprintf("move from revision %s to %s", step.From, step.Revision)
	case KindMigrate:
		what = fmt.Sprintf("migration from sidecars to ambient mode at %s", d.Level)
	case KindDefaults:
		what = fmt.Sprintf("application of the resilience defaults at %s", d.Level)
	}
	msg := fmt.Sprintf("The %s did not complete within %s (%s), so it was reverted. Fix the cause, then change the MeshInstallation's spec (or delete the namespace's %s annotation) to try again.",
		what, s.StepTimeout, pending, meshv1.AnnotationLadder)
	revert(d, ns, s, step, kind, meshv1.ReasonRolledBack, msg, now)
}

// revert replaces a climb or a move with its rollback, which ends in a hold with the reason and
// message given.
func revert(d *Decision, ns Namespace, s Settings, step Step, kind StepKind, reason, msg string, now time.Time) {
	back, plane := "", meshv1.DataPlaneKind("")
	switch kind {
	case KindMove:
		back = step.From
	case KindMigrate:
		plane = meshv1.DataPlaneSidecar
	}
	d.State.Step = &Step{To: d.Level, Started: now, ID: stepID(d.Level, now), Rollback: true, Reason: reason, Message: msg, Revision: back, DataPlane: plane, Defaults: kind == KindDefaults}
	if kind == KindDefaults {
		// The values that failed, for the hold that follows.
		d.State.Step.Resilience = step.Resilience
	}
	d.Event = &Event{Warning: true, Reason: reason, Message: msg}
	d.Restart, d.Blocked, d.Waiting = nil, Blocked{}, ""
	planRestarts(d, ns, s)
}

// complete ends a step: the namespace stands at its level (on the step's revision), a rollback
// holds it, and the Event says how it went.
func complete(d *Decision, s Settings, step Step, kind StepKind, pending string, now time.Time) {
	d.Level = step.To
	d.State.Step = nil
	if kind != KindMove && kind != KindRefresh && kind != KindMigrate && kind != KindDefaults && !step.Defaults {
		// A move between revisions, a refresh or a migration keeps the time the level was
		// reached (the soak counts on).
		d.State.Since = now
	}
	if step.Revision != "" {
		d.State.Revision = recorded(step.Revision)
	}
	if kind == KindDefaults {
		d.State.Resilience = step.Resilience
	}
	if kind == KindMigrate && pending == "" {
		// Its pods are ztunnel's now: no revision injects them.
		d.State.Ambient, d.State.Revision = true, ""
	}
	if !InMesh(d.Level) {
		d.State.Revision, d.State.Ambient = "", false
	}
	d.InProgress = false
	d.Restart, d.Blocked = nil, Blocked{}
	switch {
	case kind == KindRollback && !step.Cancelled && step.Defaults:
		d.State.ResilienceHold = &ResilienceHold{Values: step.Resilience, Reason: step.Reason, Message: step.Message}
		d.Blocked = Blocked{Reason: step.Reason, Message: step.Message}
		d.Event = &Event{Warning: true, Reason: meshv1.ReasonRolledBack, Message: fmt.Sprintf(
			"Reverted to the resilience defaults the namespace had before, at %s; they are not applied again until the spec changes.", d.Level)}
	case kind == KindRollback && !step.Cancelled:
		d.State.Hold = &Hold{Generation: s.Generation, Reason: step.Reason, Message: step.Message}
		d.Blocked = Blocked{Reason: step.Reason, Message: step.Message}
		d.Event = &Event{Warning: true, Reason: meshv1.ReasonRolledBack, Message: fmt.Sprintf("Reverted to %s; held there until the spec changes.", d.Level)}
	case kind == KindDefaults && step.Unbaked != "":
		d.Event = &Event{Warning: true, Reason: "ResilienceDefaultsUnbaked", Message: fmt.Sprintf(
			"The resilience defaults apply at %s without a bake: its traffic could not be read during the bake time, %s (%s), so nothing showed whether they broke a caller.", d.Level, s.BakeTime, step.Unbaked)}
	case kind == KindDefaults:
		d.Event = &Event{Reason: "ResilienceDefaultsApplied", Message: fmt.Sprintf("The resilience defaults apply at %s: %s.", d.Level, Describe(*step.Resilience))}
	case kind == KindRollback && step.Defaults:
		d.Event = &Event{Reason: "ResilienceDefaultsUndone", Message: "Back on the resilience defaults the namespace had."}
	case kind == KindRefresh && pending != "":
		d.State.RefreshGaveUp = s.RefreshBefore
		d.Event = &Event{Warning: true, Reason: "CertificateRefreshIncomplete", Message: fmt.Sprintf(
			"Not every workload restarted within %s (%s): the root rotation waits for them; restart them yourself once they can roll out.", s.StepTimeout, pending)}
	case kind == KindRefresh:
		d.Event = &Event{Reason: "CertificatesRefreshed", Message: "Every proxy of the namespace started after the root rotation's switch."}
	case step.Unbaked != "":
		d.Event = &Event{Warning: true, Reason: "LevelReachedUnbaked", Message: fmt.Sprintf(
			"Reached %s without its bake: its traffic could not be read during the bake time, %s (%s), so nothing showed whether the step broke a caller.", d.Level, s.BakeTime, step.Unbaked)}
	case pending != "":
		d.Event = &Event{Warning: true, Reason: "LevelReachedIncomplete", Message: fmt.Sprintf(
			"Reached %s after %s with work left over (%s): those pods change at their next restart.", d.Level, s.StepTimeout, pending)}
	case kind == KindMove:
		d.Event = &Event{Reason: "RevisionMoved", Message: fmt.Sprintf("Moved from control-plane revision %s to %s.", step.From, step.Revision)}
	case kind == KindMigrate:
		d.Event = &Event{Reason: "DataPlaneMigrated", Message: fmt.Sprintf("Moved from sidecars to ambient mode at %s: no pod runs Istio's proxy, and Istio CNI has handed every pod's traffic to ztunnel.", d.Level)}
	case kind == KindRollback && step.DataPlane != "":
		d.Event = &Event{Reason: "DataPlaneMigrationUndone", Message: fmt.Sprintf("Back on sidecars at %s.", d.Level)}
	case kind == KindRollback && step.Revision != "":
		d.Event = &Event{Reason: "RevisionMoveUndone", Message: fmt.Sprintf("Back on control-plane revision %s.", step.Revision)}
	default:
		d.Event = &Event{Reason: "LevelReached", Message: fmt.Sprintf("Reached %s.", d.Level)}
	}
}

// incomplete says what a step still waits for, or "" when it is done. A step up waits for every
// pod to be Ready as well; a step down or a rollback waits only for its own restarts, since the
// pods' health is not what it can fix.
func incomplete(ns Namespace, step Step, current Level, up bool, s Settings) string {
	var pending []string
	e := dataPlaneEffects(EffectsOf(current, &step), ns.Ambient, &step)
	wantProxy := e.Sidecars
	workloads := ns.Workloads
	if ns.Ambient || step.Defaults {
		// A defaults step restarts nothing: it waits only for the pods to be Ready.
		workloads = nil // the label alone moves pods in and out of ambient mode: nothing restarts
	}
	for _, w := range workloads {
		if w.OptedOut || w.RunsToCompletion || skipsGateway(w, wantProxy, &step) {
			continue
		}
		if w.ManualRestart != "" {
			// Not restarted by a step: a climb or a move goes on without it (its pods hold
			// STRICT or keep the old revision), but a refresh waits for its stale proxies, and
			// gives up naming it, rather than let the rotation switch under them.
			if wantProxy && step.Refresh && stale(w, s) || up && !wantProxy && w.Injected {
				pending = append(pending, fmt.Sprintf("%s/%s has proxies to restart by hand (%s)", w.Kind, w.Name, w.ManualRestart))
			}
			continue
		}
		switch {
		case wantProxy && w.Uninjected, !wantProxy && w.Injected:
			pending = append(pending, fmt.Sprintf("%s/%s has pods to restart", w.Kind, w.Name))
		case wantProxy && onOtherRevision(w, step.Revision):
			pending = append(pending, fmt.Sprintf("%s/%s has pods of another revision to restart", w.Kind, w.Name))
		case w.RestartedFor == step.ID && !w.RolledOut:
			pending = append(pending, fmt.Sprintf("%s/%s is rolling out", w.Kind, w.Name))
		case wantProxy && step.Refresh && stale(w, s) && s.RefreshForTrust:
			pending = append(pending, fmt.Sprintf("%s/%s has proxies that do not trust the new root", w.Kind, w.Name))
		case wantProxy && step.Refresh && stale(w, s):
			pending = append(pending, fmt.Sprintf("%s/%s has proxies with certificates of the old intermediate", w.Kind, w.Name))
		}
	}
	if up && len(ns.Pods.NotReady) > 0 {
		pending = append(pending, fmt.Sprintf("pods not Ready: %s", names.List(ns.Pods.NotReady)))
	}
	if up && e.Inject && e.Ambient && !e.Sidecars && len(ns.Pods.Uncaptured) > 0 {
		pending = append(pending, fmt.Sprintf("pods Istio CNI has not redirected to ztunnel: %s", names.List(ns.Pods.Uncaptured)))
	}
	if sidecars := sidecarsLeft(ns); up && step.DataPlane == meshv1.DataPlaneAmbient && sidecars > 0 {
		// A migration ends with no pod on Istio's proxy (a Job's pods finish with theirs).
		pending = append(pending, fmt.Sprintf("%d pod(s) still run Istio's proxy", sidecars))
	}
	if step.Rollback && step.DataPlane == meshv1.DataPlaneSidecar && len(ns.Pods.Unproxied) > 0 {
		pending = append(pending, unproxiedPending(ns.Pods))
	}
	if len(pending) > maxNamed {
		pending = append(pending[:maxNamed], fmt.Sprintf("and %d more", len(pending)-maxNamed))
	}
	return strings.Join(pending, "; ")
}

// urgent tells a step whose restarts ignore the budget: the rollback of a step whose traffic
// regressed.
func urgent(step *Step) bool {
	return step.Rollback && step.Reason == meshv1.ReasonTrafficRegressed
}

// planRestarts picks the workloads to restart now so that their pods get (or lose) the proxy.
// Restarting workloads may hold at most maxUnavailablePerNamespace of the namespace's pods
// (counting each workload's pods, and pods already unready); one workload at a time always
// may, and its own update strategy bounds how many of its pods are down at once. A rollback
// (a timed-out or cancelled step) is paced by the same budget, counting only its own restarts in
// flight, but does not wait for PodDisruptionBudgets: the disruptions they allow are used up by
// the very pods the failed step left unready, which only the rollback mends. The rollback of a
// step whose traffic regressed, and a rollback that reached the step timeout, restart everything
// they still owe at once: calls are failing, or a rollback must not end with templates it never
// reverted.
func planRestarts(d *Decision, ns Namespace, s Settings) {
	step := d.State.Step
	if step == nil || ns.Ambient || step.Defaults {
		// A defaults step restarts nothing (its objects are config for the callers' proxies).
		// In ambient mode nothing restarts: the namespace's label alone moves its pods in and
		// out of the mesh (Istio CNI hands their traffic to ztunnel, or stops).
		return
	}
	wantProxy := dataPlaneEffects(EffectsOf(d.Level, step), ns.Ambient, step).Sidecars
	budget := 1
	if v, err := intstr.GetScaledValueFromIntOrPercent(&s.MaxUnavailable, ns.Pods.Total, false); err == nil && v > budget {
		budget = v
	}
	rolling, rollingPods := 0, 0
	for _, w := range ns.Workloads {
		if w.RestartedFor == step.ID && !w.RolledOut {
			rolling++
			rollingPods += max(w.Pods, 1)
		}
	}
	busy := max(len(ns.Pods.NotReady), rollingPods)
	if step.Rollback {
		// The pods the failed step left unready are what the rollback mends: only its own
		// restarts in flight count.
		busy = rollingPods
	}
	var waitingOnBudget []string
	for _, w := range ns.Workloads {
		if w.OptedOut || w.RunsToCompletion || w.ManualRestart != "" || w.RestartedFor == step.ID || skipsGateway(w, wantProxy, step) {
			continue
		}
		if (wantProxy && !w.Uninjected && !onOtherRevision(w, step.Revision) && (!step.Refresh || !stale(w, s))) || (!wantProxy && !w.Injected) {
			continue
		}
		cost := max(w.Pods, 1)
		if !urgent(step) && !d.rollbackLate {
			if busy > 0 && busy+cost > budget {
				break
			}
			if w.DisruptionBlocked != "" && !step.Rollback {
				waitingOnBudget = append(waitingOnBudget, fmt.Sprintf("%s/%s (PodDisruptionBudget %s)", w.Kind, w.Name, w.DisruptionBlocked))
				continue
			}
		}
		d.Restart = append(d.Restart, w.Kind+"/"+w.Name)
		busy += cost
	}
	if len(waitingOnBudget) > 0 && len(d.Restart) == 0 && rolling == 0 {
		d.Blocked = Blocked{Reason: meshv1.ReasonDisruptionBudget, Message: fmt.Sprintf(
			"Waiting to restart %s: the budget allows no disruption now.", strings.Join(waitingOnBudget, ", "))}
	}
}

// skipsGateway tells a step that neither restarts nor waits for an Istio gateway or waypoint
// (Workload.Gateway): istiod gives its pods Istio's proxy whatever the namespace's labels, of the
// revision its Gateway names, so no restart takes it off the proxy or onto the step's revision.
// Only a root rotation's refresh restarts it, for the certificates and roots of its proxy. A
// gateway of Istio's gateway chart (Workload.GatewayTemplate) is skipped only by steps off the
// proxy: it keeps its own, but takes the namespace's revision when restarted.
func skipsGateway(w Workload, wantProxy bool, step *Step) bool {
	return w.Gateway && (!wantProxy || !step.Refresh) || w.GatewayTemplate && !wantProxy
}

// onOtherRevision reports whether some of a workload's pods were injected by another revision
// than rev; an empty rev (a step that keeps the revision) asks nothing of them.
func onOtherRevision(w Workload, rev string) bool {
	if rev == "" {
		return false
	}
	for _, r := range w.Revisions {
		if r != rev {
			return true
		}
	}
	return false
}

// stepID names a step on the workloads it restarts.
func stepID(to Level, now time.Time) string {
	return fmt.Sprintf("%s-%d", strings.ToLower(string(to)), now.UnixMilli())
}

// wellFormed reports whether a step can be the operator's own from level current: one rung up or
// down, a rollback back to where the namespace stands, a move or a refresh at it, with an ID
// for its restarts.
func wellFormed(st Step, current Level) bool {
	if !Valid(st.To) || st.ID == "" {
		return false
	}
	kind := st.Kind(current)
	if st.DataPlane != "" && kind != KindMigrate && kind != KindRollback {
		// Only a migration, or its rollback, changes the data plane.
		return false
	}
	if st.Defaults && kind != KindDefaults && kind != KindRollback || st.Defaults && st.DataPlane != "" {
		// Only a step applying resilience defaults, or its rollback, changes them.
		return false
	}
	switch kind {
	case KindRollback:
		return st.To == current && !st.Refresh && (st.DataPlane == "" || st.DataPlane == meshv1.DataPlaneSidecar && InMesh(current))
	case KindMigrate:
		return st.DataPlane == meshv1.DataPlaneAmbient && InMesh(current) && st.Revision == ""
	case KindRefresh:
		// A refresh keeps the namespace's revision; one that names another is no record of ours.
		return st.To == current && InMesh(current) && st.Revision == ""
	case KindDefaults:
		return InMesh(current) && st.Revision == "" && st.Resilience != nil
	case KindMove:
		return st.From != "" && InMesh(current)
	default:
		return abs(Rank(st.To)-Rank(current)) == 1
	}
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}
