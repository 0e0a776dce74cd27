package v1alpha1

import "strings"

// StageInfo describes one stage of the rollout as users see it: its name in status.stage, the
// condition that reports it, and what it delivers, for the Ready message.
// +kubebuilder:object:generate=false
type StageInfo struct {
	Name      Stage
	Condition string
	Delivers  string
}

// Stages are the rollout's stages in the order they run: the one list that the operator's stage
// engine (a test checks its stages against it), the conditions, the Ready message and the
// plugin's checklist follow.
var Stages = []StageInfo{
	{Name: StageCertificates, Condition: ConditionCertificatesReady, Delivers: "the mesh CA"},
	{Name: StageControlPlane, Condition: ConditionControlPlaneReady, Delivers: "Istio's control plane"},
	{Name: StageInjection, Condition: ConditionInjectionReady, Delivers: "the injection webhook"},
	{Name: StagePolicies, Condition: ConditionPoliciesReady, Delivers: "the mesh-wide policy"},
	{Name: StageAdoption, Condition: ConditionAdoptionReady, Delivers: "every enrolled namespace at its target level"},
}

// AllStagesReadyMessage is the Ready condition's message when every stage is Ready: what each
// stage delivers, in order.
func AllStagesReadyMessage() string {
	all := make([]string, len(Stages))
	for i, s := range Stages {
		all[i] = s.Delivers
	}
	if n := len(all); n > 1 {
		all[n-1] = "and " + all[n-1]
	}
	return "Every stage is Ready: " + strings.Join(all, ", ") + "."
}
