package controllers

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// TestBatchedEventsShareAPass: on both queues a controller may use (controller-runtime's
// priority queue, its default, and client-go's), a burst of events of every kind becomes one
// request, ready only after the delay, and an event that comes during the pass brings another.
func TestBatchedEventsShareAPass(t *testing.T) {
	tests := map[string]func() workqueue.TypedRateLimitingInterface[reconcile.Request]{
		"priority queue": func() workqueue.TypedRateLimitingInterface[reconcile.Request] {
			return priorityqueue.New[reconcile.Request]("batching-test")
		},
		"client-go queue": func() workqueue.TypedRateLimitingInterface[reconcile.Request] {
			return workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
		},
	}
	for name, newQueue := range tests {
		t.Run(name, func(t *testing.T) {
			q := newQueue()
			defer q.ShutDown()
			checkBatching(t, q)
		})
	}
}

func checkBatching(t *testing.T, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	ctx := context.Background()
	req := reconcile.Request{NamespacedName: types.NamespacedName{Name: "default"}}
	b := batchedEvents{mapper: func(context.Context, client.Object) []reconcile.Request { return []reconcile.Request{req} }, delay: func() time.Duration { return time.Second }}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "team"}}
	get := func() reconcile.Request {
		t.Helper()
		got := make(chan reconcile.Request, 1)
		go func() {
			r, _ := q.Get()
			got <- r
		}()
		select {
		case r := <-got:
			return r
		case <-time.After(30 * time.Second):
			t.Fatal("no request became ready")
			return reconcile.Request{}
		}
	}

	b.Create(ctx, event.CreateEvent{Object: pod}, q)
	b.Update(ctx, event.UpdateEvent{ObjectOld: pod, ObjectNew: pod}, q)
	b.Delete(ctx, event.DeleteEvent{Object: pod}, q)
	b.Generic(ctx, event.GenericEvent{Object: pod}, q)
	if n := q.Len(); n != 0 {
		t.Fatalf("%d requests ready at once, want none before the delay", n)
	}
	if got := get(); got != req || q.Len() != 0 {
		t.Fatalf("got %v with %d more ready, want the one request alone", got, q.Len())
	}
	b.Update(ctx, event.UpdateEvent{ObjectOld: pod, ObjectNew: pod}, q)
	q.Done(req)
	if got := get(); got != req {
		t.Errorf("after an event during the pass got %v, want %v again", got, req)
	}
	q.Done(req)
}

// TestPassPacer: an event waits 19 times the last pass (passes take a twentieth of the time),
// within the bounds.
func TestPassPacer(t *testing.T) {
	tests := map[string]struct {
		last, want time.Duration
	}{
		"no pass yet":   {last: 0, want: MinLadderEventDelay},
		"short passes":  {last: time.Millisecond, want: MinLadderEventDelay},
		"10 ms passes":  {last: 10 * time.Millisecond, want: 190 * time.Millisecond},
		"100 ms passes": {last: 100 * time.Millisecond, want: 1900 * time.Millisecond},
		"passes of 1 s": {last: time.Second, want: MaxLadderEventDelay},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var p passPacer
			p.record(tc.last)
			if got := p.delay(); got != tc.want {
				t.Errorf("delay after a pass of %s = %s, want %s", tc.last, got, tc.want)
			}
		})
	}
}
