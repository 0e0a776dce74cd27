package exposure

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/policy"
)

// resolve turns a namespace's plaintextPorts into exemptions: the Service's selector and the
// pods' ports behind the Service ports. A Service the namespace does not have is passed over (one
// rule serves many namespaces); a port that cannot be resolved is a problem the ladder reports.
func resolve(ctx context.Context, r client.Reader, namespace string, services []corev1.Service, ports []meshv1.ServicePortRef) ([]policy.Exemption, []string, error) {
	var out []policy.Exemption
	var problems []string
	for _, ref := range ports {
		i := slices.IndexFunc(services, func(s corev1.Service) bool { return s.Name == ref.Service })
		if i < 0 {
			continue
		}
		s := &services[i]
		if len(s.Spec.Selector) == 0 {
			problems = append(problems, fmt.Sprintf("Service %s has no selector, so there are no pods to exempt", s.Name))
			continue
		}
		j := slices.IndexFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == ref.Port })
		if j < 0 {
			problems = append(problems, fmt.Sprintf("Service %s has no port %d", s.Name, ref.Port))
			continue
		}
		target, err := targetPort(ctx, r, namespace, s, s.Spec.Ports[j])
		if err != nil {
			return nil, nil, err
		}
		if target == 0 {
			problems = append(problems, fmt.Sprintf("the targetPort %q of Service %s port %d names a port no ready pod has yet (no EndpointSlice resolves it)", s.Spec.Ports[j].TargetPort.StrVal, s.Name, ref.Port))
			continue
		}
		k := slices.IndexFunc(out, func(x policy.Exemption) bool { return x.Service == s.Name })
		if k < 0 {
			out = append(out, policy.Exemption{Service: s.Name, Selector: s.Spec.Selector})
			k = len(out) - 1
		}
		if !slices.Contains(out[k].Ports, target) {
			out[k].Ports = append(out[k].Ports, target)
			slices.Sort(out[k].Ports)
		}
	}
	slices.SortFunc(out, func(a, b policy.Exemption) int { return strings.Compare(a.Service, b.Service) })
	return out, problems, nil
}

// targetPort is the pods' port behind a Service port: its targetPort, the port itself when unset,
// and for a named targetPort the number the Service's EndpointSlices resolved it to (0 when none
// has yet).
func targetPort(ctx context.Context, r client.Reader, namespace string, s *corev1.Service, sp corev1.ServicePort) (int32, error) {
	switch {
	case sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal == 0:
		return sp.Port, nil
	case sp.TargetPort.Type == intstr.Int:
		return sp.TargetPort.IntVal, nil
	}
	var eps discoveryv1.EndpointSliceList
	if err := r.List(ctx, &eps, client.InNamespace(namespace), client.MatchingLabels{discoveryv1.LabelServiceName: s.Name}); err != nil {
		return 0, fmt.Errorf("listing EndpointSlices of Service %s/%s: %w", namespace, s.Name, err)
	}
	for _, es := range eps.Items {
		for _, p := range es.Ports {
			if p.Name != nil && *p.Name == sp.Name && p.Port != nil {
				return *p.Port, nil
			}
		}
	}
	return 0, nil
}
