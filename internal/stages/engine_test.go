package stages

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

type fakeStage struct {
	name   meshv1.Stage
	cond   string
	result Result
	err    error
	calls  *int
}

func (f fakeStage) Name() meshv1.Stage    { return f.name }
func (f fakeStage) ConditionType() string { return f.cond }
func (f fakeStage) Reconcile(context.Context, *meshv1.MeshInstallation) (Result, error) {
	*f.calls++
	return f.result, f.err
}

func TestRun(t *testing.T) {
	ready := Result{State: Ready, Reason: "Ready"}
	waiting := Result{State: NotReady, Reason: "Waiting", RequeueAfter: 5 * time.Second}
	failed := Result{State: Failed, Reason: "Broken"}
	tests := map[string]struct {
		results     []Result
		errs        []error
		wantCalls   []int
		wantCurrent meshv1.Stage
		wantRequeue time.Duration
		wantErr     bool
		// wantReason and wantMessage, when set, are the current stage's reason and a part of
		// its message.
		wantReason, wantMessage string
	}{
		"all ready": {
			results: []Result{ready, ready, ready}, wantCalls: []int{1, 1, 1}, wantCurrent: meshv1.StageComplete,
		},
		"stops at the first not ready": {
			results: []Result{ready, waiting, ready}, wantCalls: []int{1, 1, 0}, wantCurrent: meshv1.StageControlPlane,
			wantRequeue: 5 * time.Second,
		},
		"not ready without a delay of its own is rechecked": {
			results: []Result{{State: NotReady}, ready, ready}, wantCalls: []int{1, 0, 0}, wantCurrent: meshv1.StageCertificates,
			wantRequeue: NotReadyRecheck,
		},
		"stops at a failed stage": {
			results: []Result{failed, ready, ready}, wantCalls: []int{1, 0, 0}, wantCurrent: meshv1.StageCertificates,
		},
		"stops at an error": {
			results: []Result{ready, ready, ready}, errs: []error{nil, errors.New("timeout"), nil},
			wantCalls: []int{1, 1, 0}, wantCurrent: meshv1.StageControlPlane, wantErr: true,
		},
		"a refused request becomes the stage's condition": {
			results: []Result{ready, ready, ready},
			errs: []error{nil, fmt.Errorf("applying HorizontalPodAutoscaler istiod: %w",
				apierrors.NewForbidden(schema.GroupResource{Group: "autoscaling", Resource: "horizontalpodautoscalers"}, "istiod", errors.New(`User "system:serviceaccount:meshwright-system:meshwright" cannot patch resource "horizontalpodautoscalers" in API group "autoscaling"`))), nil},
			wantCalls: []int{1, 1, 0}, wantCurrent: meshv1.StageControlPlane, wantRequeue: NotReadyRecheck,
			wantReason: meshv1.ReasonForbidden, wantMessage: `cannot patch resource "horizontalpodautoscalers" in API group "autoscaling"`,
		},
		"a role granting more than the operator holds": {
			results: []Result{ready, ready, ready},
			errs: []error{nil, apierrors.NewForbidden(schema.GroupResource{Group: "rbac.authorization.k8s.io", Resource: "clusterroles"}, "istiod-clusterrole-istio-system",
				errors.New("user \"system:serviceaccount:meshwright-system:meshwright\" (groups=[\"system:serviceaccounts\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"patch\"]}")), nil},
			wantCalls: []int{1, 1, 0}, wantCurrent: meshv1.StageControlPlane, wantRequeue: NotReadyRecheck,
			wantReason: meshv1.ReasonForbidden, wantMessage: `not currently held: {APIGroups:[""], Resources:["nodes"], Verbs:["patch"]}. The operator holds what the charts' roles grant`,
		},
		"a quota's refusal is not called a missing permission": {
			results:   []Result{ready, ready, ready},
			errs:      []error{nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "probe", errors.New("exceeded quota: compute, requested: cpu=100m")), nil},
			wantCalls: []int{1, 1, 0}, wantCurrent: meshv1.StageControlPlane, wantRequeue: NotReadyRecheck,
			wantReason: meshv1.ReasonForbidden, wantMessage: "An admission webhook or policy, a quota",
		},
		"soonest requeue wins": {
			results:     []Result{{State: Ready, RequeueAfter: time.Hour}, {State: Ready, RequeueAfter: time.Minute}, ready},
			wantCalls:   []int{1, 1, 1},
			wantCurrent: meshv1.StageComplete, wantRequeue: time.Minute,
		},
	}
	names := []meshv1.Stage{meshv1.StageCertificates, meshv1.StageControlPlane, meshv1.StageInjection}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			calls := make([]int, len(tc.results))
			var list []Stage
			for i, r := range tc.results {
				var err error
				if tc.errs != nil {
					err = tc.errs[i]
				}
				list = append(list, fakeStage{name: names[i], cond: string(names[i]) + "Ready", result: r, err: err, calls: &calls[i]})
			}
			out := Run(context.Background(), list, &meshv1.MeshInstallation{})
			for i := range calls {
				if calls[i] != tc.wantCalls[i] {
					t.Fatalf("stage %d ran %d times, want %d", i, calls[i], tc.wantCalls[i])
				}
			}
			if out.Current != tc.wantCurrent {
				t.Fatalf("current = %s, want %s", out.Current, tc.wantCurrent)
			}
			if out.RequeueAfter != tc.wantRequeue {
				t.Fatalf("requeue = %s, want %s", out.RequeueAfter, tc.wantRequeue)
			}
			if (out.Err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", out.Err, tc.wantErr)
			}
			if tc.wantReason != "" {
				last := out.Ran[len(out.Ran)-1].Result
				if last.State != NotReady || last.Reason != tc.wantReason || !strings.Contains(last.Message, tc.wantMessage) {
					t.Fatalf("current stage: %v %s %q, want NotReady %s mentioning %q", last.State, last.Reason, last.Message, tc.wantReason, tc.wantMessage)
				}
			}
		})
	}
}

// seeingStage reports a status part and remembers what status.certificates it was given.
type seeingStage struct {
	fakeStage
	saw *[]*meshv1.CertificatesStatus
}

func (s seeingStage) Reconcile(ctx context.Context, mesh *meshv1.MeshInstallation) (Result, error) {
	*s.saw = append(*s.saw, mesh.Status.Certificates)
	if mesh.Status.Certificates != nil {
		mesh.Status.Certificates.Issuer = "written by a stage" // must reach nothing
	}
	return s.fakeStage.Reconcile(ctx, mesh)
}

// TestRunReportsThroughResults: a stage's report reaches the later stages of the same pass, and
// the installation Run was given is not changed: only the status computation writes status.
func TestRunReportsThroughResults(t *testing.T) {
	calls := 0
	var saw []*meshv1.CertificatesStatus
	reported := &meshv1.CertificatesStatus{Generation: 2, Issuer: "ClusterIssuer/corp"}
	list := []Stage{
		seeingStage{fakeStage{name: "first", cond: "First", calls: &calls, result: Result{State: Ready, Certificates: reported}}, &saw},
		seeingStage{fakeStage{name: "second", cond: "Second", calls: &calls, result: Result{State: Ready}}, &saw},
	}
	mesh := &meshv1.MeshInstallation{}
	out := Run(context.Background(), list, mesh)
	if len(saw) != 2 || saw[0] != nil || saw[1] == nil || saw[1].Generation != 2 {
		t.Fatalf("the stages saw status.certificates %+v, want nothing then generation 2", saw)
	}
	if mesh.Status.Certificates != nil {
		t.Fatalf("Run changed the installation's status: %+v", mesh.Status.Certificates)
	}
	var status meshv1.MeshInstallationStatus
	for _, ran := range out.Ran {
		ran.Result.Report(&status)
	}
	if status.Certificates == nil || *status.Certificates != *reported {
		t.Fatalf("reported %+v, want %+v", status.Certificates, reported)
	}
}
