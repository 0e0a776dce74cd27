package trafficsim

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestSimulatorRBACStatNames pins the exported names of the HTTP RBAC filter stats.
func TestSimulatorRBACStatNames(t *testing.T) {
	tests := map[string]struct {
		legacy bool
		name   string
		labels map[string]string
	}{
		// Istio ≥1.23 (pilot/pkg/networking/core/listener_inbound.go StatPrefix + util.DelimitedStatsPrefix,
		// tools/packaging/common/envoy_bootstrap.json http_conn_manager_prefix regex; release note 51761):
		// http.inbound_0.0.0.0_8080;.rbac.allowed → envoy_http_rbac{http_conn_manager_prefix=...}.
		"delimited (embedded Istio)": {false, "envoy_http_rbac",
			map[string]string{"http_conn_manager_prefix": "inbound_0.0.0.0_8080", "authz_enforce_result": "allowed"}},
		// DRY-RUN task (istio.io): envoy_http_inbound_0_0_0_0_80_rbac, the prefix left in the name.
		"legacy": {true, "envoy_http_inbound_0_0_0_0_8080_rbac", map[string]string{"authz_enforce_result": "allowed"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := &rbacCollector{legacy: tc.legacy, series: map[rbacKey]float64{}}
			c.recordFilters(8080, []FilterResult{{Action: ActionAllow, Enforced: true, Evaluated: true, Allowed: true}}, 3)
			reg := prometheus.NewRegistry()
			reg.MustRegister(c)
			gathered, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			mfs := map[string]*dto.MetricFamily{}
			for _, mf := range gathered {
				mfs[mf.GetName()] = mf
			}
			if len(mfs) != 1 || mfs[tc.name] == nil {
				t.Fatalf("families %v, want only %q", mfs, tc.name)
			}
			expect(t, mfs, tc.name, tc.labels, 3)
			if n := len(mfs[tc.name].Metric); n != 4 {
				t.Errorf("%d series, want the filter's four counters", n)
			}
		})
	}
}
