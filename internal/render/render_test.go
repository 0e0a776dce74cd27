package render

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
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
