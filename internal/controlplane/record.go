package controlplane

import (
	"context"
	"fmt"

	"github.com/meshwright/meshwright/internal/installed"
	"github.com/meshwright/meshwright/internal/revision"
	"github.com/meshwright/meshwright/internal/stages"
)

// recordPhase writes the revision history this pass found (what status.revisions reports) when
// it differs from the one recorded. An installation whose history is still the one its status
// kept (made by an earlier operator) is not written to until something changes: an operator
// upgrade writes nothing. A record that cannot be read is written again from that history.
func (s *Stage) recordPhase(ctx context.Context, p *planePass) (stages.Result, bool, error) {
	h := revision.HistoryOf(p.revisions)
	if h.Same(p.found.History) && !p.found.Unusable {
		return stages.Result{}, false, nil
	}
	if _, err := s.Applier.Apply(ctx, installed.HistoryRecord(p.mesh, h)); err != nil {
		return stages.Result{}, true, fmt.Errorf("writing the revision history %s/%s: %w", p.in.Namespace, installed.RecordName, err)
	}
	p.found.History, p.found.Recorded, p.found.Unusable = h, true, false
	return stages.Result{}, false, nil
}
