package cli

import (
	"os/exec"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/adoption"
	"github.com/meshwright/meshwright/internal/ladder"
)

func plansWith(targets map[string]meshv1.AdoptionLevel) []adoption.NamespacePlan {
	var out []adoption.NamespacePlan
	for name, level := range targets {
		out = append(out, adoption.NamespacePlan{Namespace: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}},
			Enrollment: ladder.Enrollment{Target: level}})
	}
	return out
}

func TestTargetChanges(t *testing.T) {
	tests := map[string]struct {
		before, after map[string]meshv1.AdoptionLevel
		want          string
	}{
		"none":               {before: map[string]meshv1.AdoptionLevel{"a": "Observe"}, after: map[string]meshv1.AdoptionLevel{"a": "Observe"}},
		"raised":             {before: map[string]meshv1.AdoptionLevel{"a": "Observe"}, after: map[string]meshv1.AdoptionLevel{"a": "MutualTLS"}, want: "a: Observe → MutualTLS"},
		"newly enrolled":     {before: nil, after: map[string]meshv1.AdoptionLevel{"b": "Observe"}, want: "b: Off → Observe"},
		"no longer selected": {before: map[string]meshv1.AdoptionLevel{"c": "ZeroTrust"}, after: nil, want: "c: ZeroTrust → Off"},
		"sorted": {before: map[string]meshv1.AdoptionLevel{"z": "Observe", "a": "Observe"}, after: map[string]meshv1.AdoptionLevel{"z": "MutualTLS", "a": "MutualTLS"},
			want: "a: Observe → MutualTLS|z: Observe → MutualTLS"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := strings.Join(targetChanges(plansWith(tc.before), plansWith(tc.after)), "|"); got != tc.want {
				t.Errorf("targetChanges = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestPluginDoesNotBuildTheController keeps the kubectl plugin free of the operator's
// controller: it reads the API with the scheme in api/scheme and the pure packages it shares.
func TestPluginDoesNotBuildTheController(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/meshwright/meshwright/cmd/kubectl-meshwright").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "github.com/meshwright/meshwright/controllers" {
			t.Fatal("the kubectl plugin imports the controllers package")
		}
	}
}
