// Package record is what the benchmark programs share: their results go to a JSON-lines file
// (one line per run, so runs can be compared over time), by default bin/bench.jsonl of the
// repository.
package record

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/meshwright/meshwright/test/cluster"
)

// DefaultPath is bin/bench.jsonl of the repository.
func DefaultPath() (string, error) {
	bin, err := cluster.DefaultBinDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(bin, "bench.jsonl"), nil
}

// RepoRoot is the repository the benchmarks build the operator from.
func RepoRoot() (string, error) {
	bin, err := cluster.DefaultBinDir()
	if err != nil {
		return "", err
	}
	return filepath.Dir(bin), nil
}

// AppendJSON appends v as one JSON line to path.
func AppendJSON(path string, v any) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(f, string(b))
	return err
}

// Fail prints the error and exits 1: a benchmark that cannot measure says why and stops.
func Fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
