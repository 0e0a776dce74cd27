// Package apierr classifies the API server's errors once for the whole operator, so the
// controller's error policy, the stages and the plugin agree on what an error means: retry soon,
// back off, report and wait, or give up on this input.
package apierr

import (
	"errors"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
)

// Refused reports an error that retrying the same request cannot fix: the input is invalid, the
// request malformed or not supported, or the caller lacks the permission.
func Refused(err error) bool {
	return Invalid(err) || apierrors.IsForbidden(err) || apierrors.IsMethodNotSupported(err)
}

// Invalid reports input the API server calls invalid or a bad request: the controller treats it
// as terminal rather than retrying it in a hot loop.
func Invalid(err error) bool {
	return apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)
}

// Unavailable reports a server that could not answer (an internal error, a timeout, or an
// admission webhook it failed to call): the request may pass later unchanged.
func Unavailable(err error) bool {
	return apierrors.IsInternalError(err) || apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err) || WebhookFailure(err)
}

// WebhookFailure reports a request the API server could not complete because calling an
// admission webhook failed.
func WebhookFailure(err error) bool {
	var status apierrors.APIStatus
	return errors.As(err, &status) && strings.Contains(status.Status().Message, "failed calling webhook")
}

// Absent reports that the kind is not served (its CRD is not installed) or the object is not
// there: nothing to read or remove.
func Absent(err error) bool {
	return meta.IsNoMatchError(err) || apierrors.IsNotFound(err)
}
