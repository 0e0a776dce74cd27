package metricsauth

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshwright/meshwright/internal/testenv"
)

var (
	cfg *rest.Config
	cs  *kubernetes.Clientset
)

func TestMain(m *testing.M) {
	testenv.Main(m, func(c *rest.Config) error {
		cfg = c
		var err error
		cs, err = kubernetes.NewForConfig(c)
		return err
	})
}

const ns = "default"

// serviceAccountToken creates a ServiceAccount and returns a token the API server issued for it.
func serviceAccountToken(t *testing.T, name string) string {
	t.Helper()
	ctx := context.Background()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authnv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// grantMetrics binds a ServiceAccount to a ClusterRole allowing `get /metrics`, as the shipped
// metrics-reader role does.
func grantMetrics(t *testing.T, sa string) {
	t.Helper()
	ctx := context.Background()
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "metrics-reader-" + sa},
		Rules:      []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}},
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The API server's RBAC authorizer reads bindings from its own informer: wait until it
	// allows the grant, so that what the tests see is the filter's doing, not that lag.
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		// A ServiceAccount's user and groups, as Kubernetes documents them.
		User: "system:serviceaccount:" + ns + ":" + sa, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns},
		NonResourceAttributes: &authzv1.NonResourceAttributes{Path: "/metrics", Verb: "get"}}}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err == nil && got.Status.Allowed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the API server does not allow %s to get /metrics 10 s after the grant: %v %+v", sa, err, got)
		}
	}
}

// serve puts the filter of a Reviewer over a handler answering "metrics".
func serve(t *testing.T, r *Reviewer) *httptest.Server {
	t.Helper()
	h, err := r.Filter(logr.Discard(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "metrics")
	}))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, method, url, token string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// reviewer builds a Reviewer over the API server with the given identity.
func reviewer(t *testing.T, c *rest.Config, clk clock.PassiveClock) *Reviewer {
	t.Helper()
	k, err := kubernetes.NewForConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	return NewReviewer(k.AuthenticationV1().TokenReviews(), k.AuthorizationV1().SubjectAccessReviews(), clk)
}

// TestFilterAgainstTheAPIServer: the real API server reviews the tokens and RBAC decides.
func TestFilterAgainstTheAPIServer(t *testing.T) {
	reader := serviceAccountToken(t, "scraper")
	grantMetrics(t, "scraper")
	stranger := serviceAccountToken(t, "stranger")
	srv := serve(t, reviewer(t, cfg, clock.RealClock{}))

	tests := map[string]struct {
		method, path, token string
		want                int
	}{
		"no token":                      {method: http.MethodGet, path: "/metrics", want: http.StatusUnauthorized},
		"a token nobody issued":         {method: http.MethodGet, path: "/metrics", token: "not-a-token", want: http.StatusUnauthorized},
		"a user without the role":       {method: http.MethodGet, path: "/metrics", token: stranger, want: http.StatusForbidden},
		"a user with the role":          {method: http.MethodGet, path: "/metrics", token: reader, want: http.StatusOK},
		"a verb the role lacks":         {method: http.MethodPost, path: "/metrics", token: reader, want: http.StatusForbidden},
		"a path the role does not name": {method: http.MethodGet, path: "/debug", token: reader, want: http.StatusForbidden},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := get(t, tc.method, srv.URL+tc.path, tc.token); got != tc.want {
				t.Errorf("%s %s: status %d, want %d", tc.method, tc.path, got, tc.want)
			}
		})
	}
}

// TestDecisionsAreCachedForTheirTTL: a denial is remembered for 30 s (no review per scrape), and
// a permission granted meanwhile is seen once it expires.
func TestDecisionsAreCachedForTheirTTL(t *testing.T) {
	token := serviceAccountToken(t, "late")
	clk := clocktesting.NewFakeClock(time.Now())
	srv := serve(t, reviewer(t, cfg, clk))
	if got := get(t, http.MethodGet, srv.URL+"/metrics", token); got != http.StatusForbidden {
		t.Fatalf("before the grant: %d, want 403", got)
	}
	grantMetrics(t, "late")
	if got := get(t, http.MethodGet, srv.URL+"/metrics", token); got != http.StatusForbidden {
		t.Fatalf("within the denial's 30 s: %d, want the cached 403", got)
	}
	clk.Step(denyTTL + time.Second)
	if got := get(t, http.MethodGet, srv.URL+"/metrics", token); got != http.StatusOK {
		t.Fatalf("after the denial expired: %d, want 200", got)
	}
}

// TestAReviewerWithoutPermissionFailsClosed: when the operator may not create reviews, every
// scrape is refused with 500 (not retried: Forbidden is final), never served.
func TestAReviewerWithoutPermissionFailsClosed(t *testing.T) {
	token := serviceAccountToken(t, "ops")
	grantMetrics(t, "ops")
	weak := rest.CopyConfig(cfg)
	weak.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:default:nobody"}
	var requests atomic.Int32
	weak.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			requests.Add(1)
			return rt.RoundTrip(req)
		})
	})
	srv := serve(t, reviewer(t, weak, clock.RealClock{}))
	if got := get(t, http.MethodGet, srv.URL+"/metrics", token); got != http.StatusInternalServerError {
		t.Fatalf("status %d, want 500", got)
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("%d token reviews sent, want 1: Forbidden is not retried", n)
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

func TestBearerToken(t *testing.T) {
	tests := map[string]struct{ header, want string }{
		"none":          {"", ""},
		"bearer":        {"Bearer abc", "abc"},
		"lower case":    {"bearer abc", "abc"},
		"basic":         {"Basic abc", ""},
		"no separator":  {"Bearerabc", ""},
		"two spaces":    {"Bearer  abc", ""},
		"trailing part": {"Bearer abc def", "abc"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			req := httptest.NewRequestWithContext(context.Background(), http.MethodGet, "/metrics", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			if got := bearerToken(req); got != tc.want {
				t.Errorf("%q: %q, want %q", tc.header, got, tc.want)
			}
		})
	}
}

func TestRetriable(t *testing.T) {
	gr := schema.GroupResource{Group: "authentication.k8s.io", Resource: "tokenreviews"}
	tests := map[string]struct {
		err  error
		want bool
	}{
		"connection refused":    {&net.OpError{Op: "dial", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}, true},
		"internal error":        {apierrors.NewInternalError(errors.New("etcd")), true},
		"too many requests":     {apierrors.NewTooManyRequests("slow down", 1), true},
		"forbidden":             {apierrors.NewForbidden(gr, "", errors.New("no")), false},
		"bad request":           {apierrors.NewBadRequest("no"), false},
		"deadline":              {context.DeadlineExceeded, false},
		"http2 connection lost": {errors.New("http2: client connection lost"), true},
	}
	for name, tc := range tests {
		if got := retriable(tc.err); got != tc.want {
			t.Errorf("%s: retriable = %v, want %v", name, got, tc.want)
		}
	}
}

// TestSendStopsWhenTheCallerGoes: the tries stop when the scrape's request ends, instead of
// going on for the whole backoff.
func TestSendStopsWhenTheCallerGoes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	_, err := send(ctx, func(context.Context) (int, error) {
		calls++
		cancel() // the scraper hangs up during the first try
		return 0, apierrors.NewInternalError(errors.New("etcd"))
	})
	if err == nil || calls != 1 {
		t.Errorf("err %v after %d tries; want an error after 1", err, calls)
	}
	calls = 0
	_, err = send(context.Background(), func(context.Context) (int, error) {
		calls++
		if calls < 3 {
			return 0, apierrors.NewInternalError(errors.New("etcd"))
		}
		return 1, nil
	})
	if err != nil || calls != 3 {
		t.Errorf("err %v after %d tries; want success on the third", err, calls)
	}
}
