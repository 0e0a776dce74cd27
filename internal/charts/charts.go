// Package charts says where Istio's Helm charts for a version come from. The charts compiled into
// the operator (Istio's Go module, istio.io/istio/manifests) are the offline default and cover one
// version; any other version is pulled from a Helm chart repository (Istio publishes `base` and
// `istiod` at https://istio-release.storage.googleapis.com/charts, chart version == Istio version)
// or an OCI registry, and kept on disk so that a restart does not download them again.
package charts

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"istio.io/istio/manifests"
	"k8s.io/apimachinery/pkg/util/version"

	"github.com/meshwright/meshwright/internal/release"
)

// Chart names, as Istio publishes them. The control plane is rendered from these two.
const (
	// BaseChart holds Istio's CRDs and cluster-wide resources.
	BaseChart = "base"
	// IstiodChart holds the control plane itself.
	IstiodChart = "istiod"
	// CNIChart holds Istio CNI's node agent, installed where Pod Security forbids istio-init.
	CNIChart = "cni"
	// ZTunnelChart holds ztunnel, ambient mode's node proxy.
	ZTunnelChart = "ztunnel"
)

// lacksOptional reports whether the set lacks one of the optional charts.
func (s *Set) lacksOptional() bool { return s.CNI == nil || s.ZTunnel == nil }

// optionalCharts are the charts a set may lack: a repository or mirror without them still
// serves the installations that do not need them (no Istio CNI, no ambient mode).
var optionalCharts = []string{CNIChart, ZTunnelChart}

// OriginEmbedded is Set.Origin for the charts compiled into the operator.
const OriginEmbedded = "embedded"

// Set is the charts of one Istio version that the control plane is rendered from. It is shared
// between callers (loading is slow): treat the charts as read-only.
type Set struct {
	// Version is the Istio version, e.g. "1.31.4".
	Version string
	// Base and Istiod are Istio's `base` and `istiod` charts of that version.
	Base, Istiod *chart.Chart
	// CNI is Istio's `cni` chart of that version; nil where it was not loaded (charts pulled
	// from a repository carry base and istiod only).
	CNI *chart.Chart
	// ZTunnel is Istio's `ztunnel` chart of that version, ambient mode's node proxy; nil where
	// it was not loaded.
	ZTunnel *chart.Chart
	// Origin is OriginEmbedded or the repository URL the charts came from (credentials
	// redacted), so that status and logs can say which charts are installed.
	Origin string
	// Digest identifies the chart content (hex sha256 over the two archives, or over the
	// embedded files), so that rendering can memoise on it rather than on the version alone:
	// the same version from two repositories need not be the same charts.
	Digest string
}

// NotFoundError says that a repository (or the operator's embedded charts) has no `base` or
// `istiod` chart at the requested version. Retrying will not help; another version might.
type NotFoundError struct {
	// Version is the Istio version asked for.
	Version string
	// Repository is the repository URL; "" means the embedded charts.
	Repository string
	// Available are the versions that repository does have, newest first.
	Available []string
}

// maxListed bounds the versions an error message names.
const maxListed = 5

// Error names the version and the repository, and lists a few versions it does have so that
// the user can pick one.
func (e *NotFoundError) Error() string {
	where := "in the Helm repository " + e.Repository
	if e.Repository == "" {
		where = "among the charts compiled into this build of Meshwright"
	}
	msg := fmt.Sprintf("Istio %s charts (base and istiod) are not %s", e.Version, where)
	switch n := len(e.Available); {
	case n == 0:
		return msg + ": it has no Istio versions"
	case n <= maxListed:
		return msg + "; available: " + strings.Join(e.Available, ", ")
	default:
		return fmt.Sprintf("%s; available: %s and %d older", msg,
			strings.Join(e.Available[:maxListed], ", "), n-maxListed)
	}
}

// UnavailableError says the charts could not be fetched or read: the network, an HTTP status, an
// unreadable index or a bad archive. Unlike NotFoundError, retrying later may help.
type UnavailableError struct {
	// Repository is the repository URL (credentials redacted).
	Repository string
	// Err is the cause.
	Err error
}

// Error names the repository and the cause.
func (e *UnavailableError) Error() string {
	return fmt.Sprintf("Istio charts unavailable from %s: %v", e.Repository, e.Err)
}

// Unwrap returns the cause, so that callers can test for e.g. context.DeadlineExceeded.
func (e *UnavailableError) Unwrap() error { return e.Err }

// embeddedDirs are the embedded charts' directories in istio.io/istio/manifests.
var embeddedDirs = map[string]string{
	BaseChart:    "charts/base",
	IstiodChart:  "charts/istio-control/istio-discovery",
	CNIChart:     "charts/istio-cni",
	ZTunnelChart: "charts/ztunnel",
}

var (
	embeddedOnce sync.Once
	embeddedSet  Set
	embeddedErr  error
)

// Embedded returns the charts compiled into the operator for version: only
// release.DefaultIstioVersion is embedded, any other version gives a *NotFoundError. The charts are
// loaded once (Istio's CRD file alone takes close to a second to parse) and shared.
//
// The embedded charts keep the placeholder chart version of Istio's source tree (1.0.0): they are
// rendered as they always were, so installations made from them do not change.
func Embedded(v string) (*Set, error) {
	if v != release.DefaultIstioVersion {
		return nil, &NotFoundError{Version: v, Available: []string{release.DefaultIstioVersion}}
	}
	embeddedOnce.Do(func() {
		h := sha256.New()
		var base, istiod, cni, ztunnel *chart.Chart
		if base, embeddedErr = loadEmbedded(BaseChart, h); embeddedErr != nil {
			return
		}
		if istiod, embeddedErr = loadEmbedded(IstiodChart, h); embeddedErr != nil {
			return
		}
		if cni, embeddedErr = loadEmbedded(CNIChart, h); embeddedErr != nil {
			return
		}
		if ztunnel, embeddedErr = loadEmbedded(ZTunnelChart, h); embeddedErr != nil {
			return
		}
		embeddedSet = Set{Base: base, Istiod: istiod, CNI: cni, ZTunnel: ztunnel, Origin: OriginEmbedded, Digest: hex.EncodeToString(h.Sum(nil))}
	})
	if embeddedErr != nil {
		return nil, embeddedErr
	}
	s := embeddedSet
	s.Version = v
	return &s, nil
}

// loadEmbedded reads one chart from the embedded manifests, hashing its files into h.
func loadEmbedded(name string, h interface{ Write([]byte) (int, error) }) (*chart.Chart, error) {
	dir := embeddedDirs[name]
	var files []*loader.BufferedFile
	err := fs.WalkDir(manifests.FS, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(manifests.FS, p)
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, dir+"/")
		fmt.Fprintf(h, "%s\x00%d\x00", rel, len(data))
		_, _ = h.Write(data) // a hash.Hash's Write never returns an error
		files = append(files, &loader.BufferedFile{Name: rel, Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the embedded %s chart: %w", name, err)
	}
	c, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("loading the embedded %s chart: %w", name, err)
	}
	return c, nil
}

// newestFirst sorts versions by semantic version, newest first, without duplicates; what does
// not parse as a version goes last.
func newestFirst(vs []string) []string {
	vs = slices.Clone(vs)
	slices.SortStableFunc(vs, func(a, b string) int {
		va, errA := version.Parse(a)
		vb, errB := version.Parse(b)
		switch {
		case errA != nil && errB != nil:
			return strings.Compare(a, b)
		case errA != nil:
			return 1
		case errB != nil:
			return -1
		case va.GreaterThan(vb):
			return -1
		case vb.GreaterThan(va):
			return 1
		}
		return strings.Compare(a, b)
	})
	return slices.Compact(vs)
}

// sameVersion says whether a chart version is the Istio version asked for ("1.31.5" and
// "v1.31.5" are the same).
func sameVersion(chartVersion, want string) bool {
	if chartVersion == want {
		return true
	}
	a, errA := version.Parse(chartVersion)
	b, errB := version.Parse(want)
	return errA == nil && errB == nil && a.EqualTo(b) && a.String() == b.String()
}
