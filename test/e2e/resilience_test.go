package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sort"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/controlplane"
	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
)

// ownedObject is one object the operator made, by kind and key.
type ownedObject struct {
	gvk       schema.GroupVersionKind
	namespace string
	name      string
}

func (o ownedObject) String() string {
	return fmt.Sprintf("%s %s/%s", o.gvk.Kind, o.namespace, o.name)
}

// ownedObjects lists one object of every kind the operator made for the installation (found by
// its installation label), the first by name of each kind.
func ownedObjects(t *testing.T, c client.Client) []ownedObject {
	t.Helper()
	kinds := append(controlplane.OwnedKinds(),
		schema.GroupVersionKind{Version: "v1", Kind: "Secret"},
		schema.GroupVersionKind{Group: "cert-manager.io", Version: "v1", Kind: "Certificate"},
		schema.GroupVersionKind{Group: "cert-manager.io", Version: "v1", Kind: "Issuer"},
		peerAuthenticationGVK, authorizationPolicyGVK)
	var out []ownedObject
	for _, gvk := range kinds {
		list := &metav1.PartialObjectMetadataList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := c.List(context.Background(), list, client.MatchingLabels{meshv1.LabelInstallation: "default"}); err != nil {
			t.Fatal(err)
		}
		sort.Slice(list.Items, func(i, j int) bool {
			return list.Items[i].Namespace+"/"+list.Items[i].Name < list.Items[j].Namespace+"/"+list.Items[j].Name
		})
		if len(list.Items) > 0 {
			o := list.Items[0]
			out = append(out, ownedObject{gvk: gvk, namespace: o.Namespace, name: o.Name})
		}
	}
	return out
}

// metadataOf reads an object's metadata; nil when it does not exist.
func metadataOf(t *testing.T, c client.Client, o ownedObject) *metav1.PartialObjectMetadata {
	t.Helper()
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(o.gvk)
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: o.namespace, Name: o.name}, m); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		t.Fatal(err)
	}
	return m
}

// TestOwnedObjectsAreRestored deletes, then edits, one object of every kind the operator owns
// (cluster-api's ownership resilience checks are the model): each deleted object comes back
// (a new UID), each stripped label the operator set comes back, the installation is Ready again,
// and then the operator writes nothing more for a minute: no object it owns is changed by it
// (its field managers' entries stay as they are), so nothing it restored set off a hot loop.
func TestOwnedObjectsAreRestored(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	ctx := context.Background()
	cl, c := framework.StartCluster(t, cluster.Options{})
	framework.MakeNamespace(t, c, "shop", map[string]string{"team": "shop"}, map[string]func(*appsv1.Deployment){"web": nil})
	framework.WaitAvailable(t, c, "shop")
	meshWithLocalIstiod(t, cl, c, meshv1.MeshInstallationSpec{
		Rollout:    meshv1.RolloutSpec{TrafficGates: meshv1.TrafficGatesSkip, SoakTime: &metav1.Duration{Duration: time.Second}},
		Namespaces: []meshv1.NamespaceRule{{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"team": "shop"}}, Level: meshv1.LevelZeroTrust}},
	})
	framework.WaitCondition(t, c, "default", meshv1.ConditionReady, metav1.ConditionTrue, meshv1.ReasonAllStagesReady, 4*time.Minute)

	victims := ownedObjects(t, c)
	if len(victims) < 12 {
		t.Fatalf("found only %d kinds of owned objects: %v", len(victims), victims)
	}
	for _, v := range victims {
		t.Run("delete "+v.gvk.Kind, func(t *testing.T) {
			before := metadataOf(t, c, v)
			if before == nil {
				t.Fatalf("%s is gone already", v)
			}
			if err := c.Delete(ctx, before); err != nil && !apierrors.IsNotFound(err) {
				t.Fatal(err)
			}
			framework.Eventually(t, time.Minute, v.String()+" to be recreated", func() (bool, error) {
				m := metadataOf(t, c, v)
				return m != nil && m.UID != before.UID && m.DeletionTimestamp == nil, nil
			})
		})
	}
	for _, v := range victims {
		t.Run("edit "+v.gvk.Kind, func(t *testing.T) {
			// Someone removes the label that marks the object as the operator's; with it gone the
			// object also leaves the operator's label-filtered cache, the harder case.
			patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{meshv1.LabelManagedBy: nil}}})
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(v.gvk)
			u.SetNamespace(v.namespace)
			u.SetName(v.name)
			if err := c.Patch(ctx, u, client.RawPatch(types.MergePatchType, patch), client.FieldOwner("someone")); err != nil {
				t.Fatal(err)
			}
			framework.Eventually(t, time.Minute, v.String()+" to carry "+meshv1.LabelManagedBy+" again", func() (bool, error) {
				m := metadataOf(t, c, v)
				return m != nil && m.Labels[meshv1.LabelManagedBy] == meshv1.ManagedByValue, nil
			})
		})
	}
	t.Run("edit Namespace", func(t *testing.T) {
		// Someone takes the injection label off an enrolled namespace: the ladder puts it back.
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{"istio.io/rev": nil}}})
		if err := c.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, client.RawPatch(types.MergePatchType, patch), client.FieldOwner("someone")); err != nil {
			t.Fatal(err)
		}
		framework.Eventually(t, time.Minute, "namespace shop to carry istio.io/rev again", func() (bool, error) {
			return framework.GetNamespace(t, c, "shop").Labels["istio.io/rev"] == "default", nil
		})
	})
	framework.WaitCondition(t, c, "default", meshv1.ConditionReady, metav1.ConditionTrue, meshv1.ReasonAllStagesReady, 2*time.Minute)

	// Settle, then watch for a minute.
	settled := operatorFields(t, c)
	for i := 0; i < 3; i++ {
		time.Sleep(5 * time.Second)
		now := operatorFields(t, c)
		if maps.Equal(now, settled) {
			break
		}
		settled = now
	}
	time.Sleep(time.Minute)
	after := operatorFields(t, c)
	for k, v := range settled {
		if after[k] != v {
			t.Errorf("the operator kept writing to %s after the restorations:\n  before %s\n  after  %s", k, v, after[k])
		}
	}
}
