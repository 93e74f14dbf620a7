package network

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// ErrPoolExhausted is returned when an allocator finds no free subnet or
// address. It matches errdefs.ErrUnavailable: the request is fine, the
// host has no room for it.
var ErrPoolExhausted = fmt.Errorf("address pool exhausted: %w", errdefs.ErrUnavailable)

// Limits on tenant subnets: a /30 is the smallest subnet with a gateway and
// one guest; IPv4 only.
const (
	MaxSubnetBits = 30
)

// AllocateSubnet returns the lowest subnet of prefix length size inside pool
// that overlaps none of used. The result depends only on the arguments, so
// replaying the same allocations after a restart yields the same subnets.
func AllocateSubnet(pool netip.Prefix, size int, used []netip.Prefix) (netip.Prefix, error) {
	if !pool.IsValid() || !pool.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("allocating subnet: pool %s is not an IPv4 prefix: %w", pool, errdefs.ErrInvalid)
	}
	pool = pool.Masked()
	if size < pool.Bits() || size > MaxSubnetBits {
		return netip.Prefix{}, fmt.Errorf("allocating subnet: size /%d must be between /%d and /%d: %w", size, pool.Bits(), MaxSubnetBits, errdefs.ErrInvalid)
	}
	step := uint64(1) << (32 - size)
	start := addrToUint(pool.Addr())
	end := uint64(start) + uint64(1)<<(32-pool.Bits())
	for base := uint64(start); base < end; base += step {
		cand := netip.PrefixFrom(uintToAddr(uint32(base)), size)
		free := true
		for _, u := range used {
			if u.IsValid() && u.Overlaps(cand) {
				free = false
				// Skip to the end of the overlapping used prefix when it is
				// larger than a candidate, so a big used block costs one step.
				if u.Bits() < size {
					if next := uint64(addrToUint(u.Masked().Addr())) + uint64(1)<<(32-u.Bits()); next > base+step {
						base = next - step
					}
				}
				break
			}
		}
		if free {
			return cand, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("allocating /%d in %s: %w", size, pool, ErrPoolExhausted)
}

// GatewayFor is the host's address on a tenant subnet: its first host
// address (".1" in a /24).
func GatewayFor(subnet netip.Prefix) netip.Addr {
	return subnet.Masked().Addr().Next()
}

// AllocateIP returns the lowest address in subnet that is not the network
// address, the gateway (GatewayFor), the broadcast address or in used.
func AllocateIP(subnet netip.Prefix, used []netip.Addr) (netip.Addr, error) {
	if !subnet.IsValid() || !subnet.Addr().Is4() || subnet.Bits() > MaxSubnetBits {
		return netip.Addr{}, fmt.Errorf("allocating address: subnet %s must be IPv4 and at most /%d: %w", subnet, MaxSubnetBits, errdefs.ErrInvalid)
	}
	taken := make(map[netip.Addr]bool, len(used))
	for _, u := range used {
		taken[u] = true
	}
	gw, bcast := GatewayFor(subnet), lastAddr(subnet)
	for a := gw.Next(); a.Less(bcast); a = a.Next() {
		if !taken[a] {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("allocating address in %s: %w", subnet.Masked(), ErrPoolExhausted)
}

// IsReservedInSubnet reports whether a is one of the addresses AllocateIP
// never hands out (network, gateway, broadcast) or lies outside subnet.
func IsReservedInSubnet(subnet netip.Prefix, a netip.Addr) bool {
	s := subnet.Masked()
	return !s.Contains(a) || a == s.Addr() || a == GatewayFor(s) || a == lastAddr(s)
}

// AllocateExternal returns the lowest address of pool not in used.
func AllocateExternal(pool AddrRange, used []netip.Addr) (netip.Addr, error) {
	if err := pool.Validate(); err != nil {
		return netip.Addr{}, fmt.Errorf("allocating external address: %w: %w", err, errdefs.ErrInvalid)
	}
	taken := make(map[netip.Addr]bool, len(used))
	for _, u := range used {
		taken[u] = true
	}
	for a := pool.First; a.IsValid() && a.Compare(pool.Last) <= 0; a = a.Next() {
		if !taken[a] {
			return a, nil
		}
		if a == pool.Last {
			break
		}
	}
	return netip.Addr{}, fmt.Errorf("allocating external address in %s: %w", pool, ErrPoolExhausted)
}

// MACFor derives a VM's MAC from its UID, so the guest keeps its address
// (and its DHCP lease and cloud-init network match) for life even if the
// IPAM record is rebuilt.
//
// Why 02:xx:xx:xx:xx:xx rather than qemu's 52:54:00 prefix: both are
// locally administered unicast, but 52:54:00 leaves 24 bits for the hash,
// so a host with 1000 VMs has about a 3 % chance of a collision; 02 leaves
// 40 bits (about 5e-7). Nothing in the guest or libvirt needs the qemu OUI,
// and libvirt derives the tap's own MAC by replacing the first byte with
// 0xfe, which stays distinct from every 02: guest address.
func MACFor(uid string) net.HardwareAddr {
	return macAttempt(uid, 0)
}

// AllocateMAC returns MACFor(uid) unless it is in used; then it probes
// further deterministic candidates derived from uid. The result is stable
// as long as used is.
func AllocateMAC(uid string, used []net.HardwareAddr) (net.HardwareAddr, error) {
	taken := make(map[string]bool, len(used))
	for _, m := range used {
		taken[m.String()] = true
	}
	for attempt := range uint32(64) {
		if m := macAttempt(uid, attempt); !taken[m.String()] {
			return m, nil
		}
	}
	return nil, fmt.Errorf("allocating mac for %s: %w", uid, ErrPoolExhausted)
}

func macAttempt(uid string, attempt uint32) net.HardwareAddr {
	h := sha256.New()
	h.Write([]byte("vmd-mac\x00" + uid))
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], attempt)
	if attempt > 0 {
		h.Write(n[:])
	}
	sum := h.Sum(nil)
	return net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
}

// Interface name prefixes. Bridges and taps get distinct prefixes so an
// operator can tell them apart in `ip link` and so a name can never collide
// across kinds.
const (
	BridgePrefix = "vmd-"
	TapPrefix    = "vmt-"
)

// BridgeName is the tenant bridge of a namespace: "vmd-" and 8 hex digits
// of a hash (12 bytes, under the kernel's 15-byte limit). Hashing rather
// than truncating keeps long namespace names distinct.
func BridgeName(namespace string) string {
	return BridgePrefix + hashHex("bridge\x00"+namespace, 8)
}

// TapName is a VM NIC's tap: "vmt-" and 10 hex digits of a hash of
// namespace and name (14 bytes).
func TapName(namespace, name string) string {
	return TapPrefix + hashHex("tap\x00"+namespace+"\x00"+name, 10)
}

func hashHex(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:n]
}

func addrToUint(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func uintToAddr(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}
