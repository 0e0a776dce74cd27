// Package record is what the benchmark programs share: their results go to a JSON-lines file
// (one line per run, so runs can be compared over time), by default bin/bench.jsonl of the
// repository.
package record

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

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
	return buildCommand("./cmd", "meshwright-bench-manager")
}

// BuildMinimalManager builds hack/minimalmanager, a controller-runtime manager with one
// controller that does nothing, into a temporary file; the caller removes it. It is built from
// the operator's module, so it links the same client-go and controller-runtime: its resident
// memory is the floor the operator's cannot go below.
func BuildMinimalManager() (string, error) {
	return buildCommand("./hack/minimalmanager", "meshwright-bench-minimal-manager")
}

// buildCommand builds the package pkg of the repository's root module into a temporary file
// named after name and this process, so that concurrent benchmarks do not overwrite each other's.
func buildCommand(pkg, name string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(os.TempDir(), fmt.Sprintf("%s-%d", name, os.Getpid()))
	build := exec.Command("go", "build", "-o", bin, pkg)
	build.Dir, build.Stderr = root, os.Stderr
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("building %s: %w", pkg, err)
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
	m, err := statusMiB(pid, "VmRSS", "VmHWM")
	return m["VmRSS"], m["VmHWM"], err
}

// RSSSplitMiB splits a running process's resident set size now into its anonymous pages
// (RssAnon: the heap, stacks, what the program allocated) and its file-backed pages (RssFile:
// mostly the binary's own text and data), so a figure can say how much is code and how much is
// data.
func RSSSplitMiB(pid int) (anon, file float64, err error) {
	m, err := statusMiB(pid, "RssAnon", "RssFile")
	return m["RssAnon"], m["RssFile"], err
}

// statusMiB reads the named fields (in kB, such as VmHWM) of /proc/<pid>/status in MiB. A field
// missing is an error: a process that has exited (a zombie) has no memory fields, and a figure
// of 0 would pass for a measurement.
func statusMiB(pid int, fields ...string) (map[string]float64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !slices.Contains(fields, strings.TrimSuffix(f[0], ":")) {
			continue
		}
		kb, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return nil, err
		}
		out[strings.TrimSuffix(f[0], ":")] = kb / 1024
	}
	if len(out) < len(fields) {
		return nil, fmt.Errorf("not all of %s in /proc/%d/status", strings.Join(fields, ", "), pid)
	}
	return out, nil
}

// Fail prints the error and exits 1: a benchmark that cannot measure says why and stops.
func Fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

// SaveProfile saves one endpoint of a manager's profiler (say "heap", or "profile?seconds=60")
// under base (its /debug/pprof/ URL) to file. The profiler starts with the manager: the first
// attempts may find it not listening yet.
func SaveProfile(base, endpoint, file string) error {
	var resp *http.Response
	var err error
	for range 50 {
		if resp, err = http.Get(base + endpoint); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("profiling the operator: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profiling the operator: %s from %s", resp.Status, endpoint)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
