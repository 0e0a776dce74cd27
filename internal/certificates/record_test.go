package certificates

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/meshspec"
)

func TestTrigger(t *testing.T) {
	annotated := func(v string) *meshv1.MeshInstallation {
		m := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
		if v != "" {
			m.Annotations = map[string]string{meshv1.AnnotationRotateRoot: v}
		}
		return m
	}
	tests := map[string]struct {
		mesh                 *meshv1.MeshInstallation
		rec                  Record
		want                 string
		wantTrigger, answers string
	}{
		"nothing asked": {mesh: annotated(""), rec: Record{Issuer: SelfSignedIdentity}, want: SelfSignedIdentity},
		"a fresh installation (no issuer recorded)": {mesh: annotated(""), rec: Record{}, want: "ClusterIssuer/corp-ca"},
		"the annotation, first time": {mesh: annotated("now"), rec: Record{Issuer: SelfSignedIdentity}, want: SelfSignedIdentity,
			wantTrigger: "annotation meshwright.io/rotate-root=now", answers: "now"},
		"the annotation already answered": {mesh: annotated("now"), rec: Record{Issuer: SelfSignedIdentity, RotatedFor: "now"}, want: SelfSignedIdentity},
		"the annotation with a new value": {mesh: annotated("again"), rec: Record{Issuer: SelfSignedIdentity, RotatedFor: "now"}, want: SelfSignedIdentity,
			wantTrigger: "annotation meshwright.io/rotate-root=again", answers: "again"},
		"another issuer": {mesh: annotated(""), rec: Record{Issuer: SelfSignedIdentity}, want: "ClusterIssuer/corp-ca",
			wantTrigger: "spec.certificates.issuerRef changed from the operator's self-signed root to ClusterIssuer/corp-ca"},
		"back to the operator's root": {mesh: annotated(""), rec: Record{Issuer: "ClusterIssuer/corp-ca"}, want: SelfSignedIdentity,
			wantTrigger: "spec.certificates.issuerRef changed from ClusterIssuer/corp-ca to the operator's self-signed root"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, answers := Trigger(tc.mesh, tc.rec, tc.want)
			if got != tc.wantTrigger || answers != tc.answers {
				t.Fatalf("Trigger = %q, %q; want %q, %q", got, answers, tc.wantTrigger, tc.answers)
			}
		})
	}
}

func TestRecordRoundTripAndIdentity(t *testing.T) {
	rec := Record{Generation: 2, Issuer: "ClusterIssuer/corp-ca", RotatedFor: "x",
		Rotation: &Rotation{Phase: meshv1.RotationSwitch, Since: time.Date(2026, 11, 26, 12, 0, 0, 5, time.UTC), Issuer: SelfSignedIdentity, OldRoots: "pem"}}
	back, err := ParseRecord(rec.String())
	if err != nil || back.String() != rec.String() || !back.Rotation.Since.Equal(rec.Rotation.Since) {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	if _, err := ParseRecord("{not json"); err == nil {
		t.Fatal("a broken record must not parse")
	}
	set := SettingsFor(&meshv1.MeshInstallation{})
	if k, n := set.WithIdentity("ClusterIssuer/corp-ca").Signer(3); k+"/"+n != "ClusterIssuer/corp-ca" {
		t.Errorf("user issuer signs as %s/%s", k, n)
	}
	if k, n := set.WithIdentity(SelfSignedIdentity).Signer(3); k+"/"+n != "Issuer/meshwright-root-ca-3" {
		t.Errorf("generation 3's own root signs as %s/%s", k, n)
	}
	if got := set.WithIdentity("Issuer/vault").Identity(); got != "Issuer/vault" {
		t.Errorf("identity = %s", got)
	}
}

// TestMirror: status shows the rotation, and SigningSince only once it has passed, so that the
// ladder never restarts a pod created in the same second istiod switched.
func TestMirror(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 400e6, time.UTC)
	set := SettingsFor(&meshv1.MeshInstallation{})
	rec := Record{Generation: 1, Issuer: SelfSignedIdentity, Rotation: &Rotation{Phase: meshv1.RotationSwitch, Since: now.Add(-time.Minute),
		Observed: now.Truncate(time.Second).Add(time.Second), Issuer: "ClusterIssuer/corp-ca", Trigger: "t"}}
	st := &meshv1.CertificatesStatus{}
	Mirror(st, rec, set, 3, now)
	if st.Rotation == nil || st.Rotation.SigningSince != nil || st.Rotation.PendingPods != 3 || st.Rotation.Issuer != "ClusterIssuer/corp-ca" || st.Generation != 1 {
		t.Fatalf("status = %+v", st.Rotation)
	}
	mesh := &meshv1.MeshInstallation{Status: meshv1.MeshInstallationStatus{Certificates: st}}
	if !meshspec.RefreshBefore(mesh).IsZero() || !meshspec.MultiRoot(mesh) {
		t.Fatalf("RefreshBefore %v before SigningSince passed; MultiRoot %v", meshspec.RefreshBefore(mesh), meshspec.MultiRoot(mesh))
	}
	Mirror(st, rec, set, 3, now.Add(time.Second))
	if got := meshspec.RefreshBefore(mesh); !got.Equal(rec.Rotation.Observed) {
		t.Fatalf("RefreshBefore = %v, want %v", got, rec.Rotation.Observed)
	}
	rec.Generation, rec.Rotation = 2, nil
	Mirror(st, rec, set, 0, now)
	if st.Rotation != nil || st.Generation != 2 || !meshspec.MultiRoot(mesh) || !meshspec.RefreshBefore(mesh).IsZero() {
		t.Fatalf("after the rotation: %+v", st)
	}
	if meshspec.MultiRoot(&meshv1.MeshInstallation{}) {
		t.Fatal("an installation that never rotated keeps istiod as it was")
	}
}

func TestBundle(t *testing.T) {
	far := time.Now().Add(time.Hour)
	oldRoot, oldKey, oldPEM := pemCA(t, "old root", true, far, nil, nil)
	newRoot, newKey, newPEM := pemCA(t, "new root", true, far, nil, nil)
	_, _, oldInter := pemCA(t, "old intermediate", true, far, oldRoot, oldKey)
	_, _, newInter := pemCA(t, "new intermediate", true, far, newRoot, newKey)
	old, nw := ParseBundle(oldPEM), ParseBundle(newPEM)
	both := old.Union(nw)
	if len(both) != 2 || !both.Union(old).Same(both) || !nw.Union(old).Same(both) || both.Same(old) {
		t.Fatalf("union: %d certificates", len(both))
	}
	if len(ParseBundle(append(append([]byte{}, oldPEM...), oldPEM...))) != 1 {
		t.Fatal("a repeated certificate counts once")
	}
	// istiod's layout with both roots in ca.crt: either intermediate verifies.
	key := []byte("present")
	for name, inter := range map[string][]byte{"old": oldInter, "new": newInter} {
		secret := &corev1.Secret{Data: map[string][]byte{"tls.crt": inter, "tls.key": key, "ca.crt": both.PEM()}}
		if _, err := CheckSecret(secret, time.Now()); err != nil {
			t.Errorf("%s intermediate with both roots: %v", name, err)
		}
	}
	secret := &corev1.Secret{Data: map[string][]byte{"tls.crt": oldInter, "tls.key": key, "ca.crt": nw.PEM()}}
	if _, err := CheckSecret(secret, time.Now()); err == nil {
		t.Error("the old intermediate must not verify against the new root alone")
	}
}
