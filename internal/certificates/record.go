package certificates

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

// Record is the operator's state of the mesh CA. It lives in an annotation on the cacerts
// Secret (meshv1.AnnotationCA), written in the same request as the content it describes, so an
// operator killed at any point finds the phase that matches what istiod reads. status mirrors
// it, and is read back only if the Secret is lost.
type Record struct {
	// Generation is the root generation istiod's intermediate belongs to outside a rotation,
	// and the one a rotation leaves.
	Generation int `json:"generation"`
	// Issuer is the identity (SelfSignedIdentity or Kind/name) that signed that generation.
	Issuer string `json:"issuer,omitempty"`
	// RotatedFor is the meshv1.AnnotationRotateRoot value the last finished rotation answered.
	RotatedFor string `json:"rotatedFor,omitempty"`
	// Rotation is the rotation in progress.
	Rotation *Rotation `json:"rotation,omitempty"`
}

// Rotation is a root rotation in progress, from Record.Generation to Generation+1.
type Rotation struct {
	Phase meshv1.RotationPhase `json:"phase"`
	// Since is when the phase began; in the Switch phase, pods started before it may hold a
	// certificate of the old intermediate.
	Since time.Time `json:"since"`
	// Observed is when istiod was first seen on the phase's content: publishing both roots
	// (Trust), signing with the new intermediate (Switch).
	Observed time.Time `json:"observed,omitzero"`
	// Trigger says what asked for the rotation.
	Trigger string `json:"trigger"`
	// Answers is the meshv1.AnnotationRotateRoot value the rotation answers, if it asked.
	Answers string `json:"answers,omitempty"`
	// Issuer is the identity that signs the new generation, pinned for the whole rotation.
	Issuer string `json:"issuer"`
	// OldRoots are the roots of the generation left (PEM): trusted until the Drop phase.
	OldRoots string `json:"oldRoots"`
	// OldIntermediate is the certificate istiod signed with when the rotation began (PEM): a
	// serving certificate it signed says istiod has not loaded the new one yet.
	OldIntermediate string `json:"oldIntermediate,omitempty"`
}

// To is the generation the rotation moves to.
func (r Record) To() int { return r.Generation + 1 }

// ParseRecord reads the record an annotation holds.
func ParseRecord(s string) (Record, error) {
	var r Record
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		return Record{}, fmt.Errorf("annotation %s is not the operator's record: %w", meshv1.AnnotationCA, err)
	}
	return r, nil
}

// String is the record as the annotation holds it.
func (r Record) String() string {
	b, _ := json.Marshal(r)
	return string(b)
}

// recordFromStatus rebuilds a record from status, for a cacerts Secret that was deleted.
func recordFromStatus(st *meshv1.CertificatesStatus) (Record, bool) {
	if st == nil || st.Generation == 0 && st.Rotation == nil {
		return Record{}, false
	}
	return Record{Generation: int(st.Generation), RotatedFor: st.RotatedFor}, true
}

// Trigger says whether the installation asks for a rotation the record has not done: a new
// value of the rotate-root annotation, or a spec issuer other than the one that signed the
// current generation. It returns the trigger's description and the annotation value answered.
func Trigger(mesh *meshv1.MeshInstallation, rec Record, wantIssuer string) (string, string) {
	if v := mesh.Annotations[meshv1.AnnotationRotateRoot]; v != "" && v != rec.RotatedFor {
		return fmt.Sprintf("annotation %s=%s", meshv1.AnnotationRotateRoot, v), v
	}
	if rec.Issuer != "" && rec.Issuer != wantIssuer {
		return fmt.Sprintf("spec.certificates.issuerRef changed from %s to %s", describeIssuer(rec.Issuer), describeIssuer(wantIssuer)), ""
	}
	return "", ""
}

func describeIssuer(id string) string {
	if id == SelfSignedIdentity {
		return "the operator's self-signed root"
	}
	return id
}

// Mirror writes the record into status; pending is the Trust or Switch phase's count of pods to
// restart. TrustedSince and SigningSince appear once they have passed: the ladder restarts pods
// started before them.
func Mirror(st *meshv1.CertificatesStatus, rec Record, set Settings, pending int, now time.Time) {
	st.Generation = int32(rec.Generation) //nolint:gosec // G115: the CA record's own generation counter, far below 2^31
	st.RotatedFor = rec.RotatedFor
	if rec.Rotation == nil {
		st.Rotation = nil
		return
	}
	r := rec.Rotation
	since := metav1.NewTime(r.Since)
	kind, name := set.WithIdentity(r.Issuer).Signer(rec.To())
	st.Rotation = &meshv1.RootRotationStatus{Phase: r.Phase, Since: &since, Trigger: r.Trigger, Issuer: kind + "/" + name, PendingPods: int32(pending)} //nolint:gosec // G115: a count of pods or namespaces, far below 2^31
	if !r.Observed.IsZero() && !r.Observed.After(now) {
		observed := metav1.NewTime(r.Observed)
		switch r.Phase {
		case meshv1.RotationTrust:
			st.Rotation.TrustedSince = &observed
		case meshv1.RotationSwitch:
			st.Rotation.SigningSince = &observed
		}
	}
}

// Bundle is a set of PEM certificates, kept in a stable order without repeats.
type Bundle []*pem.Block

// ParseBundle reads the CERTIFICATE blocks of PEM data.
func ParseBundle(data []byte) Bundle {
	var out Bundle
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return out
		}
		if block.Type == "CERTIFICATE" && !out.has(block) {
			out = append(out, &pem.Block{Type: block.Type, Bytes: block.Bytes})
		}
	}
}

func (b Bundle) has(block *pem.Block) bool {
	return slices.ContainsFunc(b, func(c *pem.Block) bool { return bytes.Equal(c.Bytes, block.Bytes) })
}

// Union is b followed by the certificates of o it does not hold.
func (b Bundle) Union(o Bundle) Bundle {
	out := slices.Clone(b)
	for _, c := range o {
		if !out.has(c) {
			out = append(out, c)
		}
	}
	return out
}

// Same reports whether both hold the same certificates, in any order.
func (b Bundle) Same(o Bundle) bool {
	if len(b) != len(o) {
		return false
	}
	for _, c := range o {
		if !b.has(c) {
			return false
		}
	}
	return true
}

// PEM encodes the bundle.
func (b Bundle) PEM() []byte {
	var buf bytes.Buffer
	for _, c := range b {
		_ = pem.Encode(&buf, c)
	}
	return buf.Bytes()
}

// Fingerprints names the certificates for messages: the first bytes of their SHA-256.
func (b Bundle) Fingerprints() string {
	var out []string
	for _, c := range b {
		sum := sha256.Sum256(c.Bytes)
		out = append(out, fmt.Sprintf("%x", sum[:6]))
	}
	return strings.Join(out, ", ")
}
