// Package schematest checks the MeshInstallation CRD schema against a real API server: what it
// refuses, with which message, and that valid specs round-trip unchanged.
package schematest

import (
	"context"
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/testenv"
)

var k8s client.Client

func TestMain(m *testing.M) {
	testenv.Main(m, func(cfg *rest.Config) (err error) {
		scheme := runtime.NewScheme()
		if err := meshv1.AddToScheme(scheme); err != nil {
			return err
		}
		k8s, err = client.New(cfg, client.Options{Scheme: scheme})
		return err
	})
}

// object parses a MeshInstallation written as a user would write it, so the test exercises the
// same schema validation `kubectl apply` meets, including values of the wrong type.
func object(t *testing.T, name, spec string) *unstructured.Unstructured {
	t.Helper()
	doc := fmt.Sprintf("apiVersion: meshwright.io/v1alpha1\nkind: MeshInstallation\nmetadata:\n  name: %s\nspec:\n%s", name, indent(spec))
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatalf("test YAML does not parse: %v\n%s", err, doc)
	}
	return u
}

func indent(s string) string {
	lines := strings.Split(strings.Trim(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n")
}

func TestInvalidSpecsAreRefused(t *testing.T) {
	tests := map[string]struct {
		spec string
		want string // a part of the API server's message
	}{
		"unknown level": {
			spec: "namespaces:\n- selector: {matchLabels: {team: a}}\n  level: Strict",
			want: `supported values: "Off", "Observe", "MutualTLS", "ZeroTrust"`,
		},
		"level missing": {
			spec: "namespaces:\n- selector: {matchLabels: {team: a}}",
			want: "spec.namespaces[0].level: Required value",
		},
		"version without patch": {
			spec: `version: "1.31"`,
			want: "version must be an Istio release written MAJOR.MINOR.PATCH, for example '1.31.4'",
		},
		"version as a word": {
			spec: "version: latest",
			want: "version must be an Istio release written MAJOR.MINOR.PATCH",
		},
		"zero namespaces in progress": {
			spec: "rollout: {maxNamespacesInProgress: 0}",
			want: "rollout.maxNamespacesInProgress must be a whole number from 1 to 1000",
		},
		"negative namespaces in progress": {
			spec: "rollout: {maxNamespacesInProgress: -3}",
			want: "rollout.maxNamespacesInProgress must be a whole number from 1 to 1000",
		},
		"maxUnavailable a bare string": {
			spec: `rollout: {maxUnavailablePerNamespace: "25"}`,
			want: "rollout.maxUnavailablePerNamespace must be a number of pods of at least 1 (such as 2) or a percentage from 1% to 100% (such as '25%')",
		},
		"maxUnavailable over 100%": {
			spec: `rollout: {maxUnavailablePerNamespace: "150%"}`,
			want: "rollout.maxUnavailablePerNamespace must be a number of pods of at least 1",
		},
		"maxUnavailable zero pods": {
			spec: "rollout: {maxUnavailablePerNamespace: 0}",
			want: "rollout.maxUnavailablePerNamespace must be a number of pods of at least 1",
		},
		"issuer of another kind": {
			spec: "certificates:\n  issuerRef: {kind: VaultIssuer, name: corp-ca}",
			want: `supported values: "Issuer", "ClusterIssuer"`,
		},
		"issuer without a name": {
			spec: "certificates:\n  issuerRef: {kind: ClusterIssuer}",
			want: "spec.certificates.issuerRef.name: Required value",
		},
		"issuer name not a DNS name": {
			spec: "certificates:\n  issuerRef: {name: Corp CA}",
			want: "certificates.issuerRef.name must be a DNS name",
		},
		"same selector, different levels": {
			spec: "namespaces:\n- selector: {matchLabels: {team: a}}\n  level: Observe\n- selector: {matchLabels: {team: a}}\n  level: MutualTLS",
			want: "two namespace rules have the same selector but different levels",
		},
		"allowFrom namespace not a DNS label": {
			spec: "namespaces:\n- selector: {matchLabels: {team: a}}\n  level: ZeroTrust\n  allowFrom: [{namespace: Ingress_NS}]",
			want: "allowFrom.namespace must be a namespace name",
		},
		"plaintextPorts service not a Service name": {
			spec: "namespaces:\n- selector: {matchLabels: {team: a}}\n  level: MutualTLS\n  plaintextPorts: [{service: My_Webhook, port: 443}]",
			want: "plaintextPorts.service must be a Service name",
		},
		"plaintextPorts port out of range": {
			spec: "namespaces:\n- selector: {matchLabels: {team: a}}\n  level: MutualTLS\n  plaintextPorts: [{service: hook, port: 0}]",
			want: "plaintextPorts.port must be the Service's port number, 1 to 65535",
		},
		"chart source not a URL": {
			spec: "controlPlane: {chartSource: {repository: istio-release.storage.googleapis.com/charts}}",
			want: "controlPlane.chartSource.repository must be the http(s) URL of a Helm chart repository",
		},
		"chart source over plain http": {
			spec: "controlPlane: {chartSource: {repository: 'http://charts.example.com/istio'}}",
			want: "set controlPlane.chartSource.insecureHTTP: true for a repository inside a network you trust",
		},
		"chart source with credentials": {
			spec: "controlPlane: {chartSource: {repository: 'https://user:secret@charts.example.com/istio'}}",
			want: "without credentials in it",
		},
		"a CNI mode that is not one": {
			spec: "dataPlane: {cni: true}",
			want: `supported values: "Auto", "Enabled", "Disabled"`,
		},
		"a data plane that is not one": {
			spec: "dataPlane: {mode: Proxyless}",
			want: `supported values: "Sidecar", "Ambient"`,
		},
		"ambient mode without Istio CNI": {
			spec: "dataPlane: {mode: Ambient, cni: Disabled}",
			want: "dataPlane.mode Ambient needs Istio CNI (its node agent hands the pods' traffic to ztunnel): set dataPlane.cni to Auto or Enabled, or dataPlane.mode to Sidecar",
		},
		"an ambient rule without Istio CNI": {
			spec: "dataPlane: {cni: Disabled}\nnamespaces: [{selector: {matchLabels: {team: a}}, level: Observe, dataPlaneMode: Ambient}]",
			want: "a namespace rule with dataPlaneMode Ambient needs Istio CNI (its node agent hands the pods' traffic to ztunnel): set dataPlane.cni to Auto or Enabled",
		},
		"a waypoint for sidecars (the mesh's default)": {
			spec: "namespaces: [{selector: {matchLabels: {team: a}}, level: Observe, waypoint: true}]",
			want: "a namespace rule with waypoint: true needs ambient mode (a waypoint carries the traffic ztunnel hands it): set the rule's dataPlaneMode, or spec.dataPlane.mode, to Ambient, or remove waypoint",
		},
		"a waypoint for a rule that keeps sidecars in an ambient mesh": {
			spec: "dataPlane: {mode: Ambient}\nnamespaces: [{selector: {matchLabels: {team: a}}, level: Observe, dataPlaneMode: Sidecar, waypoint: true}]",
			want: "a namespace rule with waypoint: true needs ambient mode",
		},
		"a rule's resilience without spec.resilience": {
			spec: "namespaces: [{selector: {matchLabels: {team: a}}, level: MutualTLS, resilience: {timeouts: {request: 1m}}}]",
			want: "a namespace rule's resilience overrides spec.resilience, which is not set: set spec.resilience (resilience: {} takes every default), or remove the rule's resilience",
		},
		"a rule that skips and overrides": {
			spec: "resilience: {}\nnamespaces: [{selector: {matchLabels: {team: a}}, level: MutualTLS, resilience: {skip: true, retries: {attempts: 3}}}]",
			want: "resilience.skip opts these namespaces out of every default: remove skip to override single values, or remove the values",
		},
		"resilience from Off": {
			spec: "resilience: {fromLevel: 'Off'}",
			want: "resilience.fromLevel must be Observe, MutualTLS or ZeroTrust: at Off a namespace has no proxy to apply the defaults",
		},
		"a request timeout in days": {
			spec: "resilience: {timeouts: {request: 1d}}",
			want: "resilience.timeouts.request must be a duration in whole milliseconds (hours, minutes, seconds with up to 3 decimals, or ms) such as '15s' or '1m', or '0s' for none",
		},
		"an idle timeout of zero": {
			spec: "resilience: {timeouts: {idle: 0s}}",
			want: "resilience.timeouts.idle must be a duration of at least 1ms in whole milliseconds (hours, minutes, seconds with up to 3 decimals, or ms), such as '1h'",
		},
		"a timeout finer than a millisecond": {
			spec: "resilience: {retries: {perTryTimeout: 1.0005s}}",
			want: "resilience.retries.perTryTimeout must be a duration of at least 1ms in whole milliseconds (hours, minutes, seconds with up to 3 decimals, or ms), such as '2s'",
		},
		"too many retries": {
			spec: "resilience: {retries: {attempts: 11}}",
			want: "resilience.retries.attempts must be from 0 (no retries) to 10",
		},
		"no retries, with conditions": {
			spec: "resilience: {retries: {attempts: 0, retryOn: 5xx}}",
			want: "resilience.retries.attempts 0 turns retries off: remove perTryTimeout and retryOn, or set attempts to 1 or more",
		},
		"a retry condition with a space": {
			spec: "resilience: {retries: {retryOn: '5xx, reset'}}",
			want: "resilience.retries.retryOn must be retry conditions separated by commas, with no spaces",
		},
		"a retry condition Envoy does not know": {
			spec: "resilience: {retries: {retryOn: 'connect-failure,timeout'}}",
			want: "resilience.retries.retryOn must be retry conditions separated by commas",
		},
		"no connections at all": {
			spec: "resilience: {connectionPool: {maxConnections: 0}}",
			want: "resilience.connectionPool.maxConnections must be at least 1",
		},
		"ejecting more than all endpoints": {
			spec: "resilience: {outlierDetection: {maxEjectionPercent: 150}}",
			want: "resilience.outlierDetection.maxEjectionPercent must be a percentage from 0 to 100",
		},
		"a rule's override checked as the spec's": {
			spec: "resilience: {}\nnamespaces: [{selector: {matchLabels: {team: a}}, level: MutualTLS, resilience: {retries: {perTryTimeout: soon}}}]",
			want: "resilience.retries.perTryTimeout must be a duration of at least 1ms in whole milliseconds (hours, minutes, seconds with up to 3 decimals, or ms), such as '2s'",
		},
		"a rule's data plane that is not one": {
			spec: "namespaces: [{selector: {matchLabels: {team: a}}, level: Observe, dataPlaneMode: Envoy}]",
			want: `supported values: "Sidecar", "Ambient"`,
		},
		"unknown upgrade strategy": {
			spec: "upgrade: {strategy: BlueGreen}",
			want: `supported values: "RevisionBased", "InPlace"`,
		},
		"control-plane namespace not a DNS label": {
			spec: "controlPlane: {namespace: Istio.System}",
			want: "controlPlane.namespace must be a DNS label",
		},
		"CA duration too short": {
			spec: "certificates: {duration: 30m}",
			want: "certificates.duration must be a duration of at least 1h",
		},
		"CA duration not a duration": {
			spec: "certificates: {duration: one year}",
			want: "certificates.duration must be a duration of at least 1h",
		},
		"renewBefore not shorter than duration": {
			spec: "certificates: {duration: 24h, renewBefore: 48h}",
			want: "certificates.renewBefore must be shorter than certificates.duration",
		},
		"rootDuration with the user's issuer": {
			spec: "certificates:\n  issuerRef: {name: corp-ca}\n  rootDuration: 87600h",
			want: "certificates.rootDuration applies only to the self-signed root",
		},
		"ECDSA key of an RSA size": {
			spec: "certificates:\n  privateKey: {algorithm: ECDSA, size: 2048}",
			want: "privateKey.size must be 256, 384 or 521 for ECDSA",
		},
		"Ed25519 with a size": {
			spec: "certificates:\n  privateKey: {algorithm: Ed25519, size: 256}",
			want: "omitted for Ed25519",
		},
		"unknown key algorithm": {
			spec: "certificates:\n  privateKey: {algorithm: DSA}",
			want: `supported values: "ECDSA", "RSA", "Ed25519"`,
		},
		"values not an object": {
			spec: "controlPlane: {values: \"global.hub=foo\"}",
			want: `spec.controlPlane.values: Invalid value: "string": spec.controlPlane.values in body must be of type object`,
		},
		"soak time not a duration": {
			spec: "rollout: {soakTime: -5m}",
			want: "rollout.soakTime must be a duration such as '30m' or '1h'",
		},
		"step timeout below a second": {
			spec: "rollout: {stepTimeout: 500ms}",
			want: "rollout.stepTimeout must be a duration of at least 1s, such as '10m'",
		},
		"step timeout not a duration": {
			spec: "rollout: {stepTimeout: soon}",
			want: "rollout.stepTimeout must be a duration of at least 1s, such as '10m'",
		},
		"intermediate outlives the root": {
			spec: "certificates: {duration: 87600h, rootDuration: 43800h}",
			want: "certificates.duration must be shorter than certificates.rootDuration",
		},
		"selector with an unknown operator": {
			spec: "namespaces:\n- selector: {matchExpressions: [{key: team, operator: Equals, values: [a]}]}\n  level: Observe",
			want: `supported values: "In", "NotIn", "Exists", "DoesNotExist"`,
		},
		"selector In without values": {
			spec: "namespaces:\n- selector: {matchExpressions: [{key: team, operator: In}]}\n  level: Observe",
			want: "selector.matchExpressions[].values must be non-empty for In and NotIn",
		},
		"bake time too short to compare scrapes": {
			spec: "rollout: {bakeTime: 3s}",
			want: "rollout.bakeTime must be a duration of at least 10s, such as '5m'",
		},
		"observe time not a duration": {
			spec: "rollout: {observeTime: a while}",
			want: "rollout.observeTime must be a duration of at least 10s, such as '10m' or '24h'",
		},
		"observe time too short to see a scrape": {
			spec: "rollout: {observeTime: 2s}",
			want: "the traffic gates need a window of several scrapes",
		},
		"traffic gates neither Enforce nor Skip": {
			spec: "rollout: {trafficGates: Off}",
			want: `supported values: "Enforce", "Skip"`,
		},
		"a Prometheus URL that is not http(s)": {
			spec: "telemetry: {prometheus: {url: 'prometheus.monitoring:9090'}}",
			want: "telemetry.prometheus.url must be an http:// or https:// URL, such as 'http://prometheus.monitoring:9090'",
		},
		"a Prometheus without a URL": {
			spec: "telemetry: {prometheus: {insecureSkipVerify: true}}",
			want: `spec.telemetry.prometheus.url: Required value`,
		},
		"a token Secret without a key": {
			spec: "telemetry: {prometheus: {url: 'https://prom:9090', bearerToken: {name: prom-token}}}",
			want: `spec.telemetry.prometheus.bearerToken.key: Required value`,
		},
		"unknown field": {
			spec: "rollout: {maxInFlight: 3}",
			want: `unknown field "spec.rollout.maxInFlight"`,
		},
	}
	ctx := context.Background()
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			obj := object(t, "invalid", tc.spec)
			err := k8s.Create(ctx, obj, client.FieldValidation("Strict"))
			if err == nil {
				_ = k8s.Delete(ctx, obj)
				t.Fatalf("the API server accepted an invalid spec:\n%s", tc.spec)
			}
			if !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) {
				t.Fatalf("want an Invalid or BadRequest error, got %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("message does not say what to write:\n got: %v\nwant: …%s…", err, tc.want)
			}
		})
	}
}

func TestControlPlaneNamespaceIsImmutable(t *testing.T) {
	tests := map[string]struct {
		from, to string // "" is unset, which means istio-system
		refused  bool
	}{
		"set to another":       {from: "mesh-system", to: "other-system", refused: true},
		"unset to set":         {from: "", to: "mesh-system", refused: true},
		"set to unset":         {from: "mesh-system", to: "", refused: true},
		"unset to its default": {from: "", to: "istio-system"},
		"unchanged":            {from: "mesh-system", to: "mesh-system"},
	}
	ctx := context.Background()
	i := 0
	for name, tc := range tests {
		i++
		t.Run(name, func(t *testing.T) {
			spec := "{}"
			if tc.from != "" {
				spec = "controlPlane: {namespace: " + tc.from + "}"
			}
			obj := object(t, fmt.Sprintf("immutable-ns-%d", i), spec)
			if err := k8s.Create(ctx, obj); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = k8s.Delete(ctx, obj) })
			if tc.to == "" {
				unstructured.RemoveNestedField(obj.Object, "spec", "controlPlane", "namespace")
			} else if err := unstructured.SetNestedField(obj.Object, tc.to, "spec", "controlPlane", "namespace"); err != nil {
				t.Fatal(err)
			}
			err := k8s.Update(ctx, obj)
			if tc.refused && (err == nil || !strings.Contains(err.Error(), "controlPlane.namespace cannot be changed")) {
				t.Fatalf("want the change refused with a message saying so, got %v", err)
			}
			if !tc.refused && err != nil {
				t.Fatalf("want the update accepted, got %v", err)
			}
		})
	}
}

func TestValidSpecsRoundTrip(t *testing.T) {
	tests := map[string]struct {
		spec string
		// defaults are fields the API server adds, as YAML merged over spec for comparison.
		defaults string
	}{
		"an explicitly empty version": {
			spec:     `version: ""`,
			defaults: "rollout: {maxNamespacesInProgress: 2, maxUnavailablePerNamespace: 25%, soakTime: 1h, stepTimeout: 10m, observeTime: 10m, bakeTime: 5m, trafficGates: Enforce}\ndataPlane: {cni: Auto, nativeSidecars: Auto, mode: Sidecar}\ncontrolPlane: {}",
		},
		"waypoints in ambient mode, mesh-wide or by the rule": {
			spec:     "dataPlane: {mode: Ambient}\nnamespaces: [{selector: {matchLabels: {team: a}}, level: ZeroTrust, waypoint: true}]",
			defaults: "rollout: {maxNamespacesInProgress: 2, maxUnavailablePerNamespace: 25%, soakTime: 1h, stepTimeout: 10m, observeTime: 10m, bakeTime: 5m, trafficGates: Enforce}\ndataPlane: {cni: Auto, nativeSidecars: Auto}\ncontrolPlane: {}",
		},
		"a waypoint by an ambient rule of a sidecar mesh": {
			spec:     "namespaces: [{selector: {matchLabels: {team: a}}, level: Observe, dataPlaneMode: Ambient, waypoint: true}]",
			defaults: "rollout: {maxNamespacesInProgress: 2, maxUnavailablePerNamespace: 25%, soakTime: 1h, stepTimeout: 10m, observeTime: 10m, bakeTime: 5m, trafficGates: Enforce}\ndataPlane: {cni: Auto, nativeSidecars: Auto, mode: Sidecar}\ncontrolPlane: {}",
		},
		"empty spec gets the rollout defaults": {
			spec:     "{}",
			defaults: "rollout: {maxNamespacesInProgress: 2, maxUnavailablePerNamespace: 25%, soakTime: 1h, stepTimeout: 10m, observeTime: 10m, bakeTime: 5m, trafficGates: Enforce}\ndataPlane: {cni: Auto, nativeSidecars: Auto, mode: Sidecar}\ncontrolPlane: {}",
		},
		"the sample's shape": {
			spec: `
version: 1.31.4
certificates: {duration: 8760h, renewBefore: 720h, rootDuration: 87600h, privateKey: {algorithm: ECDSA, size: 384}}
controlPlane:
  namespace: istio-system
  values: {global: {logging: {level: "default:debug"}}, pilot: {autoscaleEnabled: false, replicaCount: 2}}
rollout: {paused: true, maxNamespacesInProgress: 5, maxUnavailablePerNamespace: 3, soakTime: 30m, stepTimeout: 5m, observeTime: 1h, bakeTime: 15m, trafficGates: Skip}
namespaces:
- selector: {matchLabels: {team: payments}}
  level: MutualTLS
  allowFrom: [{namespace: ingress}, {namespace: monitoring}]
  plaintextPorts: [{service: payments-webhook, port: 443}]
- selector: {matchExpressions: [{key: tier, operator: In, values: [web, api]}]}
  level: ZeroTrust
- selector: {}
  level: Observe
`,
			defaults: "dataPlane: {cni: Auto, nativeSidecars: Auto, mode: Sidecar}",
		},
		"Istio CNI on, classic sidecars": {
			spec:     "dataPlane: {cni: Enabled, nativeSidecars: Disabled}",
			defaults: "rollout: {maxNamespacesInProgress: 2, maxUnavailablePerNamespace: 25%, soakTime: 1h, stepTimeout: 10m, observeTime: 10m, bakeTime: 5m, trafficGates: Enforce}\ndataPlane: {mode: Sidecar}\ncontrolPlane: {}",
		},
		"ambient mode": {
			spec:     "dataPlane: {mode: Ambient}",
			defaults: "rollout: {maxNamespacesInProgress: 2, maxUnavailablePerNamespace: 25%, soakTime: 1h, stepTimeout: 10m, observeTime: 10m, bakeTime: 5m, trafficGates: Enforce}\ndataPlane: {cni: Auto, nativeSidecars: Auto}\ncontrolPlane: {}",
		},
		"one rule in ambient mode": {
			spec:     "namespaces: [{selector: {matchLabels: {team: a}}, level: MutualTLS, dataPlaneMode: Ambient}, {selector: {matchLabels: {team: b}}, level: MutualTLS, dataPlaneMode: Sidecar}]",
			defaults: "rollout: {maxNamespacesInProgress: 2, maxUnavailablePerNamespace: 25%, soakTime: 1h, stepTimeout: 10m, observeTime: 10m, bakeTime: 5m, trafficGates: Enforce}\ndataPlane: {cni: Auto, nativeSidecars: Auto, mode: Sidecar}\ncontrolPlane: {}",
		},
		"ambient mode with Istio CNI Enabled": {
			spec:     "dataPlane: {mode: Ambient, cni: Enabled}",
			defaults: "rollout: {maxNamespacesInProgress: 2, maxUnavailablePerNamespace: 25%, soakTime: 1h, stepTimeout: 10m, observeTime: 10m, bakeTime: 5m, trafficGates: Enforce}\ndataPlane: {nativeSidecars: Auto}\ncontrolPlane: {}",
		},
		"traffic read from a Prometheus over TLS with a token": {
			spec:     "telemetry: {prometheus: {url: 'https://thanos.monitoring:10902', bearerToken: {name: prom, key: token}, ca: {name: prom, key: ca.crt}}}",
			defaults: "rollout: {maxNamespacesInProgress: 2, maxUnavailablePerNamespace: 25%, soakTime: 1h, stepTimeout: 10m, observeTime: 10m, bakeTime: 5m, trafficGates: Enforce}\ndataPlane: {cni: Auto, nativeSidecars: Auto, mode: Sidecar}\ncontrolPlane: {}",
		},
		"an upgrade from a chart repository": {
			spec:     "version: 1.32.1\nupgrade: {strategy: RevisionBased}\ncontrolPlane: {chartSource: {repository: 'https://istio-release.storage.googleapis.com/charts'}}",
			defaults: "rollout: {maxNamespacesInProgress: 2, maxUnavailablePerNamespace: 25%, soakTime: 1h, stepTimeout: 10m, observeTime: 10m, bakeTime: 5m, trafficGates: Enforce}\ndataPlane: {cni: Auto, nativeSidecars: Auto, mode: Sidecar}",
		},
		"plain http, allowed explicitly": {
			spec:     "version: 1.32.1\ncontrolPlane: {chartSource: {repository: 'http://charts.internal/istio', insecureHTTP: true}}",
			defaults: "rollout: {maxNamespacesInProgress: 2, maxUnavailablePerNamespace: 25%, soakTime: 1h, stepTimeout: 10m, observeTime: 10m, bakeTime: 5m, trafficGates: Enforce}\ndataPlane: {cni: Auto, nativeSidecars: Auto, mode: Sidecar}",
		},
		"an in-place upgrade from an OCI registry": {
			spec:     "version: 1.32.1\nupgrade: {strategy: InPlace}\ncontrolPlane: {chartSource: {repository: 'oci://registry.example.com/istio'}}",
			defaults: "rollout: {maxNamespacesInProgress: 2, maxUnavailablePerNamespace: 25%, soakTime: 1h, stepTimeout: 10m, observeTime: 10m, bakeTime: 5m, trafficGates: Enforce}\ndataPlane: {cni: Auto, nativeSidecars: Auto, mode: Sidecar}",
		},
		"the user's cluster issuer": {
			spec:     "certificates:\n  issuerRef: {name: vault-issuer}\n  privateKey: {algorithm: RSA, size: 4096}",
			defaults: "certificates: {issuerRef: {kind: ClusterIssuer}}\nrollout: {maxNamespacesInProgress: 2, maxUnavailablePerNamespace: 25%, soakTime: 1h, stepTimeout: 10m, observeTime: 10m, bakeTime: 5m, trafficGates: Enforce}\ndataPlane: {cni: Auto, nativeSidecars: Auto, mode: Sidecar}\ncontrolPlane: {}",
		},
		"a namespaced issuer and Ed25519": {
			spec:     "certificates:\n  issuerRef: {kind: Issuer, name: corp.ca-1}\n  privateKey: {algorithm: Ed25519}",
			defaults: "rollout: {maxNamespacesInProgress: 2, maxUnavailablePerNamespace: 25%, soakTime: 1h, stepTimeout: 10m, observeTime: 10m, bakeTime: 5m, trafficGates: Enforce}\ndataPlane: {cni: Auto, nativeSidecars: Auto, mode: Sidecar}\ncontrolPlane: {}",
		},
		"resilience with every default": {
			spec:     "resilience: {}\nnamespaces: [{selector: {matchLabels: {team: a}}, level: MutualTLS}]",
			defaults: "rollout: {maxNamespacesInProgress: 2, maxUnavailablePerNamespace: 25%, soakTime: 1h, stepTimeout: 10m, observeTime: 10m, bakeTime: 5m, trafficGates: Enforce}\ndataPlane: {cni: Auto, nativeSidecars: Auto, mode: Sidecar}\ncontrolPlane: {}",
		},
		"resilience with every value, a rule's override and a rule's opt-out": {
			spec: `
resilience:
  fromLevel: ZeroTrust
  timeouts: {request: 30s, idle: 30m, connect: 2s}
  retries: {attempts: 3, perTryTimeout: 5s, retryOn: 'connect-failure,refused-stream,unavailable,cancelled,503'}
  connectionPool: {maxConnections: 100, maxPendingRequests: 50, maxRequests: 200}
  outlierDetection: {consecutive5xxErrors: 7, interval: 5s, baseEjectionTime: 1m, maxEjectionPercent: 50}
namespaces:
- selector: {matchLabels: {team: batch}}
  level: MutualTLS
  resilience: {timeouts: {request: 0s}, retries: {attempts: 0}}
- selector: {matchLabels: {team: legacy}}
  level: MutualTLS
  resilience: {skip: true}
`,
			defaults: "rollout: {maxNamespacesInProgress: 2, maxUnavailablePerNamespace: 25%, soakTime: 1h, stepTimeout: 10m, observeTime: 10m, bakeTime: 5m, trafficGates: Enforce}\ndataPlane: {cni: Auto, nativeSidecars: Auto, mode: Sidecar}\ncontrolPlane: {}",
		},
		"a rule that opts out with no spec.resilience": {
			spec:     "namespaces: [{selector: {matchLabels: {team: a}}, level: MutualTLS, resilience: {skip: true}}]",
			defaults: "rollout: {maxNamespacesInProgress: 2, maxUnavailablePerNamespace: 25%, soakTime: 1h, stepTimeout: 10m, observeTime: 10m, bakeTime: 5m, trafficGates: Enforce}\ndataPlane: {cni: Auto, nativeSidecars: Auto, mode: Sidecar}\ncontrolPlane: {}",
		},
		"same selector, same level twice": {
			spec:     "namespaces:\n- selector: {matchLabels: {team: a}}\n  level: Observe\n- selector: {matchLabels: {team: a}}\n  level: Observe",
			defaults: "rollout: {maxNamespacesInProgress: 2, maxUnavailablePerNamespace: 25%, soakTime: 1h, stepTimeout: 10m, observeTime: 10m, bakeTime: 5m, trafficGates: Enforce}\ndataPlane: {cni: Auto, nativeSidecars: Auto, mode: Sidecar}\ncontrolPlane: {}",
		},
	}
	ctx := context.Background()
	i := 0
	for name, tc := range tests {
		i++
		t.Run(name, func(t *testing.T) {
			obj := object(t, fmt.Sprintf("valid-%d", i), tc.spec)
			if err := k8s.Create(ctx, obj, client.FieldValidation("Strict")); err != nil {
				t.Fatalf("a valid spec was refused: %v", err)
			}
			t.Cleanup(func() { _ = k8s.Delete(ctx, obj) })

			got := &unstructured.Unstructured{}
			got.SetGroupVersionKind(obj.GroupVersionKind())
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), got); err != nil {
				t.Fatal(err)
			}
			want := object(t, "x", tc.spec).Object["spec"]
			if tc.defaults != "" {
				want = merge(want, object(t, "x", tc.defaults).Object["spec"])
			}
			wantJSON, _ := yaml.Marshal(want)
			gotJSON, _ := yaml.Marshal(got.Object["spec"])
			if string(wantJSON) != string(gotJSON) {
				t.Fatalf("spec did not round-trip unchanged:\n got:\n%s\nwant:\n%s", gotJSON, wantJSON)
			}

			// The typed API reads it back too: no field of the schema is missing in the Go types.
			typed := &meshv1.MeshInstallation{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(got.Object, typed, true); err != nil {
				t.Fatalf("the Go types cannot hold what the API server stored: %v", err)
			}
		})
	}
}

// merge overlays b onto a, recursively for maps.
func merge(a, b any) any {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if !aok || !bok {
		return b
	}
	out := map[string]any{}
	for k, v := range am {
		out[k] = v
	}
	for k, v := range bm {
		if av, ok := out[k]; ok {
			out[k] = merge(av, v)
		} else {
			out[k] = v
		}
	}
	return out
}
