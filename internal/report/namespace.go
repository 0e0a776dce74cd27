package report

import (
	"fmt"
	"io"
	"sort"
	"time"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/adoption"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/names"
)

// HistoryEvent is one Event the ladder emitted on a namespace.
type HistoryEvent struct {
	Time    time.Time `json:"time"`
	Warning bool      `json:"warning,omitempty"`
	Reason  string    `json:"reason"`
	Message string    `json:"message"`
	// Count is how many times the Event was emitted (the API server folds repeats).
	Count int32 `json:"count,omitempty"`
}

// NamespaceStatus is `kubectl meshwright namespace NAME`.
type NamespaceStatus struct {
	Namespace string `json:"namespace"`
	Level     string `json:"level"`
	Target    string `json:"target"`
	// Since is when the namespace reached its level.
	Since *time.Time   `json:"since,omitempty"`
	Step  *ladder.Step `json:"step,omitempty"`
	Hold  *ladder.Hold `json:"hold,omitempty"`
	Pods  ladder.Pods  `json:"pods"`
	// DataPlane is how the namespace is in the mesh: "Sidecar" or "Ambient" ("" when it is
	// not), or both, in the order of the move, while a migration moves its pods.
	DataPlane string `json:"dataPlane,omitempty"`
	// Next is what the ladder will do next; empty when the namespace is neither enrolled nor
	// holds anything of the operator's.
	Next    *NamespaceMove `json:"next,omitempty"`
	History []HistoryEvent `json:"history"`
}

// NamespaceOf describes one namespace: its plan (nil when the ladder does not look at it) and
// the Events on it, oldest first.
func NamespaceOf(mesh *meshv1.MeshInstallation, name string, pl *adoption.NamespacePlan, events []HistoryEvent) NamespaceStatus {
	out := NamespaceStatus{Namespace: name, Level: string(meshv1.LevelOff), Target: string(meshv1.LevelOff), History: events}
	sort.SliceStable(out.History, func(i, j int) bool { return out.History[i].Time.Before(out.History[j].Time) })
	if pl == nil {
		return out
	}
	out.Level, out.Target, out.Pods = string(pl.Current), string(pl.Enrollment.Target), pl.Pods
	if !pl.State.Since.IsZero() {
		since := pl.State.Since.UTC()
		out.Since = &since
	}
	out.Step, out.Hold = pl.State.Step, pl.State.Hold
	plans := []adoption.NamespacePlan{*pl}
	adoptReported(mesh, plans)
	m := moveOf(mesh, plans[0])
	out.Next, out.DataPlane = &m, m.DataPlane
	return out
}

// Text writes one namespace: where it stands, what comes next, and its history.
func (n NamespaceStatus) Text(w io.Writer, st Style) error {
	p := &printer{w: w}
	head := fmt.Sprintf("Namespace %s: %s (target %s)", st.paint(bold, n.Namespace), n.Level, n.Target)
	if n.Since != nil {
		head += " since " + timestamp(*n.Since)
	}
	p.line("%s", head)
	if n.Next == nil {
		p.wrapped(0, "Not enrolled: no rule of spec.namespaces selects it and it carries no meshwright.io/target-level label.")
	} else {
		inj := "all injected"
		if k := len(n.Pods.Uninjected); k > 0 {
			inj = fmt.Sprintf("%d without the proxy", k)
		}
		if n.DataPlane == string(meshv1.DataPlaneAmbient) {
			inj = "in ambient mode, all redirected to ztunnel"
			if k := len(n.Pods.Uncaptured); k > 0 {
				inj = fmt.Sprintf("in ambient mode, %d not redirected to ztunnel yet", k)
			}
		}
		p.line("Pods: %d running, %d Ready, %s", n.Pods.Total, n.Pods.Ready, inj)
		if s := n.Step; s != nil {
			kind := "Step"
			if s.Rollback {
				kind = "Rollback"
			}
			p.line("%s to %s started %s (id %s)", kind, s.To, timestamp(s.Started), s.ID)
		}
		if h := n.Hold; h != nil {
			p.line("%s %s", st.paint(red, "Held:"), h.Reason)
			p.wrapped(2, h.Message+" The hold is released when the spec changes.")
		}
		m := *n.Next
		next := m.Action
		if m.To != "" {
			next += " to " + m.To
		}
		if m.Reason != "" {
			next += ": " + m.Reason
		}
		p.line("Next: %s", next)
		if m.Detail != "" {
			p.wrapped(2, m.Detail)
		}
		if len(m.Uninjected) > 0 {
			p.wrapped(2, "Without the proxy: "+names.List(m.Uninjected))
		}
		if m.Fix != "" {
			p.wrapped(2, "→ "+m.Fix)
		}
	}
	p.line("")
	if len(n.History) == 0 {
		p.line("History: no ladder Events (Events expire after an hour by default).")
		return p.err
	}
	p.line("History")
	for _, e := range n.History {
		reason := e.Reason
		if e.Warning {
			reason = st.paint(red, reason)
		}
		count := ""
		if e.Count > 1 {
			count = fmt.Sprintf(" (×%d)", e.Count)
		}
		p.line("  %s %s%s", timestamp(e.Time), reason, count)
		p.wrapped(4, e.Message)
	}
	return p.err
}
