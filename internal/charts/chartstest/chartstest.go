// Package chartstest serves Istio's charts from a local chart repository, so that tests of chart
// sources, upgrades and version selection run offline. The charts are the ones compiled into the
// operator, re-packaged under whichever versions a test needs (optionally with different default
// values, to tell versions apart in what they render), with Helm's own packaging.
package chartstest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/registry"
	"sigs.k8s.io/yaml"

	"github.com/meshwright/meshwright/internal/charts"
	"github.com/meshwright/meshwright/internal/release"
)

// Options says what a Repo serves.
type Options struct {
	// Versions are the Istio versions to publish `base` and `istiod` at; each is the chart's
	// version and appVersion.
	Versions []string
	// EditValues, if set, may change a chart's default values (values.yaml) for one version,
	// so that tests can tell which version's charts were rendered. values is the whole
	// values.yaml: Istio keeps its defaults under "_internal_defaults_do_not_set" (e.g.
	// values["_internal_defaults_do_not_set"]["istiodRemote"]["injectionURL"]).
	EditValues func(version, chart string, values map[string]any)
	// OCI serves the charts from an OCI registry (HTTPS, read-only: /v2/, manifests, blobs and
	// tags) instead of a Helm repository; URL is then oci://host:port/istio.
	OCI bool
	// WithoutCNI leaves out the optional charts (`cni` and `ztunnel`), as a mirror of base and
	// istiod only would.
	WithoutCNI bool
}

// Repo is a running chart repository on 127.0.0.1. It stops when the test ends.
type Repo struct {
	// URL is the repository URL to pass to charts.Source.Load: http://127.0.0.1:port/istio,
	// or oci://127.0.0.1:port/istio with Options.OCI.
	URL string

	srv      *httptest.Server
	requests atomic.Int64
	status   atomic.Int32
	// files are served by path: index.yaml and archives, or the OCI endpoints' documents.
	mu    sync.Mutex
	files map[string]served
}

type served struct {
	data        []byte
	contentType string
}

// Serve packages the embedded charts under each of opts.Versions and serves them.
func Serve(t testing.TB, opts Options) *Repo {
	t.Helper()
	embedded, err := charts.Embedded(release.DefaultIstioVersion)
	if err != nil {
		t.Fatalf("chartstest: %v", err)
	}
	r := &Repo{files: map[string]served{}}
	handler := http.HandlerFunc(r.serve)
	if opts.OCI {
		r.srv = httptest.NewTLSServer(handler)
	} else {
		r.srv = httptest.NewServer(handler)
	}
	t.Cleanup(r.srv.Close)

	dir := t.TempDir()
	type indexEntry struct {
		*chart.Metadata `json:",inline"`
		URLs            []string  `json:"urls"`
		Created         time.Time `json:"created"`
		Digest          string    `json:"digest"`
	}
	entries := map[string][]indexEntry{}
	tags := map[string][]string{}
	for _, v := range opts.Versions {
		published := []*chart.Chart{embedded.Base, embedded.Istiod, embedded.CNI, embedded.ZTunnel}
		if opts.WithoutCNI {
			published = published[:2]
		}
		for _, c := range published {
			data, md, err := pack(c, v, opts.EditValues, dir)
			if err != nil {
				t.Fatalf("chartstest: packaging %s %s: %v", c.Name(), v, err)
			}
			if opts.OCI {
				r.publishOCI(t, md, data)
				tags[md.Name] = append(tags[md.Name], strings.ReplaceAll(v, "+", "_"))
				continue
			}
			file := fmt.Sprintf("%s-%s.tgz", md.Name, v)
			r.files["/istio/charts/"+file] = served{data, "application/gzip"}
			entries[md.Name] = append(entries[md.Name], indexEntry{
				Metadata: md, URLs: []string{"charts/" + file}, Created: time.Now(), Digest: digest(data),
			})
		}
	}
	if opts.OCI {
		for name, ts := range tags {
			list, _ := json.Marshal(map[string]any{"name": "istio/" + name, "tags": ts})
			r.files["/v2/istio/"+name+"/tags/list"] = served{list, "application/json"}
		}
		r.files["/v2/"] = served{[]byte("{}"), "application/json"}
		r.URL = "oci://" + r.srv.Listener.Addr().String() + "/istio"
		return r
	}
	index, err := yaml.Marshal(map[string]any{"apiVersion": "v1", "entries": entries, "generated": time.Now()})
	if err != nil {
		t.Fatalf("chartstest: %v", err)
	}
	r.files["/istio/index.yaml"] = served{index, "application/x-yaml"}
	r.URL = r.srv.URL + "/istio"
	return r
}

// pack re-packages an embedded chart as version v with chartutil.Save, leaving the shared
// embedded chart untouched.
func pack(c *chart.Chart, v string, edit func(string, string, map[string]any), dir string) ([]byte, *chart.Metadata, error) {
	clone := *c
	// A deep copy: Save sanitises the metadata in place, and the embedded chart is shared.
	var md chart.Metadata
	b, err := json.Marshal(c.Metadata)
	if err == nil {
		err = json.Unmarshal(b, &md)
	}
	if err != nil {
		return nil, nil, err
	}
	md.Version, md.AppVersion = v, v
	clone.Metadata = &md
	if edit != nil {
		clone.Raw = nil
		for _, f := range c.Raw {
			if f.Name != chartutil.ValuesfileName {
				clone.Raw = append(clone.Raw, f)
				continue
			}
			values, err := chartutil.ReadValues(f.Data) // a fresh copy to edit
			if err != nil {
				return nil, nil, err
			}
			edit(v, c.Name(), values)
			data, err := yaml.Marshal(map[string]any(values))
			if err != nil {
				return nil, nil, err
			}
			clone.Raw = append(clone.Raw, &chart.File{Name: f.Name, Data: data})
			clone.Values = values
		}
	}
	path, err := chartutil.Save(&clone, dir)
	if err != nil {
		return nil, nil, err
	}
	data, err := os.ReadFile(path)
	return data, &md, err
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// publishOCI stores a chart as Helm pushes it: a manifest with a config (the chart's metadata)
// and one layer (the archive), addressable by tag and by digest.
func (r *Repo) publishOCI(t testing.TB, md *chart.Metadata, archive []byte) {
	t.Helper()
	config, err := json.Marshal(md)
	if err != nil {
		t.Fatalf("chartstest: %v", err)
	}
	base := "/v2/istio/" + md.Name
	desc := func(mediaType string, data []byte) map[string]any {
		d := "sha256:" + digest(data)
		r.files[base+"/blobs/"+d] = served{data, "application/octet-stream"}
		return map[string]any{"mediaType": mediaType, "digest": d, "size": len(data)}
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        desc(registry.ConfigMediaType, config),
		"layers":        []any{desc(registry.ChartLayerMediaType, archive)},
	})
	if err != nil {
		t.Fatalf("chartstest: %v", err)
	}
	m := served{manifest, "application/vnd.oci.image.manifest.v1+json"}
	r.files[base+"/manifests/"+strings.ReplaceAll(md.Version, "+", "_")] = m
	r.files[base+"/manifests/sha256:"+digest(manifest)] = m
}

func (r *Repo) serve(w http.ResponseWriter, req *http.Request) {
	r.requests.Add(1)
	if code := r.status.Load(); code != 0 {
		http.Error(w, "chartstest: failing on purpose", int(code))
		return
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		http.Error(w, "read-only", http.StatusMethodNotAllowed)
		return
	}
	r.mu.Lock()
	f, ok := r.files[req.URL.Path]
	r.mu.Unlock()
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"errors":[{"code":"NOT_FOUND","message":"not found"}]}`)
		return
	}
	w.Header().Set("Content-Type", f.contentType)
	w.Header().Set("Content-Length", fmt.Sprint(len(f.data)))
	if strings.HasPrefix(req.URL.Path, "/v2/") {
		w.Header().Set("Docker-Content-Digest", "sha256:"+digest(f.data))
	}
	if req.Method == http.MethodGet {
		_, _ = w.Write(f.data)
	}
}

// Requests is how many requests the repository has received, so that tests can show that a
// cache spared them.
func (r *Repo) Requests() int { return int(r.requests.Load()) }

// Fail makes every later request answer with HTTP status code (e.g. 500); 0 serves normally
// again.
func (r *Repo) Fail(code int) { r.status.Store(int32(code)) }

// Close stops the server: later requests fail to connect, as with a repository that is down.
func (r *Repo) Close() { r.srv.Close() }

// Client is an HTTP client that trusts the repository (its OCI registry is HTTPS with a test
// certificate); pass it as charts.Source.HTTPClient.
func (r *Repo) Client() *http.Client { return r.srv.Client() }
