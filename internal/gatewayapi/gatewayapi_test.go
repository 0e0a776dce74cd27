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
		if got := o.GetAnnotations()[gatewayapi.BundleVersionAnnotation]; got != gatewayapi.Release {
			t.Errorf("%s is of release %q, want %s (the module's: run make manifests)", o.GetName(), got, gatewayapi.Release)
		}
	}
	for _, want := range []string{"gatewayclasses", "gateways", "httproutes", "grpcroutes", "referencegrants"} {
		if !slices.Contains(names, want+"."+gatewayapi.Group) {
			t.Errorf("no %s CRD among %v", want, names)
		}
	}
}

// TestOursAndForeign: the operator keeps writing the Gateway API's CRDs only while every one in
// the cluster is its own as it left them: its label, the standard channel, a release no newer
// than its own. Any other is someone else's, and all are left alone.
func TestOursAndForeign(t *testing.T) {
	const release = "v1.6.3"
	own := func(name, version string) gatewayapi.CRD {
		return gatewayapi.CRD{Name: name, Ours: true, BundleVersion: version, Channel: "standard"}
	}
	tests := map[string]struct {
		present     []gatewayapi.CRD
		ours        bool
		foreignText string
	}{
		"none in the cluster":              {ours: true},
		"all the operator's":               {present: []gatewayapi.CRD{own("gateways", release), own("httproutes", release)}, ours: true},
		"the operator's, an older release": {present: []gatewayapi.CRD{own("gateways", "v1.5.0")}, ours: true},
		"one of someone else's among the operator's": {
			present:     []gatewayapi.CRD{own("gateways", release), {Name: "tlsroutes", BundleVersion: "v1.6.3", Channel: "standard"}},
			foreignText: "v1.6.3"},
		"the operator's label, overwritten by a newer release": {
			present: []gatewayapi.CRD{own("gateways", release), own("httproutes", "v1.7.0")}, foreignText: "v1.7.0"},
		"the operator's label, overwritten by the experimental channel": {
			present: []gatewayapi.CRD{{Name: "gateways", Ours: true, BundleVersion: release, Channel: "experimental"}}, foreignText: "v1.6.3 experimental"},
		"the operator's label, no release stated": {
			present: []gatewayapi.CRD{{Name: "gateways", Ours: true, Channel: "standard"}}, foreignText: "unknown"},
		"someone else's of two releases and of none": {
			present:     []gatewayapi.CRD{{Name: "a", BundleVersion: "v1.2.0"}, {Name: "b", BundleVersion: "v1.1.0"}, {Name: "c"}, {Name: "d", BundleVersion: "v1.2.0"}},
			foreignText: "unknown, v1.1.0, v1.2.0"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := gatewayapi.Ours(tt.present, release); got != tt.ours {
				t.Errorf("Ours = %v, want %v", got, tt.ours)
			}
			if got := gatewayapi.Foreign(tt.present, release); got != tt.foreignText {
				t.Errorf("Foreign = %q, want %q", got, tt.foreignText)
			}
		})
	}
}
