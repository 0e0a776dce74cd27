package framework

import (
	"crypto/x509"
	"encoding/pem"
	"testing"
)

// Certificates parses every PEM certificate of data, in order, and fails the test on one that
// does not parse.
func Certificates(t testing.TB, data []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

// Certificate is the first certificate of PEM data; the test fails when there is none.
func Certificate(t testing.TB, data []byte) *x509.Certificate {
	t.Helper()
	certs := Certificates(t, data)
	if len(certs) == 0 {
		t.Fatal("no PEM certificate")
	}
	return certs[0]
}
