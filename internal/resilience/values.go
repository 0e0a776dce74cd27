// Package resilience builds the resilience defaults the operator gives a namespace's Services
// (spec.resilience): which values are in force for a namespace, the Istio objects that carry them,
// and which of the namespace's hosts a team's own object keeps them from. Desired state only: pure
// functions of the spec and of what the cluster holds; the ladder decides when they apply.
//
// Istio has no namespace-wide object for a request timeout or retries, so the defaults take two
// forms (docs/resilience.md says why):
//   - one DestinationRule per namespace, for every host of its Services (*.NS.svc.cluster.local):
//     the connection pool, idle and connect timeouts, and outlier detection. Istio uses the most
//     specific DestinationRule for a host, so a team's own for one Service wins for it.
//   - one VirtualService per Service, routing to the Service itself: the request timeout and
//     retries. Istio uses one VirtualService per host for sidecars and drops the others, so none
//     is written for a host a team's VirtualService (or Gateway API route) names.
package resilience

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

// The defaults of every value a spec leaves out. Where Istio or Envoy has a default of its own,
// it is that one, so that a value left out changes nothing but what the operator states. The
// connection pool has none: Istio sets Envoy's circuit breakers to no limit
// (pilot/pkg/networking/core/cluster_traffic_policy.go, getDefaultCircuitBreakerThresholds), so a
// limit is written only when the spec sets one.
const (
	DefaultFromLevel          = meshv1.LevelMutualTLS
	DefaultRequestTimeout     = 15 * time.Second
	DefaultIdleTimeout        = time.Hour
	DefaultConnectTimeout     = 10 * time.Second
	DefaultAttempts           = 2
	DefaultRetryOn            = "connect-failure,refused-stream,unavailable,cancelled,503"
	DefaultConsecutive5xx     = 5
	DefaultInterval           = 10 * time.Second
	DefaultBaseEjectionTime   = 30 * time.Second
	DefaultMaxEjectionPercent = 10
)

// Values are the defaults in force for one namespace, every field resolved. The ladder records
// them on the namespace when a step applies them, so the objects of a namespace follow its record
// (a rollback restores the record's), not the spec of the moment.
type Values struct {
	// RequestTimeout bounds a whole request; zero is none.
	RequestTimeout metav1.Duration `json:"request"`
	IdleTimeout    metav1.Duration `json:"idle"`
	ConnectTimeout metav1.Duration `json:"connect"`
	// Attempts is the retries of a failed request; zero is none.
	Attempts int32 `json:"attempts"`
	// PerTryTimeout bounds each attempt; zero is no bound of its own.
	PerTryTimeout metav1.Duration `json:"perTry,omitzero"`
	RetryOn       string          `json:"retryOn,omitempty"`
	// MaxConnections, MaxPendingRequests and MaxRequests are Envoy's circuit breakers; zero is
	// Istio's own, no limit.
	MaxConnections     int32 `json:"maxConnections,omitempty"`
	MaxPendingRequests int32 `json:"maxPending,omitempty"`
	MaxRequests        int32 `json:"maxRequests,omitempty"`
	// Consecutive5xxErrors ejects an endpoint after so many errors in a row; zero ejects none.
	Consecutive5xxErrors int32           `json:"consecutive5xx"`
	Interval             metav1.Duration `json:"interval"`
	BaseEjectionTime     metav1.Duration `json:"baseEjection"`
	MaxEjectionPercent   int32           `json:"maxEjectionPercent"`
}

// FromLevel is the lowest level whose namespaces carry the defaults.
func FromLevel(spec *meshv1.ResilienceSpec) meshv1.AdoptionLevel {
	if spec == nil || spec.FromLevel == "" {
		return DefaultFromLevel
	}
	return spec.FromLevel
}

// Resolve is the values in force for the namespaces of a rule: the spec's, overridden field by
// field by the rule's, with the defaults for what neither sets. Nil when the spec asks for no
// defaults or the rule opts out.
func Resolve(spec *meshv1.ResilienceSpec, rule *meshv1.NamespaceResilience) *Values {
	if spec == nil || (rule != nil && rule.Skip) {
		return nil
	}
	v := &Values{
		RequestTimeout: dur(DefaultRequestTimeout), IdleTimeout: dur(DefaultIdleTimeout), ConnectTimeout: dur(DefaultConnectTimeout),
		Attempts: DefaultAttempts, RetryOn: DefaultRetryOn,
		Consecutive5xxErrors: DefaultConsecutive5xx, Interval: dur(DefaultInterval), BaseEjectionTime: dur(DefaultBaseEjectionTime),
		MaxEjectionPercent: DefaultMaxEjectionPercent,
	}
	v.set(spec.ResilienceValues)
	if rule != nil {
		v.set(rule.ResilienceValues)
	}
	if v.Attempts == 0 {
		// Istio refuses a retry policy with no attempts and a condition or a per-try timeout,
		// which a rule turning retries off would otherwise inherit from the spec.
		v.PerTryTimeout, v.RetryOn = metav1.Duration{}, ""
	}
	return v
}

// set overrides v with every value that o sets.
func (v *Values) set(o meshv1.ResilienceValues) {
	if t := o.Timeouts; t != nil {
		setDur(&v.RequestTimeout, t.Request)
		setDur(&v.IdleTimeout, t.Idle)
		setDur(&v.ConnectTimeout, t.Connect)
	}
	if r := o.Retries; r != nil {
		setInt(&v.Attempts, r.Attempts)
		setDur(&v.PerTryTimeout, r.PerTryTimeout)
		if r.RetryOn != "" {
			v.RetryOn = r.RetryOn
		}
	}
	if c := o.ConnectionPool; c != nil {
		setInt(&v.MaxConnections, c.MaxConnections)
		setInt(&v.MaxPendingRequests, c.MaxPendingRequests)
		setInt(&v.MaxRequests, c.MaxRequests)
	}
	if d := o.OutlierDetection; d != nil {
		setInt(&v.Consecutive5xxErrors, d.Consecutive5xxErrors)
		setDur(&v.Interval, d.Interval)
		setDur(&v.BaseEjectionTime, d.BaseEjectionTime)
		setInt(&v.MaxEjectionPercent, d.MaxEjectionPercent)
	}
}

func setDur(to *metav1.Duration, from *metav1.Duration) {
	if from != nil {
		*to = *from
	}
}

func setInt(to *int32, from *int32) {
	if from != nil {
		*to = *from
	}
}

func dur(d time.Duration) metav1.Duration { return metav1.Duration{Duration: d} }
