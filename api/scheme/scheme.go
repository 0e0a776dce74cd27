// Package scheme holds the Go types the operator and its tools read: the operator's manager, the
// kubectl plugin, the tests and the benchmarks build their clients on it, so they cannot
// disagree about it, and the plugin needs nothing of the controller to talk to the API server.
package scheme

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

// New is a scheme with Kubernetes' built-in types, the MeshInstallation and CRDs.
func New() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(meshv1.AddToScheme(s))
	utilruntime.Must(apiextensionsv1.AddToScheme(s))
	return s
}
