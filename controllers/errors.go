package controllers

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/meshwright/meshwright/internal/apierr"
)

// handleError is the one place that decides what an error in a pass means:
//   - an optimistic-lock conflict is routine (someone else wrote first): requeue soon, log quietly;
//   - input the API server calls invalid will not pass on retry: a terminal error, no hot loop;
//   - anything else is returned for the controller's exponential backoff.
func handleError(ctx context.Context, err error) (ctrl.Result, error) {
	switch {
	case err == nil:
		return ctrl.Result{}, nil
	case apierrors.IsConflict(err):
		log.FromContext(ctx).V(1).Info("conflict, requeueing", "error", err.Error())
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	case apierr.Invalid(err):
		return ctrl.Result{}, reconcile.TerminalError(err)
	default:
		return ctrl.Result{}, err
	}
}
