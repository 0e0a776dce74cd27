// Package gatewayapi holds the Gateway API's standard-channel CRDs, which ambient mode needs
// before a namespace can have a waypoint (a waypoint is a Gateway of class istio-waypoint). They
// come from the sigs.k8s.io/gateway-api module go.mod requires, copied by hack/gatewayapicrds at
// `make manifests` (verify-generated checks the copy). The control plane installs them in
// ambient mode when no one else has (see Ours), and keeps them like Istio's CRDs: never pruned,
// kept on uninstall unless spec.controlPlane.removeCRDsOnDelete.
package gatewayapi

import (
	_ "embed" // the CRDs
	"slices"
	"strings"
)

// StandardCRDs is the YAML stream of the standard channel's CRDs.
//
//go:embed zz_generated.crds.yaml
var StandardCRDs []byte

// Group is the Gateway API's API group; its CRDs are named <plural>.<Group>.
const Group = "gateway.networking.k8s.io"

// Component is the value of the operator's component label on the CRDs it installs.
const Component = "gateway-api"

// BundleVersionAnnotation is the annotation by which the Gateway API's CRDs say which release
// they are of.
const BundleVersionAnnotation = Group + "/bundle-version"

// IsCRD tells a CRD of the Gateway API by its name.
func IsCRD(name string) bool { return strings.HasSuffix(name, "."+Group) }

// CRD is what the control plane reads of a Gateway API CRD in the cluster.
type CRD struct {
	// Name is the CRD's name; Ours whether it carries this installation's label (the operator
	// installed it); BundleVersion its release.
	Name          string
	Ours          bool
	BundleVersion string
}

// Ours tells whether the operator is to install and keep the Gateway API's CRDs, given those in
// the cluster: yes when every one there is the operator's (or there are none), no when any is
// someone else's. A cluster whose Gateway API came from elsewhere (a cloud's managed add-on, an
// ingress controller's install, a newer or experimental channel) keeps it as it is: applying the
// operator's copy over it could take away fields its objects use.
func Ours(present []CRD) bool {
	return !slices.ContainsFunc(present, func(c CRD) bool { return !c.Ours })
}

// Foreign names the releases of the Gateway API CRDs someone else installed, for the control
// plane's message ("unknown" for a CRD that states none); "" when there are none.
func Foreign(present []CRD) string {
	var versions []string
	for _, c := range present {
		v := c.BundleVersion
		if v == "" {
			v = "unknown"
		}
		if !c.Ours && !slices.Contains(versions, v) {
			versions = append(versions, v)
		}
	}
	slices.Sort(versions)
	return strings.Join(versions, ", ")
}
