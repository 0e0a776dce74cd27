package ladder

import (
	"fmt"
	"slices"
	"strings"
	"time"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/names"
)

// AdmissionRecheck is how soon a climb held by a refused pod is looked at again: what refused
// it (a namespace's Pod Security label, a quota, a policy engine) is not watched.
const AdmissionRecheck = 30 * time.Second

// podsAdmitted holds a climb that restarts workloads while the API server would refuse one of
// their pods as the climb will have them: the restart would leave the workload with fewer pods
// (a Deployment's new ReplicaSet stuck at zero, a StatefulSet's replica gone and not replaced),
// the very outage the ladder exists to avoid. The pods are created with server-side dry run
// through the whole admission chain (the injector, Pod Security, quotas, policy engines), so
// the verdict is the API server's own.
var podsAdmitted = Gate{Name: "PodsAdmitted", Admission: true, Check: func(c Climb) *Verdict {
	return admissionVerdict(c.NS.Admission, fmt.Sprintf("the step to %s", c.To))
}}

// admissionVerdict holds a step (what names it) that would restart workloads whose pods the API
// server refuses, as the Admission of the pass found them.
func admissionVerdict(a Admission, what string) *Verdict {
	if a.Deferred {
		return &Verdict{Waiting: fmt.Sprintf("waiting for a free slot for %s (spec.rollout.maxNamespacesInProgress); its pods' admission is checked then", what), RecheckAfter: AdmissionRecheck}
	}
	if a.Problem != "" {
		return &Verdict{Waiting: "the admission of the pods it restarts could not be checked: " + a.Problem, RecheckAfter: AdmissionRecheck}
	}
	if a.Unchecked && a.Reported {
		// A reader that creates no pods (the kubectl plugin) shows the operator's verdict.
		return &Verdict{Waiting: "held by the admission of its pods, as the operator last reported", RecheckAfter: AdmissionRecheck, Unread: true}
	}
	if len(a.Refused) == 0 {
		// Admitted, or (Unchecked) predicted: nothing the operator reported says otherwise.
		return nil
	}
	parts := make([]string, 0, min(len(a.Refused), maxNamed)+1)
	for _, r := range a.Refused[:min(len(a.Refused), maxNamed)] {
		parts = append(parts, fmt.Sprintf("%s: %s", r.Workload, r.Message))
	}
	if len(a.Refused) > maxNamed {
		parts = append(parts, fmt.Sprintf("and %d more", len(a.Refused)-maxNamed))
	}
	return &Verdict{RecheckAfter: AdmissionRecheck, Blocked: Blocked{Reason: meshv1.ReasonPodAdmissionRefused, Message: fmt.Sprintf(
		"The API server refuses the pods of %d workload(s) as %s would restart them (injected by revision %s; created with server-side dry run, nothing was restarted): %s. %s",
		len(a.Refused), what, a.Revision, strings.Join(parts, "; "), admissionWayOut(a.Refused))}}
}

// MovesNext says whether a namespace's next step is a move to the active revision (not a move
// back: an upgrade set back is not held up). Its restarts are admission-checked like a climb's,
// as the namespace's current revision injects the pods: Istio's webhooks inject a pod in a
// namespace labelled for a revision with that revision, so the new one's injection cannot be
// tried before the move; what the namespace admits (Pod Security, quotas, policies) is judged.
func MovesNext(ns Namespace, s Settings) bool {
	ns = normalized(ns, s)
	current := ns.Current
	held := ns.State.Hold != nil && ns.State.Hold.Generation == s.Generation
	if held || !Valid(current) || Rank(ns.Target) < Rank(current) {
		return false
	}
	d := Decision{Level: current, State: ns.State}
	return behind(current, ns.State, s) && !slices.Contains(s.Newer, RevisionName(ns.State.Revision)) && !migratesNext(d, ns, s, time.Time{})
}

// jobsNeedNativeSidecars holds the climb that injects a namespace with CronJobs or Jobs when
// the injector gives its pods a classic sidecar: the proxy keeps running after the job's
// container exits, so the Job's pod never completes. With native sidecars (an init container
// with restartPolicy Always) the kubelet stops the proxy with the job. The shape is the one the
// injector gave the climb's own dry-run pods, so it is what the Jobs would get.
var jobsNeedNativeSidecars = Gate{Name: "JobsNeedNativeSidecars", Admission: true, Check: func(c Climb) *Verdict {
	if c.NS.Admission.Sidecars != meshv1.SidecarsClassic {
		return nil
	}
	var jobs []string
	for _, w := range c.NS.Workloads {
		if w.RunsToCompletion && !w.OptedOut {
			jobs = append(jobs, w.Kind+"/"+w.Name)
		}
	}
	if len(jobs) == 0 {
		return nil
	}
	return &Verdict{RecheckAfter: AdmissionRecheck, Blocked: Blocked{Reason: meshv1.ReasonJobsNeedNativeSidecars, Message: fmt.Sprintf(
		"%d CronJob(s) or Job(s) would get a classic sidecar, which keeps running after the job's container exits, so their pods would never complete: %s. Istio's injector gives native sidecars (stopped with the job) only where every node's kubelet is 1.33 or later, unless istiod's ENABLE_NATIVE_SIDECARS says otherwise. Ways out: nodes on kubelet 1.33 or later; the job stopping its proxy when done (POST localhost:15020/quitquitquit); opting the Jobs out (sidecar.istio.io/inject: \"false\", which keeps the namespace below MutualTLS); moving them to another namespace. The step to %s waits.",
		len(jobs), names.List(jobs), c.To)}}
}}

// admissionWayOut says what lets the pods in, for the refusals seen most.
func admissionWayOut(refused []AdmissionRefusal) string {
	for _, r := range refused {
		if strings.Contains(r.Message, "PodSecurity") && (strings.Contains(r.Message, "NET_ADMIN") || strings.Contains(r.Message, "NET_RAW")) {
			return "Pod Security refuses istio-init, which needs NET_ADMIN and NET_RAW: Istio CNI sets up the redirection instead. spec.dataPlane.cni: Auto installs it for a namespace whose pod-security.kubernetes.io/enforce label says baseline or restricted; where the level is the cluster's default, set spec.dataPlane.cni: Enabled (docs/pod-security.md). The step goes on once the pods are admitted."
		}
	}
	return "Make room for the proxy (a ResourceQuota, a LimitRange) or let the pods in (Pod Security, a policy engine), then the step goes on."
}

// ChecksAdmission says whether the pods a namespace's next climb would restart are created
// with server-side dry run in this pass: the climb passes an admission gate.
func ChecksAdmission(ns Namespace, s Settings) bool {
	ns = normalized(ns, s)
	return MovesNext(ns, s) || RefreshesNext(ns, s) || nextClimbPasses(ns, s, func(g Gate) bool { return g.Admission })
}

// normalized is ns as Decide sees it once normalize ran (an invalid level Off, a stale hold or a
// malformed step dropped), so that what the planner checks is what Decide will start.
func normalized(ns Namespace, s Settings) Namespace {
	d := Decision{Level: ns.Current, State: ns.State}
	normalize(&d, ns, s, time.Time{})
	ns.Current, ns.State = d.Level, d.State
	return ns
}

// WillRestart says whether a step injecting the namespace for revision (a climb, a move, a
// root rotation's refresh) restarts a workload: the one rule planRestarts follows, so that the
// planner dry-runs the very workloads the step restarts.
func WillRestart(w Workload, revision string, refresh bool, s Settings) bool {
	if w.OptedOut || w.RunsToCompletion || w.ManualRestart != "" {
		return false
	}
	return w.Uninjected || onOtherRevision(w, revision) || refresh && stale(w, s)
}

// RefreshesNext says whether a namespace's next step restarts workloads for a root rotation: they
// are admission-checked first, as the namespace's revision injects them (exactly what the restart
// gives them).
func RefreshesNext(ns Namespace, s Settings) bool {
	ns = normalized(ns, s)
	return refreshDue(Decision{Level: ns.Current, State: ns.State}, ns, s)
}
