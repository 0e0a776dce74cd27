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
	podRevs, err := s.podRevisions(ctx, nsList.Items, moves)
	if err != nil {
		return nil, false, err
	}
	return revision.Count(labels, podRevs, recorded), true, nil
}

// RevisionMemo reuses a namespace's pod revisions (what compute returns) while no event touched
// the namespace's objects: counting every pod of the cluster on every pass was a tenth of the
// operator's CPU at 300 namespaces (docs/benchmarks.md).
type RevisionMemo interface {
	PodRevisions(namespace string, compute func() ([]string, error)) ([]string, error)
}

// podRevisions lists, per namespace, the revisions of its running injected pods: through the
// memo, namespace by namespace, when there is one and the counts are for status alone; in one
// list of every pod when a revision may be retired in this pass (moves): that must also count
// the pods of a namespace the namespaces' cache does not show yet.
func (s *Stage) podRevisions(ctx context.Context, namespaces []corev1.Namespace, moves bool) (map[string][]string, error) {
	if s.Revisions == nil || moves {
		return listPodRevisions(ctx, s.Workloads)
	}
	out := make(map[string][]string, len(namespaces))
	for i := range namespaces {
		name := namespaces[i].Name
		revs, err := s.Revisions.PodRevisions(name, func() ([]string, error) {
			byNS, err := listPodRevisions(ctx, s.Workloads, client.InNamespace(name))
			return byNS[name], err
		})
		if err != nil {
			return nil, err
		}
		if len(revs) > 0 {
			out[name] = revs
		}
	}
	return out, nil
}

// listPodRevisions lists the pods opts select and groups, per namespace, the revisions of those
// that run and were injected.
func listPodRevisions(ctx context.Context, r client.Reader, opts ...client.ListOption) (map[string][]string, error) {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, append(opts, client.UnsafeDisableDeepCopy)...); err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
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
	return podRevs, nil
}

// ladderRevisions reads the revisions a namespace's ladder record names: those a running step
// moves it between, and the one a migration to ambient mode would return it to.
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
		if st.Step.DataPlane != "" {
			// A migration to ambient mode took the injection label off, and its rollback puts
			// it back for the revision the namespace was on: that revision stays installed.
			add(ladder.RevisionName(st.Revision))
		}
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
