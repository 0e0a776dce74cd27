package adoption

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshwright/meshwright/internal/revision"
)

// countingLists counts the lists a reader serves (those only selects, when set): what an
// observation costs.
type countingLists struct {
	client.Reader
	only  func(list client.ObjectList, opts *client.ListOptions) bool
	lists atomic.Int32
}

func (c *countingLists) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if c.only == nil || c.only(list, (&client.ListOptions{}).ApplyOptions(opts)) {
		c.lists.Add(1)
	}
	return c.Reader.List(ctx, list, opts...)
}

// listCountingClient is a client whose lists counter counts.
type listCountingClient struct {
	client.Client
	counter *countingLists
}

func (c listCountingClient) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	return c.counter.List(ctx, list, opts...)
}

// ladderCacheWithChanges starts the ladder's cache (CacheOptions) and tells obs of every event
// of every kind it watches, and of the extra kinds, as the controller's watches do.
func ladderCacheWithChanges(t *testing.T, obs *Observations, extra ...client.Object) cache.Cache {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	opts := CacheOptions()
	opts.Scheme = clientgoscheme.Scheme
	c, err := cache.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	changed := func(o any) {
		if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
			o = d.Obj
		}
		if obj, ok := o.(client.Object); ok {
			if _, isNS := obj.(*corev1.Namespace); !isNS {
				obs.Changed(obj.GetNamespace())
			}
		}
	}
	for _, o := range append(WatchedObjects(), extra...) {
		inf, err := c.GetInformer(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: changed,
			UpdateFunc: func(_, n any) { changed(n) }, DeleteFunc: changed}); err != nil {
			t.Fatal(err)
		}
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		t.Fatal("the ladder cache did not sync")
	}
	return c
}

// TestObservationsAreReusedUntilAChange: a namespace no event touched is not read again; a
// change, or a namespace forgotten, is.
func TestObservationsAreReusedUntilAChange(t *testing.T) {
	ctx := context.Background()
	obs := NewObservations()
	r := &countingLists{Reader: k8s}
	look := func() int32 {
		t.Helper()
		r.lists.Store(0)
		if _, _, _, _, err := obs.observe(ctx, r, "default"); err != nil {
			t.Fatal(err)
		}
		return r.lists.Load()
	}
	steps := []struct {
		name     string
		before   func()
		wantRead bool
	}{
		{name: "the first look", wantRead: true},
		{name: "unchanged"},
		{name: "after a change", before: func() { obs.Changed("default") }, wantRead: true},
		{name: "after another namespace's change", before: func() { obs.Changed("elsewhere") }},
		{name: "after the namespace was forgotten", before: func() { obs.Forget("default") }, wantRead: true},
	}
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		if read := look() > 0; read != st.wantRead {
			t.Errorf("%s: read the cache %v, want %v", st.name, read, st.wantRead)
		}
	}
	var none *Observations
	if _, _, _, _, err := none.observe(ctx, r, "default"); err != nil {
		t.Fatal(err)
	}
}

// replayableRand is a random source seeded from the clock, or from OBSERVATIONS_SEED to replay
// the sequence of a seed a test's log names; stream tells the tests' sequences apart.
func replayableRand(t *testing.T, stream uint64) *rand.Rand {
	t.Helper()
	seed := time.Now().UnixNano()
	if s := os.Getenv("OBSERVATIONS_SEED"); s != "" {
		if _, err := fmt.Sscan(s, &seed); err != nil {
			t.Fatalf("OBSERVATIONS_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (OBSERVATIONS_SEED replays it)", seed)
	return rand.New(rand.NewPCG(uint64(seed), stream)) //nolint:gosec // a replayable test sequence, not a secret
}

// TestIncrementalObservationsMatchFullOnes drives random changes (pods with and without Istio's
// proxy, their readiness, Deployments, PodDisruptionBudgets, deletions) through three namespaces
// and checks after each that what the ladder decides from — each namespace's observation, as
// the memo gives it — is what a full observation of the cache gives. OBSERVATIONS_SEED replays
// the sequence of a seed the log names.
func TestIncrementalObservationsMatchFullOnes(t *testing.T) {
	ctx := context.Background()
	rng := replayableRand(t, 0)
	obs := NewObservations()
	c := ladderCacheWithChanges(t, obs)
	namespaces := []string{"obs-a", "obs-b", "obs-c"}
	for _, ns := range namespaces {
		if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	reads := &countingLists{Reader: c}
	for step := range 120 {
		what := randomChange(ctx, t, rng, namespaces, step)
		for _, ns := range namespaces {
			agreed := false
			var memo, full any
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !agreed; time.Sleep(20 * time.Millisecond) {
				p1, w1, u1, _, err := obs.observe(ctx, reads, ns)
				if err != nil {
					t.Fatal(err)
				}
				p2, w2, u2, err := observeWorkloads(ctx, c, ns)
				if err != nil {
					t.Fatal(err)
				}
				memo, full = []any{p1, w1, u1}, []any{p2, w2, u2}
				agreed = reflect.DeepEqual(memo, full)
			}
			if !agreed {
				t.Fatalf("step %d (%s), namespace %s: the memo's observation\n%+v\ndiffers from a full one\n%+v", step, what, ns, memo, full)
			}
		}
	}
	// Nothing changes any more: once the cache has delivered the last changes' events (a change
	// that left an observation as it was can have its event still on the way, and reading once
	// more for it is right), a pass over the three reads nothing.
	becomesQuiet(t, "lists", func() int32 {
		reads.lists.Store(0)
		for _, ns := range namespaces {
			if _, _, _, _, err := obs.observe(ctx, reads, ns); err != nil {
				t.Fatal(err)
			}
		}
		return reads.lists.Load()
	})
}

// becomesQuiet runs pass, which returns what it read, until a pass reads nothing: the events of
// the last changes may still be on the way, and reading once more for them is right, but the
// passes must become quiet within 10 s. what names what is counted.
func becomesQuiet(t *testing.T, what string, pass func() int32) {
	t.Helper()
	n := pass()
	for deadline := time.Now().Add(10 * time.Second); n != 0 && time.Now().Before(deadline); n = pass() {
		time.Sleep(200 * time.Millisecond)
	}
	if n != 0 {
		t.Errorf("passes with nothing changed for 10 s still made %d %s", n, what)
	}
}

// randomChange makes one random change in one of the namespaces and says what it was.
func randomChange(ctx context.Context, t *testing.T, rng *rand.Rand, namespaces []string, step int) string {
	t.Helper()
	ns := namespaces[rng.IntN(len(namespaces))]
	app := fmt.Sprintf("app%d", rng.IntN(3))
	var err error
	var what string
	switch rng.IntN(7) {
	case 6:
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: app},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": app}, Ports: []corev1.ServicePort{{Name: "grpc", Port: 8080}}}}
		if err = k8s.Create(ctx, svc); err != nil && client.IgnoreAlreadyExists(err) == nil {
			err = k8s.Delete(ctx, svc)
		}
		what = "service created or deleted"
	case 0, 1:
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("p%d", step), Labels: map[string]string{"app": app}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
		if rng.IntN(2) == 0 {
			pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "istio-proxy", Image: "proxy"})
			if rng.IntN(2) == 0 {
				// A proxyless gRPC pod serving plaintext: what a Service selecting it reports.
				pod.Annotations = map[string]string{revision.TemplatesAnnotation: revision.GRPCAgentTemplate}
			}
		}
		err, what = k8s.Create(ctx, pod), "pod created"
	case 2:
		var pods corev1.PodList
		if err = k8s.List(ctx, &pods, client.InNamespace(ns)); err == nil && len(pods.Items) > 0 {
			p := &pods.Items[rng.IntN(len(pods.Items))]
			p.Status.Phase = corev1.PodRunning
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionStatus([]string{"True", "False"}[rng.IntN(2)])}}
			err, what = k8s.Status().Update(ctx, p), "pod readiness"
		}
	case 3:
		var pods corev1.PodList
		if err = k8s.List(ctx, &pods, client.InNamespace(ns)); err == nil && len(pods.Items) > 0 {
			err, what = k8s.Delete(ctx, &pods.Items[rng.IntN(len(pods.Items))], client.GracePeriodSeconds(0)), "pod deleted"
		}
	case 4:
		dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: app},
			Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](int32(rng.IntN(3) + 1)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}}}
		if err = k8s.Create(ctx, dep); err != nil && client.IgnoreAlreadyExists(err) == nil {
			err = k8s.Delete(ctx, dep)
		}
		what = "deployment created or deleted"
	default:
		pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: app},
			Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(1)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}}}
		if err = k8s.Create(ctx, pdb); err != nil && client.IgnoreAlreadyExists(err) == nil {
			err = k8s.Delete(ctx, pdb)
		}
		what = "budget created or deleted"
	}
	if client.IgnoreNotFound(err) != nil {
		t.Fatalf("step %d: %v", step, err)
	}
	return what + " in " + ns
}
