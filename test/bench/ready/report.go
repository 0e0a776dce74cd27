package main

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// The targets each figure is printed beside (docs/benchmarks.md, issue #24), so that a
// regression is visible at a glance.
const (
	// targetRatio: the operator's control-plane stage at most this many times the floor (median).
	targetRatio = 1.2
	// targetExtraWrites: an install writes each object once, plus at most this many writes.
	targetExtraWrites = 3
	// targetNoopWrites: a reconcile with nothing to do writes nothing.
	targetNoopWrites = 0
	// targetPeakRSSMiB: the operator process's peak resident memory from start to Ready.
	targetPeakRSSMiB = 60.0
)

// The keys of result.TargetsMet.
const (
	targetKeyRatio   = "controlplane_over_floor"
	targetKeyWrites  = "install_writes"
	targetKeyNoop    = "noop_writes"
	targetKeyPeakRSS = "peak_rss_mib"
)

// finalizerResource is where the MeshInstallation itself is written during the install (not its
// status): adding its finalizer.
const finalizerResource = "meshinstallations"

// splitInstallWrites splits the install's writes into those of the MeshInstallation's status
// (any "<resource>/status"), of the MeshInstallation itself (its finalizer) and of every other
// object (the chart's, the CA's namespace, Issuers and Certificates, the mesh-wide
// PeerAuthentication), and sets the writes target from the latter: the objects the install
// writes are counted from what it wrote, not hard-coded, so a new object moves the target and a
// status write more does not.
func (r *result) splitInstallWrites() {
	r.InstallObjectWrites, r.InstallFinalizerWrites, r.InstallStatusWrites = 0, 0, 0
	for res, n := range r.InstallWritesByResource {
		switch {
		case strings.HasSuffix(res, "/status"):
			r.InstallStatusWrites += n
		case res == finalizerResource:
			r.InstallFinalizerWrites += n
		default:
			r.InstallObjectWrites += n
		}
	}
	r.InstallWritesTarget = r.InstallObjects + targetExtraWrites
}

// targetsMet tells which of this run's figures meet their targets; the ratio's target is on the
// median of the runs (printTargets), this is the run's own.
func (r *result) targetsMet() map[string]bool {
	return map[string]bool{
		targetKeyRatio:   r.Ratio <= targetRatio,
		targetKeyWrites:  r.InstallWrites <= r.InstallWritesTarget,
		targetKeyNoop:    r.NoopWrites <= targetNoopWrites,
		targetKeyPeakRSS: r.PeakRSSMiB <= targetPeakRSSMiB,
	}
}

// printTable prints one line per run with every figure, the install's writes split into
// objects/finalizer/status and the memory into the peak, its anonymous and file-backed parts at
// Ready and the minimal manager's peak.
func printTable(rs []result) {
	fmt.Printf("\n%-4s %9s %15s %6s %9s %8s %14s %19s %9s %9s %9s %10s %s\n",
		"run", "floor_ms", "controlplane_ms", "ratio", "ready_ms", "objects", "install_writes", "obj/finalizer/status",
		"peak_rss", "rss_anon", "rss_file", "lib_floor", "no-op reconcile: requests by verb (writes)")
	for _, r := range rs {
		split := fmt.Sprintf("%d/%d/%d", r.InstallObjectWrites, r.InstallFinalizerWrites, r.InstallStatusWrites)
		fmt.Printf("%-4d %9d %15d %6.2f %9d %8d %14d %19s %9.1f %9.1f %9.1f %10.1f %s (%d)\n",
			r.Run, r.FloorMs, r.ControlPlaneMs, r.Ratio, r.ReadyMs, r.Objects, r.InstallWrites, split,
			r.PeakRSSMiB, r.RSSAnonMiB, r.RSSFileMiB, r.LibraryFloorRSSMiB, verbs(r.NoopRequestsPerReconcile), r.NoopWrites)
	}
	fmt.Println("(memory in MiB: peak_rss is VmHWM from start to Ready; rss_anon and rss_file at Ready; lib_floor the minimal manager's peak)")
}

// printTargets prints each figure of every run beside its target with "met" or "NOT met": the
// ratio judged on the median of the runs, the others met only if every run met them.
func printTargets(rs []result) {
	if len(rs) == 0 {
		return
	}
	ratios := make([]float64, len(rs))
	for i, r := range rs {
		ratios[i] = r.Ratio
	}
	median := medianOf(ratios)
	fmt.Println("\ntargets:")
	printTarget("controlplane/floor (median)", fmt.Sprintf("%s (median %.2f)", join(rs, func(r result) string { return fmt.Sprintf("%.2f", r.Ratio) }), median),
		fmt.Sprintf("<= %.1f", targetRatio), median <= targetRatio)
	printTarget("install writes", join(rs, func(r result) string {
		return fmt.Sprintf("%d (%d object writes of %d objects + %d finalizer + %d status)", r.InstallWrites, r.InstallObjectWrites, r.InstallObjects, r.InstallFinalizerWrites, r.InstallStatusWrites)
	}), fmt.Sprintf("<= objects + %d = %s", targetExtraWrites, join(rs, func(r result) string { return fmt.Sprint(r.InstallWritesTarget) })), allMet(rs, targetKeyWrites))
	printTarget("writes per no-op reconcile", join(rs, func(r result) string { return fmt.Sprint(r.NoopWrites) }),
		fmt.Sprint(targetNoopWrites), allMet(rs, targetKeyNoop))
	printTarget("peak RSS MiB", join(rs, func(r result) string {
		return fmt.Sprintf("%.1f (anon %.1f, file %.1f at Ready; library floor %.1f)", r.PeakRSSMiB, r.RSSAnonMiB, r.RSSFileMiB, r.LibraryFloorRSSMiB)
	}), fmt.Sprintf("<= %.0f", targetPeakRSSMiB), allMet(rs, targetKeyPeakRSS))
}

// printTarget prints one figure's line: its name, its values, its target and the verdict first,
// so that a NOT met stands out.
func printTarget(name, values, target string, met bool) {
	verdict := "met"
	if !met {
		verdict = "NOT met"
	}
	fmt.Printf("  %-7s  %-27s  target %-22s  %s\n", verdict, name, target, values)
}

// allMet tells whether every run met the target of key.
func allMet(rs []result, key string) bool {
	return !slices.ContainsFunc(rs, func(r result) bool { return !r.TargetsMet[key] })
}

// join formats each run's figure with f, comma-separated in run order.
func join(rs []result, f func(result) string) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = f(r)
	}
	return strings.Join(parts, ", ")
}

// medianOf is the median of xs (the upper one of an even count, as before), which are not
// changed.
func medianOf(xs []float64) float64 {
	sorted := slices.Clone(xs)
	sort.Float64s(sorted)
	return sorted[len(sorted)/2]
}

// verbs formats requests per verb in a stable order, for the table.
func verbs(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%.1f", k, m[k]))
	}
	return strings.Join(parts, " ")
}
