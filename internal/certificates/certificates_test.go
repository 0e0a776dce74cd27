package certificates

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

func TestDesired(t *testing.T) {
	tests := map[string]struct {
		spec      meshv1.CertificatesSpec
		wantKinds []string
		issuer    string // kind/name of the intermediate's issuer
		keySize   any
		gen       int
	}{
		"a later root generation has names of its own, and its intermediate a Secret of its own": {
			gen:       2,
			wantKinds: []string{"Namespace", "Issuer", "Certificate", "Issuer", "Certificate"},
			issuer:    "Issuer/" + RootIssuer + "-2", keySize: int64(256),
		},
		"the user's issuer in a later generation": {
			gen:       1,
			spec:      meshv1.CertificatesSpec{IssuerRef: &meshv1.IssuerReference{Name: "corp-ca"}},
			wantKinds: []string{"Namespace", "Certificate"},
			issuer:    "ClusterIssuer/corp-ca", keySize: int64(256),
		},
		"self-signed root by default": {
			wantKinds: []string{"Namespace", "Issuer", "Certificate", "Issuer", "Certificate"},
			issuer:    "Issuer/" + RootIssuer, keySize: int64(256),
		},
		"the user's ClusterIssuer, no root": {
			spec:      meshv1.CertificatesSpec{IssuerRef: &meshv1.IssuerReference{Name: "corp-ca"}},
			wantKinds: []string{"Namespace", "Certificate"},
			issuer:    "ClusterIssuer/corp-ca", keySize: int64(256),
		},
		"RSA with cert-manager's default size": {
			spec:      meshv1.CertificatesSpec{PrivateKey: meshv1.PrivateKeySpec{Algorithm: meshv1.KeyAlgorithmRSA}},
			wantKinds: []string{"Namespace", "Issuer", "Certificate", "Issuer", "Certificate"},
			issuer:    "Issuer/" + RootIssuer, keySize: nil,
		},
		"ECDSA P-384": {
			spec:      meshv1.CertificatesSpec{PrivateKey: meshv1.PrivateKeySpec{Algorithm: meshv1.KeyAlgorithmECDSA, Size: ptr.To[int32](384)}},
			wantKinds: []string{"Namespace", "Issuer", "Certificate", "Issuer", "Certificate"},
			issuer:    "Issuer/" + RootIssuer, keySize: int64(384),
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			mesh := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1.MeshInstallationSpec{Certificates: tc.spec}}
			objs := Desired(mesh.Name, SettingsFor(mesh), tc.gen)
			var kinds []string
			for _, o := range objs {
				kinds = append(kinds, o.GetKind())
				if o.GetLabels()[meshv1.LabelInstallation] != "default" || o.GetLabels()[meshv1.LabelManagedBy] != meshv1.ManagedByValue {
					t.Errorf("%s %s lacks the operator's labels: %v", o.GetKind(), o.GetName(), o.GetLabels())
				}
			}
			if strings.Join(kinds, ",") != strings.Join(tc.wantKinds, ",") {
				t.Fatalf("kinds = %v, want %v", kinds, tc.wantKinds)
			}
			ca := objs[len(objs)-1]
			if ca.GetName() != IntermediateName(tc.gen) || ca.GetNamespace() != meshv1.DefaultControlPlaneNamespace {
				t.Fatalf("last object is %s/%s, want the intermediate Certificate", ca.GetNamespace(), ca.GetName())
			}
			kind, _, _ := unstructured.NestedString(ca.Object, "spec", "issuerRef", "kind")
			issuerName, _, _ := unstructured.NestedString(ca.Object, "spec", "issuerRef", "name")
			if kind+"/"+issuerName != tc.issuer {
				t.Fatalf("issuer = %s/%s, want %s", kind, issuerName, tc.issuer)
			}
			secret, _, _ := unstructured.NestedString(ca.Object, "spec", "secretName")
			isCA, _, _ := unstructured.NestedBool(ca.Object, "spec", "isCA")
			if secret != IntermediateSecret(tc.gen) || !isCA {
				t.Fatalf("intermediate writes %q (isCA %v), want cacerts as a CA", secret, isCA)
			}
			size, _, _ := unstructured.NestedFieldNoCopy(ca.Object, "spec", "privateKey", "size")
			if size != tc.keySize {
				t.Fatalf("key size = %v, want %v", size, tc.keySize)
			}
		})
	}
}

// pemCA makes a CA certificate signed by parent (self-signed when parent is nil).
func pemCA(t *testing.T, cn string, isCA bool, notAfter time.Time, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		IsCA: isCA, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestCheckSecret(t *testing.T) {
	now := time.Now()
	far := now.Add(365 * 24 * time.Hour)
	root, rootKey, rootPEM := pemCA(t, "root", true, far.Add(24*time.Hour), nil, nil)
	_, _, interPEM := pemCA(t, "intermediate", true, far, root, rootKey)
	_, _, leafPEM := pemCA(t, "not a CA", false, far, root, rootKey)
	_, _, otherRootPEM := pemCA(t, "other root", true, far, nil, nil)
	// A key generated here: CheckSecret only needs tls.key to be present.
	keyDER, err := x509.MarshalECPrivateKey(rootKey)
	if err != nil {
		t.Fatal(err)
	}
	key := pem.EncodeToMemory(&pem.Block{Type: "EC " + "PRIVATE KEY", Bytes: keyDER})

	tests := map[string]struct {
		data    map[string][]byte
		wantErr string
	}{
		"valid":                {data: map[string][]byte{"tls.crt": interPEM, "tls.key": key, "ca.crt": rootPEM}},
		"no key":               {data: map[string][]byte{"tls.crt": interPEM, "ca.crt": rootPEM}, wantErr: "has no tls.key"},
		"not a CA":             {data: map[string][]byte{"tls.crt": leafPEM, "tls.key": key, "ca.crt": rootPEM}, wantErr: "not a CA certificate"},
		"chains to other root": {data: map[string][]byte{"tls.crt": interPEM, "tls.key": key, "ca.crt": otherRootPEM}, wantErr: "does not chain"},
		"garbage":              {data: map[string][]byte{"tls.crt": []byte("nope"), "tls.key": key, "ca.crt": rootPEM}, wantErr: "no PEM certificate"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ca, err := CheckSecret(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "cacerts"}, Data: tc.data}, now)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if d := ca.NotAfter.Sub(far); d > time.Second || d < -time.Second {
					t.Fatalf("notAfter = %s, want %s", ca.NotAfter, far)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want …%s…", err, tc.wantErr)
			}
		})
	}
}

func TestExpiringSoon(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ca := CA{NotBefore: start, NotAfter: start.Add(600 * time.Hour)}
	tests := map[string]struct {
		now  time.Time
		want bool
	}{
		"fresh":                {now: start.Add(time.Hour)},
		"at the renewal point": {now: start.Add(400 * time.Hour)},
		"renewal overdue":      {now: start.Add(510 * time.Hour), want: true},
		"expired":              {now: start.Add(700 * time.Hour), want: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := ExpiringSoon(ca, tc.now); got != tc.want {
				t.Fatalf("ExpiringSoon = %v, want %v", got, tc.want)
			}
		})
	}
}
