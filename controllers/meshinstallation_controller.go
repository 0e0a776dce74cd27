// Package controllers holds the reconcilers: thin loops that load a MeshInstallation, run the
// rollout logic from internal/, and write what they found into its status once per pass.
package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/arbiter"
)

// FieldManager is the one field manager the operator writes with, so server-side apply can tell
// its fields from those of istiod, HPAs and users.
const FieldManager = "meshwright"

// MeshInstallationReconciler turns a MeshInstallation into a staged rollout and reports it.
type MeshInstallationReconciler struct {
	client.Client
	// Recorder emits an Event on every condition transition, for `kubectl describe`.
	Recorder recorder.EventRecorder
}

// +kubebuilder:rbac:groups=meshwright.io,resources=meshinstallations,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=meshwright.io,resources=meshinstallations/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=meshwright.io,resources=meshinstallations/finalizers,verbs=update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile runs one pass for one MeshInstallation: load it, hold it with a finalizer, decide
// whether it is the active installation, run the stages, and write status once at the end.
func (r *MeshInstallationReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, retErr error) {
	mesh := &meshv1.MeshInstallation{}
	if err := r.Get(ctx, req.NamespacedName, mesh); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}

	if !mesh.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, mesh)
	}
	if !controllerutil.ContainsFinalizer(mesh, meshv1.Finalizer) {
		// The finalizer goes on before anything is created, so nothing can be orphaned.
		patch := client.MergeFrom(mesh.DeepCopy())
		controllerutil.AddFinalizer(mesh, meshv1.Finalizer)
		if err := r.Patch(ctx, mesh, patch); err != nil {
			return handleError(ctx, fmt.Errorf("adding finalizer: %w", err))
		}
	}

	before := mesh.DeepCopy()
	obs := observation{generation: mesh.Generation, now: metav1.Now()}
	defer func() {
		obs.err = retErr
		if err := r.writeStatus(ctx, before, mesh, obs); err != nil && retErr == nil {
			res, retErr = handleError(ctx, fmt.Errorf("writing status: %w", err))
		}
	}()

	all := &meshv1.MeshInstallationList{}
	if err := r.List(ctx, all); err != nil {
		return handleError(ctx, fmt.Errorf("listing MeshInstallations: %w", err))
	}
	obs.activeName = arbiter.Active(all.Items)
	if obs.activeName != mesh.Name {
		// Not ours to act on; status says why and the watch on MeshInstallations brings us
		// back when the active one goes away.
		return ctrl.Result{}, nil
	}
	obs.active = true
	obs.version = desiredVersion(mesh)
	return ctrl.Result{}, nil
}

// reconcileDelete removes what the MeshInstallation created, then releases the finalizer.
// Nothing is created yet at this stage of the project, so only the finalizer goes.
func (r *MeshInstallationReconciler) reconcileDelete(ctx context.Context, mesh *meshv1.MeshInstallation) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(mesh, meshv1.Finalizer) {
		return ctrl.Result{}, nil
	}
	patch := client.MergeFrom(mesh.DeepCopy())
	controllerutil.RemoveFinalizer(mesh, meshv1.Finalizer)
	if err := r.Patch(ctx, mesh, patch); err != nil {
		return handleError(ctx, fmt.Errorf("removing finalizer: %w", err))
	}
	return ctrl.Result{}, nil
}

// writeStatus computes the new status from what the pass observed and patches it only when it
// differs from what was read, so a pass that changed nothing makes no write.
func (r *MeshInstallationReconciler) writeStatus(ctx context.Context, before, mesh *meshv1.MeshInstallation, obs observation) error {
	computeStatus(&mesh.Status, obs)
	if equality.Semantic.DeepEqual(before.Status, mesh.Status) {
		return nil
	}
	r.recordTransitions(before, mesh)
	if err := r.Status().Patch(ctx, mesh, client.MergeFrom(before)); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// recordTransitions emits one Event per condition whose status or reason changed.
func (r *MeshInstallationReconciler) recordTransitions(before, after *meshv1.MeshInstallation) {
	if r.Recorder == nil {
		return
	}
	for _, c := range after.Status.Conditions {
		old := meta.FindStatusCondition(before.Status.Conditions, c.Type)
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

// SetupWithManager registers the reconciler and what it watches.
func (r *MeshInstallationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("meshinstallation").
		Watches(&meshv1.MeshInstallation{}, handler.EnqueueRequestsFromMapFunc(r.requeueMeshes)).
		Complete(r)
}

// conflictRetry is how soon a pass that hit an optimistic-lock conflict runs again.
const conflictRetry = 200 * time.Millisecond
