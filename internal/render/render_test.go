package render

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/gatewayapi"
	"github.com/meshwright/meshwright/internal/release"
)

func input() Input {
	return Input{Installation: "default", Version: release.DefaultIstioVersion, Namespace: "istio-system", KubeVersion: "v1.37.2"}
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

func TestRenderDefault(t *testing.T) {
	objs, err := Render(input())
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	lastRank := -1
	for _, o := range objs {
		counts[o.GetKind()]++
		if r := rank(o.GetKind()); r < lastRank {
			t.Fatalf("%s %s is out of apply order", o.GetKind(), o.GetName())
		} else {
			lastRank = r
		}
		if o.GetLabels()[meshv1.LabelInstallation] != "default" || o.GetLabels()[LabelComponent] == "" {
			t.Fatalf("%s %s lacks the operator's labels: %v", o.GetKind(), o.GetName(), o.GetLabels())
		}
		if namespaced(o.GetKind()) && o.GetNamespace() != "istio-system" {
			t.Fatalf("%s %s is in namespace %q", o.GetKind(), o.GetName(), o.GetNamespace())
		}
	}
	if counts["CustomResourceDefinition"] < 10 {
		t.Fatalf("want Istio's CRDs, got %d: %v", counts["CustomResourceDefinition"], counts)
	}
	dep := find(objs, "Deployment", "istiod")
	if dep == nil {
		t.Fatalf("no istiod Deployment in %v", counts)
	}
	containers, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	image, _ := containers[0].(map[string]any)["image"].(string)
	if image != Hub+"/pilot:"+release.DefaultIstioVersion {
		t.Fatalf("istiod image = %q, want the pinned release", image)
	}
	for _, kind := range []string{"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "ConfigMap", "Service"} {
		if counts[kind] == 0 {
			t.Errorf("no %s rendered: %v", kind, counts)
		}
	}
	t.Logf("rendered %d objects: %v", len(objs), counts)
}

func TestUserValuesOverDefaults(t *testing.T) {
	in := input()
	in.Values = map[string]any{"pilot": map[string]any{"autoscaleEnabled": false, "replicaCount": float64(3)}, "global": map[string]any{"hub": "registry.corp/istio"}}
	objs, err := Render(in)
	if err != nil {
		t.Fatal(err)
	}
	dep := find(objs, "Deployment", "istiod")
	replicas, found, _ := unstructured.NestedFieldNoCopy(dep.Object, "spec", "replicas")
	if !found || replicas != int64(3) && replicas != float64(3) {
		t.Fatalf("replicas = %v (found %v), want 3 from the user's values", replicas, found)
	}
	if find(objs, "HorizontalPodAutoscaler", "istiod") != nil {
		t.Fatal("autoscaleEnabled=false still rendered an HPA")
	}
	containers, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	if image := containers[0].(map[string]any)["image"].(string); !strings.HasPrefix(image, "registry.corp/istio/") {
		t.Fatalf("image = %q, want the user's hub", image)
	}
	// The user's map is not modified by the render.
	if _, ok := in.Values["global"].(map[string]any)["tag"]; ok {
		t.Fatal("Render wrote into the caller's values")
	}
}

func TestUnsupportedVersion(t *testing.T) {
	in := input()
	in.Version = "1.20.0"
	_, err := Render(in)
	var uv *UnsupportedVersionError
	if !errors.As(err, &uv) || !strings.Contains(err.Error(), release.DefaultIstioVersion) {
		t.Fatalf("want an UnsupportedVersionError listing the supported versions, got %v", err)
	}
}

func BenchmarkRenderCold(b *testing.B) {
	for i := 0; i < b.N; i++ {
		memoMu.Lock()
		memoOut = nil
		memoMu.Unlock()
		if _, err := Render(input()); err != nil {
			b.Fatal(err)
		}
	}
}

// TestProxyStats: a revision rendered with ProxyStats has its proxies export Envoy's
// no_filter_chain_match (Istio's ProxyConfig proxyStatsMatcher.inclusionSuffixes, in the mesh
// config's defaultConfig) and its istiod Deployment marked, so later passes render it the same;
// one without has neither, as an earlier operator rendered it.
func TestProxyStats(t *testing.T) {
	for _, on := range []bool{true, false} {
		in := input()
		in.ProxyStats = on
		objs, err := Render(in)
		if err != nil {
			t.Fatal(err)
		}
		cm := find(objs, "ConfigMap", "istio")
		mesh, _, _ := unstructured.NestedString(cm.Object, "data", "mesh")
		has := strings.Contains(mesh, "proxyStatsMatcher:\n    inclusionSuffixes:\n    - no_filter_chain_match")
		marked := find(objs, "Deployment", "istiod").GetLabels()[LabelProxyStats] == "true"
		if has != on || marked != on {
			t.Errorf("ProxyStats %v: mesh config has the stat %v, istiod marked %v:\n%s", on, has, marked, mesh)
		}
	}
}

// TestMultiRoot: from the first rotation on, istiod takes several roots (ISTIO_MULTIROOT_MESH)
// and proxies injected from then on take the trust bundle live (PROXY_CONFIG_XDS_AGENT in the
// mesh config's proxyMetadata), beside ProxyStats' matcher; an installation that never
// rotated has neither.
func TestMultiRoot(t *testing.T) {
	for _, on := range []bool{true, false} {
		in := input()
		in.MultiRoot, in.ProxyStats = on, true
		objs, err := Render(in)
		if err != nil {
			t.Fatal(err)
		}
		cm := find(objs, "ConfigMap", "istio")
		mesh, _, _ := unstructured.NestedString(cm.Object, "data", "mesh")
		live := strings.Contains(mesh, "proxyMetadata:\n    PROXY_CONFIG_XDS_AGENT: \"true\"")
		stats := strings.Contains(mesh, "- no_filter_chain_match")
		env := strings.Contains(fmt.Sprint(find(objs, "Deployment", "istiod").Object), "ISTIO_MULTIROOT_MESH")
		if live != on || env != on || !stats {
			t.Errorf("MultiRoot %v: proxyMetadata %v, istiod's variable %v, stats kept %v:\n%s", on, live, env, stats, mesh)
		}
	}
}

// TestDataPlaneValues: Istio CNI's chart is rendered only when asked, in a namespace of its own
// allowed privileged pods; istiod is told to inject for it (and gives the proxy's containers
// RuntimeDefault seccomp) only with IstiodCNI; ENABLE_NATIVE_SIDECARS and
// holdApplicationUntilProxyStarts reach istiod and its injector, and none of them is set by
// default.
func TestDataPlaneValues(t *testing.T) {
	tests := map[string]struct {
		mutate                                 func(*Input)
		daemonSet, cniOn, native, hold, marked bool
		nativeValue                            string
	}{
		"defaults":              {mutate: func(*Input) {}},
		"CNI installed only":    {mutate: func(in *Input) { in.CNI = true }, daemonSet: true},
		"CNI and istiod for it": {mutate: func(in *Input) { in.CNI, in.IstiodCNI = true, true }, daemonSet: true, cniOn: true},
		"native sidecars off":   {mutate: func(in *Input) { in.NativeSidecars = "false" }, native: true, nativeValue: "false"},
		"hold the application":  {mutate: func(in *Input) { in.HoldApplication = true }, hold: true, marked: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := input()
			tc.mutate(&in)
			objs, err := Render(in)
			if err != nil {
				t.Fatal(err)
			}
			ds := find(objs, "DaemonSet", CNIDaemonSet)
			if (ds != nil) != tc.daemonSet {
				t.Fatalf("CNI DaemonSet rendered %v, want %v", ds != nil, tc.daemonSet)
			}
			if ds != nil {
				ns := find(objs, "Namespace", CNINamespace)
				if ds.GetNamespace() != CNINamespace || ns == nil || ns.GetLabels()[LabelPodSecurityEnforce] != "privileged" || ns.GetLabels()[LabelComponent] != ComponentCNI {
					t.Fatalf("CNI DaemonSet in %q, namespace %v: want it in %s, allowed privileged", ds.GetNamespace(), ns, CNINamespace)
				}
				if find(objs, "Namespace", "istio-system") != nil {
					t.Fatal("the control plane's namespace was rendered")
				}
			}
			values, _, _ := unstructured.NestedString(find(objs, "ConfigMap", "istio-sidecar-injector").Object, "data", "values")
			if on := injects(t, values); on != tc.cniOn || strings.Contains(values, "RuntimeDefault") != tc.cniOn {
				t.Errorf("injector for CNI %v (RuntimeDefault %v), want %v", on, strings.Contains(values, "RuntimeDefault"), tc.cniOn)
			}
			istiod := fmt.Sprint(find(objs, "Deployment", "istiod").Object)
			if got := strings.Contains(istiod, "ENABLE_NATIVE_SIDECARS"); got != tc.native || tc.native && !strings.Contains(istiod, "value:"+tc.nativeValue) {
				t.Errorf("ENABLE_NATIVE_SIDECARS set %v, want %v (%q)", got, tc.native, tc.nativeValue)
			}
			if got := strings.Contains(values, `"holdApplicationUntilProxyStarts": true`); got != tc.hold {
				t.Errorf("holdApplicationUntilProxyStarts %v, want %v", got, tc.hold)
			}
			if got := find(objs, "Deployment", "istiod").GetLabels()[LabelHoldApplication] == "true"; got != tc.marked {
				t.Errorf("istiod marked %v, want %v", got, tc.marked)
			}
		})
	}
}

// injects reads pilot.cni.enabled from the injector's values.
func injects(t *testing.T, values string) bool {
	t.Helper()
	var v struct {
		Pilot struct {
			CNI struct {
				Enabled bool `json:"enabled"`
			} `json:"cni"`
		} `json:"pilot"`
	}
	if err := json.Unmarshal([]byte(values), &v); err != nil {
		t.Fatalf("the injector's values: %v", err)
	}
	return v.Pilot.CNI.Enabled
}

// TestCNIChartTakesUserValues: spec.controlPlane.values reach Istio CNI's chart under `cni`, as
// docs/pod-security.md says (nodes whose CNI directories are not the defaults).
func TestCNIChartTakesUserValues(t *testing.T) {
	in := input()
	in.CNI = true
	in.Values = map[string]any{"cni": map[string]any{"cniBinDir": "/home/kubernetes/bin"}}
	objs, err := Render(in)
	if err != nil {
		t.Fatal(err)
	}
	if ds := fmt.Sprint(find(objs, "DaemonSet", CNIDaemonSet).Object); !strings.Contains(ds, "/home/kubernetes/bin") {
		t.Fatalf("the DaemonSet does not mount the node's CNI directory from the values: %s", ds)
	}
}

// TestAmbientProfile: ambient mode renders Istio's ambient profile into every chart, as
// Istio's Helm install does with profile=ambient: istiod with PILOT_ENABLE_AMBIENT and trusting
// ztunnel's ServiceAccount in the node agents' namespace (CA_TRUSTED_NODE_ACCOUNTS, which lets
// ztunnel ask for its pods' certificates), Istio CNI with ambient enabled, and ztunnel's
// DaemonSet in that namespace pointed at istiod. The namespace is rendered once, by the CNI.
// Without Ambient none of it is there.
func TestAmbientProfile(t *testing.T) {
	tests := map[string]struct {
		mutate  func(*Input)
		ambient bool
	}{
		"sidecar":          {mutate: func(in *Input) { in.CNI = true }},
		"ambient":          {mutate: func(in *Input) { in.CNI, in.Ambient, in.ZTunnel = true, true, true }, ambient: true},
		"ambient revision": {mutate: func(in *Input) { in.CNI, in.Ambient, in.ZTunnel, in.Revision = true, true, true, "1-31-5" }, ambient: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := input()
			tc.mutate(&in)
			objs, err := Render(in)
			if err != nil {
				t.Fatal(err)
			}
			istiodName := "istiod"
			if in.Revision != "" {
				istiodName += "-" + in.Revision
			}
			istiod := fmt.Sprint(find(objs, "Deployment", istiodName).Object)
			if got := strings.Contains(istiod, "name:PILOT_ENABLE_AMBIENT value:true"); got != tc.ambient {
				t.Errorf("istiod PILOT_ENABLE_AMBIENT=true %v, want %v", got, tc.ambient)
			}
			if got := strings.Contains(istiod, CNINamespace+"/ztunnel"); got != tc.ambient {
				t.Errorf("istiod trusts ztunnel in %s: %v, want %v", CNINamespace, got, tc.ambient)
			}
			cniConfig := fmt.Sprint(find(objs, "ConfigMap", "istio-cni-config").Object)
			if got := strings.Contains(cniConfig, "AMBIENT_ENABLED:true"); got != tc.ambient {
				t.Errorf("Istio CNI in ambient mode %v, want %v: %s", got, tc.ambient, cniConfig)
			}
			zt := find(objs, "DaemonSet", ZTunnelDaemonSet)
			if (zt != nil) != tc.ambient {
				t.Fatalf("ztunnel rendered %v, want %v", zt != nil, tc.ambient)
			}
			namespaces := 0
			for _, o := range objs {
				if o.GetKind() == "Namespace" {
					namespaces++
				}
			}
			if namespaces != 1 {
				t.Errorf("%d Namespaces rendered, want 1 (%s, by the CNI)", namespaces, CNINamespace)
			}
			if zt == nil {
				return
			}
			if zt.GetNamespace() != CNINamespace || zt.GetLabels()[LabelComponent] != ComponentZTunnel || zt.GetLabels()[meshv1.LabelIstioVersion] != in.Version {
				t.Errorf("ztunnel in %q, labels %v", zt.GetNamespace(), zt.GetLabels())
			}
			if want := "value:" + istiodName + ".istio-system.svc:15012"; !strings.Contains(fmt.Sprint(zt.Object), want) {
				t.Errorf("ztunnel does not reach istiod at %s: %v", want, zt.Object)
			}
			if !strings.Contains(fmt.Sprint(zt.Object), Hub+"/ztunnel:"+in.Version) {
				t.Errorf("ztunnel's image is not the release's: %v", zt.Object)
			}
		})
	}
}

// TestGatewayAPICRDs: with GatewayAPI the Gateway API's standard CRDs are rendered among the
// CRDs (applied first), labelled as the installation's; the render's own copies, not the
// decoded stream's, so that two installations' renders do not share their labels.
func TestGatewayAPICRDs(t *testing.T) {
	tests := map[string]struct {
		gatewayAPI bool
		want       int
	}{
		"without": {},
		"with":    {gatewayAPI: true, want: 10},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := input()
			in.CNI, in.Ambient, in.ZTunnel, in.GatewayAPI = true, true, true, tc.gatewayAPI
			objs, err := Render(in)
			if err != nil {
				t.Fatal(err)
			}
			got, lastCRD := 0, -1
			for i, o := range objs {
				if o.GetKind() == "CustomResourceDefinition" {
					lastCRD = i
				}
				if !gatewayapi.IsCRD(o.GetName()) {
					continue
				}
				got++
				if o.GetKind() != "CustomResourceDefinition" || o.GetLabels()[LabelComponent] != gatewayapi.Component || o.GetLabels()[meshv1.LabelInstallation] != in.Installation {
					t.Errorf("%s %s labelled %v", o.GetKind(), o.GetName(), o.GetLabels())
				}
			}
			if got != tc.want {
				t.Errorf("%d Gateway API CRDs rendered, want %d", got, tc.want)
			}
			if i := slices.IndexFunc(objs, func(o *unstructured.Unstructured) bool { return o.GetKind() != "CustomResourceDefinition" }); i <= lastCRD {
				t.Errorf("a %s is rendered before the last CRD", objs[i].GetKind())
			}
			other := in
			other.Installation = "other"
			again, err := Render(other)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range objs {
				if gatewayapi.IsCRD(o.GetName()) && o.GetLabels()[meshv1.LabelInstallation] != in.Installation {
					t.Fatalf("rendering for another installation relabelled %s: %v (%d objects)", o.GetName(), o.GetLabels(), len(again))
				}
			}
		})
	}
}
