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

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

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
		out = append(out, [2]string{net.JoinHostPort(host, strconv.FormatInt(port, 10)), host})
	}
	return out, nil
}

// errUnobservable says the serving certificate does not tell which CA istiod signs with: it
// cannot be reached, or it was not signed by istiod's CA (another PILOT_CERT_PROVIDER).
var errUnobservable = errors.New("istiod's serving certificate cannot be observed")

// istiodSigns reports whether every istiod of the installation serves a certificate signed by
// intermediate. An error wrapping errUnobservable says why that cannot be told.
func (s *Stage) istiodSigns(ctx context.Context, installation string, intermediate, previous *x509.Certificate) (bool, error) {
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
			return false, fmt.Errorf("%w: %s: %v", errUnobservable, a[0], err)
		}
		if len(chain) == 0 {
			return false, fmt.Errorf("%w: %s presented no certificate", errUnobservable, a[0])
		}
		leaf := chain[0]
		switch {
		case leaf.CheckSignatureFrom(intermediate) == nil:
			continue
		case previous != nil && leaf.CheckSignatureFrom(previous) == nil:
			return false, nil
		default:
			return false, fmt.Errorf("%w: %s serves a certificate istiod's CA did not sign (issuer %q)", errUnobservable, a[0], leaf.Issuer.String())
		}
	}
	return true, nil
}
