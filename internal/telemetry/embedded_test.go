package telemetry

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshwright/meshwright/internal/revision"
	"github.com/meshwright/meshwright/internal/testenv"
	"github.com/meshwright/meshwright/internal/traffic"
)

var k8s client.Client

func TestMain(m *testing.M) {
	testenv.Main(m, func(cfg *rest.Config) (err error) {
		k8s, err = client.New(cfg, client.Options{})
		return err
	})
}

// proxy serves a proxy's merged metrics whose plaintext counter from legacy/client is what the
// test sets.
type proxy struct {
	plaintext atomic.Int64
	srv       *httptest.Server
}

func newProxy(t *testing.T) *proxy {
	p := &proxy{}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stats/prometheus" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "# TYPE envoy_server_uptime gauge\nenvoy_server_uptime 1\n# TYPE istio_requests_total counter\n")
		fmt.Fprintf(w, "istio_requests_total{reporter=\"destination\",source_workload=\"client\",source_workload_namespace=\"legacy\",connection_security_policy=\"none\"} %d\n", p.plaintext.Load())
		fmt.Fprintf(w, "istio_requests_total{reporter=\"destination\",source_workload=\"web\",source_workload_namespace=\"shop\",connection_security_policy=\"mutual_tls\"} 99\n")
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// runningPod creates a Running pod (envtest has no kubelet: the test writes its status).
func runningPod(t *testing.T, ns, name string, withProxy bool) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	if withProxy {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "istio-proxy", Image: "proxy"})
	}
	if err := k8s.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status.Phase, pod.Status.PodIP = corev1.PodRunning, "10.88.0.9"
	if err := k8s.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	return pod
}

// TestEmbeddedSourceReadsTheProxiesOfANamespace: the embedded source reads each injected,
// running pod's stats (through the URL template), measures the plaintext calls over the window
// from its own reads, reports how much of the window it has seen, and names the proxies it
// could not read; a proxyless gRPC pod is not read. A proxy that restarts (its counter drops) is counted from zero again; a pod
// that goes keeps its calls within the window.
func TestEmbeddedSourceReadsTheProxiesOfANamespace(t *testing.T) {
	ctx := context.Background()
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}); err != nil {
		t.Fatal(err)
	}
	web, api := newProxy(t), newProxy(t)
	addrs := map[string]string{"web-1": web.srv.URL, "api-1": api.srv.URL}
	for name := range addrs {
		runningPod(t, "shop", name, true)
	}
	runningPod(t, "shop", "batch-1", false) // no proxy: not read
	// Proxyless gRPC: no Envoy, nothing of Istio's standard metrics, not read (its address is
	// not routed: reading it would make it unreachable).
	grpc := runningPod(t, "shop", "grpc-1", true)
	grpc.Annotations = map[string]string{revision.TemplatesAnnotation: revision.GRPCAgentTemplate}
	if err := k8s.Update(ctx, grpc); err != nil {
		t.Fatal(err)
	}
	// An hour after the pods started: their proxies' counters hold calls from before any read.
	clock := clocktesting.NewFakePassiveClock(time.Now().Add(time.Hour))
	// The URL template reaches each pod through a router, as the e2e reaches the simulator.
	router := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ns, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/pods/"), "/")
		name, _, _ := strings.Cut(rest, "/")
		target, ok := addrs[name]
		if ns != "shop" || !ok {
			http.NotFound(w, r)
			return
		}
		http.Redirect(w, r, target+"/stats/prometheus", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(router.Close)
	src := &Embedded{Pods: k8s, Clock: clock, URLTemplate: router.URL + "/pods/{namespace}/{name}/stats/prometheus"}
	legacy := traffic.Caller{Namespace: "legacy", Workload: "client"}
	window := 10 * time.Minute

	web.plaintext.Store(100)
	r := src.Read(ctx, []string{"shop"}, window)["shop"]
	if !r.Reporting || r.Unreachable != "" || r.Unavailable != "" || len(r.Plaintext) != 0 || r.Covered != 0 {
		t.Fatalf("first read: %+v, want reporting, nothing measured yet, nothing covered", r)
	}
	if !r.ZtunnelUnread || r.ZtunnelReporting {
		t.Errorf("first read: %+v, want it to say it reads no ztunnel (a namespace in ambient mode is not judged on it)", r)
	}

	clock.SetTime(clock.Now().Add(4 * time.Minute))
	web.plaintext.Store(106)
	api.plaintext.Store(2)
	r = src.Read(ctx, []string{"shop"}, window)["shop"]
	if r.Plaintext[legacy] != 8 || r.Covered != 4*time.Minute {
		t.Fatalf("after 4 minutes: %+v, want 8 plaintext calls from legacy/client over 4m", r)
	}

	clock.SetTime(clock.Now().Add(7 * time.Minute))
	web.plaintext.Store(1) // restarted: counts from zero
	r = src.Read(ctx, []string{"shop"}, window)["shop"]
	// The window began a minute after the first read: 3/4 of the 8 calls between the first two
	// reads count (the rate taken as even between them), and web-1's 1 since its restart.
	if r.Plaintext[legacy] != 7 || r.Covered != window {
		t.Fatalf("after the restart: %+v, want 7 (6 of the 8 before, 1 after) over the whole window", r)
	}

	// web-1 goes (a rollout): the calls it received within the window still count.
	if err := k8s.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1"}}); err != nil {
		t.Fatal(err)
	}
	clock.SetTime(clock.Now().Add(time.Minute))
	r = src.Read(ctx, []string{"shop"}, window)["shop"]
	if r.Plaintext[legacy] != 5 || r.Covered != window {
		t.Fatalf("after web-1 went: %+v, want its 4 calls in the window (3 of 6 before its restart, 1 after) and api-1's 1", r)
	}
	runningPod(t, "shop", "web-1", true)

	addrs["api-1"] = "http://127.0.0.1:1" // nothing listens there
	r = src.Read(ctx, []string{"shop"}, window)["shop"]
	if !strings.Contains(r.Unreachable, "api-1") || !r.Reporting {
		t.Fatalf("with api-1 unreachable: %+v, want it named", r)
	}

	if r := src.Read(ctx, []string{"empty"}, window)["empty"]; r.Reporting {
		t.Fatalf("a namespace without proxies: %+v, want not reporting", r)
	}
	if n := len(src.pods); n != 3 {
		t.Errorf("%d pods' reads kept, want shop's 3 (the web-1 that went among them) while their window lasts", n)
	}
	clock.SetTime(clock.Now().Add(max(window, forgetAfter) + time.Second))
	src.Read(ctx, []string{"empty"}, window)
	if n := len(src.pods); n != 0 {
		t.Errorf("%d pods' reads kept a whole window after their namespace was last asked about", n)
	}
}
