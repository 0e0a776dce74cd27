package main

import (
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
)

// toldTimes records when the operator first told each condition True by an Event: the
// operator emits one per condition transition as the pass sees it, while the status write that
// shows a step of an install may be held for a few seconds.
type toldTimes struct {
	mu    sync.Mutex
	times map[string]time.Time
}

// wrap returns a recorder that records into t and passes every Event on to next.
func (t *toldTimes) wrap(next recorder.EventRecorder) recorder.EventRecorder {
	return &timingRecorder{EventRecorder: next, told: t}
}

// at is when conditionType was first told True; zero if never.
func (t *toldTimes) at(conditionType string) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.times[conditionType]
}

// timingRecorder notes the operator's condition Events ("Update<type>", with the condition's
// type and status as the note's first two arguments) before passing them on.
type timingRecorder struct {
	recorder.EventRecorder
	told *toldTimes
}

func (r *timingRecorder) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	if len(args) >= 2 && args[1] == metav1.ConditionTrue {
		if conditionType, ok := args[0].(string); ok && action == "Update"+conditionType {
			r.told.mu.Lock()
			if r.told.times == nil {
				r.told.times = map[string]time.Time{}
			}
			if _, seen := r.told.times[conditionType]; !seen {
				r.told.times[conditionType] = time.Now()
			}
			r.told.mu.Unlock()
		}
	}
	r.EventRecorder.Eventf(regarding, related, eventtype, reason, action, note, args...)
}
