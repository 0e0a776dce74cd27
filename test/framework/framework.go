// Package framework holds the helpers the tests and tools of the test module share, each defined
// once: polling, reading files, RBAC rules, PEM certificates, and on a local cluster (package
// cluster) starting one with a client, waiting on a MeshInstallation's conditions, and making
// namespaces of workloads. Manifests (YAML, kustomize) are in framework/manifest, below package
// cluster.
package framework

import (
	"os"
	"slices"
	"sort"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/meshwright/meshwright/internal/chartrbac"
	"github.com/meshwright/meshwright/internal/release"
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

// ChartGranted is what the roles of Istio's embedded charts grant, as FlatRules: the operator
// holds it to create those roles without escalate (package chartrbac), so it is the one place a
// wildcard, or a write to Secrets, may come from in the operator's ClusterRole.
func ChartGranted(t testing.TB) map[string]bool {
	t.Helper()
	rules, err := chartrbac.Rules(release.DefaultIstioVersion)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, r := range FlatRules(rules) {
		out[r] = true
	}
	return out
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
