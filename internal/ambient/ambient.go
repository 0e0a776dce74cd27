// Package ambient holds what several parts of the operator must agree on about Istio's ambient
// data plane: the namespace label that puts a namespace's pods into it, and which namespaces
// carry it. The control plane keeps ztunnel and Istio CNI's ambient mode while any namespace
// does, so that removing ambient mode never leaves a namespace's traffic handled by neither.
package ambient

import (
	"slices"

	corev1 "k8s.io/api/core/v1"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

// Label is Istio's label that chooses a namespace's (or a pod's) data plane.
const Label = "istio.io/dataplane-mode"

// Enabled is Label's value that puts a namespace's pods into ambient mode: Istio CNI hands
// their traffic to the node's ztunnel, with no sidecar and no restart.
const Enabled = "ambient"

// Disabled is Label's value on a pod that keeps it out of ambient mode in an ambient namespace.
const Disabled = "none"

// RedirectionAnnotation is the annotation Istio CNI's node agent sets on a pod once it has
// redirected the pod's traffic to the node's ztunnel (RedirectionEnabled): the pod is captured.
// Istio documents that any other value, or none, means it is not (yet).
const RedirectionAnnotation = "ambient.istio.io/redirection"

// RedirectionEnabled is RedirectionAnnotation's value on a captured pod.
const RedirectionEnabled = "enabled"

// Redirected reports whether Istio CNI says it has handed the pod's traffic to ztunnel.
func Redirected(pod *corev1.Pod) bool {
	return pod.Annotations[RedirectionAnnotation] == RedirectionEnabled
}

// Labelled names the namespaces the ladder manages (they carry its record) whose label puts
// them into ambient mode, sorted; namespaces being deleted count while their pods may run. A
// namespace someone else labelled is not the operator's to keep ambient mode installed for.
func Labelled(namespaces []corev1.Namespace) []string {
	var out []string
	for i := range namespaces {
		if namespaces[i].Labels[Label] == Enabled && namespaces[i].Annotations[meshv1.AnnotationLadder] != "" {
			out = append(out, namespaces[i].Name)
		}
	}
	slices.Sort(out)
	return out
}
