package controlplane

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/installed"
	"github.com/meshwright/meshwright/internal/revision"
)

// TestRevisionHistoryRecord: the first installation records its revision history in a ConfigMap
// of its own, which pruning keeps and clean-up removes. An installation without the record
// (made by an operator that kept the history in status) is read from its status and not written
// to while nothing changes, so an operator upgrade writes nothing; a change is recorded, and so
// is the same history over a record that cannot be read.
func TestRevisionHistoryRecord(t *testing.T) {
	ctx := context.Background()
	const ns = "istio-record"
	stage, mesh, writes := countedInstallation(t, "record", ns)
	markAvailable(t, ns, "istiod")
	pass(t, stage, mesh)
	pass(t, stage, mesh) // pruning runs again with the record in place

	record := &corev1.ConfigMap{}
	key := client.ObjectKey{Namespace: ns, Name: installed.RecordName}
	if err := k8s.Get(ctx, key, record); err != nil {
		t.Fatalf("the revision history was not recorded: %v", err)
	}
	want := revision.History{Active: revision.Default, Revisions: []revision.Recorded{{Name: revision.Default, Version: "1.31.4"}}}
	if got, err := revision.ParseHistory(record.Data["history"]); err != nil || !got.Same(want) {
		t.Fatalf("recorded %q (%v), want %+v", record.Data["history"], err, want)
	}

	tests := map[string]struct {
		status meshv1.MeshInstallationStatus
		// record, when set, is the record's content before the pass.
		record string
		write  bool
	}{
		"status.revisions as the operator before the record wrote it": {
			status: meshv1.MeshInstallationStatus{Version: "1.31.4", Revisions: []meshv1.RevisionStatus{{Name: revision.Default, Version: "1.31.4", Active: true}}}},
		"only status.version, from an operator before revisions were reported": {
			status: meshv1.MeshInstallationStatus{Version: "1.31.4"}},
		"a history that differs from what the pass finds": {
			status: meshv1.MeshInstallationStatus{Revisions: []meshv1.RevisionStatus{{Name: revision.Default, Version: "1.31.4", Active: true}, {Name: "1-30-0", Version: "1.30.0"}}}, write: true},
		"no status at all": {write: true},
		"a record that cannot be read, rewritten from the same history in status": {
			status: meshv1.MeshInstallationStatus{Version: "1.31.4", Revisions: []meshv1.RevisionStatus{{Name: revision.Default, Version: "1.31.4", Active: true}}},
			record: "{not a history", write: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if err := k8s.Delete(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: installed.RecordName}}); client.IgnoreNotFound(err) != nil {
				t.Fatal(err)
			}
			mesh.Status = tc.status
			if tc.record != "" {
				corrupt := installed.HistoryRecord(mesh, want)
				_ = unstructured.SetNestedField(corrupt.Object, tc.record, "data", "history")
				if err := k8s.Create(ctx, corrupt); err != nil {
					t.Fatal(err)
				}
			}
			found, err := installed.Find(ctx, k8s, mesh)
			if err != nil || found.Recorded || found.Unusable != (tc.record != "") || found.Active(mesh) != revision.Default {
				t.Fatalf("without a usable record: %+v, %v", found, err)
			}
			before := len(writes.Writes())
			if _, err := stage.Reconcile(ctx, mesh); err != nil {
				t.Fatal(err)
			}
			got := writes.Writes()[before:]
			if !tc.write && len(got) > 0 {
				t.Fatalf("a pass over an unchanged installation wrote: %v", got)
			}
			if written := apiExists(t, key); written != tc.write {
				t.Fatalf("record written = %v, want %v (writes %v)", written, tc.write, got)
			}
			if found, err := installed.Find(ctx, k8s, mesh); tc.write && (err != nil || !found.Recorded) {
				t.Fatalf("after the pass the record is not usable: %+v, %v", found, err)
			}
		})
	}

	if _, err := stage.Cleanup(ctx, mesh); err != nil {
		t.Fatal(err)
	}
	if apiExists(t, key) {
		t.Error("the revision history outlived the installation's clean-up")
	}
}

// apiExists tells whether the API server has the ConfigMap, not being deleted.
func apiExists(t *testing.T, key client.ObjectKey) bool {
	t.Helper()
	return exists(t, &corev1.ConfigMap{}, key.Namespace, key.Name)
}
