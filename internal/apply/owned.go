package apply

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

// Owned is a new object of the kind, namespace and name given, labelled as an installation's:
// the labels by which the operator finds, watches, prunes and removes what it created, and tells
// it from what a team wrote.
func Owned(gvk schema.GroupVersionKind, installation, namespace, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetGroupVersionKind(gvk)
	u.SetNamespace(namespace)
	u.SetName(name)
	u.SetLabels(map[string]string{meshv1.LabelManagedBy: meshv1.ManagedByValue, meshv1.LabelInstallation: installation})
	return u
}
