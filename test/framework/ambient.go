package framework

import (
	"context"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshwright/meshwright/test/ambientsim"
)

// StartAmbientCapture runs the simulator of Istio CNI's node agent in ambient mode (package
// ambientsim) over c until the test ends: it annotates pods as redirected to ztunnel where the
// node agent would, since kwok runs no node agent. What it shows is what the operator and istiod
// do with that annotation, not that a real data plane redirects anything.
func StartAmbientCapture(t testing.TB, c client.Client, ztunnelNamespace string) {
	t.Helper()
	rules, err := ambientsim.DefaultRules()
	if err != nil {
		t.Fatal(err)
	}
	sim := &ambientsim.Simulator{Client: c, ZtunnelNamespace: ztunnelNamespace, Rules: rules}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sim.Run(ctx, 200*time.Millisecond, t.Logf)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}
