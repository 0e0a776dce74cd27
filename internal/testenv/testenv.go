// Package testenv starts the integration tier's real kube-apiserver and etcd (envtest) with the
// operator's CRDs installed, from binaries the repository builds itself (setup-envtest's
// downloads are not reachable here): `make test` points KUBEBUILDER_ASSETS at them.
package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Start starts envtest with the CRDs of config/crd/bases. It fails, rather than skipping, when
// the binaries are missing: a test tier that silently does not run proves nothing.
func Start() (*envtest.Environment, *rest.Config, error) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		return nil, nil, fmt.Errorf("KUBEBUILDER_ASSETS is not set: run the tests with `make test-unit`, which builds etcd and kube-apiserver into bin/ and points KUBEBUILDER_ASSETS there")
	}
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(assets, b)); err != nil {
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
