package report

import (
	"fmt"
	"io"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/ladder"
)

// Condition is one condition as the reports show it.
type Condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// StageStatus is one line of the stages checklist.
type StageStatus struct {
	Stage     string    `json:"stage"`
	Condition Condition `json:"condition"`
}

// CA is the mesh CA's expiry.
type CA struct {
	NotAfter time.Time `json:"notAfter"`
	// ExpiresIn is the time left when the report was made ("89d"); negative once expired.
	ExpiresIn string `json:"expiresIn"`
	Issuer    string `json:"issuer,omitempty"`
}

// LevelCount is how many namespaces stand at a level.
type LevelCount struct {
	Level string `json:"level"`
	Count int32  `json:"count"`
}

// Namespaces is the ladder's progress.
type Namespaces struct {
	Enrolled   int32 `json:"enrolled"`
	InProgress int32 `json:"inProgress"`
	Blocked    int32 `json:"blocked"`
	// Ambient counts the namespaces in the mesh in ambient mode (the others have sidecars).
	Ambient int32        `json:"ambient,omitempty"`
	Levels  []LevelCount `json:"levels"`
}

// Revision is a control-plane revision in use: the namespaces labelled for it are injected by
// its istiod. There is one, except during a revision-based upgrade, when the active revision
// runs beside the one namespaces are moved from.
type Revision struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	// Active is the revision namespaces move to; the others are retiring.
	Active bool `json:"active"`
	// Namespaces is how many namespaces select it; Pods how many running pods it injected.
	Namespaces int32 `json:"namespaces"`
	Pods       int32 `json:"pods"`
}

// Blocked is a namespace held below its target, why, and what unblocks it.
type Blocked struct {
	Namespace string `json:"namespace"`
	Reason    string `json:"reason"`
	Message   string `json:"message,omitempty"`
	Fix       string `json:"fix"`
}

// Status is `kubectl meshwright status`.
type Status struct {
	Installation string `json:"installation"`
	Version      string `json:"version,omitempty"`
	// Stage is where the rollout is: the first stage that is not Ready, or Complete.
	Stage string    `json:"stage,omitempty"`
	Ready Condition `json:"ready"`
	// Degraded is set when a Ready stage needs attention.
	Degraded *Condition `json:"degraded,omitempty"`
	// Stale is true while the operator has not yet acted on the latest spec.
	Stale  bool          `json:"stale,omitempty"`
	Stages []StageStatus `json:"stages"`
	CA     *CA           `json:"ca,omitempty"`
	// Rotation is the root rotation in progress, if any.
	Rotation  *meshv1.RootRotationStatus `json:"rotation,omitempty"`
	Revisions []Revision                 `json:"revisions,omitempty"`
	// Sidecars is the shape of the proxy the active revision injects (status.dataPlane):
	// Native or Classic; empty before the Injection stage probed it.
	Sidecars string `json:"sidecars,omitempty"`
	// CNI is whether the injected pods rely on Istio CNI (status.dataPlane.cni): Enabled or
	// Disabled; empty before the Injection stage probed it.
	CNI        string     `json:"cni,omitempty"`
	Namespaces Namespaces `json:"namespaces"`
	Blocked    []Blocked  `json:"blocked,omitempty"`
	// BlockedNotListed counts the blocked namespaces the status does not name (it lists ten).
	BlockedNotListed int32 `json:"blockedNotListed,omitempty"`
}

func conditionOf(mesh *meshv1.MeshInstallation, t string) Condition {
	c := meta.FindStatusCondition(mesh.Status.Conditions, t)
	if c == nil {
		return Condition{Type: t, Status: "Unknown", Reason: meshv1.ReasonPending, Message: "Not reported yet."}
	}
	return Condition{Type: c.Type, Status: string(c.Status), Reason: c.Reason, Message: c.Message}
}

// StatusOf reads a MeshInstallation's status as of now.
func StatusOf(mesh *meshv1.MeshInstallation, now time.Time) Status {
	s := Status{Installation: mesh.Name, Version: mesh.Status.Version, Stage: string(mesh.Status.Stage),
		Ready: conditionOf(mesh, meshv1.ConditionReady), Stale: mesh.Status.ObservedGeneration != mesh.Generation}
	if d := conditionOf(mesh, meshv1.ConditionDegraded); d.Status == "True" {
		s.Degraded = &d
	}
	for _, sc := range meshv1.Stages {
		s.Stages = append(s.Stages, StageStatus{Stage: string(sc.Name), Condition: conditionOf(mesh, sc.Condition)})
	}
	if c := mesh.Status.Certificates; c != nil && c.NotAfter != nil {
		s.CA = &CA{NotAfter: c.NotAfter.UTC(), ExpiresIn: ago(c.NotAfter.Sub(now)), Issuer: c.Issuer}
	}
	if c := mesh.Status.Certificates; c != nil && c.Rotation != nil {
		s.Rotation = c.Rotation
	}
	if ns := mesh.Status.Namespaces; ns != nil {
		s.Namespaces = Namespaces{Enrolled: ns.Enrolled, InProgress: ns.InProgress, Blocked: ns.BlockedCount, Ambient: ns.Ambient}
		for _, l := range ladder.Levels() {
			s.Namespaces.Levels = append(s.Namespaces.Levels, LevelCount{string(l), ns.CountAt(l)})
		}
		for _, b := range ns.Blocked {
			s.Blocked = append(s.Blocked, Blocked{Namespace: b.Name, Reason: b.Reason, Message: b.Message, Fix: Fix(b.Reason, b.Name)})
		}
		s.BlockedNotListed = ns.BlockedCount - int32(len(ns.Blocked)) //nolint:gosec // G115: a count of pods or namespaces, far below 2^31
	}
	if dp := mesh.Status.DataPlane; dp != nil {
		s.Sidecars, s.CNI = dp.Sidecars, dp.CNI
	}
	for _, r := range mesh.Status.Revisions {
		s.Revisions = append(s.Revisions, Revision{Name: r.Name, Version: r.Version, Active: r.Active, Namespaces: r.Namespaces, Pods: r.Pods})
	}
	return s
}

// Fix says what unblocks a namespace held for reason: a command to run or a thing to check.
func Fix(reason, namespace string) string {
	switch reason {
	case meshv1.ReasonUninjectedPods:
		return fmt.Sprintf("Give those pods the proxy (drop sidecar.istio.io/inject=false from their template) or move them out; list them: kubectl get pods -n %s -L sidecar.istio.io/inject", namespace)
	case meshv1.ReasonPodsNotReady:
		return fmt.Sprintf("Wait for the pods, or see why they are not Ready: kubectl get pods -n %s", namespace)
	case meshv1.ReasonDisruptionBudget:
		return fmt.Sprintf("The restart waits for the budget to allow it: kubectl get pdb -n %s", namespace)
	case meshv1.ReasonInjectionLabelConflict:
		return fmt.Sprintf("Remove the other injection label: kubectl label namespace %s istio-injection- (or the other istio.io/rev)", namespace)
	case meshv1.ReasonPeerAuthenticationConflict:
		return fmt.Sprintf("Make it STRICT or delete it: kubectl get peerauthentication -n %s", namespace)
	case meshv1.ReasonRolledBack:
		return fmt.Sprintf("Fix what kept the pods from becoming Ready, then release the hold: kubectl annotate namespace %s %s-", namespace, meshv1.AnnotationLadder)
	case meshv1.ReasonPlaintextTraffic:
		return fmt.Sprintf("Enrol the callers' namespaces at Observe or higher (kubectl label namespace <caller> %s=Observe), or route outside callers through a gateway; then %s goes STRICT after a whole observe window without plaintext", meshv1.LabelTargetLevel, namespace)
	case meshv1.ReasonWouldDenyTraffic:
		return fmt.Sprintf("Add the callers' namespaces to the allowFrom of the rule that enrols %s (kubectl edit meshinstallation), or lower its target", namespace)
	case meshv1.ReasonTrafficRegressed:
		return fmt.Sprintf("Find and fix the caller the message names (refused plaintext: the access log of %s's proxies, flag NR), then change the MeshInstallation's spec to release the hold: kubectl annotate namespace %s %s-", namespace, namespace, meshv1.AnnotationLadder)
	case meshv1.ReasonNonMeshCallers:
		return fmt.Sprintf("Exempt the named Service ports in the plaintextPorts of the rule that enrols %s (kubectl edit meshinstallation), or move the callers into the mesh", namespace)
	case meshv1.ReasonAmbientTrafficUnread:
		return "Configure spec.telemetry.prometheus with a Prometheus that scrapes ztunnel, keep it at Observe, or take ambient namespaces up gated on pods only: kubectl patch meshinstallation <name> --type merge -p '{\"spec\":{\"rollout\":{\"trafficGates\":\"Skip\"}}}'"
	case meshv1.ReasonPodsOutsideAmbient:
		return fmt.Sprintf("Bring those pods into ambient mode or move them out; list them: kubectl get pods -n %s -L istio.io/dataplane-mode", namespace)
	case meshv1.ReasonSidecarsRequested:
		return fmt.Sprintf("Drop sidecar.istio.io/inject=true and istio.io/rev from the named workloads' pod templates, or keep %s on sidecars (dataPlaneMode: Sidecar in its rule)", namespace)
	case meshv1.ReasonPodsNotMigratable:
		return fmt.Sprintf("Let the named pods be restarted (resume, or switch to a rolling update), recreate bare pods after the migration, or keep %s on sidecars (dataPlaneMode: Sidecar)", namespace)
	case meshv1.ReasonAmbientRollbackIncomplete:
		return fmt.Sprintf("Restart the named pods so that they get the proxy: kubectl rollout restart deployment,statefulset,daemonset -n %s", namespace)
	case meshv1.ReasonInvalidTargetLevel:
		return fmt.Sprintf("Set a level: kubectl label namespace %s %s=MutualTLS --overwrite (Off, Observe, MutualTLS or ZeroTrust)", namespace, meshv1.LabelTargetLevel)
	}
	return "See docs/troubleshooting.md#" + strings.ToLower(reason)
}

// Text writes the status for a terminal: the stages as a checklist, the control plane, the
// namespaces per level as bars, and each blocked namespace with what unblocks it.
func (s Status) Text(w io.Writer, st Style) error {
	p := &printer{w: w}
	for _, section := range []func(*printer, Style){s.headText, s.stagesText, s.controlPlaneText, s.namespacesText, s.blockedText} {
		section(p, st)
	}
	return p.err
}

// headText is the installation, its version and whether it is Ready, stale or Degraded.
func (s Status) headText(p *printer, st Style) {
	ready := st.paint(green, "Ready")
	if s.Ready.Status != "True" {
		ready = st.paint(red, "Not Ready") + " (" + s.Ready.Reason + ")"
	}
	head := "MeshInstallation " + st.paint(bold, s.Installation)
	if s.Version != "" {
		head += " · Istio " + s.Version
	}
	p.wrapped(0, head+" · "+ready)
	if s.Stale {
		p.wrapped(0, st.paint(yellow, "The operator has not acted on the latest spec yet: what follows may be about the one before."))
	}
	if s.Degraded != nil {
		p.line("%s %s", st.paint(red, "Degraded:"), s.Degraded.Reason)
		p.wrapped(2, s.Degraded.Message)
	}
}

// stagesText is the stages as a checklist, with what the rollout waits for.
func (s Status) stagesText(p *printer, st Style) {
	p.line("")
	p.line("Stages")
	shown := false
	for _, sg := range s.Stages {
		c := sg.Condition
		extra := ""
		if sg.Stage == string(meshv1.StageCertificates) && s.CA != nil {
			extra = fmt.Sprintf("CA expires in %s (%s)", s.CA.ExpiresIn, s.CA.NotAfter.Format("2006-01-02"))
		}
		p.line("  %s %s %s%s", st.mark(c.Status), pad(sg.Stage, 13), pad(c.Reason, 27), extra)
		if r := s.Rotation; sg.Stage == string(meshv1.StageCertificates) && r != nil {
			// Ready all along, so its message would not show: the rotation says where it is.
			p.wrapped(6, rotationLine(r))
			if c.Message != "" {
				p.wrapped(6, c.Message)
			}
		}
		// The message of the first stage that is not Ready says what the rollout waits for.
		if c.Status != "True" && !shown && c.Message != "" {
			p.wrapped(6, c.Message)
			shown = true
		}
	}
}

// controlPlaneText is the revisions and the shape of the sidecars they inject.
func (s Status) controlPlaneText(p *printer, _ Style) {
	if len(s.Revisions) == 0 && s.Sidecars == "" {
		return
	}
	p.line("")
	p.line("Control plane")
	if len(s.Revisions) > 1 {
		p.line("  upgrading: namespaces move to the active revision; the others go once unused")
	}
	for _, r := range s.Revisions {
		role := "retiring"
		if r.Active {
			role = "active"
		}
		p.line("  %s Istio %s %s %d namespace(s), %d pod(s)", pad(r.Name, 10), pad(r.Version, 8), pad(role, 9), r.Namespaces, r.Pods)
	}
	switch s.Sidecars {
	case meshv1.SidecarsNative:
		p.wrapped(2, "sidecars: native (the proxy starts before the application and stops after it, so Jobs complete)")
	case meshv1.SidecarsClassic:
		p.wrapped(2, "sidecars: classic (a Job's proxy would keep its pod running: namespaces with Jobs stay out of the mesh, JobsNeedNativeSidecars)")
	}
	switch s.CNI {
	case meshv1.CNIEnabled:
		p.wrapped(2, "cni: enabled (Istio CNI redirects the pods' traffic: no istio-init, no NET_ADMIN, admitted under Pod Security baseline and restricted)")
	case meshv1.CNIDisabled:
		p.wrapped(2, "cni: disabled (istio-init sets up each pod's redirection with NET_ADMIN and NET_RAW, which Pod Security baseline and restricted refuse)")
	}
}

// namespacesText is the namespaces per level, as bars.
func (s Status) namespacesText(p *printer, _ Style) {
	if len(s.Namespaces.Levels) == 0 {
		return
	}
	n := s.Namespaces
	p.line("")
	head := fmt.Sprintf("Namespaces: %d enrolled, %d in progress, %d blocked", n.Enrolled, n.InProgress, n.Blocked)
	if n.Ambient > 0 {
		head += fmt.Sprintf("; %d in ambient mode", n.Ambient)
	}
	p.line("%s", head)
	for _, l := range n.Levels {
		p.line("  %s %s %d", pad(l.Level, 10), bar(l.Count, n.Enrolled, 40), l.Count)
	}
}

// blockedText is each blocked namespace with what unblocks it.
func (s Status) blockedText(p *printer, st Style) {
	if len(s.Blocked) == 0 {
		return
	}
	p.line("")
	p.line("Blocked")
	for _, b := range s.Blocked {
		p.line("  %s %s", st.paint(bold, b.Namespace), st.paint(red, b.Reason))
		p.wrapped(4, b.Message)
		p.wrapped(4, "→ "+b.Fix)
	}
	if s.BlockedNotListed > 0 {
		p.line("  and %d more (status lists the first %d)", s.BlockedNotListed, meshv1.MaxBlockedListed)
	}
}

// rotationLine places a root rotation's phase among the phases.
func rotationLine(r *meshv1.RootRotationStatus) string {
	phases := []meshv1.RotationPhase{meshv1.RotationPrepare, meshv1.RotationTrust, meshv1.RotationSwitch, meshv1.RotationDrop}
	var out []string
	for _, ph := range phases {
		if ph == r.Phase {
			out = append(out, "["+string(ph)+"]")
		} else {
			out = append(out, string(ph))
		}
	}
	line := "root rotation: " + strings.Join(out, " > ")
	if r.PendingPods > 0 {
		line += fmt.Sprintf("; %d pod(s) to restart", r.PendingPods)
	}
	return line
}
