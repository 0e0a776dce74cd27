package policy

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/apply"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/stages"
	"github.com/meshwright/meshwright/internal/testenv"
	"github.com/meshwright/meshwright/internal/writecount"
)

var k8s client.WithWatch

func TestMain(m *testing.M) {
	testenv.Main(m, func(cfg *rest.Config) (err error) {
		if k8s, err = client.NewWithWatch(cfg, client.Options{Scheme: clientgoscheme.Scheme}); err != nil {
			return err
		}
		return testenv.InstallIstioCRDs(context.Background(), k8s)
	})
}

func mesh(name, namespace string) *meshv1.MeshInstallation {
	return &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: meshv1.MeshInstallationSpec{ControlPlane: meshv1.ControlPlaneSpec{Namespace: namespace}}}
}

func TestMeshWidePolicy(t *testing.T) {
	ctx := context.Background()
	tests := map[string]struct {
		// theirs, when set, is a mesh-wide PeerAuthentication someone else made first.
		theirs string
		reason string
		mode   string
	}{
		"created PERMISSIVE":              {reason: meshv1.ReasonMeshPolicyApplied, mode: "PERMISSIVE"},
		"someone else's is left as it is": {theirs: "STRICT", reason: meshv1.ReasonMeshPolicyExists, mode: "STRICT"},
	}
	i := 0
	for name, tc := range tests {
		i++
		t.Run(name, func(t *testing.T) {
			root := fmt.Sprintf("mesh-root-%d", i)
			if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: root}}); err != nil {
				t.Fatal(err)
			}
			if tc.theirs != "" {
				u := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"mtls": map[string]any{"mode": tc.theirs}}}}
				u.SetGroupVersionKind(PeerAuthenticationGVK)
				u.SetNamespace(root)
				u.SetName(MeshWideName)
				if err := k8s.Create(ctx, u); err != nil {
					t.Fatal(err)
				}
			}
			writes := &writecount.Counter{}
			c := writes.Wrap(k8s, interceptor.Funcs{})
			s := &Stage{Client: c, Reader: k8s, Applier: &apply.Applier{Client: c, FieldManager: "meshwright"}}
			m := mesh("policy-"+root, root)
			res, err := s.Reconcile(ctx, m)
			if err != nil {
				t.Fatal(err)
			}
			if res.State != stages.Ready || res.Reason != tc.reason {
				t.Fatalf("result = %+v, want Ready/%s", res, tc.reason)
			}
			got := &unstructured.Unstructured{}
			got.SetGroupVersionKind(PeerAuthenticationGVK)
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: root, Name: MeshWideName}, got); err != nil {
				t.Fatal(err)
			}
			if mode, _, _ := unstructured.NestedString(got.Object, "spec", "mtls", "mode"); mode != tc.mode {
				t.Errorf("mode = %q, want %q", mode, tc.mode)
			}
			writes.Reset()
			if _, err := s.Reconcile(ctx, m); err != nil {
				t.Fatal(err)
			}
			if writes.Total() != 0 {
				t.Errorf("second pass wrote %v", writes.Writes())
			}
			// Clean-up removes the operator's policies, mesh-wide and per namespace, and only those.
			for _, p := range ForNamespace(m.Name, root, nil, nil, ladder.Effects{Strict: true, Authorization: true, DryRun: true}) {
				if _, err := s.Applier.Apply(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			if done, err := s.Cleanup(ctx, m); err != nil || !done {
				t.Fatalf("Cleanup = %v, %v", done, err)
			}
			for _, gvk := range Kinds() {
				list := &unstructured.UnstructuredList{}
				list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
				if err := k8s.List(ctx, list, client.InNamespace(root)); err != nil {
					t.Fatal(err)
				}
				var names []string
				for _, p := range list.Items {
					names = append(names, p.GetName())
				}
				want := ""
				if gvk == PeerAuthenticationGVK && tc.theirs != "" {
					want = MeshWideName
				}
				if strings.Join(names, ",") != want {
					t.Errorf("%s left after clean-up: %v, want %q", gvk.Kind, names, want)
				}
			}
		})
	}
}

// TestForNamespace: the policies of each level, in the order they are applied: enforced, the
// exemption's allow, then the allow policy, then the allow-nothing one; the same in a dry-run
// (test/trafficsim replays every move write by write against Istio's semantics).
func TestForNamespace(t *testing.T) {
	hook := []Exemption{{Service: "hook", Selector: map[string]string{"app": "hook"}, Ports: []int32{8443, 9443}}}
	tests := map[string]struct {
		e          ladder.Effects
		exemptions []Exemption
		names      string
		dry        bool
	}{
		"observe: none":                       {e: ladder.Effects{Inject: true}},
		"observe: no exemption before STRICT": {e: ladder.Effects{Inject: true}, exemptions: hook},
		"mutual TLS: the exemption before STRICT": {e: ladder.Effects{Inject: true, Strict: true}, exemptions: hook,
			names: PlaintextPrefix + "hook," + StrictName},
		"zero trust enforced: the exemption's allow, then the allow policy, then allow-nothing": {e: ladder.Effects{Inject: true, Strict: true, Authorization: true}, exemptions: hook,
			names: PlaintextPrefix + "hook," + StrictName + "," + PlaintextPrefix + "hook," + AllowName + "," + AllowNothingName},
		"zero trust in dry-run: the same order (proxyless gRPC enforces it)": {e: ladder.Effects{Inject: true, Strict: true, Authorization: true, DryRun: true}, exemptions: hook,
			names: PlaintextPrefix + "hook," + StrictName + "," + PlaintextPrefix + "hook," + AllowName + "," + AllowNothingName, dry: true},
		"mutual TLS: STRICT":                                  {e: ladder.Effects{Inject: true, Strict: true}, names: StrictName},
		"zero trust in dry-run":                               {e: ladder.Effects{Inject: true, Strict: true, Authorization: true, DryRun: true}, names: StrictName + "," + AllowName + "," + AllowNothingName, dry: true},
		"zero trust enforced":                                 {e: ladder.Effects{Inject: true, Strict: true, Authorization: true}, names: StrictName + "," + AllowName + "," + AllowNothingName},
		"mutual TLS with a waypoint: nothing at the waypoint": {e: ladder.Effects{Inject: true, Ambient: true, Strict: true, Waypoint: true, UseWaypoint: true}, names: StrictName},
		"zero trust with a waypoint: the same at the waypoint, allow first": {e: ladder.Effects{Inject: true, Ambient: true, Strict: true, Authorization: true, Waypoint: true, UseWaypoint: true},
			names: StrictName + "," + AllowName + "," + AllowNothingName + "," + WaypointAllowName + "," + WaypointAllowNothingName},
		"zero trust, someone else's waypoint in use: nothing attached to it": {e: ladder.Effects{Inject: true, Ambient: true, Strict: true, Authorization: true, UseWaypoint: true},
			names: StrictName + "," + AllowName + "," + AllowNothingName},
		"zero trust, the waypoint made but not used yet: its policies before its label": {e: ladder.Effects{Inject: true, Ambient: true, Strict: true, Authorization: true, DryRun: true, Waypoint: true},
			names: StrictName + "," + AllowName + "," + AllowNothingName + "," + WaypointAllowName + "," + WaypointAllowNothingName, dry: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var names []string
			for _, p := range ForNamespace("m", "shop", []string{"gw", "shop", "gw"}, tc.exemptions, tc.e) {
				names = append(names, p.GetName())
				if p.GetKind() == AuthorizationPolicyGVK.Kind && (p.GetAnnotations()[DryRunAnnotation] == "true") != tc.dry {
					t.Errorf("%s dry-run annotation = %v, want %v", p.GetName(), p.GetAnnotations(), tc.dry)
				}
				if p.GetName() == PlaintextPrefix+"hook" {
					checkExemption(t, p)
				}
				if n := p.GetName(); n == WaypointAllowName || n == WaypointAllowNothingName {
					refs, _, _ := unstructured.NestedSlice(p.Object, "spec", "targetRefs")
					if got := fmt.Sprint(refs); got != "[map[group:gateway.networking.k8s.io kind:Gateway name:waypoint]]" {
						t.Errorf("%s targetRefs = %s, want the waypoint's Gateway", n, got)
					}
					if _, sel := p.Object["spec"].(map[string]any)["selector"]; sel {
						t.Errorf("%s has a selector: Istio ignores targetRefs beside one", n)
					}
				}
				if p.GetName() == AllowName || p.GetName() == WaypointAllowName {
					rules, _, _ := unstructured.NestedSlice(p.Object, "spec", "rules")
					if got := fmt.Sprint(rules); got != "[map[from:[map[source:map[namespaces:[shop gw]]]]]]" {
						t.Errorf("allow rules = %s, want the namespace itself and gw, once each", got)
					}
				}
			}
			if strings.Join(names, ",") != tc.names {
				t.Errorf("policies = %v, want %q", names, tc.names)
			}
		})
	}
	if RemovalOrder(WaypointAllowNothingName) >= RemovalOrder(WaypointAllowName) {
		t.Error("the waypoint's allow policy would be removed before its allow-nothing policy: a moment of deny-all at the waypoint")
	}
	if RemovalOrder(AllowNothingName) >= RemovalOrder(AllowName) || RemovalOrder(AllowNothingName) >= RemovalOrder(PlaintextPrefix+"hook") {
		t.Error("an allow policy would be removed before the allow-nothing policy: a moment of deny-all")
	}
	if RemovalOrder(AllowName) >= RemovalOrder(PlaintextPrefix+"hook") {
		t.Error("an exemption's allow would be removed before the namespace's: a moment with its pods under the allow policy alone")
	}
	if RemovalOrder(StrictName) >= RemovalOrder(PlaintextPrefix+"hook") {
		t.Error("an exemption would be removed before the STRICT policy: a moment of STRICT on an exempted port")
	}
	if !PerNamespace(PlaintextPrefix+"hook") || PerNamespace(MeshWideName) {
		t.Error("PerNamespace must cover the exemptions (so they are pruned) and never the mesh-wide policy")
	}
}

// checkExemption pins an exemption's policies to Istio's documented shape: port-level mTLS only
// with a workload selector, keyed by the pods' port; the ALLOW rule on those ports, any source,
// beside the namespace's allow rule.
func checkExemption(t *testing.T, p *unstructured.Unstructured) {
	t.Helper()
	sel, _, _ := unstructured.NestedStringMap(p.Object, "spec", "selector", "matchLabels")
	if sel["app"] != "hook" || len(sel) != 1 {
		t.Errorf("%s %s selector = %v, want the Service's selector", p.GetKind(), p.GetName(), sel)
	}
	switch p.GetKind() {
	case PeerAuthenticationGVK.Kind:
		mode, _, _ := unstructured.NestedString(p.Object, "spec", "mtls", "mode")
		ports, _, _ := unstructured.NestedMap(p.Object, "spec", "portLevelMtls")
		if mode != "STRICT" || fmt.Sprint(ports) != "map[8443:map[mode:PERMISSIVE] 9443:map[mode:PERMISSIVE]]" {
			t.Errorf("exemption PeerAuthentication = %v, want STRICT with 8443 and 9443 PERMISSIVE", p.Object["spec"])
		}
	case AuthorizationPolicyGVK.Kind:
		rules, _, _ := unstructured.NestedSlice(p.Object, "spec", "rules")
		if action, _, _ := unstructured.NestedString(p.Object, "spec", "action"); action != "ALLOW" || fmt.Sprint(rules) != "[map[to:[map[operation:map[ports:[8443 9443]]]]] map[from:[map[source:map[namespaces:[shop gw]]]]]]" {
			t.Errorf("exemption AuthorizationPolicy = %v, want ALLOW to ports 8443 and 9443 from anyone, and the allow policy's rule", p.Object["spec"])
		}
	}
}

// TestKeptExemptions: while some plaintextPorts cannot be resolved, the exemptions a namespace
// carries are kept, their PeerAuthentication as it is and their AuthorizationPolicy with its
// selector and ports but today's allow rule and dry-run: a kept one must not keep admitting a
// namespace taken out of allowFrom, nor stay in a dry-run once enforced; without authorization
// it goes, and one desired anyway is not doubled.
func TestKeptExemptions(t *testing.T) {
	hook := Exemption{Service: "hook", Selector: map[string]string{"app": "hook"}, Ports: []int32{8443}}
	zt := ladder.Effects{Inject: true, Strict: true, Authorization: true}
	dry := zt
	dry.DryRun = true
	// What the namespace carries: hook's exemption written in a dry-run with legacy allowed.
	current := ForNamespace("m", "shop", []string{"legacy"}, []Exemption{hook}, dry)
	tests := map[string]struct {
		e          ladder.Effects
		exemptions []Exemption
		want       []string
	}{
		"enforced, legacy gone from allowFrom": {e: zt, want: []string{
			"PeerAuthentication/meshwright-plaintext-hook",
			"AuthorizationPolicy/meshwright-plaintext-hook [map[to:[map[operation:map[ports:[8443]]]]] map[from:[map[source:map[namespaces:[shop]]]]]] dry-run=false"}},
		"still in its dry-run": {e: dry, want: []string{
			"PeerAuthentication/meshwright-plaintext-hook",
			"AuthorizationPolicy/meshwright-plaintext-hook [map[to:[map[operation:map[ports:[8443]]]]] map[from:[map[source:map[namespaces:[shop]]]]]] dry-run=true"}},
		"back at MutualTLS: the AuthorizationPolicy goes": {e: ladder.Effects{Inject: true, Strict: true}, want: []string{"PeerAuthentication/meshwright-plaintext-hook"}},
		"resolved again: nothing to keep":                 {e: zt, exemptions: []Exemption{hook}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			desired := ForNamespace("m", "shop", nil, tc.exemptions, tc.e)
			var got []string
			for _, u := range KeptExemptions("m", "shop", nil, desired, current, tc.e) {
				line := u.GetKind() + "/" + u.GetName()
				if u.GetKind() == AuthorizationPolicyGVK.Kind {
					rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
					line += fmt.Sprintf(" %v dry-run=%v", rules, u.GetAnnotations()[DryRunAnnotation] == "true")
				}
				got = append(got, line)
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("kept:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestKeptExemptionsKeepUnresolvedPorts: a Service with one plaintext port resolved and one not
// (a named target port during a restart) keeps both exempted: the desired exemption, built from
// the resolved port only, takes the other from the one it replaces.
func TestKeptExemptionsKeepUnresolvedPorts(t *testing.T) {
	zt := ladder.Effects{Inject: true, Strict: true, Authorization: true}
	both := Exemption{Service: "hook", Selector: map[string]string{"app": "hook"}, Ports: []int32{8443, 9443}}
	current := ForNamespace("m", "shop", []string{"gw"}, []Exemption{both}, zt)
	resolved := Exemption{Service: "hook", Selector: map[string]string{"app": "hook"}, Ports: []int32{9443}}
	desired := ForNamespace("m", "shop", []string{"gw"}, []Exemption{resolved}, zt)
	if kept := KeptExemptions("m", "shop", []string{"gw"}, desired, current, zt); len(kept) != 0 {
		t.Errorf("kept %d policies, want none: both are desired", len(kept))
	}
	for _, u := range desired {
		if u.GetName() != PlaintextPrefix+"hook" {
			continue
		}
		checkExemption(t, u) // 8443 and 9443, in order
	}
}
