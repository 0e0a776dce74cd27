// Package policy builds the Istio security policies the operator owns: the mesh-wide PERMISSIVE
// PeerAuthentication, and per namespace the STRICT PeerAuthentication of MutualTLS and the
// AuthorizationPolicies of ZeroTrust. Desired state only: pure functions of the spec and the
// namespace's position on the ladder.
package policy

import (
	"slices"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/ladder"
)

// Kinds of Istio's security API the operator writes.
var (
	PeerAuthenticationGVK  = schema.GroupVersionKind{Group: "security.istio.io", Version: "v1", Kind: "PeerAuthentication"}
	AuthorizationPolicyGVK = schema.GroupVersionKind{Group: "security.istio.io", Version: "v1", Kind: "AuthorizationPolicy"}
)

// Names of the policies, fixed so users can find them and the operator can prune them.
const (
	// MeshWideName is Istio's convention: a PeerAuthentication named default in the root
	// namespace applies to the whole mesh.
	MeshWideName = "default"
	// StrictName is the namespace's STRICT PeerAuthentication.
	StrictName = "meshwright-strict"
	// AllowNothingName is the namespace's allow-nothing AuthorizationPolicy: with it, only
	// what an ALLOW policy permits gets through.
	AllowNothingName = "meshwright-allow-nothing"
	// AllowName permits calls from the namespace itself and from spec allowFrom.
	AllowName = "meshwright-allow"
	// DryRunAnnotation is Istio's switch that makes an AuthorizationPolicy log instead of deny.
	DryRunAnnotation = "istio.io/dry-run"
)

// PerNamespace tells the ladder's per-namespace policies from the mesh-wide one, which the
// ladder must never remove.
func PerNamespace(name string) bool {
	return name == StrictName || name == AllowNothingName || name == AllowName
}

// RemovalOrder ranks a per-namespace policy for removal, lowest first: the allow-nothing policy
// goes before the allow policy, so no moment has it without the allow policy beside it.
func RemovalOrder(name string) int {
	if name == AllowNothingName {
		return 0
	}
	return 1
}

// Kinds lists the policy kinds, for watches, pruning and clean-up.
func Kinds() []schema.GroupVersionKind {
	return []schema.GroupVersionKind{PeerAuthenticationGVK, AuthorizationPolicyGVK}
}

// MeshWide is the mesh-wide PeerAuthentication: PERMISSIVE, so that injected and uninjected
// workloads keep talking while namespaces climb the ladder.
func MeshWide(installation, rootNamespace string) *unstructured.Unstructured {
	u := object(PeerAuthenticationGVK, installation, rootNamespace, MeshWideName)
	u.Object["spec"] = map[string]any{"mtls": map[string]any{"mode": "PERMISSIVE"}}
	return u
}

// ForNamespace is the set of policies a namespace carries for its effects, in the order they
// must be applied; a policy not in the set is removed (in RemovalOrder).
func ForNamespace(installation, namespace string, allowFrom []string, e ladder.Effects) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	if e.Strict {
		u := object(PeerAuthenticationGVK, installation, namespace, StrictName)
		u.Object["spec"] = map[string]any{"mtls": map[string]any{"mode": "STRICT"}}
		out = append(out, u)
	}
	if e.Authorization {
		nothing := object(AuthorizationPolicyGVK, installation, namespace, AllowNothingName)
		nothing.Object["spec"] = map[string]any{}
		sources := []any{namespace}
		for _, ns := range allowFrom {
			if ns != namespace && !slices.Contains(sources, any(ns)) {
				sources = append(sources, ns)
			}
		}
		allow := object(AuthorizationPolicyGVK, installation, namespace, AllowName)
		allow.Object["spec"] = map[string]any{
			"action": "ALLOW",
			"rules":  []any{map[string]any{"from": []any{map[string]any{"source": map[string]any{"namespaces": sources}}}}},
		}
		// The allow policy first: applied in this order, no moment has the allow-nothing
		// policy enforced while the allow policy is not (which would deny every call). See
		// RemovalOrder for the way down.
		for _, u := range []*unstructured.Unstructured{allow, nothing} {
			if e.DryRun {
				u.SetAnnotations(map[string]string{DryRunAnnotation: "true"})
			}
			out = append(out, u)
		}
	}
	return out
}

func object(gvk schema.GroupVersionKind, installation, namespace, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetGroupVersionKind(gvk)
	u.SetNamespace(namespace)
	u.SetName(name)
	u.SetLabels(map[string]string{meshv1.LabelManagedBy: meshv1.ManagedByValue, meshv1.LabelInstallation: installation})
	return u
}
