package gatewayapi_test

import (
	"slices"
	"testing"

	"github.com/meshwright/meshwright/internal/gatewayapi"
	"github.com/meshwright/meshwright/internal/render"
)

// TestStandardCRDs: the embedded stream is the Gateway API's standard channel, CRDs only, and has
// the kinds a waypoint needs (a Gateway of a GatewayClass) and the routes that attach to it.
func TestStandardCRDs(t *testing.T) {
	objs, err := render.Decode(gatewayapi.StandardCRDs)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range objs {
		names = append(names, o.GetName())
		if o.GetKind() != "CustomResourceDefinition" || !gatewayapi.IsCRD(o.GetName()) {
			t.Errorf("%s %s in the stream, want only the Gateway API's CRDs", o.GetKind(), o.GetName())
		}
		if ch := o.GetAnnotations()[gatewayapi.Group+"/channel"]; ch != "standard" {
			t.Errorf("%s of channel %q, want standard", o.GetName(), ch)
		}
		if o.GetAnnotations()[gatewayapi.BundleVersionAnnotation] == "" {
			t.Errorf("%s states no release", o.GetName())
		}
	}
	for _, want := range []string{"gatewayclasses", "gateways", "httproutes", "grpcroutes", "referencegrants"} {
		if !slices.Contains(names, want+"."+gatewayapi.Group) {
			t.Errorf("no %s CRD among %v", want, names)
		}
	}
}

func TestOursAndForeign(t *testing.T) {
	tests := map[string]struct {
		present     []gatewayapi.CRD
		ours        bool
		foreignText string
	}{
		"none in the cluster": {ours: true},
		"all the operator's":  {present: []gatewayapi.CRD{{Name: "gateways.gateway.networking.k8s.io", Ours: true, BundleVersion: "v1.6.3"}}, ours: true},
		"one of someone else's among the operator's": {
			present: []gatewayapi.CRD{{Name: "gateways.gateway.networking.k8s.io", Ours: true, BundleVersion: "v1.6.3"},
				{Name: "tlsroutes.gateway.networking.k8s.io", BundleVersion: "v1.7.0"}},
			foreignText: "v1.7.0"},
		"someone else's of two releases and of none": {
			present:     []gatewayapi.CRD{{Name: "a", BundleVersion: "v1.2.0"}, {Name: "b", BundleVersion: "v1.1.0"}, {Name: "c"}, {Name: "d", BundleVersion: "v1.2.0"}},
			foreignText: "unknown, v1.1.0, v1.2.0"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := gatewayapi.Ours(tt.present); got != tt.ours {
				t.Errorf("Ours = %v, want %v", got, tt.ours)
			}
			if got := gatewayapi.Foreign(tt.present); got != tt.foreignText {
				t.Errorf("Foreign = %q, want %q", got, tt.foreignText)
			}
		})
	}
}
