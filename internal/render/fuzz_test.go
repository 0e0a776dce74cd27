package render

import (
	"encoding/json"
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshwright/meshwright/internal/release"
)

// FuzzRenderValues renders Istio's charts with arbitrary spec.controlPlane.values: a value of
// the wrong type, a missing map, a template that fails must come back as an error (the stage
// reports it as InvalidValues), never as a panic, and what does render is a list of objects
// the stage can apply (a kind, a name, a namespace where the kind needs one). From the same
// bytes it also builds values that Istio's charts document as valid (validValues), which must
// render, with istiod as asked: a chart or renderer change that stops valid values rendering
// fails it.
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
		if err := json.Unmarshal(data, &values); err == nil {
			if objs, err := Render(Input{Installation: "fuzz", Version: release.DefaultIstioVersion, Namespace: "istio-system", Values: values}); err == nil {
				checkApplicable(t, objs)
			}
		}

		valid, replicas := validValues(data)
		objs, err := Render(Input{Installation: "fuzz", Version: release.DefaultIstioVersion, Namespace: "istio-system", Values: valid})
		if err != nil {
			t.Fatalf("valid values %v do not render: %v", valid, err)
		}
		checkApplicable(t, objs)
		istiod := findObject(objs, "Deployment", "istiod")
		if istiod == nil {
			t.Fatalf("valid values %v render no istiod Deployment", valid)
		}
		got, found, _ := unstructured.NestedFieldNoCopy(istiod.Object, "spec", "replicas")
		if replicas > 0 && (!found || fmt.Sprint(got) != fmt.Sprint(replicas)) {
			t.Fatalf("values %v ask for %d istiod replicas without autoscaling; the Deployment has %v (set: %v)", valid, replicas, got, found)
		}
	})
}

// validValues builds from fuzz bytes values of the types Istio's charts document (pilot,
// meshConfig, global, sidecarInjectorWebhook). replicas is the istiod replica count they ask
// for with autoscaling off, or 0 when autoscaling decides.
func validValues(data []byte) (values map[string]any, replicas int) {
	at := func(i int) byte {
		if i < len(data) {
			return data[i]
		}
		return 0
	}
	pilot := map[string]any{"autoscaleEnabled": at(0)%2 == 0}
	if at(0)%2 == 1 {
		replicas = int(at(1)%5) + 1
		pilot["replicaCount"] = replicas
	}
	pilot["env"] = map[string]any{"PILOT_ENABLE_STATUS": at(2)%2 == 0}
	pilot["resources"] = map[string]any{"requests": map[string]any{"cpu": fmt.Sprintf("%dm", 100+int(at(3))), "memory": fmt.Sprintf("%dMi", 256+int(at(4)))}}
	logFiles := []string{"", "/dev/stdout"}
	levels := []string{"default:info", "default:debug", "default:warn"}
	built := map[string]any{
		"pilot":                  pilot,
		"meshConfig":             map[string]any{"accessLogFile": logFiles[int(at(5))%len(logFiles)], "enableTracing": at(6)%2 == 0},
		"global":                 map[string]any{"logging": map[string]any{"level": levels[int(at(7))%len(levels)]}, "logAsJson": at(8)%2 == 0},
		"sidecarInjectorWebhook": map[string]any{"enableNamespacesByDefault": false, "rewriteAppHTTPProbe": at(9)%2 == 0},
	}
	// Through JSON, as the stage reads spec.controlPlane.values: numbers become float64.
	b, err := json.Marshal(built)
	if err != nil {
		panic(err)
	}
	if err := json.Unmarshal(b, &values); err != nil {
		panic(err)
	}
	return values, replicas
}

// checkApplicable fails on a rendered object the stage could not apply.
func checkApplicable(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == "" || o.GetName() == "" {
			t.Fatalf("rendered an object without kind or name: %v", o.Object)
		}
		if namespaced(o.GetKind()) && o.GetNamespace() == "" {
			t.Fatalf("rendered a %s %s without a namespace", o.GetKind(), o.GetName())
		}
	}
}

func findObject(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}
