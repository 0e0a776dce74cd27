package exposure

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meshwright/meshwright/internal/ladder"
)

// proxyPorts are the ports of Istio's proxy itself (merged metrics, Envoy's stats), which its
// traffic capture leaves out: scraping them needs no mTLS.
var proxyPorts = []int32{15020, 15090}

// monitor is a ServiceMonitor or PodMonitor, as far as finding whom it scrapes goes.
type monitor struct {
	kind, namespace, name string
	// namespaces it looks in; any means all of them.
	namespaces []string
	any        bool
	selector   labels.Selector
	endpoints  []map[string]any
}

// readMonitor reads what a monitor selects; ok is false for one whose selector is unusable.
func readMonitor(u *unstructured.Unstructured, endpointsField string) (monitor, bool) {
	m := monitor{kind: u.GetKind(), namespace: u.GetNamespace(), name: u.GetName()}
	m.any, _, _ = unstructured.NestedBool(u.Object, "spec", "namespaceSelector", "any")
	m.namespaces, _, _ = unstructured.NestedStringSlice(u.Object, "spec", "namespaceSelector", "matchNames")
	if len(m.namespaces) == 0 {
		m.namespaces = []string{m.namespace}
	}
	raw, _, _ := unstructured.NestedMap(u.Object, "spec", "selector")
	var sel metav1.LabelSelector
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &sel); err != nil {
		return m, false
	}
	s, err := metav1.LabelSelectorAsSelector(&sel)
	if err != nil {
		return m, false
	}
	m.selector = s
	items, _, _ := unstructured.NestedSlice(u.Object, "spec", endpointsField)
	for _, it := range items {
		if e, ok := it.(map[string]any); ok && !mutualTLSScrape(e) {
			m.endpoints = append(m.endpoints, e)
		}
	}
	return m, true
}

// looksIn reports whether the monitor scrapes in a namespace.
func (m monitor) looksIn(ns string) bool { return m.any || slices.Contains(m.namespaces, ns) }

// caller names the monitor as a caller of a Service port.
func (m monitor) caller(s *corev1.Service, port int32) ladder.NonMeshCaller {
	return ladder.NonMeshCaller{Object: fmt.Sprintf("%s/%s/%s", m.kind, m.namespace, m.name),
		Caller: "Prometheus, scraping in plaintext", Service: s.Name, Port: port}
}

// serviceMonitors: a ServiceMonitor makes Prometheus scrape the Services it selects (by the
// Services' labels), on the ports its endpoints name. A Prometheus outside the mesh scrapes in
// plaintext unless the endpoint uses Istio's certificates or the proxy's own ports.
func serviceMonitors(ctx context.Context, r Readers, c *collector) error {
	return scanMonitors(ctx, r, c, "servicemonitors.monitoring.coreos.com", serviceMonitorList, "endpoints", func(m monitor, s *corev1.Service) bool {
		return m.selector.Matches(labels.Set(s.Labels))
	}, scrapes)
}

// scanMonitors adds, for every monitor of a kind, the Service ports it scrapes in the
// namespaces looked at: of the Services selects picks, the ports scrapesPort matches.
func scanMonitors(ctx context.Context, r Readers, c *collector, crd string, kind schema.GroupVersionKind, endpointsField string,
	selects func(monitor, *corev1.Service) bool, scrapesPort func(map[string]any, corev1.ServicePort) bool) error {
	items, err := optionalList(ctx, r.API, c, crd, kind)
	if err != nil {
		return err
	}
	for i := range items {
		m, ok := readMonitor(&items[i], endpointsField)
		if !ok {
			continue
		}
		for ns, list := range c.services {
			if !m.looksIn(ns) {
				continue
			}
			for j := range list {
				s := &list[j]
				if !selects(m, s) {
					continue
				}
				for _, e := range m.endpoints {
					for _, sp := range s.Spec.Ports {
						if scrapesPort(e, sp) {
							c.add(ns, m.caller(s, sp.Port))
						}
					}
				}
			}
		}
	}
	return nil
}

// scrapes reports whether a monitor endpoint scrapes a Service port: by the port's name
// ("port"), or by its target port ("targetPort", or "port"/"portNumber" of a PodMonitor), and
// not on the proxy's own ports.
func scrapes(e map[string]any, sp corev1.ServicePort) bool {
	target := sp.TargetPort
	if target.Type == intstr.Int && target.IntVal == 0 {
		target = intstr.FromInt32(sp.Port)
	}
	if target.Type == intstr.Int && slices.Contains(proxyPorts, target.IntVal) {
		return false
	}
	if name, _, _ := unstructured.NestedString(e, "port"); name != "" {
		return name == sp.Name || (target.Type == intstr.String && name == target.StrVal)
	}
	if n, ok, _ := unstructured.NestedInt64(e, "portNumber"); ok {
		return target.Type == intstr.Int && int64(target.IntVal) == n
	}
	switch t := e["targetPort"].(type) {
	case string:
		return target.Type == intstr.String && target.StrVal == t
	case int64:
		return target.Type == intstr.Int && int64(target.IntVal) == t
	}
	return false
}

// podMonitors: a PodMonitor makes Prometheus scrape pods directly. Its pods are matched through
// the Services that front them (a Service whose selector the PodMonitor's selector matches, and
// whose target port the endpoint scrapes), since exemptions are given per Service port.
func podMonitors(ctx context.Context, r Readers, c *collector) error {
	return scanMonitors(ctx, r, c, "podmonitors.monitoring.coreos.com", podMonitorList, "podMetricsEndpoints", func(m monitor, s *corev1.Service) bool {
		return len(s.Spec.Selector) > 0 && m.selector.Matches(labels.Set(s.Spec.Selector))
	}, scrapesPod)
}

// scrapesPod is scrapes for a PodMonitor endpoint, whose "port" names the pod's port (the
// Service's target port), not the Service's.
func scrapesPod(e map[string]any, sp corev1.ServicePort) bool {
	if name, _, _ := unstructured.NestedString(e, "port"); name != "" {
		return sp.TargetPort.Type == intstr.String && sp.TargetPort.StrVal == name
	}
	return scrapes(e, sp)
}
