package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/catalog"
	"github.com/vmdhq/vmd/internal/config"
	"github.com/vmdhq/vmd/internal/controller"
	"github.com/vmdhq/vmd/internal/events"
	"github.com/vmdhq/vmd/internal/hypervisor"
	"github.com/vmdhq/vmd/internal/images"
	"github.com/vmdhq/vmd/internal/netctl"
	"github.com/vmdhq/vmd/internal/network"
	"github.com/vmdhq/vmd/internal/network/dnsfwd"
	"github.com/vmdhq/vmd/internal/network/ipamstore"
	"github.com/vmdhq/vmd/internal/network/netlink"
	"github.com/vmdhq/vmd/internal/network/nft"
	"github.com/vmdhq/vmd/internal/registry"
	"github.com/vmdhq/vmd/internal/server"
	"github.com/vmdhq/vmd/internal/state"
	"github.com/vmdhq/vmd/internal/storage"
	"github.com/vmdhq/vmd/internal/storage/local"
	"github.com/vmdhq/vmd/internal/storage/qemuimg"
	"github.com/vmdhq/vmd/internal/version"
)

// adapters are the host-facing implementations of the controller's and
// the server's ports. Tests pass in-memory fakes; realAdapters picks what
// this build has. Nil uploads/images make those API routes answer 501.
type adapters struct {
	volumes storage.Volumes
	uploads storage.Uploads
	images  storage.Images
	driver  hypervisor.Driver
	// network builds the tenant networking once the object store is
	// open; nil gives guests no tenant NIC (tests, interim bridge mode).
	network networkFactory
}

// networkFactory builds the Networker on the opened object store and
// returns it with its close function.
type networkFactory func(ctx context.Context, store state.Store) (*netctl.Networker, func(), error)

// realNetwork is the production networkFactory (ADR 0008, "Wiring"):
// allocations in <stateDir>/network.db, links through netlink, rules
// through nftables and one DHCP server per tenant bridge, all in vmd's
// own network namespace.
func realNetwork(cfg *config.Config, log *slog.Logger) networkFactory {
	return func(ctx context.Context, store state.Store) (*netctl.Networker, func(), error) {
		p, err := cfg.Network.ParseNetwork()
		if err != nil {
			return nil, nil, err
		}
		ipam, err := ipamstore.Open(filepath.Join(cfg.StateDir, ipamstore.DefaultFileName), ipamstore.Config{
			TenantPool: p.TenantPool, SubnetBits: p.TenantSubnetBits, ExternalPool: p.ExternalPool,
		})
		if err != nil {
			return nil, nil, fmt.Errorf("opening network allocations: %w", err)
		}
		host, err := netlink.New()
		if err != nil {
			_ = ipam.Close()
			return nil, nil, fmt.Errorf("opening netlink: %w", err)
		}
		nlog := log.With("component", "network")
		if p.Uplink == config.UplinkAuto {
			p.Uplink, err = host.DefaultRouteLink()
			switch {
			case errors.Is(err, netlink.ErrNoDefaultRoute):
				nlog.Warn("uplink auto: no IPv4 default route; guests get private networks only, without egress or external IPs")
			case err != nil:
				host.Close()
				_ = ipam.Close()
				return nil, nil, fmt.Errorf("network.uplink auto: %w", err)
			default:
				nlog.Info("uplink auto: using the interface of the default route", "uplink", p.Uplink)
			}
		}
		n, err := netctl.New(netctl.Config{
			Host: network.HostConfig{Uplink: p.Uplink, TenantPool: p.TenantPool, ExternalPool: p.ExternalPool, DNS: p.DNS},
			IPAM: ipam, Objects: store, Links: host, Firewall: nft.New(),
			DHCP: netctl.HostDHCP(ctx, host, nlog.With("component", "dhcp")),
			DNS:  dnsStarter(ctx, p, host, nlog.With("component", "dns")),
			Log:  nlog,
		})
		if err != nil {
			host.Close()
			_ = ipam.Close()
			return nil, nil, err
		}
		closeAll := func() {
			n.Close()
			host.Close()
			if err := ipam.Close(); err != nil {
				log.Error("closing network allocations", "err", err)
			}
		}
		return n, closeAll, nil
	}
}

// dnsStarter returns the gateway DNS forwarder's starter, relaying to the
// configured upstreams or else to /etc/resolv.conf's nameservers; nil
// (no forwarder) when guests are given resolvers of their own or there is
// nowhere to relay to.
func dnsStarter(ctx context.Context, p config.ParsedNetwork, ns netctl.NamespaceRunner, log *slog.Logger) netctl.DNSStarter {
	if len(p.DNS) > 0 {
		return nil
	}
	upstreams, from := p.DNSUpstreams, "network.dnsUpstreams"
	if len(upstreams) == 0 {
		from = resolvConf
		f, err := os.Open(resolvConf)
		if err == nil {
			upstreams, err = dnsfwd.ParseResolvConf(f)
			_ = f.Close()
		}
		if err != nil {
			log.Warn("no dns forwarder for guests: cannot read the host's resolvers; set network.dnsUpstreams or network.dns", "err", err)
			return nil
		}
	}
	log.Info("guests resolve through their gateway", "upstreams", upstreams, "from", from)
	return netctl.HostDNS(ctx, ns, upstreams, log)
}

// resolvConf is where the host's resolvers are read from.
const resolvConf = "/etc/resolv.conf"

// realAdapters builds the storage adapters: directory pools driven by
// qemu-img and the image fetcher for volumes, uploads and golden images.
// The driver is hypervisor.NotImplemented until main attaches the libvirt
// connection (openDriver), which may wait for libvirtd. It sweeps what a
// previous process left half-written and starts the preload of golden
// images; the returned func stops background imports.
func realAdapters(ctx context.Context, cfg *config.Config, log *slog.Logger) (adapters, func(), error) {
	// Before the pools are created under it: the state tree must be
	// traversable by qemu's user all the way down (see stateDirMode).
	if err := prepareStateDirs(cfg, log); err != nil {
		return adapters{}, nil, err
	}
	tool := &qemuimg.Runner{Log: log.With("component", "qemu-img")}
	v, err := tool.Version(ctx)
	if err != nil {
		return adapters{}, nil, fmt.Errorf("checking qemu-img: %w", err)
	}
	log.Info("qemu-img found", "version", v)
	scratch := cfg.ScratchDir()
	fetcher, err := images.NewFetcher(images.FetcherConfig{
		ScratchDir: filepath.Join(scratch, "downloads"),
		Logger:     log.With("component", "fetcher"),
	})
	if err != nil {
		return adapters{}, nil, err
	}
	classes := make(map[string]local.Class, len(cfg.StorageClasses))
	for name, c := range cfg.StorageClasses {
		classes[name] = local.Class{Path: cfg.PoolPath(name), Replicated: c.Replicated, Note: c.Note}
	}
	overrides := make(map[string]local.GoldenOverride, len(cfg.Images.Overrides))
	for name, o := range cfg.Images.Overrides {
		overrides[name] = local.GoldenOverride{URL: o.URL, SHA256: o.SHA256}
	}
	pools, err := local.New(local.Config{
		Classes: classes, CacheDir: cfg.ImageCacheDir(), ScratchDir: scratch,
		Mirror: cfg.Images.Mirror, Overrides: overrides,
		Fetcher: fetcher, Tool: tool, PartMaxAge: partMaxAge,
		Log: log.With("component", "storage"),
	})
	if err != nil {
		return adapters{}, nil, err
	}
	if err := pools.Sweep(); err != nil {
		// Leftovers are never used (their names say so); a failed sweep
		// only wastes space, so it must not keep vmd down.
		log.Warn("sweeping temporary files", "err", err)
	}
	pools.Preload(cfg.Images.Preload)
	ad := adapters{volumes: pools, uploads: pools, images: pools, driver: hypervisor.NotImplemented{}}
	if cfg.Network.TenantNetworks() {
		ad.network = realNetwork(cfg, log)
	}
	return ad, pools.Close, nil
}

// partMaxAge is how long a partial download may sit untouched before the
// start-up sweep gives up on resuming it.
const partMaxAge = 7 * 24 * time.Hour

// run wires everything and blocks until ctx ends. When ready is non-nil it
// is closed once the API socket accepts connections.
func run(ctx context.Context, cfg *config.Config, ad adapters, log *slog.Logger, ready chan<- struct{}) error {
	log.Info("starting vmd", "version", version.Version, "state_dir", cfg.StateDir, "socket", cfg.Socket,
		"libvirt_uri", cfg.LibvirtURI, "domain_type", cfg.DomainType)
	if err := prepareStateDirs(cfg, log); err != nil {
		return err
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
	// Events are best-effort and in memory (ADR 0010): what happened to an
	// object lately, for describe and `vmctl events`.
	rec := events.New(events.Options{})
	disks := &controller.DiskReconciler{
		Store: store, Volumes: ad.volumes, Log: log.With("kind", "VMDisk"), Recorder: rec,
	}
	// A volume a running VM holds is grown through the hypervisor, so the
	// guest sees the new size at once (see controller/growth.go).
	if d, ok := ad.driver.(controller.DiskDomains); ok {
		disks.Domains = d
	}
	ctrl.Register(v1alpha1.KindVMDisk, disks, controller.InstancesOfDisk(store))
	vms, err := instanceReconciler(cfg, store, ad.driver, cat, log.With("kind", "VMInstance"))
	if err != nil {
		return err
	}
	vms.Recorder = rec
	if ad.network != nil {
		nw, closeNetwork, err := ad.network(ctx, store)
		if err != nil {
			return err
		}
		defer closeNetwork()
		// Rebuild links, rules and leases from state before any instance
		// is reconciled. A failure (e.g. no CAP_NET_ADMIN) must not keep
		// the API down: every instance's Attach syncs again and reports
		// the error in its Ready condition.
		if err := nw.Start(ctx); err != nil {
			log.Error("restoring host network", "err", err)
		}
		vms.Net = nw
	}
	ctrl.Register(v1alpha1.KindVMInstance, vms, controller.DisksOfInstance)
	// Domains whose object is gone are removed before anything else runs;
	// the others are adopted by their first reconcile, untouched.
	// With a driver that connects lazily, that happens once it is ready;
	// domains are listed before objects, so an instance created meanwhile
	// is never mistaken for an orphan.
	sweep := func() {
		if err := controller.SweepOrphans(ctx, store, ad.driver, vms.InstancesDir, log.With("component", "recovery")); err != nil {
			// Leftover domains do no harm to the objects vmd manages; a
			// transient libvirt error must not keep vmd down.
			log.Warn("sweeping orphaned domains", "err", err)
		}
	}
	lazy, isLazy := ad.driver.(interface{ Ready() <-chan struct{} })
	if !isLazy {
		sweep()
	}

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
		Uploads:    ad.uploads,
		Images:     ad.images,
		Events:     rec,
		Access:     newAccess(cfg, ad.driver),
		Registerer: metrics,
		Gatherer:   metrics,
	})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(3)
	if isLazy {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-lazy.Ready():
				sweep()
			case <-ctx.Done():
			}
		}()
	}
	go func() {
		defer wg.Done()
		controller.WatchDomains(ctx, store, ad.driver.Events(), ctrl.Enqueue, log.With("component", "domain-events"))
	}()
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

// instanceReconciler configures the VMInstance reconciler from cfg.
func instanceReconciler(cfg *config.Config, store state.Store, drv hypervisor.Driver, cat v1alpha1.Catalog, log *slog.Logger) (*controller.InstanceReconciler, error) {
	r := &controller.InstanceReconciler{
		Store: store, Driver: drv, Catalog: cat, Log: log,
		DomainType:      cfg.DomainType,
		InstancesDir:    cfg.InstancesDir(),
		ShutdownTimeout: cfg.Instances.ShutdownTimeout.Duration,
	}
	if cfg.Network.Bridge != "" {
		sub, err := cfg.NetworkSubnet()
		if err != nil {
			return nil, err
		}
		r.Network = controller.InterimNetwork{Bridge: cfg.Network.Bridge, Subnet: sub}
	}
	if m := cfg.Testing.GuestReadyMarker; m != "" {
		r.GuestReadyMarkers = [][]string{controller.DefaultGuestReadyMarkers, {m}}
	}
	// prepareStateDirs made InstancesDir (0711: qemu reaches the seeds and
	// NVRAM files through it).
	return r, nil
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
