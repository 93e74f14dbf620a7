package netlink

import (
	"errors"
	"fmt"
	"slices"

	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrNoDefaultRoute means the namespace has no IPv4 default route, so no
// uplink can be derived from it.
var ErrNoDefaultRoute = errors.New("no IPv4 default route")

// DefaultRouteLink returns the interface of the namespace's IPv4 default
// route in the main table: what `uplink: auto` resolves to. Of several
// default routes the one with the lowest metric wins, as the kernel would
// pick it; a multipath default route is refused rather than guessed,
// because egress NAT and external IPs need exactly one uplink.
func (h *Host) DefaultRouteLink() (string, error) {
	routes, err := h.h.RouteListFiltered(unix.AF_INET, &vnl.Route{Table: unix.RT_TABLE_MAIN}, vnl.RT_FILTER_TABLE)
	if err != nil {
		return "", fmt.Errorf("listing routes: %w", err)
	}
	var defaults []vnl.Route
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask) {
			defaults = append(defaults, r)
		}
	}
	if len(defaults) == 0 {
		return "", ErrNoDefaultRoute
	}
	best := slices.MinFunc(defaults, func(a, b vnl.Route) int { return a.Priority - b.Priority })
	if best.LinkIndex == 0 {
		return "", fmt.Errorf("the IPv4 default route is multipath (%d next hops): set network.uplink explicitly", len(best.MultiPath))
	}
	link, err := h.h.LinkByIndex(best.LinkIndex)
	if err != nil {
		return "", fmt.Errorf("interface %d of the default route: %w", best.LinkIndex, err)
	}
	return link.Attrs().Name, nil
}

func isZeroMask(m []byte) bool {
	for _, b := range m {
		if b != 0 {
			return false
		}
	}
	return true
}
