package telemetry

import (
	"fmt"
	"io"
	"regexp"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/meshwright/meshwright/internal/traffic"
)

// maxStatsBytes bounds what is read of one proxy's stats: an Envoy with Istio's default stats
// serves tens of kilobytes; a larger answer is cut, not buffered without end.
const maxStatsBytes = 8 << 20

// counterKey names one counter the embedded source follows in a proxy's stats: the calls a
// caller made to it (all, or only those without mTLS), the calls it made to a namespace
// (caller.Namespace is the destination's), or the requests the dry-run policies would have
// denied (caller left empty).
type counterKey struct {
	kind   counterKind
	caller traffic.Caller
}

// counterKind is what a counterKey counts.
type counterKind int

const (
	countInbound counterKind = iota
	countPlaintext
	countShadowDenied
	countCallsTo
	countDenied
	countRefused
	countUnreached
	countErrors
	countTimedOut
)

// rbacMetric matches the names of Envoy's HTTP RBAC stats (see metricsRBAC).
var rbacMetric = regexp.MustCompile(`^(` + metricsRBAC + `)$`)

// connectFailedFlags matches the response flags of an upstream connection that failed.
var connectFailedFlags = regexp.MustCompile(`^(` + connectFailed + `)$`)

// serverErrorCodes matches a 5xx response code, and timedOutFlags the flags of a request the
// reporting proxy timed out.
var (
	serverErrorCodes = regexp.MustCompile(`^(` + serverError + `)$`)
	timedOutFlags    = regexp.MustCompile(`^(` + timedOut + `)$`)
	proxyFailedFlags = regexp.MustCompile(`^(` + proxyFailed + `)$`)
)

// inboundAddress matches the address of the sidecar's inbound listener.
var inboundAddress = regexp.MustCompile(`^(` + inboundListener + `)$`)

// parseStats reads the counters the gates follow from a proxy's merged metrics (Prometheus text
// format, parsed by prometheus/common's parser): what it received as the destination, by caller
// and with or without mTLS, and what its dry-run policies would have denied. A proxy that does
// not report its uptime is not an Istio proxy's endpoint.
func parseStats(r io.Reader) (statsRead, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return statsRead{}, fmt.Errorf("reading the stats: %w", err)
	}
	up, ok := families[metricProxyUp]
	if !ok || len(up.GetMetric()) == 0 {
		return statsRead{}, fmt.Errorf("the stats have no %s: not an Istio proxy's merged metrics", metricProxyUp)
	}
	read := statsRead{counters: map[counterKey]float64{}, uptime: gaugeValue(up.GetMetric()[0])}
	for name, f := range families {
		switch {
		case name == metricRequests || name == metricConnections:
			addCalls(read.counters, f)
		case name == metricConnectionsClosed:
			addUnreached(read.counters, f)
		case name == metricNoFilterChain:
			for _, m := range f.GetMetric() {
				if inboundAddress.MatchString(labels(m)[labelListenerAddress]) {
					read.counters[counterKey{kind: countRefused}] += value(m)
				}
			}
		case rbacMetric.MatchString(name):
			for _, m := range f.GetMetric() {
				if labels(m)[labelDryRunResult] == dryRunDenied {
					read.counters[counterKey{kind: countShadowDenied}] += value(m)
				}
			}
		}
	}
	return read, nil
}

// addCalls adds a family of Istio's call counters: as the destination reported them, by caller;
// as the source did, by destination namespace.
func addCalls(counters map[counterKey]float64, f *dto.MetricFamily) {
	for _, m := range f.GetMetric() {
		l := labels(m)
		if l[labelReporter] == reporterSource {
			counters[counterKey{kind: countCallsTo, caller: traffic.Caller{Namespace: l[labelDestinationNS]}}] += value(m)
			addErrors(counters, f, l, value(m))
			continue
		}
		if l[labelReporter] != reporterDestination {
			continue
		}
		c := traffic.Caller{Namespace: l[labelSourceNS], Workload: l[labelSourceWorkload]}
		counters[counterKey{kind: countInbound, caller: c}] += value(m)
		if l[labelSecurityPolicy] != policyMutualTLS {
			counters[counterKey{kind: countPlaintext, caller: c}] += value(m)
		}
		if l[labelResponseCode] == codeForbidden {
			counters[counterKey{kind: countDenied, caller: c}] += value(m)
		}
		if f.GetName() == metricRequests && connectFailedFlags.MatchString(l[labelResponseFlags]) {
			// Accepted, but not passed on to the application (addUnreached, for requests).
			counters[counterKey{kind: countUnreached, caller: c}] += value(m)
		}
	}
}

// addErrors adds a request the proxy made as a caller, to its own namespace, that was answered
// with 5xx or failed by the proxy itself (and whether it timed out): the embedded source reads a namespace's own proxies, so
// these are the only callers' errors it sees of the namespace.
func addErrors(counters map[counterKey]float64, f *dto.MetricFamily, l map[string]string, n float64) {
	if f.GetName() != metricRequests || l[labelDestinationNS] != l[labelSourceNS] ||
		!serverErrorCodes.MatchString(l[labelResponseCode]) && !proxyFailedFlags.MatchString(l[labelResponseFlags]) {
		return
	}
	c := traffic.Caller{Namespace: l[labelSourceNS], Workload: l[labelSourceWorkload]}
	counters[counterKey{kind: countErrors, caller: c}] += n
	if timedOutFlags.MatchString(l[labelResponseFlags]) {
		counters[counterKey{kind: countTimedOut, caller: c}] += n
	}
}

// addUnreached adds the calls the proxy accepted as the destination but could not pass on to its
// application (an upstream-connection flag on its own report), by caller.
func addUnreached(counters map[counterKey]float64, f *dto.MetricFamily) {
	for _, m := range f.GetMetric() {
		l := labels(m)
		if l[labelReporter] == reporterDestination && connectFailedFlags.MatchString(l[labelResponseFlags]) {
			counters[counterKey{kind: countUnreached, caller: traffic.Caller{Namespace: l[labelSourceNS], Workload: l[labelSourceWorkload]}}] += value(m)
		}
	}
}

// labels are a metric's labels as a map.
func labels(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// gaugeValue is a gauge's value (an untyped sample's, for endpoints that omit TYPE lines).
func gaugeValue(m *dto.Metric) float64 {
	if g := m.GetGauge(); g != nil {
		return g.GetValue()
	}
	return m.GetUntyped().GetValue()
}

// value is a counter's value (an untyped sample's, for endpoints that omit TYPE lines).
func value(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetUntyped().GetValue()
}
