// Package arbiter decides which MeshInstallation is the active one when a cluster holds several.
// A mesh has one CA and one control plane, so two installations would fight over the same
// objects; instead the oldest one wins and the others are reported as Conflict and left alone.
package arbiter

import (
	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

// Active returns the name of the MeshInstallation that manages the mesh. One that has already
// acted (its status has an observedGeneration) keeps the role, so a newcomer created in the same
// second cannot displace it; otherwise the oldest wins, ties broken by name so every replica of
// the operator picks the same one. The active one keeps the role while it is being deleted, so
// its clean-up is not raced by a newcomer installing on top of it. Empty for an empty list.
func Active(items []meshv1.MeshInstallation) string {
	var best *meshv1.MeshInstallation
	for i := range items {
		m := &items[i]
		if best == nil || hasActed(m) && !hasActed(best) || hasActed(m) == hasActed(best) && before(m, best) {
			best = m
		}
	}
	if best == nil {
		return ""
	}
	return best.Name
}

// before orders installations by age, then name.
func before(a, b *meshv1.MeshInstallation) bool {
	ta, tb := a.CreationTimestamp.Time, b.CreationTimestamp.Time
	if !ta.Equal(tb) {
		return ta.Before(tb)
	}
	return a.Name < b.Name
}

func hasActed(m *meshv1.MeshInstallation) bool { return m.Status.ObservedGeneration > 0 }
