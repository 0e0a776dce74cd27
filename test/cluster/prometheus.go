package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Prometheus is a real Prometheus server of the local cluster (built from the Prometheus module
// by `make cluster-bins`), scraping static targets on 127.0.0.1. The operator's traffic gates
// read Istio's metrics through Prometheus's HTTP query API, so the e2e tests give them the real
// server and its real PromQL rather than a fake that could answer what Prometheus would not.
type Prometheus struct {
	// URL is the base of its HTTP API and of /-/ready, http://127.0.0.1:PORT. It stays the
	// same across Stop and Start, as a Service's address does across a pod's restarts.
	URL string
	// Dir holds its configuration, its file_sd targets file, its data (under data/) and its log.
	Dir string

	bin      string
	port     int
	detached bool

	mu   sync.Mutex
	proc *Process
}

// ScrapeTarget is one endpoint Prometheus scrapes, as one entry of its file_sd file.
type ScrapeTarget struct {
	// Address is host:port of the endpoint, normally 127.0.0.1:PORT.
	Address string
	// Path is the metrics path; default /metrics (Istio's proxies serve /stats/prometheus).
	Path string
	// Labels are added to every series scraped from the target, unless the series carries the
	// same label itself (honor_labels, as Istio's standard scrape config does for namespace/pod).
	Labels map[string]string
}

// prometheusReadyTimeout bounds the wait for /-/ready after a start: replaying a small WAL and
// opening the TSDB take well under a second, so a minute means something is wrong.
const prometheusReadyTimeout = 60 * time.Second

// StartPrometheus writes a configuration scraping targets every second into dir, starts
// Prometheus on a free port of 127.0.0.1 with its data in dir/data and waits until it is
// ready. binDir holds the binary built by `make cluster-bins` (empty: DefaultBinDir). The
// process is killed if this process dies; Stop it when done.
func StartPrometheus(ctx context.Context, binDir, dir string, targets []ScrapeTarget) (*Prometheus, error) {
	return startPrometheus(ctx, binDir, dir, targets, false)
}

// StartPrometheus starts a Prometheus of the cluster (for `localcluster prometheus` and the
// demo) in the cluster's directory, outliving this process; `localcluster down` stops it.
func (c *Cluster) StartPrometheus(ctx context.Context, targets []ScrapeTarget) (*Prometheus, error) {
	p, err := startPrometheus(ctx, "", filepath.Join(c.Dir, "prometheus"), targets, true)
	if err != nil {
		return nil, err
	}
	c.Processes = append(c.Processes, p.proc)
	return p, c.save()
}

// startPrometheus is StartPrometheus, detached or not.
func startPrometheus(ctx context.Context, binDir, dir string, targets []ScrapeTarget, detached bool) (*Prometheus, error) {
	if binDir == "" {
		var err error
		if binDir, err = DefaultBinDir(); err != nil {
			return nil, err
		}
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("prometheus: directory %s: %w", dir, err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, fmt.Errorf("prometheus: creating its directory: %w", err)
	}
	p := &Prometheus{Dir: dir, bin: filepath.Join(binDir, "prometheus"), detached: detached}
	if err := p.SetTargets(targets); err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.configPath(), []byte(prometheusConfig(p.targetsPath())), 0o644); err != nil {
		return nil, fmt.Errorf("prometheus: writing its configuration: %w", err)
	}
	// freePort closes the port it found before Prometheus binds it, so another process can
	// take it in between: a start that fails on a taken port is tried again on a new port.
	var last error
	for attempt := 0; attempt < 3; attempt++ {
		if p.port, err = freePort(); err != nil {
			return nil, fmt.Errorf("prometheus: finding a free port: %w", err)
		}
		p.URL = "http://127.0.0.1:" + strconv.Itoa(p.port)
		if last = p.Start(ctx); last == nil {
			return p, nil
		}
		if !strings.Contains(last.Error(), "address already in use") {
			break
		}
	}
	return nil, last
}

// Start starts Prometheus again after Stop, on the same port and data directory, so that
// clients keep their URL and the samples scraped before the stop are still there. It waits
// until Prometheus is ready.
func (p *Prometheus) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc != nil && p.proc.Failed() == nil {
		return fmt.Errorf("prometheus: already running (pid %d)", p.proc.PID)
	}
	args := []string{
		"--config.file=" + p.configPath(),
		"--web.listen-address=127.0.0.1:" + strconv.Itoa(p.port),
		"--storage.tsdb.path=" + filepath.Join(p.Dir, "data"),
		// A hidden flag, default 5s: how often new targets reach the scrape loops. At 1s a
		// target is scraped about 2 s after a start or a SetTargets instead of 6.
		"--scrape.discovery-reload-interval=1s",
		"--log.level=info",
	}
	proc, err := startProcess("prometheus", p.bin, args, nil, p.Dir, p.detached)
	if err != nil {
		return err // it names the component, and says to run `make cluster-bins` if the binary is missing
	}
	p.proc = proc
	ctx, cancel := context.WithTimeout(ctx, prometheusReadyTimeout)
	defer cancel()
	ready := p.URL + "/-/ready"
	if err := poll(ctx, "prometheus to be ready", 200*time.Millisecond, []*Process{proc}, func(ctx context.Context) (bool, error) {
		return httpOK(ctx, http.DefaultClient, ready)
	}); err != nil {
		proc.stop(5*time.Second, p.Dir)
		return fmt.Errorf("prometheus at %s (log: %s): %w", p.URL, proc.Log, err)
	}
	return nil
}

// Stop stops Prometheus (SIGTERM, so it closes its TSDB cleanly; SIGKILL after 10 s) and waits
// until it has exited and its port is free. Stopping a stopped Prometheus does nothing.
func (p *Prometheus) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return
	}
	p.proc.stop(10*time.Second, p.Dir)
}

// LogPath is where Prometheus's output goes; every Start appends to it.
func (p *Prometheus) LogPath() string { return filepath.Join(p.Dir, "prometheus.log") }

// SetTargets replaces the scraped targets by rewriting the file_sd file whole (written aside,
// then renamed, so Prometheus never reads half of it). Prometheus picks it up without a restart
// and scrapes a new target within about 2 s; it works while Prometheus is stopped too.
func (p *Prometheus) SetTargets(targets []ScrapeTarget) error {
	groups := make([]fileSDGroup, 0, len(targets))
	for _, t := range targets {
		g, err := t.fileSDGroup()
		if err != nil {
			return err
		}
		groups = append(groups, g)
	}
	b, err := json.MarshalIndent(groups, "", "  ")
	if err != nil {
		return fmt.Errorf("prometheus: encoding targets: %w", err)
	}
	tmp := filepath.Join(p.Dir, ".targets.json.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("prometheus: writing targets: %w", err)
	}
	if err := os.Rename(tmp, p.targetsPath()); err != nil {
		return fmt.Errorf("prometheus: writing targets: %w", err)
	}
	return nil
}

// fileSDGroup is one entry of a file_sd file.
type fileSDGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// labelName is what Prometheus accepts as a label name everywhere (the classic charset).
var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// fileSDGroup checks the target (Prometheus would only log a bad file and keep the old
// targets) and turns it into a file_sd entry carrying its path as __metrics_path__.
func (t ScrapeTarget) fileSDGroup() (fileSDGroup, error) {
	if t.Address == "" || strings.Contains(t.Address, "/") {
		return fileSDGroup{}, fmt.Errorf("prometheus: target address %q is not host:port", t.Address)
	}
	path := t.Path
	if path == "" {
		path = "/metrics"
	}
	if !strings.HasPrefix(path, "/") {
		return fileSDGroup{}, fmt.Errorf("prometheus: target %s: metrics path %q does not start with /", t.Address, path)
	}
	labels := map[string]string{"__metrics_path__": path}
	for k, v := range t.Labels {
		if !labelName.MatchString(k) || strings.HasPrefix(k, "__") {
			return fileSDGroup{}, fmt.Errorf("prometheus: target %s: %q is not a label name a target may set", t.Address, k)
		}
		labels[k] = v
	}
	return fileSDGroup{Targets: []string{t.Address}, Labels: labels}, nil
}

func (p *Prometheus) configPath() string  { return filepath.Join(p.Dir, "prometheus.yml") }
func (p *Prometheus) targetsPath() string { return filepath.Join(p.Dir, "targets.json") }

// prometheusConfig scrapes the targets of one file_sd file every second (tests wait for
// samples, and a gate's window is seconds long there), keeping the series' own labels.
func prometheusConfig(targetsFile string) string {
	quoted, _ := json.Marshal(targetsFile) // a JSON string is a YAML string
	return `global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
storage:
  tsdb:
    retention:
      time: 2h
scrape_configs:
  - job_name: local
    honor_labels: true
    file_sd_configs:
      - files: [` + string(quoted) + `]
        refresh_interval: 1s
`
}
