package policy

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/apierr"
	"github.com/meshwright/meshwright/internal/apply"
	"github.com/meshwright/meshwright/internal/meshspec"
	"github.com/meshwright/meshwright/internal/stages"
)

// Stage is the Policies stage: the mesh-wide PERMISSIVE PeerAuthentication that keeps traffic
// flowing between injected and uninjected workloads while namespaces adopt the mesh.
type Stage struct {
	// Client reads from the cache, which holds every PeerAuthentication and AuthorizationPolicy
	// (there are few) once Watch has started their informers.
	Client client.Client
	// Reader reads from the API server, for clean-up.
	Reader  client.Reader
	Applier *apply.Applier
	// Watch starts watching the policy kinds; they exist only once Istio's CRDs do.
	Watch func(gvks ...schema.GroupVersionKind) error
}

// Name implements stages.Stage.
func (s *Stage) Name() meshv1.Stage { return meshv1.StagePolicies }

// ConditionType implements stages.Stage.
func (s *Stage) ConditionType() string { return meshv1.ConditionPoliciesReady }

// Reconcile implements stages.Stage.
func (s *Stage) Reconcile(ctx context.Context, mesh *meshv1.MeshInstallation) (stages.Result, error) {
	if s.Watch != nil {
		if err := s.Watch(Kinds()...); err != nil {
			return stages.Result{}, err
		}
	}
	root := meshspec.ControlPlaneNamespace(mesh)
	desired := MeshWide(mesh.Name, root)
	current := &unstructured.Unstructured{}
	current.SetGroupVersionKind(PeerAuthenticationGVK)
	switch err := s.Client.Get(ctx, client.ObjectKeyFromObject(desired), current); {
	case err == nil && current.GetLabels()[meshv1.LabelInstallation] != mesh.Name:
		mode, _, _ := unstructured.NestedString(current.Object, "spec", "mtls", "mode")
		return stages.Result{State: stages.Ready, Reason: meshv1.ReasonMeshPolicyExists,
			Message: fmt.Sprintf("PeerAuthentication %s/%s was not created by Meshwright (mode %q); it is left as it is. Delete it to let Meshwright keep the mesh PERMISSIVE while namespaces adopt it.", root, MeshWideName, mode)}, nil
	case err != nil && !apierrors.IsNotFound(err):
		return stages.Result{}, fmt.Errorf("reading the mesh-wide PeerAuthentication: %w", err)
	}
	if _, err := s.Applier.Apply(ctx, desired); err != nil {
		if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) {
			return stages.Result{State: stages.Failed, Reason: meshv1.ReasonApplyRejected,
				Message: fmt.Sprintf("The API server refused PeerAuthentication %s/%s: %v", root, MeshWideName, err)}, nil
		}
		return stages.Result{}, err
	}
	return stages.Result{State: stages.Ready, Reason: meshv1.ReasonMeshPolicyApplied,
		Message: fmt.Sprintf("PeerAuthentication %s/%s sets mesh-wide mTLS to PERMISSIVE.", root, MeshWideName)}, nil
}

// Cleanup removes every policy of the installation, mesh-wide and per namespace. Without
// Istio's CRDs there is nothing to remove.
func (s *Stage) Cleanup(ctx context.Context, mesh *meshv1.MeshInstallation) (bool, error) {
	return DeleteAll(ctx, s.Reader, s.Client, mesh.Name)
}

// DeleteAll deletes the installation's policies of every kind, found with reader (the API
// server: at clean-up the cache may not watch these kinds yet), and reports whether none was left.
func DeleteAll(ctx context.Context, reader client.Reader, c client.Client, installation string) (bool, error) {
	for _, gvk := range Kinds() {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := reader.List(ctx, list, client.MatchingLabels{meshv1.LabelInstallation: installation}); err != nil {
			if apierr.Absent(err) {
				continue
			}
			return false, fmt.Errorf("listing %s to remove: %w", gvk.Kind, err)
		}
		for i := range list.Items {
			if err := c.Delete(ctx, &list.Items[i]); err != nil && !apierrors.IsNotFound(err) {
				return false, fmt.Errorf("deleting %s %s/%s: %w", gvk.Kind, list.Items[i].GetNamespace(), list.Items[i].GetName(), err)
			}
		}
	}
	return true, nil
}
