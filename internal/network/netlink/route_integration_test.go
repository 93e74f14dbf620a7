//go:build integration

package netlink

import (
	"errors"
	"testing"

	"github.com/vmdhq/vmd/internal/network/nettest"
)

// TestDefaultRouteLink resolves `uplink: auto` in a throwaway namespace:
// no default route is an error naming it; with two defaults the lower
// metric wins, whatever the order they were added in.
func TestDefaultRouteLink(t *testing.T) {
	requireRoot(t)
	h, ns := newHost(t)
	if _, err := h.DefaultRouteLink(); !errors.Is(err, ErrNoDefaultRoute) {
		t.Fatalf("empty namespace: %v, want ErrNoDefaultRoute", err)
	}
	for _, cmd := range [][]string{
		{"ip", "link", "add", "up0", "type", "veth", "peer", "name", "up0p"},
		{"ip", "link", "add", "up1", "type", "veth", "peer", "name", "up1p"},
		{"ip", "link", "set", "up0p", "up"},
		{"ip", "link", "set", "up1p", "up"},
		{"ip", "link", "set", "up0", "up"},
		{"ip", "link", "set", "up1", "up"},
		{"ip", "addr", "add", "192.0.2.2/24", "dev", "up0"},
		{"ip", "addr", "add", "198.51.100.2/24", "dev", "up1"},
		{"ip", "route", "add", "10.0.0.0/8", "via", "192.0.2.1"},
		{"ip", "route", "add", "default", "via", "198.51.100.1", "metric", "200"},
	} {
		nettest.InNetns(t, ns, cmd...)
	}
	if got, err := h.DefaultRouteLink(); err != nil || got != "up1" {
		t.Fatalf("one default route via up1: %q, %v", got, err)
	}
	nettest.InNetns(t, ns, "ip", "route", "add", "default", "via", "192.0.2.1", "metric", "100")
	if got, err := h.DefaultRouteLink(); err != nil || got != "up0" {
		t.Fatalf("defaults via up1 (metric 200) and up0 (metric 100): %q, %v; want up0", got, err)
	}
}
