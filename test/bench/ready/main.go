// Command ready measures the operator on the local cluster: how long the sample
// MeshInstallation takes to become Ready, set against the floor; how many API requests it makes,
// by verb, during the install and per reconcile once Ready; and the memory of its binary run as
// its own process, set against a minimal controller-runtime manager's.
//
// The floor is the same control-plane objects (those the operator's render gives for the sample)
// applied the fastest direct way, with no operator logic: one client whose dynamic RESTMapper is
// filled before the clock starts, server-side apply with one field manager and force, the CRDs
// first, concurrently, waited on by a watch until Established, then the rest concurrently
// (-floor-parallel at a time), until istiod's Deployment is Available (floor.go).
//
// It prints a table, each figure beside its target ("met" or "NOT met"), and appends one JSON
// line per run to -out, so runs can be compared. It asserts nothing: these machines are shared
// and noisy, so read the ratios, not the absolute times.
//
//	go run ./bench/ready -runs 3            (from test/; `make bench` does this)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
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

// skip is SkipNameValidation for the in-process managers: one per run, so the controller's name
// repeats within this process.
var skip = true

// repoRoot is the repository the operator is built from; a benchmark without it cannot run.
func repoRoot() string {
	root, err := record.RepoRoot()
	if err != nil {
		record.Fail(err)
	}
	return root
}

// main measures -runs times the floor, the operator in this process (time and requests) and the
// operator's binary as its own process (memory), each against fresh clusters, appends each run's
// JSON line as soon as it is measured (a failed later run keeps the earlier ones), and prints
// the table and the targets at the end.
func main() {
	runs := flag.Int("runs", 3, "how many times to measure each side")
	out := flag.String("out", "", "append one JSON line per run to this file (default: bin/bench.jsonl of the repository)")
	noops := flag.Int("noop-reconciles", 5, "reconciles to count requests over once the installation is Ready")
	// 8: on 2 cores, 1, 2, 4 and 8 at a time gave medians of 1.55, 1.30, 1.34 and 1.27 s over
	// five floors each; the API server's work on the CRDs, not the round trips, bounds it.
	floorParallel := flag.Int("floor-parallel", 8, "how many of the floor's objects are applied at a time")
	profile := flag.String("profile", "", "save the operator process's heap profile at Ready (its memory in use then, and everything it allocated since it started) to <this path>-<run>-heap.pprof")
	flag.Parse()
	ctrllog.SetLogger(logr.Discard())
	*out = record.OutPath(*out)

	var results []result
	for i := 1; i <= *runs; i++ {
		fmt.Fprintf(os.Stderr, "run %d/%d: floor\n", i, *runs)
		floor, err := measureFloor(*floorParallel)
		if err != nil {
			record.Fail(fmt.Errorf("floor: %w", err))
		}
		fmt.Fprintf(os.Stderr, "run %d/%d: operator\n", i, *runs)
		r, err := measureOperator(*noops)
		if err != nil {
			record.Fail(fmt.Errorf("operator: %w", err))
		}
		fmt.Fprintf(os.Stderr, "run %d/%d: operator process and minimal manager (memory)\n", i, *runs)
		heapProfile := ""
		if *profile != "" {
			heapProfile = fmt.Sprintf("%s-%d-heap.pprof", *profile, i)
		}
		if err := measureProcess(&r, heapProfile); err != nil {
			record.Fail(fmt.Errorf("operator process: %w", err))
		}
		r.Run, r.FloorMs = i, floor.Milliseconds()
		r.FloorMethod, r.FloorParallel = floorMethod, *floorParallel
		r.Ratio = float64(r.ControlPlaneMs) / float64(max(r.FloorMs, 1))
		r.Time = time.Now().UTC().Format(time.RFC3339)
		r.TargetsMet = r.targetsMet()
		results = append(results, r)
		if err := record.AppendJSON(*out, r); err != nil {
			record.Fail(err)
		}
	}
	printTable(results)
	printTargets(results)
	fmt.Printf("\nJSON lines appended to %s\n", *out)
}

// result is one run's figures.
type result struct {
	Benchmark string `json:"benchmark"`
	Run       int    `json:"run"`
	Time      string `json:"time"`
	// FloorMs: the control-plane objects applied directly until istiod is Available.
	FloorMs int64 `json:"floor_ms"`
	// FloorMethod names how the floor was measured (floorMethod), FloorParallel how many objects
	// it applied at a time: floors measured otherwise are not comparable.
	FloorMethod   string `json:"floor_method"`
	FloorParallel int    `json:"floor_parallel"`
	// ControlPlaneMs: from the operator's first CRD write to its ControlPlaneReady=True Event.
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
	// InstallObjectWrites, InstallFinalizerWrites and InstallStatusWrites split InstallWrites
	// (splitInstallWrites): the writes of the objects the install makes (the chart's, the CA's,
	// the mesh-wide policy), of the MeshInstallation itself (its finalizer) and of status.
	InstallObjectWrites int `json:"install_object_writes"`
	// InstallObjects is how many distinct objects those object writes wrote: the target is
	// InstallObjects + 3, so an object written twice counts against it.
	InstallObjects         int `json:"install_objects"`
	InstallFinalizerWrites int `json:"install_finalizer_writes"`
	InstallStatusWrites    int `json:"install_status_writes"`
	// InstallWritesTarget is the target for InstallWrites: the objects written, plus 3.
	InstallWritesTarget int `json:"install_writes_target"`
	// NoopRequestsPerReconcile: requests by verb per reconcile of the Ready installation.
	NoopRequestsPerReconcile map[string]float64 `json:"noop_requests_per_reconcile"`
	NoopWrites               int                `json:"noop_writes"`
	// PeakRSSMiB is the operator binary's peak resident memory (VmHWM) from start to Ready, run
	// as its own process as in a cluster; ProcessReadyMs is its time to Ready.
	PeakRSSMiB     float64 `json:"peak_rss_mib"`
	ProcessReadyMs int64   `json:"process_ready_ms"`
	// RSSAnonMiB and RSSFileMiB split the operator process's resident memory at Ready into
	// anonymous pages (heap, stacks) and file-backed ones (mostly the binary's own pages).
	RSSAnonMiB float64 `json:"rss_anon_mib"`
	RSSFileMiB float64 `json:"rss_file_mib"`
	// LibraryFloorRSSMiB is the peak resident memory of hack/minimalmanager, a manager with one
	// controller that watches Namespaces and Pods and does nothing, against the same cluster:
	// what client-go and controller-runtime cost before any of the operator's own.
	LibraryFloorRSSMiB float64 `json:"library_floor_rss_mib"`
	// TargetsMet tells, for this run, which targets were met (targetsMet).
	TargetsMet map[string]bool `json:"targets_met"`
}

// measureOperator runs the operator in this process against a fresh cluster, with every request
// counted, creates the sample with its webhooks pointed at a local istiod, and follows its
// conditions; once Ready, it counts what a reconcile that has nothing to do costs.
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
	told := &toldTimes{}
	rec, err := startOperator(ctx, cl.RESTConfig(), counter, told)
	if err != nil {
		return r, err
	}
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

	start := time.Now()
	counter.reset()
	if err := c.Create(ctx, mesh); err != nil {
		return r, err
	}
	done := followReady(ctx, c, mesh.Name, start)
	ist, err := cl.StartIstiod(ctx, cluster.IstiodOptions{Port: port})
	if err != nil {
		return r, err
	}
	defer ist.Stop()
	select {
	case ready := <-done:
		r.ReadyMs = ready.Milliseconds()
	case <-time.After(5 * time.Minute):
		return r, fmt.Errorf("not Ready after 5 minutes")
	}
	// From the operator's first CRD write, as the floor starts with its first object (a pass
	// applies the control plane in the same pass that sees the CA ready), to when the operator
	// told ControlPlaneReady True (its Event, emitted by the pass that saw it): while the install
	// goes on, the status write that shows it may be held (controllers.StatusCoalesceWindow).
	// Both sides leave the render out: the floor renders before its clock starts.
	firstCRD := counter.firstWriteOf("customresourcedefinitions")
	if firstCRD.IsZero() {
		return r, errors.New("the operator wrote no CRD: nothing to time the control plane from")
	}
	controlPlaneReady := told.at(meshv1.ConditionControlPlaneReady)
	if controlPlaneReady.IsZero() {
		return r, errors.New("the operator told no ControlPlaneReady=True Event")
	}
	r.ControlPlaneMs = controlPlaneReady.Sub(firstCRD).Milliseconds()
	r.InstallRequests, r.InstallWrites = counter.snapshot()
	r.InstallWritesByResource = counter.writesByResource()
	r.InstallObjects = counter.distinctObjects()
	r.splitInstallWrites()
	in, _ := controlplane.Input(mesh, "v1.37.2")
	if objs, err := render.Render(in); err == nil {
		r.Objects = len(objs)
	}

	// The counts above start once the manager's caches are filled: the informers' first LISTs
	// are not in them. Once Ready: run reconciles by hand (as a requeue would) and count what each costs.
	time.Sleep(2 * time.Second)
	return r, countNoops(ctx, rec, counter, mesh.Name, noops, &r)
}

// startOperator starts the operator's manager in this process, every request it makes counted
// by counter, and returns its reconciler, so that reconciles can be run by hand.
func startOperator(ctx context.Context, restCfg *rest.Config, counter *requestCounter, told *toldTimes) (*controllers.MeshInstallationReconciler, error) {
	cfg := rest.CopyConfig(restCfg)
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
		return nil, err
	}
	rec := &controllers.MeshInstallationReconciler{Client: mgr.GetClient(), Recorder: told.wrap(mgr.GetEventRecorder("meshwright")),
		KubeVersion: "v1.37.2", OperatorNamespace: "meshwright-system"}
	if err := rec.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	go func() { _ = mgr.Start(ctx) }()
	return rec, nil
}

// followReady polls the installation every 20 ms, closely since the conditions'
// lastTransitionTime has one-second granularity, and sends how long after start Ready was first
// seen True.
func followReady(ctx context.Context, c client.Client, name string, start time.Time) <-chan time.Duration {
	done := make(chan time.Duration, 1)
	go func() {
		for ctx.Err() == nil {
			m := &meshv1.MeshInstallation{}
			if err := c.Get(ctx, client.ObjectKey{Name: name}, m); err == nil && meta.IsStatusConditionTrue(m.Status.Conditions, meshv1.ConditionReady) {
				done <- time.Since(start)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return done
}

// countNoops runs noops reconciles of the Ready installation by hand and records the requests
// each makes by verb, and the writes among them, which should be none.
func countNoops(ctx context.Context, rec *controllers.MeshInstallationReconciler, counter *requestCounter, name string, noops int, r *result) error {
	counter.reset()
	for range noops {
		if _, err := rec.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Name: name}}); err != nil {
			return err
		}
	}
	perVerb, writes := counter.snapshot()
	r.NoopRequestsPerReconcile = map[string]float64{}
	for v, n := range perVerb {
		r.NoopRequestsPerReconcile[v] = float64(n) / float64(noops)
	}
	r.NoopWrites = writes
	return nil
}

// requestCounter counts requests by verb (get, list, watch, create, patch, update, delete).
type requestCounter struct {
	mu     sync.Mutex
	counts map[string]int
	// writes counts writes by resource, to see where they go.
	writes map[string]int
	// firstWrite is when each resource was first written since the last reset: the control
	// plane's measure starts at the operator's first CRD write.
	firstWrite map[string]time.Time
	// objects are the distinct objects written (resource, namespace, name), apart from the
	// MeshInstallation and its status: the install's target counts each once.
	objects map[string]bool
}

// isWrite tells the verbs that change stored state; dry runs and Events are counted apart.
func isWrite(verb string) bool {
	return slices.Contains([]string{"create", "update", "patch", "delete", "deletecollection"}, verb)
}

// requestInfo parses a request's URL into Kubernetes' verb, resource and subresource, as the API
// server does.
var requestInfo = &request.RequestInfoFactory{APIPrefixes: sets.NewString("api", "apis"), GrouplessAPIPrefixes: sets.NewString("api")}

// wrap is a rest.Config's WrapTransport: it counts each request by verb (Kubernetes', such as
// list or patch, from the URL and method), dry runs and Events apart, and each write by resource.
func (rc *requestCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		verb, resource, object := strings.ToLower(req.Method), "", ""
		if info, err := requestInfo.NewRequestInfo(req); err == nil && info.IsResourceRequest {
			verb, resource = info.Verb, info.Resource
			if info.Subresource != "" {
				resource += "/" + info.Subresource
			}
			// A create names no object in its URL: each counts as one of its own.
			object = resource + "/" + info.Namespace + "/" + info.Name
			if info.Name == "" {
				object += fmt.Sprintf("#%p", req)
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
			rc.counts, rc.writes, rc.firstWrite, rc.objects = map[string]int{}, map[string]int{}, map[string]time.Time{}, map[string]bool{}
		}
		rc.counts[verb]++
		if isWrite(verb) {
			rc.writes[resource]++
			if _, seen := rc.firstWrite[resource]; !seen {
				rc.firstWrite[resource] = time.Now()
			}
			if resource != finalizerResource && !strings.HasSuffix(resource, "/status") {
				rc.objects[object] = true
			}
		}
		rc.mu.Unlock()
		return rt.RoundTrip(req)
	})
}

// reset starts the counts again, so that a phase (the install, the no-op reconciles) is
// counted alone.
func (rc *requestCounter) reset() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.counts, rc.writes, rc.firstWrite, rc.objects = map[string]int{}, map[string]int{}, map[string]time.Time{}, map[string]bool{}
}

// distinctObjects is how many distinct objects were written since the last reset.
func (rc *requestCounter) distinctObjects() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.objects)
}

// firstWriteOf is when resource was first written since the last reset (zero if never).
func (rc *requestCounter) firstWriteOf(resource string) time.Time {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.firstWrite[resource]
}

// writesByResource is a copy of the writes counted by resource, to see where they go.
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

// roundTripper makes a function an http.RoundTripper, for wrap.
type roundTripper func(*http.Request) (*http.Response, error)

// RoundTrip calls f.
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

// available tells whether a Deployment is Available with every replica of its current
// generation: what the floor waits for of istiod.
func available(d *appsv1.Deployment) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable && c.Status == "True" {
			return d.Status.AvailableReplicas >= *d.Spec.Replicas && d.Status.ObservedGeneration >= d.Generation
		}
	}
	return false
}
