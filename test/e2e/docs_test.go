package e2e

import (
	"context"
	"github.com/meshwright/meshwright/test/framework"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// docBlocks returns the ```sh blocks of a doc in order, and apart the one marked as clean-up
// (<!-- getting-started:cleanup --> right before it).
func docBlocks(t *testing.T, doc string) (run []string, cleanup string) {
	t.Helper()
	re := regexp.MustCompile("(?s)(<!-- getting-started:cleanup -->\\s*)?```sh\\n(.*?)```")
	for _, m := range re.FindAllStringSubmatch(doc, -1) {
		if m[1] != "" {
			cleanup = m[2]
			continue
		}
		run = append(run, m[2])
	}
	if len(run) == 0 || cleanup == "" {
		t.Fatalf("the doc has %d shell blocks and clean-up %q; want both", len(run), cleanup)
	}
	return run, cleanup
}

// bashFromRepo runs a script with bash -euo pipefail from the repository's root, its output to
// a file (the script leaves processes running, which would hold a pipe open), with no KUBECONFIG
// of the caller's.
func bashFromRepo(ctx context.Context, script, logPath string) (string, error) {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KUBECONFIG=") {
			env = append(env, kv)
		}
	}
	return runLogged(ctx, repoRoot, env, logPath, "bash", "-euo", "pipefail", "-c", script)
}

// TestGettingStarted runs every command of docs/getting-started.md in order, in one shell from
// the repository's root, as a reader would: build, a local cluster, the operator, a namespace,
// the MeshInstallation, then the checks the doc itself makes (the namespace at MutualTLS, its
// STRICT policy). The doc's clean-up runs at the end in the same shell whatever happened (an
// EXIT trap), and must leave nothing behind; so the doc cannot rot.
func TestGettingStarted(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	run, cleanup := docBlocks(t, string(framework.MustRead(t, filepath.Join(repoRoot, "docs", "getting-started.md"))))
	dir := filepath.Join(repoRoot, ".getting-started")
	logs := t.TempDir()
	// A run that was killed may have left the doc's cluster behind: the clean-up first.
	if _, err := os.Stat(dir); err == nil {
		_, _ = bashFromRepo(context.Background(), "export PATH=$PWD/bin:$PATH\n"+cleanup, filepath.Join(logs, "stale-cleanup.log"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	start := time.Now()
	script := "cleanup() {\n" + cleanup + "\n}\ntrap cleanup EXIT\n" + strings.Join(run, "\n")
	out, err := bashFromRepo(ctx, script, filepath.Join(logs, "getting-started.log"))
	if _, statErr := os.Stat(dir); statErr == nil {
		t.Errorf("the doc's clean-up left %s behind", dir)
	}
	if err != nil {
		t.Fatalf("docs/getting-started.md failed after %s: %v\n%s", time.Since(start).Round(time.Second), err, out)
	}
	t.Logf("docs/getting-started.md ran in %s", time.Since(start).Round(time.Second))
	for _, want := range []string{"✓ Certificates", "✓ Adoption", "NamespacesAtTarget", "istio-proxy", "Reached MutualTLS"} {
		if !strings.Contains(out, want) {
			t.Errorf("the walk-through's output lacks %q:\n%s", want, out)
		}
	}
}
