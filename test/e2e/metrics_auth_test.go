package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshwright/meshwright/test/cluster"
	"github.com/meshwright/meshwright/test/framework"
	"github.com/meshwright/meshwright/test/framework/manifest"
)

// TestSecureMetricsEndpoint: the operator as shipped (--metrics-secure, its metrics-auth-role,
// the real API server reviewing tokens and RBAC) serves its metrics only to a caller bound to the
// metrics-reader ClusterRole: no token is 401, a token without the role 403.
func TestSecureMetricsEndpoint(t *testing.T) {
	ctx := context.Background()
	const namespace = "metrics-auth"
	installCRD(t, lc)
	op := startOperator(t, lc.Kubeconfig, namespace, false, "--metrics-secure=true")
	// The shipped manifests bind metrics-auth-role to the operator's ServiceAccount and leave
	// metrics-reader for the user to bind to Prometheus; asShippedRBAC gave the operator its
	// manager role only.
	bindShipped(t, "metrics_auth_role.yaml", namespace+"-auth", shippedAccount, namespace)
	bindShipped(t, "metrics_reader_role.yaml", namespace+"-reader", "prometheus", namespace)
	reader := tokenFor(t, namespace, "prometheus")
	stranger := tokenFor(t, namespace, "stranger")

	url := strings.Replace(op.metrics, "http://", "https://", 1)
	// The endpoint's certificate is self-signed when no certificate is mounted, as in a plain
	// install; what is tested here is who may read, not TLS.
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // see above
	scrapeAs := func(token string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, "", err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	framework.Eventually(t, time.Minute, "the metrics endpoint to serve Prometheus' identity", func() (bool, error) {
		code, _, err := scrapeAs(reader)
		return err == nil && code == http.StatusOK, nil
	})

	tests := map[string]struct {
		token string
		want  int
	}{
		"no token":                        {want: http.StatusUnauthorized},
		"a token the API server refuses":  {token: "not-a-token", want: http.StatusUnauthorized},
		"a token without metrics-reader":  {token: stranger, want: http.StatusForbidden},
		"a token bound to metrics-reader": {token: reader, want: http.StatusOK},
	}
	for name, tc := range tests {
		code, body, err := scrapeAs(tc.token)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if code != tc.want {
			t.Errorf("%s: status %d, want %d (%s)", name, code, tc.want, strings.TrimSpace(body))
		}
		if code == http.StatusOK && !strings.Contains(body, "controller_runtime_reconcile_total") {
			t.Errorf("%s: served no controller metrics", name)
		}
	}
}

// bindShipped applies a ClusterRole of config/rbac under another name and binds it to a
// ServiceAccount (created if need be) of namespace.
func bindShipped(t *testing.T, file, name, account, namespace string) {
	t.Helper()
	role := manifest.MustDecodeAll(t, framework.MustRead(t, filepath.Join(repoRoot, "config", "rbac", file)))[0]
	role.SetName(name)
	sa := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ServiceAccount",
		"metadata": map[string]any{"name": account, "namespace": namespace}}}
	binding := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
		"metadata": map[string]any{"name": name},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
		"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": account, "namespace": namespace}}}}
	if err := cluster.Apply(context.Background(), lc.RESTConfig(), role, sa, binding); err != nil {
		t.Fatal(err)
	}
}

// tokenFor issues a token for a ServiceAccount of namespace, creating the account first.
func tokenFor(t *testing.T, namespace, account string) string {
	t.Helper()
	ctx := context.Background()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: account, Namespace: namespace}}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(sa), sa); err != nil {
		if err := k8s.Create(ctx, sa); err != nil {
			t.Fatal(err)
		}
	}
	tr := &authnv1.TokenRequest{}
	if err := k8s.SubResource("token").Create(ctx, sa, tr); err != nil {
		t.Fatalf("a token for %s/%s: %v", namespace, account, err)
	}
	return tr.Status.Token
}
