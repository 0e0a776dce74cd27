package adoption

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// WatchedObjects are the kinds the ladder reads, cluster-wide. They live in a cache of their
// own (see CacheOptions): the manager's cache holds only the operator's own Deployments and
// PodDisruptionBudgets, while the ladder needs every team's.
func WatchedObjects() []client.Object {
	return []client.Object{&corev1.Namespace{}, &corev1.Pod{}, &appsv1.Deployment{}, &appsv1.StatefulSet{}, &appsv1.DaemonSet{}, &policyv1.PodDisruptionBudget{}}
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
			&corev1.Namespace{}:             {Transform: cache.TransformStripManagedFields()},
			&policyv1.PodDisruptionBudget{}: {Transform: cache.TransformStripManagedFields()},
		},
	}
}

// slimPod keeps a pod's labels, its container names (to see the proxy), its phase and its
// Ready condition.
func slimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	slim := &corev1.Pod{}
	slim.Name, slim.Namespace, slim.UID, slim.ResourceVersion = p.Name, p.Namespace, p.UID, p.ResourceVersion
	slim.Labels, slim.DeletionTimestamp, slim.Generation = p.Labels, p.DeletionTimestamp, p.Generation
	for _, c := range p.Spec.Containers {
		slim.Spec.Containers = append(slim.Spec.Containers, corev1.Container{Name: c.Name})
	}
	for _, c := range p.Spec.InitContainers {
		slim.Spec.InitContainers = append(slim.Spec.InitContainers, corev1.Container{Name: c.Name})
	}
	slim.Status.Phase = p.Status.Phase
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			slim.Status.Conditions = []corev1.PodCondition{{Type: c.Type, Status: c.Status}}
		}
	}
	return slim, nil
}

// slimWorkload drops a workload's pod spec: the ladder reads only its selector, replicas, the
// template's labels and annotations, and the rollout status.
func slimWorkload(obj any) (any, error) {
	switch w := obj.(type) {
	case *appsv1.Deployment:
		w.ManagedFields, w.Spec.Template.Spec = nil, corev1.PodSpec{}
	case *appsv1.StatefulSet:
		w.ManagedFields, w.Spec.Template.Spec, w.Spec.VolumeClaimTemplates = nil, corev1.PodSpec{}, nil
	case *appsv1.DaemonSet:
		w.ManagedFields, w.Spec.Template.Spec = nil, corev1.PodSpec{}
	}
	return obj, nil
}
