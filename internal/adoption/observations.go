package adoption

import (
	"context"
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshwright/meshwright/internal/ladder"
)

// Observations remembers what a pass observed of each namespace's pods, workloads and
// disruption budgets, with the namespace's change count when it looked, so the next pass reuses
// it while no event touched the namespace. Reading the cache for every pod and workload of every
// enrolled namespace was most of a pass's CPU at scale (docs/benchmarks.md: 27% of the
// operator's samples at 300 namespaces), and most namespaces do not change between passes.
//
// It is exact as long as Changed is called for every event of a watched object before the pass
// that event starts is queued (controllers does it in the watches' first predicate): a pass
// reads the count before it reads the cache, so an event it may have missed leaves a count it
// has not seen. The zero value is not usable; a nil *Observations observes afresh every time.
type Observations struct {
	mu sync.Mutex
	// generation counts every change of every namespace; changes holds, per namespace, the
	// generation of its last change. A count that only grows cannot repeat itself after a
	// namespace is forgotten and comes back.
	generation uint64
	changes    map[string]uint64
	seen       map[string]observed
}

// observed is one namespace's observation and the change count it was made at.
type observed struct {
	at        uint64
	pods      ladder.Pods
	workloads []ladder.Workload
	uids      map[string]types.UID
}

// NewObservations returns an empty memo: the first pass observes every namespace.
func NewObservations() *Observations {
	return &Observations{changes: map[string]uint64{}, seen: map[string]observed{}}
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
	delete(o.changes, namespace)
	delete(o.seen, namespace)
}

// observe is observeWorkloads, reusing the last observation of the namespace while its change
// count stands. The slices and map it returns are shared between passes: they are only read.
func (o *Observations) observe(ctx context.Context, r client.Reader, namespace string) (ladder.Pods, []ladder.Workload, map[string]types.UID, error) {
	if o == nil {
		return observeWorkloads(ctx, r, namespace)
	}
	o.mu.Lock()
	at, ok := o.changes[namespace]
	if !ok {
		// No change seen since it was forgotten (or ever): the current generation, which any
		// later change moves past.
		at = o.generation + 1
		o.generation = at
		o.changes[namespace] = at
	}
	prev, hit := o.seen[namespace]
	o.mu.Unlock()
	if hit && prev.at == at {
		return prev.pods, prev.workloads, prev.uids, nil
	}
	pods, workloads, uids, err := observeWorkloads(ctx, r, namespace)
	if err != nil {
		return pods, workloads, uids, err
	}
	o.mu.Lock()
	if _, live := o.changes[namespace]; live {
		// Not when the namespace was forgotten meanwhile: its entry would outlive it.
		o.seen[namespace] = observed{at: at, pods: pods, workloads: workloads, uids: uids}
	}
	o.mu.Unlock()
	return pods, workloads, uids, nil
}

// Keep forgets every namespace not in live (a pass's list of namespaces): entries of namespaces
// gone whose Forget was missed, or that a late event of another kind counted again.
func (o *Observations) Keep(live map[string]bool) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for ns := range o.changes {
		if !live[ns] {
			delete(o.changes, ns)
			delete(o.seen, ns)
		}
	}
	for ns := range o.seen {
		if !live[ns] {
			delete(o.seen, ns)
		}
	}
}
