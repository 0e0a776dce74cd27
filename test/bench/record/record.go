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

// OutPath is the file a benchmark appends its JSON lines to: the -out flag's value, or
// DefaultPath when it is empty. A benchmark that cannot tell where to write stops (Fail).
func OutPath(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	path, err := DefaultPath()
	if err != nil {
		Fail(err)
	}
	return path
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
	_, peak, err := MemoryMiB(pid)
	return peak, err
}

// MemoryMiB is a running process's resident set size now (VmRSS) and at its peak (VmHWM).
func MemoryMiB(pid int) (rss, peak float64, err error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	found := 0
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || (f[0] != "VmRSS:" && f[0] != "VmHWM:") {
			continue
		}
		kb, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return 0, 0, err
		}
		if f[0] == "VmRSS:" {
			rss = kb / 1024
		} else {
			peak = kb / 1024
		}
		found++
	}
	if found < 2 {
		return 0, 0, fmt.Errorf("no VmRSS and VmHWM in /proc/%d/status", pid)
	}
	return rss, peak, nil
}

// Fail prints the error and exits 1: a benchmark that cannot measure says why and stops.
func Fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
