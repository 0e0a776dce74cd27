package adoption

import (
	"context"
	"hash/fnv"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshwright/meshwright/internal/ladder"
)

// ResyncPeriod is at most how long a pass may reuse what an earlier pass read or wrote of a
// namespace when no event touched it: past it the namespace is read, and its policies synced,
// afresh, so a missed event costs minutes, not forever.
const ResyncPeriod = 10 * time.Minute

// Observations remembers, per namespace, what passes read of its objects (pods, workloads,
// disruption budgets, Services, policies) and derived from them, with the namespace's change
// count when they looked, so the next pass reuses it while no event touched the namespace.
// Reading the cache for every pod, workload and policy of every enrolled namespace, and syncing
// every namespace's policies, was most of a pass's CPU at scale (docs/benchmarks.md), and most
// namespaces do not change between passes. It also remembers each namespace's decoded ladder
// record, by resourceVersion.
//
// It is exact as long as Changed is called for every event of a watched object before the pass
// that event starts is queued (controllers does it in the watches' first predicate): a pass
// reads the count before it reads the cache, so an event it may have missed leaves a count it
// has not seen. The zero value is not usable; a nil *Observations observes afresh every time.
type Observations struct {
	mu sync.Mutex
	// clock times ResyncPeriod; the real clock unless a test sets one (NewObservationsWithClock).
	clock clock.PassiveClock
	// generation counts every change of every namespace; changes holds, per namespace, the
	// generation of its last change. A count that only grows cannot repeat itself after a
	// namespace is forgotten and comes back.
	generation uint64
	changes    map[string]uint64
	// What was derived from each namespace's objects, each as of a change count.
	seen      memo[observed]
	conflicts memo[conflict]
	revisions memo[[]string]
	// synced holds the inputs of each namespace's last policy sync (syncKey).
	synced memo[string]
	// records holds each namespace's ladder record and enrollment, by resourceVersion.
	records map[string]record
	// removed holds the objects of the resilience defaults (namespace/Kind/name) the operator
	// deleted itself, which no pass has missed since: their absence is not a user's choice.
	removed map[string]bool
}

// removedDefault notes that the operator deleted an object of a namespace's defaults.
func (o *Observations) removedDefault(namespace, key string) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.removed == nil {
		o.removed = map[string]bool{}
	}
	o.removed[namespace+"/"+key] = true
}

// unlessRemoved is seen without the objects the operator deleted itself since, which it forgets:
// a pass that misses them takes them for gone by the operator's hand, not declined by a user.
func (o *Observations) unlessRemoved(namespace string, seen []string) []string {
	if o == nil {
		return seen
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for _, k := range seen {
		if o.removed[namespace+"/"+k] {
			delete(o.removed, namespace+"/"+k)
			continue
		}
		out = append(out, k)
	}
	return out
}

// memo holds one kind of value derived from namespaces' objects.
type memo[T any] map[string]derived[T]

// derived is a value and the change count, and time, it was derived at.
type derived[T any] struct {
	at   uint64
	when time.Time
	v    T
}

// observed is one namespace's observation.
type observed struct {
	pods      ladder.Pods
	workloads []ladder.Workload
	uids      map[string]types.UID
}

// conflict is a namespace's policy conflict as one installation sees it.
type conflict struct {
	mesh, text string
}

// record is a namespace's ladder record and enrollment, read from the Namespace object of a
// resourceVersion under one installation's spec.
type record struct {
	key        recordKey
	state      ladder.State
	enrollment ladder.Enrollment
}

// recordKey is everything a namespace's record and enrollment are read from besides its name:
// the Namespace object's resourceVersion, the installation's identity and spec generation, and
// the namespaces never enrolled (joined).
type recordKey struct {
	resourceVersion string
	mesh            types.UID
	generation      int64
	excluded        string
}

// NewObservations returns an empty memo: the first pass observes every namespace.
func NewObservations() *Observations {
	return NewObservationsWithClock(clock.RealClock{})
}

// NewObservationsWithClock is NewObservations timing ResyncPeriod with c (tests).
func NewObservationsWithClock(c clock.PassiveClock) *Observations {
	return &Observations{clock: c, changes: map[string]uint64{}, seen: memo[observed]{}, conflicts: memo[conflict]{},
		revisions: memo[[]string]{}, synced: memo[string]{}, records: map[string]record{}}
}

// Changed records that an object of namespace changed (created, updated, deleted): its next
// observation reads the cache again.
func (o *Observations) Changed(namespace string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.generation++
	o.changes[namespace] = o.generation
}

// LastChange is the generation of the namespace's last recorded change, 0 for none: what its
// observation is compared against (for tests of the code that reports changes).
func (o *Observations) LastChange(namespace string) uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.changes[namespace]
}

// Forget drops a deleted namespace's entries, so the memo does not grow with namespaces that
// come and go.
func (o *Observations) Forget(namespace string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.generation++
	o.drop(namespace)
}

// drop removes every entry of namespace; the caller holds mu.
func (o *Observations) drop(namespace string) {
	delete(o.changes, namespace)
	delete(o.seen, namespace)
	delete(o.conflicts, namespace)
	delete(o.revisions, namespace)
	delete(o.synced, namespace)
	delete(o.records, namespace)
}

// count is the namespace's change count, as a pass reads it before it reads the cache. A
// namespace with no change seen since it was forgotten (or ever) gets the current generation,
// which any later change moves past. The caller holds mu.
func (o *Observations) count(namespace string) uint64 {
	at, ok := o.changes[namespace]
	if !ok {
		o.generation++
		at = o.generation
		o.changes[namespace] = at
	}
	return at
}

// fresh reports whether d was derived at the change count at, within the namespace's resync
// period.
func fresh[T any](o *Observations, namespace string, d derived[T], at uint64) bool {
	return d.at == at && o.clock.Since(d.when) < resyncPeriod(namespace)
}

// resyncPeriod is ResyncPeriod less up to a fifth, by namespace: the namespaces first read in the
// same pass are not all read again in one later pass.
func resyncPeriod(namespace string) time.Duration {
	h := fnv.New32a()
	_, _ = h.Write([]byte(namespace))
	return ResyncPeriod - time.Duration(h.Sum32()%1000)*ResyncPeriod/5000
}

// derive returns m's value for namespace: the remembered one while the namespace's change count
// stands (and ResyncPeriod has not passed), else compute's, remembered. It also returns the
// change count the value is for. With a nil o, compute runs every time and the count is 0.
func derive[T any](o *Observations, m func(*Observations) memo[T], namespace string, valid func(T) bool, compute func() (T, error)) (T, uint64, error) {
	if o == nil {
		v, err := compute()
		return v, 0, err
	}
	o.mu.Lock()
	at := o.count(namespace)
	prev, hit := m(o)[namespace]
	o.mu.Unlock()
	if hit && fresh(o, namespace, prev, at) && (valid == nil || valid(prev.v)) {
		return prev.v, at, nil
	}
	when := o.clock.Now()
	v, err := compute()
	if err != nil {
		return v, at, err
	}
	o.mu.Lock()
	if _, live := o.changes[namespace]; live {
		// Not when the namespace was forgotten meanwhile: its entry would outlive it.
		m(o)[namespace] = derived[T]{at: at, when: when, v: v}
	}
	o.mu.Unlock()
	return v, at, nil
}

// observe is observeWorkloads, reusing the last observation of the namespace while its change
// count stands. The slices and map it returns are shared between passes: they are only read.
// at is the change count the observation is for (0 without a memo).
func (o *Observations) observe(ctx context.Context, r client.Reader, namespace string) (ladder.Pods, []ladder.Workload, map[string]types.UID, uint64, error) {
	v, at, err := derive(o, func(o *Observations) memo[observed] { return o.seen }, namespace, nil, func() (observed, error) {
		pods, workloads, uids, err := observeWorkloads(ctx, r, namespace)
		return observed{pods: pods, workloads: workloads, uids: uids}, err
	})
	return v.pods, v.workloads, v.uids, at, err
}

// policyConflict is compute's answer for the namespace under installation mesh, reused while no
// event touched the namespace's objects (its PeerAuthentications among them).
func (o *Observations) policyConflict(namespace, mesh string, compute func() (string, error)) (string, error) {
	v, _, err := derive(o, func(o *Observations) memo[conflict] { return o.conflicts }, namespace,
		func(c conflict) bool { return c.mesh == mesh },
		func() (conflict, error) {
			text, err := compute()
			return conflict{mesh: mesh, text: text}, err
		})
	return v.text, err
}

// PodRevisions is compute's answer for namespace (the revisions of its running injected pods,
// for status.revisions), reused while no event touched the namespace's objects. The slice is
// shared between passes: it is only read.
func (o *Observations) PodRevisions(namespace string, compute func() ([]string, error)) ([]string, error) {
	v, _, err := derive(o, func(o *Observations) memo[[]string] { return o.revisions }, namespace, nil, compute)
	return v, err
}

// policiesSynced reports whether the namespace's policies were synced for key at change count at
// (within ResyncPeriod): no event of its objects came since, so syncing again would change nothing.
func (o *Observations) policiesSynced(namespace string, at uint64, key string) bool {
	if o == nil || at == 0 {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	prev, ok := o.synced[namespace]
	return ok && prev.v == key && fresh(o, namespace, prev, at) && o.changes[namespace] == at
}

// markPoliciesSynced records a sync of the namespace's policies for key, made from what a pass
// read at change count at. The writes it made count as changes when their events come, so the
// next pass checks once more that nothing is left to do.
func (o *Observations) markPoliciesSynced(namespace string, at uint64, key string) {
	if o == nil || at == 0 {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, live := o.changes[namespace]; live {
		o.synced[namespace] = derived[string]{at: at, when: o.clock.Now(), v: key}
	}
}

// ladderRecord is read's answer (the namespace's decoded ladder record and enrollment) for key,
// reused while the key stands. The State's pointers are shared between passes: the ladder
// copies before it changes a step or hold (internal/ladder's FuzzDecide checks it leaves its
// input alone).
func (o *Observations) ladderRecord(namespace string, key recordKey, read func() (ladder.State, ladder.Enrollment)) (ladder.State, ladder.Enrollment) {
	if o == nil || key.resourceVersion == "" {
		return read()
	}
	o.mu.Lock()
	prev, ok := o.records[namespace]
	o.mu.Unlock()
	if ok && prev.key == key {
		return prev.state, prev.enrollment
	}
	st, e := read()
	o.mu.Lock()
	o.records[namespace] = record{key: key, state: st, enrollment: e}
	o.mu.Unlock()
	return st, e
}

// Keep forgets every namespace not in live (a pass's list of namespaces): entries of namespaces
// gone whose Forget was missed, or that a late event of another kind counted again.
func (o *Observations) Keep(live map[string]bool) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	// Every entry but a record is stored only while the namespace has a change count, and
	// dropped with it.
	for ns := range o.changes {
		if !live[ns] {
			o.drop(ns)
		}
	}
	for ns := range o.records {
		if !live[ns] {
			o.drop(ns)
		}
	}
}
