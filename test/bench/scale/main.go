// Command scale measures the operator with many namespaces on the local cluster: for each size
// it creates that many namespaces, each with a Deployment on kwok nodes, runs the operator binary
// as its own process, enrolls every namespace (to MutualTLS by default: an Observe step that
// restarts every pod to inject it, then a MutualTLS step) and measures
//
//   - the time until every namespace is at its target, and namespaces converged per minute;
//   - each ladder step's latency, from the step's start to the namespace standing at its level
//     (seen by listing the namespaces every second);
//   - the operator process's CPU seconds and peak RSS (VmHWM) over the rollout;
//   - the API requests it made, by HTTP method (GET covers gets, lists and watches), from its own
//     client metrics (rest_client_requests_total), and their rate;
//   - the cost of a restart once converged: the time until the new process has finished a
//     successful pass (controller_runtime_reconcile_total, result success or requeue_after), and
//     the writes it makes in the following 20 seconds (there should be none).
//
// It prints a table, one row per size, and appends one JSON line per size to -out, so runs and
// sizes can be compared. It asserts nothing.
//
//	go run ./bench/scale -namespaces 100,300 -pods 3      (from test/; `make bench-scale`)
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
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
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	meshscheme "github.com/meshwright/meshwright/api/scheme"
	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/test/bench/record"
	"github.com/meshwright/meshwright/test/cluster"
)

// result is one size's figures; the JSON line written per size.
type result struct {
	Bench           string         `json:"bench"`
	Time            string         `json:"time"`
	Namespaces      int            `json:"namespaces"`
	Pods            int            `json:"pods"`
	Level           string         `json:"level"`
	Parallel        int            `json:"parallel"`
	ConvergeS       float64        `json:"converge_s"`
	NamespacesPerM  float64        `json:"namespaces_per_min"`
	StepP50S        float64        `json:"step_p50_s"`
	StepP95S        float64        `json:"step_p95_s"`
	Steps           int            `json:"steps"`
	CPUSeconds      float64        `json:"cpu_s"`
	PeakRSSMiB      float64        `json:"peak_rss_mib"`
	Requests        map[string]int `json:"requests_by_method"`
	RequestsPerS    float64        `json:"requests_per_s"`
	RestartResyncMs int64          `json:"restart_resync_ms"`
	RestartWrites   int            `json:"restart_writes"`
	RestartRequests map[string]int `json:"restart_requests_by_method"`
	// TrafficGates is how traffic was read ("" when the gates were skipped), TrafficReads how
	// many namespace readings the operator made, PromQueries how many queries Prometheus
	// answered (its own prometheus_http_requests_total for /api/v1/query).
	TrafficGates string `json:"traffic_gates,omitempty"`
	TrafficReads int    `json:"traffic_reads,omitempty"`
	PromQueries  int    `json:"prometheus_queries,omitempty"`
	// Passes is how many passes the operator ran over the rollout, by result
	// (controller_runtime_reconcile_total): what drives every other cost.
	Passes map[string]int `json:"passes_by_result,omitempty"`
}

func main() {
	sizes := flag.String("namespaces", "100,300,1000", "comma-separated namespace counts to measure")
	pods := flag.Int("pods", 3, "replicas of the one Deployment in each namespace")
	level := flag.String("level", string(meshv1.LevelMutualTLS), "the level every namespace is enrolled at")
	parallel := flag.Int("parallel", 50, "spec.rollout.maxNamespacesInProgress")
	timeout := flag.Duration("timeout", time.Hour, "how long one size may take to converge")
	profile := flag.String("profile", "", "write the operator's CPU profile of the first -profile-seconds of each rollout, and its heap profile once converged, to files starting with this path")
	profileFor := flag.Duration("profile-seconds", time.Minute, "how much of the rollout the CPU profile covers")
	gates := flag.String("traffic-gates", "", `"" skips the traffic gates (pods only); "embedded" or "prometheus" enforces them, reading the traffic simulator's series from its pods' stats or through a real Prometheus`)
	flag.IntVar(&annotationKiB, "namespace-annotation-kib", 0, "give every namespace a kubectl.kubernetes.io/last-applied-configuration annotation of this many KiB, as kubectl apply and GitOps tools leave one (what the ladder's cache keeps of a namespace)")
	out := flag.String("out", "", "append one JSON line per size to this file (default: bin/bench.jsonl of the repository)")
	flag.Parse()
	ctrllog.SetLogger(logr.Discard())
	*out = record.OutPath(*out)
	manager, err := record.BuildManager()
	if err != nil {
		record.Fail(err)
	}
	defer os.Remove(manager)

	var results []result
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			record.Fail(fmt.Errorf("-namespaces: %q is not a count", s))
		}
		fmt.Fprintf(os.Stderr, "%d namespaces × %d pods → %s\n", n, *pods, *level)
		prof := profiling{}
		if *profile != "" {
			prof = profiling{prefix: fmt.Sprintf("%s-%d", *profile, n), cpuFor: *profileFor}
		}
		r, err := measure(manager, n, *pods, meshv1.AdoptionLevel(*level), *parallel, *timeout, prof, *gates)
		if err != nil {
			record.Fail(fmt.Errorf("%d namespaces: %w", n, err))
		}
		results = append(results, r)
		if err := record.AppendJSON(*out, r); err != nil {
			record.Fail(err)
		}
		printTable(results)
	}
	fmt.Printf("\nJSON lines appended to %s\n", *out)
}

// profiling says which profiles of the operator to take; none when prefix is empty.
type profiling struct {
	prefix string
	cpuFor time.Duration
}

func measure(manager string, n, pods int, level meshv1.AdoptionLevel, parallel int, timeout time.Duration, prof profiling, gates string) (result, error) {
	ctx := context.Background()
	r := result{Bench: "scale", Time: time.Now().UTC().Format(time.RFC3339), Namespaces: n, Pods: n * pods, Level: string(level), Parallel: parallel, TrafficGates: gates}
	// Room for every pod twice over (a restart runs old and new side by side). A kwok node has
	// 64 CPUs and takes 2,000 pods, but Istio's sidecar requests 100m: 640 injected pods per
	// node; with fewer nodes, steps time out on unschedulable pods and are rolled back.
	nodes := (2*n*pods)/500 + 1
	cl, err := cluster.Start(ctx, cluster.Options{Nodes: nodes, Timeout: 5 * time.Minute})
	if err != nil {
		return r, err
	}
	defer cl.Stop()
	root, err := record.RepoRoot()
	if err != nil {
		return r, err
	}
	if err := cluster.ApplyFiles(ctx, cl.RESTConfig(), filepath.Join(root, "config", "crd", "bases", "meshwright.io_meshinstallations.yaml")); err != nil {
		return r, err
	}
	c, err := client.New(cl.RESTConfig(), client.Options{Scheme: meshscheme.New()})
	if err != nil {
		return r, err
	}
	if err := makeNamespaces(ctx, c, n, pods); err != nil {
		return r, err
	}

	tr, err := startTraffic(ctx, c, gates, n)
	if err != nil {
		return r, err
	}
	defer tr.stop()
	op, err := startManager(manager, cl.Kubeconfig, prof.prefix != "", tr.args...)
	if err != nil {
		return r, err
	}
	defer op.stop()
	cpuProfile := make(chan error, 1)
	if prof.prefix != "" {
		go func() {
			cpuProfile <- op.profile(fmt.Sprintf("profile?seconds=%d", int(prof.cpuFor.Seconds())), prof.prefix+"-cpu.pprof")
		}()
	}
	port, err := cluster.FreePort()
	if err != nil {
		return r, err
	}
	values, _ := json.Marshal(cluster.WebhookValues(port))
	mesh := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1.MeshInstallationSpec{
		ControlPlane: meshv1.ControlPlaneSpec{Values: &apiextensionsv1.JSON{Raw: values}},
		Rollout: meshv1.RolloutSpec{TrafficGates: meshv1.TrafficGatesSkip, MaxNamespacesInProgress: int32(parallel),
			MaxUnavailablePerNamespace: ptr.To(intstr.FromString("100%")), SoakTime: &metav1.Duration{Duration: time.Second}},
		Namespaces: []meshv1.NamespaceRule{{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"bench": "scale"}}, Level: level}},
		Telemetry:  tr.telemetry,
	}}
	if gates != "" {
		mesh.Spec.Rollout.TrafficGates = meshv1.TrafficGatesEnforce
		mesh.Spec.Rollout.ObserveTime, mesh.Spec.Rollout.BakeTime = &metav1.Duration{Duration: 10 * time.Second}, &metav1.Duration{Duration: 10 * time.Second}
	}
	start := time.Now()
	if err := c.Create(ctx, mesh); err != nil {
		return r, err
	}
	ist, err := cl.StartIstiod(ctx, cluster.IstiodOptions{Port: port, Timeout: 5 * time.Minute})
	if err != nil {
		return r, err
	}
	defer ist.Stop()

	steps, err := watchLadder(ctx, c, n, level, start, timeout, op)
	if err != nil {
		return r, err
	}
	r.ConvergeS = time.Since(start).Seconds()
	r.NamespacesPerM = float64(n) / (r.ConvergeS / 60)
	r.Steps = len(steps)
	r.StepP50S, r.StepP95S = percentile(steps, 0.5), percentile(steps, 0.95)
	if r.CPUSeconds, r.PeakRSSMiB, err = op.usage(); err != nil {
		return r, err
	}
	if r.Requests, err = op.requests(); err != nil {
		return r, err
	}
	if err := tr.count(&r, op); err != nil {
		return r, err
	}
	if r.Passes, err = op.passes(); err != nil {
		return r, err
	}
	if prof.prefix != "" {
		if err := op.profile("heap", prof.prefix+"-heap.pprof"); err != nil {
			return r, err
		}
		if err := <-cpuProfile; err != nil {
			return r, err
		}
		fmt.Fprintf(os.Stderr, "profiles: %s-cpu.pprof, %s-heap.pprof (go tool pprof -top <file>)\n", prof.prefix, prof.prefix)
	}
	total := 0
	for _, v := range r.Requests {
		total += v
	}
	r.RequestsPerS = float64(total) / r.ConvergeS

	// Restart once converged and reported (Ready=True: the last pass wrote its status), so
	// that what the new process writes is what a restart costs, not the old one's unfinished
	// status: a new process, its first successful pass, then 20 s of quiet.
	if err := waitReady(ctx, c, mesh.Name, 5*time.Minute); err != nil {
		return r, err
	}
	op.stop()
	op2, err := startManager(manager, cl.Kubeconfig, false)
	if err != nil {
		return r, err
	}
	defer op2.stop()
	restart := time.Now()
	for {
		// A pass that succeeded ends as "success" or, with a recheck scheduled, "requeue_after".
		ok, err := op2.metric("controller_runtime_reconcile_total", `controller="meshinstallation",result="success"`)
		later, err2 := op2.metric("controller_runtime_reconcile_total", `controller="meshinstallation",result="requeue_after"`)
		if err == nil && err2 == nil && ok+later >= 1 {
			break
		}
		if time.Since(restart) > 10*time.Minute {
			return r, fmt.Errorf("the restarted operator made no successful pass in 10 minutes (last error: %w)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.RestartResyncMs = time.Since(restart).Milliseconds()
	time.Sleep(20 * time.Second)
	if r.RestartRequests, err = op2.requests(); err != nil {
		return r, err
	}
	for method, v := range r.RestartRequests {
		if method != "GET" { // reads, lists and watches are all GETs
			r.RestartWrites += v
		}
	}
	return r, nil
}

// makeNamespaces creates n namespaces labelled bench=scale, each with a Deployment of pods
// replicas, and waits until every replica is available.
//
// annotationKiB sizes each namespace's last-applied annotation (-namespace-annotation-kib).
func makeNamespaces(ctx context.Context, c client.Client, n, pods int) error {
	work := make(chan int)
	errs := make(chan error, 2*n) // each namespace makes two objects: room for every failure
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				name := fmt.Sprintf("scale-%04d", i)
				sel := map[string]string{"app": "web"}
				objs := []client.Object{
					&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"bench": "scale"}, Annotations: lastApplied()}},
					&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: name}, Spec: appsv1.DeploymentSpec{
						Replicas: ptr.To(int32(pods)), Selector: &metav1.LabelSelector{MatchLabels: sel},
						Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel},
							Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "registry.example/web:1"}}}},
					}},
				}
				for _, o := range objs {
					if err := c.Create(ctx, o); err != nil {
						errs <- err
					}
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Minute)
	for {
		deps := &appsv1.DeploymentList{}
		if err := c.List(ctx, deps); err != nil {
			return err
		}
		avail := 0
		for _, d := range deps.Items {
			if strings.HasPrefix(d.Namespace, "scale-") {
				avail += int(d.Status.AvailableReplicas)
			}
		}
		if avail >= n*pods {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d pods available after 30 minutes", avail, n*pods)
		}
		time.Sleep(2 * time.Second)
	}
}

// watchLadder lists the bench namespaces every second until each stands at level with no step,
// and returns the duration of every step it saw complete (start to level reached).
func watchLadder(ctx context.Context, c client.Client, n int, level meshv1.AdoptionLevel, start time.Time, timeout time.Duration, op *process) ([]time.Duration, error) {
	type seen struct {
		id      string
		started time.Time
	}
	running := map[string]seen{}
	var done []time.Duration
	for {
		list := &corev1.NamespaceList{}
		if err := c.List(ctx, list, client.MatchingLabels{"bench": "scale"}); err != nil {
			return nil, err
		}
		now := time.Now()
		atTarget := 0
		for _, ns := range list.Items {
			var state struct {
				Step *struct {
					ID      string    `json:"id"`
					Started time.Time `json:"started"`
				} `json:"step"`
			}
			_ = json.Unmarshal([]byte(ns.Annotations[meshv1.AnnotationLadder]), &state)
			prev, wasRunning := running[ns.Name]
			switch {
			case state.Step != nil && (!wasRunning || prev.id != state.Step.ID):
				if wasRunning {
					done = append(done, now.Sub(prev.started))
				}
				running[ns.Name] = seen{id: state.Step.ID, started: state.Step.Started}
			case state.Step == nil && wasRunning:
				done = append(done, now.Sub(prev.started))
				delete(running, ns.Name)
			}
			if state.Step == nil && ns.Labels[meshv1.LabelLevel] == string(level) {
				atTarget++
			}
		}
		if atTarget == n {
			return done, nil
		}
		if err := op.exited(); err != nil {
			return nil, err
		}
		if time.Since(start) > timeout {
			return nil, fmt.Errorf("%d of %d namespaces at %s after %s", atTarget, n, level, timeout)
		}
		time.Sleep(time.Second)
	}
}

// waitReady waits for the installation's Ready condition to be True.
func waitReady(ctx context.Context, c client.Client, name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		mesh := &meshv1.MeshInstallation{}
		if err := c.Get(ctx, client.ObjectKey{Name: name}, mesh); err != nil {
			return err
		}
		if meta.IsStatusConditionTrue(mesh.Status.Conditions, meshv1.ConditionReady) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("every namespace converged, but Ready is not True after %s: %v", timeout, meta.FindStatusCondition(mesh.Status.Conditions, meshv1.ConditionReady))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// process is the operator binary running against the cluster, with its metrics on 127.0.0.1.
type process struct {
	cmd     *exec.Cmd
	metrics string
	pprof   string // the profiler's base URL; empty when off
	done    chan struct{}
	once    sync.Once
}

func startManager(bin, kubeconfig string, pprof bool, extra ...string) (*process, error) {
	port, err := cluster.FreePort()
	if err != nil {
		return nil, err
	}
	p := &process{metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", port), done: make(chan struct{})}
	args := []string{"--kubeconfig=" + kubeconfig, fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", port),
		"--metrics-secure=false", "--health-probe-bind-address=0", "--zap-log-level=error"}
	args = append(args, extra...)
	if pprof {
		pport, err := cluster.FreePort()
		if err != nil {
			return nil, err
		}
		p.pprof = fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/", pport)
		args = append(args, fmt.Sprintf("--pprof-bind-address=127.0.0.1:%d", pport))
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), "POD_NAMESPACE=meshwright-system")
	p.cmd.Stderr = os.Stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	return p, nil
}

// profile saves one of the profiler's endpoints (say "heap", or "profile?seconds=60") to file.
func (p *process) profile(endpoint, file string) error {
	return record.SaveProfile(p.pprof, endpoint, file)
}

func (p *process) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("the operator exited: %v", p.cmd.ProcessState)
	default:
		return nil
	}
}

func (p *process) stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
}

// usage reads the process's CPU time (user + system) and peak resident memory from /proc.
func (p *process) usage() (cpuSeconds, peakMiB float64, err error) {
	pid := p.cmd.Process.Pid
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the command name (which may hold spaces) start after the last ')'.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	cpuSeconds = (utime + stime) / 100 // USER_HZ
	peakMiB, err = record.PeakRSSMiB(pid)
	return cpuSeconds, peakMiB, err
}

// metric returns the samples of a metric whose labels contain match, summed.
func (p *process) metric(name, match string) (float64, error) {
	samples, err := p.scrape(name)
	if err != nil {
		return 0, err
	}
	sum := 0.0
	for labels, v := range samples {
		if strings.Contains(labels, match) {
			sum += v
		}
	}
	return sum, nil
}

// requests sums rest_client_requests_total by method: every request the operator's clients made.
func (p *process) requests() (map[string]int, error) {
	return p.byLabel("rest_client_requests_total", "", "method")
}

// passes sums controller_runtime_reconcile_total of the meshinstallation controller by result.
func (p *process) passes() (map[string]int, error) {
	return p.byLabel("controller_runtime_reconcile_total", `controller="meshinstallation"`, "result")
}

// byLabel sums the samples of a metric whose labels contain match, by one label's value.
func (p *process) byLabel(name, match, label string) (map[string]int, error) {
	samples, err := p.scrape(name)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for labels, v := range samples {
		i := strings.Index(labels, label+`="`)
		if i < 0 || !strings.Contains(labels, match) {
			continue
		}
		value := labels[i+len(label)+2:]
		out[value[:strings.IndexByte(value, '"')]] += int(v)
	}
	return out, nil
}

// scrape reads one metric's samples from the operator's metrics, by label set.
func (p *process) scrape(name string) (map[string]float64, error) { return scrapeURL(p.metrics, name) }

// scrapeURL reads one metric's samples from a Prometheus text-format endpoint, by label set.
func scrapeURL(url, name string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		out[line[len(name):sp]] += v
	}
	return out, sc.Err()
}

func percentile(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(q*float64(len(s)-1))].Seconds()
}

func printTable(rs []result) {
	fmt.Printf("\n%6s %6s %10s %8s %8s %8s %7s %9s %8s %9s %10s %9s %10s %8s %8s %7s  %s\n", "ns", "pods", "converge_s", "ns/min", "step_p50", "step_p95",
		"cpu_s", "rss_mib", "req/s", "restart_ms", "restart_wr", "requests", "gates", "reads", "queries", "passes", "by method")
	for _, r := range rs {
		total := 0
		var verbs []string
		for v, n := range r.Requests {
			total += n
			verbs = append(verbs, fmt.Sprintf("%s=%d", v, n))
		}
		sort.Strings(verbs)
		passes := 0
		for _, n := range r.Passes {
			passes += n
		}
		gates := r.TrafficGates
		if gates == "" {
			gates = "skipped"
		}
		fmt.Printf("%6d %6d %10.1f %8.1f %8.1f %8.1f %7.1f %9.1f %8.1f %9d %10d %9d %10s %8d %8d %7d  %s\n", r.Namespaces, r.Pods, r.ConvergeS, r.NamespacesPerM,
			r.StepP50S, r.StepP95S, r.CPUSeconds, r.PeakRSSMiB, r.RequestsPerS, r.RestartResyncMs, r.RestartWrites, total, gates, r.TrafficReads, r.PromQueries, passes,
			strings.Join(verbs, " "))
	}
	printTargets(rs)
}

// Issue #24's targets for this benchmark. Peak RSS is judged at 10,000 pods; CPU per namespace
// should stay flat as the count grows (judged against the smallest size of the run, within a
// quarter, since one size alone says nothing about growth).
const (
	targetRSSMiB  = 150
	targetRSSPods = 10000
	flatCPUSpread = 1.25
)

// printTargets prints each figure the targets judge beside its target, "met" or "NOT met", so a
// regression shows at a glance.
func printTargets(rs []result) {
	if len(rs) == 0 {
		return
	}
	fmt.Printf("\ntargets:\n")
	base := rs[0]
	for _, r := range rs {
		if r.Namespaces < base.Namespaces {
			base = r
		}
	}
	baseCPU := base.CPUSeconds / float64(max(base.Namespaces, 1))
	for _, r := range rs {
		perNS := r.CPUSeconds / float64(max(r.Namespaces, 1))
		verdict := "met"
		switch {
		case len(rs) == 1 || r.Namespaces == base.Namespaces:
			verdict = "n/a" // growth needs two sizes
		case perNS > baseCPU*flatCPUSpread:
			verdict = "NOT met"
		}
		fmt.Printf("  %-8s CPU per namespace at %d namespaces: %.3f s (target: flat, within %.2fx of %.3f s at %d)\n",
			verdict, r.Namespaces, perNS, flatCPUSpread, baseCPU, base.Namespaces)
		rssVerdict := "met"
		switch {
		case r.Pods < targetRSSPods:
			rssVerdict = "n/a"
		case r.PeakRSSMiB > targetRSSMiB:
			rssVerdict = "NOT met"
		}
		fmt.Printf("  %-8s peak RSS at %d pods: %.1f MiB (target <= %d MiB at %d pods)\n", rssVerdict, r.Pods, r.PeakRSSMiB, targetRSSMiB, targetRSSPods)
	}
}

// annotationKiB is -namespace-annotation-kib.
var annotationKiB int

// lastApplied is the annotation kubectl apply leaves on an object, of annotationKiB KiB; nil
// for none.
func lastApplied() map[string]string {
	if annotationKiB <= 0 {
		return nil
	}
	return map[string]string{"kubectl.kubernetes.io/last-applied-configuration": `{"apiVersion":"v1","kind":"Namespace","metadata":{"labels":{"team":"` + strings.Repeat("x", annotationKiB<<10) + `"}}}`}
}
