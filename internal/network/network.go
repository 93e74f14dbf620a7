// Package network describes vmd's host networking as data: tenant bridges
// with private subnets, VM endpoints (tap, MAC, private IP) and their
// external exposure, and the nftables ruleset that realises isolation, NAT
// and cozy-proxy-style PortList/WholeIP filtering (Plan). It also holds the
// pure IPAM helpers that pick subnets, addresses, MACs and interface names.
//
// The package is pure Go: it never touches the kernel. The leaf adapters
// internal/network/nft (nftables) and internal/network/netlink (links and
// addresses) turn this data into host state.
package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

// Tenant is one namespace's isolated L2 segment: a Linux bridge carrying
// the gateway address of the tenant's private subnet.
type Tenant struct {
	// Namespace is the VMInstance namespace the segment belongs to.
	Namespace string
	// Bridge is the bridge interface name (BridgeName), at most 15 bytes.
	Bridge string
	// Subnet is the tenant's private IPv4 subnet, inside HostConfig.TenantPool.
	Subnet netip.Prefix
	// Gateway is the host's address on the bridge; guests use it as their
	// default route, DHCP server and DNS resolver.
	Gateway netip.Addr
}

// Endpoint is one VM NIC on its tenant's bridge.
type Endpoint struct {
	// Namespace and Name identify the VMInstance.
	Namespace, Name string
	// MAC is the guest's address; anti-spoofing pins the tap to it.
	MAC net.HardwareAddr
	// IP is the guest's private address in its tenant subnet.
	IP netip.Addr
	// Tap is the host side of the NIC (TapName), at most 15 bytes.
	Tap string
	// External, when set, exposes the VM on a dedicated external IP.
	External *Exposure
}

// Key is "namespace/name", used in error messages and field paths.
func (e Endpoint) Key() string { return e.Namespace + "/" + e.Name }

// Exposure is a VM's external IP and how it is exposed, with cozy-proxy
// semantics: traffic to IP is DNAT'ed 1:1 to the VM and the VM's egress is
// SNAT'ed to IP in both methods; PortList lets only TCP to Ports (and ICMP
// when AllowICMP) in, WholeIP lets everything in.
type Exposure struct {
	IP        netip.Addr
	Method    v1alpha1.ExternalMethod
	Ports     []int
	AllowICMP bool
}

// HostConfig is the host-level network configuration every plan shares.
type HostConfig struct {
	// Uplink is the interface towards the outside world: egress NAT and
	// external IPs live there.
	Uplink string
	// TenantPool is the private range tenant subnets are carved from.
	TenantPool netip.Prefix
	// ExternalPool is the range external IPs are taken from.
	ExternalPool AddrRange
	// DNS lists the resolvers handed to guests; empty means the tenant
	// gateway (vmd's forwarder). The ruleset does not depend on it: guests
	// reach outside resolvers through the uplink like any other egress.
	DNS []netip.Addr
}

// Desired is the complete desired host networking state. Plan is a pure
// function of it.
type Desired struct {
	Host      HostConfig
	Tenants   []Tenant
	Endpoints []Endpoint
}

// AddrRange is an inclusive range of IPv4 addresses. External pools are
// configured as a CIDR or as "first-last" (ParseAddrRange), because
// providers often hand out a slice of a shared on-link subnet.
type AddrRange struct {
	First, Last netip.Addr
}

// ParseAddrRange accepts "192.0.2.16/28" (every address except the network
// and broadcast address, for prefixes shorter than /31), "192.0.2.10-192.0.2.20"
// (both ends included) or a single address.
func ParseAddrRange(s string) (AddrRange, error) {
	s = strings.TrimSpace(s)
	switch {
	case strings.Contains(s, "/"):
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return AddrRange{}, fmt.Errorf("parsing address range %q: %w", s, err)
		}
		if !p.Addr().Is4() {
			return AddrRange{}, fmt.Errorf("parsing address range %q: not IPv4", s)
		}
		p = p.Masked()
		first, last := p.Addr(), lastAddr(p)
		if p.Bits() < 31 {
			first, last = first.Next(), last.Prev()
		}
		return AddrRange{First: first, Last: last}, nil
	case strings.Contains(s, "-"):
		a, b, _ := strings.Cut(s, "-")
		first, err := netip.ParseAddr(strings.TrimSpace(a))
		if err != nil {
			return AddrRange{}, fmt.Errorf("parsing address range %q: %w", s, err)
		}
		last, err := netip.ParseAddr(strings.TrimSpace(b))
		if err != nil {
			return AddrRange{}, fmt.Errorf("parsing address range %q: %w", s, err)
		}
		r := AddrRange{First: first, Last: last}
		if err := r.Validate(); err != nil {
			return AddrRange{}, fmt.Errorf("parsing address range %q: %w", s, err)
		}
		return r, nil
	default:
		a, err := netip.ParseAddr(s)
		if err != nil {
			return AddrRange{}, fmt.Errorf("parsing address range %q: %w", s, err)
		}
		if !a.Is4() {
			return AddrRange{}, fmt.Errorf("parsing address range %q: not IPv4", s)
		}
		return AddrRange{First: a, Last: a}, nil
	}
}

// Validate checks that the range is a non-empty IPv4 range.
func (r AddrRange) Validate() error {
	if !r.First.Is4() || !r.Last.Is4() {
		return errors.New("range ends must be IPv4 addresses")
	}
	if r.Last.Less(r.First) {
		return fmt.Errorf("range %s is empty (last before first)", r)
	}
	return nil
}

// Contains reports whether a lies within the range.
func (r AddrRange) Contains(a netip.Addr) bool {
	return a.Is4() && r.First.Is4() && r.Last.Is4() && r.First.Compare(a) <= 0 && a.Compare(r.Last) <= 0
}

// String renders the range as ParseAddrRange accepts it.
func (r AddrRange) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

// lastAddr is the highest address of an IPv4 prefix (its broadcast address).
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
