// Package record is what the benchmark programs share: their results go to a JSON-lines file
// (one line per run, so runs can be compared over time), by default bin/bench.jsonl of the
// repository.
package record

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

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

// BuildManager builds the operator binary of the repository into a temporary file, as it runs
// in a cluster; the caller removes it.
func BuildManager() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(os.TempDir(), fmt.Sprintf("meshwright-bench-manager-%d", os.Getpid()))
	build := exec.Command("go", "build", "-o", bin, "./cmd")
	build.Dir, build.Stderr = root, os.Stderr
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("building the manager: %w", err)
	}
	return bin, nil
}

// PeakRSSMiB is a running process's peak resident set size (VmHWM in /proc/<pid>/status).
func PeakRSSMiB(pid int) (float64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// Fail prints the error and exits 1: a benchmark that cannot measure says why and stops.
func Fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
