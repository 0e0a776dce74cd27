package meshspec

import (
	"testing"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

// TestAmbient: a namespace's rule chooses its data plane over spec.dataPlane.mode, and one rule
// in ambient mode is enough for the control plane to install ambient mode's parts.
func TestAmbient(t *testing.T) {
	rule := func(mode meshv1.DataPlaneKind) meshv1.NamespaceRule {
		return meshv1.NamespaceRule{Level: meshv1.LevelObserve, DataPlaneMode: mode}
	}
	tests := map[string]struct {
		mode   meshv1.DataPlaneKind
		rules  []meshv1.NamespaceRule
		wanted bool
		// for a namespace whose rule says Sidecar, Ambient or nothing
		sidecar, ambient, unsaid bool
	}{
		"sidecar mesh":                  {mode: meshv1.DataPlaneSidecar, rules: []meshv1.NamespaceRule{rule("")}, ambient: true},
		"sidecar mesh, an ambient rule": {mode: meshv1.DataPlaneSidecar, rules: []meshv1.NamespaceRule{rule(""), rule(meshv1.DataPlaneAmbient)}, wanted: true, ambient: true},
		"ambient mesh":                  {mode: meshv1.DataPlaneAmbient, rules: []meshv1.NamespaceRule{rule(meshv1.DataPlaneSidecar)}, wanted: true, ambient: true, unsaid: true},
		"the mode left to its default":  {rules: []meshv1.NamespaceRule{rule("")}, ambient: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			mesh := &meshv1.MeshInstallation{Spec: meshv1.MeshInstallationSpec{DataPlane: meshv1.DataPlaneSpec{Mode: tc.mode}, Namespaces: tc.rules}}
			if got := AmbientWanted(mesh); got != tc.wanted {
				t.Errorf("AmbientWanted = %v, want %v", got, tc.wanted)
			}
			for ruleMode, want := range map[meshv1.DataPlaneKind]bool{meshv1.DataPlaneSidecar: tc.sidecar, meshv1.DataPlaneAmbient: tc.ambient, "": tc.unsaid} {
				if got := AmbientFor(mesh, ruleMode); got != want {
					t.Errorf("AmbientFor(rule %q) = %v, want %v", ruleMode, got, want)
				}
			}
		})
	}
}
