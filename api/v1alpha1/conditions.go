package v1alpha1

// Condition types of a MeshInstallation. One per stage of the rollout, so `kubectl describe`
// shows how far the rollout got, plus the summary conditions every Kubernetes tool understands.
const (
	// ConditionCertificatesReady reports the mesh CA: issuers, the intermediate Certificate and
	// the cacerts Secret that istiod signs workload certificates with.
	ConditionCertificatesReady = "CertificatesReady"
	// ConditionControlPlaneReady reports Istio's control plane: CRDs, istiod and its webhooks.
	ConditionControlPlaneReady = "ControlPlaneReady"
	// ConditionInjectionReady reports the sidecar-injection webhook: configured, and served as
	// the API server sees it (a dry-run pod comes back with Istio's proxy).
	ConditionInjectionReady = "InjectionReady"
	// ConditionPoliciesReady reports the mesh-wide default policies (PERMISSIVE mTLS).
	ConditionPoliciesReady = "PoliciesReady"
	// ConditionAdoptionReady reports the adoption ladder: True when every enrolled namespace
	// stands at its target level.
	ConditionAdoptionReady = "AdoptionReady"
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
	// ReasonRotatingRoot means a root rotation is in progress: status.certificates.rotation
	// says which phase and what it waits for. The mesh CA is usable throughout.
	ReasonRotatingRoot = "RotatingRoot"
	// ReasonCARecordLost means the operator's record of a root rotation in progress was lost
	// (the cacerts Secret deleted or its annotation edited); it refuses to guess the CA.
	ReasonCARecordLost = "CARecordLost"
	// ReasonIstiodCANotLoaded means istiod still signs with another intermediate than the one
	// cacerts holds, longer after its renewal than spec.certificates.trustPropagation.
	ReasonIstiodCANotLoaded = "IstiodCANotLoaded"
	// ReasonCAReady means the cacerts Secret holds a valid intermediate CA.
	ReasonCAReady = "CAReady"
	// ReasonUnsupportedVersion means spec.version is not one this build can install; the message
	// lists the versions it can.
	ReasonUnsupportedVersion = "UnsupportedVersion"
	// ReasonChartSourceUnavailable means the charts of spec.version could not be downloaded from
	// spec.controlPlane.chartSource (the repository is unreachable, answers with an error, or
	// serves a broken archive); the operator retries, and the running control plane is untouched.
	ReasonChartSourceUnavailable = "ChartSourceUnavailable"
	// ReasonRevisionRetiring means an older control-plane revision still serves namespaces or
	// pods after an upgrade; it is removed once none uses it. The message says which do.
	ReasonRevisionRetiring = "RevisionRetiring"
	// ReasonInvalidValues means spec.controlPlane.values make Istio's charts fail to render.
	ReasonInvalidValues = "InvalidValues"
	// ReasonApplyRejected means the API server refused an object the operator wants (an
	// immutable field, an admission policy); the message names the object and the error.
	ReasonApplyRejected = "ApplyRejected"
	// ReasonForbidden means the API server refused the operator a request its stage needs (its
	// ServiceAccount lacks a permission, or an authorizer denied it); the message quotes the
	// refusal, which names the verb and the resource. Granting it lets the stage go on.
	ReasonForbidden = "Forbidden"
	// ReasonCASecretExists means a cacerts Secret the operator did not create is in the way: a
	// plug-in CA made by hand. The operator will not overwrite it.
	ReasonCASecretExists = "CASecretExists"
	// ReasonWaitingForCRDs means Istio's CRDs (in ambient mode, the Gateway API's too) are
	// applied but not Established yet.
	ReasonWaitingForCRDs = "WaitingForCRDs"
	// ReasonWaitingForWaypoint means a namespace whose rule asks for a waypoint waits for it to
	// be Programmed before it steps into ambient mode (Istio's order: the waypoint first).
	ReasonWaitingForWaypoint = "WaitingForWaypoint"
	// ReasonWaypointConflict means a namespace whose rule asks for a waypoint holds a Gateway
	// named waypoint that is not the operator's (made with istioctl, say): the operator neither
	// writes nor deletes it, and holds the namespace.
	ReasonWaypointConflict = "WaypointConflict"
	// ReasonIstioCRDsMissing means the operator runs with --istio-crds=external (as the OLM
	// bundle installs it, which ships Istio's CRDs itself) and a CRD this Istio release needs is
	// not installed, not Established, or does not serve a version the release uses.
	ReasonIstioCRDsMissing = "IstioCRDsMissing"
	// ReasonWaitingForIstiod means istiod's Deployment is not Available at its desired replicas.
	ReasonWaitingForIstiod = "WaitingForIstiod"
	// ReasonWaitingForCNI means Istio CNI's DaemonSet is not Ready on every node yet: istiod is
	// told to inject for it, and namespaces take steps, only once it is.
	ReasonWaitingForCNI = "WaitingForCNI"
	// ReasonWaitingForZtunnel means spec.dataPlane.mode is Ambient and ztunnel's DaemonSet is
	// not Ready on every node yet: no namespace takes a step until it is.
	ReasonWaitingForZtunnel = "WaitingForZtunnel"
	// ReasonControlPlaneReady means the CRDs, istiod and its webhooks are in place.
	ReasonControlPlaneReady = "ControlPlaneReady"
	// ReasonWaitingForPreviousStage means an earlier stage is not Ready yet, so this one has
	// not been touched.
	ReasonWaitingForPreviousStage = "WaitingForPreviousStage"
	// ReasonStageInProgress is the Ready and Progressing reason while a stage works.
	ReasonStageInProgress = "StageInProgress"
	// ReasonAllStagesReady is the Ready reason once every stage is Ready.
	ReasonAllStagesReady = "AllStagesReady"
	// ReasonWebhookNotFound means the sidecar-injector MutatingWebhookConfiguration is missing.
	ReasonWebhookNotFound = "WebhookNotFound"
	// ReasonWebhookNotServing means the API server cannot call the injection webhook yet: no
	// caBundle, or the call fails (istiod down or unreachable). The message quotes the API server.
	ReasonWebhookNotServing = "WebhookNotServing"
	// ReasonInjectionNotApplied means the webhook answered but a pod that asks for the proxy
	// came back without it (the injection templates or values are wrong).
	ReasonInjectionNotApplied = "InjectionNotApplied"
	// ReasonWebhookServing means the injection webhook answers and injects Istio's proxy.
	ReasonWebhookServing = "WebhookServing"
	// ReasonMeshPolicyApplied means the mesh-wide PeerAuthentication is in place.
	ReasonMeshPolicyApplied = "MeshPolicyApplied"
	// ReasonMeshPolicyExists means a mesh-wide PeerAuthentication the operator did not create
	// is in place; the operator leaves it as it is.
	ReasonMeshPolicyExists = "MeshPolicyExists"
	// ReasonNamespacesProgressing means namespaces are stepping towards their target levels.
	ReasonNamespacesProgressing = "NamespacesProgressing"
	// ReasonNamespacesBlocked means some namespaces cannot take their next step; status lists
	// them (namespaces.blocked) with the reason of each.
	ReasonNamespacesBlocked = "NamespacesBlocked"
	// ReasonNamespacesAtTarget means every enrolled namespace is at its target level.
	ReasonNamespacesAtTarget = "NamespacesAtTarget"
	// ReasonRolloutPaused means spec.rollout.paused holds every namespace where it stands.
	ReasonRolloutPaused = "RolloutPaused"
	// ReasonUninjectedPods means a namespace has pods without Istio's proxy (opted out with
	// sidecar.istio.io/inject=false, or not owned by a workload the operator can restart), so
	// STRICT mTLS would cut them off. The message names the first few.
	ReasonUninjectedPods = "UninjectedPods"
	// ReasonProxylessPlaintext means a namespace has pods running Istio's proxyless gRPC (the
	// grpc-agent injection template) without security.istio.io/tlsMode=istio: under PERMISSIVE
	// they serve plaintext only, so STRICT would refuse every caller that does not switch to
	// mTLS in the same instant. The message names the first few and what to do.
	ReasonProxylessPlaintext = "ProxylessPlaintext"
	// ReasonProxylessNoDryRun means, under the traffic gates, that a namespace has pods running
	// Istio's proxyless gRPC, which enforce AuthorizationPolicies at once (istio.io/dry-run is
	// ignored) and report no telemetry: nothing could show that ZeroTrust denies no caller
	// before it does. The message names the first few and what to do.
	ReasonProxylessNoDryRun = "ProxylessNoDryRun"
	// ReasonPodsNotReady means a namespace has pods that are not Ready, so its next step waits.
	ReasonPodsNotReady = "PodsNotReady"
	// ReasonDisruptionBudget means a PodDisruptionBudget allows no disruption of a workload the
	// step has to restart; the step waits for it.
	ReasonDisruptionBudget = "DisruptionBudget"
	// ReasonRefreshIncomplete means restarting a namespace's workloads for a root rotation
	// timed out; the rotation waits for them and the operator does not restart them again.
	ReasonRefreshIncomplete = "RefreshIncomplete"
	// ReasonInjectionLabelConflict means a namespace carries an injection label the operator did
	// not put there (istio-injection, or istio.io/rev naming another revision); the operator
	// does not take it over, so the namespace does not climb until it is removed.
	ReasonInjectionLabelConflict = "InjectionLabelConflict"
	// ReasonPeerAuthenticationConflict means a namespace-wide PeerAuthentication of someone
	// else's, not STRICT, would override the operator's STRICT one; the namespace stays below
	// MutualTLS until it is removed or made STRICT.
	ReasonPeerAuthenticationConflict = "PeerAuthenticationConflict"
	// ReasonProbeRejected means the API server refused the injection probe's dry-run pod for a
	// reason other than the webhook (a Pod Security level, a quota, a policy); the message says which.
	ReasonProbeRejected = "ProbeRejected"
	// ReasonInvalidTargetLevel means a namespace's meshwright.io/target-level label is not a
	// level; it is ignored and the namespace follows spec.namespaces.
	ReasonInvalidTargetLevel = "InvalidTargetLevel"
	// ReasonRolledBack means a step did not leave the namespace's pods Ready (and injected) within
	// spec.rollout.stepTimeout and was reverted; the namespace is held until the spec changes.
	ReasonRolledBack = "RolledBack"
	// ReasonPlaintextTraffic means callers still reach the namespace in plaintext: STRICT mTLS
	// would refuse them, so the namespace holds at Observe; the message names the top callers.
	ReasonPlaintextTraffic = "PlaintextTraffic"
	// ReasonTelemetryUnavailable means the telemetry source (spec.telemetry) did not answer, so
	// an enforcing step cannot be checked and waits.
	ReasonTelemetryUnavailable = "TelemetryUnavailable"
	// ReasonTelemetryMissing means the source answered but has no series of the namespace's
	// proxies in the window (scraping is not configured), so an enforcing step waits.
	ReasonTelemetryMissing = "TelemetryMissing"
	// ReasonTrafficUnverified means no source can see the namespace's traffic (its proxies'
	// stats endpoints cannot be reached), so an enforcing step waits.
	ReasonTrafficUnverified = "TrafficUnverified"
	// ReasonWouldDenyTraffic means the ZeroTrust dry-run showed callers enforcing would refuse
	// (callers outside allowFrom, or requests the dry-run policies would have denied): the
	// policies stay in dry-run; the message names the callers and the allowFrom entries.
	ReasonWouldDenyTraffic = "WouldDenyTraffic"
	// ReasonCallsStrictNamespaces means a namespace walking down out of the mesh still calls
	// namespaces that accept only mTLS: without its proxies those calls would be refused, so it
	// stays in the mesh; the message names them.
	ReasonCallsStrictNamespaces = "CallsStrictNamespaces"
	// ReasonTrafficRegressed means a step's bake (spec.rollout.bakeTime) saw the namespace's traffic
	// get worse than before the step (plaintext connections refused, more requests refused with
	// 403, inbound calls halved): the step was rolled back and the namespace is held until the
	// spec changes; the message holds the evidence.
	ReasonTrafficRegressed = "TrafficRegressed"
	// ReasonNonMeshCallers means the API shows callers outside the mesh reaching the namespace's
	// Services (an admission, conversion or APIService webhook, a LoadBalancer or NodePort, an
	// Ingress, a ServiceMonitor or PodMonitor): STRICT mTLS would refuse them, so the namespace
	// does not go STRICT until their ports are exempted (spec.namespaces[].plaintextPorts) or the
	// objects change; the message names each.
	ReasonNonMeshCallers = "NonMeshCallers"
	// ReasonPodAdmissionRefused means the API server refused, with server-side dry run, the pod
	// of a workload as the next step would restart it (injected by the step's revision): Pod
	// Security refusing istio-init's capabilities, a ResourceQuota or LimitRange with no room
	// for the proxy, a policy engine. Nothing was restarted; the message names the workload and
	// quotes the API server.
	ReasonPodAdmissionRefused = "PodAdmissionRefused"
	// ReasonJobsNeedNativeSidecars means a namespace holds CronJobs or Jobs and Istio's injector
	// gives its pods a classic sidecar, which keeps a Job's pod running after its work is done:
	// the namespace stays out of the mesh; the message gives the ways out.
	ReasonJobsNeedNativeSidecars = "JobsNeedNativeSidecars"
	// ReasonPodsOutsideAmbient means a namespace in ambient mode runs pods ztunnel does not
	// carry (labelled istio.io/dataplane-mode=none, or on the node's network), which STRICT
	// mTLS would cut off: it does not go STRICT.
	ReasonPodsOutsideAmbient = "PodsOutsideAmbient"
	// ReasonAmbientTrafficUnread means a namespace in ambient mode would take an enforcing step
	// under the traffic gates, and the telemetry source in use (the embedded one) does not read
	// ztunnel, which reports its traffic: it is held.
	ReasonAmbientTrafficUnread = "AmbientTrafficUnread"
	// ReasonDataPlaneChangeUnsupported means a namespace is in the mesh in ambient mode and the
	// spec asks for sidecars: it is not moved back in place, and stays as it is (the move from
	// sidecars to ambient mode is a migration step).
	ReasonDataPlaneChangeUnsupported = "DataPlaneChangeUnsupported"
	// ReasonSidecarsRequested means a namespace with sidecars would migrate to ambient mode, and
	// some of its workloads ask Istio's injector for the proxy in their pod template: restarted,
	// their pods would keep it, so the migration waits.
	ReasonSidecarsRequested = "SidecarsRequested"
	// ReasonPodsNotMigratable means a namespace with sidecars would migrate to ambient mode, and
	// runs pods the migration could not move: pods with the proxy that no step restarts, or
	// proxyless gRPC pods. The migration waits.
	ReasonPodsNotMigratable = "PodsNotMigratable"
	// ReasonAmbientRollbackIncomplete means the rollback of a migration to ambient mode ran out
	// of time with pods still without the proxy: the namespace keeps the ambient label, so that
	// ztunnel carries them, until they have it again.
	ReasonAmbientRollbackIncomplete = "AmbientRollbackIncomplete"
)

// Labels and annotations of the adoption ladder, on Namespaces.
const (
	// LabelLevel is the rung a namespace stands on: `kubectl get ns -L meshwright.io/level`.
	LabelLevel = "meshwright.io/level"
	// LabelTargetLevel on a namespace overrides the target level spec.namespaces gives it.
	LabelTargetLevel = "meshwright.io/target-level"
	// AnnotationLadder holds the operator's record of a namespace's ladder state (the step in
	// progress, when the level was reached, a hold after a rollback) as JSON. Deleting it
	// releases a hold.
	AnnotationLadder = "meshwright.io/ladder"
	// AnnotationRotateRoot on the MeshInstallation asks for a root rotation; each new value
	// asks for one more (kubectl annotate --overwrite mesh default meshwright.io/rotate-root=$(date +%s)).
	AnnotationRotateRoot = "meshwright.io/rotate-root"
	// AnnotationCA on the cacerts Secret is the operator's record of the mesh CA (its
	// generation and a rotation in progress), written together with the content it describes.
	AnnotationCA = "meshwright.io/ca"
	// AnnotationRestartedFor on a workload's pod template names the step that restarted it.
	AnnotationRestartedFor = "meshwright.io/restarted-for"
	// AnnotationResilienceDeclined on a namespace lists, comma separated, the objects of the
	// resilience defaults (Kind/name) a user deleted there: the operator does not create them
	// again. Removing the annotation restores them
	// (kubectl annotate namespace NS meshwright.io/resilience-declined-).
	AnnotationResilienceDeclined = "meshwright.io/resilience-declined"
)

// Labels the operator puts on everything it creates, so it can find, watch and remove them.
const (
	// LabelManagedBy is the standard label; its value is ManagedByValue.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue marks objects created by the operator.
	ManagedByValue = "meshwright"
	// LabelInstallation names the MeshInstallation an object belongs to.
	LabelInstallation = "meshwright.io/installation"
	// LabelRevision names the control-plane revision of an object an upgrade installed. Objects
	// of the first installation's revision ("default") carry none.
	LabelRevision = "meshwright.io/revision"
	// LabelIstioVersion records the Istio version of a revision an upgrade installed.
	LabelIstioVersion = "meshwright.io/istio-version"
)

// Finalizer holds a MeshInstallation until the operator has removed what it created for it.
const Finalizer = "meshwright.io/finalizer"
