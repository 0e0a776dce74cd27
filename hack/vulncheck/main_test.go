package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// stream is govulncheck's JSON output in miniature: one vulnerability reached by a call path,
// one only imported, one only required.
const stream = `{"config":{"scanner_name":"govulncheck","scan_level":"symbol"}}
{"osv":{"id":"GO-2026-0001","summary":"reached"}}
{"osv":{"id":"GO-2026-0002","summary":"imported"}}
{"finding":{"osv":"GO-2026-0001","fixed_version":"v1.2.3","trace":[{"module":"example.com/m","version":"v1.2.0","package":"example.com/m/p","function":"F"},{"module":"github.com/meshwright/meshwright","package":"github.com/meshwright/meshwright/cmd","function":"main"}]}}
{"finding":{"osv":"GO-2026-0001","fixed_version":"v1.2.3","trace":[{"module":"example.com/m","version":"v1.2.0","package":"example.com/m/p","function":"G"}]}}
{"finding":{"osv":"GO-2026-0002","fixed_version":"v0.2.0","trace":[{"module":"example.com/n","version":"v0.1.0","package":"example.com/n/q"}]}}
{"finding":{"osv":"GO-2026-0003","trace":[{"module":"example.com/o","version":"v0.1.0"}]}}
`

func TestReachable(t *testing.T) {
	got, err := reachable(strings.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	want := []vuln{{id: "GO-2026-0001", module: "example.com/m", version: "v1.2.0", fixed: "v1.2.3", summary: "reached", where: "github.com/meshwright/meshwright/cmd.main"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("reachable = %+v, want %+v (once, and only what a call path reaches)", got, want)
	}
	if _, err := reachable(strings.NewReader(`{"finding":`)); err == nil {
		t.Error("a cut-off stream was read without an error")
	}
}

func TestReadAllowed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "security.md")
	doc := "| ID | module | why |\n|---|---|---|\n| GO-2026-6599 | stdlib | Go 1.26.9 |\n| GO-2026-0001 | `example.com/m` | x |\nGO-2026-9999 in prose is not a row\n"
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readAllowed(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]bool{"GO-2026-6599 stdlib": true, "GO-2026-0001 example.com/m": true}; !reflect.DeepEqual(got, want) {
		t.Fatalf("allowed = %v, want %v", got, want)
	}
}
