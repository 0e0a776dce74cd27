package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr/funcr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/trafficsim"
)

// trafficAddrFile, in the cluster's directory, holds the traffic simulator's host:port.
const trafficAddrFile = "traffic.addr"

// startTraffic starts the traffic simulator as a process of the cluster (`traffic-serve`, which
// `down` stops) and prints the operator's --proxy-stats-url that reads each pod's simulated
// stats from it.
func startTraffic(abs, flowsFile string) error {
	c, err := cluster.Load(abs)
	if err != nil {
		return fmt.Errorf("no local cluster running in %s: %w", abs, err)
	}
	if flowsFile != "" {
		if _, err := readFlows(flowsFile); err != nil {
			return err
		}
		if flowsFile, err = filepath.Abs(flowsFile); err != nil {
			return err
		}
	}
	port, err := cluster.FreePort()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	args := []string{"traffic-serve", "--dir", abs, "--listen", addr, "--flows", flowsFile}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.StartDetached(ctx, "traffic-simulator", self, args, func(ctx context.Context) (bool, error) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false, nil //nolint:nilerr // not serving yet: poll again
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	}); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(abs, trafficAddrFile), []byte(addr), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "traffic simulator serves on %s (log: %s)\n", addr, c.LogPath("traffic-simulator"))
	fmt.Printf("http://%s/pods/{namespace}/{name}/stats/prometheus\n", addr)
	return nil
}

// serveTraffic runs the traffic simulator against the cluster in the foreground until SIGTERM:
// its series for Prometheus at /metrics, each simulated pod's own at /pods/….
func serveTraffic(abs, listen, flowsFile string) error {
	c, err := cluster.Load(abs)
	if err != nil {
		return err
	}
	k8s, err := client.New(c.RESTConfig(), client.Options{Scheme: clientgoscheme.Scheme})
	if err != nil {
		return err
	}
	var flows []trafficsim.Flow
	if flowsFile != "" {
		if flows, err = readFlows(flowsFile); err != nil {
			return err
		}
	}
	log := funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{})
	// RefusedStat: the operator installs its revisions with the stats matcher that exports it.
	sim := trafficsim.New(k8s, trafficsim.Options{Log: log, RefusedStat: true})
	sim.SetFlows(flows)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", sim.Handler())
	mux.Handle("GET /pods/", sim.PodsHandler())
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	sim.Run(ctx, time.Second)
	return srv.Close()
}

// readFlows reads a JSON list of trafficsim.Flow, such as
// [{"From":{"Namespace":"storefront","Name":"web"},"To":{"Namespace":"payments","Name":"web"},"Port":8080,"Protocol":"HTTP","PerSecond":5}].
func readFlows(path string) ([]trafficsim.Flow, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var flows []trafficsim.Flow
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&flows); err != nil {
		return nil, fmt.Errorf("%s: not a JSON list of flows: %w", path, err)
	}
	return flows, nil
}

// startPrometheus starts a Prometheus of the cluster scraping the traffic simulator, and prints
// its URL (for spec.telemetry.prometheus.url).
func startPrometheus(abs string) error {
	c, err := cluster.Load(abs)
	if err != nil {
		return fmt.Errorf("no local cluster running in %s: %w", abs, err)
	}
	addr, err := os.ReadFile(filepath.Join(abs, trafficAddrFile))
	if err != nil {
		return fmt.Errorf("no traffic simulator in %s to scrape: run `localcluster traffic` first: %w", abs, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := c.StartPrometheus(ctx, []cluster.ScrapeTarget{{Address: strings.TrimSpace(string(addr)), Path: "/metrics"}})
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "Prometheus serves on %s, scraping the traffic simulator (log: %s)\n", p.URL, p.LogPath())
	fmt.Println(p.URL)
	return nil
}
