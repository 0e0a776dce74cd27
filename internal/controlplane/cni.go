package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/ambient"
	"github.com/meshwright/meshwright/internal/apply"
	"github.com/meshwright/meshwright/internal/cni"
	"github.com/meshwright/meshwright/internal/installed"
	"github.com/meshwright/meshwright/internal/meshspec"
	"github.com/meshwright/meshwright/internal/names"
	"github.com/meshwright/meshwright/internal/render"
	"github.com/meshwright/meshwright/internal/revision"
	"github.com/meshwright/meshwright/internal/stages"
)

// cniSwitchRecheck is how soon a pass looks again once the CNI DaemonSet is Ready but istiod is
// not told yet (the next pass renders it): nothing else would start that pass.
const cniSwitchRecheck = time.Second

// daemonSetGVK is the kind of the cni chart's node agent.
var daemonSetGVK = schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "DaemonSet"}

// dataPlaneInput puts spec.dataPlane into the render input: whether Istio CNI is installed and
// istiod injects for it (cni.Decide, from what runs now), and the proxy's shape.
func (s *Stage) dataPlaneInput(ctx context.Context, p *planePass, in *render.Input) error {
	switch p.mesh.Spec.DataPlane.NativeSidecars {
	case meshv1.ModeEnabled:
		in.NativeSidecars = "true"
	case meshv1.ModeDisabled:
		in.NativeSidecars = "false"
	}
	in.HoldApplication = holdApplication(p.found, in.Revision, in.Version)
	var list corev1.NamespaceList
	if s.Workloads != nil {
		if err := s.Workloads.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
			return fmt.Errorf("listing namespaces for their Pod Security levels and data planes: %w", err)
		}
	}
	// Ambient mode stays installed while a namespace is still in it, and while Istio CNI has not
	// released every pod it redirected to ztunnel: their traffic needs it.
	p.ambientLabelled = ambient.Labelled(list.Items)
	in.Ambient = meshspec.AmbientWanted(p.mesh) || len(p.ambientLabelled) > 0
	if !in.Ambient {
		if zt, err := s.daemonSet(ctx, render.ZTunnelDaemonSet); err != nil {
			return err
		} else if zt != nil {
			if p.ambientRedirected, err = s.podsRedirected(ctx); err != nil {
				return err
			}
			in.Ambient = p.ambientRedirected > 0
		}
	}
	in.ZTunnel = in.Ambient
	mode := cniMode(p.mesh, in.Ambient)
	var needing []string
	if mode != meshv1.ModeDisabled {
		needing = cni.Needing(p.mesh.Spec.Namespaces, list.Items, []string{meshspec.ControlPlaneNamespace(p.mesh), render.CNINamespace})
	}
	cur, err := s.currentCNI(ctx, p.mesh.Name, mode, in.Namespace)
	if err != nil {
		return err
	}
	p.cni, p.cniNeeding, p.cniNow = cni.Decide(mode, needing, cur), needing, cur
	in.CNI, in.IstiodCNI = p.cni.Install, p.cni.Istiod
	if in.CNI || in.ZTunnel {
		in.CNIVersion = cni.Version(in.Version, in.Revision, p.found.Installed, cur.Version)
	}
	return nil
}

// cniMode is spec.dataPlane.cni as it applies: ambient mode needs Istio CNI (its node agent
// hands ambient pods' traffic to ztunnel), so while the mesh is in ambient mode it is Enabled
// whatever the field says (the API refuses Ambient with Disabled).
func cniMode(mesh *meshv1.MeshInstallation, ambientMode bool) meshv1.DataPlaneMode {
	if ambientMode {
		return meshv1.ModeEnabled
	}
	return mesh.Spec.DataPlane.CNI
}

// loadCNICharts puts the charts of Istio CNI's version into in (none when it is the control
// plane's, or embedded). Where the version the CNI keeps during an upgrade has no charts at hand
// (a build that no longer embeds it, a chart source removed), the CNI is left as it runs, not
// rendered and not pruned (p.cniFrozen), until it can follow the control plane. done is true,
// with the result to report, when the charts have no cni chart.
func (s *Stage) loadCNICharts(ctx context.Context, p *planePass, in *render.Input) (stages.Result, bool) {
	if !in.CNI && !in.ZTunnel {
		return stages.Result{}, false
	}
	set, v := in.Charts, in.Version
	if in.CNIVersion != "" && in.CNIVersion != in.Version {
		v = in.CNIVersion
		var err error
		set, err = ChartsFor(ctx, s.Charts, p.mesh, v)
		if err == nil && set == nil && !slices.Contains(render.SupportedVersions(), v) {
			err = &render.UnsupportedVersionError{Version: v}
		}
		if err != nil && !p.cniNow.Installed {
			// Nothing runs yet: installed at the control plane's version, whose charts are here.
			in.CNIVersion, set, v, err = in.Version, in.Charts, in.Version, nil
		}
		if err != nil {
			p.cniFrozen = fmt.Sprintf("Istio CNI stays as it runs, at Istio %s, until the upgrade is done (Istio's order: the control plane first); its charts are not at hand (%v), so it is left untouched meanwhile.", v, err)
			in.CNI, in.ZTunnel, in.CNIVersion = false, false, ""
			return stages.Result{}, false
		}
		if in.CNIVersion != in.Version {
			in.CNICharts = set
		}
	}
	if set != nil && in.CNI && set.CNI == nil {
		return stages.Result{State: stages.Failed, Reason: meshv1.ReasonUnsupportedVersion,
			Message: fmt.Sprintf("Istio CNI is needed (%s), and the charts of Istio %s from %s have no cni chart. Publish Istio's cni chart of that version there (Istio's own repositories have it), or set spec.dataPlane.cni to Disabled.",
				cniWhy(p), v, set.Origin)}, true
	}
	if set != nil && in.ZTunnel && set.ZTunnel == nil {
		return stages.Result{State: stages.Failed, Reason: meshv1.ReasonUnsupportedVersion,
			Message: fmt.Sprintf("ztunnel is needed (%s), and the charts of Istio %s from %s have no ztunnel chart. Publish Istio's ztunnel chart of that version there (Istio's own repositories have it), or set spec.dataPlane.mode to Sidecar.",
				ambientWhy(p), v, set.Origin)}, true
	}
	return stages.Result{}, false
}

// holdApplication tells whether the revision is rendered with holdApplicationUntilProxyStarts
// (see render.Input.HoldApplication): yes for a revision not installed yet, for one installed
// with it, and for one upgraded in place to another version (which rewrites istiod anyway); no
// for one an earlier operator installed, so upgrading the operator writes nothing.
func holdApplication(found installed.Found, rev, version string) bool {
	for _, r := range found.Installed {
		if r.Name == rev {
			return r.HoldApplication || r.Version != version
		}
	}
	return true
}

// currentCNI reads what the cluster runs of Istio CNI: the operator's DaemonSet (or someone
// else's), whether any installed revision's injector injects for it, and, while its removal is
// in question (removing, the spec not wanting it), the pods that rely on it.
func (s *Stage) currentCNI(ctx context.Context, installation string, mode meshv1.DataPlaneMode, namespace string) (cni.Current, error) {
	ds, err := s.cniDaemonSet(ctx)
	if err != nil {
		return cni.Current{}, err
	}
	var out cni.Current
	if ds != nil && ds.GetLabels()[meshv1.LabelInstallation] == installation {
		out.Installed, out.Version = true, ds.GetLabels()[meshv1.LabelIstioVersion]
		out.Ready, out.NotReady = installed.DaemonSetReady(ds)
	} else if out.Foreign, out.ForeignReady, err = s.foreignCNI(ctx); err != nil {
		return cni.Current{}, err
	}
	cms := &unstructured.UnstructuredList{}
	cms.SetGroupVersionKind(schema.GroupVersionKind{Version: "v1", Kind: "ConfigMapList"})
	if err := s.Client.List(ctx, cms, client.InNamespace(namespace), client.MatchingLabels{meshv1.LabelInstallation: installation, render.LabelComponent: render.ComponentIstiod},
		client.UnsafeDisableDeepCopy); err != nil {
		return cni.Current{}, fmt.Errorf("listing istiod's ConfigMaps: %w", err)
	}
	for i := range cms.Items {
		if strings.HasPrefix(cms.Items[i].GetName(), injectorConfigMap(revision.Default)) && injectsForCNI(&cms.Items[i]) {
			out.IstiodInjects = true
		}
	}
	if out.Installed && !cni.Decide(mode, nil, out).Wanted {
		if out.ReliantPods, err = s.podsInjectedForCNI(ctx); err != nil {
			return cni.Current{}, err
		}
	}
	return out, nil
}

// foreignCNI finds an Istio CNI DaemonSet the operator did not install (the cni chart labels its
// pods k8s-app=istio-cni-node), in any namespace, from the ladder's cache.
func (s *Stage) foreignCNI(ctx context.Context) (name string, ready bool, err error) {
	if s.Workloads == nil {
		return "", false, nil
	}
	var list appsv1.DaemonSetList
	if err := s.Workloads.List(ctx, &list, client.MatchingLabels{"k8s-app": render.CNIDaemonSet}, client.UnsafeDisableDeepCopy); err != nil {
		return "", false, fmt.Errorf("looking for an Istio CNI installed by someone else: %w", err)
	}
	// Of several, a Ready one, the first by namespace and name: the same answer every pass.
	slices.SortFunc(list.Items, func(a, b appsv1.DaemonSet) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	for i := range list.Items {
		ds := &list.Items[i]
		if ds.Labels[meshv1.LabelManagedBy] == meshv1.ManagedByValue {
			continue // the operator's own (another installation's: one per cluster)
		}
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ds)
		if err != nil {
			return "", false, err
		}
		r, _ := installed.DaemonSetReady(&unstructured.Unstructured{Object: u})
		if name == "" || r && !ready {
			name, ready = ds.Namespace+"/"+ds.Name, r
		}
	}
	return name, ready, nil
}

// podsInjectedForCNI counts the pods, in every namespace, injected for Istio CNI.
func (s *Stage) podsInjectedForCNI(ctx context.Context) (int, error) {
	return s.countPods(ctx, "injected for Istio CNI", func(p *corev1.Pod) bool { return revision.CNIMode(p) == meshv1.CNIEnabled })
}

// podsRedirected counts the pods, in every namespace, that Istio CNI has redirected to ztunnel
// and not released yet: ztunnel and ambient mode must outlive them.
func (s *Stage) podsRedirected(ctx context.Context) (int, error) {
	return s.countPods(ctx, "redirected to ztunnel", ambient.Redirected)
}

// countPods counts the running pods, in every namespace, that match, from the ladder's cache.
func (s *Stage) countPods(ctx context.Context, what string, match func(*corev1.Pod) bool) (int, error) {
	if s.Workloads == nil {
		return 0, nil
	}
	var pods corev1.PodList
	if err := s.Workloads.List(ctx, &pods, client.UnsafeDisableDeepCopy); err != nil {
		return 0, fmt.Errorf("listing pods %s: %w", what, err)
	}
	n := 0
	for i := range pods.Items {
		if pods.Items[i].DeletionTimestamp.IsZero() && match(&pods.Items[i]) {
			n++
		}
	}
	return n, nil
}

// injectorConfigMap is the name the istiod chart gives a revision's injector ConfigMap.
func injectorConfigMap(rev string) string {
	if rev == "" || rev == revision.Default {
		return "istio-sidecar-injector"
	}
	return "istio-sidecar-injector-" + rev
}

// injectsForCNI reads pilot.cni.enabled from an injector ConfigMap's values, which the
// injection template reads to choose istio-validation over istio-init.
func injectsForCNI(cm *unstructured.Unstructured) bool {
	raw, _, _ := unstructured.NestedString(cm.Object, "data", "values")
	var values struct {
		Pilot struct {
			CNI struct {
				Enabled bool `json:"enabled"`
			} `json:"cni"`
		} `json:"pilot"`
	}
	return json.Unmarshal([]byte(raw), &values) == nil && values.Pilot.CNI.Enabled
}

// cniPhase waits for Istio CNI's DaemonSet to be Ready where it is wanted, and for istiod to be
// told (the next render); where it is not installed any more, it hands its namespace back.
func (s *Stage) cniPhase(ctx context.Context, p *planePass) (stages.Result, bool, error) {
	switch {
	case !p.cni.Install && p.cniNow.Foreign == "" && !p.in.ZTunnel:
		return stages.Result{}, false, s.releaseCNINamespace(ctx, p.mesh.Name)
	case !p.cni.Wanted:
		return stages.Result{}, false, nil // going: once istiod no longer injects for it and no pod relies on it
	}
	ds, err := s.cniDaemonSet(ctx)
	if err != nil {
		return stages.Result{}, true, err
	}
	ready, why := false, "it does not exist yet"
	name := render.CNINamespace + "/" + render.CNIDaemonSet
	if f := p.cniNow.Foreign; f != "" {
		ready, why, name = p.cniNow.ForeignReady, "not every node runs it Ready", f
	} else if ds != nil {
		ready, why = installed.DaemonSetReady(ds)
	}
	switch {
	case !ready && !p.cniNow.IstiodInjects:
		return stages.Result{State: stages.NotReady, Reason: meshv1.ReasonWaitingForCNI, Revisions: p.revisions,
			Message: fmt.Sprintf("Istio CNI (%s): its DaemonSet %s is not Ready: %s. istiod injects for it, and namespaces take steps, once it is.",
				cniWhy(p), name, why)}, true, nil
	case !p.in.IstiodCNI && !p.cniNow.IstiodInjects:
		return stages.Result{State: stages.NotReady, Reason: meshv1.ReasonWaitingForCNI, Revisions: p.revisions, RequeueAfter: cniSwitchRecheck,
			Message: fmt.Sprintf("Istio CNI's DaemonSet %s is Ready; istiod is told to inject for it next.", name)}, true, nil
	}
	return stages.Result{}, false, nil
}

// cniDaemonSet is the CNI DaemonSet as the cache has it (nil when there is none).
func (s *Stage) cniDaemonSet(ctx context.Context) (*unstructured.Unstructured, error) {
	return s.daemonSet(ctx, render.CNIDaemonSet)
}

// daemonSet is a node agent's DaemonSet in the node agents' namespace as the cache has it (nil
// when there is none). It is only read: the cache's own copy.
func (s *Stage) daemonSet(ctx context.Context, name string) (*unstructured.Unstructured, error) {
	ds := &unstructured.Unstructured{}
	ds.SetGroupVersionKind(daemonSetGVK)
	ds.SetNamespace(render.CNINamespace)
	ds.SetName(name)
	return getOrNil(ctx, s.Client, ds, client.UnsafeDisableDeepCopy)
}

// cniWhy says why Istio CNI is installed, for the stage's messages.
func cniWhy(p *planePass) string {
	switch {
	case p.cniNow.Foreign != "":
		return "installed by someone else as " + p.cniNow.Foreign + ", used as it is"
	case meshspec.AmbientWanted(p.mesh):
		return "ambient mode needs it"
	case len(p.ambientLabelled) > 0:
		return "ambient mode needs it while " + names.Few(p.ambientLabelled, 3, ", ") + " use it"
	case p.mesh.Spec.DataPlane.CNI == meshv1.ModeEnabled:
		return "spec.dataPlane.cni is Enabled"
	case len(p.cniNeeding) > 0:
		return fmt.Sprintf("Pod Security refuses istio-init in %s", names.Few(p.cniNeeding, 3, ", "))
	default:
		return "spec.dataPlane.cni is Auto and it was installed before"
	}
}

// releaseCNINamespace hands back the node agents' namespace once Istio CNI and ztunnel are gone: the operator's labels
// and the privileged Pod Security level it set are removed (the namespace may hold objects that
// are not the operator's, so it is not deleted).
func (s *Stage) releaseCNINamespace(ctx context.Context, installation string) error {
	ns := &unstructured.Unstructured{}
	ns.SetGroupVersionKind(schema.GroupVersionKind{Version: "v1", Kind: "Namespace"})
	ns.SetName(render.CNINamespace)
	cur, err := getOrNil(ctx, s.Client, ns)
	if err != nil || cur == nil || cur.GetLabels()[meshv1.LabelInstallation] != installation || !render.NodeAgent(cur.GetLabels()[render.LabelComponent]) {
		return err
	}
	return apply.Release(ctx, s.Client, cur, meshv1.LabelManagedBy, meshv1.LabelInstallation, render.LabelComponent, render.LabelPodSecurityEnforce)
}

// cniMessage is what the Ready message says of Istio CNI.
func cniMessage(p *planePass) string {
	msg := ""
	switch {
	case p.in.IstiodCNI && p.cniNow.Foreign != "":
		msg = fmt.Sprintf(" Istio CNI Ready (%s).", cniWhy(p))
	case p.in.IstiodCNI:
		msg = fmt.Sprintf(" Istio CNI Ready in namespace %s (%s).", render.CNINamespace, cniWhy(p))
	case p.cni.Install && !p.cni.Wanted && p.cniNow.ReliantPods > 0:
		msg = fmt.Sprintf(" Istio CNI is being removed; it stays while %d pod(s) injected for it run (a new sandbox of theirs needs it): restart them and it goes.", p.cniNow.ReliantPods)
	}
	if p.in.ZTunnel {
		msg += fmt.Sprintf(" Ambient mode: ztunnel Ready on every node (%s).", ambientWhy(p))
	}
	if p.cniFrozen != "" {
		msg += " " + p.cniFrozen
	}
	return msg
}

// ztunnelPhase waits, in ambient mode, for ztunnel's DaemonSet to be Ready on every node (Istio
// CNI's is waited for first, by cniPhase): a namespace labelled into ambient mode on a node
// without ztunnel would have its traffic handled by neither a sidecar nor ztunnel.
func (s *Stage) ztunnelPhase(ctx context.Context, p *planePass) (stages.Result, bool, error) {
	if !p.in.Ambient {
		// (While Istio CNI's version is frozen during an upgrade, ztunnel is neither rendered
		// nor pruned, but it is still waited for.)
		return stages.Result{}, false, nil
	}
	ds, err := s.daemonSet(ctx, render.ZTunnelDaemonSet)
	if err != nil {
		return stages.Result{}, true, err
	}
	ready, why := false, "it does not exist yet"
	if ds != nil {
		ready, why = installed.DaemonSetReady(ds)
	}
	if !ready {
		msg := fmt.Sprintf("ztunnel (%s): its DaemonSet %s/%s is not Ready: %s. Namespaces take steps once it is.",
			ambientWhy(p), render.CNINamespace, render.ZTunnelDaemonSet, why)
		if p.cniFrozen != "" {
			msg += " " + p.cniFrozen
		}
		return stages.Result{State: stages.NotReady, Reason: meshv1.ReasonWaitingForZtunnel, Revisions: p.revisions, Message: msg}, true, nil
	}
	return stages.Result{}, false, nil
}

// ambientWhy says why ambient mode is installed, for the stage's messages.
func ambientWhy(p *planePass) string {
	if meshspec.Ambient(p.mesh) {
		return "spec.dataPlane.mode is Ambient"
	}
	for i, r := range p.mesh.Spec.Namespaces {
		if r.DataPlaneMode == meshv1.DataPlaneAmbient {
			return fmt.Sprintf("spec.namespaces[%d].dataPlaneMode is Ambient", i)
		}
	}
	if len(p.ambientLabelled) > 0 {
		return "no rule asks for ambient mode any more, and it stays while " + names.Few(p.ambientLabelled, 3, ", ") + " use it"
	}
	return fmt.Sprintf("no namespace is in ambient mode any more, and it stays until Istio CNI has released the %d pod(s) it redirected to ztunnel", p.ambientRedirected)
}

// ambientDrain bounds how long an uninstall waits for Istio CNI to release the pods it redirected
// to ztunnel (the Adoption stage has taken the namespaces' labels off by then): a node agent
// that is gone never will.
const ambientDrain = 2 * time.Minute

// drainAmbient tells an uninstall to wait while Istio CNI still has pods redirected to ztunnel,
// at most ambientDrain from the installation's deletion: Istio's order removes ambient mode from
// the namespaces before ztunnel and the node agent go, so that no pod's traffic is sent to a
// ztunnel that no longer exists.
func (s *Stage) drainAmbient(ctx context.Context, mesh *meshv1.MeshInstallation) (bool, error) {
	zt, err := s.daemonSet(ctx, render.ZTunnelDaemonSet)
	if err != nil || zt == nil || zt.GetLabels()[meshv1.LabelInstallation] != mesh.Name {
		return false, err
	}
	n, err := s.podsRedirected(ctx)
	if err != nil || n == 0 {
		return false, err
	}
	if ts := mesh.GetDeletionTimestamp(); ts != nil && s.now().Sub(ts.Time) >= ambientDrain {
		log.FromContext(ctx).Info("removing ztunnel and Istio CNI although pods are still redirected to ztunnel: Istio CNI did not release them in time", "pods", n, "waited", ambientDrain)
		return false, nil
	}
	log.FromContext(ctx).Info("waiting for Istio CNI to release the pods it redirected to ztunnel before removing them", "pods", n)
	return true, nil
}
