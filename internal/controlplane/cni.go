package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
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
	in.HoldApplication = holdApplication(p.found, in.Revision)
	var needing []string
	if s.Workloads != nil && p.mesh.Spec.DataPlane.CNI != meshv1.ModeDisabled {
		var list corev1.NamespaceList
		if err := s.Workloads.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
			return fmt.Errorf("listing namespaces for their Pod Security levels: %w", err)
		}
		needing = cni.Needing(p.mesh.Spec.Namespaces, list.Items, []string{meshspec.ControlPlaneNamespace(p.mesh), render.CNINamespace})
	}
	cur, err := s.currentCNI(ctx, p.mesh.Name, in.Namespace, in.Revision)
	if err != nil {
		return err
	}
	p.cni, p.cniNeeding = cni.Decide(p.mesh.Spec.DataPlane.CNI, needing, cur), needing
	in.CNI, in.IstiodCNI = p.cni.Install, p.cni.Istiod
	if in.CNI {
		in.CNIVersion = cni.Version(in.Version, in.Revision, p.found.Installed, cur.Version)
	}
	return nil
}

// loadCNICharts puts the charts of Istio CNI's version into in (none when it is the control
// plane's, or embedded); done is true, with the result to report, when they cannot be had or
// have no cni chart.
func (s *Stage) loadCNICharts(ctx context.Context, p *planePass, in *render.Input) (stages.Result, bool) {
	if !in.CNI {
		return stages.Result{}, false
	}
	set, v := in.Charts, in.Version
	if in.CNIVersion != "" && in.CNIVersion != in.Version {
		var err error
		v = in.CNIVersion
		if set, err = ChartsFor(ctx, s.Charts, p.mesh, v); err != nil {
			return stages.Result{State: stages.NotReady, Reason: meshv1.ReasonChartSourceUnavailable, RequeueAfter: stages.NotReadyRecheck,
				Message: fmt.Sprintf("Istio CNI stays at Istio %s until the control plane's upgrade is done (Istio's order), and the charts of %s could not be had: %v. Retrying every %s.", v, v, err, stages.NotReadyRecheck)}, true
		}
		in.CNICharts = set
	}
	if set != nil && set.CNI == nil {
		return stages.Result{State: stages.Failed, Reason: meshv1.ReasonUnsupportedVersion,
			Message: fmt.Sprintf("Istio CNI is needed (%s), and the charts of Istio %s from %s have no cni chart. Publish Istio's cni chart of that version there (Istio's own repositories have it), or set spec.dataPlane.cni to Disabled.",
				cniWhy(p), v, set.Origin)}, true
	}
	return stages.Result{}, false
}

// holdApplication tells whether the revision is rendered with holdApplicationUntilProxyStarts
// (see render.Input.HoldApplication): yes for a revision not installed yet, and for one installed
// with it; no for one an earlier operator installed, so upgrading the operator writes nothing.
func holdApplication(found installed.Found, rev string) bool {
	for _, r := range found.Installed {
		if r.Name == rev {
			return r.HoldApplication
		}
	}
	return true
}

// currentCNI reads what the cluster runs of Istio CNI: the operator's DaemonSet and whether the
// active revision's injector injects for it.
func (s *Stage) currentCNI(ctx context.Context, installation, namespace, rev string) (cni.Current, error) {
	ds, err := s.cniDaemonSet(ctx)
	if err != nil {
		return cni.Current{}, err
	}
	var out cni.Current
	if ds != nil && ds.GetLabels()[meshv1.LabelInstallation] == installation {
		out.Installed, out.Version = true, ds.GetLabels()[meshv1.LabelIstioVersion]
		out.Ready, out.NotReady = installed.DaemonSetReady(ds)
	}
	cm := &unstructured.Unstructured{}
	cm.SetGroupVersionKind(schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"})
	cm.SetNamespace(namespace)
	cm.SetName(injectorConfigMap(rev))
	if cm, err = getOrNil(ctx, s.Client, cm, client.UnsafeDisableDeepCopy); err != nil {
		return cni.Current{}, err
	}
	out.IstiodInjects = cm != nil && injectsForCNI(cm)
	return out, nil
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
// told (the next render); where it is not, it hands its namespace back once the chart's objects
// are pruned.
func (s *Stage) cniPhase(ctx context.Context, p *planePass) (stages.Result, bool, error) {
	if !p.in.CNI {
		return stages.Result{}, false, s.releaseCNINamespace(ctx, p.mesh.Name)
	}
	if !p.cni.Wanted {
		return stages.Result{}, false, nil // going: istiod stops injecting for it first
	}
	cur, err := s.currentCNI(ctx, p.mesh.Name, p.in.Namespace, p.in.Revision)
	if err != nil {
		return stages.Result{}, true, err
	}
	why := "it does not exist yet"
	if cur.Installed {
		why = cur.NotReady
	}
	switch {
	case !cur.Ready && !cur.IstiodInjects:
		return stages.Result{State: stages.NotReady, Reason: meshv1.ReasonWaitingForCNI, Revisions: p.revisions,
			Message: fmt.Sprintf("Istio CNI (%s) is installed in namespace %s; its DaemonSet %s is not Ready: %s. istiod injects for it, and namespaces take steps, once it is.",
				cniWhy(p), render.CNINamespace, render.CNIDaemonSet, why)}, true, nil
	case !p.in.IstiodCNI:
		return stages.Result{State: stages.NotReady, Reason: meshv1.ReasonWaitingForCNI, Revisions: p.revisions, RequeueAfter: cniSwitchRecheck,
			Message: fmt.Sprintf("Istio CNI's DaemonSet %s/%s is Ready; istiod is told to inject for it next.", render.CNINamespace, render.CNIDaemonSet)}, true, nil
	}
	return stages.Result{}, false, nil
}

// cniDaemonSet is the CNI DaemonSet as the cache has it (nil when there is none). It is only
// read: the cache's own copy.
func (s *Stage) cniDaemonSet(ctx context.Context) (*unstructured.Unstructured, error) {
	ds := &unstructured.Unstructured{}
	ds.SetGroupVersionKind(daemonSetGVK)
	ds.SetNamespace(render.CNINamespace)
	ds.SetName(render.CNIDaemonSet)
	return getOrNil(ctx, s.Client, ds, client.UnsafeDisableDeepCopy)
}

// cniWhy says why Istio CNI is installed, for the stage's messages.
func cniWhy(p *planePass) string {
	switch {
	case p.mesh.Spec.DataPlane.CNI == meshv1.ModeEnabled:
		return "spec.dataPlane.cni is Enabled"
	case len(p.cniNeeding) > 0:
		return fmt.Sprintf("Pod Security refuses istio-init in %s", names.Few(p.cniNeeding, 3, ", "))
	default:
		return "spec.dataPlane.cni is Auto and it was installed before"
	}
}

// releaseCNINamespace hands back the CNI namespace once Istio CNI is gone: the operator's labels
// and the privileged Pod Security level it set are removed (the namespace may hold objects that
// are not the operator's, so it is not deleted).
func (s *Stage) releaseCNINamespace(ctx context.Context, installation string) error {
	ns := &unstructured.Unstructured{}
	ns.SetGroupVersionKind(schema.GroupVersionKind{Version: "v1", Kind: "Namespace"})
	ns.SetName(render.CNINamespace)
	cur, err := getOrNil(ctx, s.Client, ns)
	if err != nil || cur == nil || cur.GetLabels()[meshv1.LabelInstallation] != installation || cur.GetLabels()[render.LabelComponent] != render.ComponentCNI {
		return err
	}
	return apply.Release(ctx, s.Client, cur, meshv1.LabelManagedBy, meshv1.LabelInstallation, render.LabelComponent, render.LabelPodSecurityEnforce)
}

// cniMessage is what the Ready message says of Istio CNI.
func cniMessage(p *planePass) string {
	if !p.in.IstiodCNI {
		return ""
	}
	return fmt.Sprintf(" Istio CNI Ready in namespace %s (%s).", render.CNINamespace, strings.TrimSuffix(cniWhy(p), "."))
}
