// Package meshspec derives from a MeshInstallation what several stages need to agree on: the
// control plane's namespace, the Istio version asked for, the active revision, the data plane,
// whether istiod takes several roots, and when a root rotation's switch happened. Pure functions of the object,
// in a package of their own so that stages do not import each other for them.
package meshspec

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/release"
	"github.com/meshwright/meshwright/internal/revision"
)

// ControlPlaneNamespace is where istiod and its CA live.
func ControlPlaneNamespace(mesh *meshv1.MeshInstallation) string {
	if ns := mesh.Spec.ControlPlane.Namespace; ns != "" {
		return ns
	}
	return meshv1.DefaultControlPlaneNamespace
}

// Ambient reports whether the mesh's data plane is Istio's ambient mode (spec.dataPlane.mode):
// the one a namespace gets unless its rule says otherwise (AmbientFor).
func Ambient(mesh *meshv1.MeshInstallation) bool {
	return mesh.Spec.DataPlane.Mode == meshv1.DataPlaneAmbient
}

// AmbientFor is the data plane a namespace's rule asks for (its dataPlaneMode, "" when the
// namespace is enrolled by no rule or the rule says nothing): ambient or not.
func AmbientFor(mesh *meshv1.MeshInstallation, ruleMode meshv1.DataPlaneKind) bool {
	if ruleMode != "" {
		return ruleMode == meshv1.DataPlaneAmbient
	}
	return Ambient(mesh)
}

// AmbientWanted reports whether some namespace may be in ambient mode: spec.dataPlane.mode or a
// rule's dataPlaneMode asks for it. The control plane then installs ambient mode's parts.
func AmbientWanted(mesh *meshv1.MeshInstallation) bool {
	if Ambient(mesh) {
		return true
	}
	for _, r := range mesh.Spec.Namespaces {
		if r.DataPlaneMode == meshv1.DataPlaneAmbient {
			return true
		}
	}
	return false
}

// MultiRoot reports whether istiod must accept a trust bundle of several roots: from the first
// rotation on (Istio's ISTIO_MULTIROOT_MESH). Installations that never rotated keep istiod as
// it was.
func MultiRoot(mesh *meshv1.MeshInstallation) bool {
	st := mesh.Status.Certificates
	return st != nil && (st.Generation > 0 || st.Rotation != nil)
}

// RefreshBefore is the time before which started pods must restart for a root rotation: in its
// Trust phase, those that may not trust the new root (RefreshForTrust); in its Switch phase,
// those that may hold a certificate of the old intermediate. Zero otherwise.
func RefreshBefore(mesh *meshv1.MeshInstallation) time.Time {
	st := mesh.Status.Certificates
	if st == nil || st.Rotation == nil {
		return time.Time{}
	}
	var since *metav1.Time
	switch st.Rotation.Phase {
	case meshv1.RotationTrust:
		since = st.Rotation.TrustedSince
	case meshv1.RotationSwitch:
		since = st.Rotation.SigningSince
	}
	if since == nil {
		return time.Time{}
	}
	return since.Time
}

// RefreshForTrust says RefreshBefore is the Trust phase's: only proxies that cannot take the new
// root live restart.
func RefreshForTrust(mesh *meshv1.MeshInstallation) bool {
	st := mesh.Status.Certificates
	return st != nil && st.Rotation != nil && st.Rotation.Phase == meshv1.RotationTrust
}

// DesiredVersion is the Istio version the spec asks for.
func DesiredVersion(mesh *meshv1.MeshInstallation) string {
	if mesh.Spec.Version != "" {
		return mesh.Spec.Version
	}
	return release.DefaultIstioVersion
}

// ActiveOf is the active revision, given the installed revisions and the installation's
// revision history (whose revisions count as installed: see revision.History.Known).
func ActiveOf(mesh *meshv1.MeshInstallation, installed []revision.Installed, history revision.History) string {
	return revision.Active(DesiredVersion(mesh), mesh.Spec.Upgrade.Strategy, history.Known(installed), history.Active)
}
