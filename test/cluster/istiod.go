package cluster

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Istiod is Istio's real control plane (pilot-discovery, built from the istio.io/istio module the
// operator embeds) running as a local process against the cluster. kwok pods never run, so the
// istiod Deployment the operator installs serves nothing; this process serves the injection and
// validation webhooks instead, reached by URL (see WebhookValues).
type Istiod struct {
	// Port is the HTTPS port of the webhooks on 127.0.0.1.
	Port int
	// Dir is its working directory (its plugged-in CA files, under cacerts/).
	Dir string
	// SecureXDS is its TLS xDS and CA address (istiod's port 15012 in a cluster): where
	// pilot-agents get their certificates and configuration.
	SecureXDS string
	// Service is the name of its revision's istiod Service (istiod, istiod-<revision>): the
	// injection tells a pod's agent to reach that (CA_ADDR, discoveryAddress).
	Service string
	// HTTP is its plain HTTP address (istiod's port 8080 in a cluster), which serves /ready and
	// the debug endpoints (/debug/ambientz, ...).
	HTTP string

	proc    *Process
	cluster *Cluster

	// The CA sync (IstiodOptions.SyncCA).
	mu      sync.Mutex
	hold    bool
	history []CAChange
	stop    context.CancelFunc
	done    chan struct{}
}

// CAChange is a content of the cacerts Secret written into istiod's files.
type CAChange struct {
	At time.Time
	// Intermediate is tls.crt, the CA istiod signs with; Roots is ca.crt.
	Intermediate, Roots []byte
}

// IstiodOptions choose how istiod runs.
type IstiodOptions struct {
	// Namespace is the control plane's namespace; default istio-system.
	Namespace string
	// Port is the webhooks' HTTPS port, chosen beforehand with FreePort so that the
	// MeshInstallation's values can name it; 0 picks one.
	Port int
	// Detached lets istiod outlive this process (for `localcluster istiod`).
	Detached bool
	// Timeout bounds the wait for the cacerts Secret and for istiod to be ready; default 2 minutes.
	Timeout time.Duration
	// Revision is the control-plane revision this istiod serves (its ConfigMaps and injection
	// webhook carry the revision's name); default "default".
	Revision string
	// MultiRoot runs istiod with ISTIO_MULTIROOT_MESH=true, as the operator's charts do from
	// the first root rotation on: istiod then accepts a root bundle that grows or shrinks.
	MultiRoot bool
	// SyncCA keeps istiod's CA files in step with the cacerts Secret, as the kubelet does for a
	// mounted Secret; istiod reloads them when they change.
	SyncCA bool
	// Ambient runs istiod with ambient mode on, as the operator's charts render it with
	// spec.dataPlane.mode Ambient: PILOT_ENABLE_AMBIENT=true, trusting ztunnel's ServiceAccount
	// in ZtunnelNamespace (CA_TRUSTED_NODE_ACCOUNTS).
	Ambient          bool
	ZtunnelNamespace string
}

// suffix is what a revision adds to the names of its charts' objects.
func (o IstiodOptions) suffix() string {
	if o.Revision == "" || o.Revision == "default" {
		return ""
	}
	return "-" + o.Revision
}

// FreePort returns a free TCP port on 127.0.0.1.
func FreePort() (int, error) { return freePort() }

// WebhookValues are the istiod chart values that point its injection and validation webhooks
// at a local istiod on port: the chart's own remote-istiod settings.
func WebhookValues(port int) map[string]any {
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	return map[string]any{
		"istiodRemote": map[string]any{"injectionURL": base + "/inject"},
		"base":         map[string]any{"validationURL": base + "/validate"},
	}
}

// StartIstiod waits for the operator's cacerts Secret (istiod reads its plugged-in CA once, at
// start) and the charts' ConfigMaps, writes the CA to istiod's directory, starts pilot-discovery
// and waits until it is ready.
func (c *Cluster) StartIstiod(ctx context.Context, opts IstiodOptions) (*Istiod, error) {
	if opts.Namespace == "" {
		opts.Namespace = "istio-system"
	}
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	bin, err := DefaultBinDir()
	if err != nil {
		return nil, err
	}
	if opts.Port == 0 {
		if opts.Port, err = freePort(); err != nil {
			return nil, err
		}
	}

	kc, err := kubernetes.NewForConfig(c.RESTConfig())
	if err != nil {
		return nil, err
	}
	var ca *corev1.Secret
	if err := poll(ctx, "the cacerts Secret", 250*time.Millisecond, nil, func(ctx context.Context) (bool, error) {
		s, err := kc.CoreV1().Secrets(opts.Namespace).Get(ctx, "cacerts", metav1.GetOptions{})
		if err != nil {
			return false, client404(err)
		}
		for _, k := range []string{"tls.crt", "tls.key", "ca.crt"} {
			if len(s.Data[k]) == 0 {
				return false, nil
			}
		}
		ca = s
		return true, nil
	}); err != nil {
		return nil, err
	}

	// istiod reads the mesh config and the injection templates from the charts' ConfigMaps when
	// it starts, and runs without an injector if they are not there yet: in a cluster its pod
	// would not start before the ConfigMaps it mounts exist either.
	for _, name := range []string{"istio" + opts.suffix(), "istio-sidecar-injector" + opts.suffix()} {
		if err := poll(ctx, "ConfigMap "+name, 250*time.Millisecond, nil, func(ctx context.Context) (bool, error) {
			_, err := kc.CoreV1().ConfigMaps(opts.Namespace).Get(ctx, name, metav1.GetOptions{})
			return err == nil, client404(err)
		}); err != nil {
			return nil, err
		}
	}

	dir := filepath.Join(c.Dir, fmt.Sprintf("istiod-%d", opts.Port))
	caDir := filepath.Join(dir, "cacerts")
	if err := os.MkdirAll(caDir, 0o700); err != nil {
		return nil, err
	}
	if err := writeCAFiles(caDir, ca.Data); err != nil {
		return nil, err
	}
	// freePort closes the port it found before istiod binds it, so another process can take
	// it in between: a start that fails on a taken port is tried again with new ports (the
	// webhook port is the caller's and stays).
	var last error
	for attempt := 0; attempt < 3; attempt++ {
		ist, err := c.startIstiodOnce(ctx, opts, bin, dir, caDir)
		if err == nil {
			ist.history = []CAChange{{At: time.Now(), Intermediate: ca.Data["tls.crt"], Roots: ca.Data["ca.crt"]}}
			if opts.SyncCA {
				ist.syncCA(kc, opts.Namespace, caDir, ca.Data)
			}
			return ist, c.save()
		}
		last = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, last
}

// startIstiodOnce starts pilot-discovery on freshly picked ports and waits until it is ready.
func (c *Cluster) startIstiodOnce(ctx context.Context, opts IstiodOptions, bin, dir, caDir string) (*Istiod, error) {
	ports := make([]int, 0, 5)
	for len(ports) < 5 {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		if p != opts.Port && !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	httpPort, grpcPort, secureGRPCPort, monitoringPort, ctrlzPort := ports[0], ports[1], ports[2], ports[3], ports[4]
	loop := func(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }
	args := []string{"discovery", "--kubeconfig=" + c.Kubeconfig,
		"--httpAddr=" + loop(httpPort), "--httpsAddr=" + loop(opts.Port), "--grpcAddr=" + loop(grpcPort),
		"--secureGRPCAddr=" + loop(secureGRPCPort), "--monitoringAddr=" + loop(monitoringPort),
		"--ctrlz_address=127.0.0.1", "--ctrlz_port=" + strconv.Itoa(ctrlzPort), "--log_output_level=default:info"}
	rev := opts.Revision
	if rev == "" {
		rev = "default"
	}
	env := []string{"POD_NAMESPACE=" + opts.Namespace, "POD_NAME=istiod-local" + opts.suffix(), "REVISION=" + rev, "CLUSTER_ID=Kubernetes",
		"PILOT_CERT_PROVIDER=istiod", "ISTIOD_CUSTOM_HOST=127.0.0.1", "INJECTION_WEBHOOK_CONFIG_NAME=istio-sidecar-injector" + opts.suffix(),
		"ROOT_CA_DIR=" + caDir, "KUBECONFIG=" + c.Kubeconfig}
	if opts.MultiRoot {
		env = append(env, "ISTIO_MULTIROOT_MESH=true")
	}
	if opts.Ambient {
		env = append(env, "PILOT_ENABLE_AMBIENT=true", "CA_TRUSTED_NODE_ACCOUNTS="+opts.ZtunnelNamespace+"/ztunnel")
	}
	proc, err := startProcessIn(dir, fmt.Sprintf("istiod-%d", opts.Port), filepath.Join(bin, "pilot-discovery"), args, env,
		filepath.Join(c.Dir, "logs"), opts.Detached)
	if err != nil {
		return nil, err
	}
	ist := &Istiod{Port: opts.Port, Dir: dir, SecureXDS: loop(secureGRPCPort), Service: "istiod" + opts.suffix(), HTTP: "http://" + loop(httpPort), proc: proc, cluster: c}
	c.Processes = append(c.Processes, proc)
	ready := "http://" + loop(httpPort) + "/ready"
	if err := poll(ctx, "istiod to be ready", 250*time.Millisecond, []*Process{proc}, func(ctx context.Context) (bool, error) {
		return httpOK(ctx, http.DefaultClient, ready)
	}); err != nil {
		ist.Stop()
		return nil, err
	}
	return ist, nil
}

// writeCAFiles writes a CA into istiod's directory, each file replaced whole (written aside,
// then renamed), the key first: a reload never reads half a file.
func writeCAFiles(dir string, data map[string][]byte) error {
	for _, k := range []string{"tls.key", "tls.crt", "ca.crt"} {
		tmp := filepath.Join(dir, "."+k+".tmp")
		if err := os.WriteFile(tmp, data[k], 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, k)); err != nil {
			return err
		}
	}
	return nil
}

// syncCA copies the cacerts Secret into istiod's files whenever it changes, unless held.
func (i *Istiod) syncCA(kc kubernetes.Interface, namespace, dir string, written map[string][]byte) {
	ctx, cancel := context.WithCancel(context.Background())
	i.stop, i.done = cancel, make(chan struct{})
	go func() {
		defer close(i.done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			i.mu.Lock()
			held := i.hold
			i.mu.Unlock()
			if held {
				continue
			}
			s, err := kc.CoreV1().Secrets(namespace).Get(ctx, "cacerts", metav1.GetOptions{})
			if err != nil || len(s.Data["tls.crt"]) == 0 || len(s.Data["tls.key"]) == 0 || len(s.Data["ca.crt"]) == 0 {
				continue
			}
			same := true
			for _, k := range []string{"tls.key", "tls.crt", "ca.crt"} {
				same = same && string(s.Data[k]) == string(written[k])
			}
			if same {
				continue
			}
			if err := writeCAFiles(dir, s.Data); err != nil {
				continue
			}
			written = s.Data
			i.mu.Lock()
			i.history = append(i.history, CAChange{At: time.Now(), Intermediate: s.Data["tls.crt"], Roots: s.Data["ca.crt"]})
			i.mu.Unlock()
		}
	}()
}

// HoldCA stops (true) or resumes (false) copying cacerts into istiod's files: the kubelet
// takes up to a minute or two to update a mounted Secret, and a test plays that delay.
func (i *Istiod) HoldCA(hold bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.hold = hold
}

// CAHistory is every CA istiod's files held, oldest first, with when they were written.
func (i *Istiod) CAHistory() []CAChange {
	i.mu.Lock()
	defer i.mu.Unlock()
	return slices.Clone(i.history)
}

// Stop stops istiod. Its webhooks fail closed for pods: remove the MeshInstallation (and with it
// the webhook configurations) first when the cluster lives on.
func (i *Istiod) Stop() {
	if i.stop != nil {
		i.stop()
		<-i.done
		i.stop = nil
	}
	i.proc.stop(10*time.Second, i.cluster.Dir)
	i.cluster.Processes = slices.DeleteFunc(i.cluster.Processes, func(p *Process) bool { return p == i.proc })
	_ = i.cluster.save()
}

// LogPath is where istiod's output goes.
func (i *Istiod) LogPath() string { return i.proc.Log }
