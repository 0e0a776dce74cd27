package proxyless

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/meshwright/meshwright/internal/revision"
	"github.com/meshwright/meshwright/test/cluster"
)

// The agent's default paths are relative to its working directory (a pod's root in a cluster):
// the ServiceAccount token istiod's CA authenticates it with, the mesh's root certificate (the
// istio-ca-root-cert ConfigMap, mounted), and the gRPC bootstrap it writes for the application.
const (
	tokenPath     = "var/run/secrets/tokens/istio-token" //nolint:gosec // G101: a path, not a credential
	rootCertPath  = "var/run/secrets/istio/root-cert.pem"
	bootstrapPath = "etc/istio/proxy/grpc-bootstrap.json"
	// CertsDir is where, under a pod's directory, the agent writes the workload's certificate
	// (cert-chain.pem, key.pem, root-cert.pem), so tests can check what it chains to.
	CertsDir = "certs"
)

// startAgent starts Istio's pilot-agent for a pod injected with the grpc-agent template, with
// the environment that template gives it, and waits until it has written the application's
// gRPC bootstrap and the workload's certificate files: gRPC's file_watcher reads them when it
// first needs them and, if they are missing, not again before its refresh interval (15 min).
func (r *Runner) startAgent(ctx context.Context, p *corev1.Pod, w *workloadPod) (*cluster.Process, string, error) {
	dir := w.dir
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr, err := r.kc.CoreV1().ServiceAccounts(p.Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{"istio-ca"}, ExpirationSeconds: ptr.To[int64](24 * 3600),
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("requesting a token for ServiceAccount %s: %w", sa, err)
	}
	ist, err := r.istiodOf(ctx, p)
	if err != nil {
		return nil, "", err
	}
	r.mu.Lock()
	w.istiod = ist.Service
	r.mu.Unlock()
	root, err := r.rootCert(ctx, p.Namespace)
	if err != nil {
		return nil, "", err
	}
	for path, data := range map[string]string{tokenPath: tr.Status.Token, rootCertPath: root} {
		if err := writeFile(filepath.Join(dir, path), data); err != nil {
			return nil, "", err
		}
	}
	// In a pod, the template mounts an emptyDir there; the agent does not create it.
	if err := os.MkdirAll(filepath.Join(dir, CertsDir), 0o700); err != nil {
		return nil, "", err
	}
	statusPort, err := cluster.FreePort()
	if err != nil {
		return nil, "", err
	}
	proxyConfig, err := json.Marshal(map[string]any{"discoveryAddress": ist.SecureXDS,
		"configPath": filepath.Join(dir, "etc/istio/proxy"), "statusPort": statusPort})
	if err != nil {
		return nil, "", err
	}
	bootstrap := filepath.Join(dir, bootstrapPath)
	env := []string{"POD_NAME=" + p.Name, "POD_NAMESPACE=" + p.Namespace, "INSTANCE_IP=" + p.Status.PodIP,
		"SERVICE_ACCOUNT=" + sa, "HOST_IP=127.0.0.1", "ISTIO_META_GENERATOR=grpc", "ISTIO_META_CLUSTER_ID=Kubernetes",
		"ISTIO_META_NODE_NAME=" + p.Spec.NodeName, "ISTIO_META_DNS_CAPTURE=false", "DISABLE_ENVOY=true",
		"PILOT_CERT_PROVIDER=istiod", "CA_ADDR=" + ist.SecureXDS, "OUTPUT_CERTS=" + filepath.Join(dir, CertsDir),
		"GRPC_XDS_BOOTSTRAP=" + bootstrap, "PROXY_CONFIG=" + string(proxyConfig)}
	agent, err := cluster.StartChild(dir, "pilot-agent", filepath.Join(r.bin, "pilot-agent"),
		[]string{"proxy", "sidecar", "--domain", p.Namespace + ".svc.cluster.local"}, env)
	if err != nil {
		return nil, "", err
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		if err := agent.Failed(); err != nil {
			return false, err
		}
		for _, f := range []string{bootstrap, filepath.Join(dir, CertsDir, "cert-chain.pem"), filepath.Join(dir, CertsDir, "key.pem"),
			filepath.Join(dir, CertsDir, "root-cert.pem")} {
			if _, err := os.Stat(f); err != nil {
				return false, nil //nolint:nilerr // not written yet: poll again
			}
		}
		return true, nil
	})
	if err != nil {
		agent.Stop(2 * time.Second)
		return agent, "", fmt.Errorf("pilot-agent wrote no gRPC bootstrap or certificate (log: %s): %w", agent.Log, err)
	}
	return agent, bootstrap, nil
}

// istiodOf is the local istiod a pod's agent reaches: the one serving the Service its
// injection named in CA_ADDR (istiod, or istiod-<revision> for a pod of a revision). A real
// agent keeps dialing that address until an istiod answers, so this waits up to a minute for
// the test to add it (Runner.AddIstiod): the operator may move a namespace to a new revision
// as soon as that revision's webhook serves, before the test has registered its istiod.
func (r *Runner) istiodOf(ctx context.Context, p *corev1.Pod) (*cluster.Istiod, error) {
	addr := ""
	for _, cs := range [][]corev1.Container{p.Spec.Containers, p.Spec.InitContainers} {
		for _, c := range cs {
			if c.Name != revision.ProxyContainer {
				continue
			}
			for _, e := range c.Env {
				if e.Name == "CA_ADDR" {
					addr = e.Value
				}
			}
		}
	}
	service, _, _ := strings.Cut(addr, ".")
	var ist *cluster.Istiod
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		ist = r.istiods[service]
		return ist != nil, nil
	})
	if err != nil {
		return nil, fmt.Errorf("its proxy was injected to reach istiod at %q, and the runner knew no istiod serving Service %q within a minute (Runner.AddIstiod): %w", addr, service, err)
	}
	return ist, nil
}

// AddIstiod lets the runner's pods reach another istiod (a revision's): those injected to reach
// its Service.
func (r *Runner) AddIstiod(ist *cluster.Istiod) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.istiods[ist.Service] = ist
}

// rootCert reads the mesh's root certificate as istiod publishes it in every namespace.
func (r *Runner) rootCert(ctx context.Context, namespace string) (string, error) {
	var root string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		cm, err := r.kc.CoreV1().ConfigMaps(namespace).Get(ctx, "istio-ca-root-cert", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		root = cm.Data["root-cert.pem"]
		return root != "", nil
	})
	if err != nil {
		return "", fmt.Errorf("reading ConfigMap %s/istio-ca-root-cert: %w", namespace, err)
	}
	return root, nil
}

// CertDir is where the agent of a running pod writes its workload certificate; empty when the
// runner does not play that pod.
func (r *Runner) CertDir(namespace, pod string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.pods {
		if w.namespace == namespace && w.name == pod {
			return filepath.Join(w.dir, CertsDir)
		}
	}
	return ""
}

func writeFile(path, data string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(data), 0o600)
}
