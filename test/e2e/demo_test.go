package e2e

import (
	"context"
	"errors"
	"github.com/meshwright/meshwright/test/framework"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/procfs"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// TestDemo runs the README's first command the way a new user does: `make demo` in a fresh
// checkout, with nothing in the environment but PATH and HOME; then `make demo` again with
// KUBECONFIG naming another cluster (it must reuse the running demo and never contact that
// cluster); then the README's follow-up commands, which end with `make demo-down`, after which no
// process of the demo and none of its listeners may be left.
func TestDemo(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	checkout := copyCheckout(t)
	elsewhere := trapCluster(t)
	env := newUserEnv()
	t.Cleanup(func() {
		// Whatever failed, the demo's processes go (demo-down is idempotent).
		_, _ = runLogged(context.Background(), checkout, env, filepath.Join(t.TempDir(), "cleanup.log"), "make", "demo-down")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	out := mustRunLogged(t, ctx, checkout, env, "the first make demo", "make", "demo")
	checkDemoShows(t, "the first make demo", out)

	out = mustRunLogged(t, ctx, checkout, append(env, "KUBECONFIG="+elsewhere.kubeconfig), "the second make demo", "make", "demo")
	if !strings.Contains(out, "local cluster already running") {
		t.Errorf("the second make demo did not reuse the running cluster:\n%s", out)
	}
	checkDemoShows(t, "the second make demo", out)

	demo := processesUnder(t, checkout)
	// etcd, kube-apiserver, controller-manager, scheduler, kwok, cert-manager, istiod, operator.
	if len(demo) < 8 {
		t.Fatalf("found %d processes of the demo, want at least 8: %v", len(demo), demo)
	}
	listening := listenersOf(t, demo)
	if len(listening) == 0 {
		t.Fatalf("the demo's processes listen on no port")
	}

	// The README's follow-up, as written: the user's shell still names the other cluster, and the
	// README's own `export KUBECONFIG=…` must be what points kubectl and the plugin at the demo.
	out = mustRunLogged(t, ctx, checkout, append(env, "KUBECONFIG="+elsewhere.kubeconfig), "the README's follow-up",
		"bash", "-euo", "pipefail", "-c", readmeBlock(t, "demo-follow-up"))
	for what, re := range map[string]string{
		"kubectl get mesh -o wide: not Ready, 3 enrolled, 2 at Observe, 1 at MutualTLS": `(?m)^default\s+\S+\s+\S+\s+False\s+3\s+2\s+1\s+0\s`,
		"payments at MutualTLS":          `(?m)^payments\s+Active\s+\S+\s+MutualTLS\s*$`,
		"orders held at Observe":         `(?m)^orders\s+Active\s+\S+\s+Observe\s*$`,
		"storefront at Observe":          `(?m)^storefront\s+Active\s+\S+\s+Observe\s*$`,
		"the plugin's header":            `MeshInstallation default · Istio\s+\S+ · Not Ready \(NamespacesBlocked\)`,
		"the plugin's Adoption row":      `Adoption\s+NamespacesBlocked`,
		"orders' plaintext caller named": `orders PlaintextTraffic\s+1\s+caller\(s\)\s+reached\s+the\s+namespace\s+in\s+plaintext`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("the README's follow-up commands do not show %s:\n%s", what, out)
		}
	}

	// demo-down has stopped everything: no process of the checkout's, and nothing listening on
	// the ports its processes had.
	framework.Eventually(t, 30*time.Second, "the demo's processes to be gone", func() (bool, error) {
		left := processesUnder(t, checkout)
		return len(left) == 0, errors.New("still running: " + strings.Join(left, "; "))
	})
	if still := stillListening(t, listening); len(still) > 0 {
		t.Errorf("after make demo-down these ports still listen: %v", still)
	}
	if n := elsewhere.connections.Load(); n > 0 {
		t.Errorf("the demo connected %d time(s) to the cluster the user's KUBECONFIG names", n)
	}
}

// checkDemoShows checks what make demo printed: payments through the traffic gate to MutualTLS,
// orders held at Observe by legacy's plaintext calls (named, read from the demo's Prometheus
// scraping the traffic simulator), storefront at Observe, legacy left alone.
func checkDemoShows(t *testing.T, run, out string) {
	t.Helper()
	for what, re := range map[string]string{
		"the installation, 3 enrolled": `(?m)^default\s+\S+\s+\S+\s+False\s+3\s`,
		"payments at MutualTLS":        `(?m)^payments\s+Active\s+\S+\s+MutualTLS(\s+\S+)?\s*$`,
		"orders held at Observe":       `(?m)^orders\s+Active\s+\S+\s+Observe(\s+\S+)?\s*$`,
		"storefront at Observe":        `(?m)^storefront\s+Active\s+\S+\s+Observe(\s+\S+)?\s*$`,
		"legacy not enrolled":          `(?m)^legacy\s+Active\s+\S+\s*$`,
		"the plugin names the caller":  `Next: blocked: PlaintextTraffic\s+1\s+caller\(s\)\s+reached\s+the\s+namespace\s+in\s+plaintext\s+in\s+the\s+last\s+20s\s+\(Prometheus\s+at\s+http://127\.0\.0\.1:\d+\):\s+legacy/batch`,
		"payments went STRICT":         `Stepping from Observe to MutualTLS\.`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("%s does not show %s:\n%s", run, what, out)
		}
	}
}

// newUserEnv is the environment of a new user's shell: PATH and HOME. Variables that only say
// where this machine keeps Go's and the components' caches (never which cluster to use) are
// kept when set, so that a machine with moved caches does not rebuild the cluster's components.
func newUserEnv() []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for _, k := range []string{"GOCACHE", "GOMODCACHE", "GOPATH", "GOPROXY", "XDG_CACHE_HOME"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// copyCheckout copies the working tree as a fresh clone of it would have it (tracked files and
// new files not ignored, so uncommitted work is tested too; no bin/, no .demo/) into a temporary
// directory.
func copyCheckout(t *testing.T) string {
	t.Helper()
	list, err := exec.Command("git", "-C", repoRoot, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("listing the checkout's files with git: %v", err)
	}
	dst := filepath.Join(t.TempDir(), "meshwright")
	for _, rel := range strings.Split(strings.TrimRight(string(list), "\x00"), "\x00") {
		if err := copyFile(filepath.Join(repoRoot, rel), filepath.Join(dst, rel)); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// copyFile copies a regular file with its mode, or a symlink as a symlink; a tracked file that
// was deleted in the working tree is skipped, as a clone of the tree would not have it.
func copyFile(src, dst string) error {
	info, err := os.Lstat(src)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if info.Mode()&os.ModeSymlink != 0 {
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(target, dst)
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, info.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// trap is a kubeconfig naming a cluster on 127.0.0.1 that answers nothing and counts every
// connection made to it: the cluster a user's KUBECONFIG points at, which the demo must not use.
type trap struct {
	kubeconfig  string
	connections atomic.Int64
}

func trapCluster(t *testing.T) *trap {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	tr := &trap{kubeconfig: filepath.Join(t.TempDir(), "elsewhere.kubeconfig")}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			tr.connections.Add(1)
			conn.Close()
		}
	}()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["elsewhere"] = &clientcmdapi.Cluster{Server: "https://" + l.Addr().String(), InsecureSkipTLSVerify: true}
	cfg.AuthInfos["someone"] = &clientcmdapi.AuthInfo{Token: "not-for-the-demo"}
	cfg.Contexts["elsewhere"] = &clientcmdapi.Context{Cluster: "elsewhere", AuthInfo: "someone"}
	cfg.CurrentContext = "elsewhere"
	if err := clientcmd.WriteToFile(*cfg, tr.kubeconfig); err != nil {
		t.Fatal(err)
	}
	return tr
}

// runLogged runs a command in dir with exactly env, its output to a file (the demo leaves
// processes running that would hold a pipe open), and returns that output.
func runLogged(ctx context.Context, dir string, env []string, logPath string, name string, args ...string) (string, error) {
	log, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	defer log.Close()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env = dir, env
	cmd.Stdout, cmd.Stderr = log, log
	runErr := cmd.Run()
	out, err := os.ReadFile(logPath)
	if err != nil {
		return "", err
	}
	return string(out), runErr
}

// mustRunLogged is runLogged that fails the test with the output; what names the run.
func mustRunLogged(t *testing.T, ctx context.Context, dir string, env []string, what string, name string, args ...string) string {
	t.Helper()
	start := time.Now()
	out, err := runLogged(ctx, dir, env, filepath.Join(t.TempDir(), "run.log"), name, args...)
	if err != nil {
		t.Fatalf("%s failed after %s: %v\n%s", what, time.Since(start).Round(time.Second), err, out)
	}
	t.Logf("%s: %s", what, time.Since(start).Round(time.Second))
	return out
}

// processesUnder lists the live processes (other than this test's) whose command line or
// working directory lies under dir, as "pid command".
func processesUnder(t *testing.T, dir string) []string {
	t.Helper()
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		t.Fatal(err)
	}
	procs, err := fs.AllProcs()
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, p := range procs {
		if p.PID == os.Getpid() {
			continue
		}
		cmdline, err := p.CmdLine()
		if err != nil || len(cmdline) == 0 { // gone meanwhile, or a zombie
			continue
		}
		cwd, _ := p.Cwd()
		if strings.Contains(strings.Join(cmdline, " "), dir) || strings.HasPrefix(cwd, dir) {
			found = append(found, strconv.Itoa(p.PID)+" "+cmdline[0])
		}
	}
	return found
}

// listenersOf returns the TCP ports on which the given processes ("pid command") listen.
func listenersOf(t *testing.T, procs []string) []uint64 {
	t.Helper()
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, p := range procs {
		pid, _ := strconv.Atoi(strings.Fields(p)[0])
		proc, err := fs.Proc(pid)
		if err != nil {
			continue
		}
		targets, _ := proc.FileDescriptorTargets()
		for _, target := range targets {
			if inode, ok := strings.CutPrefix(target, "socket:["); ok {
				inodes[strings.TrimSuffix(inode, "]")] = true
			}
		}
	}
	var ports []uint64
	for _, l := range tcpListeners(t) {
		if inodes[strconv.FormatUint(l.Inode, 10)] && !slices.Contains(ports, l.LocalPort) {
			ports = append(ports, l.LocalPort)
		}
	}
	return ports
}

// stillListening returns those of ports on which something listens.
func stillListening(t *testing.T, ports []uint64) []uint64 {
	t.Helper()
	var still []uint64
	for _, l := range tcpListeners(t) {
		if slices.Contains(ports, l.LocalPort) && !slices.Contains(still, l.LocalPort) {
			still = append(still, l.LocalPort)
		}
	}
	return still
}

// tcpListeners are the machine's TCP sockets in state LISTEN, IPv4 and IPv6.
func tcpListeners(t *testing.T) procfs.NetTCP {
	t.Helper()
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		t.Fatal(err)
	}
	const listen = 0x0A // include/net/tcp_states.h: TCP_LISTEN
	var out procfs.NetTCP
	// procfs deprecates these for netlink sockets; /proc/net/tcp is what a test can read without them.
	for _, read := range []func() (procfs.NetTCP, error){fs.NetTCP, fs.NetTCP6} { //nolint:staticcheck // SA1019, as above
		socks, err := read()
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		for _, s := range socks {
			if s.St == listen {
				out = append(out, s)
			}
		}
	}
	return out
}
