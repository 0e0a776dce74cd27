// Package testenv starts the integration tier's real kube-apiserver and etcd (envtest) with the
// operator's CRDs installed, from binaries the repository builds itself (setup-envtest's
// downloads are not reachable here): `make test` points KUBEBUILDER_ASSETS at them.
package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/meshwright/meshwright/internal/release"
	"github.com/meshwright/meshwright/internal/render"
)

// Start starts envtest with the CRDs of config/crd/bases. It fails, rather than skipping, when
// the binaries are missing: a test tier that silently does not run proves nothing.
func Start() (*envtest.Environment, *rest.Config, error) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		return nil, nil, fmt.Errorf("KUBEBUILDER_ASSETS is not set: run the tests with `make test-unit`, which builds etcd and kube-apiserver into bin/ and points KUBEBUILDER_ASSETS there")
	}
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(assets, b)); err != nil { //nolint:gosec // the test runner's own KUBEBUILDER_ASSETS
			return nil, nil, fmt.Errorf("KUBEBUILDER_ASSETS=%s has no %s: run `make cluster-bins`", assets, b)
		}
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	cfg, err := env.Start()
	if err != nil {
		// A start that failed late (a CRD the API server refused) leaves etcd and the API
		// server running: stop them, or every failed run leaks two processes.
		_ = env.Stop()
		return nil, nil, fmt.Errorf("starting envtest: %w", err)
	}
	return env, cfg, nil
}

// Main is the TestMain of an integration package: envtest up, the package's set-up (its
// clients, CRDs, namespaces), the tests, envtest down. envtest also goes down when the set-up
// fails, so no failed run leaves etcd and kube-apiserver behind.
func Main(m *testing.M, setup func(cfg *rest.Config) error) {
	env, cfg, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := 1
	if err := setup(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "test set-up:", err)
	} else {
		code = m.Run()
	}
	_ = env.Stop()
	os.Exit(code)
}

// InstallIstioCRDs installs Istio's CRDs, rendered from the charts the operator embeds, and waits
// until their kinds are served: tests of the policies need them, envtest has no control plane.
func InstallIstioCRDs(ctx context.Context, c client.Client) error {
	objs, err := render.CRDs(release.DefaultIstioVersion)
	if err != nil {
		return err
	}
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(schema.GroupVersionKind{Group: "security.istio.io", Version: "v1", Kind: "AuthorizationPolicyList"})
		if last = c.List(ctx, list); last == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("the CRDs of Istio were not served within 30s: %w", last)
}
