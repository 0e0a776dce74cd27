// Package injection verifies Istio's sidecar-injection webhook the way the API server sees it:
// the MutatingWebhookConfiguration exists and has a caBundle, and a pod created in dry-run mode
// comes back with Istio's proxy. Only then does the adoption ladder label any namespace.
package injection

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/apierr"
	"github.com/meshwright/meshwright/internal/installed"
	"github.com/meshwright/meshwright/internal/meshspec"
	"github.com/meshwright/meshwright/internal/names"
	"github.com/meshwright/meshwright/internal/revision"
	"github.com/meshwright/meshwright/internal/stages"
)

// StatusAnnotation is what Istio's injector puts on every pod it injects.
const StatusAnnotation = "sidecar.istio.io/status"

// Recheck is how often a webhook that passed is probed again: istiod can go away without its
// webhook configuration changing.
const Recheck = 5 * time.Minute

// FailedRecheck is how soon a webhook that failed the probe is probed again.
const FailedRecheck = 5 * time.Second

var webhookGVK = schema.GroupVersionKind{Group: "admissionregistration.k8s.io", Version: "v1", Kind: "MutatingWebhookConfiguration"}

// Stage is the Injection stage.
type Stage struct {
	// Client reads the webhook configuration (from the cache) and creates the dry-run pod.
	Client client.Client
	// Clock tells the time of a pass; nil is the real clock (tests give a fake one).
	Clock clock.PassiveClock

	mu   sync.Mutex
	last probeOutcome
}

// Name implements stages.Stage.
func (s *Stage) Name() meshv1.Stage { return meshv1.StageInjection }

// ConditionType implements stages.Stage.
func (s *Stage) ConditionType() string { return meshv1.ConditionInjectionReady }

// Reconcile implements stages.Stage.
func (s *Stage) Reconcile(ctx context.Context, mesh *meshv1.MeshInstallation) (stages.Result, error) {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(webhookGVK.GroupVersion().WithKind(webhookGVK.Kind + "List"))
	if err := s.Client.List(ctx, list, client.MatchingLabels{meshv1.LabelInstallation: mesh.Name, "app": "sidecar-injector"}); err != nil {
		return stages.Result{}, fmt.Errorf("listing injection webhooks: %w", err)
	}
	active, err := installed.ActiveRevision(ctx, s.Client, mesh)
	if err != nil {
		return stages.Result{}, err
	}
	var wh *unstructured.Unstructured
	for i := range list.Items {
		// During an upgrade each revision has its own webhook: the active one is probed.
		if rev := list.Items[i].GetLabels()[meshv1.LabelRevision]; rev == active || (rev == "" && active == revision.Default) {
			wh = &list.Items[i]
		}
	}
	if wh == nil {
		return stages.Result{State: stages.NotReady, Reason: meshv1.ReasonWebhookNotFound,
			Message: fmt.Sprintf("No sidecar-injector MutatingWebhookConfiguration of revision %s: check that spec.controlPlane.values do not turn it off (global.operatorManageWebhooks, sidecarInjectorWebhook).", active)}, nil
	}
	if missing := withoutCABundle(wh); missing != "" {
		return stages.Result{State: stages.NotReady, Reason: meshv1.ReasonWebhookNotServing, RequeueAfter: 5 * time.Second,
			Message: fmt.Sprintf("Webhook %s of %s has no caBundle yet: istiod writes it when it starts.", missing, wh.GetName())}, nil
	}

	// A probe costs a webhook call (up to its timeout when istiod is unreachable), so its
	// outcome is kept: a pass for the same webhook configuration within Recheck (FailedRecheck
	// after a failure) reuses it.
	now := s.now()
	// The injector's ConfigMap too: what it injects (Istio CNI, the sidecar's shape) is in it.
	key := wh.GetName() + "@" + wh.GetResourceVersion() + "/" + s.injectorVersion(ctx, meshspec.ControlPlaneNamespace(mesh), active)
	s.mu.Lock()
	last := s.last
	s.mu.Unlock()
	if last.key == key {
		age := now.Sub(last.at)
		if last.result.State == stages.Ready && age < Recheck {
			return withAdmissionRefusals(ready(wh.GetName(), Recheck-age, last.result.DataPlane), mesh), nil
		}
		if last.result.State != stages.Ready && age < FailedRecheck {
			res := last.result
			res.RequeueAfter = FailedRecheck - age
			return res, nil
		}
	}

	res, err := s.probe(ctx, meshspec.ControlPlaneNamespace(mesh), active)
	if err != nil {
		return res, err
	}
	if res.State == stages.Ready {
		res = ready(wh.GetName(), Recheck, res.DataPlane)
	}
	s.mu.Lock()
	s.last = probeOutcome{key: key, at: now, result: res}
	s.mu.Unlock()
	return withAdmissionRefusals(res, mesh), nil
}

// withAdmissionRefusals adds to a serving webhook's message the namespaces whose injected pods
// the API server refuses, as the ladder's dry runs found them (PodAdmissionRefused): the probe
// runs in the control-plane namespace, where the teams' Pod Security levels, quotas and policies
// do not apply, so the Injection stage says what it cannot see for itself.
func withAdmissionRefusals(res stages.Result, mesh *meshv1.MeshInstallation) stages.Result {
	if res.State != stages.Ready || mesh.Status.Namespaces == nil {
		return res
	}
	var refused []string
	for _, b := range mesh.Status.Namespaces.Blocked {
		if b.Reason == meshv1.ReasonPodAdmissionRefused {
			refused = append(refused, b.Name)
		}
	}
	if len(refused) > 0 {
		res.Message += fmt.Sprintf(" The API server refuses the pods as injected in namespace(s) %s (PodAdmissionRefused; status.namespaces.blocked quotes it).",
			names.Few(refused, 3, ", "))
	}
	return res
}

// injectorVersion is the resourceVersion of a revision's injector ConfigMap as the cache has it,
// "" when it cannot be read (the probe then follows the webhook's alone).
func (s *Stage) injectorVersion(ctx context.Context, namespace, rev string) string {
	name := "istio-sidecar-injector"
	if rev != "" && rev != revision.Default {
		name += "-" + rev
	}
	cm := &unstructured.Unstructured{}
	cm.SetAPIVersion("v1")
	cm.SetKind("ConfigMap")
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, cm); err != nil {
		return ""
	}
	return cm.GetResourceVersion()
}

// probeOutcome is the last probe's result for one version of the webhook configuration.
type probeOutcome struct {
	key    string
	at     time.Time
	result stages.Result
}

func ready(name string, recheck time.Duration, dp *meshv1.DataPlaneStatus) stages.Result {
	shape := ""
	if dp != nil {
		shape = fmt.Sprintf(" (%s sidecar)", strings.ToLower(dp.Sidecars))
	}
	return stages.Result{State: stages.Ready, Reason: meshv1.ReasonWebhookServing, RequeueAfter: recheck, DataPlane: dp,
		Message: fmt.Sprintf("The API server calls %s and a dry-run pod comes back with Istio's proxy%s.", name, shape)}
}

// probe creates a pod in dry-run mode that asks for injection by revision label, so the API
// server calls the webhook exactly as it will for the namespaces' pods; nothing is stored.
func (s *Stage) probe(ctx context.Context, namespace, rev string) (stages.Result, error) {
	no := false
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "meshwright-injection-probe-",
			Namespace:    namespace,
			Labels:       map[string]string{revision.Label: rev, meshv1.LabelManagedBy: meshv1.ManagedByValue},
		},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: &no,
			Containers:                   []corev1.Container{{Name: "probe", Image: "registry.k8s.io/pause:3.10"}},
		},
	}
	err := s.Client.Create(ctx, pod, client.DryRunAll)
	switch {
	case apierr.Unavailable(err):
		return stages.Result{State: stages.NotReady, Reason: meshv1.ReasonWebhookNotServing, RequeueAfter: FailedRecheck,
			Message: "The API server cannot call the injection webhook: " + err.Error()}, nil
	case apierr.Refused(err):
		// Refused by something other than the webhook: Pod Security, a quota, a policy
		// engine. Only a change of the cluster or of the operator's RBAC helps.
		return stages.Result{State: stages.NotReady, Reason: meshv1.ReasonProbeRejected, RequeueAfter: 15 * time.Second,
			Message: fmt.Sprintf("The API server refused the dry-run pod that probes the injection webhook in namespace %s: %v", namespace, err)}, nil
	case err != nil:
		return stages.Result{}, fmt.Errorf("creating a dry-run pod to probe the injection webhook: %w", err)
	}
	if _, ok := pod.Annotations[StatusAnnotation]; !ok || !revision.HasProxy(pod) {
		return stages.Result{State: stages.NotReady, Reason: meshv1.ReasonInjectionNotApplied, RequeueAfter: FailedRecheck,
			Message: fmt.Sprintf("The injection webhook answered, but a pod labelled %s=%s came back without Istio's proxy: check the sidecarInjectorWebhook values.", revision.Label, rev)}, nil
	}
	return stages.Result{State: stages.Ready, DataPlane: &meshv1.DataPlaneStatus{Sidecars: revision.SidecarShape(pod), CNI: revision.CNIMode(pod)}}, nil
}

// withoutCABundle names the first webhook of the configuration with no caBundle.
func withoutCABundle(wh *unstructured.Unstructured) string {
	hooks, _, _ := unstructured.NestedSlice(wh.Object, "webhooks")
	for _, h := range hooks {
		m, _ := h.(map[string]any)
		ca, _, _ := unstructured.NestedString(m, "clientConfig", "caBundle")
		if ca == "" {
			name, _ := m["name"].(string)
			return name
		}
	}
	return ""
}

func (s *Stage) now() time.Time { return stages.Now(s.Clock) }
