package adoption

import (
	"context"
	"reflect"
	"slices"
	"testing"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/ambient"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/revision"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func TestOptedOut(t *testing.T) {
	tests := map[string]struct {
		labels, annotations map[string]string
		want                bool
	}{
		"nothing set":                  {want: false},
		"annotation false":             {annotations: map[string]string{optOutKey: "false"}, want: true},
		"annotation no, any case":      {annotations: map[string]string{optOutKey: "No"}, want: true},
		"annotation True":              {annotations: map[string]string{optOutKey: "True"}, want: false},
		"annotation yes":               {annotations: map[string]string{optOutKey: "yes"}, want: false},
		"label wins over annotation":   {labels: map[string]string{optOutKey: "false"}, annotations: map[string]string{optOutKey: "true"}, want: true},
		"label on, annotation ignored": {labels: map[string]string{optOutKey: "on"}, annotations: map[string]string{optOutKey: "false"}, want: false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := optedOut(metav1.ObjectMeta{Labels: tc.labels, Annotations: tc.annotations}); got != tc.want {
				t.Errorf("optedOut = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestWorkloadOwnsPod(t *testing.T) {
	web := labels.SelectorFromSet(labels.Set{"app": "web"})
	pod := func(kind, name string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}}}
		if kind != "" {
			p.OwnerReferences = []metav1.OwnerReference{{Kind: kind, Name: name, Controller: ptr.To(true)}}
		}
		return p
	}
	hashed := func(p *corev1.Pod, hash string) *corev1.Pod {
		p.Labels["pod-template-hash"] = hash
		return p
	}
	tests := map[string]struct {
		w    workload
		pod  *corev1.Pod
		want bool
	}{
		"Deployment through its ReplicaSet":         {w: workload{kind: "Deployment", name: "web", selector: web}, pod: pod("ReplicaSet", "web-7d9f"), want: true},
		"another Deployment's ReplicaSet":           {w: workload{kind: "Deployment", name: "web", selector: web}, pod: pod("ReplicaSet", "api-7d9f"), want: false},
		"a canary sharing the selector is not ours": {w: workload{kind: "Deployment", name: "web-canary", selector: web}, pod: pod("ReplicaSet", "web-7d9f"), want: false},
		"StatefulSet by name":                       {w: workload{kind: "StatefulSet", name: "db", selector: web}, pod: pod("StatefulSet", "db"), want: true},
		"a bare pod belongs to no workload":         {w: workload{kind: "Deployment", name: "web", selector: web}, pod: pod("", ""), want: false},
		"by the pod-template-hash":                  {w: workload{kind: "Deployment", name: "web", selector: web}, pod: hashed(pod("ReplicaSet", "web-7d9f"), "7d9f"), want: true},
		"web does not take web-canary's pods":       {w: workload{kind: "Deployment", name: "web", selector: web}, pod: hashed(pod("ReplicaSet", "web-canary-7d9f"), "7d9f"), want: false},
		"web-canary takes its own":                  {w: workload{kind: "Deployment", name: "web-canary", selector: web}, pod: hashed(pod("ReplicaSet", "web-canary-7d9f"), "7d9f"), want: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := tc.w.owns(tc.pod); got != tc.want {
				t.Errorf("owns = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestInjectionConflict(t *testing.T) {
	tests := map[string]struct {
		labels   map[string]string
		ours     []string
		conflict bool
	}{
		"no label":                       {},
		"our revision label":             {labels: map[string]string{InjectionLabel: "default"}},
		"another revision":               {labels: map[string]string{InjectionLabel: "canary"}, conflict: true},
		"the revision a move comes from": {labels: map[string]string{InjectionLabel: "default"}, ours: []string{"1-31-5", "default"}},
		"a revision that is not ours":    {labels: map[string]string{InjectionLabel: "1-30-0"}, ours: []string{"1-31-5", "default"}, conflict: true},
		"istio-injection enabled":        {labels: map[string]string{"istio-injection": "enabled"}, conflict: true},
		"istio-injection disabled":       {labels: map[string]string{"istio-injection": "disabled"}, conflict: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ours := tc.ours
			if ours == nil {
				ours = []string{"default"}
			}
			got := injectionConflict(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns", Labels: tc.labels}}, ours...)
			if (got != "") != tc.conflict {
				t.Errorf("injectionConflict = %q, want a conflict: %v", got, tc.conflict)
			}
		})
	}
}

// TestOurRevisions: the labels a namespace's record makes the operator's, so that a namespace
// on the old revision during an upgrade is not taken for someone else's.
func TestOurRevisions(t *testing.T) {
	upgrade := ladder.Settings{Revision: "1-31-5"}
	tests := map[string]struct {
		current ladder.Level
		state   ladder.State
		label   string
		ours    bool
	}{
		"in the mesh on the default revision during an upgrade": {current: meshv1.LevelObserve, label: "default", ours: true},
		"in the mesh on the active revision":                    {current: meshv1.LevelMutualTLS, state: ladder.State{Revision: "1-31-5"}, label: "1-31-5", ours: true},
		"moving between them":                                   {current: meshv1.LevelObserve, state: ladder.State{Step: &ladder.Step{To: meshv1.LevelObserve, Revision: "1-31-5", From: "default"}}, label: "default", ours: true},
		"off with the old revision's label: someone else's":     {current: meshv1.LevelOff, label: "default"},
		"off with the active revision's label":                  {current: meshv1.LevelOff, label: "1-31-5", ours: true},
		"in the mesh with a third revision's label":             {current: meshv1.LevelObserve, label: "canary"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns", Labels: map[string]string{InjectionLabel: tc.label}}}
			got := injectionConflict(ns, ourRevisions(tc.current, tc.state, upgrade)...)
			if (got == "") != tc.ours {
				t.Errorf("conflict = %q, want the label taken as ours: %v", got, tc.ours)
			}
		})
	}
}

// TestObserveProxylessPlaintext: proxyless gRPC pods without security.istio.io/tlsMode=istio are
// named, as the ladder's cache keeps them (slimPod keeps the templates annotation); a proxyless
// pod with the label and an Envoy pod are not. Every proxyless pod is named apart too.
func TestObserveProxylessPlaintext(t *testing.T) {
	pod := func(name, templates string, labels map[string]string) client.Object {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "grpc", Labels: labels,
			Annotations: map[string]string{"unrelated": "x"}},
			Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}, {Name: revision.ProxyContainer}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
		if templates != "" {
			p.Annotations[revision.TemplatesAnnotation] = templates
		}
		slim, err := slimPod(p)
		if err != nil {
			t.Fatal(err)
		}
		return slim.(*corev1.Pod)
	}
	service := func(name string, selector map[string]string) client.Object {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "grpc"}, Spec: corev1.ServiceSpec{Selector: selector}}
	}
	c := fake.NewClientBuilder().WithObjects(
		pod("plain-grpc", revision.GRPCAgentTemplate, map[string]string{"app": "server"}),
		pod("mtls-grpc", revision.GRPCAgentTemplate, map[string]string{"app": "server", revision.TLSModeLabel: "istio"}),
		pod("plain-caller", revision.GRPCAgentTemplate, map[string]string{"app": "caller"}),
		pod("envoy", "", map[string]string{"app": "server"}),
		service("server", map[string]string{"app": "server"}),
		service("external", nil),
	).Build()
	sum, _, _, err := observeWorkloads(context.Background(), c, "grpc")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(sum.ProxylessPlaintext, []string{"plain-grpc"}) || sum.Total != 4 || len(sum.Uninjected) != 0 {
		t.Fatalf("observed %+v; want plain-grpc alone named as a proxyless pod serving plaintext (plain-caller no Service selects), 4 pods, all injected", sum)
	}
	if !reflect.DeepEqual(sum.Proxyless, []string{"mtls-grpc", "plain-caller", "plain-grpc"}) {
		t.Errorf("proxyless pods %v, want the three grpc ones (they report no telemetry)", sum.Proxyless)
	}
}

// TestObserveStaticTrust: a workload is marked StaticTrust when one of its pods' proxies keeps
// the roots it started with (revision.LiveTrust false: no PROXY_CONFIG_XDS_AGENT=true, or
// proxyless gRPC), read from pods as the ladder's cache keeps them (slimPod keeps that variable).
func TestObserveStaticTrust(t *testing.T) {
	live := []corev1.EnvVar{{Name: "UNRELATED", Value: "x"}, {Name: revision.ProxyConfigXDSAgentEnv, Value: "true"}}
	pod := func(name, deployment, templates string, env []corev1.EnvVar) client.Object {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: map[string]string{"app": deployment},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: deployment + "-1", Controller: ptr.To(true)}}},
			Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Env: live}, {Name: revision.ProxyContainer, Env: env}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}}
		if templates != "" {
			p.Annotations = map[string]string{revision.TemplatesAnnotation: templates}
		}
		slim, err := slimPod(p)
		if err != nil {
			t.Fatal(err)
		}
		return slim.(*corev1.Pod)
	}
	deployment := func(name string) client.Object {
		sel := map[string]string{"app": name}
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}, Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: sel}, Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel}}}}
	}
	c := fake.NewClientBuilder().WithObjects(
		deployment("live"), pod("live-a", "live", "", live), pod("live-b", "live", "", live),
		deployment("mixed"), pod("mixed-a", "mixed", "", live), pod("mixed-b", "mixed", "", nil),
		deployment("proxyless"), pod("proxyless-a", "proxyless", revision.GRPCAgentTemplate, live),
	).Build()
	_, ws, _, err := observeWorkloads(context.Background(), c, "ns")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"live": false, "mixed": true, "proxyless": true}
	for _, w := range ws {
		if got, ok := want[w.Name]; !ok || w.StaticTrust != got || !w.Injected {
			t.Errorf("%s: StaticTrust %v (injected %v), want %v", w.Name, w.StaticTrust, w.Injected, got)
		}
		delete(want, w.Name)
	}
	if len(want) != 0 {
		t.Errorf("workloads not observed: %v", want)
	}
}

// TestObserveUnmanagedPods: an uninjected pod no step restarts (a bare pod, one of a controller
// the ladder does not know, one of a StatefulSet whose update strategy is OnDelete) is named
// with its owner; an
// opted-out or host-network one is not (the injector would not inject it anyway), nor an
// injected one.
func TestObserveUnmanagedPods(t *testing.T) {
	pod := func(name, ownerKind, owner string, mod func(*corev1.Pod)) client.Object {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: map[string]string{"app": "web"}},
			Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}}
		if ownerKind != "" {
			p.OwnerReferences = []metav1.OwnerReference{{Kind: ownerKind, Name: owner, Controller: ptr.To(true)}}
		}
		if mod != nil {
			mod(p)
		}
		return p
	}
	sel := map[string]string{"app": "web"}
	dbSel := map[string]string{"app": "db"}
	c := fake.NewClientBuilder().WithObjects(
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "ns"}, Spec: appsv1.StatefulSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: dbSel}, Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: dbSel}},
			UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}}},
		pod("db-0", "StatefulSet", "db", func(p *corev1.Pod) { p.Labels = dbSel }),
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns"}, Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: sel}, Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel}}}},
		pod("web-1", "ReplicaSet", "web-1", nil),
		pod("debug", "", "", nil),
		pod("shop-1", "Rollout", "shop", nil),
		pod("legacy", "", "", func(p *corev1.Pod) { p.Annotations = map[string]string{"sidecar.istio.io/inject": "false"} }),
		pod("node-agent", "", "", func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
		pod("injected", "", "", func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: revision.ProxyContainer})
		}),
	).Build()
	sum, ws, _, err := observeWorkloads(context.Background(), c, "ns")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"db-0 (StatefulSet db: updateStrategy OnDelete)", "debug (no controller)", "shop-1 (Rollout shop)"}; !reflect.DeepEqual(sum.Unmanaged, want) {
		t.Fatalf("unmanaged %v, want %v (uninjected %v)", sum.Unmanaged, want, sum.Uninjected)
	}
	for _, w := range ws {
		if want := map[string]string{"db": "updateStrategy OnDelete"}[w.Name]; w.ManualRestart != want {
			t.Errorf("%s %s: ManualRestart %q, want %q", w.Kind, w.Name, w.ManualRestart, want)
		}
	}
}

func TestManualRestart(t *testing.T) {
	tests := map[string]struct {
		got, want string
	}{
		"a Deployment":                    {got: deploymentManual(&appsv1.Deployment{})},
		"a paused Deployment":             {got: deploymentManual(&appsv1.Deployment{Spec: appsv1.DeploymentSpec{Paused: true}}), want: "paused"},
		"a rolling StatefulSet":           {got: statefulSetManual(&appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType}}})},
		"a StatefulSet at partition 0":    {got: statefulSetManual(&appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{UpdateStrategy: appsv1.StatefulSetUpdateStrategy{RollingUpdate: &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptr.To[int32](0)}}}})},
		"a partitioned StatefulSet":       {got: statefulSetManual(&appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{UpdateStrategy: appsv1.StatefulSetUpdateStrategy{RollingUpdate: &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptr.To[int32](2)}}}}), want: "rolling update partitioned at 2"},
		"an OnDelete StatefulSet":         {got: statefulSetManual(&appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}}}), want: "updateStrategy OnDelete"},
		"an OnDelete DaemonSet":           {got: daemonSetManual(&appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.OnDeleteDaemonSetStrategyType}}}), want: "updateStrategy OnDelete"},
		"a DaemonSet with rolling update": {got: daemonSetManual(&appsv1.DaemonSet{})},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

// TestDisruptionBudgetOnlyHoldsDownFirstRollouts: a PodDisruptionBudget that allows no disruption
// holds the restart of a workload whose rollout takes a pod down before its replacement is
// Ready (a Deployment whose maxUnavailable comes to a pod or more, a StatefulSet), not of one
// that starts each replacement first (a single-replica Deployment with the default 25%, a
// DaemonSet with maxSurge and no maxUnavailable): the budget is never the worse for those, and
// waiting for it would time the step out.
func TestDisruptionBudgetOnlyHoldsDownFirstRollouts(t *testing.T) {
	pct := intstr.FromString("25%")
	sel := func(app string) (*metav1.LabelSelector, corev1.PodTemplateSpec) {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}, corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app, "tier": "critical"}}}
	}
	deployment := func(name string, replicas int32) client.Object {
		s, tmpl := sel(name)
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}, Spec: appsv1.DeploymentSpec{Replicas: ptr.To(replicas), Selector: s, Template: tmpl,
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: &pct, MaxSurge: &pct}}}}
	}
	s, tmpl := sel("db")
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "ns"}, Spec: appsv1.StatefulSetSpec{Selector: s, Template: tmpl}}
	s, tmpl = sel("agent")
	one, zero := intstr.FromInt32(1), intstr.FromInt32(0)
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "agent", Namespace: "ns"}, Spec: appsv1.DaemonSetSpec{Selector: s, Template: tmpl,
		UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType, RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxSurge: &one, MaxUnavailable: &zero}}}}
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "critical", Namespace: "ns", Generation: 1},
		Spec:   policyv1.PodDisruptionBudgetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "critical"}}},
		Status: policyv1.PodDisruptionBudgetStatus{ObservedGeneration: 1, ExpectedPods: 12, DisruptionsAllowed: 0}}
	noSurge := deployment("no-surge", 1).(*appsv1.Deployment)
	noSurge.Spec.Strategy.RollingUpdate.MaxSurge = &zero // with both 0 the controller takes a pod down
	c := fake.NewClientBuilder().WithObjects(deployment("single", 1), deployment("wide", 8), noSurge, sts, ds, pdb).Build()
	_, ws, _, err := observeWorkloads(context.Background(), c, "ns")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"single": "", "wide": "critical", "no-surge": "critical", "db": "critical", "agent": ""}
	for _, w := range ws {
		if w.DisruptionBlocked != want[w.Name] {
			t.Errorf("%s %s: held by %q, want %q", w.Kind, w.Name, w.DisruptionBlocked, want[w.Name])
		}
	}
}

// TestObserveAmbientCapture: pods without a proxy are told apart as ambient mode sees them, read
// as the ladder's cache keeps them (slimPod keeps Istio CNI's redirection annotation): redirected
// to ztunnel, not yet (Uncaptured), or left out for good (OutsideAmbient: labelled
// istio.io/dataplane-mode=none, or on the node's network).
func TestObserveAmbientCapture(t *testing.T) {
	pod := func(name string, mod func(*corev1.Pod)) client.Object {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
		if mod != nil {
			mod(p)
		}
		slim, err := slimPod(p)
		if err != nil {
			t.Fatal(err)
		}
		return slim.(*corev1.Pod)
	}
	redirected := func(p *corev1.Pod) {
		p.Annotations = map[string]string{ambient.RedirectionAnnotation: ambient.RedirectionEnabled, "unrelated": "dropped"}
	}
	c := fake.NewClientBuilder().WithObjects(
		pod("captured", redirected),
		pod("pending", func(p *corev1.Pod) { p.Annotations = map[string]string{ambient.RedirectionAnnotation: "pending"} }),
		pod("new", nil),
		pod("opted-out", func(p *corev1.Pod) { p.Labels[ambient.Label] = ambient.Disabled }),
		pod("host", func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
		pod("sidecar", func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: revision.ProxyContainer})
		}),
	).Build()
	pods, _, _, err := observeWorkloads(context.Background(), c, "ns")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"new", "pending"}; !slices.Equal(pods.Uncaptured, want) {
		t.Errorf("Uncaptured = %v, want %v", pods.Uncaptured, want)
	}
	if want := []string{"host", "opted-out"}; !slices.Equal(pods.OutsideAmbient, want) {
		t.Errorf("OutsideAmbient = %v, want %v", pods.OutsideAmbient, want)
	}
}

// TestObserveIstioGateway: what istiod deploys for a Gateway API Gateway (its pod template names
// the Gateway), and a gateway of Istio's gateway chart (injected with the gateway template), are
// told apart from the namespace's own workloads.
func TestObserveIstioGateway(t *testing.T) {
	dep := func(name string, labels map[string]string) client.Object {
		labels["app"] = name
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}, Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}, Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}}}}
	}
	chart := dep("ingress", map[string]string{"sidecar.istio.io/inject": "true"}).(*appsv1.Deployment)
	chart.Spec.Template.Annotations = map[string]string{InjectTemplatesAnnotation: "gateway"}
	c := fake.NewClientBuilder().WithObjects(dep("web", map[string]string{}), dep("waypoint", map[string]string{GatewayNameLabel: "waypoint"}), chart).Build()
	_, ws, _, err := observeWorkloads(context.Background(), c, "ns")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if w.Gateway != (w.Name == "waypoint") || w.GatewayTemplate != (w.Name == "ingress") {
			t.Errorf("%s: Gateway %v, GatewayTemplate %v", w.Name, w.Gateway, w.GatewayTemplate)
		}
	}
	if len(ws) != 3 {
		t.Fatalf("%d workloads, want 3", len(ws))
	}
}
