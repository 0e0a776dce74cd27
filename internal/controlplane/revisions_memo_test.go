package controlplane

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshwright/meshwright/internal/revision"
)

// fakeRevisionMemo remembers each namespace's first answer and counts the computations: a mock
// of adoption.Observations' contract (its own tests pin when it recomputes).
type fakeRevisionMemo struct {
	held     map[string][]string
	computed int
}

func (m *fakeRevisionMemo) PodRevisions(namespace string, compute func() ([]string, error)) ([]string, error) {
	if revs, ok := m.held[namespace]; ok {
		return revs, nil
	}
	m.computed++
	revs, err := compute()
	if err == nil {
		m.held[namespace] = revs
	}
	return revs, err
}

// TestPodRevisionsThroughTheMemo: with a memo, the revisions' usage counts every running injected
// pod namespace by namespace and reuses the memo's answers; when a revision may be retired
// (moves) every pod is listed afresh, whatever the memo holds.
func TestPodRevisionsThroughTheMemo(t *testing.T) {
	ctx := context.Background()
	pods := map[string][]string{"memo-rev-a": {"default", "default"}, "memo-rev-b": {"1-31-5"}}
	for ns, revs := range pods {
		if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
		for i, rev := range revs {
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "p-", Annotations: map[string]string{revision.PodAnnotation: rev}},
				Spec: corev1.PodSpec{AutomountServiceAccountToken: ptr.To(false), Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
			if err := k8s.Create(ctx, p); err != nil {
				t.Fatalf("pod %d of %s: %v", i, ns, err)
			}
			// Other tests count the revisions' pods too: these go with the test.
			t.Cleanup(func() { _ = k8s.Delete(ctx, p, client.GracePeriodSeconds(0)) })
		}
	}
	memo := &fakeRevisionMemo{held: map[string][]string{}}
	s := &Stage{Workloads: k8s, Revisions: memo}
	tests := []struct {
		name         string
		moves        bool
		wantComputed int
	}{
		{name: "first pass computes every namespace", wantComputed: -1},
		{name: "second pass reuses them", wantComputed: 0},
		{name: "a pass that may retire a revision lists every pod", moves: true, wantComputed: 0},
	}
	for _, tc := range tests {
		memo.computed = 0
		if tc.moves {
			// What the memo holds is stale: the full list must not read it.
			memo.held["memo-rev-b"] = nil
		}
		usage, known, err := s.usage(ctx, tc.moves)
		if err != nil || !known {
			t.Fatalf("%s: usage known %v, error %v", tc.name, known, err)
		}
		if usage["default"].Pods < 2 || usage["1-31-5"].Pods != 1 {
			t.Errorf("%s: usage %+v, want at least 2 pods on default and 1 on 1-31-5", tc.name, usage)
		}
		if (tc.wantComputed < 0 && memo.computed == 0) || (tc.wantComputed >= 0 && memo.computed != tc.wantComputed) {
			t.Errorf("%s: the memo computed %d namespaces", tc.name, memo.computed)
		}
	}
}
