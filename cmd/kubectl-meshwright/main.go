// Command kubectl-meshwright is the kubectl plugin: put it on PATH and run `kubectl meshwright
// status`, `plan` or `namespace NAME`.
package main

import (
	"os"

	"github.com/meshwright/meshwright/internal/cli"
)

func main() { os.Exit(cli.Main()) }
