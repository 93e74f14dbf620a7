//go:build integration

package netlink

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/network"
	"github.com/vmdhq/vmd/internal/network/nettest"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, bridges and taps")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("needs iproute2 to cross-check: %v", err)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("needs /dev/net/tun: %v", err)
	}
}

// newHost creates a throwaway network namespace (deleted at cleanup) and
// a Host working inside it. Nothing touches the root namespace.
func newHost(t *testing.T) (*Host, string) {
	t.Helper()
	name := nettest.AddNetns(t, "vmdnl-")
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	h, err := New(WithNetNS(ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h, name
}

type ipLink struct {
	Name     string   `json:"ifname"`
	Index    int      `json:"ifindex"`
	Master   string   `json:"master"`
	Flags    []string `json:"flags"`
	Address  string   `json:"address"`
	LinkInfo struct {
		Kind string `json:"info_kind"`
	} `json:"linkinfo"`
	AddrInfo []struct {
		Family    string `json:"family"`
		Local     string `json:"local"`
		PrefixLen int    `json:"prefixlen"`
	} `json:"addr_info"`
}

// links is `ip -j -d addr` inside the namespace, by name: links with
// their kind, master, flags and addresses as iproute2 sees them.
func links(t *testing.T, netns string) map[string]ipLink {
	t.Helper()
	var list []ipLink
	if err := json.Unmarshal([]byte(nettest.InNetns(t, netns, "ip", "-j", "-d", "addr", "show")), &list); err != nil {
		t.Fatal(err)
	}
	out := map[string]ipLink{}
	for _, l := range list {
		out[l.Name] = l
	}
	return out
}

func (l ipLink) v4() []string {
	var out []string
	for _, a := range l.AddrInfo {
		if a.Family == "inet" {
			out = append(out, netip.PrefixFrom(netip.MustParseAddr(a.Local), a.PrefixLen).String())
		}
	}
	slices.Sort(out)
	return out
}

func (l ipLink) hasIPv6() bool {
	return slices.ContainsFunc(l.AddrInfo, func(a struct {
		Family    string `json:"family"`
		Local     string `json:"local"`
		PrefixLen int    `json:"prefixlen"`
	}) bool {
		return a.Family == "inet6"
	})
}

func desired() network.Desired {
	host := network.HostConfig{
		Uplink:       "up0",
		TenantPool:   netip.MustParsePrefix("10.100.0.0/16"),
		ExternalPool: network.AddrRange{First: netip.MustParseAddr("192.0.2.10"), Last: netip.MustParseAddr("192.0.2.20")},
	}
	tenant := func(namespace, subnet string) network.Tenant {
		p := netip.MustParsePrefix(subnet)
		return network.Tenant{Namespace: namespace, Bridge: network.BridgeName(namespace), Subnet: p, Gateway: network.GatewayFor(p)}
	}
	ep := func(namespace, name, ip string, ext *network.Exposure) network.Endpoint {
		return network.Endpoint{
			Namespace: namespace, Name: name, MAC: network.MACFor(namespace + "/" + name),
			IP: netip.MustParseAddr(ip), Tap: network.TapName(namespace, name), External: ext,
		}
	}
	return network.Desired{
		Host:    host,
		Tenants: []network.Tenant{tenant("alpha", "10.100.0.0/24"), tenant("beta", "10.100.1.0/24")},
		Endpoints: []network.Endpoint{
			ep("alpha", "web", "10.100.0.2", &network.Exposure{IP: netip.MustParseAddr("192.0.2.10"), Method: v1alpha1.ExternalMethodPortList, Ports: []int{22}}),
			ep("alpha", "db", "10.100.0.3", nil),
			ep("beta", "web", "10.100.1.2", &network.Exposure{IP: netip.MustParseAddr("192.0.2.11"), Method: v1alpha1.ExternalMethodWholeIP}),
		},
	}
}

func TestReconcile(t *testing.T) {
	requireRoot(t)
	h, name := newHost(t)
	ctx := t.Context()
	// Foreign state vmd must never touch: an uplink with its own address,
	// an on-link /24 and a /32 outside the pool, a bridge and a
	// veth whose name even carries vmd's prefix (no dummy module in
	// every CI kernel, so veths stand in for foreign links).
	nettest.InNetns(t, name, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up0-peer")
	nettest.InNetns(t, name, "ip", "link", "set", "up0", "up")
	nettest.InNetns(t, name, "ip", "addr", "add", "192.0.2.2/24", "dev", "up0")
	nettest.InNetns(t, name, "ip", "addr", "add", "198.51.100.7/32", "dev", "up0")
	nettest.InNetns(t, name, "ip", "link", "add", "br-other", "type", "bridge")
	nettest.InNetns(t, name, "ip", "link", "add", "vmd-notmine", "type", "veth", "peer", "name", "notmine-peer")
	// A stale external address from a VM that no longer exists.
	nettest.InNetns(t, name, "ip", "addr", "add", "192.0.2.15/32", "dev", "up0")

	d := desired()
	changes, err := h.Reconcile(ctx, d)
	if err != nil {
		t.Fatalf("Reconcile: %v (changes %v)", err, changes)
	}
	if len(changes) == 0 {
		t.Fatal("first Reconcile reported no changes")
	}
	got := links(t, name)
	brA, brB := network.BridgeName("alpha"), network.BridgeName("beta")
	checks := []struct {
		name, link, kind, master string
		addrs                    []string
	}{
		{name: "bridge alpha", link: brA, kind: "bridge", addrs: []string{"10.100.0.1/24"}},
		{name: "bridge beta", link: brB, kind: "bridge", addrs: []string{"10.100.1.1/24"}},
		{name: "tap alpha/web", link: network.TapName("alpha", "web"), kind: "tun", master: brA},
		{name: "tap alpha/db", link: network.TapName("alpha", "db"), kind: "tun", master: brA},
		{name: "tap beta/web", link: network.TapName("beta", "web"), kind: "tun", master: brB},
		{name: "uplink carries its own and the external addresses", link: "up0", kind: "veth",
			addrs: []string{"192.0.2.10/32", "192.0.2.11/32", "192.0.2.2/24", "198.51.100.7/32"}},
		{name: "foreign bridge untouched", link: "br-other", kind: "bridge"},
		{name: "foreign veth with vmd prefix untouched", link: "vmd-notmine", kind: "veth"},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			l, ok := got[c.link]
			if !ok {
				t.Fatalf("link %s missing", c.link)
			}
			if l.LinkInfo.Kind != c.kind || l.Master != c.master {
				t.Errorf("kind %q master %q, want %q %q", l.LinkInfo.Kind, l.Master, c.kind, c.master)
			}
			if c.kind != "veth" && c.link != "br-other" {
				if !slices.Contains(l.Flags, "UP") {
					t.Errorf("flags %v, want UP", l.Flags)
				}
				if l.hasIPv6() {
					t.Errorf("vmd link has IPv6 addresses: %+v", l.AddrInfo)
				}
			}
			if v4 := l.v4(); !slices.Equal(v4, c.addrs) {
				t.Errorf("addresses %v, want %v", v4, c.addrs)
			}
		})
	}
	if mac := got[brA].Address; mac != bridgeMAC(brA).String() {
		t.Errorf("bridge mac %s, want fixed %s", mac, bridgeMAC(brA))
	}
	if fwd := strings.TrimSpace(nettest.InNetns(t, name, "cat", "/proc/sys/net/ipv4/ip_forward")); fwd != "1" {
		t.Errorf("ip_forward = %s", fwd)
	}

	// Second run: nothing to do, and the same links (same ifindex) remain.
	changes, err = h.Reconcile(ctx, d)
	if err != nil || len(changes) != 0 {
		t.Fatalf("second Reconcile: changes %v, err %v; want none", changes, err)
	}
	if again := links(t, name); again[brA].Index != got[brA].Index || again[network.TapName("beta", "web")].Index != got[network.TapName("beta", "web")].Index {
		t.Fatal("idempotent run recreated links")
	}

	// Drift is repaired: a tap taken off its bridge and set down, a stray
	// address on a bridge, a missing external address.
	tapDB := network.TapName("alpha", "db")
	nettest.InNetns(t, name, "ip", "link", "set", tapDB, "nomaster")
	nettest.InNetns(t, name, "ip", "link", "set", tapDB, "down")
	nettest.InNetns(t, name, "ip", "addr", "add", "10.9.9.9/24", "dev", brA)
	nettest.InNetns(t, name, "ip", "addr", "del", "192.0.2.11/32", "dev", "up0")
	changes, err = h.Reconcile(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"delete address " + brA + " 10.9.9.9/24",
		"update tuntap " + tapDB + " master " + brA,
		"update tuntap " + tapDB + " up",
		"create address up0 192.0.2.11/32",
	}
	if gotS := changeStrings(changes); !sameSet(gotS, want) {
		t.Fatalf("repair changes = %q, want %q", gotS, want)
	}

	// Remove an endpoint (and with it beta's only VM and external IP):
	// its tap goes, its bridge goes when the tenant goes, foreign links stay.
	d.Endpoints = d.Endpoints[:2]
	d.Tenants = d.Tenants[:1]
	changes, err = h.Reconcile(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	want = []string{
		"delete tuntap " + network.TapName("beta", "web"),
		"delete bridge " + brB,
		"delete address up0 192.0.2.11/32",
	}
	if gotS := changeStrings(changes); !sameSet(gotS, want) {
		t.Fatalf("removal changes = %q, want %q", gotS, want)
	}
	after := links(t, name)
	for _, gone := range []string{network.TapName("beta", "web"), brB} {
		if _, ok := after[gone]; ok {
			t.Errorf("%s still exists", gone)
		}
	}
	for _, kept := range []string{"br-other", "vmd-notmine", "up0", brA, tapDB} {
		if _, ok := after[kept]; !ok {
			t.Errorf("%s was removed", kept)
		}
	}
	if v4 := after["up0"].v4(); !slices.Equal(v4, []string{"192.0.2.10/32", "192.0.2.2/24", "198.51.100.7/32"}) {
		t.Errorf("uplink addresses %v", v4)
	}

	list, err := h.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range list {
		names = append(names, l.Kind+":"+l.Name+"@"+l.Master)
	}
	wantList := []string{"bridge:" + brA + "@", "tuntap:" + network.TapName("alpha", "db") + "@" + brA, "tuntap:" + network.TapName("alpha", "web") + "@" + brA}
	slices.Sort(wantList)
	slices.Sort(names)
	if !slices.Equal(names, wantList) {
		t.Errorf("List = %q, want %q", names, wantList)
	}

	// Everything gone: only foreign state remains.
	d.Endpoints, d.Tenants = nil, nil
	if _, err := h.Reconcile(ctx, d); err != nil {
		t.Fatal(err)
	}
	if list, err := h.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("List after removing everything = %v, %v", list, err)
	}
}

func TestSingleObjectMethods(t *testing.T) {
	requireRoot(t)
	h, name := newHost(t)
	ctx := t.Context()
	nettest.InNetns(t, name, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up0-peer")
	nettest.InNetns(t, name, "ip", "link", "add", "vmd-veth", "type", "veth", "peer", "name", "vmt-veth")

	tests := []struct {
		name string
		do   func() error
		want error
	}{
		{name: "tap before its bridge", do: func() error { return h.EnsureTap(ctx, "vmt-a", "vmd-a") }, want: errdefs.ErrNotFound},
		{name: "bridge", do: func() error { return h.EnsureBridge(ctx, "vmd-a", netip.MustParsePrefix("10.1.0.1/24")) }},
		{name: "bridge again", do: func() error { return h.EnsureBridge(ctx, "vmd-a", netip.MustParsePrefix("10.1.0.1/24")) }},
		{name: "tap", do: func() error { return h.EnsureTap(ctx, "vmt-a", "vmd-a") }},
		{name: "tap again", do: func() error { return h.EnsureTap(ctx, "vmt-a", "vmd-a") }},
		{name: "bridge without prefix", do: func() error { return h.EnsureBridge(ctx, "br0", netip.MustParsePrefix("10.1.0.1/24")) }, want: errdefs.ErrInvalid},
		{name: "tap without prefix", do: func() error { return h.EnsureTap(ctx, "tap0", "vmd-a") }, want: errdefs.ErrInvalid},
		{name: "bridge name taken by a foreign link", do: func() error { return h.EnsureBridge(ctx, "vmd-veth", netip.MustParsePrefix("10.1.0.1/24")) }, want: errdefs.ErrConflict},
		{name: "tap name taken by a foreign link", do: func() error { return h.EnsureTap(ctx, "vmt-veth", "vmd-a") }, want: errdefs.ErrConflict},
		{name: "delete of a foreign link under a vmd name refused", do: func() error { return h.DeleteTap(ctx, "vmt-veth") }, want: errdefs.ErrConflict},
		{name: "address", do: func() error { return h.EnsureAddress(ctx, "up0", netip.MustParsePrefix("192.0.2.9/32")) }},
		{name: "address again", do: func() error { return h.EnsureAddress(ctx, "up0", netip.MustParsePrefix("192.0.2.9/32")) }},
		{name: "address on missing link", do: func() error { return h.EnsureAddress(ctx, "nope0", netip.MustParsePrefix("192.0.2.9/32")) }, want: errdefs.ErrNotFound},
		{name: "delete address", do: func() error { return h.DeleteAddress(ctx, "up0", netip.MustParsePrefix("192.0.2.9/32")) }},
		{name: "delete address again", do: func() error { return h.DeleteAddress(ctx, "up0", netip.MustParsePrefix("192.0.2.9/32")) }},
		{name: "delete foreign link refused", do: func() error { return h.DeleteBridge(ctx, "up0") }, want: errdefs.ErrInvalid},
		{name: "delete bridge with wrong kind refused", do: func() error { return h.DeleteBridge(ctx, "vmt-a") }, want: errdefs.ErrInvalid},
		{name: "delete tap", do: func() error { return h.DeleteTap(ctx, "vmt-a") }},
		{name: "delete tap again", do: func() error { return h.DeleteTap(ctx, "vmt-a") }},
		{name: "delete bridge", do: func() error { return h.DeleteBridge(ctx, "vmd-a") }},
		{name: "forwarding", do: func() error { return h.EnableForwarding(ctx) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			if tt.want == nil && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	got := links(t, name)
	if _, ok := got["vmd-a"]; ok {
		t.Error("bridge survived DeleteBridge")
	}
	if _, ok := got["vmt-veth"]; !ok {
		t.Error("foreign veth under a vmd name was deleted")
	}
	if v4 := got["up0"].v4(); len(v4) != 0 {
		t.Errorf("uplink addresses %v, want none", v4)
	}
}

// TestTapUsableByOpener checks that a vmd tap can be attached by a second
// opener the way libvirt does for managed='no' (TUNSETIFF with IFF_TAP |
// IFF_NO_PI | IFF_VNET_HDR on the existing name) and carries frames.
func TestTapUsableByOpener(t *testing.T) {
	requireRoot(t)
	h, name := newHost(t)
	ctx := t.Context()
	if err := h.EnsureBridge(ctx, "vmd-t", netip.MustParsePrefix("10.2.0.1/24")); err != nil {
		t.Fatal(err)
	}
	if err := h.EnsureTap(ctx, "vmt-t", "vmd-t"); err != nil {
		t.Fatal(err)
	}
	err := h.Do(func() error { return openTap("vmt-t") })
	if err != nil {
		t.Fatalf("attaching to the tap like libvirt: %v", err)
	}
	// After the opener closed, the persistent tap is still there.
	if _, ok := links(t, name)["vmt-t"]; !ok {
		t.Fatal("persistent tap vanished after its opener closed")
	}
}

// openTap attaches to an existing tap as libvirt does for managed='no'.
func openTap(name string) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	return unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
}

func changeStrings(cs []Change) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.String())
	}
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
