// Package traffic holds what the ladder's traffic gates judge: what a namespace's proxies
// reported of the calls they received over a window, as plain data. The telemetry package reads
// it from a source (the proxies themselves, or Prometheus); the ladder decides from it. Keeping
// it apart keeps the ladder pure: it never learns where the numbers came from.
package traffic

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// Unknown is the value Istio's metrics give a caller they cannot name: one outside the mesh
// (no proxy, and no workload of the cluster at its address).
const Unknown = "unknown"

// Caller is who called a namespace, as the receiving proxies reported it (Istio's
// source_workload_namespace and source_workload labels).
type Caller struct {
	Namespace, Workload string
}

// External reports whether the caller is outside the mesh and the cluster.
func (c Caller) External() bool {
	return c.Workload == Unknown || c.Workload == ""
}

// String names the caller for a message.
func (c Caller) String() string {
	if c.External() {
		return "a caller outside the mesh"
	}
	return c.Namespace + "/" + c.Workload
}

// Inbound is what the proxies of one namespace reported of the calls they received.
type Inbound struct {
	// Reporting is true when some proxy of the namespace has series in the window. Without
	// one, nothing can be concluded: no series is not the same as no traffic.
	Reporting bool
	// ZtunnelReporting is true when ztunnel has series in the window (its istio_build gauge,
	// which it always exports): for a namespace in ambient mode, whose pods' inbound traffic
	// ztunnel reports under the same metric names and labels as a sidecar, it stands for
	// Reporting. The same for every namespace of a reading.
	ZtunnelReporting bool
	// Covered is how far back the source's view reaches, up to the window asked for: the
	// embedded source sees only from its first read of a proxy.
	Covered time.Duration
	// Plaintext counts the requests and connections received without mTLS, by caller.
	Plaintext map[Caller]float64
	// Callers counts every request and connection received, mTLS or not, by caller.
	Callers map[Caller]float64
	// ShadowDenied counts the requests the namespace's dry-run AuthorizationPolicies would have
	// denied (the proxies' RBAC shadow stats).
	ShadowDenied float64
	// CallsTo counts the requests and connections the namespace's own proxies made, as callers,
	// by destination namespace: what leaving the mesh would turn into plaintext.
	CallsTo map[string]float64
	// Denied counts the requests the namespace's proxies answered with 403 (an enforced
	// AuthorizationPolicy's denial among them), by caller.
	Denied map[Caller]float64
	// Failed counts the requests and TCP connections callers' proxies sent to the namespace that
	// failed to connect (Envoy's upstream-connection flags UF, URX or UC: an mTLS handshake that
	// fails among them), by caller, as the callers reported them. Only a source that reads the
	// callers' proxies sees these (Prometheus; not the embedded source, which reads the
	// namespace's own).
	Failed map[Caller]float64
	// Unreached counts the requests and TCP connections the namespace's proxies accepted but
	// could not pass on to their application (the same flags, reported by the destination): an
	// application that listens on localhost only, say, which the proxy does not reach. By caller.
	Unreached map[Caller]float64
	// Errors counts the requests callers' proxies sent to the namespace that failed: answered
	// with 5xx (by the namespace, or by the callers' proxies), or failed by the callers' proxies
	// whatever the code (a timeout, a circuit breaker, no healthy endpoint: a gRPC call fails with
	// HTTP 200), by caller, as the callers reported them. Only a source that reads the callers'
	// proxies sees those of other namespaces (the embedded source sees the namespace's calls to
	// itself).
	Errors map[Caller]float64
	// TimedOut counts, of Errors, the requests the callers' proxies timed out (Envoy's response
	// flag UT), by caller.
	TimedOut map[Caller]float64
	// Refused counts the connections the namespace's proxies refused because no inbound filter
	// chain matched them: plaintext under STRICT mTLS (Envoy's no_filter_chain_match). The callers
	// of refused connections are not known: the proxy never learns who they are.
	Refused float64
}

// NewInbound is an Inbound that saw nothing yet over a window.
func NewInbound(covered time.Duration) Inbound {
	return Inbound{Covered: covered, Plaintext: map[Caller]float64{}, Callers: map[Caller]float64{}, CallsTo: map[string]float64{}, Denied: map[Caller]float64{}, Failed: map[Caller]float64{}, Unreached: map[Caller]float64{},
		Errors: map[Caller]float64{}, TimedOut: map[Caller]float64{}}
}

// Total sums counts by caller.
func Total(counts map[Caller]float64) float64 {
	var n float64
	for _, v := range counts {
		n += v
	}
	return n
}

// Reading is a namespace's traffic as one pass read it, or why it could not be.
type Reading struct {
	// Source names where it was read, for messages: "Prometheus at http://…" or "the
	// proxies' stats endpoints".
	Source string
	Inbound
	// Unavailable, when set, says why the source did not answer.
	Unavailable string
	// Unreachable, when set, says which proxies could not be read (the embedded source): no
	// source can see the namespace.
	Unreachable string
	// ZtunnelUnread is set by a source that does not read ztunnel at all (the embedded source
	// reads the namespace's own proxies): it can say nothing of a namespace in ambient mode.
	ZtunnelUnread bool
}

// Ranked is a caller with its count, for messages.
type Ranked struct {
	Caller Caller
	Count  float64
}

// Top returns the callers with the highest counts, at most n, highest first (ties by name, so
// messages are stable).
func Top(counts map[Caller]float64, n int) []Ranked {
	out := make([]Ranked, 0, len(counts))
	for _, c := range slices.Collect(maps.Keys(counts)) {
		out = append(out, Ranked{Caller: c, Count: counts[c]})
	}
	slices.SortFunc(out, func(a, b Ranked) int {
		if a.Count != b.Count {
			return cmp.Compare(b.Count, a.Count)
		}
		return strings.Compare(a.Caller.String(), b.Caller.String())
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// Describe lists ranked callers with their counts and what to do about each, for a message. A
// count is an estimate over the window (a source interpolates at its edges), rounded up: a
// caller named never shows 0 calls.
func Describe(ranked []Ranked, advice func(Caller) string) string {
	parts := make([]string, 0, len(ranked))
	for _, r := range ranked {
		parts = append(parts, fmt.Sprintf("%s (%.0f calls: %s)", r.Caller, math.Ceil(r.Count), advice(r.Caller)))
	}
	return strings.Join(parts, "; ")
}
