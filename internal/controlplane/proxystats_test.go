package controlplane

import (
	"testing"

	"github.com/meshwright/meshwright/internal/installed"
	"github.com/meshwright/meshwright/internal/revision"
)

// TestProxyStatsKeptPerRevision: a revision not installed yet is rendered with the stats the bake
// reads; an installed one as it was installed (its istiod marked or not), so that an operator
// upgrade does not rewrite the mesh config of a revision an earlier operator installed.
func TestProxyStatsKeptPerRevision(t *testing.T) {
	found := installed.Found{Installed: []revision.Installed{{Name: "default", Version: "1.31.4"}, {Name: "1-31-5", Version: "1.31.5", ProxyStats: true}}}
	tests := map[string]struct {
		rev  string
		want bool
	}{
		"installed by an earlier operator": {rev: "default"},
		"installed with them":              {rev: "1-31-5", want: true},
		"not installed yet":                {rev: "1-32-0", want: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := proxyStats(found, tc.rev); got != tc.want {
				t.Fatalf("proxyStats(%s) = %v, want %v", tc.rev, got, tc.want)
			}
		})
	}
}

// TestHoldApplicationKeptPerRevision: holdApplicationUntilProxyStarts is rendered for a revision
// not installed yet, one installed with it, and one upgraded in place to another version; a
// revision an earlier operator installed keeps its config while its version stays.
func TestHoldApplicationKeptPerRevision(t *testing.T) {
	found := installed.Found{Installed: []revision.Installed{{Name: "default", Version: "1.31.4"}, {Name: "1-31-5", Version: "1.31.5", HoldApplication: true}}}
	tests := map[string]struct {
		rev, version string
		want         bool
	}{
		"installed by an earlier operator": {rev: "default", version: "1.31.4"},
		"the same, upgraded in place":      {rev: "default", version: "1.32.0", want: true},
		"installed with it":                {rev: "1-31-5", version: "1.31.5", want: true},
		"not installed yet":                {rev: "1-32-0", version: "1.32.0", want: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := holdApplication(found, tc.rev, tc.version); got != tc.want {
				t.Fatalf("holdApplication(%s, %s) = %v, want %v", tc.rev, tc.version, got, tc.want)
			}
		})
	}
}
