package revision

import (
	"reflect"
	"testing"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	corev1 "k8s.io/api/core/v1"
)

func TestActive(t *testing.T) {
	a := Installed{Name: Default, Version: "1.31.4"}
	b := Installed{Name: "1-31-5", Version: "1.31.5"}
	tests := map[string]struct {
		version    string
		strategy   meshv1.UpgradeStrategy
		installed  []Installed
		lastActive string
		want       string
	}{
		"first installation":                          {version: "1.31.4", want: Default},
		"steady state":                                {version: "1.31.4", installed: []Installed{a}, lastActive: Default, want: Default},
		"an upgrade installs a new revision":          {version: "1.31.5", installed: []Installed{a}, lastActive: Default, want: "1-31-5"},
		"the upgrade's revision once installed":       {version: "1.31.5", installed: []Installed{a, b}, lastActive: "1-31-5", want: "1-31-5"},
		"an upgrade set back is the old revision":     {version: "1.31.4", installed: []Installed{a, b}, lastActive: "1-31-5", want: Default},
		"in place keeps the revision":                 {version: "1.31.5", strategy: meshv1.UpgradeInPlace, installed: []Installed{a}, lastActive: Default, want: Default},
		"in place during a move keeps the active one": {version: "1.31.6", strategy: meshv1.UpgradeInPlace, installed: []Installed{a, b}, lastActive: "1-31-5", want: "1-31-5"},
		"istiod deleted: put back as it was":          {version: "1.31.5", lastActive: "1-31-5", want: "1-31-5"},
		"an unknown version is never matched":         {version: "1.31.5", installed: []Installed{{Name: Default}}, want: "1-31-5"},
		"upgrading an upgraded mesh":                  {version: "1.32.0", installed: []Installed{b}, lastActive: "1-31-5", want: "1-32-0"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Active(tc.version, tc.strategy, tc.installed, tc.lastActive); got != tc.want {
				t.Errorf("Active = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestVersionOf(t *testing.T) {
	tests := map[string]struct {
		label, status, image, fallback, want string
	}{
		"label first":            {label: "1.31.5", status: "1.31.4", image: "docker.io/istio/pilot:1.31.3", want: "1.31.5"},
		"then status":            {status: "1.31.4", image: "docker.io/istio/pilot:1.31.3", want: "1.31.4"},
		"then the image tag":     {image: "docker.io/istio/pilot:1.31.3", fallback: "1.31.0", want: "1.31.3"},
		"a distroless variant":   {image: "docker.io/istio/pilot:1.31.3-distroless", want: "1.31.3"},
		"a digest: the fallback": {image: "docker.io/istio/pilot@sha256:0123abcd", fallback: "1.31.4", want: "1.31.4"},
		"a registry port only":   {image: "registry:5000/istio/pilot", fallback: "1.31.4", want: "1.31.4"},
		"a tag not a version":    {image: "docker.io/istio/pilot:latest", want: ""},
		"nothing":                {want: ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := VersionOf(tc.label, tc.status, tc.image, tc.fallback); got != tc.want {
				t.Errorf("VersionOf = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCount(t *testing.T) {
	got := Count(map[string]map[string]string{
		"shop":   {Label: "1-31-5"},
		"cart":   {Label: Default},
		"legacy": {LegacyInjectionLabel: "enabled", Label: "1-31-5"},
		"off":    {LegacyInjectionLabel: "disabled"},
		"none":   nil,
		"moving": {Label: "1-31-5"},
	}, map[string][]string{"shop": {"1-31-5", "1-31-5"}, "cart": {Default}, "batch": {Default}},
		map[string][]string{"moving": {"1-31-5", Default}})
	want := map[string]Usage{
		"1-31-5": {Namespaces: 2, Pods: 2, Where: []string{"moving", "shop"}},
		Default:  {Namespaces: 3, Pods: 2, Where: []string{"cart", "legacy", "moving"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Count = %+v, want %+v", got, want)
	}
	if !(Usage{}).Unused() || want[Default].Unused() {
		t.Error("Unused is wrong")
	}
}

func TestValidator(t *testing.T) {
	up := Installed{Name: Default, Version: "1.31.4", Available: true}
	starting := Installed{Name: "1-31-5", Version: "1.31.5"}
	serving := Installed{Name: "1-31-5", Version: "1.31.5", Available: true}
	tests := map[string]struct {
		active     string
		installed  []Installed
		lastActive string
		want       string
	}{
		"first installation":                           {active: Default, want: Default},
		"the new revision is starting: the old serves": {active: "1-31-5", installed: []Installed{up, starting}, lastActive: Default, want: Default},
		"the new revision serves":                      {active: "1-31-5", installed: []Installed{up, serving}, lastActive: Default, want: "1-31-5"},
		"nothing serves: the active one":               {active: "1-31-5", installed: []Installed{starting}, want: "1-31-5"},
		"status lost: whichever serves":                {active: "1-31-5", installed: []Installed{up, starting}, want: Default},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Validator(tc.active, tc.installed, tc.lastActive); got != tc.want {
				t.Errorf("Validator = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNewer(t *testing.T) {
	installed := []Installed{{Name: Default, Version: "1.31.4"}, {Name: "1-31-10", Version: "1.31.10"}, {Name: "canary"}}
	if got := Newer(Default, installed); !reflect.DeepEqual(got, []string{"1-31-10"}) {
		t.Errorf("Newer(default) = %v, want 1-31-10 (compared as numbers, unknown versions left out)", got)
	}
	if got := Newer("1-31-10", installed); got != nil {
		t.Errorf("Newer(1-31-10) = %v, want none", got)
	}
	if got := Newer("gone", installed); got != nil {
		t.Errorf("Newer of a revision not installed = %v, want none", got)
	}
}

func TestProxyless(t *testing.T) {
	proxy := []corev1.Container{{Name: "app"}, {Name: ProxyContainer}}
	tests := map[string]struct {
		containers []corev1.Container
		templates  string
		want       bool
	}{
		"Envoy's sidecar, the default template": {containers: proxy},
		"Envoy's sidecar, named":                {containers: proxy, templates: "sidecar"},
		"the grpc-agent template":               {containers: proxy, templates: GRPCAgentTemplate, want: true},
		"grpc-agent among others, spaced":       {containers: proxy, templates: "sidecar, grpc-agent", want: true},
		"asks for grpc-agent, not injected":     {containers: []corev1.Container{{Name: "app"}}, templates: GRPCAgentTemplate},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := &corev1.Pod{Spec: corev1.PodSpec{Containers: tc.containers}}
			if tc.templates != "" {
				p.Annotations = map[string]string{TemplatesAnnotation: tc.templates}
			}
			if got := Proxyless(p); got != tc.want {
				t.Errorf("Proxyless = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestLiveTrust: only Envoy's sidecar whose agent takes its ProxyConfig over xDS
// (PROXY_CONFIG_XDS_AGENT=true, on the proxy container, as a container or a native sidecar)
// trusts a new root while it runs.
func TestLiveTrust(t *testing.T) {
	on := []corev1.EnvVar{{Name: ProxyConfigXDSAgentEnv, Value: "true"}}
	tests := map[string]struct {
		containers, init []corev1.Container
		templates        string
		want             bool
	}{
		"sidecar with the variable":        {containers: []corev1.Container{{Name: "app"}, {Name: ProxyContainer, Env: on}}, want: true},
		"native sidecar with the variable": {containers: []corev1.Container{{Name: "app"}}, init: []corev1.Container{{Name: ProxyContainer, Env: on}}, want: true},
		"sidecar without it":               {containers: []corev1.Container{{Name: "app"}, {Name: ProxyContainer}}},
		"sidecar with it false":            {containers: []corev1.Container{{Name: "app"}, {Name: ProxyContainer, Env: []corev1.EnvVar{{Name: ProxyConfigXDSAgentEnv, Value: "false"}}}}},
		"on the application only":          {containers: []corev1.Container{{Name: "app", Env: on}, {Name: ProxyContainer}}},
		"proxyless gRPC, even with it":     {containers: []corev1.Container{{Name: "app"}, {Name: ProxyContainer, Env: on}}, templates: GRPCAgentTemplate},
		"no proxy":                         {containers: []corev1.Container{{Name: "app", Env: on}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := &corev1.Pod{Spec: corev1.PodSpec{Containers: tc.containers, InitContainers: tc.init}}
			if tc.templates != "" {
				p.Annotations = map[string]string{TemplatesAnnotation: tc.templates}
			}
			if got := LiveTrust(p); got != tc.want {
				t.Errorf("LiveTrust = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestNativeSidecar: the proxy is native only as an init container with restartPolicy Always,
// the shape Istio's injector gives it where native sidecars are on (its injection template's
// initContainers entry for istio-proxy); a classic proxy, or an init container without the
// policy (istio-init, istio-validation), is not.
func TestNativeSidecar(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	tests := map[string]struct {
		pod  corev1.PodSpec
		want bool
	}{
		"native": {pod: corev1.PodSpec{InitContainers: []corev1.Container{{Name: "istio-validation"}, {Name: ProxyContainer, RestartPolicy: &always}}}, want: true},
		"classic": {pod: corev1.PodSpec{InitContainers: []corev1.Container{{Name: "istio-init"}},
			Containers: []corev1.Container{{Name: "app"}, {Name: ProxyContainer}}}},
		"an init container named so, without the policy": {pod: corev1.PodSpec{InitContainers: []corev1.Container{{Name: ProxyContainer}}}},
		"another sidecar": {pod: corev1.PodSpec{InitContainers: []corev1.Container{{Name: "log-shipper", RestartPolicy: &always}}}},
		"none":            {pod: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := NativeSidecar(&corev1.Pod{Spec: tc.pod}); got != tc.want {
				t.Errorf("NativeSidecar = %v, want %v", got, tc.want)
			}
		})
	}
}
