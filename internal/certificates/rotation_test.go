package certificates

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/apply"
	"github.com/meshwright/meshwright/internal/stages"
	"github.com/meshwright/meshwright/internal/testenv"
)

var (
	k8s    client.WithWatch
	mapper *restmapper.DeferredDiscoveryRESTMapper
)

func TestMain(m *testing.M) {
	testenv.Main(m, func(cfg *rest.Config) error {
		scheme := runtime.NewScheme()
		for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, apiextensionsv1.AddToScheme, meshv1.AddToScheme} {
			if err := add(scheme); err != nil {
				return err
			}
		}
		var err error
		if k8s, err = client.NewWithWatch(cfg, client.Options{Scheme: scheme}); err != nil {
			return err
		}
		dc, err := discovery.NewDiscoveryClientForConfig(cfg)
		if err != nil {
			return err
		}
		mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
		return installCertManagerKinds(context.Background())
	})
}

// installCertManagerKinds serves cert-manager's kinds with open schemas: the test plays
// cert-manager itself (see fakeCertManager), which envtest does not run.
func installCertManagerKinds(ctx context.Context) error {
	open := &apiextensionsv1.JSONSchemaProps{Type: "object", XPreserveUnknownFields: ptr.To(true)}
	for _, k := range []struct {
		kind  string
		scope apiextensionsv1.ResourceScope
	}{{"Certificate", apiextensionsv1.NamespaceScoped}, {"Issuer", apiextensionsv1.NamespaceScoped}, {"ClusterIssuer", apiextensionsv1.ClusterScoped}} {
		plural := strings.ToLower(k.kind) + "s"
		crd := &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: plural + ".cert-manager.io"},
			Spec: apiextensionsv1.CustomResourceDefinitionSpec{Group: "cert-manager.io", Scope: k.scope,
				Names: apiextensionsv1.CustomResourceDefinitionNames{Kind: k.kind, ListKind: k.kind + "List", Plural: plural, Singular: strings.ToLower(k.kind)},
				Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{Name: "v1", Served: true, Storage: true,
					Schema:       &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: open},
					Subresources: &apiextensionsv1.CustomResourceSubresources{Status: &apiextensionsv1.CustomResourceSubresourceStatus{}}}}}}
		if err := k8s.Create(ctx, crd); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mapper.Reset()
		served := true
		for _, gvk := range []schema.GroupVersionKind{CertificateGVK, IssuerGVK, ClusterIssuerGVK} {
			if _, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
				served = false
			}
		}
		if served {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("cert-manager's kinds are not served")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// pki is a CA: its certificate and key.
type pki struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, cn string, parent *pki) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &pki{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (p *pki) keyPEM(t *testing.T) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(p.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func parsePKI(t *testing.T, s *corev1.Secret) *pki {
	t.Helper()
	b, _ := pem.Decode(s.Data["tls.crt"])
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := pem.Decode(s.Data["tls.key"])
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return &pki{cert: cert, key: key, pem: s.Data["tls.crt"]}
}

// fakeCertManager issues every Certificate of the namespace that has no Secret yet, as
// cert-manager's SelfSigned and CA issuers would, and marks it Ready; corp signs for the
// ClusterIssuer "corp-ca".
func fakeCertManager(t *testing.T, ns string, corp *pki) {
	t.Helper()
	ctx := context.Background()
	list := &unstructured.UnstructuredList{}
	list.SetAPIVersion("cert-manager.io/v1")
	list.SetKind("CertificateList")
	if err := k8s.List(ctx, list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		cert := &list.Items[i]
		secretName, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName")
		kind, _, _ := unstructured.NestedString(cert.Object, "spec", "issuerRef", "kind")
		issuer, _, _ := unstructured.NestedString(cert.Object, "spec", "issuerRef", "name")
		if ok, _, _ := readyCondition(cert); ok {
			continue
		}
		var signer *pki
		var caPEM []byte
		switch {
		case issuer == SelfSignedIssuer:
		case kind == "ClusterIssuer":
			signer, caPEM = corp, corp.pem
		default:
			iss := &unstructured.Unstructured{}
			iss.SetAPIVersion("cert-manager.io/v1")
			iss.SetKind("Issuer")
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: issuer}, iss); err != nil {
				continue
			}
			from, _, _ := unstructured.NestedString(iss.Object, "spec", "ca", "secretName")
			s := &corev1.Secret{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: from}, s); err != nil {
				continue
			}
			signer, caPEM = parsePKI(t, s), s.Data["tls.crt"]
		}
		ca := newCA(t, cert.GetName(), signer)
		if signer == nil {
			caPEM = ca.pem
		}
		labels, _, _ := unstructured.NestedStringMap(cert.Object, "spec", "secretTemplate", "labels")
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: secretName}}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(secret), secret); err == nil {
			if secret.Labels == nil {
				secret.Labels = map[string]string{}
			}
			for k, v := range labels {
				secret.Labels[k] = v
			}
			secret.Data = map[string][]byte{"tls.crt": ca.pem, "tls.key": ca.keyPEM(t), "ca.crt": caPEM}
			if err := k8s.Update(ctx, secret); err != nil {
				t.Fatal(err)
			}
		} else {
			secret.Labels, secret.Type = labels, corev1.SecretTypeTLS
			secret.Data = map[string][]byte{"tls.crt": ca.pem, "tls.key": ca.keyPEM(t), "ca.crt": caPEM}
			if err := k8s.Create(ctx, secret); err != nil {
				t.Fatal(err)
			}
		}
		_ = unstructured.SetNestedSlice(cert.Object, []any{map[string]any{"type": "Ready", "status": "True", "reason": "Ready", "message": "issued"}}, "status", "conditions")
		if err := k8s.Status().Update(ctx, cert); err != nil {
			t.Fatal(err)
		}
	}
}

// fakeIstiod plays istiod: load takes what cacerts holds, as istiod's file watch would (it
// refuses a root bundle that neither holds nor is held by the one it has, as istiod does), and
// publishes the roots in every namespace's istio-ca-root-cert; its serving certificate is
// signed by the intermediate it loaded.
type fakeIstiod struct {
	roots        Bundle
	intermediate *pki
	serving      *x509.Certificate
	namespaces   []string
	// violations collects, on each load, an intermediate a proxy may hold that the published
	// roots do not verify: the one istiod signs with, and at a switch the one it signed with.
	violations []string
}

func (f *fakeIstiod) load(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	s := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "istio-system", Name: CASecret}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return // not issued yet: istiod's pod waits for its mount
		}
		t.Fatal(err)
	}
	roots := ParseBundle(s.Data["ca.crt"])
	if f.roots != nil && !roots.Same(f.roots) && !subset(roots, f.roots) && !subset(f.roots, roots) {
		t.Fatalf("cacerts jumped from roots %s to %s: istiod refuses that", f.roots.Fingerprints(), roots.Fingerprints())
	}
	previous, published := f.intermediate, f.roots
	f.roots, f.intermediate = roots, parsePKI(t, s)
	f.verify(f.intermediate.cert, f.roots)
	if previous != nil && !previous.cert.Equal(f.intermediate.cert) {
		// Proxies hold certificates of the previous intermediate until they restart, and
		// hold the roots published before this load until the new ones reach them: both must
		// verify across the switch.
		f.verify(previous.cert, f.roots)
		f.verify(f.intermediate.cert, published)
	}
	leaf := newCA(t, "istiod", f.intermediate)
	f.serving = leaf.cert
	for _, ns := range f.namespaces {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: RootCertConfigMap}}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(cm), cm); err != nil {
			cm.Data = map[string]string{"root-cert.pem": string(roots.PEM())}
			if err := k8s.Create(ctx, cm); err != nil {
				t.Fatal(err)
			}
			continue
		}
		cm.Data = map[string]string{"root-cert.pem": string(roots.PEM())}
		if err := k8s.Update(ctx, cm); err != nil {
			t.Fatal(err)
		}
	}
}

func subset(small, big Bundle) bool { return len(small) <= len(big) && small.Union(big).Same(big) }

// verify records an intermediate that roots do not verify.
func (f *fakeIstiod) verify(inter *x509.Certificate, roots Bundle) {
	for _, r := range roots {
		if rc, err := x509.ParseCertificate(r.Bytes); err == nil && inter.CheckSignatureFrom(rc) == nil {
			return
		}
	}
	if len(f.violations) < 5 {
		f.violations = append(f.violations, fmt.Sprintf("roots %s do not verify intermediate %q", roots.Fingerprints(), inter.Subject.CommonName))
	}
}

// setUpMesh creates istio-system and the app namespaces, and the injection webhook of the
// installation "default", as a mesh whose root is rotated has them.
func setUpMesh(t *testing.T, apps ...string) {
	t.Helper()
	ctx := context.Background()
	for _, ns := range append([]string{"istio-system"}, apps...) {
		if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	hook := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
		"metadata": map[string]any{"name": "istio-sidecar-injector", "labels": map[string]any{meshv1.LabelInstallation: "default"}},
		"webhooks": []any{map[string]any{"name": "x.sidecar-injector.istio.io", "admissionReviewVersions": []any{"v1"}, "sideEffects": "None",
			"clientConfig": map[string]any{"url": "https://127.0.0.1:15017/inject"}}}}}
	if err := k8s.Create(ctx, hook); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// reportedPass runs the stage once and reports its result into status, as the controller does.
func reportedPass(t *testing.T, stage *Stage, mesh *meshv1.MeshInstallation) stages.Result {
	t.Helper()
	res, err := stage.Reconcile(context.Background(), mesh)
	if err != nil {
		t.Fatal(err)
	}
	res.Report(&mesh.Status)
	return res
}

// TestRotationSurvivesAFailedWriteAnywhere rotates the root with every write of the operator
// failing once in turn (the operator restarted after it, with nothing kept in memory), and
// checks each time that the rotation ends at the new root and that the roots istiod published
// always verified the intermediate it signed with. A steady installation costs no write, and a
// rotation whose record is lost is refused, not guessed.
func TestRotationSurvivesAFailedWriteAnywhere(t *testing.T) {
	ctx := context.Background()
	corp := newCA(t, "corp root", nil)
	setUpMesh(t, "app")

	// How many writes a clean rotation makes, to fail each of them in turn.
	writes := 0
	for fail := 0; fail <= writes; fail++ {
		name := "a clean rotation"
		if fail > 0 {
			name = fmt.Sprintf("write %d fails", fail)
		}
		t.Run(name, func(t *testing.T) {
			cleanUp(t)
			mesh := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"},
				Spec: meshv1.MeshInstallationSpec{Certificates: meshv1.CertificatesSpec{TrustPropagation: &metav1.Duration{Duration: time.Millisecond}}}}
			ist := &fakeIstiod{namespaces: []string{"istio-system", "app"}}
			count, failed := 0, false
			// write counts a write, and fails the one whose turn it is.
			write := func(do func() error) error {
				count++
				if count == fail {
					failed = true
					return errors.New("injected failure")
				}
				return do()
			}
			newStage := func() *Stage {
				c := interceptor.NewClient(k8s, interceptor.Funcs{
					Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
						return write(func() error { return c.Apply(ctx, obj, opts...) })
					},
					Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
						return write(func() error { return c.Delete(ctx, obj, opts...) })
					},
				})
				return &Stage{Client: c, Reader: k8s, Pods: k8s, Mapper: mapper, Applier: &apply.Applier{Client: c, FieldManager: "meshwright"},
					Serving: func(context.Context, string, string) ([]*x509.Certificate, error) {
						return []*x509.Certificate{ist.serving}, nil
					}}
			}
			stage := newStage()
			run := func(until func(stages.Result) bool) stages.Result {
				t.Helper()
				var res stages.Result
				for i := 0; i < 60; i++ {
					r, err := stage.Reconcile(ctx, mesh)
					if err != nil {
						stage = newStage() // the operator restarts, with nothing in memory
						continue
					}
					r.Report(&mesh.Status) // as the controller's status computation does
					res = r
					fakeCertManager(t, "istio-system", corp)
					if until(res) {
						return res
					}
					if i%2 == 1 {
						ist.load(t) // istiod's files follow cacerts a pass later
					}
					if res.RequeueAfter > 0 && res.RequeueAfter <= time.Second {
						// Restarts wait for the next whole second (pods' creation times).
						time.Sleep(res.RequeueAfter)
					}
				}
				t.Fatalf("no end: %+v, status %+v", res, mesh.Status.Certificates)
				return res
			}
			run(func(r stages.Result) bool { return r.Reason == meshv1.ReasonCAReady })
			ist.load(t)
			oldRoot := ist.roots
			if mesh.Status.Certificates.Generation != 0 || len(oldRoot) != 1 {
				t.Fatalf("a fresh installation: %+v, %d roots", mesh.Status.Certificates, len(oldRoot))
			}
			base := count
			if _, err := stage.Reconcile(ctx, mesh); err != nil || count != base {
				t.Fatalf("a pass over a steady installation wrote %d time(s) (err %v)", count-base, err)
			}

			mesh.Annotations = map[string]string{meshv1.AnnotationRotateRoot: "now"}
			count = 0
			res := run(func(r stages.Result) bool {
				return r.Reason == meshv1.ReasonCAReady && mesh.Status.Certificates.Generation == 1
			})
			if fail == 0 {
				writes = count
			}
			ist.load(t)
			if len(ist.roots) != 1 || ist.roots.Same(oldRoot) || mesh.Status.Certificates.RotatedFor != "now" || mesh.Status.Certificates.Rotation != nil {
				t.Fatalf("after the rotation: roots %s (old %s), status %+v, %s", ist.roots.Fingerprints(), oldRoot.Fingerprints(), mesh.Status.Certificates, res.Message)
			}
			for _, v := range ist.violations {
				t.Error(v)
			}
			if fail > 0 && !failed {
				t.Fatalf("write %d never happened", fail)
			}
			for _, gone := range []string{RootName(0), IntermediateName(0)} {
				u := &unstructured.Unstructured{}
				u.SetGroupVersionKind(CertificateGVK)
				// Deleted with orphan propagation (cacerts must outlive it even when cert-manager
				// sets owner references): the finalizer stays until a garbage collector, which
				// envtest does not run, takes it off.
				err := k8s.Get(ctx, client.ObjectKey{Namespace: "istio-system", Name: gone}, u)
				if err == nil && u.GetDeletionTimestamp() == nil {
					t.Errorf("Certificate %s of generation 0 is still there", gone)
				} else if err != nil && !apierrors.IsNotFound(err) {
					t.Fatal(err)
				}
			}
		})
	}
	t.Logf("a rotation makes %d writes; each was failed once in turn", writes)
	if writes < 4 {
		t.Fatalf("only %d writes counted: the failure injection does not see the rotation's writes", writes)
	}

	t.Run("generation 1 to 2, to the user's issuer, waiting for a proxy started before the switch", func(t *testing.T) {
		corpIssuer := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
			"metadata": map[string]any{"name": "corp-ca"}, "spec": map[string]any{"ca": map[string]any{"secretName": "corp-root"}}}}
		if err := k8s.Create(ctx, corpIssuer); err != nil {
			t.Fatal(err)
		}
		_ = unstructured.SetNestedSlice(corpIssuer.Object, []any{map[string]any{"type": "Ready", "status": "True"}}, "status", "conditions")
		if err := k8s.Status().Update(ctx, corpIssuer); err != nil {
			t.Fatal(err)
		}
		// Its proxy takes the new root live: the Trust phase does not wait for it, the Switch does.
		proxy := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "old-proxy"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"},
				{Name: "istio-proxy", Image: "proxy", Env: []corev1.EnvVar{{Name: "PROXY_CONFIG_XDS_AGENT", Value: "true"}}}}}}
		if err := k8s.Create(ctx, proxy); err != nil {
			t.Fatal(err)
		}
		mesh := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"},
			Spec: meshv1.MeshInstallationSpec{Certificates: meshv1.CertificatesSpec{TrustPropagation: &metav1.Duration{Duration: time.Millisecond},
				IssuerRef: &meshv1.IssuerReference{Kind: "ClusterIssuer", Name: "corp-ca"}}}}
		ist := &fakeIstiod{namespaces: []string{"istio-system", "app"}}
		ist.load(t)
		stage := &Stage{Client: k8s, Reader: k8s, Pods: k8s, Mapper: mapper, Applier: &apply.Applier{Client: k8s, FieldManager: "meshwright"},
			Serving: func(context.Context, string, string) ([]*x509.Certificate, error) {
				return []*x509.Certificate{ist.serving}, nil
			}}
		pass := func() stages.Result {
			t.Helper()
			res := reportedPass(t, stage, mesh)
			fakeCertManager(t, "istio-system", corp)
			ist.load(t)
			time.Sleep(100 * time.Millisecond)
			return res
		}
		var res stages.Result
		for i := 0; i < 80 && (mesh.Status.Certificates == nil || mesh.Status.Certificates.Rotation == nil || mesh.Status.Certificates.Rotation.PendingPods != 1); i++ {
			res = pass()
		}
		r := mesh.Status.Certificates.Rotation
		if r == nil || r.Phase != meshv1.RotationSwitch || r.SigningSince == nil || r.Issuer != "ClusterIssuer/corp-ca" || !strings.Contains(res.Message, "app: 1") {
			t.Fatalf("rotation %+v: %s", r, res.Message)
		}
		for i := 0; i < 5; i++ {
			if pass(); mesh.Status.Certificates.Rotation == nil || mesh.Status.Certificates.Rotation.Phase != meshv1.RotationSwitch {
				t.Fatalf("the old root went while a proxy started before the switch runs: %+v", mesh.Status.Certificates)
			}
		}
		if err := k8s.Delete(ctx, proxy, client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 80 && (res.Reason != meshv1.ReasonCAReady || mesh.Status.Certificates.Generation != 2); i++ {
			res = pass()
		}
		if mesh.Status.Certificates.Generation != 2 || mesh.Status.Certificates.Issuer != "ClusterIssuer/corp-ca" {
			t.Fatalf("after the rotation: %+v, %s", mesh.Status.Certificates, res.Message)
		}
		if len(ist.roots) != 1 || ist.roots.PEM() == nil || !ParseBundle(corp.pem).Same(ist.roots) {
			t.Fatalf("istiod publishes %s, want the corporate root alone", ist.roots.Fingerprints())
		}
		for _, v := range ist.violations {
			t.Error(v)
		}
		for _, gone := range []struct {
			obj  client.Object
			name string
		}{{&corev1.Secret{}, RootName(1)}, {&corev1.Secret{}, IntermediateSecret(1)}} {
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: "istio-system", Name: gone.name}, gone.obj); !apierrors.IsNotFound(err) {
				t.Errorf("Secret %s of generation 1 is still there (%v)", gone.name, err)
			}
		}
		for _, gone := range []struct{ kind, name string }{{"Certificate", IntermediateName(1)}, {"Certificate", RootName(1)}, {"Issuer", RootName(1)}, {"Issuer", SelfSignedIssuer}} {
			u := &unstructured.Unstructured{}
			u.SetAPIVersion("cert-manager.io/v1")
			u.SetKind(gone.kind)
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: "istio-system", Name: gone.name}, u); err == nil && u.GetDeletionTimestamp() == nil {
				t.Errorf("%s %s is still there", gone.kind, gone.name)
			}
		}
		base := 0
		counting := interceptor.NewClient(k8s, interceptor.Funcs{
			Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
				base++
				return c.Apply(ctx, obj, opts...)
			},
		})
		stage.Client, stage.Applier = counting, &apply.Applier{Client: counting, FieldManager: "meshwright"}
		if _, err := stage.Reconcile(ctx, mesh); err != nil || base != 0 {
			t.Fatalf("a pass over generation 2 at rest wrote %d time(s) (err %v)", base, err)
		}
	})

	t.Run("a lost record is refused, not guessed", func(t *testing.T) {
		mesh := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"},
			Status: meshv1.MeshInstallationStatus{Certificates: &meshv1.CertificatesStatus{Generation: 1,
				Rotation: &meshv1.RootRotationStatus{Phase: meshv1.RotationSwitch}}}}
		cert := &unstructured.Unstructured{}
		cert.SetGroupVersionKind(CertificateGVK)
		cert.SetNamespace("istio-system")
		cert.SetName(IntermediateName(2))
		if err := k8s.Create(ctx, cert); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		if err := k8s.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: CASecret}}); client.IgnoreNotFound(err) != nil {
			t.Fatal(err)
		}
		stage := &Stage{Client: k8s, Reader: k8s, Pods: k8s, Mapper: mapper, Applier: &apply.Applier{Client: k8s, FieldManager: "meshwright"}}
		res, err := stage.Reconcile(ctx, mesh)
		if err != nil || res.State != stages.Failed || res.Reason != meshv1.ReasonCARecordLost || !strings.Contains(res.Message, IntermediateName(2)) {
			t.Fatalf("result %+v, err %v", res, err)
		}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: "istio-system", Name: CASecret}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
			t.Fatalf("cacerts was written from a guess: %v", err)
		}
	})
}

// cleanUp removes what an earlier case left in istio-system.
func cleanUp(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for _, kind := range []string{"Certificate", "Issuer"} {
		list := &unstructured.UnstructuredList{}
		list.SetAPIVersion("cert-manager.io/v1")
		list.SetKind(kind + "List")
		if err := k8s.List(ctx, list, client.InNamespace("istio-system")); err != nil {
			t.Fatal(err)
		}
		for i := range list.Items {
			u := &list.Items[i]
			if len(u.GetFinalizers()) > 0 {
				// The orphan finalizer of an earlier case: no garbage collector here.
				u.SetFinalizers(nil)
				if err := k8s.Update(ctx, u); client.IgnoreNotFound(err) != nil {
					t.Fatal(err)
				}
			}
			if err := k8s.Delete(ctx, u); client.IgnoreNotFound(err) != nil {
				t.Fatal(err)
			}
		}
	}
	if err := k8s.DeleteAllOf(ctx, &corev1.Secret{}, client.InNamespace("istio-system")); err != nil {
		t.Fatal(err)
	}
}
