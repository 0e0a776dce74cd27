package ladder

import (
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/randfill"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
)

// fuzzLevels are the levels a namespace can carry, with the empty and a foreign value that a
// hand-edited label can hold.
var fuzzLevels = []Level{"", meshv1.LevelOff, meshv1.LevelObserve, meshv1.LevelMutualTLS, meshv1.LevelZeroTrust, "Bogus"}

// fuzzFiller fills ladder inputs from fuzz data: levels from fuzzLevels, times within a day of
// base, durations up to an hour, small pod counts.
func fuzzFiller(data []byte, base time.Time) *randfill.Filler {
	return randfill.NewFromGoFuzz(data).NilChance(0.3).NumElements(0, 4).Funcs(
		func(l *Level, c randfill.Continue) { *l = fuzzLevels[c.Intn(len(fuzzLevels))] },
		func(tm *time.Time, c randfill.Continue) {
			if c.Intn(4) == 0 {
				*tm = time.Time{}
				return
			}
			*tm = base.Add(time.Duration(c.Int63n(int64(48*time.Hour))) - 24*time.Hour)
		},
		func(d *time.Duration, c randfill.Continue) { *d = time.Duration(c.Int63n(int64(time.Hour))) },
		func(n *int, c randfill.Continue) { *n = c.Intn(20) },
		func(v *intstr.IntOrString, c randfill.Continue) {
			if c.Bool() {
				*v = intstr.FromInt32(int32(c.Intn(5)))
			} else {
				*v = intstr.FromString([]string{"25%", "100%", "0%", "x%", ""}[c.Intn(5)])
			}
		},
	)
}

// FuzzDecide feeds Decide arbitrary namespace states, settings and times, including states no
// pass of the operator would write (a hand-edited annotation, a label with a foreign value),
// and checks what must hold whatever the input: no panic, a valid level, one rung at a time, a
// step is always one rung from where the namespace stands (a rollback: back to it; a move
// between revisions: at it), no new step without a free slot or while paused, restarts only for
// a step, effects that match the position, and moves only to the active revision.
func FuzzDecide(f *testing.F) {
	f.Add([]byte("seed"), true)
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, false)
	f.Add([]byte("a namespace that is being moved up the ladder"), true)
	base := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte, mayStart bool) {
		filler := fuzzFiller(data, base)
		var ns Namespace
		var s Settings
		filler.Fill(&ns)
		filler.Fill(&s)
		now := base
		filler.Fill(&now)

		d := Decide(ns, s, mayStart, now)

		if !Valid(d.Level) {
			t.Fatalf("Decide set the invalid level %q", d.Level)
		}
		if Valid(ns.Current) && abs(Rank(d.Level)-Rank(ns.Current)) > 1 {
			t.Fatalf("Decide moved %q to %q in one pass", ns.Current, d.Level)
		}
		if st := d.State.Step; st != nil && !wellFormed(*st, d.Level) {
			t.Fatalf("Decide left the step %+v at %q: not one rung, not a rollback to where it stands, or no ID", *st, d.Level)
		}
		started := ns.State.Step == nil && d.State.Step != nil
		if started && !mayStart {
			t.Fatalf("a new step to %q started without a free slot", d.State.Step.To)
		}
		if started && s.Paused {
			t.Fatalf("a new step to %q started while paused", d.State.Step.To)
		}
		if len(d.Restart) > 0 && d.State.Step == nil {
			t.Fatalf("restarts %v outside a step", d.Restart)
		}
		for _, r := range d.Restart {
			if !slices.ContainsFunc(ns.Workloads, func(w Workload) bool { return w.Kind+"/"+w.Name == r }) {
				t.Fatalf("restart of %s, which is not one of the namespace's workloads", r)
			}
		}
		want := EffectsOf(d.Level, d.State.Step)
		if want.Inject {
			want.Revision = injectedBy(d.State)
		}
		if d.Effects != want {
			t.Fatalf("effects %+v do not match level %q and step %+v", d.Effects, d.Level, d.State.Step)
		}
		if d.Effects.Inject && d.Effects.Revision == "" {
			t.Fatalf("the namespace is injected with no revision named: %+v", d.Effects)
		}
		if st := d.State.Step; started && st.moves(d.Level) && st.Revision != RevisionName(s.Revision) {
			t.Fatalf("a move to revision %q started while %q is active", st.Revision, RevisionName(s.Revision))
		}
	})
}

// FuzzEnroll: whatever the labels and rules, Enroll never panics, gives a valid level, and never
// enrolls the cluster's own namespaces or the excluded ones.
func FuzzEnroll(f *testing.F) {
	f.Add([]byte("seed"), "team-a")
	f.Add([]byte("kube-system"), "kube-system")
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		filler := fuzzFiller(data, time.Time{})
		var labels map[string]string
		var rules []meshv1.NamespaceRule
		filler.Fill(&labels)
		filler.Fill(&rules)
		excluded := []string{"istio-system", "meshwright-system"}
		e := Enroll(name, labels, rules, excluded)
		if !Valid(e.Target) {
			t.Fatalf("Enroll gave the invalid level %q", e.Target)
		}
		if (slices.Contains(excluded, name) || slices.Contains(neverEnrolled, name)) && e.Target != meshv1.LevelOff {
			t.Fatalf("%s enrolled at %s", name, e.Target)
		}
		if len(excluded) != 2 || excluded[0] != "istio-system" || excluded[1] != "meshwright-system" {
			t.Fatalf("Enroll changed the caller's excluded list: %v", excluded)
		}
	})
}
