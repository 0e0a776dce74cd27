// Package trafficsim is a traffic simulator for the e2e tests: kwok runs no containers, so no
// Envoy sidecar ever reports telemetry, yet the operator's traffic gates (no plaintext caller
// before STRICT, dry-run policies denied nothing before ZeroTrust, no regression after a step)
// must be tested against the series real sidecars would export. The simulator is given flows
// (caller workload → destination workload, port, protocol, rate), reads the cluster's real state
// through a controller-runtime client.Reader on every Step (pods, their istio-proxy container,
// PeerAuthentication and AuthorizationPolicy of security.istio.io/v1, VirtualService of
// networking.istio.io/v1) and advances the counters
// Envoy sidecars would advance under that state. It is a simulator: nothing here proves that
// Istio behaves this way; the rules below follow Istio's documented semantics and the sources of
// the Istio version this project embeds, and each rule is pinned by a table test that cites it.
//
// # Rules (rules.go, pure functions of plain structs)
//
//   - Client side (auto mTLS, https://istio.io/latest/docs/concepts/security/#auto-mutual-tls):
//     a caller with a proxy talks mTLS to a destination pod with a proxy unless the destination's
//     effective mode for the port is DISABLE; anything else is plaintext. External callers have
//     no proxy.
//   - Peer authentication (https://istio.io/latest/docs/reference/config/security/peer_authentication/
//     and pilot/pkg/security/authn.ComposePeerAuthentication): workload-level (selector, destination
//     namespace) > namespace-level (no selector) > mesh-wide (no selector, root namespace);
//     portLevelMtls of the workload-level policy overrides per port; UNSET inherits; default
//     PERMISSIVE. Ties at one level: the oldest policy wins, equal creation times by name, then
//     namespace (Istio's configCompareByCreationTime). Selector policies in the root namespace are
//     ignored, as Istio does.
//   - STRICT refuses a plaintext connection before any filter runs: nobody reports it (the caller
//     has no proxy, or it would have used mTLS). PERMISSIVE and DISABLE accept it and the
//     destination reports connection_security_policy="none"; mTLS is reported as "mutual_tls".
//   - Who the destination says called: with mTLS the caller's workload, namespace and principal.
//     ASSUMPTION: for plaintext from an in-cluster pod the simulator assumes Istio's metadata
//     discovery (ISTIO_META_METADATA_DISCOVERY, on with ambient-enabled sidecars) names the caller
//     by its IP, so source_workload and source_workload_namespace are the caller's and
//     source_principal is "unknown". A real mesh without metadata discovery reports such plaintext
//     TCP callers as "unknown"; gates must not depend on the difference. External callers are
//     "unknown" throughout.
//   - Behind the proxy (https://istio.io/latest/blog/2021/upcoming-networking-changes/): since
//     Istio 1.10 the sidecar forwards inbound traffic to the pod's IP, so an application that
//     listens on localhost only (Simulator.SetLocalhostOnly: a fact of the application, not of
//     the cluster's state) is out of its proxy's reach. A call the proxy accepted gets 503 with
//     response_flags="UF" from it (a TCP connection is closed with UF); the caller's proxy reports
//     the 503 with no flag. Without a proxy the application is reached on the pod's IP as before.
//   - Route timeouts (https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPRoute
//     and Envoy's response flags, https://www.envoyproxy.io/docs/envoy/latest/configuration/observability/access_log/usage):
//     the VirtualService that routes a workload's Service for sidecars (no gateways, or "mesh"; the
//     oldest of several, as Istio keeps one per host) gives its first HTTP route's timeout to the
//     callers' proxies. An HTTP flow whose Latency exceeds it times out: the caller's proxy answers
//     504 with flag UT. ASSUMPTION: the destination's proxy, whose caller reset the stream, reports
//     the request with response code 0 and flag DC. A first route with match conditions is not
//     evaluated (logged unsupported); retries are not simulated.
//   - Authorization (https://istio.io/latest/docs/concepts/security/#authorization-policies and
//     pilot/pkg/security/authz/builder): policies in the destination namespace and the root
//     namespace whose selector matches the pod (policies with targetRef(s) never apply to
//     sidecars). Istio builds one Envoy RBAC filter per action, DENY before ALLOW; CUSTOM and AUDIT
//     are ignored here. A DENY filter denies when a policy matches; an ALLOW filter allows only
//     when a policy matches, so an ALLOW policy without rules (spec: {}) allows nothing and a rule
//     {} matches everything. Policies annotated istio.io/dry-run: "true" go into the same filter's
//     shadow rules: they are evaluated (shadow_allowed/shadow_denied) but never deny. A filter is
//     not reached once an earlier one denied.
//   - Source matching (https://istio.io/latest/docs/reference/config/security/authorization-policy/#Source):
//     principals, notPrincipals, namespaces, notNamespaces and to.operation ports/notPorts are
//     supported, with Istio's value forms (exact, "prefix*", "*suffix", "*"; namespaces accept "*"
//     anywhere). They need an mTLS peer: a plaintext caller never matches principals/namespaces
//     and always matches notPrincipals/notNamespaces, as ISTIO-SECURITY-2021-004 documents
//     (https://istio.io/latest/news/security/istio-security-2021-004/: "notNamespaces will be
//     compared to an empty value when mTLS is not used"). A rule using any other field or a when
//     condition never matches, and the simulator logs it as unsupported.
//
// # Series
//
// Standard metrics (https://istio.io/latest/docs/reference/config/metrics/) with the label set
// Envoy's Istio stats filter emits: istio_requests_total for HTTP, istio_tcp_connections_opened_total,
// istio_tcp_connections_closed_total, istio_tcp_sent_bytes_total and istio_tcp_received_bytes_total
// for TCP. reporter="destination" on the destination pod, reporter="source" on a caller pod with a
// proxy (connection_security_policy="unknown" there). ASSUMPTION: every workload has a Service of
// the same name, so destination_service is <name>.<namespace>.svc.cluster.local, and its port is
// the pod's target port. Every simulated TCP connection opens and closes within one Step; a denied
// one (Envoy's RBAC network filter closes it, https://www.envoyproxy.io/docs/envoy/latest/configuration/listeners/network_filters/rbac_filter)
// is opened and closed with no bytes. A destination workload without running pods makes callers
// with a proxy report response_code="503", response_flags="UH".
//
// RBAC stats of the HTTP RBAC filter, as Istio 1.23+ (the embedded 1.31 included) names them:
// the inbound HTTP connection manager's stat prefix is "inbound_0.0.0.0_<port>;" (the ";"
// delimiter of pilot/pkg/networking/util.DelimitedStatsPrefix) and Istio's bootstrap extracts it
// into the http_conn_manager_prefix tag, so Envoy's http.inbound_0.0.0.0_8080;.rbac.allowed is
// exported as envoy_http_rbac{http_conn_manager_prefix="inbound_0.0.0.0_8080",authz_enforce_result="allowed"}
// and http.inbound_0.0.0.0_8080;.rbac.istio_dry_run_allow_.shadow_denied as
// envoy_http_rbac{http_conn_manager_prefix="inbound_0.0.0.0_8080",authz_dry_run_action="allow",authz_dry_run_result="denied"}.
// Options.LegacyRBACStatNames emits the pre-1.23 name instead (envoy_http_inbound_0_0_0_0_<port>_rbac,
// what istio.io's dry-run task still shows). All four counters of a filter exist at zero as soon
// as the filter does, as in Envoy. TCP RBAC stats are not emitted: their exported name under
// Istio's tag regexes could not be confirmed.
//
// A plaintext connection a STRICT destination refuses leaves no standard metric (the caller has no
// proxy, the destination's filter chains match only TLS: "strict mTLS filter chain will now not
// match plaintext", https://github.com/istio/istio/pull/28083, logged as NR filter_chain_not_found).
// Envoy counts it in the listener stat no_filter_chain_match
// (https://www.envoyproxy.io/docs/envoy/latest/configuration/listeners/stats), exported as
// envoy_listener_no_filter_chain_match{listener_address="0.0.0.0_15006"} under Istio's
// listener_address tag, and only when the proxy's stats matcher includes it (ProxyConfig
// proxyStatsMatcher.inclusionSuffixes): Options.RefusedStat.
//
// Exposition is client_golang's, always in the classic text format 0.0.4 (no "_total" is added
// to envoy_* counters, as Envoy's own output has none). Handler serves every simulated pod with
// namespace and pod labels, as Istio's kubernetes-pods scrape job adds them; ServePods serves each
// injected pod's own /stats/prometheus without them, as pilot-agent does on :15020. A pod that
// goes away takes its series with it; a new pod starts from zero, as a restarted proxy does.
package trafficsim
