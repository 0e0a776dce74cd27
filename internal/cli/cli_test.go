package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	meshscheme "github.com/meshwright/meshwright/api/scheme"
	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/adoption"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/report"
)

func plansWith(targets map[string]meshv1.AdoptionLevel) []adoption.NamespacePlan {
	var out []adoption.NamespacePlan
	for name, level := range targets {
		out = append(out, adoption.NamespacePlan{Namespace: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}},
			Enrollment: ladder.Enrollment{Target: level}})
	}
	return out
}

func TestTargetChanges(t *testing.T) {
	tests := map[string]struct {
		before, after map[string]meshv1.AdoptionLevel
		want          string
	}{
		"none":               {before: map[string]meshv1.AdoptionLevel{"a": "Observe"}, after: map[string]meshv1.AdoptionLevel{"a": "Observe"}},
		"raised":             {before: map[string]meshv1.AdoptionLevel{"a": "Observe"}, after: map[string]meshv1.AdoptionLevel{"a": "MutualTLS"}, want: "a: Observe → MutualTLS"},
		"newly enrolled":     {before: nil, after: map[string]meshv1.AdoptionLevel{"b": "Observe"}, want: "b: Off → Observe"},
		"no longer selected": {before: map[string]meshv1.AdoptionLevel{"c": "ZeroTrust"}, after: nil, want: "c: ZeroTrust → Off"},
		"sorted": {before: map[string]meshv1.AdoptionLevel{"z": "Observe", "a": "Observe"}, after: map[string]meshv1.AdoptionLevel{"z": "MutualTLS", "a": "MutualTLS"},
			want: "a: Observe → MutualTLS|z: Observe → MutualTLS"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := strings.Join(targetChanges(plansWith(tc.before), plansWith(tc.after)), "|"); got != tc.want {
				t.Errorf("targetChanges = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestPluginDoesNotBuildTheController keeps the kubectl plugin free of the operator's
// controller: it reads the API with the scheme in api/scheme and the pure packages it shares.
func TestPluginDoesNotBuildTheController(t *testing.T) {
	out, err := exec.CommandContext(t.Context(), "go", "list", "-deps", "github.com/meshwright/meshwright/cmd/kubectl-meshwright").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "github.com/meshwright/meshwright/controllers" {
			t.Fatal("the kubectl plugin imports the controllers package")
		}
	}
}

// fakeReport is a report whose text is fixed, for emit.
type fakeReport struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

func (r fakeReport) Text(w io.Writer, st report.Style) error {
	_, err := fmt.Fprintf(w, "%s: %d (colour %v)\n", r.Name, r.Count, st.Color)
	return err
}

func TestEmit(t *testing.T) {
	tests := map[string]struct {
		output, color string
		want          string
		wantErr       string
	}{
		"text, no colour off a terminal":   {want: "shop: 2 (colour false)\n"},
		"text with colour":                 {color: "on", want: "shop: 2 (colour true)\n"},
		"json never coloured":              {output: "json", color: "on", want: "{\"count\":2,\"name\":\"shop\"}\n"},
		"yaml":                             {output: "yaml", want: "count: 2\nname: shop\n"},
		"anything else says what to write": {output: "table", wantErr: "-o table: write json or yaml, or leave it out for text"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			o := &options{out: &out, output: tc.output, color: tc.color != ""}
			err := o.emit(fakeReport{Name: "shop", Count: 2})
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("emit = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || out.String() != tc.want {
				t.Errorf("emit wrote %q (%v), want %q", out.String(), err, tc.want)
			}
		})
	}
}

func TestExplain(t *testing.T) {
	gr := schema.GroupResource{Group: "meshwright.io", Resource: "meshinstallations"}
	tests := map[string]struct {
		err  error
		want string
	}{
		"no CRD":    {err: &meta.NoKindMatchError{GroupKind: schema.GroupKind{Group: "meshwright.io", Kind: "MeshInstallation"}}, want: "install Meshwright first"},
		"not found": {err: apierrors.NewNotFound(gr, "prod"), want: "kubectl get meshinstallations lists them"},
		"forbidden": {err: apierrors.NewForbidden(gr, "", errors.New("RBAC")), want: "the plugin reads MeshInstallations"},
		"other":     {err: errors.New("connection refused"), want: "connection refused"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := explain(tc.err); got == nil || !strings.Contains(got.Error(), tc.want) {
				t.Errorf("explain = %v, want it to say %q", got, tc.want)
			}
		})
	}
}

// TestInstallation: a named installation, else the active one (the one that acted first), and
// a clear error when there is none. The fake client stands for the API server: installation is
// pure selection over what it lists.
func TestInstallation(t *testing.T) {
	mesh := func(name string, created time.Time, acted bool) *meshv1.MeshInstallation {
		m := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)}}
		if acted {
			m.Status.ObservedGeneration = 1
			m.Status.Version = "1.31.4"
		}
		return m
	}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	tests := map[string]struct {
		objs    []client.Object
		args    []string
		want    string
		wantErr string
	}{
		"none":                     {wantErr: "no MeshInstallation in this cluster"},
		"the only one":             {objs: []client.Object{mesh("default", t0, true)}, want: "default"},
		"the one that acted":       {objs: []client.Object{mesh("early", t0, false), mesh("later", t0.Add(time.Hour), true)}, want: "later"},
		"the one named":            {objs: []client.Object{mesh("a", t0, true), mesh("b", t0.Add(time.Hour), false)}, args: []string{"b"}, want: "b"},
		"a name that is not there": {objs: []client.Object{mesh("a", t0, true)}, args: []string{"prod"}, wantErr: "kubectl get meshinstallations lists them"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := fake.NewClientBuilder().WithScheme(meshscheme.New()).WithObjects(tc.objs...).Build()
			got, err := installation(context.Background(), c, tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("installation = %v, %v; want an error saying %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got.Name != tc.want {
				t.Fatalf("installation = %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}
