package controllers

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/release"
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
	// err is the error the pass ended with, if any.
	err error
}

// computeStatus rewrites status from an observation. Conditions keep their lastTransitionTime
// unless their status changes, so recomputing an unchanged state is a no-op.
func computeStatus(status *meshv1.MeshInstallationStatus, obs observation) {
	for _, t := range meshv1.StageConditionTypes {
		setCondition(status, obs, determineStageCondition(t, obs))
	}
	setCondition(status, obs, determineReadyCondition(obs))
	setCondition(status, obs, determineProgressingCondition(obs))
	setCondition(status, obs, determineDegradedCondition(obs))
	if obs.active {
		status.Version = obs.version
		status.Stage = meshv1.StageCertificates
	}
	// observedGeneration moves only when a pass of the active installation succeeded, so it
	// tells users that what status says is about the spec they wrote.
	if obs.active && obs.err == nil {
		status.ObservedGeneration = obs.generation
	}
}

func setCondition(status *meshv1.MeshInstallationStatus, obs observation, c metav1.Condition) {
	c.ObservedGeneration = obs.generation
	c.LastTransitionTime = obs.now
	meta.SetStatusCondition(&status.Conditions, c)
}

// determineStageCondition reports one stage. The stages themselves are not built yet: every
// stage stays Pending and nothing is changed in the cluster.
func determineStageCondition(conditionType string, obs observation) metav1.Condition {
	c := metav1.Condition{Type: conditionType, Status: metav1.ConditionUnknown, Reason: meshv1.ReasonPending}
	switch {
	case !obs.active && obs.activeName != "":
		c.Message = fmt.Sprintf("Not acted on: MeshInstallation %q manages the mesh in this cluster.", obs.activeName)
	default:
		c.Message = "Waiting: this build of Meshwright validates the spec but does not run the rollout stages yet."
	}
	return c
}

// determineReadyCondition summarises the stages.
func determineReadyCondition(obs observation) metav1.Condition {
	switch {
	case !obs.active && obs.activeName != "":
		return metav1.Condition{
			Type: meshv1.ConditionReady, Status: metav1.ConditionFalse, Reason: meshv1.ReasonConflict,
			Message: fmt.Sprintf("MeshInstallation %q already manages the mesh in this cluster and only one can; delete one of the two. This one is left alone until then.", obs.activeName),
		}
	case obs.err != nil:
		return metav1.Condition{
			Type: meshv1.ConditionReady, Status: metav1.ConditionUnknown, Reason: meshv1.ReasonReconcileError,
			Message: "The last pass failed and is retried: " + obs.err.Error(),
		}
	default:
		return metav1.Condition{
			Type: meshv1.ConditionReady, Status: metav1.ConditionUnknown, Reason: meshv1.ReasonPending,
			Message: "Waiting for the rollout stages, which this build of Meshwright does not run yet.",
		}
	}
}

// determineProgressingCondition says whether the operator is moving the mesh.
func determineProgressingCondition(obs observation) metav1.Condition {
	if !obs.active && obs.activeName != "" {
		return metav1.Condition{
			Type: meshv1.ConditionProgressing, Status: metav1.ConditionFalse, Reason: meshv1.ReasonConflict,
			Message: "Not acted on while another MeshInstallation is active.",
		}
	}
	return metav1.Condition{
		Type: meshv1.ConditionProgressing, Status: metav1.ConditionUnknown, Reason: meshv1.ReasonPending,
		Message: "No stage has run yet.",
	}
}

// determineDegradedCondition says whether something that worked has stopped working. Nothing
// runs yet, so nothing can degrade.
func determineDegradedCondition(obs observation) metav1.Condition {
	return metav1.Condition{
		Type: meshv1.ConditionDegraded, Status: metav1.ConditionUnknown, Reason: meshv1.ReasonPending,
		Message: "No stage has run yet.",
	}
}

// desiredVersion is the Istio version the spec asks for.
func desiredVersion(mesh *meshv1.MeshInstallation) string {
	if mesh.Spec.Version != "" {
		return mesh.Spec.Version
	}
	return release.DefaultIstioVersion
}
