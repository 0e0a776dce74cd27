// Package proxyless makes kwok pods real Istio data-plane workloads on this machine. kwok runs
// no containers, so no request of the local cluster ever crosses a policy the operator wrote;
// Istio's proxyless gRPC mode does not need a container: a Runner plays every pod of one kwok
// node as processes of this machine, Istio's own pilot-agent (certificates from the local
// istiod, signed by the operator's CA; xDS for the application) and a grpc-go application
// (test/tools/meshapp) that serves on the pod's IP and calls other workloads steadily.
//
// What this is: Istio's real control plane, certificates, mTLS and authorization, enforced by
// gRPC's xDS data plane. What it is not: Envoy. These workloads produce no
// istio_requests_total, speak gRPC only, and differ from a sidecar where docs/testing.md lists
// (PERMISSIVE accepts plaintext only, a client sends mTLS only under an ISTIO_MUTUAL
// DestinationRule, an allow-nothing policy alone denies nothing, dry-run is enforced). Tests
// judge with it only what it judges faithfully.
//
// A pod is run when it is Running with an IP on the runner's node: as a proxyless workload
// when Istio injected it with the grpc-agent template, as a plaintext workload when it was not
// injected. Annotations on the pod say what its application does (AnnotationListen,
// AnnotationCall). The pod range is routed to this machine (a local route on lo), which needs
// CAP_NET_ADMIN: without it Start fails and says so.
package proxyless

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/meshwright/meshwright/internal/revision"
	"github.com/meshwright/meshwright/test/cluster"
)

const (
	// AnnotationListen is the port a pod's application serves on, at the pod's IP.
	AnnotationListen = "meshapp.meshwright.test/listen"
	// AnnotationCall lists, comma-separated, the gRPC targets a pod's application calls
	// (xds:///NAME.NAMESPACE.svc.cluster.local:PORT for a proxyless caller).
	AnnotationCall = "meshapp.meshwright.test/call"
	// DefaultNode is the runner's kwok node.
	DefaultNode = "proxyless"
)

// Options say where the workloads run.
type Options struct {
	Cluster *cluster.Cluster
	// Istiod serves the workloads' certificates and xDS; a revision's istiod is added with
	// Runner.AddIstiod.
	Istiod *cluster.Istiod
	// Node is the kwok node the runner creates and plays the pods of; default DefaultNode.
	Node string
	// PodCIDR is that node's pod range, routed to this machine. Empty claims a /24 of
	// 10.88.0.0/16 that nothing on this machine routes yet: not loopback (its addresses are left
	// out of EndpointSlices), not kwok's default range (the harness's services' range), and not
	// another runner's.
	PodCIDR string
}

// Runner plays the pods of its node as local processes, for as long as they run.
type Runner struct {
	opts Options
	kc   kubernetes.Interface
	dir  string
	bin  string

	mu        sync.Mutex
	pods      map[types.UID]*workloadPod
	ended     map[string]map[string]Counts // by workload (namespace/app), then target
	problems  []string
	plain     map[string]*ledger // the plaintext driver's counts, by namespace/service
	stopPlain []context.CancelFunc
	logs      map[string]string          // every process's log, by "namespace/pod process"
	istiods   map[string]*cluster.Istiod // by the name of the istiod Service it serves

	routeAdded bool
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// workloadPod is one pod played here.
type workloadPod struct {
	uid                  types.UID
	namespace, name, app string
	dir                  string
	procs                []*cluster.Process
	status               string // the application's counts URL
	agentReady           time.Duration
	appStarted           time.Time
	istiod               string // the Service of the istiod its agent reaches
}

// PodStats is what playing one pod took, for the benchmark.
type PodStats struct {
	Namespace, Name string
	// AgentReady is how long pilot-agent took from its start to writing the application's
	// gRPC bootstrap, its certificate fetched; zero for a plaintext workload.
	AgentReady time.Duration
	// AppStarted is when the application started.
	AppStarted time.Time
	// AgentPID and AppPID are the processes' IDs (0 when not running).
	AgentPID, AppPID int
	// Istiod is the Service of the istiod its agent reaches (istiod, istiod-<revision>), as its
	// injection named it; empty for a plaintext workload.
	Istiod string
}

// Pods reports the pods being played and their processes.
func (r *Runner) Pods() []PodStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []PodStats
	for _, w := range r.pods {
		st := PodStats{Namespace: w.namespace, Name: w.name, AgentReady: w.agentReady, AppStarted: w.appStarted, Istiod: w.istiod}
		for _, p := range w.procs {
			if p.Name == "pilot-agent" {
				st.AgentPID = p.PID
			} else {
				st.AppPID = p.PID
			}
		}
		out = append(out, st)
	}
	return out
}

// Start routes the pod range here, creates the node and plays its pods until Stop.
func Start(ctx context.Context, opts Options) (*Runner, error) {
	opts.Node = cmp.Or(opts.Node, DefaultNode)
	bin, err := cluster.DefaultBinDir()
	if err != nil {
		return nil, err
	}
	for _, b := range []string{"pilot-agent", "meshapp"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return nil, fmt.Errorf("binary %s not found in %s (run `make cluster-bins`): %w", b, bin, err)
		}
	}
	kc, err := kubernetes.NewForConfig(opts.Cluster.RESTConfig())
	if err != nil {
		return nil, err
	}
	r := &Runner{opts: opts, kc: kc, bin: bin, pods: map[types.UID]*workloadPod{}, ended: map[string]map[string]Counts{},
		plain: map[string]*ledger{}, logs: map[string]string{}, istiods: map[string]*cluster.Istiod{opts.Istiod.Service: opts.Istiod}}
	// Short paths: the agent's Unix sockets live under a pod's directory, and a socket's path
	// may not exceed 108 bytes.
	if r.dir, err = os.MkdirTemp("", "proxyless-"); err != nil {
		return nil, err
	}
	if opts.PodCIDR == "" {
		if r.opts.PodCIDR, err = claimLocalRoute(); err != nil {
			_ = os.RemoveAll(r.dir)
			return nil, err
		}
		r.routeAdded = true
	} else if r.routeAdded, err = ensureLocalRoute(opts.PodCIDR); err != nil {
		_ = os.RemoveAll(r.dir)
		return nil, err
	}
	if err := opts.Cluster.AddNode(ctx, cluster.NodeOptions{Name: opts.Node, CPU: "16", Memory: "64Gi", PodCIDR: r.opts.PodCIDR}); err != nil {
		r.Stop()
		return nil, fmt.Errorf("adding node %s: %w", opts.Node, err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	factory := informers.NewSharedInformerFactoryWithOptions(kc, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", opts.Node).String()
	}))
	pods := factory.Core().V1().Pods().Informer()
	if _, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { r.sync(runCtx, o) },
		UpdateFunc: func(_, o any) { r.sync(runCtx, o) },
		DeleteFunc: func(o any) { r.sync(runCtx, o) },
	}); err != nil {
		r.Stop()
		return nil, err
	}
	factory.Start(runCtx.Done())
	return r, nil
}

// Node is the name of the node whose pods the runner plays: a workload's pods must be
// scheduled there (spec.nodeName or a node selector).
func (r *Runner) Node() string { return r.opts.Node }

// sync starts a pod's processes once it runs with an IP, and stops them when it goes.
func (r *Runner) sync(ctx context.Context, o any) {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = t.Obj
	}
	p, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	gone := p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == ""
	r.mu.Lock()
	w, known := r.pods[p.UID]
	switch {
	case gone && known:
		delete(r.pods, p.UID)
	case !gone && !known:
		w = &workloadPod{uid: p.UID, namespace: p.Namespace, name: p.Name, app: p.Labels["app"], dir: filepath.Join(r.dir, string(p.UID)[:8])}
		r.pods[p.UID] = w
	default:
		r.mu.Unlock()
		return
	}
	r.mu.Unlock()
	if gone {
		r.stopPod(w)
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.play(ctx, p.DeepCopy(), w)
	}()
}

// play starts a pod's processes and, when a start fails, stops what did start and tries again
// after a back-off that doubles up to 30 seconds, as a kubelet restarts the failed containers
// of a pod whose restartPolicy is Always; until the pod goes or the runner stops. Each failure
// is kept as a problem, for the tests' failure messages.
func (r *Runner) play(ctx context.Context, p *corev1.Pod, w *workloadPod) {
	backoff := wait.Backoff{Duration: time.Second, Factor: 2, Cap: 30 * time.Second, Steps: math.MaxInt32}
	for {
		err := r.startPod(ctx, p, w)
		if err == nil {
			return
		}
		r.problem(fmt.Sprintf("pod %s/%s: %v", p.Namespace, p.Name, err))
		r.stopPod(w)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff.Step()):
		}
		r.mu.Lock()
		ours := r.pods[w.uid] == w
		r.mu.Unlock()
		if !ours {
			return
		}
	}
}

// startPod starts a pod's processes: pilot-agent then the application for an injected pod, the
// application alone for one that was not.
func (r *Runner) startPod(ctx context.Context, p *corev1.Pod, w *workloadPod) error {
	dir := w.dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	statusPort, err := cluster.FreePort()
	if err != nil {
		return err
	}
	args := []string{"-name=" + p.Labels["app"], "-status=127.0.0.1:" + strconv.Itoa(statusPort)}
	if port := p.Annotations[AnnotationListen]; port != "" {
		args = append(args, "-listen="+p.Status.PodIP+":"+port)
	}
	proxied, err := proxylessRole(p)
	if err != nil {
		return err
	}
	var env []string
	if proxied {
		started := time.Now()
		agent, bootstrap, err := r.startAgent(ctx, p, w)
		if agent != nil {
			r.logged(w, agent)
		}
		if err != nil {
			return err
		}
		r.mu.Lock()
		w.agentReady = time.Since(started)
		r.mu.Unlock()
		if !r.keep(w, agent) {
			return nil
		}
		env = append(env, "GRPC_XDS_BOOTSTRAP="+bootstrap)
		args = append(args, "-xds", "-call="+p.Annotations[AnnotationCall])
	}
	app, err := cluster.StartChild(dir, "meshapp", filepath.Join(r.bin, "meshapp"), args, env)
	if err != nil {
		return err
	}
	r.logged(w, app)
	r.mu.Lock()
	w.status, w.appStarted = "http://127.0.0.1:"+strconv.Itoa(statusPort)+"/calls", time.Now()
	r.mu.Unlock()
	if !r.keep(w, app) {
		return nil
	}
	return r.reportReady(ctx, p, app, "http://127.0.0.1:"+strconv.Itoa(statusPort)+"/ready")
}

// reportReady marks a pod Ready once its application serves, as a kubelet does on a readiness
// probe's first success, for a pod whose readiness kwok leaves to its player
// (cluster.AnnotationReadyWhenServing): a Deployment then replaces its pods no faster than
// the new ones serve, and EndpointSlices list a pod only once it does. An application that
// exits meanwhile fails the start at once (play starts it again): kwok may give a new pod the IP
// of one just deleted, whose application still holds the port for a moment.
func (r *Runner) reportReady(ctx context.Context, p *corev1.Pod, app *cluster.Process, url string) error {
	if p.Annotations[cluster.AnnotationReadyWhenServing] != "true" {
		return nil
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := app.Failed(); err != nil {
			return false, err
		}
		resp, err := get(ctx, url)
		if err != nil {
			return false, nil //nolint:nilerr // not serving yet: poll again
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("its application did not serve (waiting up to 2 minutes): %w", err)
	}
	now := metav1.Now()
	conditions := []map[string]any{}
	for _, t := range []corev1.PodConditionType{corev1.PodReady, corev1.ContainersReady} {
		conditions = append(conditions, map[string]any{"type": t, "status": corev1.ConditionTrue, "lastTransitionTime": now})
	}
	containers := []map[string]any{}
	for _, c := range p.Status.ContainerStatuses {
		containers = append(containers, map[string]any{"name": c.Name, "ready": true})
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": conditions, "containerStatuses": containers}})
	if err != nil {
		return err
	}
	_, err = r.kc.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if apierrors.IsNotFound(err) || ctx.Err() != nil {
		return nil //nolint:nilerr // the pod is gone, or the runner stopping: nothing to report
	}
	return err
}

// keep records a started process with its pod, or stops it when the pod went meanwhile.
func (r *Runner) keep(w *workloadPod, p *cluster.Process) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pods[w.uid] != w {
		go p.Stop(2 * time.Second)
		return false
	}
	w.procs = append(w.procs, p)
	return true
}

// stopPod keeps the counts of a pod's application and stops its processes.
func (r *Runner) stopPod(w *workloadPod) {
	r.mu.Lock()
	procs, status := w.procs, w.status
	w.procs, w.status = nil, ""
	r.mu.Unlock()
	if status != "" {
		if counts, err := fetchCounts(status); err == nil {
			r.mu.Lock()
			key := w.namespace + "/" + w.app
			if r.ended[key] == nil {
				r.ended[key] = map[string]Counts{}
			}
			for target, c := range counts {
				r.ended[key][target] = r.ended[key][target].Add(c)
			}
			r.mu.Unlock()
		}
	}
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Stop(2 * time.Second)
	}
}

// Calls is what the application of workload app in namespace has called so far, by target,
// summed over all its pods, those that ended included.
func (r *Runner) Calls(namespace, app string) (map[string]Counts, error) {
	r.mu.Lock()
	out := map[string]Counts{}
	for target, c := range r.ended[namespace+"/"+app] {
		out[target] = c
	}
	var live []string
	for _, w := range r.pods {
		if w.namespace == namespace && w.app == app && w.status != "" {
			live = append(live, w.status)
		}
	}
	r.mu.Unlock()
	for _, url := range live {
		counts, err := fetchCounts(url)
		if err != nil {
			return nil, err
		}
		for target, c := range counts {
			out[target] = out[target].Add(c)
		}
	}
	return out, nil
}

// Problems are what went wrong playing pods (a pod injected with a template that cannot run
// here, a process that would not start), for the tests' failure messages.
func (r *Runner) Problems() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.problems)
	for _, w := range r.pods {
		for _, p := range w.procs {
			if err := p.Failed(); err != nil {
				out = append(out, fmt.Sprintf("pod %s/%s: %v", w.namespace, w.name, err))
			}
		}
	}
	return out
}

// Logs are the log files of every process started, by "namespace/pod process", for the tests'
// failure messages.
func (r *Runner) Logs() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.logs)
}

// logged records the log of a pod's process.
func (r *Runner) logged(w *workloadPod, p *cluster.Process) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logs[w.namespace+"/"+w.name+" "+p.Name] = p.Log
}

func (r *Runner) problem(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.problems = append(r.problems, msg)
}

// Stop stops playing: every process ends, and the route the runner added is removed.
func (r *Runner) Stop() {
	if r.cancel != nil {
		r.cancel()
	}
	r.mu.Lock()
	for _, stop := range r.stopPlain {
		stop()
	}
	r.mu.Unlock()
	r.wg.Wait()
	r.mu.Lock()
	pods := slices.Collect(maps.Values(r.pods))
	r.pods = map[types.UID]*workloadPod{}
	r.mu.Unlock()
	for _, w := range pods {
		r.stopPod(w)
	}
	if r.routeAdded {
		_ = removeLocalRoute(r.opts.PodCIDR)
	}
	_ = os.RemoveAll(r.dir)
}

// proxylessRole says how a pod is played: as a proxyless workload when Istio injected it with
// the grpc-agent template, in plaintext when it was not injected; a pod with Envoy's sidecar
// cannot be played (the harness runs no Envoy).
func proxylessRole(p *corev1.Pod) (bool, error) {
	switch {
	case revision.Proxyless(p):
		return true, nil
	case revision.HasProxy(p):
		return false, fmt.Errorf("injected with Istio's proxy but not the %s template (%s=%q): the harness runs no Envoy",
			revision.GRPCAgentTemplate, revision.TemplatesAnnotation, p.Annotations[revision.TemplatesAnnotation])
	}
	return false, nil
}

func fetchCounts(url string) (map[string]Counts, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := get(ctx, url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]Counts{}
	return out, json.NewDecoder(resp.Body).Decode(&out)
}

// get reads a local URL of a pod's application (its counts, its readiness).
func get(ctx context.Context, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return http.DefaultClient.Do(req)
}
