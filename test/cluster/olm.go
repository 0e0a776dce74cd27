package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
)

// OLMNamespace is where OLM's operators run and where global CatalogSources live, as in an
// upstream OLM install (operatorhub.io's catalog is "operatorhubio-catalog" there).
const OLMNamespace = "olm"

// olmHealthPort is the health/metrics port olm-operator and catalog-operator listen on, on every
// interface and with no flag to change it. A placeholder listener on 127.0.0.1 holds it first:
// their bind then fails, they log it and run on, and nothing listens beyond loopback.
const olmHealthPort = 8080

// OLM is Operator Lifecycle Manager (olm-operator and catalog-operator, built from OLM's Go
// module like the other components) running against the cluster with its CRDs installed.
type OLM struct {
	procs       []*Process
	placeholder net.Listener
}

// StartOLM installs OLM's CRDs and starts olm-operator and catalog-operator, watching every
// namespace, with OLMNamespace as the global catalog namespace.
func (c *Cluster) StartOLM(ctx context.Context) (*OLM, error) {
	bin, err := DefaultBinDir()
	if err != nil {
		return nil, err
	}
	if err := c.applyCRDDir(ctx, filepath.Join(bin, "olm-crds"), "olm-bins"); err != nil {
		return nil, err
	}
	kc, err := kubernetes.NewForConfig(c.RESTConfig())
	if err != nil {
		return nil, err
	}
	if err := ensureNamespace(ctx, kc, OLMNamespace); err != nil {
		return nil, err
	}
	o := &OLM{}
	o.placeholder, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", olmHealthPort))
	if err != nil && !errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("holding OLM's health port: %w", err)
	}
	// Taken already: by something else, which keeps OLM off it just as well.

	logDir := filepath.Join(c.Dir, "logs")
	env := []string{"KUBECONFIG=" + c.Kubeconfig, "OPERATOR_NAMESPACE=" + OLMNamespace}
	// --writeStatusName "": there is no ClusterOperator (OpenShift) to report to. olm-operator
	// reads its kubeconfig only from $KUBECONFIG.
	for _, p := range []struct {
		name, bin string
		args      []string
	}{
		{"olm-operator", "olm", []string{"--writePackageServerStatusName", "", "--interval", "5m"}},
		{"catalog-operator", "catalog", []string{"--kubeconfig", c.Kubeconfig}},
	} {
		proc, err := startProcess(p.name, filepath.Join(bin, p.bin),
			append([]string{"--namespace", OLMNamespace, "--writeStatusName", ""}, p.args...),
			append(env, "OPERATOR_NAME="+p.name), logDir, false)
		if err != nil {
			o.Stop()
			return nil, err
		}
		o.procs = append(o.procs, proc)
		c.Processes = append(c.Processes, proc)
	}
	// A process that dies at start (a flag it does not know, a CRD missing) is reported with its
	// log; after that, whoever uses OLM waits for what it does (a CSV's phase, a catalog's state).
	early, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := poll(early, "OLM's operators to stay up", 250*time.Millisecond, o.procs, func(context.Context) (bool, error) {
		return false, nil
	}); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		o.Stop()
		return nil, err
	}
	return o, c.save()
}

// Stop stops OLM's operators and releases the placeholder port.
func (o *OLM) Stop() {
	for _, p := range o.procs {
		p.stop(10*time.Second, "")
	}
	if o.placeholder != nil {
		_ = o.placeholder.Close()
	}
}

// LogPaths are OLM's operators' logs, for a failed test to print.
func (o *OLM) LogPaths() []string {
	var out []string
	for _, p := range o.procs {
		out = append(out, p.Log)
	}
	return out
}

// Registry serves a file-based catalog to OLM over the registry gRPC API on 127.0.0.1, as
// `opm serve` does in a catalog pod (see test/tools/registry).
type Registry struct {
	// Addr is host:port, for a CatalogSource's spec.address.
	Addr string
	proc *Process
}

// StartRegistry serves the file-based catalog in dir and returns once it accepts connections.
func (c *Cluster) StartRegistry(ctx context.Context, dir string) (*Registry, error) {
	bin, err := DefaultBinDir()
	if err != nil {
		return nil, err
	}
	var last error
	// freePort closes the port before the registry binds it: a start that loses the port to
	// another process is tried again on a new one.
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		proc, err := startProcess(fmt.Sprintf("registry-%d", port), filepath.Join(bin, "registry"),
			[]string{"-catalog", dir, "-addr", addr}, nil, filepath.Join(c.Dir, "logs"), false)
		if err != nil {
			return nil, err
		}
		last = poll(ctx, "the catalog registry at "+addr, 100*time.Millisecond, []*Process{proc}, func(context.Context) (bool, error) {
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return false, nil //nolint:nilerr // not listening yet: poll again
			}
			conn.Close()
			return true, nil
		})
		if last == nil {
			c.Processes = append(c.Processes, proc)
			return &Registry{Addr: addr, proc: proc}, c.save()
		}
		proc.stop(5*time.Second, "")
		if !strings.Contains(last.Error(), "address already in use") {
			break
		}
	}
	return nil, last
}

// Stop stops serving the catalog.
func (r *Registry) Stop() { r.proc.stop(5*time.Second, "") }
