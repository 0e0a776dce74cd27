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
	"strconv"
	"strings"

	"github.com/Masterminds/semver/v3"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/pkg/consts"
)

// StandardCRDs is the YAML stream of the standard channel's CRDs.
//
//go:embed zz_generated.crds.yaml
var StandardCRDs []byte

// Group is the Gateway API's API group; its CRDs are named <plural>.<Group>.
const Group = gatewayv1.GroupName

// Release is the release of StandardCRDs: hack/gatewayapicrds copies them from the same module
// version, so its own constant names it (TestStandardCRDs checks each CRD says so).
const Release = consts.BundleVersion

// Component is the value of the operator's component label on the CRDs it installs.
const Component = "gateway-api"

// BundleVersionAnnotation is the annotation by which the Gateway API's CRDs say which release
// they are of.
const BundleVersionAnnotation = consts.BundleVersionAnnotation

// IsCRD tells a CRD of the Gateway API by its name.
func IsCRD(name string) bool { return strings.HasSuffix(name, "."+Group) }

// ChannelAnnotation is the annotation by which the Gateway API's CRDs say which channel they
// are of; the operator installs the standard one.
const ChannelAnnotation = consts.ChannelAnnotation

// CRD is what the control plane reads of a Gateway API CRD in the cluster.
type CRD struct {
	// Name is the CRD's name; Ours whether it carries this installation's label (the operator
	// installed it); BundleVersion and Channel its release and channel (its annotations).
	Name          string
	Ours          bool
	BundleVersion string
	Channel       string
}

// keptAt tells whether the operator may go on writing c, its own CRDs being of release
// release: it installed c (its label), and nobody replaced it since with another channel or a
// newer release (kubectl apply keeps the operator's labels on a CRD it overwrites).
func (c CRD) keptAt(release string) bool {
	return c.Ours && c.Channel == "standard" && !newer(c.BundleVersion, release)
}

// newer tells whether release a is newer than b; a release that does not parse is taken as newer
// (someone else's, to be left alone).
func newer(a, b string) bool {
	va, err := semver.NewVersion(a)
	if err != nil {
		return true
	}
	vb, err := semver.NewVersion(b)
	return err == nil && va.GreaterThan(vb)
}

// Ours tells whether the operator, whose CRDs are of release release, is to install and keep
// the Gateway API's CRDs, given those in the cluster: yes when there are none, or all are its own
// as it left them; no when any is someone else's. A cluster whose Gateway API came from
// elsewhere (a cloud's managed add-on, an ingress controller's install, the experimental channel,
// a newer release) keeps it as it is: applying the operator's copy over it could take away fields
// and versions its objects use.
func Ours(present []CRD, release string) bool {
	return !slices.ContainsFunc(present, func(c CRD) bool { return !c.keptAt(release) })
}

// Foreign names the releases and channels of the Gateway API CRDs the operator leaves alone, for
// the control plane's message ("unknown" for a CRD that states no release); "" when there are none.
func Foreign(present []CRD, release string) string {
	var found []string
	for _, c := range present {
		v := c.BundleVersion
		if v == "" {
			v = "unknown"
		}
		if c.Channel != "" && c.Channel != "standard" {
			v += " " + c.Channel
		}
		if !c.keptAt(release) && !slices.Contains(found, v) {
			found = append(found, v)
		}
	}
	slices.Sort(found)
	return strings.Join(found, ", ")
}

// WaypointsRelease is the oldest Gateway API release whose Gateway serves waypoints as the
// operator writes them: v1 is served from v1.0, and spec.infrastructure (the labels istiod gives
// the waypoint's Deployment instead of the Gateway's own) is kept from v1.2; an older API server
// schema prunes it silently.
const WaypointsRelease = "v1.2.0"

// WaypointsUnsupported says why the cluster's Gateway CRD (gateways.<Group>) cannot hold the
// operator's waypoints: not Established yet, no v1 served, or a release older than
// WaypointsRelease; "" when it can. established is the CRD's Established condition.
func WaypointsUnsupported(name string, established bool, served []string, bundleVersion string) string {
	switch {
	case !established:
		return "the CRD " + name + " is not Established yet"
	case !slices.Contains(served, gatewayv1.GroupVersion.Version):
		return "the CRD " + name + " does not serve " + gatewayv1.GroupVersion.String()
	}
	if v, err := semver.NewVersion(bundleVersion); err != nil || v.LessThan(semver.MustParse(WaypointsRelease)) {
		return "the CRD " + name + " is of release " + strconv.Quote(bundleVersion) + " (" + BundleVersionAnnotation + "), not " + WaypointsRelease + " or newer (older ones drop spec.infrastructure)"
	}
	return ""
}
