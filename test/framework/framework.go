// Package framework holds the helpers the tests and tools of the test module share, each defined
// once: polling, reading files, RBAC rules, PEM certificates, and on a local cluster (package
// cluster) starting one with a client, waiting on a MeshInstallation's conditions, and making
// namespaces of workloads. Manifests (YAML, kustomize) are in framework/manifest, below package
// cluster.
package framework

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/meshwright/meshwright/internal/chartrbac"
	"github.com/meshwright/meshwright/internal/release"
)

// timeouts holds, per test, the first wait of Eventually that timed out, for RepeatTimeout.
var timeouts sync.Map

// RepeatTimeout logs again, in a test that failed, the first wait that timed out. Registered as
// the test's first clean-up (StartCluster does), it runs after the clean-ups that dump logs, so
// the reason is the last line before the test's FAIL line, where a truncated CI view still
// shows it.
func RepeatTimeout(t testing.TB) {
	msg, ok := timeouts.LoadAndDelete(t.Name())
	if ok && t.Failed() {
		t.Logf("a wait of this failed test timed out: %s", msg)
	}
}

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
			msg := fmt.Sprintf("timed out after %s waiting for %s (last error: %v)", timeout, what, lastErr)
			timeouts.LoadOrStore(t.Name(), msg)
			t.Fatal(msg)
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
