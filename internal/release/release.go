// Package release names the Istio release this build of the operator installs by default, so the
// API, the controller and the docs agree on one value.
package release

// DefaultIstioVersion is installed when spec.version is empty. The charts embedded in this build
// correspond to the Istio 1.31 line; images are pinned to this release.
const DefaultIstioVersion = "1.31.4"
