package charts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"helm.sh/helm/v3/pkg/registry"
)

// ociRepo is an OCI registry path holding Helm charts as `<path>/<chart>:<version>`, pulled with
// Helm's own registry client (which honours Helm's and Docker's registry credentials).
type ociRepo struct {
	u      *url.URL
	client *http.Client
}

func (r *ociRepo) repository() string { return r.u.String() }

func (r *ociRepo) fetch(ctx context.Context, version string, charts []string) (map[string]archive, error) {
	// Helm's registry client takes no context: tie its requests to ctx through the transport.
	hc := *r.client
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	hc.Transport = ctxTransport{ctx: ctx, base: base}
	client, err := registry.NewClient(registry.ClientOptHTTPClient(&hc))
	if err != nil {
		return nil, r.unavailable(err)
	}
	out := map[string]archive{}
	for _, name := range charts {
		repo := r.u.Host + strings.TrimSuffix(r.u.Path, "/") + "/" + name
		res, err := client.Pull(repo+":"+version, registry.PullOptWithChart(true))
		if err != nil {
			if ctx.Err() != nil {
				return nil, r.unavailable(ctx.Err())
			}
			if slices.Contains(optionalCharts, name) {
				continue // taken where the registry has it: not needed without Istio CNI or ambient mode
			}
			// Tell a missing version from an unreachable registry by the tags it has.
			tags, terr := client.Tags(repo)
			if terr == nil && !slices.ContainsFunc(tags, func(t string) bool { return sameVersion(t, version) }) {
				return nil, &NotFoundError{Version: version, Repository: r.repository(), Available: newestFirst(tags)}
			}
			return nil, r.unavailable(fmt.Errorf("pulling %s:%s: %w", repo, version, err))
		}
		sum := sha256.Sum256(res.Chart.Data)
		digest := hex.EncodeToString(sum[:])
		if want := strings.TrimPrefix(res.Chart.Digest, "sha256:"); want != digest {
			return nil, r.unavailable(fmt.Errorf("chart %s %s: archive digest is %s, the manifest says %s", name, version, digest, want))
		}
		out[name] = archive{data: res.Chart.Data, digest: digest}
	}
	return out, nil
}

func (r *ociRepo) unavailable(err error) error {
	return &UnavailableError{Repository: r.repository(), Err: err}
}

// ctxTransport cancels each request when ctx is done, for clients that take no context.
type ctxTransport struct {
	ctx  context.Context
	base http.RoundTripper
}

func (t ctxTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rctx, cancel := context.WithCancelCause(req.Context())
	stop := context.AfterFunc(t.ctx, func() { cancel(context.Cause(t.ctx)) })
	resp, err := t.base.RoundTrip(req.WithContext(rctx))
	if err != nil {
		stop()
		cancel(nil)
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: func() { stop(); cancel(nil) }}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel func()
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
