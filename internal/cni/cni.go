// Package cni decides whether Istio CNI is installed and whether istiod injects for it, from
// spec.dataPlane.cni, the Pod Security level of the enrolled namespaces and what the cluster
// runs now. Istio's documented order is kept: the node agent is installed and Ready before
// istiod injects pods that rely on it (a pod injected for CNI on a node without the agent never
// starts), and on removal istiod stops injecting for it before the agent goes.
package cni

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/version"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/render"
	"github.com/meshwright/meshwright/internal/revision"
)

// refusingLevels are the Pod Security levels that refuse istio-init: it adds NET_ADMIN and
// NET_RAW and runs as root, which baseline and restricted forbid.
var refusingLevels = []string{"baseline", "restricted"}

// Needing names the enrolled namespaces (a target level above Off) whose Pod Security level, as
// their pod-security.kubernetes.io/enforce label says, refuses istio-init. The API server's
// default level is not served by the API, so a namespace without the label is not named.
func Needing(rules []meshv1.NamespaceRule, namespaces []corev1.Namespace, excluded []string) []string {
	var out []string
	for i := range namespaces {
		ns := &namespaces[i]
		if !slices.Contains(refusingLevels, ns.Labels[render.LabelPodSecurityEnforce]) || !ns.DeletionTimestamp.IsZero() {
			continue
		}
		if ladder.Enroll(ns.Name, ns.Labels, rules, excluded).Target != meshv1.LevelOff {
			out = append(out, ns.Name)
		}
	}
	slices.Sort(out)
	return out
}

// Current is what the cluster runs of Istio CNI now.
type Current struct {
	// Installed: the operator's CNI DaemonSet exists.
	Installed bool
	// Ready: it runs its current spec, Ready, on every node; NotReady says why not.
	Ready    bool
	NotReady string
	// IstiodInjects: an installed revision's injector injects for CNI (pilot.cni.enabled in its
	// ConfigMap's values, as the operator wrote it).
	IstiodInjects bool
	// Version is the Istio version the DaemonSet runs ("" when not installed or not known).
	Version string
	// ReliantPods counts the running pods injected for CNI (Istio's istio-validation init
	// container): a new sandbox of theirs, after a node restart say, needs the node agent.
	// Counted only while a removal is in question.
	ReliantPods int
	// Foreign names an Istio CNI DaemonSet the operator did not install ("namespace/name"):
	// someone else's, which the operator uses as it is and never takes over; ForeignReady
	// says whether it is Ready on every node.
	Foreign      string
	ForeignReady bool
}

// Decision is what to render.
type Decision struct {
	// Wanted: spec.dataPlane.cni and the namespaces ask for Istio CNI.
	Wanted bool
	// Install renders the cni chart: wanted, or, for the one the operator installed, still
	// needed: istiod injects for it, or running pods rely on it (removed only once neither).
	Install bool
	// Istiod tells istiod to inject for CNI: wanted, and the DaemonSet Ready (or istiod already
	// injects for it: a node joining does not turn injection back).
	Istiod bool
}

// Decide is the decision for a mode, the namespaces that need CNI and what runs. Auto keeps CNI
// once it is installed: pods injected for it in a restricted namespace could not be replaced
// without it, and a namespace's label can come and go. Someone else's Istio CNI is used, never
// installed over.
func Decide(mode meshv1.DataPlaneMode, needing []string, cur Current) Decision {
	var d Decision
	switch mode {
	case meshv1.ModeEnabled:
		d.Wanted = true
	case meshv1.ModeDisabled:
		d.Wanted = false
	default:
		d.Wanted = len(needing) > 0 || cur.Installed || cur.Foreign != ""
	}
	if cur.Foreign != "" {
		d.Istiod = d.Wanted && (cur.ForeignReady || cur.IstiodInjects)
		return d
	}
	d.Install = d.Wanted || cur.Installed && (cur.IstiodInjects || cur.ReliantPods > 0)
	d.Istiod = d.Wanted && (cur.Ready || cur.IstiodInjects)
	return d
}

// Version is the Istio version Istio CNI is rendered at. Istio documents that the CNI of a minor
// works with the control planes of that minor and the next, and that it is upgraded after the
// control plane. So the version running is kept until the active revision (activeRev, at
// active) is the only one installed and runs its version, Available; a CNI installed while an
// upgrade is under way takes the oldest installed revision's version.
func Version(active, activeRev string, installed []revision.Installed, running string) string {
	if len(installed) == 0 || len(installed) == 1 && installed[0].Name == activeRev && installed[0].Version == active && installed[0].Available {
		return active
	}
	if running != "" {
		return running
	}
	oldest, oldestV := active, version.MustParseGeneric("999.0.0")
	for _, r := range installed {
		if v, err := version.ParseGeneric(r.Version); err == nil && v.LessThan(oldestV) {
			oldest, oldestV = r.Version, v
		}
	}
	return oldest
}
