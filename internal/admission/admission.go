// Package admission asks the API server whether the pods a ladder step would restart will be
// admitted, before the step restarts anything: each workload's pod, as its controller will create
// it and the step's revision will inject it, is created with server-side dry run. The API server
// runs its whole admission chain on it (Istio's injector, Pod Security, ResourceQuota,
// LimitRanger, policy engines) and stores nothing, so its answer is the one the restart would
// get, without the restart.
package admission

import (
	"cmp"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/apierr"
	"github.com/meshwright/meshwright/internal/ladder"
	"github.com/meshwright/meshwright/internal/revision"
	"github.com/meshwright/meshwright/internal/stages"
)

// Checker creates the dry-run pods. Its verdicts are kept for ladder.AdmissionRecheck per
// workload version, namespace labels and revision, so a namespace held by another gate does not
// cost a webhook call per workload on every pass.
type Checker struct {
	// Reader reads whole workloads (the ladder's cache keeps only their metadata): the API
	// server, uncached.
	Reader client.Reader
	// Writer creates the pods, with server-side dry run only.
	Writer client.Writer
	// Clock tells the memo's time; nil is the real clock.
	Clock clock.PassiveClock
	// Timeout bounds one namespace's check (a slow admission webhook is called once per pod);
	// zero is DefaultTimeout. Running out is reported as an error: the climb waits.
	Timeout time.Duration

	mu   sync.Mutex
	memo map[string]verdict
}

// DefaultTimeout bounds one namespace's check, so that an admission webhook that does not answer
// holds that namespace, not the whole pass.
const DefaultTimeout = 20 * time.Second

// verdict is one workload's outcome, and when it was had.
type verdict struct {
	at      time.Time
	refused string
	// sidecars is the proxy's shape in the pod the API server gave back (ladder.Sidecars*),
	// "" when it came back without one.
	sidecars string
}

// Workload names one workload a step would restart.
type Workload struct {
	Kind, Name string
	UID        types.UID
}

// Check creates, with server-side dry run, the pod of each workload of namespace (whose labels
// are nsLabels) as the revision rev would inject it, and returns the refusals. A workload gone
// since the cache saw it is skipped; an error that is not a refusal (the API server or a
// webhook unreachable) is returned, and the caller waits.
func (c *Checker) Check(ctx context.Context, namespace string, nsLabels map[string]string, workloads []Workload, rev string) (ladder.Admission, error) {
	out := ladder.Admission{Revision: rev}
	now := c.now()
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(c.Timeout, DefaultTimeout))
	defer cancel()
	for _, w := range workloads {
		obj, err := c.read(ctx, namespace, w)
		if apierr.Absent(err) {
			continue
		}
		if err != nil {
			return out, err
		}
		key := fmt.Sprintf("%s/%s/%s@%s/%d rev=%s ns=%v", namespace, w.Kind, w.Name, obj.GetUID(), obj.GetGeneration(), rev, nsLabels)
		v, ok := c.remembered(key, now)
		if !ok {
			var err error
			if v, err = c.create(ctx, obj, rev); err != nil {
				return out, fmt.Errorf("creating the pod of %s/%s in %s with server-side dry run: %w", w.Kind, w.Name, namespace, err)
			}
			v.at = now
			c.remember(key, v, now)
		}
		// The Jobs' own pods tell whether their proxy stops with them (a template may ask for
		// native sidecars with sidecar.istio.io/nativeSidecar); one classic makes it classic.
		if (w.Kind == "CronJob" || w.Kind == "Job") && v.sidecars != "" && out.Sidecars != meshv1.SidecarsClassic {
			out.Sidecars = v.sidecars
		}
		if v.refused != "" {
			out.Refused = append(out.Refused, ladder.AdmissionRefusal{Workload: w.Kind + "/" + w.Name, Message: v.refused})
		}
	}
	sort.Slice(out.Refused, func(i, j int) bool { return out.Refused[i].Workload < out.Refused[j].Workload })
	return out, nil
}

// read gets the whole workload from the API server.
func (c *Checker) read(ctx context.Context, namespace string, w Workload) (client.Object, error) {
	var obj client.Object
	switch w.Kind {
	case "Deployment":
		obj = &appsv1.Deployment{}
	case "StatefulSet":
		obj = &appsv1.StatefulSet{}
	case "DaemonSet":
		obj = &appsv1.DaemonSet{}
	case "CronJob":
		obj = &batchv1.CronJob{}
	case "Job":
		obj = &batchv1.Job{}
	default:
		return nil, fmt.Errorf("no pod template known for kind %s", w.Kind)
	}
	if err := c.Reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: w.Name}, obj); err != nil {
		return nil, err
	}
	if w.UID != "" && obj.GetUID() != w.UID {
		return nil, fmt.Errorf("%s/%s in %s was replaced since it was listed", w.Kind, w.Name, namespace)
	}
	return obj, nil
}

// create makes the dry-run request; a refusal comes back as the API server's message, an
// admitted pod with the shape the injector gave its proxy.
func (c *Checker) create(ctx context.Context, obj client.Object, rev string) (verdict, error) {
	pod, err := PodFor(obj, rev)
	if err != nil {
		return verdict{}, err
	}
	err = c.Writer.Create(ctx, pod, client.DryRunAll)
	switch {
	case err == nil:
		return verdict{sidecars: revision.SidecarShape(pod)}, nil
	case apierrors.IsForbidden(err) && strings.Contains(err.Error(), "cannot create resource"):
		// The operator's own RBAC, not the pod's admission: nothing about the pod is known.
		return verdict{}, err
	case apierr.Refused(err):
		return verdict{refused: err.Error()}, nil
	}
	return verdict{}, err
}

// PodFor is the pod a workload's controller creates from its template (a CronJob's through its
// Jobs), as a step that puts
// revision rev on its namespace restarts it: the template's labels, annotations and spec, the
// revision's label (so that Istio's injector picks it up before the namespace carries the
// label), volumes for a StatefulSet's claim templates, and a name of its own (a dry-run create
// stores nothing, so it collides only with a real pod of that name, which is reported). It is created with
// server-side dry run only, never stored.
func PodFor(obj client.Object, rev string) (*corev1.Pod, error) {
	var tmpl corev1.PodTemplateSpec
	var claims []corev1.PersistentVolumeClaim
	switch o := obj.(type) {
	case *appsv1.Deployment:
		tmpl = o.Spec.Template
	case *appsv1.DaemonSet:
		tmpl = o.Spec.Template
	case *appsv1.StatefulSet:
		tmpl, claims = o.Spec.Template, o.Spec.VolumeClaimTemplates
	case *batchv1.CronJob:
		tmpl = o.Spec.JobTemplate.Spec.Template
	case *batchv1.Job:
		tmpl = o.Spec.Template
	default:
		return nil, fmt.Errorf("no pod template known for %T", obj)
	}
	tmpl = *tmpl.DeepCopy()
	labels := map[string]string{}
	for k, v := range tmpl.Labels {
		labels[k] = v
	}
	labels[revision.Label] = rev
	labels[meshv1.LabelManagedBy] = meshv1.ManagedByValue
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			// A fixed name, not a generated one: the API server quotes it in a refusal, which
			// goes into status, and a name that changed on every check would rewrite it.
			Name:        obj.GetName() + "-meshwright-admission",
			Namespace:   obj.GetNamespace(),
			Labels:      labels,
			Annotations: tmpl.Annotations,
		},
		Spec: tmpl.Spec,
	}
	// The StatefulSet controller adds a volume per claim template, named after it.
	for _, pvc := range claims {
		if hasVolume(pod.Spec.Volumes, pvc.Name) {
			continue
		}
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: pvc.Name, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: pvc.Name + "-" + obj.GetName() + "-0"}}})
	}
	return pod, nil
}

func hasVolume(volumes []corev1.Volume, name string) bool {
	for _, v := range volumes {
		if v.Name == name {
			return true
		}
	}
	return false
}

func (c *Checker) remembered(key string, now time.Time) (verdict, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.memo[key]
	return v, ok && now.Sub(v.at) < ladder.AdmissionRecheck
}

// remember keeps a verdict and forgets the expired ones, so the memo holds at most what a
// recheck period saw.
func (c *Checker) remember(key string, v verdict, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.memo == nil {
		c.memo = map[string]verdict{}
	}
	for k, old := range c.memo {
		if now.Sub(old.at) >= ladder.AdmissionRecheck {
			delete(c.memo, k)
		}
	}
	c.memo[key] = v
}

func (c *Checker) now() time.Time { return stages.Now(c.Clock) }
