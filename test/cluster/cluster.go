// Package cluster runs a real local Kubernetes cluster made of processes built from Go modules:
// etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok (simulated nodes and pod
// lifecycle) and the real cert-manager controller. The end-to-end tests and `make demo` use it
// where other projects would use kind, which needs a container engine this machine lacks.
//
// Every listener binds 127.0.0.1 on a free port and every key is generated at start, so several
// clusters can run side by side and nothing secret is on disk outside the cluster's directory.
package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const (
	serviceCIDR = "10.0.0.0/24"
	serviceIP   = "10.0.0.1"
	// KwokNodeAnnotation marks the nodes kwok simulates; the harness creates its nodes with it.
	KwokNodeAnnotation = "kwok.x-k8s.io/node"
	// CertManagerNamespace holds the Secrets of cert-manager's ClusterIssuers.
	CertManagerNamespace = "cert-manager"
	fieldManager         = "meshwright-local-cluster"
	stateFile            = "cluster.json"
)

// Options choose what the cluster runs.
type Options struct {
	// BinDir holds the component binaries; default $MESHWRIGHT_BIN_DIR, else the repository's bin/.
	BinDir string
	// Dir holds the cluster's PKI, data, logs and kubeconfig; default a new temporary directory,
	// removed by Stop.
	Dir string
	// Detached lets the components outlive this process (for `localcluster up`); otherwise they
	// are killed when it dies.
	Detached bool
	// WithoutCertManager leaves cert-manager (CRDs and controller) out, for tests of how the
	// operator behaves without it.
	WithoutCertManager bool
	// Nodes is the number of kwok nodes; default 1.
	Nodes int
	// KubeletVersion is the kubelet version the nodes report (status.nodeInfo, which kwok keeps
	// when set); default kwok's own version ("kwok-v0.8.0"), which is no Kubernetes version.
	// Istio's injector reads it to choose native sidecars (every node 1.33 or later).
	KubeletVersion string
	// Timeout bounds the whole start; default 3 minutes.
	Timeout time.Duration
}

// Cluster is a running local cluster.
type Cluster struct {
	// Dir is the cluster's directory.
	Dir string `json:"dir"`
	// Kubeconfig is the path of an admin kubeconfig for the cluster.
	Kubeconfig string `json:"kubeconfig"`
	// Server is the apiserver's URL.
	Server string `json:"server"`
	// Processes are the running components, in start order.
	Processes []*Process `json:"processes"`

	removeDir bool
	restCfg   *rest.Config
}

// Start starts a cluster and returns when every component is ready: the apiserver serves,
// nodes are Ready, the default ServiceAccount exists, cert-manager's CRDs are Established.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	c := &Cluster{}
	if err := c.start(ctx, opts); err != nil {
		// Whatever did start is stopped: a failed start leaves no process behind.
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) start(ctx context.Context, opts Options) (err error) {
	if opts.Nodes == 0 {
		opts.Nodes = 1
	}
	if opts.Timeout == 0 {
		opts.Timeout = 3 * time.Minute
	}
	if opts.BinDir == "" {
		opts.BinDir, err = DefaultBinDir()
		if err != nil {
			return err
		}
	}
	if opts.Dir == "" {
		if opts.Dir, err = os.MkdirTemp("", "meshwright-cluster-"); err != nil {
			return err
		}
		c.removeDir = !opts.Detached
	}
	if c.Dir, err = filepath.Abs(opts.Dir); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()

	logDir := filepath.Join(c.Dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	p, err := newPKI(filepath.Join(c.Dir, "pki"))
	if err != nil {
		return fmt.Errorf("generating PKI: %w", err)
	}
	bin := func(name string) string { return filepath.Join(opts.BinDir, name) }
	start := func(name string, args ...string) (*Process, error) {
		proc, err := startProcess(name, bin(name), args, nil, logDir, opts.Detached)
		if err != nil {
			return nil, err
		}
		c.Processes = append(c.Processes, proc)
		return proc, c.save()
	}

	// etcd
	clientPort, err := freePort()
	if err != nil {
		return err
	}
	peerPort, err := freePort()
	if err != nil {
		return err
	}
	// Every start is a new cluster: data an earlier one left in the directory goes.
	if err := os.RemoveAll(filepath.Join(c.Dir, "etcd")); err != nil {
		return err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	etcd, err := start("etcd",
		"--name=default",
		"--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL,
		"--unsafe-no-fsync", "--log-level=warn",
	)
	if err != nil {
		return err
	}
	if err := poll(ctx, "etcd", 100*time.Millisecond, []*Process{etcd}, func(ctx context.Context) (bool, error) {
		return httpOK(ctx, http.DefaultClient, etcdURL+"/health")
	}); err != nil {
		return err
	}

	// kube-apiserver
	apiPort, err := freePort()
	if err != nil {
		return err
	}
	c.Server = "https://127.0.0.1:" + strconv.Itoa(apiPort)
	apiserver, err := start("kube-apiserver",
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(apiPort),
		// Advertising 127.0.0.1 is refused unless the endpoint reconciler is off.
		"--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
		"--cert-dir="+filepath.Join(c.Dir, "apiserver"),
		"--tls-cert-file="+p.servingCert, "--tls-private-key-file="+p.servingKey,
		"--client-ca-file="+p.caCert,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p.saPub, "--service-account-signing-key-file="+p.saKey,
		"--service-cluster-ip-range="+serviceCIDR,
		"--authorization-mode=RBAC", "--allow-privileged=true", "--profiling=false",
	)
	if err != nil {
		return err
	}
	if err := c.writeKubeconfig(p); err != nil {
		return err
	}
	httpc, err := adminHTTPClient(p)
	if err != nil {
		return err
	}
	if err := poll(ctx, "kube-apiserver", 200*time.Millisecond, []*Process{etcd, apiserver}, func(ctx context.Context) (bool, error) {
		return httpOK(ctx, httpc, c.Server+"/readyz")
	}); err != nil {
		return err
	}
	kc, err := kubernetes.NewForConfig(c.RESTConfig())
	if err != nil {
		return err
	}

	// Controllers, scheduler and kwok.
	kcm, err := start("kube-controller-manager",
		"--kubeconfig="+c.Kubeconfig,
		"--bind-address=127.0.0.1", "--secure-port=0",
		"--leader-elect=false",
		"--service-account-private-key-file="+p.saKey, "--root-ca-file="+p.caCert,
		"--cluster-signing-cert-file="+p.caCert, "--cluster-signing-key-file="+p.caKey,
		"--use-service-account-credentials",
	)
	if err != nil {
		return err
	}
	sched, err := start("kube-scheduler",
		"--kubeconfig="+c.Kubeconfig, "--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false",
	)
	if err != nil {
		return err
	}
	kwokCfg := filepath.Join(c.Dir, "kwok.yaml")
	if err := os.WriteFile(kwokCfg, []byte(kwokConfiguration), 0o644); err != nil {
		return err
	}
	kwok, err := start("kwok", "--kubeconfig="+c.Kubeconfig, "--config="+kwokCfg)
	if err != nil {
		return err
	}
	watched := []*Process{etcd, apiserver, kcm, sched, kwok}

	if !opts.WithoutCertManager {
		cm, err := c.startCertManager(ctx, opts.BinDir, logDir, opts.Detached)
		if err != nil {
			return err
		}
		watched = append(watched, cm)
	}

	for i := range opts.Nodes {
		if err := createKwokNode(ctx, kc, fmt.Sprintf("kwok-node-%d", i), opts.KubeletVersion); err != nil {
			return err
		}
	}
	if err := poll(ctx, "kwok nodes to be Ready", 200*time.Millisecond, watched, func(ctx context.Context) (bool, error) {
		nodes, err := kc.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		ready := 0
		for _, n := range nodes.Items {
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		return ready >= opts.Nodes, nil
	}); err != nil {
		return err
	}
	// Pods cannot be created in a namespace before its default ServiceAccount exists.
	if err := poll(ctx, "the default ServiceAccount", 200*time.Millisecond, watched, func(ctx context.Context) (bool, error) {
		_, err := kc.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, client404(err)
	}); err != nil {
		return err
	}
	return c.save()
}

// StartCertManager installs cert-manager's CRDs and starts its controller in a cluster started
// without it, as a user installing cert-manager after the operator would.
func (c *Cluster) StartCertManager(ctx context.Context) error {
	bin, err := DefaultBinDir()
	if err != nil {
		return err
	}
	_, err = c.startCertManager(ctx, bin, filepath.Join(c.Dir, "logs"), false)
	return err
}

// startCertManager applies the CRDs first (the controller's informers need them), then starts
// the controller.
func (c *Cluster) startCertManager(ctx context.Context, binDir, logDir string, detached bool) (*Process, error) {
	kc, err := kubernetes.NewForConfig(c.RESTConfig())
	if err != nil {
		return nil, err
	}
	if err := ensureNamespace(ctx, kc, CertManagerNamespace); err != nil {
		return nil, err
	}
	if err := c.applyCRDDir(ctx, filepath.Join(binDir, "cert-manager-crds"), "cluster-bins"); err != nil {
		return nil, err
	}
	proc, err := startProcess("certmanager", filepath.Join(binDir, "certmanager"),
		[]string{"--kubeconfig=" + c.Kubeconfig, "--cluster-resource-namespace=" + CertManagerNamespace}, nil, logDir, detached)
	if err != nil {
		return nil, err
	}
	c.Processes = append(c.Processes, proc)
	return proc, c.save()
}

// applyCRDDir applies the CRDs a component build copied into dir (see hack/build-component.sh's
// assets); makeTarget is the make target that builds them, for the error when they are missing.
func (c *Cluster) applyCRDDir(ctx context.Context, dir, makeTarget string) error {
	crds, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(crds) == 0 {
		return fmt.Errorf("no CRDs under %s (run `make %s`)", dir, makeTarget)
	}
	if err := ApplyFiles(ctx, c.RESTConfig(), crds...); err != nil {
		return fmt.Errorf("installing the CRDs of %s: %w", dir, err)
	}
	return nil
}

// Load reads back a cluster that `localcluster up` left running in dir.
func Load(dir string) (*Cluster, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	c := &Cluster{}
	if err := json.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(dir, stateFile), err)
	}
	return c, nil
}

// Stop stops every component, last started first, and removes a temporary directory.
func (c *Cluster) Stop() {
	for i := len(c.Processes) - 1; i >= 0; i-- {
		c.Processes[i].stop(10*time.Second, c.Dir)
	}
	c.Processes = nil
	if c.removeDir {
		_ = os.RemoveAll(c.Dir)
	} else {
		_ = os.Remove(filepath.Join(c.Dir, stateFile))
	}
}

// RESTConfig is an admin client configuration for the cluster.
func (c *Cluster) RESTConfig() *rest.Config {
	if c.restCfg == nil {
		cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
		if err != nil {
			panic(fmt.Sprintf("the harness wrote an unreadable kubeconfig %s: %v", c.Kubeconfig, err))
		}
		cfg.QPS, cfg.Burst = 200, 400
		c.restCfg = cfg
	}
	return rest.CopyConfig(c.restCfg)
}

// LogPath is the log file of a component, for tests that want to show it on failure.
func (c *Cluster) LogPath(component string) string {
	return filepath.Join(c.Dir, "logs", component+".log")
}

func (c *Cluster) save() error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.Dir, stateFile), b, 0o644)
}

func (c *Cluster) writeKubeconfig(p *pki) error {
	ca, err := os.ReadFile(p.caCert)
	if err != nil {
		return err
	}
	cert, err := os.ReadFile(p.adminCert)
	if err != nil {
		return err
	}
	key, err := os.ReadFile(p.adminKey)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["meshwright-local"] = &clientcmdapi.Cluster{Server: c.Server, CertificateAuthorityData: ca}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	cfg.Contexts["meshwright-local"] = &clientcmdapi.Context{Cluster: "meshwright-local", AuthInfo: "admin"}
	cfg.CurrentContext = "meshwright-local"
	c.Kubeconfig = filepath.Join(c.Dir, "kubeconfig")
	return clientcmd.WriteToFile(*cfg, c.Kubeconfig)
}

// KubeconfigAs writes a kubeconfig that acts as the ServiceAccount namespace/name (the admin
// impersonates it, with the groups a token of it would carry), so a process run with it has
// exactly the permissions RBAC grants that ServiceAccount. It returns the file's path.
func (c *Cluster) KubeconfigAs(namespace, name string) (string, error) {
	cfg, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		return "", err
	}
	admin := cfg.AuthInfos["admin"]
	as := *admin
	as.Impersonate = "system:serviceaccount:" + namespace + ":" + name
	as.ImpersonateGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}
	cfg.AuthInfos["as-"+name] = &as
	cfg.Contexts["as-"+name] = &clientcmdapi.Context{Cluster: "meshwright-local", AuthInfo: "as-" + name}
	cfg.CurrentContext = "as-" + name
	path := filepath.Join(c.Dir, "kubeconfig-"+namespace+"-"+name)
	return path, clientcmd.WriteToFile(*cfg, path)
}

// DefaultBinDir finds the component binaries: $MESHWRIGHT_BIN_DIR, else bin/ of the repository
// that contains the working directory.
func DefaultBinDir() (string, error) {
	if d := os.Getenv("MESHWRIGHT_BIN_DIR"); d != "" {
		return filepath.Abs(d)
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "PROJECT")); err == nil {
			return filepath.Join(dir, "bin"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the component binaries: set MESHWRIGHT_BIN_DIR or run from the repository (make cluster-bins builds them)")
		}
		dir = parent
	}
}

func adminHTTPClient(p *pki) (*http.Client, error) {
	ca, err := os.ReadFile(p.caCert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cert, err := tls.LoadX509KeyPair(p.adminCert, p.adminKey)
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}}, nil
}

func httpOK(ctx context.Context, c *http.Client, url string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return true, nil
}

func ensureNamespace(ctx context.Context, kc kubernetes.Interface, name string) error {
	_, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{FieldManager: fieldManager})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// createKwokNode registers a node for kwok to simulate: large enough for any test's pods, and
// untainted so that ordinary workloads schedule on it.
func createKwokNode(ctx context.Context, kc kubernetes.Interface, name, kubeletVersion string) error {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("64"),
		corev1.ResourceMemory: resource.MustParse("512Gi"),
		corev1.ResourcePods:   resource.MustParse("2000"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{KwokNodeAnnotation: "fake", "node.alpha.kubernetes.io/ttl": "0"},
			Labels: map[string]string{
				"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
				"type": "kwok",
			},
		},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity, NodeInfo: corev1.NodeSystemInfo{KubeletVersion: kubeletVersion}},
	}
	_, err := kc.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{FieldManager: fieldManager})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// NodeOptions describe an extra kwok node.
type NodeOptions struct {
	Name string
	// CPU and Memory are its allocatable resources ("500m", "1Gi").
	CPU, Memory string
	Labels      map[string]string
	Taints      []corev1.Taint
	// PodCIDR is the range kwok gives its pods' IPs from; empty takes kwok's default.
	PodCIDR string
}

// AddNode registers one more kwok node, for tests that need a node of a given size or with
// taints, and waits until it is Ready.
func (c *Cluster) AddNode(ctx context.Context, opts NodeOptions) error {
	kc, err := kubernetes.NewForConfig(c.RESTConfig())
	if err != nil {
		return err
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse(opts.CPU),
		corev1.ResourceMemory: resource.MustParse(opts.Memory),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	labels := map[string]string{"kubernetes.io/hostname": opts.Name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "type": "kwok"}
	for k, v := range opts.Labels {
		labels[k] = v
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: opts.Name, Labels: labels,
			Annotations: map[string]string{KwokNodeAnnotation: "fake", "node.alpha.kubernetes.io/ttl": "0"}},
		Spec:   corev1.NodeSpec{Taints: opts.Taints, PodCIDR: opts.PodCIDR},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
	}
	if _, err := kc.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{FieldManager: fieldManager}); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return poll(ctx, "node "+opts.Name+" to be Ready", 200*time.Millisecond, nil, func(ctx context.Context) (bool, error) {
		n, err := kc.CoreV1().Nodes().Get(ctx, opts.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
}

func client404(err error) error {
	if err == nil || apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// AnnotationReadyWhenServing on a pod leaves its readiness to whoever plays it (the proxyless
// runner), as a kubelet's readiness probe would: kwok runs it (phase Running, an IP) but does
// not mark it Ready. Without it kwok marks a pod Ready once scheduled, so a Deployment would
// delete its old pods before the new ones serve.
const AnnotationReadyWhenServing = "harness.meshwright.test/ready-when-serving"

// kwokConfiguration makes kwok manage only the nodes the harness creates. The parallelism
// settings must be explicit: kwok applies no defaults to a configuration file. Its stage runs
// the pods whose readiness is left to their player (AnnotationReadyWhenServing): as kwok's own
// pod-ready stage, except Ready and the containers' readiness, which it leaves false. Its
// weight makes kwok pick it over the stock stage that matches the same pods (weight 0).
const kwokConfiguration = `apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  manageNodesWithAnnotationSelector: ` + KwokNodeAnnotation + `=fake
  nodeLeaseDurationSeconds: 40
  nodeLeaseParallelism: 4
  nodePlayStageParallelism: 4
  podPlayStageParallelism: 8
  podsOnNodeSyncParallelism: 4
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-running-until-served
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  weight: 1
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.metadata.annotations["` + AnnotationReadyWhenServing + `"]'
      operator: 'In'
      values: ['true']
    - key: '.status.phase'
      operator: 'In'
      values: ['Pending']
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        type: Ready
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        type: ContainersReady
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 0
        started: true
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
      {{ $hostIPs := NodeIPsWith .spec.nodeName }}
      {{ with $hostIPs }}
      hostIP: {{ index . 0 | Quote }}
      hostIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      {{ $podIPs := PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
      {{ with $podIPs }}
      podIP: {{ index . 0 | Quote }}
      podIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      phase: Running
      startTime: {{ $now | Quote }}
`

// StartDetached starts a helper of the cluster (the traffic simulator) as a process that
// outlives this one, registered so that `localcluster down` stops it, and waits until ready
// says it serves. Its arguments must name the cluster's directory: down checks a PID's command
// line for it before killing, so that a reused PID is never someone else's process.
func (c *Cluster) StartDetached(ctx context.Context, name, bin string, args []string, ready func(context.Context) (bool, error)) error {
	proc, err := startProcess(name, bin, args, nil, filepath.Join(c.Dir, "logs"), true)
	if err != nil {
		return err
	}
	if err := poll(ctx, name+" to be ready", 200*time.Millisecond, []*Process{proc}, ready); err != nil {
		proc.stop(5*time.Second, c.Dir)
		return fmt.Errorf("%s (log: %s): %w", name, proc.Log, err)
	}
	c.Processes = append(c.Processes, proc)
	return c.save()
}
