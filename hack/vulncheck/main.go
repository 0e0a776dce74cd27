// Command vulncheck judges govulncheck's JSON output (read on stdin) for `make verify-vulns`: it
// fails on every vulnerability reachable by symbol from the scanned code unless docs/security.md
// lists its ID and module in its allow-list table, with why it cannot be fixed here and what
// fixes it. govulncheck itself has no allow-list, and the types of its JSON output are internal
// to golang.org/x/vuln, so the few fields read here are declared here.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
)

// message is one value of govulncheck's JSON stream; only the kinds judged here are declared.
type message struct {
	OSV     *struct{ ID, Summary string } `json:"osv"`
	Finding *struct {
		OSV          string `json:"osv"`
		FixedVersion string `json:"fixed_version"`
		Trace        []struct {
			Module, Version, Package, Function string
		} `json:"trace"`
	} `json:"finding"`
}

// vuln is a vulnerability reachable by symbol.
type vuln struct {
	id, module, version, fixed, summary, where string
}

// allowRow is a row of the allow-list table: | ID | module | ... |.
var allowRow = regexp.MustCompile(`^\|\s*(GO-\d{4}-\d+)\s*\|\s*([^|\s]+)\s*\|`)

func main() {
	allowFile := flag.String("allow", "docs/security.md", "the Markdown file whose table rows `| ID | module | ... |` allow a vulnerability")
	flag.Parse()
	allowed, err := readAllowed(*allowFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vulncheck:", err)
		os.Exit(2)
	}
	found, err := reachable(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vulncheck: reading govulncheck's output:", err)
		os.Exit(2)
	}
	var refused []string
	seen := map[string]bool{}
	for _, v := range found {
		key := v.id + " " + v.module
		seen[key] = true
		if allowed[key] {
			fmt.Printf("allowed (%s): %s in %s@%s, fixed in %s: %s\n", *allowFile, v.id, v.module, v.version, v.fixed, v.summary)
			continue
		}
		refused = append(refused, fmt.Sprintf("%s in %s@%s (fixed in %s): %s; reached from %s", v.id, v.module, v.version, v.fixed, v.summary, v.where))
	}
	for key := range allowed {
		if !seen[key] {
			fmt.Printf("no longer found, remove it from %s: %s\n", *allowFile, key)
		}
	}
	if len(refused) > 0 {
		slices.Sort(refused)
		fmt.Fprintf(os.Stderr, "%d vulnerabilities reachable from the shipped code:\n  %s\nUpgrade the module to its fixed version (go get MODULE@VERSION, then go mod tidy), or, if that cannot be done here, list the ID and module in %s's allow-list with why and what fixes it.\n",
			len(refused), strings.Join(refused, "\n  "), *allowFile)
		os.Exit(1)
	}
	fmt.Printf("no vulnerability reachable from the shipped code beyond the %d allowed\n", len(seen))
}

// reachable reads govulncheck's JSON stream and returns each vulnerability a call path reaches
// (a finding whose innermost frame names a function), once.
func reachable(r io.Reader) ([]vuln, error) {
	summaries := map[string]string{}
	var out []vuln
	done := map[string]bool{}
	dec := json.NewDecoder(bufio.NewReader(r))
	for {
		var m message
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, err
		}
		if m.OSV != nil {
			summaries[m.OSV.ID] = m.OSV.Summary
		}
		f := m.Finding
		if f == nil || len(f.Trace) == 0 || f.Trace[0].Function == "" || done[f.OSV] {
			continue
		}
		done[f.OSV] = true
		inner, outer := f.Trace[0], f.Trace[len(f.Trace)-1]
		out = append(out, vuln{id: f.OSV, module: inner.Module, version: inner.Version, fixed: f.FixedVersion,
			where: outer.Package + "." + outer.Function})
	}
	for i := range out {
		out[i].summary = summaries[out[i].id]
	}
	return out, nil
}

// readAllowed reads the allow-list rows of a Markdown file: "ID module" keys.
func readAllowed(path string) (map[string]bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if m := allowRow.FindStringSubmatch(line); m != nil {
			out[m[1]+" "+strings.Trim(m[2], "`")] = true
		}
	}
	return out, nil
}
