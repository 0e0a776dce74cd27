package trafficsim

import (
	"fmt"
	"math"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
)

// caller is one calling pod of a flow, or the single external caller.
type caller struct {
	uid  types.UID
	peer Peer
}

func (f Flow) validate() error {
	switch {
	case f.Protocol != HTTP && f.Protocol != TCP:
		return fmt.Errorf("trafficsim: flow %+v: protocol must be %q or %q", f.Key(), HTTP, TCP)
	case f.Port <= 0 || f.Port > 65535:
		return fmt.Errorf("trafficsim: flow %+v: invalid port", f.Key())
	case f.PerSecond < 0 || math.IsNaN(f.PerSecond) || math.IsInf(f.PerSecond, 0):
		return fmt.Errorf("trafficsim: flow %+v: invalid rate %v", f.Key(), f.PerSecond)
	case f.To.Namespace == "" || f.To.Name == "" || (!f.External && (f.From.Namespace == "" || f.From.Name == "")):
		return fmt.Errorf("trafficsim: flow %+v: workloads need a namespace and a name", f.Key())
	}
	return nil
}

func (s *Simulator) peer(p podInfo, w Workload) Peer {
	return Peer{Namespace: p.Namespace, Workload: w.Name, ServiceAccount: p.ServiceAccount, Labels: p.Labels,
		HasProxy: p.HasProxy, Cluster: s.opts.ClusterID}
}

func (s *Simulator) callers(snap *snapshot, f Flow) []caller {
	if f.External {
		return []caller{{uid: "external", peer: Peer{External: true}}}
	}
	var out []caller
	for _, p := range snap.byWorkload[f.From] {
		out = append(out, caller{uid: p.UID, peer: s.peer(p, f.From)})
	}
	return out
}

// simulateFlow spreads one step of a flow over its caller and destination pods and records what
// the rules say happened to each share. A caller workload without pods makes no calls.
func (s *Simulator) simulateFlow(snap *snapshot, f Flow, seconds float64, used map[string]bool) error {
	if err := f.validate(); err != nil {
		return err
	}
	key := f.Key()
	callers := s.callers(snap, f)
	if len(callers) == 0 {
		return nil
	}
	total := f.PerSecond * seconds
	counts := s.outcomes[key]
	dests := snap.byWorkload[f.To]
	if len(dests) == 0 {
		for _, c := range callers {
			n := s.take(fmt.Sprintf("%v|%s|-", key, c.uid), total/float64(len(callers)), used)
			counts.Unavailable += n
			s.recordUnavailable(f, c, n)
		}
		s.outcomes[key] = counts
		return nil
	}
	share := total / float64(len(callers)*len(dests))
	for _, c := range callers {
		for _, d := range dests {
			n := s.take(fmt.Sprintf("%v|%s|%s", key, c.uid, d.UID), share, used)
			dp := s.peer(d, f.To)
			v := BehindProxy(Decide(snap.mesh, c.peer, dp, f.Port), dp, s.localhostOnly[f.To])
			v = RouteTimeout(v, c.peer, f.Protocol, f.Latency, snap.timeouts[f.To])
			s.record(f, c, d.UID, dp, v, n)
			counts.add(v, n)
		}
	}
	s.outcomes[key] = counts
	return nil
}

func (c *Counts) add(v Verdict, n int64) {
	switch v.Outcome {
	case Succeeded:
		c.Succeeded += n
	case Refused:
		c.Refused += n
	case Denied:
		c.Denied += n
	case AppUnreachable:
		c.AppUnreachable += n
	case TimedOut:
		c.TimedOut += n
	}
	if v.Authz.ShadowDenied {
		c.DryRunDenied += n
	}
}

// record moves the series of n calls: the destination's RBAC filter stats (created at zero even
// when n is 0), the caller's reporter="source" series when it has a proxy, and the destination's
// reporter="destination" series unless the connection was refused; a refused one counts on the
// destination's inbound listener as no_filter_chain_match (with Options.RefusedStat).
func (s *Simulator) record(f Flow, c caller, destUID types.UID, dp Peer, v Verdict, n int64) {
	dest := s.pods[destUID]
	if dest != nil && f.Protocol == HTTP {
		dest.metrics.rbac.recordFilters(f.Port, v.Authz.Filters, float64(n))
	}
	if v.Outcome == Refused && dest != nil && dest.metrics.noFilterChain != nil && n > 0 {
		// STRICT's inbound filter chains match only TLS: a plaintext connection matches none,
		// and Envoy counts it on the listener before closing it (istio/istio#28083).
		dest.metrics.noFilterChain.WithLabelValues(inboundListener).Add(float64(n))
	}
	if n == 0 || v.Outcome == Refused {
		return
	}
	td := s.opts.TrustDomain
	srcPrincipal, destPrincipal := "unknown", "unknown"
	if v.MTLS {
		srcPrincipal, destPrincipal = c.peer.Principal(td), dp.Principal(td)
	}
	svc := serviceOf(f.To)
	if src := s.pods[c.uid]; src != nil && !c.peer.External {
		labels := peerLabels("source", c.peer.Identity(srcPrincipal), dp.Identity(destPrincipal), svc)
		count(src.metrics, f.Protocol, labels, v.Outcome, "unknown", n)
	}
	if dest != nil && v.DestReports {
		labels := peerLabels("destination", v.Source, dp.Identity(destPrincipal), svc)
		count(dest.metrics, f.Protocol, labels, v.Outcome, v.SecurityPolicy, n)
	}
}

// recordUnavailable: with no destination pod, a caller's sidecar answers 503 with flag UH (no
// healthy upstream), or opens and closes the TCP connection with UH.
func (s *Simulator) recordUnavailable(f Flow, c caller, n int64) {
	src := s.pods[c.uid]
	if src == nil || n == 0 || c.peer.External {
		return
	}
	labels := peerLabels("source", c.peer.Identity("unknown"), UnknownIdentity(), serviceOf(f.To))
	count(src.metrics, f.Protocol, labels, Unavailable, "unknown", n)
}

// count adds n calls with the given outcome to one reporter's standard metrics.
func count(m *podMetrics, proto Protocol, labels prometheus.Labels, o Outcome, securityPolicy string, n int64) {
	labels["connection_security_policy"] = securityPolicy
	labels["response_flags"] = "-"
	switch {
	case o == Unavailable:
		labels["response_flags"] = "UH"
	case o == AppUnreachable && labels["reporter"] == "destination":
		// The destination's proxy failed to connect to its application; the caller's proxy got
		// the 503 as an answer from upstream, with no flag of its own.
		labels["response_flags"] = "UF"
	case o == TimedOut && labels["reporter"] == "source":
		labels["response_flags"] = "UT"
	case o == TimedOut:
		// ASSUMPTION: the destination's proxy sees its caller reset the stream before the
		// answer, and reports no response code (0) with Envoy's flag DC, downstream connection
		// termination.
		labels["response_flags"] = "DC"
	}
	if proto == HTTP {
		labels["request_protocol"] = "http"
		labels["grpc_response_status"] = ""
		labels["response_code"] = map[Outcome]string{Succeeded: "200", Denied: "403", Unavailable: "503", AppUnreachable: "503", TimedOut: "504"}[o]
		if o == TimedOut && labels["reporter"] == "destination" {
			labels["response_code"] = "0"
		}
		m.requests.With(labels).Add(float64(n))
		return
	}
	m.tcpOpened.With(labels).Add(float64(n))
	m.tcpClosed.With(labels).Add(float64(n))
	if o == Succeeded {
		m.tcpSentBytes.With(labels).Add(float64(n * tcpBytesPerConnection))
		m.tcpReceivedBytes.With(labels).Add(float64(n * tcpBytesPerConnection))
	}
}
