package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ResilienceSpec is the platform team's defaults for how callers in the mesh call the Services of
// a namespace: a timeout and retries for each request, limits on connections and requests queued,
// and the ejection of endpoints that keep failing. Set once here, they are applied namespace by
// namespace as the ladder reaches FromLevel, as a step of its own with the ladder's gates, bake
// and rollback, and never over an object a team wrote for the same host (docs/resilience.md). A
// value left out takes the default its field names; a group left out takes every default of it.
type ResilienceSpec struct {
	// FromLevel is the lowest adoption level whose namespaces carry the defaults: Observe,
	// MutualTLS (the default) or ZeroTrust. A namespace below it carries none.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self != 'Off'",message="resilience.fromLevel must be Observe, MutualTLS or ZeroTrust: at Off a namespace has no proxy to apply the defaults"
	FromLevel AdoptionLevel `json:"fromLevel,omitempty"`

	ResilienceValues `json:",inline"`
}

// ResilienceValues are the values of the defaults, by group; spec.namespaces[].resilience
// overrides them field by field for the namespaces of a rule.
type ResilienceValues struct {
	// Timeouts bound a request and an idle connection.
	// +optional
	Timeouts *TimeoutValues `json:"timeouts,omitempty"`

	// Retries retry a request that failed in a way a retry can mend.
	// +optional
	Retries *RetryValues `json:"retries,omitempty"`

	// ConnectionPool limits what callers send to each Service (Envoy's circuit breakers): calls
	// past a limit fail fast with 503 instead of queueing.
	// +optional
	ConnectionPool *ConnectionPoolValues `json:"connectionPool,omitempty"`

	// OutlierDetection ejects, for a while, an endpoint that keeps answering with errors.
	// +optional
	OutlierDetection *OutlierDetectionValues `json:"outlierDetection,omitempty"`
}

// TimeoutValues bound a request and a connection. "0s" turns a timeout off.
type TimeoutValues struct {
	// Request is how long a caller waits for a whole HTTP or gRPC request, its retries included,
	// before its proxy answers 504 (default 15s). Written as the timeout of the Service's route
	// (a VirtualService).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=24
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(h|m|s|ms)|[0-9]+[.][0-9]{1,3}s)+$')",message="resilience.timeouts.request must be a duration in whole milliseconds (hours, minutes, seconds with up to 3 decimals, or ms) such as '15s' or '1m', or '0s' for none"
	Request *metav1.Duration `json:"request,omitempty"`

	// Idle is how long a connection to the Service may carry no request before it is closed
	// (default 1h, Envoy's own).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=24
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(h|m|s|ms)|[0-9]+[.][0-9]{1,3}s)+$') && duration(self) >= duration('1ms')",message="resilience.timeouts.idle must be a duration of at least 1ms in whole milliseconds (hours, minutes, seconds with up to 3 decimals, or ms), such as '1h'"
	Idle *metav1.Duration `json:"idle,omitempty"`

	// Connect is how long a caller's proxy waits for a TCP connection to an endpoint (default
	// 10s, Istio's own).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=24
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(h|m|s|ms)|[0-9]+[.][0-9]{1,3}s)+$') && duration(self) >= duration('1ms')",message="resilience.timeouts.connect must be a duration of at least 1ms in whole milliseconds (hours, minutes, seconds with up to 3 decimals, or ms), such as '5s'"
	Connect *metav1.Duration `json:"connect,omitempty"`
}

// RetryValues retry a failed request. A retry sends the request again, so only conditions where
// the request was not processed, or is safe to repeat, belong in RetryOn.
// +kubebuilder:validation:XValidation:rule="!has(self.attempts) || self.attempts > 0 || (!has(self.perTryTimeout) && !has(self.retryOn))",message="resilience.retries.attempts 0 turns retries off: remove perTryTimeout and retryOn, or set attempts to 1 or more"
type RetryValues struct {
	// Attempts is how many times a failed request is retried (default 2); 0 turns retries off.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self >= 0 && self <= 10",message="resilience.retries.attempts must be from 0 (no retries) to 10"
	Attempts *int32 `json:"attempts,omitempty"`

	// PerTryTimeout is how long each attempt may take (default: no bound of its own, only the
	// request's timeout).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=24
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(h|m|s|ms)|[0-9]+[.][0-9]{1,3}s)+$') && duration(self) >= duration('1ms')",message="resilience.retries.perTryTimeout must be a duration of at least 1ms in whole milliseconds (hours, minutes, seconds with up to 3 decimals, or ms), such as '2s'"
	PerTryTimeout *metav1.Duration `json:"perTryTimeout,omitempty"`

	// RetryOn is Envoy's retry conditions, comma separated, as Istio's VirtualService takes them
	// (default "connect-failure,refused-stream,unavailable,cancelled,503", Istio's own): 5xx,
	// gateway-error, reset, connect-failure, refused-stream, retriable-4xx,
	// retriable-status-codes, retriable-headers, envoy-ratelimited, cancelled,
	// deadline-exceeded, internal, resource-exhausted, unavailable, or an HTTP status code.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="self.split(',').all(c, c in ['5xx', 'gateway-error', 'reset', 'connect-failure', 'refused-stream', 'retriable-4xx', 'retriable-status-codes', 'retriable-headers', 'envoy-ratelimited', 'cancelled', 'deadline-exceeded', 'internal', 'resource-exhausted', 'unavailable'] || c.matches('^[1-5][0-9][0-9]$'))",message="resilience.retries.retryOn must be retry conditions separated by commas, with no spaces: 5xx, gateway-error, reset, connect-failure, refused-stream, retriable-4xx, retriable-status-codes, retriable-headers, envoy-ratelimited, cancelled, deadline-exceeded, internal, resource-exhausted, unavailable, or an HTTP status code such as 503"
	RetryOn string `json:"retryOn,omitempty"`
}

// ConnectionPoolValues are Envoy's circuit breakers for each Service, per caller proxy. Istio
// sets none (no limit); a limit left out stays so.
type ConnectionPoolValues struct {
	// MaxConnections bounds the TCP connections a caller's proxy opens to the Service's
	// endpoints (default: no limit).
	// +optional
	// +kubebuilder:validation:XValidation:rule="self >= 1",message="resilience.connectionPool.maxConnections must be at least 1"
	MaxConnections *int32 `json:"maxConnections,omitempty"`

	// MaxPendingRequests bounds the HTTP requests waiting for a connection (default: no limit).
	// +optional
	// +kubebuilder:validation:XValidation:rule="self >= 1",message="resilience.connectionPool.maxPendingRequests must be at least 1"
	MaxPendingRequests *int32 `json:"maxPendingRequests,omitempty"`

	// MaxRequests bounds the requests in flight to the Service (default: no limit).
	// +optional
	// +kubebuilder:validation:XValidation:rule="self >= 1",message="resilience.connectionPool.maxRequests must be at least 1"
	MaxRequests *int32 `json:"maxRequests,omitempty"`
}

// OutlierDetectionValues eject an endpoint that keeps failing from the Service's load balancing
// for a while, so that callers stop sending it requests.
type OutlierDetectionValues struct {
	// Consecutive5xxErrors is how many 5xx answers (or connection failures) in a row eject an
	// endpoint (default 5); 0 turns ejection off.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self >= 0",message="resilience.outlierDetection.consecutive5xxErrors must be 0 (off) or more"
	Consecutive5xxErrors *int32 `json:"consecutive5xxErrors,omitempty"`

	// Interval is how often endpoints are judged (default 10s).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=24
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(h|m|s|ms)|[0-9]+[.][0-9]{1,3}s)+$') && duration(self) >= duration('1ms')",message="resilience.outlierDetection.interval must be a duration of at least 1ms in whole milliseconds (hours, minutes, seconds with up to 3 decimals, or ms), such as '10s'"
	Interval *metav1.Duration `json:"interval,omitempty"`

	// BaseEjectionTime is how long an endpoint stays ejected the first time; each ejection
	// after lasts longer (default 30s).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=24
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(h|m|s|ms)|[0-9]+[.][0-9]{1,3}s)+$') && duration(self) >= duration('1ms')",message="resilience.outlierDetection.baseEjectionTime must be a duration of at least 1ms in whole milliseconds (hours, minutes, seconds with up to 3 decimals, or ms), such as '30s'"
	BaseEjectionTime *metav1.Duration `json:"baseEjectionTime,omitempty"`

	// MaxEjectionPercent is the most of a Service's endpoints that may be ejected at once
	// (default 10, Istio's own).
	// +optional
	// +kubebuilder:validation:XValidation:rule="self >= 0 && self <= 100",message="resilience.outlierDetection.maxEjectionPercent must be a percentage from 0 to 100"
	MaxEjectionPercent *int32 `json:"maxEjectionPercent,omitempty"`
}

// NamespaceResilience is a rule's change to spec.resilience for its namespaces: Skip opts them
// out, or values override the spec's field by field.
// +kubebuilder:validation:XValidation:rule="!has(self.skip) || !self.skip || (!has(self.timeouts) && !has(self.retries) && !has(self.connectionPool) && !has(self.outlierDetection))",message="resilience.skip opts these namespaces out of every default: remove skip to override single values, or remove the values"
type NamespaceResilience struct {
	// Skip keeps these namespaces out of the resilience defaults; what the operator made there
	// for them is removed, and nothing else.
	// +optional
	Skip bool `json:"skip,omitempty"`

	ResilienceValues `json:",inline"`
}
