package chartrbac

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/meshwright/meshwright/internal/release"
	"github.com/meshwright/meshwright/internal/render"
)

// rulesWith are the rules the embedded charts' roles grant under values alone.
func rulesWith(t *testing.T, values map[string]any) []rbacv1.PolicyRule {
	t.Helper()
	return rulesOf(t, Variant{Values: values})
}

// rulesOf is what the charts' roles grant under a variant.
func rulesOf(t *testing.T, v Variant) []rbacv1.PolicyRule {
	t.Helper()
	objs, err := render.Render(render.Input{Installation: "default", Version: release.DefaultIstioVersion, Namespace: "istio-system", Values: v.Values, CNI: v.CNI, Ambient: v.Ambient, ZTunnel: v.Ambient})
	if err != nil {
		t.Fatal(err)
	}
	rules, err := Granted(objs)
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) == 0 {
		t.Fatal("the charts rendered no role")
	}
	return rules
}

// TestGeneratedMarkersAreCurrent: the markers the operator's ClusterRole is generated from are
// what the embedded charts grant today; a chart bump that grants more fails here until
// `make manifests` regenerates them.
func TestGeneratedMarkersAreCurrent(t *testing.T) {
	rules, err := Rules(release.DefaultIstioVersion)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join("..", "controlplane", "zz_generated.chartrbac.go"))
	if err != nil {
		t.Fatal(err)
	}
	if want := File(release.DefaultIstioVersion, rules); string(got) != want {
		t.Fatalf("internal/controlplane/zz_generated.chartrbac.go is not what the charts grant: run `make manifests` and review the role's change")
	}
}

// TestVariants: each variant grants something the defaults do not (its values reach the
// charts), everything is covered by Rules, and the values left out on purpose are not.
func TestVariants(t *testing.T) {
	all, err := Rules(release.DefaultIstioVersion)
	if err != nil {
		t.Fatal(err)
	}
	defaults := rulesWith(t, nil)
	for _, v := range Variants {
		rules := rulesOf(t, v)
		if missing := Missing(all, rules); len(missing) > 0 {
			t.Errorf("%s: Rules does not cover %s", v.Name, Describe(missing))
		}
		if (v.Values != nil || v.CNI) && len(Missing(defaults, rules)) == 0 {
			t.Errorf("%s grants nothing the defaults do not: its values do not reach the charts", v.Name)
		}
	}
	leftOut := map[string]struct {
		values map[string]any
		want   string
	}{
		"node taint controller": {values: map[string]any{"taint": map[string]any{"enabled": true}}, want: "patch on nodes"},
		"ClusterTrustBundles":   {values: map[string]any{"env": map[string]any{"ENABLE_CLUSTER_TRUST_BUNDLE_API": true}}, want: "clustertrustbundles.certificates.k8s.io"},
		"Kubernetes-signed certificates": {values: map[string]any{"env": map[string]any{"EXTERNAL_CA": "ISTIOD_RA_KUBERNETES_API"}, "global": map[string]any{"certSigners": []any{"example.com/signer"}}},
			want: "approve on signers.certificates.k8s.io named example.com/signer"},
	}
	for name, tc := range leftOut {
		if got := Describe(Missing(all, rulesWith(t, tc.values))); !strings.Contains(got, tc.want) {
			t.Errorf("%s: missing %q, want it to include %q (left out of Variants on purpose)", name, got, tc.want)
		}
	}
}

func TestMergeAndMarkers(t *testing.T) {
	tests := map[string]struct {
		rules []rbacv1.PolicyRule
		want  []string
	}{
		"verbs of one resource from two roles": {
			rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list"}},
				{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"watch", "get"}},
			},
			want: []string{`// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch`},
		},
		"resources with the same verbs share a marker, split by group": {
			rules: []rbacv1.PolicyRule{{APIGroups: []string{"apps", "policy"}, Resources: []string{"deployments", "poddisruptionbudgets"}, Verbs: []string{"get"}}},
			want: []string{
				"// +kubebuilder:rbac:groups=apps,resources=deployments;poddisruptionbudgets,verbs=get",
				"// +kubebuilder:rbac:groups=policy,resources=deployments;poddisruptionbudgets,verbs=get",
			},
		},
		"resource names kept apart": {
			rules: []rbacv1.PolicyRule{
				{APIGroups: []string{"certificates.k8s.io"}, Resources: []string{"signers"}, ResourceNames: []string{"istio.io/istiod-ca"}, Verbs: []string{"attest"}},
				{APIGroups: []string{"certificates.k8s.io"}, Resources: []string{"signers"}, Verbs: []string{"attest"}},
			},
			want: []string{
				"// +kubebuilder:rbac:groups=certificates.k8s.io,resources=signers,verbs=attest",
				"// +kubebuilder:rbac:groups=certificates.k8s.io,resources=signers,verbs=attest,resourceNames=istio.io/istiod-ca",
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Markers(Merge(tc.rules)); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}
