package v1alpha1

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// reasonConstants reads the package's source for every Reason… constant and its value.
func reasonConstants(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			spec, ok := n.(*ast.ValueSpec)
			if !ok {
				return true
			}
			for i, id := range spec.Names {
				if !strings.HasPrefix(id.Name, "Reason") || i >= len(spec.Values) {
					continue
				}
				if lit, ok := spec.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					v, _ := strconv.Unquote(lit.Value)
					out[id.Name] = v
				}
			}
			return true
		})
	}
	return out
}

// TestEveryReasonIsDocumented: docs/troubleshooting.md has an entry (a "### `Reason`" heading)
// for every condition reason the API declares, so a user who reads a reason in kubectl can look
// it up; and no entry for a reason that does not exist.
func TestEveryReasonIsDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "troubleshooting.md"))
	if err != nil {
		t.Fatal(err)
	}
	reasons := reasonConstants(t)
	if len(reasons) < 30 || reasons["ReasonForbidden"] != ReasonForbidden {
		t.Fatalf("found %d reason constants (%v): the source scan is broken", len(reasons), reasons)
	}
	values := map[string]bool{}
	for name, v := range reasons {
		values[v] = true
		if !strings.Contains(string(doc), "\n### `"+v+"`\n") {
			t.Errorf("%s (%q) has no entry in docs/troubleshooting.md: add a \"### `%s`\" section saying what it means and what to do", name, v, v)
		}
	}
	for _, line := range strings.Split(string(doc), "\n") {
		if v, ok := strings.CutPrefix(line, "### `"); ok {
			v = strings.TrimSuffix(v, "`")
			if !values[v] {
				t.Errorf("docs/troubleshooting.md documents %q, which is not a reason in api/", v)
			}
		}
	}
}
