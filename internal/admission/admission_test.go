package admission

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/revision"
	"github.com/meshwright/meshwright/internal/testenv"
)

var k8s client.WithWatch

func TestMain(m *testing.M) {
	testenv.Main(m, func(c *rest.Config) (err error) {
		k8s, err = client.NewWithWatch(c, client.Options{Scheme: clientgoscheme.Scheme})
		return err
	})
}

func template(labels map[string]string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{"team": "a"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}}}}
}

// TestPodFor: the pod is the template's, as each controller creates it, with the revision's
// label (so Istio's injector picks it before the namespace is labelled); a StatefulSet's claim
// templates become volumes, as its controller adds them.
func TestPodFor(t *testing.T) {
	meta := metav1.ObjectMeta{Name: "web", Namespace: "shop"}
	sel := map[string]string{"app": "web"}
	claim := corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data"}}
	tests := map[string]struct {
		obj     client.Object
		volumes []string
		wantErr bool
	}{
		"Deployment":                         {obj: &appsv1.Deployment{ObjectMeta: meta, Spec: appsv1.DeploymentSpec{Template: template(sel)}}},
		"DaemonSet":                          {obj: &appsv1.DaemonSet{ObjectMeta: meta, Spec: appsv1.DaemonSetSpec{Template: template(sel)}}},
		"StatefulSet: its claims as volumes": {obj: &appsv1.StatefulSet{ObjectMeta: meta, Spec: appsv1.StatefulSetSpec{Template: template(sel), VolumeClaimTemplates: []corev1.PersistentVolumeClaim{claim}}}, volumes: []string{"data=data-web-0"}},
		"CronJob: its Jobs' template":        {obj: &batchv1.CronJob{ObjectMeta: meta, Spec: batchv1.CronJobSpec{JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: template(sel)}}}}},
		"Job":                                {obj: &batchv1.Job{ObjectMeta: meta, Spec: batchv1.JobSpec{Template: template(sel)}}},
		"another kind":                       {obj: &corev1.Pod{ObjectMeta: meta}, wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pod, err := PodFor(tc.obj, "1-31-5")
			if tc.wantErr {
				if err == nil {
					t.Fatal("want an error for a kind without a pod template")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if pod.Namespace != "shop" || pod.Name != "web-meshwright-admission" {
				t.Errorf("pod %s/%s: want the workload's name, fixed (a refusal quoting it goes into status)", pod.Namespace, pod.Name)
			}
			if pod.Labels["app"] != "web" || pod.Labels[revision.Label] != "1-31-5" || pod.Annotations["team"] != "a" {
				t.Errorf("labels %v annotations %v: want the template's, with the revision's label", pod.Labels, pod.Annotations)
			}
			var volumes []string
			for _, v := range pod.Spec.Volumes {
				volumes = append(volumes, v.Name+"="+v.PersistentVolumeClaim.ClaimName)
			}
			if strings.Join(volumes, ",") != strings.Join(tc.volumes, ",") {
				t.Errorf("volumes %v, want %v", volumes, tc.volumes)
			}
		})
	}
	// The workload's template is not touched.
	dep := &appsv1.Deployment{ObjectMeta: meta, Spec: appsv1.DeploymentSpec{Template: template(sel)}}
	if _, err := PodFor(dep, "default"); err != nil || dep.Spec.Template.Labels[revision.Label] != "" {
		t.Errorf("the template was changed: %v (%v)", dep.Spec.Template.Labels, err)
	}
}

// TestCheckAgainstTheAPIServer: the API server's own admission decides. A ResourceQuota with no
// room for another pod's CPU refuses it, quoted as the API server said it; a workload that fits
// is admitted; a workload gone since it was listed is skipped; a verdict is kept for the recheck
// period (no second request), and forgotten after; an error that is not a refusal is returned.
func TestCheckAgainstTheAPIServer(t *testing.T) {
	ctx := context.Background()
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "quota"}}); err != nil {
		t.Fatal(err)
	}
	cpu := func(v string) corev1.ResourceList {
		return corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(v)}
	}
	quota := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: "small", Namespace: "quota"}, Spec: corev1.ResourceQuotaSpec{Hard: cpu("1")}}
	if err := k8s.Create(ctx, quota); err != nil {
		t.Fatal(err)
	}
	// envtest runs no quota controller: its usage is written as the controller would.
	quota.Status = corev1.ResourceQuotaStatus{Hard: cpu("1"), Used: cpu("900m")}
	if err := k8s.Status().Update(ctx, quota); err != nil {
		t.Fatal(err)
	}
	for name, request := range map[string]string{"big": "200m", "small": "50m"} {
		tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "app", Resources: corev1.ResourceRequirements{Requests: cpu(request), Limits: cpu(request)}}}}}
		dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "quota"}, Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels}, Template: tmpl}}
		if err := k8s.Create(ctx, dep); err != nil {
			t.Fatal(err)
		}
	}
	var creates atomic.Int32
	var fail atomic.Bool
	writer := interceptor.NewClient(k8s, interceptor.Funcs{Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
		if o := (&client.CreateOptions{}).ApplyOptions(opts); len(o.DryRun) == 0 {
			return errors.New("the checker asked for a real create")
		}
		creates.Add(1)
		if fail.Load() {
			return apierrors.NewInternalError(errors.New("failed calling webhook \"object.sidecar-injector.istio.io\""))
		}
		return c.Create(ctx, obj, opts...)
	}})
	clock := clocktesting.NewFakePassiveClock(time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC))
	checker := &Checker{Reader: k8s, Writer: writer, Clock: clock}
	workloads := []Workload{{Kind: "Deployment", Name: "small"}, {Kind: "Deployment", Name: "big"}, {Kind: "Deployment", Name: "gone"}}

	got, err := checker.Check(ctx, "quota", nil, workloads, "default")
	if err != nil {
		t.Fatal(err)
	}
	if got.Revision != "default" || len(got.Refused) != 1 || got.Refused[0].Workload != "Deployment/big" ||
		!strings.Contains(got.Refused[0].Message, "exceeded quota: small") || !strings.Contains(got.Refused[0].Message, "requested: cpu=200m") {
		t.Fatalf("admission = %+v, want Deployment/big refused by the quota, in the API server's words", got)
	}
	if n := creates.Load(); n != 2 {
		t.Errorf("%d dry-run creates, want 2 (the gone workload is skipped)", n)
	}
	again, err := checker.Check(ctx, "quota", nil, workloads, "default")
	if err != nil || len(again.Refused) != 1 || creates.Load() != 2 {
		t.Errorf("second check: %+v (%v), %d creates: want the kept verdict, no request", again, err, creates.Load())
	}
	if _, err := checker.Check(ctx, "quota", map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}, workloads[:1], "default"); err != nil || creates.Load() != 3 {
		t.Errorf("a namespace whose labels changed: %d creates (%v), want a new request", creates.Load(), err)
	}
	clock.SetTime(clock.Now().Add(ladder.AdmissionRecheck))
	// The operator's own RBAC refusing the create says nothing about the pod: an error, not a refusal.
	rbac := &Checker{Reader: k8s, Clock: clock, Writer: interceptor.NewClient(k8s, interceptor.Funcs{Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error {
		return apierrors.NewForbidden(corev1.Resource("pods"), "", errors.New(`User "system:serviceaccount:x:y" cannot create resource "pods" in API group "" in the namespace "quota"`))
	}})}
	if got, err := rbac.Check(ctx, "quota", nil, workloads[:1], "default"); err == nil || len(got.Refused) > 0 {
		t.Errorf("the operator forbidden: %+v, %v; want an error and no refusal", got, err)
	}
	fail.Store(true)
	_, err = checker.Check(ctx, "quota", nil, workloads, "default")
	if err == nil || !strings.Contains(err.Error(), "Deployment/small") || !strings.Contains(err.Error(), "failed calling webhook") {
		t.Errorf("err = %v, want the webhook failure, naming the workload", err)
	}
	if !apierrors.IsInternalError(err) {
		t.Errorf("err = %v: want the API server's error wrapped", err)
	}
}

// TestCheckReportsTheProxyShape: the shape of the proxy in the CronJobs' and Jobs' pods the API
// server gives back is reported, one classic pod making it classic; a Deployment's pod does not
// count (a Job's template may ask for native sidecars on its own). envtest runs no injector:
// the interceptor adds the proxy to the returned pod as Istio's would (its native or classic
// shape); the e2e suite shows the real injector.
func TestCheckReportsTheProxyShape(t *testing.T) {
	ctx := context.Background()
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shapes"}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b", "web"} {
		tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}}, Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
		var obj client.Object = &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shapes"}, Spec: batchv1.CronJobSpec{Schedule: "0 3 * * *",
			JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: tmpl}}}}
		if name == "web" {
			tmpl.Spec.RestartPolicy = corev1.RestartPolicyAlways
			obj = &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shapes"}, Spec: appsv1.DeploymentSpec{
				Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels}, Template: tmpl}}
		}
		if err := k8s.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	always := corev1.ContainerRestartPolicyAlways
	tests := map[string]struct {
		native map[string]bool // by workload; absent: not injected
		want   string
	}{
		"native (the Deployment's classic pod aside)": {native: map[string]bool{"a": true, "b": true, "web": false}, want: meshv1.SidecarsNative},
		"classic":               {native: map[string]bool{"a": false, "b": false}, want: meshv1.SidecarsClassic},
		"one classic is enough": {native: map[string]bool{"a": true, "b": false}, want: meshv1.SidecarsClassic},
		"not injected":          {native: map[string]bool{}, want: ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			writer := interceptor.NewClient(k8s, interceptor.Funcs{Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				if err := c.Create(ctx, obj, opts...); err != nil {
					return err
				}
				pod := obj.(*corev1.Pod)
				native, injected := tc.native[pod.Labels["app"]]
				switch {
				case injected && native:
					pod.Spec.InitContainers = append(pod.Spec.InitContainers, corev1.Container{Name: revision.ProxyContainer, RestartPolicy: &always})
				case injected:
					pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: revision.ProxyContainer})
				}
				return nil
			}})
			got, err := (&Checker{Reader: k8s, Writer: writer}).Check(ctx, "shapes", nil, []Workload{{Kind: "CronJob", Name: "a"}, {Kind: "CronJob", Name: "b"}, {Kind: "Deployment", Name: "web"}}, "default")
			if err != nil || got.Sidecars != tc.want {
				t.Errorf("sidecars %q (%v), want %q", got.Sidecars, err, tc.want)
			}
		})
	}
}

// TestCheckIsBounded: an admission webhook that does not answer holds the check no longer than
// its timeout, reported as an error (the climb waits), not as a refusal.
func TestCheckIsBounded(t *testing.T) {
	ctx := context.Background()
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "slow"}}); err != nil {
		t.Fatal(err)
	}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	if err := k8s.Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "slow"}, Spec: appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels}, Template: tmpl}}); err != nil {
		t.Fatal(err)
	}
	writer := interceptor.NewClient(k8s, interceptor.Funcs{Create: func(ctx context.Context, _ client.WithWatch, _ client.Object, _ ...client.CreateOption) error {
		<-ctx.Done() // a webhook that never answers
		return ctx.Err()
	}})
	_, err := (&Checker{Reader: k8s, Writer: writer, Timeout: 200 * time.Millisecond}).Check(ctx, "slow", nil, []Workload{{Kind: "Deployment", Name: "web"}}, "default")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the deadline exceeded", err)
	}
}
