package telemetry

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/config"
	"github.com/prometheus/common/model"

	"github.com/meshwright/meshwright/internal/traffic"
)

// Prometheus reads Istio's standard metrics from a Prometheus-compatible query API. Its queries
// are batched: one per question for every namespace of a pass, never one per namespace.
type Prometheus struct {
	api  promv1.API
	url  string
	http *http.Client
}

// PrometheusConfig is how to reach a Prometheus-compatible query API.
type PrometheusConfig struct {
	// URL is the API's base URL (the client adds /api/v1/...).
	URL string
	// BearerToken, when set, is sent as "Authorization: Bearer <token>".
	BearerToken string
	// CA is a PEM bundle that signs the server's certificate; empty uses the system's roots.
	CA []byte
	// InsecureSkipVerify turns off verification of the server's certificate.
	InsecureSkipVerify bool
}

// NewPrometheus builds a source for a query API. The HTTP client is prometheus/common's, so
// bearer tokens and TLS behave as they do for Prometheus's own clients.
func NewPrometheus(spec PrometheusConfig) (*Prometheus, error) {
	cfg := config.HTTPClientConfig{TLSConfig: config.TLSConfig{CA: string(spec.CA), InsecureSkipVerify: spec.InsecureSkipVerify}}
	if spec.BearerToken != "" {
		cfg.Authorization = &config.Authorization{Type: "Bearer", Credentials: config.Secret(spec.BearerToken)}
	}
	httpClient, err := config.NewClientFromConfig(cfg, "meshwright-traffic-gates")
	if err != nil {
		return nil, fmt.Errorf("the Prometheus client: %w", err)
	}
	c, err := api.NewClient(api.Config{Address: spec.URL, Client: httpClient})
	if err != nil {
		return nil, fmt.Errorf("the Prometheus URL %q: %w", spec.URL, err)
	}
	return &Prometheus{api: promv1.NewAPI(c), url: spec.URL, http: httpClient}, nil
}

// closeIdle closes the client's idle connections, once it is replaced.
func (p *Prometheus) closeIdle() { p.http.CloseIdleConnections() }

// Name says where the readings come from, for messages.
func (p *Prometheus) Name() string { return "Prometheus at " + p.url }

// Read implements Source with seven queries, each for every namespace at once: which have proxies
// reporting, who called them (whether in mTLS, and refused with 403 or not), what their dry-run
// policies would have denied, whom they called, how many plaintext connections their inbound
// listeners refused, whose calls to them failed to connect (on the way to them, or from
// their proxies to their application), and whether ztunnel reports (for namespaces in ambient
// mode, whose inbound traffic ztunnel reports under the same names and labels).
func (p *Prometheus) Read(ctx context.Context, namespaces []string, window time.Duration) map[string]traffic.Reading {
	out := make(map[string]traffic.Reading, len(namespaces))
	if len(namespaces) == 0 {
		return out
	}
	for _, ns := range namespaces {
		out[ns] = traffic.Reading{Source: p.Name(), Inbound: traffic.NewInbound(window)}
	}
	var answers [9]model.Vector
	var err error
	for i, q := range []string{ReportingQuery(namespaces, window), CallersQuery(namespaces, window), ShadowDeniedQuery(namespaces, window), CallsToQuery(namespaces, window),
		RefusedQuery(namespaces, window), FailedQuery(namespaces, window), ZtunnelQuery(window), ErrorsQuery(namespaces, window),
		ProxyFailedQuery(namespaces, window)} {
		if answers[i], err = p.query(ctx, q); err != nil {
			for ns, r := range out {
				r.Unavailable = err.Error()
				out[ns] = r
			}
			return out
		}
	}
	fill(out, answers[0], answers[1], answers[2])
	if len(answers[6]) > 0 && answers[6][0].Value > 0 {
		for ns, r := range out {
			r.ZtunnelReporting = true
			out[ns] = r
		}
	}
	for _, s := range answers[3] {
		if r, ok := out[string(s.Metric[labelSourceNS])]; ok {
			r.CallsTo[string(s.Metric[labelDestinationNS])] += float64(s.Value)
		}
	}
	for _, s := range answers[4] {
		if r, ok := out[string(s.Metric[labelNamespace])]; ok {
			r.Refused += float64(s.Value)
			out[string(s.Metric[labelNamespace])] = r
		}
	}
	for _, s := range answers[5] {
		if r, ok := out[string(s.Metric[labelDestinationNS])]; ok {
			failed := r.Failed
			if s.Metric[labelReporter] == reporterDestination {
				failed = r.Unreached
			}
			failed[traffic.Caller{Namespace: string(s.Metric[labelSourceNS]), Workload: string(s.Metric[labelSourceWorkload])}] += float64(s.Value)
		}
	}
	for _, s := range append(answers[7], answers[8]...) {
		if r, ok := out[string(s.Metric[labelDestinationNS])]; ok {
			c := traffic.Caller{Namespace: string(s.Metric[labelSourceNS]), Workload: string(s.Metric[labelSourceWorkload])}
			r.Errors[c] += float64(s.Value)
			if timedOutFlags.MatchString(string(s.Metric[labelResponseFlags])) {
				r.TimedOut[c] += float64(s.Value)
			}
		}
	}
	return out
}

// fill copies the queries' answers into the readings of the namespaces asked about.
func fill(out map[string]traffic.Reading, reporting, callers, shadowDenied model.Vector) {
	for _, s := range reporting {
		if r, ok := out[string(s.Metric[labelNamespace])]; ok && s.Value > 0 {
			r.Reporting = true
			out[string(s.Metric[labelNamespace])] = r
		}
	}
	for _, s := range callers {
		r, ok := out[string(s.Metric[labelDestinationNS])]
		if !ok {
			continue
		}
		c := traffic.Caller{Namespace: string(s.Metric[labelSourceNS]), Workload: string(s.Metric[labelSourceWorkload])}
		r.Callers[c] += float64(s.Value)
		// A call through a waypoint came over ztunnel's mTLS tunnel, whatever the waypoint
		// writes of its connection: plaintext callers never reach one.
		if s.Metric[labelSecurityPolicy] != policyMutualTLS && s.Metric[labelReporter] != reporterWaypoint {
			r.Plaintext[c] += float64(s.Value)
		}
		if s.Metric[labelResponseCode] == codeForbidden {
			r.Denied[c] += float64(s.Value)
		}
	}
	for _, s := range shadowDenied {
		if r, ok := out[string(s.Metric[labelNamespace])]; ok {
			r.ShadowDenied += float64(s.Value)
			out[string(s.Metric[labelNamespace])] = r
		}
	}
}

// query runs an instant query; a result that is not a vector is an error (the queries here
// all return one).
func (p *Prometheus) query(ctx context.Context, q string) (model.Vector, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	v, _, _, err := p.api.Query(ctx, q, time.Now())
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", q, err)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("query %s returned a %s, not a vector", q, v.Type())
	}
	return vec, nil
}

// ReportingQuery counts, per namespace, the proxies with at least two samples within the window:
// the calls queries measure growth between samples, so a proxy scraped once in the window
// cannot vouch for it (a window shorter than two scrape intervals reads as "no series").
func ReportingQuery(namespaces []string, window time.Duration) string {
	return fmt.Sprintf(`count by (%s) (count_over_time(%s{%s=~%q}[%s]) >= 2)`,
		labelNamespace, metricProxyUp, labelNamespace, oneOf(namespaces), model.Duration(window))
}

// ZtunnelQuery counts the ztunnel instances whose build gauge was scraped both at the window's
// start and now: one scraped over the whole window vouches that no series of a namespace in
// ambient mode means no traffic to it. (Two samples anywhere in the window would let a scrape
// begun a moment ago vouch for a window it never saw.)
func ZtunnelQuery(window time.Duration) string {
	sel := fmt.Sprintf(`%s{%s=%q}`, metricBuild, labelComponent, componentZtunnel)
	return fmt.Sprintf(`count(%s and %s offset %s)`, sel, sel, model.Duration(window))
}

// growthOver is how much the series of selector grew within the window: increase() for the
// series older than it, and the whole value of the series that began within it (increase()
// never counts a new series' first sample, and every series of a pod restarted at Observe is new).
func growthOver(selector string, window time.Duration) string {
	w := model.Duration(window)
	return fmt.Sprintf(`(increase(%[1]s[%[2]s]) or (%[1]s unless %[1]s offset %[2]s))`, selector, w)
}

// CallersQuery sums, per destination namespace, caller, security policy, response code (none
// for TCP) and reporter, the requests and TCP connections the namespaces' proxies received within the window,
// and those their waypoints passed on: behind a waypoint, the destination sees only the
// waypoint as its caller (of its own namespace, which ZeroTrust admits), so the callers a
// default-deny would judge are the ones the waypoint reports.
func CallersQuery(namespaces []string, window time.Duration) string {
	sel := fmt.Sprintf(`{__name__=~"%s|%s", %s=~"%s|%s", %s=~%q}`, metricRequests, metricConnections, labelReporter, reporterDestination, reporterWaypoint, labelDestinationNS, oneOf(namespaces))
	return fmt.Sprintf(`sum by (%s, %s, %s, %s, %s, %s) (%s) > 0`, labelDestinationNS, labelSourceNS, labelSourceWorkload, labelSecurityPolicy, labelResponseCode, labelReporter, growthOver(sel, window))
}

// FailedQuery sums, per destination namespace, caller and reporter, the requests and TCP
// connections to the namespaces whose upstream connection failed: reported by the callers'
// proxies, calls that did not reach the namespace's (a failed mTLS handshake); reported by the
// namespace's own proxies, calls they could not pass on to their application.
func FailedQuery(namespaces []string, window time.Duration) string {
	sel := fmt.Sprintf(`{__name__=~"%s|%s", %s=~"%s|%s", %s=~%q, %s=~%q}`, metricRequests, metricConnectionsClosed, labelReporter, reporterSource, reporterDestination,
		labelDestinationNS, oneOf(namespaces), labelResponseFlags, connectFailed)
	return fmt.Sprintf(`sum by (%s, %s, %s, %s) (%s) > 0`, labelDestinationNS, labelSourceNS, labelSourceWorkload, labelReporter, growthOver(sel, window))
}

// ErrorsQuery sums, per destination namespace, caller and response flags, the requests to the
// namespaces that the callers' proxies reported answered with 5xx: by the namespace, or by the
// callers' proxies themselves (a timeout, flag UT; a circuit breaker, UO; no healthy endpoint,
// UH).
func ErrorsQuery(namespaces []string, window time.Duration) string {
	sel := fmt.Sprintf(`%s{%s=%q, %s=~%q, %s=~%q}`, metricRequests, labelReporter, reporterSource, labelDestinationNS, oneOf(namespaces), labelResponseCode, serverError)
	return fmt.Sprintf(`sum by (%s, %s, %s, %s) (%s) > 0`, labelDestinationNS, labelSourceNS, labelSourceWorkload, labelResponseFlags, growthOver(sel, window))
}

// ProxyFailedQuery sums, like ErrorsQuery, the requests to the namespaces that the callers'
// proxies failed themselves with a code other than 5xx: a gRPC call, which fails with HTTP 200 and
// a grpc-status, timed out (flag UT), refused by a circuit breaker (UO) or left without a healthy
// endpoint (UH). The two select disjoint series: their sums add up.
func ProxyFailedQuery(namespaces []string, window time.Duration) string {
	sel := fmt.Sprintf(`%s{%s=%q, %s=~%q, %s=~%q, %s!~%q}`, metricRequests, labelReporter, reporterSource, labelDestinationNS, oneOf(namespaces),
		labelResponseFlags, proxyFailed, labelResponseCode, serverError)
	return fmt.Sprintf(`sum by (%s, %s, %s, %s) (%s) > 0`, labelDestinationNS, labelSourceNS, labelSourceWorkload, labelResponseFlags, growthOver(sel, window))
}

// RefusedQuery sums, per namespace, the connections its proxies' inbound listeners refused
// within the window because no filter chain matched (plaintext under STRICT mTLS).
func RefusedQuery(namespaces []string, window time.Duration) string {
	sel := fmt.Sprintf(`%s{%s=~%q, %s=~%q}`, metricNoFilterChain, labelListenerAddress, inboundListener, labelNamespace, oneOf(namespaces))
	return fmt.Sprintf(`sum by (%s) (%s) > 0`, labelNamespace, growthOver(sel, window))
}

// CallsToQuery sums, per calling namespace and destination namespace, the requests and TCP
// connections the namespaces' own proxies made within the window, as they reported them.
func CallsToQuery(namespaces []string, window time.Duration) string {
	sel := fmt.Sprintf(`{__name__=~"%s|%s", %s=%q, %s=~%q}`, metricRequests, metricConnections, labelReporter, reporterSource, labelSourceNS, oneOf(namespaces))
	return fmt.Sprintf(`sum by (%s, %s) (%s) > 0`, labelSourceNS, labelDestinationNS, growthOver(sel, window))
}

// ShadowDeniedQuery sums, per namespace, the requests its proxies' dry-run policies would have
// denied within the window.
func ShadowDeniedQuery(namespaces []string, window time.Duration) string {
	sel := fmt.Sprintf(`{__name__=~"%s", %s=%q, %s=~%q}`, metricsRBAC, labelDryRunResult, dryRunDenied, labelNamespace, oneOf(namespaces))
	return fmt.Sprintf(`sum by (%s) (%s) > 0`, labelNamespace, growthOver(sel, window))
}

// oneOf is a regular expression matching exactly the given names.
func oneOf(names []string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = regexp.QuoteMeta(n)
	}
	return strings.Join(quoted, "|")
}
