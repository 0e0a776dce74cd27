package adoption

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/apply"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/policy"
)

// policyObjects are Istio's policy kinds, for ladderCacheWithChanges: the controller's policy
// watches tell Observations of their events too.
func policyObjects() []client.Object {
	var out []client.Object
	for _, gvk := range policy.Kinds() {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk)
		out = append(out, u)
	}
	return out
}

// namespaceLists selects the lists of one namespace.
func namespaceLists(_ client.ObjectList, o *client.ListOptions) bool { return o.Namespace != "" }

// policySyncer syncs one namespace's policies as passes do, counting what each sync lists.
type policySyncer struct {
	t       *testing.T
	obs     *Observations
	cache   cache.Cache
	stage   *Stage
	counter *countingLists
	mesh    *meshv1.MeshInstallation
	ns      *corev1.Namespace
}

// sync observes the namespace as a pass does (its change count first), syncs its policies for
// e, and returns how many namespace lists that took and the change count it was made at.
func (p *policySyncer) sync(e ladder.Effects) (int32, uint64) {
	p.t.Helper()
	ctx := context.Background()
	plan := &NamespacePlan{Namespace: p.ns}
	var err error
	if plan.Pods, plan.Workloads, plan.uids, plan.observedAt, err = p.obs.observe(ctx, p.cache, p.ns.Name); err != nil {
		p.t.Fatal(err)
	}
	p.counter.lists.Store(0)
	if err := p.stage.syncPolicies(ctx, p.mesh, plan, e); err != nil {
		p.t.Fatal(err)
	}
	return p.counter.lists.Load(), plan.observedAt
}

// settle waits until an event of the namespace came after change count at.
func (p *policySyncer) settle(at uint64) {
	p.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); p.obs.LastChange(p.ns.Name) == at; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			p.t.Fatal("no event of the namespace's policies reached the memo")
		}
	}
}

// quiet syncs for e until a sync reads nothing: the events of earlier writes have all come.
func (p *policySyncer) quiet(e ladder.Effects) {
	p.t.Helper()
	for range 50 {
		if n, _ := p.sync(e); n == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatal("syncs with nothing changed kept reading")
}

// strict returns the namespace's STRICT PeerAuthentication, nil when there is none.
func (p *policySyncer) strict() *unstructured.Unstructured {
	p.t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(policy.PeerAuthenticationGVK)
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: p.ns.Name, Name: policy.StrictName}, u); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		p.t.Fatal(err)
	}
	return u
}

// TestPolicySyncFollowsChange: a namespace's policies synced for the same inputs are not read
// or written again while no event of its objects comes; a policy deleted by someone, new
// inputs, or the resync period passing make the next sync read, and restore what is missing.
func TestPolicySyncFollowsChange(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Now())
	obs := NewObservationsWithClock(clk)
	c := ladderCacheWithChanges(t, obs, policyObjects()...)
	created := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "memo-sync"}}
	if err := k8s.Create(context.Background(), created); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), created) })
	counter := &countingLists{Reader: k8s, only: namespaceLists}
	p := &policySyncer{t: t, obs: obs, cache: c, counter: counter, mesh: meshFor("memo-sync"), ns: getNS(t, "memo-sync"),
		stage: &Stage{Client: listCountingClient{Client: k8s, counter: counter}, Reader: c, Applier: &apply.Applier{Client: k8s, FieldManager: "meshwright"},
			FieldManager: "meshwright", Observations: obs}}
	strict := ladder.Effects{Strict: true}

	n, at := p.sync(strict)
	if n == 0 || p.strict() == nil {
		t.Fatalf("first sync: %d lists, STRICT policy %v; want it read and created", n, p.strict())
	}
	p.settle(at)
	if n, _ := p.sync(strict); n == 0 {
		t.Error("the sync after the policy's own event read nothing: it must check once more")
	}
	p.quiet(strict)

	_, at = p.sync(strict)
	if err := k8s.Delete(context.Background(), p.strict()); err != nil {
		t.Fatal(err)
	}
	p.settle(at)
	if n, _ := p.sync(strict); n == 0 || p.strict() == nil {
		t.Errorf("after someone deleted the STRICT policy: %d lists, policy %v; want it restored", n, p.strict())
	}

	tests := map[string]struct {
		change func()
		e      ladder.Effects
	}{
		"other effects":            {change: func() {}, e: ladder.Effects{Strict: true, Authorization: true, DryRun: true}},
		"another installation":     {change: func() { p.mesh = meshFor("memo-sync-2") }, e: strict},
		"the resync period passed": {change: func() { clk.SetTime(clk.Now().Add(ResyncPeriod)) }, e: strict},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p.t = t
			p.quiet(strict)
			tc.change()
			if n, _ := p.sync(tc.e); n == 0 {
				t.Errorf("no lists: the sync was skipped")
			}
			p.quiet(strict) // back to what the next case starts from
		})
	}
}

// TestIncrementalPlansMatchFullOnes: over a random sequence of changes to namespaces (labels,
// ladder records), their pods, workloads and budgets, other people's PeerAuthentications and the
// installation's spec, a planner reusing Observations plans exactly what one reading everything
// afresh plans; once nothing changes, it reads nothing per namespace. OBSERVATIONS_SEED replays
// the sequence of a seed the log names.
func TestIncrementalPlansMatchFullOnes(t *testing.T) {
	ctx := context.Background()
	rng := replayableRand(t, 1)
	obs := NewObservations()
	c := ladderCacheWithChanges(t, obs, policyObjects()...)
	namespaces := []string{"plan-a", "plan-b", "plan-c"}
	for _, ns := range namespaces {
		created := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"memo-plan": "on"}}}
		if err := k8s.Create(ctx, created); err != nil {
			t.Fatal(err)
		}
		// Being deleted, they are out of the other tests' plans (envtest never removes them).
		t.Cleanup(func() { _ = k8s.Delete(ctx, created) })
	}
	mesh := meshFor("plan-memo")
	mesh.Spec.Namespaces[0].Selector.MatchLabels = map[string]string{"memo-plan": "on"}
	mesh.UID = types.UID("plan-memo-uid")
	now := time.Now()
	memo := Planner{Policies: c, Workloads: c, Observations: obs}
	full := Planner{Policies: c, Workloads: c}
	for step := range 150 {
		what := randomPlanChange(ctx, t, rng, namespaces, mesh, step)
		var got, want string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			got, want = planSummary(ctx, t, memo, mesh, now), planSummary(ctx, t, full, mesh, now)
			if got == want {
				break
			}
		}
		if got != want {
			t.Fatalf("step %d (%s): the memo's plans\n%s\ndiffer from full ones\n%s", step, what, got, want)
		}
	}
	// Nothing changes any more: a pass reads none of any namespace's pods, workloads, budgets or
	// policies.
	counting := &countingLists{Reader: c, only: func(list client.ObjectList, o *client.ListOptions) bool {
		return namespaceLists(list, o) && memoised(list)
	}}
	quiet := Planner{Policies: counting, Workloads: counting, Observations: obs}
	becomesQuiet(t, "lists of one namespace's pods, workloads, budgets or policies", func() int32 {
		counting.lists.Store(0)
		planSummary(ctx, t, quiet, mesh, now)
		return counting.lists.Load()
	})
}

// memoised says whether a list is of a kind Observations stands in for: pods, workloads,
// budgets and policies. (The static checks of a namespace at a callers gate read its Services
// and Ingresses live, each pass.)
func memoised(list client.ObjectList) bool {
	switch list.(type) {
	case *corev1.PodList, *appsv1.DeploymentList, *appsv1.StatefulSetList, *appsv1.DaemonSetList, *batchv1.CronJobList, *batchv1.JobList,
		*policyv1.PodDisruptionBudgetList, *unstructured.UnstructuredList:
		return true
	}
	return false
}

// planSummary plans with p and renders what the ladder decides from and decides, namespace by
// namespace.
func planSummary(ctx context.Context, t *testing.T, p Planner, mesh *meshv1.MeshInstallation, now time.Time) string {
	t.Helper()
	plans, _, err := p.Plan(ctx, mesh, now)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for i := range plans {
		c := &plans[i]
		if !strings.HasPrefix(c.Namespace.Name, "plan-") {
			continue
		}
		d, err := json.Marshal(c.Decision)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s: enrollment %+v, current %s, state %+v, pods %+v, workloads %+v, conflict %q, decision %s\n",
			c.Namespace.Name, c.Enrollment, c.Current, describeState(c.State), c.Pods, c.Workloads, c.PolicyConflict, d)
	}
	return b.String()
}

func describeState(st ladder.State) string {
	b, _ := json.Marshal(st)
	return string(b)
}

// randomPlanChange makes one random change that a plan reads and says what it was: one of
// randomChange's (pods, workloads, budgets, Services), a namespace's labels or ladder record,
// someone else's PeerAuthentication, or the installation's spec.
func randomPlanChange(ctx context.Context, t *testing.T, rng *rand.Rand, namespaces []string, mesh *meshv1.MeshInstallation, step int) string {
	t.Helper()
	ns := namespaces[rng.IntN(len(namespaces))]
	switch rng.IntN(6) {
	case 0:
		levels := []string{"", "Observe", "MutualTLS", "Sideways"}
		target, level := levels[rng.IntN(len(levels))], levels[rng.IntN(3)]
		records := []string{"", "{", `{"since":"2026-01-01T00:00:00Z"}`,
			`{"step":{"to":"Observe","started":"2026-01-01T00:00:00Z","id":"observe-1","revision":"default"}}`,
			fmt.Sprintf(`{"hold":{"reason":"Test","message":"held","generation":%d}}`, mesh.Generation)}
		record := records[rng.IntN(len(records))]
		patch := map[string]any{"metadata": map[string]any{
			"labels":      map[string]any{meshv1.LabelTargetLevel: nilIfEmpty(target), meshv1.LabelLevel: nilIfEmpty(level), "memo-plan": []any{"on", nil}[rng.IntN(2)]},
			"annotations": map[string]any{meshv1.AnnotationLadder: nilIfEmpty(record)}}}
		b, _ := json.Marshal(patch)
		if err := k8s.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, client.RawPatch(types.MergePatchType, b)); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		return fmt.Sprintf("namespace %s: target %q, level %q, record %s", ns, target, level, record)
	case 1:
		pa := &unstructured.Unstructured{}
		pa.SetGroupVersionKind(policy.PeerAuthenticationGVK)
		pa.SetNamespace(ns)
		pa.SetName("theirs")
		mode := []string{"PERMISSIVE", "STRICT"}[rng.IntN(2)]
		_ = unstructured.SetNestedField(pa.Object, mode, "spec", "mtls", "mode")
		err := k8s.Create(ctx, pa)
		if apierrors.IsAlreadyExists(err) {
			err = k8s.Delete(ctx, pa)
			mode = "deleted"
		}
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		return fmt.Sprintf("someone's PeerAuthentication in %s: %s", ns, mode)
	case 2:
		mesh.Generation++
		mesh.Spec.Rollout.Paused = rng.IntN(3) == 0
		mesh.Spec.Namespaces[0].Level = []meshv1.AdoptionLevel{meshv1.LevelObserve, meshv1.LevelMutualTLS}[rng.IntN(2)]
		return fmt.Sprintf("installation spec: generation %d, paused %v, level %s", mesh.Generation, mesh.Spec.Rollout.Paused, mesh.Spec.Namespaces[0].Level)
	default:
		return randomChange(ctx, t, rng, namespaces, step)
	}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// TestObservationsForgetNamespacesGone: Keep drops every memo of a namespace no longer listed,
// its ladder record too.
func TestObservationsForgetNamespacesGone(t *testing.T) {
	obs := NewObservations()
	obs.Changed("gone")
	obs.ladderRecord("gone", recordKey{resourceVersion: "1", mesh: "uid", generation: 1}, func() (ladder.State, ladder.Enrollment) { return ladder.State{}, ladder.Enrollment{} })
	obs.markPoliciesSynced("gone", obs.LastChange("gone"), "key")
	if _, err := obs.PodRevisions("gone", func() ([]string, error) { return []string{"default"}, nil }); err != nil {
		t.Fatal(err)
	}
	obs.Keep(map[string]bool{"kept": true})
	if len(obs.changes)+len(obs.seen)+len(obs.records)+len(obs.synced)+len(obs.revisions)+len(obs.conflicts) != 0 {
		t.Errorf("entries left after Keep: changes %v, records %v, synced %v, revisions %v", obs.changes, obs.records, obs.synced, obs.revisions)
	}
}
