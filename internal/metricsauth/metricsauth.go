// Package metricsauth guards the metrics endpoint the way the API server guards its own paths: a
// caller proves who it is with a bearer token, which the API server reviews (TokenReview), and may
// read only what RBAC lets it (SubjectAccessReview on the non-resource URL, e.g. `get /metrics`).
//
// controller-runtime's metrics/filters package does the same through k8s.io/apiserver's
// delegating authenticator and authorizer, which link k8s.io/apiserver and cel-go (about 70
// packages) into the binary for two API calls and two caches. This package is those calls and
// caches over client-go and apimachinery's LRU cache, with the same TTLs and retry policy, so the
// security is the same and the binary smaller (#24, memory).
package metricsauth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/logr"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/cache"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/wait"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authzclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/meshwright/meshwright/internal/apierr"
)

// The caches' lifetimes are controller-runtime's (and the API server's delegating defaults): a
// token's identity is trusted for a minute, an allowed scrape for five, a denied one for 30 s, so
// a Prometheus scraping every 15 s costs the API server a few reviews an hour, and a permission
// granted after a denial is seen within 30 s.
const (
	tokenTTL        = time.Minute
	refusedTokenTTL = 10 * time.Second
	allowTTL        = 5 * time.Minute
	denyTTL         = 30 * time.Second
	// reviewTimeout bounds a review, retries included, as the API server's delegating
	// authenticator does: a hung API server costs a scrape ten seconds, not a minute.
	reviewTimeout = 10 * time.Second
	// The caches' sizes: refused tokens are kept apart, so a flood of made-up tokens cannot
	// push Prometheus's identity out.
	userCacheSize, refusedCacheSize, decisionCacheSize = 4096, 1024, 8192
)

// backoff is the API server's for its authentication and authorization webhooks: five tries
// within about six seconds when the API server is briefly unavailable.
var backoff = wait.Backoff{Duration: 500 * time.Millisecond, Factor: 1.5, Jitter: 0.2, Steps: 5}

// Reviewer answers, through the API server, who a bearer token belongs to and whether that user
// may read a path. Its answers are cached; errors are not.
type Reviewer struct {
	tokens    authnclient.TokenReviewInterface
	access    authzclient.SubjectAccessReviewInterface
	users     *cache.LRUExpireCache // sha256 of the token → *authnv1.UserInfo
	refused   *cache.LRUExpireCache // sha256 of a token the API server refused → true
	decisions *cache.LRUExpireCache // the review's spec, as JSON → bool
}

// NewReviewer builds a Reviewer over the two review APIs; clk drives its caches (a fake clock
// in tests).
func NewReviewer(tokens authnclient.TokenReviewInterface, access authzclient.SubjectAccessReviewInterface, clk clock.PassiveClock) *Reviewer {
	return &Reviewer{
		tokens:    tokens,
		access:    access,
		users:     cache.NewLRUExpireCacheWithClock(userCacheSize, clk),
		refused:   cache.NewLRUExpireCacheWithClock(refusedCacheSize, clk),
		decisions: cache.NewLRUExpireCacheWithClock(decisionCacheSize, clk),
	}
}

// FilterProvider is a metricsserver.Options.FilterProvider: the reviews go to the API server the
// manager talks to, with the manager's identity (which needs create on tokenreviews and
// subjectaccessreviews, as the shipped metrics-auth-role grants).
func FilterProvider(cfg *rest.Config, httpClient *http.Client) (metricsserver.Filter, error) {
	authn, err := authnclient.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	authz, err := authzclient.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	r := NewReviewer(authn.TokenReviews(), authz.SubjectAccessReviews(), clock.RealClock{})
	return r.Filter, nil
}

// Filter is a metricsserver.Filter: it serves handler only to an authenticated caller allowed the
// request's verb on its path; 401 without a valid token, 403 without the permission, 500 when the
// API server cannot answer.
func (r *Reviewer) Filter(log logr.Logger, handler http.Handler) (http.Handler, error) {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		user, err := r.Authenticate(req.Context(), bearerToken(req))
		if err != nil {
			log.Error(err, "Authentication failed")
			http.Error(w, "Authentication failed", http.StatusInternalServerError)
			return
		}
		if user == nil {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		allowed, err := r.Authorize(req.Context(), user, strings.ToLower(req.Method), req.URL.Path)
		if err != nil {
			msg := fmt.Sprintf("Authorization for user %s failed", user.Username)
			log.Error(err, msg)
			http.Error(w, msg, http.StatusInternalServerError)
			return
		}
		if !allowed {
			log.V(4).Info("Authorization denied", "user", user.Username, "path", req.URL.Path)
			http.Error(w, fmt.Sprintf("Authorization denied for user %s", user.Username), http.StatusForbidden)
			return
		}
		handler.ServeHTTP(w, req)
	}), nil
}

// bearerToken is the token of an `Authorization: Bearer <token>` header, or "" for none. It
// parses as the API server's bearer token authenticator does (one space, a non-empty token).
func bearerToken(req *http.Request) string {
	parts := strings.SplitN(req.Header.Get("Authorization"), " ", 3)
	if len(parts) < 2 || !strings.EqualFold(parts[0], "Bearer") {
		return ""
	}
	return parts[1]
}

// Authenticate returns the token's user, or nil when the API server does not vouch for it (or
// there is no token). Only a hash of the token is kept.
func (r *Reviewer) Authenticate(ctx context.Context, token string) (*authnv1.UserInfo, error) {
	if token == "" {
		return nil, nil
	}
	sum := sha256.Sum256([]byte(token))
	key := hex.EncodeToString(sum[:])
	if v, ok := r.users.Get(key); ok {
		return v.(*authnv1.UserInfo), nil
	}
	if _, ok := r.refused.Get(key); ok {
		return nil, nil
	}
	review, err := send(ctx, func(c context.Context) (*authnv1.TokenReview, error) {
		return r.tokens.Create(c, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	})
	if err != nil {
		return nil, fmt.Errorf("reviewing a token: %w", err)
	}
	if !review.Status.Authenticated {
		r.refused.Add(key, true, refusedTokenTTL)
		return nil, nil
	}
	user := review.Status.User
	r.users.Add(key, &user, tokenTTL)
	return &user, nil
}

// Authorize asks whether user may do verb on the non-resource path.
func (r *Reviewer) Authorize(ctx context.Context, user *authnv1.UserInfo, verb, path string) (bool, error) {
	spec := authzv1.SubjectAccessReviewSpec{
		User:                  user.Username,
		UID:                   user.UID,
		Groups:                user.Groups,
		Extra:                 extra(user.Extra),
		NonResourceAttributes: &authzv1.NonResourceAttributes{Path: path, Verb: verb},
	}
	keyBytes, err := json.Marshal(spec)
	if err != nil {
		return false, err
	}
	key := string(keyBytes)
	if v, ok := r.decisions.Get(key); ok {
		return v.(bool), nil
	}
	review, err := send(ctx, func(c context.Context) (*authzv1.SubjectAccessReview, error) {
		return r.access.Create(c, &authzv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
	})
	if err != nil {
		return false, fmt.Errorf("reviewing access to %s %s: %w", verb, path, err)
	}
	allowed := review.Status.Allowed && !review.Status.Denied
	ttl := denyTTL
	if allowed {
		ttl = allowTTL
	}
	r.decisions.Add(key, allowed, ttl)
	return allowed, nil
}

// send creates a review with the API server's retry policy for its own webhooks (five tries,
// 0.5 s apart and growing), all within reviewTimeout and the caller's request: a scraper that
// goes away stops the tries.
func send[T any](ctx context.Context, create func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, reviewTimeout)
	defer cancel()
	var out T
	var last error
	err := wait.ExponentialBackoffWithContext(ctx, backoff, func(ctx context.Context) (bool, error) {
		got, err := create(ctx)
		switch {
		case err == nil:
			out = got
			return true, nil
		case retriable(err) && ctx.Err() == nil:
			last = err
			return false, nil
		default:
			return false, err
		}
	})
	if err != nil && last != nil && wait.Interrupted(err) {
		err = fmt.Errorf("%w (last try: %w)", err, last)
	}
	return out, err
}

// extra converts a token's extra attributes to the access review's type (same shape).
func extra(in map[string]authnv1.ExtraValue) map[string]authzv1.ExtraValue {
	if len(in) == 0 {
		return nil
	}
	out := make(map[string]authzv1.ExtraValue, len(in))
	for k, v := range in {
		out[k] = authzv1.ExtraValue(v)
	}
	return out
}

// retriable: what may pass when tried again, as the API server judges its webhooks' errors: the
// server unavailable, overloaded or timed out, or the connection lost. A refusal (no
// permission, an invalid review) fails at once.
func retriable(err error) bool {
	if _, delay := apierrors.SuggestsClientDelay(err); delay {
		return true
	}
	return apierr.Unavailable(err) || apierrors.IsTooManyRequests(err) || apierrors.IsServiceUnavailable(err) ||
		utilnet.IsConnectionReset(err) || utilnet.IsConnectionRefused(err) || utilnet.IsProbableEOF(err) || utilnet.IsHTTP2ConnectionLost(err)
}
