package adoption

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshwright/meshwright/internal/ambient"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/revision"
)

// optOutKey is Istio's per-pod switch: "false" keeps the pod out of injection.
const optOutKey = "sidecar.istio.io/inject"

// workload is one Deployment, StatefulSet, DaemonSet, CronJob or Job as the ladder needs it.
type workload struct {
	kind, name  string
	uid         types.UID
	selector    labels.Selector // nil for a CronJob: its pods are its Jobs'
	template    metav1.ObjectMeta
	hostNetwork bool
	rolledOut   bool
	// runsToCompletion: a CronJob or a Job (never restarted).
	runsToCompletion bool
	// manualRestart: why a template change does not restart its pods (ladder.Workload).
	manualRestart string
	// surgesFirst: its rollout starts each replacement before it takes an old pod down (a
	// Deployment or DaemonSet whose maxUnavailable comes to 0), so a PodDisruptionBudget is
	// never the worse for it.
	surgesFirst bool
}

// owns reports whether pod belongs to the workload: by its controller reference (for a
// Deployment, a ReplicaSet named after it) and its selector, so overlapping selectors do not
// mix up two workloads' pods.
func (w workload) owns(pod *corev1.Pod) bool {
	ref := metav1.GetControllerOfNoCopy(pod)
	if ref == nil || w.selector == nil || !w.selector.Matches(labels.Set(pod.Labels)) {
		return false
	}
	if w.kind == "Deployment" {
		if ref.Kind != "ReplicaSet" {
			return false
		}
		// The Deployment controller names a ReplicaSet <deployment>-<pod-template-hash> and
		// labels its pods with the hash: exact, where a prefix would give Deployment web the
		// pods of web-canary's ReplicaSets.
		if hash := pod.Labels[appsv1.DefaultDeploymentUniqueLabelKey]; hash != "" {
			return ref.Name == w.name+"-"+hash
		}
		return strings.HasPrefix(ref.Name, w.name+"-")
	}
	return ref.Kind == w.kind && ref.Name == w.name
}

// unmanaged names a pod no workload the ladder restarts owns, with its owner.
func unmanaged(p *corev1.Pod) string {
	if ref := metav1.GetControllerOfNoCopy(p); ref != nil {
		return fmt.Sprintf("%s (%s %s)", p.Name, ref.Kind, ref.Name)
	}
	return p.Name + " (no controller)"
}

// optedOut tells, as Istio's injector does, whether a pod template asks not to be injected:
// the sidecar.istio.io/inject label (or else annotation) set to anything but y, yes, true or on.
func optedOut(meta metav1.ObjectMeta) bool {
	v, ok := meta.Labels[optOutKey]
	if !ok {
		v = meta.Annotations[optOutKey]
	}
	switch strings.ToLower(v) {
	case "", "y", "yes", "true", "on":
		return false
	}
	return true
}

// sidecarRequested reports a pod template that asks Istio's injector for the proxy whatever its
// namespace's labels say: the injector's webhooks select such pods by their labels
// (sidecar.istio.io/inject=true, or istio.io/rev naming a revision).
func sidecarRequested(meta metav1.ObjectMeta) bool {
	return meta.Labels[optOutKey] == "true" || meta.Labels[revision.Label] != ""
}

// observeWorkloads reads a namespace's pods, workloads and disruption budgets from the cache and
// summarises them for the ladder. It only reads them, so it reads the cache's own copies: a
// pass looks at every pod of every enrolled namespace, and copying them was most of its cost.
func observeWorkloads(ctx context.Context, r client.Reader, namespace string) (ladder.Pods, []ladder.Workload, map[string]types.UID, error) {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		return ladder.Pods{}, nil, nil, fmt.Errorf("listing pods of %s: %w", namespace, err)
	}
	ws, err := listWorkloads(ctx, r, namespace)
	if err != nil {
		return ladder.Pods{}, nil, nil, err
	}
	var pdbs policyv1.PodDisruptionBudgetList
	if err := r.List(ctx, &pdbs, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		return ladder.Pods{}, nil, nil, fmt.Errorf("listing PodDisruptionBudgets of %s: %w", namespace, err)
	}

	var sum ladder.Pods
	var plaintext []*corev1.Pod
	out, uids := workloadsOf(ws, pdbs.Items)
	for i := range pods.Items {
		p := &pods.Items[i]
		if !running(p) {
			continue
		}
		injected := countPod(&sum, p)
		if revision.Proxyless(p) && p.Labels[revision.TLSModeLabel] != "istio" {
			plaintext = append(plaintext, p)
		}
		owned := false
		for j, w := range ws {
			if w.owns(p) {
				owned = true
				out[j].Pods++
				if injected {
					out[j].Injected = true
					out[j].StaticTrust = out[j].StaticTrust || !revision.LiveTrust(p)
					if t := p.CreationTimestamp.Time; out[j].Started.IsZero() || t.Before(out[j].Started) {
						out[j].Started = t
					}
					if rev := p.Annotations[revision.PodAnnotation]; rev != "" && !slices.Contains(out[j].Revisions, rev) {
						out[j].Revisions = append(out[j].Revisions, rev)
					}
				} else {
					out[j].Uninjected = true
				}
				if w.manualRestart != "" && (injected || !out[j].OptedOut) {
					stuck := fmt.Sprintf("%s (%s %s: %s)", p.Name, w.kind, w.name, w.manualRestart)
					if injected {
						sum.StuckSidecars = append(sum.StuckSidecars, stuck)
					} else {
						sum.Unmanaged = append(sum.Unmanaged, stuck)
					}
				}
				break
			}
		}
		switch {
		case injected && !owned:
			sum.StuckSidecars = append(sum.StuckSidecars, unmanaged(p))
		case !injected && !owned && !optedOut(p.ObjectMeta) && !p.Spec.HostNetwork:
			sum.Unmanaged = append(sum.Unmanaged, unmanaged(p))
		}
	}
	sort.Strings(sum.Unmanaged)
	sort.Strings(sum.StuckSidecars)
	if sum.ProxylessPlaintext, err = served(ctx, r, namespace, plaintext); err != nil {
		return ladder.Pods{}, nil, nil, err
	}
	sort.Strings(sum.NotReady)
	sort.Strings(sum.Uninjected)
	sort.Strings(sum.Uncaptured)
	sort.Strings(sum.OutsideAmbient)
	sort.Strings(sum.Unproxied)
	sort.Strings(sum.ProxylessPlaintext)
	sort.Strings(sum.Proxyless)
	return sum, out, uids, nil
}

// countPod adds a running pod to the namespace's summary: its readiness, whether it has the
// proxy (which it reports), whether ambient mode carries it, and whether it runs proxyless gRPC.
func countPod(sum *ladder.Pods, p *corev1.Pod) (injected bool) {
	sum.Total++
	if podReady(p) {
		sum.Ready++
	} else {
		sum.NotReady = append(sum.NotReady, p.Name)
	}
	injected = revision.HasProxy(p)
	if !injected {
		sum.Uninjected = append(sum.Uninjected, p.Name)
		if !optedOut(p.ObjectMeta) && !p.Spec.HostNetwork {
			sum.Unproxied = append(sum.Unproxied, p.Name)
		}
		switch {
		case p.Labels[ambient.Label] == ambient.Disabled || p.Spec.HostNetwork:
			sum.OutsideAmbient = append(sum.OutsideAmbient, p.Name)
		case !ambient.Redirected(p):
			sum.Uncaptured = append(sum.Uncaptured, p.Name)
		}
	}
	if revision.Proxyless(p) {
		sum.Proxyless = append(sum.Proxyless, p.Name)
	}
	return injected
}

func listWorkloads(ctx context.Context, r client.Reader, namespace string) ([]workload, error) {
	var out []workload
	add := func(kind string, obj metav1.Object, sel *metav1.LabelSelector, tmpl corev1.PodTemplateSpec, rolledOut bool, manual string, surges bool) {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil || s.Empty() {
			return // a workload without a usable selector has no pods the ladder can attribute
		}
		out = append(out, workload{kind: kind, name: obj.GetName(), uid: obj.GetUID(), selector: s, template: tmpl.ObjectMeta,
			hostNetwork: tmpl.Spec.HostNetwork, rolledOut: rolledOut, manualRestart: manual, surgesFirst: surges})
	}
	var deps appsv1.DeploymentList
	if err := r.List(ctx, &deps, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing Deployments of %s: %w", namespace, err)
	}
	for i := range deps.Items {
		d := &deps.Items[i]
		add("Deployment", d, d.Spec.Selector, d.Spec.Template, deploymentRolledOut(d), deploymentManual(d), deploymentSurgesFirst(d))
	}
	var sts appsv1.StatefulSetList
	if err := r.List(ctx, &sts, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing StatefulSets of %s: %w", namespace, err)
	}
	for i := range sts.Items {
		s := &sts.Items[i]
		add("StatefulSet", s, s.Spec.Selector, s.Spec.Template, statefulSetRolledOut(s), statefulSetManual(s), false)
	}
	var dss appsv1.DaemonSetList
	if err := r.List(ctx, &dss, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing DaemonSets of %s: %w", namespace, err)
	}
	for i := range dss.Items {
		d := &dss.Items[i]
		add("DaemonSet", d, d.Spec.Selector, d.Spec.Template, daemonSetRolledOut(d), daemonSetManual(d), daemonSetSurgesFirst(d))
	}
	jobs, err := listJobs(ctx, r, namespace)
	if err != nil {
		return nil, err
	}
	out = append(out, jobs...)
	sort.Slice(out, func(i, j int) bool {
		if out[i].kind != out[j].kind {
			return out[i].kind < out[j].kind
		}
		return out[i].name < out[j].name
	})
	return out, nil
}

// listJobs lists the CronJobs and the Jobs that have not finished: their pods come and go, so
// they are never restarted, but a template that opts out of injection must hold STRICT even
// while nothing runs.
func listJobs(ctx context.Context, r client.Reader, namespace string) ([]workload, error) {
	var out []workload
	var crons batchv1.CronJobList
	if err := r.List(ctx, &crons, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing CronJobs of %s: %w", namespace, err)
	}
	for i := range crons.Items {
		cj := &crons.Items[i]
		if !cj.DeletionTimestamp.IsZero() {
			continue // being deleted: it starts no more Jobs
		}
		tmpl := cj.Spec.JobTemplate.Spec.Template
		out = append(out, workload{kind: "CronJob", name: cj.Name, uid: cj.UID, template: tmpl.ObjectMeta, hostNetwork: tmpl.Spec.HostNetwork,
			rolledOut: true, runsToCompletion: true})
	}
	var jobs batchv1.JobList
	if err := r.List(ctx, &jobs, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing Jobs of %s: %w", namespace, err)
	}
	for i := range jobs.Items {
		j := &jobs.Items[i]
		sel, err := metav1.LabelSelectorAsSelector(j.Spec.Selector)
		if JobFinished(j) || !j.DeletionTimestamp.IsZero() || err != nil || sel.Empty() {
			continue
		}
		out = append(out, workload{kind: "Job", name: j.Name, uid: j.UID, selector: sel, template: j.Spec.Template.ObjectMeta,
			hostNetwork: j.Spec.Template.Spec.HostNetwork, rolledOut: true, runsToCompletion: true})
	}
	return out, nil
}

// JobFinished reports a Job whose Complete or Failed condition is true: it creates no more pods.
func JobFinished(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func replicas(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}

// deploymentManual, statefulSetManual and daemonSetManual say why a change of the workload's pod
// template would not restart its pods, or "".
func deploymentManual(d *appsv1.Deployment) string {
	if d.Spec.Paused {
		return "paused"
	}
	return ""
}

func statefulSetManual(st *appsv1.StatefulSet) string {
	u := st.Spec.UpdateStrategy
	if u.Type == appsv1.OnDeleteStatefulSetStrategyType {
		return "updateStrategy OnDelete"
	}
	if u.RollingUpdate != nil && u.RollingUpdate.Partition != nil && *u.RollingUpdate.Partition > 0 {
		return fmt.Sprintf("rolling update partitioned at %d", *u.RollingUpdate.Partition)
	}
	return ""
}

func daemonSetManual(d *appsv1.DaemonSet) string {
	if d.Spec.UpdateStrategy.Type == appsv1.OnDeleteDaemonSetStrategyType {
		return "updateStrategy OnDelete"
	}
	return ""
}

// deploymentSurgesFirst: a rolling update whose maxUnavailable comes to 0 pods at the
// Deployment's replicas (the defaults, 25% rounded down, for up to 3 replicas) and whose
// maxSurge to at least one creates each new pod before it deletes an old one.
func deploymentSurgesFirst(d *appsv1.Deployment) bool {
	ru := d.Spec.Strategy.RollingUpdate
	if d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType || ru == nil || ru.MaxUnavailable == nil || ru.MaxSurge == nil {
		return false
	}
	n := int(replicas(d.Spec.Replicas))
	unavailable, err := intstr.GetScaledValueFromIntOrPercent(ru.MaxUnavailable, n, false)
	if err != nil {
		return false
	}
	// With both at 0 the Deployment controller takes one pod down at a time.
	surge, err := intstr.GetScaledValueFromIntOrPercent(ru.MaxSurge, n, true)
	return err == nil && unavailable == 0 && surge > 0
}

// daemonSetSurgesFirst: a rolling update with maxSurge and no maxUnavailable starts the new pod
// on a node before it stops the old one.
func daemonSetSurgesFirst(d *appsv1.DaemonSet) bool {
	ru := d.Spec.UpdateStrategy.RollingUpdate
	if d.Spec.UpdateStrategy.Type == appsv1.OnDeleteDaemonSetStrategyType || ru == nil || ru.MaxSurge == nil || ru.MaxUnavailable == nil {
		return false
	}
	zero := intstr.FromInt32(0)
	return *ru.MaxUnavailable == zero || ru.MaxUnavailable.String() == "0%"
}

func deploymentRolledOut(d *appsv1.Deployment) bool {
	want := replicas(d.Spec.Replicas)
	s := d.Status
	return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.Replicas == want && s.AvailableReplicas == want
}

func statefulSetRolledOut(st *appsv1.StatefulSet) bool {
	want := replicas(st.Spec.Replicas)
	s := st.Status
	return s.ObservedGeneration >= st.Generation && s.UpdatedReplicas == want && s.ReadyReplicas == want &&
		(s.UpdateRevision == "" || s.CurrentRevision == s.UpdateRevision)
}

func daemonSetRolledOut(d *appsv1.DaemonSet) bool {
	s := d.Status
	return s.ObservedGeneration >= d.Generation && s.UpdatedNumberScheduled == s.DesiredNumberScheduled && s.NumberAvailable == s.DesiredNumberScheduled
}

// blocks reports whether a disruption budget over pods with these labels allows no disruption.
func blocks(pdb *policyv1.PodDisruptionBudget, podLabels map[string]string) bool {
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(podLabels)) {
		return false
	}
	return pdb.Status.ObservedGeneration >= pdb.Generation && pdb.Status.ExpectedPods > 0 && pdb.Status.DisruptionsAllowed < 1
}

// GatewayNameLabel is on the pods istiod deploys for a Gateway API Gateway (Istio's gateways and
// waypoints), naming it.
const GatewayNameLabel = "gateway.networking.k8s.io/gateway-name"

// InjectTemplatesAnnotation names the injection templates a pod asks Istio's injector for;
// Istio's gateway chart asks for "gateway".
const InjectTemplatesAnnotation = "inject.istio.io/templates"

// gatewayTemplate tells a pod template injected as a gateway (Workload.GatewayTemplate).
func gatewayTemplate(t metav1.ObjectMeta) bool {
	return slices.Contains(strings.Split(t.Annotations[InjectTemplatesAnnotation], ","), "gateway")
}

// workloadsOf is the ladder's view of a namespace's workloads, before their pods are counted,
// and their UIDs by kind/name.
func workloadsOf(ws []workload, pdbs []policyv1.PodDisruptionBudget) ([]ladder.Workload, map[string]types.UID) {
	out := make([]ladder.Workload, len(ws))
	uids := make(map[string]types.UID, len(ws))
	for i, w := range ws {
		uids[w.kind+"/"+w.name] = w.uid
		out[i] = ladder.Workload{Kind: w.kind, Name: w.name, RolledOut: w.rolledOut, RunsToCompletion: w.runsToCompletion, ManualRestart: w.manualRestart,
			RestartedFor: w.template.Annotations[restartedForKey],
			// Istio never injects host-network pods: restarting them would not help.
			OptedOut:         optedOut(w.template) || w.hostNetwork,
			SidecarRequested: sidecarRequested(w.template),
			AmbientExcluded:  w.template.Labels[ambient.Label] == ambient.Disabled,
			Gateway:          w.template.Labels[GatewayNameLabel] != "",
			GatewayTemplate:  gatewayTemplate(w.template),
		}
		for j := range pdbs {
			// A rollout that starts each replacement first never takes the budget's pods
			// below what it allows: only the others wait for it.
			if !w.surgesFirst && blocks(&pdbs[j], w.template.Labels) {
				out[i].DisruptionBlocked = pdbs[j].Name
				break
			}
		}
	}
	return out, uids
}

// served names the pods a Service selects: a proxyless gRPC server is reached through its
// Service (an xds:/// target), so a pod none selects only calls, and STRICT changes nothing it
// serves. Services are listed only when there are pods to judge.
func served(ctx context.Context, r client.Reader, namespace string, pods []*corev1.Pod) ([]string, error) {
	if len(pods) == 0 {
		return nil, nil
	}
	var svcs corev1.ServiceList
	if err := r.List(ctx, &svcs, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing Services of %s: %w", namespace, err)
	}
	var out []string
	for _, p := range pods {
		if slices.ContainsFunc(svcs.Items, func(s corev1.Service) bool {
			return len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(p.Labels))
		}) {
			out = append(out, p.Name)
		}
	}
	return out, nil
}

// running leaves out pods that are going away or finished: they neither serve nor need a proxy.
func running(p *corev1.Pod) bool {
	return p.DeletionTimestamp.IsZero() && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
