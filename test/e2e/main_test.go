// Package e2e runs the operator and its dependencies on the local cluster of package cluster:
// a real kube-apiserver, controller-manager, scheduler, kwok nodes and cert-manager.
//
// TestMain starts one cluster that the tests without needs of their own share, one at a time.
// A test that needs a cluster of its own (a whole rollout, an operator to kill, OLM) starts it
// with startCluster and calls t.Parallel: those tests run together after the shared ones, as
// many at once as go test's -parallel flag allows (GOMAXPROCS by default). A cluster uses well
// under one core, so on two cores two at a time nearly halve the tier's time. Everything they
// bind is on a free port of 127.0.0.1, and every operator gets a temporary directory of its own.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
)

var (
	lc  *cluster.Cluster
	k8s client.Client
	// repoRoot is the operator's repository, two levels above this file.
	repoRoot string
	// managerBin is the operator binary built for this run.
	managerBin string
	// pluginBin is the kubectl plugin built for this run.
	pluginBin string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// The tests' own clients log through controller-runtime; nothing of theirs is worth showing.
	ctrllog.SetLogger(logr.Discard())
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Join(filepath.Dir(file), "..", "..")

	tmp, err := os.MkdirTemp("", "meshwright-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	managerBin = filepath.Join(tmp, "manager")
	build := exec.Command("go", "build", "-o", managerBin, "./cmd")
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the operator:", err)
		return 1
	}
	pluginBin = filepath.Join(tmp, "kubectl-meshwright")
	build = exec.Command("go", "build", "-o", pluginBin, "./cmd/kubectl-meshwright")
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the kubectl plugin:", err)
		return 1
	}

	start := time.Now()
	lc, err = cluster.Start(context.Background(), cluster.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the local cluster:", err)
		return 1
	}
	defer lc.Stop()
	fmt.Fprintf(os.Stderr, "local cluster ready in %.1fs\n", time.Since(start).Seconds())
	if k8s, err = client.New(lc.RESTConfig(), client.Options{Scheme: framework.Scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
