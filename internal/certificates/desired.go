// Package certificates is the first rollout stage: the mesh CA. By default it manages a
// self-signed root with cert-manager (SelfSigned Issuer → root CA Certificate → CA Issuer) and
// issues istiod's intermediate CA from it into the cacerts Secret, in the layout istiod reads
// (tls.crt, tls.key, ca.crt). With spec.certificates.issuerRef the user's issuer signs the
// intermediate and no root is created. Renewal is cert-manager's; this stage checks the result.
// Replacing the root is a rotation this stage runs itself, in phases (see rotation.go).
package certificates

import (
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/meshspec"
)

// Names of the objects this stage creates in the control-plane namespace.
const (
	SelfSignedIssuer = "meshwright-selfsigned"
	RootCertificate  = "meshwright-root-ca"
	RootIssuer       = "meshwright-root-ca"
	CACertificate    = "meshwright-istio-ca"
	// CASecret is the Secret istiod reads its signing CA from.
	CASecret = "cacerts"
)

// Objects are named by the generation of the root they belong to. Generation 0 keeps the names
// installations had before rotations existed, and its intermediate is written by cert-manager
// straight into cacerts, so that those installations are not touched until they rotate. From
// generation 1 on, the intermediate has a Secret of its own and the operator composes cacerts
// from it and the trust bundle, which a rotation needs to hold two roots at once.

// RootName names a generation's self-signed root: its Certificate, Secret and CA Issuer.
func RootName(gen int) string { return generationName(RootCertificate, gen) }

// IntermediateName names a generation's intermediate Certificate.
func IntermediateName(gen int) string { return generationName(CACertificate, gen) }

// IntermediateSecret names the Secret cert-manager writes a generation's intermediate into.
func IntermediateSecret(gen int) string {
	if gen == 0 {
		return CASecret
	}
	return IntermediateName(gen)
}

func generationName(base string, gen int) string {
	if gen == 0 {
		return base
	}
	return fmt.Sprintf("%s-%d", base, gen)
}

// SelfSignedIdentity is the issuer identity of the root the operator manages, whatever its
// generation; a user's issuer is identified as Kind/name.
const SelfSignedIdentity = "self-signed"

const certManagerAPI = "cert-manager.io/v1"

// Settings are the spec's certificate choices with the defaults filled in.
type Settings struct {
	Namespace    string
	Duration     time.Duration
	RenewBefore  time.Duration // zero: cert-manager's default (a third of Duration)
	RootDuration time.Duration
	Algorithm    string
	Size         int64 // zero: cert-manager's default for the algorithm
	// IssuerKind and IssuerName sign the intermediate: the user's issuer, or the managed root
	// (of generation 0; see Signer).
	IssuerKind, IssuerName string
	SelfSigned             bool
	// TrustPropagation is how long a rotation lets the bundle of both roots spread.
	TrustPropagation time.Duration
}

// Identity names the issuer the spec asks for, the same across root generations.
func (s Settings) Identity() string {
	if s.SelfSigned {
		return SelfSignedIdentity
	}
	return s.IssuerKind + "/" + s.IssuerName
}

// WithIdentity returns the settings with the issuer an identity names: a rotation keeps the
// issuer it started with even if the spec changes again while it runs.
func (s Settings) WithIdentity(id string) Settings {
	if id == SelfSignedIdentity {
		s.SelfSigned, s.IssuerKind, s.IssuerName = true, "Issuer", RootIssuer
		return s
	}
	if kind, name, ok := strings.Cut(id, "/"); ok {
		s.SelfSigned, s.IssuerKind, s.IssuerName = false, kind, name
	}
	return s
}

// Signer is the issuer of a generation's intermediate, as Kind and name.
func (s Settings) Signer(gen int) (kind, name string) {
	if s.SelfSigned {
		return "Issuer", RootName(gen)
	}
	return s.IssuerKind, s.IssuerName
}

// SettingsFor fills in the defaults of spec.certificates.
func SettingsFor(mesh *meshv1.MeshInstallation) Settings {
	c := mesh.Spec.Certificates
	s := Settings{
		Namespace:        meshspec.ControlPlaneNamespace(mesh),
		Duration:         durationOr(c.Duration, meshv1.DefaultCADuration),
		RootDuration:     durationOr(c.RootDuration, meshv1.DefaultRootDuration),
		TrustPropagation: durationOr(c.TrustPropagation, meshv1.DefaultTrustPropagation),
		Algorithm:        string(meshv1.KeyAlgorithmECDSA),
		Size:             256,
	}
	if c.RenewBefore != nil {
		s.RenewBefore = c.RenewBefore.Duration
	}
	if c.PrivateKey.Algorithm != "" {
		s.Algorithm = string(c.PrivateKey.Algorithm)
		s.Size = 0
	}
	if c.PrivateKey.Size != nil {
		s.Size = int64(*c.PrivateKey.Size)
	}
	if s.Algorithm == string(meshv1.KeyAlgorithmECDSA) && s.Size == 0 {
		s.Size = 256
	}
	if ref := c.IssuerRef; ref != nil {
		s.IssuerKind, s.IssuerName = ref.Kind, ref.Name
		if s.IssuerKind == "" {
			s.IssuerKind = "ClusterIssuer"
		}
	} else {
		s.SelfSigned = true
		s.IssuerKind, s.IssuerName = "Issuer", RootIssuer
	}
	return s
}

func durationOr(d *metav1.Duration, def string) time.Duration {
	if d != nil {
		return d.Duration
	}
	v, _ := time.ParseDuration(def)
	return v
}

// Desired returns the objects of a root generation, in the order they must be applied. It is a
// pure function of the installation's name, the settings and the generation.
func Desired(installation string, s Settings, gen int) []*unstructured.Unstructured {
	labels := map[string]any{meshv1.LabelManagedBy: meshv1.ManagedByValue, meshv1.LabelInstallation: installation}
	obj := func(apiVersion, kind, name, ns string, spec map[string]any) *unstructured.Unstructured {
		meta := map[string]any{"name": name, "labels": copyMap(labels)}
		if ns != "" {
			meta["namespace"] = ns
		}
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind, "metadata": meta}}
		if spec != nil {
			u.Object["spec"] = spec
		}
		return u
	}
	key := map[string]any{"algorithm": s.Algorithm}
	if s.Size > 0 {
		key["size"] = s.Size
	}

	out := []*unstructured.Unstructured{obj("v1", "Namespace", s.Namespace, "", nil)}
	if s.SelfSigned {
		rootKey := copyMap(key)
		// The root keeps its key across renewals so that trust in it does not break; replacing
		// the root is a deliberate rotation, not a renewal.
		rootKey["rotationPolicy"] = "Never"
		out = append(out,
			obj(certManagerAPI, "Issuer", SelfSignedIssuer, s.Namespace, map[string]any{"selfSigned": map[string]any{}}),
			obj(certManagerAPI, "Certificate", RootName(gen), s.Namespace, map[string]any{
				"isCA":           true,
				"commonName":     "Meshwright root CA",
				"subject":        map[string]any{"organizations": []any{"Meshwright"}},
				"duration":       metav1.Duration{Duration: s.RootDuration}.Duration.String(),
				"secretName":     RootName(gen),
				"privateKey":     rootKey,
				"issuerRef":      map[string]any{"group": "cert-manager.io", "kind": "Issuer", "name": SelfSignedIssuer},
				"secretTemplate": map[string]any{"labels": copyMap(labels)},
			}),
			obj(certManagerAPI, "Issuer", RootName(gen), s.Namespace, map[string]any{"ca": map[string]any{"secretName": RootName(gen)}}),
		)
	}
	kind, name := s.Signer(gen)
	caSpec := map[string]any{
		"isCA":       true,
		"commonName": "Istio intermediate CA (" + s.Namespace + ")",
		"subject":    map[string]any{"organizations": []any{"Meshwright"}},
		"duration":   s.Duration.String(),
		"secretName": IntermediateSecret(gen),
		"privateKey": copyMap(key),
		"usages":     []any{"cert sign", "crl sign", "digital signature"},
		"issuerRef":  map[string]any{"group": "cert-manager.io", "kind": kind, "name": name},
		// The label lets the operator cache only its own Secrets, not every Secret of the cluster.
		"secretTemplate": map[string]any{"labels": copyMap(labels)},
	}
	if s.RenewBefore > 0 {
		caSpec["renewBefore"] = s.RenewBefore.String()
	}
	return append(out, obj(certManagerAPI, "Certificate", IntermediateName(gen), s.Namespace, caSpec))
}

func copyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
