package controllers

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/stages"
)

// observation is what one pass found. The status is a pure function of it, so the same cluster
// state always gives the same status and a pass that found nothing new writes nothing.
type observation struct {
	generation int64
	now        metav1.Time
	// activeName is the MeshInstallation that manages the mesh; empty if the pass stopped early.
	activeName string
	// active is true when this installation is the active one and the pass got to run its stages.
	active  bool
	version string
	// stageTypes are the condition types of the stages, in order.
	stageTypes []string
	// outcome is what the stage engine found.
	outcome stages.Outcome
	// err is the error the pass ended with, if any.
	err error
}

// conflicting is true when another installation manages the mesh.
func (o observation) conflicting() bool { return !o.active && o.activeName != "" }

// computeStatus rewrites status from an observation. Conditions keep their lastTransitionTime
// unless their status changes, so recomputing an unchanged state is a no-op.
func computeStatus(status *meshv1.MeshInstallationStatus, obs observation) {
	for _, t := range obs.stageTypes {
		if c, ok := determineStageCondition(t, obs); ok {
			setCondition(status, obs, c)
		}
	}
	setCondition(status, obs, determineReadyCondition(obs))
	setCondition(status, obs, determineProgressingCondition(obs))
	if obs.err == nil || obs.conflicting() {
		// After a failed pass nothing new is known about degradation: keep what was reported.
		setCondition(status, obs, determineDegradedCondition(obs))
	}
	switch {
	case obs.active:
		status.Version = obs.version
		status.Stage = obs.outcome.Current
		for _, ran := range obs.outcome.Ran {
			ran.Result.Report(status)
		}
	case obs.conflicting():
		status.Version, status.Stage, status.Certificates = "", "", nil
		status.Namespaces, status.Revisions, status.DataPlane = nil, nil, nil
	}
	// observedGeneration moves only when a pass of the active installation succeeded, so it
	// tells users that what status says is about the spec they wrote.
	if obs.active && obs.err == nil {
		status.ObservedGeneration = obs.generation
	}
}

// keepTransitionTimes gives each condition of status whose status is the one written (written)
// the time written with it: a pass computed on top of a held status (resumeHeld) must not date a
// condition that is back where it was written.
func keepTransitionTimes(written, status *meshv1.MeshInstallationStatus) {
	for i := range status.Conditions {
		c := &status.Conditions[i]
		if w := meta.FindStatusCondition(written.Conditions, c.Type); w != nil && w.Status == c.Status {
			c.LastTransitionTime = w.LastTransitionTime
		}
	}
}

func setCondition(status *meshv1.MeshInstallationStatus, obs observation, c metav1.Condition) {
	c.ObservedGeneration = obs.generation
	c.LastTransitionTime = obs.now
	meta.SetStatusCondition(&status.Conditions, c)
}

// determineStageCondition reports one stage: its own result if it ran, waiting if an earlier
// stage held it back. ok is false when the condition should keep its previous value (the pass
// failed on an API error in or before this stage, so nothing new is known about it).
func determineStageCondition(conditionType string, obs observation) (metav1.Condition, bool) {
	c := metav1.Condition{Type: conditionType}
	if obs.conflicting() {
		c.Status, c.Reason = metav1.ConditionUnknown, meshv1.ReasonConflict
		c.Message = fmt.Sprintf("Not acted on: MeshInstallation %q manages the mesh in this cluster.", obs.activeName)
		return c, true
	}
	if res, ran := obs.outcome.ResultOf(conditionType); ran {
		c.Status = metav1.ConditionFalse
		if res.State == stages.Ready {
			c.Status = metav1.ConditionTrue
		}
		c.Reason, c.Message = res.Reason, res.Message
		return c, true
	}
	if obs.err != nil {
		return c, false
	}
	c.Status, c.Reason = metav1.ConditionUnknown, meshv1.ReasonWaitingForPreviousStage
	c.Message = fmt.Sprintf("Waiting for the %s stage to be Ready.", obs.outcome.Current)
	if !obs.active {
		c.Reason, c.Message = meshv1.ReasonPending, "No pass has run yet."
	}
	return c, true
}

// current returns the result of the stage in progress, if it ran.
func (o observation) current() (stages.Result, bool) {
	if n := len(o.outcome.Ran); n > 0 && o.outcome.Current != meshv1.StageComplete {
		return o.outcome.Ran[n-1].Result, true
	}
	return stages.Result{}, false
}

// determineReadyCondition summarises the stages: True only when every stage is Ready.
func determineReadyCondition(obs observation) metav1.Condition {
	c := metav1.Condition{Type: meshv1.ConditionReady, Status: metav1.ConditionFalse}
	switch res, ok := obs.current(); {
	case obs.conflicting():
		c.Reason = meshv1.ReasonConflict
		c.Message = fmt.Sprintf("MeshInstallation %q already manages the mesh in this cluster and only one can; delete one of the two. This one is left alone until then.", obs.activeName)
	case obs.err != nil:
		c.Status, c.Reason = metav1.ConditionUnknown, meshv1.ReasonReconcileError
		c.Message = "The last pass failed: " + obs.err.Error()
	case obs.active && obs.outcome.Current == meshv1.StageComplete:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, meshv1.ReasonAllStagesReady, meshv1.AllStagesReadyMessage()
	case ok:
		c.Reason = res.Reason
		c.Message = fmt.Sprintf("%s stage: %s", obs.outcome.Current, res.Message)
	default:
		c.Status, c.Reason, c.Message = metav1.ConditionUnknown, meshv1.ReasonPending, "No pass has run yet."
	}
	return c
}

// determineProgressingCondition is True while a stage is working towards its goal.
func determineProgressingCondition(obs observation) metav1.Condition {
	c := metav1.Condition{Type: meshv1.ConditionProgressing, Status: metav1.ConditionFalse}
	switch res, ok := obs.current(); {
	case obs.conflicting():
		c.Reason, c.Message = meshv1.ReasonConflict, "Not acted on while another MeshInstallation is active."
	case obs.err != nil:
		c.Status, c.Reason = metav1.ConditionTrue, meshv1.ReasonReconcileError
		c.Message = "Retrying after an API error: " + obs.err.Error()
	case obs.active && obs.outcome.Current == meshv1.StageComplete:
		c.Reason, c.Message = meshv1.ReasonAsExpected, "Every stage is Ready; nothing to do."
	case ok && res.State == stages.NotReady:
		c.Status, c.Reason = metav1.ConditionTrue, meshv1.ReasonStageInProgress
		c.Message = fmt.Sprintf("%s stage: %s", obs.outcome.Current, res.Message)
	case ok:
		c.Reason = res.Reason
		c.Message = fmt.Sprintf("Stopped at the %s stage, which cannot progress until the spec or the cluster changes.", obs.outcome.Current)
	default:
		c.Status, c.Reason, c.Message = metav1.ConditionUnknown, meshv1.ReasonPending, "No pass has run yet."
	}
	return c
}

// determineDegradedCondition is True when a stage that is Ready needs attention.
func determineDegradedCondition(obs observation) metav1.Condition {
	for _, r := range obs.outcome.Ran {
		if r.Result.Degraded {
			return metav1.Condition{Type: meshv1.ConditionDegraded, Status: metav1.ConditionTrue, Reason: r.Result.Reason, Message: r.Result.Message}
		}
	}
	return metav1.Condition{Type: meshv1.ConditionDegraded, Status: metav1.ConditionFalse, Reason: meshv1.ReasonAsExpected, Message: "Nothing needs attention."}
}

// progressOnly reports whether two statuses differ only in what moves while work is under way,
// which is written at most once per StatusCoalesceWindow (#24): an install or a rollout costs a
// status write when it starts, one when it ends or stops, and one per window in between, not one
// per message or step.
//
// Always progress: the conditions' messages ("3 of 15 CRDs Established", "0 of 1 replicas
// available"), the counts of namespaces and pods, the intermediate certificate's issuer and
// expiry (a renewal by cert-manager included). While a rollout is under way in both (Progressing
// True with StageInProgress, so no stage failed) and Ready has not changed, its forward steps are
// progress too: the stage, the revisions (which one is active included), and the stage
// conditions' status and reason (CertificatesReady turning True, ControlPlaneReady going from
// WaitingForCRDs to WaitingForIstiod); a condition's step is still told at once by an Event
// (recordTransitions).
//
// News, written at once: the rollout starting, finishing or stopping (Progressing, Ready), a
// condition that was True and is not any more, Degraded, the observed generation, the root
// rotation's record, which namespaces are blocked, and, when no rollout is under way, the
// revisions: state that users, scripts and the next pass rely on.
func progressOnly(a, b *meshv1.MeshInstallationStatus) bool {
	steps := underWay(a) && underWay(b) && conditionStatus(a, meshv1.ConditionReady) == conditionStatus(b, meshv1.ConditionReady) &&
		!wentBack(a, b)
	return equality.Semantic.DeepEqual(withoutProgress(a, steps), withoutProgress(b, steps))
}

// wentBack reports whether a condition True in a is not in b: a stage that was done is not any
// more (the CA became invalid while the control plane was being applied), news however the
// rollout goes on. Not Degraded, whose True is the bad news (always news, see withoutProgress).
func wentBack(a, b *meshv1.MeshInstallationStatus) bool {
	for _, c := range a.Conditions {
		if c.Type != meshv1.ConditionDegraded && c.Status == metav1.ConditionTrue && conditionStatus(b, c.Type) != metav1.ConditionTrue {
			return true
		}
	}
	return false
}

// underWay reports whether status says a stage is working towards its goal.
func underWay(status *meshv1.MeshInstallationStatus) bool {
	c := meta.FindStatusCondition(status.Conditions, meshv1.ConditionProgressing)
	return c != nil && c.Status == metav1.ConditionTrue && c.Reason == meshv1.ReasonStageInProgress
}

func conditionStatus(status *meshv1.MeshInstallationStatus, conditionType string) metav1.ConditionStatus {
	if c := meta.FindStatusCondition(status.Conditions, conditionType); c != nil {
		return c.Status
	}
	return ""
}

// withoutProgress is a copy of status with its progress reports (see progressOnly) blanked, and
// with steps its rollout's steps too.
func withoutProgress(status *meshv1.MeshInstallationStatus, steps bool) *meshv1.MeshInstallationStatus {
	s := status.DeepCopy()
	for i := range s.Conditions {
		c := &s.Conditions[i]
		c.Message = ""
		if steps && c.Type != meshv1.ConditionDegraded {
			// Ready's and Progressing's status are equal in both (see progressOnly); their
			// reasons follow the current stage's.
			c.Status, c.Reason, c.LastTransitionTime = "", "", metav1.Time{}
		}
	}
	if steps {
		s.Stage, s.Revisions = "", nil
	}
	if c := s.Certificates; c != nil {
		// What the certificates are: told, not relied on (the rotation's record is).
		c.NotAfter, c.Issuer = nil, ""
		if *c == (meshv1.CertificatesStatus{}) {
			s.Certificates = nil
		}
	}
	if n := s.Namespaces; n != nil {
		s.Namespaces = &meshv1.NamespacesStatus{BlockedCount: n.BlockedCount, Blocked: n.Blocked}
	}
	for i := range s.Revisions {
		s.Revisions[i].Namespaces, s.Revisions[i].Pods = 0, 0
	}
	return s
}
