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
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
)

// restrictedNamespace makes a namespace enrolled to MutualTLS (ladder: mtls) that enforces Pod
// Security restricted, with a Deployment and a StatefulSet whose pods meet it (until Istio's
// injector adds istio-init, which Istio CNI does without).
func restrictedNamespace(t *testing.T, c client.Client, name string) {
	t.Helper()
	restricted := func(spec *corev1.PodSpec) {
		spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](1000),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
		spec.Containers[0].SecurityContext = &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false),
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
	}
	framework.MakeNamespace(t, c, name, map[string]string{"ladder": "mtls", "pod-security.kubernetes.io/enforce": "restricted"}, map[string]func(*appsv1.Deployment){
		"web": func(d *appsv1.Deployment) { restricted(&d.Spec.Template.Spec) },
	})
	// A StatefulSet too: its rolling update deletes a replica before creating its replacement,
	// so a replacement the API server refuses would leave it a replica short.
	db := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: name}, Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](2),
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "db"}}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "db", Image: "registry.example/db:1"}}}}}}
	restricted(&db.Spec.Template.Spec)
	if err := c.Create(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, time.Minute, name+"'s StatefulSet to be ready", func() (bool, error) {
		err := c.Get(context.Background(), client.ObjectKeyFromObject(db), db)
		return db.Status.ReadyReplicas == 2, err
	})
}

// checkProxyStartsFirst: with classic sidecars, the operator's default holdApplicationUntilProxyStarts
// reaches the injected pods: Istio's proxy is the first container, and its postStart hook
// waits for it to be ready before the application's containers start.
func checkProxyStartsFirst(t *testing.T, c client.Client, namespace string) {
	t.Helper()
	for _, p := range framework.Pods(t, c, namespace) {
		if !p.DeletionTimestamp.IsZero() {
			continue
		}
		if len(p.Spec.Containers) == 0 || p.Spec.Containers[0].Name != "istio-proxy" || p.Spec.Containers[0].Lifecycle == nil || p.Spec.Containers[0].Lifecycle.PostStart == nil {
			t.Errorf("pod %s/%s: containers %v; want istio-proxy first, holding the application until it is ready", namespace, p.Name, containerNames(p.Spec.Containers))
		}
	}
}

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
	restrictedNamespace(t, c, "shop-guarded")
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

// TestDataPlaneLetsRestrictedAndJobsIn: on nodes that report kubelet 1.34, Istio's real injector
// gives native sidecars (the proxy an init container with restartPolicy Always), which stop with
// a Job's container: a namespace with an injected CronJob enters the mesh (where, on the default
// nodes, TestAdoptionLadder's shop-cron is held with JobsNeedNativeSidecars), its Deployment
// restarted with the native proxy and its CronJob left alone. And with spec.dataPlane.cni Auto,
// a namespace enforcing Pod Security restricted (held at Off in TestAdoptionLadder, where CNI is
// Disabled) has Istio CNI installed for it: its DaemonSet Ready in a namespace of its own allowed
// privileged pods, the pods injected with Istio's istio-validation and no NET_ADMIN or NET_RAW,
// admitted under restricted, and the namespace reaches MutualTLS. Status says so.
func TestDataPlaneLetsRestrictedAndJobsIn(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	ctx := context.Background()
	cl, c := framework.StartCluster(t, cluster.Options{KubeletVersion: "v1.34.2"})
	framework.MakeNamespace(t, c, "jobs", map[string]string{"ladder": "observe"}, map[string]func(*appsv1.Deployment){"web": nil})
	cronJob(t, c, "jobs", false)
	framework.WaitAvailable(t, c, "jobs")
	restrictedNamespace(t, c, "guarded")
	framework.WaitAvailable(t, c, "guarded")
	meshWithLocalIstiod(t, cl, c, meshv1.MeshInstallationSpec{
		Rollout: meshv1.RolloutSpec{TrafficGates: meshv1.TrafficGatesSkip, BakeTime: &metav1.Duration{Duration: 10 * time.Second}},
		Namespaces: []meshv1.NamespaceRule{
			{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "observe"}}, Level: meshv1.LevelObserve},
			{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"ladder": "mtls"}}, Level: meshv1.LevelMutualTLS},
		},
	})
	framework.Eventually(t, 4*time.Minute, "jobs at Observe and guarded at MutualTLS", func() (bool, error) {
		jobs, guarded := framework.GetNamespace(t, c, "jobs"), framework.GetNamespace(t, c, "guarded")
		return jobs.Labels[meshv1.LabelLevel] == string(meshv1.LevelObserve) && stateOf(jobs).Step == nil &&
			guarded.Labels[meshv1.LabelLevel] == string(meshv1.LevelMutualTLS) && stateOf(guarded).Step == nil, nil
	})
	mesh := &meshv1.MeshInstallation{}
	if err := c.Get(ctx, client.ObjectKey{Name: "default"}, mesh); err != nil {
		t.Fatal(err)
	}
	if dp := mesh.Status.DataPlane; dp == nil || dp.Sidecars != meshv1.SidecarsNative || dp.CNI != meshv1.CNIEnabled {
		t.Errorf("status.dataPlane = %+v, want native sidecars and CNI, as the injector gave the probe", dp)
	}
	checkCNIInstalled(t, c, mesh)
	for _, ns := range []string{"jobs", "guarded"} {
		for _, p := range framework.Pods(t, c, ns) {
			if p.DeletionTimestamp.IsZero() {
				checkInjectedForCNI(t, p)
			}
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

// checkCNIInstalled: Istio CNI's DaemonSet is Ready in its own namespace, the only one allowed
// privileged pods, and the ControlPlane stage says why it is there.
func checkCNIInstalled(t *testing.T, c client.Client, mesh *meshv1.MeshInstallation) {
	t.Helper()
	ds := &appsv1.DaemonSet{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "istio-cni", Name: "istio-cni-node"}, ds); err != nil {
		t.Fatalf("Istio CNI's DaemonSet: %v", err)
	}
	if ds.Status.DesiredNumberScheduled == 0 || ds.Status.NumberReady != ds.Status.DesiredNumberScheduled {
		t.Errorf("Istio CNI's DaemonSet: %d of %d nodes Ready", ds.Status.NumberReady, ds.Status.DesiredNumberScheduled)
	}
	if got := framework.GetNamespace(t, c, "istio-cni").Labels["pod-security.kubernetes.io/enforce"]; got != "privileged" {
		t.Errorf("namespace istio-cni enforces %q, want privileged", got)
	}
	if got := framework.GetNamespace(t, c, "istio-system").Labels["pod-security.kubernetes.io/enforce"]; got != "" {
		t.Errorf("the control plane's namespace enforces %q: only Istio CNI's namespace is relaxed", got)
	}
	cond := meta.FindStatusCondition(mesh.Status.Conditions, meshv1.ConditionControlPlaneReady)
	if cond == nil || !strings.Contains(cond.Message, "Istio CNI Ready") || !strings.Contains(cond.Message, "guarded") {
		t.Errorf("ControlPlaneReady = %+v, want it to say Istio CNI is Ready for guarded", cond)
	}
}

// checkInjectedForCNI: the pod has Istio's proxy as a native sidecar and Istio CNI's validation
// instead of istio-init, and no container adds a capability.
func checkInjectedForCNI(t *testing.T, p corev1.Pod) {
	t.Helper()
	native := slices.ContainsFunc(p.Spec.InitContainers, func(c corev1.Container) bool {
		return c.Name == "istio-proxy" && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
	})
	validation := slices.ContainsFunc(p.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == "istio-validation" })
	if !native || !validation {
		t.Errorf("pod %s/%s: init containers %v, containers %v; want istio-validation and istio-proxy as a native sidecar", p.Namespace, p.Name,
			containerNames(p.Spec.InitContainers), containerNames(p.Spec.Containers))
	}
	for _, ctr := range slices.Concat(p.Spec.InitContainers, p.Spec.Containers) {
		if ctr.Name == "istio-init" {
			t.Errorf("pod %s/%s has istio-init: want Istio CNI's validation instead", p.Namespace, p.Name)
		}
		if sc := ctr.SecurityContext; sc != nil && sc.Capabilities != nil && len(sc.Capabilities.Add) > 0 {
			t.Errorf("pod %s/%s: container %s adds %v; want no capability with Istio CNI", p.Namespace, p.Name, ctr.Name, sc.Capabilities.Add)
		}
	}
}

func containerNames(cs []corev1.Container) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name
	}
	return out
}
