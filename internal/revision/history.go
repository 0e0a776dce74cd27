package revision

import (
	"encoding/json"
	"fmt"
	"slices"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

// History is the operator's record of an installation's revisions, kept from one pass to the
// next: the revision that was active, and the Istio version of each revision it had. Two
// decisions need it and cannot take it from the cluster alone: an istiod deleted under a running
// installation is put back under its own name and version, and the shared validator stays on the
// last active revision while a new one starts. It lives in an object the operator owns (see
// controlplane's record); status.revisions only reports it, so a status that is lost or restored
// without its status (a backup) loses nothing.
type History struct {
	// Active is the revision that was active when the history was last written.
	Active string `json:"active,omitempty"`
	// Revisions are the revisions the installation had then, the active one first.
	Revisions []Recorded `json:"revisions,omitempty"`
	// legacy marks a history rebuilt from an installation made before revisions were reported:
	// its one version is status.version, which the operator wrote from the spec, so what the
	// cluster says (istiod's image) is believed before it.
	legacy bool
}

// Recorded is one revision of a History.
type Recorded struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
}

// HistoryOf is the history status.revisions reports: what a pass found, to be recorded.
func HistoryOf(revs []meshv1.RevisionStatus) History {
	var h History
	for _, r := range revs {
		if r.Active {
			h.Active = r.Name
		}
		h.Revisions = append(h.Revisions, Recorded{Name: r.Name, Version: r.Version})
	}
	return h
}

// FromStatus is the history of an installation whose record does not exist yet: what status
// reported, as the operators before the record kept it. An installation older than
// status.revisions had one revision, the default one, of the version in status.version.
func FromStatus(st *meshv1.MeshInstallationStatus) History {
	if len(st.Revisions) > 0 {
		return HistoryOf(st.Revisions)
	}
	if st.Version == "" {
		return History{}
	}
	return History{Active: Default, Revisions: []Recorded{{Name: Default, Version: st.Version}}, legacy: true}
}

// ParseHistory reads a history as Encode wrote it.
func ParseHistory(raw string) (History, error) {
	var h History
	if err := json.Unmarshal([]byte(raw), &h); err != nil {
		return History{}, fmt.Errorf("not a revision history: %w", err)
	}
	return h, nil
}

// Encode is the history as its record holds it.
func (h History) Encode() string {
	b, _ := json.Marshal(h)
	return string(b)
}

// Same reports whether two histories record the same revisions, the same one active: when a
// pass finds what is recorded, nothing is written.
func (h History) Same(o History) bool {
	return h.Active == o.Active && slices.Equal(h.Revisions, o.Revisions)
}

// VersionOf is the version recorded for a revision, "" when none is.
func (h History) VersionOf(name string) string {
	for _, r := range h.Revisions {
		if r.Name == name {
			return r.Version
		}
	}
	return ""
}

// Version tells an installed revision's Istio version from its label, the history and istiod's
// image, in the order VersionOf (the function) explains.
func (h History) Version(name, labelVersion, image string) string {
	if h.legacy {
		return VersionOf(labelVersion, "", image, h.VersionOf(name))
	}
	return VersionOf(labelVersion, h.VersionOf(name), image, "")
}

// Known adds to the installed revisions those the history has and the cluster no longer does
// (their istiod was deleted): asked for again, such a revision is rebuilt under its own name
// rather than installed a second time under a new one.
func (h History) Known(installed []Installed) []Installed {
	known := slices.Clone(installed)
	for _, r := range h.Revisions {
		if !slices.ContainsFunc(known, func(i Installed) bool { return i.Name == r.Name }) {
			known = append(known, Installed{Name: r.Name, Version: r.Version})
		}
	}
	return known
}
