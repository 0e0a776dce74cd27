// Package ambientsim is a simulator of Istio CNI's node agent in ambient mode, for the e2e tests:
// kwok runs no containers, so no node agent ever redirects a pod's traffic to ztunnel, or tells
// the cluster it did. What the rest of the mesh sees of that work is one documented contract:
// the node agent annotates a pod ambient.istio.io/redirection=enabled once its traffic is handed
// to the node's ztunnel ("Automatically configured by Istio to indicate a Pod was successfully
// enrolled in ambient mode", istio.io/api's annotation reference), "pending" while redirection is
// set up but no ztunnel on the node has taken the pod, and removes the annotation when the pod
// leaves ambient mode (istio.io/istio cni/pkg/util: AnnotateEnrolledPod,
// AnnotatePartiallyEnrolledPod, AnnotateUnenrollPod). istiod's ambient index reads it to list a
// workload with the HBONE tunnel; the operator's ladder waits for it.
//
// Which pods are enrolled is not re-implemented: it is Istio's own code
// (cni/pkg/util.CompiledEnablementSelectors.Matches) with the enablement selectors and excluded
// namespaces of the cni chart this project embeds, read from the chart's values.yaml. The
// simulator adds only the act: it writes the annotation as the node agent would, given which
// nodes run a Ready ztunnel pod.
//
// It is a simulator: it moves no packet, so nothing it shows proves that ztunnel carries,
// encrypts or refuses traffic.
package ambientsim

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"istio.io/api/annotation"
	"istio.io/istio/cni/pkg/util"
	"istio.io/istio/manifests"
	"istio.io/istio/pkg/config/constants"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ZtunnelLabel selects ztunnel's pods (app=ztunnel, as the ztunnel chart labels them and the
// node agent finds them: cni/pkg/util.IsZtunnelPod).
const ZtunnelLabel = "ztunnel"

// chartValues is where the embedded cni chart keeps its defaults.
const chartValues = "charts/istio-cni/values.yaml"

// Rules are what the node agent enrolls: the cni chart's defaults.
type Rules struct {
	selectors *util.CompiledEnablementSelectors
	excluded  []string
}

// DefaultRules reads the enablement selectors and excluded namespaces of the embedded cni chart
// (its values.yaml, under _internal_defaults_do_not_set) and compiles them with Istio's code.
func DefaultRules() (Rules, error) {
	raw, err := manifests.BuiltinOrDir("").Open(chartValues)
	if err != nil {
		return Rules{}, fmt.Errorf("reading the cni chart's values: %w", err)
	}
	defer raw.Close()
	var values struct {
		Defaults struct {
			ExcludeNamespaces []string `json:"excludeNamespaces"`
			Ambient           struct {
				EnablementSelectors []util.EnablementSelector `json:"enablementSelectors"`
			} `json:"ambient"`
		} `json:"_internal_defaults_do_not_set"`
	}
	if err := yaml.NewYAMLOrJSONDecoder(raw, 4096).Decode(&values); err != nil {
		return Rules{}, fmt.Errorf("decoding the cni chart's values: %w", err)
	}
	cni := values.Defaults
	if len(cni.Ambient.EnablementSelectors) == 0 {
		return Rules{}, fmt.Errorf("the cni chart's values have no ambient.enablementSelectors")
	}
	sel, err := util.NewCompiledEnablementSelectors(cni.Ambient.EnablementSelectors)
	if err != nil {
		return Rules{}, err
	}
	return Rules{selectors: sel, excluded: cni.ExcludeNamespaces}, nil
}

// Redirection is the value the node agent leaves in a pod's ambient.istio.io/redirection
// annotation: enabled when it enrolls the pod and the pod's node runs a Ready ztunnel, pending
// when it enrolls it and none does, "" (no annotation) when it does not enroll it.
func (r Rules) Redirection(pod *corev1.Pod, namespaceLabels map[string]string, ztunnelReady bool) string {
	if slices.Contains(r.excluded, pod.Namespace) || !r.selectors.Matches(pod, namespaceLabels) {
		return ""
	}
	if !ztunnelReady {
		return constants.AmbientRedirectionPending
	}
	return constants.AmbientRedirectionEnabled
}

// Simulator annotates the cluster's pods as the node agents of every node would.
type Simulator struct {
	// Client reads pods and namespaces and patches pods.
	Client client.Client
	// ZtunnelNamespace is where ztunnel's pods run.
	ZtunnelNamespace string
	Rules            Rules
}

// Step brings every running pod's annotation to what the node agent of its node would write.
func (s *Simulator) Step(ctx context.Context) error {
	var nsList corev1.NamespaceList
	if err := s.Client.List(ctx, &nsList); err != nil {
		return err
	}
	nsLabels := map[string]map[string]string{}
	for _, ns := range nsList.Items {
		nsLabels[ns.Name] = ns.Labels
	}
	var pods corev1.PodList
	if err := s.Client.List(ctx, &pods); err != nil {
		return err
	}
	ready := map[string]bool{} // nodes whose ztunnel pod is Ready
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Namespace == s.ZtunnelNamespace && p.Labels["app"] == ZtunnelLabel && podReady(p) {
			ready[p.Spec.NodeName] = true
		}
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil || p.Spec.NodeName == "" || p.Status.Phase != corev1.PodRunning {
			continue
		}
		want := s.Rules.Redirection(p, nsLabels[p.Namespace], ready[p.Spec.NodeName])
		if p.Annotations[annotation.AmbientRedirection.Name] == want {
			continue
		}
		var value any = want
		if want == "" {
			value = nil // removed, as AnnotateUnenrollPod does
		}
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{annotation.AmbientRedirection.Name: value}}})
		if err := s.Client.Patch(ctx, p, client.RawPatch(types.MergePatchType, patch)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("annotating pod %s/%s: %w", p.Namespace, p.Name, err)
		}
	}
	return nil
}

// Run steps every interval until ctx is done; a failed step is tried again at the next.
func (s *Simulator) Run(ctx context.Context, interval time.Duration, logf func(string, ...any)) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if err := s.Step(ctx); err != nil && ctx.Err() == nil && logf != nil {
			logf("ambient capture simulator: %v", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
