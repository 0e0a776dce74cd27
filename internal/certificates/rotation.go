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

// A root rotation, in the way of Istio's multi-root guidance (ISTIO_MULTIROOT_MESH): istiod
// accepts a new root bundle that holds the old one or is held by it, so the bundle grows to
// both roots, signing switches to the new intermediate, every proxy gets a new certificate,
// and the bundle shrinks to the new root. Each phase is one write of cacerts (content and
// record together) and ends on a gate:
//
//	Prepare  cert-manager issues the new root and intermediate          → both Ready
//	Trust    cacerts: old intermediate, old + new roots                  → istiod published both
//	                                                                       everywhere, and
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
func (s *Stage) rotate(ctx context.Context, mesh *meshv1.MeshInstallation, spec Settings, rec *Record, cacerts *corev1.Secret, pending *int) (stages.Result, error) {
	rot := rec.Rotation
	from, to := rec.Generation, rec.To()
	set := spec.WithIdentity(rot.Issuer)
	kind, name := spec.WithIdentity(rec.Issuer).Signer(from)
	mesh.Status.Certificates.Issuer = kind + "/" + name
	now := s.now()
	progress := func(format string, args ...any) stages.Result {
		return stages.Result{State: stages.Ready, Reason: meshv1.ReasonRotatingRoot, RequeueAfter: rotationRecheck,
			Message: fmt.Sprintf("Rotating the mesh root (%s), phase %s: ", rot.Trigger, rot.Phase) + fmt.Sprintf(format, args...)}
	}
	// The new generation's objects, with the issuer the rotation started with; the old
	// generation's are left as they are until the end.
	for _, obj := range Desired(mesh.Name, set, to) {
		if _, err := s.Applier.Apply(ctx, obj); err != nil {
			return stages.Result{}, err
		}
	}
	if !set.SelfSigned {
		if res, waiting, err := s.checkUserIssuer(ctx, set); err != nil || waiting {
			res.State, res.Message = stages.Ready, fmt.Sprintf("Rotating the mesh root (%s), phase %s: %s", rot.Trigger, rot.Phase, res.Message)
			return res, err
		}
	}
	if res, waiting, err := s.waitIssued(ctx, set.Namespace, to); err != nil || waiting {
		return progress("%s", res.Message), err
	}
	next := s.intermediate(ctx, set.Namespace, to)
	if next == nil {
		return progress("the Secret %s is not written yet.", IntermediateSecret(to)), nil
	}
	if _, err := CheckSecret(next, now); err != nil {
		return stages.Result{State: stages.NotReady, Reason: meshv1.ReasonInvalidCA,
			Message: fmt.Sprintf("Rotating the mesh root (%s): Secret %s/%s does not hold a usable CA: %v.", rot.Trigger, set.Namespace, IntermediateSecret(to), err)}, nil
	}
	oldRoots, newRoots := ParseBundle([]byte(rot.OldRoots)), ParseBundle(next.Data["ca.crt"])
	both := oldRoots.Union(newRoots)
	var old map[string][]byte
	if from == 0 {
		if cacerts != nil {
			old = map[string][]byte{"tls.crt": cacerts.Data["tls.crt"], "tls.key": cacerts.Data["tls.key"]}
		}
	} else if src := s.intermediate(ctx, set.Namespace, from); src != nil {
		old = map[string][]byte{"tls.crt": src.Data["tls.crt"], "tls.key": src.Data["tls.key"]}
	}
	newContent := func(roots Bundle) map[string][]byte {
		return map[string][]byte{"tls.crt": next.Data["tls.crt"], "tls.key": next.Data["tls.key"], "ca.crt": roots.PEM()}
	}
	// record changes the rotation and writes it with content; if the write fails, the record
	// stays as it was, so status never shows a phase cacerts does not hold.
	record := func(change func(*Rotation), content map[string][]byte) error {
		before := *rot
		change(rot)
		if err := s.writeCASecret(ctx, mesh.Name, set.Namespace, cacerts, *rec, content); err != nil {
			*rot = before
			return err
		}
		return nil
	}
	enter := func(phase meshv1.RotationPhase, content map[string][]byte) error {
		return record(func(r *Rotation) { r.Phase, r.Since, r.Observed = phase, now, time.Time{} }, content)
	}

	switch rot.Phase {
	case meshv1.RotationPrepare:
		if old == nil || len(old["tls.crt"]) == 0 {
			return progress("the old intermediate is not readable from %s.", IntermediateSecret(from)), nil
		}
		if from == 0 {
			// cert-manager must stop writing cacerts before the operator composes it. The
			// Secret stays: cert-manager does not own it by reference.
			if err := s.deleteNamed(ctx, set.Namespace, CertificateGVK, IntermediateName(0), client.PropagationPolicy(metav1.DeletePropagationOrphan)); err != nil {
				return stages.Result{}, err
			}
		}
		old["ca.crt"] = both.PEM()
		if err := enter(meshv1.RotationTrust, old); err != nil {
			return stages.Result{}, err
		}
		return progress("cacerts now publishes both roots (%s); istiod still signs with the old intermediate.", both.Fingerprints()), nil

	case meshv1.RotationTrust:
		if old == nil {
			return progress("the old intermediate is not readable from %s.", IntermediateSecret(from)), nil
		}
		old["ca.crt"] = both.PEM()
		if err := s.writeCASecret(ctx, mesh.Name, set.Namespace, cacerts, *rec, old); err != nil {
			return stages.Result{}, err
		}
		_, rolling, err := s.istiods(ctx, mesh.Name)
		if err != nil {
			return stages.Result{}, err
		}
		if len(rolling) > 0 {
			return progress("waiting for %s to roll out with ISTIO_MULTIROOT_MESH=true, without which istiod refuses a second root.", strings.Join(rolling, ", ")), nil
		}
		missing, err := s.unpublished(ctx, set.Namespace, both)
		if err != nil {
			return stages.Result{}, err
		}
		if missing != "" {
			return progress("waiting for istiod to publish both roots in %s (in %s).", RootCertConfigMap, missing), nil
		}
		if rot.Observed.IsZero() {
			if err := record(func(r *Rotation) { r.Observed = now }, old); err != nil {
				return stages.Result{}, err
			}
		}
		if left := rot.Observed.Add(set.TrustPropagation).Sub(now); left > 0 {
			res := progress("istiod publishes both roots everywhere; signing switches to the new intermediate at %s (spec.certificates.trustPropagation %s), once every proxy had time to receive them.",
				rot.Observed.Add(set.TrustPropagation).UTC().Format(time.RFC3339), set.TrustPropagation)
			res.RequeueAfter = left
			return res, nil
		}
		if err := enter(meshv1.RotationSwitch, newContent(both)); err != nil {
			return stages.Result{}, err
		}
		return progress("istiod signs with the new intermediate now; workloads restart so that every proxy gets a certificate from it."), nil

	case meshv1.RotationSwitch:
		if err := s.writeCASecret(ctx, mesh.Name, set.Namespace, cacerts, *rec, newContent(both)); err != nil {
			return stages.Result{}, err
		}
		if rot.Observed.IsZero() {
			signing, why, err := s.switched(ctx, mesh.Name, next, []byte(rot.OldIntermediate), oldRoots, rot.Since.Add(set.TrustPropagation), now)
			if err != nil {
				return stages.Result{}, err
			}
			if !signing {
				return progress("%s", why), nil
			}
			// Pods carry their creation time in whole seconds: a pod created in the second istiod
			// was seen to switch counts as started before it, and restarts wait for the next.
			observed := now.Truncate(time.Second).Add(time.Second)
			replicas, _, err := s.istiods(ctx, mesh.Name)
			if err != nil {
				return stages.Result{}, err
			}
			if replicas > 1 {
				// The replica that answered may not be the last to reload cacerts: the others
				// get trustPropagation to follow, as proxies got it for the roots.
				observed = observed.Add(set.TrustPropagation)
			}
			if err := record(func(r *Rotation) { r.Observed = observed }, newContent(both)); err != nil {
				return stages.Result{}, err
			}
		}
		if wait := rot.Observed.Sub(now); wait > 0 {
			res := progress("istiod signs with the new intermediate; workloads restart from %s.", rot.Observed.UTC().Format(time.RFC3339))
			res.RequeueAfter = wait
			return res, nil
		}
		stale, err := s.stalePods(ctx, rot.Observed)
		if err != nil {
			return stages.Result{}, err
		}
		*pending = stale.total
		if stale.total > 0 {
			return progress("istiod signs with the new intermediate since %s; %d pod(s) with Istio's proxy started before and may hold a certificate of the old one. The ladder restarts the workloads of the namespaces it manages, one slot at a time (%s); restart others yourself (kubectl rollout restart). The old root is dropped once none is left.",
				rot.Observed.UTC().Format(time.RFC3339), stale.total, stale.describe()), nil
		}
		if err := enter(meshv1.RotationDrop, newContent(newRoots)); err != nil {
			return stages.Result{}, err
		}
		return progress("every proxy started after istiod switched to the new intermediate; the old root leaves the bundle."), nil

	case meshv1.RotationDrop:
		if err := s.writeCASecret(ctx, mesh.Name, set.Namespace, cacerts, *rec, newContent(newRoots)); err != nil {
			return stages.Result{}, err
		}
		missing, err := s.unpublished(ctx, set.Namespace, newRoots)
		if err != nil {
			return stages.Result{}, err
		}
		if missing != "" {
			return progress("waiting for istiod to publish the new root alone in %s (in %s).", RootCertConfigMap, missing), nil
		}
		if err := s.deleteGeneration(ctx, mesh.Name, set.Namespace, from); err != nil {
			return stages.Result{}, err
		}
		if !set.SelfSigned {
			// Only a root of the operator's needs the self-signed Issuer.
			if err := s.deleteNamed(ctx, set.Namespace, IssuerGVK, SelfSignedIssuer); err != nil {
				return stages.Result{}, err
			}
		}
		done := Record{Generation: to, Issuer: rot.Issuer, RotatedFor: rec.RotatedFor}
		if rot.Answers != "" {
			done.RotatedFor = rot.Answers
		}
		if err := s.writeCASecret(ctx, mesh.Name, set.Namespace, cacerts, done, newContent(newRoots)); err != nil {
			return stages.Result{}, err
		}
		*rec = done
		mesh.Status.Certificates.Issuer = func() string { k, n := set.Signer(to); return k + "/" + n }()
		return stages.Result{State: stages.Ready, Reason: meshv1.ReasonCAReady, RequeueAfter: rotationRecheck,
			Message: fmt.Sprintf("The mesh root was rotated (%s): istiod signs with an intermediate of the new root, which every namespace trusts alone.", rot.Trigger)}, nil
	}
	return stages.Result{}, fmt.Errorf("unknown rotation phase %q", rot.Phase)
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
	stale, err := s.stalePods(ctx, time.Time{})
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
// counts none, and only fills in the namespaces with proxies).
func (s *Stage) stalePods(ctx context.Context, before time.Time) (pods, error) {
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
		if p.CreationTimestamp.Time.Before(before) {
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
