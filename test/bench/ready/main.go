// Command ready measures the operator on the local cluster: how long the sample
// MeshInstallation takes to become Ready, set against the floor (the same control-plane objects
// applied directly, with no operator logic, and waited on until istiod is Available); and how
// many API requests it makes, by verb, during the install and per reconcile once Ready. It prints
// a table and appends one JSON line per run to -out, so runs can be compared. It asserts nothing:
// these machines are shared and noisy, so read the ratios, not the absolute times.
//
//	go run ./bench/ready -runs 3            (from test/; `make bench` does this)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	meshscheme "github.com/meshwright/meshwright/api/scheme"
	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/controllers"
	"github.com/meshwright/meshwright/internal/controlplane"
	"github.com/meshwright/meshwright/internal/render"
	"github.com/meshwright/meshwright/test/bench/record"
	"github.com/meshwright/meshwright/test/cluster"
)

var skip = true

// repoRoot is the repository the operator is built from; a benchmark without it cannot run.
func repoRoot() string {
	root, err := record.RepoRoot()
	if err != nil {
		record.Fail(err)
	}
	return root
}

func main() {
	runs := flag.Int("runs", 3, "how many times to measure each side")
	out := flag.String("out", "", "append one JSON line per run to this file (default: bin/bench.jsonl of the repository)")
	noops := flag.Int("noop-reconciles", 5, "reconciles to count requests over once the installation is Ready")
	flag.Parse()
	ctrllog.SetLogger(logr.Discard())
	*out = record.OutPath(*out)

	var results []result
	for i := 1; i <= *runs; i++ {
		fmt.Fprintf(os.Stderr, "run %d/%d: floor\n", i, *runs)
		floor, err := measureFloor()
		if err != nil {
			record.Fail(fmt.Errorf("floor: %w", err))
		}
		fmt.Fprintf(os.Stderr, "run %d/%d: operator\n", i, *runs)
		r, err := measureOperator(*noops)
		if err != nil {
			record.Fail(fmt.Errorf("operator: %w", err))
		}
		fmt.Fprintf(os.Stderr, "run %d/%d: operator process (memory)\n", i, *runs)
		if r.PeakRSSMiB, r.ProcessReadyMs, err = measureProcess(); err != nil {
			record.Fail(fmt.Errorf("operator process: %w", err))
		}
		r.Run, r.FloorMs = i, floor.Milliseconds()
		r.Ratio = float64(r.ControlPlaneMs) / float64(max(r.FloorMs, 1))
		r.Time = time.Now().UTC().Format(time.RFC3339)
		results = append(results, r)
		if err := record.AppendJSON(*out, r); err != nil {
			record.Fail(err)
		}
	}
	printTable(results)
	fmt.Printf("\nJSON lines appended to %s\n", *out)
}

// result is one run's figures.
type result struct {
	Benchmark string `json:"benchmark"`
	Run       int    `json:"run"`
	Time      string `json:"time"`
	// FloorMs: the control-plane objects applied directly until istiod is Available.
	FloorMs int64 `json:"floor_ms"`
	// ControlPlaneMs: from CertificatesReady to ControlPlaneReady, as the operator reported them.
	ControlPlaneMs int64   `json:"controlplane_ms"`
	Ratio          float64 `json:"controlplane_over_floor"`
	// ReadyMs: from creating the MeshInstallation to Ready (CA issued by cert-manager, control
	// plane, injection verified against a local istiod, mesh-wide policy).
	ReadyMs int64 `json:"ready_ms"`
	// Objects is how many objects the charts render.
	Objects int `json:"objects"`
	// InstallRequests counts the operator's requests by verb from start to Ready.
	InstallRequests map[string]int `json:"install_requests"`
	// InstallWrites is the number of those that wrote (create, update, patch, delete; dry runs
	// excluded).
	InstallWrites int `json:"install_writes"`
	// InstallWritesByResource splits them by resource (status writes are "<resource>/status").
	InstallWritesByResource map[string]int `json:"install_writes_by_resource"`
	// NoopRequestsPerReconcile: requests by verb per reconcile of the Ready installation.
	NoopRequestsPerReconcile map[string]float64 `json:"noop_requests_per_reconcile"`
	NoopWrites               int                `json:"noop_writes"`
	// PeakRSSMiB is the operator binary's peak resident memory (VmHWM) from start to Ready, run
	// as its own process as in a cluster; ProcessReadyMs is its time to Ready.
	PeakRSSMiB     float64 `json:"peak_rss_mib"`
	ProcessReadyMs int64   `json:"process_ready_ms"`
}

// measureProcess builds the manager, runs it as its own process against a fresh cluster until
// the sample is Ready, and reads its peak resident set size from /proc.
func measureProcess() (float64, int64, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bin, err := record.BuildManager()
	if err != nil {
		return 0, 0, err
	}
	defer os.Remove(bin)
	cl, err := cluster.Start(ctx, cluster.Options{})
	if err != nil {
		return 0, 0, err
	}
	defer cl.Stop()
	if err := cluster.ApplyFiles(ctx, cl.RESTConfig(), filepath.Join(repoRoot(), "config", "crd", "bases", "meshwright.io_meshinstallations.yaml")); err != nil {
		return 0, 0, err
	}
	cmd := exec.CommandContext(ctx, bin, "--kubeconfig="+cl.Kubeconfig, "--metrics-bind-address=0", "--health-probe-bind-address=0")
	cmd.Env = append(os.Environ(), "POD_NAMESPACE=meshwright-system")
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()

	c, err := client.New(cl.RESTConfig(), client.Options{Scheme: meshscheme.New()})
	if err != nil {
		return 0, 0, err
	}
	port, err := cluster.FreePort()
	if err != nil {
		return 0, 0, err
	}
	mesh := sample()
	values, _ := json.Marshal(cluster.WebhookValues(port))
	mesh.Spec.ControlPlane.Values = &apiextensionsv1.JSON{Raw: values}
	start := time.Now()
	if err := c.Create(ctx, mesh); err != nil {
		return 0, 0, err
	}
	ist, err := cl.StartIstiod(ctx, cluster.IstiodOptions{Port: port})
	if err != nil {
		return 0, 0, err
	}
	defer ist.Stop()
	for {
		m := &meshv1.MeshInstallation{}
		if err := c.Get(ctx, client.ObjectKey{Name: mesh.Name}, m); err == nil && meta.IsStatusConditionTrue(m.Status.Conditions, meshv1.ConditionReady) {
			break
		}
		if time.Since(start) > 5*time.Minute {
			return 0, 0, fmt.Errorf("not Ready after 5 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}
	readyMs := time.Since(start).Milliseconds()
	peak, err := record.PeakRSSMiB(cmd.Process.Pid)
	return peak, readyMs, err
}

// measureFloor applies the rendered control plane to a fresh cluster, CRDs first, and waits for
// istiod's Deployment to be Available.
func measureFloor() (time.Duration, error) {
	ctx := context.Background()
	cl, err := cluster.Start(ctx, cluster.Options{})
	if err != nil {
		return 0, err
	}
	defer cl.Stop()
	mesh := sample()
	in, err := controlplane.Input(mesh, "v1.37.2")
	if err != nil {
		return 0, err
	}
	objs, err := render.Render(in)
	if err != nil {
		return 0, err
	}
	c, err := client.New(cl.RESTConfig(), client.Options{Scheme: meshscheme.New()})
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: in.Namespace}}); err != nil {
		return 0, err
	}
	if err := cluster.Apply(ctx, cl.RESTConfig(), objs...); err != nil {
		return 0, err
	}
	for {
		dep := &appsv1.Deployment{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: in.Namespace, Name: "istiod"}, dep); err == nil && available(dep) {
			return time.Since(start), nil
		}
		if time.Since(start) > 3*time.Minute {
			return 0, fmt.Errorf("istiod not Available after 3 minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// measureOperator runs the operator in this process against a fresh cluster, with every request
// counted, creates the sample with its webhooks pointed at a local istiod, and follows its
// conditions.
func measureOperator(noops int) (result, error) {
	r := result{Benchmark: "ready"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cl, err := cluster.Start(ctx, cluster.Options{})
	if err != nil {
		return r, err
	}
	defer cl.Stop()
	if err := cluster.ApplyFiles(ctx, cl.RESTConfig(), filepath.Join(repoRoot(), "config", "crd", "bases", "meshwright.io_meshinstallations.yaml")); err != nil {
		return r, err
	}
	counter := &requestCounter{}
	cfg := rest.CopyConfig(cl.RESTConfig())
	cfg.WrapTransport = counter.wrap
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 meshscheme.New(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  controllers.CacheOptions(),
		Client:                 client.Options{Cache: &client.CacheOptions{Unstructured: true}},
		// One manager per run in this process: the controller's name repeats.
		Controller: config.Controller{SkipNameValidation: &skip},
	})
	if err != nil {
		return r, err
	}
	rec := &controllers.MeshInstallationReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("meshwright"),
		KubeVersion: "v1.37.2", OperatorNamespace: "meshwright-system"}
	if err := rec.SetupWithManager(mgr); err != nil {
		return r, err
	}
	go func() { _ = mgr.Start(ctx) }()

	c, err := client.New(cl.RESTConfig(), client.Options{Scheme: meshscheme.New()})
	if err != nil {
		return r, err
	}
	port, err := cluster.FreePort()
	if err != nil {
		return r, err
	}
	mesh := sample()
	values, _ := json.Marshal(cluster.WebhookValues(port))
	mesh.Spec.ControlPlane.Values = &apiextensionsv1.JSON{Raw: values}

	times := map[string]time.Duration{}
	var mu sync.Mutex
	start := time.Now()
	counter.reset()
	if err := c.Create(ctx, mesh); err != nil {
		return r, err
	}
	// Follow the conditions closely: their lastTransitionTime has one-second granularity.
	done := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			m := &meshv1.MeshInstallation{}
			if err := c.Get(ctx, client.ObjectKey{Name: mesh.Name}, m); err == nil {
				mu.Lock()
				for _, t := range []string{meshv1.ConditionCertificatesReady, meshv1.ConditionControlPlaneReady, meshv1.ConditionReady} {
					if _, seen := times[t]; !seen && meta.IsStatusConditionTrue(m.Status.Conditions, t) {
						times[t] = time.Since(start)
					}
				}
				_, ready := times[meshv1.ConditionReady]
				mu.Unlock()
				if ready {
					done <- nil
					return
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	ist, err := cl.StartIstiod(ctx, cluster.IstiodOptions{Port: port})
	if err != nil {
		return r, err
	}
	defer ist.Stop()
	select {
	case err := <-done:
		if err != nil {
			return r, err
		}
	case <-time.After(5 * time.Minute):
		return r, fmt.Errorf("not Ready after 5 minutes")
	}
	mu.Lock()
	r.ReadyMs = times[meshv1.ConditionReady].Milliseconds()
	r.ControlPlaneMs = (times[meshv1.ConditionControlPlaneReady] - times[meshv1.ConditionCertificatesReady]).Milliseconds()
	mu.Unlock()
	r.InstallRequests, r.InstallWrites = counter.snapshot()
	r.InstallWritesByResource = counter.writesByResource()
	in, _ := controlplane.Input(mesh, "v1.37.2")
	if objs, err := render.Render(in); err == nil {
		r.Objects = len(objs)
	}

	// The counts above start once the manager's caches are filled: the informers' first LISTs
	// are not in them. Once Ready: run reconciles by hand (as a requeue would) and count what each costs.
	time.Sleep(2 * time.Second)
	counter.reset()
	for range noops {
		if _, err := rec.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Name: mesh.Name}}); err != nil {
			return r, err
		}
	}
	perVerb, writes := counter.snapshot()
	r.NoopRequestsPerReconcile = map[string]float64{}
	for v, n := range perVerb {
		r.NoopRequestsPerReconcile[v] = float64(n) / float64(noops)
	}
	r.NoopWrites = writes
	return r, nil
}

// requestCounter counts requests by verb (get, list, watch, create, patch, update, delete).
type requestCounter struct {
	mu     sync.Mutex
	counts map[string]int
	// writes counts writes by resource, to see where they go.
	writes map[string]int
}

// isWrite tells the verbs that change stored state; dry runs and Events are counted apart.
func isWrite(verb string) bool {
	return slices.Contains([]string{"create", "update", "patch", "delete", "deletecollection"}, verb)
}

var requestInfo = &request.RequestInfoFactory{APIPrefixes: sets.NewString("api", "apis"), GrouplessAPIPrefixes: sets.NewString("api")}

func (rc *requestCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		verb, resource := strings.ToLower(req.Method), ""
		if info, err := requestInfo.NewRequestInfo(req); err == nil && info.IsResourceRequest {
			verb, resource = info.Verb, info.Resource
			if info.Subresource != "" {
				resource += "/" + info.Subresource
			}
		}
		switch {
		case req.URL.Query().Has("dryRun"):
			verb += "(dry-run)"
		case resource == "events":
			verb += "(events)"
		}
		rc.mu.Lock()
		if rc.counts == nil {
			rc.counts, rc.writes = map[string]int{}, map[string]int{}
		}
		rc.counts[verb]++
		if isWrite(verb) {
			rc.writes[resource]++
		}
		rc.mu.Unlock()
		return rt.RoundTrip(req)
	})
}

func (rc *requestCounter) reset() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.counts, rc.writes = map[string]int{}, map[string]int{}
}

func (rc *requestCounter) writesByResource() map[string]int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := map[string]int{}
	for k, v := range rc.writes {
		out[k] = v
	}
	return out
}

// snapshot returns the counts and how many of them wrote.
func (rc *requestCounter) snapshot() (map[string]int, int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := map[string]int{}
	writes := 0
	for v, n := range rc.counts {
		out[v] = n
		if isWrite(v) {
			writes += n
		}
	}
	return out, writes
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// sample is config/samples' MeshInstallation.
func sample() *meshv1.MeshInstallation {
	return &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1.MeshInstallationSpec{
		Certificates: meshv1.CertificatesSpec{Duration: &metav1.Duration{Duration: 8760 * time.Hour}},
		// The benchmark measures the stages, not an observe window: pods alone gate the steps.
		Rollout: meshv1.RolloutSpec{TrafficGates: meshv1.TrafficGatesSkip},
		Namespaces: []meshv1.NamespaceRule{
			{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"team": "payments"}}, Level: meshv1.LevelMutualTLS},
			{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"team": "storefront"}}, Level: meshv1.LevelObserve},
		},
	}}
}

func available(d *appsv1.Deployment) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable && c.Status == "True" {
			return d.Status.AvailableReplicas >= *d.Spec.Replicas && d.Status.ObservedGeneration >= d.Generation
		}
	}
	return false
}

func printTable(rs []result) {
	fmt.Printf("\n%-4s %10s %16s %8s %10s %8s %14s %13s %s\n", "run", "floor_ms", "controlplane_ms", "ratio", "ready_ms", "objects", "install_writes", "peak_rss_mib", "no-op reconcile: requests by verb (writes)")
	for _, r := range rs {
		fmt.Printf("%-4d %10d %16d %8.2f %10d %8d %14d %13.1f %s (%d)\n", r.Run, r.FloorMs, r.ControlPlaneMs, r.Ratio, r.ReadyMs, r.Objects, r.InstallWrites, r.PeakRSSMiB, verbs(r.NoopRequestsPerReconcile), r.NoopWrites)
	}
	if len(rs) > 1 {
		ratios := make([]float64, len(rs))
		for i, r := range rs {
			ratios[i] = r.Ratio
		}
		sort.Float64s(ratios)
		fmt.Printf("median controlplane/floor: %.2f\n", ratios[len(ratios)/2])
	}
}

func verbs(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%.1f", k, m[k]))
	}
	return strings.Join(parts, " ")
}
