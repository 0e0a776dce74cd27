// Package revision decides which control-plane revision a MeshInstallation's spec asks for and
// what each installed revision serves. A revision is an istiod with its webhooks, selected by
// the istio.io/rev label; a revision-based upgrade installs the new version as a second revision,
// the ladder moves namespaces to it, and the old one is removed once nothing uses it. The
// decisions here are pure functions of the spec and of what was observed, so the controller,
// its tests and `kubectl meshwright` agree on them.
package revision

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

// Default is the revision of a mesh's first installation: istiod, istio-sidecar-injector and
// istio.io/rev=default, as Istio names an unrevisioned control plane.
const Default = "default"

// Label is Istio's revision label, on namespaces: which revision injects their pods.
const Label = "istio.io/rev"

// PodAnnotation is what Istio's injector writes on every pod it injects: its revision.
const PodAnnotation = "istio.io/rev"

// LegacyInjectionLabel is Istio's older namespace label; enabled means the default revision.
const LegacyInjectionLabel = "istio-injection"

// NameFor is the revision name an upgrade gives an Istio version, Istio's own convention:
// "1.31.5" becomes "1-31-5".
func NameFor(version string) string { return strings.ReplaceAll(version, ".", "-") }

// Installed is a revision found in the cluster: an istiod Deployment of the installation.
type Installed struct {
	Name string
	// Version is its Istio version; empty when it could not be told.
	Version string
	// Available is true when its istiod Deployment serves.
	Available bool
	// ProxyStats is true when it was rendered with the stats the traffic gates' bake reads
	// (render.Input.ProxyStats).
	ProxyStats bool
	// HoldApplication is true when it was rendered with holdApplicationUntilProxyStarts
	// (render.Input.HoldApplication).
	HoldApplication bool
}

// Active is the revision spec.version asks for, given the revisions installed and the one that
// was active in the last pass (from status). A version already installed is that revision: an
// upgrade set back is an abort, and nothing new is installed. A first installation is the
// default revision. Otherwise RevisionBased installs a new revision named for the version, and
// InPlace re-renders the revision that was active.
func Active(version string, strategy meshv1.UpgradeStrategy, installed []Installed, lastActive string) string {
	for _, r := range installed {
		if r.Version != "" && r.Version == version {
			return r.Name
		}
	}
	if len(installed) == 0 {
		if lastActive != "" {
			// istiod was deleted under a running installation: it is put back as it was.
			return lastActive
		}
		return Default
	}
	if strategy == meshv1.UpgradeInPlace {
		if lastActive != "" && slices.ContainsFunc(installed, func(r Installed) bool { return r.Name == lastActive }) {
			return lastActive
		}
		return installed[0].Name
	}
	return NameFor(version)
}

// Validator is the revision Istio's shared validating webhook (the base chart's default
// revision) sends config to: the active one once its istiod serves; until then one that serves,
// the last active first, so that Istio's resources can still be written while a new revision
// starts (the validator fails closed).
func Validator(active string, installed []Installed, lastActive string) string {
	serves := func(name string) bool {
		return slices.ContainsFunc(installed, func(r Installed) bool { return r.Name == name && r.Available })
	}
	switch {
	case serves(active):
		return active
	case lastActive != "" && serves(lastActive):
		return lastActive
	}
	for _, r := range installed {
		if r.Available {
			return r.Name
		}
	}
	return active
}

// Newer lists the installed revisions that run a newer Istio version than active: namespaces on
// them are moving back, because an upgrade was set back. Revisions of unknown version are left out.
func Newer(active string, installed []Installed) []string {
	var base []int
	for _, r := range installed {
		if r.Name == active {
			base = versionParts(r.Version)
		}
	}
	if base == nil {
		return nil
	}
	var out []string
	for _, r := range installed {
		if v := versionParts(r.Version); v != nil && slices.Compare(v, base) > 0 {
			out = append(out, r.Name)
		}
	}
	return out
}

// versionParts parses MAJOR.MINOR.PATCH; nil for anything else.
func versionParts(v string) []int {
	if !isVersion(v) {
		return nil
	}
	var out []int
	for _, p := range strings.Split(v, ".") {
		n, _ := strconv.Atoi(p)
		out = append(out, n)
	}
	return out
}

// VersionOf tells an installed revision's Istio version: the label an upgrade puts on the
// revisions it installs, else the version status last recorded for the revision, else the tag
// of istiod's image (the operator pins it to the version; a variant such as -distroless is
// allowed), else fallback (an installation made before revisions were reported: the
// status.version the operator wrote then, which is the version it installed).
func VersionOf(labelVersion, statusVersion, image, fallback string) string {
	switch {
	case labelVersion != "":
		return labelVersion
	case statusVersion != "":
		return statusVersion
	}
	if i := strings.LastIndex(image, ":"); i >= 0 && !strings.ContainsAny(image[i:], "/@") {
		tag, _, _ := strings.Cut(image[i+1:], "-")
		if isVersion(tag) {
			return tag
		}
	}
	return fallback
}

func isVersion(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

// OfNamespace is the revision a namespace's labels select, "" for none: istio-injection=enabled
// selects the default revision and wins over istio.io/rev, as in Istio.
func OfNamespace(labels map[string]string) string {
	if v, ok := labels[LegacyInjectionLabel]; ok {
		if v == "enabled" {
			return Default
		}
		return ""
	}
	return labels[Label]
}

// Usage is what a revision serves.
type Usage struct {
	// Namespaces select it by label; Pods carry its proxy.
	Namespaces, Pods int
	// Where names the first few namespaces it serves, for messages.
	Where []string
}

// Unused reports whether the revision can be removed.
func (u Usage) Unused() bool { return u.Namespaces == 0 && u.Pods == 0 }

// maxWhere bounds Usage.Where.
const maxWhere = 3

// Count adds up, per revision, the namespaces whose labels select it and the pods it injected
// (a pod's istio.io/rev annotation, set by the injector), given per namespace. steps names, per
// namespace, the revisions a running move goes between: a namespace counts for each of them too,
// so neither end of a move is removed under it.
func Count(namespaceLabels map[string]map[string]string, podRevisions map[string][]string, steps map[string][]string) map[string]Usage {
	out := map[string]Usage{}
	note := func(rev, ns string) Usage {
		u := out[rev]
		if len(u.Where) < maxWhere && !slices.Contains(u.Where, ns) {
			u.Where = append(u.Where, ns)
		}
		return u
	}
	names := slices.Sorted(maps.Keys(namespaceLabels))
	for _, ns := range names {
		revs := steps[ns]
		if rev := OfNamespace(namespaceLabels[ns]); rev != "" && !slices.Contains(revs, rev) {
			revs = append(revs, rev)
		}
		for _, rev := range revs {
			u := note(rev, ns)
			u.Namespaces++
			out[rev] = u
		}
	}
	nsOfPods := slices.Sorted(maps.Keys(podRevisions))
	for _, ns := range nsOfPods {
		for _, rev := range podRevisions[ns] {
			u := note(rev, ns)
			u.Pods++
			out[rev] = u
		}
	}
	return out
}

// Describe says what a retiring revision still serves, for status messages.
func Describe(name string, u Usage) string {
	return fmt.Sprintf("revision %s still serves %d namespace(s) and %d pod(s) (%s)", name, u.Namespaces, u.Pods, strings.Join(u.Where, ", "))
}

// ProxyContainer is the name of Istio's sidecar container.
const ProxyContainer = "istio-proxy"

// HasProxy reports whether a pod carries Istio's proxy, as a container or as a native sidecar
// (an init container that keeps running).
func HasProxy(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.Containers {
		if c.Name == ProxyContainer {
			return true
		}
	}
	for _, c := range pod.Spec.InitContainers {
		if c.Name == ProxyContainer {
			return true
		}
	}
	return false
}

// SidecarShape is the shape of the pod's proxy, as status names it: meshv1.SidecarsNative,
// meshv1.SidecarsClassic, or "" for a pod without one.
func SidecarShape(pod *corev1.Pod) string {
	switch {
	case NativeSidecar(pod):
		return meshv1.SidecarsNative
	case HasProxy(pod):
		return meshv1.SidecarsClassic
	}
	return ""
}

// CNIValidation is the init container Istio injects, where istiod injects for Istio CNI, in
// place of istio-init: it checks that the node agent set up the pod's redirection, with no
// capability.
const CNIValidation = "istio-validation"

// CNIMode is whether an injected pod relies on Istio CNI, as status names it: meshv1.CNIEnabled
// (Istio's istio-validation init container), meshv1.CNIDisabled, or "" for a pod without a proxy.
func CNIMode(pod *corev1.Pod) string {
	if !HasProxy(pod) {
		return ""
	}
	for _, c := range pod.Spec.InitContainers {
		if c.Name == CNIValidation {
			return meshv1.CNIEnabled
		}
	}
	return meshv1.CNIDisabled
}

// NativeSidecar reports whether the pod's proxy is a Kubernetes native sidecar: an init
// container with restartPolicy Always (Istio injects it so where every kubelet supports it,
// 1.33 or later, unless ENABLE_NATIVE_SIDECARS says otherwise). Such a proxy starts before the
// application and stops after it, so a Job's pod completes; a classic sidecar keeps it running.
func NativeSidecar(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.InitContainers {
		if c.Name == ProxyContainer && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			return true
		}
	}
	return false
}

// ProxyConfigXDSAgentEnv is the proxy's environment variable (set through
// meshConfig.defaultConfig.proxyMetadata) with which pilot-agent takes its ProxyConfig from
// istiod over xDS: with istiod's ISTIO_MULTIROOT_MESH that includes the mesh's trust bundle, so
// the proxy trusts a new root while it runs. Without it, a proxy keeps the roots it got with
// its certificate until its next one (hours later) or a restart. Istio's own CA rotation test
// sets both.
const ProxyConfigXDSAgentEnv = "PROXY_CONFIG_XDS_AGENT"

// LiveTrust reports whether a pod's proxy takes a new trust bundle while it runs: Envoy's
// sidecar with ProxyConfigXDSAgentEnv set. A proxyless gRPC application never does in time:
// pilot-agent rewrites its root file, but gRPC reads it again only every 15 minutes (the
// file_watcher refresh pilot-agent's bootstrap sets).
func LiveTrust(pod *corev1.Pod) bool {
	if Proxyless(pod) {
		return false
	}
	for _, cs := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for _, c := range cs {
			if c.Name != ProxyContainer {
				continue
			}
			for _, e := range c.Env {
				if e.Name == ProxyConfigXDSAgentEnv && e.Value == "true" {
					return true
				}
			}
		}
	}
	return false
}

const (
	// TemplatesAnnotation names the injection templates a pod asks Istio for; the injector
	// records no template in its status annotation, so this is how a pod's is known.
	TemplatesAnnotation = "inject.istio.io/templates"
	// GRPCAgentTemplate is the template of proxyless gRPC workloads: pilot-agent without Envoy,
	// the application taking its configuration and certificates over xDS.
	GRPCAgentTemplate = "grpc-agent"
	// TLSModeLabel set to "istio" on a proxyless gRPC pod makes istiod configure its server for
	// mTLS under PERMISSIVE too (gRPC cannot serve plaintext and mTLS on one port).
	TLSModeLabel = "security.istio.io/tlsMode"
)

// Proxyless reports whether Istio injected a pod with the grpc-agent template: its
// application, not an Envoy, enforces the mesh's mTLS and authorization.
func Proxyless(pod *corev1.Pod) bool {
	if !HasProxy(pod) {
		return false
	}
	for _, t := range strings.Split(pod.Annotations[TemplatesAnnotation], ",") {
		if strings.TrimSpace(t) == GRPCAgentTemplate {
			return true
		}
	}
	return false
}
