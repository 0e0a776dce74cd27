package render

import (
	"encoding/json"
	"testing"

	"github.com/meshwright/meshwright/internal/release"
)

// FuzzRenderValues renders Istio's charts with arbitrary spec.controlPlane.values: a value of
// the wrong type, a missing map, a template that fails must come back as an error (the stage
// reports it as InvalidValues), never as a panic, and what does render is a list of objects
// the stage can apply (a kind, a name, a namespace where the kind needs one).
func FuzzRenderValues(f *testing.F) {
	for _, seed := range []string{
		`{}`,
		`{"pilot":{"autoscaleEnabled":false,"replicaCount":2}}`,
		`{"global":{"hub":123,"tag":{"a":1}}}`,
		`{"pilot":{"resources":"lots"}}`,
		`{"meshConfig":{"accessLogFile":"/dev/stdout"},"sidecarInjectorWebhook":{"enableNamespacesByDefault":true}}`,
		`{"pilot":null,"global":[]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var values map[string]any
		if err := json.Unmarshal(data, &values); err != nil {
			return // not a JSON object: the API server refuses it before the operator sees it
		}
		objs, err := Render(Input{Installation: "fuzz", Version: release.DefaultIstioVersion, Namespace: "istio-system", Values: values})
		if err != nil {
			return
		}
		for _, o := range objs {
			if o.GetKind() == "" || o.GetName() == "" {
				t.Fatalf("rendered an object without kind or name: %v", o.Object)
			}
			if namespaced(o.GetKind()) && o.GetNamespace() == "" {
				t.Fatalf("rendered a %s %s without a namespace", o.GetKind(), o.GetName())
			}
		}
	})
}
