package trafficsim

import (
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

func fromYAML(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatal(err)
	}
	return u
}

// TestSimulatorParsePeerAuthentication pins the reading of PeerAuthentication objects.
func TestSimulatorParsePeerAuthentication(t *testing.T) {
	tests := map[string]struct {
		doc  string
		want PeerAuthn
	}{
		// PA: spec.selector.matchLabels, spec.mtls.mode, spec.portLevelMtls keyed by port number.
		"workload with port level": {`
metadata: {namespace: shop, name: api}
spec:
  selector: {matchLabels: {app: api}}
  mtls: {mode: STRICT}
  portLevelMtls: {"9090": {mode: DISABLE}}`,
			PeerAuthn{Namespace: "shop", Name: "api", Selector: map[string]string{"app": "api"}, Mode: ModeStrict, PortModes: map[int]MTLSMode{9090: ModeDisable}}},
		// PA: an empty spec is an UNSET namespace-wide policy.
		"empty spec": {`
metadata: {namespace: shop, name: default}
spec: {}`,
			PeerAuthn{Namespace: "shop", Name: "default"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := parsePeerAuthn(fromYAML(t, tc.doc))
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parsePeerAuthn = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestSimulatorParseAuthorizationPolicy pins the reading of AuthorizationPolicy objects, unsupported fields included.
func TestSimulatorParseAuthorizationPolicy(t *testing.T) {
	tests := map[string]struct {
		doc         string
		want        AuthzPolicy
		unsupported int
	}{
		// AP: spec: {} is an ALLOW policy with no rules (allow-nothing); DRY-RUN annotation.
		"allow-nothing dry-run": {`
metadata: {namespace: shop, name: allow-nothing, annotations: {istio.io/dry-run: "true"}}
spec: {}`,
			AuthzPolicy{Namespace: "shop", Name: "allow-nothing", DryRun: true}, 0},
		// AP: from.source namespaces / notPrincipals and to.operation ports, action DENY.
		"rules": {`
metadata: {namespace: shop, name: p}
spec:
  action: DENY
  selector: {matchLabels: {app: api}}
  rules:
  - from: [{source: {namespaces: [web], notPrincipals: ["*"]}}]
    to: [{operation: {ports: ["8080"], notPorts: ["9090"]}}]
  - {}`,
			AuthzPolicy{Namespace: "shop", Name: "p", Action: ActionDeny, Selector: map[string]string{"app": "api"}, Rules: []Rule{
				{From: []Source{{Namespaces: []string{"web"}, NotPrincipals: []string{"*"}}}, To: []Operation{{Ports: []int{8080}, NotPorts: []int{9090}}}},
				{}}}, 0},
		// AP: targetRefs attach to gateways/waypoints; an unparsable dry-run value is false, as in Istio.
		"targetRefs": {`
metadata: {namespace: shop, name: p, annotations: {istio.io/dry-run: "maybe"}}
spec: {targetRefs: [{kind: Service, name: api}]}`,
			AuthzPolicy{Namespace: "shop", Name: "p", TargetRef: true}, 0},
		// Simulator scope: paths, ipBlocks and when are reported as unsupported.
		"unsupported": {`
metadata: {namespace: shop, name: p}
spec:
  rules:
  - from: [{source: {ipBlocks: [10.0.0.0/8]}}]
    to: [{operation: {paths: [/admin]}}]
    when: [{key: "request.headers[x]", values: [y]}]`,
			AuthzPolicy{Namespace: "shop", Name: "p", Rules: []Rule{{
				From: []Source{{}}, To: []Operation{{}},
				Unsupported: []string{"when", "from.source.ipBlocks", "to.operation.paths"}}}}, 3},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, bad := parseAuthzPolicy(fromYAML(t, tc.doc))
			if !reflect.DeepEqual(got, tc.want) || len(bad) != tc.unsupported {
				t.Errorf("parseAuthzPolicy = %+v (unsupported %v), want %+v (%d unsupported)", got, bad, tc.want, tc.unsupported)
			}
		})
	}
}
