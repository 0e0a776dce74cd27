// Package stages runs the rollout as an ordered list of gated stages. Each stage reports Ready,
// NotReady or Failed; the engine stops at the first stage that is not Ready, so nothing past an
// unhealthy stage is ever touched. Adding a stage means writing one type that implements Stage
// and listing it where the controller builds its stages.
package stages

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/clock"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/metrics"
)

// State is how far a stage got in a pass.
type State int

const (
	// NotReady means the stage is working towards its goal (objects applied, waiting for them);
	// the rollout waits and looks again.
	NotReady State = iota
	// Ready means the stage reached its goal and the next stage may run.
	Ready
	// Failed means the stage cannot progress until the spec or the cluster changes (a missing
	// dependency, an unsupported version). The rollout stops here and says why.
	Failed
)

// Result is one stage's report, written into its condition.
type Result struct {
	State   State
	Reason  string
	Message string
	// RequeueAfter asks the engine to look again after this long, for things no watch reports
	// (certificate expiry, a dependency that may be installed later). Zero means watches suffice.
	RequeueAfter time.Duration
	// Degraded marks a Ready stage that needs attention (a CA close to expiry); it becomes the
	// Degraded condition with this result's reason and message.
	Degraded bool
	// Namespaces, when set, is the adoption ladder's summary for status.namespaces.
	Namespaces *meshv1.NamespacesStatus
	// Revisions, when set, is the ControlPlane stage's report for status.revisions.
	Revisions []meshv1.RevisionStatus
	// Certificates, when set, is the Certificates stage's report for status.certificates.
	Certificates *meshv1.CertificatesStatus
	// DataPlane, when set, is the Injection stage's report for status.dataPlane.
	DataPlane *meshv1.DataPlaneStatus
}

// Report writes the parts of status a result reports. It is the one way a stage's observations
// reach status: the controller's status computation calls it, and Run calls it on its working
// copy so that a later stage of the same pass sees what an earlier one found (the ControlPlane
// stage renders istiod for a root rotation the Certificates stage just started).
func (r Result) Report(status *meshv1.MeshInstallationStatus) {
	if r.Namespaces != nil {
		status.Namespaces = r.Namespaces.DeepCopy()
	}
	if r.Revisions != nil {
		status.Revisions = slices.Clone(r.Revisions)
	}
	if r.Certificates != nil {
		status.Certificates = r.Certificates.DeepCopy()
	}
	if r.DataPlane != nil {
		status.DataPlane = r.DataPlane.DeepCopy()
	}
}

// NotReadyRecheck is how soon a stage that is working is looked at again when it named no
// delay of its own.
const NotReadyRecheck = 30 * time.Second

// Stage is one step of the rollout.
type Stage interface {
	// Name is what status.stage shows while this stage is in progress.
	Name() meshv1.Stage
	// ConditionType is the condition that reports this stage.
	ConditionType() string
	// Reconcile moves the cluster towards the stage's goal and reports how far it got. An error
	// is an API failure that is expected to pass; the engine stops and the pass is retried.
	Reconcile(ctx context.Context, mesh *meshv1.MeshInstallation) (Result, error)
}

// Cleaner is a stage that removes what it created when the MeshInstallation is deleted.
// Stages are cleaned up in reverse order; Cleanup returns done=false while objects are still
// going away, and is called again.
type Cleaner interface {
	Cleanup(ctx context.Context, mesh *meshv1.MeshInstallation) (done bool, err error)
}

// Cleanup runs the cleaners of the stages in reverse order, stopping at the first one that is
// not done, so later stages are removed before the ones they depend on.
func Cleanup(ctx context.Context, stages []Stage, mesh *meshv1.MeshInstallation) (bool, error) {
	for i := len(stages) - 1; i >= 0; i-- {
		c, ok := stages[i].(Cleaner)
		if !ok {
			continue
		}
		done, err := c.Cleanup(ctx, mesh)
		if err != nil || !done {
			return false, err
		}
	}
	return true, nil
}

// Outcome is what one run of the engine found, stage by stage.
type Outcome struct {
	// Ran holds the result of each stage that ran, in order; stages after the first one that was
	// not Ready did not run.
	Ran []Ran
	// Current is the first stage that is not Ready, or StageComplete.
	Current meshv1.Stage
	// RequeueAfter is the soonest any stage asked to be looked at again.
	RequeueAfter time.Duration
	// Err is the API error that stopped the run, if any.
	Err error
}

// Ran pairs a stage with its result.
type Ran struct {
	Stage  Stage
	Result Result
}

// Run runs the stages in order and stops at the first that is not Ready or returns an error.
// The stages get a working copy of mesh, whose status holds what the pass has found so far
// (Result.Report); mesh itself is not changed.
func Run(ctx context.Context, stages []Stage, mesh *meshv1.MeshInstallation) Outcome {
	out := Outcome{Current: meshv1.StageComplete}
	mesh = mesh.DeepCopy()
	for _, s := range stages {
		started := time.Now()
		res, err := s.Reconcile(ctx, mesh)
		metrics.ObserveStage(s.Name(), time.Since(started))
		if apierrors.IsForbidden(err) {
			// Retrying at the controller's backoff cannot help and would say nothing: the
			// stage reports the refusal and is looked at again, as for any stage that waits,
			// in case the permission is granted (RBAC changes are not watched).
			res, err = forbidden(err), nil
		}
		if err != nil {
			out.Current = s.Name()
			out.Err = err
			return out
		}
		if res.State == NotReady && res.RequeueAfter == 0 {
			// Watches usually report progress first; this bounds the wait if one is missed.
			res.RequeueAfter = NotReadyRecheck
		}
		out.Ran = append(out.Ran, Ran{Stage: s, Result: res})
		res.Report(&mesh.Status)
		if res.RequeueAfter > 0 && (out.RequeueAfter == 0 || res.RequeueAfter < out.RequeueAfter) {
			out.RequeueAfter = res.RequeueAfter
		}
		if res.State != Ready {
			out.Current = s.Name()
			return out
		}
	}
	return out
}

// notHeld is how the API server refuses a Role or ClusterRole that grants permissions its
// writer does not hold (Kubernetes' RBAC escalation check).
const notHeld = "attempting to grant RBAC permissions not currently held"

// forbidden is the result of a stage the API server refused a request. 403 is also what an
// admission webhook, a quota or a terminating namespace answers; only an authorizer's refusal
// ("cannot <verb> resource ...") is a missing permission.
func forbidden(err error) Result {
	msg := err.Error()
	if strings.Contains(msg, notHeld) {
		// A role rendered from the charts grants what the operator does not hold: it has no
		// escalate, so it may grant only its own permissions (package chartrbac).
		msg = fmt.Sprintf("The API server refused the operator a role Istio's charts render: %s. "+
			"The operator holds what the charts' roles grant under their defaults, and no more (it has no escalate or bind: docs/security.md); "+
			"spec.controlPlane.values that turn on more (a node taint controller, ClusterTrustBundles, Kubernetes-signed certificates) need a cluster admin to bind a ClusterRole with the rules above to the operator's ServiceAccount, or the values removed. The stage is retried every %s.",
			strings.Join(strings.Fields(msg), " "), NotReadyRecheck)
	} else if strings.Contains(msg, " cannot ") && strings.Contains(msg, "resource") {
		msg = fmt.Sprintf("The API server refused the operator a request this stage needs: %s. "+
			"Grant the operator's ServiceAccount that permission (the ClusterRole shipped with the Helm chart, config/default and the OLM bundle has every permission the operator uses); the stage is retried every %s.",
			msg, NotReadyRecheck)
	} else {
		msg = fmt.Sprintf("The API server refused a request this stage needs: %s. An admission webhook or policy, a quota, or a namespace being deleted answers so: the message says which; the stage is retried every %s.",
			msg, NotReadyRecheck)
	}
	return Result{State: NotReady, Reason: meshv1.ReasonForbidden, RequeueAfter: NotReadyRecheck, Message: msg}
}

// ResultOf returns the result of the stage reported by conditionType, if it ran.
func (o Outcome) ResultOf(conditionType string) (Result, bool) {
	for _, r := range o.Ran {
		if r.Stage.ConditionType() == conditionType {
			return r.Result, true
		}
	}
	return Result{}, false
}

// Now is the time on a stage's clock: the real clock when the stage was given none (tests give
// a fake one).
func Now(c clock.PassiveClock) time.Time {
	if c == nil {
		c = clock.RealClock{}
	}
	return c.Now()
}
