package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/meshspec"
	"github.com/meshwright/meshwright/internal/render"
	"github.com/meshwright/meshwright/internal/revision"
)

// istiodComponent is the chart whose objects belong to one revision; the base chart's (CRDs,
// the default validator) are shared by every revision.
const istiodComponent = render.ComponentIstiod

// revisionOf names the revision an istiod-chart object belongs to.
func revisionOf(o client.Object) string {
	if rev := o.GetLabels()[meshv1.LabelRevision]; rev != "" {
		return rev
	}
	return revision.Default
}

// Found is what the cluster holds of an installation's revisions: its istiod Deployments, with
// their versions, and the operator's record of them.
type Found struct {
	Installed []revision.Installed
	History   revision.History
	// Recorded is false while no record exists: History is then what status reported (see
	// revision.FromStatus), and the record is written the first time a pass changes it.
	Recorded bool
}

// Find reads an installation's revisions: its record, then its istiod Deployments.
func Find(ctx context.Context, r client.Reader, mesh *meshv1.MeshInstallation) (Found, error) {
	var f Found
	var err error
	if f.History, f.Recorded, err = readHistory(ctx, r, mesh); err != nil {
		return Found{}, err
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "DeploymentList"})
	if err := r.List(ctx, list, client.MatchingLabels{meshv1.LabelInstallation: mesh.Name, render.LabelComponent: istiodComponent}, client.UnsafeDisableDeepCopy); err != nil {
		return Found{}, fmt.Errorf("listing istiod Deployments: %w", err)
	}
	for i := range list.Items {
		dep := &list.Items[i]
		if dep.GetLabels()["app"] != "istiod" {
			continue
		}
		name := revisionOf(dep)
		if slices.ContainsFunc(f.Installed, func(r revision.Installed) bool { return r.Name == name }) {
			continue
		}
		f.Installed = append(f.Installed, revision.Installed{Name: name, Available: available(dep),
			Version: f.History.Version(name, dep.GetLabels()[meshv1.LabelIstioVersion], discoveryImage(dep))})
	}
	sort.Slice(f.Installed, func(i, j int) bool { return f.Installed[i].Name < f.Installed[j].Name })
	return f, nil
}

// Active is the revision the spec asks for: namespaces are injected by it, and the ControlPlane
// stage renders it.
func (f Found) Active(mesh *meshv1.MeshInstallation) string {
	return meshspec.ActiveOf(mesh, f.Installed, f.History)
}

// Validator is the revision the shared validator points at while active is the active one (see
// revision.Validator).
func (f Found) Validator(active string) string {
	return revision.Validator(active, f.Installed, f.History.Active)
}

// ActiveRevision is the revision the spec asks for. Every stage (and the kubectl plugin) asks
// this one function, or Found.Active.
func ActiveRevision(ctx context.Context, r client.Reader, mesh *meshv1.MeshInstallation) (string, error) {
	f, err := Find(ctx, r, mesh)
	if err != nil {
		return "", err
	}
	return f.Active(mesh), nil
}

// Revisions are the revisions the ControlPlane stage renders for the spec: the active one, and
// the one the shared validator points at.
func Revisions(ctx context.Context, r client.Reader, mesh *meshv1.MeshInstallation) (active, validator string, err error) {
	f, err := Find(ctx, r, mesh)
	if err != nil {
		return "", "", err
	}
	active = f.Active(mesh)
	return active, f.Validator(active), nil
}

// available reports an istiod Deployment that serves.
func available(dep *unstructured.Unstructured) bool {
	ok, _ := deploymentAvailable(dep)
	return ok
}

// discoveryImage is the image of istiod's discovery container.
func discoveryImage(dep *unstructured.Unstructured) string {
	containers, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	for _, c := range containers {
		m, _ := c.(map[string]any)
		if m["name"] == "discovery" {
			image, _ := m["image"].(string)
			return image
		}
	}
	return ""
}

// usage counts, per revision, the namespaces that select it and the running pods it injected.
// Without a Workloads reader nothing is known, and no revision is ever retired.
// Moves' records are read only when another revision than the active one is installed (moves):
// in steady state the counts are for status alone, with nothing to retire, and every namespace's
// record need not be decoded on every pass.
func (s *Stage) usage(ctx context.Context, moves bool) (map[string]revision.Usage, bool, error) {
	if s.Workloads == nil {
		return nil, false, nil
	}
	var nsList corev1.NamespaceList
	if err := s.Workloads.List(ctx, &nsList, client.UnsafeDisableDeepCopy); err != nil {
		return nil, false, fmt.Errorf("listing namespaces: %w", err)
	}
	labels := make(map[string]map[string]string, len(nsList.Items))
	var recorded map[string][]string
	for i := range nsList.Items {
		ns := &nsList.Items[i]
		labels[ns.Name] = ns.Labels
		// A move records the revision it comes from, to go back to it on rollback: that
		// revision stays while the move runs, even once no label or pod names it.
		if !moves {
			continue
		}
		if revs := ladderRevisions(ns.Annotations[meshv1.AnnotationLadder]); len(revs) > 0 {
			if recorded == nil {
				recorded = map[string][]string{}
			}
			recorded[ns.Name] = revs
		}
	}
	var pods corev1.PodList
	if err := s.Workloads.List(ctx, &pods, client.UnsafeDisableDeepCopy); err != nil {
		return nil, false, fmt.Errorf("listing pods: %w", err)
	}
	podRevs := map[string][]string{}
	for i := range pods.Items {
		p := &pods.Items[i]
		rev := p.Annotations[revision.PodAnnotation]
		if rev == "" || p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		podRevs[p.Namespace] = append(podRevs[p.Namespace], rev)
	}
	return revision.Count(labels, podRevs, recorded), true, nil
}

// ladderRevisions reads the revisions a namespace's ladder record names: the one it is on, and
// those a running step moves it between.
func ladderRevisions(raw string) []string {
	if raw == "" {
		return nil
	}
	var st ladder.State
	if json.Unmarshal([]byte(raw), &st) != nil {
		return nil
	}
	var out []string
	add := func(r string) {
		if r != "" && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	if st.Step != nil {
		add(st.Step.Revision)
		add(st.Step.From)
	}
	return out
}

// retire removes the objects of revisions other than active once nothing uses them (webhooks
// first, so nothing calls into an istiod that is going away), and says what the others still
// serve. others holds each such revision's objects, as prune found them; the removed ones are
// taken out of it.
//
// A retiring revision is not applied again (its spec is gone); broken names the ones still in
// use whose istiod does not serve, where pods cannot be created (the webhook fails closed).
func (s *Stage) retire(ctx context.Context, others map[string][]*unstructured.Unstructured, installed []revision.Installed, usage map[string]revision.Usage, known bool) (serving, broken []string, err error) {
	names := slices.Sorted(maps.Keys(others))
	for _, name := range names {
		u := usage[name]
		if !known || !u.Unused() {
			if known {
				serving = append(serving, revision.Describe(name, u))
			} else {
				serving = append(serving, "revision "+name+" is kept: the operator cannot see namespaces and pods")
			}
			if !slices.ContainsFunc(installed, func(r revision.Installed) bool { return r.Name == name && r.Available }) {
				broken = append(broken, name)
			}
			continue
		}
		objs := others[name]
		for i := len(objs) - 1; i >= 0; i-- {
			o := objs[i]
			if o.GetDeletionTimestamp() != nil {
				continue
			}
			if err := s.Client.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
				return nil, nil, fmt.Errorf("removing %s %s of the retired revision %s: %w", o.GetKind(), o.GetName(), name, err)
			}
		}
		log.FromContext(ctx).Info("removed a control-plane revision nothing uses any more", "revision", name, "objects", len(objs))
		delete(others, name)
	}
	return serving, broken, nil
}

// revisionStatuses is status.revisions: the active revision first, then the others by name.
// A revision whose istiod is gone keeps the version its history recorded.
func revisionStatuses(history revision.History, active, activeVersion string, installed []revision.Installed, others map[string][]*unstructured.Unstructured, usage map[string]revision.Usage) []meshv1.RevisionStatus {
	out := []meshv1.RevisionStatus{{Name: active, Version: activeVersion, Active: true,
		Namespaces: int32(usage[active].Namespaces), Pods: int32(usage[active].Pods)}}
	names := slices.Sorted(maps.Keys(others))
	for _, name := range names {
		version := history.VersionOf(name)
		for _, r := range installed {
			if r.Name == name && r.Version != "" {
				version = r.Version
			}
		}
		out = append(out, meshv1.RevisionStatus{Name: name, Version: version,
			Namespaces: int32(usage[name].Namespaces), Pods: int32(usage[name].Pods)})
	}
	if len(out) > 8 {
		out = out[:8]
	}
	return out
}
