package controlplane

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/apply"
	"github.com/meshwright/meshwright/internal/release"
	"github.com/meshwright/meshwright/internal/render"
	"github.com/meshwright/meshwright/internal/stages"
	"github.com/meshwright/meshwright/internal/testenv"
	"github.com/meshwright/meshwright/internal/writecount"
)

var k8s client.WithWatch

// adminConfig is envtest's own (cluster-admin) client configuration.
var adminConfig *rest.Config

// The envtest here starts without Istio's CRDs: TestExternalCRDs installs them as another
// installer would, part-way through.
func TestMain(m *testing.M) {
	testenv.Main(m, func(cfg *rest.Config) (err error) {
		adminConfig = cfg
		k8s, err = client.NewWithWatch(cfg, client.Options{Scheme: clientgoscheme.Scheme})
		return err
	})
}

var crdGVK = schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"}

// meshIn returns an installation named name whose control plane goes to namespace, which it
// creates.
func meshIn(t *testing.T, name, namespace string) *meshv1.MeshInstallation {
	t.Helper()
	err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: meshv1.MeshInstallationSpec{ControlPlane: meshv1.ControlPlaneSpec{Namespace: namespace}}}
}

// crdWrites lists the writes to CRDs among those counted.
func crdWrites(w *writecount.Counter) []string {
	var out []string
	for _, wr := range w.Writes() {
		if strings.Contains(wr, " "+crdGVK.Kind+" ") {
			out = append(out, wr)
		}
	}
	return out
}

// TestExternalCRDs: with ExternalCRDs the stage never writes a CRD. Without Istio's CRDs it
// stops before applying anything and names what is missing; once someone else installs them it
// goes on to istiod; a CRD that lacks a version the release serves is reported; deleting the
// installation leaves every CRD as it was, even with removeCRDsOnDelete. The same passes with
// the operator managing the CRDs do write them: the counter can see a write.
func TestExternalCRDs(t *testing.T) {
	ctx := context.Background()
	const ns = "istio-system"
	mesh := meshIn(t, "external", ns)
	mesh.Spec.ControlPlane.RemoveCRDsOnDelete = true
	var writes writecount.Counter
	c := writes.Wrap(k8s, interceptor.Funcs{})
	stage := &Stage{Client: c, Applier: &apply.Applier{Client: c, FieldManager: "meshwright"}, ExternalCRDs: true}
	istiodSA := func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "istiod"}, &corev1.ServiceAccount{})
	}

	// No CRDs: nothing is applied, and the condition says which CRDs and what to do.
	res, err := stage.Reconcile(ctx, mesh)
	if err != nil {
		t.Fatal(err)
	}
	if res.State != stages.NotReady || res.Reason != meshv1.ReasonIstioCRDsMissing {
		t.Fatalf("without CRDs: %v %s %q, want NotReady %s", res.State, res.Reason, res.Message, meshv1.ReasonIstioCRDsMissing)
	}
	for _, want := range []string{"not installed", "--istio-crds=managed", release.DefaultIstioVersion} {
		if !strings.Contains(res.Message, want) {
			t.Errorf("message %q does not say %q", res.Message, want)
		}
	}
	if err := istiodSA(); !apierrors.IsNotFound(err) {
		t.Errorf("istiod's ServiceAccount was applied before the CRDs were there: %v", err)
	}

	// Someone else installs them.
	if err := testenv.InstallIstioCRDs(ctx, k8s); err != nil {
		t.Fatal(err)
	}
	crds, err := render.CRDs(release.DefaultIstioVersion)
	if err != nil {
		t.Fatal(err)
	}
	versions := map[string]string{}
	for _, crd := range crds {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(crdGVK)
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(crd), got); err != nil {
			t.Fatal(err)
		}
		versions[crd.GetName()] = got.GetResourceVersion()
	}
	// Established is set by the API server shortly after creation.
	var last stages.Result
	for i := 0; i < 50; i++ {
		if last, err = stage.Reconcile(ctx, mesh); err != nil {
			t.Fatal(err)
		}
		if last.Reason != meshv1.ReasonIstioCRDsMissing {
			break
		}
	}
	if last.Reason != meshv1.ReasonWaitingForIstiod {
		t.Fatalf("with the CRDs installed: %v %s %q, want %s (envtest runs no Deployment controller)", last.State, last.Reason, last.Message, meshv1.ReasonWaitingForIstiod)
	}
	if err := istiodSA(); err != nil {
		t.Errorf("istiod's ServiceAccount was not applied once the CRDs were there: %v", err)
	}

	if _, err := stage.Cleanup(ctx, mesh); err != nil {
		t.Fatal(err)
	}
	for name, rv := range versions {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(crdGVK)
		if err := k8s.Get(ctx, client.ObjectKey{Name: name}, got); err != nil {
			t.Errorf("CRD %s after clean-up: %v", name, err)
		} else if got.GetResourceVersion() != rv || got.GetDeletionTimestamp() != nil {
			t.Errorf("CRD %s was changed by the clean-up (resourceVersion %s → %s)", name, rv, got.GetResourceVersion())
		}
	}
	if w := crdWrites(&writes); len(w) > 0 {
		t.Errorf("the stage wrote to CRDs with ExternalCRDs: %v", w)
	}

	// The contrast: managing the CRDs, the same pass takes them over (labels and hash).
	managed := &Stage{Client: c, Applier: &apply.Applier{Client: c, FieldManager: "meshwright"}}
	if _, err := managed.Reconcile(ctx, mesh); err != nil {
		t.Fatal(err)
	}
	if len(crdWrites(&writes)) == 0 {
		t.Error("the managed stage wrote no CRD: the counter sees nothing")
	}
}

func TestExternalCRDProblem(t *testing.T) {
	crd := func(established bool, served ...string) *unstructured.Unstructured {
		var versions []any
		for _, v := range served {
			versions = append(versions, map[string]any{"name": v, "served": true})
		}
		versions = append(versions, map[string]any{"name": "v1alpha0", "served": false})
		status := "False"
		if established {
			status = "True"
		}
		return &unstructured.Unstructured{Object: map[string]any{
			"spec":   map[string]any{"versions": versions},
			"status": map[string]any{"conditions": []any{map[string]any{"type": "Established", "status": status}}},
		}}
	}
	tests := map[string]struct {
		current *unstructured.Unstructured
		want    string
	}{
		"missing":                        {current: nil, want: "not installed"},
		"not established":                {current: crd(false, "v1", "v1beta1"), want: "not Established"},
		"an older release's CRD":         {current: crd(true, "v1beta1"), want: "does not serve v1"},
		"serves every version":           {current: crd(true, "v1", "v1beta1"), want: ""},
		"serves more than the release":   {current: crd(true, "v1", "v1beta1", "v2"), want: ""},
		"a version the release does not": {current: crd(true, "v1"), want: "does not serve v1beta1"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := externalCRDProblem(crd(true, "v1", "v1beta1"), tc.current); got != tc.want {
				t.Errorf("externalCRDProblem = %q, want %q", got, tc.want)
			}
		})
	}
}
