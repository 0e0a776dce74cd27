// Package controllers holds the reconcilers: thin loops that load a MeshInstallation, run the
// rollout logic from internal/, and write what they found into its status once per pass.
package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/admission"
	"github.com/meshwright/meshwright/internal/adoption"
	"github.com/meshwright/meshwright/internal/ambient"
	"github.com/meshwright/meshwright/internal/apply"
	"github.com/meshwright/meshwright/internal/arbiter"
	"github.com/meshwright/meshwright/internal/certificates"
	"github.com/meshwright/meshwright/internal/charts"
	"github.com/meshwright/meshwright/internal/controlplane"
	"github.com/meshwright/meshwright/internal/gatewayapi"
	"github.com/meshwright/meshwright/internal/injection"
	"github.com/meshwright/meshwright/internal/meshspec"
	"github.com/meshwright/meshwright/internal/metrics"
	"github.com/meshwright/meshwright/internal/policy"
	"github.com/meshwright/meshwright/internal/resilience"
	"github.com/meshwright/meshwright/internal/stages"
	"github.com/meshwright/meshwright/internal/telemetry"
	"github.com/meshwright/meshwright/internal/waypoint"
)

// StatusCoalesceWindow is how often at most a status change that only reports progress (see
// progressOnly) is written: a message, a count, or a step of a rollout under way is at most this
// much behind in status (an Event tells a condition's step at once).
const StatusCoalesceWindow = 10 * time.Second

// FieldManager is the one field manager the operator writes with, so server-side apply can tell
// its fields from those of istiod, HPAs and users.
const FieldManager = "meshwright"

// MeshInstallationReconciler turns a MeshInstallation into a staged rollout and reports it.
type MeshInstallationReconciler struct {
	client.Client
	// Recorder emits an Event on every condition transition, for `kubectl describe`.
	Recorder recorder.EventRecorder
	// Stages are the rollout's stages in order; NewStages builds the standard list.
	Stages []stages.Stage
	// KubeVersion is the cluster's version, passed to Istio's charts.
	KubeVersion string
	// OperatorNamespace is where the operator runs; it is never enrolled in the mesh.
	OperatorNamespace string
	// ProxyStatsURL is where the traffic gates' embedded source reads a pod's merged metrics
	// (--proxy-stats-url).
	ProxyStatsURL string
	// ExternalIstioCRDs leaves Istio's CRDs to someone else, as the OLM bundle installs them.
	ExternalIstioCRDs bool
	// ChartCacheDir is where charts downloaded from spec.controlPlane.chartSource are kept.
	ChartCacheDir string
	// Clock times the coalescing of status writes (StatusCoalesceWindow); the real clock when nil.
	Clock clock.PassiveClock

	// observations is the ladder's memo of what it observed of each namespace, told of every
	// event of the objects it reads (see observationChanges).
	observations *adoption.Observations
	// pacer spaces the passes teams' events start (see LadderPassShare).
	pacer passPacer

	// lastStatusWrite is when each installation's status was last written by this process.
	// Lost on restart, which only makes the first write after it immediate.
	lastStatusWrite sync.Map
	// toldConditions is each installation's conditions as its Events last told them (see
	// recordTransitions). Lost on restart, which only compares the first pass after it with
	// the status read.
	toldConditions sync.Map
	// heldStatus is each installation's status computed by a pass and not written yet (see
	// writeStatus), a heldReport.
	heldStatus sync.Map

	controller controller.Controller
	cache      cache.Cache
	// gatewayCache holds the operator's own Gateways (GatewayCacheOptions).
	gatewayCache cache.Cache
	watchMu      sync.Mutex
	watching     map[schema.GroupVersionKind]bool
}

// +kubebuilder:rbac:groups=meshwright.io,resources=meshinstallations,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=meshwright.io,resources=meshinstallations/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=meshwright.io,resources=meshinstallations/finalizers,verbs=update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=apiextensions.k8s.io,resources=customresourcedefinitions,verbs=get;list;watch

// Reconcile runs one pass for one MeshInstallation: load it, hold it with a finalizer, decide
// whether it is the active installation, run the stages, and write status once at the end.
func (r *MeshInstallationReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, retErr error) {
	mesh := &meshv1.MeshInstallation{}
	if err := r.Get(ctx, req.NamespacedName, mesh); err != nil {
		if apierrors.IsNotFound(err) {
			r.lastStatusWrite.Delete(req.Name)
			r.toldConditions.Delete(req.Name)
			r.heldStatus.Delete(req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}

	if !mesh.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, mesh)
	}
	if !controllerutil.ContainsFinalizer(mesh, meshv1.Finalizer) {
		// The finalizer goes on before anything is created, so nothing can be orphaned.
		// With the optimistic lock, a concurrent change to the finalizer list is a conflict and
		// a retry, never a lost finalizer of someone else's.
		patch := client.MergeFromWithOptions(mesh.DeepCopy(), client.MergeFromWithOptimisticLock{})
		controllerutil.AddFinalizer(mesh, meshv1.Finalizer)
		if err := r.Patch(ctx, mesh, patch, client.FieldOwner(FieldManager)); err != nil {
			return handleError(ctx, fmt.Errorf("adding finalizer: %w", err))
		}
	}

	started := r.clock().Now()
	defer func() { r.pacer.record(r.clock().Since(started)) }()
	before := mesh.DeepCopy()
	obs := observation{generation: mesh.Generation, now: metav1.NewTime(started), stageTypes: stageTypes(r.Stages)}
	// passErr is the raw error of the pass, whatever the error policy makes of it: a conflict
	// that is requeued quietly is still a pass that did not succeed.
	var passErr error
	defer func() {
		obs.err = passErr
		held, err := r.writeStatus(ctx, before, mesh, obs)
		switch {
		case err != nil && retErr != nil:
			log.FromContext(ctx).Error(err, "writing status after a failed pass")
		case err != nil:
			res, retErr = handleError(ctx, fmt.Errorf("writing status: %w", err))
		case held > 0 && retErr == nil && (res.RequeueAfter == 0 || res.RequeueAfter > held):
			// Come back when the held progress report may be written.
			res.RequeueAfter = held
		}
	}()

	all := &meshv1.MeshInstallationList{}
	if err := r.List(ctx, all); err != nil {
		passErr = fmt.Errorf("listing MeshInstallations: %w", err)
		return handleError(ctx, passErr)
	}
	obs.activeName = arbiter.Active(all.Items)
	if obs.activeName != mesh.Name {
		// Not ours to act on; status says why and the watch on MeshInstallations brings us
		// back when the active one goes away.
		return ctrl.Result{}, nil
	}
	obs.active = true
	obs.version = meshspec.DesiredVersion(mesh)
	obs.outcome = stages.Run(ctx, r.Stages, mesh)
	if obs.outcome.Err != nil {
		passErr = fmt.Errorf("%s stage: %w", obs.outcome.Current, obs.outcome.Err)
		return handleError(ctx, passErr)
	}
	return ctrl.Result{RequeueAfter: capRequeue(obs.outcome.RequeueAfter)}, nil
}

// capRequeue bounds how long the operator goes without looking, so that a missed event is
// corrected within hours, not months.
func capRequeue(d time.Duration) time.Duration {
	const maxRequeue = 10 * time.Hour
	if d > maxRequeue {
		return maxRequeue
	}
	return d
}

func stageTypes(list []stages.Stage) []string {
	out := make([]string, 0, len(list))
	for _, s := range list {
		out = append(out, s.ConditionType())
	}
	return out
}

// reconcileDelete removes what the MeshInstallation created, last stage first, then releases
// the finalizer. An installation that never became active created nothing and is released at once.
func (r *MeshInstallationReconciler) reconcileDelete(ctx context.Context, mesh *meshv1.MeshInstallation) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(mesh, meshv1.Finalizer) {
		return ctrl.Result{}, nil
	}
	// Only the active installation can have created anything; a Conflict one is released at
	// once. Clean-up finds objects by the installation's labels, so it is safe to run even if
	// no pass ever succeeded.
	all := &meshv1.MeshInstallationList{}
	if err := r.List(ctx, all); err != nil {
		return handleError(ctx, fmt.Errorf("listing MeshInstallations: %w", err))
	}
	if arbiter.Active(all.Items) == mesh.Name {
		done, err := stages.Cleanup(ctx, r.Stages, mesh)
		if err != nil {
			return handleError(ctx, fmt.Errorf("removing what the installation created: %w", err))
		}
		if !done {
			log.FromContext(ctx).Info("removing what the installation created; waiting for objects to go away")
			return ctrl.Result{RequeueAfter: time.Second}, nil
		}
	}
	log.FromContext(ctx).Info("everything the installation created is removed; releasing its finalizer")
	patch := client.MergeFromWithOptions(mesh.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(mesh, meshv1.Finalizer)
	if err := r.Patch(ctx, mesh, patch, client.FieldOwner(FieldManager)); err != nil {
		return handleError(ctx, fmt.Errorf("removing finalizer: %w", err))
	}
	metrics.Forget(mesh.Name)
	r.lastStatusWrite.Delete(mesh.Name)
	r.toldConditions.Delete(mesh.Name)
	r.heldStatus.Delete(mesh.Name)
	return ctrl.Result{}, nil
}

// writeStatus computes the new status from what the pass observed and patches it only when it
// differs from what was read, so a pass that changed nothing makes no write. A change that only
// reports progress is held back while the last write is younger than StatusCoalesceWindow;
// held is then how long until it may be written. Events tell every transition as it is seen,
// written or held.
func (r *MeshInstallationReconciler) writeStatus(ctx context.Context, before, mesh *meshv1.MeshInstallation, obs observation) (held time.Duration, err error) {
	r.resumeHeld(before, mesh)
	computeStatus(&mesh.Status, obs)
	keepTransitionTimes(&before.Status, &mesh.Status)
	metrics.RecordStatus(mesh.Name, &mesh.Status)
	if equality.Semantic.DeepEqual(before.Status, mesh.Status) {
		r.recordTransitions(before, mesh)
		return 0, nil
	}
	now := r.clock().Now()
	// A failed pass's status is written at once: its error may be terminal (nothing requeues),
	// and what failed is news, not progress.
	if last, ok := r.lastStatusWrite.Load(mesh.Name); ok && obs.err == nil && progressOnly(&before.Status, &mesh.Status) {
		if wait := last.(time.Time).Add(StatusCoalesceWindow).Sub(now); wait > 0 {
			r.hold(before, mesh)
			r.recordTransitions(before, mesh)
			return wait, nil
		}
	}
	if err := r.Status().Patch(ctx, mesh, client.MergeFrom(before), client.FieldOwner(FieldManager)); err != nil {
		if apierrors.IsNotFound(err) {
			return 0, nil
		}
		if obs.err == nil && !apierrors.IsInvalid(err) {
			// The retry starts from it. Not after a failed pass: what it computed (Ready
			// Unknown) was never told, and would give Ready a new time once the API is back.
			// Not for a status the API server refused: it would be sent again and again.
			r.hold(before, mesh)
		}
		return 0, err
	}
	r.lastStatusWrite.Store(mesh.Name, now)
	r.recordTransitions(before, mesh)
	return 0, nil
}

// heldReport is a status a pass computed and did not write, with the resourceVersion of the
// installation it was computed on.
type heldReport struct {
	resourceVersion string
	status          *meshv1.MeshInstallationStatus
}

// hold keeps mesh's status, computed on before, for the next pass (resumeHeld).
func (r *MeshInstallationReconciler) hold(before, mesh *meshv1.MeshInstallation) {
	r.heldStatus.Store(mesh.Name, heldReport{resourceVersion: before.ResourceVersion, status: mesh.Status.DeepCopy()})
}

// resumeHeld starts mesh's status from the one an earlier pass held back, when it was computed on
// the installation as this pass read it (any write since, the spec's or someone's, drops it). So
// the steps it holds stay: a failed pass keeps them for the stages it did not run instead of
// going back to what was written, and a condition keeps the time it changed.
func (r *MeshInstallationReconciler) resumeHeld(before, mesh *meshv1.MeshInstallation) {
	h, ok := r.heldStatus.LoadAndDelete(mesh.Name)
	if !ok {
		return
	}
	if held := h.(heldReport); held.resourceVersion == before.ResourceVersion {
		mesh.Status = *held.status.DeepCopy()
	}
}

func (r *MeshInstallationReconciler) clock() clock.PassiveClock {
	if r.Clock == nil {
		return clock.RealClock{}
	}
	return r.Clock
}

// recordTransitions emits one Event per condition whose status or reason changed since the
// last one told (or, first after a start, since the status read), so a held status write (see
// progressOnly) still shows every step in `kubectl describe` as it happens, and a retried pass
// does not repeat them.
func (r *MeshInstallationReconciler) recordTransitions(before, after *meshv1.MeshInstallation) {
	told := before.Status.Conditions
	if last, ok := r.toldConditions.Load(after.Name); ok {
		told = last.([]metav1.Condition)
	}
	r.toldConditions.Store(after.Name, slices.Clone(after.Status.Conditions))
	if r.Recorder == nil {
		return
	}
	for _, c := range after.Status.Conditions {
		old := meta.FindStatusCondition(told, c.Type)
		if old != nil && old.Status == c.Status && old.Reason == c.Reason {
			continue
		}
		eventType := corev1.EventTypeNormal
		if isBad(c) {
			eventType = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(after, nil, eventType, c.Reason, "Update"+c.Type, "%s is %s: %s", c.Type, c.Status, c.Message)
	}
}

// isBad says whether a condition in this state deserves a Warning event.
func isBad(c metav1.Condition) bool {
	if c.Type == meshv1.ConditionDegraded {
		return c.Status == metav1.ConditionTrue
	}
	return c.Status == metav1.ConditionFalse && c.Type != meshv1.ConditionProgressing
}

// requeueMeshes maps any MeshInstallation event to every MeshInstallation, so that when the
// active one is deleted the next one takes over, and a Conflict is cleared without waiting.
func (r *MeshInstallationReconciler) requeueMeshes(ctx context.Context, _ client.Object) []reconcile.Request {
	all := &meshv1.MeshInstallationList{}
	if err := r.List(ctx, all); err != nil {
		log.FromContext(ctx).Error(err, "listing MeshInstallations to requeue")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(all.Items))
	for _, m := range all.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&m)})
	}
	return reqs
}

// SetupWithManager registers the reconciler and what it watches, and builds the standard
// stages when none were given.
func (r *MeshInstallationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	// The ladder reads every team's namespaces, pods and workloads: a cache of its own, slimmed
	// to what the ladder needs (see adoption.CacheOptions), beside the manager's label-filtered one.
	metrics.Register()
	ladderOpts := adoption.CacheOptions()
	ladderOpts.Scheme, ladderOpts.Mapper, ladderOpts.HTTPClient = mgr.GetScheme(), mgr.GetRESTMapper(), mgr.GetHTTPClient()
	ladderCache, err := cache.New(mgr.GetConfig(), ladderOpts)
	if err != nil {
		return fmt.Errorf("creating the ladder's cache: %w", err)
	}
	if err := mgr.Add(ladderCache); err != nil {
		return err
	}
	// The waypoints' Gateways: a cache of the operator's own only (its label, server-side),
	// whose informer starts when the adoption stage first reads them, once the Gateway API is
	// served. A label selector for the whole cache needs no mapping of the kind at start-up, as
	// a per-kind one would (the manager would not start without the Gateway API).
	gatewayCache, err := cache.New(mgr.GetConfig(), GatewayCacheOptions(mgr))
	if err != nil {
		return fmt.Errorf("creating the Gateways' cache: %w", err)
	}
	if err := mgr.Add(gatewayCache); err != nil {
		return err
	}
	r.gatewayCache = gatewayCache
	r.observations = adoption.NewObservations()
	if r.Stages == nil {
		r.Stages = NewStages(StageDeps{Observations: r.observations, Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Mapper: mgr.GetRESTMapper(), Gateways: gatewayCache,
			KubeVersion: r.KubeVersion, Watch: r.watchKinds, Workloads: ladderCache, Recorder: r.Recorder, OperatorNamespace: r.OperatorNamespace,
			ExternalIstioCRDs: r.ExternalIstioCRDs, Charts: &charts.Source{CacheDir: r.ChartCacheDir}, ProxyStatsURL: r.ProxyStatsURL})
	}
	crd := &unstructured.Unstructured{}
	crd.SetGroupVersionKind(apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinition"))
	b := ctrl.NewControllerManagedBy(mgr).
		Named("meshinstallation").
		// Status and finalizer writes (the operator's own) do not start a pass: reacting to them
		// would run a pass on a cache that may not hold the status just written, and write again.
		Watches(&meshv1.MeshInstallation{}, handler.EnqueueRequestsFromMapFunc(r.requeueMeshes),
			builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{},
				predicate.AnnotationChangedPredicate{}, deletionStarted{}))).
		// The Secrets the operator creates (cacerts) are cached by label only; see cmd/main.go.
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(byInstallationLabel)).
		// cert-manager may be installed after the operator: its CRDs appearing restarts the
		// rollout. Istio's CRDs report their Established condition the same way, whether the
		// operator installed them (labelled) or someone else did (--istio-crds=external). The
		// Gateway API's, whoever installed them, decide whether ambient mode installs its own.
		Watches(crd, handler.EnqueueRequestsFromMapFunc(r.crdToMeshes),
			builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
				return strings.HasSuffix(o.GetName(), ".cert-manager.io") || strings.HasSuffix(o.GetName(), ".istio.io") ||
					gatewayapi.IsCRD(o.GetName()) || o.GetLabels()[meshv1.LabelInstallation] != ""
			})))
	// Every kind the control-plane charts render is watched (by label, see CacheOptions), so an
	// edited or deleted object is restored.
	for _, gvk := range controlplane.OwnedKinds() {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk)
		b = b.Watches(u, handler.EnqueueRequestsFromMapFunc(byInstallationLabel))
	}
	for _, obj := range adoption.WatchedObjects() {
		b = b.WatchesRawSource(source.Kind(ladderCache, obj, handler.EventHandler(batchedEvents{mapper: r.requeueMeshes, delay: r.pacer.delay}), ladderPredicates(r.observations)...))
	}
	c, err := b.Build(r)
	if err != nil {
		return err
	}
	r.controller = c
	r.cache = mgr.GetCache()
	return nil
}

// StageDeps is what the standard stages need from the manager.
type StageDeps struct {
	// Client writes, and reads from the manager's cache.
	Client client.Client
	// APIReader reads from the API server, for what the cache does not hold.
	APIReader client.Reader
	Mapper    meta.RESTMapper
	// KubeVersion is passed to Istio's charts.
	KubeVersion string
	// Watch starts watching kinds that may not exist when the operator starts (cert-manager's,
	// Istio's policies); nil in tests that run passes by hand.
	Watch func(gvks ...schema.GroupVersionKind) error
	// Workloads reads namespaces, pods and workloads for the ladder; APIReader when nil.
	Workloads client.Reader
	// Recorder emits the ladder's Events on Namespaces; none when nil.
	Recorder recorder.EventRecorder
	// OperatorNamespace is never enrolled.
	OperatorNamespace string
	// ExternalIstioCRDs leaves Istio's CRDs to someone else (see controlplane.Stage.ExternalCRDs).
	ExternalIstioCRDs bool
	// Observations is the ladder's memo of namespaces' observations; nil observes afresh.
	Observations *adoption.Observations
	// Charts pulls the charts of versions this build does not embed; nil uses no disk cache.
	Charts *charts.Source
	// ProxyStatsURL is where the embedded telemetry source reads a pod's merged metrics (see
	// telemetry.Embedded.URLTemplate); empty is Istio's port 15020 on the pod's IP.
	ProxyStatsURL string
	// Gateways reads the operator's own waypoint Gateways (a cache of them alone); Client when
	// nil.
	Gateways client.Reader
}

// NewStages is the rollout, in order: the mesh CA, Istio's control plane, the injection webhook
// verified live, the mesh-wide policy, then the adoption ladder of every namespace.
func NewStages(d StageDeps) []stages.Stage {
	applier := &apply.Applier{Client: d.Client, FieldManager: FieldManager, Uncached: d.APIReader}
	workloads := d.Workloads
	if workloads == nil {
		workloads = d.APIReader
	}
	var certManagerFound func() error
	if d.Watch != nil {
		certManagerFound = func() error { return d.Watch(certificates.CertificateGVK, certificates.IssuerGVK) }
	}
	return []stages.Stage{
		&certificates.Stage{Client: d.Client, Reader: d.APIReader, Pods: workloads, Mapper: d.Mapper, CertManagerFound: certManagerFound, Applier: applier},
		&controlplane.Stage{Client: d.Client, Reader: d.APIReader, Applier: applier, KubeVersion: d.KubeVersion, ExternalCRDs: d.ExternalIstioCRDs,
			Charts: d.Charts, Workloads: workloads, Revisions: revisionMemo(d.Observations)},
		&injection.Stage{Client: d.Client},
		&policy.Stage{Client: d.Client, Reader: d.APIReader, Applier: applier, Watch: d.Watch},
		&adoption.Stage{Client: d.Client, Reader: workloads, API: d.APIReader, Applier: applier, FieldManager: FieldManager, Recorder: d.Recorder, OperatorNamespace: d.OperatorNamespace, Observations: d.Observations,
			Traffic:   &telemetry.Sources{Secrets: d.APIReader, Embedded: &telemetry.Embedded{Pods: workloads, URLTemplate: d.ProxyStatsURL}},
			Admission: &admission.Checker{Reader: d.APIReader, Writer: d.Client}, Watch: d.Watch, Gateways: d.Gateways},
	}
}

// revisionMemo is the control plane's memo of pod revisions: the ladder's Observations, or none.
func revisionMemo(obs *adoption.Observations) controlplane.RevisionMemo {
	if obs == nil {
		return nil // not a typed nil: the stage lists every pod
	}
	return obs
}

// watchKinds starts watching kinds once they are served. Watching them from the start would
// stall the manager's start-up when cert-manager (or Istio) is not installed.
func (r *MeshInstallationReconciler) watchKinds(gvks ...schema.GroupVersionKind) error {
	r.watchMu.Lock()
	defer r.watchMu.Unlock()
	if r.controller == nil {
		return nil
	}
	if r.watching == nil {
		r.watching = map[schema.GroupVersionKind]bool{}
	}
	for _, gvk := range gvks {
		if r.watching[gvk] {
			continue
		}
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk)
		src := source.Kind[client.Object](r.cache, u, handler.EnqueueRequestsFromMapFunc(byInstallationLabel))
		if gvk == waypoint.GVK && r.gatewayCache != nil {
			src = source.Kind[client.Object](r.gatewayCache, u, handler.EnqueueRequestsFromMapFunc(byInstallationLabel))
		}
		if slices.Contains(policy.Kinds(), gvk) {
			// Policies are the ladder's: each event counts as a change of its namespace (the
			// ladder reuses what it read of a namespace's policies, its conflicts and last
			// sync, until one changes), and joins the ladder's batched passes.
			src = source.Kind[client.Object](r.cache, u, handler.EventHandler(batchedEvents{mapper: byInstallationLabel, delay: r.pacer.delay}), observationChanges{r.observations})
		}
		if slices.Contains(resilience.Kinds(), gvk) || slices.Contains(resilience.RouteKinds, gvk) {
			// Anyone's DestinationRule or VirtualService may change what the resilience
			// defaults cover, in its namespace or in another: every installation looks again.
			src = source.Kind[client.Object](r.cache, u, handler.EventHandler(batchedEvents{mapper: r.requeueMeshes, delay: r.pacer.delay}), observationChanges{r.observations})
		}
		if err := r.controller.Watch(src); err != nil {
			return fmt.Errorf("watching %s: %w", gvk.Kind, err)
		}
		r.watching[gvk] = true
	}
	return nil
}

// crdToMeshes maps an Istio CRD to its installation and a cert-manager CRD to every installation.
func (r *MeshInstallationReconciler) crdToMeshes(ctx context.Context, o client.Object) []reconcile.Request {
	if reqs := byInstallationLabel(ctx, o); len(reqs) > 0 {
		return reqs
	}
	return r.requeueMeshes(ctx, o)
}

// byInstallationLabel maps an object the operator created to its MeshInstallation.
func byInstallationLabel(_ context.Context, o client.Object) []reconcile.Request {
	if name := o.GetLabels()[meshv1.LabelInstallation]; name != "" {
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: name}}}
	}
	return nil
}

// conflictRetry is how soon a pass that hit an optimistic-lock conflict runs again.
const conflictRetry = 200 * time.Millisecond

// ClientOptions is the manager's client: cert-manager's objects are read as unstructured (the
// operator does not link their Go types), and reading them from the cache keeps an unchanged
// pass free of API requests.
func ClientOptions() client.Options {
	return client.Options{Cache: &client.CacheOptions{Unstructured: true}}
}

// GatewayCacheOptions is the Gateways' cache (see SetupWithManager): the operator's objects only,
// without managed fields.
func GatewayCacheOptions(mgr ctrl.Manager) cache.Options {
	return cache.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper(), HTTPClient: mgr.GetHTTPClient(),
		DefaultLabelSelector: labels.SelectorFromSet(labels.Set{meshv1.LabelManagedBy: meshv1.ManagedByValue}),
		DefaultTransform:     cache.TransformStripManagedFields()}
}

// CacheOptions limits what the manager caches to what the operator needs: of the kinds it
// creates (Secrets, Deployments, ConfigMaps, RBAC, webhooks…), only the objects it created (they
// carry its managed-by label), so memory does not grow with the cluster. Managed fields are
// dropped from every cached object.
func CacheOptions() cache.Options {
	ours := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{meshv1.LabelManagedBy: meshv1.ManagedByValue})}
	byObject := map[client.Object]cache.ByObject{&corev1.Secret{}: ours}
	for _, gvk := range controlplane.OwnedKinds() {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk)
		byObject[u] = ours
	}
	// Every CRD of the cluster is watched (cert-manager's and Istio's appearing start a pass):
	// the cache keeps them without their schemas, which the Applier compares by digest.
	crd := &unstructured.Unstructured{}
	crd.SetGroupVersionKind(apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinition"))
	byObject[crd] = cache.ByObject{Transform: apply.SlimCRD}
	return cache.Options{ByObject: byObject, DefaultTransform: cache.TransformStripManagedFields()}
}

// ladderPredicate lets through the changes of namespaces, pods and workloads that can move the
// ladder, and drops the rest: a pod's status churns (IPs, container states) far more often than
// its readiness does. Istio CNI redirecting a pod to ztunnel (its annotation) moves a step into
// ambient mode.
type ladderPredicate struct{ predicate.Funcs }

// Update implements predicate.Predicate.
func (ladderPredicate) Update(e event.UpdateEvent) bool {
	switch o := e.ObjectOld.(type) {
	case *batchv1.Job:
		// Its pods are watched themselves: what the ladder reads of a Job is its template (the
		// generation), whether it finished and whether it is going.
		n, ok := e.ObjectNew.(*batchv1.Job)
		return !ok || o.Generation != n.Generation || adoption.JobFinished(o) != adoption.JobFinished(n) || !o.DeletionTimestamp.Equal(n.DeletionTimestamp)
	case *batchv1.CronJob:
		// Its status moves at every run; the ladder reads its template and whether it is going.
		return o.Generation != e.ObjectNew.GetGeneration() || !o.DeletionTimestamp.Equal(e.ObjectNew.GetDeletionTimestamp())
	}
	oldPod, ok1 := e.ObjectOld.(*corev1.Pod)
	newPod, ok2 := e.ObjectNew.(*corev1.Pod)
	if !ok1 || !ok2 {
		return true
	}
	return !equality.Semantic.DeepEqual(oldPod.Status.Conditions, newPod.Status.Conditions) ||
		oldPod.Status.Phase != newPod.Status.Phase || !oldPod.DeletionTimestamp.Equal(newPod.DeletionTimestamp) ||
		!equality.Semantic.DeepEqual(oldPod.Labels, newPod.Labels) || ambient.Redirected(oldPod) != ambient.Redirected(newPod)
}

// ladderPredicates are the ladder watches' predicates, in order: observationChanges first, so
// it sees every event before ladderPredicate drops any, and before the pass is queued.
func ladderPredicates(obs *adoption.Observations) []predicate.TypedPredicate[client.Object] {
	return []predicate.TypedPredicate[client.Object]{observationChanges{obs}, ladderPredicate{}}
}

// observationChanges tells the ladder's memo of observations (adoption.Observations) of every
// event of an object it reads, before any predicate may drop the event and before the pass it
// starts is queued, so no pass reuses an observation older than the event that started it. It
// passes every event.
type observationChanges struct{ obs *adoption.Observations }

// Create implements predicate.Predicate.
func (p observationChanges) Create(e event.CreateEvent) bool { return p.seen(e.Object, false) }

// Update implements predicate.Predicate.
func (p observationChanges) Update(e event.UpdateEvent) bool { return p.seen(e.ObjectNew, false) }

// Delete implements predicate.Predicate.
func (p observationChanges) Delete(e event.DeleteEvent) bool { return p.seen(e.Object, true) }

// Generic implements predicate.Predicate.
func (p observationChanges) Generic(e event.GenericEvent) bool { return p.seen(e.Object, false) }

// seen records the event: a change of the namespace's objects, or a namespace gone. What the
// ladder observes of a namespace does not read the Namespace object itself.
func (p observationChanges) seen(o client.Object, deleted bool) bool {
	if p.obs == nil || o == nil {
		return true
	}
	if _, isNamespace := o.(*corev1.Namespace); isNamespace {
		if deleted {
			p.obs.Forget(o.GetName())
		}
		return true
	}
	p.obs.Changed(o.GetNamespace())
	return true
}

// deletionStarted passes the update that sets deletionTimestamp, so clean-up starts at once.
type deletionStarted struct{ predicate.Funcs }

// Update implements predicate.Predicate.
func (deletionStarted) Update(e event.UpdateEvent) bool {
	return e.ObjectOld != nil && e.ObjectNew != nil &&
		e.ObjectOld.GetDeletionTimestamp().IsZero() && !e.ObjectNew.GetDeletionTimestamp().IsZero()
}
