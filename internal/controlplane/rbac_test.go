package controlplane

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/apply"
	"github.com/meshwright/meshwright/internal/chartrbac"
)

// operatorAccount is the ServiceAccount the tests below run the stage as.
const operatorAccount = "system:serviceaccount:meshwright-system:meshwright"

// asShippedOperator returns a client that acts as a ServiceAccount bound to the ClusterRole the
// operator ships (config/rbac/role.yaml, generated from the markers), and that role.
func asShippedOperator(t *testing.T) (client.Client, *rbacv1.ClusterRole) {
	t.Helper()
	role := &rbacv1.ClusterRole{}
	b, err := readRepoFile("config", "rbac", "role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, role); err != nil {
		t.Fatal(err)
	}
	role.Name = "meshwright-manager-as-shipped"
	bindToOperator(t, role.DeepCopy())
	as := rest.CopyConfig(adminConfig)
	as.Impersonate = rest.ImpersonationConfig{UserName: operatorAccount, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:meshwright-system", "system:authenticated"}}
	c, err := client.New(as, client.Options{Scheme: k8s.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c, role
}

// bindToOperator creates role and binds it to the operator's ServiceAccount, as a cluster admin.
func bindToOperator(t *testing.T, role *rbacv1.ClusterRole) {
	t.Helper()
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "meshwright-system", Name: "meshwright"}}}
	for _, o := range []client.Object{role, binding} {
		if err := k8s.Create(context.Background(), o); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
}

// withValues sets spec.controlPlane.values.
func withValues(t *testing.T, mesh *meshv1.MeshInstallation, values map[string]any) {
	t.Helper()
	raw, err := json.Marshal(values)
	if err != nil {
		t.Fatal(err)
	}
	mesh.Spec.ControlPlane.Values = &apiextensionsv1.JSON{Raw: raw}
}

// untilIstiod runs the stage until it waits for istiod (envtest runs no Deployment controller),
// through the passes that wait for Istio's CRDs to be Established.
func untilIstiod(t *testing.T, stage *Stage, mesh *meshv1.MeshInstallation) error {
	t.Helper()
	for range 50 {
		res, err := stage.Reconcile(context.Background(), mesh)
		if err != nil {
			return err
		}
		switch res.Reason {
		case meshv1.ReasonWaitingForIstiod:
			return nil
		case meshv1.ReasonWaitingForCRDs:
			continue
		}
		t.Fatalf("the stage reported %v %s %q, want %s", res.State, res.Reason, res.Message, meshv1.ReasonWaitingForIstiod)
	}
	t.Fatal("the stage kept waiting for CRDs")
	return nil
}

// TestChartRolesWithoutEscalate: the operator, as the ClusterRole it ships lets it (no escalate,
// no bind), creates and binds every Role and ClusterRole of Istio's charts under each of
// chartrbac.Variants. Values whose roles grant more (istiod's node taint controller patches
// every Node) are refused by the API server as an escalation, and the stage goes on once a
// cluster admin binds a role with that permission to the operator's ServiceAccount.
func TestChartRolesWithoutEscalate(t *testing.T) {
	ctx := context.Background()
	c, role := asShippedOperator(t)
	for _, r := range role.Rules {
		if slices.Contains(r.Verbs, "escalate") || slices.Contains(r.Verbs, "bind") || slices.Contains(r.Verbs, "*") && slices.Contains(r.APIGroups, rbacv1.GroupName) {
			t.Fatalf("the shipped ClusterRole grants %v on %v: whoever holds its token may grant themselves anything", r.Verbs, r.Resources)
		}
	}
	stage := &Stage{Client: c, Applier: &apply.Applier{Client: c, FieldManager: "meshwright"}}
	mesh := meshIn(t, "least-privilege", "istio-lp")
	for _, v := range chartrbac.Variants {
		t.Run(v.Name, func(t *testing.T) {
			withValues(t, mesh, v.Values)
			mesh.Spec.DataPlane.CNI = meshv1.ModeDisabled
			if v.CNI {
				mesh.Spec.DataPlane.CNI = meshv1.ModeEnabled
			}
			if err := untilIstiod(t, stage, mesh); err != nil {
				t.Fatalf("with %s: %v", v.Name, err)
			}
		})
	}
	for _, name := range []string{"istiod-clusterrole-istio-lp", "istio-reader-clusterrole-istio-lp", "istiod-gateway-controller-istio-lp"} {
		if err := k8s.Get(ctx, client.ObjectKey{Name: name}, &rbacv1.ClusterRole{}); err != nil {
			t.Errorf("ClusterRole %s: %v", name, err)
		}
	}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "istio-lp", Name: "istiod"}, &rbacv1.Role{}); err != nil {
		t.Errorf("Role istio-lp/istiod: %v", err)
	}

	if err := k8s.Get(ctx, client.ObjectKey{Name: "istio-cni-repair-role"}, &rbacv1.ClusterRole{}); err != nil {
		t.Errorf("Istio CNI's ClusterRole: %v", err)
	}

	// More than the operator holds: refused as an escalation, naming what is missing.
	mesh.Spec.DataPlane.CNI = meshv1.ModeDisabled
	withValues(t, mesh, map[string]any{"taint": map[string]any{"enabled": true}})
	_, err := stage.Reconcile(ctx, mesh)
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "not currently held") || !strings.Contains(err.Error(), `"nodes"`) {
		t.Fatalf("with taint.enabled: %v, want the API server to refuse the role that patches nodes as an escalation", err)
	}
	// A cluster admin grants it; the stage goes on.
	bindToOperator(t, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "meshwright-taint-controller"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"patch"}}}})
	if err := untilIstiod(t, stage, mesh); err != nil {
		t.Fatalf("with the permission granted: %v", err)
	}
	if _, err := stage.Cleanup(ctx, mesh); err != nil {
		t.Fatalf("clean-up as the shipped role: %v", err)
	}
}

// readRepoFile reads a file of the repository, by its path from the root.
func readRepoFile(elem ...string) ([]byte, error) {
	_, file, _, _ := runtime.Caller(0)
	return os.ReadFile(filepath.Join(append([]string{filepath.Dir(file), "..", ".."}, elem...)...))
}
