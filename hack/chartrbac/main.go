// Command chartrbac writes the RBAC markers of the permissions that the roles of Istio's embedded
// charts grant (package chartrbac) as a Go file of package controlplane, for controller-gen to
// merge into the operator's ClusterRole. `make manifests` runs it:
//
//	go run ./hack/chartrbac > internal/controlplane/zz_generated.chartrbac.go
package main

import (
	"fmt"
	"os"

	"github.com/meshwright/meshwright/internal/chartrbac"
	"github.com/meshwright/meshwright/internal/release"
)

func main() {
	rules, err := chartrbac.Rules(release.DefaultIstioVersion)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chartrbac:", err)
		os.Exit(1)
	}
	fmt.Print(chartrbac.File(release.DefaultIstioVersion, rules))
}
