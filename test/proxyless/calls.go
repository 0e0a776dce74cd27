package proxyless

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// askMethod is the application's one RPC (test/tools/meshapp): the request names the caller,
// the answer is the server's name and the caller's identity as the server saw it.
const askMethod = "/meshapp.Who/Ask"

// Counts is what the calls to one target came to; the JSON the application serves.
type Counts struct {
	OK int `json:"ok"`
	// Failed counts failed calls by gRPC status code (Unavailable, PermissionDenied, …).
	Failed map[string]int `json:"failed,omitempty"`
	// Seen counts answered calls by the identity the server saw the caller with: its SPIFFE
	// ID over mTLS, "plaintext" otherwise.
	Seen map[string]int `json:"seen,omitempty"`
	// LastError is the last failure's message.
	LastError string `json:"lastError,omitempty"`
}

// Add sums two counts; the last error is b's when it has one.
func (a Counts) Add(b Counts) Counts {
	out := Counts{OK: a.OK + b.OK, Failed: maps.Clone(a.Failed), Seen: maps.Clone(a.Seen), LastError: a.LastError}
	if out.Failed == nil {
		out.Failed = map[string]int{}
	}
	if out.Seen == nil {
		out.Seen = map[string]int{}
	}
	for k, v := range b.Failed {
		out.Failed[k] += v
	}
	for k, v := range b.Seen {
		out.Seen[k] += v
	}
	if b.LastError != "" {
		out.LastError = b.LastError
	}
	return out
}

// Since is what happened after an earlier reading of the same counts.
func (a Counts) Since(before Counts) Counts {
	out := Counts{OK: a.OK - before.OK, Failed: map[string]int{}, Seen: map[string]int{}, LastError: a.LastError}
	for k, v := range a.Failed {
		if d := v - before.Failed[k]; d != 0 {
			out.Failed[k] = d
		}
	}
	for k, v := range a.Seen {
		if d := v - before.Seen[k]; d != 0 {
			out.Seen[k] = d
		}
	}
	return out
}

// FailedTotal is the number of failed calls.
func (a Counts) FailedTotal() int {
	n := 0
	for _, v := range a.Failed {
		n += v
	}
	return n
}

// String is a short summary for messages.
func (a Counts) String() string {
	return fmt.Sprintf("%d ok (seen as %v), failed %v, last error %q", a.OK, a.Seen, a.Failed, a.LastError)
}

// ledger counts the plaintext driver's calls.
type ledger struct {
	mu     sync.Mutex
	counts Counts
}

func (l *ledger) record(seen string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := Counts{}
	if err != nil {
		c.Failed = map[string]int{status.Code(err).String(): 1}
		c.LastError = err.Error()
	} else {
		c.OK, c.Seen = 1, map[string]int{seen: 1}
	}
	l.counts = l.counts.Add(c)
}

// CallPlaintext calls a Service's endpoints from outside the mesh, in plaintext, every 200 ms
// (one endpoint after the other) until Stop: a caller that no proxy or agent stands in front
// of. Its counts are read with PlaintextCalls.
func (r *Runner) CallPlaintext(namespace, service string, port int) {
	key := namespace + "/" + service
	l := &ledger{}
	r.mu.Lock()
	r.plain[key] = l
	r.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer cancel()
		r.callPlaintext(ctx, l, namespace, service, port)
	}()
	r.mu.Lock()
	r.stopPlain = append(r.stopPlain, cancel)
	r.mu.Unlock()
}

// PlaintextCalls is what the plaintext calls to a Service came to so far.
func (r *Runner) PlaintextCalls(namespace, service string) Counts {
	r.mu.Lock()
	l := r.plain[namespace+"/"+service]
	r.mu.Unlock()
	if l == nil {
		return Counts{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts.Add(Counts{})
}

func (r *Runner) callPlaintext(ctx context.Context, l *ledger, namespace, service string, port int) {
	conns := map[string]*grpc.ClientConn{}
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var addrs []string
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if n%5 == 0 {
			addrs = r.endpoints(ctx, namespace, service, port)
		}
		if len(addrs) == 0 {
			continue // no endpoint is not a failed call: nothing was called
		}
		addr := addrs[n%len(addrs)]
		conn := conns[addr]
		if conn == nil {
			var err error
			if conn, err = grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
				l.record("", err)
				continue
			}
			conns[addr] = conn
		}
		callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		out := &wrapperspb.StringValue{}
		err := conn.Invoke(callCtx, askMethod, wrapperspb.String("plaintext-driver"), out)
		cancel()
		if ctx.Err() != nil {
			return
		}
		seen := ""
		if err == nil {
			_, seen, _ = strings.Cut(out.GetValue(), " ")
		}
		l.record(seen, err)
	}
}

// endpoints are the ready addresses of a Service's EndpointSlices, on port.
func (r *Runner) endpoints(ctx context.Context, namespace, service string, port int) []string {
	list, err := r.kc.DiscoveryV1().EndpointSlices(namespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range list.Items {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, a := range e.Addresses {
				out = append(out, net.JoinHostPort(a, strconv.Itoa(port)))
			}
		}
	}
	slices.Sort(out)
	return out
}
