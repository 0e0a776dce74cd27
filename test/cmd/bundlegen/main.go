// Command bundlegen writes the OLM bundle (registry+v1) that OperatorHub takes: bundle/manifests,
// bundle/metadata, bundle/tests/scorecard and bundle.Dockerfile. Its input is the output of
// `kustomize build config/manifests` (the hand-written CSV base, config/default and the samples),
// so the bundle installs exactly what `make deploy` does, under OLM's control. `make bundle` runs
// it; test/bundle checks that the committed bundle is what it writes now.
//
// The output is deterministic: objects and rules keep the order kustomize gives them, maps are
// written with sorted keys, and nothing depends on the clock or the environment.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/blang/semver/v4"
	"github.com/opencontainers/go-digest"
	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/meshwright/meshwright/internal/release"
	"github.com/meshwright/meshwright/internal/render"
	"github.com/meshwright/meshwright/test/framework/manifest"
)

const (
	// packageName is the OLM package, and the CSV's name is packageName.v<version>.
	packageName = "meshwright"
	// channel is the only channel, and the default one: releases that are candidates for
	// stable while the API is v1alpha1 (one of OLM's recommended channel names).
	channel = "candidate"
	// imageRepository is where the operator image is published (the Helm chart's default too).
	imageRepository = "ghcr.io/meshwright/meshwright"
	// scorecardImage runs the standard scorecard tests.
	scorecardImage = "quay.io/operator-framework/scorecard-test:v1.42.0"
	// managerContainer is the operator's container in the Deployment.
	managerContainer = "manager"
)

// bundleDirs are the generated directories under bundle/; anything else there (the README) is
// left alone.
var bundleDirs = []string{"manifests", "metadata", "tests"}

// main parses the flags, generates the bundle and writes it; any failure exits 1 with the reason.
func main() {
	root := flag.String("root", ".", "the repository root")
	version := flag.String("version", "0.1.0", "the operator version (semver) the bundle is for")
	image := flag.String("image", "", "the operator image (default "+imageRepository+":<version>)")
	digest := flag.String("digest", "", "the operator image's digest (sha256:…): the bundle then names the image by digest, not tag, so what OLM runs is what was released")
	out := flag.String("out", "", "where to write bundle/ and bundle.Dockerfile (default: -root)")
	flag.Parse()
	ref, err := imageRef(*image, *version, *digest)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bundlegen:", err)
		os.Exit(2)
	}
	*image = ref
	if *out == "" {
		*out = *root
	}
	files, err := generate(*root, *version, *image)
	if err == nil {
		err = write(*out, files)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bundlegen:", err)
		os.Exit(1)
	}
}

// imageRef is the operator image the bundle names: image, else the published repository at the
// version's tag; with a digest, by digest instead of tag (go-digest validates it).
func imageRef(image, version, dgst string) (string, error) {
	if image == "" {
		image = imageRepository + ":" + version
	}
	if dgst == "" {
		return image, nil
	}
	d, err := digest.Parse(dgst)
	if err != nil {
		return "", fmt.Errorf("-digest %q is not an image digest (write sha256: and 64 hex digits, as `crane digest` or `docker buildx imagetools inspect` print it): %w", dgst, err)
	}
	repo := image
	if i := strings.LastIndex(image, "@"); i >= 0 {
		repo = image[:i]
	} else if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		repo = image[:i]
	}
	return repo + "@" + d.String(), nil
}

// generate returns the bundle's files, by path relative to the repository root.
func generate(root, version, image string) (map[string][]byte, error) {
	ver, err := semver.Parse(version)
	if err != nil {
		return nil, fmt.Errorf("-version %q is not a semantic version: %w", version, err)
	}
	objs, err := manifest.KustomizeBuild(root, "config/manifests")
	if err != nil {
		return nil, err
	}

	var (
		csvs, crds, deployments, samples, extras []*unstructured.Unstructured
		roles                                    = map[string]*unstructured.Unstructured{}
		clusterRoles                             = map[string]*unstructured.Unstructured{}
		roleBindings, clusterRoleBindings        []*unstructured.Unstructured
	)
	// Istio's CRDs ship in the bundle: OLM installs and upgrades them, and the operator runs
	// with --istio-crds=external, so its install strategy needs no write access to CRDs.
	istioCRDs, err := render.CRDs(release.DefaultIstioVersion)
	if err != nil {
		return nil, fmt.Errorf("rendering Istio's CRDs: %w", err)
	}
	crdGroups := map[string]bool{}
	for _, o := range slices.Concat(objs, istioCRDs) {
		if o.GetKind() == "CustomResourceDefinition" {
			g, _, _ := unstructured.NestedString(o.Object, "spec", "group")
			crdGroups[g] = true
		}
	}
	// Where each kind goes; Roles and ClusterRoles by name. Namespaces and ServiceAccounts go
	// nowhere: OLM installs into the namespace the user picks and creates the ServiceAccounts
	// the install strategy names. The NetworkPolicy goes nowhere either: OLM v0 installs only
	// the kinds of its registry+v1 format, which has none (docs/security.md says how to add it).
	lists := map[string]*[]*unstructured.Unstructured{"ClusterServiceVersion": &csvs, "CustomResourceDefinition": &crds,
		"Deployment": &deployments, "RoleBinding": &roleBindings, "ClusterRoleBinding": &clusterRoleBindings, "Service": &extras}
	named := map[string]map[string]*unstructured.Unstructured{"Role": roles, "ClusterRole": clusterRoles}
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		list, listed := lists[gvk.Kind]
		byName, isNamed := named[gvk.Kind]
		switch {
		case listed:
			*list = append(*list, o)
		case crdGroups[gvk.Group]:
			samples = append(samples, o)
		case isNamed:
			byName[o.GetName()] = o
		case gvk.Kind == "Namespace", gvk.Kind == "ServiceAccount", gvk.Kind == "NetworkPolicy":
		default:
			return nil, fmt.Errorf("config/manifests has a %s %s that the bundle has no place for: teach bundlegen about it", gvk.Kind, o.GetName())
		}
	}
	if len(csvs) != 1 || len(deployments) != 1 || len(crds) == 0 {
		return nil, fmt.Errorf("config/manifests must hold one ClusterServiceVersion, one Deployment and the CRDs; found %d, %d and %d", len(csvs), len(deployments), len(crds))
	}

	var csv operatorsv1alpha1.ClusterServiceVersion
	if err := convert(csvs[0].Object, &csv); err != nil {
		return nil, fmt.Errorf("the CSV base: %w", err)
	}
	var dep appsv1.Deployment
	if err := convert(deployments[0].Object, &dep); err != nil {
		return nil, fmt.Errorf("the Deployment: %w", err)
	}
	i := slices.IndexFunc(dep.Spec.Template.Spec.Containers, func(c corev1.Container) bool { return c.Name == managerContainer })
	if i < 0 {
		return nil, fmt.Errorf("the Deployment has no %q container", managerContainer)
	}
	dep.Spec.Template.Spec.Containers[i].Image = image
	dep.Spec.Template.Spec.Containers[i].Args = append(dep.Spec.Template.Spec.Containers[i].Args, externalCRDsArg)
	sa := dep.Spec.Template.Spec.ServiceAccountName
	if sa == "" {
		return nil, errors.New("the Deployment names no ServiceAccount")
	}

	// RBAC: what is bound to the Deployment's ServiceAccount becomes the install strategy's
	// permissions (the bindings go: OLM makes its own); the rest is shipped as is, except the
	// roles aggregated into admin/edit/view, which OLM generates itself for the owned CRDs.
	boundRoles, err := boundTo(roleBindings, "Role", sa)
	if err != nil {
		return nil, err
	}
	boundClusterRoles, err := boundTo(clusterRoleBindings, "ClusterRole", sa)
	if err != nil {
		return nil, err
	}
	permissions, err := rulesOf(roles, boundRoles)
	if err != nil {
		return nil, err
	}
	clusterPermissions, err := rulesOf(clusterRoles, boundClusterRoles)
	if err != nil {
		return nil, err
	}
	clusterPermissions = withoutCRDWrites(clusterPermissions)
	for _, n := range sortedKeys(roles) {
		if !slices.Contains(boundRoles, n) {
			return nil, fmt.Errorf("the Role %s is bound to no ServiceAccount of the operator: the bundle has no place for it", n)
		}
	}
	for _, n := range sortedKeys(clusterRoles) {
		if slices.Contains(boundClusterRoles, n) || aggregated(clusterRoles[n]) {
			continue
		}
		extras = append(extras, clusterRoles[n])
	}

	name := packageName + ".v" + ver.String()
	csv.Name = name
	csv.Namespace = ""
	csv.Spec.Version.Version = ver
	examples, err := json.MarshalIndent(objectsOf(samples), "", "  ")
	if err != nil {
		return nil, err
	}
	if csv.Annotations == nil {
		csv.Annotations = map[string]string{}
	}
	csv.Annotations["alm-examples"] = string(examples)
	csv.Annotations["containerImage"] = image
	for _, crd := range istioCRDs {
		owned, err := ownedDescription(crd)
		if err != nil {
			return nil, err
		}
		csv.Spec.CustomResourceDefinitions.Owned = append(csv.Spec.CustomResourceDefinitions.Owned, owned)
	}
	csv.Spec.InstallStrategy = operatorsv1alpha1.NamedInstallStrategy{
		StrategyName: operatorsv1alpha1.InstallStrategyNameDeployment,
		StrategySpec: operatorsv1alpha1.StrategyDetailsDeployment{
			DeploymentSpecs: []operatorsv1alpha1.StrategyDeploymentSpec{{Name: dep.Name, Label: dep.Labels, Spec: dep.Spec}},
		},
	}
	if len(permissions) > 0 {
		csv.Spec.InstallStrategy.StrategySpec.Permissions = []operatorsv1alpha1.StrategyDeploymentPermissions{{ServiceAccountName: sa, Rules: permissions}}
	}
	if len(clusterPermissions) > 0 {
		csv.Spec.InstallStrategy.StrategySpec.ClusterPermissions = []operatorsv1alpha1.StrategyDeploymentPermissions{{ServiceAccountName: sa, Rules: clusterPermissions}}
	}
	csv.Spec.RelatedImages = []operatorsv1alpha1.RelatedImage{
		{Name: packageName, Image: image},
		{Name: "istio-pilot", Image: render.Hub + "/pilot:" + release.DefaultIstioVersion},
		{Name: "istio-proxyv2", Image: render.Hub + "/proxyv2:" + release.DefaultIstioVersion},
	}

	files := map[string][]byte{}
	if files["bundle/manifests/"+packageName+".clusterserviceversion.yaml"], err = toYAML(&csv); err != nil {
		return nil, err
	}
	for _, crd := range slices.Concat(crds, istioCRDs) {
		g, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
		p, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "plural")
		if files["bundle/manifests/"+g+"_"+p+".yaml"], err = toYAML(crd.Object); err != nil {
			return nil, err
		}
	}
	for _, o := range extras {
		o = o.DeepCopy()
		o.SetNamespace("") // OLM creates it in the namespace the operator is installed in.
		gvk := o.GroupVersionKind()
		gv := gvk.Version
		if gvk.Group != "" {
			gv = gvk.Group + "_" + gvk.Version
		}
		if files["bundle/manifests/"+o.GetName()+"_"+gv+"_"+strings.ToLower(gvk.Kind)+".yaml"], err = toYAML(o.Object); err != nil {
			return nil, err
		}
	}

	labels := bundleLabels()
	var ann bytes.Buffer
	ann.WriteString("# Generated by `make bundle`; do not edit. The same labels are on bundle.Dockerfile.\nannotations:\n")
	for _, l := range labels {
		fmt.Fprintf(&ann, "  %s: %s\n", l[0], l[1])
	}
	files["bundle/metadata/annotations.yaml"] = ann.Bytes()
	files["bundle/metadata/dependencies.yaml"] = []byte(`# Generated by ` + "`make bundle`" + `; do not edit. OLM installs cert-manager first: the mesh CA needs it.
dependencies:
- type: olm.package
  value:
    packageName: cert-manager
    versionRange: '>=1.14.0 <2.0.0'
`)
	files["bundle/tests/scorecard/config.yaml"] = scorecardConfig()

	var df bytes.Buffer
	df.WriteString("# The OLM bundle image (registry+v1). Generated by `make bundle`; do not edit.\nFROM scratch\n\n")
	for _, l := range labels {
		fmt.Fprintf(&df, "LABEL %s=%s\n", l[0], l[1])
	}
	df.WriteString("\nCOPY bundle/manifests /manifests/\nCOPY bundle/metadata /metadata/\nCOPY bundle/tests/scorecard /tests/scorecard/\n")
	files["bundle.Dockerfile"] = df.Bytes()
	return files, nil
}

// externalCRDsArg tells the operator that OLM installs Istio's CRDs from the bundle.
const externalCRDsArg = "--istio-crds=external"

// withoutCRDWrites takes every verb but get, list and watch off the rules for CRDs: with
// externalCRDsArg the operator only reads them. The rules generated from the code's RBAC
// markers grant the writes for --istio-crds=managed (kustomize, Helm).
func withoutCRDWrites(rules []rbacv1.PolicyRule) []rbacv1.PolicyRule {
	out := make([]rbacv1.PolicyRule, 0, len(rules))
	for _, r := range rules {
		if !slices.Contains(r.APIGroups, "apiextensions.k8s.io") || !slices.Contains(r.Resources, "customresourcedefinitions") {
			out = append(out, r)
			continue
		}
		r = *r.DeepCopy()
		r.Verbs = slices.DeleteFunc(r.Verbs, func(v string) bool { return v != "get" && v != "list" && v != "watch" })
		if len(r.Verbs) > 0 {
			out = append(out, r)
		}
	}
	return out
}

// ownedDescription describes one of Istio's CRDs for the console: its v1 version, or the first
// served one where there is no v1, the kind's words as display name, and the schema's own
// description.
func ownedDescription(crd *unstructured.Unstructured) (operatorsv1alpha1.CRDDescription, error) {
	kind, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "kind")
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	var version, description string
	for _, v := range versions {
		m, _ := v.(map[string]any)
		name, _ := m["name"].(string)
		if served, _ := m["served"].(bool); !served {
			continue
		}
		if version == "" || name == "v1" {
			version = name
			description, _, _ = unstructured.NestedString(m, "schema", "openAPIV3Schema", "properties", "spec", "description")
		}
	}
	if version == "" || description == "" {
		return operatorsv1alpha1.CRDDescription{}, fmt.Errorf("the Istio CRD %s has no served version with a described spec", crd.GetName())
	}
	return operatorsv1alpha1.CRDDescription{Name: crd.GetName(), Version: version, Kind: kind, DisplayName: words(kind),
		Description: "Istio's " + kind + ": " + description}, nil
}

// words splits a CamelCase kind into words: "AuthorizationPolicy" → "Authorization Policy".
func words(kind string) string {
	var b strings.Builder
	for i, r := range kind {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// bundleLabels are the bundle's annotations, in the order they are written, shared by
// metadata/annotations.yaml and the Dockerfile's LABELs so the two cannot disagree.
func bundleLabels() [][2]string {
	return [][2]string{
		{"operators.operatorframework.io.bundle.mediatype.v1", "registry+v1"},
		{"operators.operatorframework.io.bundle.manifests.v1", "manifests/"},
		{"operators.operatorframework.io.bundle.metadata.v1", "metadata/"},
		{"operators.operatorframework.io.bundle.package.v1", packageName},
		{"operators.operatorframework.io.bundle.channels.v1", channel},
		{"operators.operatorframework.io.bundle.channel.default.v1", channel},
		{"operators.operatorframework.io.test.mediatype.v1", "scorecard+v1"},
		{"operators.operatorframework.io.test.config.v1", "tests/scorecard/"},
	}
}

// scorecardConfig is the standard scorecard configuration: the basic spec check and the OLM
// tests, all in one parallel stage.
func scorecardConfig() []byte {
	var b bytes.Buffer
	b.WriteString(`# Generated by ` + "`make bundle`" + `; do not edit. Run with: operator-sdk scorecard bundle
apiVersion: scorecard.operatorframework.io/v1alpha3
kind: Configuration
metadata:
  name: config
stages:
- parallel: true
  tests:
`)
	for _, t := range []struct{ suite, name string }{
		{"basic", "basic-check-spec"},
		{"olm", "olm-bundle-validation"},
		{"olm", "olm-crds-have-validation"},
		{"olm", "olm-crds-have-resources"},
		{"olm", "olm-spec-descriptors"},
		{"olm", "olm-status-descriptors"},
	} {
		fmt.Fprintf(&b, `  - entrypoint:
    - scorecard-test
    - %s
    image: %s
    labels:
      suite: %s
      test: %s-test
`, t.name, scorecardImage, t.suite, t.name)
	}
	b.WriteString("storage:\n  spec:\n    mountPath: {}\n")
	return b.Bytes()
}

// boundTo lists, in the bindings' order, the roles of kind roleKind that bindings grant to the
// ServiceAccount sa. A binding to anything else is an error: OLM would not create it.
func boundTo(bindings []*unstructured.Unstructured, roleKind, sa string) ([]string, error) {
	var names []string
	for _, o := range bindings {
		var b rbacv1.RoleBinding // a ClusterRoleBinding has the same roleRef and subjects.
		if err := convert(o.Object, &b); err != nil {
			return nil, err
		}
		toSA := len(b.Subjects) == 1 && b.Subjects[0].Kind == rbacv1.ServiceAccountKind && b.Subjects[0].Name == sa
		if !toSA || b.RoleRef.Kind != roleKind {
			return nil, fmt.Errorf("%s %s binds something other than a %s to the ServiceAccount %s: the bundle has no place for it", o.GetKind(), o.GetName(), roleKind, sa)
		}
		if !slices.Contains(names, b.RoleRef.Name) {
			names = append(names, b.RoleRef.Name)
		}
	}
	return names, nil
}

// rulesOf concatenates the rules of the named roles.
func rulesOf(roles map[string]*unstructured.Unstructured, names []string) ([]rbacv1.PolicyRule, error) {
	var rules []rbacv1.PolicyRule
	for _, n := range names {
		o, ok := roles[n]
		if !ok {
			return nil, fmt.Errorf("a binding refers to the missing role %s", n)
		}
		var r rbacv1.ClusterRole
		if err := convert(o.Object, &r); err != nil {
			return nil, err
		}
		rules = append(rules, r.Rules...)
	}
	return rules, nil
}

// aggregated tells the roles for people, aggregated into admin/edit/view.
func aggregated(o *unstructured.Unstructured) bool {
	for k := range o.GetLabels() {
		if strings.HasPrefix(k, "rbac.authorization.k8s.io/aggregate-to-") {
			return true
		}
	}
	return false
}

// objectsOf returns the objects' contents, for alm-examples.
func objectsOf(us []*unstructured.Unstructured) []map[string]any {
	out := make([]map[string]any, 0, len(us))
	for _, u := range us {
		out = append(out, u.Object)
	}
	return out
}

// sortedKeys returns a map's keys in order, so that nothing depends on map iteration.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// convert turns an object into a typed one through JSON, so custom unmarshalers (the CSV's
// semver version) apply.
func convert(in map[string]any, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

// toYAML writes an object with sorted keys, without the empty status and the null
// creationTimestamps that typed objects carry.
func toYAML(obj any) ([]byte, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	delete(m, "status")
	prune(m)
	return yaml.Marshal(m)
}

// prune removes the null creationTimestamps that typed objects marshal, at any depth.
func prune(v any) {
	switch t := v.(type) {
	case map[string]any:
		if ts, ok := t["creationTimestamp"]; ok && ts == nil {
			delete(t, "creationTimestamp")
		}
		for _, x := range t {
			prune(x)
		}
	case []any:
		for _, x := range t {
			prune(x)
		}
	}
}

// write replaces the generated directories of <out>/bundle and <out>/bundle.Dockerfile with files.
func write(out string, files map[string][]byte) error {
	for _, d := range bundleDirs {
		if err := os.RemoveAll(filepath.Join(out, "bundle", d)); err != nil {
			return err
		}
	}
	for _, p := range sortedKeys(files) {
		path := filepath.Join(out, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, files[p], 0o644); err != nil {
			return err
		}
	}
	return nil
}
