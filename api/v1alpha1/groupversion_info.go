// Package v1alpha1 holds the meshwright.io/v1alpha1 API: the MeshInstallation a platform team
// writes to roll a service mesh out in gated stages, and the conditions the operator reports back.
// +kubebuilder:object:generate=true
// +groupName=meshwright.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the API group and version every Meshwright object is served under.
	GroupVersion = schema.GroupVersion{Group: "meshwright.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package so clients and the manager can decode them.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds this package's types to a scheme; the manager and the tests call it.
	AddToScheme = SchemeBuilder.AddToScheme
)

// addKnownTypes registers the kinds of this group version, as apimachinery's own API packages do.
func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &MeshInstallation{}, &MeshInstallationList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
