package controlplane

import (
	"context"
	"fmt"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/gatewayapi"
	"github.com/meshwright/meshwright/internal/render"
)

// gatewayAPIInput decides, in ambient mode, whether the Gateway API's CRDs are rendered: when
// the cluster has none, or only the operator's as it left them (gatewayapi.Ours). With ExternalCRDs they are
// not the operator's to write either. p.gatewayAPIForeign keeps the release of someone else's
// for the stage's message.
func (s *Stage) gatewayAPIInput(ctx context.Context, p *planePass, in *render.Input) error {
	if !in.Ambient || s.ExternalCRDs {
		return nil
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinitionList"))
	if err := s.Client.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("listing CustomResourceDefinitions for the Gateway API's: %w", err)
	}
	release, err := render.GatewayAPIRelease()
	if err != nil {
		return err
	}
	var present []gatewayapi.CRD
	for _, crd := range list.Items {
		if gatewayapi.IsCRD(crd.GetName()) {
			present = append(present, gatewayapi.CRD{Name: crd.GetName(), Ours: crd.GetLabels()[meshv1.LabelInstallation] == p.mesh.Name,
				BundleVersion: crd.GetAnnotations()[gatewayapi.BundleVersionAnnotation], Channel: crd.GetAnnotations()[gatewayapi.ChannelAnnotation]})
		}
	}
	in.GatewayAPI = gatewayapi.Ours(present, release)
	p.gatewayAPIForeign = gatewayapi.Foreign(present, release)
	return nil
}

// gatewayAPIMessage is what the stage's message says of the Gateway API in ambient mode.
func gatewayAPIMessage(p *planePass) string {
	switch {
	case p.in.GatewayAPI:
		release, _ := render.GatewayAPIRelease() // decoded already, for the render
		return fmt.Sprintf(" Gateway API CRDs %s (standard channel) installed for waypoints.", release)
	case p.gatewayAPIForeign != "":
		return fmt.Sprintf(" The Gateway API CRDs in the cluster were installed by someone else (release %s) and are left as they are.", p.gatewayAPIForeign)
	}
	return ""
}
