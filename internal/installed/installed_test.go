package installed

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestDeploymentAvailable(t *testing.T) {
	dep := func(gen, observed, replicas, updated, available int64, cond string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{
			"metadata": map[string]any{"generation": gen},
			"spec":     map[string]any{"replicas": replicas},
			"status": map[string]any{
				"observedGeneration": observed, "updatedReplicas": updated, "availableReplicas": available,
				"conditions": []any{map[string]any{"type": "Available", "status": cond}},
			},
		}}
		return u
	}
	tests := map[string]struct {
		dep  *unstructured.Unstructured
		want bool
	}{
		"available":             {dep: dep(2, 2, 2, 2, 2, "True"), want: true},
		"new spec not observed": {dep: dep(3, 2, 2, 2, 2, "True")},
		"rolling out":           {dep: dep(2, 2, 2, 1, 2, "True")},
		"short of replicas":     {dep: dep(2, 2, 2, 2, 1, "True")},
		"condition not true":    {dep: dep(2, 2, 2, 2, 2, "False")},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got, why := DeploymentAvailable(tc.dep); got != tc.want || (!got && why == "") {
				t.Fatalf("available = %v (%q), want %v with a reason when false", got, why, tc.want)
			}
		})
	}
}
