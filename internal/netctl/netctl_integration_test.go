//go:build integration

package netctl

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/network"
	"github.com/vmdhq/vmd/internal/network/ipamstore"
	"github.com/vmdhq/vmd/internal/network/netlink"
	"github.com/vmdhq/vmd/internal/network/nettest"
	"github.com/vmdhq/vmd/internal/network/nft"
	"github.com/vmdhq/vmd/internal/state"
)

// ipAddr is the subset of `ip -j addr` the test reads.
type ipAddr struct {
	Name     string `json:"ifname"`
	Master   string `json:"master"`
	AddrInfo []struct {
		Family string `json:"family"`
		Local  string `json:"local"`
		Prefix int    `json:"prefixlen"`
	} `json:"addr_info"`
}

// links returns interface name -> "master addr/len ..." inside ns.
func links(t *testing.T, ns string) map[string]string {
	t.Helper()
	var out []ipAddr
	if err := json.Unmarshal([]byte(nettest.InNetns(t, ns, "ip", "-j", "addr")), &out); err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range out {
		parts := []string{"master=" + l.Master}
		for _, a := range l.AddrInfo {
			if a.Family == "inet" {
				parts = append(parts, netip.PrefixFrom(netip.MustParseAddr(a.Local), a.Prefix).String())
			}
		}
		m[l.Name] = strings.Join(parts, " ")
	}
	return m
}

// TestNetworkerInNetns runs the production Networker (netlink, nftables,
// DHCP sockets) in a throwaway namespace: two tenants and one PortList VM,
// a restart that rebuilds the same state, then release of everything.
func TestNetworkerInNetns(t *testing.T) {
	nettest.RequireRoot(t, "ip", "nft")
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("needs /dev/net/tun: %v", err)
	}
	ctx := context.Background()
	ns, fd := nettest.NewNetns(t, "vmdnc-")
	nettest.InNetns(t, ns, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up0p")
	nettest.InNetns(t, ns, "ip", "link", "set", "up0", "up")
	handle, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { handle.Close() })

	dir := t.TempDir()
	objects, err := state.Open(filepath.Join(dir, "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { objects.Close() })
	host := network.HostConfig{Uplink: "up0", TenantPool: tenantPool, ExternalPool: extPool}
	open := func() (*Networker, func()) {
		ipam, err := ipamstore.Open(filepath.Join(dir, ipamstore.DefaultFileName), ipamstore.Config{TenantPool: tenantPool, ExternalPool: extPool})
		if err != nil {
			t.Fatal(err)
		}
		links, err := netlink.New(netlink.WithNetNS(handle))
		if err != nil {
			t.Fatal(err)
		}
		n, err := New(Config{Host: host, IPAM: ipam, Objects: objects, Links: links, Firewall: nft.New(nft.WithNetNSFd(fd)),
			DHCP: HostDHCP(ctx, links, nil)})
		if err != nil {
			t.Fatal(err)
		}
		return n, func() { n.Close(); links.Close(); ipam.Close() }
	}
	n, closeN := open()
	create := func(ns, name string, spec v1alpha1.VMInstanceSpec) *v1alpha1.VMInstance {
		vm := instance(ns, name, "", spec)
		if err := objects.Create(ctx, vm); err != nil {
			t.Fatal(err)
		}
		o, err := objects.Get(ctx, v1alpha1.KindVMInstance, ns, name)
		if err != nil {
			t.Fatal(err)
		}
		return o.(*v1alpha1.VMInstance)
	}
	vms := []*v1alpha1.VMInstance{
		create("alpha", "web", v1alpha1.VMInstanceSpec{External: ptr(true), ExternalPorts: []int{22, 80}}),
		create("alpha", "worker", v1alpha1.VMInstanceSpec{}),
		create("beta", "db", v1alpha1.VMInstanceSpec{}),
	}
	for _, vm := range vms {
		if _, err := n.Attach(ctx, vm); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	brA, brB := network.BridgeName("alpha"), network.BridgeName("beta")
	check := func() string {
		t.Helper()
		got := links(t, ns)
		want := map[string]string{
			brA: "master= 10.240.0.1/24", brB: "master= 10.240.1.1/24",
			network.TapName("alpha", "web"): "master=" + brA, network.TapName("alpha", "worker"): "master=" + brA,
			network.TapName("beta", "db"): "master=" + brB,
			"up0":                         "master= 192.0.2.10/32",
		}
		for name, w := range want {
			if got[name] != w {
				t.Errorf("%s: %q, want %q", name, got[name], w)
			}
		}
		dump, err := nft.New(nft.WithNetNSFd(fd)).Dump()
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []string{network.TapName("alpha", "web"), network.TapName("beta", "db"), brA, brB,
			"192.0.2.10 : 10.240.0.2", "10.240.0.2 . 80"} {
			if !strings.Contains(dump, w) {
				t.Errorf("ruleset lacks %q:\n%s", w, dump)
			}
		}
		// Each tenant's DHCP server holds port 67 on its bridge.
		ss := nettest.InNetns(t, ns, "ss", "-Hulpn", "sport", "= :67")
		for _, br := range []string{brA, brB} {
			if !strings.Contains(ss, "%"+br) {
				t.Errorf("no dhcp socket on %s:\n%s", br, ss)
			}
		}
		return dump
	}
	first := check()

	// A restart rebuilds the same state: no duplicate rules, no changes.
	closeN()
	n, closeN = open()
	defer func() { closeN() }()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if again := check(); again != first {
		t.Fatalf("ruleset changed across a restart:\n--- before\n%s\n--- after\n%s", first, again)
	}

	for _, vm := range vms {
		if err := n.Release(ctx, vm.ObjectMeta.UID); err != nil {
			t.Fatal(err)
		}
	}
	got := links(t, ns)
	for name, l := range got {
		if strings.HasPrefix(name, network.BridgePrefix) || strings.HasPrefix(name, network.TapPrefix) {
			t.Errorf("link %s left after release", name)
		}
		if name == "up0" && strings.Contains(l, "192.0.2.10") {
			t.Errorf("external address left on the uplink: %s", l)
		}
	}
	dump, err := nft.New(nft.WithNetNSFd(fd)).Dump()
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{network.TapPrefix, "192.0.2.10"} {
		if strings.Contains(dump, w) {
			t.Errorf("ruleset still names %q after release:\n%s", w, dump)
		}
	}
	if ss := nettest.InNetns(t, ns, "ss", "-Hulpn", "sport", "= :67"); strings.TrimSpace(ss) != "" {
		t.Errorf("dhcp sockets left:\n%s", ss)
	}
}
