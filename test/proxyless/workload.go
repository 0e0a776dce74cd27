package proxyless

import (
	"fmt"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/meshwright/meshwright/internal/revision"
	"github.com/meshwright/meshwright/test/cluster"
)

// Workload describes one proxyless gRPC workload for Objects.
type Workload struct {
	Namespace, Name string
	// Port is where it serves (0: it only calls), behind a Service of its name.
	Port int32
	// Call is the workload it calls, as a Target: one, and only when it does not serve
	// (pilot-agent's xDS proxy serves a single xDS stream, and grpc-go opens one per channel
	// target and one for a server).
	Call string
	// Replicas defaults to 1.
	Replicas int32
	// PodLabels are added to its pods' labels: security.istio.io/tlsMode=istio
	// (revision.TLSModeLabel) makes a proxyless server require mTLS even under PERMISSIVE, as
	// Istio's grpc-agent template says a workload using its mTLS must.
	PodLabels map[string]string
}

// Target is the gRPC target of a workload's Service for a proxyless caller: resolved by istiod
// (xDS), not by DNS.
func Target(namespace, name string, port int32) string {
	return fmt.Sprintf("xds:///%s.%s.svc.cluster.local:%d", name, namespace, port)
}

// Objects are the Deployment (its pods on node, injected with the grpc-agent template once
// their namespace is in the mesh) and, for a serving workload, the Service of a workload.
func (w Workload) Objects(node string) (*appsv1.Deployment, *corev1.Service) {
	sel := map[string]string{"app": w.Name}
	labels := map[string]string{"app": w.Name}
	for k, v := range w.PodLabels {
		labels[k] = v
	}
	// Ready once its application serves, not once kwok runs it.
	annotations := map[string]string{revision.TemplatesAnnotation: revision.GRPCAgentTemplate, cluster.AnnotationReadyWhenServing: "true"}
	if w.Call != "" {
		annotations[AnnotationCall] = w.Call
	}
	container := corev1.Container{Name: "app", Image: "registry.example/meshapp:1"}
	if w.Port != 0 {
		annotations[AnnotationListen] = strconv.Itoa(int(w.Port))
		container.Ports = []corev1.ContainerPort{{Name: "grpc", ContainerPort: w.Port}}
	}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: w.Name, Namespace: w.Namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(max(w.Replicas, 1)),
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: annotations},
				Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{container}},
			},
		},
	}
	if w.Port == 0 {
		return dep, nil
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: w.Name, Namespace: w.Namespace},
		Spec: corev1.ServiceSpec{Selector: sel, Ports: []corev1.ServicePort{{
			Name: "grpc", Port: w.Port, TargetPort: intstr.FromInt32(w.Port), AppProtocol: ptr.To("grpc"),
		}}},
	}
	return dep, svc
}
