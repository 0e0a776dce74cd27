package apply

import "testing"

func TestContains(t *testing.T) {
	tests := map[string]struct {
		have, want any
		ok         bool
	}{
		"equal scalars":         {have: "a", want: "a", ok: true},
		"different scalars":     {have: "a", want: "b"},
		"numbers of other type": {have: int64(256), want: float64(256), ok: true},
		"different numbers":     {have: int64(256), want: int64(384)},
		"extra keys in have": {
			have: map[string]any{"a": "1", "b": "2", "status": map[string]any{"x": true}},
			want: map[string]any{"a": "1"}, ok: true,
		},
		"missing key": {have: map[string]any{"a": "1"}, want: map[string]any{"b": "1"}},
		"missing empty map is no difference": {
			have: map[string]any{"a": "1"}, want: map[string]any{"a": "1", "selfSigned": map[string]any{}}, ok: true,
		},
		"nested difference": {
			have: map[string]any{"spec": map[string]any{"isCA": false}},
			want: map[string]any{"spec": map[string]any{"isCA": true}},
		},
		"lists element by element": {
			have: []any{map[string]any{"n": "a", "x": 1}}, want: []any{map[string]any{"n": "a"}}, ok: true,
		},
		"quantity the server normalised": {have: "2Gi", want: "2048Mi", ok: true},
		"CPU written as a number":        {have: "1", want: int64(1), ok: true},
		"different quantities":           {have: "1Gi", want: "2048Mi"},
		"a version is not a quantity":    {have: "1.31.4", want: "1.31.5"},
		"empty string the server omitted": {
			have: map[string]any{"name": "X"}, want: map[string]any{"name": "X", "value": ""}, ok: true,
		},
		"false the server omitted":   {have: map[string]any{}, want: map[string]any{"readOnly": false}, ok: true},
		"true is a difference":       {have: map[string]any{}, want: map[string]any{"readOnly": true}},
		"list of another length":     {have: []any{"a", "b"}, want: []any{"a"}},
		"map where a list is wanted": {have: map[string]any{}, want: []any{"a"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Contains(tc.have, tc.want); got != tc.ok {
				t.Fatalf("Contains(%v, %v) = %v, want %v", tc.have, tc.want, got, tc.ok)
			}
		})
	}
}
