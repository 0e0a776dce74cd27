package apierr

import (
	"errors"
	"fmt"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestClassify(t *testing.T) {
	gr := schema.GroupResource{Group: "security.istio.io", Resource: "peerauthentications"}
	tests := map[string]struct {
		err                                            error
		refused, invalid, unavailable, webhook, absent bool
	}{
		"nil":       {err: nil},
		"plain":     {err: errors.New("connection reset")},
		"invalid":   {err: apierrors.NewInvalid(schema.GroupKind{Kind: "Pod"}, "p", nil), refused: true, invalid: true},
		"bad":       {err: apierrors.NewBadRequest("no"), refused: true, invalid: true},
		"forbidden": {err: apierrors.NewForbidden(gr, "x", errors.New("RBAC")), refused: true},
		"405":       {err: apierrors.NewMethodNotSupported(gr, "patch"), refused: true},
		"internal":  {err: apierrors.NewInternalError(errors.New("boom")), unavailable: true},
		"timeout":   {err: apierrors.NewTimeoutError("slow", 1), unavailable: true},
		"webhook failed, wrapped": {err: fmt.Errorf("creating: %w", apierrors.NewInternalError(errors.New(`failed calling webhook "sidecar-injector.istio.io": connection refused`))),
			unavailable: true, webhook: true},
		"not found": {err: apierrors.NewNotFound(gr, "x"), absent: true},
		"no match":  {err: &meta.NoKindMatchError{GroupKind: schema.GroupKind{Group: gr.Group, Kind: "PeerAuthentication"}}, absent: true},
		"conflict":  {err: apierrors.NewConflict(gr, "x", errors.New("stale"))},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := [5]bool{Refused(tc.err), Invalid(tc.err), Unavailable(tc.err), WebhookFailure(tc.err), Absent(tc.err)}
			want := [5]bool{tc.refused, tc.invalid, tc.unavailable, tc.webhook, tc.absent}
			if got != want {
				t.Errorf("Refused, Invalid, Unavailable, WebhookFailure, Absent = %v, want %v", got, want)
			}
		})
	}
}
