package ladder

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/randfill"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/traffic"
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
		func(w *Waypoint, c randfill.Continue) {
			// Mostly a waypoint that can be made and is the operator's: the cases that order
			// the label and the Gateway.
			reason := func() string {
				if c.Intn(5) == 0 {
					return "why"
				}
				return ""
			}
			*w = Waypoint{Wanted: c.Bool(), Programmed: c.Bool(), Updating: c.Intn(4) == 0, Labelled: c.Bool(), Unavailable: reason(), Conflict: reason(), Unread: reason()}
		},
		func(v *intstr.IntOrString, c randfill.Continue) {
			if c.Bool() {
				*v = intstr.FromInt32(int32(c.Intn(5)))
			} else {
				*v = intstr.FromString([]string{"25%", "100%", "0%", "x%", ""}[c.Intn(5)])
			}
		},
	)
}

// The ladder as the product promises it (DESIGN.md's table of levels), written out here rather
// than read from Rungs, so FuzzDecide judges the code by a statement independent of it.
var (
	promisedOrder   = map[Level]int{meshv1.LevelOff: 0, meshv1.LevelObserve: 1, meshv1.LevelMutualTLS: 2, meshv1.LevelZeroTrust: 3}
	promisedCarries = map[Level]Effects{
		meshv1.LevelOff:       {},
		meshv1.LevelObserve:   {Inject: true},
		meshv1.LevelMutualTLS: {Inject: true, Strict: true},
		meshv1.LevelZeroTrust: {Inject: true, Strict: true, Authorization: true},
	}
)

// promisedEffects is what a namespace at level, taking step, must carry: a climb's effect is in
// place while it runs (ZeroTrust's policies in dry-run until enforced), a descent's is gone, and
// a rollback, a move or a refresh carries what the level does.
func promisedEffects(level Level, step *Step) Effects {
	if step == nil || step.Rollback || step.To == level {
		return promisedCarries[level]
	}
	e := promisedCarries[step.To]
	e.DryRun = step.To == meshv1.LevelZeroTrust && promisedOrder[step.To] > promisedOrder[level] && !step.Enforced
	return e
}

// cloneState copies a record down to what its pointers point at.
func cloneState(st State) State {
	if st.Step != nil {
		step := *st.Step
		if step.Baseline != nil {
			b := *step.Baseline
			step.Baseline = &b
		}
		st.Step = &step
	}
	if st.Hold != nil {
		h := *st.Hold
		st.Hold = &h
	}
	if st.Resilience != nil {
		v := *st.Resilience
		st.Resilience = &v
	}
	if st.ResilienceHold != nil {
		h := *st.ResilienceHold
		if h.Values != nil {
			v := *h.Values
			h.Values = &v
		}
		st.ResilienceHold = &h
	}
	return st
}

// checkResilience fails when a namespace carries resilience defaults the spec does not ask of
// it (below their level, out of the mesh, opted out, or where its data plane cannot apply them),
// or other values than its record's or those of a step applying them; and when such a step
// starts with pods not Ready.
func checkResilience(t *testing.T, ns Namespace, d Decision) {
	t.Helper()
	carried, st := d.Effects.Resilience, d.State.Step
	if carried == nil {
		return
	}
	level := d.Level
	if st != nil && !st.Rollback && promisedOrder[st.To] < promisedOrder[level] {
		level = st.To
	}
	want := ns.Resilience
	if want.Values == nil || want.Unsupported != "" || promisedOrder[level] < promisedOrder[want.From] || level == meshv1.LevelOff {
		t.Fatalf("carries resilience defaults at %s, with %+v asked", level, want)
	}
	applying := st != nil && st.Defaults && !st.Rollback
	if !applying && carried != d.State.Resilience || applying && carried != st.Resilience {
		t.Fatalf("carries defaults %+v, neither the record's %+v nor a step's applying them (step %+v)", carried, d.State.Resilience, st)
	}
	if applying && (ns.State.Step == nil || !ns.State.Step.Defaults) && len(ns.Pods.NotReady) > 0 {
		t.Fatalf("a step applying resilience defaults started with pods not Ready: %v", ns.Pods.NotReady)
	}
}

// checkRecordUnchanged fails when Decide changed the record it was given: the planner shares a
// namespace's decoded record between passes (adoption.Observations), so Decide must copy a
// step or hold before it changes one, never write through ns.State.
func checkRecordUnchanged(t *testing.T, given, after State) {
	t.Helper()
	if !reflect.DeepEqual(given, after) {
		t.Fatalf("Decide changed the record it was given:\n%+v\nbecame\n%+v", given, after)
	}
}

// FuzzDecide feeds Decide arbitrary namespace states, settings and times, including states no
// pass of the operator would write (a hand-edited annotation, a label with a foreign value),
// and checks, against the promise stated above rather than the code's own helpers, what must
// hold whatever the input: no panic, a valid level, one rung at a time, a step is always one
// rung from where the namespace stands (a rollback: back to it; a move or a refresh: at it), no
// new step without a free slot or while paused, no climb past a gate that holds (unready pods,
// someone else's label or policy, pods without the proxy before STRICT, the soak before
// ZeroTrust, callers outside the mesh on ports not exempted, a plaintext caller or a reading that
// cannot be judged before STRICT, callers outside allowFrom or shadow denials before ZeroTrust is
// enforced), a climb completed only after its bake (an enforcing one on a judged reading with
// no plaintext refused), restarts only for a step, the promised effects, and moves only to the
// active revision.
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

		given := cloneState(ns.State)
		d := Decide(ns, s, mayStart, now)
		checkRecordUnchanged(t, given, ns.State)

		level, ok := promisedOrder[d.Level]
		if !ok {
			t.Fatalf("Decide set the invalid level %q", d.Level)
		}
		if from, ok := promisedOrder[ns.Current]; ok && (level-from > 1 || from-level > 1) {
			t.Fatalf("Decide moved %q to %q in one pass", ns.Current, d.Level)
		}
		st := d.State.Step
		if st != nil {
			checkStepShape(t, *st, d.Level)
		}
		started := ns.State.Step == nil && st != nil
		if started && st.Rollback && st.Cancelled && st.DataPlane == meshv1.DataPlaneSidecar {
			// Not a new step but a repair, whatever the slots: a migration whose record was lost.
			if !ns.AmbientLabelled || ns.Ambient || len(ns.Pods.Unproxied) == 0 {
				t.Fatalf("a migration's rollback %+v started from no record, with the ambient label %v, ambient %v, pods without the proxy %v", *st, ns.AmbientLabelled, ns.Ambient, ns.Pods.Unproxied)
			}
			started = false
		}
		if started && !mayStart {
			t.Fatalf("a new step to %q started without a free slot", st.To)
		}
		if started && s.Paused {
			t.Fatalf("a new step to %q started while paused", st.To)
		}
		if started && !st.Rollback && promisedOrder[st.To] > level {
			checkClimbGated(t, ns, d, s, now)
		}
		if started && !st.Rollback && (promisedOrder[st.To] > level || st.From != "" || st.Refresh) && len(d.Restart) > 0 && !ChecksAdmission(ns, s) {
			t.Fatalf("a step %+v restarting %v started where the planner would not have checked its pods' admission", *st, d.Restart)
		}
		if a := ns.Admission; started && st.From != "" && !st.Rollback && (a.Reported || a.Deferred || a.Problem != "" || len(a.Refused) > 0) {
			t.Fatalf("a move to revision %q started without the API server admitting the pods it restarts: %+v", st.Revision, a)
		}
		if started && !st.Rollback && st.To == meshv1.LevelOff && ns.Current == meshv1.LevelObserve && s.TrafficGates && ns.Pods.Total > 0 {
			checkLeftCleanly(t, ns, s)
		}
		if was := ns.State.Step; was != nil && !was.Enforced && st != nil && st.Enforced && st.To == meshv1.LevelZeroTrust &&
			s.TrafficGates && ns.Pods.Total > 0 {
			checkEnforcedClean(t, ns, s)
		}
		if was := ns.State.Step; was != nil && !was.Rollback && was.To == d.Level && promisedOrder[was.To] > promisedOrder[ns.Current] &&
			st == nil && promisedOrder[was.To] >= promisedOrder[meshv1.LevelObserve] && s.TrafficGates && s.BakeTime > 0 && ns.Pods.Total > 0 {
			checkBaked(t, ns, *was, s, now)
		}
		if len(d.Restart) > 0 && st == nil {
			t.Fatalf("restarts %v outside a step", d.Restart)
		}
		for _, r := range d.Restart {
			if !slices.ContainsFunc(ns.Workloads, func(w Workload) bool { return w.Kind+"/"+w.Name == r }) {
				t.Fatalf("restart of %s, which is not one of the namespace's workloads", r)
			}
		}
		// Enforced AuthorizationPolicies never go back to a dry-run: policy.ForNamespace's order
		// is safe for every move but that one (test/trafficsim).
		if before := EffectsOf(ns.Current, ns.State.Step); Valid(ns.Current) && (ns.State.Step == nil || wellFormed(*ns.State.Step, ns.Current)) &&
			before.Authorization && !before.DryRun && d.Effects.Authorization && d.Effects.DryRun {
			t.Fatalf("enforced AuthorizationPolicies back to a dry-run: %+v → %+v (step %+v → %+v)", before, d.Effects, ns.State.Step, st)
		}
		got := d.Effects
		got.Revision, got.Ambient, got.Sidecars, got.Waypoint, got.UseWaypoint, got.Resilience = "", false, false, false, false, nil
		checkResilience(t, ns, d)
		checkDataPlaneLabels(t, ns, d)
		checkWaypointOrder(t, ns, d)
		checkAmbientLabelKept(t, ns, d)
		if started && st.DataPlane != "" {
			checkMigrationGated(t, ns, d, *st)
		}
		if ns.Ambient && len(d.Restart) > 0 {
			t.Fatalf("restarts %v in ambient mode, where the label alone moves pods", d.Restart)
		}
		if want := promisedEffects(d.Level, st); got != want {
			t.Fatalf("effects %+v at %q with step %+v; the ladder promises %+v", d.Effects, d.Level, st, want)
		}
		if d.Effects.Inject && d.Effects.Revision == "" {
			t.Fatalf("the namespace is injected with no revision named: %+v", d.Effects)
		}
		if started && !st.Rollback && st.Revision != "" && st.To == d.Level && st.Revision != RevisionName(s.Revision) {
			t.Fatalf("a move to revision %q started while %q is active", st.Revision, RevisionName(s.Revision))
		}
	})
}

// checkStepShape: a step has an ID and a valid target; a rollback goes back to where the
// namespace stands, a refresh or a step applying resilience defaults stays at a level in the mesh, a move stays at it from a named
// revision, a migration stays at it onto ambient mode, and any other step is one rung up or down.
func checkStepShape(t *testing.T, st Step, level Level) {
	t.Helper()
	to, ok := promisedOrder[st.To]
	switch {
	case st.ID == "" || !ok:
		t.Fatalf("step %+v has no ID or an invalid target", st)
	case st.Rollback:
		if st.To != level {
			t.Fatalf("a rollback to %q from %q", st.To, level)
		}
	case st.Refresh:
		if st.To != level || level == meshv1.LevelOff {
			t.Fatalf("a refresh to %q at %q", st.To, level)
		}
	case st.Defaults:
		if st.To != level || level == meshv1.LevelOff || st.Resilience == nil || st.Revision != "" {
			t.Fatalf("a step applying resilience defaults %+v at %q", st, level)
		}
	case st.Revision != "" && st.To == level:
		if st.From == "" || level == meshv1.LevelOff {
			t.Fatalf("a move at %q from revision %q", level, st.From)
		}
	case st.DataPlane != "":
		if st.To != level || level == meshv1.LevelOff || st.DataPlane != meshv1.DataPlaneAmbient {
			t.Fatalf("a migration to %q at %q onto %q", st.To, level, st.DataPlane)
		}
	default:
		if d := to - promisedOrder[level]; d != 1 && d != -1 {
			t.Fatalf("a step from %q to %q is not one rung", level, st.To)
		}
	}
}

// checkClimbGated: a climb that starts passed every gate the ladder promises.
func checkClimbGated(t *testing.T, ns Namespace, d Decision, s Settings, now time.Time) {
	t.Helper()
	to := d.State.Step.To
	switch {
	case ns.InjectionConflict != "":
		t.Fatalf("a climb to %q started under someone else's injection label", to)
	case promisedOrder[ns.Current] >= promisedOrder[meshv1.LevelObserve] && ns.AmbientWanted != ns.Ambient:
		t.Fatalf("a climb to %q started on another data plane than the spec asks (ambient %v, wanted %v)", to, ns.Ambient, ns.AmbientWanted)
	case len(ns.Pods.NotReady) > 0:
		t.Fatalf("a climb to %q started with pods not Ready: %v", to, ns.Pods.NotReady)
	case !ns.Ambient && to == meshv1.LevelObserve && (ns.Admission.Reported || ns.Admission.Deferred || ns.Admission.Problem != "" || len(ns.Admission.Refused) > 0):
		t.Fatalf("a climb onto Observe started without the API server admitting the pods it restarts: %+v", ns.Admission)
	case !ns.Ambient && promisedOrder[to] >= promisedOrder[meshv1.LevelMutualTLS] && len(ns.Pods.Uninjected) > 0:
		t.Fatalf("a climb to %q started with pods without the proxy: %v", to, ns.Pods.Uninjected)
	case ns.Ambient && promisedOrder[to] >= promisedOrder[meshv1.LevelMutualTLS] && len(ns.Pods.Uncaptured)+len(ns.Pods.OutsideAmbient) > 0:
		t.Fatalf("a climb to %q in ambient mode started with pods ztunnel does not carry: %v %v", to, ns.Pods.Uncaptured, ns.Pods.OutsideAmbient)
	case promisedOrder[to] >= promisedOrder[meshv1.LevelMutualTLS] && ns.PolicyConflict != "":
		t.Fatalf("a climb to %q started over someone else's PeerAuthentication", to)
	case to == meshv1.LevelZeroTrust && now.Sub(d.State.Since) < s.SoakTime:
		t.Fatalf("a climb to ZeroTrust started %s after reaching MutualTLS, before the soak time %s", now.Sub(d.State.Since), s.SoakTime)
	case promisedOrder[to] >= promisedOrder[meshv1.LevelMutualTLS] && (len(ns.ExemptionProblems) > 0 || unexempted(ns)):
		t.Fatalf("a climb to %q started with callers outside the mesh the API shows, their ports not exempted: %+v (exempted %v, problems %v)", to, ns.NonMeshCallers, ns.PlaintextPorts, ns.ExemptionProblems)
	case ns.Ambient && to == meshv1.LevelZeroTrust && s.TrafficGates && ns.Pods.Total > 0 && !sawOnlyAllowed(ns, s):
		t.Fatalf("a climb to ZeroTrust in ambient mode started without a reading of ztunnel showing no mTLS caller from outside allowFrom %v: %+v", ns.AllowFrom, ns.Traffic)
	case to == meshv1.LevelMutualTLS && s.TrafficGates && ns.Pods.Total > 0 && !sawNoPlaintext(ns, s, now):
		t.Fatalf("a climb to MutualTLS started without a whole observe window (%s) read, showing no plaintext caller: since %s, traffic %+v", s.ObserveTime, ns.State.Since, ns.Traffic)
	}
}

// sawNoPlaintext: the namespace held Observe for the observe time, and telemetry that was read,
// saw the namespace's proxies over the whole window, and shows no plaintext caller (but callers
// outside the mesh when the namespace exempts ports: those ports admit them).
func sawNoPlaintext(ns Namespace, s Settings, now time.Time) bool {
	r := ns.Traffic
	if now.Sub(ns.State.Since) < s.ObserveTime || r == nil || r.Unavailable != "" || r.Unreachable != "" || !vouches(ns, s, r) || r.Covered < s.ObserveTime {
		return false
	}
	for c := range r.Plaintext {
		if !c.External() || len(ns.PlaintextPorts) == 0 {
			return false
		}
	}
	return true
}

// unexempted: some caller outside the mesh the API shows calls a Service port the spec does not
// exempt.
func unexempted(ns Namespace) bool {
	for _, c := range ns.NonMeshCallers {
		if !slices.Contains(ns.PlaintextPorts, meshv1.ServicePortRef{Service: c.Service, Port: c.Port}) {
			return true
		}
	}
	return false
}

// checkBaked: a climb under the traffic gates completed only after baking for the bake time, on
// a reading that covers the whole bake; an enforcing one only on a reading that could be judged
// (Observe's completes unjudged, with a warning).
func checkBaked(t *testing.T, ns Namespace, was Step, s Settings, now time.Time) {
	t.Helper()
	if unobservable(ns) {
		return // nothing can ever be read (every proxy is proxyless gRPC): completes unbaked, with a Warning
	}
	if ns.Ambient {
		return // ambient mode's rungs bake nothing: ztunnel reports no refusal in a form the bake reads
	}
	r := ns.Traffic
	baking := was.Baking
	if !was.PausedAt.IsZero() && !baking.IsZero() {
		baking = baking.Add(now.Sub(was.PausedAt)) // a pause does not count as baking
	}
	if baking.IsZero() || now.Sub(baking) < s.BakeTime {
		t.Fatalf("a step to %q completed without baking for %s (baking since %v, now %v)", was.To, s.BakeTime, was.Baking, now)
	}
	judged := r != nil && r.Unavailable == "" && r.Unreachable == "" && r.Reporting
	if !judged && was.To == meshv1.LevelObserve {
		return
	}
	if !judged {
		t.Fatalf("a step to %q completed its bake on a reading that cannot be judged: %+v", was.To, r)
	}
	if r.Covered < s.BakeTime {
		t.Fatalf("a step to %q completed its bake on a reading of %s of its %s", was.To, r.Covered, s.BakeTime)
	}
	if r.Refused > 0 && (was.Baseline == nil || r.Refused > 2*was.Baseline.Refused*r.Covered.Seconds()) {
		t.Fatalf("a step to %q completed while its proxies refused %.0f plaintext connections", was.To, r.Refused)
	}
}

// checkLeftCleanly: a namespace that leaves the mesh under the traffic gates was not seen
// calling a namespace that accepts only mTLS.
func checkLeftCleanly(t *testing.T, ns Namespace, s Settings) {
	t.Helper()
	r := ns.Traffic
	if r == nil || r.Unavailable != "" || r.Unreachable != "" || !vouches(ns, s, r) {
		return
	}
	if r.Covered < s.ObserveTime {
		t.Fatalf("left the mesh after seeing %s of whom it calls, less than the observe time %s", r.Covered, s.ObserveTime)
	}
	for dest := range r.CallsTo {
		if dest != ns.Name && s.Strict[dest] {
			t.Fatalf("left the mesh while calling %s, which accepts only mTLS", dest)
		}
	}
}

// checkEnforcedClean: a ZeroTrust dry-run enforced under the traffic gates had a reading over
// the whole soak with no caller outside the namespace and its allowFrom, and no shadow denial.
func checkEnforcedClean(t *testing.T, ns Namespace, s Settings) {
	t.Helper()
	r := ns.Traffic
	if r == nil || r.Unavailable != "" || r.Unreachable != "" || !vouches(ns, s, r) || r.Covered < s.SoakTime || r.ShadowDenied > 0 {
		t.Fatalf("ZeroTrust enforced on a reading that cannot clear it: %+v", r)
	}
	for c, n := range r.Callers {
		if c.External() && len(ns.PlaintextPorts) > 0 {
			continue // its exempted ports admit callers outside the mesh; shadow denials judge them
		}
		if ns.Ambient && n-r.Plaintext[c] <= 0 {
			continue // ztunnel counts plaintext before STRICT, in place since MutualTLS, refuses it
		}
		if c.Namespace != ns.Name && !slices.Contains(ns.AllowFrom, c.Namespace) {
			t.Fatalf("ZeroTrust enforced while %s, outside allowFrom %v, called", c, ns.AllowFrom)
		}
	}
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

// checkDataPlaneLabels: in the mesh by one data plane's label at least, out of it by none; the
// ambient label alone only for a namespace in ambient mode or migrating to it, the injection
// label alone never for one in ambient mode; a namespace in ambient mode never loses the ambient
// label while in the mesh (nothing migrates it back).
func checkDataPlaneLabels(t *testing.T, ns Namespace, d Decision) {
	t.Helper()
	e, st := d.Effects, d.State.Step
	toAmbient := st != nil && st.DataPlane == meshv1.DataPlaneAmbient
	switch {
	case e.Inject != (e.Ambient || e.Sidecars):
		t.Fatalf("effects %+v: in the mesh exactly when labelled for a data plane", e)
	case e.Ambient && !e.Sidecars && !d.State.Ambient && !toAmbient:
		t.Fatalf("effects %+v: the ambient label alone on a namespace with sidecars, step %+v", e, st)
	case e.Sidecars && !e.Ambient && d.State.Ambient:
		t.Fatalf("effects %+v: the injection label alone on a namespace in ambient mode", e)
	case ns.Ambient && e.Inject && !e.Ambient:
		t.Fatalf("effects %+v: a namespace in ambient mode lost the ambient label in the mesh", e)
	}
}

// checkMigrationGated: a migration to ambient mode starts only for a namespace in the mesh with
// sidecars whose spec asks for ambient mode, every pod Ready, the injection label its own, no
// workload asking for the proxy, and, with STRICT, none opting out of ambient mode.
func checkMigrationGated(t *testing.T, ns Namespace, d Decision, st Step) {
	t.Helper()
	if st.Rollback {
		t.Fatalf("a rollback %+v started from no step", st)
	}
	if st.DataPlane != meshv1.DataPlaneAmbient || ns.Ambient || !ns.AmbientWanted || !promisedCarries[d.Level].Inject || st.To != d.Level {
		t.Fatalf("a migration %+v started for a namespace at %q, ambient %v, ambient asked %v", st, d.Level, ns.Ambient, ns.AmbientWanted)
	}
	if len(ns.Pods.NotReady) > 0 || ns.InjectionConflict != "" {
		t.Fatalf("a migration started with pods not Ready %v or an injection label conflict %q", ns.Pods.NotReady, ns.InjectionConflict)
	}
	for _, w := range ns.Workloads {
		if w.SidecarRequested || w.AmbientExcluded && promisedCarries[d.Level].Strict {
			t.Fatalf("a migration started at %q with workload %+v", d.Level, w)
		}
	}
}

// checkAmbientLabelKept: a namespace that stays in the mesh never loses the ambient label (its
// own, or one it was found with) while pods the injector would give the proxy run without it:
// ztunnel is all that carries them.
func checkAmbientLabelKept(t *testing.T, ns Namespace, d Decision) {
	t.Helper()
	if !Valid(ns.Current) || len(ns.Pods.Unproxied) == 0 || !d.Effects.Inject || d.Effects.Ambient {
		return
	}
	// The label as the ladder carried it before the pass (its record's step, if one it wrote),
	// or as it was found with no record of the ladder's to explain it.
	before := ns.State.Step
	known := before == nil || wellFormed(*before, ns.Current)
	ours := known && dataPlaneEffects(EffectsOf(ns.Current, before), ns.Ambient, before).Ambient
	if ours || ns.AmbientLabelled && !known || ns.AmbientLabelled && before == nil {
		t.Fatalf("the ambient label taken off, in the mesh, while %v run without the proxy (step %+v → %+v)", ns.Pods.Unproxied, ns.State.Step, d.State.Step)
	}
}

// vouches: the reading saw what reports the namespace's traffic: its sidecars or, in ambient mode,
// ztunnel, read by a source that reads ztunnel.
func vouches(ns Namespace, s Settings, r *traffic.Reading) bool {
	if ns.Ambient {
		return s.ZtunnelRead && r.ZtunnelReporting && !r.ZtunnelUnread
	}
	return r.Reporting
}

// sawOnlyAllowed: a reading of ztunnel over the observe time shows no caller in mTLS from outside
// the namespace and its allowFrom (plaintext ones STRICT refuses already; callers outside the
// mesh are admitted by exempted ports, when there are some).
func sawOnlyAllowed(ns Namespace, s Settings) bool {
	r := ns.Traffic
	if r == nil || r.Unavailable != "" || r.Unreachable != "" || !vouches(ns, s, r) || r.Covered < s.ObserveTime {
		return false
	}
	for c, n := range r.Callers {
		if n-r.Plaintext[c] <= 0 || c.External() && len(ns.PlaintextPorts) > 0 {
			continue
		}
		if c.Namespace != ns.Name && !slices.Contains(ns.AllowFrom, c.Namespace) {
			return false
		}
	}
	return true
}

// checkWaypointOrder: a namespace is sent through its waypoint only in ambient mode, only while
// the operator's Gateway exists, and first only once it is Programmed; the Gateway goes only once
// the label has (Istio's order both ways).
func checkWaypointOrder(t *testing.T, ns Namespace, d Decision) {
	t.Helper()
	e, w := d.Effects, ns.Waypoint
	if w.Conflict != "" || w.Unread != "" {
		if e.Waypoint && w.Conflict != "" || e.UseWaypoint != w.Labelled {
			t.Fatalf("someone else's Gateway by the waypoint's name: the operator neither writes it nor changes the label, got %+v for %+v", e, w)
		}
		return
	}
	if st := d.State.Step; st != nil && (ns.State.Step == nil || ns.State.Step.ID != st.ID) && !st.Rollback && w.Wanted && !w.Programmed &&
		(st.DataPlane == meshv1.DataPlaneAmbient || ns.Current == meshv1.LevelOff && d.State.Ambient) {
		t.Fatalf("a step %+v into ambient mode started before the waypoint its rule asks for is Programmed: %+v", *st, w)
	}
	switch {
	case w.Labelled && w.Wanted && e.Ambient && !e.UseWaypoint:
		t.Fatalf("istio.io/use-waypoint taken off while the rule asks for the waypoint (its traffic would skip the L7 policy): %+v, %+v", e, w)
	case w.Unavailable != "" && e.Waypoint:
		t.Fatalf("a Gateway kept (its policies attached) without a Gateway API to read it by: %+v, %+v", e, w)
	case w.Unavailable != "":
		return // nothing to create or delete; the label as the cases above say
	case e.UseWaypoint && (!e.Ambient || !e.Waypoint):
		t.Fatalf("istio.io/use-waypoint with effects %+v: only in ambient mode, with the Gateway", e)
	case e.UseWaypoint && !w.Labelled && !w.Programmed:
		t.Fatalf("istio.io/use-waypoint put on before the waypoint is Programmed: %+v, %+v", e, w)
	case !e.Waypoint && w.Labelled:
		t.Fatalf("the waypoint removed while the namespace still carries istio.io/use-waypoint: %+v, %+v", e, w)
	}
}
