package certificates

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/names"
	"github.com/meshwright/meshwright/internal/revision"
	"github.com/meshwright/meshwright/internal/stages"
)

// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=create;patch

// A root rotation, in the way of Istio's multi-root guidance (ISTIO_MULTIROOT_MESH): istiod
// accepts a new root bundle that holds the old one or is held by it, so the bundle grows to
// both roots, signing switches to the new intermediate, every proxy gets a new certificate,
// and the bundle shrinks to the new root. Each phase is one write of cacerts (content and
// record together) and ends on a gate:
//
//	Prepare  cert-manager issues the new root and intermediate          → both Ready
//	Trust    cacerts: old intermediate, old + new roots                  → istiod published both
//	                                                                       everywhere, no running
//	                                                                       proxy that keeps its
//	                                                                       roots started before
//	                                                                       that (the ladder
//	                                                                       restarts workloads), and
//	                                                                       TrustPropagation passed
//	Switch   cacerts: new intermediate, old + new roots                  → istiod seen signing with
//	                                                                       it (its serving
//	                                                                       certificate), then no
//	                                                                       running proxy started
//	                                                                       before that (the ladder
//	                                                                       restarts workloads)
//	Drop     cacerts: new intermediate, new root                         → istiod published the
//	                                                                       new root alone; the old
//	                                                                       generation is deleted

// rotationRecheck is how often a rotation looks at what no watch reports (istiod's ConfigMaps).
const rotationRecheck = 5 * time.Second

// RootCertConfigMap is the ConfigMap istiod writes its trust bundle into, in every namespace.
const RootCertConfigMap = "istio-ca-root-cert"

// record reads the CA's record: from cacerts, else from status (the Secret was lost), else it
// is generation 0 as cert-manager made it, signed by the issuer its Certificate names.
// A rotation recorded in status but not on cacerts (the Secret deleted, the annotation edited)
// is refused: guessing the CA istiod signs with could cut proxies off.
func (s *Stage) record(ctx context.Context, mesh *meshv1.MeshInstallation, set Settings, cacerts *corev1.Secret) (Record, *stages.Result, error) {
	if cacerts != nil {
		if v, ok := cacerts.Annotations[meshv1.AnnotationCA]; ok {
			rec, err := ParseRecord(v)
			if err == nil && consistent(rec, mesh.Status.Certificates) {
				return rec, nil, nil
			}
			if err == nil {
				err = errors.New("it is behind status.certificates, or its rotation is incomplete")
			}
			log.FromContext(ctx).Info("ignoring an unusable CA record", "error", err.Error())
		}
	}
	if st := mesh.Status.Certificates; st != nil && st.Rotation != nil {
		next := IntermediateName(int(st.Generation) + 1)
		cert := &unstructured.Unstructured{}
		cert.SetGroupVersionKind(CertificateGVK)
		err := s.Client.Get(ctx, client.ObjectKey{Namespace: set.Namespace, Name: next}, cert)
		if err == nil {
			return Record{}, &stages.Result{State: stages.Failed, Reason: meshv1.ReasonCARecordLost, RequeueAfter: foreignSecretRecheck,
				Message: fmt.Sprintf("The record of the root rotation in phase %s was lost with the Secret %s/%s or its %s annotation. Meshwright will not guess which CA istiod must sign with, since a wrong guess cuts proxies off: "+
					"restore cacerts, annotation included, from a backup to let the rotation go on. To give it up instead, set spec.certificates back to the issuer it started from (%s), then delete the Certificate %s/%s; "+
					"workloads already restarted onto the new intermediate need one more restart.",
					st.Rotation.Phase, set.Namespace, CASecret, meshv1.AnnotationCA, st.Issuer, set.Namespace, next)}, nil
		}
		if !apierrors.IsNotFound(err) {
			return Record{}, nil, err
		}
	}
	if rec, ok := recordFromStatus(mesh.Status.Certificates); ok {
		rec.Issuer = set.Identity()
		return rec, nil, nil
	}
	cert := &unstructured.Unstructured{}
	cert.SetGroupVersionKind(CertificateGVK)
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: set.Namespace, Name: IntermediateName(0)}, cert); err != nil {
		if apierrors.IsNotFound(err) {
			return Record{Issuer: set.Identity()}, nil, nil
		}
		return Record{}, nil, err
	}
	kind, _, _ := unstructured.NestedString(cert.Object, "spec", "issuerRef", "kind")
	name, _, _ := unstructured.NestedString(cert.Object, "spec", "issuerRef", "name")
	if kind == "Issuer" && name == RootName(0) {
		return Record{Issuer: SelfSignedIdentity}, nil, nil
	}
	if kind == "" {
		kind = "Issuer"
	}
	return Record{Issuer: kind + "/" + name}, nil, nil
}

// steadyContent is what cacerts holds for a generation outside a rotation: nil for
// generation 0 (cert-manager writes it) or while the generation's Secret is not complete.
func (s *Stage) steadyContent(ctx context.Context, ns string, gen int) map[string][]byte {
	if gen == 0 {
		return nil
	}
	src := s.intermediate(ctx, ns, gen)
	if src == nil {
		return nil
	}
	return map[string][]byte{"tls.crt": src.Data["tls.crt"], "tls.key": src.Data["tls.key"], "ca.crt": ParseBundle(src.Data["ca.crt"]).PEM()}
}

// intermediate reads a generation's intermediate Secret from the cache; nil if it is missing
// or incomplete.
func (s *Stage) intermediate(ctx context.Context, ns string, gen int) *corev1.Secret {
	secret := &corev1.Secret{}
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: IntermediateSecret(gen)}, secret); err != nil {
		return nil
	}
	for _, k := range []string{"tls.crt", "tls.key", "ca.crt"} {
		if len(secret.Data[k]) == 0 {
			return nil
		}
	}
	return secret
}

// writeCASecret makes cacerts hold the record and, unless content is nil, that content. It
// writes only when something differs. Whatever the operator wrote before is always written
// again in full: server-side apply would delete a field the operator stops sending.
func (s *Stage) writeCASecret(ctx context.Context, installation, ns string, current *corev1.Secret, rec Record, content map[string][]byte) error {
	labels := map[string]string{meshv1.LabelManagedBy: meshv1.ManagedByValue, meshv1.LabelInstallation: installation}
	annotation := rec.String()
	if current != nil && current.Annotations[meshv1.AnnotationCA] == annotation && hasLabels(current.Labels, labels) && holds(current.Data, content) {
		return nil
	}
	ac := corev1ac.Secret(CASecret, ns).WithLabels(labels).WithAnnotations(map[string]string{meshv1.AnnotationCA: annotation})
	if current != nil && current.ResourceVersion != "" {
		// Decided from this copy: if the cache lags behind the operator's last write, the
		// write fails with a conflict and the pass runs again, rather than putting back the
		// content of a phase already left.
		ac = ac.WithResourceVersion(current.ResourceVersion)
	}
	if content != nil {
		ac = ac.WithType(corev1.SecretTypeTLS).WithData(content)
	}
	if err := s.Client.Apply(ctx, ac, client.FieldOwner(s.Applier.FieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("writing Secret %s/%s: %w", ns, CASecret, err)
	}
	if current != nil && ac.ResourceVersion != nil {
		// The copy now says what was written, so a second write in the same pass locks on
		// the right version.
		current.ResourceVersion = *ac.ResourceVersion
		if current.Annotations == nil {
			current.Annotations = map[string]string{}
		}
		current.Annotations[meshv1.AnnotationCA] = annotation
		if content != nil {
			current.Data = content
		}
	}
	return nil
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func holds(have, want map[string][]byte) bool {
	for k, v := range want {
		if !bytes.Equal(have[k], v) {
			return false
		}
	}
	return true
}

// rotate runs the phase the record is in, and moves it on when its gate passes.
func (s *Stage) rotate(ctx context.Context, mesh *meshv1.MeshInstallation, st *meshv1.CertificatesStatus, spec Settings, rec *Record, cacerts *corev1.Secret, pending *int) (stages.Result, error) {
	rot := rec.Rotation
	p := &rotationPass{Stage: s, ctx: ctx, mesh: mesh, status: st, rec: rec, rot: rot, cacerts: cacerts, pending: pending,
		from: rec.Generation, to: rec.To(), set: spec.WithIdentity(rot.Issuer), now: s.now()}
	kind, name := spec.WithIdentity(rec.Issuer).Signer(p.from)
	st.Issuer = kind + "/" + name
	if res, ready, err := p.prepareNext(); !ready || err != nil {
		return res, err
	}
	phase, ok := rotationPhases[rot.Phase]
	if !ok {
		return stages.Result{}, fmt.Errorf("unknown rotation phase %q", rot.Phase)
	}
	return phase(p)
}

// rotationPhases run the phase a record is in, one function each; each ends on its gate.
var rotationPhases = map[meshv1.RotationPhase]func(*rotationPass) (stages.Result, error){
	meshv1.RotationPrepare: (*rotationPass).prepare,
	meshv1.RotationTrust:   (*rotationPass).trust,
	meshv1.RotationSwitch:  (*rotationPass).switchSigning,
	meshv1.RotationDrop:    (*rotationPass).drop,
}

// rotationPass is one pass of a root rotation: what the phases read and write.
type rotationPass struct {
	*Stage
	ctx  context.Context
	mesh *meshv1.MeshInstallation
	// status receives what status.certificates reports.
	status  *meshv1.CertificatesStatus
	rec     *Record
	rot     *Rotation
	cacerts *corev1.Secret
	// pending receives, in the Switch phase, the number of proxies started before istiod switched.
	pending *int
	// from and to are the generations the rotation leaves and reaches; set is the spec with the
	// issuer the rotation started with.
	from, to int
	set      Settings
	now      time.Time

	// next is the new generation's intermediate Secret; old the old intermediate's certificate
	// and key (nil when unreadable).
	next *corev1.Secret
	old  map[string][]byte
	// oldRoots and newRoots are the two roots; both their union.
	oldRoots, newRoots, both Bundle
}

// progress is the stage's result while the rotation goes on.
func (p *rotationPass) progress(format string, args ...any) stages.Result {
	return stages.Result{State: stages.Ready, Reason: meshv1.ReasonRotatingRoot, RequeueAfter: rotationRecheck,
		Message: fmt.Sprintf("Rotating the mesh root (%s), phase %s: ", p.rot.Trigger, p.rot.Phase) + fmt.Sprintf(format, args...)}
}

// prepareNext applies the new generation's objects (with the issuer the rotation started with;
// the old generation's are left as they are until the end), waits until its intermediate is
// issued and usable, and reads both generations. ready is false while the pass must stop there.
func (p *rotationPass) prepareNext() (res stages.Result, ready bool, err error) {
	for _, obj := range Desired(p.mesh.Name, p.set, p.to) {
		if _, err := p.Applier.Apply(p.ctx, obj); err != nil {
			return stages.Result{}, false, err
		}
	}
	if !p.set.SelfSigned {
		if res, waiting, err := p.checkUserIssuer(p.ctx, p.set); err != nil || waiting {
			res.State, res.Message = stages.Ready, fmt.Sprintf("Rotating the mesh root (%s), phase %s: %s", p.rot.Trigger, p.rot.Phase, res.Message)
			return res, false, err
		}
	}
	if res, waiting, err := p.waitIssued(p.ctx, p.set.Namespace, p.to); err != nil || waiting {
		return p.progress("%s", res.Message), false, err
	}
	if p.next = p.intermediate(p.ctx, p.set.Namespace, p.to); p.next == nil {
		return p.progress("the Secret %s is not written yet.", IntermediateSecret(p.to)), false, nil
	}
	if _, err := CheckSecret(p.next, p.now); err != nil {
		return stages.Result{State: stages.NotReady, Reason: meshv1.ReasonInvalidCA,
			Message: fmt.Sprintf("Rotating the mesh root (%s): Secret %s/%s does not hold a usable CA: %v.", p.rot.Trigger, p.set.Namespace, IntermediateSecret(p.to), err)}, false, nil
	}
	p.oldRoots, p.newRoots = ParseBundle([]byte(p.rot.OldRoots)), ParseBundle(p.next.Data["ca.crt"])
	p.both = p.oldRoots.Union(p.newRoots)
	if p.from == 0 {
		if p.cacerts != nil {
			p.old = map[string][]byte{"tls.crt": p.cacerts.Data["tls.crt"], "tls.key": p.cacerts.Data["tls.key"]}
		}
	} else if src := p.intermediate(p.ctx, p.set.Namespace, p.from); src != nil {
		p.old = map[string][]byte{"tls.crt": src.Data["tls.crt"], "tls.key": src.Data["tls.key"]}
	}
	return stages.Result{}, true, nil
}

// newContent is cacerts with the new intermediate and the given roots.
func (p *rotationPass) newContent(roots Bundle) map[string][]byte {
	return map[string][]byte{"tls.crt": p.next.Data["tls.crt"], "tls.key": p.next.Data["tls.key"], "ca.crt": roots.PEM()}
}

// write writes cacerts with the record as it stands and content.
func (p *rotationPass) write(content map[string][]byte) error {
	return p.writeCASecret(p.ctx, p.mesh.Name, p.set.Namespace, p.cacerts, *p.rec, content)
}

// record changes the rotation and writes it with content; if the write fails, the record stays
// as it was, so status never shows a phase cacerts does not hold.
func (p *rotationPass) record(change func(*Rotation), content map[string][]byte) error {
	before := *p.rot
	change(p.rot)
	if err := p.write(content); err != nil {
		*p.rot = before
		return err
	}
	return nil
}

// enter moves the rotation to phase, with cacerts holding content.
func (p *rotationPass) enter(phase meshv1.RotationPhase, content map[string][]byte) error {
	return p.record(func(r *Rotation) { r.Phase, r.Since, r.Observed = phase, p.now, time.Time{} }, content)
}

// prepare: once the new intermediate is issued, cacerts publishes both roots beside the old
// intermediate (Trust).
func (p *rotationPass) prepare() (stages.Result, error) {
	if p.old == nil || len(p.old["tls.crt"]) == 0 {
		return p.progress("the old intermediate is not readable from %s.", IntermediateSecret(p.from)), nil
	}
	if p.from == 0 {
		// cert-manager must stop writing cacerts before the operator composes it. The Secret
		// stays: cert-manager does not own it by reference.
		if err := p.deleteNamed(p.ctx, p.set.Namespace, CertificateGVK, IntermediateName(0), client.PropagationPolicy(metav1.DeletePropagationOrphan)); err != nil {
			return stages.Result{}, err
		}
	}
	p.old["ca.crt"] = p.both.PEM()
	if err := p.enter(meshv1.RotationTrust, p.old); err != nil {
		return stages.Result{}, err
	}
	return p.progress("cacerts now publishes both roots (%s); istiod still signs with the old intermediate.", p.both.Fingerprints()), nil
}

// trust: once every istiod runs with ISTIO_MULTIROOT_MESH, istiod has published both roots
// everywhere, and trustPropagation has passed, cacerts switches to the new intermediate (Switch).
func (p *rotationPass) trust() (stages.Result, error) {
	if p.old == nil {
		return p.progress("the old intermediate is not readable from %s.", IntermediateSecret(p.from)), nil
	}
	p.old["ca.crt"] = p.both.PEM()
	if err := p.write(p.old); err != nil {
		return stages.Result{}, err
	}
	_, rolling, err := p.istiods(p.ctx, p.mesh.Name)
	if err != nil {
		return stages.Result{}, err
	}
	if len(rolling) > 0 {
		return p.progress("waiting for %s to roll out with ISTIO_MULTIROOT_MESH=true, without which istiod refuses a second root.", strings.Join(rolling, ", ")), nil
	}
	missing, err := p.unpublished(p.ctx, p.set.Namespace, p.both)
	if err != nil {
		return stages.Result{}, err
	}
	if missing != "" {
		return p.progress("waiting for istiod to publish both roots in %s (in %s).", RootCertConfigMap, missing), nil
	}
	if p.rot.Observed.IsZero() {
		observed, err := p.freshFrom()
		if err != nil {
			return stages.Result{}, err
		}
		if err := p.record(func(r *Rotation) { r.Observed = observed }, p.old); err != nil {
			return stages.Result{}, err
		}
	}
	// A proxy takes the new root live only if its agent takes its ProxyConfig over xDS;
	// others hold the roots they got with their certificate, and once signing switches they
	// would refuse every peer restarted onto the new intermediate (and be refused by it).
	if res, done, err := p.awaitRestarts(true, "istiod publishes both roots everywhere; proxies that keep the roots they started with restart from %s.",
		"istiod publishes both roots everywhere since %s; %d pod(s) with Istio's proxy started before and keep the roots they started with (proxyless gRPC, or a proxy without "+
			revision.ProxyConfigXDSAgentEnv+"=true), so they do not trust the new root yet. The ladder restarts the workloads of the namespaces it manages, one slot at a time (%s); restart others yourself (kubectl rollout restart). Signing switches to the new intermediate once none is left."); !done || err != nil {
		return res, err
	}
	if left := p.rot.Observed.Add(p.set.TrustPropagation).Sub(p.now); left > 0 {
		res := p.progress("istiod publishes both roots everywhere; signing switches to the new intermediate at %s (spec.certificates.trustPropagation %s), once every proxy had time to receive them.",
			p.rot.Observed.Add(p.set.TrustPropagation).UTC().Format(time.RFC3339), p.set.TrustPropagation)
		res.RequeueAfter = left
		return res, nil
	}
	if err := p.enter(meshv1.RotationSwitch, p.newContent(p.both)); err != nil {
		return stages.Result{}, err
	}
	return p.progress("istiod signs with the new intermediate now; workloads restart so that every proxy gets a certificate from it."), nil
}

// switchSigning: once istiod is seen signing with the new intermediate and no proxy started
// before that is left (the ladder restarts them), the old root leaves the bundle (Drop).
func (p *rotationPass) switchSigning() (stages.Result, error) {
	if err := p.write(p.newContent(p.both)); err != nil {
		return stages.Result{}, err
	}
	if p.rot.Observed.IsZero() {
		if res, seen, err := p.observeSwitch(); !seen || err != nil {
			return res, err
		}
	}
	if res, done, err := p.awaitRestarts(false, "istiod signs with the new intermediate; workloads restart from %s.",
		"istiod signs with the new intermediate since %s; %d pod(s) with Istio's proxy started before and may hold a certificate of the old one. The ladder restarts the workloads of the namespaces it manages, one slot at a time (%s); restart others yourself (kubectl rollout restart). The old root is dropped once none is left."); !done || err != nil {
		return res, err
	}
	if err := p.enter(meshv1.RotationDrop, p.newContent(p.newRoots)); err != nil {
		return stages.Result{}, err
	}
	return p.progress("every proxy started after istiod switched to the new intermediate; the old root leaves the bundle."), nil
}

// observeSwitch records when istiod was seen signing with the new intermediate: proxies started
// from then on hold certificates of it. seen is false while istiod does not yet.
func (p *rotationPass) observeSwitch() (res stages.Result, seen bool, err error) {
	signing, why, err := p.switched(p.ctx, p.mesh.Name, p.next, []byte(p.rot.OldIntermediate), p.oldRoots, p.rot.Since.Add(p.set.TrustPropagation), p.now)
	if err != nil {
		return stages.Result{}, false, err
	}
	if !signing {
		return p.progress("%s", why), false, nil
	}
	observed, err := p.freshFrom()
	if err != nil {
		return stages.Result{}, false, err
	}
	if err := p.record(func(r *Rotation) { r.Observed = observed }, p.newContent(p.both)); err != nil {
		return stages.Result{}, false, err
	}
	return stages.Result{}, true, nil
}

// awaitRestarts waits for a phase's restarts: until its time has come (Observed: the ladder
// restarts from then), then until no pod started before it is left (with staticTrust, only
// those whose proxy keeps the roots it started with), reporting their count as pending. done
// is false while the pass must stop with res. waiting formats the time; pending the time, the
// count and the namespaces.
func (p *rotationPass) awaitRestarts(staticTrust bool, waiting, pending string) (res stages.Result, done bool, err error) {
	since := p.rot.Observed.UTC().Format(time.RFC3339)
	if wait := p.rot.Observed.Sub(p.now); wait > 0 {
		res := p.progress(waiting, since)
		res.RequeueAfter = wait
		return res, false, nil
	}
	stale, err := p.stalePods(p.ctx, p.rot.Observed, staticTrust)
	if err != nil {
		return stages.Result{}, false, err
	}
	*p.pending = stale.total
	if stale.total > 0 {
		return p.progress(pending, since, stale.total, stale.describe()), false, nil
	}
	return stages.Result{}, true, nil
}

// freshFrom is, once istiod is seen on a phase's content, the time from which pods started
// are sure to have got it with their certificate. Pods carry their creation time in whole
// seconds: a pod created in this second counts as started before, and restarts wait for the
// next. The replica that was seen may not be the last to reload cacerts: with several, the
// others get trustPropagation to follow, as proxies got it for the roots.
func (p *rotationPass) freshFrom() (time.Time, error) {
	observed := p.now.Truncate(time.Second).Add(time.Second)
	replicas, _, err := p.istiods(p.ctx, p.mesh.Name)
	if err != nil {
		return time.Time{}, err
	}
	if replicas > 1 {
		observed = observed.Add(p.set.TrustPropagation)
	}
	return observed, nil
}

// drop: once istiod publishes the new root alone, the old generation's objects go and the
// record ends the rotation.
func (p *rotationPass) drop() (stages.Result, error) {
	if err := p.write(p.newContent(p.newRoots)); err != nil {
		return stages.Result{}, err
	}
	missing, err := p.unpublished(p.ctx, p.set.Namespace, p.newRoots)
	if err != nil {
		return stages.Result{}, err
	}
	if missing != "" {
		return p.progress("waiting for istiod to publish the new root alone in %s (in %s).", RootCertConfigMap, missing), nil
	}
	if err := p.deleteGeneration(p.ctx, p.mesh.Name, p.set.Namespace, p.from); err != nil {
		return stages.Result{}, err
	}
	if !p.set.SelfSigned {
		// Only a root of the operator's needs the self-signed Issuer.
		if err := p.deleteNamed(p.ctx, p.set.Namespace, IssuerGVK, SelfSignedIssuer); err != nil {
			return stages.Result{}, err
		}
	}
	done := Record{Generation: p.to, Issuer: p.rot.Issuer, RotatedFor: p.rec.RotatedFor}
	if p.rot.Answers != "" {
		done.RotatedFor = p.rot.Answers
	}
	if err := p.writeCASecret(p.ctx, p.mesh.Name, p.set.Namespace, p.cacerts, done, p.newContent(p.newRoots)); err != nil {
		return stages.Result{}, err
	}
	*p.rec = done
	k, n := p.set.Signer(p.to)
	p.status.Issuer = k + "/" + n
	return stages.Result{State: stages.Ready, Reason: meshv1.ReasonCAReady, RequeueAfter: rotationRecheck,
		Message: fmt.Sprintf("The mesh root was rotated (%s): istiod signs with an intermediate of the new root, which every namespace trusts alone.", p.rot.Trigger)}, nil
}

// switched tells whether istiod signs with the new intermediate, and if not, why the rotation
// waits. When istiod's serving certificate cannot tell, the rotation trusts a reload after
// fallbackAt (the Switch phase's start plus TrustPropagation), and says so.
func (s *Stage) switched(ctx context.Context, installation string, next *corev1.Secret, old []byte, oldRoots Bundle, fallbackAt, now time.Time) (bool, string, error) {
	intermediate, err := firstCert(next.Data["tls.crt"])
	if err != nil {
		return false, "", err
	}
	previous, _ := firstCert(old)
	ok, err := s.istiodSigns(ctx, installation, intermediate, previous, oldRoots)
	switch {
	case ok:
		return true, "", nil
	case err == nil:
		return false, "waiting for istiod to load the new intermediate from cacerts: it still serves a certificate of the old one.", nil
	case !errors.Is(err, errUnobservable):
		return false, "", err
	case !now.Before(fallbackAt):
		log.FromContext(ctx).Info("assuming istiod reloaded cacerts", "reason", err.Error())
		return true, "", nil
	}
	return false, fmt.Sprintf("%v; assuming istiod reloads cacerts by %s.", err, fallbackAt.UTC().Format(time.RFC3339)), nil
}

func firstCert(data []byte) (*x509.Certificate, error) {
	b := ParseBundle(data)
	if len(b) == 0 {
		return nil, errors.New("no certificate")
	}
	return x509.ParseCertificate(b[0].Bytes)
}

// unpublished lists the namespaces whose istio-ca-root-cert does not hold exactly want: every
// namespace istiod wrote it into, the control plane's, and every namespace with proxies. One
// request, and only while a rotation waits on it.
func (s *Stage) unpublished(ctx context.Context, controlPlane string, want Bundle) (string, error) {
	if s.Reader == nil {
		return "", nil
	}
	list := &corev1.ConfigMapList{}
	if err := s.Reader.List(ctx, list, client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", RootCertConfigMap)}); err != nil {
		return "", fmt.Errorf("listing %s ConfigMaps: %w", RootCertConfigMap, err)
	}
	need := map[string]bool{controlPlane: true}
	stale, err := s.stalePods(ctx, time.Time{}, false)
	if err != nil {
		return "", err
	}
	for ns := range stale.all {
		need[ns] = true
	}
	var missing []string
	for _, cm := range list.Items {
		delete(need, cm.Namespace)
		if !ParseBundle([]byte(cm.Data["root-cert.pem"])).Same(want) {
			missing = append(missing, cm.Namespace)
		}
	}
	missing = append(missing, slices.Collect(maps.Keys(need))...)
	slices.Sort(missing)
	return names.List(missing), nil
}

// pods counts running pods with Istio's proxy that started before a time, by namespace.
type pods struct {
	total int
	all   map[string]int // every namespace with proxies, started before or not
	by    map[string]int
}

func (p pods) describe() string {
	var out []string
	for _, ns := range slices.Sorted(maps.Keys(p.by)) {
		out = append(out, fmt.Sprintf("%s: %d", ns, p.by[ns]))
	}
	return names.List(out)
}

// stalePods finds the running pods with Istio's proxy created before a time (the zero time
// counts none, and only fills in the namespaces with proxies); staticTrust counts only those
// whose proxy keeps the roots it started with (revision.LiveTrust false).
func (s *Stage) stalePods(ctx context.Context, before time.Time, staticTrust bool) (pods, error) {
	out := pods{all: map[string]int{}, by: map[string]int{}}
	if s.Pods == nil {
		return out, nil
	}
	list := &corev1.PodList{}
	if err := s.Pods.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
		return out, fmt.Errorf("listing pods: %w", err)
	}
	for i := range list.Items {
		p := &list.Items[i]
		// A terminating pod still serves while it drains, with the certificate it has: it
		// counts until it is gone.
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		if !revision.HasProxy(p) {
			continue
		}
		out.all[p.Namespace]++
		if p.CreationTimestamp.Time.Before(before) && (!staticTrust || !revision.LiveTrust(p)) {
			out.total++
			out.by[p.Namespace]++
		}
	}
	return out, nil
}

// deleteGeneration deletes the old generation's objects at the end of a rotation.
func (s *Stage) deleteGeneration(ctx context.Context, installation, ns string, gen int) error {
	for _, gvk := range []schema.GroupVersionKind{CertificateGVK, IssuerGVK} {
		names := []string{RootName(gen)}
		if gvk == CertificateGVK {
			names = append(names, IntermediateName(gen))
		}
		for _, n := range names {
			if err := s.deleteNamed(ctx, ns, gvk, n); err != nil {
				return err
			}
		}
	}
	secrets := []string{RootName(gen)}
	if gen > 0 {
		secrets = append(secrets, IntermediateSecret(gen))
	}
	for _, n := range secrets {
		secret := &corev1.Secret{}
		if err := s.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: n}, secret); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return err
		}
		if secret.Labels[meshv1.LabelInstallation] != installation {
			continue
		}
		if err := s.Client.Delete(ctx, secret); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting Secret %s/%s: %w", ns, n, err)
		}
	}
	return nil
}

// deleteNamed deletes one cert-manager object of the operator's, if it exists.
func (s *Stage) deleteNamed(ctx context.Context, ns string, gvk schema.GroupVersionKind, name string, opts ...client.DeleteOption) error {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
		return client.IgnoreNotFound(err)
	}
	if _, ours := u.GetLabels()[meshv1.LabelInstallation]; !ours || u.GetDeletionTimestamp() != nil {
		return nil
	}
	if err := s.Client.Delete(ctx, u, opts...); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting %s %s/%s: %w", gvk.Kind, ns, name, err)
	}
	return nil
}

// consistent reports whether a record can be the operator's latest: not behind the generation
// status shows, and a rotation with what its phases need.
func consistent(rec Record, st *meshv1.CertificatesStatus) bool {
	if st != nil && rec.Generation < int(st.Generation) {
		return false
	}
	r := rec.Rotation
	if r == nil {
		return true
	}
	known := r.Phase == meshv1.RotationPrepare || r.Phase == meshv1.RotationTrust || r.Phase == meshv1.RotationSwitch || r.Phase == meshv1.RotationDrop
	return known && len(ParseBundle([]byte(r.OldRoots))) > 0 && r.Issuer != ""
}
