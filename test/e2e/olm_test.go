package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/controlplane"
	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
	"github.com/meshwright/meshwright/test/framework/manifest"
)

// The OLM tests install the bundle the way OperatorHub users do: OLM's real olm-operator and
// catalog-operator, a file-based catalog served over OLM's registry API, Subscriptions and
// InstallPlans. Pods do not run under kwok, so the operator Deployment OLM creates becomes
// Available without running; the operator itself runs as a local process with the identity
// OLM created for it (impersonating its ServiceAccount), with the arguments OLM gave its
// Deployment. cert-manager's controller is the local cluster's; the catalog's cert-manager
// bundle stands in for operatorhub.io's, so that OLM resolves the dependency for real.

// The catalog's name and namespace are those of an upstream OLM install from operatorhub.io, so
// the README's commands run here unchanged.
const (
	catalogName     = "operatorhubio-catalog"
	olmInstallNS    = "meshwright-system"
	previousVersion = "0.0.9"
	certManagerCSV  = "cert-manager.v1.16.0"
	olmWaitTimeout  = 3 * time.Minute
	// olmRemovalTimeout bounds what the garbage collector removes after OLM deletes a CSV.
	olmRemovalTimeout = 6 * time.Minute
	olmOperatorGroup  = "operators.coreos.com"
)

func olmGVK(version, kind string) schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: olmOperatorGroup, Version: version, Kind: kind}
}

// bundleDir is a registry+v1 bundle on disk: manifests/ and metadata/.
type bundleDir string

// catalogBundle is one bundle entry of a file-based catalog, its manifests inline.
type catalogBundle struct {
	pkg, name, version string
	objects            []*unstructured.Unstructured
	requires           map[string]string // package → versionRange
}

// loadBundle reads a bundle directory as OLM's registry would: every manifest, the CSV's name
// and version, and the package dependencies of metadata/dependencies.yaml.
func loadBundle(t *testing.T, dir bundleDir) catalogBundle {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(string(dir), "manifests"))
	if err != nil {
		t.Fatal(err)
	}
	b := catalogBundle{pkg: "meshwright", requires: map[string]string{}}
	for _, e := range entries {
		for _, o := range manifest.MustDecodeAll(t, framework.MustRead(t, filepath.Join(string(dir), "manifests", e.Name()))) {
			if o.GetKind() == "ClusterServiceVersion" {
				b.name = o.GetName()
				b.version, _, _ = unstructured.NestedString(o.Object, "spec", "version")
			}
			b.objects = append(b.objects, o)
		}
	}
	var deps struct {
		Dependencies []struct {
			Type  string `json:"type"`
			Value struct {
				PackageName  string `json:"packageName"`
				VersionRange string `json:"versionRange"`
			} `json:"value"`
		} `json:"dependencies"`
	}
	if err := yaml.Unmarshal(framework.MustRead(t, filepath.Join(string(dir), "metadata", "dependencies.yaml")), &deps); err != nil {
		t.Fatal(err)
	}
	for _, d := range deps.Dependencies {
		if d.Type != "olm.package" {
			t.Fatalf("dependency of type %s: the test catalog knows only olm.package", d.Type)
		}
		b.requires[d.Value.PackageName] = d.Value.VersionRange
	}
	if b.name == "" || b.version == "" {
		t.Fatalf("no CSV with a version in %s", dir)
	}
	return b
}

// previousBundle generates the bundle of an earlier release (the same code at a lower version),
// the one an upgrade starts from.
func previousBundle(t *testing.T) bundleDir {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command("go", "run", "./cmd/bundlegen", "-root", repoRoot, "-out", out, "-version", previousVersion)
	cmd.Dir = filepath.Join(repoRoot, "test")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bundlegen -version %s: %v\n%s", previousVersion, err, b)
	}
	return bundleDir(filepath.Join(out, "bundle"))
}

// certManagerBundle is a stand-in for operatorhub.io's cert-manager bundle: cert-manager's CRDs
// (the local cluster's copies) owned by a CSV whose Deployment kwok makes Available.
func certManagerBundle(t *testing.T) catalogBundle {
	t.Helper()
	bin, err := cluster.DefaultBinDir()
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(bin, "cert-manager-crds", "*.yaml"))
	b := catalogBundle{pkg: "cert-manager", name: certManagerCSV, version: "1.16.0"}
	var owned []any
	for _, f := range files {
		for _, o := range manifest.MustDecodeAll(t, framework.MustRead(t, f)) {
			if o.GetKind() != "CustomResourceDefinition" {
				continue
			}
			kind, _, _ := unstructured.NestedString(o.Object, "spec", "names", "kind")
			owned = append(owned, map[string]any{"name": o.GetName(), "version": "v1", "kind": kind, "displayName": kind, "description": "cert-manager's " + kind})
			b.objects = append(b.objects, o)
		}
	}
	if len(owned) == 0 {
		t.Fatalf("no cert-manager CRDs under %s", bin)
	}
	labels := map[string]any{"app": "cert-manager"}
	csv := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "operators.coreos.com/v1alpha1", "kind": "ClusterServiceVersion",
		"metadata": map[string]any{"name": certManagerCSV},
		"spec": map[string]any{
			"displayName": "cert-manager", "version": b.version,
			"installModes":              installModes(),
			"customresourcedefinitions": map[string]any{"owned": owned},
			"install": map[string]any{"strategy": "deployment", "spec": map[string]any{
				"deployments": []any{map[string]any{"name": "cert-manager", "spec": map[string]any{
					"replicas": int64(1), "selector": map[string]any{"matchLabels": labels},
					"template": map[string]any{"metadata": map[string]any{"labels": labels}, "spec": map[string]any{
						"serviceAccountName": "cert-manager",
						"containers":         []any{map[string]any{"name": "cert-manager-controller", "image": "quay.io/jetstack/cert-manager-controller:v1.16.0"}},
					}},
				}}},
				"clusterPermissions": []any{map[string]any{"serviceAccountName": "cert-manager", "rules": []any{
					map[string]any{"apiGroups": []any{"cert-manager.io"}, "resources": []any{"certificates", "issuers", "clusterissuers"}, "verbs": []any{"get", "list", "watch"}},
				}}},
			}},
		},
	}}
	b.objects = append([]*unstructured.Unstructured{csv}, b.objects...)
	return b
}

func installModes() []any {
	var out []any
	for _, m := range []string{"OwnNamespace", "SingleNamespace", "MultiNamespace"} {
		out = append(out, map[string]any{"type": m, "supported": false})
	}
	return append(out, map[string]any{"type": "AllNamespaces", "supported": true})
}

// writeCatalog writes a file-based catalog: per package, one channel "candidate" with the
// bundles in upgrade order (each replacing the one before), every bundle's manifests inline as
// olm.bundle.object properties and no image, so OLM unpacks nothing.
func writeCatalog(t *testing.T, bundles ...catalogBundle) string {
	t.Helper()
	var docs []any
	byPkg := map[string][]catalogBundle{}
	var pkgs []string
	for _, b := range bundles {
		if _, ok := byPkg[b.pkg]; !ok {
			pkgs = append(pkgs, b.pkg)
		}
		byPkg[b.pkg] = append(byPkg[b.pkg], b)
	}
	for _, pkg := range pkgs {
		docs = append(docs, map[string]any{"schema": "olm.package", "name": pkg, "defaultChannel": "candidate"})
		var entries []any
		for i, b := range byPkg[pkg] {
			e := map[string]any{"name": b.name}
			if i > 0 {
				e["replaces"] = byPkg[pkg][i-1].name
			}
			entries = append(entries, e)
		}
		docs = append(docs, map[string]any{"schema": "olm.channel", "package": pkg, "name": "candidate", "entries": entries})
		for _, b := range byPkg[pkg] {
			props := []any{map[string]any{"type": "olm.package", "value": map[string]any{"packageName": pkg, "version": b.version}}}
			for p, r := range b.requires {
				props = append(props, map[string]any{"type": "olm.package.required", "value": map[string]any{"packageName": p, "versionRange": r}})
			}
			for _, o := range b.objects {
				if o.GetKind() != "CustomResourceDefinition" {
					continue
				}
				group, _, _ := unstructured.NestedString(o.Object, "spec", "group")
				kind, _, _ := unstructured.NestedString(o.Object, "spec", "names", "kind")
				versions, _, _ := unstructured.NestedSlice(o.Object, "spec", "versions")
				for _, v := range versions {
					name, _ := v.(map[string]any)["name"].(string)
					props = append(props, map[string]any{"type": "olm.gvk", "value": map[string]any{"group": group, "kind": kind, "version": name}})
				}
			}
			for _, o := range b.objects {
				data, err := json.Marshal(o.Object)
				if err != nil {
					t.Fatal(err)
				}
				props = append(props, map[string]any{"type": "olm.bundle.object", "value": map[string]any{"data": base64.StdEncoding.EncodeToString(data)}})
			}
			docs = append(docs, map[string]any{"schema": "olm.bundle", "name": b.name, "package": pkg, "image": "", "properties": props})
		}
	}
	dir := t.TempDir()
	var buf bytes.Buffer
	for _, d := range docs {
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	if err := os.WriteFile(filepath.Join(dir, "catalog.json"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// olmEnv is a local cluster with OLM running and a catalog served as operatorhubio-catalog.
type olmEnv struct {
	cl  *cluster.Cluster
	c   client.Client
	olm *cluster.OLM
}

// startOLM starts a cluster of the test's own with OLM, and serves catalogDir as the global
// catalog.
func startOLM(t *testing.T, catalogDir string) *olmEnv {
	t.Helper()
	cl, c := framework.StartCluster(t, cluster.Options{})
	o, err := cl.StartOLM(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range o.LogPaths() {
				t.Logf("%s:\n%s", p, tailFile(p, 30))
			}
		}
		o.Stop()
	})
	env := &olmEnv{cl: cl, c: c, olm: o}
	env.serveCatalog(t, catalogDir)
	return env
}

// serveCatalog serves a catalog and points the global CatalogSource at it, creating it or
// moving it to the new address, and waits until OLM has connected to it.
func (e *olmEnv) serveCatalog(t *testing.T, dir string) {
	t.Helper()
	ctx := context.Background()
	reg, err := e.cl.StartRegistry(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	cs := &unstructured.Unstructured{}
	cs.SetGroupVersionKind(olmGVK("v1alpha1", "CatalogSource"))
	cs.SetNamespace(cluster.OLMNamespace)
	cs.SetName(catalogName)
	cs.Object["spec"] = map[string]any{"sourceType": "grpc", "address": reg.Addr, "displayName": "Test catalog"}
	if err := cluster.Apply(ctx, e.cl.RESTConfig(), cs); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, olmWaitTimeout, "the catalog to be READY at "+reg.Addr, func() (bool, error) {
		got := e.get(t, cs.GroupVersionKind(), cluster.OLMNamespace, catalogName)
		state, _, _ := unstructured.NestedString(got.Object, "status", "connectionState", "lastObservedState")
		addr, _, _ := unstructured.NestedString(got.Object, "status", "connectionState", "address")
		return state == "READY" && addr == reg.Addr, nil
	})
}

// get reads an object as unstructured; nil when it does not exist.
func (e *olmEnv) get(t *testing.T, gvk schema.GroupVersionKind, namespace, name string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, u); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		t.Fatal(err)
	}
	return u
}

// waitCSV waits for a CSV in the install namespace to reach the phase.
func (e *olmEnv) waitCSV(t *testing.T, name, phase string) *unstructured.Unstructured {
	t.Helper()
	var csv *unstructured.Unstructured
	framework.Eventually(t, olmWaitTimeout, "CSV "+name+" to be "+phase, func() (bool, error) {
		csv = e.get(t, olmGVK("v1alpha1", "ClusterServiceVersion"), olmInstallNS, name)
		if csv == nil {
			return false, nil
		}
		got, _, _ := unstructured.NestedString(csv.Object, "status", "phase")
		return got == phase, nil
	})
	return csv
}

// subscribe creates the OperatorGroup (all namespaces) and a Subscription to meshwright.
func (e *olmEnv) subscribe(t *testing.T, startingCSV, approval string) {
	t.Helper()
	ctx := context.Background()
	if err := e.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: olmInstallNS}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	og := &unstructured.Unstructured{}
	og.SetGroupVersionKind(olmGVK("v1", "OperatorGroup"))
	og.SetNamespace(olmInstallNS)
	og.SetName("meshwright")
	sub := &unstructured.Unstructured{}
	sub.SetGroupVersionKind(olmGVK("v1alpha1", "Subscription"))
	sub.SetNamespace(olmInstallNS)
	sub.SetName("meshwright")
	spec := map[string]any{"channel": "candidate", "name": "meshwright", "source": catalogName, "sourceNamespace": cluster.OLMNamespace, "installPlanApproval": approval}
	if startingCSV != "" {
		spec["startingCSV"] = startingCSV
	}
	sub.Object["spec"] = spec
	if err := cluster.Apply(ctx, e.cl.RESTConfig(), og, sub); err != nil {
		t.Fatal(err)
	}
}

// approveInstallPlanFor approves the pending InstallPlan that installs csvName.
func (e *olmEnv) approveInstallPlanFor(t *testing.T, csvName string) {
	t.Helper()
	ctx := context.Background()
	var plan *unstructured.Unstructured
	framework.Eventually(t, olmWaitTimeout, "an InstallPlan for "+csvName+" awaiting approval", func() (bool, error) {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(olmGVK("v1alpha1", "InstallPlanList"))
		if err := e.c.List(ctx, list, client.InNamespace(olmInstallNS)); err != nil {
			return false, err
		}
		for i := range list.Items {
			names, _, _ := unstructured.NestedStringSlice(list.Items[i].Object, "spec", "clusterServiceVersionNames")
			phase, _, _ := unstructured.NestedString(list.Items[i].Object, "status", "phase")
			if slices.Contains(names, csvName) && phase == "RequiresApproval" {
				plan = &list.Items[i]
				return true, nil
			}
		}
		return false, nil
	})
	patch := client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"approved":true}}`))
	if err := e.c.Patch(ctx, plan, patch); err != nil {
		t.Fatal(err)
	}
}

// csvDeployment is the manager Deployment of a CSV's install strategy, as OLM should create it.
func csvDeployment(t *testing.T, csv *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	deps, _, _ := unstructured.NestedSlice(csv.Object, "spec", "install", "spec", "deployments")
	if len(deps) != 1 {
		t.Fatalf("CSV %s has %d Deployments, want 1", csv.GetName(), len(deps))
	}
	d := deps[0].(map[string]any)
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "spec": d["spec"]}}
	u.SetName(d["name"].(string))
	u.SetNamespace(olmInstallNS)
	return u
}

// grantedTo is every rule bound to the ServiceAccount by the roles of kind roleKind (through
// bindings of the matching kind), as OLM created them.
func (e *olmEnv) grantedTo(t *testing.T, sa, bindingKind string) []rbacv1.PolicyRule {
	t.Helper()
	ctx := context.Background()
	var rules []rbacv1.PolicyRule
	switch bindingKind {
	case "ClusterRoleBinding":
		list := &rbacv1.ClusterRoleBindingList{}
		if err := e.c.List(ctx, list); err != nil {
			t.Fatal(err)
		}
		for _, b := range list.Items {
			if !bindsSA(b.Subjects, sa) {
				continue
			}
			role := &rbacv1.ClusterRole{}
			if err := e.c.Get(ctx, client.ObjectKey{Name: b.RoleRef.Name}, role); err != nil {
				t.Fatal(err)
			}
			rules = append(rules, role.Rules...)
		}
	case "RoleBinding":
		list := &rbacv1.RoleBindingList{}
		if err := e.c.List(ctx, list, client.InNamespace(olmInstallNS)); err != nil {
			t.Fatal(err)
		}
		for _, b := range list.Items {
			if !bindsSA(b.Subjects, sa) {
				continue
			}
			role := &rbacv1.Role{}
			if err := e.c.Get(ctx, client.ObjectKey{Namespace: olmInstallNS, Name: b.RoleRef.Name}, role); err != nil {
				t.Fatal(err)
			}
			rules = append(rules, role.Rules...)
		}
	}
	return rules
}

func bindsSA(subjects []rbacv1.Subject, sa string) bool {
	return slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool {
		return s.Kind == rbacv1.ServiceAccountKind && s.Name == sa && s.Namespace == olmInstallNS
	})
}

// csvRules are the rules of a CSV's clusterPermissions or permissions.
func csvRules(t *testing.T, csv *unstructured.Unstructured, field string) (string, []rbacv1.PolicyRule) {
	t.Helper()
	perms, _, _ := unstructured.NestedSlice(csv.Object, "spec", "install", "spec", field)
	var sa string
	var rules []rbacv1.PolicyRule
	for _, p := range perms {
		var perm struct {
			ServiceAccountName string              `json:"serviceAccountName"`
			Rules              []rbacv1.PolicyRule `json:"rules"`
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(p.(map[string]any), &perm); err != nil {
			t.Fatal(err)
		}
		sa = perm.ServiceAccountName
		rules = append(rules, perm.Rules...)
	}
	return sa, rules
}

// checkInstalledAsDeclared: OLM created the Deployment, ServiceAccount and RBAC exactly as the CSV
// declares them, and the Deployment is Available.
func (e *olmEnv) checkInstalledAsDeclared(t *testing.T, csv *unstructured.Unstructured) (sa string, args []string) {
	t.Helper()
	want := csvDeployment(t, csv)
	got := e.get(t, want.GroupVersionKind(), olmInstallNS, want.GetName())
	if got == nil {
		t.Fatalf("OLM did not create the Deployment %s", want.GetName())
	}
	wantPod, _, _ := unstructured.NestedMap(want.Object, "spec", "template", "spec")
	gotPod, _, _ := unstructured.NestedMap(got.Object, "spec", "template", "spec")
	for _, field := range []string{"serviceAccountName", "securityContext"} {
		if fmt.Sprint(wantPod[field]) != fmt.Sprint(gotPod[field]) {
			t.Errorf("Deployment %s: %s = %v, the CSV says %v", got.GetName(), field, gotPod[field], wantPod[field])
		}
	}
	args = behaviourArgs(t, got)
	if wantArgs := behaviourArgs(t, want); !slices.Equal(args, wantArgs) {
		t.Errorf("Deployment %s runs %v, the CSV says %v", got.GetName(), args, wantArgs)
	}
	sa, _ = gotPod["serviceAccountName"].(string)
	if e.get(t, schema.GroupVersionKind{Version: "v1", Kind: "ServiceAccount"}, olmInstallNS, sa) == nil {
		t.Fatalf("OLM did not create the ServiceAccount %s", sa)
	}
	// The operator is installed for all namespaces, and for such an OperatorGroup OLM grants the
	// CSV's permissions (the leader-election Role) in every namespace as well, through
	// ClusterRoles: what the ServiceAccount gets cluster-wide is both lists.
	_, namespaced := csvRules(t, csv, "permissions")
	for _, tc := range []struct {
		field, binding string
		widened        []rbacv1.PolicyRule
	}{{"clusterPermissions", "ClusterRoleBinding", namespaced}, {"permissions", "RoleBinding", nil}} {
		csvSA, declared := csvRules(t, csv, tc.field)
		if csvSA != sa {
			t.Errorf("the CSV's %s are for %q, its Deployment runs as %q", tc.field, csvSA, sa)
		}
		want := framework.FlatRules(append(declared, tc.widened...))
		// olm-operator creates the widened roles after the CSV has Succeeded.
		framework.Eventually(t, time.Minute, "the RBAC OLM grants through "+tc.binding+"s to match the CSV's "+tc.field, func() (bool, error) {
			got := framework.FlatRules(e.grantedTo(t, sa, tc.binding))
			if slices.Equal(got, want) {
				return true, nil
			}
			extra := slices.DeleteFunc(slices.Clone(got), func(r string) bool { return slices.Contains(want, r) })
			missing := slices.DeleteFunc(slices.Clone(want), func(r string) bool { return slices.Contains(got, r) })
			return false, fmt.Errorf("OLM granted %s what the CSV does not declare: %v; and not what it declares: %v", sa, extra, missing)
		})
	}
	return sa, args
}

// runOperatorFromOLM runs the operator as OLM installed it: as its ServiceAccount, with its
// Deployment's arguments.
func (e *olmEnv) runOperatorFromOLM(t *testing.T, sa string, args []string) *operator {
	t.Helper()
	kubeconfig, err := e.cl.KubeconfigAs(olmInstallNS, sa)
	if err != nil {
		t.Fatal(err)
	}
	return runOperatorAs(t, kubeconfig, olmInstallNS, args...)
}

// rollOutPayments creates a MeshInstallation taking the namespace payments to MutualTLS and waits
// for Ready; the installation is not deleted at the end (the uninstall test keeps it).
func (e *olmEnv) rollOutPayments(t *testing.T) {
	t.Helper()
	framework.MakeNamespace(t, e.c, "payments", map[string]string{"team": "payments"}, map[string]func(*appsv1.Deployment){"web": nil})
	framework.WaitAvailable(t, e.c, "payments")
	mesh := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1.MeshInstallationSpec{
		Rollout:    meshv1.RolloutSpec{TrafficGates: meshv1.TrafficGatesSkip, SoakTime: &metav1.Duration{Duration: time.Second}},
		Namespaces: []meshv1.NamespaceRule{{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"team": "payments"}}, Level: meshv1.LevelMutualTLS}},
	}}
	if err := e.c.Create(context.Background(), mesh); err != nil {
		t.Fatal(err)
	}
	useLocalIstiod(t, e.cl, e.c, mesh.Name)
	framework.WaitCondition(t, e.c, "default", meshv1.ConditionReady, metav1.ConditionTrue, meshv1.ReasonAllStagesReady, 3*time.Minute)
	if ns := framework.GetNamespace(t, e.c, "payments"); ns.Labels[meshv1.LabelLevel] != string(meshv1.LevelMutualTLS) {
		t.Fatalf("payments is at %q, want MutualTLS", ns.Labels[meshv1.LabelLevel])
	}
}

// readmeBlock returns the shell commands between the README's markers <!-- name:begin --> and
// <!-- name:end -->, the code of the fenced block there.
func readmeBlock(t *testing.T, name string) string {
	t.Helper()
	readme := string(framework.MustRead(t, filepath.Join(repoRoot, "README.md")))
	re := regexp.MustCompile("(?s)<!-- " + regexp.QuoteMeta(name) + ":begin -->\\s*```sh\\n(.*?)```\\s*<!-- " + regexp.QuoteMeta(name) + ":end -->")
	m := re.FindStringSubmatch(readme)
	if m == nil {
		t.Fatalf("README.md has no ```sh block between <!-- %s:begin --> and <!-- %s:end -->", name, name)
	}
	return m[1]
}

// runReadmeBlock runs a README block with bash -e against the cluster, kubectl from bin/.
func runReadmeBlock(t *testing.T, cl *cluster.Cluster, name string) {
	t.Helper()
	bin, err := cluster.DefaultBinDir()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", readmeBlock(t, name))
	cmd.Env = append(os.Environ(), "KUBECONFIG="+cl.Kubeconfig, "PATH="+bin+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	t.Logf("README %s:\n%s", name, out)
	if err != nil {
		t.Fatalf("README block %s failed: %v", name, err)
	}
}

// TestOLMInstallFromReadme runs the README's OLM install commands against a catalog holding the
// current bundle and its cert-manager dependency: OLM resolves cert-manager, installs both, and
// creates the operator's Deployment, ServiceAccount and RBAC exactly as the CSV declares; the
// operator, run with that identity and those arguments, brings a MeshInstallation to Ready.
// Then the README's uninstall commands remove the operator and leave what the README says stays:
// the CRDs (Istio's included), the MeshInstallation and the mesh it made, and cert-manager.
func TestOLMInstallFromReadme(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	current := loadBundle(t, bundleDir(filepath.Join(repoRoot, "bundle")))
	e := startOLM(t, writeCatalog(t, certManagerBundle(t), current))

	runReadmeBlock(t, e.cl, "olm-install")
	csv := e.waitCSV(t, current.name, "Succeeded")
	e.waitCSV(t, certManagerCSV, "Succeeded")
	sa, args := e.checkInstalledAsDeclared(t, csv)
	if !slices.Contains(args, "--istio-crds=external") {
		t.Errorf("OLM runs the operator with %v: want --istio-crds=external, since the bundle ships Istio's CRDs", args)
	}
	op := e.runOperatorFromOLM(t, sa, args)
	e.rollOutPayments(t)
	_ = op.stop(syscall.SIGTERM, 30*time.Second)

	runReadmeBlock(t, e.cl, "olm-uninstall")
	dep := csvDeployment(t, csv)
	// The cluster's garbage collector removes them through their owner references (OLM only
	// deletes the CSV): on a machine running several clusters at once it can lag minutes.
	framework.Eventually(t, olmRemovalTimeout, "the operator's Deployment, ServiceAccount and RBAC to be removed", func() (bool, error) {
		var left []string
		if e.get(t, dep.GroupVersionKind(), olmInstallNS, dep.GetName()) != nil {
			left = append(left, "Deployment "+dep.GetName())
		}
		if e.get(t, schema.GroupVersionKind{Version: "v1", Kind: "ServiceAccount"}, olmInstallNS, sa) != nil {
			left = append(left, "ServiceAccount "+sa)
		}
		if b := e.grantedTo(t, sa, "ClusterRoleBinding"); len(b) > 0 {
			left = append(left, fmt.Sprintf("ClusterRoleBindings granting %d rule(s)", len(b)))
		}
		if len(left) > 0 {
			return false, fmt.Errorf("still there: %s", strings.Join(left, ", "))
		}
		return true, nil
	})
	// What stays, as the README says.
	crd := schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"}
	for _, name := range []string{"meshinstallations.meshwright.io", "peerauthentications.security.istio.io", "certificates.cert-manager.io"} {
		if e.get(t, crd, "", name) == nil {
			t.Errorf("CRD %s was removed by the uninstall", name)
		}
	}
	if e.get(t, schema.GroupVersionKind{Group: meshv1.GroupVersion.Group, Version: meshv1.GroupVersion.Version, Kind: "MeshInstallation"}, "", "default") == nil {
		t.Error("the MeshInstallation was removed by the uninstall")
	}
	if e.get(t, schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, meshv1.DefaultControlPlaneNamespace, "istiod") == nil {
		t.Error("istiod's Deployment was removed by the uninstall")
	}
	if ns := framework.GetNamespace(t, e.c, "payments"); ns.Labels[meshv1.LabelLevel] != string(meshv1.LevelMutualTLS) {
		t.Errorf("payments is at %q after the uninstall, want MutualTLS still", ns.Labels[meshv1.LabelLevel])
	}
	if e.get(t, olmGVK("v1alpha1", "ClusterServiceVersion"), olmInstallNS, certManagerCSV) == nil {
		t.Error("cert-manager was uninstalled with Meshwright")
	}
}

// operatorFields is what the operator has written to the objects of an installation: per
// object, its field managers' entries (fields and time) for the operator's managers. A pass
// that writes anything, even the same values under a new time, changes it.
func operatorFields(t *testing.T, c client.Client) map[string]string {
	t.Helper()
	ctx := context.Background()
	kinds := slices.Concat(controlplane.OwnedKinds(), []schema.GroupVersionKind{
		{Version: "v1", Kind: "Secret"}, {Version: "v1", Kind: "Namespace"},
		{Group: "cert-manager.io", Version: "v1", Kind: "Certificate"}, {Group: "cert-manager.io", Version: "v1", Kind: "Issuer"},
		{Group: "security.istio.io", Version: "v1", Kind: "PeerAuthentication"}, {Group: "security.istio.io", Version: "v1", Kind: "AuthorizationPolicy"},
		{Group: meshv1.GroupVersion.Group, Version: meshv1.GroupVersion.Version, Kind: "MeshInstallation"},
	})
	out := map[string]string{}
	for _, gvk := range kinds {
		list := &metav1.PartialObjectMetadataList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := c.List(ctx, list); err != nil {
			t.Fatal(err)
		}
		for _, o := range list.Items {
			var mine []metav1.ManagedFieldsEntry
			for _, m := range o.ManagedFields {
				if strings.HasPrefix(m.Manager, "meshwright") {
					mine = append(mine, m)
				}
			}
			if len(mine) == 0 {
				continue
			}
			b, _ := json.Marshal(mine)
			out[gvk.Kind+" "+o.Namespace+"/"+o.Name] = string(b)
		}
	}
	if len(out) == 0 {
		t.Fatal("no object carries the operator's field managers")
	}
	return out
}

// checkNothingWritten compares operatorFields from before and after an operator upgrade.
func checkNothingWritten(t *testing.T, before, after map[string]string) {
	t.Helper()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("the upgraded operator wrote to %s:\n  before %s\n  after  %s", k, v, after[k])
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("the upgraded operator created %s", k)
		}
	}
}

// TestOLMUpgradeKeepsTheMesh installs the previous release through OLM (a Subscription starting
// at it, InstallPlans approved by hand), takes a namespace to MutualTLS with it, then approves
// the upgrade to the current bundle: OLM replaces the CSV, and the new release's operator, run
// with the new Deployment's identity and arguments, adopts the mesh without writing to any
// object (its field managers' entries are unchanged) and with every namespace at its level.
func TestOLMUpgradeKeepsTheMesh(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	prev := loadBundle(t, previousBundle(t))
	current := loadBundle(t, bundleDir(filepath.Join(repoRoot, "bundle")))
	e := startOLM(t, writeCatalog(t, certManagerBundle(t), prev, current))

	e.subscribe(t, prev.name, "Manual")
	e.approveInstallPlanFor(t, prev.name)
	oldCSV := e.waitCSV(t, prev.name, "Succeeded")
	sa, args := e.checkInstalledAsDeclared(t, oldCSV)
	op := e.runOperatorFromOLM(t, sa, args)
	e.rollOutPayments(t)
	before := operatorFields(t, e.c)
	levels := framework.GetNamespace(t, e.c, "payments").Annotations[meshv1.AnnotationLadder]

	e.approveInstallPlanFor(t, current.name)
	newCSV := e.waitCSV(t, current.name, "Succeeded")
	framework.Eventually(t, olmWaitTimeout, "the previous CSV to be replaced and removed", func() (bool, error) {
		return e.get(t, olmGVK("v1alpha1", "ClusterServiceVersion"), olmInstallNS, prev.name) == nil, nil
	})
	sa, args = e.checkInstalledAsDeclared(t, newCSV)
	// OLM rolls the Deployment to the new release: here, the process is replaced.
	if err := op.stop(syscall.SIGTERM, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	e.runOperatorFromOLM(t, sa, args)
	framework.WaitCondition(t, e.c, "default", meshv1.ConditionReady, metav1.ConditionTrue, meshv1.ReasonAllStagesReady, time.Minute)
	// Watch the new operator's first passes settle before comparing: a write would show in the
	// field managers' entries, however long ago it happened.
	time.Sleep(10 * time.Second)
	checkNothingWritten(t, before, operatorFields(t, e.c))
	ns := framework.GetNamespace(t, e.c, "payments")
	if ns.Labels[meshv1.LabelLevel] != string(meshv1.LevelMutualTLS) || ns.Annotations[meshv1.AnnotationLadder] != levels {
		t.Errorf("payments changed with the upgrade: level %q, ladder %q (was %q)", ns.Labels[meshv1.LabelLevel], ns.Annotations[meshv1.AnnotationLadder], levels)
	}
}

// withoutPodsCreate is the bundle with pods/create taken out of its CSV's clusterPermissions:
// an install strategy that forgot a permission the operator needs.
func withoutPodsCreate(t *testing.T, b catalogBundle) catalogBundle {
	t.Helper()
	out := b
	out.objects = nil
	for _, o := range b.objects {
		if o.GetKind() == "ClusterServiceVersion" {
			o = o.DeepCopy()
			perms, _, _ := unstructured.NestedSlice(o.Object, "spec", "install", "spec", "clusterPermissions")
			removed := false
			for _, p := range perms {
				rules := p.(map[string]any)["rules"].([]any)
				for i, r := range rules {
					rm := r.(map[string]any)
					if slices.Contains(toStrings(rm["resources"]), "pods") {
						rm["verbs"] = toAny(slices.DeleteFunc(toStrings(rm["verbs"]), func(v string) bool { return v == "create" }))
						rules[i] = rm
						removed = true
					}
				}
			}
			if !removed {
				t.Fatal("the CSV grants no pods/create to take away")
			}
			_ = unstructured.SetNestedSlice(o.Object, perms, "spec", "install", "spec", "clusterPermissions")
		}
		out.objects = append(out.objects, o)
	}
	return out
}

// TestOLMReportsWhatIsMissing covers the two ways an OLM install goes wrong. First the catalog
// has no cert-manager: OLM installs nothing and says on the Subscription that the dependency
// cannot be resolved; once the catalog offers cert-manager, OLM resolves and installs both.
// Second, the bundle's CSV forgot a permission (pods/create): OLM installs it, and the operator
// running with what OLM granted stops at the injection probe, naming what was forbidden.
func TestOLMReportsWhatIsMissing(t *testing.T) {
	t.Parallel() // a cluster of its own: see main_test.go
	bundle := withoutPodsCreate(t, loadBundle(t, bundleDir(filepath.Join(repoRoot, "bundle"))))
	e := startOLM(t, writeCatalog(t, bundle))
	e.subscribe(t, "", "Automatic")
	framework.Eventually(t, olmWaitTimeout, "the Subscription to report cert-manager as unresolvable", func() (bool, error) {
		sub := e.get(t, olmGVK("v1alpha1", "Subscription"), olmInstallNS, "meshwright")
		conds, _, _ := unstructured.NestedSlice(sub.Object, "status", "conditions")
		for _, c := range conds {
			m := c.(map[string]any)
			if m["type"] == "ResolutionFailed" && m["status"] == "True" {
				msg, _ := m["message"].(string)
				if !strings.Contains(msg, "cert-manager") {
					return false, fmt.Errorf("ResolutionFailed does not name cert-manager: %s", msg)
				}
				t.Logf("OLM: %s", msg)
				return true, nil
			}
		}
		return false, nil
	})
	if csv := e.get(t, olmGVK("v1alpha1", "ClusterServiceVersion"), olmInstallNS, bundle.name); csv != nil {
		t.Fatalf("OLM installed %s without its dependency", bundle.name)
	}

	e.serveCatalog(t, writeCatalog(t, certManagerBundle(t), bundle))
	csv := e.waitCSV(t, bundle.name, "Succeeded")
	e.waitCSV(t, certManagerCSV, "Succeeded")
	sa, args := e.checkInstalledAsDeclared(t, csv)
	e.runOperatorFromOLM(t, sa, args)
	framework.MakeNamespace(t, e.c, "payments", map[string]string{"team": "payments"}, map[string]func(*appsv1.Deployment){"web": nil})
	mesh := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1.MeshInstallationSpec{
		Namespaces: []meshv1.NamespaceRule{{Selector: meshv1.NamespaceSelector{MatchLabels: map[string]string{"team": "payments"}}, Level: meshv1.LevelObserve}},
	}}
	if err := e.c.Create(context.Background(), mesh); err != nil {
		t.Fatal(err)
	}
	useLocalIstiod(t, e.cl, e.c, mesh.Name)
	got := framework.WaitCondition(t, e.c, "default", meshv1.ConditionInjectionReady, metav1.ConditionFalse, meshv1.ReasonProbeRejected, 3*time.Minute)
	if msg := meta.FindStatusCondition(got.Status.Conditions, meshv1.ConditionInjectionReady).Message; !strings.Contains(msg, "forbidden") {
		t.Errorf("InjectionReady message = %q, want the API server's forbidden error", msg)
	}
}
