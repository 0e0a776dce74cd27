// Package controlplane is the second rollout stage: Istio's CRDs, istiod and its webhooks,
// rendered from Istio's own charts (package render) and applied with server-side apply. It is
// Ready when the CRDs are Established, istiod's Deployment is Available at its desired replicas
// and the webhooks exist. Fields that istiod itself manages on the webhooks (caBundle, and the
// validating webhooks' failurePolicy once istiod flips it) are never overwritten.
package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/apierr"
	"github.com/meshwright/meshwright/internal/apply"
	"github.com/meshwright/meshwright/internal/charts"
	"github.com/meshwright/meshwright/internal/cni"
	"github.com/meshwright/meshwright/internal/gatewayapi"
	"github.com/meshwright/meshwright/internal/installed"
	"github.com/meshwright/meshwright/internal/meshspec"
	"github.com/meshwright/meshwright/internal/names"
	"github.com/meshwright/meshwright/internal/release"
	"github.com/meshwright/meshwright/internal/render"
	"github.com/meshwright/meshwright/internal/revision"
	"github.com/meshwright/meshwright/internal/stages"
)

// +kubebuilder:rbac:groups=apiextensions.k8s.io,resources=customresourcedefinitions,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=serviceaccounts;services;configmaps,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apps,resources=deployments;daemonsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterroles;clusterrolebindings;roles;rolebindings,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations;validatingwebhookconfigurations;validatingadmissionpolicies;validatingadmissionpolicybindings,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;update;patch;delete

// Stage is the ControlPlane stage.
type Stage struct {
	// Client reads from the manager's cache (unstructured objects included).
	Client  client.Client
	Applier *apply.Applier
	// Reader reads from the API server. A webhook configuration that must be written is read
	// through it first: the fields istiod owns are copied from the object as it is now, not as
	// the cache last saw it, and the write is conditional on that resourceVersion. Nil reads
	// from Client without the precondition (tests of the pure parts).
	Reader client.Reader
	// KubeVersion is the cluster's version, passed to the charts.
	KubeVersion string
	// Charts pulls the charts of versions this build does not embed (spec.controlPlane.chartSource)
	// and caches them on disk; nil installs only the embedded version.
	Charts *charts.Source
	// Workloads reads namespaces and pods (the ladder's cache): what each revision serves, so a
	// retiring revision is removed only once nothing uses it. Nil keeps every revision.
	Workloads client.Reader
	// Revisions reuses each namespace's pod revisions while no event touched its objects
	// (adoption.Observations); nil lists every pod each pass.
	Revisions RevisionMemo
	// ExternalCRDs leaves Istio's CRDs to someone else (the OLM bundle ships them; a platform
	// team may install them with Istio's base chart): the stage checks that the ones the release
	// needs are Established and serve its versions, and never writes or deletes a CRD.
	ExternalCRDs bool
	// Clock tells the time of a pass; nil is the real clock (tests give a fake one).
	Clock clock.PassiveClock

	memoMu sync.Mutex
	// memoRendered and memoStamped: the last render's objects (render memoises them, so an
	// unchanged spec gives the same pointers) and copies of them carrying their hash. Hashing
	// Istio's CRDs on every pass cost more CPU than everything else the stage does.
	memoRendered, memoStamped []*unstructured.Unstructured
}

// stamped returns the rendered objects with the hash of what the charts want stamped on them,
// computed once per render. The objects are shared: copy one before changing it.
func (s *Stage) stamped(rendered []*unstructured.Unstructured) []*unstructured.Unstructured {
	s.memoMu.Lock()
	defer s.memoMu.Unlock()
	if slices.Equal(rendered, s.memoRendered) {
		return s.memoStamped
	}
	out := make([]*unstructured.Unstructured, len(rendered))
	for i, o := range rendered {
		// Only the metadata is the copy's own (the stamp goes there); the rest, Istio's CRD
		// schemas above all, is shared with render's memo rather than held twice.
		obj := maps.Clone(o.Object)
		if m, ok := obj["metadata"].(map[string]any); ok {
			obj["metadata"] = maps.Clone(m)
		}
		out[i] = &unstructured.Unstructured{Object: obj}
		apply.StampHash(out[i])
	}
	s.memoRendered, s.memoStamped = rendered, out
	return out
}

// Name implements stages.Stage.
func (s *Stage) Name() meshv1.Stage { return meshv1.StageControlPlane }

// ConditionType implements stages.Stage.
func (s *Stage) ConditionType() string { return meshv1.ConditionControlPlaneReady }

// Input is what the charts are rendered from for an installation.
func Input(mesh *meshv1.MeshInstallation, kubeVersion string) (render.Input, error) {
	in := render.Input{
		Installation: mesh.Name,
		Version:      mesh.Spec.Version,
		Namespace:    meshspec.ControlPlaneNamespace(mesh),
		KubeVersion:  kubeVersion,
	}
	in.Version = meshspec.DesiredVersion(mesh)
	in.MultiRoot = meshspec.MultiRoot(mesh)
	if v := mesh.Spec.ControlPlane.Values; v != nil && len(v.Raw) > 0 {
		if err := json.Unmarshal(v.Raw, &in.Values); err != nil {
			return in, fmt.Errorf("spec.controlPlane.values is not a JSON object: %w", err)
		}
	}
	return in, nil
}

// Reconcile renders the charts, applies what differs, and reports readiness: the phases of
// controlPlanePhases in order, each of which may end the pass with its result.
func (s *Stage) Reconcile(ctx context.Context, mesh *meshv1.MeshInstallation) (stages.Result, error) {
	p := &planePass{mesh: mesh}
	for _, phase := range controlPlanePhases {
		res, done, err := phase(s, ctx, p)
		if done || err != nil {
			return res, err
		}
	}
	return stages.Result{}, errors.New("the control plane's phases ended without a result")
}

// controlPlanePhases are the ControlPlane stage's phases in order: render → CRDs and objects →
// revisions → their record → istiod → retire. A phase reports done with the stage's result to
// end the pass.
var controlPlanePhases = []func(*Stage, context.Context, *planePass) (stages.Result, bool, error){
	(*Stage).renderPhase,
	(*Stage).applyPhase,
	(*Stage).revisionsPhase,
	(*Stage).recordPhase,
	(*Stage).istiodPhase,
	(*Stage).cniPhase,
	(*Stage).ztunnelPhase,
	(*Stage).retirePhase,
}

// planePass is what the phases of one pass learn and hand on.
type planePass struct {
	mesh *meshv1.MeshInstallation
	in   render.Input
	// found are the revisions in the cluster and their history; objs the active revision's
	// rendered objects, istiod the name of its Deployment.
	found  installed.Found
	objs   []*unstructured.Unstructured
	istiod string
	// others are the other revisions' objects; usage what uses each revision (known is false
	// when it could not be told); revisions their status.
	others    map[string][]*unstructured.Unstructured
	usage     map[string]revision.Usage
	known     bool
	revisions []meshv1.RevisionStatus
	// cni is what is rendered of Istio CNI, and cniNeeding the enrolled namespaces whose Pod
	// Security level refuses istio-init.
	cni        cni.Decision
	cniNeeding []string
	// cniNow is what the cluster ran of Istio CNI when the pass began; cniFrozen, when set, says
	// why the CNI is left as it runs in this pass (its objects neither rendered nor pruned).
	cniNow    cni.Current
	cniFrozen string
	// ambientLabelled are the namespaces labelled into ambient mode, ambientRedirected the pods
	// Istio CNI has not released from ztunnel yet: while any is, ztunnel and the ambient profile
	// stay installed.
	ambientLabelled   []string
	ambientRedirected int
	// gatewayAPIForeign names the releases of Gateway API CRDs someone else installed.
	gatewayAPIForeign string
}

// renderPhase reads the spec and the installed revisions and renders the active revision's
// charts; it fails on values the charts refuse or render into kinds the operator does not manage.
func (s *Stage) renderPhase(ctx context.Context, p *planePass) (stages.Result, bool, error) {
	in, err := Input(p.mesh, s.KubeVersion)
	if err != nil {
		return stages.Result{State: stages.Failed, Reason: meshv1.ReasonInvalidValues, Message: err.Error()}, true, nil //nolint:nilerr // invalid input is the condition, not a retry
	}
	if p.found, err = installed.Find(ctx, s.Client, p.mesh); err != nil {
		return stages.Result{}, true, err
	}
	in.Revision = p.found.Active(p.mesh)
	in.ValidatorRevision = p.found.Validator(in.Revision)
	in.ProxyStats = proxyStats(p.found, in.Revision)
	if err := s.dataPlaneInput(ctx, p, &in); err != nil {
		return stages.Result{}, true, err
	}
	if err := s.gatewayAPIInput(ctx, p, &in); err != nil {
		return stages.Result{}, true, err
	}
	if res, done := s.loadCharts(ctx, p.mesh, &in); done {
		if res.Reason == meshv1.ReasonChartSourceUnavailable && slices.ContainsFunc(p.found.Installed, func(r revision.Installed) bool { return r.Name == in.Revision && r.Available }) {
			// The revision is installed and serves (the charts were had before; an operator
			// restart lost the cache): the mesh goes on, and the stage says what it cannot do.
			res.State, res.Degraded = stages.Ready, true
			res.Message += fmt.Sprintf(" Revision %s keeps serving as it is; changes to it wait for the charts.", in.Revision)
		}
		return res, true, nil
	}
	if res, done := s.loadCNICharts(ctx, p, &in); done {
		return res, true, nil
	}
	p.in = in
	p.objs, err = render.Render(in)
	if uv := (*render.UnsupportedVersionError)(nil); errors.As(err, &uv) {
		return stages.Result{State: stages.Failed, Reason: meshv1.ReasonUnsupportedVersion,
			Message: uv.Error() + ". Set spec.version to a supported version or leave it empty, or name a chart repository that has it in spec.controlPlane.chartSource."}, true, nil
	} else if err != nil {
		return stages.Result{State: stages.Failed, Reason: meshv1.ReasonInvalidValues, //nolint:nilerr // invalid input is the condition, not a retry
			Message: "Istio's charts do not render with spec.controlPlane.values: " + err.Error()}, true, nil
	}
	for _, o := range p.objs {
		if !owned(o.GroupVersionKind()) {
			return stages.Result{State: stages.Failed, Reason: meshv1.ReasonInvalidValues,
				Message: fmt.Sprintf("With these spec.controlPlane.values Istio's charts render a %s (%s), which this build of Meshwright does not manage; remove the value that enables it.", o.GetKind(), o.GetName())}, true, nil
		}
		if o.GetKind() == "Deployment" && o.GetLabels()[render.LabelComponent] == "istiod" && p.istiod == "" {
			p.istiod = o.GetName()
		}
	}
	return stages.Result{}, false, nil
}

// proxyStats tells whether the revision is rendered with the stats the bake reads (see
// render.Input.ProxyStats): yes for a revision not installed yet, and for one installed with
// them; no for one an earlier operator installed.
func proxyStats(found installed.Found, rev string) bool {
	i := slices.IndexFunc(found.Installed, func(r revision.Installed) bool { return r.Name == rev })
	return i < 0 || found.Installed[i].ProxyStats
}

// crdParallelism is how many CRDs are applied at once: they do not depend on each other, so
// there is no reason to wait for one before the next (as the benchmark's floor does; measured on
// two cores it did not move the stage's median time measurably, docs/benchmarks.md).
const crdParallelism = 8

// applyPhase applies what differs, CRDs first (concurrently): objects that may be of the new
// kinds wait until the CRDs are Established. With ExternalCRDs the CRDs are only checked.
func (s *Stage) applyPhase(ctx context.Context, p *planePass) (stages.Result, bool, error) {
	objs := s.stamped(p.objs)
	n := slices.IndexFunc(objs, func(o *unstructured.Unstructured) bool { return o.GetKind() != "CustomResourceDefinition" })
	if n < 0 {
		n = len(objs)
	}
	crds := make([]applyOutcome, n)
	workqueue.ParallelizeUntil(ctx, crdParallelism, n, func(i int) {
		// A panic in a worker would end the process (client-go re-raises it outside the
		// reconcile's recovery): it becomes this CRD's error instead.
		defer func() {
			if r := recover(); r != nil {
				crds[i] = applyOutcome{err: fmt.Errorf("applying %s: panic: %v", objs[i].GetName(), r)}
			}
		}()
		crds[i] = s.applyObject(ctx, objs[i])
	})
	if err := ctx.Err(); err != nil {
		return stages.Result{}, true, err // some CRDs were not looked at
	}
	var waitingCRDs, missingCRDs []string
	for _, o := range crds {
		if o.result != nil || o.err != nil {
			return o.outcome()
		}
		if o.waiting != "" {
			waitingCRDs = append(waitingCRDs, o.waiting)
		}
		if o.missing != "" {
			missingCRDs = append(missingCRDs, o.missing)
		}
	}
	if len(waitingCRDs)+len(missingCRDs) == 0 {
		for _, obj := range objs[n:] {
			if o := s.applyObject(ctx, obj); o.result != nil || o.err != nil {
				return o.outcome()
			}
		}
	}
	if len(missingCRDs) > 0 {
		// Not Failed: installing the CRDs (OLM does, with the bundle) fixes it, and the CRD
		// watch starts the next pass.
		return stages.Result{State: stages.NotReady, Reason: meshv1.ReasonIstioCRDsMissing,
			Message: fmt.Sprintf("The operator runs with --istio-crds=external, so Istio's CRDs are installed by someone else (the OLM bundle ships them), and %d that Istio %s needs are not usable: %s. "+
				"Install Istio %s's CRDs (reinstalling this operator's bundle does), or run the operator with --istio-crds=managed to let it install them.",
				len(missingCRDs), p.in.Version, names.Few(missingCRDs, 3, ", "), p.in.Version)}, true, nil
	}
	if len(waitingCRDs) > 0 {
		return stages.Result{State: stages.NotReady, Reason: meshv1.ReasonWaitingForCRDs,
			Message: fmt.Sprintf("Waiting for %d CRDs to be Established (%s).", len(waitingCRDs), names.Few(waitingCRDs, 3, ", "))}, true, nil
	}
	return stages.Result{}, false, nil
}

// applyOutcome is what applying one object came to: a CRD not Established yet (waiting) or not
// usable (missing, with ExternalCRDs), a result that ends the stage's pass, or an error.
type applyOutcome struct {
	waiting, missing string
	result           *stages.Result
	err              error
}

// outcome is applyPhase's return for an outcome that ends the pass.
func (o applyOutcome) outcome() (stages.Result, bool, error) {
	if o.err != nil {
		return stages.Result{}, true, o.err
	}
	return *o.result, true, nil
}

// applyObject makes the cluster hold one rendered object (only checks a CRD with ExternalCRDs).
// Safe to run concurrently: it reads the cache and writes only its own object.
func (s *Stage) applyObject(ctx context.Context, shared *unstructured.Unstructured) applyOutcome {
	isCRD := shared.GetKind() == "CustomResourceDefinition"
	current, err := s.current(ctx, shared)
	if err != nil {
		return applyOutcome{err: err}
	}
	if s.ExternalCRDs && isCRD {
		if problem := externalCRDProblem(shared, current); problem != "" {
			return applyOutcome{missing: shared.GetName() + " (" + problem + ")"}
		}
		return applyOutcome{}
	}
	obj := prepare(shared, current)
	if isCRD && current == nil && obj.GetLabels()[render.LabelComponent] == gatewayapi.Component {
		return s.createGatewayAPICRD(ctx, obj)
	}
	if sharesFields(obj) && (current == nil || apply.Difference(current.Object, obj.Object) != "") {
		err = s.applyKeepingIstiod(ctx, shared, obj)
	} else {
		_, err = s.Applier.Apply(ctx, obj)
	}
	if apierr.Invalid(err) {
		// Retrying the same object cannot help; a spec change (or an upgrade path for an
		// immutable field) is needed, and the message says which object refused.
		return applyOutcome{result: &stages.Result{State: stages.Failed, Reason: meshv1.ReasonApplyRejected,
			Message: fmt.Sprintf("The API server refused %s %s: %v", obj.GetKind(), obj.GetName(), err)}}
	} else if err != nil {
		return applyOutcome{err: err}
	}
	if isCRD && !established(current) {
		return applyOutcome{waiting: obj.GetName()}
	}
	return applyOutcome{}
}

// revisionsPhase prunes what the active revision no longer renders and finds the other
// revisions and what uses them.
func (s *Stage) revisionsPhase(ctx context.Context, p *planePass) (stages.Result, bool, error) {
	var err error
	if p.others, err = s.prune(ctx, p.mesh.Name, p.in.Revision, p.objs, p.cniFrozen != ""); err != nil {
		return stages.Result{}, true, err
	}
	if p.usage, p.known, err = s.usage(ctx, len(p.others) > 0); err != nil {
		return stages.Result{}, true, err
	}
	p.revisions = revisionStatuses(p.found.History, p.in.Revision, p.in.Version, p.found.Installed, p.others, p.usage)
	return stages.Result{}, false, nil
}

// istiodPhase waits for the active revision's istiod Deployment to be Available.
func (s *Stage) istiodPhase(ctx context.Context, p *planePass) (stages.Result, bool, error) {
	if p.istiod == "" {
		return stages.Result{State: stages.Failed, Reason: meshv1.ReasonInvalidValues,
			Message: "With these spec.controlPlane.values Istio's charts render no istiod Deployment."}, true, nil
	}
	dep := &unstructured.Unstructured{}
	dep.SetGroupVersionKind(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"})
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: p.in.Namespace, Name: p.istiod}, dep); err != nil {
		if apierrors.IsNotFound(err) {
			return stages.Result{State: stages.NotReady, Reason: meshv1.ReasonWaitingForIstiod, Revisions: p.revisions, Message: "Waiting for the " + p.istiod + " Deployment to be created."}, true, nil
		}
		return stages.Result{}, true, err
	}
	if ok, why := installed.DeploymentAvailable(dep); !ok {
		return stages.Result{State: stages.NotReady, Reason: meshv1.ReasonWaitingForIstiod, Revisions: p.revisions,
			Message: fmt.Sprintf("Deployment %s/%s is not Available yet: %s.", p.in.Namespace, p.istiod, why)}, true, nil
	}
	return stages.Result{}, false, nil
}

// retirePhase removes the revisions nothing uses any more (only once the active one serves: an
// abort may need them back) and reports the control plane Ready.
func (s *Stage) retirePhase(ctx context.Context, p *planePass) (stages.Result, bool, error) {
	serving, broken, err := s.retire(ctx, p.others, p.found.Installed, p.usage, p.known)
	if err != nil {
		return stages.Result{}, true, err
	}
	msg := fmt.Sprintf("Istio %s: %d objects applied, CRDs Established, istiod Available, webhooks in place.", p.in.Version, len(p.objs))
	if p.in.Revision != revision.Default {
		msg = fmt.Sprintf("Istio %s (revision %s): %d objects applied, CRDs Established, %s Available, webhooks in place.", p.in.Version, p.in.Revision, len(p.objs), p.istiod)
	}
	msg += cniMessage(p) + gatewayAPIMessage(p)
	revisions := revisionStatuses(p.found.History, p.in.Revision, p.in.Version, p.found.Installed, p.others, p.usage)
	if len(serving) == 0 {
		return stages.Result{State: stages.Ready, Reason: meshv1.ReasonControlPlaneReady, Revisions: revisions, Message: msg}, true, nil
	}
	res := stages.Result{State: stages.Ready, Reason: meshv1.ReasonRevisionRetiring, Revisions: revisions,
		Message: msg + " Retiring once unused: " + strings.Join(serving, "; ") + "."}
	if len(broken) > 0 {
		// Only the active revision is applied: a retiring one that lost its istiod is not
		// rebuilt, and its namespaces cannot start pods until they move.
		res.Degraded = true
		res.Message += fmt.Sprintf(" The istiod of revision %s is missing or not Available, so pods of the namespaces it still serves cannot be created: set spec.version back to its version to reinstall it, or let the ladder move them.", strings.Join(broken, ", "))
	}
	return res, true, nil
}

// ChartsFor returns the charts of version for mesh: nil for the charts this build embeds (render
// uses them whenever they are the version asked for: no download), else those of
// spec.controlPlane.chartSource, pulled through src (a Source without a cache directory when nil).
func ChartsFor(ctx context.Context, src *charts.Source, mesh *meshv1.MeshInstallation, version string) (*charts.Set, error) {
	cs := mesh.Spec.ControlPlane.ChartSource
	if cs == nil || cs.Repository == "" || slices.Contains(render.SupportedVersions(), version) {
		return nil, nil
	}
	if src == nil {
		src = &charts.Source{}
	}
	return src.Load(ctx, cs.Repository, version)
}

// loadCharts puts the charts of in.Version into in: the embedded ones, or those of
// spec.controlPlane.chartSource. done is true when they cannot be had, with the result to report.
func (s *Stage) loadCharts(ctx context.Context, mesh *meshv1.MeshInstallation, in *render.Input) (res stages.Result, done bool) {
	set, err := ChartsFor(ctx, s.Charts, mesh, in.Version)
	repo := ""
	if cs := mesh.Spec.ControlPlane.ChartSource; cs != nil {
		repo = cs.Repository
	}
	var notFound *charts.NotFoundError
	switch {
	case errors.As(err, &notFound):
		return stages.Result{State: stages.Failed, Reason: meshv1.ReasonUnsupportedVersion,
			Message: notFound.Error() + ". Set spec.version to a version spec.controlPlane.chartSource has, or leave it empty for " + release.DefaultIstioVersion + "."}, true
	case err != nil:
		return stages.Result{State: stages.NotReady, Reason: meshv1.ReasonChartSourceUnavailable, RequeueAfter: stages.NotReadyRecheck,
			Message: fmt.Sprintf("The charts of Istio %s could not be downloaded from %s: %v. The running control plane is untouched; retrying every %s.", in.Version, repo, err, stages.NotReadyRecheck)}, true
	}
	in.Charts = set
	return stages.Result{}, false
}

// prune deletes objects an earlier render of this installation produced and the current one
// does not (an HPA once autoscaling is turned off, say). The inventory is the cluster itself:
// every chart object carries the installation and component labels, and the cache holds
// exactly the labelled objects. CRDs are never pruned: deleting one deletes users' policies.
//
// The istiod chart's objects of other revisions than active are not pruned: they are returned,
// by revision, for retire, which removes a revision once nothing uses it.
func (s *Stage) prune(ctx context.Context, installation, active string, desired []*unstructured.Unstructured, keepNodeAgents bool) (map[string][]*unstructured.Unstructured, error) {
	want := make(map[string]bool, len(desired))
	for _, o := range desired {
		want[objectKey(o)] = true
	}
	others := map[string][]*unstructured.Unstructured{}
	for _, gvk := range OwnedKinds() {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := s.Client.List(ctx, list, client.MatchingLabels{meshv1.LabelInstallation: installation}, client.HasLabels{render.LabelComponent}); err != nil {
			return nil, fmt.Errorf("listing %s to prune: %w", gvk.Kind, err)
		}
		for i := range list.Items {
			o := &list.Items[i]
			o.SetGroupVersionKind(gvk)
			// The revision history is the operator's own record, not rendered: never pruned.
			if want[objectKey(o)] || o.GetDeletionTimestamp() != nil || o.GetLabels()[render.LabelComponent] == installed.RecordComponent ||
				keepNodeAgents && render.NodeAgent(o.GetLabels()[render.LabelComponent]) || ofGateway(o) {
				continue
			}
			if rev := installed.RevisionOf(o); o.GetLabels()[render.LabelComponent] == render.ComponentIstiod && rev != active {
				others[rev] = append(others[rev], o)
				continue
			}
			if err := s.Client.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
				return nil, fmt.Errorf("pruning %s %s/%s: %w", gvk.Kind, o.GetNamespace(), o.GetName(), err)
			}
		}
	}
	return others, nil
}

// ofGateway tells what istiod made for a Gateway (a waypoint's Deployment and Service): owned by
// the Gateway, it may carry the Gateway's labels, the operator's among them, but it is istiod's,
// never the chart's to prune.
func ofGateway(o *unstructured.Unstructured) bool {
	return slices.ContainsFunc(o.GetOwnerReferences(), func(r metav1.OwnerReference) bool {
		return r.Kind == "Gateway" && strings.HasPrefix(r.APIVersion, gatewayapi.Group+"/")
	})
}

func objectKey(o *unstructured.Unstructured) string {
	return o.GetKind() + "/" + o.GetNamespace() + "/" + o.GetName()
}

// current reads the object as the cache has it; nil when it does not exist. It is only read
// (keepForeignFields copies strings out of it), so the cache's own copy does.
func (s *Stage) current(ctx context.Context, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	return getOrNil(ctx, s.Client, obj, client.UnsafeDisableDeepCopy)
}

// sharesFields tells the kinds whose objects hold fields istiod writes (see keepForeignFields).
func sharesFields(obj *unstructured.Unstructured) bool {
	kind := obj.GetKind()
	return kind == "MutatingWebhookConfiguration" || kind == "ValidatingWebhookConfiguration"
}

// applyKeepingIstiod writes a webhook configuration that differs from the cache's copy. The
// cache may not hold istiod's latest patch yet (or the object at all, just created), so it is
// prepared again from the object as the API server has it and written only over that version;
// when istiod writes in between, the conflict is met by reading again (three tries), not by a
// failed pass. prepared is the object prepared from the cache, for a Stage without Reader.
func (s *Stage) applyKeepingIstiod(ctx context.Context, stamped, prepared *unstructured.Unstructured) error {
	if s.Reader == nil {
		_, err := s.Applier.Apply(ctx, prepared)
		return err
	}
	for attempt := 1; ; attempt++ {
		fresh, err := getOrNil(ctx, s.Reader, stamped)
		if err != nil {
			return err
		}
		obj := prepare(stamped, fresh)
		if fresh != nil {
			if apply.Difference(fresh.Object, obj.Object) == "" {
				return nil // the cache was behind: nothing to write
			}
			// Written only over the version read: a newer one (istiod's) is a conflict.
			obj.SetResourceVersion(fresh.GetResourceVersion())
		}
		_, err = s.Applier.Apply(ctx, obj)
		if !apierrors.IsConflict(err) || attempt == 3 {
			return err
		}
	}
}

// getOrNil reads obj's object through r; nil when it does not exist.
func getOrNil(ctx context.Context, r client.Reader, obj *unstructured.Unstructured, opts ...client.GetOption) (*unstructured.Unstructured, error) {
	out := &unstructured.Unstructured{}
	out.SetGroupVersionKind(obj.GroupVersionKind())
	if err := r.Get(ctx, client.ObjectKeyFromObject(obj), out, opts...); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading %s %s: %w", obj.GetKind(), obj.GetName(), err)
	}
	return out, nil
}

// prepare returns what to apply for a rendered object already stamped with its hash (see
// stamped): the shared object itself, or for a webhook configuration a copy holding the fields
// istiod owns, copied from current. The hash was taken without them, so istiod rotating its
// caBundle is no reason to apply again.
func prepare(stamped, current *unstructured.Unstructured) *unstructured.Unstructured {
	if !sharesFields(stamped) {
		return stamped
	}
	out := stamped.DeepCopy()
	keepForeignFields(out, current)
	return out
}

// keepForeignFields copies into desired the webhook fields istiod manages, from the object in
// the cluster: its caBundle, and for validating webhooks the failurePolicy it raises to Fail
// once it serves. Applying them unchanged keeps the operator from fighting istiod.
func keepForeignFields(desired, current *unstructured.Unstructured) {
	kind := desired.GetKind()
	if current == nil || !sharesFields(desired) {
		return
	}
	have, _, _ := unstructured.NestedSlice(current.Object, "webhooks")
	byName := map[string]map[string]any{}
	for _, h := range have {
		if m, ok := h.(map[string]any); ok {
			name, _ := m["name"].(string)
			byName[name] = m
		}
	}
	want, _, _ := unstructured.NestedSlice(desired.Object, "webhooks")
	for i, w := range want {
		wm, ok := w.(map[string]any)
		if !ok {
			continue
		}
		name, _ := wm["name"].(string)
		hm, ok := byName[name]
		if !ok {
			continue
		}
		if bundle, found, _ := unstructured.NestedString(hm, "clientConfig", "caBundle"); found && bundle != "" {
			_ = unstructured.SetNestedField(wm, bundle, "clientConfig", "caBundle")
		}
		if kind == "ValidatingWebhookConfiguration" {
			if fp, ok := hm["failurePolicy"]; ok {
				wm["failurePolicy"] = fp
			}
		}
		want[i] = wm
	}
	_ = unstructured.SetNestedSlice(desired.Object, want, "webhooks")
}

// externalCRDProblem says why a CRD installed by someone else cannot serve what the charts
// need: it is missing, not Established, or does not serve one of the versions the rendered
// CRD serves. Empty when it is usable.
func externalCRDProblem(want, current *unstructured.Unstructured) string {
	if current == nil {
		return "not installed"
	}
	if !established(current) {
		return "not Established"
	}
	have := installed.ServedVersions(current)
	var lacking []string
	for _, v := range installed.ServedVersions(want) {
		if !slices.Contains(have, v) {
			lacking = append(lacking, v)
		}
	}
	if len(lacking) > 0 {
		return "does not serve " + strings.Join(lacking, ", ")
	}
	return ""
}

func established(crd *unstructured.Unstructured) bool {
	if crd == nil {
		return false
	}
	return installed.ConditionTrue(crd, "Established")
}

// Cleanup deletes what the charts created, found by the installation's labels (not by
// rendering again: the spec may no longer render), webhooks first and CRDs last. Istio's CRDs
// are kept, released from the operator's labels, unless spec.controlPlane.removeCRDsOnDelete is
// set: deleting a CRD deletes every user's policy of that kind. With ExternalCRDs they are not
// the operator's to touch at all.
func (s *Stage) Cleanup(ctx context.Context, mesh *meshv1.MeshInstallation) (bool, error) {
	if wait, err := s.drainAmbient(ctx, mesh); wait || err != nil {
		return false, err
	}
	kinds := OwnedKinds()
	// Webhooks first, so nothing calls into an istiod that is going away.
	slices.Reverse(kinds)
	if s.ExternalCRDs {
		if mesh.Spec.ControlPlane.RemoveCRDsOnDelete {
			log.FromContext(ctx).Info("spec.controlPlane.removeCRDsOnDelete is ignored: Istio's CRDs are installed by someone else (--istio-crds=external)")
		}
	} else {
		kinds = append(kinds, apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinition"))
	}
	deleteGatewayAPI := false
	if mesh.Spec.ControlPlane.RemoveCRDsOnDelete && !s.ExternalCRDs {
		var err error
		if deleteGatewayAPI, err = s.keepsGatewayAPI(ctx, mesh.Name); err != nil {
			return false, err
		}
	}
	remaining := 0
	var left []string
	for _, gvk := range kinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := s.Client.List(ctx, list, client.MatchingLabels{meshv1.LabelInstallation: mesh.Name}, client.HasLabels{render.LabelComponent}); err != nil {
			return false, fmt.Errorf("listing %s to remove: %w", gvk.Kind, err)
		}
		for i := range list.Items {
			cur := &list.Items[i]
			cur.SetGroupVersionKind(gvk)
			gatewayAPI := cur.GetLabels()[render.LabelComponent] == gatewayapi.Component
			if gvk.Kind == "CustomResourceDefinition" && (!mesh.Spec.ControlPlane.RemoveCRDsOnDelete || gatewayAPI && !deleteGatewayAPI) {
				// Kept, and handed over: without the operator's labels nothing marks it as ours.
				if err := apply.Release(ctx, s.Client, cur, meshv1.LabelManagedBy, meshv1.LabelInstallation, render.LabelComponent); err != nil {
					return false, err
				}
				continue
			}
			remaining++
			left = append(left, gvk.Kind+"/"+cur.GetName())
			if ts := cur.GetDeletionTimestamp(); ts != nil {
				if gvk.Kind == "CustomResourceDefinition" {
					if err := nudgeStuckCRD(ctx, s.Client, s.Applier.FieldManager, cur, ts.Time, s.now()); err != nil {
						return false, err
					}
				}
				continue
			}
			if err := s.Client.Delete(ctx, cur); err != nil && !apierrors.IsNotFound(err) {
				return false, fmt.Errorf("deleting %s %s: %w", gvk.Kind, cur.GetName(), err)
			}
		}
	}
	if remaining > 0 {
		log.FromContext(ctx).Info("control-plane objects still going away", "remaining", remaining, "first", names.Few(left, 3, ", "))
		return false, nil
	}
	return true, s.releaseCNINamespace(ctx, mesh.Name)
}

// AnnotationRemovalNudge records when the operator last touched a CRD that the API server had
// not finished removing.
const AnnotationRemovalNudge = "meshwright.io/removal-nudged-at"

// crdRemovalPatience is how long a CRD may stay terminating before the operator touches it.
const crdRemovalPatience = 20 * time.Second

// nudgeStuckCRD touches (annotates) a CRD that has been terminating for longer than
// crdRemovalPatience, at most once per crdRemovalPatience. The API server's CRD finalizer, which
// deletes the CRD's objects and then removes its customresourcecleanup finalizer, backs off
// exponentially after errors (minutes on a loaded API server); an update event puts the CRD back
// at the front of its queue. The update changes nothing else.
func nudgeStuckCRD(ctx context.Context, c client.Client, fieldManager string, crd *unstructured.Unstructured, deleted, now time.Time) error {
	if !needsNudge(crd.GetFinalizers(), crd.GetAnnotations(), deleted, now) {
		return nil
	}
	log.FromContext(ctx).Info("the API server has not finished removing a CRD; touching it so its CRD finalizer looks again",
		"crd", crd.GetName(), "terminatingFor", now.Sub(deleted).Round(time.Second).String())
	patch := client.RawPatch(types.MergePatchType, []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, AnnotationRemovalNudge, now.UTC().Format(time.RFC3339))))
	if err := c.Patch(ctx, crd, patch, client.FieldOwner(fieldManager)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("touching the terminating CRD %s: %w", crd.GetName(), err)
	}
	return nil
}

// needsNudge: the CRD has been terminating for crdRemovalPatience with the API server's
// clean-up finalizer still on it, and was not touched within crdRemovalPatience.
func needsNudge(finalizers []string, annotations map[string]string, deleted, now time.Time) bool {
	if now.Sub(deleted) < crdRemovalPatience || !slices.Contains(finalizers, "customresourcecleanup.apiextensions.k8s.io") {
		return false
	}
	last, err := time.Parse(time.RFC3339, annotations[AnnotationRemovalNudge])
	return err != nil || now.Sub(last) >= crdRemovalPatience
}

// OwnedKinds are the kinds the charts render, which the controller watches (by label) so that
// an edited or deleted object is restored.
func OwnedKinds() []schema.GroupVersionKind {
	return []schema.GroupVersionKind{
		{Group: "", Version: "v1", Kind: "ServiceAccount"},
		{Group: "", Version: "v1", Kind: "ConfigMap"},
		{Group: "", Version: "v1", Kind: "Service"},
		{Group: "apps", Version: "v1", Kind: "Deployment"},
		{Group: "apps", Version: "v1", Kind: "DaemonSet"},
		{Group: "autoscaling", Version: "v2", Kind: "HorizontalPodAutoscaler"},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRoleBinding"},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "Role"},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "RoleBinding"},
		{Group: "policy", Version: "v1", Kind: "PodDisruptionBudget"},
		{Group: "networking.k8s.io", Version: "v1", Kind: "NetworkPolicy"},
		{Group: "admissionregistration.k8s.io", Version: "v1", Kind: "ValidatingAdmissionPolicy"},
		{Group: "admissionregistration.k8s.io", Version: "v1", Kind: "ValidatingAdmissionPolicyBinding"},
		{Group: "admissionregistration.k8s.io", Version: "v1", Kind: "MutatingWebhookConfiguration"},
		{Group: "admissionregistration.k8s.io", Version: "v1", Kind: "ValidatingWebhookConfiguration"},
	}
}

// owned reports whether the stage may manage objects of this kind (it has RBAC for it and
// watches it); CRDs are handled on their own.
func owned(gvk schema.GroupVersionKind) bool {
	for _, k := range OwnedKinds() {
		if k.Group == gvk.Group && k.Kind == gvk.Kind {
			return true
		}
	}
	// A component's own namespace (Istio CNI's) is applied, never pruned: handed back instead.
	return gvk.Kind == "CustomResourceDefinition" || gvk.Group == "" && gvk.Kind == "Namespace"
}

func (s *Stage) now() time.Time { return stages.Now(s.Clock) }
