package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
)

// applySample applies config/samples/ to a cluster and removes it at the end of the test.
func applySample(t *testing.T, c client.Client, cl *cluster.Cluster) {
	t.Helper()
	ctx := context.Background()
	if err := cluster.ApplyFiles(ctx, cl.RESTConfig(), filepath.Join(repoRoot, "config", "samples", "meshwright_v1alpha1_meshinstallation.yaml")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
		_ = c.Delete(ctx, m)
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if apierrors.IsNotFound(c.Get(ctx, client.ObjectKey{Name: "default"}, m)) {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Errorf("the sample MeshInstallation was not removed within 30s")
	})
}

// TestControlPlaneDriftIsUndone edits and deletes what the operator owns, as a person or
// another tool might, and checks that it is restored while fields istiod owns are left alone.
func TestControlPlaneDriftIsUndone(t *testing.T) {
	ctx := context.Background()
	runOperator(t, lc)
	applySample(t, k8s, lc)
	framework.WaitCondition(t, k8s, "default", meshv1.ConditionControlPlaneReady, metav1.ConditionTrue, meshv1.ReasonControlPlaneReady, 120*time.Second)

	// Someone changes istiod's image: it is set back.
	dep := &appsv1.Deployment{}
	key := client.ObjectKey{Namespace: "istio-system", Name: "istiod"}
	if err := k8s.Get(ctx, key, dep); err != nil {
		t.Fatal(err)
	}
	pinned := dep.Spec.Template.Spec.Containers[0].Image
	dep.Spec.Template.Spec.Containers[0].Image = "registry.example/evil:1"
	if err := k8s.Update(ctx, dep, client.FieldOwner("someone")); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 30*time.Second, "istiod's image to be restored to "+pinned, func() (bool, error) {
		if err := k8s.Get(ctx, key, dep); err != nil {
			return false, err
		}
		return dep.Spec.Template.Spec.Containers[0].Image == pinned, nil
	})

	// Someone deletes istiod's mesh ConfigMap: it is recreated.
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "istio"}}
	if err := k8s.Delete(ctx, cm); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 30*time.Second, "ConfigMap istio-system/istio to be recreated", func() (bool, error) {
		err := k8s.Get(ctx, client.ObjectKeyFromObject(cm), cm)
		return err == nil, client.IgnoreNotFound(err)
	})

	// istiod patches the webhooks' caBundle and raises the validator's failurePolicy to Fail; a
	// user labels a webhook. None of it is reverted, even by a pass that applies other changes.
	bundle := []byte("-----BEGIN CERTIFICATE-----\nistiod\n-----END CERTIFICATE-----\n")
	mwh := &admissionv1.MutatingWebhookConfiguration{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: "istio-sidecar-injector"}, mwh); err != nil {
		t.Fatal(err)
	}
	for i := range mwh.Webhooks {
		mwh.Webhooks[i].ClientConfig.CABundle = bundle
	}
	if mwh.Labels == nil {
		mwh.Labels = map[string]string{}
	}
	mwh.Labels["team"] = "platform"
	if err := k8s.Update(ctx, mwh, client.FieldOwner("pilot-discovery")); err != nil {
		t.Fatal(err)
	}
	vwh := &admissionv1.ValidatingWebhookConfiguration{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: "istio-validator-istio-system"}, vwh); err != nil {
		t.Fatal(err)
	}
	fail := admissionv1.Fail
	for i := range vwh.Webhooks {
		vwh.Webhooks[i].FailurePolicy = &fail
		vwh.Webhooks[i].ClientConfig.CABundle = bundle
	}
	if err := k8s.Update(ctx, vwh, client.FieldOwner("pilot-discovery")); err != nil {
		t.Fatal(err)
	}
	// A spec change makes the next pass re-render and compare every object.
	setVersion(t, "")
	framework.WaitCondition(t, k8s, "default", meshv1.ConditionControlPlaneReady, metav1.ConditionTrue, meshv1.ReasonControlPlaneReady, 60*time.Second)
	if err := k8s.Get(ctx, client.ObjectKey{Name: "istio-sidecar-injector"}, mwh); err != nil {
		t.Fatal(err)
	}
	if mwh.Labels["team"] != "platform" || string(mwh.Webhooks[0].ClientConfig.CABundle) != string(bundle) {
		t.Fatalf("the operator reverted fields it does not own on the injector webhook: labels %v, caBundle %q", mwh.Labels, mwh.Webhooks[0].ClientConfig.CABundle)
	}
	if err := k8s.Get(ctx, client.ObjectKey{Name: "istio-validator-istio-system"}, vwh); err != nil {
		t.Fatal(err)
	}
	if *vwh.Webhooks[0].FailurePolicy != admissionv1.Fail {
		t.Fatalf("the operator reverted istiod's failurePolicy to %s", *vwh.Webhooks[0].FailurePolicy)
	}

	// Turning autoscaling off in the values removes the HPA the earlier render made (pruning),
	// and sets istiod's replicas; turning it back on restores the HPA.
	hpaKey := client.ObjectKey{Namespace: "istio-system", Name: "istiod"}
	if err := k8s.Get(ctx, hpaKey, &autoscalingv2.HorizontalPodAutoscaler{}); err != nil {
		t.Fatalf("the default render should have an HPA: %v", err)
	}
	setValues(t, `{"pilot":{"autoscaleEnabled":false,"replicaCount":2}}`)
	framework.WaitCondition(t, k8s, "default", meshv1.ConditionControlPlaneReady, metav1.ConditionTrue, meshv1.ReasonControlPlaneReady, 60*time.Second)
	framework.Eventually(t, 30*time.Second, "the HPA to be pruned", func() (bool, error) {
		err := k8s.Get(ctx, hpaKey, &autoscalingv2.HorizontalPodAutoscaler{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	if err := k8s.Get(ctx, key, dep); err != nil || dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
		t.Fatalf("istiod replicas = %v (%v), want 2 from the values", dep.Spec.Replicas, err)
	}
	setValues(t, "null")
	framework.Eventually(t, 30*time.Second, "the HPA to come back", func() (bool, error) {
		err := k8s.Get(ctx, hpaKey, &autoscalingv2.HorizontalPodAutoscaler{})
		return err == nil, client.IgnoreNotFound(err)
	})
	framework.WaitCondition(t, k8s, "default", meshv1.ConditionControlPlaneReady, metav1.ConditionTrue, meshv1.ReasonControlPlaneReady, 60*time.Second)

	// A version this build cannot install is reported, with the versions it can; setting it
	// back recovers.
	setVersion(t, "1.20.0")
	mesh := framework.WaitCondition(t, k8s, "default", meshv1.ConditionControlPlaneReady, metav1.ConditionFalse, meshv1.ReasonUnsupportedVersion, 60*time.Second)
	if msg := meta.FindStatusCondition(mesh.Status.Conditions, meshv1.ConditionControlPlaneReady).Message; !strings.Contains(msg, "1.31.4") {
		t.Fatalf("the UnsupportedVersion message does not list the supported versions: %q", msg)
	}
	setVersion(t, "")
	framework.WaitCondition(t, k8s, "default", meshv1.ConditionControlPlaneReady, metav1.ConditionTrue, meshv1.ReasonControlPlaneReady, 60*time.Second)
}

// setVersion sets the sample's spec.version (empty: the default) with a merge patch.
func setVersion(t *testing.T, v string) {
	t.Helper()
	patch := `{"spec":{"version":null}}`
	if v != "" {
		patch = `{"spec":{"version":"` + v + `"}}`
	}
	m := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	if err := k8s.Patch(context.Background(), m, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatal(err)
	}
	if v == "" {
		// No generation change when it was already unset: touch an annotation so a pass runs.
		touch := `{"metadata":{"annotations":{"e2e.meshwright.io/touched":"` + time.Now().Format(time.RFC3339Nano) + `"}}}`
		if err := k8s.Patch(context.Background(), m, client.RawPatch(types.MergePatchType, []byte(touch))); err != nil {
			t.Fatal(err)
		}
	}
}

// setValues sets the sample's spec.controlPlane.values (a JSON object, or null to remove them).
func setValues(t *testing.T, values string) {
	t.Helper()
	m := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	patch := `{"spec":{"controlPlane":{"values":` + values + `}}}`
	if err := k8s.Patch(context.Background(), m, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatal(err)
	}
}

// TestCertManagerInstalledLater: without cert-manager the rollout reports CertManagerNotFound;
// installing cert-manager lets it continue with no restart of the operator. A hand-made cacerts
// Secret in the way is reported (CASecretExists) and left untouched until its owner moves it.
func TestCertManagerInstalledLater(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	ctx := context.Background()
	bare, c := framework.StartCluster(t, cluster.Options{WithoutCertManager: true})
	// A plug-in CA someone made by hand sits where the operator would write its own.
	handMade := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "cacerts"},
		Data:       map[string][]byte{"ca-cert.pem": []byte("hand-made")},
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, handMade); err != nil {
		t.Fatal(err)
	}
	runOperator(t, bare)
	applySample(t, c, bare)
	mesh := framework.WaitCondition(t, c, "default", meshv1.ConditionCertificatesReady, metav1.ConditionFalse, meshv1.ReasonCertManagerNotFound, 60*time.Second)
	if msg := meta.FindStatusCondition(mesh.Status.Conditions, meshv1.ConditionReady).Message; !strings.Contains(msg, "Install cert-manager") {
		t.Fatalf("Ready does not say how to fix it: %q", msg)
	}
	if meta.FindStatusCondition(mesh.Status.Conditions, meshv1.ConditionControlPlaneReady).Reason != meshv1.ReasonWaitingForPreviousStage {
		t.Fatal("the control-plane stage ran although the certificates stage is not Ready")
	}

	if err := bare.StartCertManager(ctx); err != nil {
		t.Fatal(err)
	}
	// With cert-manager there, the hand-made Secret is in the way: reported, never overwritten.
	framework.WaitCondition(t, c, "default", meshv1.ConditionCertificatesReady, metav1.ConditionFalse, meshv1.ReasonCASecretExists, 60*time.Second)
	got := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(handMade), got); err != nil {
		t.Fatal(err)
	}
	if string(got.Data["ca-cert.pem"]) != "hand-made" || len(got.Data) != 1 {
		t.Fatalf("the hand-made cacerts Secret was changed: %v", got.Data)
	}

	// Moved aside by its owner, the rollout continues.
	if err := c.Delete(ctx, got); err != nil {
		t.Fatal(err)
	}
	framework.WaitCondition(t, c, "default", meshv1.ConditionControlPlaneReady, metav1.ConditionTrue, meshv1.ReasonControlPlaneReady, 120*time.Second)
}

// TestUsersIssuerAndCRDRemoval: switched to spec.certificates.issuerRef, the user's
// ClusterIssuer signs the intermediate and the operator's own root goes; with
// removeCRDsOnDelete, deleting the installation removes Istio's CRDs too. Runs on a cluster of its own, since it removes cluster-wide CRDs.
func TestUsersIssuerAndCRDRemoval(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	ctx := context.Background()
	own, c := framework.StartCluster(t, cluster.Options{})
	runOperator(t, own)
	applyYAML(t, own, corpCA+`---
apiVersion: meshwright.io/v1alpha1
kind: MeshInstallation
metadata: {name: default}
spec:
  controlPlane: {removeCRDsOnDelete: true}
  certificates: {issuerRef: {kind: ClusterIssuer, name: corp-ca}}
`)
	// The user's issuer from the start (switching to it later is a root rotation: see
	// TestRootRotation): no root of the operator's, cacerts issued by the user's CA.
	mesh := framework.WaitCondition(t, c, "default", meshv1.ConditionControlPlaneReady, metav1.ConditionTrue, meshv1.ReasonControlPlaneReady, 120*time.Second)
	corpRoot := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "cert-manager", Name: "corp-root"}, corpRoot); err != nil {
		t.Fatal(err)
	}
	cacerts := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "istio-system", Name: "cacerts"}, cacerts); err != nil {
		t.Fatal(err)
	}
	if string(cacerts.Data["ca.crt"]) != string(corpRoot.Data["tls.crt"]) {
		t.Fatal("cacerts is not issued by the user's issuer")
	}
	if got := mesh.Status.Certificates.Issuer; got != "ClusterIssuer/corp-ca" {
		t.Fatalf("status.certificates.issuer = %q, want ClusterIssuer/corp-ca", got)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "istio-system", Name: "meshwright-root-ca"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Fatalf("with the user's issuer there must be no root of the operator's: %v", err)
	}

	if err := c.Delete(ctx, mesh); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		// What was left, to tell a clean-up that did not run from CRDs that would not go.
		m := &meshv1.MeshInstallation{}
		err := c.Get(ctx, client.ObjectKey{Name: "default"}, m)
		t.Logf("MeshInstallation: err %v, deletionTimestamp %v, finalizers %v", err, m.DeletionTimestamp, m.Finalizers)
		crds := &apiextensionsv1.CustomResourceDefinitionList{}
		if err := c.List(ctx, crds); err == nil {
			for _, crd := range crds.Items {
				if strings.HasSuffix(crd.Spec.Group, "istio.io") {
					t.Logf("CRD %s: deletionTimestamp %v, finalizers %v, labels %v, conditions %+v", crd.Name, crd.DeletionTimestamp, crd.Finalizers, crd.Labels, crd.Status.Conditions)
				}
			}
		}
		// The API server's CRD finalizer says why a CRD stays.
		var lines []string
		for _, l := range strings.Split(tailFile(own.LogPath("kube-apiserver"), 3000), "\n") {
			if strings.Contains(l, "istio.io") && (strings.Contains(strings.ToLower(l), "finaliz") || strings.Contains(l, "crd") || strings.Contains(l, "CustomResource")) {
				lines = append(lines, l)
			}
		}
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		t.Logf("kube-apiserver on Istio's CRDs:\n%s", strings.Join(lines, "\n"))
	})
	framework.Eventually(t, 120*time.Second, "Istio's CRDs to be removed with the installation", func() (bool, error) {
		return istioCRDs(t, c) == 0, nil
	})
}

// corpCA is the user's PKI: a CA ClusterIssuer corp-ca backed by a self-signed root, whose
// Secret is cert-manager/corp-root.
const corpCA = `
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: corp-selfsigned}
spec: {selfSigned: {}}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: corp-root, namespace: cert-manager}
spec: {isCA: true, commonName: Corp Root, secretName: corp-root, issuerRef: {kind: ClusterIssuer, name: corp-selfsigned}}
---
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: corp-ca}
spec: {ca: {secretName: corp-root}}
`

// applyYAML applies manifests server-side, as kubectl apply --server-side would.
func applyYAML(t *testing.T, cl *cluster.Cluster, manifests string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "manifests.yaml")
	if err := os.WriteFile(path, []byte(manifests), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cluster.ApplyFiles(context.Background(), cl.RESTConfig(), path); err != nil {
		t.Fatal(err)
	}
}

// istioCRDs counts the CRDs of Istio's API groups in a cluster.
func istioCRDs(t *testing.T, c client.Client) int {
	t.Helper()
	crds := &apiextensionsv1.CustomResourceDefinitionList{}
	if err := c.List(context.Background(), crds); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, crd := range crds.Items {
		if strings.HasSuffix(crd.Spec.Group, "istio.io") {
			n++
		}
	}
	return n
}
