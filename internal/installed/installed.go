// Package installed reads what the cluster holds of an installation that several stages and
// the kubectl plugin need alike: its control-plane revisions (the istiod Deployments, with their
// versions and availability) and their history (the operator's record of them). The ControlPlane
// stage writes these; the others only read them, through here, so that no stage imports another.
package installed

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/meshspec"
	"github.com/meshwright/meshwright/internal/render"
	"github.com/meshwright/meshwright/internal/revision"
)

// istiodComponent is the chart whose objects belong to one revision; the base chart's (CRDs,
// the default validator) are shared by every revision.
const istiodComponent = render.ComponentIstiod

// RevisionOf names the revision an istiod-chart object belongs to.
func RevisionOf(o client.Object) string {
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
	// Unusable is true when a record exists but cannot be read: History is then what status
	// reported, and the next pass writes the record again even if that history is unchanged.
	Unusable bool
}

// Find reads an installation's revisions: its record, then its istiod Deployments.
func Find(ctx context.Context, r client.Reader, mesh *meshv1.MeshInstallation) (Found, error) {
	var f Found
	var err error
	if f.History, f.Recorded, f.Unusable, err = readHistory(ctx, r, mesh); err != nil {
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
		name := RevisionOf(dep)
		if slices.ContainsFunc(f.Installed, func(r revision.Installed) bool { return r.Name == name }) {
			continue
		}
		f.Installed = append(f.Installed, revision.Installed{Name: name, Available: available(dep), ProxyStats: dep.GetLabels()[render.LabelProxyStats] == "true",
			HoldApplication: dep.GetLabels()[render.LabelHoldApplication] == "true",
			Version:         f.History.Version(name, dep.GetLabels()[meshv1.LabelIstioVersion], discoveryImage(dep))})
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
	ok, _ := DeploymentAvailable(dep)
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

// ServedVersions lists the versions a CRD serves (spec.versions[].served).
func ServedVersions(crd *unstructured.Unstructured) []string {
	var out []string
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	for _, v := range versions {
		m, _ := v.(map[string]any)
		if name, _ := m["name"].(string); name != "" && m["served"] == true {
			out = append(out, name)
		}
	}
	return out
}

// ConditionTrue reports whether an object's status holds a condition of that type that is True.
func ConditionTrue(u *unstructured.Unstructured, condType string) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == condType {
			return m["status"] == "True"
		}
	}
	return false
}

// DaemonSetReady tells whether a DaemonSet runs its current spec, Ready, on every node it is
// scheduled to, and if not, why.
func DaemonSetReady(ds *unstructured.Unstructured) (bool, string) {
	status := func(field string) int64 {
		n, _, _ := unstructured.NestedInt64(ds.Object, "status", field)
		return n
	}
	if status("observedGeneration") < ds.GetGeneration() {
		return false, "the new spec is not rolled out yet"
	}
	want, updated, available := status("desiredNumberScheduled"), status("updatedNumberScheduled"), status("numberAvailable")
	if updated < want || available < want {
		return false, fmt.Sprintf("%d of %d nodes run the current spec, %d available", updated, want, available)
	}
	return true, ""
}

// DeploymentAvailable is true when the current generation is rolled out and every desired
// replica is available.
func DeploymentAvailable(dep *unstructured.Unstructured) (bool, string) {
	gen := dep.GetGeneration()
	observed, _, _ := unstructured.NestedInt64(dep.Object, "status", "observedGeneration")
	if observed < gen {
		return false, "the new spec is not rolled out yet"
	}
	want, found, _ := unstructured.NestedInt64(dep.Object, "spec", "replicas")
	if !found {
		want = 1
	}
	updated, _, _ := unstructured.NestedInt64(dep.Object, "status", "updatedReplicas")
	available, _, _ := unstructured.NestedInt64(dep.Object, "status", "availableReplicas")
	if updated < want || available < want {
		return false, fmt.Sprintf("%d of %d replicas updated, %d available", updated, want, available)
	}
	if !ConditionTrue(dep, "Available") {
		return false, "its Available condition is not True"
	}
	return true, ""
}
