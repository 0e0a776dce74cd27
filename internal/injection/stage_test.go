package injection

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/stages"
	"github.com/meshwright/meshwright/internal/testenv"
)

var k8s client.Client

func TestMain(m *testing.M) {
	testenv.Main(m, func(cfg *rest.Config) (err error) {
		if k8s, err = client.New(cfg, client.Options{Scheme: clientgoscheme.Scheme}); err != nil {
			return err
		}
		ctx := context.Background()
		// The probe's pod goes to the control plane's namespace; envtest runs no controller that
		// would create its default ServiceAccount.
		if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: meshv1.DefaultControlPlaneNamespace}}); err != nil {
			return err
		}
		return k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: meshv1.DefaultControlPlaneNamespace}})
	})
}

// testInjector imitates the contract of Istio's injector (it adds an istio-proxy container and
// the sidecar.istio.io/status annotation) so that each answer the probe must tell apart can be
// produced on demand; the e2e tests use Istio's real injector.
type testInjector struct {
	inject bool
	native bool // the proxy as Istio injects a native sidecar: an init container, restartPolicy Always
	calls  atomic.Int32
}

func (ti *testInjector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ti.calls.Add(1)
	review := &admissionv1.AdmissionReview{}
	if err := json.NewDecoder(r.Body).Decode(review); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	if ti.inject {
		proxy := `{"op":"add","path":"/spec/containers/-","value":{"name":"istio-proxy","image":"proxy"}},`
		if ti.native {
			proxy = `{"op":"add","path":"/spec/initContainers","value":[{"name":"istio-proxy","image":"proxy","restartPolicy":"Always"}]},`
		}
		patch := `[` + proxy + `{"op":"add","path":"/metadata/annotations","value":{"sidecar.istio.io/status":"{}"}}]`
		resp.Patch, resp.PatchType = []byte(patch), ptr.To(admissionv1.PatchTypeJSONPatch)
	}
	review.Response, review.Request = resp, nil
	_ = json.NewEncoder(w).Encode(review)
}

// webhookConfig is an injector webhook configuration of installation mesh calling url.
func webhookConfig(mesh, url string, caBundle []byte) *admissionregv1.MutatingWebhookConfiguration {
	return &admissionregv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "injector-" + mesh, Labels: map[string]string{meshv1.LabelInstallation: mesh, "app": "sidecar-injector"}},
		Webhooks: []admissionregv1.MutatingWebhook{{
			Name:                    "rev.object.sidecar-injector.istio.io",
			ClientConfig:            admissionregv1.WebhookClientConfig{URL: &url, CABundle: caBundle},
			Rules:                   []admissionregv1.RuleWithOperations{{Operations: []admissionregv1.OperationType{admissionregv1.Create}, Rule: admissionregv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			ObjectSelector:          &metav1.LabelSelector{MatchLabels: map[string]string{"istio.io/rev": "default"}},
			SideEffects:             ptr.To(admissionregv1.SideEffectClassNone),
			FailurePolicy:           ptr.To(admissionregv1.Fail),
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To[int32](5),
		}},
	}
}

func TestInjectionProbe(t *testing.T) {
	closed, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "https://" + closed.Addr().String() + "/inject"
	_ = closed.Close()

	tests := map[string]struct {
		// server answers the webhook; nil means none is set up.
		server *testInjector
		url    string
		noCA   bool
		noHook bool
		// sidecars is the shape status.dataPlane must report; "" means none.
		sidecars string
		state    stages.State
		reason   string
		msg      string
	}{
		"no webhook configuration":  {noHook: true, state: stages.NotReady, reason: meshv1.ReasonWebhookNotFound, msg: "MutatingWebhookConfiguration"},
		"no caBundle yet":           {server: &testInjector{inject: true}, noCA: true, state: stages.NotReady, reason: meshv1.ReasonWebhookNotServing, msg: "no caBundle"},
		"nothing listens":           {url: closedURL, state: stages.NotReady, reason: meshv1.ReasonWebhookNotServing, msg: "failed calling webhook"},
		"answers without the proxy": {server: &testInjector{inject: false}, state: stages.NotReady, reason: meshv1.ReasonInjectionNotApplied, msg: "without Istio's proxy"},
		"injects":                   {server: &testInjector{inject: true}, state: stages.Ready, reason: meshv1.ReasonWebhookServing, msg: "dry-run pod comes back with Istio's proxy (classic sidecar)", sidecars: "Classic"},
		"injects native sidecars":   {server: &testInjector{inject: true, native: true}, state: stages.Ready, reason: meshv1.ReasonWebhookServing, msg: "(native sidecar)", sidecars: "Native"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			mesh := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: strings.ToLower(strings.ReplaceAll(name, " ", "-"))}}
			url, ca := tc.url, []byte(nil)
			if tc.server != nil {
				srv := httptest.NewTLSServer(tc.server)
				t.Cleanup(srv.Close)
				url = srv.URL + "/inject"
				ca = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
			} else if url != "" {
				// A caBundle that is well-formed; nothing answers anyway.
				srv := httptest.NewTLSServer(http.NotFoundHandler())
				ca = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
				srv.Close()
			}
			if tc.noCA {
				ca = nil
			}
			if !tc.noHook {
				wh := webhookConfig(mesh.Name, url, ca)
				if err := k8s.Create(ctx, wh); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = k8s.Delete(ctx, wh) })
			}
			s := &Stage{Client: k8s}
			res, err := s.Reconcile(ctx, mesh)
			if err != nil {
				t.Fatal(err)
			}
			if res.State != tc.state || res.Reason != tc.reason || !strings.Contains(res.Message, tc.msg) {
				t.Fatalf("result = %+v; want state %v, reason %s, a message with %q", res, tc.state, tc.reason, tc.msg)
			}
			if got := ""; res.DataPlane != nil || tc.sidecars != "" {
				if res.DataPlane != nil {
					got = res.DataPlane.Sidecars
				}
				if got != tc.sidecars {
					t.Errorf("dataPlane.sidecars = %q, want %q", got, tc.sidecars)
				}
			}
			if tc.server == nil || tc.noCA {
				return
			}
			// The outcome is kept for the same webhook configuration: a second pass makes no call.
			calls := tc.server.calls.Load()
			again, err := s.Reconcile(ctx, mesh)
			if err != nil {
				t.Fatal(err)
			}
			if again.Reason != tc.reason || tc.server.calls.Load() != calls {
				t.Errorf("second pass: %s with %d more webhook calls; want %s and none", again.Reason, tc.server.calls.Load()-calls, tc.reason)
			}
			// A change of the injector's ConfigMap (what it injects) is probed at once.
			if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "istio-sidecar-injector", Namespace: "istio-system"}, Data: map[string]string{"values": name}}
			if err := k8s.Create(ctx, cm); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = k8s.Delete(ctx, cm) })
			if _, err := s.Reconcile(ctx, mesh); err != nil {
				t.Fatal(err)
			}
			if tc.server.calls.Load() == calls {
				t.Error("no probe after the injector's ConfigMap changed")
			}
			calls = tc.server.calls.Load()
			// Past the recheck interval the webhook is probed again.
			s.Clock = clocktesting.NewFakePassiveClock(time.Now().Add(Recheck + time.Second))
			if _, err := s.Reconcile(ctx, mesh); err != nil {
				t.Fatal(err)
			}
			if tc.server.calls.Load() == calls {
				t.Error("no probe after the recheck interval")
			}
		})
	}
}

// TestServingNamesAdmissionRefusals: a serving webhook's message names the namespaces whose
// injected pods the API server refuses (the ladder's PodAdmissionRefused), which the probe in the
// control-plane namespace cannot see; other holds are not named, and a failing probe keeps its
// own message.
func TestServingNamesAdmissionRefusals(t *testing.T) {
	mesh := &meshv1.MeshInstallation{Status: meshv1.MeshInstallationStatus{Namespaces: &meshv1.NamespacesStatus{Blocked: []meshv1.BlockedNamespace{
		{Name: "shop-guarded", Reason: meshv1.ReasonPodAdmissionRefused}, {Name: "shop-legacy", Reason: meshv1.ReasonUninjectedPods}}}}}
	res := withAdmissionRefusals(ready("istio-sidecar-injector", Recheck, nil), mesh)
	if !strings.Contains(res.Message, "namespace(s) shop-guarded") || strings.Contains(res.Message, "shop-legacy") {
		t.Errorf("message %q", res.Message)
	}
	failing := stages.Result{State: stages.NotReady, Message: "probe failed"}
	if got := withAdmissionRefusals(failing, mesh); got.Message != "probe failed" {
		t.Errorf("a failing probe's message became %q", got.Message)
	}
	if got := withAdmissionRefusals(ready("x", Recheck, nil), &meshv1.MeshInstallation{}); strings.Contains(got.Message, "refuses") {
		t.Errorf("no refusal, message %q", got.Message)
	}
}
