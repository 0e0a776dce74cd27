package certificates

import (
	"context"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/apply"
	"github.com/meshwright/meshwright/internal/stages"
)

// TestRotationPhaseGates walks a root rotation one gate at a time, on a clock that moves only
// when a step moves it: each phase is run while what its gate waits for is withheld (it must
// stay in its phase and say what it waits for), then given (it must move on). The steps are in
// rotationPhases' order: Prepare waits for the new intermediate; Trust for istiod to publish both
// roots, then for the proxies started before that cannot take them live, then for
// trustPropagation; Switch for istiod to sign with the new intermediate, then for
// the proxies started before it; Drop for istiod to publish the new root alone.
func TestRotationPhaseGates(t *testing.T) {
	ctx := context.Background()
	const app = "app" // as in the other rotation tests: istiod publishes its roots there too
	setUpMesh(t, app)
	cleanUp(t)
	clk := clocktesting.NewFakePassiveClock(time.Now())
	ist := &fakeIstiod{namespaces: []string{"istio-system", app}}
	stage := &Stage{Client: k8s, Reader: k8s, Pods: k8s, Mapper: mapper, Applier: &apply.Applier{Client: k8s, FieldManager: "meshwright"}, Clock: clk,
		Serving: func(context.Context, string, string) ([]*x509.Certificate, error) {
			return []*x509.Certificate{ist.serving}, nil
		}}
	const propagation = time.Hour
	mesh := &meshv1.MeshInstallation{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: meshv1.MeshInstallationSpec{Certificates: meshv1.CertificatesSpec{TrustPropagation: &metav1.Duration{Duration: propagation}}}}
	pass := func() stages.Result { return reportedPass(t, stage, mesh) }
	// Generation 0, as cert-manager issues it and istiod loads it.
	for i := 0; i < 10 && pass().Reason != meshv1.ReasonCAReady; i++ {
		fakeCertManager(t, "istio-system", nil)
		ist.load(t)
	}
	if mesh.Status.Certificates.Generation != 0 || mesh.Status.Certificates.Rotation != nil {
		t.Fatalf("generation 0 is not steady: %+v", mesh.Status.Certificates)
	}
	withProxy := func(name string, env ...corev1.EnvVar) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: app, Name: name},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}, {Name: "istio-proxy", Image: "proxy", Env: env}}}}
	}
	proxy := withProxy("started-before")
	// Started before the rotation: one keeps the roots it started with, one takes them live.
	static := withProxy("static-trust")
	live := withProxy("live-trust", corev1.EnvVar{Name: "PROXY_CONFIG_XDS_AGENT", Value: "true"})
	create := func(pods ...*corev1.Pod) {
		for _, p := range pods {
			if err := k8s.Create(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	remove := func(pods ...*corev1.Pod) {
		for _, p := range pods {
			if err := k8s.Delete(ctx, p, client.GracePeriodSeconds(0)); err != nil {
				t.Fatal(err)
			}
		}
	}
	mesh.Annotations = map[string]string{meshv1.AnnotationRotateRoot: "gates"}

	steps := []struct {
		name string
		act  func()
		// phase is where the rotation must stand after the pass ("" once it ended), and say.
		phase meshv1.RotationPhase
		say   string
		// waits, when set, checks the time the phase asks to be looked at again after.
		waits func(time.Duration) bool
	}{
		{name: "Prepare waits for the new intermediate", act: func() {},
			phase: meshv1.RotationPrepare, say: "phase Prepare"},
		{name: "Prepare publishes both roots once it is issued", act: func() {
			fakeCertManager(t, "istio-system", nil) // the new root
			fakeCertManager(t, "istio-system", nil) // the intermediate it signs
		},
			phase: meshv1.RotationTrust, say: "cacerts now publishes both roots"},
		{name: "Trust waits for istiod to publish both roots", act: func() { create(static, live) },
			phase: meshv1.RotationTrust, say: "waiting for istiod to publish both roots"},
		{name: "Trust sees both roots published, and restarts wait for the next second", act: func() {
			clk.SetTime(time.Now().Add(time.Second))
			ist.load(t)
		}, phase: meshv1.RotationTrust, say: "proxies that keep the roots they started with restart from", waits: func(d time.Duration) bool { return d > 0 && d <= time.Second }},
		{name: "Trust waits for the proxies that keep their roots, not for those that take them live", act: func() { clk.SetTime(clk.Now().Add(2 * time.Second)) },
			phase: meshv1.RotationTrust, say: "1 pod(s) with Istio's proxy started before and keep the roots they started with"},
		{name: "Trust waits out trustPropagation once none is left", act: func() { remove(static) },
			phase: meshv1.RotationTrust, say: "signing switches to the new intermediate at", waits: func(d time.Duration) bool { return d > propagation-5*time.Second && d <= propagation }},
		{name: "Trust switches signing once it passed", act: func() { clk.SetTime(clk.Now().Add(propagation + time.Second)) },
			phase: meshv1.RotationSwitch, say: "istiod signs with the new intermediate now"},
		{name: "Switch waits to see istiod sign with the new intermediate", act: func() {},
			phase: meshv1.RotationSwitch, say: "phase Switch"},
		{name: "Switch sees istiod sign, and restarts wait for the next second", act: func() {
			create(proxy)
			ist.load(t)
		}, phase: meshv1.RotationSwitch, say: "workloads restart from", waits: func(d time.Duration) bool { return d > 0 && d <= time.Second }},
		{name: "Switch waits for every proxy started before, those that took the new root live too", act: func() { clk.SetTime(clk.Now().Add(2 * time.Second)) },
			phase: meshv1.RotationSwitch, say: "2 pod(s) with Istio's proxy started before"},
		{name: "Switch drops the old root once none is left", act: func() { remove(proxy, live) },
			phase: meshv1.RotationDrop, say: "the old root leaves the bundle"},
		{name: "Drop waits for istiod to publish the new root alone", act: func() {},
			phase: meshv1.RotationDrop, say: "waiting for istiod to publish the new root alone"},
		{name: "Drop ends the rotation", act: func() { ist.load(t) },
			say: "The mesh root was rotated"},
	}
	for _, step := range steps {
		step.act()
		res := pass()
		st := mesh.Status.Certificates
		phase := meshv1.RotationPhase("")
		if st.Rotation != nil {
			phase = st.Rotation.Phase
		}
		if phase != step.phase || !strings.Contains(res.Message, step.say) || (step.waits != nil && !step.waits(res.RequeueAfter)) {
			t.Fatalf("%s: phase %q, requeue after %s, %q; want phase %q saying %q", step.name, phase, res.RequeueAfter, res.Message, step.phase, step.say)
		}
	}
	if st := mesh.Status.Certificates; st.Generation != 1 || st.RotatedFor != "gates" || len(ist.roots) != 1 {
		t.Fatalf("after the rotation: %+v, istiod publishes %s", st, ist.roots.Fingerprints())
	}
	for _, v := range ist.violations {
		t.Error(v)
	}
}
