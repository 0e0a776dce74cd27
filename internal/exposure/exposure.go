// Package exposure finds, in the Kubernetes API, the callers of a namespace's Services that can
// never speak mTLS: the kube-apiserver calling admission, conversion and aggregated-API webhooks,
// clients outside the cluster through LoadBalancer and NodePort Services and Ingresses, and a
// Prometheus scraping app ports. STRICT mTLS would refuse them all, and no telemetry is needed
// to know it. It also resolves the exemptions the spec asks for (plaintextPorts) into the pods
// and ports Istio's port-level policies need.
package exposure

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/policy"
)

// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=list
// +kubebuilder:rbac:groups=networking.k8s.io,resources=ingresses;ingressclasses,verbs=list;watch
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations;validatingwebhookconfigurations,verbs=list;watch
// +kubebuilder:rbac:groups=apiregistration.k8s.io,resources=apiservices,verbs=list;watch
// +kubebuilder:rbac:groups=monitoring.coreos.com,resources=servicemonitors;podmonitors,verbs=list

// Kinds read as unstructured: their Go types live in modules the operator does not need.
var (
	apiServiceList     = schema.GroupVersionKind{Group: "apiregistration.k8s.io", Version: "v1", Kind: "APIServiceList"}
	crdList            = schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinitionList"}
	serviceMonitorList = schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "ServiceMonitorList"}
	podMonitorList     = schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "PodMonitorList"}
)

// istioIngressController is the IngressClass controller of Istio's gateways: their calls are mTLS.
const istioIngressController = "istio.io/ingress-controller"

// Finding is what the API shows of one namespace.
type Finding struct {
	// Callers are the callers outside the mesh, in a stable order.
	Callers []ladder.NonMeshCaller
	// Exemptions are the namespace's plaintextPorts, resolved to pods and target ports.
	Exemptions []policy.Exemption
	// Problems say why some plaintextPorts could not be resolved.
	Problems []string
}

// Readers are where the lookups read: Cached for Services, webhook configurations, APIServices,
// Ingresses and IngressClasses (the ladder's cache, informed on first use, or the API server for
// the kubectl plugin); CRDs for the CustomResourceDefinitions (the operator's cache holds them
// all already); API for the rest, read only when a check needs them: ServiceMonitors and
// PodMonitors, whose kinds may not exist, and the EndpointSlices of a named target port.
type Readers struct {
	Cached client.Reader
	CRDs   client.Reader
	API    client.Reader
}

// APIServiceObject is the kind of an APIService, for a cache's options: read as unstructured,
// its Go type lives in a module the operator does not need.
func APIServiceObject() client.Object {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(apiServiceList.GroupVersion().WithKind("APIService"))
	return u
}

// Find looks up the callers outside the mesh of the namespaces in lookFor, and resolves the
// exemptions of the namespaces in exempt (each mapped to the Service ports the spec exempts
// there). Cluster-wide kinds are listed once for all, and only when some namespace is looked at.
func Find(ctx context.Context, r Readers, lookFor []string, exempt map[string][]meshv1.ServicePortRef) (map[string]Finding, error) {
	out := map[string]Finding{}
	services := map[string][]corev1.Service{}
	for _, ns := range append(slices.Collect(maps.Keys(exempt)), lookFor...) {
		if _, done := services[ns]; done {
			continue
		}
		var list corev1.ServiceList
		if err := r.Cached.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return nil, fmt.Errorf("listing Services of %s: %w", ns, err)
		}
		services[ns] = list.Items
	}
	if len(lookFor) > 0 {
		found := &collector{namespaces: map[string]bool{}, services: map[string][]corev1.Service{}, out: map[string][]ladder.NonMeshCaller{}}
		for _, ns := range lookFor {
			found.namespaces[ns], found.services[ns] = true, services[ns]
		}
		crds := &unstructured.UnstructuredList{}
		crds.SetGroupVersionKind(crdList)
		if err := r.CRDs.List(ctx, crds); err != nil {
			return nil, fmt.Errorf("listing CustomResourceDefinitions: %w", err)
		}
		found.crds = crds.Items
		for _, look := range lookups {
			if err := look(ctx, r, found); err != nil {
				return nil, err
			}
		}
		for _, ns := range lookFor {
			f := Finding{Callers: found.out[ns]}
			if f.Callers == nil {
				f.Callers = []ladder.NonMeshCaller{} // looked for, none found
			}
			slices.SortStableFunc(f.Callers, func(a, b ladder.NonMeshCaller) int { return strings.Compare(a.Object, b.Object) })
			out[ns] = f
		}
	}
	for ns, ports := range exempt {
		f := out[ns]
		var err error
		if f.Exemptions, f.Problems, err = resolve(ctx, r.API, ns, services[ns], ports); err != nil {
			return nil, err
		}
		out[ns] = f
	}
	return out, nil
}

// lookups are the places the API shows callers outside the mesh, one function each: a new kind
// of caller is one entry.
var lookups = []func(context.Context, Readers, *collector) error{
	exposedServices,
	admissionWebhooks,
	aggregatedAPIs,
	conversionWebhooks,
	ingresses,
	serviceMonitors,
	podMonitors,
}

// collector gathers callers by namespace.
type collector struct {
	namespaces map[string]bool
	services   map[string][]corev1.Service
	out        map[string][]ladder.NonMeshCaller
	// crds are the cluster's CustomResourceDefinitions: for conversion webhooks, and to tell
	// whether the monitors' kinds exist before asking the API server for them.
	crds []unstructured.Unstructured
}

// hasCRD reports whether a CustomResourceDefinition of that name exists.
func (c *collector) hasCRD(name string) bool {
	return slices.ContainsFunc(c.crds, func(u unstructured.Unstructured) bool { return u.GetName() == name })
}

// add records a caller of a Service port, if the namespace is one looked at.
func (c *collector) add(namespace string, nc ladder.NonMeshCaller) {
	if !c.namespaces[namespace] {
		return
	}
	if !slices.Contains(c.out[namespace], nc) {
		c.out[namespace] = append(c.out[namespace], nc)
	}
}

// service finds a Service of a namespace looked at.
func (c *collector) service(namespace, name string) *corev1.Service {
	for i, s := range c.services[namespace] {
		if s.Name == name {
			return &c.services[namespace][i]
		}
	}
	return nil
}

// gateway reports whether a Service fronts Istio gateway pods: a gateway's listeners are set by
// Gateway resources, not by the namespace's PeerAuthentication, so STRICT refuses nobody there.
func gateway(s *corev1.Service) bool {
	if _, ok := s.Spec.Selector["gateway.networking.k8s.io/gateway-name"]; ok {
		return true
	}
	return strings.HasSuffix(s.Spec.Selector["istio"], "gateway")
}

// exposedServices: LoadBalancer and NodePort Services take calls from outside the cluster.
func exposedServices(_ context.Context, _ Readers, c *collector) error {
	for ns, list := range c.services {
		for i := range list {
			s := &list[i]
			if gateway(s) || (s.Spec.Type != corev1.ServiceTypeLoadBalancer && s.Spec.Type != corev1.ServiceTypeNodePort) {
				continue
			}
			for _, p := range s.Spec.Ports {
				c.add(ns, ladder.NonMeshCaller{Object: fmt.Sprintf("Service/%s (type %s)", s.Name, s.Spec.Type),
					Caller: "clients outside the cluster", Service: s.Name, Port: p.Port})
			}
		}
	}
	return nil
}

// webhookPort is a webhook Service's port: 443 unless given.
func webhookPort(p *int32) int32 {
	if p == nil {
		return 443
	}
	return *p
}

// admissionWebhooks: the kube-apiserver calls admission webhooks, with no mesh identity.
func admissionWebhooks(ctx context.Context, r Readers, c *collector) error {
	var v admissionv1.ValidatingWebhookConfigurationList
	if err := r.Cached.List(ctx, &v); err != nil {
		return fmt.Errorf("listing ValidatingWebhookConfigurations: %w", err)
	}
	for _, cfg := range v.Items {
		for _, w := range cfg.Webhooks {
			c.addWebhook("ValidatingWebhookConfiguration/"+cfg.Name, "the kube-apiserver (writes it checks would fail)", w.ClientConfig)
		}
	}
	var m admissionv1.MutatingWebhookConfigurationList
	if err := r.Cached.List(ctx, &m); err != nil {
		return fmt.Errorf("listing MutatingWebhookConfigurations: %w", err)
	}
	for _, cfg := range m.Items {
		for _, w := range cfg.Webhooks {
			c.addWebhook("MutatingWebhookConfiguration/"+cfg.Name, "the kube-apiserver (writes it mutates would fail)", w.ClientConfig)
		}
	}
	return nil
}

// addWebhook records the caller of a webhook served by a Service (not one called by URL).
func (c *collector) addWebhook(object, caller string, cc admissionv1.WebhookClientConfig) {
	if s := cc.Service; s != nil {
		c.add(s.Namespace, ladder.NonMeshCaller{Object: object, Caller: caller, Service: s.Name, Port: webhookPort(s.Port)})
	}
}

// serviceRef reads a {namespace, name, port} Service reference from an unstructured object.
func serviceRef(obj map[string]any, path ...string) (namespace, name string, port int32, ok bool) {
	ref, found, _ := unstructured.NestedMap(obj, path...)
	if !found {
		return "", "", 0, false
	}
	namespace, _, _ = unstructured.NestedString(ref, "namespace")
	name, _, _ = unstructured.NestedString(ref, "name")
	port = 443
	if p, found, _ := unstructured.NestedInt64(ref, "port"); found && p > 0 && p <= 65535 {
		port = int32(p) // a port number: the check above bounds it
	}
	return namespace, name, port, namespace != "" && name != ""
}

// aggregatedAPIs: the kube-apiserver proxies every request of an aggregated API to its Service.
func aggregatedAPIs(ctx context.Context, r Readers, c *collector) error {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(apiServiceList)
	if err := r.Cached.List(ctx, list); err != nil {
		return fmt.Errorf("listing APIServices: %w", err)
	}
	for _, a := range list.Items {
		if ns, name, port, ok := serviceRef(a.Object, "spec", "service"); ok {
			c.add(ns, ladder.NonMeshCaller{Object: "APIService/" + a.GetName(),
				Caller: "the kube-apiserver (every request of that API would fail)", Service: name, Port: port})
		}
	}
	return nil
}

// conversionWebhooks: the kube-apiserver calls a CRD's conversion webhook to read and write its
// objects in any version but the stored one.
func conversionWebhooks(_ context.Context, _ Readers, c *collector) error {
	for _, crd := range c.crds {
		if strategy, _, _ := unstructured.NestedString(crd.Object, "spec", "conversion", "strategy"); strategy != "Webhook" {
			continue
		}
		if ns, name, port, ok := serviceRef(crd.Object, "spec", "conversion", "webhook", "clientConfig", "service"); ok {
			c.add(ns, ladder.NonMeshCaller{Object: "CustomResourceDefinition/" + crd.GetName(),
				Caller: "the kube-apiserver (reads and writes of that resource would fail)", Service: name, Port: port})
		}
	}
	return nil
}

// ingresses: an ingress controller outside the mesh calls the backends of its Ingresses in
// plaintext; Istio's own ingress class calls them with mTLS.
func ingresses(ctx context.Context, r Readers, c *collector) error {
	var classes networkingv1.IngressClassList
	if err := r.Cached.List(ctx, &classes); err != nil {
		return fmt.Errorf("listing IngressClasses: %w", err)
	}
	istioClass := map[string]bool{}
	for _, ic := range classes.Items {
		istioClass[ic.Name] = ic.Spec.Controller == istioIngressController
	}
	for ns := range c.namespaces {
		var list networkingv1.IngressList
		if err := r.Cached.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return fmt.Errorf("listing Ingresses of %s: %w", ns, err)
		}
		for _, ing := range list.Items {
			class := ""
			if ing.Spec.IngressClassName != nil {
				class = *ing.Spec.IngressClassName
			}
			if istioClass[class] {
				continue
			}
			for _, b := range backends(&ing) {
				if port, ok := servicePort(c.service(ns, b.Name), b.Port); ok {
					c.add(ns, ladder.NonMeshCaller{Object: "Ingress/" + ing.Name, Caller: "the ingress controller (outside the mesh)", Service: b.Name, Port: port})
				}
			}
		}
	}
	return nil
}

// backends lists an Ingress's Service backends.
func backends(ing *networkingv1.Ingress) []networkingv1.IngressServiceBackend {
	var out []networkingv1.IngressServiceBackend
	if b := ing.Spec.DefaultBackend; b != nil && b.Service != nil {
		out = append(out, *b.Service)
	}
	for _, rule := range ing.Spec.Rules {
		if rule.HTTP == nil {
			continue
		}
		for _, p := range rule.HTTP.Paths {
			if p.Backend.Service != nil {
				out = append(out, *p.Backend.Service)
			}
		}
	}
	return out
}

// servicePort finds the port of a Service an Ingress backend names (by number or name).
func servicePort(s *corev1.Service, p networkingv1.ServiceBackendPort) (int32, bool) {
	if s == nil {
		return 0, false
	}
	for _, sp := range s.Spec.Ports {
		if (p.Number != 0 && sp.Port == p.Number) || (p.Name != "" && sp.Name == p.Name) {
			return sp.Port, true
		}
	}
	return 0, false
}

// optionalList lists a kind that may not be installed (the Prometheus Operator's): none then,
// without a request when its CRD is not there (a kind the API server does not serve sends the
// client to rediscover every API group, on every pass).
func optionalList(ctx context.Context, r client.Reader, c *collector, crd string, gvk schema.GroupVersionKind) ([]unstructured.Unstructured, error) {
	if !c.hasCRD(crd) {
		return nil, nil
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(gvk)
	if err := r.List(ctx, list); err != nil {
		if meta.IsNoMatchError(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing %s: %w", gvk.Kind, err)
	}
	return list.Items, nil
}

// mutualTLSScrape reports whether a monitor's endpoint scrapes with a client certificate over
// https, as Istio documents for a Prometheus given the mesh's certificates: that is mTLS.
func mutualTLSScrape(endpoint map[string]any) bool {
	scheme, _, _ := unstructured.NestedString(endpoint, "scheme")
	cert, _, _ := unstructured.NestedString(endpoint, "tlsConfig", "certFile")
	_, secretCert, _ := unstructured.NestedMap(endpoint, "tlsConfig", "cert")
	return scheme == "https" && (cert != "" || secretCert)
}
