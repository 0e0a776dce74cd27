package ambientsim

import (
	"testing"

	"istio.io/api/annotation"
	"istio.io/api/label"
	"istio.io/istio/pkg/config/constants"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshwright/meshwright/internal/ambient"
)

// TestOperatorSpeaksIstiosContract pins the operator's names for the node agent's contract to
// Istio's published ones: the label that puts a namespace into ambient mode, the annotation the
// node agent writes, and its value on a captured pod.
func TestOperatorSpeaksIstiosContract(t *testing.T) {
	if ambient.Label != label.IoIstioDataplaneMode.Name || ambient.Enabled != constants.DataplaneModeAmbient || ambient.Disabled != constants.DataplaneModeNone {
		t.Errorf("operator's label %s=%s|%s, Istio's %s=%s|%s", ambient.Label, ambient.Enabled, ambient.Disabled,
			label.IoIstioDataplaneMode.Name, constants.DataplaneModeAmbient, constants.DataplaneModeNone)
	}
	if ambient.RedirectionAnnotation != annotation.AmbientRedirection.Name || ambient.RedirectionEnabled != constants.AmbientRedirectionEnabled {
		t.Errorf("operator's annotation %s=%s, Istio's %s=%s", ambient.RedirectionAnnotation, ambient.RedirectionEnabled,
			annotation.AmbientRedirection.Name, constants.AmbientRedirectionEnabled)
	}
}

// TestRedirection: the node agent, with the cni chart's default selectors (Istio's code decides),
// enrolls a pod of a namespace labelled ambient unless the pod opts out, a pod labelled ambient
// anywhere, never one on the node's network, one with a sidecar or one in kube-system; an
// enrolled pod is "enabled" on a node with a Ready ztunnel and "pending" on one without.
func TestRedirection(t *testing.T) {
	rules, err := DefaultRules()
	if err != nil {
		t.Fatal(err)
	}
	inAmbient := map[string]string{label.IoIstioDataplaneMode.Name: constants.DataplaneModeAmbient}
	pod := func(ns string, mod func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: ns, Labels: map[string]string{"app": "web"}}}
		if mod != nil {
			mod(p)
		}
		return p
	}
	tests := map[string]struct {
		pod          *corev1.Pod
		nsLabels     map[string]string
		ztunnelReady bool
		want         string
	}{
		"a pod of an ambient namespace":          {pod: pod("shop", nil), nsLabels: inAmbient, ztunnelReady: true, want: constants.AmbientRedirectionEnabled},
		"the same on a node without ztunnel":     {pod: pod("shop", nil), nsLabels: inAmbient, want: constants.AmbientRedirectionPending},
		"a pod of a namespace not in ambient":    {pod: pod("shop", nil), ztunnelReady: true},
		"a pod that opts out":                    {pod: pod("shop", func(p *corev1.Pod) { p.Labels[label.IoIstioDataplaneMode.Name] = constants.DataplaneModeNone }), nsLabels: inAmbient, ztunnelReady: true},
		"a pod labelled ambient on its own":      {pod: pod("shop", func(p *corev1.Pod) { p.Labels[label.IoIstioDataplaneMode.Name] = constants.DataplaneModeAmbient }), ztunnelReady: true, want: constants.AmbientRedirectionEnabled},
		"a pod on the node's network":            {pod: pod("shop", func(p *corev1.Pod) { p.Spec.HostNetwork = true }), nsLabels: inAmbient, ztunnelReady: true},
		"a pod with a sidecar":                   {pod: pod("shop", func(p *corev1.Pod) { p.Annotations = map[string]string{annotation.SidecarStatus.Name: "{}"} }), nsLabels: inAmbient, ztunnelReady: true},
		"kube-system, excluded by the cni chart": {pod: pod("kube-system", nil), nsLabels: inAmbient, ztunnelReady: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := rules.Redirection(tc.pod, tc.nsLabels, tc.ztunnelReady); got != tc.want {
				t.Errorf("Redirection = %q, want %q", got, tc.want)
			}
		})
	}
}
