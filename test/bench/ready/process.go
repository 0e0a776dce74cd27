package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshscheme "github.com/meshwright/meshwright/api/scheme"
	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/test/bench/record"
	"github.com/meshwright/meshwright/test/cluster"
)

// libraryFloorMinRun is the least time the minimal manager runs: long enough for its caches to
// fill and its first passes to run even when the operator was Ready sooner.
const libraryFloorMinRun = 10 * time.Second

// measureProcess builds the manager, runs it as its own process against a fresh cluster until
// the sample is Ready, and reads its peak resident set size and, at Ready, how much of its
// resident memory is anonymous (heap) and how much file-backed (the binary's pages). Then it
// stops it and runs the minimal manager (hack/minimalmanager) against the same cluster, now
// holding the whole installation, for as long as the operator took (at least
// libraryFloorMinRun), and reads its peak: the memory floor of the libraries. With heapProfile,
// the operator runs with its profiler on and its heap profile is saved there at Ready.
func measureProcess(r *result, heapProfile string) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bin, err := record.BuildManager()
	if err != nil {
		return err
	}
	defer os.Remove(bin)
	minimal, err := record.BuildMinimalManager()
	if err != nil {
		return err
	}
	defer os.Remove(minimal)
	cl, err := cluster.Start(ctx, cluster.Options{})
	if err != nil {
		return err
	}
	defer cl.Stop()
	if err := cluster.ApplyFiles(ctx, cl.RESTConfig(), filepath.Join(repoRoot(), "config", "crd", "bases", "meshwright.io_meshinstallations.yaml")); err != nil {
		return err
	}
	args, pprof := []string{"--health-probe-bind-address=0"}, ""
	if heapProfile != "" {
		port, err := cluster.FreePort()
		if err != nil {
			return err
		}
		pprof = fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/", port)
		args = append(args, fmt.Sprintf("--pprof-bind-address=127.0.0.1:%d", port))
	}
	op, err := startProcess(ctx, bin, cl.Kubeconfig, args...)
	if err != nil {
		return err
	}
	defer op.stop()
	ready, stopIstiod, err := installUntilReady(ctx, cl, op)
	if err != nil {
		return err
	}
	defer stopIstiod()
	r.ProcessReadyMs = ready.Milliseconds()
	if r.RSSAnonMiB, r.RSSFileMiB, err = record.RSSSplitMiB(op.pid()); err != nil {
		return op.failed(err)
	}
	if r.PeakRSSMiB, err = record.PeakRSSMiB(op.pid()); err != nil {
		return op.failed(err)
	}
	if pprof != "" {
		if err := record.SaveProfile(pprof, "heap", heapProfile); err != nil {
			return op.failed(err)
		}
		fmt.Fprintf(os.Stderr, "heap profile at Ready: %s (go tool pprof -sample_index=inuse_space -top %s)\n", heapProfile, heapProfile)
	}
	op.stop()

	floor, err := startProcess(ctx, minimal, cl.Kubeconfig)
	if err != nil {
		return err
	}
	defer floor.stop()
	time.Sleep(max(ready, libraryFloorMinRun))
	if r.LibraryFloorRSSMiB, err = record.PeakRSSMiB(floor.pid()); err != nil {
		return floor.failed(fmt.Errorf("minimal manager: %w", err))
	}
	return nil
}

// installUntilReady creates the sample with its webhooks pointed at a local istiod, starts that
// istiod, and polls until the installation is Ready; it returns the time from the creation and
// how to stop the istiod.
func installUntilReady(ctx context.Context, cl *cluster.Cluster, op *process) (time.Duration, func(), error) {
	c, err := client.New(cl.RESTConfig(), client.Options{Scheme: meshscheme.New()})
	if err != nil {
		return 0, nil, err
	}
	port, err := cluster.FreePort()
	if err != nil {
		return 0, nil, err
	}
	mesh := sample()
	values, _ := json.Marshal(cluster.WebhookValues(port))
	mesh.Spec.ControlPlane.Values = &apiextensionsv1.JSON{Raw: values}
	start := time.Now()
	if err := c.Create(ctx, mesh); err != nil {
		return 0, nil, err
	}
	ist, err := cl.StartIstiod(ctx, cluster.IstiodOptions{Port: port})
	if err != nil {
		return 0, nil, err
	}
	for {
		m := &meshv1.MeshInstallation{}
		if err := c.Get(ctx, client.ObjectKey{Name: mesh.Name}, m); err == nil && meta.IsStatusConditionTrue(m.Status.Conditions, meshv1.ConditionReady) {
			return time.Since(start), ist.Stop, nil
		}
		if time.Since(start) > 5*time.Minute {
			ist.Stop()
			return 0, nil, fmt.Errorf("not Ready after 5 minutes")
		}
		select {
		case <-op.exited:
			ist.Stop()
			return 0, nil, op.failed(errors.New("the operator exited before Ready"))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// process is a manager binary running as its own process, as in a cluster.
type process struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	once   sync.Once
	// exited is closed when the process has ended, for whatever reason.
	exited chan struct{}
}

// startProcess runs a manager binary against the cluster of kubeconfig with its metrics endpoint
// off, in the operator's namespace, with its log kept to explain a failure.
func startProcess(ctx context.Context, bin, kubeconfig string, args ...string) (*process, error) {
	p := &process{stderr: &bytes.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.CommandContext(ctx, bin, append([]string{"--kubeconfig=" + kubeconfig, "--metrics-bind-address=0"}, args...)...)
	p.cmd.Env = append(os.Environ(), "POD_NAMESPACE=meshwright-system")
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	return p, nil
}

// pid is the process's id, for /proc.
func (p *process) pid() int { return p.cmd.Process.Pid }

// stop ends the process as a cluster does (SIGTERM) and waits for it; a second call does nothing.
func (p *process) stop() {
	p.once.Do(func() { _ = p.cmd.Process.Signal(syscall.SIGTERM); <-p.exited })
}

// failed adds the end of the process's log to err: a reading of /proc fails when the process
// has exited, and its log says why.
func (p *process) failed(err error) error {
	p.stop()
	log := p.stderr.Bytes()
	return fmt.Errorf("%w; its log ends: %s", err, log[max(0, len(log)-2000):])
}
