package resilience

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

func d(s string) *metav1.Duration {
	v, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return &metav1.Duration{Duration: v}
}

func TestResolve(t *testing.T) {
	defaults := Values{
		RequestTimeout: *d("15s"), IdleTimeout: *d("1h"), ConnectTimeout: *d("10s"),
		Attempts: 2, RetryOn: "connect-failure,refused-stream,unavailable,cancelled,503",
		Consecutive5xxErrors: 5, Interval: *d("10s"), BaseEjectionTime: *d("30s"), MaxEjectionPercent: 10,
	}
	with := func(f func(*Values)) *Values {
		v := defaults
		f(&v)
		return &v
	}
	tests := map[string]struct {
		spec *meshv1.ResilienceSpec
		rule *meshv1.NamespaceResilience
		want *Values
	}{
		"no spec.resilience: none":           {},
		"no spec.resilience, a rule opt-out": {rule: &meshv1.NamespaceResilience{Skip: true}},
		"an empty spec.resilience: every default": {
			spec: &meshv1.ResilienceSpec{}, want: &defaults,
		},
		"a rule that opts out": {
			spec: &meshv1.ResilienceSpec{}, rule: &meshv1.NamespaceResilience{Skip: true},
		},
		"the spec's values over the defaults": {
			spec: &meshv1.ResilienceSpec{ResilienceValues: meshv1.ResilienceValues{
				Timeouts:         &meshv1.TimeoutValues{Request: d("30s")},
				ConnectionPool:   &meshv1.ConnectionPoolValues{MaxRequests: ptr.To[int32](10)},
				OutlierDetection: &meshv1.OutlierDetectionValues{Consecutive5xxErrors: ptr.To[int32](0)},
			}},
			want: with(func(v *Values) { v.RequestTimeout, v.MaxRequests, v.Consecutive5xxErrors = *d("30s"), 10, 0 }),
		},
		"a rule's values over the spec's, field by field": {
			spec: &meshv1.ResilienceSpec{ResilienceValues: meshv1.ResilienceValues{
				Timeouts: &meshv1.TimeoutValues{Request: d("30s"), Idle: d("5m")},
				Retries:  &meshv1.RetryValues{Attempts: ptr.To[int32](3), RetryOn: "5xx"},
			}},
			rule: &meshv1.NamespaceResilience{ResilienceValues: meshv1.ResilienceValues{
				Timeouts: &meshv1.TimeoutValues{Request: d("0s")},
				Retries:  &meshv1.RetryValues{PerTryTimeout: d("2s")},
			}},
			want: with(func(v *Values) {
				v.RequestTimeout, v.IdleTimeout, v.Attempts, v.RetryOn, v.PerTryTimeout = *d("0s"), *d("5m"), 3, "5xx", *d("2s")
			}),
		},
		"a rule turning retries off drops the spec's conditions (Istio refuses them without attempts)": {
			spec: &meshv1.ResilienceSpec{ResilienceValues: meshv1.ResilienceValues{
				Retries: &meshv1.RetryValues{PerTryTimeout: d("2s"), RetryOn: "5xx"},
			}},
			rule: &meshv1.NamespaceResilience{ResilienceValues: meshv1.ResilienceValues{Retries: &meshv1.RetryValues{Attempts: ptr.To[int32](0)}}},
			want: with(func(v *Values) { v.Attempts, v.RetryOn = 0, "" }),
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Resolve(tc.spec, tc.rule); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestFromLevel(t *testing.T) {
	if got := FromLevel(nil); got != meshv1.LevelMutualTLS {
		t.Fatalf("default: got %s", got)
	}
	if got := FromLevel(&meshv1.ResilienceSpec{FromLevel: meshv1.LevelZeroTrust}); got != meshv1.LevelZeroTrust {
		t.Fatalf("set: got %s", got)
	}
}

// TestObjects pins the objects' form to Istio's networking API (istio/api
// networking/v1alpha3/destination_rule.proto and virtual_service.proto): durations in protobuf's
// JSON form, no TLS setting (auto mTLS stays), no empty section (Istio refuses an empty
// connectionPool), no retry conditions without attempts, no timeout of 0s (Istio refuses
// durations under 1ms; a route without one has none).
func TestObjects(t *testing.T) {
	v := *Resolve(&meshv1.ResilienceSpec{ResilienceValues: meshv1.ResilienceValues{
		Timeouts: &meshv1.TimeoutValues{Connect: d("1.5s")}, Retries: &meshv1.RetryValues{PerTryTimeout: d("2s")},
		ConnectionPool: &meshv1.ConnectionPoolValues{MaxConnections: ptr.To[int32](100), MaxPendingRequests: ptr.To[int32](50), MaxRequests: ptr.To[int32](200)},
	}}, nil)
	p := Build("mesh", "shop", "istio-system", v, []Service{{Name: "web"}}, nil, nil)
	if len(p.Objects) != 2 || p.Partial() {
		t.Fatalf("want a DestinationRule and a VirtualService, covering all: %+v", p)
	}
	dr, vs := p.Objects[0], p.Objects[1]
	wantDR := map[string]any{"host": "*.shop.svc.cluster.local", "trafficPolicy": map[string]any{
		"connectionPool": map[string]any{
			"tcp":  map[string]any{"maxConnections": int64(100), "connectTimeout": "1.500s"},
			"http": map[string]any{"http1MaxPendingRequests": int64(50), "http2MaxRequests": int64(200), "idleTimeout": "3600s"},
		},
		"outlierDetection": map[string]any{"consecutive5xxErrors": int64(5), "interval": "10s", "baseEjectionTime": "30s", "maxEjectionPercent": int64(10)},
	}}
	if dr.GetKind() != "DestinationRule" || dr.GetName() != DestinationRuleName || dr.GetNamespace() != "shop" || !reflect.DeepEqual(dr.Object["spec"], wantDR) {
		t.Fatalf("DestinationRule: %v", dr.Object)
	}
	wantVS := map[string]any{"hosts": []any{"web.shop.svc.cluster.local"}, "http": []any{map[string]any{
		"route":   []any{map[string]any{"destination": map[string]any{"host": "web.shop.svc.cluster.local"}}},
		"timeout": "15s",
		"retries": map[string]any{"attempts": int64(2), "perTryTimeout": "2s", "retryOn": DefaultRetryOn},
	}}}
	if vs.GetKind() != "VirtualService" || vs.GetName() != "meshwright-resilience-web" || !reflect.DeepEqual(vs.Object["spec"], wantVS) {
		t.Fatalf("VirtualService: %v", vs.Object)
	}
	for _, u := range p.Objects {
		if !Ours(u) || u.GetLabels()[meshv1.LabelInstallation] != "mesh" || u.GetAPIVersion() != "networking.istio.io/v1" {
			t.Fatalf("%s is not labelled as the operator's: %v", Key(u), u.GetLabels())
		}
	}

	off := v
	off.RequestTimeout, off.Attempts, off.RetryOn, off.PerTryTimeout, off.Consecutive5xxErrors = metav1.Duration{}, 0, "", metav1.Duration{}, 0
	off.MaxConnections, off.MaxPendingRequests, off.MaxRequests = 0, 0, 0
	p = Build("mesh", "shop", "istio-system", off, []Service{{Name: "web"}}, nil, nil)
	policy := p.Objects[0].Object["spec"].(map[string]any)["trafficPolicy"].(map[string]any)
	if _, found := policy["outlierDetection"]; found {
		t.Fatalf("no ejection wanted, but the DestinationRule has outlierDetection: %v", p.Objects[0].Object)
	}
	// No limit set: none written, Istio's own (no limit) stays.
	if pool := policy["connectionPool"]; !reflect.DeepEqual(pool, map[string]any{"tcp": map[string]any{"connectTimeout": "1.500s"}, "http": map[string]any{"idleTimeout": "3600s"}}) {
		t.Fatalf("connection pool %v, want only the timeouts", pool)
	}
	route := p.Objects[1].Object["spec"].(map[string]any)["http"].([]any)[0].(map[string]any)
	if _, found := route["timeout"]; found || !reflect.DeepEqual(route["retries"], map[string]any{"attempts": int64(0)}) {
		t.Fatalf("no timeout and no retries wanted: %v", route)
	}
}

func TestBuildLeavesTeamsObjectsAlone(t *testing.T) {
	services := []Service{{Name: "web"}, {Name: "api"}, {Name: "db", Headless: true}}
	dr := func(ns, name string, hosts ...string) Other {
		return Other{Kind: "DestinationRule", Namespace: ns, Name: name, Hosts: hosts}
	}
	vs := func(ns, name string, sidecars bool, hosts ...string) Other {
		return Other{Kind: "VirtualService", Namespace: ns, Name: name, Hosts: hosts, Sidecars: sidecars}
	}
	tests := map[string]struct {
		others   []Other
		declined []string
		// want are the objects written, by Key; hidden the Services reported, with what hides them.
		want   []string
		hidden []Hidden
		held   string
	}{
		"nothing of anyone else's": {
			want: []string{"DestinationRule/meshwright-resilience", "VirtualService/meshwright-resilience-web", "VirtualService/meshwright-resilience-api"},
		},
		"a team's DestinationRule for one Service, by its short name: Istio takes it for that host": {
			others: []Other{dr("shop", "web-tls", "web")},
			want:   []string{"DestinationRule/meshwright-resilience", "VirtualService/meshwright-resilience-web", "VirtualService/meshwright-resilience-api"},
			hidden: []Hidden{{Service: "web", By: []string{"DestinationRule shop/web-tls"}}},
		},
		"a team's DestinationRule for the whole namespace: the operator's would merge with it": {
			others: []Other{dr("shop", "all", "*.shop.svc.cluster.local")},
			want:   []string{"VirtualService/meshwright-resilience-web", "VirtualService/meshwright-resilience-api"},
			held:   "DestinationRule shop/all (host *.shop.svc.cluster.local)",
		},
		"a mesh-wide DestinationRule in the root namespace: the operator's would override it": {
			others: []Other{dr("istio-system", "mesh", "*.local")},
			want:   []string{"VirtualService/meshwright-resilience-web", "VirtualService/meshwright-resilience-api"},
			held:   "DestinationRule istio-system/mesh (host *.local)",
		},
		"a root namespace's DestinationRule for one Service: Istio looks there last, so the operator's would win": {
			others: []Other{dr("istio-system", "api-pool", "api.shop.svc.cluster.local")},
			want:   []string{"VirtualService/meshwright-resilience-web", "VirtualService/meshwright-resilience-api"},
			held:   "DestinationRule istio-system/api-pool (host api.shop.svc.cluster.local)",
		},
		"a root namespace's DestinationRule for another namespace's hosts": {
			others: []Other{dr("istio-system", "other", "*.front.svc.cluster.local")},
			want:   []string{"DestinationRule/meshwright-resilience", "VirtualService/meshwright-resilience-web", "VirtualService/meshwright-resilience-api"},
		},
		"a caller namespace's own DestinationRule: its callers get it": {
			others: []Other{dr("front", "to-web", "web.shop.svc.cluster.local")},
			want:   []string{"DestinationRule/meshwright-resilience", "VirtualService/meshwright-resilience-web", "VirtualService/meshwright-resilience-api"},
			hidden: []Hidden{{Service: "web", By: []string{"DestinationRule front/to-web (for callers in front)"}}},
		},
		"a DestinationRule of another namespace's hosts": {
			others: []Other{dr("front", "own", "web"), dr("shop", "other", "web.front.svc.cluster.local")},
			want:   []string{"DestinationRule/meshwright-resilience", "VirtualService/meshwright-resilience-web", "VirtualService/meshwright-resilience-api"},
		},
		"a team's VirtualService for a Service: none of the operator's for it": {
			others: []Other{vs("front", "canary", true, "api.shop.svc.cluster.local")},
			want:   []string{"DestinationRule/meshwright-resilience", "VirtualService/meshwright-resilience-web"},
			hidden: []Hidden{{Service: "api", By: []string{"VirtualService front/canary"}}},
		},
		"a VirtualService bound only to gateways routes no call of the mesh": {
			others: []Other{vs("shop", "ingress", false, "api")},
			want:   []string{"DestinationRule/meshwright-resilience", "VirtualService/meshwright-resilience-web", "VirtualService/meshwright-resilience-api"},
		},
		"a Gateway API route attached to a Service": {
			others: []Other{{Kind: "HTTPRoute", Namespace: "shop", Name: "web-split", Hosts: []string{"web.shop.svc.cluster.local"}, Sidecars: true}},
			want:   []string{"DestinationRule/meshwright-resilience", "VirtualService/meshwright-resilience-api"},
			hidden: []Hidden{{Service: "web", By: []string{"HTTPRoute shop/web-split"}}},
		},
		"a wildcard VirtualService would lose to the operator's exact one": {
			others: []Other{vs("shop", "all", true, "*.shop.svc.cluster.local")},
			want:   []string{"DestinationRule/meshwright-resilience"},
			hidden: []Hidden{{Service: "web", By: []string{"VirtualService shop/all"}}, {Service: "api", By: []string{"VirtualService shop/all"}}, {Service: "db", By: []string{"VirtualService shop/all"}}},
		},
		"objects a user deleted are not written": {
			declined: []string{"DestinationRule/meshwright-resilience", "VirtualService/meshwright-resilience-api"},
			want:     []string{"VirtualService/meshwright-resilience-web"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := Build("mesh", "shop", "istio-system", *Resolve(&meshv1.ResilienceSpec{}, nil), services, tc.others, tc.declined)
			if got := keys(p.Objects); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("objects: got %v, want %v", got, tc.want)
			}
			if !reflect.DeepEqual(p.Hidden, tc.hidden) || p.HeldBy != tc.held || !reflect.DeepEqual(p.Declined, tc.declined) {
				t.Fatalf("report: hidden %+v held %q declined %v; want %+v %q %v", p.Hidden, p.HeldBy, p.Declined, tc.hidden, tc.held, tc.declined)
			}
			if p.Partial() != (len(tc.hidden) > 0 || tc.held != "" || len(tc.declined) > 0) || p.Services != 3 {
				t.Fatalf("Partial %v, Services %d", p.Partial(), p.Services)
			}
		})
	}
}

func keys(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, u := range objs {
		out = append(out, Key(u))
	}
	return out
}

// TestTrack: an object the operator saw, still wanted, and gone was deleted by a user: declined,
// and no longer seen; the record keeps a choice while the defaults are off, forgets objects no
// longer wanted, and an object created but not yet seen (the cache lags) is not declined.
func TestTrack(t *testing.T) {
	dr, web, api := "DestinationRule/meshwright-resilience", "VirtualService/meshwright-resilience-web", "VirtualService/meshwright-resilience-api"
	tests := map[string]struct {
		wanted         []string
		existing       []string
		seen, declined []string
		wantSeen       []string
		wantDeclined   []string
	}{
		"created, seen":                       {wanted: []string{dr, web}, existing: []string{dr, web}, wantSeen: []string{dr, web}},
		"created, not in the cache yet":       {wanted: []string{dr, web}, existing: []string{dr}, wantSeen: []string{dr}},
		"seen, then deleted by a user":        {wanted: []string{dr, web}, existing: []string{dr}, seen: []string{dr, web}, wantSeen: []string{dr}, wantDeclined: []string{web}},
		"declined stays declined":             {wanted: []string{dr, web}, existing: []string{dr}, seen: []string{dr}, declined: []string{web}, wantSeen: []string{dr}, wantDeclined: []string{web}},
		"restored: off the record, recreated": {wanted: []string{dr, web}, existing: []string{dr}, seen: []string{dr}, wantSeen: []string{dr}},
		"a Service gone: forgotten":           {wanted: []string{dr}, existing: []string{dr, api}, seen: []string{dr, api}, declined: []string{web}, wantSeen: []string{dr}},
		"defaults off: the choice is kept":    {existing: []string{dr}, seen: []string{dr}, declined: []string{web}, wantDeclined: []string{web}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			existing := map[string]bool{}
			for _, k := range tc.existing {
				existing[k] = true
			}
			seen, declined := Track(tc.wanted, existing, tc.seen, tc.declined)
			if !reflect.DeepEqual(seen, tc.wantSeen) || !reflect.DeepEqual(declined, tc.wantDeclined) {
				t.Fatalf("seen %v declined %v; want %v %v", seen, declined, tc.wantSeen, tc.wantDeclined)
			}
		})
	}
}
