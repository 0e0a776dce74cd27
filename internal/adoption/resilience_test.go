package adoption

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/apply"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/resilience"
	"github.com/meshwright/meshwright/internal/stages"
	"github.com/meshwright/meshwright/internal/writecount"
)

// atMutualTLS creates a namespace standing at MutualTLS for an hour, with a Ready pod that has
// the proxy and the Services given.
func atMutualTLS(t *testing.T, name string, services ...string) {
	t.Helper()
	ctx := context.Background()
	teamNamespace(t, name)
	// Gone afterwards (left terminating: envtest runs no namespace controller), so that the
	// other tests' passes do not walk it down.
	t.Cleanup(func() { _ = k8s.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}) })
	if err := k8s.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: name}}); err != nil {
		t.Fatal(err)
	}
	runPod(t, name, "web-2", true)
	record, err := json.Marshal(ladder.State{Since: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	ns := getNS(t, name)
	// Its own selector label, so that the other tests' installations (ladder=on) leave it alone.
	ns.Labels["ladder"], ns.Labels[meshv1.LabelLevel], ns.Labels[InjectionLabel] = "resilience", string(meshv1.LevelMutualTLS), "default"
	ns.Annotations = map[string]string{meshv1.AnnotationLadder: string(record)}
	if err := k8s.Update(ctx, ns); err != nil {
		t.Fatal(err)
	}
	for _, s := range services {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: s, Namespace: name},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
		if err := k8s.Create(ctx, svc); err != nil {
			t.Fatal(err)
		}
	}
}

// defaultsOf is the operator's resilience objects in a namespace, by Key.
func defaultsOf(t *testing.T, namespace string) map[string]*unstructured.Unstructured {
	t.Helper()
	objs, err := listDefaults(context.Background(), k8s, "resilience-a", namespace)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*unstructured.Unstructured{}
	for _, u := range objs {
		out[resilience.Key(u)] = u
	}
	return out
}

// TestResilienceDefaultsAgainstTheAPIServer: at spec.resilience.fromLevel a namespace takes a
// step that writes its defaults (a DestinationRule for its hosts, a VirtualService per Service)
// with the values asked, next to a team's own DestinationRule for one Service, which is left
// untouched and reported (the namespace counts as partly covered); an object of the defaults a
// user deletes is recorded and not written again until the record is removed; a rule that opts
// the namespace out removes what the operator made there and nothing else.
func TestResilienceDefaultsAgainstTheAPIServer(t *testing.T) {
	ctx := context.Background()
	atMutualTLS(t, "team-r", "web", "api")
	headless := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "team-r"},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "db"}, Ports: []corev1.ServicePort{{Name: "tcp", Port: 5432}}}}
	if err := k8s.Create(ctx, headless); err != nil {
		t.Fatal(err)
	}
	teamDR := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
		"metadata": map[string]any{"name": "api-tls", "namespace": "team-r"},
		"spec":     map[string]any{"host": "api", "trafficPolicy": map[string]any{"tls": map[string]any{"mode": "ISTIO_MUTUAL"}}}}}
	if err := k8s.Create(ctx, teamDR); err != nil {
		t.Fatal(err)
	}
	mesh := meshFor("resilience-a")
	mesh.Spec.Namespaces[0].Level = meshv1.LevelMutualTLS
	mesh.Spec.Namespaces[0].Selector.MatchLabels = map[string]string{"ladder": "resilience"}
	mesh.Spec.Rollout.TrafficGates = meshv1.TrafficGatesSkip
	mesh.Spec.Resilience = &meshv1.ResilienceSpec{FromLevel: meshv1.LevelZeroTrust}
	now := time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC)
	pass := func(at time.Duration) stages.Result {
		t.Helper()
		res, err := newStage(k8s, now.Add(at)).Reconcile(ctx, mesh)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}

	if res := pass(0); len(defaultsOf(t, "team-r")) != 0 || res.State != stages.Ready {
		t.Fatalf("below fromLevel: %+v, objects %v", res, defaultsOf(t, "team-r"))
	}

	mesh.Generation++
	mesh.Spec.Resilience = &meshv1.ResilienceSpec{ResilienceValues: meshv1.ResilienceValues{Timeouts: &meshv1.TimeoutValues{Request: &metav1.Duration{Duration: 30 * time.Second}}}}
	if res := pass(time.Minute); res.Namespaces.InProgress != 1 || res.Namespaces.ResiliencePartial != 1 {
		t.Fatalf("the defaults step: %+v %+v", res, res.Namespaces)
	}
	objs := defaultsOf(t, "team-r")
	vs := objs["VirtualService/meshwright-resilience-web"]
	if len(objs) != 3 || objs["DestinationRule/meshwright-resilience"] == nil || objs["VirtualService/meshwright-resilience-api"] == nil || vs == nil {
		t.Fatalf("objects %v, want the DestinationRule and a VirtualService for each Service but the headless one", keysOfMap(objs))
	}
	if timeout, _, _ := unstructured.NestedString(vs.Object["spec"].(map[string]any)["http"].([]any)[0].(map[string]any), "timeout"); timeout != "30s" {
		t.Errorf("web's timeout = %q, want 30s", timeout)
	}
	res := pass(2 * time.Minute)
	if res.State != stages.Ready || res.Namespaces.ResiliencePartial != 1 || res.Namespaces.ResilienceCovered != 0 {
		t.Fatalf("once applied: %+v %+v", res, res.Namespaces)
	}
	writes := &writecount.Counter{}
	if _, err := newStage(writes.Wrap(k8s, interceptor.Funcs{}), now.Add(150*time.Second)).Reconcile(ctx, mesh); err != nil {
		t.Fatal(err)
	}
	if n := writes.Total(); n != 0 {
		t.Fatalf("a pass over defaults in place made %d writes: %v", n, writes.Writes())
	}
	var st ladder.State
	if err := json.Unmarshal([]byte(getNS(t, "team-r").Annotations[meshv1.AnnotationLadder]), &st); err != nil || st.Resilience == nil || len(st.ResilienceSeen) != 3 {
		t.Fatalf("record %+v (%v), want the defaults and their three objects seen", st, err)
	}
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(resilience.DestinationRuleGVK)
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(teamDR), got); err != nil || got.GetResourceVersion() != teamDR.GetResourceVersion() {
		t.Fatalf("the team's DestinationRule was changed: %v, resourceVersion %s → %s", err, teamDR.GetResourceVersion(), got.GetResourceVersion())
	}

	// A cache that misses web's VirtualService (it lags the record) makes no decline: the API
	// server is asked first.
	lagging := interceptor.NewClient(k8s, interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
		if err := c.List(ctx, list, opts...); err != nil {
			return err
		}
		if u, ok := list.(*unstructured.UnstructuredList); ok {
			u.Items = slices.DeleteFunc(u.Items, func(o unstructured.Unstructured) bool { return o.GetName() == "meshwright-resilience-web" })
		}
		return nil
	}})
	lag := newStage(lagging, now.Add(160*time.Second))
	lag.API = k8s
	if _, err := lag.Reconcile(ctx, mesh); err != nil {
		t.Fatal(err)
	}
	if got := getNS(t, "team-r").Annotations[meshv1.AnnotationResilienceDeclined]; got != "" {
		t.Fatalf("a lagging cache declined %q", got)
	}

	// A user deletes the VirtualService of web: it is recorded, not written again.
	if err := k8s.Delete(ctx, vs); err != nil {
		t.Fatal(err)
	}
	pass(3 * time.Minute)
	pass(4 * time.Minute)
	if _, found := defaultsOf(t, "team-r")["VirtualService/meshwright-resilience-web"]; found {
		t.Fatal("the VirtualService a user deleted was created again")
	}
	ns := getNS(t, "team-r")
	if got := ns.Annotations[meshv1.AnnotationResilienceDeclined]; got != "VirtualService/meshwright-resilience-web" {
		t.Fatalf("declined record = %q", got)
	}

	// Restored: the documented command removes the record.
	delete(ns.Annotations, meshv1.AnnotationResilienceDeclined)
	if err := k8s.Update(ctx, ns); err != nil {
		t.Fatal(err)
	}
	pass(5 * time.Minute)
	if _, found := defaultsOf(t, "team-r")["VirtualService/meshwright-resilience-web"]; !found {
		t.Fatal("the VirtualService was not restored once its record was removed")
	}

	// The rule opts the namespace out: the operator's objects go, the team's stays.
	mesh.Generation++
	mesh.Spec.Namespaces[0].Resilience = &meshv1.NamespaceResilience{Skip: true}
	res = pass(6 * time.Minute)
	if left := defaultsOf(t, "team-r"); len(left) != 0 || res.Namespaces.ResiliencePartial+res.Namespaces.ResilienceCovered != 0 {
		t.Fatalf("opted out: left %v, status %+v", keysOfMap(left), res.Namespaces)
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(teamDR), got); err != nil {
		t.Fatalf("the team's DestinationRule is gone: %v", err)
	}

	// An object of the defaults no record speaks of (a step cancelled before the cache showed
	// what it wrote, a record deleted by hand) is removed all the same.
	leftover := resilience.Build(mesh.Name, "team-r", "istio-system", *resilience.Resolve(&meshv1.ResilienceSpec{}, nil), []resilience.Service{{Name: "web"}}, nil, nil).Objects[1]
	if _, err := (&apply.Applier{Client: k8s, FieldManager: "meshwright"}).Apply(ctx, leftover); err != nil {
		t.Fatal(err)
	}
	pass(7 * time.Minute)
	if left := defaultsOf(t, "team-r"); len(left) != 0 {
		t.Fatalf("left over: %v", keysOfMap(left))
	}

	done, err := newStage(k8s, now).Cleanup(ctx, mesh)
	if err != nil || !done {
		t.Fatalf("Cleanup = %v, %v", done, err)
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(teamDR), got); apierrors.IsNotFound(err) {
		t.Fatal("clean-up removed the team's DestinationRule")
	}
}

func keysOfMap(m map[string]*unstructured.Unstructured) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestOthersRead: what the defaults weigh of someone else's objects: a DestinationRule's host, a
// VirtualService's hosts and whether it routes the mesh's calls (no gateways, or "mesh" among
// them), and the Services a Gateway API route attaches to (parentRefs of kind Service, in the
// core group, in the route's namespace unless named); a route attached to a Gateway names none.
func TestOthersRead(t *testing.T) {
	obj := func(kind, ns, name string, spec map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{"kind": kind, "metadata": map[string]any{"name": name, "namespace": ns}, "spec": spec}}
	}
	tests := map[string]struct {
		got  resilience.Other
		want resilience.Other
	}{
		"a DestinationRule": {got: otherOf(obj("DestinationRule", "shop", "dr", map[string]any{"host": "web"})),
			want: resilience.Other{Kind: "DestinationRule", Namespace: "shop", Name: "dr", Hosts: []string{"web"}}},
		"a VirtualService for sidecars": {got: otherOf(obj("VirtualService", "shop", "vs", map[string]any{"hosts": []any{"web", "api.shop.svc.cluster.local"}})),
			want: resilience.Other{Kind: "VirtualService", Namespace: "shop", Name: "vs", Hosts: []string{"web", "api.shop.svc.cluster.local"}, Sidecars: true}},
		"a VirtualService for a gateway and the mesh": {got: otherOf(obj("VirtualService", "shop", "vs", map[string]any{"hosts": []any{"web"}, "gateways": []any{"ingress/gw", "mesh"}})),
			want: resilience.Other{Kind: "VirtualService", Namespace: "shop", Name: "vs", Hosts: []string{"web"}, Sidecars: true}},
		"a VirtualService for a gateway only": {got: otherOf(obj("VirtualService", "shop", "vs", map[string]any{"hosts": []any{"web"}, "gateways": []any{"ingress/gw"}})),
			want: resilience.Other{Kind: "VirtualService", Namespace: "shop", Name: "vs", Hosts: []string{"web"}}},
		"an HTTPRoute on two Services": {got: routeOf(obj("HTTPRoute", "shop", "split", map[string]any{"parentRefs": []any{
			map[string]any{"kind": "Service", "name": "web"}, map[string]any{"kind": "Service", "group": "core", "name": "api", "namespace": "back"},
			map[string]any{"name": "gw"}}})),
			want: resilience.Other{Kind: "HTTPRoute", Namespace: "shop", Name: "split", Hosts: []string{"web.shop.svc.cluster.local", "api.back.svc.cluster.local"}, Sidecars: true}},
		"a GRPCRoute on a Gateway only": {got: routeOf(obj("GRPCRoute", "shop", "gw", map[string]any{"parentRefs": []any{map[string]any{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw"}}})),
			want: resilience.Other{Kind: "GRPCRoute", Namespace: "shop", Name: "gw", Sidecars: true}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if !reflect.DeepEqual(tc.got, tc.want) {
				t.Fatalf("got %+v, want %+v", tc.got, tc.want)
			}
		})
	}
}

// TestRemovedDefaultsAreNotDeclined: an object the operator deleted itself is left out of the
// seen record the next pass judges (so its absence is no user's choice), once.
func TestRemovedDefaultsAreNotDeclined(t *testing.T) {
	o := NewObservations()
	seen := []string{"DestinationRule/meshwright-resilience", "VirtualService/meshwright-resilience-web"}
	o.removedDefault("shop", "VirtualService/meshwright-resilience-web")
	if got := o.unlessRemoved("other", seen); !slices.Equal(got, seen) {
		t.Fatalf("another namespace: %v", got)
	}
	if got := o.unlessRemoved("shop", seen); !slices.Equal(got, seen[:1]) {
		t.Fatalf("got %v, want the removed object left out", got)
	}
	if got := o.unlessRemoved("shop", seen); !slices.Equal(got, seen) {
		t.Fatalf("got %v, want it forgotten after one pass", got)
	}
	var none *Observations
	if got := none.unlessRemoved("shop", seen); !slices.Equal(got, seen) {
		t.Fatalf("no memo: %v", got)
	}
}
