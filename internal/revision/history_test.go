package revision

import (
	"slices"
	"testing"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

func TestFromStatus(t *testing.T) {
	tests := map[string]struct {
		status meshv1.MeshInstallationStatus
		want   History
	}{
		"nothing reported": {},
		"revisions reported": {
			status: meshv1.MeshInstallationStatus{Version: "1.31.5", Revisions: []meshv1.RevisionStatus{{Name: "1-31-5", Version: "1.31.5", Active: true}, {Name: Default, Version: "1.31.4"}}},
			want:   History{Active: "1-31-5", Revisions: []Recorded{{Name: "1-31-5", Version: "1.31.5"}, {Name: Default, Version: "1.31.4"}}},
		},
		"before revisions were reported: the default revision at status.version": {
			status: meshv1.MeshInstallationStatus{Version: "1.31.4"},
			want:   History{Active: Default, Revisions: []Recorded{{Name: Default, Version: "1.31.4"}}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := FromStatus(&tc.status); !got.Same(tc.want) {
				t.Errorf("FromStatus = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestHistoryVersion: a recorded version is believed before istiod's image; status.version of an
// installation older than revisions (written from the spec, maybe ahead of what runs) after it.
func TestHistoryVersion(t *testing.T) {
	recorded := History{Revisions: []Recorded{{Name: Default, Version: "1.31.4"}}}
	legacy := FromStatus(&meshv1.MeshInstallationStatus{Version: "1.31.5"})
	tests := map[string]struct {
		history      History
		label, image string
		want         string
	}{
		"the label first":                     {history: recorded, label: "1.31.6", image: "istio/pilot:1.31.3", want: "1.31.6"},
		"the record before the image":         {history: recorded, image: "istio/pilot:1.31.3", want: "1.31.4"},
		"the image before a legacy status":    {history: legacy, image: "istio/pilot:1.31.3", want: "1.31.3"},
		"a legacy status when nothing else":   {history: legacy, image: "registry/pilot@sha256:abc", want: "1.31.5"},
		"unknown: nothing recorded, no tag":   {image: "registry/pilot@sha256:abc", want: ""},
		"another revision's record is not it": {history: History{Revisions: []Recorded{{Name: "1-31-5", Version: "1.31.5"}}}, want: ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := tc.history.Version(Default, tc.label, tc.image); got != tc.want {
				t.Errorf("Version = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHistoryRecord(t *testing.T) {
	h := History{Active: "1-31-5", Revisions: []Recorded{{Name: "1-31-5", Version: "1.31.5"}, {Name: Default, Version: "1.31.4"}}}
	back, err := ParseHistory(h.Encode())
	if err != nil || !back.Same(h) {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	if _, err := ParseHistory("not json"); err == nil {
		t.Error("an unreadable record was accepted")
	}
	if h.Same(History{Active: Default, Revisions: h.Revisions}) {
		t.Error("histories with different active revisions are the same")
	}
	// A revision whose istiod is gone still counts, with its recorded version.
	known := h.Known([]Installed{{Name: "1-31-5", Version: "1.31.5", Available: true}})
	if want := []Installed{{Name: "1-31-5", Version: "1.31.5", Available: true}, {Name: Default, Version: "1.31.4"}}; !slices.Equal(known, want) {
		t.Errorf("Known = %+v, want %+v", known, want)
	}
}
