package certificates

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=list
// +kubebuilder:rbac:groups="",resources=services,verbs=get

// istiod signs its own serving certificate (the webhooks' and XDS's) with the CA it loaded
// from cacerts, and signs it again when it reloads cacerts. The certificate it serves is
// therefore the one outside sign that istiod signs workload certificates with a new
// intermediate: a rotation restarts workloads only after it has seen that.

// ServingChain returns the certificates a TLS server presents. Only the chain is read: nothing
// is sent, and the server is not trusted for anything.
type ServingChain func(ctx context.Context, address, serverName string) ([]*x509.Certificate, error)

// DialServingChain is the ServingChain of a real TLS handshake.
func DialServingChain(ctx context.Context, address, serverName string) ([]*x509.Certificate, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 3 * time.Second},
		// Reading the chain is the point; verifying it would need the very root being rotated.
		Config: &tls.Config{ServerName: serverName, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}} //nolint:gosec // only the presented chain is read
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", address)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates, nil
}

// istiodAddresses are where the installation's istiods serve their injection webhooks: one per
// revision, read from the webhook configurations the operator applied.
func (s *Stage) istiodAddresses(ctx context.Context, installation string) ([][2]string, error) {
	list := &unstructured.UnstructuredList{}
	list.SetAPIVersion("admissionregistration.k8s.io/v1")
	list.SetKind("MutatingWebhookConfigurationList")
	if err := s.Client.List(ctx, list, client.MatchingLabels{meshv1.LabelInstallation: installation}); err != nil {
		return nil, fmt.Errorf("listing the injection webhooks: %w", err)
	}
	var out [][2]string
	for _, w := range list.Items {
		hooks, _, _ := unstructured.NestedSlice(w.Object, "webhooks")
		if len(hooks) == 0 || !strings.HasPrefix(w.GetName(), "istio-sidecar-injector") {
			continue
		}
		hook, _ := hooks[0].(map[string]any)
		cc, _ := hook["clientConfig"].(map[string]any)
		if raw, _ := cc["url"].(string); raw != "" {
			u, err := url.Parse(raw)
			if err != nil {
				continue
			}
			port := u.Port()
			if port == "" {
				port = "443"
			}
			out = append(out, [2]string{net.JoinHostPort(u.Hostname(), port), u.Hostname()})
			continue
		}
		svc, _ := cc["service"].(map[string]any)
		name, _ := svc["name"].(string)
		ns, _ := svc["namespace"].(string)
		if name == "" || ns == "" {
			continue
		}
		port := int64(443)
		if p, ok := svc["port"].(int64); ok && p > 0 {
			port = p
		}
		host := name + "." + ns + ".svc"
		// Every replica reloads cacerts on its own (its kubelet updates its mount): each is
		// asked, not whichever one the Service picks.
		pods, err := s.endpoints(ctx, ns, name, port)
		if err != nil || len(pods) == 0 {
			out = append(out, [2]string{net.JoinHostPort(host, strconv.FormatInt(port, 10)), host})
			continue
		}
		for _, a := range pods {
			out = append(out, [2]string{a, host})
		}
	}
	return out, nil
}

// endpoints are the addresses of the ready pods behind a Service's port, from its
// EndpointSlices (read from the API server: only while a rotation waits on istiod).
func (s *Stage) endpoints(ctx context.Context, ns, name string, port int64) ([]string, error) {
	if s.Reader == nil {
		return nil, nil
	}
	svc := &corev1.Service{}
	if err := s.Reader.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, svc); err != nil {
		return nil, err
	}
	var portName string
	found := false
	for _, p := range svc.Spec.Ports {
		if int64(p.Port) == port {
			portName, found = p.Name, true
		}
	}
	if !found {
		return nil, nil
	}
	slices := &discoveryv1.EndpointSliceList{}
	if err := s.Reader.List(ctx, slices, client.InNamespace(ns), client.MatchingLabels{discoveryv1.LabelServiceName: name}); err != nil {
		return nil, err
	}
	var out []string
	for _, sl := range slices.Items {
		var target int32
		for _, p := range sl.Ports {
			if p.Port != nil && ptr.Deref(p.Name, "") == portName {
				target = *p.Port
			}
		}
		if target == 0 {
			continue
		}
		for _, e := range sl.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, a := range e.Addresses {
				out = append(out, net.JoinHostPort(a, strconv.Itoa(int(target))))
			}
		}
	}
	return out, nil
}

// errUnobservable says the serving certificate does not tell which CA istiod signs with: it
// cannot be reached, or it was not signed by istiod's CA (another PILOT_CERT_PROVIDER).
var errUnobservable = errors.New("istiod's serving certificate cannot be observed")

// istiodSigns reports whether every istiod of the installation serves a certificate signed by
// intermediate. A certificate signed by previous, or by a presented intermediate that the old
// roots verify (the old intermediate renewed meanwhile), means not yet. An error wrapping
// errUnobservable says why that cannot be told.
func (s *Stage) istiodSigns(ctx context.Context, installation string, intermediate, previous *x509.Certificate, oldRoots Bundle) (bool, error) {
	addrs, err := s.istiodAddresses(ctx, installation)
	if err != nil {
		return false, err
	}
	if len(addrs) == 0 {
		return false, fmt.Errorf("%w: no injection webhook names an istiod", errUnobservable)
	}
	chainOf := s.Serving
	if chainOf == nil {
		chainOf = DialServingChain
	}
	for _, a := range addrs {
		chain, err := chainOf(ctx, a[0], a[1])
		if err != nil {
			return false, fmt.Errorf("%w: %s: %w", errUnobservable, a[0], err)
		}
		if len(chain) == 0 || chain[0] == nil {
			return false, fmt.Errorf("%w: %s presented no certificate", errUnobservable, a[0])
		}
		leaf := chain[0]
		switch {
		case leaf.CheckSignatureFrom(intermediate) == nil:
			continue
		case signedByOld(leaf, chain[1:], previous, oldRoots):
			return false, nil
		default:
			return false, fmt.Errorf("%w: %s serves a certificate istiod's CA did not sign (issuer %q)", errUnobservable, a[0], leaf.Issuer.String())
		}
	}
	return true, nil
}

// signedByOld reports whether leaf was signed by the old intermediate: the one recorded, or one
// its server presents that chains to the old roots.
func signedByOld(leaf *x509.Certificate, presented []*x509.Certificate, previous *x509.Certificate, oldRoots Bundle) bool {
	if previous != nil && leaf.CheckSignatureFrom(previous) == nil {
		return true
	}
	pool := x509.NewCertPool()
	for _, r := range oldRoots {
		if c, err := x509.ParseCertificate(r.Bytes); err == nil {
			pool.AddCert(c)
		}
	}
	for _, c := range presented {
		if leaf.CheckSignatureFrom(c) != nil {
			continue
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
			return true
		}
	}
	return false
}

// istiods reads the installation's istiod Deployments from the cache: how many replicas run at
// most, and which are not yet rolled out with ISTIO_MULTIROOT_MESH=true (they would refuse a
// root bundle that changes).
func (s *Stage) istiods(ctx context.Context, installation string) (int64, []string, error) {
	list := &unstructured.UnstructuredList{}
	list.SetAPIVersion("apps/v1")
	list.SetKind("DeploymentList")
	if err := s.Client.List(ctx, list, client.MatchingLabels{meshv1.LabelInstallation: installation}); err != nil {
		return 0, nil, fmt.Errorf("listing istiod's Deployments: %w", err)
	}
	var most int64
	var pending []string
	for _, d := range list.Items {
		if !strings.HasPrefix(d.GetName(), "istiod") {
			continue
		}
		replicas, _, _ := unstructured.NestedInt64(d.Object, "status", "replicas")
		most = max(most, replicas)
		if !multiRootEnv(&d) || !rolledOut(&d) {
			pending = append(pending, d.GetNamespace()+"/"+d.GetName())
		}
	}
	return most, pending, nil
}

func multiRootEnv(d *unstructured.Unstructured) bool {
	containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	for _, c := range containers {
		cm, _ := c.(map[string]any)
		env, _ := cm["env"].([]any)
		for _, e := range env {
			em, _ := e.(map[string]any)
			if em["name"] == "ISTIO_MULTIROOT_MESH" && em["value"] == "true" {
				return true
			}
		}
	}
	return false
}

func rolledOut(d *unstructured.Unstructured) bool {
	gen := d.GetGeneration()
	observed, _, _ := unstructured.NestedInt64(d.Object, "status", "observedGeneration")
	want, found, _ := unstructured.NestedInt64(d.Object, "spec", "replicas")
	if !found {
		want = 1
	}
	updated, _, _ := unstructured.NestedInt64(d.Object, "status", "updatedReplicas")
	available, _, _ := unstructured.NestedInt64(d.Object, "status", "availableReplicas")
	total, _, _ := unstructured.NestedInt64(d.Object, "status", "replicas")
	return observed >= gen && updated == want && available == want && total == want
}

// loadState is what the operator last found of istiod and one intermediate.
type loadState struct {
	loaded    bool      // istiod serves a certificate it signed
	checkedAt time.Time // when it could not be told, to ask again a minute later
}

// unobservableRecheck is how soon an istiod whose serving certificate could not be read is
// asked again.
const unobservableRecheck = time.Minute

// istiodLoaded checks, once per intermediate, that istiod signs with the intermediate cacerts
// holds: cert-manager renews it, the kubelet updates istiod's mount, istiod reloads it, and the
// operator is the one who can tell that the chain did not break. It returns a message when
// istiod still signs with another intermediate grace after this one was issued, and when to
// look again. Once seen loaded, an intermediate costs nothing more.
func (s *Stage) istiodLoaded(ctx context.Context, installation string, secret *corev1.Secret, grace time.Duration, now time.Time) (string, time.Duration, error) {
	inter, err := firstCert(secret.Data["tls.crt"])
	if err != nil {
		return "", 0, nil // CheckSecret reports a broken CA
	}
	key := installation + "/" + string(inter.Signature)
	s.loadMu.Lock()
	st, seen := s.loads[key]
	previous := s.lastLoaded[installation]
	s.loadMu.Unlock()
	if seen && (st.loaded || now.Sub(st.checkedAt) < unobservableRecheck) {
		return "", 0, nil
	}
	addrs, err := s.istiodAddresses(ctx, installation)
	if err != nil {
		return "", 0, err
	}
	if len(addrs) == 0 {
		return "", 0, nil // no istiod yet: the webhook's arrival brings another pass
	}
	ok, err := s.istiodSigns(ctx, installation, inter, previous, ParseBundle(secret.Data["ca.crt"]))
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	if s.loads == nil || len(s.loads) > 64 {
		s.loads, s.lastLoaded = map[string]loadState{}, map[string]*x509.Certificate{}
	}
	switch {
	case errors.Is(err, errUnobservable):
		log.FromContext(ctx).V(1).Info("cannot tell which intermediate istiod signs with", "reason", err.Error())
		s.loads[key] = loadState{checkedAt: now}
		return "", unobservableRecheck, nil
	case err != nil:
		return "", 0, err
	case ok:
		s.loads[key] = loadState{loaded: true}
		s.lastLoaded[installation] = inter
		return "", 0, nil
	}
	if waited := now.Sub(inter.NotBefore); waited < grace {
		return "", grace - waited + time.Second, nil
	}
	return fmt.Sprintf("istiod still signs with an intermediate other than the one in %s/%s (issued %s): it has not reloaded the renewed CA, so the certificates it issues will expire with the old one. "+
		"Check that istiod's cacerts mount is updated (kubectl exec into istiod and look at /etc/cacerts), or restart it: kubectl rollout restart deployment -n %s -l app=istiod.",
		secret.Namespace, CASecret, inter.NotBefore.UTC().Format(time.RFC3339), secret.Namespace), rotationRecheck, nil
}
