package netlink

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vmdhq/vmd/internal/network"
)

// Action is what Reconcile did to one object.
type Action string

// Actions recorded in a Change.
const (
	ActionCreate Action = "create"
	ActionUpdate Action = "update"
	ActionDelete Action = "delete"
)

// Change kinds besides KindBridge and KindTap.
const (
	KindAddress = "address"
	KindSysctl  = "sysctl"
)

// Change is one modification Reconcile made to the host. An empty list
// means the host already matched: callers log changes, and tests use the
// list to prove a second run is a no-op.
type Change struct {
	Action Action
	// Kind is KindBridge, KindTap, KindAddress or KindSysctl.
	Kind string
	// Link is the interface concerned ("" for a global sysctl).
	Link string
	// Detail is the address, the attribute changed or the sysctl.
	Detail string
}

// String renders "create tuntap vmt-0123456789" or "create address eth0 192.0.2.10/32".
func (c Change) String() string {
	s := string(c.Action) + " " + c.Kind
	if c.Link != "" {
		s += " " + c.Link
	}
	if c.Detail != "" {
		s += " " + c.Detail
	}
	return s
}

// recorder collects changes; a nil recorder (the single-object methods)
// records nothing.
type recorder struct{ changes []Change }

func (r *recorder) add(a Action, kind, link, detail string) {
	if r != nil {
		r.changes = append(r.changes, Change{Action: a, Kind: kind, Link: link, Detail: detail})
	}
}

// Reconcile converges the namespace's links and addresses to d:
//
//  1. net.ipv4.ip_forward=1;
//  2. every tenant's bridge exists, is up and carries exactly its gateway
//     address (gateway/subnet bits);
//  3. every endpoint's tap exists, is up and is enslaved to its tenant's
//     bridge;
//  4. vmd-owned taps, then bridges, that d does not name are deleted;
//  5. the uplink carries a /32 for every external IP in d, and no other
//     /32 inside the external pool.
//
// Nothing else is touched: links without a vmd prefix and kind, and uplink
// addresses outside the pool or wider than /32, are never modified. A
// failing step does not stop the others (one broken tap must not strand
// every other VM); all errors are returned joined, with the changes made.
// It refuses a Desired that network.Plan refuses, so links and firewall
// rules are always derived from the same validated state. Calls are
// serialised.
func (h *Host) Reconcile(ctx context.Context, d network.Desired) ([]Change, error) {
	if _, err := network.Plan(d); err != nil {
		return nil, fmt.Errorf("reconciling host links: %w", err)
	}
	h.reconcileMu.Lock()
	defer h.reconcileMu.Unlock()

	rec := &recorder{}
	var errs []error
	fail := func(err error) { errs = append(errs, err) }

	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("reconciling host links: %w", err)
	}
	h.mu.Lock()
	changed, err := h.setSysctl("/proc/sys/net/ipv4/ip_forward", "1")
	h.mu.Unlock()
	if err != nil {
		fail(fmt.Errorf("enabling ip forwarding: %w", err))
	} else if changed {
		rec.add(ActionUpdate, KindSysctl, "", "net.ipv4.ip_forward=1")
	}

	tenants := slices.Clone(d.Tenants)
	slices.SortFunc(tenants, func(a, b network.Tenant) int { return cmp.Compare(a.Bridge, b.Bridge) })
	bridgeOf := map[string]string{}
	wantLinks := map[string]bool{}
	for _, t := range tenants {
		bridgeOf[t.Namespace] = t.Bridge
		wantLinks[t.Bridge] = true
		if _, err := h.ensureBridge(ctx, t.Bridge, netip.PrefixFrom(t.Gateway, t.Subnet.Bits()), rec); err != nil {
			fail(err)
		}
	}
	eps := slices.Clone(d.Endpoints)
	slices.SortFunc(eps, func(a, b network.Endpoint) int { return cmp.Compare(a.Tap, b.Tap) })
	var external []netip.Prefix
	for _, e := range eps {
		wantLinks[e.Tap] = true
		if err := h.ensureTap(ctx, e.Tap, bridgeOf[e.Namespace], rec); err != nil {
			fail(err)
		}
		if e.External != nil {
			external = append(external, netip.PrefixFrom(e.External.IP, 32))
		}
	}

	if err := ctx.Err(); err != nil {
		return rec.changes, fmt.Errorf("reconciling host links: %w", errors.Join(append(errs, err)...))
	}
	h.mu.Lock()
	links, err := h.list()
	h.mu.Unlock()
	if err != nil {
		fail(err)
	}
	// Taps first: a bridge is only deleted once nothing vmd owns uses it.
	for _, kind := range []string{KindTap, KindBridge} {
		prefix := map[string]string{KindTap: network.TapPrefix, KindBridge: network.BridgePrefix}[kind]
		for _, l := range links {
			if l.Kind == kind && !wantLinks[l.Name] {
				if err := h.deleteOwned(ctx, l.Name, prefix, kind, rec); err != nil {
					fail(err)
				}
			}
		}
	}

	if err := h.syncUplink(ctx, d.Host, external, rec); err != nil {
		fail(err)
	}
	if len(errs) > 0 {
		return rec.changes, fmt.Errorf("reconciling host links: %w", errors.Join(errs...))
	}
	return rec.changes, nil
}

// syncUplink makes the /32 addresses inside the external pool on the
// uplink exactly want.
func (h *Host) syncUplink(ctx context.Context, hc network.HostConfig, want []netip.Prefix, rec *recorder) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("syncing external addresses on %s: %w", hc.Uplink, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	l, err := h.h.LinkByName(hc.Uplink)
	if isNotFound(err) && len(want) == 0 {
		// No uplink and nothing to put on it: nothing of vmd's can be there.
		return nil
	}
	if err != nil {
		return fmt.Errorf("syncing external addresses on %s: %w", hc.Uplink, err)
	}
	mine := func(a netip.Prefix) bool { return a.Bits() == 32 && hc.ExternalPool.Contains(a.Addr()) }
	if err := h.syncAddrs(l, want, mine, rec); err != nil {
		return fmt.Errorf("syncing external addresses on %s: %w", hc.Uplink, err)
	}
	return nil
}
