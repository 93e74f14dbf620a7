package netlink

import (
	"errors"

	"testing"

	vnl "github.com/vishvananda/netlink"

	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/network"
)

func TestOwned(t *testing.T) {
	tests := []struct {
		name string
		link vnl.Link
		want bool
	}{
		{name: "vmd bridge", link: &vnl.Bridge{LinkAttrs: vnl.LinkAttrs{Name: network.BridgeName("default")}}, want: true},
		{name: "vmd tap", link: &vnl.Tuntap{LinkAttrs: vnl.LinkAttrs{Name: network.TapName("default", "web")}}, want: true},
		{name: "bridge with tap prefix", link: &vnl.Bridge{LinkAttrs: vnl.LinkAttrs{Name: "vmt-0123456789"}}},
		{name: "tap with bridge prefix", link: &vnl.Tuntap{LinkAttrs: vnl.LinkAttrs{Name: "vmd-01234567"}}},
		{name: "veth with vmd prefix", link: &vnl.Veth{LinkAttrs: vnl.LinkAttrs{Name: "vmd-uplink"}}},
		{name: "foreign bridge", link: &vnl.Bridge{LinkAttrs: vnl.LinkAttrs{Name: "virbr0"}}},
		{name: "foreign tap", link: &vnl.Tuntap{LinkAttrs: vnl.LinkAttrs{Name: "vnet0"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := owned(tt.link); got != tt.want {
				t.Fatalf("owned(%s %s) = %v, want %v", tt.link.Type(), tt.link.Attrs().Name, got, tt.want)
			}
		})
	}
}

func TestBridgeMAC(t *testing.T) {
	a, b := bridgeMAC("vmd-aaaaaaaa"), bridgeMAC("vmd-bbbbbbbb")
	if a.String() != bridgeMAC("vmd-aaaaaaaa").String() {
		t.Fatal("bridge mac is not stable")
	}
	if a.String() == b.String() {
		t.Fatal("different bridges got the same mac")
	}
	// Locally administered unicast, and never in the guests' 02: space.
	for _, m := range []string{a.String(), b.String()} {
		if m[:3] != "06:" {
			t.Errorf("mac %s, want the 06: prefix", m)
		}
	}
}

func TestChangeString(t *testing.T) {
	tests := []struct {
		name string
		c    Change
		want string
	}{
		{name: "link", c: Change{Action: ActionCreate, Kind: KindTap, Link: "vmt-0123456789"}, want: "create tuntap vmt-0123456789"},
		{name: "address", c: Change{Action: ActionDelete, Kind: KindAddress, Link: "eth0", Detail: "192.0.2.10/32"}, want: "delete address eth0 192.0.2.10/32"},
		{name: "sysctl", c: Change{Action: ActionUpdate, Kind: KindSysctl, Detail: "net.ipv4.ip_forward=1"}, want: "update sysctl net.ipv4.ip_forward=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.String(); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestReconcileRefusesInvalidDesired(t *testing.T) {
	h, err := New()
	if err != nil {
		t.Skipf("no netlink socket: %v", err)
	}
	defer h.Close()
	// Invalid before any kernel call: no uplink, no pools.
	_, err = h.Reconcile(t.Context(), network.Desired{})
	if !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
}
