package resilience

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/apply"
)

// Kinds of Istio's networking API the defaults are written in.
var (
	DestinationRuleGVK = schema.GroupVersionKind{Group: "networking.istio.io", Version: "v1", Kind: "DestinationRule"}
	VirtualServiceGVK  = schema.GroupVersionKind{Group: "networking.istio.io", Version: "v1", Kind: "VirtualService"}
)

// RouteKinds are the Gateway API's routes that istiod turns into a VirtualService of the Service
// they attach to (a parentRef of kind Service: the GAMMA initiative's mesh routing).
var RouteKinds = []schema.GroupVersionKind{
	{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "HTTPRoute"},
	{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "GRPCRoute"},
}

// Kinds lists the kinds the defaults are written in, for watches, pruning and clean-up.
func Kinds() []schema.GroupVersionKind {
	return []schema.GroupVersionKind{DestinationRuleGVK, VirtualServiceGVK}
}

// Names of the operator's objects, fixed so that users can find them and the operator can tell
// them from a team's.
const (
	// DestinationRuleName is the namespace's DestinationRule, for every host of its Services.
	DestinationRuleName = "meshwright-resilience"
	// VirtualServicePrefix starts the name of a Service's VirtualService: the prefix and the
	// Service's name.
	VirtualServicePrefix = "meshwright-resilience-"
	// DomainSuffix is the cluster's DNS domain, Istio's default: Services are
	// NAME.NAMESPACE.svc.cluster.local to it.
	DomainSuffix = "svc.cluster.local"
)

// Ours tells the operator's resilience objects from every other object of the same kinds.
func Ours(u *unstructured.Unstructured) bool {
	return u.GetLabels()[meshv1.LabelManagedBy] == meshv1.ManagedByValue &&
		(u.GetName() == DestinationRuleName || strings.HasPrefix(u.GetName(), VirtualServicePrefix))
}

// Host is a Service's name as Istio's configuration names it.
func Host(namespace, service string) string { return service + "." + namespace + "." + DomainSuffix }

// Key names an object of the defaults in a namespace: its kind and name, as the record of the
// defaults a user deleted keeps it (see meshv1.AnnotationResilienceDeclined).
func Key(u *unstructured.Unstructured) string { return u.GetKind() + "/" + u.GetName() }

// Service is a Service of the namespace, as far as the defaults care. An ExternalName Service
// has no endpoints of the mesh, and is left out by the caller.
type Service struct {
	Name string
	// Headless Services get the DestinationRule only: their callers reach each endpoint by
	// its own name, which a VirtualService for the Service does not route.
	Headless bool
}

// Other is an object of someone else's that names hosts: a DestinationRule, a VirtualService,
// or a Gateway API route attached to a Service (which istiod turns into a VirtualService).
type Other struct {
	Kind, Namespace, Name string
	// Hosts are the hosts as written; a short name is resolved in the object's namespace.
	Hosts []string
	// Sidecars is false for a VirtualService bound only to gateways: it does not route the
	// mesh's calls, so it hides nothing.
	Sidecars bool
}

// String names the object for a message.
func (o Other) String() string { return fmt.Sprintf("%s %s/%s", o.Kind, o.Namespace, o.Name) }

// Hidden is a Service whose callers do not get all of the defaults, because of objects of
// someone else's for its host, which are left as they are.
type Hidden struct {
	Service string
	By      []string
}

// Plan is a namespace's defaults: the objects to write, and what they leave uncovered.
type Plan struct {
	// Objects are the objects to write, the DestinationRule first.
	Objects []*unstructured.Unstructured
	// Services is how many Services the defaults are for.
	Services int
	// Hidden are the Services some of whose callers get a team's settings instead, by name.
	Hidden []Hidden
	// HeldBy, when set, is the object that keeps the namespace's DestinationRule from being
	// written: one for all of the namespace's hosts, which the operator's would merge with or
	// override.
	HeldBy string
	// Declined are the objects not written because a user deleted them (Key form).
	Declined []string
}

// Partial reports whether some Service's callers do not get all of the defaults.
func (p Plan) Partial() bool { return len(p.Hidden) > 0 || p.HeldBy != "" || len(p.Declined) > 0 }

// Build is a namespace's defaults for its Services, given the objects of someone else's in the
// cluster (others, every namespace) and the objects of the defaults a user deleted (declined, in
// Key form). rootNamespace is Istio's root namespace (the control plane's), whose
// DestinationRules apply to every namespace.
func Build(installation, namespace, rootNamespace string, v Values, services []Service, others []Other, declined []string) Plan {
	p := Plan{Services: len(services)}
	hidden, routed := map[string][]string{}, map[string]bool{}
	for _, o := range others {
		if w := holds(o, namespace, rootNamespace, services); w != "" && p.HeldBy == "" {
			p.HeldBy = fmt.Sprintf("%s (host %s)", o, w)
		}
		for _, s := range services {
			if by := hides(o, namespace, rootNamespace, s); by != "" {
				hidden[s.Name] = append(hidden[s.Name], by)
				routed[s.Name] = routed[s.Name] || o.Kind != DestinationRuleGVK.Kind
			}
		}
	}
	declinedSet := map[string]bool{}
	for _, d := range declined {
		declinedSet[d] = true
	}
	write := func(u *unstructured.Unstructured) {
		if declinedSet[Key(u)] {
			p.Declined = append(p.Declined, Key(u))
			return
		}
		p.Objects = append(p.Objects, u)
	}
	if p.HeldBy == "" {
		if dr := destinationRule(installation, namespace, v); dr != nil {
			write(dr)
		}
	}
	for _, s := range services {
		if s.Headless || routed[s.Name] {
			continue
		}
		write(virtualService(installation, namespace, s.Name, v))
	}
	for _, s := range services {
		if by := hidden[s.Name]; len(by) > 0 {
			p.Hidden = append(p.Hidden, Hidden{Service: s.Name, By: by})
		}
	}
	return p
}

// holds returns the host by which a DestinationRule keeps the namespace's from being written, or
// "": one in the namespace itself that covers all of its hosts with a wildcard ("*",
// "*.cluster.local", "*.NS.svc.cluster.local"…), which the operator's would merge with (Istio
// keeps the older one's traffic policy); or one in the root namespace for any host of the
// namespace, which Istio consults only when neither the caller's namespace nor the Service's has
// one for the host, so the operator's would take its place.
func holds(o Other, namespace, rootNamespace string, services []Service) string {
	if o.Kind != DestinationRuleGVK.Kind {
		return ""
	}
	for _, h := range o.Hosts {
		host := resolve(h, o.Namespace)
		switch {
		case o.Namespace == namespace && strings.HasPrefix(h, "*") && matches(host, Host(namespace, "any")):
			return h
		case o.Namespace == rootNamespace && (matches(host, Host(namespace, "any")) || slices.ContainsFunc(services, func(s Service) bool { return matches(host, Host(namespace, s.Name)) })):
			return h
		}
	}
	return ""
}

// hides says how o keeps some callers of a Service from the defaults ("" when it does not):
//   - a DestinationRule for the Service's host in the namespace itself: Istio takes the most
//     specific for the host, so a team's for the Service wins there (a wildcard one, or one in
//     the root namespace, keeps the operator's from being written: see holds); in any other
//     namespace, it is the one that namespace's callers get.
//   - a VirtualService bound to sidecars, or a route attached to the Service, naming the host:
//     Istio routes a host by one VirtualService, so the operator writes none for it.
func hides(o Other, namespace, rootNamespace string, s Service) string {
	host := Host(namespace, s.Name)
	for _, h := range o.Hosts {
		if !matches(resolve(h, o.Namespace), host) {
			continue
		}
		switch {
		case o.Kind != DestinationRuleGVK.Kind && o.Sidecars:
			return o.String()
		case o.Kind != DestinationRuleGVK.Kind || o.Namespace == rootNamespace:
			return "" // a root namespace's is reported once, as what holds the DestinationRule
		case o.Namespace == namespace:
			if strings.HasPrefix(h, "*") {
				return "" // likewise
			}
			return o.String()
		default:
			return o.String() + " (for callers in " + o.Namespace + ")"
		}
	}
	return ""
}

// resolve is a host as Istio reads it in an object of namespace: a short name is a Service of
// that namespace.
func resolve(host, namespace string) string {
	if host == "*" || strings.Contains(host, ".") {
		return host
	}
	return Host(namespace, host)
}

// matches reports whether a host pattern, exact or a leading-wildcard one, covers host.
func matches(pattern, host string) bool {
	if pattern == "*" || pattern == host {
		return true
	}
	suffix, ok := strings.CutPrefix(pattern, "*")
	return ok && strings.HasSuffix(host, suffix)
}

// destinationRule is the namespace's DestinationRule: connection pool, timeouts and outlier
// detection for every host of its Services. No TLS setting: Istio's auto mTLS stays as it was.
func destinationRule(installation, namespace string, v Values) *unstructured.Unstructured {
	tcp := map[string]any{"connectTimeout": protoDuration(v.ConnectTimeout.Duration)}
	http := map[string]any{"idleTimeout": protoDuration(v.IdleTimeout.Duration)}
	setLimit(tcp, "maxConnections", v.MaxConnections)
	setLimit(http, "http1MaxPendingRequests", v.MaxPendingRequests)
	setLimit(http, "http2MaxRequests", v.MaxRequests)
	policy := map[string]any{"connectionPool": map[string]any{"tcp": tcp, "http": http}}
	if v.Consecutive5xxErrors > 0 {
		policy["outlierDetection"] = map[string]any{"consecutive5xxErrors": int64(v.Consecutive5xxErrors),
			"interval": protoDuration(v.Interval.Duration), "baseEjectionTime": protoDuration(v.BaseEjectionTime.Duration),
			"maxEjectionPercent": int64(v.MaxEjectionPercent)}
	}
	u := apply.Owned(DestinationRuleGVK, installation, namespace, DestinationRuleName)
	u.Object["spec"] = map[string]any{"host": "*." + namespace + "." + DomainSuffix, "trafficPolicy": policy}
	return u
}

// setLimit writes a circuit breaker's limit when one is set (zero is Istio's own: none).
func setLimit(m map[string]any, field string, limit int32) {
	if limit > 0 {
		m[field] = int64(limit)
	}
}

// virtualService is a Service's VirtualService: its own host, routed to itself, with the request
// timeout and retries. A route without a timeout keeps Istio's (none).
func virtualService(installation, namespace, service string, v Values) *unstructured.Unstructured {
	host := Host(namespace, service)
	retries := map[string]any{"attempts": int64(v.Attempts)}
	if v.Attempts > 0 {
		if v.PerTryTimeout.Duration > 0 {
			retries["perTryTimeout"] = protoDuration(v.PerTryTimeout.Duration)
		}
		if v.RetryOn != "" {
			retries["retryOn"] = v.RetryOn
		}
	}
	route := map[string]any{"route": []any{map[string]any{"destination": map[string]any{"host": host}}}, "retries": retries}
	if v.RequestTimeout.Duration > 0 {
		route["timeout"] = protoDuration(v.RequestTimeout.Duration)
	}
	u := apply.Owned(VirtualServiceGVK, installation, namespace, VirtualServicePrefix+service)
	u.Object["spec"] = map[string]any{"hosts": []any{host}, "http": []any{route}}
	return u
}

// protoDuration writes a duration as Istio's API reads one (protobuf's JSON form): seconds, with
// the milliseconds as decimals.
func protoDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%.3fs", d.Seconds())
}

// Track is what the operator remembers of a namespace's objects after a pass: those it has seen
// exist (seen), and those a user deleted (declined). wanted are the keys of the objects the
// defaults ask for (Build's, before declining any), existing the keys of the operator's objects
// in the namespace now. An object seen before, still wanted, and gone was deleted by someone
// else: it is declined, and not created again until the user takes it off the record. The record
// forgets what is no longer wanted (the operator deletes those itself), and keeps a choice while
// the defaults are off (wanted nil).
func Track(wanted []string, existing map[string]bool, seen, declined []string) (newSeen, newDeclined []string) {
	if wanted == nil {
		return nil, declined
	}
	want := map[string]bool{}
	for _, k := range wanted {
		want[k] = true
	}
	gone := map[string]bool{}
	for _, k := range seen {
		if want[k] && !existing[k] {
			gone[k] = true
		}
	}
	for _, k := range declined {
		if want[k] {
			gone[k] = true
		}
	}
	for _, k := range wanted {
		switch {
		case gone[k]:
			newDeclined = append(newDeclined, k)
		case existing[k]:
			newSeen = append(newSeen, k)
		}
	}
	return newSeen, newDeclined
}
