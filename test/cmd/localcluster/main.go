// Command localcluster starts and stops the local cluster of package cluster from a shell:
//
//	localcluster up [--dir DIR] [--nodes N] [--without-cert-manager]   start it, print the KUBECONFIG
//	localcluster down [--dir DIR]                                       stop it
//	localcluster env [--dir DIR]                                        print `export KUBECONFIG=…`
//	localcluster istiod [--dir DIR] [--port P] [--namespace NS]         run Istio's istiod against it
//	localcluster istiod-values [--port P]                               print the chart values for it
//	localcluster free-port                                              print a free port on 127.0.0.1
//	localcluster traffic [--dir DIR] [--flows FILE]                     run the traffic simulator; print the operator's --proxy-stats-url
//	localcluster prometheus [--dir DIR]                                 run Prometheus scraping the simulator; print its URL
//
// kwok runs no containers, so no Envoy proxy reports traffic here: the traffic simulator (package
// trafficsim) stands in for them, exporting what proxies would report under the cluster's real
// policies for the flows in FILE. It is a simulator, not a data plane.
//
// The components keep running after `up` returns; `down` stops exactly the processes `up`
// started (by PID, checked against their command lines).
package main

import (
	"context"
	"encoding/json"
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
	port := fs.Int("port", 15017, "istiod: the HTTPS port of its webhooks on 127.0.0.1")
	namespace := fs.String("namespace", "istio-system", "istiod: the control plane's namespace")
	flows := fs.String("flows", "", "traffic: a JSON list of flows for the traffic simulator")
	listen := fs.String("listen", "", "traffic-serve: the address to serve on")
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
	case "istiod":
		// istiod needs the cacerts Secret the operator issues: this waits for it, then starts
		// istiod detached, as `up` does the cluster's components; `down` stops it too.
		c, err := cluster.Load(abs)
		if err != nil {
			fail(fmt.Errorf("no local cluster running in %s: %w", abs, err))
		}
		ist, err := c.StartIstiod(context.Background(), cluster.IstiodOptions{Namespace: *namespace, Port: *port, Detached: true, Timeout: *timeout})
		if err != nil {
			fail(err)
		}
		fmt.Fprintf(os.Stderr, "istiod serves its webhooks on 127.0.0.1:%d (log: %s)\n", ist.Port, ist.LogPath())
	case "free-port":
		p, err := cluster.FreePort()
		if err != nil {
			fail(err)
		}
		fmt.Println(p)
	case "istiod-values":
		b, err := json.Marshal(cluster.WebhookValues(*port))
		if err != nil {
			fail(err)
		}
		fmt.Println(string(b))
	case "traffic":
		if err := startTraffic(abs, *flows); err != nil {
			fail(err)
		}
	case "traffic-serve":
		if err := serveTraffic(abs, *listen, *flows); err != nil {
			fail(err)
		}
	case "prometheus":
		if err := startPrometheus(abs); err != nil {
			fail(err)
		}
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: localcluster up|down|env|istiod|istiod-values|free-port|traffic|prometheus [--dir DIR] [--flows FILE] [--nodes N] [--without-cert-manager] [--port P] [--namespace NS]")
	os.Exit(2)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "localcluster:", err)
	os.Exit(1)
}
