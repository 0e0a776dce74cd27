package proxyless

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestInjectedTemplates(t *testing.T) {
	const status = `{"initContainers":null,"containers":["istio-proxy"],"volumes":["istio-xds"],"imagePullSecrets":null,"revision":"default"}`
	tests := map[string]struct {
		annotations map[string]string
		want        []string
	}{
		"not injected":            {nil, nil},
		"not injected, asked for": {map[string]string{TemplateAnnotation: GRPCAgentTemplate}, nil},
		"proxyless":               {map[string]string{statusAnnotation: status, TemplateAnnotation: GRPCAgentTemplate}, []string{GRPCAgentTemplate}},
		"envoy, the default":      {map[string]string{statusAnnotation: status}, []string{"sidecar"}},
		"two templates, spaced":   {map[string]string{statusAnnotation: status, TemplateAnnotation: "sidecar, extra"}, []string{"sidecar", "extra"}},
		"an empty template list":  {map[string]string{statusAnnotation: status, TemplateAnnotation: " , "}, []string{"sidecar"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: tc.annotations}}
			if got := injectedTemplates(p); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCountsAddAndSince(t *testing.T) {
	before := Counts{OK: 3, Seen: map[string]int{"plaintext": 3}, Failed: map[string]int{"Unavailable": 1}}
	more := Counts{OK: 2, Seen: map[string]int{"spiffe://cluster.local/ns/a/sa/default": 2}, Failed: map[string]int{"Unavailable": 4, "PermissionDenied": 1}, LastError: "denied"}
	sum := before.Add(more)
	want := Counts{OK: 5, Seen: map[string]int{"plaintext": 3, "spiffe://cluster.local/ns/a/sa/default": 2},
		Failed: map[string]int{"Unavailable": 5, "PermissionDenied": 1}, LastError: "denied"}
	if !reflect.DeepEqual(sum, want) {
		t.Fatalf("Add: got %+v, want %+v", sum, want)
	}
	if before.OK != 3 || before.Failed["Unavailable"] != 1 {
		t.Fatalf("Add changed its receiver: %+v", before)
	}
	since := sum.Since(before)
	wantSince := Counts{OK: 2, Seen: map[string]int{"spiffe://cluster.local/ns/a/sa/default": 2},
		Failed: map[string]int{"Unavailable": 4, "PermissionDenied": 1}, LastError: "denied"}
	if !reflect.DeepEqual(since, wantSince) {
		t.Fatalf("Since: got %+v, want %+v", since, wantSince)
	}
	if since.FailedTotal() != 5 {
		t.Fatalf("FailedTotal: %d, want 5", since.FailedTotal())
	}
}

func TestWorkloadObjects(t *testing.T) {
	target := Target("who", "server", 8080)
	if target != "xds:///server.who.svc.cluster.local:8080" {
		t.Fatalf("Target: %s", target)
	}
	dep, svc := Workload{Namespace: "who", Name: "server", Port: 8080}.Objects("proxyless")
	if svc == nil || svc.Spec.Ports[0].Port != 8080 || svc.Spec.Selector["app"] != "server" {
		t.Fatalf("a serving workload's Service: %+v", svc)
	}
	tpl := dep.Spec.Template
	if tpl.Spec.NodeName != "proxyless" || tpl.Annotations[TemplateAnnotation] != GRPCAgentTemplate || tpl.Annotations[AnnotationListen] != "8080" {
		t.Fatalf("pod template %+v", tpl)
	}
	dep, svc = Workload{Namespace: "callers", Name: "caller", Call: target, PodLabels: map[string]string{TLSModeLabel: "istio"}}.Objects("n")
	if svc != nil || dep.Spec.Template.Annotations[AnnotationCall] != target || *dep.Spec.Replicas != 1 ||
		dep.Spec.Template.Labels[TLSModeLabel] != "istio" || dep.Spec.Selector.MatchLabels[TLSModeLabel] != "" {
		t.Fatalf("a calling workload: %+v, %+v", dep, svc)
	}
}
