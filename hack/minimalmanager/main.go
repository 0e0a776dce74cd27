// Command minimalmanager is the smallest controller-runtime manager worth measuring: one
// controller that watches Namespaces and Pods and does nothing, its metrics and health endpoints
// off. It is in the operator's module, so it links the same client-go and controller-runtime;
// its resident memory is the floor under the operator's, what the libraries and two informers
// cost before any logic of the operator's own. test/bench/ready runs it against the cluster the
// operator's process ran against and reports its peak RSS as library_floor_rss_mib.
//
//	go run ./hack/minimalmanager --kubeconfig=$KUBECONFIG
package main

import (
	"context"
	"flag"
	"os"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// main takes the operator's flags for its endpoints (both off by default here, since a floor
// serves nothing) and its logging, and runs until SIGTERM or SIGINT. --kubeconfig is
// controller-runtime's own flag, read by ctrl.GetConfigOrDie as in the operator.
func main() {
	var metricsAddr, probeAddr string
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0", "Address the metrics endpoint binds to; 0 (the default) disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", "0", "Address the /healthz and /readyz probes bind to; 0 (the default) disables them.")
	opts := zap.Options{Development: false}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Metrics:                metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress: probeAddr,
	})
	if err != nil {
		log.Error(err, "unable to create the manager")
		os.Exit(1)
	}
	err = ctrl.NewControllerManagedBy(mgr).
		Named("minimal").
		For(&corev1.Namespace{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(podNamespace)).
		Complete(reconcile.Func(nothing))
	if err != nil {
		log.Error(err, "unable to set up the controller")
		os.Exit(1)
	}
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "manager exited with an error")
		os.Exit(1)
	}
}

// podNamespace maps a Pod to its Namespace, so that pod events start passes as the operator's
// do; the floor pays for the same queue work.
func podNamespace(_ context.Context, o client.Object) []reconcile.Request {
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: o.GetNamespace()}}}
}

// nothing is the controller's pass: it does nothing, so what the process holds is the libraries'.
func nothing(context.Context, reconcile.Request) (reconcile.Result, error) {
	return reconcile.Result{}, nil
}
