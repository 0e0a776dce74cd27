package adoption

import (
	"maps"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/revision"
)

// benchPod is a pod as Istio's injector leaves it, with the application's container beside the
// proxy.
func benchPod() *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-5d8f7b9c4-abcde", Namespace: "shop", UID: "0f3c2a5e-8d9b-4c1f-9a7e-2b6d4e8f1a3c", ResourceVersion: "123456",
		Labels:          map[string]string{"app": "web", "pod-template-hash": "5d8f7b9c4", "security.istio.io/tlsMode": "istio", "service.istio.io/canonical-name": "web"},
		Annotations:     map[string]string{"istio.io/rev": "default", "sidecar.istio.io/status": `{"containers":["istio-proxy"]}`},
		OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-5d8f7b9c4", UID: "rs", Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Name: "istio-init"}},
			Containers: []corev1.Container{{Name: "web"}, {Name: "istio-proxy", Env: []corev1.EnvVar{{Name: "PROXY_CONFIG_XDS_AGENT", Value: "true"}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.1.3", Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
}

// BenchmarkSlimPod measures what the ladder's cache keeps of an injected pod (allocated bytes
// per slimmed pod are what the cache holds for it).
func BenchmarkSlimPod(b *testing.B) {
	p := benchPod()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := slimPod(p); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSlimPodKeepsIstiosContainers: the cache keeps of a pod's containers Istio's proxy (with
// the environment variable LiveTrust reads) and Istio CNI's validation, which is all package
// revision reads of a pod, and none of the application's.
func TestSlimPodKeepsIstiosContainers(t *testing.T) {
	p := benchPod()
	p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: "istio-validation"})
	slim, err := slimPod(p)
	if err != nil {
		t.Fatal(err)
	}
	sp := slim.(*corev1.Pod)
	var names []string
	for _, c := range append(sp.Spec.InitContainers, sp.Spec.Containers...) {
		names = append(names, c.Name)
	}
	if got := strings.Join(names, ","); got != "istio-validation,istio-proxy" {
		t.Errorf("containers kept: %s, want istio-validation,istio-proxy", got)
	}
	if !revision.HasProxy(sp) || !revision.LiveTrust(sp) || revision.CNIMode(sp) != meshv1.CNIEnabled {
		t.Errorf("the slimmed pod reads differently: proxy %v, live trust %v, CNI %q", revision.HasProxy(sp), revision.LiveTrust(sp), revision.CNIMode(sp))
	}
}

// TestSlimNamespaceKeepsTheLadderRecords: the ladder's cache keeps of a namespace's annotations
// its two records (the ladder's, and the resilience defaults a user deleted), and no other.
func TestSlimNamespaceKeepsTheLadderRecords(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"team": "shop"}, Annotations: map[string]string{
		meshv1.AnnotationLadder: `{"since":"2026-12-08T10:00:00Z"}`, meshv1.AnnotationResilienceDeclined: "VirtualService/meshwright-resilience-web",
		"kubectl.kubernetes.io/last-applied-configuration": "{…}"}}}
	got, err := slimNamespace(ns)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{meshv1.AnnotationLadder: `{"since":"2026-12-08T10:00:00Z"}`, meshv1.AnnotationResilienceDeclined: "VirtualService/meshwright-resilience-web"}
	if a := got.(*corev1.Namespace).Annotations; !maps.Equal(a, want) || got.(*corev1.Namespace).Labels["team"] != "shop" {
		t.Fatalf("annotations %v, labels %v", a, got.(*corev1.Namespace).Labels)
	}
	bare, _ := slimNamespace(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "other", Annotations: map[string]string{"a": "b"}}})
	if a := bare.(*corev1.Namespace).Annotations; a != nil {
		t.Fatalf("a namespace without records kept %v", a)
	}
}
