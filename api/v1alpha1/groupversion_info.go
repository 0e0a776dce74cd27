// Package v1alpha1 holds the meshwright.io/v1alpha1 API: the MeshInstallation a platform team
// writes to roll a service mesh out in gated stages, and the conditions the operator reports back.
// +kubebuilder:object:generate=true
// +groupName=meshwright.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version every Meshwright object is served under.
	GroupVersion = schema.GroupVersion{Group: "meshwright.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package so clients and the manager can decode them.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds this package's types to a scheme; the manager and the tests call it.
	AddToScheme = SchemeBuilder.AddToScheme
)
