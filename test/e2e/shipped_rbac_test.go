package e2e

import (
	"context"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
	"github.com/meshwright/meshwright/test/framework/manifest"
)

// shippedAccount is the ServiceAccount the e2e tests run the operator as.
const shippedAccount = "meshwright-e2e"

// asShippedRBAC returns a kubeconfig that acts as a ServiceAccount of namespace holding exactly
// the RBAC the operator ships (config/rbac: the manager ClusterRole, generated from the markers
// and the charts' roles, and the leader-election Role), which it installs into the cluster
// kubeconfig reaches. So every e2e test runs the operator with a real install's permissions (no
// escalate, no bind), not an admin's. A kubeconfig that already acts as someone (a test's own
// identity) is returned as it is.
func asShippedRBAC(t *testing.T, kubeconfig, namespace string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	current := cfg.Contexts[cfg.CurrentContext]
	if current == nil || cfg.AuthInfos[current.AuthInfo] == nil {
		t.Fatalf("%s has no current context", kubeconfig)
	}
	admin := cfg.AuthInfos[current.AuthInfo]
	if admin.Impersonate != "" {
		return kubeconfig
	}
	restCfg, err := clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	role := manifest.MustDecodeAll(t, framework.MustRead(t, filepath.Join(repoRoot, "config", "rbac", "role.yaml")))[0]
	role.SetName(shippedAccount + "-manager")
	election := manifest.MustDecodeAll(t, framework.MustRead(t, filepath.Join(repoRoot, "config", "rbac", "leader_election_role.yaml")))[0]
	election.SetName(shippedAccount + "-leader-election")
	election.SetNamespace(namespace)
	subject := []any{map[string]any{"kind": "ServiceAccount", "name": shippedAccount, "namespace": namespace}}
	binding := func(kind, name, ns string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind + "Binding",
			"metadata": map[string]any{"name": name},
			"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}, "subjects": subject}}
		if ns != "" {
			u.SetNamespace(ns)
		}
		return u
	}
	objs := []*unstructured.Unstructured{
		{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": namespace}}},
		{Object: map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": shippedAccount, "namespace": namespace}}},
		role, binding("ClusterRole", role.GetName(), ""), election, binding("Role", election.GetName(), namespace),
	}
	if err := cluster.Apply(context.Background(), restCfg, objs...); err != nil {
		t.Fatalf("installing the operator's shipped RBAC: %v", err)
	}
	as := *admin
	as.Impersonate = "system:serviceaccount:" + namespace + ":" + shippedAccount
	as.ImpersonateGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}
	cfg.AuthInfos["shipped"] = &as
	cfg.Contexts["shipped"] = &clientcmdapi.Context{Cluster: current.Cluster, AuthInfo: "shipped"}
	cfg.CurrentContext = "shipped"
	path := filepath.Join(t.TempDir(), "kubeconfig-shipped")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}
