// Package render turns Istio's own Helm charts into the objects of the control plane, in
// process, with the Helm SDK. The charts of the default version are compiled into the operator
// (package charts), so installing it needs no chart repository and no network; other versions'
// charts come from spec.controlPlane.chartSource, loaded beforehand. Rendering is a pure
// function of its Input, and its result is memoised: parsing Istio's CRDs costs close to a
// second, and an unchanged spec must not pay it on every pass. A revision other than the default
// renders Istio's revisioned objects (istiod-<rev>, istio-sidecar-injector-<rev>), labelled with
// their revision and version.
package render

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/charts"
	"github.com/meshwright/meshwright/internal/gatewayapi"
	"github.com/meshwright/meshwright/internal/release"
	"github.com/meshwright/meshwright/internal/revision"
)

// Hub is where the pinned Istio images come from. Istio's charts at an unreleased commit default
// to a testing registry; the operator always sets the release's hub and tag.
const Hub = "docker.io/istio"

// LabelComponent names the chart an object was rendered from.
const LabelComponent = "meshwright.io/component"

// Component is one of Istio's charts, installed as one Helm release would be.
type Component struct {
	// Name is the release name and the value of LabelComponent.
	Name string
	// chart picks the component's chart from a version's set.
	chart func(*charts.Set) *chart.Chart
	// wanted tells whether an input renders the component; nil means always.
	wanted func(Input) bool
	// namespace is the component's release namespace, rendered with the first component in it
	// (Helm's --create-namespace); nil means the control plane's, which is not rendered.
	namespace func(Input) string
}

// Components are the charts of the control plane, in install order. The istiod chart's objects
// belong to one revision; the base chart's are shared by all of them; the cni chart's (a
// DaemonSet on every node, and its namespace) are rendered only where Input.CNI asks.
var Components = []Component{
	{Name: "base", chart: func(s *charts.Set) *chart.Chart { return s.Base }},
	{Name: ComponentIstiod, chart: func(s *charts.Set) *chart.Chart { return s.Istiod }},
	{Name: ComponentCNI, chart: func(s *charts.Set) *chart.Chart { return s.CNI },
		wanted: func(in Input) bool { return in.CNI }, namespace: func(Input) string { return CNINamespace }},
	{Name: ComponentZTunnel, chart: func(s *charts.Set) *chart.Chart { return s.ZTunnel },
		wanted: func(in Input) bool { return in.ZTunnel }, namespace: func(Input) string { return CNINamespace }},
}

// nodeAgent reports whether the component runs on every node beside the pods (see NodeAgent).
func (c Component) nodeAgent() bool { return NodeAgent(c.Name) }

// NodeAgent reports whether a component runs on every node beside the pods (Istio CNI,
// ztunnel): Istio upgrades those after the control plane, so they follow Input.CNIVersion, and
// are left as they run while that version's charts are not at hand.
func NodeAgent(component string) bool {
	return component == ComponentCNI || component == ComponentZTunnel
}

// ComponentIstiod is the component whose objects belong to a revision.
const ComponentIstiod = "istiod"

// ComponentCNI is Istio CNI's node agent.
const ComponentCNI = "cni"

// ComponentZTunnel is ztunnel, ambient mode's node proxy.
const ComponentZTunnel = "ztunnel"

// CNINamespace is where Istio CNI's DaemonSet runs, and ztunnel's in ambient mode: a namespace
// of their own, the only one the operator lets run privileged pods (the node agents write the
// nodes' CNI configuration, enter pods' network namespaces and need NET_ADMIN and SYS_ADMIN),
// so that neither the control plane's namespace nor any other is relaxed for them. istiod is
// told to trust ztunnel there (trustedZtunnelNamespace).
const CNINamespace = "istio-cni"

// ZTunnelDaemonSet is the name the ztunnel chart gives its DaemonSet.
const ZTunnelDaemonSet = "ztunnel"

// CNIDaemonSet is the name the cni chart gives its DaemonSet.
const CNIDaemonSet = "istio-cni-node"

// LabelPodSecurityEnforce is Pod Security admission's label for the level a namespace enforces.
const LabelPodSecurityEnforce = "pod-security.kubernetes.io/enforce"

// RuntimeDefaultSeccomp is the seccomp profile given to the injected containers where istiod
// injects for Istio CNI: Pod Security's restricted level requires one on every container whose
// pod sets none.
var RuntimeDefaultSeccomp = map[string]any{"type": "RuntimeDefault"}

// Input is everything a render depends on.
type Input struct {
	// Installation names the MeshInstallation; it labels every object.
	Installation string
	// Version is the Istio release; it must be one of SupportedVersions.
	Version string
	// Namespace is the control-plane namespace.
	Namespace string
	// KubeVersion is the cluster's version, for charts that branch on it (e.g. "v1.37.2").
	KubeVersion string
	// Values are the user's Helm values (spec.controlPlane.values), merged over the defaults.
	Values map[string]any
	// Revision is the control-plane revision to render: "" or "default" for the unrevisioned
	// one, else a name such as "1-31-5" (Istio's revision value; the objects carry
	// meshv1.LabelRevision and meshv1.LabelIstioVersion).
	Revision string
	// ValidatorRevision is the revision Istio's shared validating webhook (the base chart's
	// defaultRevision) points at; empty or "default" leaves the chart's default.
	ValidatorRevision string
	// Charts are the version's charts; nil means the charts this build embeds.
	Charts *charts.Set `json:"-"`
	// MultiRoot lets istiod take a trust bundle of several roots (ISTIO_MULTIROOT_MESH), which
	// a root rotation needs; set from the first rotation on, so installations that never
	// rotate keep istiod exactly as before.
	MultiRoot bool `json:",omitempty"`
	// ProxyStats adds Envoy's no_filter_chain_match (RefusedStat) to the stats the proxies
	// export (meshConfig.defaultConfig.proxyStatsMatcher): the traffic gates' bake reads it to
	// see plaintext refused under STRICT. Set for a revision this operator installs (its istiod
	// Deployment then carries LabelProxyStats); a revision installed by an earlier operator
	// keeps its config, so that upgrading the operator writes nothing to the control plane.
	ProxyStats bool `json:",omitempty"`
	// CNI renders Istio's cni chart, and its namespace allowed privileged pods.
	CNI bool `json:",omitempty"`
	// CNIVersion is the Istio version of the cni chart, "" for Version: Istio upgrades CNI
	// after the control plane (cni.Version). CNICharts are that version's charts; nil means
	// the charts this build embeds.
	CNIVersion string      `json:",omitempty"`
	CNICharts  *charts.Set `json:"-"`
	// IstiodCNI tells istiod that Istio CNI redirects the pods' traffic (pilot.cni.enabled):
	// it then injects Istio's istio-validation init container, which needs no capability,
	// instead of istio-init, with the RuntimeDefault seccomp profile. Set only once the CNI
	// DaemonSet is Ready: a pod injected for CNI on a node without it never starts.
	IstiodCNI bool `json:",omitempty"`
	// NativeSidecars is istiod's ENABLE_NATIVE_SIDECARS: "true", "false", or "" for istiod's own
	// default (native where every node's kubelet is 1.33 or later).
	NativeSidecars string `json:",omitempty"`
	// Ambient renders Istio's ambient profile: istiod with ambient enabled
	// (PILOT_ENABLE_AMBIENT, trusting ztunnel in CNINamespace), Istio CNI in ambient mode and
	// the ztunnel chart. Sidecars keep working beside it: a namespace chooses its data plane by
	// its labels. It needs CNI (Istio CNI redirects ambient pods' traffic to ztunnel).
	Ambient bool `json:",omitempty"`
	// ZTunnel renders the ztunnel chart (with Ambient), at CNIVersion like Istio CNI: both are
	// node agents, upgraded after the control plane.
	ZTunnel bool `json:",omitempty"`
	// GatewayAPI renders the Gateway API's standard-channel CRDs (package gatewayapi), which
	// waypoints need: set in ambient mode when no one else installed the Gateway API.
	GatewayAPI bool `json:",omitempty"`
	// HoldApplication sets Istio's holdApplicationUntilProxyStarts: with classic sidecars an
	// application's containers start only once the proxy is ready (native sidecars are started
	// first anyway, and the injector ignores it for them). Set for a revision this operator
	// installs (its istiod Deployment then carries LabelHoldApplication), like ProxyStats.
	HoldApplication bool `json:",omitempty"`
}

// LabelHoldApplication marks the istiod Deployment of a revision rendered with HoldApplication.
const LabelHoldApplication = "meshwright.io/hold-application"

// LabelProxyStats marks the istiod Deployment of a revision rendered with ProxyStats: the
// revision's record of it, so that later passes render it the same (see render.Input.ProxyStats).
const LabelProxyStats = "meshwright.io/proxy-stats"

// RefusedStat is the suffix of Envoy's listener stat that counts the connections no filter
// chain matched: on a sidecar's inbound listener under STRICT mTLS, plaintext refused.
const RefusedStat = "no_filter_chain_match"

// revisioned reports whether the input renders a named revision.
func (in Input) revisioned() bool { return in.Revision != "" && in.Revision != "default" }

// UnsupportedVersionError says the operator cannot render the requested version.
type UnsupportedVersionError struct{ Version string }

func (e *UnsupportedVersionError) Error() string {
	return fmt.Sprintf("Istio %s cannot be installed by this build of Meshwright; supported versions: %s",
		e.Version, strings.Join(SupportedVersions(), ", "))
}

// SupportedVersions are the Istio versions whose charts this build embeds; others come from
// spec.controlPlane.chartSource.
func SupportedVersions() []string { return []string{release.DefaultIstioVersion} }

// DefaultValues are the operator's values for a component, under the user's: the release's
// images and the control-plane namespace. The mesh CA needs no value: istiod mounts the
// cacerts Secret when it exists.
// A named revision sets Istio's revision value (istiod-<rev>, istio-sidecar-injector-<rev>); the
// shared validator follows ValidatorRevision.
func DefaultValues(in Input) map[string]any {
	v := map[string]any{
		"global": map[string]any{
			"hub":            Hub,
			"tag":            in.Version,
			"istioNamespace": in.Namespace,
		},
	}
	if in.revisioned() {
		v["revision"] = in.Revision
	}
	if in.Ambient {
		v["profile"] = "ambient"
		v["trustedZtunnelNamespace"] = CNINamespace
	}
	if r := in.ValidatorRevision; r != "" && r != "default" {
		v["defaultRevision"] = r
	}
	proxy := map[string]any{}
	pilot, env := map[string]any{}, map[string]any{}
	if in.MultiRoot {
		env["ISTIO_MULTIROOT_MESH"] = "true"
		// With it, istiod sends the trust bundle to the agents that ask over xDS: proxies
		// injected from now on trust a new root while they run (revision.LiveTrust), so the
		// next rotation need not restart them before signing switches.
		proxy["proxyMetadata"] = map[string]any{revision.ProxyConfigXDSAgentEnv: "true"}
	}
	if in.ProxyStats {
		proxy["proxyStatsMatcher"] = map[string]any{"inclusionSuffixes": []any{RefusedStat}}
	}
	if len(proxy) > 0 {
		v["meshConfig"] = map[string]any{"defaultConfig": proxy}
	}
	if in.NativeSidecars != "" {
		env["ENABLE_NATIVE_SIDECARS"] = in.NativeSidecars
	}
	if len(env) > 0 {
		pilot["env"] = env
	}
	global := v["global"].(map[string]any)
	if in.IstiodCNI {
		pilot["cni"] = map[string]any{"enabled": true}
		global["proxy"] = map[string]any{"seccompProfile": RuntimeDefaultSeccomp}
	}
	if in.HoldApplication {
		p, _ := global["proxy"].(map[string]any)
		if p == nil {
			p = map[string]any{}
		}
		p["holdApplicationUntilProxyStarts"] = true
		global["proxy"] = p
	}
	if len(pilot) > 0 {
		v["pilot"] = pilot
	}
	return v
}

var (
	memoMu  sync.Mutex
	memoKey [32]byte
	memoOut []*unstructured.Unstructured
)

// Render renders every component and returns its objects in apply order (CRDs first, webhooks
// last), each labelled with the operator's labels. The result is shared: callers must not
// modify the objects (DeepCopy them first).
func Render(in Input) ([]*unstructured.Unstructured, error) {
	var err error
	if in.Charts, err = chartsOf(in.Version, in.Charts); err != nil {
		return nil, err
	}
	cniDigest := ""
	if (in.CNI || in.ZTunnel) && in.CNIVersion != "" && in.CNIVersion != in.Version {
		if in.CNICharts, err = chartsOf(in.CNIVersion, in.CNICharts); err != nil {
			return nil, err
		}
		cniDigest = in.CNICharts.Digest
	}
	keyJSON, err := json.Marshal(struct {
		Input
		Digest, CNIDigest string
	}{in, in.Charts.Digest, cniDigest})
	if err != nil {
		return nil, err
	}
	key := sha256.Sum256(keyJSON)
	memoMu.Lock()
	defer memoMu.Unlock()
	if key == memoKey && memoOut != nil {
		return memoOut, nil
	}
	var out []*unstructured.Unstructured
	namespaces := map[string]bool{}
	for _, c := range Components {
		if c.wanted != nil && !c.wanted(in) {
			continue
		}
		cin := in
		if c.nodeAgent() && cniDigest != "" {
			cin.Version, cin.Charts = in.CNIVersion, in.CNICharts
		}
		objs, err := renderComponent(c, cin, namespaces)
		if err != nil {
			return nil, fmt.Errorf("rendering Istio's %s chart: %w", c.Name, err)
		}
		out = append(out, objs...)
	}
	if in.GatewayAPI {
		crds, err := gatewayAPICRDs(in.Installation)
		if err != nil {
			return nil, err
		}
		out = append(out, crds...)
	}
	sortForApply(out)
	memoKey, memoOut = key, out
	return out, nil
}

// decodedGatewayAPI is the Gateway API's CRDs, decoded once: a megabyte of YAML.
var decodedGatewayAPI = sync.OnceValues(func() ([]*unstructured.Unstructured, error) {
	return Decode(gatewayapi.StandardCRDs)
})

// gatewayAPICRDs are copies of the Gateway API's CRDs with the operator's labels: what an
// installation applies, keeps and removes (on uninstall, with removeCRDsOnDelete) like Istio's.
func gatewayAPICRDs(installation string) ([]*unstructured.Unstructured, error) {
	crds, err := decodedGatewayAPI()
	if err != nil {
		return nil, fmt.Errorf("decoding the Gateway API's CRDs: %w", err)
	}
	out := make([]*unstructured.Unstructured, len(crds))
	for i, crd := range crds {
		out[i] = crd.DeepCopy()
		labels := out[i].GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[meshv1.LabelManagedBy] = meshv1.ManagedByValue
		labels[meshv1.LabelInstallation] = installation
		labels[LabelComponent] = gatewayapi.Component
		out[i].SetLabels(labels)
	}
	return out, nil
}

// chartsOf is set, or the charts this build embeds for version when set is nil.
func chartsOf(version string, set *charts.Set) (*charts.Set, error) {
	if set != nil {
		return set, nil
	}
	if !slices.Contains(SupportedVersions(), version) {
		return nil, &UnsupportedVersionError{Version: version}
	}
	return charts.Embedded(version)
}

// CRDs are Istio's CRDs of a release as someone other than the operator installs them: the
// OLM bundle ships these (the operator then runs with --istio-crds=external), and tests install
// them where there is no control plane. They carry none of the operator's labels, so nothing
// marks them as an installation's.
func CRDs(version string) ([]*unstructured.Unstructured, error) {
	objs, err := Render(Input{Installation: "crds", Version: version, Namespace: "istio-system"})
	if err != nil {
		return nil, err
	}
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		crd := o.DeepCopy()
		labels := crd.GetLabels()
		for _, k := range []string{meshv1.LabelManagedBy, meshv1.LabelInstallation, LabelComponent} {
			delete(labels, k)
		}
		crd.SetLabels(labels)
		out = append(out, crd)
	}
	return out, nil
}

// renderComponent renders one chart; rendered are the namespaces already rendered with an
// earlier component, to which the component's own is added.
func renderComponent(c Component, in Input, rendered map[string]bool) ([]*unstructured.Unstructured, error) {
	chrt := c.chart(in.Charts)
	if chrt == nil {
		return nil, fmt.Errorf("the charts of Istio %s have no %s chart", in.Version, c.Name)
	}
	caps := chartutil.DefaultCapabilities.Copy()
	if in.KubeVersion != "" {
		kv, err := chartutil.ParseKubeVersion(in.KubeVersion)
		if err != nil {
			return nil, fmt.Errorf("kube version %q: %w", in.KubeVersion, err)
		}
		caps.KubeVersion = *kv
	}
	namespace := in.Namespace
	if c.namespace != nil {
		namespace = c.namespace(in)
	}
	values := chartutil.CoalesceTables(deepCopy(in.Values), DefaultValues(in))
	rv, err := chartutil.ToRenderValues(chrt, values, chartutil.ReleaseOptions{
		Name: c.Name, Namespace: namespace, Revision: 1, IsInstall: true,
	}, caps)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(chrt, rv)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []*unstructured.Unstructured
	if c.namespace != nil && !rendered[namespace] {
		rendered[namespace] = true
		out = append(out, componentNamespace(c, in, namespace))
	}
	for _, name := range names {
		if !strings.HasSuffix(name, ".yaml") && !strings.HasSuffix(name, ".yml") {
			continue // NOTES.txt and helpers
		}
		objs, err := Decode([]byte(files[name]))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		for _, o := range objs {
			if o.GetNamespace() == "" && namespaced(o.GetKind()) {
				o.SetNamespace(namespace)
			}
			labels := o.GetLabels()
			if labels == nil {
				labels = map[string]string{}
			}
			labels[meshv1.LabelManagedBy] = meshv1.ManagedByValue
			labels[meshv1.LabelInstallation] = in.Installation
			labels[LabelComponent] = c.Name
			if in.revisioned() && c.Name == ComponentIstiod {
				labels[meshv1.LabelRevision] = in.Revision
				labels[meshv1.LabelIstioVersion] = in.Version
			}
			if in.ProxyStats && c.Name == ComponentIstiod && o.GetKind() == "Deployment" {
				labels[LabelProxyStats] = "true"
			}
			if c.nodeAgent() {
				labels[meshv1.LabelIstioVersion] = in.Version
			}
			if in.HoldApplication && c.Name == ComponentIstiod && o.GetKind() == "Deployment" {
				labels[LabelHoldApplication] = "true"
			}
			o.SetLabels(labels)
			out = append(out, o)
		}
	}
	return out, nil
}

// componentNamespace is the namespace of a component that has one of its own (the node agents'):
// the chart does not render it, Helm would be told --create-namespace. It is allowed privileged
// pods, which the node agents are.
func componentNamespace(c Component, in Input, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind("Namespace")
	u.SetName(name)
	u.SetLabels(map[string]string{
		meshv1.LabelManagedBy: meshv1.ManagedByValue, meshv1.LabelInstallation: in.Installation, LabelComponent: c.Name,
		LabelPodSecurityEnforce: "privileged",
	})
	return u
}

// Decode reads a stream of YAML (or JSON) documents into objects, skipping empty ones, with
// apimachinery's decoder: the one decoder of rendered charts, and of the manifests the tests read.
func Decode(doc []byte) ([]*unstructured.Unstructured, error) {
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(doc), 4096)
	var out []*unstructured.Unstructured
	for {
		obj := map[string]any{}
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(obj) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: obj})
	}
}

// applyOrder ranks kinds the way Helm installs them: what others depend on first.
var applyOrder = []string{
	"CustomResourceDefinition", "Namespace", "ServiceAccount", "Secret", "ConfigMap",
	"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service", "Deployment",
	"HorizontalPodAutoscaler", "PodDisruptionBudget", "ValidatingAdmissionPolicy",
	"ValidatingAdmissionPolicyBinding", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
}

func rank(kind string) int {
	if i := slices.Index(applyOrder, kind); i >= 0 {
		return i
	}
	return len(applyOrder)
}

func sortForApply(objs []*unstructured.Unstructured) {
	sort.SliceStable(objs, func(i, j int) bool { return rank(objs[i].GetKind()) < rank(objs[j].GetKind()) })
}

// clusterScoped are the kinds Istio's charts render that have no namespace.
var clusterScoped = []string{
	"CustomResourceDefinition", "Namespace", "ClusterRole", "ClusterRoleBinding",
	"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
	"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
}

func namespaced(kind string) bool { return !slices.Contains(clusterScoped, kind) }

// deepCopy copies the user's values: Helm's coalescing writes into the map it is given.
func deepCopy(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return runtime.DeepCopyJSON(m)
}
