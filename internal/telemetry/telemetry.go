// Package telemetry reads what the mesh's proxies report of the traffic they receive, for the
// ladder's traffic gates. Two sources answer the same question (Source): Prometheus, through
// client_golang's query API, for fleets that already run a Prometheus-compatible store; and the
// embedded source, which reads the proxies' own stats endpoints (port 15020) of the namespaces
// about to step, for clusters with nothing installed. Both read Istio's standard metrics, names
// and labels as Istio's metrics reference defines them.
package telemetry

import (
	"context"
	"time"

	"github.com/meshwright/meshwright/internal/traffic"
)

// Source reads the inbound traffic of namespaces over a window ending now. A failure is not an
// error of the pass: it is part of each namespace's Reading (Unavailable, Unreachable), which
// the gates report, so that a pass never fails because telemetry did.
type Source interface {
	Read(ctx context.Context, namespaces []string, window time.Duration) map[string]traffic.Reading
}

// The Istio metrics and labels the gates read (Istio's metrics reference).
const (
	// metricRequests counts HTTP and gRPC requests.
	metricRequests = "istio_requests_total"
	// metricConnections counts TCP connections opened.
	metricConnections = "istio_tcp_connections_opened_total"
	// metricConnectionsClosed counts TCP connections closed, with the flags of how they ended.
	metricConnectionsClosed = "istio_tcp_connections_closed_total"
	// metricBuild is the build gauge Istio's components export; ztunnel's carries
	// component="ztunnel" and is always there (ztunnel's src/metrics/meta.rs).
	metricBuild      = "istio_build"
	labelComponent   = "component"
	componentZtunnel = "ztunnel"
	// metricProxyUp is Envoy's uptime, which every Istio sidecar keeps (its "server" stats
	// are always included): a proxy that reports it is scraped.
	metricProxyUp = "envoy_server_uptime"
	// metricsRBAC are the names of Envoy's HTTP RBAC filter stats under Istio's tag extraction:
	// envoy_http_rbac since Istio 1.23 (the inbound stat prefix became the label
	// http_conn_manager_prefix), envoy_http_inbound_<address>_<port>_rbac before.
	metricsRBAC = `envoy_http_rbac|envoy_http_inbound_.+_rbac`
	// metricNoFilterChain is Envoy's listener stat no_filter_chain_match under Istio's tag
	// extraction (listener.<address>.no_filter_chain_match, its address the label
	// listener_address): a connection no filter chain matched, which on the inbound listener
	// under STRICT mTLS is a plaintext caller refused. Istio exports it only when the proxies'
	// stats matcher includes it, as the operator's mesh config does (proxyStatsMatcher).
	metricNoFilterChain = "envoy_listener_no_filter_chain_match"
	// labelListenerAddress tags a listener stat with the listener's address, "0.0.0.0_15006" for
	// the sidecar's inbound listener.
	labelListenerAddress = "listener_address"
	// inboundListener matches the address of the sidecar's inbound listener (IPv4 or IPv6).
	inboundListener = `.*_15006`
	// labelResponseCode is the HTTP status the reporting proxy saw.
	labelResponseCode = "response_code"
	codeForbidden     = "403"
	// labelResponseFlags holds Envoy's response flags, comma-separated; connectFailed matches
	// those of a request or connection whose upstream connection failed (connection failure,
	// retries of it exhausted, connection terminated), among others or alone: a failed mTLS
	// handshake shows as one of them, and so does an application the destination's proxy could
	// not reach.
	labelResponseFlags = "response_flags"
	connectFailed      = `(.*,)?(UF|URX|UC)(,.*)?`
	// serverError matches a 5xx response code; timedOut the response flags of a request the
	// reporting proxy timed out (Envoy's UT: the route's timeout, or its per-try timeout);
	// proxyFailed those of a request the caller's own proxy failed, whatever the code it
	// carries (a gRPC call fails with HTTP 200 and a grpc-status): timed out, refused by a
	// circuit breaker (UO), or with no healthy endpoint left (UH).
	serverError = `5[0-9][0-9]`
	timedOut    = `(.*,)?UT(,.*)?`
	proxyFailed = `(.*,)?(UT|UO|UH)(,.*)?`
	// labelDryRunResult tags an RBAC stat with what the dry-run policies would have done.
	labelDryRunResult = "authz_dry_run_result"
	dryRunDenied      = "denied"

	labelReporter       = "reporter"
	labelSecurityPolicy = "connection_security_policy"
	labelSourceNS       = "source_workload_namespace"
	labelSourceWorkload = "source_workload"
	labelDestinationNS  = "destination_workload_namespace"
	// labelNamespace is the pod's namespace, which Istio's standard scrape configuration adds
	// to every series it scrapes from a pod.
	labelNamespace = "namespace"

	reporterDestination = "destination"
	reporterSource      = "source"
	// reporterWaypoint is what a waypoint reports as (Istio's proxy testdata for waypoints):
	// the caller's own identity, where the destination's ztunnel, behind it, sees the waypoint's.
	reporterWaypoint = "waypoint"
	policyMutualTLS  = "mutual_tls"
)
