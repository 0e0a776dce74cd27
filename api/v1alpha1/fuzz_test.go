package v1alpha1

import (
	"encoding/json"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/randfill"
)

// FuzzMeshInstallationRoundTrip fills a MeshInstallation from random input and checks that JSON
// encoding and DeepCopy lose nothing: what a client writes is what the operator reads back.
func FuzzMeshInstallationRoundTrip(f *testing.F) {
	f.Add([]byte("seed"), int64(1))
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, int64(42))
	f.Fuzz(func(t *testing.T, data []byte, seed int64) {
		filler := randfill.NewFromGoFuzz(data).NilChance(0.3).NumElements(0, 3).Funcs(
			// Times and raw JSON have canonical encodings of their own; fill them in those.
			func(tm *metav1.Time, c randfill.Continue) { *tm = metav1.Unix(c.Int63n(1<<32), 0).Rfc3339Copy() },
			func(v **metav1.Time, c randfill.Continue) {
				if c.Bool() {
					tm := metav1.Unix(c.Int63n(1<<32), 0).Rfc3339Copy()
					*v = &tm
				}
			},
		)
		in := &MeshInstallation{}
		filler.Fill(&in.Spec)
		filler.Fill(&in.Status)
		in.Spec.ControlPlane.Values = nil // free-form JSON: checked in the integration test

		b, err := json.Marshal(in)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		out := &MeshInstallation{}
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("unmarshal: %v\n%s", err, b)
		}
		if !equality.Semantic.DeepEqual(in, out) {
			t.Fatalf("JSON round trip changed the object:\n in: %#v\nout: %#v", in, out)
		}
		if cp := in.DeepCopy(); !equality.Semantic.DeepEqual(in, cp) {
			t.Fatalf("DeepCopy changed the object")
		}
	})
}
