// Command proxyless measures what the harness's proxyless gRPC workloads (package proxyless)
// cost on this machine: on the local cluster with the operator and a local istiod, it deploys
// -pairs pairs of workloads (a server and a caller calling it) in a namespace the operator takes
// to Observe (injected with the grpc-agent template), and measures per pod
//
//   - how long pilot-agent took to be ready (its certificate fetched, the gRPC bootstrap written);
//   - how long a caller took from its application's start to its first answered call;
//   - the resident memory (VmRSS, after -settle of steady calls) and peak (VmHWM) of each
//     pilot-agent and application process.
//
// It prints medians and maxima and appends one JSON line to -out. It asserts nothing.
//
//	go run ./bench/proxyless -pairs 3      (from test/)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	meshscheme "github.com/meshwright/meshwright/api/scheme"
	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/test/bench/record"
	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/proxyless"
)

// result is one run's figures; the JSON line written.
type result struct {
	Bench           string  `json:"bench"`
	Time            string  `json:"time"`
	Pairs           int     `json:"pairs"`
	AgentReadyP50S  float64 `json:"agent_ready_p50_s"`
	AgentReadyMaxS  float64 `json:"agent_ready_max_s"`
	FirstCallP50S   float64 `json:"first_call_p50_s"`
	FirstCallMaxS   float64 `json:"first_call_max_s"`
	AgentRSSMiB     float64 `json:"agent_rss_p50_mib"`
	AgentPeakMiB    float64 `json:"agent_peak_max_mib"`
	ServerAppRSSMiB float64 `json:"server_app_rss_p50_mib"`
	CallerAppRSSMiB float64 `json:"caller_app_rss_p50_mib"`
	AppPeakMiB      float64 `json:"app_peak_max_mib"`
}

func main() {
	pairs := flag.Int("pairs", 3, "server and caller pairs to run")
	settle := flag.Duration("settle", 20*time.Second, "steady calls before memory is read")
	out := flag.String("out", "", "append the JSON line to this file (default: bin/bench.jsonl of the repository)")
	flag.Parse()
	ctrllog.SetLogger(logr.Discard())
	*out = record.OutPath(*out)
	r, err := measure(*pairs, *settle)
	if err != nil {
		record.Fail(err)
	}
	fmt.Printf("\n%6s %14s %14s %14s %14s %12s %13s %14s %14s %12s\n", "pairs", "agent_ready_p50", "agent_ready_max", "first_call_p50", "first_call_max",
		"agent_rss", "agent_peak", "server_app_rss", "caller_app_rss", "app_peak")
	fmt.Printf("%6d %14.2fs %14.2fs %14.2fs %14.2fs %9.1f MiB %9.1f MiB %10.1f MiB %10.1f MiB %8.1f MiB\n", r.Pairs, r.AgentReadyP50S, r.AgentReadyMaxS,
		r.FirstCallP50S, r.FirstCallMaxS, r.AgentRSSMiB, r.AgentPeakMiB, r.ServerAppRSSMiB, r.CallerAppRSSMiB, r.AppPeakMiB)
	if err := record.AppendJSON(*out, r); err != nil {
		record.Fail(err)
	}
	fmt.Printf("\nJSON line appended to %s\n", *out)
}

func measure(pairs int, settle time.Duration) (result, error) {
	ctx := context.Background()
	res := result{Bench: "proxyless", Time: time.Now().UTC().Format(time.RFC3339), Pairs: pairs}
	cl, c, stop, err := startMesh(ctx)
	if err != nil {
		return res, err
	}
	defer stop()
	ist, err := cl.StartIstiod(ctx, cluster.IstiodOptions{Port: webhookPort, Timeout: 5 * time.Minute})
	if err != nil {
		return res, err
	}
	defer ist.Stop()
	runner, err := proxyless.Start(ctx, proxyless.Options{Cluster: cl, Istiod: ist})
	if err != nil {
		return res, err
	}
	defer runner.Stop()

	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench", Labels: map[string]string{"bench": "proxyless"}}}); err != nil {
		return res, err
	}
	if err := waitObserve(ctx, c, "bench"); err != nil {
		return res, err
	}
	var callers []string
	for i := range pairs {
		server, caller := fmt.Sprintf("server-%d", i), fmt.Sprintf("caller-%d", i)
		callers = append(callers, caller)
		for _, w := range []proxyless.Workload{
			{Namespace: "bench", Name: server, Port: 8080},
			{Namespace: "bench", Name: caller, Call: proxyless.Target("bench", server, 8080)},
		} {
			dep, svc := w.Objects(runner.Node())
			if svc != nil {
				if err := c.Create(ctx, svc); err != nil {
					return res, err
				}
			}
			if err := c.Create(ctx, dep); err != nil {
				return res, err
			}
		}
	}
	firstCalls, err := waitFirstCalls(runner, callers)
	if err != nil {
		return res, err
	}
	time.Sleep(settle)
	return res, fill(&res, runner.Pods(), firstCalls)
}

// webhookPort is the local istiod's webhook port, named in the installation's values.
var webhookPort int

// startMesh starts the local cluster, the operator and an installation that takes namespaces
// labelled bench=proxyless to Observe, gated on pods only (proxyless workloads have no telemetry).
func startMesh(ctx context.Context) (*cluster.Cluster, client.Client, func(), error) {
	cl, err := cluster.Start(ctx, cluster.Options{Timeout: 5 * time.Minute})
	if err != nil {
		return nil, nil, nil, err
	}
	root, err := record.RepoRoot()
	if err != nil {
		cl.Stop()
		return nil, nil, nil, err
	}
	if err := cluster.ApplyFiles(ctx, cl.RESTConfig(), filepath.Join(root, "config", "crd", "bases", "meshwright.io_meshinstallations.yaml")); err != nil {
		cl.Stop()
		return nil, nil, nil, err
	}
	c, err := client.New(cl.RESTConfig(), client.Options{Scheme: meshscheme.New()})
	if err != nil {
		cl.Stop()
		return nil, nil, nil, err
	}
	manager, err := record.BuildManager()
	if err != nil {
		cl.Stop()
		return nil, nil, nil, err
	}
	op := exec.Command(manager, "--kubeconfig="+cl.Kubeconfig, "--metrics-bind-address=0", "--health-probe-bind-address=0", "--zap-log-level=error")
	op.Env = append(os.Environ(), "POD_NAMESPACE=meshwright-system")
	op.Stderr = os.Stderr
	op.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := op.Start(); err != nil {
		cl.Stop()
		return nil, nil, nil, err
	}
	stop := func() { _ = op.Process.Kill(); _ = op.Wait(); _ = os.Remove(manager); cl.Stop() }
	if webhookPort, err = cluster.FreePort(); err != nil {
		stop()
		return nil, nil, nil, err
	}
	values, _ := json.Marshal(cluster.WebhookValues(webhookPort))
	mesh := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1.MeshInstallationSpec{
		ControlPlane: meshv1.ControlPlaneSpec{Values: &apiextensionsv1.JSON{Raw: values}},
		Rollout:      meshv1.RolloutSpec{TrafficGates: meshv1.TrafficGatesSkip, SoakTime: &metav1.Duration{Duration: time.Second}},
		Namespaces:   []meshv1.NamespaceRule{{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"bench": "proxyless"}}, Level: meshv1.LevelObserve}},
	}}
	if err := c.Create(ctx, mesh); err != nil {
		stop()
		return nil, nil, nil, err
	}
	return cl, c, stop, nil
}

// waitObserve waits until the namespace stands at Observe (injection on) before its workloads
// are created, so that their first pods are injected.
func waitObserve(ctx context.Context, c client.Client, name string) error {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		ns := &corev1.Namespace{}
		if err := c.Get(ctx, client.ObjectKey{Name: name}, ns); err != nil {
			return err
		}
		if ns.Labels[meshv1.LabelLevel] == string(meshv1.LevelObserve) {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("namespace %s did not reach Observe in 5 minutes", name)
}

// waitFirstCalls waits until every caller has had a call answered, and returns, per caller,
// the time from its application's start to then (to within the 100 ms of polling).
func waitFirstCalls(r *proxyless.Runner, callers []string) (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	deadline := time.Now().Add(5 * time.Minute)
	for len(out) < len(callers) {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("callers answered: %d of %d in 5 minutes; runner problems: %v", len(out), len(callers), r.Problems())
		}
		for _, caller := range callers {
			if _, done := out[caller]; done {
				continue
			}
			calls, err := r.Calls("bench", caller)
			if err != nil {
				continue // not started yet
			}
			for _, cnt := range calls {
				if cnt.OK > 0 {
					for _, p := range r.Pods() {
						if strings.HasPrefix(p.Name, caller+"-") && !p.AppStarted.IsZero() {
							out[caller] = time.Since(p.AppStarted)
						}
					}
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return out, nil
}

// fill computes the figures from the pods' processes and the first calls.
func fill(res *result, pods []proxyless.PodStats, firstCalls map[string]time.Duration) error {
	var ready, first, agentRSS, serverRSS, callerRSS []float64
	for _, d := range firstCalls {
		first = append(first, d.Seconds())
	}
	for _, p := range pods {
		if p.AgentPID == 0 || p.AppPID == 0 {
			return fmt.Errorf("pod %s: agent %d, application %d: not both running", p.Name, p.AgentPID, p.AppPID)
		}
		ready = append(ready, p.AgentReady.Seconds())
		rss, peak, err := record.MemoryMiB(p.AgentPID)
		if err != nil {
			return err
		}
		agentRSS, res.AgentPeakMiB = append(agentRSS, rss), max(res.AgentPeakMiB, peak)
		rss, peak, err = record.MemoryMiB(p.AppPID)
		if err != nil {
			return err
		}
		res.AppPeakMiB = max(res.AppPeakMiB, peak)
		if strings.HasPrefix(p.Name, "server-") {
			serverRSS = append(serverRSS, rss)
		} else {
			callerRSS = append(callerRSS, rss)
		}
	}
	res.AgentReadyP50S, res.AgentReadyMaxS = median(ready), slices.Max(ready)
	res.FirstCallP50S, res.FirstCallMaxS = median(first), slices.Max(first)
	res.AgentRSSMiB, res.ServerAppRSSMiB, res.CallerAppRSSMiB = median(agentRSS), median(serverRSS), median(callerRSS)
	return nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
