package v1alpha1

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

func TestNamespaceSelectorMatchesLikeALabelSelector(t *testing.T) {
	tests := map[string]struct {
		sel    NamespaceSelector
		labels map[string]string
		want   bool
	}{
		"empty matches all": {sel: NamespaceSelector{}, labels: map[string]string{"x": "y"}, want: true},
		"matchLabels hit":   {sel: NamespaceSelector{MatchLabels: map[string]string{"team": "a"}}, labels: map[string]string{"team": "a"}, want: true},
		"matchLabels miss":  {sel: NamespaceSelector{MatchLabels: map[string]string{"team": "a"}}, labels: map[string]string{"team": "b"}},
		"In":                {sel: NamespaceSelector{MatchExpressions: []SelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"web", "api"}}}}, labels: map[string]string{"tier": "api"}, want: true},
		"DoesNotExist":      {sel: NamespaceSelector{MatchExpressions: []SelectorRequirement{{Key: "legacy", Operator: metav1.LabelSelectorOpDoesNotExist}}}, labels: map[string]string{"legacy": "true"}},
		"both must hold":    {sel: NamespaceSelector{MatchLabels: map[string]string{"team": "a"}, MatchExpressions: []SelectorRequirement{{Key: "env", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"prod"}}}}, labels: map[string]string{"team": "a", "env": "prod"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			sel, err := metav1.LabelSelectorAsSelector(tc.sel.LabelSelector())
			if err != nil {
				t.Fatal(err)
			}
			if got := sel.Matches(labels.Set(tc.labels)); got != tc.want {
				t.Fatalf("matches = %v, want %v", got, tc.want)
			}
		})
	}
}
