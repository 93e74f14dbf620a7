// Package netlink realises vmd's tenant links on the host: one Linux
// bridge per tenant carrying the gateway address, one persistent tap per VM
// NIC enslaved to it, the external IPs as /32 addresses on the uplink, and
// IPv4 forwarding. It is the only package that imports
// github.com/vishvananda/netlink; it knows links and addresses, not VMs.
//
// Ownership: vmd owns exactly the bridges named network.BridgePrefix+...
// and the taps named network.TapPrefix+..., and on the uplink the /32
// addresses inside the configured external pool. Reconcile creates,
// repairs and deletes only those; every other link and address on the
// host is never modified, whatever its state.
//
// Every method works in one network namespace, the caller's by default
// or the one given with WithNetNS, so integration tests run against
// throwaway namespaces.
package netlink

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"

	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/network"
)

// Link kinds as the kernel names them (IFLA_INFO_KIND).
const (
	KindBridge = "bridge"
	KindTap    = "tuntap"
)

// Host manages vmd's links in one network namespace. Methods are
// serialised: they read, then write, and two interleaved calls could
// otherwise each decide to create the same link.
type Host struct {
	// reconcileMu serialises Reconcile runs; mu guards each read-then-write
	// step and is taken inside it.
	reconcileMu sync.Mutex
	mu          sync.Mutex
	// ns is the target namespace; netns.None() means "the caller's".
	ns netns.NsHandle
	h  *vnl.Handle
}

// Option configures a Host.
type Option func(*Host)

// WithNetNS targets the network namespace behind ns (an open
// /run/netns/NAME, e.g. from netns.GetFromName) instead of the caller's.
// The handle must stay open for the Host's lifetime; Close does not close it.
func WithNetNS(ns netns.NsHandle) Option { return func(h *Host) { h.ns = ns } }

// New opens a netlink handle to the target namespace.
func New(opts ...Option) (*Host, error) {
	host := &Host{ns: netns.None()}
	for _, o := range opts {
		o(host)
	}
	var err error
	if host.ns.IsOpen() {
		host.h, err = vnl.NewHandleAt(host.ns)
	} else {
		host.h, err = vnl.NewHandle()
	}
	if err != nil {
		return nil, fmt.Errorf("opening netlink handle: %w", err)
	}
	return host, nil
}

// Close releases the netlink sockets.
func (h *Host) Close() { h.h.Close() }

// Link is a vmd-owned link as found on the host.
type Link struct {
	Name string
	// Kind is KindBridge or KindTap.
	Kind string
	// Master is the bridge a tap is enslaved to ("" if none or a bridge).
	Master string
	Up     bool
	// Addrs are the link's IPv4 addresses.
	Addrs []netip.Prefix
}

// Do runs fn on an OS thread inside the Host's network namespace (or
// directly when the Host uses the caller's). Sockets and tap devices are
// created in the namespace of the thread that creates them, so the
// composition root uses this to open the DHCP sockets next to the bridges.
func (h *Host) Do(fn func() error) error {
	if !h.ns.IsOpen() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		// The goroutine ends with the thread still locked, so the runtime
		// discards the thread instead of reusing one in the wrong namespace.
		runtime.LockOSThread()
		if err := unix.Setns(int(h.ns), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering network namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// EnableForwarding sets net.ipv4.ip_forward=1 in the namespace: tenant
// egress and external DNAT are routed between bridges and the uplink. It
// writes only when the value differs, because writing the legacy knob
// also resets every interface's forwarding setting.
func (h *Host) EnableForwarding(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("enabling ip forwarding: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := h.setSysctl("/proc/sys/net/ipv4/ip_forward", "1")
	if err != nil {
		return fmt.Errorf("enabling ip forwarding: %w", err)
	}
	return nil
}

// setSysctl writes value to a /proc/sys file of the target namespace
// unless it already holds it, and reports whether it wrote.
func (h *Host) setSysctl(path, value string) (bool, error) {
	changed := false
	err := h.Do(func() error {
		cur, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(cur)) == value {
			return nil
		}
		changed = true
		return os.WriteFile(path, []byte(value), 0o644)
	})
	return changed, err
}

// EnsureBridge makes name a bridge that is up, has a fixed MAC (see
// bridgeMAC), carries exactly the IPv4 address gateway (e.g.
// 10.100.0.1/24) and has IPv6 disabled. It is idempotent and repairs
// drift: a missing address is added, stray IPv4 addresses are removed.
func (h *Host) EnsureBridge(ctx context.Context, name string, gateway netip.Prefix) error {
	_, err := h.ensureBridge(ctx, name, gateway, nil)
	return err
}

func (h *Host) ensureBridge(ctx context.Context, name string, gateway netip.Prefix, rec *recorder) (*vnl.Bridge, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ensuring bridge %s: %w", name, err)
	}
	if !strings.HasPrefix(name, network.BridgePrefix) || len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("ensuring bridge %s: name must start with %q and be at most 15 bytes: %w", name, network.BridgePrefix, errdefs.ErrInvalid)
	}
	if !gateway.IsValid() || !gateway.Addr().Is4() {
		return nil, fmt.Errorf("ensuring bridge %s: gateway %s is not an IPv4 prefix: %w", name, gateway, errdefs.ErrInvalid)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	link, err := h.h.LinkByName(name)
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("ensuring bridge %s: looking up link: %w", name, err)
	}
	if link != nil && link.Type() != KindBridge {
		// Not vmd's (see owned): refuse rather than delete someone's link.
		return nil, fmt.Errorf("ensuring bridge %s: a %s link has that name: %w", name, link.Type(), errdefs.ErrConflict)
	}
	mac := bridgeMAC(name)
	if link == nil {
		br := &vnl.Bridge{LinkAttrs: vnl.LinkAttrs{Name: name, HardwareAddr: mac}}
		if err := h.h.LinkAdd(br); err != nil {
			return nil, fmt.Errorf("ensuring bridge %s: creating: %w", name, err)
		}
		rec.add(ActionCreate, KindBridge, name, "")
		if link, err = h.h.LinkByName(name); err != nil {
			return nil, fmt.Errorf("ensuring bridge %s: looking up new link: %w", name, err)
		}
	}
	br, ok := link.(*vnl.Bridge)
	if !ok {
		return nil, fmt.Errorf("ensuring bridge %s: kernel reports kind %s", name, link.Type())
	}
	// IPv6 off before the link goes up, so it never gets a link-local
	// address: tenants are IPv4-only and the bridge table drops IPv6.
	if _, err := h.setSysctl("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("ensuring bridge %s: disabling ipv6: %w", name, err)
	}
	if !slices.Equal(br.HardwareAddr, mac) {
		if err := h.h.LinkSetHardwareAddr(br, mac); err != nil {
			return nil, fmt.Errorf("ensuring bridge %s: setting mac: %w", name, err)
		}
		rec.add(ActionUpdate, KindBridge, name, "mac "+mac.String())
	}
	if br.Flags&net.FlagUp == 0 {
		if err := h.h.LinkSetUp(br); err != nil {
			return nil, fmt.Errorf("ensuring bridge %s: setting up: %w", name, err)
		}
		rec.add(ActionUpdate, KindBridge, name, "up")
	}
	if err := h.syncAddrs(br, []netip.Prefix{gateway}, func(netip.Prefix) bool { return true }, rec); err != nil {
		return nil, fmt.Errorf("ensuring bridge %s: %w", name, err)
	}
	return br, nil
}

// bridgeMAC is a bridge's fixed MAC, derived from its name. Without an
// explicit MAC a Linux bridge takes the lowest MAC of its ports, so the
// gateway's MAC would change whenever a VM starts or stops and guests
// would keep a stale ARP entry for their default route. 06: is locally
// administered unicast, like the guests' 02: (network.MACFor) but
// disjoint from it.
func bridgeMAC(name string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("vmd-bridge-mac\x00" + name))
	return net.HardwareAddr{0x06, sum[0], sum[1], sum[2], sum[3], sum[4]}
}

// EnsureTap makes name a persistent, single-queue tap (IFF_TAP, NO_PI,
// VNET_HDR) enslaved to bridge and up. libvirt attaches the VM to it
// with <interface type='ethernet'><target dev='NAME' managed='no'/>:
// single-queue because TUNSETIFF on an existing tap fails unless its
// multi-queue flag matches the opener's. The bridge must exist.
func (h *Host) EnsureTap(ctx context.Context, name, bridge string) error {
	return h.ensureTap(ctx, name, bridge, nil)
}

func (h *Host) ensureTap(ctx context.Context, name, bridge string, rec *recorder) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ensuring tap %s: %w", name, err)
	}
	if !strings.HasPrefix(name, network.TapPrefix) || len(name) >= unix.IFNAMSIZ {
		return fmt.Errorf("ensuring tap %s: name must start with %q and be at most 15 bytes: %w", name, network.TapPrefix, errdefs.ErrInvalid)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	br, err := h.h.LinkByName(bridge)
	if err != nil {
		if isNotFound(err) {
			return fmt.Errorf("ensuring tap %s: bridge %s: %w", name, bridge, errdefs.ErrNotFound)
		}
		return fmt.Errorf("ensuring tap %s: looking up bridge %s: %w", name, bridge, err)
	}
	link, err := h.h.LinkByName(name)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("ensuring tap %s: looking up link: %w", name, err)
	}
	if link != nil && link.Type() != KindTap {
		return fmt.Errorf("ensuring tap %s: a %s link has that name: %w", name, link.Type(), errdefs.ErrConflict)
	}
	if link == nil {
		tap := &vnl.Tuntap{
			LinkAttrs: vnl.LinkAttrs{Name: name},
			Mode:      vnl.TUNTAP_MODE_TAP,
			Flags:     vnl.TUNTAP_NO_PI | vnl.TUNTAP_VNET_HDR,
		}
		// The tap is created through /dev/net/tun, in the namespace of
		// the calling thread, not through the handle's socket.
		if err := h.Do(func() error { return h.h.LinkAdd(tap) }); err != nil {
			return fmt.Errorf("ensuring tap %s: creating: %w", name, err)
		}
		rec.add(ActionCreate, KindTap, name, "")
		if link, err = h.h.LinkByName(name); err != nil {
			return fmt.Errorf("ensuring tap %s: looking up new link: %w", name, err)
		}
	}
	if _, err := h.setSysctl("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("ensuring tap %s: disabling ipv6: %w", name, err)
	}
	if link.Attrs().MasterIndex != br.Attrs().Index {
		if err := h.h.LinkSetMaster(link, br); err != nil {
			return fmt.Errorf("ensuring tap %s: attaching to %s: %w", name, bridge, err)
		}
		rec.add(ActionUpdate, KindTap, name, "master "+bridge)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := h.h.LinkSetUp(link); err != nil {
			return fmt.Errorf("ensuring tap %s: setting up: %w", name, err)
		}
		rec.add(ActionUpdate, KindTap, name, "up")
	}
	return nil
}

// DeleteTap removes a vmd tap. Deleting a missing tap is not an error;
// a name without the tap prefix is refused, so a bug can never delete a
// foreign link.
func (h *Host) DeleteTap(ctx context.Context, name string) error {
	return h.deleteOwned(ctx, name, network.TapPrefix, KindTap, nil)
}

// DeleteBridge removes a vmd bridge (and with it its addresses and
// connected route). Taps still enslaved to it are released, not deleted.
// Deleting a missing bridge is not an error.
func (h *Host) DeleteBridge(ctx context.Context, name string) error {
	return h.deleteOwned(ctx, name, network.BridgePrefix, KindBridge, nil)
}

func (h *Host) deleteOwned(ctx context.Context, name, prefix, kind string, rec *recorder) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("deleting %s %s: %w", kind, name, err)
	}
	if !strings.HasPrefix(name, prefix) {
		return fmt.Errorf("deleting %s %s: not a vmd-owned name (%s...): %w", kind, name, prefix, errdefs.ErrInvalid)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	link, err := h.h.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("deleting %s %s: looking up link: %w", kind, name, err)
	}
	if link.Type() != kind {
		return fmt.Errorf("deleting %s %s: link is a %s, not vmd's: %w", kind, name, link.Type(), errdefs.ErrConflict)
	}
	if err := h.h.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("deleting %s %s: %w", kind, name, err)
	}
	rec.add(ActionDelete, kind, name, "")
	return nil
}

// EnsureAddress adds addr (an external IP as a /32) to link. The host
// then answers ARP for it on the uplink (the kernel replies for any local
// address with the default arp_ignore=0), so traffic for the external IP
// reaches the nat prerouting chain whether the pool is on the uplink's
// subnet or routed to the host. Adding an existing address is a no-op.
func (h *Host) EnsureAddress(ctx context.Context, link string, addr netip.Prefix) error {
	return h.ensureAddress(ctx, link, addr, nil)
}

func (h *Host) ensureAddress(ctx context.Context, link string, addr netip.Prefix, rec *recorder) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("adding address %s to %s: %w", addr, link, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	l, err := h.linkByName(link)
	if err != nil {
		return fmt.Errorf("adding address %s to %s: %w", addr, link, err)
	}
	have, err := h.addrs(l)
	if err != nil {
		return fmt.Errorf("adding address %s to %s: %w", addr, link, err)
	}
	if slices.Contains(have, addr) {
		return nil
	}
	if err := h.h.AddrAdd(l, toNLAddr(addr)); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("adding address %s to %s: %w", addr, link, err)
	}
	rec.add(ActionCreate, KindAddress, link, addr.String())
	return nil
}

// DeleteAddress removes addr from link. A missing address or link is not
// an error.
func (h *Host) DeleteAddress(ctx context.Context, link string, addr netip.Prefix) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("deleting address %s from %s: %w", addr, link, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	l, err := h.h.LinkByName(link)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("deleting address %s from %s: looking up link: %w", addr, link, err)
	}
	if err := h.h.AddrDel(l, toNLAddr(addr)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("deleting address %s from %s: %w", addr, link, err)
	}
	return nil
}

// List returns the vmd-owned links (bridges named network.BridgePrefix...
// and taps named network.TapPrefix...), sorted by name. The startup sweep
// compares it with the desired state.
func (h *Host) List(ctx context.Context) ([]Link, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("listing vmd links: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.list()
}

func (h *Host) list() ([]Link, error) {
	all, err := h.h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	names := make(map[int]string, len(all))
	for _, l := range all {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var out []Link
	for _, l := range all {
		if !owned(l) {
			continue
		}
		a := l.Attrs()
		addrs, err := h.addrs(l)
		if err != nil {
			return nil, fmt.Errorf("listing links: %w", err)
		}
		out = append(out, Link{
			Name: a.Name, Kind: l.Type(), Master: names[a.MasterIndex],
			Up: a.Flags&net.FlagUp != 0, Addrs: addrs,
		})
	}
	slices.SortFunc(out, func(a, b Link) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// owned reports whether l is vmd's: the name prefix AND the kind must
// match, so a foreign veth someone named "vmd-x" is still left alone.
func owned(l vnl.Link) bool {
	name := l.Attrs().Name
	return (strings.HasPrefix(name, network.BridgePrefix) && l.Type() == KindBridge) ||
		(strings.HasPrefix(name, network.TapPrefix) && l.Type() == KindTap)
}

// syncAddrs makes the IPv4 addresses of l for which mine returns true
// exactly want: missing ones are added, the others in mine's scope removed.
func (h *Host) syncAddrs(l vnl.Link, want []netip.Prefix, mine func(netip.Prefix) bool, rec *recorder) error {
	have, err := h.addrs(l)
	if err != nil {
		return err
	}
	name := l.Attrs().Name
	for _, a := range have {
		if mine(a) && !slices.Contains(want, a) {
			if err := h.h.AddrDel(l, toNLAddr(a)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("deleting address %s: %w", a, err)
			}
			rec.add(ActionDelete, KindAddress, name, a.String())
		}
	}
	for _, a := range want {
		if !slices.Contains(have, a) {
			if err := h.h.AddrAdd(l, toNLAddr(a)); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("adding address %s: %w", a, err)
			}
			rec.add(ActionCreate, KindAddress, name, a.String())
		}
	}
	return nil
}

// addrs lists l's IPv4 addresses.
func (h *Host) addrs(l vnl.Link) ([]netip.Prefix, error) {
	list, err := h.h.AddrList(l, vnl.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing addresses of %s: %w", l.Attrs().Name, err)
	}
	var out []netip.Prefix
	for _, a := range list {
		if a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok {
			continue
		}
		bits, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip, bits))
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out, nil
}

func (h *Host) linkByName(name string) (vnl.Link, error) {
	l, err := h.h.LinkByName(name)
	if isNotFound(err) {
		return nil, fmt.Errorf("link %s: %w", name, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("looking up link %s: %w", name, err)
	}
	return l, nil
}

func toNLAddr(p netip.Prefix) *vnl.Addr {
	return &vnl.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
}

// isNotFound matches netlink's "link not found" in its typed and errno
// forms.
func isNotFound(err error) bool {
	if err == nil {
		return false
	}
	var lnf vnl.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}
