// Command manager runs the Meshwright operator: the MeshInstallation controller with health
// probes, metrics, leader election and graceful shutdown.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	meshscheme "github.com/meshwright/meshwright/api/scheme"
	"github.com/meshwright/meshwright/controllers"
	"github.com/meshwright/meshwright/internal/metricsauth"
	"github.com/meshwright/meshwright/internal/telemetry"
)

// version is stamped at build time with -ldflags "-X main.version=…".
var version = "dev"

// The values of --istio-crds.
const (
	istioCRDsManaged  = "managed"
	istioCRDsExternal = "external"
)

func main() {
	var (
		metricsAddr          string
		metricsSecure        bool
		probeAddr            string
		leaderElect          bool
		leaderElectNamespace string
		shutdownTimeout      time.Duration
		operatorNamespace    string
		istioCRDs            string
		pprofAddr            string
		chartCacheDir        string
		proxyStatsURL        string
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8443",
		"Address the metrics endpoint binds to, such as :8443 (HTTPS) or :8080 (with --metrics-secure=false); 0 disables it.")
	flag.BoolVar(&metricsSecure, "metrics-secure", true,
		"Serve metrics over HTTPS, authenticating and authorising callers against the API server.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz probes bind to.")
	flag.BoolVar(&leaderElect, "leader-elect", false,
		"Elect a leader so that only one replica acts at a time; enable it when running more than one replica.")
	flag.StringVar(&leaderElectNamespace, "leader-election-namespace", "",
		"Namespace of the leader-election Lease; defaults to the operator's own namespace in a cluster.")
	flag.DurationVar(&shutdownTimeout, "graceful-shutdown-timeout", 30*time.Second,
		"How long in-flight reconciles may run after SIGTERM before the manager exits.")
	flag.StringVar(&operatorNamespace, "operator-namespace", os.Getenv("POD_NAMESPACE"),
		"The operator's own namespace, which is never enrolled in the mesh (default: $POD_NAMESPACE).")
	flag.StringVar(&istioCRDs, "istio-crds", istioCRDsManaged,
		"Who installs Istio's CRDs: \""+istioCRDsManaged+"\" (the operator applies the release's CRDs) or \""+istioCRDsExternal+
			"\" (someone else does, as the OLM bundle ships them; the operator only checks them and needs no write access to CRDs). "+
			"The Gateway API's CRDs, which ambient mode installs when absent, follow the same choice.")
	flag.StringVar(&chartCacheDir, "chart-cache-dir", filepath.Join(os.TempDir(), "meshwright-charts"),
		"Where charts downloaded from spec.controlPlane.chartSource are cached (the manifests mount an emptyDir there).")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "",
		"Address Go's profiler (/debug/pprof) binds to, such as 127.0.0.1:6060; empty (the default) disables it. For benchmarks and investigations, not for production.")
	flag.StringVar(&proxyStatsURL, "proxy-stats-url", telemetry.DefaultURLTemplate,
		"Where the traffic gates read a pod's merged proxy metrics when spec.telemetry names no Prometheus, with {ip}, {namespace} and {name} replaced by the pod's. Change it only where pod IPs do not route (the local test cluster points it at its traffic simulator).")
	opts := zap.Options{Development: false}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()

	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")
	if istioCRDs != istioCRDsManaged && istioCRDs != istioCRDsExternal {
		// A typo must not silently fall back to writing CRDs the operator may have no right to.
		fmt.Fprintf(os.Stderr, "--istio-crds=%q: write %q or %q\n", istioCRDs, istioCRDsManaged, istioCRDsExternal)
		os.Exit(2)
	}

	scheme := meshscheme.New()

	metricsOpts := metricsserver.Options{
		BindAddress:   metricsAddr,
		SecureServing: metricsSecure,
		// HTTP/2 is off: it is exposed to the HTTP/2 Rapid Reset and Stream Cancellation CVEs.
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }},
	}
	if metricsSecure {
		// TokenReview and SubjectAccessReview, as controller-runtime's filters do, without
		// linking k8s.io/apiserver (internal/metricsauth).
		metricsOpts.FilterProvider = metricsauth.FilterProvider
	}

	restCfg := ctrl.GetConfigOrDie()
	kubeVersion, err := serverVersion(restCfg)
	if err != nil {
		// Not fatal: the charts then assume their minimum version, and the API server may
		// simply not be up yet. The manager's own start reports a lasting outage.
		log.Error(err, "reading the cluster's version; Istio's charts will be rendered without it")
	}

	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsOpts,
		HealthProbeBindAddress:  probeAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        "meshwright.meshwright.io",
		LeaderElectionNamespace: leaderElectNamespace,
		// Step down at once on SIGTERM so a new replica takes over without waiting for the lease.
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       &shutdownTimeout,
		PprofBindAddress:              pprofAddr,
		Cache:                         controllers.CacheOptions(),
		Client:                        controllers.ClientOptions(),
	})
	if err != nil {
		log.Error(err, "unable to create the manager")
		os.Exit(1)
	}

	if err := (&controllers.MeshInstallationReconciler{
		Client:            mgr.GetClient(),
		Recorder:          mgr.GetEventRecorder("meshwright"),
		KubeVersion:       kubeVersion,
		OperatorNamespace: operatorNamespace,
		ExternalIstioCRDs: istioCRDs == istioCRDsExternal,
		ChartCacheDir:     chartCacheDir,
		ProxyStatsURL:     proxyStatsURL,
	}).SetupWithManager(mgr); err != nil {
		log.Error(err, "unable to set up the controller", "controller", "MeshInstallation")
		os.Exit(1)
	}

	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		log.Error(err, "unable to set up the health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		log.Error(err, "unable to set up the ready check")
		os.Exit(1)
	}

	log.Info("starting manager", "version", version)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "manager exited with an error")
		os.Exit(1)
	}
}

// serverVersion asks the API server for its version, which Istio's charts branch on.
func serverVersion(cfg *rest.Config) (string, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return "", err
	}
	v, err := dc.ServerVersion()
	if err != nil {
		return "", err
	}
	return v.GitVersion, nil
}
