package controllers

import (
	"testing"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshscheme "github.com/meshwright/meshwright/api/scheme"
	"github.com/meshwright/meshwright/internal/testenv"
)

var (
	cfg    *rest.Config
	scheme = meshscheme.New()
	k8s    client.Client
)

func TestMain(m *testing.M) {
	testenv.Main(m, func(c *rest.Config) (err error) {
		cfg = c
		k8s, err = client.New(cfg, client.Options{Scheme: scheme})
		return err
	})
}
