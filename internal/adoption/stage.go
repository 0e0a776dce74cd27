// Package adoption runs the adoption ladder for every namespace: it observes each namespace
// (from a cache of namespaces, pods and workloads), asks internal/ladder what comes next, and
// makes the cluster match: the namespace's injection and level labels, the restarts of its
// workloads, and its PeerAuthentication and AuthorizationPolicies.
package adoption

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/ambient"
	"github.com/meshwright/meshwright/internal/apierr"
	"github.com/meshwright/meshwright/internal/apply"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/meshspec"
	"github.com/meshwright/meshwright/internal/metrics"
	"github.com/meshwright/meshwright/internal/names"
	"github.com/meshwright/meshwright/internal/policy"
	"github.com/meshwright/meshwright/internal/resilience"
	"github.com/meshwright/meshwright/internal/revision"
	"github.com/meshwright/meshwright/internal/stages"
	"github.com/meshwright/meshwright/internal/waypoint"
)

// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets;daemonsets,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=batch,resources=cronjobs;jobs,verbs=get;list;watch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch
// +kubebuilder:rbac:groups=security.istio.io,resources=peerauthentications;authorizationpolicies,verbs=get;list;watch;create;update;patch;delete

// InjectionLabel is what the ladder puts on a namespace to have its pods injected: Istio's
// revision label, whose value names the revision (a revision-based upgrade changes it).
const InjectionLabel = revision.Label

const restartedForKey = meshv1.AnnotationRestartedFor

// inProgressRecheck bounds the wait of a running step when no watch event comes.
const inProgressRecheck = 10 * time.Second

// Stage is the Adoption stage.
type Stage struct {
	// Client writes (server-side apply under FieldManager) and reads the operator's own policies.
	Client client.Client
	// Reader is the ladder's cache of namespaces, pods and workloads (see CacheOptions).
	Reader  client.Reader
	Applier *apply.Applier
	// FieldManager is the operator's one field manager.
	FieldManager string
	// Recorder emits an Event on a Namespace for each step.
	Recorder recorder.EventRecorder
	// OperatorNamespace is never enrolled.
	OperatorNamespace string
	// Clock tells the time of a pass; nil is the real clock (tests give a fake one).
	Clock clock.PassiveClock
	// Traffic reads the telemetry the traffic gates judge; nil reads none, so enforcing steps
	// wait unless spec.rollout.trafficGates is Skip.
	Traffic TrafficReader
	// API reads what no cache holds, for the callers outside the mesh, and a namespace afresh
	// before its waypoint is deleted; nil reads from Reader.
	API client.Reader
	// Admission creates, with server-side dry run, the pods a climb would restart before it
	// starts (admission.Checker); nil creates none and climbs
	// go on unchecked (the operator always sets it; see controllers.NewStages).
	Admission AdmissionChecker
	// Observations remembers what passes observed of each namespace (see Observations); nil
	// observes afresh each pass.
	Observations *Observations
	// Watch starts watching a kind once it is served (the waypoints' Gateways, once the
	// Gateway API's CRDs are installed), so that a Gateway's status starts a pass; nil in tests
	// that run passes by hand.
	Watch func(gvks ...schema.GroupVersionKind) error
	// Gateways reads the operator's own waypoint Gateways (a cache of them alone); Client when
	// nil.
	Gateways client.Reader
}

// Name implements stages.Stage.
func (s *Stage) Name() meshv1.Stage { return meshv1.StageAdoption }

// ConditionType implements stages.Stage.
func (s *Stage) ConditionType() string { return meshv1.ConditionAdoptionReady }

// Target is the control-plane revision namespaces move to, and the installed ones newer than it
// (namespaces on those move back: an upgrade was set back).
type Target struct {
	Revision string
	Newer    []string
}

// SettingsOf reads the rollout settings, with the schema's defaults for fields left unset, and
// the control-plane revision namespaces are moved to.
func SettingsOf(mesh *meshv1.MeshInstallation, target Target) ladder.Settings {
	r := mesh.Spec.Rollout
	st := ladder.Settings{Generation: mesh.Generation, Paused: r.Paused, MaxUnavailable: intstr.FromString("25%"),
		SoakTime: time.Hour, StepTimeout: 10 * time.Minute, Revision: target.Revision, Newer: target.Newer,
		RefreshBefore: meshspec.RefreshBefore(mesh), RefreshForTrust: meshspec.RefreshForTrust(mesh)}
	if r.MaxUnavailablePerNamespace != nil {
		st.MaxUnavailable = *r.MaxUnavailablePerNamespace
	}
	if r.SoakTime != nil {
		st.SoakTime = r.SoakTime.Duration
	}
	if r.StepTimeout != nil {
		st.StepTimeout = r.StepTimeout.Duration
	}
	st.TrafficGates, st.ObserveTime = r.TrafficGates != meshv1.TrafficGatesSkip, 10*time.Minute
	st.ZtunnelRead = mesh.Spec.Telemetry.Prometheus != nil
	st.BakeTime = 5 * time.Minute
	if r.BakeTime != nil {
		st.BakeTime = r.BakeTime.Duration
	}
	if r.ObserveTime != nil {
		st.ObserveTime = r.ObserveTime.Duration
	}
	return st
}

// Reconcile implements stages.Stage.
func (s *Stage) Reconcile(ctx context.Context, mesh *meshv1.MeshInstallation) (stages.Result, error) {
	plans, target, err := s.planner().Plan(ctx, mesh, s.now())
	if err != nil {
		return stages.Result{}, err
	}
	if s.Watch != nil && slices.ContainsFunc(plans, func(c NamespacePlan) bool { return c.gatewaysRead }) {
		if err := s.Watch(waypoint.GVK); err != nil {
			return stages.Result{}, err
		}
	}
	if s.Watch != nil && slices.ContainsFunc(plans, func(c NamespacePlan) bool { return c.defaults }) {
		// A team's DestinationRule or VirtualService changes what the defaults may cover.
		if err := s.Watch(resilience.Kinds()...); err != nil {
			return stages.Result{}, err
		}
		for _, c := range plans {
			if len(c.routesServed) > 0 {
				if err := s.Watch(c.routesServed...); err != nil {
					return stages.Result{}, err
				}
				break
			}
		}
	}
	source := "embedded"
	if mesh.Spec.Telemetry.Prometheus != nil {
		source = "prometheus"
	}
	for i := range plans {
		if plans[i].Traffic != nil {
			metrics.TrafficRead(mesh.Name, source, *plans[i].Traffic, plans[i].InAmbient())
		}
		announceTrafficHold(mesh, &plans[i])
	}
	for i := range plans {
		pl := &plans[i]
		if err := s.carryOut(ctx, mesh, pl); err != nil {
			// One namespace the API server refuses to change (an admission policy, a workload
			// that no longer validates) is reported and the others go on; anything else is
			// retried by the controller's error policy.
			if !apierr.Refused(err) {
				return stages.Result{}, err
			}
			pl.Decision.Blocked = ladder.Blocked{Reason: meshv1.ReasonApplyRejected, Message: err.Error()}
		}
	}
	return Summarize(plans, SettingsOf(mesh, target)), nil
}

// planner reads what the ladder decides from: the stage's cache of the operator's policies, and
// the ladder's cache of namespaces, pods and workloads.
func (s *Stage) planner() Planner {
	return Planner{Policies: s.Client, Workloads: s.Reader, OperatorNamespace: s.OperatorNamespace, Traffic: s.Traffic, API: s.API, Admission: s.Admission,
		Observations: s.Observations, Gateways: s.Gateways}
}

// injectionConflict says why the operator must not manage a namespace's injection label: it
// carries Istio's legacy istio-injection label (which wins over the revision label), or a
// revision label naming none of ours (the active revision, and the ones the namespace's record
// says it is on or moving between). The operator never takes over such a label.
func injectionConflict(ns *corev1.Namespace, ours ...string) string {
	if v, ok := ns.Labels[revision.LegacyInjectionLabel]; ok {
		return fmt.Sprintf("The namespace carries %s=%s, which overrides Istio's revision label: remove it to let Meshwright manage injection (Meshwright sets %s=%s).", revision.LegacyInjectionLabel, v, InjectionLabel, ours[0])
	}
	if v, ok := ns.Labels[InjectionLabel]; ok && !slices.Contains(ours, v) {
		return fmt.Sprintf("The namespace carries %s=%s, another revision's label, which Meshwright does not take over: remove it to let Meshwright manage injection.", InjectionLabel, v)
	}
	return ""
}

// announceTrafficHold gives a namespace newly held by a traffic gate (its reason differs from
// the one the last status reported for it) a Warning Event with the evidence, so that kubectl
// describe and the Events' metric show when telemetry held a step, not only the status.
func announceTrafficHold(mesh *meshv1.MeshInstallation, c *NamespacePlan) {
	d := &c.Decision
	if !d.TrafficHeld || d.Event != nil {
		return
	}
	if st := mesh.Status.Namespaces; st != nil {
		i := slices.IndexFunc(st.Blocked, func(b meshv1.BlockedNamespace) bool { return b.Name == c.Namespace.Name })
		if (i >= 0 && st.Blocked[i].Reason == d.Blocked.Reason) || (i < 0 && int(st.BlockedCount) > len(st.Blocked)) {
			// Reported already, or maybe among the blocked namespaces the status does not list.
			return
		}
	}
	d.Event = &ladder.Event{Warning: true, Reason: d.Blocked.Reason, Message: d.Blocked.Message}
}

// carryOut makes the cluster match a decision: the resilience defaults' objects and the
// waypoint first, namespace then (its record notes the objects written; its injection label must
// be on before pods restart), then restarts, then policies; the Event last, once it is true.
func (s *Stage) carryOut(ctx context.Context, mesh *meshv1.MeshInstallation, c *NamespacePlan) error {
	// An object of the defaults the API server refuses (a quota, an admission policy) is
	// reported once the rest of the namespace's move is carried out, not instead of it.
	var refused error
	if c.defaults {
		if err := s.syncDefaults(ctx, c, mesh.Name); err != nil && !apierr.Refused(err) {
			return err
		} else if err != nil {
			refused = err
		}
	}
	d := c.Decision
	if err := s.applyWaypoint(ctx, mesh, c, d.Effects); err != nil {
		return err
	}
	if err := s.putWaypointLabel(ctx, mesh, c, d.Effects); err != nil {
		return err
	}
	if err := s.writeNamespace(ctx, c, d); err != nil {
		return err
	}
	if err := s.takeWaypointLabel(ctx, c, d.Effects); err != nil {
		return err
	}
	recheck, err := s.retireWaypoint(ctx, c, d.Effects)
	if err != nil {
		return err
	}
	if recheck > 0 && (c.Decision.RecheckAfter == 0 || recheck < c.Decision.RecheckAfter) {
		c.Decision.RecheckAfter = recheck
	}
	for _, w := range d.Restart {
		if err := s.restart(ctx, c.Namespace.Name, w, c.uids[w], d.State.Step.ID); err != nil {
			return err
		}
	}
	if err := s.syncPolicies(ctx, mesh, c, d.Effects); err != nil {
		return err
	}
	if d.Event != nil {
		// A rollback's first Event comes with the reverting step; its last, once it is done.
		rollback := d.Event.Reason == meshv1.ReasonRolledBack || d.Event.Reason == meshv1.ReasonTrafficRegressed
		metrics.LadderEvent(mesh.Name, d.Event.Reason, rollback && d.State.Step != nil)
	}
	if d.Event != nil && s.Recorder != nil {
		eventType := corev1.EventTypeNormal
		if d.Event.Warning {
			eventType = corev1.EventTypeWarning
		}
		s.Recorder.Eventf(c.Namespace, nil, eventType, d.Event.Reason, "Step", "%s", d.Event.Message)
	}
	return refused
}

// NamespaceFieldManager is the field manager of the ladder's writes to Namespaces: its own, so
// that its partial applies and the Certificates stage's apply of the control-plane namespace
// never remove each other's fields.
const NamespaceFieldManager = "meshwright-ladder"

// writeNamespace applies the namespace's ladder labels and annotation, and removes them once a
// namespace is back at Off for good. It writes only when something differs. The apply carries
// the namespace's uid and resourceVersion: it never recreates a namespace deleted meanwhile, and
// a decision taken on a stale copy fails with a conflict and is taken again.
func (s *Stage) writeNamespace(ctx context.Context, c *NamespacePlan, d ladder.Decision) error {
	want := map[string]string{}
	var annotation string
	release := d.Level == meshv1.LevelOff && d.State.Step == nil && d.State.Hold == nil && c.Enrollment.Target == meshv1.LevelOff
	if !release {
		want[meshv1.LabelLevel] = string(d.Level)
		// A migration between data planes carries both labels for a while (ladder.Effects).
		if d.Effects.Inject && d.Effects.Ambient {
			want[ambient.Label] = ambient.Enabled
		}
		if d.Effects.Inject && d.Effects.Sidecars {
			want[InjectionLabel] = d.Effects.Revision
		}
		b, err := json.Marshal(d.State)
		if err != nil {
			return err
		}
		annotation = string(b)
	}
	// The injection (or ambient) label follows the recorded state: with the annotation and level
	// unchanged, the last apply already put it on or took it off, and a label still there
	// without the operator wanting it is someone else's to keep.
	_, injectionLabel := c.Namespace.Labels[InjectionLabel]
	drop := injectionLabel && migratingToAmbient(d)
	declined := ""
	if !release {
		declined = strings.Join(c.declined, ",")
	}
	same := c.Namespace.Annotations[meshv1.AnnotationLadder] == annotation && c.Namespace.Labels[meshv1.LabelLevel] == want[meshv1.LabelLevel] &&
		c.Namespace.Annotations[meshv1.AnnotationResilienceDeclined] == declined &&
		(!d.Effects.Inject || (!d.Effects.Ambient || c.Namespace.Labels[ambient.Label] == ambient.Enabled) &&
			(!d.Effects.Sidecars || c.Namespace.Labels[InjectionLabel] == d.Effects.Revision)) && !drop
	if same {
		return nil
	}
	u := namespaceApply(c.Namespace)
	if c.patchedAt != "" {
		u.SetResourceVersion(c.patchedAt) // the ladder's own label patch of this pass came between
	}
	if len(want) > 0 {
		u.SetLabels(want)
	}
	if annotation != "" {
		annotations := map[string]string{meshv1.AnnotationLadder: annotation}
		if declined != "" {
			annotations[meshv1.AnnotationResilienceDeclined] = declined
		}
		u.SetAnnotations(annotations)
	}
	if err := s.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(NamespaceFieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("writing the ladder state of namespace %s: %w", c.Namespace.Name, err)
	}
	// The apply drops the injection label only where the ladder set it; one set by someone
	// else (kubectl label, before the namespace was enrolled) would give the restarted pods
	// the proxy again, and the migration would never end. Istio's migration removes it, so
	// the ladder does, whoever set it.
	if !drop {
		return nil
	}
	_, err := patchLabels(ctx, s.Client, c.Namespace.Name, "", map[string]any{InjectionLabel: nil})
	return err
}

// patchLabels sets labels on a namespace, or takes them off (nil), whoever set them: a merge
// patch, by the ladder's field manager (an apply removes only the fields it applied).
// A resourceVersion, when given, makes it a write over that version only (a conflict
// otherwise). It returns the namespace's resourceVersion after the patch.
func patchLabels(ctx context.Context, c client.Client, namespace, over string, labels map[string]any) (string, error) {
	meta := map[string]any{"labels": labels}
	if over != "" {
		meta["resourceVersion"] = over
	}
	patch, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return "", err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if err := c.Patch(ctx, ns, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(NamespaceFieldManager)); err != nil {
		return "", fmt.Errorf("writing labels %v of namespace %s: %w", slices.Sorted(maps.Keys(labels)), namespace, err)
	}
	return ns.ResourceVersion, nil
}

// migratingToAmbient reports a decision that moves a namespace's pods onto ambient mode: its
// namespace must not keep the injection label, whoever set it.
func migratingToAmbient(d ladder.Decision) bool {
	st := d.State.Step
	return st != nil && !st.Rollback && st.DataPlane == meshv1.DataPlaneAmbient
}

// namespaceApply is an apply of ns with nothing in it but its identity and preconditions.
func namespaceApply(ns *corev1.Namespace) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": ns.Name}}}
	u.SetUID(ns.UID)
	u.SetResourceVersion(ns.ResourceVersion)
	return u
}

// restart rolls a workload's pods by stamping its pod template with the step's ID, as
// `kubectl rollout restart` does; the workload's own controller then replaces the pods at the
// pace its update strategy allows. The uid keeps the apply from creating a workload deleted since.
func (s *Stage) restart(ctx context.Context, namespace, kindName string, uid types.UID, stepID string) error {
	kind, name, _ := strings.Cut(kindName, "/")
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "apps/v1", "kind": kind,
		"metadata": map[string]any{"name": name, "namespace": namespace},
		"spec":     map[string]any{"template": map[string]any{"metadata": map[string]any{"annotations": map[string]any{restartedForKey: stepID}}}}}}
	u.SetUID(uid)
	if err := s.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(s.FieldManager), client.ForceOwnership); err != nil {
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil // gone (or replaced) since the cache was read: the next pass sees it
		}
		return fmt.Errorf("restarting %s in %s: %w", kindName, namespace, err)
	}
	log.FromContext(ctx).Info("restarted a workload for the ladder", "namespace", namespace, "workload", kindName, "step", stepID)
	return nil
}

// syncPolicies applies the namespace's policies for its effects and deletes those it should no
// longer carry. While some of its plaintextPorts cannot be resolved (a named target port with no
// endpoints during a restart), the exemptions it carries are kept: removing one would make a
// webhook's port STRICT.
func (s *Stage) syncPolicies(ctx context.Context, mesh *meshv1.MeshInstallation, c *NamespacePlan, e ladder.Effects) error {
	namespace := c.Namespace.Name
	key, err := syncKey(mesh, c, e)
	if err != nil {
		return err
	}
	if s.Observations.policiesSynced(namespace, c.observedAt, key) {
		// Synced for the same inputs, and no event of the namespace's objects (its policies
		// among them) came since.
		return nil
	}
	var current []*unstructured.Unstructured
	for _, gvk := range policy.Kinds() {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := s.Client.List(ctx, list, client.InNamespace(namespace), client.MatchingLabels{meshv1.LabelInstallation: mesh.Name}); err != nil {
			return fmt.Errorf("listing %s in %s: %w", gvk.Kind, namespace, err)
		}
		for i := range list.Items {
			if p := &list.Items[i]; p.GetDeletionTimestamp().IsZero() {
				current = append(current, p)
			}
		}
	}
	desired := policy.ForNamespace(mesh.Name, namespace, c.Enrollment.AllowFrom, c.Exemptions, e)
	if len(c.ExemptionProblems) > 0 && e.Strict {
		desired = append(policy.KeptExemptions(mesh.Name, namespace, c.Enrollment.AllowFrom, desired, current, e), desired...)
	}
	for _, p := range desired {
		if _, err := s.Applier.Apply(ctx, p); err != nil {
			return err
		}
	}
	for _, p := range policy.Stale(desired, current) {
		if err := s.Client.Delete(ctx, p); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting %s %s/%s: %w", p.GetKind(), namespace, p.GetName(), err)
		}
	}
	s.Observations.markPoliciesSynced(namespace, c.observedAt, key)
	return nil
}

// syncKey is everything a namespace's policy sync reads besides the policies themselves (whose
// events Observations counts): equal keys at the same change count sync to the same result.
func syncKey(mesh *meshv1.MeshInstallation, c *NamespacePlan, e ladder.Effects) (string, error) {
	b, err := json.Marshal(struct {
		Mesh       string
		UID        types.UID
		AllowFrom  []string
		Exemptions []policy.Exemption
		Problems   bool
		Effects    ladder.Effects
	}{mesh.Name, mesh.UID, c.Enrollment.AllowFrom, c.Exemptions, len(c.ExemptionProblems) > 0, e})
	return string(b), err
}

// Cleanup hands every namespace back: the operator's labels and annotation are removed (its
// policies go with the Policies stage). Pods keep their sidecars until they are next restarted.
func (s *Stage) Cleanup(ctx context.Context, mesh *meshv1.MeshInstallation) (bool, error) {
	var nsList corev1.NamespaceList
	if err := s.Reader.List(ctx, &nsList); err != nil {
		return false, fmt.Errorf("listing namespaces: %w", err)
	}
	for i := range nsList.Items {
		ns := &nsList.Items[i]
		_, annotated := ns.Annotations[meshv1.AnnotationLadder]
		if !annotated && ns.Labels[meshv1.LabelLevel] == "" {
			continue
		}
		u := namespaceApply(ns)
		u.SetResourceVersion("")
		if err := s.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(NamespaceFieldManager), client.ForceOwnership); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return false, fmt.Errorf("releasing namespace %s: %w", ns.Name, err)
		}
	}
	if err := s.removeDefaults(ctx, mesh); err != nil {
		return false, err
	}
	return true, s.removeWaypoints(ctx, mesh)
}

// removeDefaults deletes every object of the installation's resilience defaults, found on the
// API server (at clean-up the cache may not watch their kinds).
func (s *Stage) removeDefaults(ctx context.Context, mesh *meshv1.MeshInstallation) error {
	reader := s.API
	if reader == nil {
		reader = s.Client
	}
	objs, err := listDefaults(ctx, reader, mesh.Name, "")
	if err != nil {
		return err
	}
	for _, u := range objs {
		if err := s.Client.Delete(ctx, u); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
	}
	return nil
}

func (s *Stage) now() time.Time { return stages.Now(s.Clock) }

// summary gathers the pass's decisions into status and the stage's result.
type summary struct {
	status     meshv1.NamespacesStatus
	blocked    []meshv1.BlockedNamespace
	waiting    []string
	rolledBack []string
	// regressed is true when a rollback among them was a bake's (TrafficRegressed).
	regressed   bool
	recheck     time.Duration
	notAtTarget int
}

func (m *summary) add(c *NamespacePlan) {
	d := c.Decision
	target := c.Enrollment.Target
	if target != meshv1.LevelOff {
		m.status.Enrolled++
	}
	// Off counts the enrolled namespaces not in the mesh yet (pending), every other level all
	// namespaces at it.
	if n := m.status.AtLevel(d.Level); n != nil && (ladder.InMesh(d.Level) || target != meshv1.LevelOff) {
		*n++
	}
	if d.InProgress {
		m.status.InProgress++
	}
	if d.Effects.Inject && d.Effects.Ambient && !d.Effects.Sidecars {
		m.status.Ambient++
	}
	if d.Effects.Resilience != nil && c.Defaults.Partial() {
		m.status.ResiliencePartial++
	} else if d.Effects.Resilience != nil {
		m.status.ResilienceCovered++
	}
	if !d.AtTarget(target) {
		m.notAtTarget++
	}
	switch {
	case d.Blocked.Reason != "":
		m.blocked = append(m.blocked, meshv1.BlockedNamespace{Name: c.Namespace.Name, Reason: d.Blocked.Reason, Message: d.Blocked.Message})
		if d.Blocked.Reason == meshv1.ReasonRolledBack || d.Blocked.Reason == meshv1.ReasonTrafficRegressed {
			m.rolledBack = append(m.rolledBack, c.Namespace.Name)
			m.regressed = m.regressed || d.Blocked.Reason == meshv1.ReasonTrafficRegressed
		}
	case c.Enrollment.Invalid != "":
		m.blocked = append(m.blocked, meshv1.BlockedNamespace{Name: c.Namespace.Name, Reason: meshv1.ReasonInvalidTargetLevel, Message: c.Enrollment.Invalid})
	case d.Waiting != "" && !d.AtTarget(target):
		m.waiting = append(m.waiting, fmt.Sprintf("%s: %s", c.Namespace.Name, d.Waiting))
	}
	rc := d.RecheckAfter
	if d.InProgress && (rc == 0 || rc > inProgressRecheck) {
		rc = inProgressRecheck
	}
	if rc > 0 && (m.recheck == 0 || rc < m.recheck) {
		m.recheck = rc
	}
}

func (m *summary) result(settings ladder.Settings) stages.Result {
	sort.Slice(m.blocked, func(i, j int) bool { return m.blocked[i].Name < m.blocked[j].Name })
	m.status.BlockedCount = int32(len(m.blocked)) //nolint:gosec // a count of namespaces, far below 2^31
	m.status.Blocked = m.blocked
	if len(m.blocked) > meshv1.MaxBlockedListed {
		m.status.Blocked = m.blocked[:meshv1.MaxBlockedListed]
	}
	st := m.status
	res := stages.Result{Namespaces: &st, RequeueAfter: m.recheck}
	levels := fmt.Sprintf("%d enrolled: %d Observe, %d MutualTLS, %d ZeroTrust", st.Enrolled, st.Observe, st.MutualTLS, st.ZeroTrust)
	switch {
	case len(m.rolledBack) > 0:
		res.State, res.Reason, res.Degraded = stages.NotReady, meshv1.ReasonRolledBack, true
		if m.regressed {
			// The more urgent of the two: traffic broke, not only pods.
			res.Reason = meshv1.ReasonTrafficRegressed
		}
		res.Message = fmt.Sprintf("%s. Rolled back and held: %s (see status.namespaces.blocked).", levels, names.Few(m.rolledBack, 3, "; "))
	case m.notAtTarget == 0:
		res.State, res.Reason = stages.Ready, meshv1.ReasonNamespacesAtTarget
		res.Message = levels + "; every namespace is at its target level."
	case settings.Paused:
		res.State, res.Reason = stages.NotReady, meshv1.ReasonRolloutPaused
		res.Message = fmt.Sprintf("%s. The rollout is paused (spec.rollout.paused): %d namespace(s) wait where they stand.", levels, m.notAtTarget)
	case len(m.blocked) > 0 && st.InProgress == 0 && len(m.waiting) == 0:
		res.State, res.Reason = stages.NotReady, meshv1.ReasonNamespacesBlocked
		res.Message = fmt.Sprintf("%s. %d namespace(s) cannot take their next step (see status.namespaces.blocked).", levels, len(m.blocked))
	default:
		res.State, res.Reason = stages.NotReady, meshv1.ReasonNamespacesProgressing
		res.Message = fmt.Sprintf("%s; %d stepping.", levels, st.InProgress)
		if len(m.waiting) > 0 {
			res.Message += " " + names.Few(m.waiting, 3, "; ") + "."
		}
		if len(m.blocked) > 0 {
			res.Message += fmt.Sprintf(" %d blocked (see status.namespaces.blocked).", len(m.blocked))
		}
	}
	return res
}
