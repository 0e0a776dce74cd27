// Package cli is `kubectl meshwright`: it reads the cluster with the user's kubeconfig (kubectl's
// flags: --kubeconfig, --context, ...), computes what to show with the operator's own code
// (adoption.Planner, ladder.Decide, the chart renderer), and hands the result to package report.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	meshscheme "github.com/meshwright/meshwright/api/scheme"
	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/adoption"
	"github.com/meshwright/meshwright/internal/apply"
	"github.com/meshwright/meshwright/internal/arbiter"
	"github.com/meshwright/meshwright/internal/charts"
	"github.com/meshwright/meshwright/internal/controlplane"
	"github.com/meshwright/meshwright/internal/installed"
	"github.com/meshwright/meshwright/internal/render"
	"github.com/meshwright/meshwright/internal/report"
)

// options are the flags every command shares.
type options struct {
	flags  *genericclioptions.ConfigFlags
	output string
	out    io.Writer
	// color is decided once: on a terminal, unless NO_COLOR is set.
	color bool
	clock clock.PassiveClock
	// operatorNamespace is excluded from enrollment, as the operator does.
	operatorNamespace string
}

// NewCommand builds `kubectl meshwright` writing to out.
func NewCommand(out io.Writer) *cobra.Command {
	o := &options{flags: genericclioptions.NewConfigFlags(true), out: out, clock: clock.RealClock{}}
	if f, ok := out.(*os.File); ok {
		o.color = term.IsTerminal(int(f.Fd())) && os.Getenv("NO_COLOR") == ""
	}
	root := &cobra.Command{
		Use:   "kubectl-meshwright",
		Short: "Where the mesh rollout stands, and what Meshwright will do next",
		Long: "kubectl meshwright shows a MeshInstallation's rollout: the stages, the namespaces on the adoption ladder,\n" +
			"what blocks them and how to unblock them, and what the operator will do next (computed by the operator's own code).",
		SilenceUsage: true,
	}
	o.flags.AddFlags(root.PersistentFlags())
	root.PersistentFlags().StringVarP(&o.output, "output", "o", "", "Output format: json or yaml (default: text for a terminal).")
	root.PersistentFlags().StringVar(&o.operatorNamespace, "operator-namespace", "meshwright-system",
		"The operator's namespace, which is never enrolled (as the operator's --operator-namespace).")
	root.AddCommand(o.statusCommand(), o.planCommand(), o.namespaceCommand())
	return root
}

// Main runs the plugin; the process exits with its status.
func Main() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := NewCommand(os.Stdout).ExecuteContext(ctx); err != nil {
		return 1
	}
	return 0
}

func (o *options) style() report.Style { return report.Style{Color: o.color && o.output == ""} }

// emit writes a report as text, JSON or YAML.
func (o *options) emit(v interface {
	Text(io.Writer, report.Style) error
}) error {
	switch o.output {
	case "":
		return v.Text(o.out, o.style())
	case "json", "yaml":
		b, err := yaml.Marshal(v)
		if err == nil && o.output == "json" {
			b, err = yaml.YAMLToJSON(b)
			b = append(b, '\n')
		}
		if err != nil {
			return err
		}
		_, err = o.out.Write(b)
		return err
	}
	return fmt.Errorf("-o %s: write json or yaml, or leave it out for text", o.output)
}

func (o *options) config() (*rest.Config, client.WithWatch, error) {
	cfg, err := o.flags.ToRESTConfig()
	if err != nil {
		return nil, nil, err
	}
	// plan lists each namespace's pods and workloads: client-go's default of 5 requests a
	// second would take a minute for 300 namespaces.
	cfg.QPS, cfg.Burst = 50, 100
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: meshscheme.New()})
	return cfg, c, err
}

// installation finds the MeshInstallation to show: the one named, or else the active one.
func installation(ctx context.Context, c client.Reader, args []string) (*meshv1.MeshInstallation, error) {
	if len(args) > 0 {
		mesh := &meshv1.MeshInstallation{}
		if err := c.Get(ctx, client.ObjectKey{Name: args[0]}, mesh); err != nil {
			return nil, explain(err)
		}
		return mesh, nil
	}
	list := &meshv1.MeshInstallationList{}
	if err := c.List(ctx, list); err != nil {
		return nil, explain(err)
	}
	name := arbiter.Active(list.Items)
	for i := range list.Items {
		if list.Items[i].Name == name {
			return &list.Items[i], nil
		}
	}
	return nil, errors.New("no MeshInstallation in this cluster: create one (see config/samples), or name one")
}

// explain turns the API errors a user meets into what to do.
func explain(err error) error {
	switch {
	case meta.IsNoMatchError(err):
		return errors.New("this cluster has no MeshInstallation CRD: install Meshwright first (README: Installing in a real cluster)")
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%w (kubectl get meshinstallations lists them)", err)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%w: the plugin reads MeshInstallations, namespaces, pods, workloads, PodDisruptionBudgets, Istio's policies and Events", err)
	}
	return err
}

func (o *options) statusCommand() *cobra.Command {
	var watch bool
	cmd := &cobra.Command{
		Use:   "status [NAME]",
		Short: "The stages as a checklist, the namespaces per level, and what blocks the rest",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, c, err := o.config()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			mesh, err := installation(ctx, c, args)
			if err != nil {
				return err
			}
			if err := o.emit(report.StatusOf(mesh, o.clock.Now())); err != nil || !watch {
				return err
			}
			return o.watchStatus(ctx, c, mesh)
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "After printing the status, print it again each time it changes (a terminal is redrawn).")
	return cmd
}

// watchStatus redraws the status on every change of the installation until ctx ends (Ctrl-C),
// watching from the version already shown. The API server ends watches after a while: the
// next one starts from the last version seen, after a pause if the last one ended at once.
func (o *options) watchStatus(ctx context.Context, c client.WithWatch, mesh *meshv1.MeshInstallation) error {
	seen := mesh.ResourceVersion
	for ctx.Err() == nil {
		started := time.Now()
		w, err := c.Watch(ctx, &meshv1.MeshInstallationList{}, client.MatchingFields{"metadata.name": mesh.Name},
			&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: seen, AllowWatchBookmarks: true}})
		if err != nil {
			if ctx.Err() != nil {
				return nil //nolint:nilerr // the user stopped watching (Ctrl-C): not a failure
			}
			return explain(err)
		}
		for ev := range w.ResultChan() {
			switch ev.Type {
			case watch.Error:
				// Most often 410 Gone: the version shown is too old; start again from now.
				seen = ""
				continue
			case watch.Deleted:
				w.Stop()
				return fmt.Errorf("MeshInstallation %s was deleted", mesh.Name)
			}
			next, ok := ev.Object.(*meshv1.MeshInstallation)
			if !ok {
				continue
			}
			seen = next.ResourceVersion
			if ev.Type == watch.Bookmark {
				continue
			}
			switch {
			case o.style().Color:
				fmt.Fprint(o.out, "\x1b[H\x1b[2J") // redraw in place
			case o.output == "" || o.output == "yaml":
				fmt.Fprintln(o.out, "---")
			}
			if err := o.emit(report.StatusOf(next, o.clock.Now())); err != nil {
				w.Stop()
				return err
			}
		}
		if time.Since(started) < time.Second {
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		}
	}
	return nil
}

func (o *options) planner(c client.Reader) adoption.Planner {
	return adoption.Planner{Policies: optionalKinds{c}, Workloads: c, OperatorNamespace: o.operatorNamespace, AsUser: true}
}

// optionalKinds reads Istio's policies as empty while Istio's CRDs are not installed yet.
type optionalKinds struct{ client.Reader }

// List implements client.Reader.
func (r optionalKinds) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if err := r.Reader.List(ctx, list, opts...); err != nil && !meta.IsNoMatchError(err) {
		return err
	}
	return nil
}

func (o *options) planCommand() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "plan [NAME]",
		Short: "What the operator will do next with each namespace, and why it waits",
		Long: "plan computes, with the operator's own code, each namespace's next move: the step it starts, the workloads\n" +
			"it restarts, the policies it will carry, or why it waits. With -f, the same for a new spec, checked by the\n" +
			"API server (a dry run) and compared with the current one, before it is applied.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, c, err := o.config()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var mesh *meshv1.MeshInstallation
			if file == "" || len(args) > 0 {
				if mesh, err = installation(ctx, c, args); err != nil {
					return err
				}
			}
			if file == "" {
				plans, active, err := o.planner(c).Plan(ctx, mesh, o.clock.Now())
				if err != nil {
					return explain(err)
				}
				return o.emit(report.PlanOf(mesh, plans, active))
			}
			return o.planSpec(ctx, cfg, c, mesh, file)
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "A MeshInstallation manifest: plan as if it were applied.")
	return cmd
}

// planSpec plans a MeshInstallation read from file: the API server validates and defaults it
// (a server-side dry run, so the plan is of exactly what would be stored), then the ladder
// plans with it and the charts render it, compared with the current installation.
func (o *options) planSpec(ctx context.Context, cfg *rest.Config, c client.Client, current *meshv1.MeshInstallation, file string) error {
	raw, err := os.ReadFile(file) //nolint:gosec // the file the user named (kubectl meshwright plan -f)
	if err != nil {
		return err
	}
	next := &meshv1.MeshInstallation{}
	if err := yaml.UnmarshalStrict(raw, next); err != nil {
		return fmt.Errorf("%s is not a MeshInstallation: %w", file, err)
	}
	if next.Kind != "" && next.Kind != "MeshInstallation" {
		return fmt.Errorf("%s holds a %s, not a MeshInstallation", file, next.Kind)
	}
	switch {
	case current != nil && next.Name == "":
		next.Name = current.Name
	case current != nil && next.Name != current.Name:
		return fmt.Errorf("%s is MeshInstallation %q, and the command names %q: name the same one, or leave NAME out", file, next.Name, current.Name)
	case next.Name == "":
		// No name anywhere: the spec is for the installation that manages the mesh.
		active, err := installation(ctx, c, nil)
		if err != nil {
			return fmt.Errorf("%s has no metadata.name and %w", file, err)
		}
		next.Name = active.Name
	}
	if current == nil {
		existing := &meshv1.MeshInstallation{}
		switch err := c.Get(ctx, client.ObjectKey{Name: next.Name}, existing); {
		case err == nil:
			current = existing
		case !apierrors.IsNotFound(err):
			return explain(err)
		}
	}
	if current == nil {
		// A new installation is only acted on when no other one manages the mesh.
		if active, err := installation(ctx, c, nil); err == nil {
			return fmt.Errorf("MeshInstallation %s already manages the mesh: a second one (%s) would be reported Conflict and do nothing; plan a change to %s instead", active.Name, next.Name, active.Name)
		}
	}
	proposed := next.DeepCopy()
	if current != nil {
		proposed = current.DeepCopy()
		proposed.Spec = next.Spec
		err = c.Update(ctx, proposed, client.DryRunAll)
	} else {
		proposed.ResourceVersion = ""
		err = c.Create(ctx, proposed, client.DryRunAll)
	}
	if err != nil {
		if apierrors.IsInvalid(err) {
			return fmt.Errorf("the API server would refuse this spec: %w", err)
		}
		return explain(err)
	}
	plans, active, err := o.planner(c).Plan(ctx, proposed, o.clock.Now())
	if err != nil {
		return explain(err)
	}
	p := report.PlanOf(proposed, plans, active)
	p.Spec = &report.SpecChange{}
	if current != nil {
		before, _, err := o.planner(c).Plan(ctx, current, o.clock.Now())
		if err != nil {
			return explain(err)
		}
		p.Spec.Targets = targetChanges(before, plans)
		p.Stage = string(current.Status.Stage)
	}
	p.Spec.ControlPlane, err = controlPlaneChanges(ctx, cfg, c, current, proposed)
	if err != nil {
		p.Spec.ControlPlaneError = err.Error()
	}
	return o.emit(p)
}

// targetChanges lists the namespaces whose target level differs between two plans.
func targetChanges(before, after []adoption.NamespacePlan) []string {
	was := map[string]string{}
	for _, p := range before {
		was[p.Namespace.Name] = string(p.Enrollment.Target)
	}
	var out []string
	for _, p := range after {
		old, ok := was[p.Namespace.Name]
		if !ok {
			old = string(meshv1.LevelOff)
		}
		delete(was, p.Namespace.Name)
		if now := string(p.Enrollment.Target); now != old {
			out = append(out, fmt.Sprintf("%s: %s → %s", p.Namespace.Name, old, now))
		}
	}
	for name, old := range was {
		if old != string(meshv1.LevelOff) {
			out = append(out, fmt.Sprintf("%s: %s → %s", name, old, meshv1.LevelOff))
		}
	}
	sort.Strings(out)
	return out
}

// controlPlaneChanges renders the charts for both specs and lists the objects that differ.
// A spec whose version the operator would install as a new revision renders that revision; the
// charts of a version from spec.controlPlane.chartSource are downloaded (and cached, as the
// operator does).
func controlPlaneChanges(ctx context.Context, cfg *rest.Config, c client.Reader, current, proposed *meshv1.MeshInstallation) ([]string, error) {
	kubeVersion := ""
	if dc, err := discovery.NewDiscoveryClientForConfig(cfg); err == nil {
		if v, err := dc.ServerVersion(); err == nil {
			kubeVersion = v.GitVersion
		}
	}
	renderOf := func(m *meshv1.MeshInstallation) (map[string]map[string]any, error) {
		out := map[string]map[string]any{}
		if m == nil {
			return out, nil
		}
		in, err := controlplane.Input(m, kubeVersion)
		if err != nil {
			return nil, err
		}
		// The revisions are the ones the operator would pick, from the installed ones.
		if in.Revision, in.ValidatorRevision, err = installed.Revisions(ctx, c, m); err != nil {
			return nil, err
		}
		if in.Charts, err = controlplane.ChartsFor(ctx, pluginCharts(), m, in.Version); err != nil {
			return nil, err
		}
		objs, err := render.Render(in)
		if err != nil {
			return nil, err
		}
		for _, u := range objs {
			key := u.GetKind() + " " + u.GetName()
			if ns := u.GetNamespace(); ns != "" {
				key = u.GetKind() + " " + ns + "/" + u.GetName()
			}
			out[key] = u.Object
		}
		return out, nil
	}
	after, err := renderOf(proposed)
	if err != nil {
		return nil, err
	}
	var out []string
	before, err := renderOf(current)
	if err != nil {
		// Fixing a spec that does not render is a reason to plan: compare with nothing.
		out = append(out, "note: the current spec does not render ("+err.Error()+"), so every object is listed as added")
		before = map[string]map[string]any{}
	}
	for key, obj := range after {
		old, ok := before[key]
		switch {
		case !ok:
			out = append(out, "added: "+key)
		case apply.Difference(old, obj) != "":
			out = append(out, fmt.Sprintf("changed: %s (%s)", key, strings.TrimPrefix(apply.Difference(old, obj), ".")))
		case apply.Difference(obj, old) != "":
			out = append(out, fmt.Sprintf("changed: %s (%s removed)", key, strings.TrimPrefix(apply.Difference(obj, old), ".")))
		}
	}
	for key := range before {
		if _, ok := after[key]; !ok {
			out = append(out, "removed: "+key)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (o *options) namespaceCommand() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "namespace NAME",
		Short: "One namespace: where it stands on the ladder, what comes next, and its history",
		Long:  "namespace shows one namespace (NAME, or kubectl's -n): its level and target, the step in progress or the hold,\nwhat the ladder does next with it, and its history from the Events the operator emitted on it.",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				if ns := *o.flags.Namespace; ns != "" {
					args = []string{ns}
				} else {
					return errors.New("name the namespace: kubectl meshwright namespace NAME (or -n NAME)")
				}
			}
			_, c, err := o.config()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var meshArgs []string
			if name != "" {
				meshArgs = []string{name}
			}
			mesh, err := installation(ctx, c, meshArgs)
			if err != nil {
				return err
			}
			if err := c.Get(ctx, client.ObjectKey{Name: args[0]}, &corev1.Namespace{}); err != nil {
				return explain(err)
			}
			plans, _, err := o.planner(c).Plan(ctx, mesh, o.clock.Now())
			if err != nil {
				return explain(err)
			}
			var pl *adoption.NamespacePlan
			for i := range plans {
				if plans[i].Namespace.Name == args[0] {
					pl = &plans[i]
				}
			}
			events, err := history(ctx, c, args[0])
			if err != nil {
				return explain(err)
			}
			return o.emit(report.NamespaceOf(mesh, args[0], pl, events))
		},
	}
	cmd.Flags().StringVar(&name, "installation", "", "The MeshInstallation (default: the active one).")
	return cmd
}

// history reads the Events on a Namespace (a cluster-scoped object: its Events are in the
// default namespace, so every namespace is searched).
func history(ctx context.Context, c client.Reader, namespace string) ([]report.HistoryEvent, error) {
	list := &corev1.EventList{}
	sel := fields.SelectorFromSet(fields.Set{"involvedObject.kind": "Namespace", "involvedObject.name": namespace})
	if err := c.List(ctx, list, client.MatchingFieldsSelector{Selector: sel}); err != nil {
		return nil, err
	}
	var out []report.HistoryEvent
	for _, e := range list.Items {
		t := e.EventTime.Time
		if t.IsZero() {
			t = e.LastTimestamp.Time
		}
		if t.IsZero() {
			t = e.CreationTimestamp.Time
		}
		count := e.Count
		if e.Series != nil {
			count = e.Series.Count
		}
		out = append(out, report.HistoryEvent{Time: t.UTC(), Warning: e.Type == corev1.EventTypeWarning, Reason: e.Reason, Message: e.Message, Count: count})
	}
	return out, nil
}

// pluginCharts caches downloaded charts under the user's cache directory, as the operator does
// under its own.
func pluginCharts() *charts.Source {
	dir, err := os.UserCacheDir()
	if err != nil {
		return &charts.Source{}
	}
	return &charts.Source{CacheDir: filepath.Join(dir, "meshwright", "charts")}
}
