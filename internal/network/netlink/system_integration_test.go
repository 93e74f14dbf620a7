//go:build integration

package netlink

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmdhq/vmd/internal/network/nettest"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/network"
	"github.com/vmdhq/vmd/internal/network/dhcp"
	"github.com/vmdhq/vmd/internal/network/ipamstore"
)

// desiredFrom builds network.Desired from the allocation store the way
// the composition root will: one tenant per allocated subnet, one
// endpoint per allocated VM, exposure for VMs with an external IP.
func desiredFrom(host network.HostConfig, snap ipamstore.Snapshot) network.Desired {
	d := network.Desired{Host: host}
	for ns, subnet := range snap.Subnets {
		d.Tenants = append(d.Tenants, network.Tenant{Namespace: ns, Bridge: network.BridgeName(ns), Subnet: subnet, Gateway: network.GatewayFor(subnet)})
	}
	for _, e := range snap.Endpoints {
		ep := network.Endpoint{Namespace: e.Namespace, Name: e.Name, MAC: e.MAC, IP: e.IP, Tap: network.TapName(e.Namespace, e.Name)}
		if e.External.IsValid() {
			ep.External = &network.Exposure{IP: e.External, Method: v1alpha1.ExternalMethodWholeIP}
		}
		d.Endpoints = append(d.Endpoints, ep)
	}
	return d
}

// TestAllocateReconcileServe ties the pieces together in a throwaway
// namespace: allocations from ipamstore become links via Reconcile, the
// DHCP server on the tenant bridge hands a client (a veth standing in for
// the guest's tap) exactly its allocated address, and releasing the VM
// removes its tap.
func TestAllocateReconcileServe(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("busybox"); err != nil {
		t.Skipf("needs busybox udhcpc: %v", err)
	}
	h, hostNS := newHost(t)
	ctx := t.Context()
	nettest.InNetns(t, hostNS, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up0-peer")
	nettest.InNetns(t, hostNS, "ip", "link", "set", "up0", "up")

	hc := network.HostConfig{
		Uplink:       "up0",
		TenantPool:   netip.MustParsePrefix("10.100.0.0/16"),
		ExternalPool: network.AddrRange{First: netip.MustParseAddr("192.0.2.10"), Last: netip.MustParseAddr("192.0.2.20")},
	}
	store, err := ipamstore.Open(filepath.Join(t.TempDir(), ipamstore.DefaultFileName), ipamstore.Config{TenantPool: hc.TenantPool, ExternalPool: hc.ExternalPool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	vms := []ipamstore.VM{
		{UID: "uid-web", Namespace: "alpha", Name: "web"},
		{UID: "uid-db", Namespace: "alpha", Name: "db"},
		{UID: "uid-api", Namespace: "beta", Name: "api"},
	}
	eps := map[string]ipamstore.Endpoint{}
	for _, vm := range vms {
		ep, err := store.AllocateEndpoint(ctx, vm)
		if err != nil {
			t.Fatal(err)
		}
		eps[vm.UID] = ep
	}
	if _, err := store.AllocateExternal(ctx, "uid-api"); err != nil {
		t.Fatal(err)
	}
	snap, err := store.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := desiredFrom(hc, snap)
	if changes, err := h.Reconcile(ctx, d); err != nil {
		t.Fatalf("Reconcile: %v (%v)", err, changes)
	}

	// The guest: a veth in its own namespace with web's MAC, its host end
	// on alpha's bridge (a foreign port vmd must leave alone).
	guestNS := nettest.AddNetns(t, "vmdnl-g-")
	brA := network.BridgeName("alpha")
	web := eps["uid-web"]
	nettest.InNetns(t, hostNS, "ip", "link", "add", "guest-port", "type", "veth", "peer", "name", "eth0", "netns", guestNS)
	nettest.InNetns(t, hostNS, "ip", "link", "set", "guest-port", "master", brA, "up")
	nettest.InNetns(t, guestNS, "ip", "link", "set", "eth0", "address", web.MAC.String(), "up")

	// The DHCP socket is created inside the namespace through Host.Do.
	var conn net.PacketConn
	if err := h.Do(func() error {
		var err error
		conn, err = dhcp.Listen(brA)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	gw := network.GatewayFor(web.Subnet)
	srv, err := dhcp.NewServer(conn, dhcp.Config{ServerID: gw})
	if err != nil {
		t.Fatal(err)
	}
	var leases []dhcp.Lease
	for _, e := range snap.Endpoints {
		if e.Namespace == "alpha" {
			leases = append(leases, dhcp.Lease{MAC: e.MAC, Addr: netip.PrefixFrom(e.IP, e.Subnet.Bits()), Router: gw, DNS: []netip.Addr{gw}, Hostname: e.Name})
		}
	}
	if err := srv.SetLeases(leases); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	dir := t.TempDir()
	out := filepath.Join(dir, "events")
	script := filepath.Join(dir, "script.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$1 $ip/$mask $router $hostname\" >> "+out+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmdOut, err := exec.CommandContext(ctx, "ip", "netns", "exec", guestNS,
		"busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "3", "-T", "1", "-s", script).CombinedOutput()
	events, _ := os.ReadFile(out)
	if err != nil {
		t.Fatalf("udhcpc: %v\n%s\n%s", err, cmdOut, events)
	}
	want := "bound " + web.IP.String() + "/24 " + gw.String() + " web"
	if !strings.Contains(string(events), want) {
		t.Fatalf("udhcpc events %q, want %q", events, want)
	}

	// Nothing changed on the host meanwhile; the foreign port survives.
	if changes, err := h.Reconcile(ctx, d); err != nil || len(changes) != 0 {
		t.Fatalf("second Reconcile: %v %v", changes, err)
	}

	// Deleting the exposed VM: release, rebuild, reconcile.
	if err := store.Release(ctx, "uid-api"); err != nil {
		t.Fatal(err)
	}
	if snap, err = store.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	changes, err := h.Reconcile(ctx, desiredFrom(hc, snap))
	if err != nil {
		t.Fatal(err)
	}
	want2 := []string{
		"delete tuntap " + network.TapName("beta", "api"),
		"delete bridge " + network.BridgeName("beta"),
		"delete address up0 192.0.2.10/32",
	}
	if got := changeStrings(changes); !sameSet(got, want2) {
		t.Fatalf("changes after release = %q, want %q", got, want2)
	}
	if _, ok := links(t, hostNS)["guest-port"]; !ok {
		t.Error("foreign port on a vmd bridge was removed")
	}
}
