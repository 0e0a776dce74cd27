package apply

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

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
		"quantity the server normalised": {
			have: map[string]any{"resources": map[string]any{"requests": map[string]any{"memory": "2Gi"}}},
			want: map[string]any{"resources": map[string]any{"requests": map[string]any{"memory": "2048Mi"}}}, ok: true,
		},
		"CPU written as a number": {
			have: map[string]any{"resources": map[string]any{"limits": map[string]any{"cpu": "1"}}},
			want: map[string]any{"resources": map[string]any{"limits": map[string]any{"cpu": int64(1)}}}, ok: true,
		},
		"different quantities": {
			have: map[string]any{"resources": map[string]any{"limits": map[string]any{"memory": "1Gi"}}},
			want: map[string]any{"resources": map[string]any{"limits": map[string]any{"memory": "2048Mi"}}},
		},
		"a version is not a quantity": {have: "1.31.4", want: "1.31.5"},
		"numbers in plain strings are strings": {
			have: map[string]any{"env": map[string]any{"value": "1k"}}, want: map[string]any{"env": map[string]any{"value": "1000"}},
		},
		"named list with an element another webhook added": {
			have: []any{map[string]any{"name": "A", "value": "1"}, map[string]any{"name": "INJECTED", "value": "x"}},
			want: []any{map[string]any{"name": "A", "value": "1"}}, ok: true,
		},
		"named list missing a wanted element": {
			have: []any{map[string]any{"name": "A"}}, want: []any{map[string]any{"name": "A"}, map[string]any{"name": "B"}},
		},
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

func TestStampHashChangesWithContent(t *testing.T) {
	a := &unstructured.Unstructured{Object: map[string]any{"kind": "ConfigMap", "data": map[string]any{"k": "v"}}}
	b := &unstructured.Unstructured{Object: map[string]any{"kind": "ConfigMap", "data": map[string]any{"k": "v", "removed": "later"}}}
	StampHash(a)
	StampHash(b)
	ha, hb := a.GetAnnotations()[HashAnnotation], b.GetAnnotations()[HashAnnotation]
	if ha == "" || ha == hb {
		t.Fatalf("hashes %q and %q: want different non-empty hashes for different content", ha, hb)
	}
	again := a.DeepCopy()
	StampHash(again)
	if again.GetAnnotations()[HashAnnotation] != ha {
		t.Fatal("stamping twice changed the hash")
	}
	// The object that drops a field no longer contains the hash the cluster holds, so the
	// apply that removes the field is sent.
	if Contains(b.Object, a.Object) {
		t.Fatal("an object with another hash must not count as contained")
	}
}
