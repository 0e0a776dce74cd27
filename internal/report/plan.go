package report

import (
	"fmt"
	"io"
	"strings"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/adoption"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/policy"
)

// Actions a namespace can take next.
const (
	ActionAtTarget   = "at target"
	ActionStep       = "step"
	ActionStepping   = "stepping"
	ActionRollback   = "roll back"
	ActionWait       = "wait"
	ActionBlocked    = "blocked"
	ActionOffboarded = "release"
)

// NamespaceMove is what the ladder will do next with one namespace, and why.
type NamespaceMove struct {
	Namespace string `json:"namespace"`
	Current   string `json:"current"`
	Target    string `json:"target"`
	Action    string `json:"action"`
	// To is the level a step goes to.
	To string `json:"to,omitempty"`
	// Revision is the control-plane revision a move between revisions goes to (To is then the
	// level the namespace stays at).
	Revision string `json:"revision,omitempty"`
	// Reason and Detail say why a namespace waits or is blocked, or what a step does.
	Reason string `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
	// Defaults is true for a step (or its rollback) that changes the resilience defaults at
	// the level, To.
	Defaults bool `json:"defaults,omitempty"`
	// DataPlane is how the namespace is (or enters) in the mesh: "Sidecar" or "Ambient", or
	// "Sidecar → Ambient" while a migration moves its pods (the reverse on its rollback); empty
	// while it is not in the mesh.
	DataPlane string `json:"dataPlane,omitempty"`
	// Restart are the workloads a step restarts now.
	Restart []string `json:"restart,omitempty"`
	// Uninjected are the running pods without Istio's proxy (with sidecars).
	Uninjected []string `json:"uninjected,omitempty"`
	// Uncaptured are the running pods Istio CNI has not redirected to ztunnel (in ambient mode).
	Uncaptured []string `json:"uncaptured,omitempty"`
	// Policies are the policies the namespace carries once this pass is carried out.
	Policies []string `json:"policies,omitempty"`
	// Resilience is the resilience defaults the namespace carries once this pass is carried
	// out, and what they leave to others; nil when it carries none.
	Resilience *ResilienceMove `json:"resilience,omitempty"`
	Fix        string          `json:"fix,omitempty"`
}

// ResilienceMove is a namespace's resilience defaults in a plan.
type ResilienceMove struct {
	// Values says what the defaults are.
	Values string `json:"values"`
	// Objects are the operator's objects that carry them (Kind/name).
	Objects []string `json:"objects,omitempty"`
	// Hidden are the Services whose callers get a team's settings instead, and from what.
	Hidden []string `json:"hidden,omitempty"`
	// HeldBy names a team's object that keeps the namespace's DestinationRule from being
	// written.
	HeldBy string `json:"heldBy,omitempty"`
	// Declined are the objects a user deleted, which are not written until restored.
	Declined []string `json:"declined,omitempty"`
	// Partial is true when some Service's callers do not get every default.
	Partial bool `json:"partial,omitempty"`
	// Pending is true for defaults the namespace is to carry, which a step has not applied
	// yet (it waits for a slot, or what holds it says).
	Pending bool `json:"pending,omitempty"`
}

// Plan is `kubectl meshwright plan`: what the operator does next, computed by the code the
// operator runs (adoption.Planner and ladder.Decide).
type Plan struct {
	Installation string `json:"installation"`
	// Stage is where the rollout stands; the ladder moves namespaces only once every stage
	// before Adoption is Ready.
	Stage string `json:"stage,omitempty"`
	// Summary is the AdoptionReady message this plan would give.
	Summary    string          `json:"summary"`
	Namespaces []NamespaceMove `json:"namespaces"`
	// Spec is set by `plan -f`: what changing the spec would change.
	Spec *SpecChange `json:"specChange,omitempty"`
}

// SpecChange is what a new spec changes before anything is applied.
type SpecChange struct {
	// Targets are the namespaces whose target level the new spec changes ("shop: Observe →
	// MutualTLS").
	Targets []string `json:"targets,omitempty"`
	// ControlPlane lists the control-plane objects the new spec renders differently: added,
	// removed, or changed (with the first field that differs).
	ControlPlane []string `json:"controlPlane,omitempty"`
	// ControlPlaneError is the charts' error when the new spec does not render.
	ControlPlaneError string `json:"controlPlaneError,omitempty"`
}

// PlanOf describes the plans of a pass for mesh, towards the target revision.
func PlanOf(mesh *meshv1.MeshInstallation, plans []adoption.NamespacePlan, target adoption.Target) Plan {
	adoptReported(mesh, plans)
	out := Plan{Installation: mesh.Name, Stage: string(mesh.Status.Stage),
		Summary: adoption.Summarize(plans, adoption.SettingsOf(mesh, target)).Message}
	for _, pl := range plans {
		out.Namespaces = append(out.Namespaces, moveOf(mesh, pl))
	}
	return out
}

// dataPlaneOf names how a namespace carrying these effects is in the mesh, "" when it is not:
// both data planes, in the order of the step's move, while a migration (or its rollback) moves
// its pods from one to the other.
func dataPlaneOf(e ladder.Effects, step *ladder.Step) string {
	switch {
	case !e.Inject:
		return ""
	case e.Ambient && e.Sidecars && step != nil && step.DataPlane == meshv1.DataPlaneSidecar:
		return string(meshv1.DataPlaneAmbient) + " → " + string(meshv1.DataPlaneSidecar)
	case e.Ambient && (e.Sidecars || step != nil && step.DataPlane == meshv1.DataPlaneAmbient):
		return string(meshv1.DataPlaneSidecar) + " → " + string(meshv1.DataPlaneAmbient)
	case e.Ambient:
		return string(meshv1.DataPlaneAmbient)
	}
	return string(meshv1.DataPlaneSidecar)
}

func moveOf(mesh *meshv1.MeshInstallation, pl adoption.NamespacePlan) NamespaceMove {
	d := pl.Decision
	m := NamespaceMove{Namespace: pl.Namespace.Name, Current: string(pl.Current), Target: string(pl.Enrollment.Target),
		Restart: d.Restart, Uninjected: pl.Pods.Uninjected, DataPlane: dataPlaneOf(d.Effects, d.State.Step)}
	if pl.InAmbient() {
		m.Uninjected, m.Uncaptured = nil, pl.Pods.Uncaptured
	}
	if step := d.State.Step; step != nil && step.To == d.Level && step.Revision != "" {
		m.Revision = step.Revision
	}
	m.Defaults = d.State.Step != nil && d.State.Step.Defaults
	switch step := d.State.Step; {
	case step != nil && step.Rollback:
		m.Action, m.To, m.Reason, m.Detail = ActionRollback, string(step.To), step.Reason, step.Message
		switch {
		case m.Detail != "":
		case step.Revision != "":
			m.Detail = fmt.Sprintf("Goes back to control-plane revision %s.", step.Revision)
		case step.DataPlane == meshv1.DataPlaneSidecar:
			m.Detail = "Goes back to sidecars: the injection label returns, the workloads restart with Istio's proxy, then the ambient label goes."
		}
	case step != nil && pl.State.Step == nil:
		m.Action, m.To = ActionStep, string(step.To)
		m.Detail = fmt.Sprintf("Starts the %s.", stepName(d.Level, step))
	case step != nil && d.Blocked.Reason != "":
		// A step held where it is (a ZeroTrust dry-run that would deny callers).
		m.Action, m.To, m.Reason, m.Detail = ActionBlocked, string(step.To), d.Blocked.Reason, d.Blocked.Message
		m.Fix = Fix(d.Blocked.Reason, pl.Namespace.Name)
	case step != nil:
		m.Action, m.To = ActionStepping, string(step.To)
		m.Detail = d.Waiting
		if m.Detail == "" {
			m.Detail = fmt.Sprintf("In the %s.", stepName(d.Level, step))
		}
	case d.Blocked.Reason != "":
		m.Action, m.Reason, m.Detail = ActionBlocked, d.Blocked.Reason, d.Blocked.Message
		m.Fix = Fix(d.Blocked.Reason, pl.Namespace.Name)
	case pl.Enrollment.Invalid != "":
		m.Action, m.Reason, m.Detail = ActionBlocked, meshv1.ReasonInvalidTargetLevel, pl.Enrollment.Invalid
		m.Fix = Fix(meshv1.ReasonInvalidTargetLevel, pl.Namespace.Name)
	case d.AtTarget(pl.Enrollment.Target) && d.Level == meshv1.LevelOff:
		m.Action, m.Detail = ActionOffboarded, "Not enrolled: the ladder's labels and annotation are removed."
	case d.AtTarget(pl.Enrollment.Target):
		m.Action = ActionAtTarget
	default:
		m.Action, m.Detail = ActionWait, d.Waiting
	}
	for _, p := range policy.ForNamespace(mesh.Name, pl.Namespace.Name, pl.Enrollment.AllowFrom, pl.Exemptions, d.Effects) {
		m.Policies = append(m.Policies, policyLine(p.GetKind(), p.GetName(), d.Effects))
	}
	m.Resilience = resilienceOf(pl)
	return m
}

// resilienceOf is the resilience defaults a plan's namespace carries, or nil.
func resilienceOf(pl adoption.NamespacePlan) *ResilienceMove {
	v := pl.Decision.Effects.Resilience
	if v == nil && pl.Decision.ResiliencePending {
		return &ResilienceMove{Values: ladder.Describe(*pl.Resilience.Values), Pending: true}
	}
	if v == nil {
		return nil
	}
	d := pl.Defaults
	r := &ResilienceMove{Values: ladder.Describe(*v), HeldBy: d.HeldBy, Declined: d.Declined, Partial: d.Partial()}
	for _, u := range d.Objects {
		r.Objects = append(r.Objects, u.GetKind()+"/"+u.GetName())
	}
	for _, h := range d.Hidden {
		r.Hidden = append(r.Hidden, h.Service+" ("+strings.Join(h.By, ", ")+")")
	}
	return r
}

// adoptReported gives the decisions that wait only because this reader could not see what a gate
// judges (the plugin reads no telemetry and creates no dry-run pods: only the operator does) the
// verdict the operator last reported for their namespace in status.namespaces.blocked, so that a
// plan shows why a namespace is held.
func adoptReported(mesh *meshv1.MeshInstallation, plans []adoption.NamespacePlan) {
	if mesh.Status.Namespaces == nil {
		return
	}
	for i := range plans {
		d := &plans[i].Decision
		if !d.Unread {
			continue
		}
		for _, b := range mesh.Status.Namespaces.Blocked {
			if b.Name == plans[i].Namespace.Name { //nolint:gosec // G602: i ranges over plans
				d.Blocked = ladder.Blocked{Reason: b.Reason, Message: b.Message + " (as the operator last reported it)"}
				d.Waiting = ""
			}
		}
	}
}

// stepName names a step for a sentence: a rung of the ladder, a move between revisions, or a
// migration between data planes.
func stepName(level ladder.Level, step *ladder.Step) string {
	if step.Refresh {
		return "restart of the workloads whose proxies started before the root rotation's switch"
	}
	if step.Defaults {
		return fmt.Sprintf("application of the resilience defaults at %s", level)
	}
	if step.To == level && step.Revision != "" && step.From != "" {
		return fmt.Sprintf("move from control-plane revision %s to %s", step.From, step.Revision)
	}
	if step.To == level && step.DataPlane == meshv1.DataPlaneAmbient {
		return fmt.Sprintf("migration from sidecars to ambient mode at %s", level)
	}
	return fmt.Sprintf("step from %s to %s", level, step.To)
}

func policyLine(kind, name string, e ladder.Effects) string {
	switch {
	case kind == "PeerAuthentication" && strings.HasPrefix(name, policy.PlaintextPrefix):
		return kind + " " + name + " (STRICT, its Service's exempted ports PERMISSIVE)"
	case kind == "PeerAuthentication":
		return kind + " " + name + " (STRICT)"
	case e.DryRun:
		return kind + " " + name + " (dry-run)"
	}
	return kind + " " + name
}

// Text writes the plan: one block per namespace, what it does next and why.
func (p Plan) Text(w io.Writer, st Style) error {
	pr := &printer{w: w}
	pr.line("Plan for MeshInstallation %s", st.paint(bold, p.Installation))
	if p.Stage != "" && p.Stage != string(meshv1.StageAdoption) && p.Stage != string(meshv1.StageComplete) {
		pr.wrapped(0, st.paint(yellow, fmt.Sprintf("The rollout is at the %s stage: namespaces move once every stage before Adoption is Ready. Below is what the ladder will do then.", p.Stage)))
	}
	pr.wrapped(0, p.Summary)
	if s := p.Spec; s != nil {
		pr.line("")
		pr.line("With the new spec")
		if len(s.Targets) == 0 {
			pr.line("  No namespace changes target.")
		}
		for _, t := range s.Targets {
			pr.line("  target %s", t)
		}
		switch {
		case s.ControlPlaneError != "":
			pr.wrapped(2, st.paint(red, "The control plane does not render: ")+s.ControlPlaneError)
		case len(s.ControlPlane) == 0:
			pr.line("  The control plane renders the same objects.")
		default:
			pr.line("  Control plane: %d object(s) change", len(s.ControlPlane))
			for _, c := range s.ControlPlane {
				pr.wrapped(4, c)
			}
		}
	}
	pr.line("")
	if len(p.Namespaces) == 0 {
		pr.line("No namespace is enrolled: spec.namespaces selects none (or only namespaces never enrolled).")
		return pr.err
	}
	pr.line("%s %s %s %s", pad("NAMESPACE", 22), pad("NOW", 10), pad("TARGET", 10), "NEXT")
	for _, m := range p.Namespaces {
		next := m.next(st)
		pr.line("%s %s %s %s", pad(m.Namespace, 22), pad(m.Current, 10), pad(m.Target, 10), next)
		const indent = 4
		if m.Detail != "" {
			pr.wrapped(indent, m.Detail)
		}
		if len(m.Restart) > 0 {
			pr.wrapped(indent, "restarts "+strings.Join(m.Restart, ", "))
		}
		switch {
		case m.DataPlane == string(meshv1.DataPlaneAmbient):
			pr.wrapped(indent, "in ambient mode")
		case strings.Contains(m.DataPlane, "→"):
			pr.wrapped(indent, "data plane "+m.DataPlane)
		}
		if len(m.Uninjected) > 0 && m.Action != ActionAtTarget {
			pr.wrapped(indent, "without the proxy: "+strings.Join(m.Uninjected, ", "))
		}
		if len(m.Uncaptured) > 0 && m.Action != ActionAtTarget {
			pr.wrapped(indent, "not redirected to ztunnel: "+strings.Join(m.Uncaptured, ", "))
		}
		if len(m.Policies) > 0 && m.Action != ActionAtTarget {
			pr.wrapped(indent, "policies: "+strings.Join(m.Policies, ", "))
		}
		m.Resilience.text(pr, indent, m.Namespace)
		if m.Fix != "" {
			pr.wrapped(indent, "→ "+m.Fix)
		}
	}
	return pr.err
}

// text writes a namespace's resilience defaults: what they are and what they leave to others.
func (r *ResilienceMove) text(pr *printer, indent int, namespace string) {
	if r == nil {
		return
	}
	if r.Pending {
		pr.wrapped(indent, "resilience defaults to apply: "+r.Values)
		return
	}
	pr.wrapped(indent, "resilience defaults: "+r.Values)
	if len(r.Objects) > 0 {
		pr.wrapped(indent+2, "written as "+strings.Join(r.Objects, ", "))
	}
	if r.HeldBy != "" {
		pr.wrapped(indent+2, "no DestinationRule: "+r.HeldBy+" covers the namespace's hosts, and is left as it is")
	}
	if len(r.Hidden) > 0 {
		pr.wrapped(indent+2, "left to a team's own objects: "+strings.Join(r.Hidden, "; "))
	}
	if len(r.Declined) > 0 {
		pr.wrapped(indent+2, "deleted by a user, not written again: "+strings.Join(r.Declined, ", ")+" (restore: kubectl annotate namespace "+namespace+" "+meshv1.AnnotationResilienceDeclined+"-)")
	}
}

// next says, for the plan's table, what a namespace does next.
func (m NamespaceMove) next(st Style) string {
	next := m.Action
	switch m.Action {
	case ActionStep, ActionStepping, ActionRollback:
		switch {
		case m.Revision != "":
			next += " to revision " + m.Revision
		case m.Defaults:
			next += ": resilience defaults"
		case strings.Contains(m.DataPlane, "→"):
			next += " to " + m.DataPlane[strings.LastIndex(m.DataPlane, " ")+1:] + " at " + m.To
		default:
			next += " to " + m.To
		}
	case ActionBlocked:
		next = st.paint(red, next+": "+m.Reason)
	case ActionAtTarget:
		next = st.paint(green, next)
	}
	return next
}
