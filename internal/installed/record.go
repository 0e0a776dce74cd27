package installed

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/meshspec"
	"github.com/meshwright/meshwright/internal/render"
	"github.com/meshwright/meshwright/internal/revision"
)

// RecordName is the ConfigMap, in the control plane's namespace, that holds an installation's
// revision history (revision.History): the operator's record, as the cacerts annotation is the
// CA's. It carries the installation's labels, so deleting the installation removes it.
const RecordName = "meshwright-revisions"

// recordKey is the record's data key.
const recordKey = "history"

// RecordComponent is the component label of the record: pruning passes over it (it is not
// rendered), clean-up removes it with the rest.
const RecordComponent = "revision-history"

// readHistory reads the installation's revision history from its record; without a record
// (an installation made by an operator that kept it in status) it is what status reports.
// An unreadable record is logged and reported unusable (the last result), its history read
// from status, so that the ControlPlane stage writes it again.
func readHistory(ctx context.Context, r client.Reader, mesh *meshv1.MeshInstallation) (h revision.History, recorded, unusable bool, err error) {
	cm := &unstructured.Unstructured{}
	cm.SetAPIVersion("v1")
	cm.SetKind("ConfigMap")
	cm.SetNamespace(meshspec.ControlPlaneNamespace(mesh))
	cm.SetName(RecordName)
	err = r.Get(ctx, client.ObjectKeyFromObject(cm), cm, client.UnsafeDisableDeepCopy)
	if err != nil && !apierrors.IsNotFound(err) {
		return revision.History{}, false, false, fmt.Errorf("reading the revision history %s/%s: %w", cm.GetNamespace(), RecordName, err)
	}
	if err == nil && cm.GetLabels()[meshv1.LabelInstallation] == mesh.Name {
		raw, _, _ := unstructured.NestedString(cm.Object, "data", recordKey)
		parsed, err := revision.ParseHistory(raw)
		if err == nil {
			return parsed, true, false, nil
		}
		log.FromContext(ctx).Info("rewriting an unusable revision history from status", "configMap", cm.GetNamespace()+"/"+RecordName, "error", err.Error())
		unusable = true
	}
	return revision.FromStatus(&mesh.Status), false, unusable, nil
}

// HistoryRecord is the record holding h.
func HistoryRecord(mesh *meshv1.MeshInstallation, h revision.History) *unstructured.Unstructured {
	cm := &unstructured.Unstructured{}
	cm.SetAPIVersion("v1")
	cm.SetKind("ConfigMap")
	cm.SetNamespace(meshspec.ControlPlaneNamespace(mesh))
	cm.SetName(RecordName)
	cm.SetLabels(map[string]string{meshv1.LabelManagedBy: meshv1.ManagedByValue, meshv1.LabelInstallation: mesh.Name, render.LabelComponent: RecordComponent})
	_ = unstructured.SetNestedField(cm.Object, h.Encode(), "data", recordKey)
	return cm
}
