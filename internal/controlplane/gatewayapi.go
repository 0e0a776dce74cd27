package controlplane

import (
	"context"
	"fmt"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/gatewayapi"
	"github.com/meshwright/meshwright/internal/render"
)

// gatewayAPIInput decides, in ambient mode, whether the Gateway API's CRDs are rendered: when
// the cluster has none, or only the operator's as it left them (gatewayapi.Ours). With
// ExternalCRDs they are not the operator's to write either. p.gatewayAPIForeign keeps the
// release of someone else's for the stage's message.
func (s *Stage) gatewayAPIInput(ctx context.Context, p *planePass, in *render.Input) error {
	if !in.Ambient || s.ExternalCRDs {
		return nil
	}
	present, err := s.gatewayAPIPresent(ctx, p.mesh.Name)
	if err != nil {
		return err
	}
	in.GatewayAPI = gatewayapi.Ours(present, gatewayapi.Release)
	p.gatewayAPIForeign = gatewayapi.Foreign(present, gatewayapi.Release)
	return nil
}

// gatewayAPIPresent reads the Gateway API CRDs in the cluster (from the cache, which holds every
// CRD).
func (s *Stage) gatewayAPIPresent(ctx context.Context, installation string) ([]gatewayapi.CRD, error) {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinitionList"))
	if err := s.Client.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing CustomResourceDefinitions for the Gateway API's: %w", err)
	}
	var present []gatewayapi.CRD
	for _, crd := range list.Items {
		if gatewayapi.IsCRD(crd.GetName()) {
			present = append(present, gatewayapi.CRD{Name: crd.GetName(), Ours: crd.GetLabels()[meshv1.LabelInstallation] == installation,
				BundleVersion: crd.GetAnnotations()[gatewayapi.BundleVersionAnnotation], Channel: crd.GetAnnotations()[gatewayapi.ChannelAnnotation]})
		}
	}
	return present, nil
}

// createGatewayAPICRD creates a Gateway API CRD the cache does not hold, rather than applying
// it: an apply takes over a CRD that someone else created a moment ago (a GitOps bootstrap), a
// create fails on it. Either way the CRD is waited for: the next pass decides again on a cache
// that holds it.
func (s *Stage) createGatewayAPICRD(ctx context.Context, crd *unstructured.Unstructured) applyOutcome {
	if err := s.Client.Create(ctx, crd.DeepCopy(), client.FieldOwner(s.Applier.FieldManager)); err != nil && !apierrors.IsAlreadyExists(err) {
		return applyOutcome{err: fmt.Errorf("creating the Gateway API's CRD %s: %w", crd.GetName(), err)}
	}
	return applyOutcome{waiting: crd.GetName()}
}

// keepsGatewayAPI tells whether Cleanup may delete the installation's Gateway API CRDs under
// removeCRDsOnDelete: only while all of those in the cluster are still its own as it left them
// (gatewayapi.Ours); otherwise they are released. Deleting one deletes every Gateway and route
// of its kind, an ingress controller's too.
func (s *Stage) keepsGatewayAPI(ctx context.Context, installation string) (bool, error) {
	present, err := s.gatewayAPIPresent(ctx, installation)
	if err != nil {
		return false, err
	}
	return gatewayapi.Ours(present, gatewayapi.Release), nil
}

// gatewayAPIMessage is what the stage's message says of the Gateway API in ambient mode.
func gatewayAPIMessage(p *planePass) string {
	switch {
	case p.in.GatewayAPI:
		return fmt.Sprintf(" Gateway API CRDs %s (standard channel) installed for waypoints.", gatewayapi.Release)
	case p.gatewayAPIForeign != "":
		return fmt.Sprintf(" The Gateway API CRDs in the cluster were installed by someone else (release %s) and are left as they are.", p.gatewayAPIForeign)
	}
	return ""
}
