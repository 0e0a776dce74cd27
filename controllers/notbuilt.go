package controllers

import (
	"context"
	"fmt"

	meshv1 "github.com/meshwright/meshwright/api/v1alpha1"
	"github.com/meshwright/meshwright/internal/stages"
)

// notBuilt stands in for a stage this version of the operator does not carry out yet. It stops
// the rollout honestly, with a reason that says so, instead of reporting Ready for work not done.
type notBuilt struct {
	name meshv1.Stage
	cond string
}

func (n notBuilt) Name() meshv1.Stage    { return n.name }
func (n notBuilt) ConditionType() string { return n.cond }
func (n notBuilt) Reconcile(context.Context, *meshv1.MeshInstallation) (stages.Result, error) {
	return stages.Result{
		State: stages.Failed, Reason: meshv1.ReasonNotImplemented,
		Message: fmt.Sprintf("This build of Meshwright does not carry out the %s stage yet; nothing past the earlier stages is installed.", n.name),
	}, nil
}
