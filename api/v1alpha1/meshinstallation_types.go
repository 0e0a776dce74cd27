package v1alpha1

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// AdoptionLevel is a rung of the adoption ladder. Namespaces climb it one rung at a time, each
// rung gated on the health of the one before, so that no step can break traffic.
// +kubebuilder:validation:Enum=Off;Observe;MutualTLS;ZeroTrust
type AdoptionLevel string

const (
	// LevelOff leaves a namespace out of the mesh.
	LevelOff AdoptionLevel = "Off"
	// LevelObserve injects sidecars with PERMISSIVE mTLS: traffic is unchanged, telemetry gained.
	LevelObserve AdoptionLevel = "Observe"
	// LevelMutualTLS makes the namespace accept only mTLS (PeerAuthentication STRICT).
	LevelMutualTLS AdoptionLevel = "MutualTLS"
	// LevelZeroTrust adds default-deny authorization with explicit allow rules.
	LevelZeroTrust AdoptionLevel = "ZeroTrust"
)

// Stage names a step of the staged rollout; status.stage shows the one in progress.
type Stage string

const (
	// StageCertificates sets up the mesh CA with cert-manager.
	StageCertificates Stage = "Certificates"
	// StageControlPlane installs Istio's CRDs, istiod and its webhooks.
	StageControlPlane Stage = "ControlPlane"
	// StageInjection verifies the injection webhook and enrolls namespaces.
	StageInjection Stage = "Injection"
	// StagePolicies applies the mesh-wide default policies.
	StagePolicies Stage = "Policies"
	// StageAdoption moves namespaces up (or down) the adoption ladder to their target levels.
	StageAdoption Stage = "Adoption"
	// StageComplete means every stage is Ready.
	StageComplete Stage = "Complete"
)

// Defaults the operator applies in code, where a schema default would be wrong (it would be
// persisted and survive an operator upgrade that changes it) or would conflict with a rule.
const (
	// DefaultControlPlaneNamespace is where istiod and the cacerts Secret live.
	DefaultControlPlaneNamespace = "istio-system"
	// DefaultCADuration is the lifetime of istiod's intermediate CA certificate.
	DefaultCADuration = "8760h"
	// DefaultRootDuration is the lifetime of the self-signed root the operator manages.
	DefaultRootDuration = "87600h"
	// DefaultTrustPropagation is how long a root rotation lets a new trust bundle spread.
	DefaultTrustPropagation = "2m"
)

// MeshInstallationSpec is everything a platform team decides about its mesh: one document, from
// which the operator derives every object it creates.
// +kubebuilder:validation:XValidation:rule="!has(self.certificates) || !has(self.certificates.issuerRef) || !has(self.certificates.rootDuration)",message="certificates.rootDuration applies only to the self-signed root the operator manages; remove it when certificates.issuerRef names your own issuer"
// +kubebuilder:validation:XValidation:rule="!has(self.namespaces) || self.namespaces.all(r, !has(r.waypoint) || !r.waypoint || (has(r.dataPlaneMode) ? r.dataPlaneMode == 'Ambient' : has(self.dataPlane) && has(self.dataPlane.mode) && self.dataPlane.mode == 'Ambient'))",message="a namespace rule with waypoint: true needs ambient mode (a waypoint carries the traffic ztunnel hands it): set the rule's dataPlaneMode, or spec.dataPlane.mode, to Ambient, or remove waypoint"
// +kubebuilder:validation:XValidation:rule="!has(self.namespaces) || !self.namespaces.exists(r, has(r.dataPlaneMode) && r.dataPlaneMode == 'Ambient') || !has(self.dataPlane) || !has(self.dataPlane.cni) || self.dataPlane.cni != 'Disabled'",message="a namespace rule with dataPlaneMode Ambient needs Istio CNI (its node agent hands the pods' traffic to ztunnel): set dataPlane.cni to Auto or Enabled"
// +kubebuilder:validation:XValidation:rule="has(self.resilience) || !has(self.namespaces) || self.namespaces.all(r, !has(r.resilience) || (has(r.resilience.skip) && r.resilience.skip))",message="a namespace rule's resilience overrides spec.resilience, which is not set: set spec.resilience (resilience: {} takes every default), or remove the rule's resilience"
type MeshInstallationSpec struct {
	// Version is the Istio release to install, as MAJOR.MINOR.PATCH (for example "1.31.4").
	// Leave it empty to install the version this operator embeds.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self == '' || self.matches('^[0-9]+[.][0-9]+[.][0-9]+$')",message="version must be an Istio release written MAJOR.MINOR.PATCH, for example '1.31.4'; leave it empty for the version this operator embeds"
	Version string `json:"version,omitempty"`

	// Certificates configures the mesh CA that signs every workload certificate.
	// +optional
	Certificates CertificatesSpec `json:"certificates,omitempty"`

	// ControlPlane configures Istio's control plane.
	// +optional
	// +kubebuilder:default={}
	ControlPlane ControlPlaneSpec `json:"controlPlane,omitempty"`

	// Rollout sets how fast and how far the operator moves namespaces up the adoption ladder.
	// +optional
	// +kubebuilder:default={}
	Rollout RolloutSpec `json:"rollout,omitempty"`

	// Upgrade sets how a change of spec.version reaches the mesh.
	// +optional
	Upgrade UpgradeSpec `json:"upgrade,omitempty"`

	// Telemetry says where the traffic gates read the mesh's traffic (see rollout.trafficGates).
	// +optional
	Telemetry TelemetrySpec `json:"telemetry,omitempty"`

	// DataPlane sets what the injector gives pods and what runs on every node for them: Istio
	// CNI, which Pod Security's baseline and restricted levels need, and native sidecars.
	// +optional
	// +kubebuilder:default={}
	DataPlane DataPlaneSpec `json:"dataPlane,omitempty"`

	// Resilience is the timeouts, retries, connection limits and outlier detection the operator
	// gives the Services of every namespace from an adoption level on (docs/resilience.md).
	// Without it the operator writes none.
	// +optional
	Resilience *ResilienceSpec `json:"resilience,omitempty"`

	// Namespaces maps namespaces to the adoption level they should reach. A namespace matched by
	// no rule stays Off. kube-system, the control-plane namespace and the operator's own namespace
	// are never enrolled, whatever the selectors say.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:XValidation:rule="self.all(a, self.all(b, a.selector != b.selector || a.level == b.level))",message="two namespace rules have the same selector but different levels; merge them into one rule or give them the same level"
	Namespaces []NamespaceRule `json:"namespaces,omitempty"`
}

// CertificatesSpec configures the mesh CA. By default the operator manages a self-signed root and
// issues istiod's intermediate from it; with IssuerRef the intermediate comes from the user's PKI.
// +kubebuilder:validation:XValidation:rule="!has(self.renewBefore) || duration(self.renewBefore) < duration(has(self.duration) ? self.duration : '8760h')",message="certificates.renewBefore must be shorter than certificates.duration (default 8760h)"
// +kubebuilder:validation:XValidation:rule="has(self.issuerRef) || duration(has(self.duration) ? self.duration : '8760h') < duration(has(self.rootDuration) ? self.rootDuration : '87600h')",message="certificates.duration must be shorter than certificates.rootDuration (default 87600h): the intermediate CA cannot outlive the root that signs it"
type CertificatesSpec struct {
	// IssuerRef names an existing cert-manager Issuer or ClusterIssuer (Vault, a corporate PKI)
	// that issues istiod's intermediate CA. An Issuer must live in the control-plane namespace.
	// Omit it to have the operator manage a self-signed root.
	// +optional
	IssuerRef *IssuerReference `json:"issuerRef,omitempty"`

	// Duration is the lifetime of istiod's intermediate CA certificate. Default 8760h (one year).
	// +optional
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1h')",message="certificates.duration must be a duration of at least 1h, such as '8760h' for one year"
	Duration *metav1.Duration `json:"duration,omitempty"`

	// RenewBefore is how long before expiry cert-manager renews the intermediate. Default: a
	// third of Duration (cert-manager's default).
	// +optional
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('5m')",message="certificates.renewBefore must be a duration of at least 5m, such as '720h'"
	RenewBefore *metav1.Duration `json:"renewBefore,omitempty"`

	// RootDuration is the lifetime of the self-signed root CA. Default 87600h (ten years). Only
	// valid without IssuerRef.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('24h')",message="certificates.rootDuration must be a duration of at least 24h, such as '87600h' for ten years"
	RootDuration *metav1.Duration `json:"rootDuration,omitempty"`

	// PrivateKey sets the key algorithm and size of the CA keys. Default ECDSA P-256.
	// +optional
	PrivateKey PrivateKeySpec `json:"privateKey,omitempty"`

	// TrustPropagation is how long a root rotation keeps signing with the old intermediate
	// after istiod publishes the bundle of both roots, so that every proxy holds the new root
	// before any peer presents a certificate that chains to it. Default 2m.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$')",message="certificates.trustPropagation must be a duration, such as '2m'"
	TrustPropagation *metav1.Duration `json:"trustPropagation,omitempty"`
}

// IssuerReference points at a cert-manager issuer the user already runs.
type IssuerReference struct {
	// Kind is Issuer (in the control-plane namespace) or ClusterIssuer.
	// +kubebuilder:validation:Enum=Issuer;ClusterIssuer
	// +kubebuilder:default=ClusterIssuer
	// +optional
	Kind string `json:"kind,omitempty"`

	// Name of the issuer.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="certificates.issuerRef.name must be a DNS name of lower-case letters, digits, '-' and '.', such as 'corp-ca'"
	Name string `json:"name"`
}

// KeyAlgorithm is a private key algorithm cert-manager can generate.
// +kubebuilder:validation:Enum=ECDSA;RSA;Ed25519
type KeyAlgorithm string

const (
	// KeyAlgorithmECDSA is the default: small keys, fast handshakes.
	KeyAlgorithmECDSA KeyAlgorithm = "ECDSA"
	// KeyAlgorithmRSA is for PKIs that require RSA.
	KeyAlgorithmRSA KeyAlgorithm = "RSA"
	// KeyAlgorithmEd25519 is for PKIs that accept Ed25519.
	KeyAlgorithmEd25519 KeyAlgorithm = "Ed25519"
)

// PrivateKeySpec sets the CA key algorithm.
// +kubebuilder:validation:XValidation:rule="!has(self.size) || (self.algorithm == 'ECDSA' && self.size in [256, 384, 521]) || (self.algorithm == 'RSA' && self.size >= 2048 && self.size <= 8192)",message="privateKey.size must be 256, 384 or 521 for ECDSA, 2048 to 8192 for RSA, and omitted for Ed25519"
type PrivateKeySpec struct {
	// Algorithm is ECDSA (default), RSA or Ed25519.
	// +kubebuilder:default=ECDSA
	// +optional
	Algorithm KeyAlgorithm `json:"algorithm,omitempty"`

	// Size is the key size in bits: 256 (default), 384 or 521 for ECDSA; 2048 to 8192 for RSA
	// (default 2048); omitted for Ed25519.
	// +optional
	Size *int32 `json:"size,omitempty"`
}

// ControlPlaneSpec configures Istio's control plane.
// +kubebuilder:validation:XValidation:rule="(has(self.__namespace__) ? self.__namespace__ : 'istio-system') == (has(oldSelf.__namespace__) ? oldSelf.__namespace__ : 'istio-system')",message="controlPlane.namespace cannot be changed (an unset namespace means istio-system); delete and re-create the MeshInstallation to move the control plane"
type ControlPlaneSpec struct {
	// Namespace is where istiod and the cacerts Secret live. Default istio-system. It cannot be
	// changed once set: create a new MeshInstallation to move the control plane.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="controlPlane.namespace must be a DNS label: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit, such as 'istio-system'"
	Namespace string `json:"namespace,omitempty"`

	// Values are Istio Helm chart values, passed through over the operator's own defaults (which
	// wire in the mesh CA). See Istio's charts for what they mean.
	// +optional
	// +kubebuilder:validation:Type=object
	// +kubebuilder:pruning:PreserveUnknownFields
	Values *apiextensionsv1.JSON `json:"values,omitempty"`

	// ChartSource is where the charts of spec.version come from when this build of the
	// operator does not embed them. Omit it to install only the embedded version (offline).
	// +optional
	ChartSource *ChartSource `json:"chartSource,omitempty"`

	// RemoveCRDsOnDelete also deletes Istio's CRDs when this MeshInstallation is deleted, and the
	// Gateway API's CRDs that ambient mode installed (only if all of those in the cluster are
	// still the operator's, as it installed them). Off by default: deleting a CRD deletes every
	// object of its kind, such as the teams' policies, and every Gateway and route, whoever's.
	// +optional
	RemoveCRDsOnDelete bool `json:"removeCRDsOnDelete,omitempty"`
}

// ChartSource is a Helm chart repository or OCI registry holding Istio's `base` and `istiod`
// charts, one chart version per Istio release (as Istio's own repository does). Charts are
// downloaded once and cached on the operator's disk.
// +kubebuilder:validation:XValidation:rule="!self.repository.startsWith('http://') || (has(self.insecureHTTP) && self.insecureHTTP)",message="controlPlane.chartSource.repository uses plain http, so anyone on the network path could change the charts the operator installs with its permissions: use https, or set controlPlane.chartSource.insecureHTTP: true for a repository inside a network you trust"
type ChartSource struct {
	// Repository is the URL of a Helm repository (the directory holding index.yaml), such as
	// https://istio-release.storage.googleapis.com/charts, or of an OCI registry repository
	// holding the charts as <repository>/base:<version> and <repository>/istiod:<version>, such
	// as oci://registry.example.com/istio. Registry credentials are Helm's (helm registry login).
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^(https?|oci)://[^ @]+$')",message="controlPlane.chartSource.repository must be the http(s) URL of a Helm chart repository (the directory holding index.yaml), such as 'https://istio-release.storage.googleapis.com/charts', or an oci:// registry repository, such as 'oci://registry.example.com/istio', without credentials in it"
	Repository string `json:"repository"`

	// InsecureHTTP allows a plain http:// repository. The charts are applied with the
	// operator's permissions (ClusterRoles included), so anyone on the network path could
	// change what it installs: set it only for a repository inside a network you trust.
	// +optional
	InsecureHTTP bool `json:"insecureHTTP,omitempty"`
}

// UpgradeStrategy is how a new Istio version replaces the running one.
// +kubebuilder:validation:Enum=RevisionBased;InPlace
type UpgradeStrategy string

const (
	// UpgradeRevisionBased installs the new version as a second control-plane revision beside
	// the running one, moves namespaces to it one at a time with the ladder's gates, and removes
	// the old revision once no pod uses it. Setting spec.version back aborts the move.
	UpgradeRevisionBased UpgradeStrategy = "RevisionBased"
	// UpgradeInPlace replaces the running control plane's charts in place; proxies are updated
	// as their pods restart. Faster, with no way back but another upgrade.
	UpgradeInPlace UpgradeStrategy = "InPlace"
)

// UpgradeSpec configures upgrades of the control plane.
type UpgradeSpec struct {
	// Strategy is RevisionBased (the default) or InPlace.
	// +optional
	Strategy UpgradeStrategy `json:"strategy,omitempty"`
}

// RolloutSpec bounds how much of the cluster changes at once.
type RolloutSpec struct {
	// Paused freezes every namespace where it stands; stages already Ready stay as they are.
	// +optional
	Paused bool `json:"paused,omitempty"`

	// MaxNamespacesInProgress is how many namespaces may be stepping up or down the ladder at
	// the same time.
	// +optional
	// +kubebuilder:default=2
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 1000",message="rollout.maxNamespacesInProgress must be a whole number from 1 to 1000: how many namespaces may change level at the same time"
	MaxNamespacesInProgress int32 `json:"maxNamespacesInProgress,omitempty"`

	// MaxUnavailablePerNamespace is how many pods of a namespace may be restarting at once while
	// sidecars are injected: a number of pods (2) or a percentage of the namespace's pods ("25%").
	// +optional
	// +kubebuilder:default="25%"
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 1 : self.matches('^(100|[1-9][0-9]?)%$')",message="rollout.maxUnavailablePerNamespace must be a number of pods of at least 1 (such as 2) or a percentage from 1% to 100% (such as '25%')"
	MaxUnavailablePerNamespace *intstr.IntOrString `json:"maxUnavailablePerNamespace,omitempty"`

	// SoakTime is how long a namespace must hold MutualTLS, and then run its ZeroTrust policies
	// in dry-run, before the next rung.
	// +optional
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('0s')",message="rollout.soakTime must be a duration such as '30m' or '1h'"
	SoakTime *metav1.Duration `json:"soakTime,omitempty"`

	// StepTimeout is how long a namespace's step may take to leave every pod of the namespace
	// Ready (and, for Observe, injected). A step that has not got there by then is reverted, and
	// the namespace is held at its previous level until the spec changes.
	// +optional
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1s')",message="rollout.stepTimeout must be a duration of at least 1s, such as '10m'"
	StepTimeout *metav1.Duration `json:"stepTimeout,omitempty"`

	// ObserveTime is how long a namespace holds Observe, its inbound traffic watched, before it
	// may go STRICT: the window in which a caller that still speaks plaintext must show itself.
	// Make it cover the callers that run rarely (a nightly job needs 24h), and several of your
	// Prometheus's scrape intervals. Under the traffic gates a ZeroTrust dry-run lasts at least
	// this long too, whatever soakTime says.
	// +optional
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('10s')",message="rollout.observeTime must be a duration of at least 10s, such as '10m' or '24h': the traffic gates need a window of several scrapes"
	ObserveTime *metav1.Duration `json:"observeTime,omitempty"`

	// BakeTime is how long, after a step up has taken effect, the namespace's traffic is
	// compared with what it was before the step: plaintext connections refused, requests
	// refused with 403 growing, inbound calls falling by half, callers in the mesh failing to
	// connect; after the step to Observe, calls its new proxies could not pass on to the
	// application. A regression rolls the step back and holds the namespace (reason
	// TrafficRegressed, condition Degraded) until the spec changes. The step counts as done, and
	// its slot of maxNamespacesInProgress is freed, only once the bake has passed; a step to
	// Observe whose traffic could not be read completes when the bake time is over, with a
	// Warning event. Not used with trafficGates: Skip.
	// +optional
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('10s')",message="rollout.bakeTime must be a duration of at least 10s, such as '5m': the bake compares several scrapes"
	BakeTime *metav1.Duration `json:"bakeTime,omitempty"`

	// TrafficGates says whether steps that enforce (MutualTLS, ZeroTrust) wait for telemetry to
	// show they refuse no caller. Enforce (the default) never takes "cannot see" for "clean": a
	// namespace whose traffic cannot be read waits. Skip trades that safety for speed: steps
	// are gated on pods only, as before traffic gates existed.
	// +optional
	// +kubebuilder:default=Enforce
	TrafficGates TrafficGatesMode `json:"trafficGates,omitempty"`
}

// TrafficGatesMode is whether the ladder's traffic gates hold enforcing steps.
// +kubebuilder:validation:Enum=Enforce;Skip
type TrafficGatesMode string

// The traffic gate modes.
const (
	// TrafficGatesEnforce holds an enforcing step until telemetry shows it refuses no caller.
	TrafficGatesEnforce TrafficGatesMode = "Enforce"
	// TrafficGatesSkip gates steps on pods only.
	TrafficGatesSkip TrafficGatesMode = "Skip"
)

// TelemetrySpec says where the traffic gates read the mesh's traffic.
type TelemetrySpec struct {
	// Prometheus reads Istio's standard metrics from a Prometheus-compatible query API
	// (Prometheus, Thanos, Mimir, VictoriaMetrics), which must scrape the proxies' merged
	// metrics (port 15020) with the pods' namespace and pod labels. Without it the operator
	// reads the proxies' stats endpoints itself, for the namespaces about to step only.
	// +optional
	Prometheus *PrometheusSource `json:"prometheus,omitempty"`
}

// PrometheusSource is a Prometheus-compatible query API. The Secrets it names are read from the
// control plane's namespace (spec.controlPlane.namespace).
type PrometheusSource struct {
	// URL is the API's base URL, such as http://prometheus.monitoring:9090 (the operator adds
	// /api/v1/...).
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (self.startsWith('http://') || self.startsWith('https://'))",message="telemetry.prometheus.url must be an http:// or https:// URL, such as 'http://prometheus.monitoring:9090'"
	URL string `json:"url"`

	// BearerToken names the key of a Secret holding a token the operator sends as
	// "Authorization: Bearer <token>".
	// +optional
	BearerToken *SecretKeyRef `json:"bearerToken,omitempty"`

	// CA names the key of a Secret holding the PEM CA bundle that signs the server's certificate
	// (https only). Without it the system's roots are used.
	// +optional
	CA *SecretKeyRef `json:"ca,omitempty"`

	// InsecureSkipVerify turns off verification of the server's certificate. Only for tests:
	// anyone on the path could then feed the gates false telemetry.
	// +optional
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
}

// SecretKeyRef names one key of a Secret in the control plane's namespace.
type SecretKeyRef struct {
	// Name is the Secret's name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Key is the key in the Secret's data.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key"`
}

// NamespaceRule sets the target level of the namespaces its selector matches.
type NamespaceRule struct {
	// Selector matches namespaces by their labels. An empty selector matches every namespace.
	Selector NamespaceSelector `json:"selector"`

	// Level is the adoption level these namespaces should reach: Off, Observe, MutualTLS or
	// ZeroTrust.
	Level AdoptionLevel `json:"level"`

	// AllowFrom lists the other namespaces whose workloads may call these namespaces once they
	// reach ZeroTrust. Workloads of the same namespace are always allowed.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	AllowFrom []AllowSource `json:"allowFrom,omitempty"`

	// PlaintextPorts are Service ports of these namespaces that keep accepting callers outside
	// the mesh once the namespaces reach MutualTLS and ZeroTrust: the kube-apiserver calling an
	// admission or conversion webhook, a load balancer, a Prometheus that is not in the mesh.
	// For each, the operator writes a PeerAuthentication that leaves the Service's target port
	// PERMISSIVE on the Service's pods and, at ZeroTrust, an AuthorizationPolicy that admits any
	// caller on it. Without an entry, such a caller holds the step to MutualTLS
	// (reason NonMeshCallers). A Service a namespace does not have is ignored there.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	PlaintextPorts []ServicePortRef `json:"plaintextPorts,omitempty"`

	// DataPlaneMode is the data plane of these namespaces, over spec.dataPlane.mode: Sidecar or
	// Ambient. Namespaces of both can be in the mesh at once; one rule in Ambient installs
	// ambient mode's parts (ztunnel, Istio CNI in ambient mode) as spec.dataPlane.mode would.
	// Empty takes spec.dataPlane.mode.
	// +optional
	DataPlaneMode DataPlaneKind `json:"dataPlaneMode,omitempty"`

	// Waypoint gives each of these namespaces, in ambient mode, a waypoint: the Envoy proxy that
	// enforces L7 policy (AuthorizationPolicies on paths, methods and headers, HTTP routing) for
	// the traffic to the namespace's Services, which ztunnel alone cannot. The operator creates a
	// Gateway named waypoint of class istio-waypoint (istiod deploys it), and labels the
	// namespace istio.io/use-waypoint=waypoint once it is Programmed; a step into ambient mode
	// waits for it. Needs the Gateway API v1.2 or newer (WaitingForWaypoint); a Gateway named
	// waypoint that is not the operator's is left alone (WaypointConflict). At ZeroTrust, the
	// namespace's allow policies are attached to the waypoint too. Set back to false, the label
	// goes first, then the Gateway. Only for namespaces in ambient mode.
	// +optional
	Waypoint bool `json:"waypoint,omitempty"`

	// Resilience changes spec.resilience for these namespaces: skip: true opts them out (what
	// the operator made there for them is removed), or values override the spec's field by
	// field, such as a longer request timeout for a batch API.
	// +optional
	Resilience *NamespaceResilience `json:"resilience,omitempty"`
}

// ServicePortRef names one port of a Service in the namespace.
type ServicePortRef struct {
	// Service is the Service's name.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="plaintextPorts.service must be a Service name: at most 63 lower-case letters, digits and '-', starting with a letter and ending with a letter or digit"
	Service string `json:"service"`
	// Port is the Service's port (spec.ports[].port), not its targetPort.
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 65535",message="plaintextPorts.port must be the Service's port number, 1 to 65535 (its spec.ports[].port, not the targetPort)"
	Port int32 `json:"port"`
}

// NamespaceSelector is a label selector with the semantics of metav1.LabelSelector, bounded in
// size so the API server can check every rule on it at admission.
type NamespaceSelector struct {
	// MatchLabels selects namespaces that carry every one of these labels.
	// +optional
	// +kubebuilder:validation:MaxProperties=16
	MatchLabels map[string]string `json:"matchLabels,omitempty"`

	// MatchExpressions are requirements on labels; all must hold.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	MatchExpressions []SelectorRequirement `json:"matchExpressions,omitempty"`
}

// SelectorRequirement is one requirement on a namespace label.
// +kubebuilder:validation:XValidation:rule="(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",message="selector.matchExpressions[].values must be non-empty for In and NotIn, and omitted for Exists and DoesNotExist"
type SelectorRequirement struct {
	// Key is the label key.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=317
	Key string `json:"key"`
	// Operator is In, NotIn, Exists or DoesNotExist.
	// +kubebuilder:validation:Enum=In;NotIn;Exists;DoesNotExist
	Operator metav1.LabelSelectorOperator `json:"operator"`
	// Values are the label values for In and NotIn.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=63
	Values []string `json:"values,omitempty"`
}

// LabelSelector converts the selector for the Kubernetes label machinery.
func (s NamespaceSelector) LabelSelector() *metav1.LabelSelector {
	ls := &metav1.LabelSelector{MatchLabels: s.MatchLabels}
	for _, e := range s.MatchExpressions {
		ls.MatchExpressions = append(ls.MatchExpressions, metav1.LabelSelectorRequirement{Key: e.Key, Operator: e.Operator, Values: e.Values})
	}
	return ls
}

// AllowSource is a namespace whose workloads may call a ZeroTrust namespace.
type AllowSource struct {
	// Namespace is the name of the calling namespace.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="allowFrom.namespace must be a namespace name: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit"
	Namespace string `json:"namespace"`
}

// MeshInstallationStatus is what the operator observed and did, for kubectl and for automation.
type MeshInstallationStatus struct {
	// ObservedGeneration is the generation of the spec the last successful pass acted on.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Stage is the stage in progress, or Complete.
	// +optional
	Stage Stage `json:"stage,omitempty"`

	// Version is the Istio version the operator is installing or has installed.
	// +optional
	Version string `json:"version,omitempty"`

	// Conditions: CertificatesReady, ControlPlaneReady, InjectionReady, PoliciesReady, Ready,
	// Progressing and Degraded. A rollout starting, finishing or stopping (Ready, Progressing),
	// a condition that stops being True, Degraded and blocked namespaces are written at once;
	// progress at most every 10 s: messages, counts, the intermediate's issuer and expiry, and
	// while a rollout goes on its forward steps (the stage, a stage condition turning True or
	// changing its reason) and status.revisions, each condition's step told at once by an Event.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Certificates reports the mesh CA istiod signs with.
	// +optional
	Certificates *CertificatesStatus `json:"certificates,omitempty"`

	// Namespaces counts namespaces per adoption level and lists the ones that are held back.
	// +optional
	Namespaces *NamespacesStatus `json:"namespaces,omitempty"`

	// Revisions lists the control-plane revisions installed, the active one first: one in
	// steady state, two while an upgrade moves namespaces from one to the other.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=8
	Revisions []RevisionStatus `json:"revisions,omitempty"`

	// DataPlane reports the data plane the active revision's injector gives pods, as its
	// dry-run probe pod came back.
	// +optional
	DataPlane *DataPlaneStatus `json:"dataPlane,omitempty"`
}

// DataPlaneMode turns a data-plane feature on or off, or lets the operator decide from the
// cluster (Auto).
// +kubebuilder:validation:Enum=Auto;Enabled;Disabled
type DataPlaneMode string

// The values of a DataPlaneMode.
const (
	// ModeAuto lets the operator decide from what the cluster needs and supports.
	ModeAuto DataPlaneMode = "Auto"
	// ModeEnabled turns the feature on whatever the cluster says.
	ModeEnabled DataPlaneMode = "Enabled"
	// ModeDisabled turns it off.
	ModeDisabled DataPlaneMode = "Disabled"
)

// DataPlaneKind is how a namespace's pods join the mesh.
// +kubebuilder:validation:Enum=Sidecar;Ambient
type DataPlaneKind string

// The values of a DataPlaneKind.
const (
	// DataPlaneSidecar: Istio's injector gives every pod an Envoy proxy of its own; entering
	// the mesh restarts the pods.
	DataPlaneSidecar DataPlaneKind = "Sidecar"
	// DataPlaneAmbient: Istio's ambient mode. ztunnel, on every node, carries the pods'
	// traffic with mTLS and enforces L4 policy; no sidecar, and no restart to enter the mesh.
	DataPlaneAmbient DataPlaneKind = "Ambient"
)

// DataPlaneSpec is what the injector gives pods and what runs on every node for them.
// +kubebuilder:validation:XValidation:rule="!has(self.mode) || self.mode != 'Ambient' || !has(self.cni) || self.cni != 'Disabled'",message="dataPlane.mode Ambient needs Istio CNI (its node agent hands the pods' traffic to ztunnel): set dataPlane.cni to Auto or Enabled, or dataPlane.mode to Sidecar"
type DataPlaneSpec struct {
	// Mode is the mesh's data plane. Sidecar (the default): a namespace enters the mesh at
	// Observe by sidecar injection, which restarts its pods. Ambient: Istio's ambient mode;
	// the operator installs Istio CNI in ambient mode and ztunnel (a DaemonSet in namespace
	// istio-cni) beside an istiod with ambient enabled, and istiod keeps serving sidecars
	// beside it.
	// +optional
	// +kubebuilder:default=Sidecar
	Mode DataPlaneKind `json:"mode,omitempty"`

	// CNI installs Istio CNI (Istio's cni chart: a DaemonSet in the istio-cni namespace, the only
	// namespace the operator lets run privileged pods) and tells istiod to inject for it: the
	// pods' traffic is redirected by the node agent, so the injected pods need no istio-init
	// container with NET_ADMIN and NET_RAW, which Pod Security's baseline and restricted levels
	// refuse. Auto installs it once an enrolled namespace enforces baseline or restricted (its
	// pod-security.kubernetes.io/enforce label) and keeps it from then on; Enabled installs it
	// now; Disabled removes it (istiod is told first; the DaemonSet goes once no running pod
	// was injected for it). Where the cluster's default level is baseline or restricted (the
	// API server's admission configuration, which the API does not serve), set Enabled. An
	// Istio CNI someone else installed (pods labelled k8s-app=istio-cni-node) is used as it is.
	// +optional
	// +kubebuilder:default=Auto
	CNI DataPlaneMode `json:"cni,omitempty"`

	// NativeSidecars sets the proxy's shape, passed to istiod as ENABLE_NATIVE_SIDECARS: an init
	// container with restartPolicy Always, which lets a Job's pod complete (Enabled), or a
	// container beside the application's (Disabled). Auto leaves it to istiod, which injects
	// native sidecars where every node's kubelet is 1.33 or later. status.dataPlane.sidecars
	// says which is in effect.
	// +optional
	// +kubebuilder:default=Auto
	NativeSidecars DataPlaneMode `json:"nativeSidecars,omitempty"`
}

// The shapes of the injected proxy (status.dataPlane.sidecars).
const (
	// SidecarsNative: an init container with restartPolicy Always (Kubernetes native sidecars).
	SidecarsNative = "Native"
	// SidecarsClassic: a container beside the application's.
	SidecarsClassic = "Classic"
)

// DataPlaneStatus is what the injector gives pods.
type DataPlaneStatus struct {
	// Sidecars is the shape of the injected proxy: Native (an init container with
	// restartPolicy Always, which the kubelet starts before the application and stops after
	// it, so a Job's pod completes) or Classic (a container beside the application's). Istio
	// injects native sidecars where every node's kubelet is 1.33 or later, unless istiod's
	// ENABLE_NATIVE_SIDECARS says otherwise.
	// +optional
	// +kubebuilder:validation:Enum=Native;Classic
	Sidecars string `json:"sidecars,omitempty"`

	// CNI says whether the injected pods rely on Istio CNI (Enabled: Istio's istio-validation
	// init container instead of istio-init, no NET_ADMIN or NET_RAW) or not (Disabled).
	// +optional
	// +kubebuilder:validation:Enum=Enabled;Disabled
	CNI string `json:"cni,omitempty"`
}

// The values of status.dataPlane.cni.
const (
	// CNIEnabled: the injected pods rely on Istio CNI.
	CNIEnabled = "Enabled"
	// CNIDisabled: the injected pods set up their own traffic redirection (istio-init).
	CNIDisabled = "Disabled"
)

// RevisionStatus is one control-plane revision (an istiod with its webhooks) and what it serves.
type RevisionStatus struct {
	// Name is the revision's name: the value of the istio.io/rev label that selects it
	// ("default" for the first installation, "1-31-5" for a revision installed by an upgrade).
	Name string `json:"name"`
	// Version is the Istio version the revision runs.
	// +optional
	Version string `json:"version,omitempty"`
	// Active is true for the revision namespaces are moved to; the others are retiring and are
	// removed once no namespace and no pod uses them.
	// +optional
	Active bool `json:"active,omitempty"`
	// Namespaces is the number of namespaces whose injection label selects this revision.
	Namespaces int32 `json:"namespaces"`
	// Pods is the number of running pods whose proxy this revision injected.
	Pods int32 `json:"pods"`
}

// CertificatesStatus reports the intermediate CA in the cacerts Secret.
type CertificatesStatus struct {
	// NotAfter is when istiod's intermediate CA certificate expires. cert-manager renews it
	// before then; the operator warns when renewal is overdue.
	// +optional
	NotAfter *metav1.Time `json:"notAfter,omitempty"`
	// Issuer names the cert-manager issuer that signs the intermediate, as Kind/name.
	// +optional
	Issuer string `json:"issuer,omitempty"`
	// Generation counts the root rotations done: 0 is the root the installation started with.
	// +optional
	Generation int32 `json:"generation,omitempty"`
	// RotatedFor is the value of the meshwright.io/rotate-root annotation the last finished
	// rotation answered; setting the annotation to another value starts a new one.
	// +optional
	RotatedFor string `json:"rotatedFor,omitempty"`
	// Rotation reports the root rotation in progress, if any.
	// +optional
	Rotation *RootRotationStatus `json:"rotation,omitempty"`
}

// RotationPhase is a phase of a root rotation.
// +kubebuilder:validation:Enum=Prepare;Trust;Switch;Drop
type RotationPhase string

const (
	// RotationPrepare: cert-manager issues the new root (or the user's new issuer signs) and the
	// new intermediate; nothing the mesh uses has changed yet.
	RotationPrepare RotationPhase = "Prepare"
	// RotationTrust: cacerts publishes both roots while istiod still signs with the old
	// intermediate; it ends once istiod published both everywhere and they had time to spread.
	RotationTrust RotationPhase = "Trust"
	// RotationSwitch: istiod signs with the new intermediate; workloads restart progressively
	// so that every proxy holds a certificate that chains to the new root.
	RotationSwitch RotationPhase = "Switch"
	// RotationDrop: the old root leaves the bundle; it ends once istiod published the new root
	// alone, and the old root's objects are deleted.
	RotationDrop RotationPhase = "Drop"
)

// RootRotationStatus is a root rotation in progress.
type RootRotationStatus struct {
	// Phase is where the rotation stands.
	Phase RotationPhase `json:"phase"`
	// Since is when the phase began.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
	// Trigger says what asked for the rotation: the meshwright.io/rotate-root annotation or a
	// change of spec.certificates.issuerRef.
	// +optional
	Trigger string `json:"trigger,omitempty"`
	// Issuer is the issuer that signs the new intermediate, as Kind/name.
	// +optional
	Issuer string `json:"issuer,omitempty"`
	// TrustedSince is, in the Trust phase, when istiod was seen publishing both roots: pods
	// whose proxy keeps the roots it started with (proxyless gRPC, or a proxy without
	// PROXY_CONFIG_XDS_AGENT=true) that started before then are restarted, so that they trust
	// the new root before signing switches to it.
	// +optional
	TrustedSince *metav1.Time `json:"trustedSince,omitempty"`
	// SigningSince is, in the Switch phase, when istiod was first seen signing with the new
	// intermediate (its own serving certificate is from it): pods with the proxy started
	// before then are restarted.
	// +optional
	SigningSince *metav1.Time `json:"signingSince,omitempty"`
	// PendingPods is the number of running pods with Istio's proxy the phase waits for: in the
	// Trust phase those started before TrustedSince that cannot take the new root live, in the
	// Switch phase those started before SigningSince, which may still hold a certificate of
	// the old intermediate.
	// +optional
	PendingPods int32 `json:"pendingPods,omitempty"`
}

// NamespacesStatus summarises where the enrolled namespaces stand on the ladder.
type NamespacesStatus struct {
	// Enrolled is the number of namespaces whose target level is above Off.
	Enrolled int32 `json:"enrolled"`
	// Pending is the number of enrolled namespaces still at Off: not in the mesh yet.
	// +optional
	Pending int32 `json:"pending,omitempty"`
	// Observe is the number of namespaces currently at Observe.
	Observe int32 `json:"observe"`
	// MutualTLS is the number of namespaces currently at MutualTLS.
	MutualTLS int32 `json:"mutualTLS"`
	// ZeroTrust is the number of namespaces currently at ZeroTrust.
	ZeroTrust int32 `json:"zeroTrust"`
	// InProgress is the number of namespaces taking a step right now.
	// +optional
	InProgress int32 `json:"inProgress,omitempty"`
	// Ambient is the number of namespaces in the mesh (or entering it) in Istio's ambient mode,
	// out of those at Observe and above and those stepping in: the others have sidecars.
	// +optional
	Ambient int32 `json:"ambient,omitempty"`
	// ResilienceCovered is the number of namespaces whose Services all carry the resilience
	// defaults (spec.resilience).
	// +optional
	ResilienceCovered int32 `json:"resilienceCovered,omitempty"`
	// ResiliencePartial is the number of namespaces that carry the resilience defaults on some
	// Services only: others are left to a team's own DestinationRule or VirtualService, or a
	// user deleted the operator's object for them (kubectl meshwright plan names them).
	// +optional
	ResiliencePartial int32 `json:"resiliencePartial,omitempty"`
	// BlockedCount is the number of namespaces held below their target level.
	// +optional
	BlockedCount int32 `json:"blockedCount,omitempty"`
	// Blocked lists the first MaxBlockedListed blocked namespaces (by name), with why, so
	// status stays small in a cluster with thousands of namespaces.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=10
	Blocked []BlockedNamespace `json:"blocked,omitempty"`
}

// AtLevel is the count of namespaces at a level (for Off: enrolled and not in the mesh yet), or
// nil for a level that has no count. Every place that counts by level goes through it, and a
// test over the ladder's rungs fails when a level has none.
func (s *NamespacesStatus) AtLevel(l AdoptionLevel) *int32 {
	switch l {
	case LevelOff:
		return &s.Pending
	case LevelObserve:
		return &s.Observe
	case LevelMutualTLS:
		return &s.MutualTLS
	case LevelZeroTrust:
		return &s.ZeroTrust
	}
	return nil
}

// CountAt reads the count of namespaces at a level; a level without a count reads as zero.
func (s *NamespacesStatus) CountAt(l AdoptionLevel) int32 {
	if p := s.AtLevel(l); p != nil {
		return *p
	}
	return 0
}

// MaxBlockedListed bounds status.namespaces.blocked.
const MaxBlockedListed = 10

// BlockedNamespace is a namespace held below its target level, and why.
type BlockedNamespace struct {
	// Name of the namespace.
	Name string `json:"name"`
	// Reason is a CamelCase reason, such as UninjectedPods.
	Reason string `json:"reason"`
	// Message says what holds the namespace back and how to unblock it.
	// +optional
	Message string `json:"message,omitempty"`
}

// MeshInstallation is a service mesh rolled out in gated stages, and the adoption level of each
// namespace. A cluster has one active MeshInstallation; a second one is reported as Conflict.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=mesh,categories=meshwright
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.version`
// +kubebuilder:printcolumn:name="Stage",type=string,JSONPath=`.status.stage`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Namespaces",type=integer,JSONPath=`.status.namespaces.enrolled`,description="Namespaces enrolled in the mesh"
// +kubebuilder:printcolumn:name="Observe",type=integer,JSONPath=`.status.namespaces.observe`,priority=1
// +kubebuilder:printcolumn:name="MutualTLS",type=integer,JSONPath=`.status.namespaces.mutualTLS`,priority=1
// +kubebuilder:printcolumn:name="ZeroTrust",type=integer,JSONPath=`.status.namespaces.zeroTrust`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MeshInstallation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is what the platform team wants.
	// +optional
	Spec MeshInstallationSpec `json:"spec,omitempty"`
	// Status is what the operator observed and did.
	// +optional
	Status MeshInstallationStatus `json:"status,omitempty"`
}

// MeshInstallationList is a list of MeshInstallations, for clients that list them.
// +kubebuilder:object:root=true
type MeshInstallationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the MeshInstallations.
	Items []MeshInstallation `json:"items"`
}
