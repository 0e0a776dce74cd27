package adoption

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/admission"
	"github.com/meshwright/meshwright/internal/ambient"
	"github.com/meshwright/meshwright/internal/exposure"
	"github.com/meshwright/meshwright/internal/installed"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/meshspec"
	"github.com/meshwright/meshwright/internal/policy"
	"github.com/meshwright/meshwright/internal/resilience"
	"github.com/meshwright/meshwright/internal/revision"
	"github.com/meshwright/meshwright/internal/stages"
	"github.com/meshwright/meshwright/internal/traffic"
)

// NamespacePlan is one namespace as the ladder sees it in a pass, and its next move. The stage
// carries plans out; `kubectl meshwright plan` shows them. Both come from Planner.Plan, so what
// the plugin says the operator will do is what the operator does.
type NamespacePlan struct {
	Namespace  *corev1.Namespace
	Enrollment ladder.Enrollment
	// Current is the level the namespace is at (its meshwright.io/level label; Off without one).
	Current ladder.Level
	// State is the ladder's record on the namespace: the running step, a hold.
	State     ladder.State
	Pods      ladder.Pods
	Workloads []ladder.Workload
	// PolicyConflict names a PeerAuthentication of someone else's that would override STRICT.
	PolicyConflict string
	// Traffic is what telemetry showed of its inbound traffic; nil when it was not read.
	Traffic *traffic.Reading
	// NonMeshCallers are the callers outside the mesh the API shows; nil when not looked for.
	NonMeshCallers []ladder.NonMeshCaller
	// Exemptions are its plaintextPorts, resolved; ExemptionProblems say which could not be.
	Exemptions        []policy.Exemption
	ExemptionProblems []string
	// Admission is what the API server said of the pods its next climb would restart; zero
	// when they were not created.
	Admission ladder.Admission
	// Waypoint is what its rule asks and the cluster holds of its waypoint; gateway is the
	// operator's waypoint Gateway in it, nil when there is none.
	Waypoint ladder.Waypoint
	gateway  *unstructured.Unstructured
	// gatewaysRead: the pass read the cluster's Gateways (the Gateway API serves them).
	gatewaysRead bool
	// patchedAt is the namespace's resourceVersion after this pass's own label patch (the
	// waypoint's label), which the namespace's apply is then written over.
	patchedAt string
	// Resilience is what the spec asks of its resilience defaults; Defaults the objects they
	// are, and what they leave uncovered (for a namespace that carries them in this pass).
	Resilience ladder.ResilienceWant
	Defaults   resilience.Plan
	// defaults: the pass planned its defaults (it carries them, or its record says it did), so
	// the stage syncs their objects; declined is the record of those a user deleted.
	defaults bool
	declined []string
	// routesServed are the Gateway API's route kinds the pass read for the defaults (those the
	// cluster serves), to be watched.
	routesServed []schema.GroupVersionKind
	// Decision is what the ladder does next.
	Decision ladder.Decision

	uids map[string]types.UID
	// observedAt is the namespace's change count its observation is for (Observations); 0
	// without a memo.
	observedAt uint64
}

// Planner reads what the ladder decides from. It writes nothing: its only requests beyond reads
// are the Admission checker's dry-run creates, which store nothing.
type Planner struct {
	// Policies lists PeerAuthentications and AuthorizationPolicies (the operator's cache).
	Policies client.Reader
	// Workloads lists namespaces, pods, workloads and PodDisruptionBudgets (the ladder's cache,
	// or the API server for the kubectl plugin).
	Workloads client.Reader
	// OperatorNamespace is never enrolled.
	OperatorNamespace string
	// Traffic reads the traffic of the namespaces about to take an enforcing step; nil reads
	// none (their gates then wait for a reading).
	Traffic TrafficReader
	// Admission creates, with server-side dry run, the pods of the namespaces about to take a
	// step that restarts their workloads; nil creates none: a climb is
	// then predicted unless the operator reported it held (ReaderAdmission, for the kubectl plugin).
	Admission AdmissionChecker
	// API reads from the API server what no cache holds, for the callers outside the mesh
	// (monitors, EndpointSlices; see internal/exposure); the rest of what those checks read
	// comes from Workloads. Nil reads everything from Workloads.
	API client.Reader
	// Observations reuses what earlier passes observed of namespaces no event touched since;
	// nil observes every namespace afresh (the kubectl plugin, tests).
	Observations *Observations
	// Gateways lists the operator's waypoint Gateways (the operator's cache of them alone, so
	// that the cluster's other Gateways cost nothing); Policies when nil (the plugin, tests),
	// which may list the others too.
	Gateways client.Reader
	// AsUser is set for a reader with a user's credentials (the kubectl plugin): what they may
	// not read of the waypoints (the Gateway CRD, Gateways) is shown as unread rather than
	// failing the whole plan. The operator's own reads are granted by its role, and a refusal
	// there is an error (the Forbidden reason).
	AsUser bool
}

// AdmissionChecker asks the API server whether a namespace's workloads' pods, as a step that
// puts revision rev on it would restart them, will be admitted (admission.Checker).
type AdmissionChecker interface {
	Check(ctx context.Context, namespace string, nsLabels map[string]string, workloads []admission.Workload, rev string) (ladder.Admission, error)
}

// TrafficReader reads namespaces' inbound traffic over a window (telemetry.Sources). A source
// that bounds its cost reads at most limit namespaces, the first ones.
type TrafficReader interface {
	Read(ctx context.Context, mesh *meshv1.MeshInstallation, namespaces []string, phases map[string]time.Time, window time.Duration, limit int) map[string]traffic.Reading
}

// Plan observes every namespace the ladder looks at and decides its next move, as of now. It
// also returns the control-plane revision the moves are towards.
func (p Planner) Plan(ctx context.Context, mesh *meshv1.MeshInstallation, now time.Time) ([]NamespacePlan, Target, error) {
	found, err := installed.Find(ctx, p.Policies, mesh)
	if err != nil {
		return nil, Target{}, err
	}
	active := found.Active(mesh)
	target := Target{Revision: active, Newer: revision.Newer(active, found.Installed)}
	excluded := []string{meshspec.ControlPlaneNamespace(mesh)}
	if p.OperatorNamespace != "" {
		excluded = append(excluded, p.OperatorNamespace)
	}
	var nsList corev1.NamespaceList
	// Namespaces are only read here (writes go through apply configurations): no copies.
	if err := p.Workloads.List(ctx, &nsList, client.UnsafeDisableDeepCopy); err != nil {
		return nil, Target{}, fmt.Errorf("listing namespaces: %w", err)
	}
	// Namespaces that hold the installation's policies (or waypoint) are looked at even when
	// someone removed the ladder's label and annotation, so they do not outlive its record.
	withPolicies, err := p.namespacesWithPolicies(ctx, mesh)
	if err != nil {
		return nil, Target{}, err
	}
	defaults, err := p.defaultsByNamespace(ctx, mesh)
	if err != nil {
		return nil, Target{}, err
	}
	for ns := range defaults {
		withPolicies[ns] = true
	}
	live := make(map[string]bool, len(nsList.Items))
	for i := range nsList.Items {
		live[nsList.Items[i].Name] = true
	}
	p.Observations.Keep(live)
	gateways, err := p.readWaypoints(ctx, mesh, withPolicies)
	if err != nil {
		return nil, Target{}, err
	}
	plans := candidates(ctx, mesh, nsList.Items, withPolicies, excluded, p.Observations)
	for i := range plans {
		c := &plans[i]
		if err := p.setWaypoint(ctx, c, mesh, gateways); err != nil {
			return nil, Target{}, err
		}
		if c.Pods, c.Workloads, c.uids, c.observedAt, err = p.Observations.observe(ctx, p.Workloads, c.Namespace.Name); err != nil {
			return nil, Target{}, err
		}
		c.PolicyConflict, err = p.Observations.policyConflict(c.Namespace.Name, mesh.Name, func() (string, error) {
			return p.policyConflict(ctx, mesh, c.Namespace.Name)
		})
		if err != nil {
			return nil, Target{}, err
		}
	}
	// Computed once: what a pass observed of every namespace does not change within it.
	settings := settingsFor(mesh, target, plans)
	if err := p.lookUpCallers(ctx, plans, settings); err != nil {
		return nil, Target{}, err
	}
	p.readTraffic(ctx, mesh, plans, settings)
	decideAll(plans, settings, maxInProgress(mesh), now, func(c *NamespacePlan, free bool) { p.checkAdmission(ctx, mesh, c, settings, free) })
	if err := p.planDefaults(ctx, mesh, plans, defaults); err != nil {
		return nil, Target{}, err
	}
	return plans, target, nil
}

// readTraffic reads telemetry for the namespaces whose traffic a gate judges in this pass, once
// per window (the observe time before STRICT, the soak time of a ZeroTrust dry-run).
func (p Planner) readTraffic(ctx context.Context, mesh *meshv1.MeshInstallation, plans []NamespacePlan, settings ladder.Settings) {
	if p.Traffic == nil {
		return
	}
	byWindow := map[time.Duration][]string{}
	phases := map[string]time.Time{}
	for i := range plans {
		if window, ok := ladder.TrafficWindow(plans[i].ladderNamespace(settings), settings); ok {
			byWindow[window] = append(byWindow[window], plans[i].Namespace.Name)
			phases[plans[i].Namespace.Name] = plans[i].State.PhaseStart()
		}
	}
	readings := map[string]traffic.Reading{}
	for window, names := range byWindow {
		maps.Copy(readings, p.Traffic.Read(ctx, mesh, names, phases, window, maxInProgress(mesh)))
	}
	for i := range plans {
		if r, ok := readings[plans[i].Namespace.Name]; ok {
			plans[i].Traffic = &r
		}
	}
}

// checkAdmission creates, with server-side dry run, the pods of the workloads a namespace's next
// climb would restart (those running pods without the proxy, not opted out) and of its CronJobs
// and Jobs (whose next pods the climb injects), when the climb passes an admission gate. Only
// while a slot is free (free): with a thousand namespaces waiting, a pass creates the pods of
// those that can start, not of all. Without a checker (the kubectl plugin), they are unchecked.
func (p Planner) checkAdmission(ctx context.Context, mesh *meshv1.MeshInstallation, c *NamespacePlan, settings ladder.Settings, free bool) {
	if !ladder.ChecksAdmission(c.ladderNamespace(settings), settings) {
		return
	}
	switch {
	case p.Admission == nil:
		c.Admission = ReaderAdmission(mesh, c.Namespace.Name)
		return
	case !free:
		c.Admission = ladder.Admission{Deferred: true}
		return
	}
	rev := ladder.RevisionName(settings.Revision)
	ns := c.ladderNamespace(settings)
	move, refresh := ladder.MovesNext(ns, settings), ladder.RefreshesNext(ns, settings)
	if move || refresh {
		// The namespace's label selects its current revision's webhook: that is what injects
		// the dry-run pods (ladder.MovesNext).
		rev = ladder.RevisionName(c.State.Revision)
	}
	var restart []admission.Workload
	for _, w := range c.Workloads {
		// A climb also dry-runs the CronJobs' and Jobs' templates (their next pods get the
		// proxy); a move and a refresh restart what ladder.WillRestart says.
		restarted := !w.OptedOut && (w.Uninjected || w.RunsToCompletion)
		switch {
		case move:
			restarted = ladder.WillRestart(w, ladder.RevisionName(settings.Revision), false, settings)
		case refresh:
			restarted = ladder.WillRestart(w, "", true, settings) // a refresh's step names no revision
		}
		if restarted {
			restart = append(restart, admission.Workload{Kind: w.Kind, Name: w.Name, UID: c.uids[w.Kind+"/"+w.Name]})
		}
	}
	a, err := p.Admission.Check(ctx, c.Namespace.Name, c.Namespace.Labels, restart, rev)
	if err != nil {
		log.FromContext(ctx).Info("could not check the admission of a namespace's pods", "namespace", c.Namespace.Name, "error", err.Error())
		a = ladder.Admission{Revision: rev, Problem: err.Error()}
	}
	c.Admission = a
}

// ReaderAdmission is the admission of a namespace's pods for a reader that creates none (the
// kubectl plugin): unchecked, and held where the operator last reported the namespace held by an
// admission gate (status.namespaces.blocked).
func ReaderAdmission(mesh *meshv1.MeshInstallation, namespace string) ladder.Admission {
	a := ladder.Admission{Unchecked: true}
	if mesh.Status.Namespaces != nil {
		for _, b := range mesh.Status.Namespaces.Blocked {
			if b.Name == namespace && (b.Reason == meshv1.ReasonPodAdmissionRefused || b.Reason == meshv1.ReasonJobsNeedNativeSidecars) {
				a.Reported = true
			}
		}
	}
	return a
}

// InAmbient is the data plane the namespace is on (ladder.InAmbient). In the mesh with no record
// at all (the annotation deleted, as a hold is released), its labels tell: the ambient label and
// no injection label, as the ladder leaves a namespace in ambient mode.
func (c *NamespacePlan) InAmbient() bool {
	if ladder.InAmbient(c.Current, c.State, c.Enrollment.Ambient) {
		return true
	}
	_, recorded := c.Namespace.Annotations[meshv1.AnnotationLadder]
	_, legacy := c.Namespace.Labels[revision.LegacyInjectionLabel]
	_, injection := c.Namespace.Labels[InjectionLabel]
	return !recorded && ladder.InMesh(c.Current) && c.Namespace.Labels[ambient.Label] == ambient.Enabled && !legacy && !injection
}

// ladderNamespace is what the ladder decides a plan's namespace from.
func (c *NamespacePlan) ladderNamespace(settings ladder.Settings) ladder.Namespace {
	return ladder.Namespace{Name: c.Namespace.Name, Current: c.Current, State: c.State, Target: c.Enrollment.Target,
		Ambient: c.InAmbient(), AmbientWanted: c.Enrollment.Ambient, AmbientLabelled: c.Namespace.Labels[ambient.Label] == ambient.Enabled,
		Pods: c.Pods, Workloads: c.Workloads, InjectionConflict: injectionConflict(c.Namespace, ourRevisions(c.Current, c.State, settings)...),
		PolicyConflict: c.PolicyConflict, Traffic: c.Traffic, AllowFrom: c.Enrollment.AllowFrom,
		NonMeshCallers: c.NonMeshCallers, PlaintextPorts: c.Enrollment.PlaintextPorts, ExemptionProblems: c.ExemptionProblems,
		Admission: c.Admission, Waypoint: c.Waypoint, Resilience: c.Resilience}
}

// lookUpCallers finds the callers outside the mesh of the namespaces whose next climb a gate
// judges them for, and resolves the plaintextPorts of every namespace that asks for some and is,
// or is going, STRICT (their exemptions must stay rendered while they stand there).
func (p Planner) lookUpCallers(ctx context.Context, plans []NamespacePlan, settings ladder.Settings) error {
	var lookFor []string
	exempt := map[string][]meshv1.ServicePortRef{}
	for i := range plans {
		c := &plans[i]
		ns := c.ladderNamespace(settings)
		if ladder.ChecksCallers(ns, settings) {
			lookFor = append(lookFor, ns.Name)
		}
		if len(c.Enrollment.PlaintextPorts) > 0 && (ladder.EffectsOf(c.Current, c.State.Step).Strict || ladder.ChecksCallers(ns, settings)) {
			exempt[ns.Name] = c.Enrollment.PlaintextPorts
		}
	}
	if len(lookFor) == 0 && len(exempt) == 0 {
		return nil
	}
	api := p.API
	if api == nil {
		api = p.Workloads
	}
	found, err := exposure.Find(ctx, exposure.Readers{Cached: p.Workloads, CRDs: p.Policies, API: api}, lookFor, exempt)
	if err != nil {
		return err
	}
	for i := range plans {
		if f, ok := found[plans[i].Namespace.Name]; ok {
			plans[i].NonMeshCallers, plans[i].Exemptions, plans[i].ExemptionProblems = f.Callers, f.Exemptions, f.Problems
		}
	}
	return nil
}

// settingsFor is SettingsOf with what the pass observed of all namespaces: which accept only
// mTLS (their recorded level and step carry STRICT).
func settingsFor(mesh *meshv1.MeshInstallation, target Target, plans []NamespacePlan) ladder.Settings {
	s := SettingsOf(mesh, target)
	s.Strict = map[string]bool{}
	for i := range plans {
		if ladder.EffectsOf(plans[i].Current, plans[i].State.Step).Strict {
			s.Strict[plans[i].Namespace.Name] = true
		}
	}
	return s
}

// maxInProgress is spec.rollout.maxNamespacesInProgress, with its default.
func maxInProgress(mesh *meshv1.MeshInstallation) int {
	if n := int(mesh.Spec.Rollout.MaxNamespacesInProgress); n >= 1 {
		return n
	}
	return 2
}

// Candidates picks the namespaces the ladder looks at, with their enrollment and recorded
// state, in the order their moves are decided: running steps first (they keep their slots under
// maxNamespacesInProgress), then the others by name. Namespaces never enrolled and holding
// nothing of the operator's (withPolicies) are left out, as are namespaces being deleted; one
// whose meshwright.io/target-level label is not a level stays in, so that it is reported.
func Candidates(ctx context.Context, mesh *meshv1.MeshInstallation, namespaces []corev1.Namespace, withPolicies map[string]bool, excluded []string) []NamespacePlan {
	return candidates(ctx, mesh, namespaces, withPolicies, excluded, nil)
}

// candidates is Candidates reusing, through memo, the ladder records and enrollments of
// namespaces whose object did not change since an earlier pass.
func candidates(ctx context.Context, mesh *meshv1.MeshInstallation, namespaces []corev1.Namespace, withPolicies map[string]bool, excluded []string, memo *Observations) []NamespacePlan {
	var running, others []NamespacePlan
	key := recordKey{mesh: mesh.UID, generation: mesh.Generation, excluded: strings.Join(excluded, ",")}
	for i := range namespaces {
		ns := &namespaces[i]
		if !ns.DeletionTimestamp.IsZero() {
			continue
		}
		_, ours := ns.Annotations[meshv1.AnnotationLadder]
		c := NamespacePlan{Namespace: ns, Current: ladder.Level(ns.Labels[meshv1.LabelLevel])}
		if c.Current == "" {
			c.Current = meshv1.LevelOff
		}
		key.resourceVersion = ns.ResourceVersion
		c.State, c.Enrollment = memo.ladderRecord(ns.Name, key, func() (ladder.State, ladder.Enrollment) {
			e := ladder.Enroll(ns.Name, ns.Labels, mesh.Spec.Namespaces, excluded)
			e.Ambient = meshspec.AmbientFor(mesh, e.DataPlane)
			return readRecord(ctx, ns), e
		})
		if c.Enrollment.Target == meshv1.LevelOff && c.Current == meshv1.LevelOff && !ours && ns.Labels[meshv1.LabelLevel] == "" &&
			!withPolicies[ns.Name] && c.Enrollment.Invalid == "" {
			continue // never enrolled: nothing to look at (a mistyped target label is reported)
		}
		c.Resilience = resilienceWant(mesh, &c)
		if c.State.Step != nil {
			running = append(running, c)
		} else {
			others = append(others, c)
		}
	}
	sort.Slice(others, func(i, j int) bool { return others[i].Namespace.Name < others[j].Namespace.Name })
	return append(running, others...)
}

// readRecord decodes a namespace's ladder record; an unreadable one is logged and read as none.
func readRecord(ctx context.Context, ns *corev1.Namespace) ladder.State {
	var st ladder.State
	if raw := ns.Annotations[meshv1.AnnotationLadder]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &st); err != nil {
			log.FromContext(ctx).Info("ignoring an unreadable ladder annotation", "namespace", ns.Name, "error", err.Error())
			return ladder.State{}
		}
	}
	return st
}

// DecideAll sets each plan's Decision from what was observed of its namespace (Pods, Workloads,
// PolicyConflict), in order, giving new steps the slots maxNamespacesInProgress leaves. Namespaces
// in the mesh on another revision than the target's are moved to it.
func DecideAll(plans []NamespacePlan, mesh *meshv1.MeshInstallation, target Target, now time.Time) {
	decideAll(plans, settingsFor(mesh, target, plans), maxInProgress(mesh), now, nil)
}

// decideAll is DecideAll with the pass's settings and maxNamespacesInProgress; admit, when set,
// fills in a plan's Admission just before its decision, knowing whether a slot is free.
func decideAll(plans []NamespacePlan, settings ladder.Settings, limit int, now time.Time, admit func(c *NamespacePlan, free bool)) {
	inProgress := 0
	for i := range plans {
		c := &plans[i]
		if admit != nil {
			admit(c, inProgress < limit)
		}
		c.Decision = ladder.Decide(c.ladderNamespace(settings), settings, inProgress < limit, now)
		if c.Decision.InProgress {
			inProgress++
		}
	}
}

// ourRevisions are the revision labels a namespace may carry that are the operator's: the active
// revision first, then the one its record says it is on (when it is in the mesh), and the ones
// a step moves it between.
func ourRevisions(current ladder.Level, st ladder.State, s ladder.Settings) []string {
	out := []string{ladder.RevisionName(s.Revision)}
	if ladder.InMesh(current) || st.Step != nil {
		out = append(out, ladder.RevisionName(st.Revision))
	}
	if st.Step != nil {
		out = append(out, st.Step.Revision, st.Step.From)
	}
	return out
}

// Summarize is the stage's result for a pass's plans: status.namespaces and the AdoptionReady
// condition.
func Summarize(plans []NamespacePlan, settings ladder.Settings) stages.Result {
	var sum summary
	for i := range plans {
		sum.add(&plans[i])
	}
	return sum.result(settings)
}

// namespacesWithPolicies lists the namespaces holding policies of the installation (from the
// cache, which holds every PeerAuthentication and AuthorizationPolicy).
func (p Planner) namespacesWithPolicies(ctx context.Context, mesh *meshv1.MeshInstallation) (map[string]bool, error) {
	out := map[string]bool{}
	for _, gvk := range policy.Kinds() {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := p.Policies.List(ctx, list, client.MatchingLabels{meshv1.LabelInstallation: mesh.Name}, client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("listing %s: %w", gvk.Kind, err)
		}
		for _, pol := range list.Items {
			if policy.PerNamespace(pol.GetName()) {
				out[pol.GetNamespace()] = true
			}
		}
	}
	return out, nil
}

// policyConflict names a namespace-wide PeerAuthentication of someone else's that is not
// STRICT: Istio applies the oldest namespace-wide policy, so it would silently override the
// operator's STRICT one.
func (p Planner) policyConflict(ctx context.Context, mesh *meshv1.MeshInstallation, namespace string) (string, error) {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(policy.PeerAuthenticationGVK.GroupVersion().WithKind(policy.PeerAuthenticationGVK.Kind + "List"))
	if err := p.Policies.List(ctx, list, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		return "", fmt.Errorf("listing PeerAuthentications in %s: %w", namespace, err)
	}
	for _, pa := range list.Items {
		if pa.GetLabels()[meshv1.LabelInstallation] == mesh.Name {
			continue
		}
		if sel, _, _ := unstructured.NestedStringMap(pa.Object, "spec", "selector", "matchLabels"); len(sel) > 0 {
			continue // a workload's own policy; namespace-wide STRICT still covers the rest
		}
		if mode, _, _ := unstructured.NestedString(pa.Object, "spec", "mtls", "mode"); mode != "STRICT" {
			if mode == "" {
				mode = "UNSET"
			}
			return fmt.Sprintf("PeerAuthentication %s/%s (mode %s) applies to the whole namespace and would override Meshwright's STRICT policy: make it STRICT or delete it.", namespace, pa.GetName(), mode), nil
		}
	}
	return "", nil
}
