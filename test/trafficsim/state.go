package trafficsim

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The Istio kinds the simulator reads, as unstructured objects so that it needs no Istio types.
// They and the names below are written here from Istio's API, not imported from the operator's
// packages: a judge that shared the operator's constants would share its mistakes.
var (
	PeerAuthenticationGVK  = schema.GroupVersionKind{Group: "security.istio.io", Version: "v1", Kind: "PeerAuthentication"}
	AuthorizationPolicyGVK = schema.GroupVersionKind{Group: "security.istio.io", Version: "v1", Kind: "AuthorizationPolicy"}
	VirtualServiceGVK      = schema.GroupVersionKind{Group: "networking.istio.io", Version: "v1", Kind: "VirtualService"}
)

const (
	proxyContainer   = "istio-proxy"
	dryRunAnnotation = "istio.io/dry-run"
	workloadLabel    = "app" // the test framework labels a Deployment's pods app=<name>
)

// podInfo is one running pod as the simulator sees it.
type podInfo struct {
	UID            types.UID
	Namespace      string
	Name           string
	Labels         map[string]string
	ServiceAccount string
	HasProxy       bool
}

// snapshot is the cluster state one Step works from.
type snapshot struct {
	pods        []podInfo
	byWorkload  map[Workload][]podInfo
	mesh        Mesh
	unsupported []string
	// timeouts are the request timeouts of the routes callers' proxies take to each workload
	// (readTimeouts); none is no timeout.
	timeouts map[Workload]time.Duration
}

func (s *Simulator) readState(ctx context.Context) (*snapshot, error) {
	pods, err := readPods(ctx, s.reader)
	if err != nil {
		return nil, err
	}
	pas, err := readPeerAuthns(ctx, s.reader)
	if err != nil {
		return nil, err
	}
	aps, unsupported, err := readAuthzPolicies(ctx, s.reader)
	if err != nil {
		return nil, err
	}
	timeouts, unrouted, err := readTimeouts(ctx, s.reader)
	if err != nil {
		return nil, err
	}
	snap := &snapshot{
		pods:        pods,
		byWorkload:  map[Workload][]podInfo{},
		mesh:        Mesh{RootNamespace: s.opts.RootNamespace, TrustDomain: s.opts.TrustDomain, PeerAuthns: pas, AuthzPolicies: aps},
		unsupported: append(unsupported, unrouted...),
		timeouts:    timeouts,
	}
	for _, p := range pods {
		if app := p.Labels[workloadLabel]; app != "" {
			w := Workload{Namespace: p.Namespace, Name: app}
			snap.byWorkload[w] = append(snap.byWorkload[w], p)
		}
	}
	return snap, nil
}

// readPods lists the running, non-terminating pods of the cluster, sorted by namespace and name.
func readPods(ctx context.Context, r client.Reader) ([]podInfo, error) {
	var list corev1.PodList
	if err := r.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	var out []podInfo
	for i := range list.Items {
		p := &list.Items[i]
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		out = append(out, podInfo{
			UID: p.UID, Namespace: p.Namespace, Name: p.Name, Labels: p.Labels,
			ServiceAccount: p.Spec.ServiceAccountName, HasProxy: hasProxy(p),
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// hasProxy: istiod's injection adds an istio-proxy container, or an init container of that name
// when it injects a native sidecar.
func hasProxy(p *corev1.Pod) bool {
	for _, cs := range [][]corev1.Container{p.Spec.Containers, p.Spec.InitContainers} {
		for _, c := range cs {
			if c.Name == proxyContainer {
				return true
			}
		}
	}
	return false
}

// listIstio lists one Istio kind; a cluster without Istio's CRDs simply has none.
func listIstio(ctx context.Context, r client.Reader, gvk schema.GroupVersionKind) ([]unstructured.Unstructured, error) {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	if err := r.List(ctx, list); err != nil {
		if meta.IsNoMatchError(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("list %s: %w", gvk.Kind, err)
	}
	return list.Items, nil
}

// readTimeouts reads the request timeout of the route callers' proxies take to each workload:
// the first HTTP route of the VirtualService that names its Service for sidecars (no gateways,
// or Istio's reserved "mesh" among them; ASSUMPTION: every workload has a Service of its name,
// see the package doc), its host short (resolved in the VirtualService's namespace) or the
// Service's full name. Istio routes a host by one VirtualService for sidecars, the oldest
// (pilot/pkg/model/virtualservice.go, sortMergedVirtualServicesByCreationTime). A first route
// with match conditions is not evaluated: it is reported unsupported, and no timeout applies.
func readTimeouts(ctx context.Context, r client.Reader) (map[Workload]time.Duration, []string, error) {
	items, err := listIstio(ctx, r, VirtualServiceGVK)
	if err != nil {
		return nil, nil, err
	}
	sort.SliceStable(items, func(i, j int) bool {
		return items[i].GetCreationTimestamp().Time.Before(items[j].GetCreationTimestamp().Time)
	})
	out, routed := map[Workload]time.Duration{}, map[Workload]bool{}
	var unsupported []string
	for i := range items {
		vs := &items[i]
		gateways, _, _ := unstructured.NestedStringSlice(vs.Object, "spec", "gateways")
		if len(gateways) > 0 && !slices.Contains(gateways, "mesh") {
			continue
		}
		hosts, _, _ := unstructured.NestedStringSlice(vs.Object, "spec", "hosts")
		routes, _, _ := unstructured.NestedSlice(vs.Object, "spec", "http")
		var timeout time.Duration
		if len(routes) > 0 {
			route, _ := routes[0].(map[string]any)
			if _, matches := route["match"]; matches {
				unsupported = append(unsupported, fmt.Sprintf("VirtualService %s/%s: a first route with match conditions", vs.GetNamespace(), vs.GetName()))
				continue
			}
			if raw, _ := route["timeout"].(string); raw != "" {
				if timeout, err = time.ParseDuration(raw); err != nil {
					unsupported = append(unsupported, fmt.Sprintf("VirtualService %s/%s: timeout %q", vs.GetNamespace(), vs.GetName(), raw))
					continue
				}
			}
		}
		for _, h := range hosts {
			w, ok := workloadOfHost(h, vs.GetNamespace())
			if !ok || routed[w] {
				continue
			}
			routed[w] = true
			if timeout > 0 {
				out[w] = timeout
			}
		}
	}
	return out, unsupported, nil
}

// workloadOfHost is the workload whose Service a host names: NAME in the object's namespace, or
// NAME.NAMESPACE.svc.cluster.local.
func workloadOfHost(host, namespace string) (Workload, bool) {
	if !strings.Contains(host, ".") {
		return Workload{Namespace: namespace, Name: host}, host != "*"
	}
	name, rest, _ := strings.Cut(host, ".")
	ns, suffix, _ := strings.Cut(rest, ".")
	return Workload{Namespace: ns, Name: name}, suffix == "svc.cluster.local" && name != "*"
}

func readPeerAuthns(ctx context.Context, r client.Reader) ([]PeerAuthn, error) {
	items, err := listIstio(ctx, r, PeerAuthenticationGVK)
	if err != nil {
		return nil, err
	}
	out := make([]PeerAuthn, 0, len(items))
	for i := range items {
		out = append(out, parsePeerAuthn(&items[i]))
	}
	return out, nil
}

func parsePeerAuthn(u *unstructured.Unstructured) PeerAuthn {
	pa := PeerAuthn{Namespace: u.GetNamespace(), Name: u.GetName(), Created: u.GetCreationTimestamp().Time}
	pa.Selector, _, _ = unstructured.NestedStringMap(u.Object, "spec", "selector", "matchLabels")
	mode, _, _ := unstructured.NestedString(u.Object, "spec", "mtls", "mode")
	pa.Mode = MTLSMode(mode)
	ports, _, _ := unstructured.NestedMap(u.Object, "spec", "portLevelMtls")
	for k, v := range ports {
		port, err := strconv.Atoi(k)
		m, ok := v.(map[string]any)
		if err != nil || !ok {
			continue
		}
		if pa.PortModes == nil {
			pa.PortModes = map[int]MTLSMode{}
		}
		mode, _ := m["mode"].(string)
		pa.PortModes[port] = MTLSMode(mode)
	}
	return pa
}

func readAuthzPolicies(ctx context.Context, r client.Reader) ([]AuthzPolicy, []string, error) {
	items, err := listIstio(ctx, r, AuthorizationPolicyGVK)
	if err != nil {
		return nil, nil, err
	}
	out := make([]AuthzPolicy, 0, len(items))
	var unsupported []string
	for i := range items {
		p, bad := parseAuthzPolicy(&items[i])
		out = append(out, p)
		for _, b := range bad {
			unsupported = append(unsupported, fmt.Sprintf("AuthorizationPolicy %s/%s: %s", p.Namespace, p.Name, b))
		}
	}
	return out, unsupported, nil
}

// parseAuthzPolicy reads an AuthorizationPolicy; it also returns the fields the simulator cannot
// evaluate (their rules never match).
func parseAuthzPolicy(u *unstructured.Unstructured) (AuthzPolicy, []string) {
	p := AuthzPolicy{Namespace: u.GetNamespace(), Name: u.GetName()}
	if v, ok := u.GetAnnotations()[dryRunAnnotation]; ok {
		p.DryRun, _ = strconv.ParseBool(v) // Istio treats an unparsable value as false
	}
	spec, _, _ := unstructured.NestedMap(u.Object, "spec")
	p.Selector, _, _ = unstructured.NestedStringMap(u.Object, "spec", "selector", "matchLabels")
	action, _ := spec["action"].(string)
	p.Action = Action(action)
	_, hasRef := spec["targetRef"]
	refs, _ := spec["targetRefs"].([]any)
	p.TargetRef = hasRef || len(refs) > 0
	rules, _ := spec["rules"].([]any)
	var bad []string
	for i, raw := range rules {
		m, _ := raw.(map[string]any)
		r := parseRule(m)
		for _, f := range r.Unsupported {
			bad = append(bad, fmt.Sprintf("rules[%d]: %s is not simulated (the rule never matches)", i, f))
		}
		p.Rules = append(p.Rules, r)
	}
	return p, bad
}

func parseRule(m map[string]any) Rule {
	var r Rule
	if when, _ := m["when"].([]any); len(when) > 0 {
		r.Unsupported = append(r.Unsupported, "when")
	}
	from, _ := m["from"].([]any)
	for _, raw := range from {
		src, _ := nested(raw, "source")
		s := Source{
			Principals: stringList(src, "principals"), NotPrincipals: stringList(src, "notPrincipals"),
			Namespaces: stringList(src, "namespaces"), NotNamespaces: stringList(src, "notNamespaces"),
		}
		r.Unsupported = append(r.Unsupported, others(src, "from.source.", "principals", "notPrincipals", "namespaces", "notNamespaces")...)
		r.From = append(r.From, s)
	}
	to, _ := m["to"].([]any)
	for _, raw := range to {
		op, _ := nested(raw, "operation")
		var o Operation
		var bad []string
		o.Ports, bad = ports(stringList(op, "ports"))
		r.Unsupported = append(r.Unsupported, bad...)
		o.NotPorts, bad = ports(stringList(op, "notPorts"))
		r.Unsupported = append(r.Unsupported, bad...)
		r.Unsupported = append(r.Unsupported, others(op, "to.operation.", "ports", "notPorts")...)
		r.To = append(r.To, o)
	}
	return r
}

func nested(raw any, key string) (map[string]any, bool) {
	m, _ := raw.(map[string]any)
	v, ok := m[key].(map[string]any)
	return v, ok
}

func stringList(m map[string]any, key string) []string {
	raw, _ := m[key].([]any)
	var out []string
	for _, v := range raw {
		if s, ok := v.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// others names the fields of m outside the supported ones.
func others(m map[string]any, prefix string, supported ...string) []string {
	var out []string
	for k := range m {
		known := false
		for _, s := range supported {
			known = known || k == s
		}
		if !known {
			out = append(out, prefix+k)
		}
	}
	sort.Strings(out)
	return out
}

func ports(values []string) ([]int, []string) {
	var out []int
	var bad []string
	for _, v := range values {
		p, err := parsePort(v)
		if err != nil {
			bad = append(bad, err.Error())
			continue
		}
		out = append(out, p)
	}
	return out, bad
}
