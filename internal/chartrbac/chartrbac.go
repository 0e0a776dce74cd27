// Package chartrbac derives the operator's own permissions from Istio's charts. Kubernetes lets a
// client create or bind a Role or ClusterRole only if it holds every permission that role
// grants, unless it holds `escalate` and `bind`, which make its token as strong as
// cluster-admin's. So the operator holds exactly what the roles it installs grant: the rules of
// every Role and ClusterRole the embedded charts render, under each set of values that grants
// more (Variants), written as RBAC markers (internal/controlplane/zz_generated.chartrbac.go)
// that controller-gen merges into its ClusterRole. A chart bump that grants more changes the
// markers, and `make verify-generated` fails until they are regenerated and reviewed.
package chartrbac

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/component-helpers/auth/rbac/validation"

	"github.com/meshwright/meshwright/internal/render"
)

// Variant is a set of Helm values under which Istio's charts grant more than under their
// defaults, and that a user of the operator may choose (spec.controlPlane.values).
type Variant struct {
	// Name says what the values turn on.
	Name string
	// Values are Helm values for the istiod chart.
	Values map[string]any
	// CNI renders Istio's cni chart too (spec.dataPlane.cni).
	CNI bool
	// Ambient renders the ambient profile: the cni chart in ambient mode and ztunnel's
	// (spec.dataPlane.mode).
	Ambient bool
}

// Variants are the values whose extra grants the operator holds beforehand, so that choosing
// them needs no change to its role. Values whose roles grant more power than the mesh needs are
// left out on purpose: patching every Node (taint.enabled), writing ClusterTrustBundles, which
// workloads may take as trust anchors (env.ENABLE_CLUSTER_TRUST_BUNDLE_API), approving
// certificates for named signers (env.EXTERNAL_CA with global.certSigners), or a group the
// operator cannot know (env.MCS_API_GROUP). With them the ControlPlane stage reports the
// permissions it lacks (MissingPermissions), and a cluster admin who wants the feature grants
// them by binding a role of their own to the operator's ServiceAccount (docs/security.md).
var Variants = []Variant{
	{Name: "the charts' defaults"},
	{Name: "istiod's analysis (global.istiod.enableAnalysis)", Values: map[string]any{"global": map[string]any{"istiod": map[string]any{"enableAnalysis": true}}}},
	{Name: "Istio CNI (spec.dataPlane.cni)", CNI: true},
	{Name: "ambient mode (spec.dataPlane.mode)", CNI: true, Ambient: true},
}

// Granted are the rules of the Roles and ClusterRoles among objs.
func Granted(objs []*unstructured.Unstructured) ([]rbacv1.PolicyRule, error) {
	var out []rbacv1.PolicyRule
	for _, u := range objs {
		if u.GetAPIVersion() != rbacv1.SchemeGroupVersion.String() || (u.GetKind() != "Role" && u.GetKind() != "ClusterRole") {
			continue
		}
		var role rbacv1.ClusterRole // a Role's rules read the same
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &role); err != nil {
			return nil, fmt.Errorf("reading %s %s: %w", u.GetKind(), u.GetName(), err)
		}
		out = append(out, role.Rules...)
	}
	return out, nil
}

// Rules renders the embedded charts of version under every variant and returns what their
// roles grant, merged (see Merge).
func Rules(version string) ([]rbacv1.PolicyRule, error) {
	var all []rbacv1.PolicyRule
	for _, v := range Variants {
		objs, err := render.Render(render.Input{Installation: "default", Version: version, Namespace: "istio-system", Values: v.Values, CNI: v.CNI, Ambient: v.Ambient, ZTunnel: v.Ambient})
		if err != nil {
			return nil, fmt.Errorf("rendering the charts with %s: %w", v.Name, err)
		}
		rules, err := Granted(objs)
		if err != nil {
			return nil, err
		}
		all = append(all, rules...)
	}
	return Merge(all), nil
}

// Missing are the parts of want that held does not cover: what the API server would refuse
// the operator when it writes a role granting want (Kubernetes' own comparison).
func Missing(held, want []rbacv1.PolicyRule) []rbacv1.PolicyRule {
	_, missing := validation.Covers(held, want)
	return Merge(missing)
}

// Merge folds rules into the fewest that grant the same: one per API group, resource names and
// verbs, naming its resources. Non-resource URLs are kept as they are.
func Merge(rules []rbacv1.PolicyRule) []rbacv1.PolicyRule {
	type key struct{ group, names, verbs string }
	verbs := map[[3]string]map[string]bool{} // group, resource, names → verbs
	var urls []rbacv1.PolicyRule
	for _, r := range rules {
		if len(r.NonResourceURLs) > 0 {
			urls = append(urls, r)
			continue
		}
		names := strings.Join(slices.Sorted(slices.Values(r.ResourceNames)), ";")
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				k := [3]string{g, res, names}
				if verbs[k] == nil {
					verbs[k] = map[string]bool{}
				}
				for _, v := range r.Verbs {
					verbs[k][v] = true
				}
			}
		}
	}
	resources := map[key][]string{}
	for k, vs := range verbs {
		kk := key{k[0], k[2], strings.Join(slices.Sorted(maps.Keys(vs)), ";")}
		resources[kk] = append(resources[kk], k[1])
	}
	keys := slices.SortedFunc(maps.Keys(resources), func(a, b key) int {
		return strings.Compare(a.group+"\x00"+a.names+"\x00"+a.verbs, b.group+"\x00"+b.names+"\x00"+b.verbs)
	})
	out := make([]rbacv1.PolicyRule, 0, len(keys)+len(urls))
	for _, k := range keys {
		r := rbacv1.PolicyRule{APIGroups: []string{k.group}, Resources: slices.Sorted(slices.Values(resources[k])), Verbs: strings.Split(k.verbs, ";")}
		if k.names != "" {
			r.ResourceNames = strings.Split(k.names, ";")
		}
		out = append(out, r)
	}
	return append(out, urls...)
}

// Markers writes rules as kubebuilder RBAC markers, one per rule.
func Markers(rules []rbacv1.PolicyRule) []string {
	out := make([]string, 0, len(rules))
	for _, r := range rules {
		groups := strings.Join(r.APIGroups, ";")
		if groups == "" {
			groups = `""`
		}
		m := fmt.Sprintf("// +kubebuilder:rbac:groups=%s,resources=%s,verbs=%s", groups, strings.Join(r.Resources, ";"), strings.Join(r.Verbs, ";"))
		if len(r.ResourceNames) > 0 {
			m += ",resourceNames=" + strings.Join(r.ResourceNames, ";")
		}
		out = append(out, m)
	}
	return out
}

// Describe says what rules grant, one rule per clause, for a condition's message.
func Describe(rules []rbacv1.PolicyRule) string {
	var parts []string
	for _, r := range rules {
		s := fmt.Sprintf("%s on %s", strings.Join(r.Verbs, ","), strings.Join(r.Resources, ","))
		if g := r.APIGroups; len(g) > 0 && g[0] != "" {
			s += "." + strings.Join(g, ",")
		}
		if len(r.ResourceNames) > 0 {
			s += " named " + strings.Join(r.ResourceNames, ",")
		}
		if len(r.NonResourceURLs) > 0 {
			s = fmt.Sprintf("%s on %s", strings.Join(r.Verbs, ","), strings.Join(r.NonResourceURLs, ","))
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// File is the Go source of package controlplane that carries rules as markers: generated, so
// that the role cannot drift from the charts.
func File(version string, rules []rbacv1.PolicyRule) string {
	var b strings.Builder
	fmt.Fprintf(&b, "// Code generated by hack/chartrbac from Istio %s's embedded charts. DO NOT EDIT.\n\n", version)
	b.WriteString("package controlplane\n\n")
	b.WriteString("// What the Roles and ClusterRoles the ControlPlane stage installs grant, under each of\n")
	b.WriteString("// chartrbac.Variants: the operator holds it so that it can create and bind them without\n")
	b.WriteString("// escalate and bind (package chartrbac, docs/security.md).\n//\n")
	for _, m := range Markers(rules) {
		b.WriteString(m + "\n")
	}
	return b.String()
}
