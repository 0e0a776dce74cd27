package adoption

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/ambient"
	"github.com/meshwright/meshwright/internal/gatewayapi"
	"github.com/meshwright/meshwright/internal/installed"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/policy"
	"github.com/meshwright/meshwright/internal/render"
	"github.com/meshwright/meshwright/internal/stages"
	"github.com/meshwright/meshwright/internal/waypoint"
)

// installGatewayCRD installs the Gateway API's Gateway CRD, as ambient mode's control plane
// does, and waits for it to be Established.
func installGatewayCRD(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	crds, err := render.Decode(gatewayapi.StandardCRDs)
	if err != nil {
		t.Fatal(err)
	}
	for _, crd := range crds {
		if crd.GetName() == gatewayCRD {
			if err := k8s.Create(ctx, crd); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
		}
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		crd := &unstructured.Unstructured{}
		crd.SetAPIVersion("apiextensions.k8s.io/v1")
		crd.SetKind("CustomResourceDefinition")
		err := k8s.Get(ctx, client.ObjectKey{Name: gatewayCRD}, crd)
		return err == nil && installed.ConditionTrue(crd, "Established"), nil
	}); err != nil {
		t.Fatalf("the Gateway CRD was not Established: %v", err)
	}
}

// gatewayIn reads the operator's waypoint in a namespace; nil when there is none.
func gatewayIn(t *testing.T, namespace string) *unstructured.Unstructured {
	t.Helper()
	gw := &unstructured.Unstructured{}
	gw.SetGroupVersionKind(waypoint.GVK)
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: waypoint.Name}, gw); err != nil {
		if client.IgnoreNotFound(err) != nil {
			t.Fatal(err)
		}
		return nil
	}
	return gw
}

// programWaypoint plays istiod: the Gateway is Programmed for its generation.
func programWaypoint(t *testing.T, namespace string) {
	t.Helper()
	gw := gatewayIn(t, namespace)
	gw.Object["status"] = map[string]any{"conditions": []any{map[string]any{"type": "Programmed", "status": "True", "reason": "Programmed",
		"message": "deployed", "observedGeneration": gw.GetGeneration(), "lastTransitionTime": "2026-12-07T10:00:00Z"}}}
	if err := k8s.Status().Update(context.Background(), gw); err != nil {
		t.Fatal(err)
	}
}

// setBundleVersion sets the release the Gateway CRD says it is of.
func setBundleVersion(t *testing.T, release string) {
	t.Helper()
	crd := &unstructured.Unstructured{}
	crd.SetAPIVersion("apiextensions.k8s.io/v1")
	crd.SetKind("CustomResourceDefinition")
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: gatewayCRD}, crd); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(crd.DeepCopy())
	a := crd.GetAnnotations()
	a[gatewayapi.BundleVersionAnnotation] = release
	crd.SetAnnotations(a)
	if err := k8s.Patch(context.Background(), crd, patch); err != nil {
		t.Fatal(err)
	}
}

// waitGone waits until the namespace's Gateway named waypoint is gone.
func waitGone(t *testing.T, namespace string) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return gatewayIn(t, namespace) == nil, nil
	}); err != nil {
		t.Fatalf("the Gateway in %s was not deleted: %v", namespace, err)
	}
}

// TestWaypointAgainstTheAPIServer: a namespace whose rule asks for a waypoint, in ambient mode,
// gets the Gateway first and steps into ambient mode only once it is Programmed, with
// istio.io/use-waypoint; held with WaitingForWaypoint meanwhile, and while the Gateway API is not
// installed. Asked no longer, the label goes first and the Gateway a pass later; the
// installation's removal deletes the Gateway.
func TestWaypointAgainstTheAPIServer(t *testing.T) {
	ctx := context.Background()
	const name = "team-waypoint"
	teamNamespace(t, name)
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), getNS(t, name)) })
	// A label of its own: the other tests' namespaces stay (Terminating) with theirs.
	ns := getNS(t, name)
	ns.Labels["waypoint-test"] = "on"
	if err := k8s.Update(ctx, ns); err != nil {
		t.Fatal(err)
	}
	mesh := meshFor("ladder-waypoint")
	mesh.Spec.DataPlane.Mode = meshv1.DataPlaneAmbient
	mesh.Spec.Namespaces[0].Selector.MatchLabels = map[string]string{"waypoint-test": "on"}
	mesh.Spec.Rollout.MaxNamespacesInProgress = 100 // the other tests' namespaces may hold steps
	mesh.Spec.Namespaces[0].Waypoint = true
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	// As the operator's cache, which holds only the operator's own Gateways.
	cached := interceptor.NewClient(k8s, interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
		if err := c.List(ctx, list, opts...); err != nil {
			return err
		}
		if u, ok := list.(*unstructured.UnstructuredList); ok && u.GetKind() == waypoint.GVK.Kind+"List" {
			u.Items = slices.DeleteFunc(u.Items, func(gw unstructured.Unstructured) bool {
				return gw.GetLabels()[meshv1.LabelManagedBy] != meshv1.ManagedByValue
			})
		}
		return nil
	}})
	pass := func(at time.Time) stages.Result {
		t.Helper()
		res, err := newStage(cached, at).Reconcile(ctx, mesh)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	decision := func() ladder.Decision {
		t.Helper()
		// The namespace's own decision, as the pass after this one sees it (the status's
		// message names only a few namespaces; other tests' may be enrolled too).
		plans, _, err := newStage(cached, now).planner().Plan(ctx, mesh, now)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(plans, func(c NamespacePlan) bool { return c.Namespace.Name == name })
		if i < 0 {
			t.Fatalf("%s is not planned", name)
		}
		return plans[i].Decision
	}
	held := func(_ stages.Result, reason, want string) {
		t.Helper()
		d := decision()
		if got := d.Blocked.Message + d.Waiting; d.Blocked.Reason != reason || !strings.Contains(got, want) {
			t.Fatalf("blocked %+v, waiting %q: want held (%q), saying %q", d.Blocked, d.Waiting, reason, want)
		}
		if ns := getNS(t, name); ns.Labels[ambient.Label] != "" || ns.Labels[waypoint.UseLabel] != "" {
			t.Fatalf("labels %v while the waypoint does not serve: want neither the ambient label nor %s", ns.Labels, waypoint.UseLabel)
		}
	}
	labels := func() map[string]string { t.Helper(); return getNS(t, name).Labels }

	held(pass(now), meshv1.ReasonWaitingForWaypoint, "the Gateway API's CRDs are not installed")
	installGatewayCRD(t)
	// A release too old to keep spec.infrastructure: no Gateway is written.
	setBundleVersion(t, "v1.1.0")
	held(pass(now), meshv1.ReasonWaitingForWaypoint, `is of release "v1.1.0"`)
	if gatewayIn(t, name) != nil {
		t.Fatal("a waypoint written through a Gateway API older than v1.2")
	}
	setBundleVersion(t, gatewayapi.Release)

	// Someone else's Gateway by the waypoint's name: held, neither written nor deleted.
	theirs := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"gatewayClassName": waypoint.ClassName,
		"listeners": []any{map[string]any{"name": "mesh", "port": int64(waypoint.Port), "protocol": "HBONE"}}}}}
	theirs.SetGroupVersionKind(waypoint.GVK)
	theirs.SetNamespace(name)
	theirs.SetName(waypoint.Name)
	if err := k8s.Create(ctx, theirs); err != nil {
		t.Fatal(err)
	}
	held(pass(now), meshv1.ReasonWaypointConflict, "is not the operator's")
	if gw := gatewayIn(t, name); gw == nil || gw.GetResourceVersion() != theirs.GetResourceVersion() {
		t.Fatal("someone else's waypoint Gateway was written or deleted")
	}
	if err := k8s.Delete(ctx, theirs); err != nil {
		t.Fatal(err)
	}
	waitGone(t, name)

	// A label sending the namespace's traffic to another waypoint (a shared one): held too,
	// the label left as it is.
	ns = getNS(t, name)
	ns.Labels[waypoint.UseLabel], ns.Labels[waypoint.NamespaceLabel] = "shared", "gateways"
	if err := k8s.Update(ctx, ns, client.FieldOwner("istioctl")); err != nil {
		t.Fatal(err)
	}
	pass(now)
	if d := decision(); d.Blocked.Reason != meshv1.ReasonWaypointConflict || !strings.Contains(d.Blocked.Message, "another waypoint") ||
		labels()[waypoint.UseLabel] != "shared" || labels()[ambient.Label] != "" {
		t.Fatalf("a label naming another waypoint: blocked %+v, labels %v; want WaypointConflict, the label kept, no step", d.Blocked, labels())
	}
	ns = getNS(t, name)
	delete(ns.Labels, waypoint.UseLabel)
	delete(ns.Labels, waypoint.NamespaceLabel)
	if err := k8s.Update(ctx, ns, client.FieldOwner("istioctl")); err != nil {
		t.Fatal(err)
	}

	held(pass(now), "", "to be Programmed")
	if gw := gatewayIn(t, name); gw == nil || gw.GetLabels()[meshv1.LabelInstallation] != mesh.Name {
		t.Fatalf("the waypoint Gateway: %v; want it created, the installation's", gw)
	}
	created := gatewayIn(t, name).GetResourceVersion()
	pass(now)
	if rv := gatewayIn(t, name).GetResourceVersion(); rv != created {
		t.Fatalf("the waypoint was written again by a pass with nothing to change (resourceVersion %s → %s)", created, rv)
	}

	programWaypoint(t, name)
	pass(now)
	if l := labels(); l[ambient.Label] != ambient.Enabled || l[waypoint.UseLabel] != waypoint.Name {
		t.Fatalf("labels %v once the waypoint serves: want the ambient label and %s=%s", l, waypoint.UseLabel, waypoint.Name)
	}

	// No longer asked for: the label goes first, the Gateway in the next pass.
	mesh.Spec.Namespaces[0].Waypoint = false
	pass(now.Add(time.Minute))
	if l := labels(); l[waypoint.UseLabel] != "" || gatewayIn(t, name) == nil {
		t.Fatalf("waypoint set back to false: labels %v, Gateway %v; want the label off and the Gateway kept for now", l, gatewayIn(t, name) != nil)
	}
	// The label off: the Gateway stays for waypointGrace, then goes.
	pass(now.Add(2 * time.Minute))
	if gw := gatewayIn(t, name); gw == nil || gw.GetAnnotations()[AnnotationUnusedSince] == "" {
		t.Fatalf("the waypoint right after its label went: %v; want it kept, marked unused", gw)
	}
	pass(now.Add(2*time.Minute + waypointGrace - time.Second))
	if gatewayIn(t, name) == nil {
		t.Fatal("the waypoint was removed within waypointGrace of its label going")
	}
	pass(now.Add(2*time.Minute + waypointGrace))
	if gatewayIn(t, name) != nil {
		t.Fatal("the waypoint was not removed once the label had been off for waypointGrace")
	}

	// Asked for again by a namespace already in ambient mode: the Gateway, the label once it
	// serves.
	mesh.Spec.Namespaces[0].Waypoint = true
	pass(now.Add(3 * time.Minute))
	if l := labels(); l[waypoint.UseLabel] != "" || gatewayIn(t, name) == nil {
		t.Fatalf("asked for again: labels %v, Gateway %v; want the Gateway, no label until it is Programmed", l, gatewayIn(t, name) != nil)
	}
	programWaypoint(t, name)
	pass(now.Add(4 * time.Minute))
	if l := labels(); l[waypoint.UseLabel] != waypoint.Name || l[ambient.Label] != ambient.Enabled {
		t.Fatalf("asked for again, Programmed: labels %v", l)
	}

	// The Gateway deleted by hand while the rule no longer asks for it: the label, which would
	// send the namespace's traffic to nothing, goes too.
	mesh.Spec.Namespaces[0].Waypoint = false
	if err := k8s.Delete(ctx, gatewayIn(t, name)); err != nil {
		t.Fatal(err)
	}
	waitGone(t, name)
	pass(now.Add(5 * time.Minute))
	if l := labels(); l[waypoint.UseLabel] != "" {
		t.Fatalf("labels %v: want %s off once its Gateway is gone and unwanted", l, waypoint.UseLabel)
	}
	// A label someone else set, naming no Gateway of the operator's, is theirs.
	ns = getNS(t, name)
	ns.Labels[waypoint.UseLabel] = waypoint.Name
	if err := k8s.Update(ctx, ns, client.FieldOwner("istioctl")); err != nil {
		t.Fatal(err)
	}
	pass(now.Add(5*time.Minute + time.Second))
	if l := labels(); l[waypoint.UseLabel] != waypoint.Name {
		t.Fatalf("labels %v: want someone else's %s kept", l, waypoint.UseLabel)
	}
	if gatewayIn(t, name) != nil {
		t.Fatal("a waypoint created for someone else's label, with the rule not asking for one")
	}

	mesh.Spec.Namespaces[0].Waypoint = true
	pass(now.Add(6 * time.Minute))
	programWaypoint(t, name)
	pass(now.Add(7 * time.Minute))
	if l := labels(); l[waypoint.UseLabel] != waypoint.Name {
		t.Fatalf("labels %v: want the waypoint back in use", l)
	}
	if ns := getNS(t, name); ownsField(ns.ManagedFields, NamespaceFieldManager, fieldpath.MakePathOrDie("metadata", "labels", waypoint.UseLabel)) {
		t.Fatalf("the operator co-owns someone else's %s label: %+v", waypoint.UseLabel, ns.ManagedFields)
	}

	if done, err := newStage(k8s, now).Cleanup(ctx, mesh); err != nil || !done {
		t.Fatalf("Cleanup = %v, %v", done, err)
	}
	if l := labels(); l[waypoint.UseLabel] != "" || gatewayIn(t, name) != nil {
		t.Fatalf("after the installation's removal: labels %v, Gateway %v; want both gone", l, gatewayIn(t, name) != nil)
	}
}

// TestWaypointsForbidden: a user's credentials (the kubectl plugin) that may not read the
// Gateway CRD or list Gateways show the waypoint as unread (the ladder then takes the labels as
// they are); the operator's refused read is an error, never taken for "no Gateway API".
func TestWaypointsForbidden(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "gateways"}, "", errors.New("RBAC"))
	crd := &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: gatewayCRD, Annotations: map[string]string{gatewayapi.BundleVersionAnnotation: gatewayapi.Release}},
		Spec:   apiextensionsv1.CustomResourceDefinitionSpec{Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{Name: "v1", Served: true}}},
		Status: apiextensionsv1.CustomResourceDefinitionStatus{Conditions: []apiextensionsv1.CustomResourceDefinitionCondition{{Type: apiextensionsv1.Established, Status: apiextensionsv1.ConditionTrue}}}}
	scheme := runtime.NewScheme()
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		funcs   interceptor.Funcs
		asUser  bool
		wantErr bool
		want    string
	}{
		"the CRD, as the plugin": {funcs: interceptor.Funcs{Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return forbidden
		}},
			asUser: true, want: "may not read the CRD"},
		"Gateways, as the plugin": {funcs: interceptor.Funcs{List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
			return forbidden
		}},
			asUser: true, want: "may not list Gateways"},
		"the CRD, as the operator": {funcs: interceptor.Funcs{Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return forbidden
		}},
			wantErr: true},
		"Gateways, as the operator": {funcs: interceptor.Funcs{List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
			return forbidden
		}},
			wantErr: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(crd.DeepCopy()).WithInterceptorFuncs(tt.funcs).Build()
			got, err := Planner{Policies: c, AsUser: tt.asUser}.waypoints(context.Background())
			if (err != nil) != tt.wantErr || !strings.Contains(got.unread, tt.want) || got.unavailable != "" {
				t.Fatalf("waypoints = %+v, %v; want error %v, unread saying %q, never unavailable", got, err, tt.wantErr, tt.want)
			}
		})
	}
}

// TestWaypointPoliciesBeforeItsLabel: at ZeroTrust, the policies attached to the waypoint are
// written before the label that sends the namespace's traffic through it, even when no earlier
// pass wrote them: behind the waypoint, the namespace's own policies see only the waypoint.
func TestWaypointPoliciesBeforeItsLabel(t *testing.T) {
	ctx := context.Background()
	const name = "team-waypoint-order"
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{ambient.Label: ambient.Enabled}}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), getNS(t, name)) })
	var writes []string
	c := interceptor.NewClient(k8s, interceptor.Funcs{
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			if u, ok := obj.(interface{ GetKind() *string }); ok && u.GetKind() != nil {
				writes = append(writes, *u.GetKind())
			} else if u, ok := obj.(interface{ GetKind() string }); ok {
				writes = append(writes, u.GetKind())
			}
			return c.Apply(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			if _, ok := obj.(*corev1.Namespace); ok {
				writes = append(writes, "Namespace")
			}
			return c.Patch(ctx, obj, patch, opts...)
		},
	})
	mesh := meshFor("ladder-waypoint-order")
	mesh.Spec.DataPlane.Mode = meshv1.DataPlaneAmbient
	plan := &NamespacePlan{Namespace: getNS(t, name), Enrollment: ladder.Enrollment{Target: meshv1.LevelZeroTrust, Ambient: true, Waypoint: true},
		Waypoint: ladder.Waypoint{Wanted: true, Programmed: true},
		Decision: ladder.Decision{Level: meshv1.LevelZeroTrust, Effects: ladder.Effects{Inject: true, Ambient: true, Strict: true, Authorization: true, Waypoint: true, UseWaypoint: true}}}
	plan.gateway, _ = waypoint.Gateway(mesh.Name, name) // as if it were Programmed already
	installGatewayCRD(t)
	// A decision taken on a stale copy of the namespace puts no label: a conflict, taken again.
	fresh := getNS(t, name)
	fresh.Labels["touched"] = "yes"
	if err := k8s.Update(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	if err := newStage(c, time.Now()).carryOut(ctx, mesh, plan); !apierrors.IsConflict(err) || getNS(t, name).Labels[waypoint.UseLabel] != "" {
		t.Fatalf("carryOut on a stale namespace = %v, labels %v; want a conflict and no label", err, getNS(t, name).Labels)
	}
	plan.Namespace = getNS(t, name)
	if err := newStage(c, time.Now()).carryOut(ctx, mesh, plan); err != nil {
		t.Fatal(err)
	}
	first := slices.Index(writes, "Namespace")
	if first < 0 || !slices.Contains(writes[:first], policy.AuthorizationPolicyGVK.Kind) {
		t.Fatalf("writes %v: want the AuthorizationPolicies before the namespace's label", writes)
	}
	for _, n := range []string{policy.WaypointAllowName, policy.WaypointAllowNothingName} {
		ap := &unstructured.Unstructured{}
		ap.SetGroupVersionKind(policy.AuthorizationPolicyGVK)
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: name, Name: n}, ap); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
	if getNS(t, name).Labels[waypoint.UseLabel] != waypoint.Name {
		t.Error("the namespace was not labelled to use its waypoint")
	}
}

// TestLeftWaypointRemoved: the operator's waypoint in a namespace nothing else makes a candidate
// any more (released from every rule, in a mesh of sidecars) is still found and removed, after
// waypointGrace, and the namespace is not written.
func TestLeftWaypointRemoved(t *testing.T) {
	ctx := context.Background()
	const name = "team-waypoint-left"
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), getNS(t, name)) })
	installGatewayCRD(t)
	mesh := meshFor("ladder-waypoint-left")
	mesh.Spec.Namespaces[0].Selector.MatchLabels = map[string]string{"waypoint-left": "never"}
	gw, err := waypoint.Gateway(mesh.Name, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	before := getNS(t, name).ResourceVersion
	reconcileAt(t, mesh, now)
	if gw := gatewayIn(t, name); gw == nil || gw.GetAnnotations()[AnnotationUnusedSince] == "" {
		t.Fatalf("the left waypoint: %v; want it kept for now, marked unused", gw)
	}
	reconcileAt(t, mesh, now.Add(waypointGrace))
	if gatewayIn(t, name) != nil {
		t.Fatal("the waypoint of a namespace no rule enrolls was not removed")
	}
	if ns := getNS(t, name); ns.ResourceVersion != before {
		t.Fatalf("namespace written (%v, %v): it is enrolled by no rule", ns.Labels, ns.Annotations)
	}
}

// TestUnlabelWaypoint: the label comes off only while it still names the namespace's waypoint;
// one pointed meanwhile at another waypoint stays.
func TestUnlabelWaypoint(t *testing.T) {
	ctx := context.Background()
	tests := map[string]struct{ label, want string }{
		"names the waypoint":     {label: waypoint.Name},
		"names another waypoint": {label: "shared", want: "shared"},
		"none":                   {},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "team-unlabel-", Labels: map[string]string{}}}
			if tt.label != "" {
				ns.Labels[waypoint.UseLabel] = tt.label
			}
			if err := k8s.Create(ctx, ns); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = k8s.Delete(context.Background(), ns) })
			if err := unlabelWaypoint(ctx, k8s, ns.Name); err != nil {
				t.Fatal(err)
			}
			if got := getNS(t, ns.Name).Labels[waypoint.UseLabel]; got != tt.want {
				t.Errorf("label %q, want %q", got, tt.want)
			}
		})
	}
}
