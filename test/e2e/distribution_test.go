package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
	"github.com/meshwright/meshwright/test/framework/manifest"
)

const (
	chartNamespace = "meshwright-system"
	chartRelease   = "meshwright"
)

// renderChart renders charts/meshwright with the Helm SDK as `helm install meshwright
// --namespace meshwright-system` would, CRDs first.
func renderChart(t *testing.T, values map[string]any) []*unstructured.Unstructured {
	t.Helper()
	chrt, files, err := renderChartFiles(t, values)
	if err != nil {
		t.Fatal(err)
	}
	var out []*unstructured.Unstructured
	for _, crd := range chrt.CRDObjects() {
		out = append(out, manifest.MustDecodeAll(t, crd.File.Data)...)
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if strings.HasSuffix(n, ".yaml") {
			out = append(out, manifest.MustDecodeAll(t, []byte(files[n]))...)
		}
	}
	return out
}

// kustomizeBuild builds a kustomization with the kustomize binary `make verify-kustomize`
// installs into bin/.
func kustomizeBuild(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := manifest.KustomizeBuild(repoRoot, dir)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// find returns the object of the kind whose name ends with suffix.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, suffix string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && strings.HasSuffix(o.GetName(), suffix) {
			return o
		}
	}
	t.Fatalf("no %s named *%s", kind, suffix)
	return nil
}

func rulesOf(t *testing.T, o *unstructured.Unstructured) []rbacv1.PolicyRule {
	t.Helper()
	var role rbacv1.ClusterRole
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &role); err != nil {
		t.Fatal(err)
	}
	return role.Rules
}

func managerContainer(t *testing.T, objs []*unstructured.Unstructured) (corev1.PodSpec, corev1.Container) {
	t.Helper()
	dep := find(t, objs, "Deployment", "controller-manager")
	var spec corev1.PodTemplateSpec
	raw, _, _ := unstructured.NestedMap(dep.Object, "spec", "template")
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &spec); err != nil {
		t.Fatal(err)
	}
	for _, c := range spec.Spec.Containers {
		if c.Name == "manager" {
			return spec.Spec, c
		}
	}
	t.Fatal("no manager container")
	return corev1.PodSpec{}, corev1.Container{}
}

// TestChartAndKustomizeInstallTheSameOperator: the Helm chart and config/default grant the same
// RBAC and run the same container the same way, no rule grants "*" unless a role of Istio's
// charts grants it (the operator must hold what it grants: docs/security.md), and the pod meets
// the restricted Pod Security level. The two cannot drift apart unnoticed.
func TestChartAndKustomizeInstallTheSameOperator(t *testing.T) {
	chart, kust := renderChart(t, nil), kustomizeBuild(t, "config/default")
	granted := framework.ChartGranted(t)
	for _, role := range []struct{ kind, suffix string }{
		{"ClusterRole", "manager-role"}, {"Role", "leader-election-role"}, {"ClusterRole", "metrics-auth-role"}, {"ClusterRole", "metrics-reader"},
	} {
		c, k := framework.FlatRules(rulesOf(t, find(t, chart, role.kind, role.suffix))), framework.FlatRules(rulesOf(t, find(t, kust, role.kind, role.suffix)))
		if !slices.Equal(c, k) {
			t.Errorf("%s %s differs:\n chart:     %v\n kustomize: %v", role.kind, role.suffix, c, k)
		}
		for _, r := range c {
			if strings.Contains(r, "*") && !granted[r] {
				t.Errorf("%s %s grants a wildcard no role of Istio's charts grants: %s", role.kind, role.suffix, r)
			}
		}
	}
	// Secrets: what the stages need (read the cacerts, apply them in a root rotation, delete the
	// operator's own root), and what istiod's roles grant, nothing more.
	for _, r := range framework.FlatRules(rulesOf(t, find(t, chart, "ClusterRole", "manager-role"))) {
		if strings.HasPrefix(r, "/secrets:") && !granted[r] && !slices.Contains([]string{"/secrets:create", "/secrets:patch", "/secrets:delete", "/secrets:get", "/secrets:list", "/secrets:watch"}, r) {
			t.Errorf("the operator's ClusterRole grants %s, which neither its stages nor Istio's roles need", r)
		}
	}

	for name, objs := range map[string][]*unstructured.Unstructured{"chart": chart, "kustomize": kust} {
		pod, c := managerContainer(t, objs)
		sc := c.SecurityContext
		if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot ||
			pod.SecurityContext.SeccompProfile == nil || pod.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: pod securityContext %+v is not restricted (runAsNonRoot, seccomp RuntimeDefault)", name, pod.SecurityContext)
		} else if u, g := pod.SecurityContext.RunAsUser, pod.SecurityContext.RunAsGroup; u == nil || *u == 0 || g == nil || *g == 0 {
			t.Errorf("%s: pod runs as user %v group %v, want both explicit and not root", name, u, g)
		}
		// Ingress to the metrics and probe ports only.
		np := find(t, objs, "NetworkPolicy", "controller-manager")
		ports, _, _ := unstructured.NestedSlice(np.Object, "spec", "ingress")
		if got := fmt.Sprint(ports); got != "[map[ports:[map[port:metrics protocol:TCP] map[port:probes protocol:TCP]]]]" {
			t.Errorf("%s: NetworkPolicy admits %s, want the metrics and probes ports alone", name, got)
		}
		if sel, _, _ := unstructured.NestedStringMap(np.Object, "spec", "podSelector", "matchLabels"); sel["control-plane"] != "controller-manager" {
			t.Errorf("%s: NetworkPolicy selects %v, not the operator's pod", name, sel)
		}
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("%s: container securityContext %+v is not restricted", name, sc)
		}
	}
	_, chartC := managerContainer(t, chart)
	_, kustC := managerContainer(t, kust)
	if !slices.Equal(chartC.Args, kustC.Args) || !slices.Equal(chartC.Command, kustC.Command) {
		t.Errorf("container command/args differ:\n chart:     %v %v\n kustomize: %v %v", chartC.Command, chartC.Args, kustC.Command, kustC.Args)
	}
	if fmt.Sprint(chartC.Env) != fmt.Sprint(kustC.Env) {
		t.Errorf("container env differs: chart %v, kustomize %v", chartC.Env, kustC.Env)
	}
	// The chart's CRD is the generated one.
	crd := find(t, chart, "CustomResourceDefinition", "meshinstallations.meshwright.io")
	gen := manifest.MustDecodeAll(t, framework.MustRead(t, filepath.Join(repoRoot, "config", "crd", "bases", "meshwright.io_meshinstallations.yaml")))
	if fmt.Sprint(crd.Object) != fmt.Sprint(gen[0].Object) {
		t.Error("charts/meshwright/crds differs from config/crd/bases: run `make manifests`")
	}
}

// installAndRollOut installs objs on a fresh local cluster (CRDs first, the rest after a strict
// server-side dry run, into a namespace that enforces the restricted Pod Security level) and
// runs the operator as the ServiceAccount sa they create, impersonated, through a full rollout
// with a namespace taken to MutualTLS. A withheld permission is first taken out of the manager
// ClusterRole: the rollout must then stop with the condition it names, saying what was
// forbidden, and complete once the role is put back.
func installAndRollOut(t *testing.T, objs []*unstructured.Unstructured, sa string, withhold *withheld) {
	ctx := context.Background()
	cl, c := framework.StartCluster(t, cluster.Options{})
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: chartNamespace,
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}}); err != nil {
		t.Fatal(err)
	}
	managerRole := find(t, objs, "ClusterRole", "manager-role")
	full := managerRole.DeepCopy()
	if withhold != nil {
		taken := false
		rules, _, _ := unstructured.NestedSlice(managerRole.Object, "rules")
		for i, r := range rules {
			rm := r.(map[string]any)
			if slices.Contains(toStrings(rm["resources"]), withhold.resource) && slices.Contains(toStrings(rm["verbs"]), withhold.verb) {
				rm["verbs"] = toAny(slices.DeleteFunc(toStrings(rm["verbs"]), func(v string) bool { return v == withhold.verb }))
				rules[i] = rm
				taken = true
			}
		}
		if !taken {
			t.Fatalf("the manager role grants no %s/%s to take away", withhold.resource, withhold.verb)
		}
		_ = unstructured.SetNestedSlice(managerRole.Object, rules, "rules")
	}

	crds, rest := manifest.SplitCRDs(objs)
	if err := cluster.Apply(ctx, cl.RESTConfig(), crds...); err != nil {
		t.Fatalf("installing the CRDs: %v", err)
	}
	if err := cluster.Validate(ctx, cl.RESTConfig(), rest...); err != nil {
		t.Fatalf("the objects fail validation: %v", err)
	}
	if err := cluster.Apply(ctx, cl.RESTConfig(), rest...); err != nil {
		t.Fatalf("installing: %v", err)
	}
	// kwok runs the Deployment's pods as far as the API server can tell; the restricted level
	// admitted them.
	dep := find(t, objs, "Deployment", "controller-manager")
	framework.Eventually(t, 60*time.Second, "the operator's Deployment to be available", func() (bool, error) {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(dep.GroupVersionKind())
		if err := c.Get(ctx, client.ObjectKeyFromObject(dep), got); err != nil {
			return false, err
		}
		n, _, _ := unstructured.NestedInt64(got.Object, "status", "availableReplicas")
		return n == 1, nil
	})

	framework.MakeNamespace(t, c, "payments", map[string]string{"team": "payments"}, map[string]func(*appsv1.Deployment){"web": nil})
	framework.WaitAvailable(t, c, "payments")
	kubeconfig, err := cl.KubeconfigAs(chartNamespace, sa)
	if err != nil {
		t.Fatal(err)
	}
	runOperatorAs(t, kubeconfig, chartNamespace, behaviourArgs(t, dep)...)
	mesh := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1.MeshInstallationSpec{
		Rollout:    meshv1.RolloutSpec{TrafficGates: meshv1.TrafficGatesSkip, SoakTime: &metav1.Duration{Duration: time.Second}},
		Namespaces: []meshv1.NamespaceRule{{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"team": "payments"}}, Level: meshv1.LevelMutualTLS}},
	}}
	createMesh(t, c, mesh)
	useLocalIstiod(t, cl, c, mesh.Name)

	if withhold != nil {
		got := framework.WaitCondition(t, c, "default", withhold.condition, metav1.ConditionFalse, withhold.reason, 2*time.Minute)
		if msg := meta.FindStatusCondition(got.Status.Conditions, withhold.condition).Message; !strings.Contains(msg, "forbidden") || !strings.Contains(msg, withhold.resource) {
			t.Errorf("%s message = %q, want the API server's forbidden error naming %s", withhold.condition, msg, withhold.resource)
		}
		if ready := meta.FindStatusCondition(got.Status.Conditions, meshv1.ConditionReady); ready.Status != metav1.ConditionFalse || ready.Reason != withhold.reason {
			t.Errorf("Ready = %s/%s, want False/%s", ready.Status, ready.Reason, withhold.reason)
		}
		// The role as shipped: the rollout goes on by itself.
		if err := cluster.Apply(ctx, cl.RESTConfig(), full); err != nil {
			t.Fatal(err)
		}
	}
	framework.WaitCondition(t, c, "default", meshv1.ConditionReady, metav1.ConditionTrue, meshv1.ReasonAllStagesReady, 3*time.Minute)
	if ns := framework.GetNamespace(t, c, "payments"); ns.Labels[meshv1.LabelLevel] != string(meshv1.LevelMutualTLS) {
		t.Errorf("payments is at %q, want MutualTLS", ns.Labels[meshv1.LabelLevel])
	}
	// The leader-election Lease is in the operator's namespace: the Role there is enough.
	lease := &metav1.PartialObjectMetadata{}
	lease.SetGroupVersionKind(coordinationLease)
	if err := c.Get(ctx, client.ObjectKey{Namespace: chartNamespace, Name: "meshwright.meshwright.io"}, lease); err != nil {
		t.Errorf("leader-election lease in %s: %v", chartNamespace, err)
	}
}

// withheld is a permission a test takes out of the operator's ClusterRole, and the condition
// and reason the rollout must then stop with.
type withheld struct {
	resource, verb    string
	condition, reason string
}

// behaviourArgs are the manager container's arguments that change what the operator does (such
// as --istio-crds), leaving out those about where it listens and logs, which the local process
// sets for itself.
func behaviourArgs(t *testing.T, dep *unstructured.Unstructured) []string {
	t.Helper()
	containers, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	local := []string{"--metrics-bind-address", "--metrics-secure", "--health-probe-bind-address", "--leader-elect", "--zap-log-level"}
	for _, c := range containers {
		m, _ := c.(map[string]any)
		if m["name"] != "manager" {
			continue
		}
		var out []string
		for _, a := range toStrings(m["args"]) {
			if !slices.ContainsFunc(local, func(p string) bool { return a == p || strings.HasPrefix(a, p+"=") }) {
				out = append(out, a)
			}
		}
		return out
	}
	t.Fatalf("the Deployment %s has no manager container", dep.GetName())
	return nil
}

// TestChartInstallsAWorkingOperator: the Helm chart, rendered with the Helm SDK, installs an
// operator whose ServiceAccount can carry out a full rollout. Without the right to patch
// HorizontalPodAutoscalers (istiod's is one of the control plane's objects) the rollout first
// stops at the ControlPlane stage with reason Forbidden, naming what was refused.
func TestChartInstallsAWorkingOperator(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	objs := renderChart(t, map[string]any{"image": map[string]any{"repository": "registry.example/meshwright", "tag": "test"}})
	installAndRollOut(t, objs, find(t, objs, "ServiceAccount", "controller-manager").GetName(),
		&withheld{resource: "horizontalpodautoscalers", verb: "patch", condition: meshv1.ConditionControlPlaneReady, reason: meshv1.ReasonForbidden})
}

// TestKustomizeInstallsAWorkingOperator: kustomize's config/default (what `make deploy` applies)
// installs an operator whose ServiceAccount can carry out a full rollout.
func TestKustomizeInstallsAWorkingOperator(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	objs := kustomizeBuild(t, "config/default")
	installAndRollOut(t, objs, find(t, objs, "ServiceAccount", "controller-manager").GetName(), nil)
}

// TestBundlePermissionsRunTheOperator installs what the OLM bundle's CSV declares, as OLM's
// InstallPlan would (the CRDs, Istio's included, a ServiceAccount, its clusterPermissions and
// permissions as roles bound to it, the Deployment of its install strategy), and runs the
// operator as that ServiceAccount with the strategy's arguments (--istio-crds=external: the
// ServiceAccount may not write CRDs): first with a permission taken away (the rollout says what was forbidden), then
// as the CSV grants it (the rollout completes).
func TestBundlePermissionsRunTheOperator(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	objs := csvInstall(t)
	// The injection probe's dry-run pod needs pods/create.
	installAndRollOut(t, objs, find(t, objs, "ServiceAccount", "controller-manager").GetName(),
		&withheld{resource: "pods", verb: "create", condition: meshv1.ConditionInjectionReady, reason: meshv1.ReasonProbeRejected})
}

// csvInstall turns bundle/manifests into the objects OLM creates from them.
func csvInstall(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	dir := filepath.Join(repoRoot, "bundle", "manifests")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []*unstructured.Unstructured
	var csv *unstructured.Unstructured
	for _, e := range entries {
		for _, o := range manifest.MustDecodeAll(t, framework.MustRead(t, filepath.Join(dir, e.Name()))) {
			switch o.GetKind() {
			case "ClusterServiceVersion":
				csv = o
			case "Service":
				o.SetNamespace(chartNamespace)
				out = append(out, o)
			default:
				out = append(out, o)
			}
		}
	}
	if csv == nil {
		t.Fatal("no ClusterServiceVersion in bundle/manifests")
	}
	var spec struct {
		Install struct {
			Spec struct {
				Deployments []struct {
					Name string         `json:"name"`
					Spec map[string]any `json:"spec"`
				} `json:"deployments"`
				ClusterPermissions []struct {
					ServiceAccountName string              `json:"serviceAccountName"`
					Rules              []rbacv1.PolicyRule `json:"rules"`
				} `json:"clusterPermissions"`
				Permissions []struct {
					ServiceAccountName string              `json:"serviceAccountName"`
					Rules              []rbacv1.PolicyRule `json:"rules"`
				} `json:"permissions"`
			} `json:"spec"`
		} `json:"install"`
	}
	raw, _, _ := unstructured.NestedMap(csv.Object, "spec")
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &spec); err != nil {
		t.Fatal(err)
	}
	obj := func(kind, apiVersion, name string, fields map[string]any) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind}}
		for k, v := range fields {
			u.Object[k] = v
		}
		u.SetName(name)
		return u
	}
	toMaps := func(rules []rbacv1.PolicyRule) []any {
		var out []any
		for _, r := range rules {
			m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&r)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, m)
		}
		return out
	}
	sas := map[string]bool{}
	for i, p := range spec.Install.Spec.ClusterPermissions {
		// The manager's rules become the "manager-role", as in the chart, for the negative case.
		name := fmt.Sprintf("meshwright-csv-%d", i)
		if i == 0 {
			name = "meshwright-csv-manager-role"
		}
		out = append(out, obj("ClusterRole", "rbac.authorization.k8s.io/v1", name, map[string]any{"rules": toMaps(p.Rules)}),
			obj("ClusterRoleBinding", "rbac.authorization.k8s.io/v1", name, map[string]any{
				"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
				"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": p.ServiceAccountName, "namespace": chartNamespace}}}))
		sas[p.ServiceAccountName] = true
	}
	for i, p := range spec.Install.Spec.Permissions {
		name := fmt.Sprintf("meshwright-csv-ns-%d", i)
		role := obj("Role", "rbac.authorization.k8s.io/v1", name, map[string]any{"rules": toMaps(p.Rules)})
		binding := obj("RoleBinding", "rbac.authorization.k8s.io/v1", name, map[string]any{
			"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
			"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": p.ServiceAccountName, "namespace": chartNamespace}}})
		role.SetNamespace(chartNamespace)
		binding.SetNamespace(chartNamespace)
		out = append(out, role, binding)
		sas[p.ServiceAccountName] = true
	}
	for sa := range sas {
		u := obj("ServiceAccount", "v1", sa, nil)
		u.SetNamespace(chartNamespace)
		out = append(out, u)
	}
	for _, d := range spec.Install.Spec.Deployments {
		u := obj("Deployment", "apps/v1", d.Name, map[string]any{"spec": d.Spec})
		u.SetNamespace(chartNamespace)
		out = append(out, u)
	}
	return out
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, x := range s {
		out[i] = x
	}
	return out
}

// TestInstallManifestsValidate sends what each install path creates — kustomize's
// config/default, the Helm chart, and the objects OLM makes from the bundle's CSV — to the
// local cluster's API server as a strict dry run: unknown fields, wrong types and values the
// schemas refuse are errors. Nothing is stored.
func TestInstallManifestsValidate(t *testing.T) {
	ctx := context.Background()
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: chartNamespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for name, objs := range map[string][]*unstructured.Unstructured{
		"kustomize config/default": kustomizeBuild(t, "config/default"),
		"Helm chart":               renderChart(t, map[string]any{"serviceMonitor": map[string]any{"enabled": false}}),
		"OLM bundle":               csvInstall(t),
	} {
		var crds, rest []*unstructured.Unstructured
		for _, o := range objs {
			switch o.GetKind() {
			case "CustomResourceDefinition":
				crds = append(crds, o)
			case "Namespace":
			default:
				rest = append(rest, o)
			}
		}
		if err := cluster.Apply(ctx, lc.RESTConfig(), crds...); err != nil {
			t.Fatalf("%s: installing the CRDs: %v", name, err)
		}
		if err := cluster.Validate(ctx, lc.RESTConfig(), rest...); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	// The CSV's alm-examples (the console's starting points) are valid against the CRDs the
	// bundle ships, Istio's included.
	examples := almExamples(t)
	for _, ex := range examples {
		if ns := ex.GetNamespace(); ns != "" {
			if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
		}
	}
	if err := cluster.Validate(ctx, lc.RESTConfig(), examples...); err != nil {
		t.Errorf("alm-examples: %v", err)
	}
}

// almExamples are the objects of the bundle CSV's alm-examples annotation.
func almExamples(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	for _, o := range manifest.MustDecodeAll(t, framework.MustRead(t, filepath.Join(repoRoot, "bundle", "manifests", "meshwright.clusterserviceversion.yaml"))) {
		if o.GetKind() != "ClusterServiceVersion" {
			continue
		}
		var raw []map[string]any
		if err := json.Unmarshal([]byte(o.GetAnnotations()["alm-examples"]), &raw); err != nil {
			t.Fatalf("alm-examples: %v", err)
		}
		var out []*unstructured.Unstructured
		for _, m := range raw {
			out = append(out, &unstructured.Unstructured{Object: m})
		}
		return out
	}
	t.Fatal("no ClusterServiceVersion in bundle/manifests")
	return nil
}

// TestChartValues: the chart's values do what values.yaml says, and a combination that cannot
// work is refused with a message that says why.
func TestChartValues(t *testing.T) {
	tests := map[string]struct {
		values map[string]any
		check  func(t *testing.T, objs []*unstructured.Unstructured)
	}{
		"defaults: one replica, leader election, secure metrics, no ServiceMonitor": {
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				_, c := managerContainer(t, objs)
				if !slices.Contains(c.Args, "--leader-elect") || !slices.Contains(c.Args, "--metrics-secure=true") || c.Image != "ghcr.io/meshwright/meshwright:0.1.0" {
					t.Errorf("args %v image %s", c.Args, c.Image)
				}
				for _, o := range objs {
					if o.GetKind() == "ServiceMonitor" {
						t.Error("a ServiceMonitor is rendered by default")
					}
				}
			},
		},
		"ServiceMonitor, log level, replicas": {
			values: map[string]any{"serviceMonitor": map[string]any{"enabled": true}, "logLevel": "debug", "replicaCount": 2},
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				find(t, objs, "ServiceMonitor", "controller-manager")
				_, c := managerContainer(t, objs)
				if !slices.Contains(c.Args, "--zap-log-level=debug") {
					t.Errorf("args %v, want --zap-log-level=debug", c.Args)
				}
				if n, _, _ := unstructured.NestedFieldNoCopy(find(t, objs, "Deployment", "controller-manager").Object, "spec", "replicas"); fmt.Sprint(n) != "2" {
					t.Errorf("replicas = %v, want 2", n)
				}
			},
		},
		"Istio's CRDs installed by someone else: the flag, and no write verb on CRDs": {
			values: map[string]any{"istioCRDs": "external"},
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				if _, c := managerContainer(t, objs); !slices.Contains(c.Args, "--istio-crds=external") {
					t.Errorf("args %v, want --istio-crds=external", c.Args)
				}
				if got := crdVerbs(t, objs); !slices.Equal(got, []string{"get", "list", "watch"}) {
					t.Errorf("the manager's verbs on CRDs are %v, want get, list, watch", got)
				}
			},
		},
		"Istio's CRDs managed by the operator by default: it may write them": {
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				if _, c := managerContainer(t, objs); slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--istio-crds") }) {
					t.Errorf("args %v: the default needs no --istio-crds", c.Args)
				}
				if got := crdVerbs(t, objs); !slices.Contains(got, "patch") || !slices.Contains(got, "delete") {
					t.Errorf("the manager's verbs on CRDs are %v, want the writes as well", got)
				}
			},
		},
		"the NetworkPolicy can be turned off": {
			values: map[string]any{"networkPolicy": map[string]any{"enabled": false}},
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				for _, o := range objs {
					if o.GetKind() == "NetworkPolicy" {
						t.Errorf("NetworkPolicy %s rendered with networkPolicy.enabled false", o.GetName())
					}
				}
			},
		},
		"insecure metrics drop the auth role": {
			values: map[string]any{"metrics": map[string]any{"secure": false, "port": 8080}},
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				for _, o := range objs {
					if strings.HasSuffix(o.GetName(), "metrics-auth-role") {
						t.Errorf("%s %s rendered with insecure metrics", o.GetKind(), o.GetName())
					}
				}
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) { tc.check(t, renderChart(t, tc.values)) })
	}

	for msg, values := range map[string]map[string]any{
		"needs leaderElection: true": {"replicaCount": 2, "leaderElection": false}, // two replicas would act twice at once
		`istioCRDs is "mine"`:        {"istioCRDs": "mine"},
	} {
		if _, _, err := renderChartFiles(t, values); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("render with %v: %v, want a refusal saying %q", values, err, msg)
		}
	}
}

// renderChartFiles renders the chart with values: the chart and its rendered files, or the
// error of values the chart refuses.
func renderChartFiles(t *testing.T, values map[string]any) (*chart.Chart, map[string]string, error) {
	t.Helper()
	chrt, err := loader.Load(filepath.Join(repoRoot, "charts", "meshwright"))
	if err != nil {
		t.Fatal(err)
	}
	rv, err := chartutil.ToRenderValues(chrt, values, chartutil.ReleaseOptions{Name: chartRelease, Namespace: chartNamespace, Revision: 1, IsInstall: true}, chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	files, err := engine.Render(chrt, rv)
	return chrt, files, err
}

// crdVerbs are the verbs the manager's ClusterRole grants on CustomResourceDefinitions.
func crdVerbs(t *testing.T, objs []*unstructured.Unstructured) []string {
	t.Helper()
	var verbs []string
	for _, r := range rulesOf(t, find(t, objs, "ClusterRole", "manager-role")) {
		if slices.Contains(r.APIGroups, "apiextensions.k8s.io") && slices.Contains(r.Resources, "customresourcedefinitions") {
			verbs = append(verbs, r.Verbs...)
		}
	}
	return verbs
}
