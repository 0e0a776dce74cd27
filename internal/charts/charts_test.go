package charts_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"

	"github.com/meshwright/meshwright/internal/charts"
	"github.com/meshwright/meshwright/internal/charts/chartstest"
	"github.com/meshwright/meshwright/internal/release"
)

// injectionURL is set as istiod's default only in the charts served as 1.31.5, so that a test
// can tell from what a chart renders which version's charts it got.
const injectionURL = "https://127.0.0.1:15017/inject"

func serve(t *testing.T, oci bool) *chartstest.Repo {
	return chartstest.Serve(t, chartstest.Options{
		Versions: []string{"1.31.4", "1.31.5"},
		OCI:      oci,
		EditValues: func(version, chart string, values map[string]any) {
			if version == "1.31.5" && chart == charts.IstiodChart {
				defaults := values["_internal_defaults_do_not_set"].(map[string]any)
				defaults["istiodRemote"].(map[string]any)["injectionURL"] = injectionURL
			}
		},
	})
}

func TestLoad(t *testing.T) {
	corrupt := func(name string) func(t *testing.T, r *chartstest.Repo, cacheDir string) {
		return func(t *testing.T, _ *chartstest.Repo, cacheDir string) {
			n := 0
			err := filepath.WalkDir(cacheDir, func(p string, d fs.DirEntry, err error) error {
				if err == nil && strings.HasPrefix(d.Name(), name+"-") && strings.HasSuffix(p, ".tgz") {
					n++
					return os.WriteFile(p, []byte("not a chart"), 0o644)
				}
				return err
			})
			if err != nil || n != 1 {
				t.Fatalf("corrupting the cached %s archive: %d files, %v", name, n, err)
			}
		}
	}
	tests := map[string]struct {
		oci     bool
		repoURL string // "" is the served repository; "-" is no repository (embedded charts)
		version string
		// warm loads the version once before the load under test: with the same Source
		// (memory), or with another Source on the same cache directory (disk).
		warm    string
		between func(t *testing.T, r *chartstest.Repo, cacheDir string)
		// wantRequests is how many requests the load under test makes; -1 is any.
		wantRequests  int
		wantNotFound  []string // the versions a *NotFoundError lists
		wantUnavail   bool
		wantErr       string // a plain error containing this
		wantInjection bool   // istiod renders the 1.31.5-only injectionURL
	}{
		"downloads from a Helm repository": {
			version: "1.31.5", wantRequests: 5, wantInjection: true, // index.yaml and four archives (base, istiod, cni, ztunnel)
		},
		"another version from the same repository": {
			version: "1.31.4", wantRequests: 5,
		},
		"second load is served from memory": {
			version: "1.31.5", warm: "memory", between: func(_ *testing.T, r *chartstest.Repo, _ string) { r.Close() },
			wantRequests: 0, wantInjection: true,
		},
		"a new Source loads from the disk cache": {
			version: "1.31.5", warm: "disk", between: func(_ *testing.T, r *chartstest.Repo, _ string) { r.Close() },
			wantRequests: 0, wantInjection: true,
		},
		"a corrupt cached archive is downloaded again": {
			version: "1.31.5", warm: "disk", between: corrupt(charts.IstiodChart),
			wantRequests: 2, wantInjection: true, // index.yaml and istiod; base is still good
		},
		"missing version lists the available ones": {
			version: "1.30.2", wantNotFound: []string{"1.31.5", "1.31.4"}, wantRequests: 1,
		},
		"repository answers 500": {
			version: "1.31.5", between: func(_ *testing.T, r *chartstest.Repo, _ string) { r.Fail(500) },
			wantUnavail: true, wantRequests: 1,
		},
		"repository is down": {
			version: "1.31.5", between: func(_ *testing.T, r *chartstest.Repo, _ string) { r.Close() },
			wantUnavail: true, wantRequests: 0,
		},
		"embedded default version": {
			repoURL: "-", version: release.DefaultIstioVersion, wantRequests: 0,
		},
		"embedded charts have no other version": {
			repoURL: "-", version: "1.31.5", wantNotFound: []string{release.DefaultIstioVersion}, wantRequests: 0,
		},
		"unsupported scheme": {
			repoURL: "file:///charts", version: "1.31.5", wantErr: "scheme must be http, https or oci", wantRequests: 0,
		},
		"oci: downloads from a registry": {
			oci: true, version: "1.31.5", wantRequests: -1, wantInjection: true,
		},
		"oci: a new Source loads from the disk cache": {
			oci: true, version: "1.31.5", warm: "disk", between: func(_ *testing.T, r *chartstest.Repo, _ string) { r.Close() },
			wantRequests: 0, wantInjection: true,
		},
		"oci: a corrupt cached archive is downloaded again": {
			oci: true, version: "1.31.4", warm: "disk", between: corrupt(charts.BaseChart), wantRequests: -1,
		},
		"oci: missing version lists the registry's tags": {
			oci: true, version: "1.30.2", wantNotFound: []string{"1.31.5", "1.31.4"}, wantRequests: -1,
		},
		"oci: registry answers 500": {
			oci: true, version: "1.31.5", between: func(_ *testing.T, r *chartstest.Repo, _ string) { r.Fail(500) },
			wantUnavail: true, wantRequests: -1,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			repo := serve(t, tc.oci)
			repoURL := repo.URL
			switch tc.repoURL {
			case "":
			case "-":
				repoURL = ""
			default:
				repoURL = tc.repoURL
			}
			cacheDir := filepath.Join(t.TempDir(), "cache") // Load creates it
			src := &charts.Source{CacheDir: cacheDir, HTTPClient: repo.Client()}

			var warm *charts.Set
			if tc.warm != "" {
				other := &charts.Source{CacheDir: cacheDir, HTTPClient: repo.Client()}
				if tc.warm == "memory" {
					other = src
				}
				var err error
				if warm, err = other.Load(ctx, repoURL, tc.version); err != nil {
					t.Fatalf("warming: %v", err)
				}
			}
			if tc.between != nil {
				tc.between(t, repo, cacheDir)
			}
			before := repo.Requests()
			set, err := src.Load(ctx, repoURL, tc.version)
			if got := repo.Requests() - before; tc.wantRequests >= 0 && got != tc.wantRequests {
				t.Errorf("requests = %d, want %d", got, tc.wantRequests)
			}

			var nf *charts.NotFoundError
			var ua *charts.UnavailableError
			switch {
			case tc.wantNotFound != nil:
				if !errors.As(err, &nf) {
					t.Fatalf("err = %v, want *NotFoundError", err)
				}
				if !slices.Equal(nf.Available, tc.wantNotFound) || nf.Version != tc.version {
					t.Errorf("NotFoundError = %+v, want version %s, available %v", nf, tc.version, tc.wantNotFound)
				}
				if msg := err.Error(); !strings.Contains(msg, strings.Join(tc.wantNotFound, ", ")) {
					t.Errorf("message %q does not list %v", msg, tc.wantNotFound)
				}
				return
			case tc.wantUnavail:
				if !errors.As(err, &ua) || ua.Err == nil || ua.Repository != repoURL {
					t.Fatalf("err = %#v, want *UnavailableError from %s", err, repoURL)
				}
				return
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || errors.As(err, &nf) || errors.As(err, &ua) {
					t.Fatalf("err = %v, want a plain error containing %q", err, tc.wantErr)
				}
				return
			case err != nil:
				t.Fatalf("Load: %v", err)
			}

			if set.Version != tc.version || set.Digest == "" || set.Base == nil || set.Istiod == nil || set.CNI == nil || set.ZTunnel == nil {
				t.Fatalf("set = %+v", set)
			}
			if set.Base.Name() != charts.BaseChart || set.Istiod.Name() != charts.IstiodChart ||
				len(set.Base.Templates) == 0 || len(set.Istiod.Templates) == 0 {
				t.Errorf("charts %s (%d templates), %s (%d templates)", set.Base.Name(), len(set.Base.Templates),
					set.Istiod.Name(), len(set.Istiod.Templates))
			}
			if repoURL == "" {
				if set.Origin != charts.OriginEmbedded {
					t.Errorf("origin = %q, want %q", set.Origin, charts.OriginEmbedded)
				}
			} else {
				if set.Origin != repoURL {
					t.Errorf("origin = %q, want %q", set.Origin, repoURL)
				}
				for _, c := range []string{set.Base.Metadata.Version, set.Istiod.Metadata.Version, set.Istiod.Metadata.AppVersion} {
					if c != tc.version {
						t.Errorf("chart version %s, want %s", c, tc.version)
					}
				}
			}
			if warm != nil {
				if warm.Digest != set.Digest {
					t.Errorf("digest %s, warm load had %s", set.Digest, warm.Digest)
				}
				if tc.warm == "memory" && warm != set {
					t.Errorf("second load from the same Source returned a new Set")
				}
			}
			if got := strings.Contains(renderIstiod(t, set), injectionURL); got != tc.wantInjection {
				t.Errorf("istiod renders injectionURL %s: %v, want %v", injectionURL, got, tc.wantInjection)
			}
			if tc.between != nil && tc.warm == "disk" {
				// Whatever the load repaired is on disk now: a third Source needs no network.
				repo.Close()
				third := &charts.Source{CacheDir: cacheDir, HTTPClient: repo.Client()}
				if again, err := third.Load(ctx, repoURL, tc.version); err != nil || again.Digest != set.Digest {
					t.Errorf("reload from disk: %v", err)
				}
			}
		})
	}
}

// renderIstiod renders the istiod chart as the operator would and returns the manifests.
func renderIstiod(t *testing.T, set *charts.Set) string {
	t.Helper()
	values := map[string]any{"global": map[string]any{"hub": "docker.io/istio", "tag": set.Version, "istioNamespace": "istio-system"}}
	rv, err := chartutil.ToRenderValues(set.Istiod, values, chartutil.ReleaseOptions{
		Name: "istiod", Namespace: "istio-system", Revision: 1, IsInstall: true,
	}, chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatalf("values: %v", err)
	}
	files, err := engine.Render(set.Istiod, rv)
	if err != nil {
		t.Fatalf("rendering istiod: %v", err)
	}
	var b strings.Builder
	for name, content := range files {
		if strings.HasSuffix(name, "mutatingwebhook.yaml") && !strings.Contains(content, "MutatingWebhookConfiguration") {
			t.Errorf("%s renders no MutatingWebhookConfiguration", name)
		}
		b.WriteString(content)
	}
	return b.String()
}

// Concurrent loads of one version share one download and one Set.
func TestLoadConcurrent(t *testing.T) {
	repo := serve(t, false)
	src := &charts.Source{CacheDir: t.TempDir()}
	sets := make([]*charts.Set, 8)
	var wg sync.WaitGroup
	for i := range sets {
		wg.Go(func() {
			s, err := src.Load(context.Background(), repo.URL, "1.31.4")
			if err != nil {
				t.Error(err)
			}
			sets[i] = s
		})
	}
	wg.Wait()
	if n := repo.Requests(); n != 5 {
		t.Errorf("requests = %d, want 5 (index.yaml and four archives)", n)
	}
	for _, s := range sets[1:] {
		if s != sets[0] {
			t.Fatalf("concurrent loads returned different Sets")
		}
	}
}

// Embedded is loaded once: every call shares the charts.
func TestEmbeddedMemoised(t *testing.T) {
	a, err := charts.Embedded(release.DefaultIstioVersion)
	if err != nil {
		t.Fatal(err)
	}
	b, err := charts.Embedded(release.DefaultIstioVersion)
	if err != nil {
		t.Fatal(err)
	}
	if a.Base != b.Base || a.Istiod != b.Istiod || a.Digest != b.Digest {
		t.Errorf("Embedded loaded the charts twice")
	}
}

// TestFailuresAreRememberedAndRedacted: a failed load is returned again without a request for
// a while (passes come with every pod event), and the error names the repository without the
// credentials or the signed query a URL may carry.
func TestFailuresAreRememberedAndRedacted(t *testing.T) {
	repo := serve(t, false)
	src := &charts.Source{CacheDir: t.TempDir()}
	repo.Fail(500)
	url := strings.Replace(repo.URL, "http://", "http://user:secret@", 1) + "?sig=token123"
	_, err := src.Load(context.Background(), url, "1.31.4")
	var unavailable *charts.UnavailableError
	if !errors.As(err, &unavailable) {
		t.Fatalf("err = %v, want an UnavailableError", err)
	}
	for _, secret := range []string{"secret", "token123"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows %q: %v", secret, err)
		}
	}
	repo.Fail(0)
	before := repo.Requests()
	if _, err := src.Load(context.Background(), url, "1.31.4"); err == nil || repo.Requests() != before {
		t.Errorf("a load within %s of a failure: err %v, %d requests; want the failure again and none", charts.RetryFailedAfter, err, repo.Requests()-before)
	}
	if _, err := (&charts.Source{}).Load(context.Background(), url, "1.31.4"); err != nil {
		t.Errorf("another Source does not share the failure: %v", err)
	}
}

// TestLoadWithoutCNI: a repository that has base and istiod but not cni (a mirror of what an
// installation without Istio CNI needs) still loads; the set has no cni chart, and the stage
// reports that it cannot install Istio CNI from it.
func TestLoadWithoutCNI(t *testing.T) {
	for _, oci := range []bool{false, true} {
		repo := chartstest.Serve(t, chartstest.Options{Versions: []string{"1.31.5"}, OCI: oci, WithoutCNI: true})
		set, err := (&charts.Source{CacheDir: t.TempDir(), HTTPClient: repo.Client()}).Load(context.Background(), repo.URL, "1.31.5")
		if err != nil || set.Base == nil || set.Istiod == nil || set.CNI != nil {
			t.Fatalf("OCI %v: set %+v, err %v; want base and istiod, no cni", oci, set, err)
		}
	}
}
