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
	// ReasonReconcileError means a pass failed on an API error that is expected to pass
	// (a conflict, a timeout); the operator retries with backoff.
	ReasonReconcileError = "ReconcileError"
	// ReasonAsExpected is the reason of a summary condition that has nothing to report.
	ReasonAsExpected = "AsExpected"
	// ReasonCertManagerNotFound means cert-manager's CRDs are not installed; the rollout waits
	// for them and continues by itself once they appear.
	ReasonCertManagerNotFound = "CertManagerNotFound"
	// ReasonIssuing means cert-manager is issuing the mesh CA.
	ReasonIssuing = "Issuing"
	// ReasonIssuerNotReady means the issuer that signs the intermediate CA is missing or not
	// Ready (for a user-provided issuerRef: check that issuer).
	ReasonIssuerNotReady = "IssuerNotReady"
	// ReasonInvalidCA means the cacerts Secret exists but does not hold a CA certificate that
	// chains to its root; istiod would sign with a broken chain.
	ReasonInvalidCA = "InvalidCA"
	// ReasonCAExpiringSoon means the intermediate CA is close to expiry and has not been renewed.
	ReasonCAExpiringSoon = "CAExpiringSoon"
	// ReasonCAReady means the cacerts Secret holds a valid intermediate CA.
	ReasonCAReady = "CAReady"
	// ReasonUnsupportedVersion means spec.version is not one this build can install; the message
	// lists the versions it can.
	ReasonUnsupportedVersion = "UnsupportedVersion"
	// ReasonInvalidValues means spec.controlPlane.values make Istio's charts fail to render.
	ReasonInvalidValues = "InvalidValues"
	// ReasonApplyRejected means the API server refused an object the operator wants (an
	// immutable field, an admission policy); the message names the object and the error.
	ReasonApplyRejected = "ApplyRejected"
	// ReasonCASecretExists means a cacerts Secret the operator did not create is in the way: a
	// plug-in CA made by hand. The operator will not overwrite it.
	ReasonCASecretExists = "CASecretExists"
	// ReasonWaitingForCRDs means Istio's CRDs are applied but not Established yet.
	ReasonWaitingForCRDs = "WaitingForCRDs"
	// ReasonWaitingForIstiod means istiod's Deployment is not Available at its desired replicas.
	ReasonWaitingForIstiod = "WaitingForIstiod"
	// ReasonControlPlaneReady means the CRDs, istiod and its webhooks are in place.
	ReasonControlPlaneReady = "ControlPlaneReady"
	// ReasonWaitingForPreviousStage means an earlier stage is not Ready yet, so this one has
	// not been touched.
	ReasonWaitingForPreviousStage = "WaitingForPreviousStage"
	// ReasonStageInProgress is the Ready and Progressing reason while a stage works.
	ReasonStageInProgress = "StageInProgress"
	// ReasonAllStagesReady is the Ready reason once every stage is Ready.
	ReasonAllStagesReady = "AllStagesReady"
)

// Labels the operator puts on everything it creates, so it can find, watch and remove them.
const (
	// LabelManagedBy is the standard label; its value is ManagedByValue.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue marks objects created by the operator.
	ManagedByValue = "meshwright"
	// LabelInstallation names the MeshInstallation an object belongs to.
	LabelInstallation = "meshwright.io/installation"
)

// Finalizer holds a MeshInstallation until the operator has removed what it created for it.
const Finalizer = "meshwright.io/finalizer"
