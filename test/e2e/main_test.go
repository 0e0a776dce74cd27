// Package e2e runs the operator and its dependencies on the local cluster of package cluster:
// a real kube-apiserver, controller-manager, scheduler, kwok nodes and cert-manager.
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

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/go-logr/logr"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/test/cluster"
)

var (
	lc     *cluster.Cluster
	k8s    client.Client
	scheme = k8sruntime.NewScheme()
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
	_ = clientgoscheme.AddToScheme(scheme)
	_ = meshv1.AddToScheme(scheme)
	_ = cmv1.AddToScheme(scheme)
	_ = apiextensionsv1.AddToScheme(scheme)

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
	if k8s, err = client.New(lc.RESTConfig(), client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
