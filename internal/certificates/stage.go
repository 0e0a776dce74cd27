package certificates

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/apply"
	"github.com/meshwright/meshwright/internal/meshspec"
	"github.com/meshwright/meshwright/internal/stages"
)

// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates;issuers,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=cert-manager.io,resources=clusterissuers,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;delete
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch;create;update;patch

// Kinds of cert-manager this stage reads and writes; the controller watches them once they exist.
var (
	CertificateGVK   = schema.GroupVersionKind{Group: "cert-manager.io", Version: "v1", Kind: "Certificate"}
	IssuerGVK        = schema.GroupVersionKind{Group: "cert-manager.io", Version: "v1", Kind: "Issuer"}
	ClusterIssuerGVK = schema.GroupVersionKind{Group: "cert-manager.io", Version: "v1", Kind: "ClusterIssuer"}
)

// certManagerMissingRetry is how often the stage looks for cert-manager when it is missing. The
// CRD watch usually reports its arrival first, but its event can come before API discovery
// serves the new kinds; this bounds the wait then.
const certManagerMissingRetry = 10 * time.Second

// foreignSecretRecheck is how often a stage blocked by a cacerts Secret that is not ours looks
// whether it is gone.
const foreignSecretRecheck = 15 * time.Second

// Stage is the Certificates stage.
type Stage struct {
	// Client reads from the manager's cache (unstructured objects included) and writes.
	Client  client.Client
	Applier *apply.Applier
	// Reader reads from the API server directly, for the Secrets the cache does not hold (it
	// holds only the operator's own).
	Reader client.Reader
	// Pods reads pods (the ladder's slim cache): a rotation waits for every proxy started before
	// its switch to be replaced.
	Pods client.Reader
	// Serving reads the certificate chain istiod serves, to see which intermediate it signs
	// with; DialServingChain when nil.
	Serving ServingChain
	// loads remembers, per intermediate, whether istiod was seen signing with it, and
	// lastLoaded the last one it was, per installation (see istiodLoaded).
	loadMu     sync.Mutex
	loads      map[string]loadState
	lastLoaded map[string]*x509.Certificate
	// Mapper tells whether cert-manager's CRDs are installed.
	Mapper meta.RESTMapper
	// CertManagerFound is called once cert-manager's kinds are served, so the controller can
	// start watching them; it must be idempotent.
	CertManagerFound func() error
	// Clock tells the time of a pass; nil is the real clock (tests give a fake one).
	Clock clock.PassiveClock
}

// Name implements stages.Stage.
func (s *Stage) Name() meshv1.Stage { return meshv1.StageCertificates }

// ConditionType implements stages.Stage.
func (s *Stage) ConditionType() string { return meshv1.ConditionCertificatesReady }

// Reconcile applies the issuers and Certificates and checks the issued CA.
func (s *Stage) Reconcile(ctx context.Context, mesh *meshv1.MeshInstallation) (stages.Result, error) {
	if missing, err := s.certManagerMissing(); err != nil {
		return stages.Result{}, err
	} else if missing {
		return stages.Result{
			State: stages.Failed, Reason: meshv1.ReasonCertManagerNotFound, RequeueAfter: certManagerMissingRetry,
			Message: "cert-manager is not installed (no cert-manager.io/v1 Certificate and Issuer kinds are served). " +
				"Install cert-manager (https://cert-manager.io/docs/installation/); the rollout continues by itself once its CRDs exist.",
		}, nil
	}
	if s.CertManagerFound != nil {
		if err := s.CertManagerFound(); err != nil {
			return stages.Result{}, err
		}
	}

	// The stage reports status.certificates in its result, starting from what status said.
	st := mesh.Status.Certificates.DeepCopy()
	if st == nil {
		st = &meshv1.CertificatesStatus{}
	}
	res, err := s.reconcileCA(ctx, mesh, st)
	res.Certificates = st
	return res, err
}

// reconcileCA finds the CA's record, starts a rotation the spec asks for, and runs the rotation
// or keeps the steady state; st receives what status.certificates reports.
func (s *Stage) reconcileCA(ctx context.Context, mesh *meshv1.MeshInstallation, st *meshv1.CertificatesStatus) (stages.Result, error) {
	set := SettingsFor(mesh)
	cacerts := &corev1.Secret{}
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: set.Namespace, Name: CASecret}, cacerts); err != nil {
		if !apierrors.IsNotFound(err) {
			return stages.Result{}, err
		}
		cacerts = nil
		if res, blocked, err := s.checkForeignCASecret(ctx, mesh.Name, set.Namespace); err != nil || blocked {
			return res, err
		}
	}
	rec, refused, err := s.record(ctx, mesh, set, cacerts)
	if err != nil || refused != nil {
		if refused != nil {
			return *refused, nil
		}
		return stages.Result{}, err
	}
	// A rotation starts from a usable CA, and (from generation 1 on, where the operator owns
	// cacerts' data) with that data to write again: an apply without it would delete it.
	content := s.steadyContent(ctx, set.Namespace, rec.Generation)
	startable := usable(cacerts, s.now()) && (rec.Generation == 0 || content != nil)
	if trigger, answers := Trigger(mesh, rec, set.Identity()); rec.Rotation == nil && trigger != "" && startable {
		// Recorded first, in the Secret istiod reads: from here on a restarted operator
		// continues this rotation, and leaves generation 0's objects as they are.
		started := rec
		started.Rotation = &Rotation{Phase: meshv1.RotationPrepare, Since: s.now(), Trigger: trigger, Answers: answers,
			Issuer: set.Identity(), OldRoots: string(ParseBundle(cacerts.Data["ca.crt"]).PEM()),
			OldIntermediate: string(ParseBundle(cacerts.Data["tls.crt"])[:1].PEM())}
		if err := s.writeCASecret(ctx, mesh.Name, set.Namespace, cacerts, started, content); err != nil {
			return stages.Result{}, err
		}
		rec = started
	}
	pending := 0
	defer func() { Mirror(st, rec, set, pending, s.now()) }()
	if rec.Rotation != nil {
		return s.rotate(ctx, mesh, st, set, &rec, cacerts, &pending)
	}
	return s.steady(ctx, mesh, st, set, rec, cacerts)
}

// steady keeps a generation's objects applied and checks the CA istiod reads.
func (s *Stage) steady(ctx context.Context, mesh *meshv1.MeshInstallation, st *meshv1.CertificatesStatus, set Settings, rec Record, cacerts *corev1.Secret) (stages.Result, error) {
	gen := rec.Generation
	kind, name := set.Signer(gen)
	issuer := kind + "/" + name
	st.Issuer = issuer
	for _, obj := range Desired(mesh.Name, set, gen) {
		if _, err := s.Applier.Apply(ctx, obj); err != nil {
			return stages.Result{}, err
		}
	}
	if !set.SelfSigned {
		if res, waiting, err := s.checkUserIssuer(ctx, set); err != nil || waiting {
			return res, err
		}
	}
	if res, waiting, err := s.waitIssued(ctx, set.Namespace, gen); err != nil || waiting {
		return res, err
	}

	secret := cacerts
	if gen > 0 {
		// From the first rotation on, the operator composes cacerts from the intermediate's own
		// Secret: a renewal by cert-manager reaches istiod through here.
		content := s.steadyContent(ctx, set.Namespace, gen)
		if content == nil {
			return issuing("the Secret " + IntermediateSecret(gen) + " is not written yet"), nil
		}
		if err := s.writeCASecret(ctx, mesh.Name, set.Namespace, cacerts, rec, content); err != nil {
			return stages.Result{}, err
		}
		secret = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: set.Namespace, Name: CASecret}, Data: content}
	}
	if secret == nil {
		return issuing("the cacerts Secret is not written yet"), nil
	}
	now := s.now()
	ca, err := CheckSecret(secret, now)
	if err != nil {
		return stages.Result{
			State: stages.NotReady, Reason: meshv1.ReasonInvalidCA,
			Message: fmt.Sprintf("Secret %s/%s does not hold a usable CA: %v. cert-manager reissues it when the Certificate %s is renewed (`cmctl renew %s -n %s`).",
				set.Namespace, IntermediateSecret(gen), err, IntermediateName(gen), IntermediateName(gen), set.Namespace),
		}, nil
	}
	notAfter := metav1.NewTime(ca.NotAfter)
	st.NotAfter = &notAfter

	res := stages.Result{
		State: stages.Ready, Reason: meshv1.ReasonCAReady,
		Message: fmt.Sprintf("Secret %s/%s holds istiod's intermediate CA, signed by %s, valid until %s.",
			set.Namespace, CASecret, issuer, ca.NotAfter.UTC().Format(time.RFC3339)),
	}
	if ExpiringSoon(ca, now) {
		res.Degraded = true
		res.Reason = meshv1.ReasonCAExpiringSoon
		res.Message = fmt.Sprintf("istiod's intermediate CA in %s/%s expires at %s and has not been renewed; check the Certificate %s and its issuer %s.",
			set.Namespace, CASecret, ca.NotAfter.UTC().Format(time.RFC3339), IntermediateName(gen), issuer)
		// Look again at expiry, when the check fails outright; renewal reports sooner.
		if until := ca.NotAfter.Sub(now); until > 0 {
			res.RequeueAfter = until + time.Second
		}
	} else {
		// Look again when the CA enters its last sixth of life, so the warning is not missed.
		res.RequeueAfter = ca.NotAfter.Sub(now) - ca.NotAfter.Sub(ca.NotBefore)/6 + time.Second
	}
	stale, recheck, err := s.istiodLoaded(ctx, mesh.Name, secret, set.TrustPropagation, now)
	if err != nil {
		return stages.Result{}, err
	}
	if recheck > 0 && recheck < res.RequeueAfter {
		res.RequeueAfter = recheck
	}
	if stale != "" && !res.Degraded {
		res.Degraded, res.Reason, res.Message = true, meshv1.ReasonIstiodCANotLoaded, stale
	}
	return res, nil
}

// usable reports whether cacerts holds a CA istiod can sign with: a rotation starts from one.
func usable(cacerts *corev1.Secret, now time.Time) bool {
	if cacerts == nil {
		return false
	}
	_, err := CheckSecret(cacerts, now)
	return err == nil
}

// waitIssued reports Issuing while a generation's intermediate Certificate is not Ready.
func (s *Stage) waitIssued(ctx context.Context, ns string, gen int) (stages.Result, bool, error) {
	cert := &unstructured.Unstructured{}
	cert.SetGroupVersionKind(CertificateGVK)
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: IntermediateName(gen)}, cert); err != nil {
		if apierrors.IsNotFound(err) {
			return issuing("the Certificate was just created"), true, nil
		}
		return stages.Result{}, true, err
	}
	if ok, reason, msg := readyCondition(cert); !ok {
		if reason == "" {
			msg = "cert-manager has not reported on it yet"
		}
		return issuing(msg), true, nil
	}
	return stages.Result{}, false, nil
}

// checkForeignCASecret refuses to take over a cacerts Secret someone else made (a plug-in CA
// created by hand, as Istio's docs describe): cert-manager would overwrite it. It looks only
// until the operator's own Certificate exists, so a steady pass costs no extra request.
func (s *Stage) checkForeignCASecret(ctx context.Context, installation, ns string) (stages.Result, bool, error) {
	if s.Reader == nil {
		return stages.Result{}, false, nil
	}
	cert := &unstructured.Unstructured{}
	cert.SetGroupVersionKind(CertificateGVK)
	err := s.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: CACertificate}, cert)
	if err == nil {
		return stages.Result{}, false, nil
	}
	if !apierrors.IsNotFound(err) {
		return stages.Result{}, true, err
	}
	secret := &metav1.PartialObjectMetadata{}
	secret.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if err := s.Reader.Get(ctx, client.ObjectKey{Namespace: ns, Name: CASecret}, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return stages.Result{}, false, nil
		}
		return stages.Result{}, true, err
	}
	if secret.Labels[meshv1.LabelInstallation] == installation {
		return stages.Result{}, false, nil
	}
	// The Secret is not ours, so no watch reports its removal: look again now and then.
	return stages.Result{State: stages.Failed, Reason: meshv1.ReasonCASecretExists, RequeueAfter: foreignSecretRecheck,
		Message: fmt.Sprintf("Secret %s/%s already exists and was not made by this MeshInstallation (a plug-in CA?). Meshwright will not overwrite it: "+
			"move it aside, or issue the mesh CA from your own PKI with spec.certificates.issuerRef.", ns, CASecret)}, true, nil
}

// checkUserIssuer reports NotReady while the user's issuer is missing or not Ready.
func (s *Stage) checkUserIssuer(ctx context.Context, set Settings) (stages.Result, bool, error) {
	u := &unstructured.Unstructured{}
	key := client.ObjectKey{Name: set.IssuerName}
	if set.IssuerKind == "Issuer" {
		u.SetGroupVersionKind(IssuerGVK)
		key.Namespace = set.Namespace
	} else {
		u.SetGroupVersionKind(ClusterIssuerGVK)
	}
	where := set.IssuerKind + " " + set.IssuerName
	if key.Namespace != "" {
		where += " in namespace " + key.Namespace
	}
	if err := s.Client.Get(ctx, key, u); err != nil {
		if apierrors.IsNotFound(err) {
			return stages.Result{State: stages.NotReady, Reason: meshv1.ReasonIssuerNotReady,
				Message: fmt.Sprintf("spec.certificates.issuerRef names %s, which does not exist: create it or correct the reference.", where)}, true, nil
		}
		return stages.Result{}, true, err
	}
	if ok, _, msg := readyCondition(u); !ok {
		return stages.Result{State: stages.NotReady, Reason: meshv1.ReasonIssuerNotReady,
			Message: fmt.Sprintf("%s is not Ready: %s", where, msg)}, true, nil
	}
	return stages.Result{}, false, nil
}

// Cleanup deletes the stage's cert-manager objects and the Secrets they wrote. The namespace
// stays: it may hold objects that are not ours.
func (s *Stage) Cleanup(ctx context.Context, mesh *meshv1.MeshInstallation) (bool, error) {
	if missing, err := s.certManagerMissing(); err != nil {
		return false, err
	} else if !missing {
		// By label, not by the current settings: what earlier settings created goes too.
		for _, gvk := range []schema.GroupVersionKind{CertificateGVK, IssuerGVK} {
			if err := s.deleteLabelled(ctx, mesh.Name, gvk, func(string) bool { return true }); err != nil {
				return false, err
			}
		}
	}
	ns := meshspec.ControlPlaneNamespace(mesh)
	// The namespace stays (it may hold objects that are not ours) but is handed back: without
	// the operator's labels nothing marks it as the operator's.
	// Read as unstructured, like the applier does, so one informer serves both.
	namespace := &unstructured.Unstructured{}
	namespace.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := s.Client.Get(ctx, client.ObjectKey{Name: ns}, namespace); err != nil && !apierrors.IsNotFound(err) {
		return false, err
	} else if err == nil && namespace.GetLabels()[meshv1.LabelInstallation] == mesh.Name {
		if err := apply.Release(ctx, s.Client, namespace, meshv1.LabelManagedBy, meshv1.LabelInstallation); err != nil {
			return false, err
		}
	}
	// Every generation's Secrets; never one the operator did not create.
	secrets := &corev1.SecretList{}
	if err := s.Client.List(ctx, secrets, client.InNamespace(ns), client.MatchingLabels{meshv1.LabelInstallation: mesh.Name}); err != nil {
		return false, err
	}
	for i := range secrets.Items {
		secret := &secrets.Items[i]
		n := secret.Name
		if n != CASecret && !strings.HasPrefix(n, RootCertificate) && !strings.HasPrefix(n, CACertificate) {
			continue
		}
		if err := s.Client.Delete(ctx, secret); err != nil && !apierrors.IsNotFound(err) {
			return false, err
		}
	}
	return true, nil
}

// deleteLabelled deletes the objects of a kind that carry the installation's label and whose
// name passes the filter. Objects without the label are never touched.
func (s *Stage) deleteLabelled(ctx context.Context, installation string, gvk schema.GroupVersionKind, filter func(name string) bool) error {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	if err := s.Client.List(ctx, list, client.MatchingLabels{meshv1.LabelInstallation: installation}); err != nil {
		return fmt.Errorf("listing %s: %w", gvk.Kind, err)
	}
	for i := range list.Items {
		o := &list.Items[i]
		if !filter(o.GetName()) || o.GetDeletionTimestamp() != nil {
			continue
		}
		o.SetGroupVersionKind(gvk)
		if err := s.Client.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting %s %s/%s: %w", gvk.Kind, o.GetNamespace(), o.GetName(), err)
		}
	}
	return nil
}

func (s *Stage) certManagerMissing() (bool, error) {
	for _, gvk := range []schema.GroupVersionKind{CertificateGVK, IssuerGVK} {
		if _, err := s.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			if meta.IsNoMatchError(err) {
				return true, nil
			}
			return false, err
		}
	}
	return false, nil
}

func (s *Stage) now() time.Time { return stages.Now(s.Clock) }

func issuing(msg string) stages.Result {
	return stages.Result{State: stages.NotReady, Reason: meshv1.ReasonIssuing, Message: "cert-manager is issuing istiod's intermediate CA: " + msg}
}

// readyCondition reads a cert-manager object's Ready condition.
func readyCondition(u *unstructured.Unstructured) (bool, string, string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] != "Ready" {
			continue
		}
		reason, _ := m["reason"].(string)
		msg, _ := m["message"].(string)
		return m["status"] == "True", reason, msg
	}
	return false, "", "no Ready condition yet"
}
