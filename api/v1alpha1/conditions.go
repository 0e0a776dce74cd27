package v1alpha1

// Condition types of a MeshInstallation. One per stage of the rollout, so `kubectl describe`
// shows how far the rollout got, plus the summary conditions every Kubernetes tool understands.
const (
	// ConditionCertificatesReady reports the mesh CA: issuers, the intermediate Certificate and
	// the cacerts Secret that istiod signs workload certificates with.
	ConditionCertificatesReady = "CertificatesReady"
	// ConditionControlPlaneReady reports Istio's control plane: CRDs, istiod and its webhooks.
	ConditionControlPlaneReady = "ControlPlaneReady"
	// ConditionInjectionReady reports the sidecar-injection webhook and namespace enrollment.
	ConditionInjectionReady = "InjectionReady"
	// ConditionPoliciesReady reports the mesh-wide and per-namespace security policies.
	ConditionPoliciesReady = "PoliciesReady"
	// ConditionReady summarises the others: True only when every stage is Ready.
	ConditionReady = "Ready"
	// ConditionProgressing is True while the operator is moving the mesh towards the spec.
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True when something that worked has stopped working or was rolled back.
	ConditionDegraded = "Degraded"
)

// StageConditionTypes lists the per-stage conditions in rollout order; status shows them in this
// order and the stage engine walks them in this order.
var StageConditionTypes = []string{
	ConditionCertificatesReady,
	ConditionControlPlaneReady,
	ConditionInjectionReady,
	ConditionPoliciesReady,
}

// Condition reasons. They are CamelCase per the Kubernetes API conventions and stable: users
// alert and script on them, and the troubleshooting guide has an entry for each.
const (
	// ReasonPending means the operator has not acted on this stage yet.
	ReasonPending = "Pending"
	// ReasonNotImplemented means this version of the operator accepts the spec but cannot yet
	// carry out the stage; the rollout stays where it is and nothing is changed in the cluster.
	ReasonNotImplemented = "NotImplemented"
	// ReasonConflict means another MeshInstallation already manages the mesh in this cluster;
	// this one is left alone until that one is deleted.
	ReasonConflict = "Conflict"
	// ReasonActive means this MeshInstallation is the one the operator acts on.
	ReasonActive = "Active"
	// ReasonDeleting means the MeshInstallation is being deleted and its objects removed.
	ReasonDeleting = "Deleting"
	// ReasonReconcileError means a pass failed on an API error that is expected to pass
	// (a conflict, a timeout); the operator retries with backoff.
	ReasonReconcileError = "ReconcileError"
	// ReasonAsExpected is the reason of a summary condition that has nothing to report.
	ReasonAsExpected = "AsExpected"
)

// Finalizer holds a MeshInstallation until the operator has removed what it created for it.
const Finalizer = "meshwright.io/finalizer"
