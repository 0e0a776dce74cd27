package cluster

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestDetachedClusterListensOnLoopbackAndStopsByPID is the `localcluster up` / `down` path:
// components started detached are found again from the state file alone and stopped, and none
// of them listens anywhere but 127.0.0.1.
func TestDetachedClusterListensOnLoopbackAndStopsByPID(t *testing.T) {
	dir := t.TempDir()
	c, err := Start(context.Background(), Options{Dir: dir, Detached: true, WithoutCertManager: true})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			c.Stop()
		}
	})
	if len(c.Processes) != 5 {
		t.Fatalf("want etcd, kube-apiserver, controller-manager, scheduler and kwok, got %d processes", len(c.Processes))
	}

	listeners := 0
	for _, p := range c.Processes {
		for _, addr := range listenAddrs(t, p.PID) {
			listeners++
			if !strings.HasPrefix(addr, "127.0.0.1:") {
				t.Errorf("%s listens on %s; every listener must bind 127.0.0.1", p.Name, addr)
			}
		}
	}
	if listeners < 2 {
		t.Fatalf("found %d listeners; etcd and the apiserver at least should listen", listeners)
	}

	// `down` in another process: only the state file is known.
	loaded, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	loaded.Stop()
	stopped = true
	for _, p := range c.Processes {
		// The original handles reap the children; once reaped, the PID is gone.
		<-p.exited
		if err := syscall.Kill(p.PID, 0); err == nil {
			t.Errorf("%s (pid %d) still runs after Stop", p.Name, p.PID)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, stateFile)); !os.IsNotExist(err) {
		t.Errorf("the state file survived Stop: %v", err)
	}
}

// listenAddrs lists the TCP addresses a process listens on, from /proc.
func listenAddrs(t *testing.T, pid int) []string {
	t.Helper()
	fds, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + fd.Name())
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	var addrs []string
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] { // 0A = LISTEN
				continue
			}
			addrs = append(addrs, decodeAddr(fields[1]))
		}
		f.Close()
	}
	return addrs
}

// decodeAddr turns /proc/net/tcp's "0100007F:1F90" into "127.0.0.1:8080"; IPv6 addresses come
// back in hex, which never has the 127.0.0.1 prefix, so they fail the check as they should.
func decodeAddr(s string) string {
	hostHex, portHex, _ := strings.Cut(s, ":")
	port, _ := strconv.ParseUint(portHex, 16, 16)
	if len(hostHex) == 8 {
		var b [4]byte
		for i := range 4 {
			v, _ := strconv.ParseUint(hostHex[2*i:2*i+2], 16, 8)
			b[3-i] = byte(v)
		}
		return strconv.Itoa(int(b[0])) + "." + strconv.Itoa(int(b[1])) + "." + strconv.Itoa(int(b[2])) + "." + strconv.Itoa(int(b[3])) + ":" + strconv.FormatUint(port, 10)
	}
	return "[" + hostHex + "]:" + strconv.FormatUint(port, 10)
}

// TestFailedStartSaysWhyAndLeavesNothing: a start that cannot work returns an error that says
// what to do, and stops what it had started.
func TestFailedStartSaysWhyAndLeavesNothing(t *testing.T) {
	_, err := Start(context.Background(), Options{BinDir: t.TempDir(), Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "make cluster-bins") {
		t.Fatalf("want an error that points at `make cluster-bins`, got %v", err)
	}
}
