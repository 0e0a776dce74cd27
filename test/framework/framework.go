// Package framework holds the helpers every test of the test module uses (the e2e tests, the
// bundle tests and the local cluster harness): polling, reading files, decoding YAML, and
// reading RBAC rules, each defined once.
package framework

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
)

// Eventually polls cond until it holds, and fails the test when timeout passes first, with the
// last error cond gave.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			lastErr = err
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, lastErr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// MustRead reads a file or fails the test.
func MustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// DecodeAll decodes a stream of YAML (or JSON) documents, skipping empty ones, with
// apimachinery's decoder.
func DecodeAll(b []byte) ([]*unstructured.Unstructured, error) {
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var out []*unstructured.Unstructured
	for {
		obj := map[string]any{}
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(obj) > 0 {
			out = append(out, &unstructured.Unstructured{Object: obj})
		}
	}
}

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

// FlatRules lists every (group, resource, verb) and (URL, verb) a set of rules grants, sorted,
// so that two sets of rules compare as what they grant.
func FlatRules(rules []rbacv1.PolicyRule) []string {
	var out []string
	for _, r := range rules {
		for _, v := range r.Verbs {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					out = append(out, g+"/"+res+":"+v)
				}
			}
			for _, u := range r.NonResourceURLs {
				out = append(out, u+":"+v)
			}
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
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
		return nil, fmt.Errorf("kustomize build %s: %v: %s", dir, err, stderr.String())
	}
	objs, err := DecodeAll(out)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	return objs, nil
}
