package apply

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// SchemaDigestAnnotation is put by SlimCRD on the cache's copy of a CustomResourceDefinition in
// place of its schemas: a digest of them, so the Applier can tell whether a CRD holds the schemas
// it wants without the cache keeping them. It exists only in the cache; nothing writes it.
const SchemaDigestAnnotation = "meshwright.io/cached-schema-digest"

// lastApplied is kubectl's record of a client-side apply: often the whole CRD again.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// SlimCRD is the cache transform for CustomResourceDefinitions. The operator watches every CRD
// in the cluster (cert-manager's and Istio's appearing start passes; the exposure checks read
// conversion webhooks), and their OpenAPI schemas are most of their size: Istio's fifteen alone
// are a megabyte of JSON, many megabytes as maps. The cache keeps names, versions, conversion,
// status and labels, and a digest of the schemas (SchemaDigestAnnotation).
func SlimCRD(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok || u.GetKind() != "CustomResourceDefinition" {
		return obj, nil
	}
	if _, done := slimmed(u); done {
		return u, nil // slimmed already: the digest is of the schemas, which are gone
	}
	u.SetManagedFields(nil)
	ann := u.GetAnnotations()
	delete(ann, lastApplied)
	if ann == nil {
		ann = map[string]string{}
	}
	ann[SchemaDigestAnnotation] = schemaDigest(u)
	u.SetAnnotations(ann)
	if versions, ok, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "versions"); ok {
		list, _ := versions.([]any)
		for _, v := range list {
			if m, ok := v.(map[string]any); ok {
				delete(m, "schema")
			}
		}
	}
	return u, nil
}

// slimmed reports whether current is a cache copy SlimCRD made (a CRD that holds no schema).
func slimmed(current *unstructured.Unstructured) (digest string, ok bool) {
	digest, ok = current.GetAnnotations()[SchemaDigestAnnotation]
	if !ok || current.GetKind() != "CustomResourceDefinition" {
		return "", false
	}
	versions, _, _ := unstructured.NestedFieldNoCopy(current.Object, "spec", "versions")
	list, _ := versions.([]any)
	for _, v := range list {
		if m, _ := v.(map[string]any); m["schema"] != nil {
			return "", false // a whole CRD, whatever its annotation says: compare it whole
		}
	}
	return digest, true
}

// schemaDigest hashes a CRD's versions' schemas, in order (maps marshal with sorted keys).
func schemaDigest(crd *unstructured.Unstructured) string {
	versions, _, _ := unstructured.NestedFieldNoCopy(crd.Object, "spec", "versions")
	list, _ := versions.([]any)
	schemas := make([]any, 0, 2*len(list))
	for _, v := range list {
		m, _ := v.(map[string]any)
		schemas = append(schemas, m["name"], m["schema"])
	}
	b, _ := json.Marshal(schemas)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// withoutSchemas is desired as SlimCRD would keep it, minus the digest: a shallow copy down to
// the versions, so the megabytes of schema are not copied.
func withoutSchemas(desired *unstructured.Unstructured) map[string]any {
	out := make(map[string]any, len(desired.Object))
	for k, v := range desired.Object {
		out[k] = v
	}
	spec, ok := desired.Object["spec"].(map[string]any)
	if !ok {
		return out
	}
	specCopy := make(map[string]any, len(spec))
	for k, v := range spec {
		specCopy[k] = v
	}
	out["spec"] = specCopy
	versions, ok := spec["versions"].([]any)
	if !ok {
		return out
	}
	vs := make([]any, len(versions))
	for i, v := range versions {
		m, ok := v.(map[string]any)
		if !ok {
			vs[i] = v
			continue
		}
		c := make(map[string]any, len(m))
		for k, val := range m {
			if k != "schema" {
				c[k] = val
			}
		}
		vs[i] = c
	}
	specCopy["versions"] = vs
	return out
}
