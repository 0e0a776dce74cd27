package controllers

import (
	"context"
	"sync/atomic"
	"time"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// The pacing of the passes that the events of teams' objects start (pods, workloads, Services,
// namespaces, the ladder's policies). Such events come in bursts while namespaces step (every
// replaced pod is a create, a few status updates and a delete), and every pass looks at every
// enrolled namespace: started at once, each event was a pass of its own whenever the last one
// had ended (5,749 passes to take 300 namespaces to MutualTLS, docs/benchmarks.md), so the
// operator's CPU grew with the square of the namespaces. An event now waits before its pass, for
// LadderPassShare of the time at most to go to passes: 19 times the last pass's duration, within
// [MinLadderEventDelay, MaxLadderEventDelay]. The installation's own changes, the control plane's
// objects and requeues still start a pass at once.
const (
	// LadderPassShare is the share of the operator's time that passes started by teams' events
	// may take.
	LadderPassShare = 0.05
	// MinLadderEventDelay is the least an event waits: a burst still shares a pass when passes
	// are short.
	MinLadderEventDelay = 100 * time.Millisecond
	// MaxLadderEventDelay is the most an event waits, whatever a pass costs: how late the ladder
	// may see a change at the largest sizes.
	MaxLadderEventDelay = 5 * time.Second
)

// passPacer remembers how long the last pass took, and says how long an event waits for the
// next one.
type passPacer struct {
	last atomic.Int64 // nanoseconds
}

// record notes a pass's duration.
func (p *passPacer) record(d time.Duration) { p.last.Store(int64(d)) }

// delay is how long an event waits before the pass it starts.
func (p *passPacer) delay() time.Duration {
	d := time.Duration(float64(p.last.Load()) * (1/LadderPassShare - 1))
	return min(max(d, MinLadderEventDelay), MaxLadderEventDelay)
}

// batchedEvents enqueues, for every event, the requests mapper returns, to be reconciled after
// delay. The workqueue holds one entry per request, ready at the earliest time it was asked
// for, so the events that come meanwhile join the pass the first one started; none is lost.
type batchedEvents struct {
	mapper handler.MapFunc
	delay  func() time.Duration
}

var _ handler.EventHandler = batchedEvents{}

// Create implements handler.EventHandler.
func (b batchedEvents) Create(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	b.enqueue(ctx, e.Object, q)
}

// Update implements handler.EventHandler.
func (b batchedEvents) Update(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	b.enqueue(ctx, e.ObjectNew, q)
}

// Delete implements handler.EventHandler.
func (b batchedEvents) Delete(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	b.enqueue(ctx, e.Object, q)
}

// Generic implements handler.EventHandler.
func (b batchedEvents) Generic(ctx context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	b.enqueue(ctx, e.Object, q)
}

func (b batchedEvents) enqueue(ctx context.Context, o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	d := b.delay()
	for _, req := range b.mapper(ctx, o) {
		q.AddAfter(req, d)
	}
}
