package e2e

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
)

// admissionRefusedNamespaces makes shop-guarded, enforcing Pod Security restricted with a
// Deployment and a StatefulSet whose pods meet it (until Istio's injector adds istio-init), and
// shop-tight, whose ResourceQuota
// has room for one more pod of its Deployment (100m CPU) but not for one with Istio's proxy
// (its 100m request beside the app's). Both are enrolled (ladder: mtls). It returns what each
// one's refusal must say, and waits for the quota's usage to be counted.
func admissionRefusedNamespaces(t *testing.T, c client.Client) map[string][]string {
	t.Helper()
	ctx := context.Background()
	cpu := func(v string) corev1.ResourceList {
		return corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(v)}
	}
	restricted := func(spec *corev1.PodSpec) {
		spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](1000),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
		spec.Containers[0].SecurityContext = &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false),
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
	}
	framework.MakeNamespace(t, c, "shop-guarded", map[string]string{"ladder": "mtls", "pod-security.kubernetes.io/enforce": "restricted"}, map[string]func(*appsv1.Deployment){
		"web": func(d *appsv1.Deployment) { restricted(&d.Spec.Template.Spec) },
	})
	// A StatefulSet too: its rolling update deletes a replica before creating its replacement,
	// so a replacement the API server refuses would leave it a replica short.
	db := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "shop-guarded"}, Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](2),
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "db"}}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "db", Image: "registry.example/db:1"}}}}}}
	restricted(&db.Spec.Template.Spec)
	if err := c.Create(ctx, db); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, time.Minute, "shop-guarded's StatefulSet to be ready", func() (bool, error) {
		err := c.Get(ctx, client.ObjectKeyFromObject(db), db)
		return db.Status.ReadyReplicas == 2, err
	})
	framework.MakeNamespace(t, c, "shop-tight", map[string]string{"ladder": "mtls"}, nil)
	quota := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: "tight", Namespace: "shop-tight"}, Spec: corev1.ResourceQuotaSpec{Hard: cpu("350m")}}
	if err := c.Create(ctx, quota); err != nil {
		t.Fatal(err)
	}
	// The quota controller must have seen the quota before the Deployment's pods ask it.
	framework.Eventually(t, time.Minute, "the quota's usage to be counted", func() (bool, error) {
		err := c.Get(ctx, client.ObjectKeyFromObject(quota), quota)
		return len(quota.Status.Hard) > 0, err
	})
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop-tight"}, Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2),
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "registry.example/web:1", Resources: corev1.ResourceRequirements{Requests: cpu("100m"), Limits: cpu("100m")}}}}}}}
	if err := c.Create(ctx, dep); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, time.Minute, "the quota to count shop-tight's two pods", func() (bool, error) {
		err := c.Get(ctx, client.ObjectKeyFromObject(quota), quota)
		used := quota.Status.Used[corev1.ResourceCPU]
		return used.Cmp(resource.MustParse("200m")) == 0, err
	})
	return map[string][]string{
		"shop-guarded": {"2 workload(s)", "Deployment/web", "StatefulSet/db", `violates PodSecurity "restricted:latest"`, "istio-init", "NET_ADMIN", "Istio CNI"},
		"shop-tight":   {"Deployment/web", "exceeded quota: tight", "Make room for the proxy"},
	}
}

// checkAdmissionRefused: each namespace whose pods Istio's real injector would make
// inadmissible is held at Off with PodAdmissionRefused, in the API server's words, with its
// pods untouched (the same UIDs: the StatefulSet never a replica short) and no injection label.
func checkAdmissionRefused(t *testing.T, c client.Client, mesh *meshv1.MeshInstallation, refused map[string][]string, before map[string]map[string]string) {
	t.Helper()
	for name, want := range refused {
		reason := meshv1.ReasonPodAdmissionRefused
		if want[0] == meshv1.ReasonJobsNeedNativeSidecars {
			reason, want = want[0], want[1:]
		}
		i := slices.IndexFunc(mesh.Status.Namespaces.Blocked, func(b meshv1.BlockedNamespace) bool { return b.Name == name })
		if i < 0 || mesh.Status.Namespaces.Blocked[i].Reason != reason {
			t.Errorf("status.namespaces.blocked = %+v, want %s held with %s", mesh.Status.Namespaces.Blocked, name, reason)
			continue
		}
		t.Logf("%s: %s", name, mesh.Status.Namespaces.Blocked[i].Message)
		for _, w := range want {
			if msg := mesh.Status.Namespaces.Blocked[i].Message; !strings.Contains(msg, w) {
				t.Errorf("%s: %q lacks %q", name, msg, w)
			}
		}
		ns := framework.GetNamespace(t, c, name)
		if ns.Labels["istio.io/rev"] != "" || (ns.Labels[meshv1.LabelLevel] != "" && ns.Labels[meshv1.LabelLevel] != string(meshv1.LevelOff)) {
			t.Errorf("%s labels = %v: want it left at Off, not labelled for injection", name, ns.Labels)
		}
		if after := podUIDs(t, c, name); !maps.Equal(after, before[name]) || len(after) < 2 {
			t.Errorf("%s's pods: before %v, after %v; want the same, untouched", name, before[name], after)
		}
	}
}

// cronJob makes a CronJob in namespace that never fires while the test runs (the 31st of
// February), its pods opting out of injection or not.
func cronJob(t *testing.T, c client.Client, namespace string, optOut bool) {
	t.Helper()
	tmpl := corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "report", Image: "registry.example/report:1"}}}}
	if optOut {
		tmpl.Annotations = map[string]string{"sidecar.istio.io/inject": "false"}
	}
	cj := &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: "report", Namespace: namespace}, Spec: batchv1.CronJobSpec{
		Schedule: "0 0 31 2 *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: tmpl}}}}
	if err := c.Create(context.Background(), cj); err != nil {
		t.Fatal(err)
	}
}

// optedOutCronJob adds to shop-batch (enrolled to MutualTLS, a Deployment at work) a CronJob
// whose pods opt out of injection and that never fires while the test runs: STRICT would cut
// off its next Job, so the namespace must stay at Observe though none of its pods runs.
func optedOutCronJob(t *testing.T, c client.Client) {
	t.Helper()
	framework.MakeNamespace(t, c, "shop-batch", map[string]string{"ladder": "mtls"}, map[string]func(*appsv1.Deployment){"api": nil})
	cronJob(t, c, "shop-batch", true)
}

// TestNativeSidecarsLetJobsIn: on nodes that report kubelet 1.34, Istio's real injector gives
// native sidecars (the proxy an init container with restartPolicy Always), which stop with a
// Job's container: a namespace with an injected CronJob enters the mesh (where, on the default
// nodes, TestAdoptionLadder's shop-cron is held with JobsNeedNativeSidecars), its Deployment
// restarted with the native proxy and its CronJob left alone; status says sidecars are native.
func TestNativeSidecarsLetJobsIn(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	ctx := context.Background()
	cl, c := framework.StartCluster(t, cluster.Options{KubeletVersion: "v1.34.2"})
	framework.MakeNamespace(t, c, "jobs", map[string]string{"ladder": "observe"}, map[string]func(*appsv1.Deployment){"web": nil})
	cronJob(t, c, "jobs", false)
	framework.WaitAvailable(t, c, "jobs")
	meshWithLocalIstiod(t, cl, c, meshv1.MeshInstallationSpec{
		Rollout:    meshv1.RolloutSpec{TrafficGates: meshv1.TrafficGatesSkip, BakeTime: &metav1.Duration{Duration: 10 * time.Second}},
		Namespaces: []meshv1.NamespaceRule{{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "observe"}}, Level: meshv1.LevelObserve}},
	})
	framework.Eventually(t, 3*time.Minute, "jobs at Observe", func() (bool, error) {
		ns := framework.GetNamespace(t, c, "jobs")
		return ns.Labels[meshv1.LabelLevel] == string(meshv1.LevelObserve) && stateOf(ns).Step == nil, nil
	})
	mesh := &meshv1.MeshInstallation{}
	if err := c.Get(ctx, client.ObjectKey{Name: "default"}, mesh); err != nil {
		t.Fatal(err)
	}
	if mesh.Status.DataPlane == nil || mesh.Status.DataPlane.Sidecars != meshv1.SidecarsNative {
		t.Errorf("status.dataPlane = %+v, want native sidecars, as the injector gave the probe", mesh.Status.DataPlane)
	}
	pods := framework.Pods(t, c, "jobs")
	if len(pods) == 0 {
		t.Fatal("no pods in jobs")
	}
	for _, p := range pods {
		if !p.DeletionTimestamp.IsZero() {
			continue
		}
		native := slices.ContainsFunc(p.Spec.InitContainers, func(c corev1.Container) bool {
			return c.Name == "istio-proxy" && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		})
		if !native {
			t.Errorf("pod %s: want Istio's proxy as a native sidecar, got init containers %v, containers %v", p.Name, containerNames(p.Spec.InitContainers), containerNames(p.Spec.Containers))
		}
	}
	cj := &batchv1.CronJob{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "jobs", Name: "report"}, cj); err != nil {
		t.Fatal(err)
	}
	if got := cj.Spec.JobTemplate.Spec.Template.Annotations[meshv1.AnnotationRestartedFor]; got != "" {
		t.Errorf("the CronJob was restarted (%q)", got)
	}
}

func containerNames(cs []corev1.Container) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name
	}
	return out
}
