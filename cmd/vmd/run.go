package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/catalog"
	"github.com/vmdhq/vmd/internal/config"
	"github.com/vmdhq/vmd/internal/controller"
	"github.com/vmdhq/vmd/internal/hypervisor"
	"github.com/vmdhq/vmd/internal/registry"
	"github.com/vmdhq/vmd/internal/server"
	"github.com/vmdhq/vmd/internal/state"
	"github.com/vmdhq/vmd/internal/storage"
	"github.com/vmdhq/vmd/internal/version"
)

// adapters are the host-facing implementations of the controller's ports.
// Tests pass in-memory fakes; realAdapters picks what this build has.
type adapters struct {
	volumes storage.Volumes
	driver  hypervisor.Driver
}

// realAdapters returns the host adapters. Volumes and domains are not
// implemented yet: the NotImplemented adapters make every object report
// that plainly (Ready=False, reason NotImplemented) rather than pretend.
func realAdapters(*config.Config) adapters {
	return adapters{volumes: storage.NotImplemented{}, driver: hypervisor.NotImplemented{}}
}

// run wires everything and blocks until ctx ends. When ready is non-nil it
// is closed once the API socket accepts connections.
func run(ctx context.Context, cfg *config.Config, ad adapters, log *slog.Logger, ready chan<- struct{}) error {
	log.Info("starting vmd", "version", version.Version, "state_dir", cfg.StateDir, "socket", cfg.Socket,
		"libvirt_uri", cfg.LibvirtURI, "domain_type", cfg.DomainType)
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("creating state dir: %w", err)
	}
	store, err := state.Open(cfg.StatePath(), state.Options{})
	if err != nil {
		return fmt.Errorf("opening state: %w", err)
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("closing state", "err", err)
		}
	}()

	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cat := catalog.Default()
	reg := registry.New(store, cat, registry.Options{})

	ctrl := controller.New(store, controller.Options{
		Workers:      cfg.Controller.Workers,
		ResyncPeriod: cfg.Controller.ResyncPeriod.Duration,
		Logger:       log.With("component", "controller"),
		Registerer:   metrics,
	})
	ctrl.Register(v1alpha1.KindVMDisk, &controller.DiskReconciler{
		Store: store, Volumes: ad.volumes, Log: log.With("kind", "VMDisk"),
	}, controller.InstancesOfDisk(store))
	ctrl.Register(v1alpha1.KindVMInstance, &controller.InstanceReconciler{
		Store: store, Driver: ad.driver, Catalog: cat, Log: log.With("kind", "VMInstance"),
	}, controller.DisksOfInstance)

	mode, err := cfg.Mode()
	if err != nil {
		return err
	}
	gid, err := lookupGroup(cfg.SocketGroup)
	if err != nil {
		return err
	}
	l, err := server.ListenUnix(cfg.Socket, mode, gid)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Socket, err)
	}
	v := version.Get()
	srv := server.New(reg, server.Options{
		Version: server.VersionInfo{
			Version: v.Version, GitCommit: v.GitCommit, BuildDate: v.BuildDate, GoVersion: v.GoVersion,
			DomainType: cfg.DomainType, LibvirtURI: cfg.LibvirtURI,
		},
		Logger:     log.With("component", "server"),
		Registerer: metrics,
		Gatherer:   metrics,
	})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := ctrl.Run(ctx); err != nil {
			errc <- fmt.Errorf("controller: %w", err)
		}
		cancel()
	}()
	go func() {
		defer wg.Done()
		if err := srv.Serve(ctx, l); err != nil && !errors.Is(err, context.Canceled) {
			errc <- fmt.Errorf("server: %w", err)
		}
		cancel()
	}()
	log.Info("vmd ready", "socket", cfg.Socket)
	if ready != nil {
		close(ready)
	}
	<-ctx.Done()
	log.Info("shutting down")
	wg.Wait()
	close(errc)
	return errors.Join(collect(errc)...)
}

func collect(errc <-chan error) []error {
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	return errs
}

// lookupGroup resolves the socket group name (or numeric id); "" means
// leave the group alone (-1).
func lookupGroup(name string) (int, error) {
	if name == "" {
		return -1, nil
	}
	if id, err := strconv.Atoi(name); err == nil {
		return id, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("socketGroup: %w", err)
	}
	return strconv.Atoi(g.Gid)
}
