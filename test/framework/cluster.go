package framework

import (
	"context"
	"testing"
	"time"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshscheme "github.com/meshwright/meshwright/api/scheme"
	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/test/cluster"
)

// Scheme is the operator's scheme (Kubernetes, Meshwright, CRDs) with cert-manager's kinds, which
// the tests read and write.
var Scheme = func() *runtime.Scheme {
	s := meshscheme.New()
	utilruntime.Must(cmv1.AddToScheme(s))
	return s
}()

// NewClient is a client of the cluster with Scheme.
func NewClient(t testing.TB, cl *cluster.Cluster) client.Client {
	t.Helper()
	c, err := client.New(cl.RESTConfig(), client.Options{Scheme: Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// StartCluster starts a local cluster of the test's own, stopped at its end, and a client of it.
func StartCluster(t testing.TB, opts cluster.Options) (*cluster.Cluster, client.Client) {
	t.Helper()
	cl, err := cluster.Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cl.Stop()
		RepeatTimeout(t)
	})
	return cl, NewClient(t, cl)
}

// WaitCondition waits until the MeshInstallation name reports condType with status and reason
// for its current generation, and returns it as it was then.
func WaitCondition(t testing.TB, c client.Client, name, condType string, status metav1.ConditionStatus, reason string, timeout time.Duration) *meshv1.MeshInstallation {
	t.Helper()
	mesh := &meshv1.MeshInstallation{}
	Eventually(t, timeout, name+": "+condType+"="+string(status)+"/"+reason, func() (bool, error) {
		if err := c.Get(context.Background(), client.ObjectKey{Name: name}, mesh); err != nil {
			return false, err
		}
		cond := meta.FindStatusCondition(mesh.Status.Conditions, condType)
		return cond != nil && cond.Status == status && cond.Reason == reason && cond.ObservedGeneration == mesh.Generation, nil
	})
	return mesh
}

// MakeNamespace creates a namespace with labels and, per name, a Deployment of two replicas
// (kwok runs their pods), changed by its function when not nil.
func MakeNamespace(t testing.TB, c client.Client, name string, labels map[string]string, deployments map[string]func(*appsv1.Deployment)) {
	t.Helper()
	ctx := context.Background()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}); err != nil {
		t.Fatal(err)
	}
	for dname, mod := range deployments {
		sel := map[string]string{"app": dname}
		dep := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: dname, Namespace: name},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](2),
				Selector: &metav1.LabelSelector{MatchLabels: sel},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: sel},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/" + dname + ":1"}}},
				},
			},
		}
		if mod != nil {
			mod(dep)
		}
		if err := c.Create(ctx, dep); err != nil {
			t.Fatal(err)
		}
	}
}

// WaitAvailable waits until every Deployment of the namespace has all its replicas available.
func WaitAvailable(t testing.TB, c client.Client, namespace string) {
	t.Helper()
	Eventually(t, 90*time.Second, "the Deployments of "+namespace+" to be available", func() (bool, error) {
		deps := &appsv1.DeploymentList{}
		if err := c.List(context.Background(), deps, client.InNamespace(namespace)); err != nil {
			return false, err
		}
		for _, d := range deps.Items {
			if d.Status.AvailableReplicas != *d.Spec.Replicas || d.Status.UpdatedReplicas != *d.Spec.Replicas {
				return false, nil
			}
		}
		return true, nil
	})
}

// GetNamespace reads a namespace, or fails the test.
func GetNamespace(t testing.TB, c client.Client, name string) *corev1.Namespace {
	t.Helper()
	ns := &corev1.Namespace{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: name}, ns); err != nil {
		t.Fatal(err)
	}
	return ns
}

// Exists reads an object into obj and tells whether it exists and is not being deleted.
func Exists(t testing.TB, c client.Client, obj client.Object, namespace, name string) bool {
	t.Helper()
	err := c.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, obj)
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil && obj.GetDeletionTimestamp().IsZero()
}

// Pods lists a namespace's pods that are not being deleted.
func Pods(t testing.TB, c client.Client, namespace string) []corev1.Pod {
	t.Helper()
	list := &corev1.PodList{}
	if err := c.List(context.Background(), list, client.InNamespace(namespace)); err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp.IsZero() {
			out = append(out, p)
		}
	}
	return out
}
