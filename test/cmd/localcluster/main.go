// Command localcluster starts and stops the local cluster of package cluster from a shell:
//
//	localcluster up [--dir DIR] [--nodes N] [--without-cert-manager]   start it, print the KUBECONFIG
//	localcluster down [--dir DIR]                                       stop it
//	localcluster env [--dir DIR]                                        print `export KUBECONFIG=…`
//
// The components keep running after `up` returns; `down` stops exactly the processes `up`
// started (by PID, checked against their command lines).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/meshwright/meshwright/test/cluster"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	dir := fs.String("dir", ".cluster", "directory of the cluster's state, logs and kubeconfig")
	nodes := fs.Int("nodes", 1, "number of kwok nodes")
	noCM := fs.Bool("without-cert-manager", false, "leave cert-manager out")
	timeout := fs.Duration("timeout", 3*time.Minute, "how long to wait for the cluster to be ready")
	_ = fs.Parse(os.Args[2:])
	abs, err := filepath.Abs(*dir)
	if err != nil {
		fail(err)
	}

	switch cmd {
	case "up":
		if c, err := cluster.Load(abs); err == nil && len(c.Processes) > 0 {
			fail(fmt.Errorf("a cluster is already running in %s: run `localcluster down --dir %s` first", abs, *dir))
		}
		if err := os.MkdirAll(abs, 0o755); err != nil {
			fail(err)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		start := time.Now()
		c, err := cluster.Start(ctx, cluster.Options{Dir: abs, Detached: true, Nodes: *nodes, WithoutCertManager: *noCM, Timeout: *timeout})
		if err != nil {
			fail(err)
		}
		fmt.Fprintf(os.Stderr, "local cluster ready in %.1fs (logs in %s)\n", time.Since(start).Seconds(), filepath.Join(abs, "logs"))
		fmt.Printf("export KUBECONFIG=%s\n", c.Kubeconfig)
	case "down":
		c, err := cluster.Load(abs)
		if err != nil {
			fmt.Fprintf(os.Stderr, "no local cluster running in %s\n", abs)
			return
		}
		c.Stop()
		fmt.Fprintf(os.Stderr, "local cluster in %s stopped\n", abs)
	case "env":
		c, err := cluster.Load(abs)
		if err != nil {
			fail(fmt.Errorf("no local cluster running in %s: %w", abs, err))
		}
		fmt.Printf("export KUBECONFIG=%s\n", c.Kubeconfig)
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: localcluster up|down|env [--dir DIR] [--nodes N] [--without-cert-manager]")
	os.Exit(2)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "localcluster:", err)
	os.Exit(1)
}
