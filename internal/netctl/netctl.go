// Package netctl wires vmd's tenant networking together (ADR 0008,
// "Wiring"): it is the controller's Networker. Attach allocates a VM's
// MAC, private IP and external IP in network.db (ipamstore); Sync derives
// the complete network.Desired from those allocations and the stored
// VMInstances' exposure specs, and converges the host with it: links and
// addresses (netlink.Host.Reconcile), the nftables ruleset (one atomic
// nft transaction) and the static DHCP leases of one server per tenant
// bridge. Release undoes a VM's host side, then frees its allocations.
//
// Everything host-facing is derived from state on every Sync, never
// patched incrementally, so a restart rebuilds exactly the same links and
// rules without duplicates, and drift (a tap someone deleted) is repaired
// by the next Sync.
package netctl

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/controller"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/network"
	"github.com/vmdhq/vmd/internal/network/dhcp"
	"github.com/vmdhq/vmd/internal/network/ipamstore"
	"github.com/vmdhq/vmd/internal/network/netlink"
	"github.com/vmdhq/vmd/internal/state"
)

// NoUplink and NoExternalPool stand in for the parts of
// network.HostConfig that may be unset. network.Plan requires an uplink name and a valid external pool, because
// a host with real exposure needs both; a host without them gets inert
// values instead:
//   - NoUplink carries the vmd- prefix, which is reserved for vmd's own
//     links, and is never created, so the egress rules naming it match
//     nothing: tenants have no egress, as the configuration says.
//   - NoExternalPool is 0.0.0.0, which no interface ever carries as a
//     /32, so the uplink sweep of netlink.Reconcile owns no address.
const NoUplink = "vmd-no-uplink"

// NoExternalPool is the inert external pool (see NoUplink).
var NoExternalPool = network.AddrRange{First: netip.IPv4Unspecified(), Last: netip.IPv4Unspecified()}

// Links converges links and addresses (netlink.Host in production).
type Links interface {
	Reconcile(ctx context.Context, d network.Desired) ([]netlink.Change, error)
}

// Firewall replaces vmd's nftables tables atomically (nft.Firewall).
type Firewall interface {
	Apply(ctx context.Context, rs network.Ruleset) error
}

// LeaseServer is one running DHCP server on one tenant bridge.
type LeaseServer interface {
	// SetLeases replaces the server's lease table atomically.
	SetLeases(leases []dhcp.Lease) error
	// Stop stops serving and releases the socket.
	Stop()
	// Running is false once the server stopped on its own (its socket
	// failed), so the next Sync starts a new one.
	Running() bool
}

// DHCPStarter starts a DHCP server on bridge answering as serverID (the
// tenant gateway). It is called after the bridge exists.
type DHCPStarter func(bridge string, serverID netip.Addr) (LeaseServer, error)

// Service is a per-bridge service other than DHCP (the DNS forwarder).
type Service interface {
	// Stop stops serving and releases the sockets.
	Stop()
	// Running is false once the service stopped on its own.
	Running() bool
}

// DNSStarter starts the DNS forwarder of one tenant bridge, listening on
// gateway:53 and serving clients in subnet. It is called after the bridge
// and its gateway address exist.
type DNSStarter func(bridge string, gateway netip.Addr, subnet netip.Prefix) (Service, error)

// Config is what a Networker needs.
type Config struct {
	// Uplink, TenantPool, ExternalPool and DNS as configured; an empty
	// Uplink or a zero ExternalPool disables external exposure.
	Host network.HostConfig
	// IPAM is the allocation store (network.db).
	IPAM *ipamstore.Store
	// Objects is vmd's object store; Sync reads every VMInstance's
	// exposure spec from it.
	Objects state.Store
	// Links, Firewall and DHCP act on the host.
	Links    Links
	Firewall Firewall
	DHCP     DHCPStarter
	// DNS starts the gateway's DNS forwarder of each tenant bridge; nil,
	// or resolvers configured in Host.DNS (guests then use those), runs
	// none.
	DNS DNSStarter
	// Log receives one line per host change.
	Log *slog.Logger
}

// Networker implements controller.Networker. Sync and Release are
// serialised: each builds the whole desired state and converges the host
// to it, and two interleaved runs could apply an older state last.
type Networker struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	servers map[string]*bridgeServer // by bridge name
}

// bridgeServer is a running DHCP server, the DNS forwarder beside it (nil
// when none runs) and the gateway both answer as.
type bridgeServer struct {
	srv     LeaseServer
	dns     Service
	gateway netip.Addr
}

// stop stops the bridge's DHCP server and DNS forwarder.
func (s *bridgeServer) stop() {
	s.srv.Stop()
	if s.dns != nil {
		s.dns.Stop()
	}
}

var _ controller.Networker = (*Networker)(nil)

// New returns a Networker. It does not touch the host; call Start.
func New(cfg Config) (*Networker, error) {
	if cfg.IPAM == nil || cfg.Objects == nil || cfg.Links == nil || cfg.Firewall == nil || cfg.DHCP == nil {
		return nil, errors.New("creating networker: ipam, objects, links, firewall and dhcp are required")
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	return &Networker{cfg: cfg, log: log, servers: map[string]*bridgeServer{}}, nil
}

// ExternalEnabled reports whether this host can give external IPs.
func (n *Networker) ExternalEnabled() bool {
	return n.cfg.Host.Uplink != "" && n.cfg.Host.ExternalPool.Validate() == nil
}

// externalRefusal says why an external IP cannot be given, "" when it can.
func (n *Networker) externalRefusal() string {
	switch {
	case n.cfg.Host.Uplink == "":
		return "external exposure is disabled on this host: no uplink configured (network.uplink, --uplink)"
	case n.cfg.Host.ExternalPool.Validate() != nil:
		return "external exposure is disabled on this host: no external pool configured (network.externalPool, --external-pool)"
	}
	return ""
}

// Attach implements controller.Networker.
func (n *Networker) Attach(ctx context.Context, vm *v1alpha1.VMInstance) (controller.NetworkAttachment, error) {
	meta := &vm.ObjectMeta
	if meta.UID == "" {
		return controller.NetworkAttachment{}, fmt.Errorf("attaching %s/%s: object has no uid: %w", meta.Namespace, meta.Name, errdefs.ErrInvalid)
	}
	ep, err := n.cfg.IPAM.AllocateEndpoint(ctx, ipamstore.VM{UID: meta.UID, Namespace: meta.Namespace, Name: meta.Name})
	if err != nil {
		return controller.NetworkAttachment{}, fmt.Errorf("allocating endpoint: %w", err)
	}
	att := controller.NetworkAttachment{
		Tap:     network.TapName(meta.Namespace, meta.Name),
		MAC:     ep.MAC.String(),
		IP:      ep.IP,
		Subnet:  ep.Subnet,
		Gateway: network.GatewayFor(ep.Subnet),
		DNS:     n.dns(ep.Subnet),
		Addresses: []v1alpha1.Address{
			{Type: controller.AddressTypePrivate, Address: ep.IP.String(), MAC: ep.MAC.String()},
		},
	}
	ext := ep.External
	switch wants := vm.Spec.External != nil && *vm.Spec.External; {
	case wants && n.ExternalEnabled():
		if ext, err = n.cfg.IPAM.AllocateExternal(ctx, meta.UID); err != nil {
			if !errors.Is(err, network.ErrPoolExhausted) {
				return controller.NetworkAttachment{}, fmt.Errorf("allocating external address: %w", err)
			}
			att.ExternalUnavailable = "no free address in the external pool " + n.cfg.Host.ExternalPool.String()
			ext = netip.Addr{}
		}
	case wants:
		att.ExternalUnavailable = n.externalRefusal()
		// An address allocated under an earlier configuration is kept
		// (stable for the VM's life) but not exposed while disabled.
		ext = netip.Addr{}
	case ext.IsValid():
		// No longer exposed: the address goes back to the pool. Sync
		// (called next) removes its rules and its /32 from the uplink.
		if err := n.cfg.IPAM.ReleaseExternal(ctx, meta.UID); err != nil {
			return controller.NetworkAttachment{}, err
		}
		ext = netip.Addr{}
	}
	if ext.IsValid() {
		att.Addresses = append(att.Addresses, v1alpha1.Address{Type: controller.AddressTypeExternal, Address: ext.String()})
	}
	return att, nil
}

// dns is the resolver list guests of subnet get.
func (n *Networker) dns(subnet netip.Prefix) []netip.Addr {
	if len(n.cfg.Host.DNS) > 0 {
		return slices.Clone(n.cfg.Host.DNS)
	}
	return []netip.Addr{network.GatewayFor(subnet)}
}

// Start converges the host at daemon start: allocations whose VMInstance
// no longer exists (a crash between deleting the domain and releasing)
// are released, and links, rules and leases are rebuilt from state.
func (n *Networker) Start(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	snap, err := n.cfg.IPAM.Snapshot(ctx)
	if err != nil {
		return err
	}
	vms, err := n.instances(ctx)
	if err != nil {
		return err
	}
	var orphans []string
	for _, ep := range snap.Endpoints {
		if _, ok := vms[ep.UID]; !ok {
			orphans = append(orphans, ep.UID)
		}
	}
	// Host first (without the orphans), then the allocations: an address
	// is free only once nothing on the host uses it.
	if err := n.syncLocked(ctx, ""); err != nil {
		return err
	}
	for _, uid := range orphans {
		n.log.Info("releasing network of a deleted instance", "uid", uid)
		if err := n.cfg.IPAM.Release(ctx, uid); err != nil {
			return err
		}
	}
	return nil
}

// Sync implements controller.Networker.
func (n *Networker) Sync(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.syncLocked(ctx, "")
}

// Release implements controller.Networker: the host is synced without the
// VM, then its allocations are freed (ipamstore.Release requires the host
// resources to be gone first).
func (n *Networker) Release(ctx context.Context, uid string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.syncLocked(ctx, uid); err != nil {
		return err
	}
	return n.cfg.IPAM.Release(ctx, uid)
}

// Close stops every DHCP server.
func (n *Networker) Close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for name, s := range n.servers {
		s.stop()
		delete(n.servers, name)
	}
}

// instances indexes the stored VMInstances by UID.
func (n *Networker) instances(ctx context.Context) (map[string]*v1alpha1.VMInstance, error) {
	objs, _, err := n.cfg.Objects.List(ctx, v1alpha1.KindVMInstance, "")
	if err != nil {
		return nil, fmt.Errorf("listing vminstances: %w", err)
	}
	out := make(map[string]*v1alpha1.VMInstance, len(objs))
	for _, o := range objs {
		vm := o.(*v1alpha1.VMInstance)
		out[vm.ObjectMeta.UID] = vm
	}
	return out, nil
}

// syncLocked converges the host to the current state, leaving out the
// endpoint of skipUID (being released). Links go first (the ruleset names
// taps and bridges, and DHCP sockets bind to bridges), then the ruleset in
// one transaction, then the leases. Every step runs even when an earlier
// one failed, so one broken link cannot leave every tenant without rules.
func (n *Networker) syncLocked(ctx context.Context, skipUID string) error {
	snap, err := n.cfg.IPAM.Snapshot(ctx)
	if err != nil {
		return err
	}
	vms, err := n.instances(ctx)
	if err != nil {
		return err
	}
	d, skipped := BuildDesired(n.cfg.Host, snap, vms, skipUID)
	for _, ep := range skipped {
		n.log.Debug("allocation without instance left out of the host network", "uid", ep.UID, "namespace", ep.Namespace, "name", ep.Name)
	}
	rs, err := network.Plan(d)
	if err != nil {
		return fmt.Errorf("planning host network: %w", err)
	}
	var errs []error
	changes, err := n.cfg.Links.Reconcile(ctx, d)
	for _, c := range changes {
		n.log.Info("host network changed", "change", c.String())
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("reconciling links: %w", err))
	}
	if err := n.cfg.Firewall.Apply(ctx, rs); err != nil {
		errs = append(errs, fmt.Errorf("applying firewall: %w", err))
	}
	if err := n.syncDHCP(d, recreatedBridges(changes)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// recreatedBridges are the bridges Reconcile created in this run. A DHCP
// socket is bound to the interface index of the bridge it was opened on,
// so a recreated bridge needs a new server.
func recreatedBridges(changes []netlink.Change) map[string]bool {
	out := map[string]bool{}
	for _, c := range changes {
		if c.Action == netlink.ActionCreate && c.Kind == netlink.KindBridge {
			out[c.Link] = true
		}
	}
	return out
}

// syncDHCP runs one DHCP server per desired tenant bridge with exactly its
// endpoints' leases, and the DNS forwarder beside it, and stops the
// servers of bridges that went away. A forwarder that cannot start is
// logged and retried at the next sync rather than failing it: guests
// without DNS still run, guests without DHCP would not get an address.
func (n *Networker) syncDHCP(d network.Desired, recreated map[string]bool) error {
	leases := Leases(d)
	var errs []error
	want := map[string]bool{}
	for _, t := range d.Tenants {
		want[t.Bridge] = true
		s := n.servers[t.Bridge]
		if s != nil && (recreated[t.Bridge] || s.gateway != t.Gateway || !s.srv.Running()) {
			s.stop()
			delete(n.servers, t.Bridge)
			s = nil
		}
		if s == nil {
			srv, err := n.cfg.DHCP(t.Bridge, t.Gateway)
			if err != nil {
				errs = append(errs, fmt.Errorf("starting dhcp on %s: %w", t.Bridge, err))
				continue
			}
			s = &bridgeServer{srv: srv, gateway: t.Gateway}
			n.servers[t.Bridge] = s
		}
		if err := s.srv.SetLeases(leases[t.Bridge]); err != nil {
			errs = append(errs, fmt.Errorf("setting dhcp leases on %s: %w", t.Bridge, err))
		}
		n.syncDNS(s, t)
	}
	for name, s := range n.servers {
		if !want[name] {
			s.stop()
			delete(n.servers, name)
		}
	}
	return errors.Join(errs...)
}

// syncDNS (re)starts the DNS forwarder of tenant t's bridge when guests
// are told to use the gateway as resolver.
func (n *Networker) syncDNS(s *bridgeServer, t network.Tenant) {
	if n.cfg.DNS == nil || len(n.cfg.Host.DNS) > 0 {
		return
	}
	if s.dns != nil && s.dns.Running() {
		return
	}
	if s.dns != nil {
		s.dns.Stop()
		s.dns = nil
	}
	dns, err := n.cfg.DNS(t.Bridge, t.Gateway, t.Subnet)
	if err != nil {
		n.log.Warn("dns forwarder not started; retried at the next sync", "bridge", t.Bridge, "err", err)
		return
	}
	s.dns = dns
}

// BuildDesired is the pure heart of Sync: the complete desired host
// network from the allocations and the stored instances (by UID).
//
//   - Every allocated endpoint whose instance exists (deleting ones
//     included: their domain may still be shutting down) gets its tap and
//     anti-spoofing entries; endpoints without an instance, and skipUID,
//     are left out and returned as skipped.
//   - A tenant exists for every namespace with at least one endpoint.
//   - An endpoint is exposed when its instance asks for external, the host
//     can expose (uplink and pool set) and an external IP is allocated
//     inside the configured pool; method, ports and ICMP come from the
//     spec with the API defaults for unset fields.
//   - An unset uplink or external pool is replaced by NoUplink /
//     NoExternalPool (see there).
func BuildDesired(host network.HostConfig, snap ipamstore.Snapshot, vms map[string]*v1alpha1.VMInstance, skipUID string) (network.Desired, []ipamstore.Endpoint) {
	exposing := host.Uplink != "" && host.ExternalPool.Validate() == nil
	if host.Uplink == "" {
		host.Uplink = NoUplink
	}
	if host.ExternalPool.Validate() != nil {
		host.ExternalPool = NoExternalPool
	}
	d := network.Desired{Host: host}
	var skipped []ipamstore.Endpoint
	namespaces := map[string]bool{}
	for _, ep := range snap.Endpoints {
		vm, ok := vms[ep.UID]
		if !ok || ep.UID == skipUID {
			skipped = append(skipped, ep)
			continue
		}
		e := network.Endpoint{
			Namespace: ep.Namespace, Name: ep.Name, MAC: ep.MAC, IP: ep.IP,
			Tap: network.TapName(ep.Namespace, ep.Name),
		}
		if exposing && ep.External.IsValid() && host.ExternalPool.Contains(ep.External) &&
			vm.Spec.External != nil && *vm.Spec.External {
			e.External = exposure(ep.External, vm.Spec)
		}
		d.Endpoints = append(d.Endpoints, e)
		namespaces[ep.Namespace] = true
	}
	for ns := range namespaces {
		subnet, ok := snap.Subnets[ns]
		if !ok {
			// ipamstore allocates the subnet with the first endpoint; a
			// missing one is a corrupt file, which Plan reports.
			continue
		}
		d.Tenants = append(d.Tenants, network.Tenant{
			Namespace: ns, Bridge: network.BridgeName(ns), Subnet: subnet, Gateway: network.GatewayFor(subnet),
		})
	}
	slices.SortFunc(d.Tenants, func(a, b network.Tenant) int { return cmp.Compare(a.Namespace, b.Namespace) })
	return d, skipped
}

// exposure is the spec's exposure of ip, with the API defaults applied to
// unset fields (stored objects are defaulted; this keeps BuildDesired
// total for any input).
func exposure(ip netip.Addr, spec v1alpha1.VMInstanceSpec) *network.Exposure {
	x := &network.Exposure{IP: ip, Method: spec.ExternalMethod, Ports: slices.Clone(spec.ExternalPorts), AllowICMP: true}
	if x.Method == "" {
		x.Method = v1alpha1.DefaultExternalMethod
	}
	if spec.ExternalPorts == nil {
		x.Ports = v1alpha1.DefaultExternalPorts()
	}
	if spec.ExternalAllowICMP != nil {
		x.AllowICMP = *spec.ExternalAllowICMP
	}
	return x
}

// Leases are the DHCP leases of d by bridge: every endpoint gets its
// private address with the tenant's prefix, the gateway as router, the
// configured DNS (or the gateway) and its name as hostname, the same facts
// its cloud-init network-config states.
func Leases(d network.Desired) map[string][]dhcp.Lease {
	tenants := map[string]network.Tenant{}
	for _, t := range d.Tenants {
		tenants[t.Namespace] = t
	}
	out := map[string][]dhcp.Lease{}
	for _, e := range d.Endpoints {
		t, ok := tenants[e.Namespace]
		if !ok {
			continue
		}
		dns := slices.Clone(d.Host.DNS)
		if len(dns) == 0 {
			dns = []netip.Addr{t.Gateway}
		}
		out[t.Bridge] = append(out[t.Bridge], dhcp.Lease{
			MAC: e.MAC, Addr: netip.PrefixFrom(e.IP, t.Subnet.Bits()), Router: t.Gateway,
			DNS: dns, Hostname: e.Name,
		})
	}
	return out
}
