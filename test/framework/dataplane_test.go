package framework

import (
	"slices"
	"testing"
)

// TestDataPlaneWatchJudgesInTheAPIServersOrder: the watch replays a namespace's changes by
// resourceVersion, whatever order its informers delivered them in, and names each pod that ran
// without the proxy while the namespace lacked the ambient label, and only those.
func TestDataPlaneWatchJudgesInTheAPIServersOrder(t *testing.T) {
	ns := func(rv uint64, ambient bool, rev string) dataPlaneEvent {
		return dataPlaneEvent{rv: rv, namespace: "app", ambient: ambient, injection: rev}
	}
	pod := func(rv uint64, name string, running, proxy bool) dataPlaneEvent {
		return dataPlaneEvent{rv: rv, namespace: "app", pod: name, running: running, proxy: proxy}
	}
	tests := map[string]struct {
		events    []dataPlaneEvent
		labels    []string
		unhandled []string
	}{
		"Istio's order: the ambient label before the restart": {
			events:    []dataPlaneEvent{pod(5, "a", true, true), ns(10, false, "default"), ns(20, true, ""), pod(30, "b", true, false), pod(31, "a", false, true)},
			labels:    []string{"istio.io/rev=default", "ambient"},
			unhandled: nil,
		},
		"delivered out of order, judged in the API server's": {
			events:    []dataPlaneEvent{pod(30, "b", true, false), ns(20, true, ""), ns(10, false, "default")},
			labels:    []string{"istio.io/rev=default", "ambient"},
			unhandled: nil,
		},
		"a pod without the proxy before the ambient label": {
			events:    []dataPlaneEvent{ns(10, false, "default"), ns(15, false, ""), pod(16, "b", true, false), ns(20, true, "")},
			labels:    []string{"istio.io/rev=default", "", "ambient"},
			unhandled: []string{`pod b ran without the proxy, its namespace labelled "" (resourceVersion 16)`},
		},
		"the ambient label gone before the last pod without the proxy": {
			events:    []dataPlaneEvent{ns(10, true, "default"), pod(11, "b", true, false), ns(20, false, "default"), pod(21, "b", false, false)},
			labels:    []string{"ambient istio.io/rev=default", "istio.io/rev=default"},
			unhandled: []string{`pod b ran without the proxy, its namespace labelled "default" (resourceVersion 20)`},
		},
		"a pod without the proxy that no longer runs": {
			events:    []dataPlaneEvent{ns(10, true, ""), pod(11, "b", true, false), pod(12, "b", false, false), ns(20, false, "default")},
			labels:    []string{"ambient", "istio.io/rev=default"},
			unhandled: nil,
		},
		"pods recorded before the namespace are judged once it is": {
			events:    []dataPlaneEvent{pod(3, "old", true, false), ns(10, false, "default")},
			labels:    []string{"istio.io/rev=default"},
			unhandled: []string{`pod old ran without the proxy, its namespace labelled "default" (resourceVersion 10)`},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			w := &DataPlaneWatch{namespaces: map[string]bool{"app": true}, events: append(tc.events, dataPlaneEvent{rv: 1, namespace: "other", pod: "x", running: true})}
			if got := w.Labels("app"); !slices.Equal(got, tc.labels) {
				t.Errorf("Labels = %q, want %q", got, tc.labels)
			}
			if got := w.Unhandled("app"); !slices.Equal(got, tc.unhandled) {
				t.Errorf("Unhandled = %q, want %q", got, tc.unhandled)
			}
		})
	}
}
