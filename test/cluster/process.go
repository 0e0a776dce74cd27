package cluster

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is one part of the local cluster running as a child process: a component, or a
// workload's process the proxyless runner plays (StartChild).
type Process struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	Log  string `json:"log"`

	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

// startProcess starts bin with args, its output going to logDir/name.log. A detached process
// outlives this one (for `localcluster up`); an attached one is killed if this process dies, so
// a crashed test run leaves nothing behind.
func startProcess(name, bin string, args []string, env []string, logDir string, detached bool) (*Process, error) {
	return startProcessIn("", name, bin, args, env, logDir, detached)
}

// startProcessIn is startProcess with a working directory (empty: this process's).
func startProcessIn(dir, name, bin string, args []string, env []string, logDir string, detached bool) (*Process, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%s: binary %s not found (run `make cluster-bins`): %w", name, bin, err)
	}
	logPath := filepath.Join(logDir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()

	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(componentEnviron(), env...)
	if detached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, PID: cmd.Process.Pid, Log: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Failed reports an error with the end of the process's log if it has exited.
func (p *Process) Failed() error {
	if p.exited == nil {
		return nil
	}
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited (%v); last lines of %s:\n%s", p.Name, p.err, p.Log, tail(p.Log, 15)) //nolint:errorlint // a clean exit has no error to wrap
	default:
		return nil
	}
}

// StartChild starts bin in dir, its output in dir/name.log, killed if this process dies (a
// crashed test leaves nothing behind): a workload's process, played for a pod.
func StartChild(dir, name, bin string, args, env []string) (*Process, error) {
	return startProcessIn(dir, name, bin, args, env, dir, false)
}

// Stop ends a process StartChild started: SIGTERM, then SIGKILL after grace.
func (p *Process) Stop(grace time.Duration) { p.stop(grace, "") }

// stop sends SIGTERM, waits up to grace, then SIGKILLs. It works for processes started by this
// run and, through the PID alone, for those a previous `up` left running.
func (p *Process) stop(grace time.Duration, clusterDir string) {
	if p.PID <= 0 {
		return
	}
	if p.cmd != nil {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
			return
		case <-time.After(grace):
			_ = p.cmd.Process.Kill()
			<-p.exited
			return
		}
	}
	if !p.isOurs(clusterDir) {
		return
	}
	_ = syscall.Kill(p.PID, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if syscall.Kill(p.PID, 0) != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(p.PID, syscall.SIGKILL)
	// The caller is told it stopped only once it is gone, with its listeners closed.
	for range 50 {
		if syscall.Kill(p.PID, 0) != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// componentEnviron is this process's environment less KUBECONFIG: every component is given the
// cluster's own kubeconfig by flag, and none may fall back to a cluster the user's shell names.
func componentEnviron() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KUBECONFIG=") {
			env = append(env, kv)
		}
	}
	return env
}

// isOurs checks that the PID still runs a component of this cluster (PIDs are reused): every
// component's command line names a file in the cluster's directory. So `down` never signals a
// process this cluster did not start.
func (p *Process) isOurs(clusterDir string) bool {
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/cmdline")
	if err != nil {
		return false
	}
	return strings.Contains(string(cmdline), clusterDir)
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// freePort asks the kernel for a free port on loopback. Every listener of the local cluster
// uses one, so several clusters run side by side.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// poll runs check every interval until it returns true, the context ends, or one of the
// watched processes exits (then the error says which, with its log).
func poll(ctx context.Context, what string, interval time.Duration, procs []*Process, check func(context.Context) (bool, error)) error {
	var last error
	for {
		for _, p := range procs {
			if err := p.Failed(); err != nil {
				return fmt.Errorf("waiting for %s: %w", what, err)
			}
		}
		ok, err := check(ctx)
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("waiting for %s: %w (last error: %w)", what, ctx.Err(), last)
			}
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(interval):
		}
	}
}
