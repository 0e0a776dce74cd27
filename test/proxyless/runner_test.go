package proxyless

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshwright/meshwright/internal/revision"
)

func TestProxylessRole(t *testing.T) {
	app := corev1.Container{Name: "app"}
	proxy := corev1.Container{Name: revision.ProxyContainer}
	tests := map[string]struct {
		containers  []corev1.Container
		annotations map[string]string
		want        bool
		wantErr     bool
	}{
		"not injected":            {containers: []corev1.Container{app}},
		"not injected, asked for": {containers: []corev1.Container{app}, annotations: map[string]string{revision.TemplatesAnnotation: revision.GRPCAgentTemplate}},
		"proxyless":               {containers: []corev1.Container{app, proxy}, annotations: map[string]string{revision.TemplatesAnnotation: revision.GRPCAgentTemplate}, want: true},
		"envoy, the default":      {containers: []corev1.Container{app, proxy}, wantErr: true},
		"two templates, no agent": {containers: []corev1.Container{app, proxy}, annotations: map[string]string{revision.TemplatesAnnotation: "sidecar, extra"}, wantErr: true},
		"an empty template list":  {containers: []corev1.Container{app, proxy}, annotations: map[string]string{revision.TemplatesAnnotation: " , "}, wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: tc.annotations}, Spec: corev1.PodSpec{Containers: tc.containers}}
			got, err := proxylessRole(p)
			if got != tc.want || (err != nil) != tc.wantErr {
				t.Errorf("proxylessRole = %v, %v; want %v, an error: %v", got, err, tc.want, tc.wantErr)
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
	if tpl.Spec.NodeName != "proxyless" || tpl.Annotations[revision.TemplatesAnnotation] != revision.GRPCAgentTemplate || tpl.Annotations[AnnotationListen] != "8080" {
		t.Fatalf("pod template %+v", tpl)
	}
	dep, svc = Workload{Namespace: "callers", Name: "caller", Call: target, PodLabels: map[string]string{revision.TLSModeLabel: "istio"}}.Objects("n")
	if svc != nil || dep.Spec.Template.Annotations[AnnotationCall] != target || *dep.Spec.Replicas != 1 ||
		dep.Spec.Template.Labels[revision.TLSModeLabel] != "istio" || dep.Spec.Selector.MatchLabels[revision.TLSModeLabel] != "" {
		t.Fatalf("a calling workload: %+v, %+v", dep, svc)
	}
}
