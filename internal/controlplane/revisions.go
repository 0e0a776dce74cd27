package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/revision"
)

// usage counts, per revision, the namespaces that select it and the running pods it injected.
// Without a Workloads reader nothing is known, and no revision is ever retired.
// Moves' records are read only when another revision than the active one is installed (moves):
// in steady state the counts are for status alone, with nothing to retire, and every namespace's
// record need not be decoded on every pass.
func (s *Stage) usage(ctx context.Context, moves bool) (map[string]revision.Usage, bool, error) {
	if s.Workloads == nil {
		return nil, false, nil
	}
	var nsList corev1.NamespaceList
	if err := s.Workloads.List(ctx, &nsList, client.UnsafeDisableDeepCopy); err != nil {
		return nil, false, fmt.Errorf("listing namespaces: %w", err)
	}
	labels := make(map[string]map[string]string, len(nsList.Items))
	var recorded map[string][]string
	for i := range nsList.Items {
		ns := &nsList.Items[i]
		labels[ns.Name] = ns.Labels
		// A move records the revision it comes from, to go back to it on rollback: that
		// revision stays while the move runs, even once no label or pod names it.
		if !moves {
			continue
		}
		if revs := ladderRevisions(ns.Annotations[meshv1.AnnotationLadder]); len(revs) > 0 {
			if recorded == nil {
				recorded = map[string][]string{}
			}
			recorded[ns.Name] = revs
		}
	}
	var pods corev1.PodList
	if err := s.Workloads.List(ctx, &pods, client.UnsafeDisableDeepCopy); err != nil {
		return nil, false, fmt.Errorf("listing pods: %w", err)
	}
	podRevs := map[string][]string{}
	for i := range pods.Items {
		p := &pods.Items[i]
		rev := p.Annotations[revision.PodAnnotation]
		if rev == "" || p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		podRevs[p.Namespace] = append(podRevs[p.Namespace], rev)
	}
	return revision.Count(labels, podRevs, recorded), true, nil
}

// ladderRevisions reads the revisions a namespace's ladder record names: the one it is on, and
// those a running step moves it between.
func ladderRevisions(raw string) []string {
	if raw == "" {
		return nil
	}
	var st ladder.State
	if json.Unmarshal([]byte(raw), &st) != nil {
		return nil
	}
	var out []string
	add := func(r string) {
		if r != "" && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	if st.Step != nil {
		add(st.Step.Revision)
		add(st.Step.From)
	}
	return out
}

// retire removes the objects of revisions other than active once nothing uses them (webhooks
// first, so nothing calls into an istiod that is going away), and says what the others still
// serve. others holds each such revision's objects, as prune found them; the removed ones are
// taken out of it.
//
// A retiring revision is not applied again (its spec is gone); broken names the ones still in
// use whose istiod does not serve, where pods cannot be created (the webhook fails closed).
func (s *Stage) retire(ctx context.Context, others map[string][]*unstructured.Unstructured, installed []revision.Installed, usage map[string]revision.Usage, known bool) (serving, broken []string, err error) {
	names := slices.Sorted(maps.Keys(others))
	for _, name := range names {
		u := usage[name]
		if !known || !u.Unused() {
			if known {
				serving = append(serving, revision.Describe(name, u))
			} else {
				serving = append(serving, "revision "+name+" is kept: the operator cannot see namespaces and pods")
			}
			if !slices.ContainsFunc(installed, func(r revision.Installed) bool { return r.Name == name && r.Available }) {
				broken = append(broken, name)
			}
			continue
		}
		objs := others[name]
		for i := len(objs) - 1; i >= 0; i-- {
			o := objs[i]
			if o.GetDeletionTimestamp() != nil {
				continue
			}
			if err := s.Client.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
				return nil, nil, fmt.Errorf("removing %s %s of the retired revision %s: %w", o.GetKind(), o.GetName(), name, err)
			}
		}
		log.FromContext(ctx).Info("removed a control-plane revision nothing uses any more", "revision", name, "objects", len(objs))
		delete(others, name)
	}
	return serving, broken, nil
}

// revisionStatuses is status.revisions: the active revision first, then the others by name.
// A revision whose istiod is gone keeps the version its history recorded.
func revisionStatuses(history revision.History, active, activeVersion string, installed []revision.Installed, others map[string][]*unstructured.Unstructured, usage map[string]revision.Usage) []meshv1.RevisionStatus {
	out := []meshv1.RevisionStatus{{Name: active, Version: activeVersion, Active: true,
		Namespaces: int32(usage[active].Namespaces), Pods: int32(usage[active].Pods)}} //nolint:gosec // G115: a count of pods or namespaces, far below 2^31
	names := slices.Sorted(maps.Keys(others))
	for _, name := range names {
		version := history.VersionOf(name)
		for _, r := range installed {
			if r.Name == name && r.Version != "" {
				version = r.Version
			}
		}
		out = append(out, meshv1.RevisionStatus{Name: name, Version: version,
			Namespaces: int32(usage[name].Namespaces), Pods: int32(usage[name].Pods)}) //nolint:gosec // G115: a count of pods or namespaces, far below 2^31
	}
	if len(out) > 8 {
		out = out[:8]
	}
	return out
}
