package exposure

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/testenv"
)

var k8s client.Client

func TestMain(m *testing.M) {
	testenv.Main(m, func(cfg *rest.Config) error {
		scheme := runtime.NewScheme()
		if err := clientgoscheme.AddToScheme(scheme); err != nil {
			return err
		}
		if err := apiextensionsv1.AddToScheme(scheme); err != nil {
			return err
		}
		var err error
		if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
			return err
		}
		return installMonitorCRDs(context.Background())
	})
}

// installMonitorCRDs installs the Prometheus Operator's ServiceMonitor and PodMonitor kinds, as
// schemaless CRDs: the lookups read them as unstructured, by the field names of its API.
func installMonitorCRDs(ctx context.Context) error {
	for _, kind := range []string{"ServiceMonitor", "PodMonitor"} {
		plural := strings.ToLower(kind) + "s"
		crd := &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: plural + ".monitoring.coreos.com"},
			Spec: apiextensionsv1.CustomResourceDefinitionSpec{Group: "monitoring.coreos.com", Scope: apiextensionsv1.NamespaceScoped,
				Names: apiextensionsv1.CustomResourceDefinitionNames{Kind: kind, ListKind: kind + "List", Plural: plural, Singular: strings.ToLower(kind)},
				Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{Name: "v1", Served: true, Storage: true,
					Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{Type: "object", XPreserveUnknownFields: ptr.To(true)}}}}}}
		if err := k8s.Create(ctx, crd); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(podMonitorList)
		err := k8s.List(ctx, list)
		if err == nil {
			return nil
		}
		if !meta.IsNoMatchError(err) || time.Now().After(deadline) {
			return fmt.Errorf("waiting for the monitor CRDs: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := k8s.Create(context.Background(), o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

func service(ns, name string, typ corev1.ServiceType, selector map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.ServiceSpec{Type: typ, Selector: selector, Ports: ports}}
}

func newMonitor(kind, ns, name string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetAPIVersion("monitoring.coreos.com/v1")
	u.SetKind(kind)
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

// TestFindAgainstTheAPIServer: each kind of caller outside the mesh is found in the namespace
// whose Service it calls, on the Service's port, and only there; the ones that call with mTLS
// (Istio's ingress class, a monitor using Istio's certificates, the proxy's own metrics port) or
// reach an Istio gateway are not callers.
func TestFindAgainstTheAPIServer(t *testing.T) {
	ctx := context.Background()
	for _, ns := range []string{"shop", "elsewhere", "monitoring"} {
		create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	web := map[string]string{"app": "web"}
	create(t,
		service("shop", "hook", corev1.ServiceTypeClusterIP, web, corev1.ServicePort{Name: "https", Port: 443, TargetPort: intstr.FromInt32(8443)}),
		service("shop", "web", corev1.ServiceTypeClusterIP, web, corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
			corev1.ServicePort{Name: "merged", Port: 15020}),
		service("shop", "public", corev1.ServiceTypeLoadBalancer, web, corev1.ServicePort{Name: "http", Port: 8080}),
		service("shop", "node", corev1.ServiceTypeNodePort, web, corev1.ServicePort{Name: "http", Port: 9090}),
		service("shop", "gateway", corev1.ServiceTypeLoadBalancer, map[string]string{"istio": "ingressgateway"}, corev1.ServicePort{Name: "http", Port: 80}),
		service("elsewhere", "hook", corev1.ServiceTypeLoadBalancer, web, corev1.ServicePort{Name: "https", Port: 443}),
		&admissionv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "policy"}, Webhooks: []admissionv1.ValidatingWebhook{{
			Name: "validate.policy.example.com", ClientConfig: admissionv1.WebhookClientConfig{Service: &admissionv1.ServiceReference{Namespace: "shop", Name: "hook"}},
			SideEffects: ptr.To(admissionv1.SideEffectClassNone), AdmissionReviewVersions: []string{"v1"}, FailurePolicy: ptr.To(admissionv1.Ignore)}}},
		&admissionv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "defaults"}, Webhooks: []admissionv1.MutatingWebhook{{
			Name: "mutate.defaults.example.com", ClientConfig: admissionv1.WebhookClientConfig{Service: &admissionv1.ServiceReference{Namespace: "shop", Name: "hook", Port: ptr.To[int32](9443)}},
			SideEffects: ptr.To(admissionv1.SideEffectClassNone), AdmissionReviewVersions: []string{"v1"}, FailurePolicy: ptr.To(admissionv1.Ignore)}}},
		&networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: "nginx"}, Spec: networkingv1.IngressClassSpec{Controller: "k8s.io/ingress-nginx"}},
		&networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: "istio"}, Spec: networkingv1.IngressClassSpec{Controller: istioIngressController}},
		ingress("shop", "front", "nginx", networkingv1.ServiceBackendPort{Name: "http"}),
		ingress("shop", "meshed", "istio", networkingv1.ServiceBackendPort{Number: 443}),
		newMonitor("ServiceMonitor", "monitoring", "web", map[string]any{"namespaceSelector": map[string]any{"matchNames": []any{"shop"}},
			"selector": map[string]any{"matchLabels": map[string]any{"app": "web"}}, "endpoints": []any{map[string]any{"port": "http"}, map[string]any{"port": "merged"}}}),
		newMonitor("ServiceMonitor", "monitoring", "hook-over-mtls", map[string]any{"namespaceSelector": map[string]any{"any": true},
			"selector":  map[string]any{"matchLabels": map[string]any{"app": "hook"}},
			"endpoints": []any{map[string]any{"port": "https", "scheme": "https", "tlsConfig": map[string]any{"certFile": "/etc/prom-certs/cert-chain.pem"}}}}),
		newMonitor("PodMonitor", "shop", "pods", map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": "web"}},
			"podMetricsEndpoints": []any{map[string]any{"port": "http"}}}),
	)
	apiService := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"group": "metrics.example.com", "version": "v1", "groupPriorityMinimum": int64(100),
		"versionPriority": int64(100), "insecureSkipTLSVerify": true, "service": map[string]any{"namespace": "shop", "name": "hook", "port": int64(443)}}}}
	apiService.SetAPIVersion("apiregistration.k8s.io/v1")
	apiService.SetKind("APIService")
	apiService.SetName("v1.metrics.example.com")
	create(t, apiService, conversionCRD("shop", "hook"))

	found, err := Find(ctx, Readers{Cached: k8s, CRDs: k8s, API: k8s}, []string{"shop"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range found["shop"].Callers {
		got = append(got, fmt.Sprintf("%s -> %s:%d", c.Object, c.Service, c.Port))
	}
	want := []string{
		"APIService/v1.metrics.example.com -> hook:443",
		"CustomResourceDefinition/widgets.example.com -> hook:443",
		"Ingress/front -> web:80",
		"MutatingWebhookConfiguration/defaults -> hook:9443",
		"PodMonitor/shop/pods -> web:80",
		"Service/node (type NodePort) -> node:9090",
		"Service/public (type LoadBalancer) -> public:8080",
		"ServiceMonitor/monitoring/web -> web:80",
		"ValidatingWebhookConfiguration/policy -> hook:443",
	}
	if !slices.Equal(got, want) {
		t.Errorf("callers of shop:\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if _, ok := found["elsewhere"]; ok {
		t.Error("a namespace not looked at was searched")
	}

	// A namespace looked at where nothing calls from outside: found, and empty (not nil: nil
	// means "not looked at" to the ladder).
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "quiet"}})
	found, err = Find(ctx, Readers{Cached: k8s, CRDs: k8s, API: k8s}, []string{"quiet"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := found["quiet"]; !ok || f.Callers == nil || len(f.Callers) != 0 {
		t.Errorf("quiet: %+v, want looked at with no caller", found)
	}
}

func ingress(ns, name, class string, port networkingv1.ServiceBackendPort) *networkingv1.Ingress {
	backend := networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "web", Port: port}}
	if port.Number == 443 {
		backend.Service.Name = "hook"
	}
	return &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: networkingv1.IngressSpec{IngressClassName: ptr.To(class),
		Rules: []networkingv1.IngressRule{{Host: name + ".example.com", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
			Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: ptr.To(networkingv1.PathTypePrefix), Backend: backend}}}}}}}}
}

// conversionCRD is a CRD whose versions the kube-apiserver converts through a webhook Service.
func conversionCRD(ns, svc string) *apiextensionsv1.CustomResourceDefinition {
	schema := &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{Type: "object", XPreserveUnknownFields: ptr.To(true)}}
	return &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: "widgets.example.com"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{Group: "example.com", Scope: apiextensionsv1.NamespaceScoped,
			Names:    apiextensionsv1.CustomResourceDefinitionNames{Kind: "Widget", ListKind: "WidgetList", Plural: "widgets", Singular: "widget"},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{Name: "v1", Served: true, Storage: true, Schema: schema}, {Name: "v2", Served: true, Schema: schema}},
			Conversion: &apiextensionsv1.CustomResourceConversion{Strategy: apiextensionsv1.WebhookConverter, Webhook: &apiextensionsv1.WebhookConversion{
				ConversionReviewVersions: []string{"v1"}, ClientConfig: &apiextensionsv1.WebhookClientConfig{Service: &apiextensionsv1.ServiceReference{Namespace: ns, Name: svc}}}}}}
}

// TestExemptionsAgainstTheAPIServer: plaintextPorts resolve to the Service's selector and the
// pods' ports (a numeric target port, an unset one, a named one through the EndpointSlices),
// merged per Service; what cannot be resolved is a problem to report, and a Service the
// namespace does not have is passed over.
func TestExemptionsAgainstTheAPIServer(t *testing.T) {
	ctx := context.Background()
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "exempt"}})
	web := map[string]string{"app": "web"}
	create(t,
		service("exempt", "hook", corev1.ServiceTypeClusterIP, web, corev1.ServicePort{Name: "https", Port: 443, TargetPort: intstr.FromInt32(8443)},
			corev1.ServicePort{Name: "plain", Port: 9000}, corev1.ServicePort{Name: "named", Port: 9443, TargetPort: intstr.FromString("hooks")},
			corev1.ServicePort{Name: "unresolved", Port: 9444, TargetPort: intstr.FromString("nowhere")}),
		service("exempt", "manual", corev1.ServiceTypeClusterIP, nil, corev1.ServicePort{Name: "http", Port: 80}),
		&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "exempt", Name: "hook-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "hook"}},
			AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: ptr.To("named"), Port: ptr.To[int32](7443)}}},
	)
	ports := []meshv1.ServicePortRef{{Service: "hook", Port: 443}, {Service: "hook", Port: 9000}, {Service: "hook", Port: 9443}, {Service: "hook", Port: 9444},
		{Service: "hook", Port: 1}, {Service: "manual", Port: 80}, {Service: "absent", Port: 80}}
	found, err := Find(ctx, Readers{Cached: k8s, CRDs: k8s, API: k8s}, nil, map[string][]meshv1.ServicePortRef{"exempt": ports})
	if err != nil {
		t.Fatal(err)
	}
	f := found["exempt"]
	if len(f.Exemptions) != 1 || f.Exemptions[0].Service != "hook" || !slices.Equal(f.Exemptions[0].Ports, []int32{7443, 8443, 9000}) || f.Exemptions[0].Selector["app"] != "web" {
		t.Errorf("exemptions = %+v, want hook's pods on 7443, 8443 and 9000", f.Exemptions)
	}
	wantProblems := []string{`"nowhere" of Service hook port 9444`, "Service hook has no port 1", "Service manual has no selector"}
	if len(f.Problems) != len(wantProblems) {
		t.Fatalf("problems = %q, want %d", f.Problems, len(wantProblems))
	}
	for i, w := range wantProblems {
		if !strings.Contains(f.Problems[i], w) {
			t.Errorf("problem %d = %q, want it to say %q", i, f.Problems[i], w)
		}
	}
	if f.Callers != nil {
		t.Errorf("callers = %v for a namespace only resolved, not looked at", f.Callers)
	}
}
