package waypoint

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

// TestGateway: the waypoint is the Gateway `istioctl waypoint generate` writes for a namespace
// (class istio-waypoint, one HBONE listener on 15008, for services), with the operator's labels.
func TestGateway(t *testing.T) {
	gw, err := Gateway("default", "shop")
	if err != nil {
		t.Fatal(err)
	}
	if gw.GetKind() != "Gateway" || gw.GetAPIVersion() != "gateway.networking.k8s.io/v1" || gw.GetName() != Name || gw.GetNamespace() != "shop" {
		t.Fatalf("%s %s %s/%s", gw.GetAPIVersion(), gw.GetKind(), gw.GetNamespace(), gw.GetName())
	}
	if l := gw.GetLabels(); l[ForLabel] != "service" || l[meshv1.LabelInstallation] != "default" || l[meshv1.LabelManagedBy] != meshv1.ManagedByValue {
		t.Errorf("labels %v", l)
	}
	class, _, _ := unstructured.NestedString(gw.Object, "spec", "gatewayClassName")
	listeners, _, _ := unstructured.NestedSlice(gw.Object, "spec", "listeners")
	if class != ClassName || len(listeners) != 1 {
		t.Fatalf("class %q, listeners %v", class, listeners)
	}
	l := listeners[0].(map[string]any)
	if l["name"] != "mesh" || l["protocol"] != "HBONE" || l["port"] != int64(Port) {
		t.Errorf("listener %v, want mesh, HBONE, %d", l, Port)
	}
	infra, _, _ := unstructured.NestedStringMap(gw.Object, "spec", "infrastructure", "labels")
	if len(infra) != 1 || infra[LabelWaypointOf] != "default" {
		t.Errorf("infrastructure labels %v: want only %s, so that istiod copies none of the operator's labels onto the waypoint's Deployment", infra, LabelWaypointOf)
	}
	if _, found := gw.Object["status"]; found {
		t.Error("the desired Gateway carries a status")
	}
}

func TestProgrammed(t *testing.T) {
	withStatus := func(generation int64, status string, observed int64) *unstructured.Unstructured {
		gw, _ := Gateway("default", "shop")
		gw.SetGeneration(generation)
		if status != "" {
			gw.Object["status"] = map[string]any{"conditions": []any{map[string]any{"type": "Programmed", "status": status,
				"observedGeneration": observed, "reason": "Programmed", "message": "", "lastTransitionTime": "2026-12-07T00:00:00Z"}}}
		}
		return gw
	}
	deleted := withStatus(1, "True", 1)
	now := metav1.Now()
	deleted.SetDeletionTimestamp(&now)
	tests := map[string]struct {
		gw                 *unstructured.Unstructured
		want, wantUpdating bool
	}{
		"none":                             {},
		"no status yet":                    {gw: withStatus(1, "", 0)},
		"programmed":                       {gw: withStatus(2, "True", 2), want: true},
		"not programmed":                   {gw: withStatus(2, "False", 2)},
		"programmed, an older version":     {gw: withStatus(3, "True", 2), wantUpdating: true},
		"not programmed, an older version": {gw: withStatus(3, "False", 2)},
		"being deleted":                    {gw: deleted},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got, updating := Programmed(tt.gw), Updating(tt.gw); got != tt.want || updating != tt.wantUpdating {
				t.Errorf("Programmed, Updating = %v, %v; want %v, %v", got, updating, tt.want, tt.wantUpdating)
			}
		})
	}
}
