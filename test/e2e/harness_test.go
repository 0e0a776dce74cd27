package e2e

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
)

// TestDeploymentBecomesAvailableOnKwok proves the scheduler, the controller-manager and kwok:
// a Deployment's pods are created, scheduled onto a kwok node and reported Ready.
func TestDeploymentBecomesAvailableOnKwok(t *testing.T) {
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "harness-apps"}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns.Name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "registry.example/web:1"}}},
			},
		},
	}
	if err := k8s.Create(ctx, dep); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 90*time.Second, "the Deployment to be Available with 3 ready replicas", func() (bool, error) {
		got := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(dep), got); err != nil {
			return false, err
		}
		for _, c := range got.Status.Conditions {
			if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue && got.Status.ReadyReplicas == 3 {
				return true, nil
			}
		}
		return false, nil
	})
	pods := &corev1.PodList{}
	if err := k8s.List(ctx, pods, client.InNamespace(ns.Name), client.MatchingLabels(labels)); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		node := &corev1.Node{}
		if err := k8s.Get(ctx, client.ObjectKey{Name: p.Spec.NodeName}, node); err != nil {
			t.Fatalf("pod %s is on node %q: %v", p.Name, p.Spec.NodeName, err)
		}
		if node.Annotations[cluster.KwokNodeAnnotation] != "fake" {
			t.Fatalf("pod %s runs on %s, which is not a kwok node", p.Name, node.Name)
		}
	}
}

// TestCertManagerIssuesACAChain proves the real cert-manager controller: a SelfSigned
// ClusterIssuer signs a root CA Certificate, a CA ClusterIssuer backed by it signs a leaf, and
// the leaf chains to the root.
func TestCertManagerIssuesACAChain(t *testing.T) {
	ctx := context.Background()
	ns := cluster.CertManagerNamespace
	selfSigned := &cmv1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: "harness-selfsigned"},
		Spec:       cmv1.IssuerSpec{IssuerConfig: cmv1.IssuerConfig{SelfSigned: &cmv1.SelfSignedIssuer{}}},
	}
	root := &cmv1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Name: "harness-root", Namespace: ns},
		Spec: cmv1.CertificateSpec{
			IsCA: true, CommonName: "harness-root", SecretName: "harness-root",
			PrivateKey: &cmv1.CertificatePrivateKey{Algorithm: cmv1.ECDSAKeyAlgorithm, Size: 256},
			IssuerRef:  cmmeta.IssuerReference{Kind: "ClusterIssuer", Name: selfSigned.Name},
		},
	}
	ca := &cmv1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: "harness-ca"},
		Spec:       cmv1.IssuerSpec{IssuerConfig: cmv1.IssuerConfig{CA: &cmv1.CAIssuer{SecretName: "harness-root"}}},
	}
	leaf := &cmv1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Name: "harness-leaf", Namespace: "default"},
		Spec: cmv1.CertificateSpec{
			DNSNames: []string{"leaf.default.svc"}, SecretName: "harness-leaf",
			IssuerRef: cmmeta.IssuerReference{Kind: "ClusterIssuer", Name: ca.Name},
		},
	}
	for _, o := range []client.Object{selfSigned, root, ca, leaf} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
	framework.Eventually(t, 90*time.Second, "the leaf Certificate to be Ready", func() (bool, error) {
		got := &cmv1.Certificate{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(leaf), got); err != nil {
			return false, err
		}
		for _, c := range got.Status.Conditions {
			if c.Type == cmv1.CertificateConditionReady && c.Status == cmmeta.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})

	rootSecret, leafSecret := &corev1.Secret{}, &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "harness-root"}, rootSecret); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "default", Name: "harness-leaf"}, leafSecret); err != nil {
		t.Fatal(err)
	}
	rootCert := framework.Certificate(t, rootSecret.Data["tls.crt"])
	if !rootCert.IsCA {
		t.Fatal("the root certificate is not a CA")
	}
	leafCert := framework.Certificate(t, leafSecret.Data["tls.crt"])
	pool := x509.NewCertPool()
	pool.AddCert(rootCert)
	if _, err := leafCert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "leaf.default.svc"}); err != nil {
		t.Fatalf("the leaf does not chain to the root: %v", err)
	}
	if string(leafSecret.Data["ca.crt"]) != string(rootSecret.Data["tls.crt"]) {
		t.Fatal("the leaf Secret's ca.crt is not the root certificate")
	}
}
