package framework

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/meshwright/meshwright/test/cluster"
)

// Istio's names the watch reads: the namespace labels of the two data planes, and the proxy
// container its injector adds (as a container, or as a native sidecar among the init containers).
const (
	ambientLabel   = "istio.io/dataplane-mode"
	injectionLabel = "istio.io/rev"
	proxyContainer = "istio-proxy"
)

// DataPlaneWatch records what the API server reports of some namespaces while a test runs: their
// data-plane labels, and whether each of their pods runs, with or without Istio's proxy. A test
// judges afterwards, in the API server's order of changes (resourceVersion, one etcd's revision),
// whether a pod ever ran without the proxy while its namespace lacked the ambient label: handled
// by neither data plane, what Istio's migration order exists to prevent.
type DataPlaneWatch struct {
	mu         sync.Mutex
	namespaces map[string]bool
	events     []dataPlaneEvent
}

// dataPlaneEvent is one namespace's labels, or one pod's state, as of a resourceVersion.
type dataPlaneEvent struct {
	rv        uint64
	namespace string
	pod       string // empty for the namespace itself
	ambient   bool   // the namespace's ambient label
	injection string // the namespace's injection label
	running   bool   // the pod runs (phase Running, not being deleted)
	proxy     bool   // the pod has Istio's proxy
}

// WatchDataPlanes records the namespaces' labels and pods from now until the test ends.
func WatchDataPlanes(t testing.TB, cl *cluster.Cluster, namespaces ...string) *DataPlaneWatch {
	t.Helper()
	kc, err := kubernetes.NewForConfig(cl.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	w := &DataPlaneWatch{namespaces: map[string]bool{}}
	for _, ns := range namespaces {
		w.namespaces[ns] = true
	}
	factory := informers.NewSharedInformerFactory(kc, 0)
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { w.record(o, false) },
		UpdateFunc: func(_, o any) { w.record(o, false) },
		DeleteFunc: func(o any) { w.record(o, true) },
	}
	for _, inf := range []cache.SharedIndexInformer{factory.Core().V1().Namespaces().Informer(), factory.Core().V1().Pods().Informer()} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	factory.Start(ctx.Done())
	t.Cleanup(func() {
		cancel()
		factory.Shutdown()
	})
	for typ, synced := range factory.WaitForCacheSync(ctx.Done()) {
		if !synced {
			t.Fatalf("watching %v: the cache did not sync", typ)
		}
	}
	return w
}

// record keeps one change of a watched namespace or of one of its pods.
func (w *DataPlaneWatch) record(o any, deleted bool) {
	if tomb, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o, deleted = tomb.Obj, true
	}
	var e dataPlaneEvent
	var rv string
	switch obj := o.(type) {
	case *corev1.Namespace:
		e = dataPlaneEvent{namespace: obj.Name, ambient: obj.Labels[ambientLabel] == "ambient", injection: obj.Labels[injectionLabel]}
		rv = obj.ResourceVersion
	case *corev1.Pod:
		e = dataPlaneEvent{namespace: obj.Namespace, pod: obj.Name, proxy: hasProxy(obj),
			running: !deleted && obj.DeletionTimestamp == nil && obj.Status.Phase == corev1.PodRunning}
		rv = obj.ResourceVersion
	default:
		return
	}
	n, err := strconv.ParseUint(rv, 10, 64)
	if err != nil || !w.namespaces[e.namespace] {
		return
	}
	e.rv = n
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events = append(w.events, e)
}

func hasProxy(p *corev1.Pod) bool {
	return slices.ContainsFunc(slices.Concat(p.Spec.InitContainers, p.Spec.Containers), func(c corev1.Container) bool { return c.Name == proxyContainer })
}

// replay walks a namespace's recorded changes in the API server's order, calling step after each
// with the namespace's labels as of then and its running pods (name: with the proxy).
func (w *DataPlaneWatch) replay(namespace string, step func(e dataPlaneEvent, ns dataPlaneEvent, pods map[string]bool)) {
	w.mu.Lock()
	events := slices.Clone(w.events)
	w.mu.Unlock()
	slices.SortStableFunc(events, func(a, b dataPlaneEvent) int {
		switch {
		case a.rv < b.rv:
			return -1
		case a.rv > b.rv:
			return 1
		}
		return 0
	})
	var ns dataPlaneEvent
	pods := map[string]bool{}
	for _, e := range events {
		if e.namespace != namespace {
			continue
		}
		switch {
		case e.pod == "":
			ns = e
		case e.running:
			pods[e.pod] = e.proxy
		default:
			delete(pods, e.pod)
		}
		step(e, ns, pods)
	}
}

// Labels are the successive data-plane labellings of a namespace, each different from the one
// before: "istio.io/rev=default", "ambient", "ambient istio.io/rev=default", "" (neither).
func (w *DataPlaneWatch) Labels(namespace string) []string {
	var out []string
	w.replay(namespace, func(e, ns dataPlaneEvent, _ map[string]bool) {
		if e.pod != "" {
			return
		}
		var parts []string
		if ns.ambient {
			parts = append(parts, "ambient")
		}
		if ns.injection != "" {
			parts = append(parts, injectionLabel+"="+ns.injection)
		}
		if l := strings.Join(parts, " "); len(out) == 0 || out[len(out)-1] != l {
			out = append(out, l)
		}
	})
	return out
}

// Unhandled says each time a pod of the namespace ran without Istio's proxy while the namespace
// lacked the ambient label (neither data plane handling it), as of which resourceVersion.
func (w *DataPlaneWatch) Unhandled(namespace string) []string {
	var out []string
	w.replay(namespace, func(e, ns dataPlaneEvent, pods map[string]bool) {
		if ns.namespace == "" || ns.ambient {
			// Before the namespace's own first record its labels are not known: the pods
			// recorded so far are judged once it is.
			return
		}
		for name, proxy := range pods {
			if !proxy {
				out = append(out, fmt.Sprintf("pod %s ran without the proxy, its namespace labelled %q (resourceVersion %d)", name, ns.injection, e.rv))
			}
		}
	})
	slices.Sort(out)
	return slices.Compact(out)
}
