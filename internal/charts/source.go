package charts

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"sigs.k8s.io/yaml"
)

// DefaultTimeout bounds each HTTP request of a Source without its own HTTPClient, so that an
// unresponsive repository fails a reconcile instead of hanging it.
const DefaultTimeout = 30 * time.Second

// maxDownload bounds an index or archive read into memory (Helm's own limit on a decompressed
// chart is 100 MiB; Istio's index.yaml and charts are a few MiB).
const maxDownload = 100 << 20

// Source pulls Istio's charts from Helm repositories and caches them, in memory and on disk, so
// that a version is downloaded once per cache directory rather than once per reconcile or per
// restart. The zero value works (no disk cache); a Source must not be copied after first use.
// It is safe for concurrent use, and concurrent loads of one version share one download.
type Source struct {
	// CacheDir is where downloaded archives are kept; it is created if missing. "" keeps them
	// in memory only. The disk cache is best effort: if it cannot be written, Load still
	// succeeds and the next process downloads again.
	CacheDir string
	// HTTPClient makes every request, to Helm repositories and OCI registries alike; nil means
	// a client with DefaultTimeout.
	HTTPClient *http.Client

	mu   sync.Mutex
	memo map[string]*loading
}

// loading is one Load in progress or done; failed loads are forgotten so that they are retried.
type loading struct {
	done chan struct{}
	set  *Set
	err  error
	// retryAt is when a failed load may be tried again: until then the failure is returned,
	// so that passes triggered by every pod event do not each download the index again.
	retryAt time.Time
}

// RetryFailedAfter is how long a failed load is remembered.
const RetryFailedAfter = 30 * time.Second

// Load returns the charts of an Istio version from the repository at repoURL, which is an
// http(s) Helm repository (its index at repoURL/index.yaml; chart URLs relative or absolute, as
// Helm allows) or an oci:// registry path holding `<repoURL>/base:<version>` and
// `<repoURL>/istiod:<version>`. repoURL "" means Embedded(version).
//
// It looks in memory first, then in CacheDir (keyed by repository URL, chart and version, and
// verified against the digest recorded when the archive was downloaded, which is the index
// entry's when it has one: a corrupt cached file is downloaded again), and downloads only what is
// missing. Errors are *NotFoundError when the repository lacks the version, *UnavailableError
// when it could not be reached or read (retrying may help), and plain errors for a URL this
// package cannot use.
func (s *Source) Load(ctx context.Context, repoURL, version string) (*Set, error) {
	if repoURL == "" {
		return Embedded(version)
	}
	repoURL = strings.TrimSuffix(repoURL, "/")
	u, err := url.Parse(repoURL)
	if err != nil {
		return nil, fmt.Errorf("chart repository URL %q: %w", repoURL, err)
	}
	var f fetcher
	switch u.Scheme {
	case "http", "https":
		f = &helmRepo{u: u, client: s.client()}
	case "oci":
		if u.User != nil {
			return nil, fmt.Errorf("chart repository URL %q: give registry credentials in Helm's or Docker's registry config, not in an oci:// URL", safeURL(u))
		}
		if u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("chart repository URL %q: want oci://host[:port]/path", repoURL)
		}
		f = &ociRepo{u: u, client: s.client()}
	default:
		return nil, fmt.Errorf("chart repository URL %q: scheme must be http, https or oci", safeURL(u))
	}
	if version == "" {
		return nil, errors.New("no Istio version given")
	}

	key := repoURL + "\x00" + version
	s.mu.Lock()
	if s.memo == nil {
		s.memo = map[string]*loading{}
	}
	l, ok := s.memo[key]
	var prev *Set
	if ok && (l.err != nil || l.set != nil && l.set.lacksOptional()) && !time.Now().Before(l.retryAt) {
		// A remembered failure that may be tried again; or a set without an optional chart,
		// which a passing error may have kept out (base and istiod come from the disk cache then).
		ok, prev = false, l.set
	}
	if !ok {
		l = &loading{done: make(chan struct{})}
		s.memo[key] = l
	}
	s.mu.Unlock()
	if ok {
		select {
		case <-l.done:
			return l.set, l.err
		case <-ctx.Done():
			return nil, &UnavailableError{Repository: safeURL(u), Err: ctx.Err()}
		}
	}
	set, err := s.load(ctx, f, repoURL, version)
	if err != nil && prev != nil {
		set, err = prev, nil // a set already had is not lost to a failed look for an optional chart
	}
	var retryAt time.Time
	switch {
	case err != nil && ctx.Err() != nil:
		// This caller gave up: the next one tries at once.
	case err != nil, set.lacksOptional():
		retryAt = time.Now().Add(RetryFailedAfter)
	}
	// Written under the lock: later callers read them there to decide whether to load again.
	s.mu.Lock()
	l.set, l.err, l.retryAt = set, err, retryAt
	s.mu.Unlock()
	close(l.done)
	return set, err
}

func (s *Source) client() *http.Client {
	if s.HTTPClient != nil {
		return s.HTTPClient
	}
	return &http.Client{Timeout: DefaultTimeout}
}

// fetcher downloads chart archives from one repository.
type fetcher interface {
	// fetch returns the archives of charts at version, and the digest (hex sha256) each must
	// have. It returns *NotFoundError or *UnavailableError.
	fetch(ctx context.Context, version string, charts []string) (map[string]archive, error)
	// repository names the repository in errors and in Set.Origin, without credentials.
	repository() string
}

// archive is a downloaded chart archive and the digest it is known by.
type archive struct {
	data   []byte
	digest string
}

func (s *Source) load(ctx context.Context, f fetcher, repoURL, version string) (*Set, error) {
	// The optional charts (cni, ztunnel) are taken where the repository has them (Istio
	// publishes them beside the other two); a mirror without them serves installations that do
	// not need them.
	names := append([]string{BaseChart, IstiodChart}, optionalCharts...)
	got := map[string]archive{}
	var missing []string
	for _, name := range names {
		if a, ok := s.readCache(repoURL, name, version); ok {
			got[name] = a
		} else {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		fetched, err := f.fetch(ctx, version, missing)
		if err != nil {
			return nil, err
		}
		for name, a := range fetched {
			got[name] = a
		}
	}

	loaded := map[string]*chart.Chart{}
	h := sha256.New()
	for _, name := range names {
		a, ok := got[name]
		if !ok && slices.Contains(optionalCharts, name) {
			continue
		}
		c, err := loadArchive(a.data, name, version)
		if err != nil {
			s.removeCache(repoURL, name, version)
			return nil, &UnavailableError{Repository: f.repository(), Err: err}
		}
		loaded[name] = c
		h.Write([]byte(a.digest))
	}
	for _, name := range missing {
		if a, ok := got[name]; ok {
			s.writeCache(repoURL, name, version, a)
		}
	}
	return &Set{
		Version: version,
		Base:    loaded[BaseChart],
		Istiod:  loaded[IstiodChart],
		CNI:     loaded[CNIChart],
		ZTunnel: loaded[ZTunnelChart],
		Origin:  f.repository(),
		Digest:  hex.EncodeToString(h.Sum(nil)),
	}, nil
}

// loadArchive parses a chart archive and checks that it is the chart asked for: a repository
// whose index points at the wrong file must not install the wrong Istio.
func loadArchive(data []byte, name, version string) (*chart.Chart, error) {
	c, err := loader.LoadArchive(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("chart %s %s: %w", name, version, err)
	}
	if c.Name() != name || !sameVersion(c.Metadata.Version, version) {
		return nil, fmt.Errorf("archive for chart %s %s holds chart %s %s", name, version, c.Name(), c.Metadata.Version)
	}
	return c, nil
}

// cachePath is where a chart archive of a repository is kept; its digest is in the same path
// plus ".sha256". Repositories get a directory each, named by a hash of their URL.
func (s *Source) cachePath(repoURL, name, version string) string {
	sum := sha256.Sum256([]byte(repoURL))
	return filepath.Join(s.CacheDir, hex.EncodeToString(sum[:8]),
		name+"-"+url.PathEscape(version)+".tgz")
}

// readCache returns a cached archive if its content has the digest recorded for it.
func (s *Source) readCache(repoURL, name, version string) (archive, bool) {
	if s.CacheDir == "" {
		return archive{}, false
	}
	p := s.cachePath(repoURL, name, version)
	want, err := os.ReadFile(p + ".sha256") //nolint:gosec // as below
	if err != nil {
		return archive{}, false
	}
	data, err := os.ReadFile(p) //nolint:gosec // a path under the operator's own cache directory, made of hashes
	if err != nil {
		return archive{}, false
	}
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	if digest != strings.TrimSpace(string(want)) {
		return archive{}, false
	}
	return archive{data: data, digest: digest}, true
}

// writeCache stores an archive and its digest, each by rename so that a crash leaves either the
// old file or the new one; the archive goes first, so a stale digest only causes a re-download.
func (s *Source) writeCache(repoURL, name, version string, a archive) {
	if s.CacheDir == "" {
		return
	}
	p := s.cachePath(repoURL, name, version)
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		return
	}
	if writeFile(p, a.data) == nil {
		_ = writeFile(p+".sha256", []byte(a.digest+"\n"))
	}
}

func (s *Source) removeCache(repoURL, name, version string) {
	if s.CacheDir == "" {
		return
	}
	p := s.cachePath(repoURL, name, version)
	_ = os.Remove(p + ".sha256")
	_ = os.Remove(p)
}

func writeFile(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name())
	}
	return err
}

// helmRepo is a classic Helm chart repository: an index.yaml and archives over HTTP(S).
type helmRepo struct {
	u      *url.URL
	client *http.Client
}

func (r *helmRepo) repository() string { return safeURL(r.u) }

// index is the part of a Helm repository's index.yaml this package reads.
type index struct {
	Entries map[string][]indexEntry `json:"entries"`
}

type indexEntry struct {
	Version string   `json:"version"`
	URLs    []string `json:"urls"`
	Digest  string   `json:"digest"`
}

func (r *helmRepo) fetch(ctx context.Context, version string, charts []string) (map[string]archive, error) {
	indexURL := *r.u
	indexURL.Path = strings.TrimSuffix(indexURL.Path, "/") + "/index.yaml"
	indexURL.RawPath = ""
	data, err := r.get(ctx, indexURL.String())
	if err != nil {
		return nil, err
	}
	var idx index
	if err := yaml.Unmarshal(data, &idx); err != nil {
		return nil, r.unavailable(fmt.Errorf("reading index.yaml: %w", err))
	}

	entries := map[string]indexEntry{}
	for _, name := range []string{BaseChart, IstiodChart} {
		for _, e := range idx.Entries[name] {
			if sameVersion(e.Version, version) && len(e.URLs) > 0 {
				entries[name] = e
				break
			}
		}
	}
	if len(entries) < 2 { // base and istiod
		return nil, &NotFoundError{Version: version, Repository: r.repository(), Available: r.available(idx)}
	}

	for _, name := range optionalCharts {
		for _, e := range idx.Entries[name] {
			if sameVersion(e.Version, version) && len(e.URLs) > 0 {
				entries[name] = e
				break
			}
		}
	}
	out := map[string]archive{}
	for _, name := range charts {
		e, ok := entries[name]
		if !ok {
			continue // an optional chart the repository does not have
		}
		u, err := resolveReference(r.u, e.URLs[0])
		if err != nil {
			return nil, r.unavailable(fmt.Errorf("index.yaml: chart %s %s: %w", name, version, err))
		}
		data, err := r.get(ctx, u)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(data)
		digest := hex.EncodeToString(sum[:])
		if want := strings.ToLower(strings.TrimPrefix(e.Digest, "sha256:")); want != "" && want != digest {
			return nil, r.unavailable(fmt.Errorf("chart %s %s: archive digest is %s, index.yaml says %s", name, version, digest, want))
		}
		out[name] = archive{data: data, digest: digest}
	}
	return out, nil
}

// available are the versions the index has both charts at, newest first.
func (r *helmRepo) available(idx index) []string {
	var base []string
	for _, e := range idx.Entries[BaseChart] {
		base = append(base, e.Version)
	}
	var both []string
	for _, e := range idx.Entries[IstiodChart] {
		if slices.Contains(base, e.Version) {
			both = append(both, e.Version)
		}
	}
	return newestFirst(both)
}

// resolveReference resolves a chart URL of an index against the repository URL as Helm does
// (repo.ResolveReferenceURL): relative to the repository as a directory, keeping its query.
func resolveReference(base *url.URL, ref string) (string, error) {
	refURL, err := url.Parse(ref)
	if err != nil {
		return "", err
	}
	if refURL.IsAbs() {
		return ref, nil
	}
	b := *base
	b.RawPath = strings.TrimSuffix(b.RawPath, "/") + "/"
	b.Path = strings.TrimSuffix(b.Path, "/") + "/"
	resolved := b.ResolveReference(refURL)
	resolved.RawQuery = b.RawQuery
	return resolved.String(), nil
}

func (r *helmRepo) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, r.unavailable(err)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, r.unavailable(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, r.unavailable(fmt.Errorf("GET %s: %s", redact(u), resp.Status))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxDownload+1))
	if err != nil {
		return nil, r.unavailable(fmt.Errorf("GET %s: %w", redact(u), err))
	}
	if len(data) > maxDownload {
		return nil, r.unavailable(fmt.Errorf("GET %s: larger than %d bytes", redact(u), maxDownload))
	}
	return data, nil
}

func (r *helmRepo) unavailable(err error) error {
	return &UnavailableError{Repository: r.repository(), Err: err}
}

func redact(u string) string {
	if p, err := url.Parse(u); err == nil {
		return safeURL(p)
	}
	return "(an unreadable URL)"
}

// safeURL is a URL fit for status and logs: without credentials, and without its query and
// fragment, where signed URLs carry their tokens.
func safeURL(u *url.URL) string {
	c := *u
	c.RawQuery, c.ForceQuery, c.Fragment, c.RawFragment = "", false, "", ""
	return c.Redacted()
}
