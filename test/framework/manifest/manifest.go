// Package manifest reads Kubernetes manifests for the tests and tools of the test module: YAML
// streams, kustomize builds, CRDs apart from the rest. It is below package cluster (which
// applies manifests) and package framework (which starts clusters), so both can use it.
package manifest

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshwright/meshwright/internal/render"
)

// DecodeAll decodes a stream of YAML (or JSON) documents, skipping empty ones, as the operator
// decodes its rendered charts (render.Decode).
func DecodeAll(b []byte) ([]*unstructured.Unstructured, error) { return render.Decode(b) }

// MustDecodeAll is DecodeAll that fails the test on an error.
func MustDecodeAll(t testing.TB, b []byte) []*unstructured.Unstructured {
	t.Helper()
	out, err := DecodeAll(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// SplitCRDs separates CustomResourceDefinitions from the other objects, for the order in which
// they are applied: CRDs first, then what may be of their kinds.
func SplitCRDs(objs []*unstructured.Unstructured) (crds, rest []*unstructured.Unstructured) {
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			crds = append(crds, o)
		} else {
			rest = append(rest, o)
		}
	}
	return crds, rest
}

// KustomizeBuild runs the kustomize binary the Makefile installs into root's bin/ (the newest,
// when there are several) on root's dir, and decodes what it prints.
func KustomizeBuild(root, dir string) ([]*unstructured.Unstructured, error) {
	bins, _ := filepath.Glob(filepath.Join(root, "bin", "kustomize-*"))
	if len(bins) == 0 {
		return nil, fmt.Errorf("no kustomize in %s: `make verify-kustomize` or `make bundle` installs it (make test does)", filepath.Join(root, "bin"))
	}
	sort.Strings(bins)
	cmd := exec.Command(bins[len(bins)-1], "build", filepath.Join(root, dir))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w: %s", dir, err, stderr.String())
	}
	objs, err := DecodeAll(out)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	return objs, nil
}
