// Command registry serves a file-based catalog over OLM's registry gRPC API, as `opm serve`
// does, but on the address it is given (127.0.0.1 in the tests) instead of every interface:
// the local cluster's CatalogSource points at it. It uses operator-registry's own cache and
// server, so OLM's catalog operator sees exactly what opm would serve.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	health "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/operator-framework/operator-registry/pkg/api"
	"github.com/operator-framework/operator-registry/pkg/cache"
	"github.com/operator-framework/operator-registry/pkg/server"
)

func main() {
	dir := flag.String("catalog", "", "the file-based catalog's directory")
	addr := flag.String("addr", "127.0.0.1:50051", "host:port to serve the registry API on")
	flag.Parse()
	if err := run(*dir, *addr); err != nil {
		fmt.Fprintln(os.Stderr, "registry:", err)
		os.Exit(1)
	}
}

func run(dir, addr string) error {
	if dir == "" {
		return fmt.Errorf("-catalog is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cacheDir, err := os.MkdirTemp("", "registry-cache-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(cacheDir)
	log := logrus.NewEntry(logrus.New())
	store, err := cache.New(cacheDir, cache.WithLog(log))
	if err != nil {
		return err
	}
	defer store.Close()
	// A catalog that does not load (bad FBC) fails here, before anything listens.
	if err := cache.LoadOrRebuild(ctx, store, os.DirFS(dir)); err != nil {
		return fmt.Errorf("loading the catalog in %s: %w", dir, err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	api.RegisterRegistryServer(srv, server.NewRegistryServer(store))
	health.RegisterHealthServer(srv, server.NewHealthServer())
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
	}()
	log.WithField("addr", lis.Addr().String()).Info("serving registry")
	return srv.Serve(lis)
}
