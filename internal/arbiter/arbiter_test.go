package arbiter

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

func mesh(name string, age time.Duration, deleting bool) meshv1.MeshInstallation {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{
		Name:              name,
		CreationTimestamp: metav1.NewTime(base.Add(-age)),
	}}
	if deleting {
		now := metav1.NewTime(base)
		m.DeletionTimestamp = &now
	}
	return m
}

func acted(m meshv1.MeshInstallation) meshv1.MeshInstallation {
	m.Status.ObservedGeneration = 1
	return m
}

func TestActive(t *testing.T) {
	tests := map[string]struct {
		items []meshv1.MeshInstallation
		want  string
	}{
		"none":               {items: nil, want: ""},
		"one":                {items: []meshv1.MeshInstallation{mesh("default", time.Hour, false)}, want: "default"},
		"oldest wins":        {items: []meshv1.MeshInstallation{mesh("new", time.Minute, false), mesh("old", time.Hour, false)}, want: "old"},
		"tie broken by name": {items: []meshv1.MeshInstallation{mesh("b", time.Hour, false), mesh("a", time.Hour, false)}, want: "a"},
		"one that has acted keeps the role against an older newcomer": {
			items: []meshv1.MeshInstallation{acted(mesh("b-acted", time.Minute, false)), mesh("a-old", time.Hour, false)},
			want:  "b-acted",
		},
		"deleting active keeps the role": {
			items: []meshv1.MeshInstallation{mesh("old", time.Hour, true), mesh("new", time.Minute, false)},
			want:  "old",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Active(tc.items); got != tc.want {
				t.Fatalf("Active() = %q, want %q", got, tc.want)
			}
		})
	}
}
