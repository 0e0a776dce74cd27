// Package metrics exports what a platform team watches a mesh rollout by, on the operator's
// metrics endpoint beside controller-runtime's own: where the namespaces stand on the ladder,
// how many are held back, how long each stage takes, when the mesh CA expires, and the ladder's
// steps and rollbacks. The alerts in config/prometheus and the dashboard in config/grafana are
// written against these names.
package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/traffic"
)

// Names of the metrics, for the tests that check that alerts and dashboards only use these.
const (
	NamespacesName         = "meshwright_namespaces"
	InProgressName         = "meshwright_namespaces_in_progress"
	AmbientName            = "meshwright_namespaces_ambient"
	BlockedName            = "meshwright_namespaces_blocked"
	ConditionName          = "meshwright_condition"
	CAExpiryName           = "meshwright_ca_expiry_seconds"
	StageDurationName      = "meshwright_stage_duration_seconds"
	LadderEventsName       = "meshwright_ladder_events_total"
	RollbacksName          = "meshwright_rollbacks_total"
	RevisionNamespacesName = "meshwright_revision_namespaces"
	RevisionPodsName       = "meshwright_revision_pods"
	RotationPhaseName      = "meshwright_root_rotation_phase_start_seconds"
	RotationPendingName    = "meshwright_root_rotation_pending_pods"
	TrafficReadsName       = "meshwright_traffic_reads_total"
	installationLabel      = "installation"
	levelLabel, stageLabel = "level", "stage"
)

var (
	namespaces = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: NamespacesName,
		Help: "Enrolled namespaces by the ladder level they are at (Off: enrolled, not in the mesh yet).",
	}, []string{installationLabel, levelLabel})
	inProgress = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: InProgressName,
		Help: "Namespaces taking a step up or down the ladder right now.",
	}, []string{installationLabel})
	ambientNamespaces = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: AmbientName,
		Help: "Namespaces in the mesh (or entering it) in Istio's ambient mode; the others in the mesh have sidecars.",
	}, []string{installationLabel})
	blocked = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: BlockedName,
		Help: "Namespaces held below their target level (status.namespaces.blocked says why).",
	}, []string{installationLabel})
	condition = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: ConditionName,
		Help: "The installation's conditions: 1 for the status and reason each condition has now, one series per condition.",
	}, []string{installationLabel, "type", "status", "reason"})
	stageDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    StageDurationName,
		Help:    "How long one pass of a rollout stage takes, API requests included.",
		Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	}, []string{stageLabel})
	ladderEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: LadderEventsName,
		Help: "The ladder's steps, by the reason of the Event each emitted on its namespace (StepStarted, LevelReached, RolledBack, ...).",
	}, []string{installationLabel, "reason"})
	rollbacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: RollbacksName,
		Help: "Steps reverted because the namespace's pods were not all Ready within spec.rollout.stepTimeout.",
	}, []string{installationLabel})
	revisionNamespaces = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: RevisionNamespacesName,
		Help: "Namespaces each control-plane revision serves (active: \"true\" for the one namespaces move to); two revisions during an upgrade.",
	}, []string{installationLabel, "revision", "version", "active"})
	revisionPods = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: RevisionPodsName,
		Help: "Running pods each control-plane revision injected.",
	}, []string{installationLabel, "revision", "version", "active"})
	trafficReads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: TrafficReadsName,
		Help: "Reads of a namespace's traffic for the traffic gates, by source (embedded, prometheus) and result: read, unavailable (the source did not answer), unreachable (proxies the operator could not reach), no_series (no series of the namespace's proxies).",
	}, []string{installationLabel, "source", "result"})
	rotationPhase = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: RotationPhaseName,
		Help: "While a root rotation runs: when its current phase (Prepare, Trust, Switch, Drop) began, as a Unix time; no series otherwise.",
	}, []string{installationLabel, "phase"})
	rotationPending = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: RotationPendingName,
		Help: "While a root rotation runs: the running pods with the proxy its phase waits for, to be restarted (in Trust, those that cannot take the new root live; in Switch, those started before signing switched).",
	}, []string{installationLabel})
	caExpiry = &expiryCollector{notAfter: map[string]time.Time{}, clock: clock.RealClock{}}
)

var registerOnce sync.Once

// Register adds the metrics to controller-runtime's registry, which its metrics endpoint
// serves. It is safe to call more than once (every reconciler set-up does).
func Register() {
	registerOnce.Do(func() {
		metrics.Registry.MustRegister(namespaces, inProgress, ambientNamespaces, blocked, condition, stageDuration, ladderEvents, rollbacks, revisionNamespaces, revisionPods, rotationPhase, rotationPending, caExpiry, trafficReads)
	})
}

// RecordStatus sets the gauges of one installation from the status a pass computed: the same
// figures kubectl shows, so the two never disagree.
func RecordStatus(installation string, st *meshv1.MeshInstallationStatus) {
	var ns meshv1.NamespacesStatus
	if st.Namespaces != nil {
		ns = *st.Namespaces
	}
	for _, l := range ladder.Levels() {
		namespaces.WithLabelValues(installation, string(l)).Set(float64(ns.CountAt(l)))
	}
	inProgress.WithLabelValues(installation).Set(float64(ns.InProgress))
	ambientNamespaces.WithLabelValues(installation).Set(float64(ns.Ambient))
	blocked.WithLabelValues(installation).Set(float64(ns.BlockedCount))

	// One series per condition type: the old status or reason's series goes.
	condition.DeletePartialMatch(prometheus.Labels{installationLabel: installation})
	for _, c := range st.Conditions {
		condition.WithLabelValues(installation, c.Type, string(c.Status), c.Reason).Set(1)
	}

	// A removed revision's series go with it.
	for _, v := range []*prometheus.GaugeVec{revisionNamespaces, revisionPods} {
		v.DeletePartialMatch(prometheus.Labels{installationLabel: installation})
	}
	for _, r := range st.Revisions {
		active := "false"
		if r.Active {
			active = "true"
		}
		revisionNamespaces.WithLabelValues(installation, r.Name, r.Version, active).Set(float64(r.Namespaces))
		revisionPods.WithLabelValues(installation, r.Name, r.Version, active).Set(float64(r.Pods))
	}

	rotationPhase.DeletePartialMatch(prometheus.Labels{installationLabel: installation})
	rotationPending.DeletePartialMatch(prometheus.Labels{installationLabel: installation})
	if c := st.Certificates; c != nil && c.Rotation != nil {
		if c.Rotation.Since != nil {
			rotationPhase.WithLabelValues(installation, string(c.Rotation.Phase)).Set(float64(c.Rotation.Since.Unix()))
		}
		rotationPending.WithLabelValues(installation).Set(float64(c.Rotation.PendingPods))
	}

	if st.Certificates != nil && st.Certificates.NotAfter != nil {
		caExpiry.set(installation, st.Certificates.NotAfter.Time)
	} else {
		caExpiry.forget(installation)
	}
}

// Forget drops every series of an installation, once it is deleted.
func Forget(installation string) {
	match := prometheus.Labels{installationLabel: installation}
	for _, v := range []interface {
		DeletePartialMatch(prometheus.Labels) int
	}{namespaces, inProgress, ambientNamespaces, blocked, condition, ladderEvents, rollbacks, revisionNamespaces, revisionPods, rotationPhase, rotationPending, trafficReads} {
		v.DeletePartialMatch(match)
	}
	caExpiry.forget(installation)
}

// ObserveStage records how long one pass of a stage took.
func ObserveStage(stage meshv1.Stage, d time.Duration) {
	stageDuration.WithLabelValues(string(stage)).Observe(d.Seconds())
}

// LadderEvent counts a ladder step's Event; rollbackStarted marks the Event of a step that
// starts reverting a namespace, counted once per rollback.
func LadderEvent(installation, reason string, rollbackStarted bool) {
	ladderEvents.WithLabelValues(installation, reason).Inc()
	if rollbackStarted {
		rollbacks.WithLabelValues(installation).Inc()
	}
}

// TrafficRead counts one read of a namespace's traffic by its result, so that an alert can
// tell a source the gates cannot read from traffic they are right to hold for. A namespace in
// ambient mode is read when ztunnel reports, one with sidecars when they do.
func TrafficRead(installation, source string, r traffic.Reading, ambient bool) {
	result := "read"
	switch {
	case r.Unavailable != "":
		result = "unavailable"
	case r.Unreachable != "":
		result = "unreachable"
	case ambient && (r.ZtunnelUnread || !r.ZtunnelReporting), !ambient && !r.Reporting:
		result = "no_series"
	}
	trafficReads.WithLabelValues(installation, source, result).Inc()
}

// expiryCollector reports the seconds left until each installation's CA expires, computed when
// scraped: a gauge set at the last pass would go stale between passes, which may be hours
// apart once everything is Ready.
type expiryCollector struct {
	mu       sync.Mutex
	notAfter map[string]time.Time
	clock    clock.PassiveClock
}

var caExpiryDesc = prometheus.NewDesc(CAExpiryName,
	"Seconds until the mesh's intermediate CA certificate (istiod's cacerts) expires; negative once it has.",
	[]string{installationLabel}, nil)

func (e *expiryCollector) set(installation string, t time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.notAfter[installation] = t
}

func (e *expiryCollector) forget(installation string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.notAfter, installation)
}

// Describe implements prometheus.Collector.
func (e *expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- caExpiryDesc }

// Collect implements prometheus.Collector.
func (e *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.clock.Now()
	for name, t := range e.notAfter {
		ch <- prometheus.MustNewConstMetric(caExpiryDesc, prometheus.GaugeValue, t.Sub(now).Seconds(), name)
	}
}

// Names lists every metric this package exports, histogram series included, for the tests
// that check alerts and dashboards against it.
func Names() []string {
	return []string{NamespacesName, InProgressName, AmbientName, BlockedName, ConditionName, CAExpiryName,
		StageDurationName + "_bucket", StageDurationName + "_sum", StageDurationName + "_count",
		LadderEventsName, RollbacksName, RevisionNamespacesName, RevisionPodsName, RotationPhaseName, RotationPendingName, TrafficReadsName}
}
