// Package bundle checks the OLM bundle in bundle/: that it is what `make bundle` writes from
// config/manifests now, that operator-framework's validators (the ones OperatorHub runs) accept
// it, and that it installs the operator with the same RBAC and arguments as kustomize and Helm.
package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/operator-framework/api/pkg/manifests"
	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	"github.com/operator-framework/api/pkg/validation"
	interfaces "github.com/operator-framework/api/pkg/validation/interfaces"
	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/meshwright/meshwright/internal/release"
	"github.com/meshwright/meshwright/internal/render"
	"github.com/meshwright/meshwright/test/framework"
)

// repoRoot is the repository root, seen from test/bundle.
var repoRoot = func() string {
	p, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return p
}()

// generatedFiles reads every file the generator owns under dir: bundle/ (but its README) and
// bundle.Dockerfile, by slash path relative to dir.
func generatedFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(filepath.Join(dir, "bundle"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if rel = filepath.ToSlash(rel); rel == "bundle/README.md" {
			return nil
		}
		files[rel], err = os.ReadFile(path)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "bundle.Dockerfile")); err == nil {
		files["bundle.Dockerfile"] = b
	} else if !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return files
}

// TestBundleIsUpToDate: the committed bundle is byte for byte what the generator writes from
// config/manifests now, with no file missing or left over.
func TestBundleIsUpToDate(t *testing.T) {
	out := t.TempDir()
	cmd := exec.Command("go", "run", "../cmd/bundlegen", "-root", repoRoot, "-out", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bundlegen: %v\n%s", err, b)
	}
	want, got := generatedFiles(t, out), generatedFiles(t, repoRoot)
	var stale []string
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			stale = append(stale, p+" is missing")
		case !bytes.Equal(g, w):
			stale = append(stale, p+" differs")
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			stale = append(stale, p+" is not generated any more")
		}
	}
	sort.Strings(stale)
	if len(stale) > 0 {
		t.Errorf("the bundle is out of date: run `make bundle`:\n  %s", strings.Join(stale, "\n  "))
	}
}

// TestBundleValidates runs the validators OperatorHub and `operator-sdk bundle validate
// --select-optional suite=operatorframework` run. Any error and any warning fails the test.
func TestBundleValidates(t *testing.T) {
	b, err := manifests.GetBundleFromDir(filepath.Join(repoRoot, "bundle"))
	if err != nil {
		t.Fatalf("loading bundle/: %v", err)
	}
	objs := []any{b, b.CSV, map[string]string{"k8s-version": "1.30"}}
	for _, crd := range b.V1CRDs {
		objs = append(objs, crd)
	}
	if len(b.V1CRDs) == 0 || b.CSV == nil {
		t.Fatalf("bundle/ has CSV %v and %d CRDs; want a CSV and the CRDs", b.CSV != nil, len(b.V1CRDs))
	}
	for _, tc := range []struct {
		name      string
		validator interfaces.Validator
	}{
		{"Bundle", validation.BundleValidator},
		{"ClusterServiceVersion", validation.ClusterServiceVersionValidator},
		{"CustomResourceDefinition", validation.CustomResourceDefinitionValidator},
		{"OperatorHubV2", validation.OperatorHubV2Validator},
		{"GoodPractices", validation.GoodPracticesValidator},
		{"StandardCapabilities", validation.StandardCapabilitiesValidator},
		{"StandardCategories", validation.StandardCategoriesValidator},
	} {
		t.Run(tc.name, func(t *testing.T) {
			results := tc.validator.Validate(objs...)
			for _, r := range results {
				for _, e := range r.Errors {
					t.Errorf("error (%s): %v", r.Name, e)
				}
				for _, w := range r.Warnings {
					t.Errorf("warning (%s): %v", r.Name, w)
				}
			}
		})
	}
}

// readObjects decodes the YAML documents of a file under the repository root into objects of
// type T, keeping those of the given kind.
func readObjects[T any](t *testing.T, path, kind string) []T {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, path))
	if err != nil {
		t.Fatal(err)
	}
	var out []T
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		var raw map[string]any
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			t.Fatalf("%s: %v", path, err)
		}
		if raw["kind"] != kind {
			continue
		}
		b, err := json.Marshal(raw)
		if err != nil {
			t.Fatal(err)
		}
		var obj T
		if err := json.Unmarshal(b, &obj); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, obj)
	}
}

// rulesIn returns the rules of the roles of the kind in a file (a Role decodes as a ClusterRole).
func rulesIn(t *testing.T, path, kind string) []rbacv1.PolicyRule {
	t.Helper()
	var rules []rbacv1.PolicyRule
	for _, r := range readObjects[rbacv1.ClusterRole](t, path, kind) {
		rules = append(rules, r.Rules...)
	}
	if len(rules) == 0 {
		t.Fatalf("%s has no %s rules", path, kind)
	}
	return rules
}

// crdWrites are the grants on CRDs that only --istio-crds=managed needs.
var crdWrites = []string{
	"apiextensions.k8s.io/customresourcedefinitions:create", "apiextensions.k8s.io/customresourcedefinitions:delete",
	"apiextensions.k8s.io/customresourcedefinitions:patch", "apiextensions.k8s.io/customresourcedefinitions:update",
}

// TestBundleInstallsTheSameOperator: the CSV's install strategy grants what kustomize and the
// Helm chart grant (the chart's rules are config/rbac/role.yaml, which the e2e distribution test
// checks) but the writes on CRDs, to the Deployment's ServiceAccount, with no wildcard; and runs
// the container with config/manager's command and arguments plus --istio-crds=external: OLM
// installs Istio's CRDs from the bundle, which owns every one of them.
func TestBundleInstallsTheSameOperator(t *testing.T) {
	csvs := readObjects[operatorsv1alpha1.ClusterServiceVersion](t, "bundle/manifests/meshwright.clusterserviceversion.yaml", "ClusterServiceVersion")
	if len(csvs) != 1 {
		t.Fatalf("want one CSV, got %d", len(csvs))
	}
	strategy := csvs[0].Spec.InstallStrategy.StrategySpec
	if len(strategy.DeploymentSpecs) != 1 {
		t.Fatalf("want one Deployment in the install strategy, got %d", len(strategy.DeploymentSpecs))
	}
	pod := strategy.DeploymentSpecs[0].Spec.Template.Spec
	sa := pod.ServiceAccountName

	for _, tc := range []struct {
		name  string
		perms []operatorsv1alpha1.StrategyDeploymentPermissions
		want  []rbacv1.PolicyRule
	}{
		{"clusterPermissions", strategy.ClusterPermissions, slices.Concat(
			rulesIn(t, "config/rbac/role.yaml", "ClusterRole"),
			rulesIn(t, "config/rbac/metrics_auth_role.yaml", "ClusterRole"))},
		{"permissions", strategy.Permissions, rulesIn(t, "config/rbac/leader_election_role.yaml", "Role")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.perms) != 1 || tc.perms[0].ServiceAccountName != sa {
				t.Fatalf("want one entry for the Deployment's ServiceAccount %q, got %+v", sa, tc.perms)
			}
			got, want := framework.FlatRules(tc.perms[0].Rules), framework.FlatRules(tc.want)
			want = slices.DeleteFunc(want, func(r string) bool { return slices.Contains(crdWrites, r) })
			if !slices.Equal(got, want) {
				t.Errorf("the CSV grants\n  %v\nwant exactly\n  %v", got, want)
			}
			granted := framework.ChartGranted(t)
			for _, r := range got {
				if strings.Contains(r, "*") && !granted[r] {
					t.Errorf("wildcard rule %s, which no role of Istio's charts grants", r)
				}
			}
		})
	}

	deps := readObjects[appsv1.Deployment](t, "config/manager/manager.yaml", "Deployment")
	if len(deps) != 1 {
		t.Fatalf("want one Deployment in config/manager/manager.yaml, got %d", len(deps))
	}
	want := deps[0].Spec.Template.Spec.Containers
	if len(pod.Containers) != len(want) {
		t.Fatalf("the CSV's Deployment has %d containers, config/manager %d", len(pod.Containers), len(want))
	}
	for i, c := range pod.Containers {
		wantArgs := append(slices.Clone(want[i].Args), "--istio-crds=external")
		if c.Name != want[i].Name || !slices.Equal(c.Args, wantArgs) || !slices.Equal(c.Command, want[i].Command) {
			t.Errorf("container %d: the CSV runs %s %v %v; config/manager runs %s %v %v",
				i, c.Name, c.Command, c.Args, want[i].Name, want[i].Command, wantArgs)
		}
	}

	// Every CRD of the Istio release is in the bundle and owned by the CSV, so OLM installs it.
	istioCRDs, err := render.CRDs(release.DefaultIstioVersion)
	if err != nil {
		t.Fatal(err)
	}
	for _, crd := range istioCRDs {
		if !slices.ContainsFunc(csvs[0].Spec.CustomResourceDefinitions.Owned, func(o operatorsv1alpha1.CRDDescription) bool { return o.Name == crd.GetName() }) {
			t.Errorf("the CSV does not own Istio's CRD %s", crd.GetName())
		}
	}

	// Disconnected installs mirror relatedImages: they must name the image the Deployment runs
	// (also the containerImage OperatorHub shows) and the Istio images the operator deploys.
	image := csvs[0].Annotations["containerImage"]
	if pod.Containers[0].Image != image {
		t.Errorf("the Deployment runs %s, the containerImage annotation says %s", pod.Containers[0].Image, image)
	}
	var related []string
	for _, r := range csvs[0].Spec.RelatedImages {
		related = append(related, r.Image)
	}
	wantRelated := []string{image, render.Hub + "/pilot:" + release.DefaultIstioVersion, render.Hub + "/proxyv2:" + release.DefaultIstioVersion}
	if !slices.Equal(related, wantRelated) {
		t.Errorf("relatedImages = %v, want %v", related, wantRelated)
	}
}

// TestBundlePinsTheImageByDigest: with -digest (make bundle IMG_DIGEST=sha256:…), the bundle
// names the operator image by digest everywhere OLM reads it (the install strategy, the
// containerImage annotation, relatedImages), so what OLM runs is exactly what was released; a
// value that is not a digest is refused with what to write.
func TestBundlePinsTheImageByDigest(t *testing.T) {
	const dgst = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := map[string]struct {
		args    []string
		want    string // the image every place names; "" for a refusal
		message string
	}{
		"the published repository": {args: []string{"-digest", dgst}, want: "ghcr.io/meshwright/meshwright@" + dgst},
		"an image of the user's, its tag replaced": {args: []string{"-image", "registry.example:5000/mw/operator:1.2.3", "-digest", dgst},
			want: "registry.example:5000/mw/operator@" + dgst},
		"not a digest": {args: []string{"-digest", "latest"}, message: "is not an image digest (write sha256: and 64 hex digits"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			out := t.TempDir()
			cmd := exec.CommandContext(t.Context(), "go", append([]string{"run", "../cmd/bundlegen", "-root", repoRoot, "-out", out}, tc.args...)...)
			b, err := cmd.CombinedOutput()
			if tc.want == "" {
				if err == nil || !strings.Contains(string(b), tc.message) {
					t.Fatalf("bundlegen %v: %v\n%s\nwant a refusal saying %q", tc.args, err, b, tc.message)
				}
				return
			}
			if err != nil {
				t.Fatalf("bundlegen: %v\n%s", err, b)
			}
			csv := string(generatedFiles(t, out)["bundle/manifests/meshwright.clusterserviceversion.yaml"])
			if n := strings.Count(csv, tc.want); n != 3 {
				t.Errorf("the CSV names %s %d times, want 3 (install strategy, containerImage, relatedImages)", tc.want, n)
			}
			if strings.Contains(csv, "meshwright:0.1.0") {
				t.Error("the CSV still names the operator image by tag")
			}
		})
	}
}
