// Command meshapp is the application of the harness's proxyless gRPC workloads: a process that
// plays one kwok pod's container on this machine. It serves one method that answers with the
// caller's identity as the server saw it (its SPIFFE ID over Istio mTLS, "plaintext" otherwise),
// and calls other workloads steadily, counting each target's successes and failures by gRPC
// status code. The counts are served as JSON on a local status address for the tests.
//
// With -xds it is an Istio proxyless gRPC workload: the server and the client take their
// listeners, clusters, certificates and RBAC from istiod through the bootstrap file that
// pilot-agent writes (GRPC_XDS_BOOTSTRAP). Without it, it is a plaintext workload outside the
// mesh. Envoy is never involved: this is gRPC's own xDS data plane, whose semantics differ from
// a sidecar's in places (see docs/testing.md).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log"
	"net"
	"net/http"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// method is the one RPC: the request names the caller, the answer is the server's name and the
// caller's identity as the server saw it, separated by a space.
const method = "/meshapp.Who/Ask"

// Plaintext is the identity of a caller that came without a client certificate.
const plaintext = "plaintext"

func main() {
	listen := flag.String("listen", "", "serve on this address (the pod's IP and port); empty serves nothing")
	useXDS := flag.Bool("xds", false, "take configuration and certificates from istiod (GRPC_XDS_BOOTSTRAP): a proxyless gRPC workload")
	name := flag.String("name", "", "this workload's name, sent with each call and in each answer")
	calls := flag.String("call", "", "comma-separated targets to call (gRPC target URIs, e.g. xds:///svc.ns.svc.cluster.local:8080); with -xds, one only")
	every := flag.Duration("every", 200*time.Millisecond, "the interval between two calls to one target")
	statusAddr := flag.String("status", "", "serve the call counts as JSON on this address (GET /calls)")
	flag.Parse()

	targets := strings.FieldsFunc(*calls, func(r rune) bool { return r == ',' || r == ' ' })
	if *useXDS && len(targets)+min(len(*listen), 1) > 1 {
		// grpc-go opens one xDS stream per channel target and one for a server, and pilot-agent's
		// xDS proxy serves one stream at a time ("registered overlapping stream; closing
		// previous"): two would keep closing each other.
		log.Fatalf("-xds: serve, or call one target, not both nor more (listen %q, call %q): pilot-agent serves one xDS stream per workload", *listen, *calls)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	drained := make(chan struct{})
	var serving atomic.Bool
	if *listen != "" {
		if err := serve(ctx, *listen, *name, *useXDS, &serving, drained); err != nil {
			log.Fatal(err)
		}
	} else {
		serving.Store(true)
		close(drained)
	}
	book := &ledger{targets: map[string]*Counts{}}
	if *statusAddr != "" {
		l, err := net.Listen("tcp", *statusAddr)
		if err != nil {
			log.Fatal(err)
		}
		mux := http.NewServeMux()
		mux.Handle("/calls", book)
		// The readiness a pod's probe would read: 200 once the server serves (an xDS server
		// once istiod gave it its listener), at once for a workload that only calls.
		mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
			if !serving.Load() {
				http.Error(w, "not serving yet", http.StatusServiceUnavailable)
			}
		})
		go func() { _ = http.Serve(l, mux) }()
	}
	for _, target := range targets {
		go callForever(ctx, book, target, *name, *useXDS, *every)
	}
	<-ctx.Done()
	<-drained
}

// serve answers method on addr until ctx ends, then drains and closes drained; serving says
// whether it answers calls.
func serve(ctx context.Context, addr, name string, useXDS bool, serving *atomic.Bool, drained chan<- struct{}) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	desc := grpc.ServiceDesc{
		ServiceName: "meshapp.Who",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Ask", Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := &wrapperspb.StringValue{}
			if err := dec(in); err != nil {
				return nil, err
			}
			answer := func(ctx context.Context, _ any) (any, error) {
				return wrapperspb.String(name + " " + callerIdentity(ctx)), nil
			}
			if interceptor == nil {
				return answer(ctx, in)
			}
			// The xDS server enforces its HTTP filters (RBAC: the AuthorizationPolicies) in
			// its interceptor: a handler that skipped it would admit every caller.
			return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: method}, answer)
		}}},
	}
	var srv interface {
		grpc.ServiceRegistrar
		Serve(net.Listener) error
		GracefulStop()
	}
	if useXDS {
		creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
		if err != nil {
			return err
		}
		x, err := xds.NewGRPCServer(grpc.Creds(creds), xds.ServingModeCallback(func(addr net.Addr, args xds.ServingModeChangeArgs) {
			log.Printf("serving mode of %s: %s (%v)", addr, args.Mode, args.Err)
			serving.Store(args.Mode == connectivity.ServingModeServing)
		}))
		if err != nil {
			return err
		}
		srv = x
	} else {
		srv = grpc.NewServer()
		serving.Store(true)
	}
	srv.RegisterService(&desc, nil)
	go func() {
		if err := srv.Serve(l); err != nil {
			log.Printf("serving: %v", err)
		}
	}()
	// On SIGTERM (the pod deleted) it drains as a gRPC server should: GOAWAY to its callers,
	// which move to another endpoint, and the calls in flight finish.
	go func() { <-ctx.Done(); serving.Store(false); srv.GracefulStop(); close(drained) }()
	return nil
}

// callerIdentity is the SPIFFE ID of the caller's certificate, or plaintext.
func callerIdentity(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return plaintext
	}
	if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && info.SPIFFEID != nil {
		return info.SPIFFEID.String()
	}
	return plaintext
}

// Counts is what one target's calls came to. Field names are the JSON the tests read.
type Counts struct {
	OK int `json:"ok"`
	// Failed counts failed calls by gRPC status code name (Unavailable, PermissionDenied, …).
	Failed map[string]int `json:"failed,omitempty"`
	// Seen counts the answers by the identity the server saw this caller with.
	Seen map[string]int `json:"seen,omitempty"`
	// LastError is the message of the last failed call, for failure messages.
	LastError string `json:"lastError,omitempty"`
}

// ledger holds every target's counts and serves them.
type ledger struct {
	mu      sync.Mutex
	targets map[string]*Counts
}

func (l *ledger) record(target, seen string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.targets[target]
	if c == nil {
		c = &Counts{Failed: map[string]int{}, Seen: map[string]int{}}
		l.targets[target] = c
	}
	if err != nil {
		c.Failed[status.Code(err).String()]++
		c.LastError = err.Error()
		return
	}
	c.OK++
	c.Seen[seen]++
}

// ServeHTTP writes the counts by target.
func (l *ledger) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(l.targets)
}

// callForever calls target every interval until ctx ends, over one channel (as an application
// would), and records each outcome.
func callForever(ctx context.Context, book *ledger, target, name string, useXDS bool, every time.Duration) {
	var creds credentials.TransportCredentials = insecure.NewCredentials()
	if useXDS {
		var err error
		if creds, err = xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()}); err != nil {
			log.Fatal(err)
		}
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		log.Fatalf("target %s: %v", target, err)
	}
	defer conn.Close()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		out := &wrapperspb.StringValue{}
		err := conn.Invoke(callCtx, method, wrapperspb.String(name), out)
		cancel()
		if errors.Is(ctx.Err(), context.Canceled) {
			return
		}
		seen := ""
		if err == nil {
			_, seen, _ = strings.Cut(out.GetValue(), " ")
		}
		book.record(target, seen, err)
		if err != nil {
			log.Printf("call %s: %v", target, err)
		}
	}
}
