package e2e

import (
	"debug/buildinfo"
	"os/exec"
	"strings"
	"testing"
)

// TestOperatorUnderTestIsBuiltAsReleased: the operator binary every e2e test runs links the
// module versions the root module selects, the ones `make build` and the image ship, not the
// test module's (which may select newer ones for its own tools): the tests cover what ships.
func TestOperatorUnderTestIsBuiltAsReleased(t *testing.T) {
	t.Parallel()
	info, err := buildinfo.ReadFile(managerBin)
	if err != nil {
		t.Fatal(err)
	}
	if info.Main.Path != "github.com/meshwright/meshwright" {
		t.Fatalf("the operator under test is module %q, want github.com/meshwright/meshwright", info.Main.Path)
	}
	list := exec.Command("go", "list", "-m", "-f", "{{.Path}} {{with .Replace}}{{.Version}}{{else}}{{.Version}}{{end}}", "all")
	list.Dir = repoRoot
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list -m all in the root module: %v", err)
	}
	released := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if path, version, ok := strings.Cut(line, " "); ok {
			released[path] = version
		}
	}
	for _, dep := range info.Deps {
		version := dep.Version
		if dep.Replace != nil {
			version = dep.Replace.Version
		}
		if want, ok := released[dep.Path]; !ok || want != version {
			t.Errorf("the operator under test links %s %s; the root module selects %q", dep.Path, version, want)
		}
	}
	if len(info.Deps) < 20 {
		t.Errorf("the operator under test lists %d modules: its build information is missing", len(info.Deps))
	}
}
