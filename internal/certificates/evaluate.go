package certificates

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// CA is what the cacerts Secret holds, once checked.
type CA struct {
	NotBefore, NotAfter time.Time
}

// CheckSecret verifies that a cacerts Secret holds what istiod needs: a private key, a CA
// certificate in tls.crt, and a root in ca.crt that the CA certificate chains to.
func CheckSecret(secret *corev1.Secret, now time.Time) (CA, error) {
	for _, k := range []string{"tls.crt", "tls.key", "ca.crt"} {
		if len(secret.Data[k]) == 0 {
			return CA{}, fmt.Errorf("secret %s/%s has no %s", secret.Namespace, secret.Name, k)
		}
	}
	chain, err := parseCerts(secret.Data["tls.crt"])
	if err != nil {
		return CA{}, fmt.Errorf("tls.crt: %w", err)
	}
	roots, err := parseCerts(secret.Data["ca.crt"])
	if err != nil {
		return CA{}, fmt.Errorf("ca.crt: %w", err)
	}
	leaf := chain[0]
	if !leaf.IsCA || leaf.KeyUsage&x509.KeyUsageCertSign == 0 {
		return CA{}, errors.New("tls.crt is not a CA certificate that may sign certificates")
	}
	rootPool, interPool := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	for _, c := range chain[1:] {
		interPool.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: rootPool, Intermediates: interPool, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return CA{}, fmt.Errorf("tls.crt does not chain to ca.crt: %w", err)
	}
	return CA{NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter}, nil
}

func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}

// ExpiringSoon says whether the CA should have been renewed by now: less than a sixth of its
// lifetime is left (cert-manager renews at a third by default, so renewal is overdue).
func ExpiringSoon(ca CA, now time.Time) bool {
	life := ca.NotAfter.Sub(ca.NotBefore)
	return ca.NotAfter.Sub(now) < life/6
}
