package adoption

import (
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/ambient"
	"github.com/meshwright/meshwright/internal/exposure"
	"github.com/meshwright/meshwright/internal/revision"
)

// WatchedObjects are the kinds the ladder reads, cluster-wide. They live in a cache of their
// own (see CacheOptions): the manager's cache holds only the operator's own Deployments and
// PodDisruptionBudgets, while the ladder needs every team's. Every kind a namespace's
// observation reads (observeWorkloads: Services too, for the proxyless pods they serve) is here,
// so that its events reach Observations.
func WatchedObjects() []client.Object {
	return []client.Object{&corev1.Namespace{}, &corev1.Pod{}, &appsv1.Deployment{}, &appsv1.StatefulSet{}, &appsv1.DaemonSet{},
		&batchv1.CronJob{}, &batchv1.Job{}, &policyv1.PodDisruptionBudget{}, &corev1.Service{}}
}

// CacheOptions keeps of each object only what the ladder reads, so the cache's memory grows
// with the number of pods by a few hundred bytes each, not by whole pod specs.
func CacheOptions() cache.Options {
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}:                   {Transform: slimPod},
			&appsv1.Deployment{}:            {Transform: slimWorkload},
			&appsv1.StatefulSet{}:           {Transform: slimWorkload},
			&appsv1.DaemonSet{}:             {Transform: slimWorkload},
			&batchv1.CronJob{}:              {Transform: slimWorkload},
			&batchv1.Job{}:                  {Transform: slimWorkload},
			&corev1.Namespace{}:             {Transform: slimNamespace},
			&policyv1.PodDisruptionBudget{}: {Transform: slimPDB},
			// What the static checks before STRICT read (internal/exposure), informed on first
			// use: Services, webhook configurations, Ingresses and APIServices, slimmed to the
			// fields that say who calls what.
			&corev1.Service{}: {Transform: slimService},
			&admissionv1.ValidatingWebhookConfiguration{}: {Transform: slimWebhooks},
			&admissionv1.MutatingWebhookConfiguration{}:   {Transform: slimWebhooks},
			&networkingv1.Ingress{}:                       {Transform: cache.TransformStripManagedFields()},
			&networkingv1.IngressClass{}:                  {Transform: cache.TransformStripManagedFields()},
			exposure.APIServiceObject():                   {Transform: cache.TransformStripManagedFields()},
		},
	}
}

// slimService keeps of a Service what tells who can call it: its type, ports and selector; and
// whether it is headless (its cluster IP), which the resilience defaults ask.
func slimService(obj any) (any, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	slim := &corev1.Service{}
	slim.Name, slim.Namespace, slim.UID, slim.ResourceVersion, slim.Labels = s.Name, s.Namespace, s.UID, s.ResourceVersion, s.Labels
	slim.Spec.Type, slim.Spec.Ports, slim.Spec.Selector, slim.Spec.ClusterIP = s.Spec.Type, s.Spec.Ports, s.Spec.Selector, s.Spec.ClusterIP
	return slim, nil
}

// slimWebhooks keeps of a webhook configuration the Services its webhooks call (the CA bundles,
// often kilobytes each, go).
func slimWebhooks(obj any) (any, error) {
	switch w := obj.(type) {
	case *admissionv1.ValidatingWebhookConfiguration:
		w.ManagedFields, w.Annotations = nil, nil
		for i := range w.Webhooks {
			w.Webhooks[i] = admissionv1.ValidatingWebhook{Name: w.Webhooks[i].Name, ClientConfig: admissionv1.WebhookClientConfig{Service: w.Webhooks[i].ClientConfig.Service}}
		}
	case *admissionv1.MutatingWebhookConfiguration:
		w.ManagedFields, w.Annotations = nil, nil
		for i := range w.Webhooks {
			w.Webhooks[i] = admissionv1.MutatingWebhook{Name: w.Webhooks[i].Name, ClientConfig: admissionv1.WebhookClientConfig{Service: w.Webhooks[i].ClientConfig.Service}}
		}
	}
	return obj, nil
}

// slimPod keeps a pod's labels, its creation time, its container names (to see the proxy), the
// revision that injected it (Istio's istio.io/rev annotation), Istio CNI's ambient redirection
// annotation, its phase, IP and Ready condition.
func slimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	slim := &corev1.Pod{}
	slim.Name, slim.Namespace, slim.UID, slim.ResourceVersion = p.Name, p.Namespace, p.UID, p.ResourceVersion
	slim.Labels, slim.DeletionTimestamp, slim.Generation = p.Labels, p.DeletionTimestamp, p.Generation
	// When it started: a root rotation restarts the pods started before its switch.
	slim.CreationTimestamp = p.CreationTimestamp
	if ref := metav1.GetControllerOfNoCopy(p); ref != nil {
		slim.OwnerReferences = []metav1.OwnerReference{{Kind: ref.Kind, Name: ref.Name, UID: ref.UID, Controller: ref.Controller}}
	}
	// Its revision, its injection templates (a proxyless gRPC pod is gated apart), and whether
	// Istio CNI redirected it to ztunnel (ambient mode's steps wait for that).
	for _, k := range []string{revision.PodAnnotation, revision.TemplatesAnnotation, ambient.RedirectionAnnotation} {
		if v, ok := p.Annotations[k]; ok {
			if slim.Annotations == nil {
				slim.Annotations = map[string]string{}
			}
			slim.Annotations[k] = v
		}
	}
	slim.Spec.HostNetwork = p.Spec.HostNetwork
	slim.Spec.Containers, slim.Spec.InitContainers = slimContainers(p.Spec.Containers), slimContainers(p.Spec.InitContainers)
	// Its IP: the traffic gates' embedded source reads its proxy's stats there.
	slim.Status.Phase, slim.Status.PodIP = p.Status.Phase, p.Status.PodIP
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			slim.Status.Conditions = []corev1.PodCondition{{Type: c.Type, Status: c.Status}}
		}
	}
	return slim, nil
}

// slimContainers keeps Istio's containers only (the proxy, which says a pod is injected, and
// Istio CNI's validation, which says it relies on the CNI: what package revision reads of a
// pod), by name, and of the proxy's environment whether it takes its trust bundle live
// (revision.LiveTrust: a root rotation restarts the proxies that do not). A corev1.Container is
// about 600 bytes even empty: keeping the application's containers cost 1.7 KB a pod, half of
// what the cache held of a pod at 10,000 pods (docs/benchmarks.md).
func slimContainers(cs []corev1.Container) []corev1.Container {
	var out []corev1.Container
	for _, c := range cs {
		if c.Name != revision.ProxyContainer && c.Name != revision.CNIValidation {
			continue
		}
		sc := corev1.Container{Name: c.Name}
		if c.Name == revision.ProxyContainer {
			for _, e := range c.Env {
				if e.Name == revision.ProxyConfigXDSAgentEnv {
					sc.Env = []corev1.EnvVar{{Name: e.Name, Value: e.Value}}
				}
			}
		}
		out = append(out, sc)
	}
	return out
}

// slimWorkload drops a workload's pod spec and its own annotations (kubectl's
// last-applied-configuration holds a whole copy of the spec): the ladder reads only its
// selector, replicas, the template's labels and annotations, hostNetwork and the rollout status
// (a Job's conditions).
func slimWorkload(obj any) (any, error) {
	slimSpec := func(t *corev1.PodTemplateSpec) { t.Spec = corev1.PodSpec{HostNetwork: t.Spec.HostNetwork} }
	switch w := obj.(type) {
	case *appsv1.Deployment:
		w.ManagedFields, w.Annotations = nil, nil
		slimSpec(&w.Spec.Template)
	case *appsv1.StatefulSet:
		w.ManagedFields, w.Annotations, w.Spec.VolumeClaimTemplates = nil, nil, nil
		slimSpec(&w.Spec.Template)
	case *appsv1.DaemonSet:
		w.ManagedFields, w.Annotations = nil, nil
		slimSpec(&w.Spec.Template)
	case *batchv1.CronJob:
		w.ManagedFields, w.Annotations = nil, nil
		slimSpec(&w.Spec.JobTemplate.Spec.Template)
	case *batchv1.Job:
		w.ManagedFields, w.Annotations = nil, nil
		slimSpec(&w.Spec.Template)
	}
	return obj, nil
}

// slimNamespace keeps a namespace's labels and only the ladder's own annotations: its record, and
// the record of the resilience defaults a user deleted.
func slimNamespace(obj any) (any, error) {
	if ns, ok := obj.(*corev1.Namespace); ok {
		ns.ManagedFields = nil
		var kept map[string]string
		for _, k := range []string{meshv1.AnnotationLadder, meshv1.AnnotationResilienceDeclined} {
			if v, ok := ns.Annotations[k]; ok {
				if kept == nil {
					kept = map[string]string{}
				}
				kept[k] = v
			}
		}
		ns.Annotations = kept
	}
	return obj, nil
}

// slimPDB keeps what tells whether a budget allows a disruption.
func slimPDB(obj any) (any, error) {
	if pdb, ok := obj.(*policyv1.PodDisruptionBudget); ok {
		pdb.ManagedFields, pdb.Annotations = nil, nil
	}
	return obj, nil
}
