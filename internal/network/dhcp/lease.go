package dhcp

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// DefaultLeaseTime is used when a Lease leaves LeaseTime zero. Leases are
// static, so the lease time only bounds how long a guest keeps using an
// address after vmd stopped answering (e.g. the VM was deleted while its
// guest was somehow still running): an hour is a common, harmless choice.
const DefaultLeaseTime = time.Hour

// Lease is everything the server tells one guest. The server holds no
// other state: a lease exists exactly while vmd has it in SetLeases.
type Lease struct {
	// MAC is the guest NIC's address; requests from any other MAC are
	// ignored.
	MAC net.HardwareAddr
	// Addr is the guest's address with its subnet's prefix length
	// (10.100.0.2/24); the prefix becomes the subnet mask option.
	Addr netip.Prefix
	// Router is the default gateway (option 3), usually the bridge address.
	Router netip.Addr
	// DNS lists resolvers (option 6). Empty omits the option.
	DNS []netip.Addr
	// Hostname is option 12, the VM name. Empty omits the option.
	Hostname string
	// Domain is option 15. Empty omits the option.
	Domain string
	// MTU is option 26 when non-zero (68..65535).
	MTU int
	// LeaseTime is option 51 (default DefaultLeaseTime).
	LeaseTime time.Duration
}

// Validate checks that the lease can be encoded and makes sense.
func (l Lease) Validate() error {
	if len(l.MAC) != 6 {
		return fmt.Errorf("lease mac %q is not a 6-byte ethernet address: %w", l.MAC, errdefs.ErrInvalid)
	}
	if !l.Addr.IsValid() || !l.Addr.Addr().Is4() || l.Addr.Bits() > 30 {
		return fmt.Errorf("lease %s: address %s must be IPv4 with a prefix of at most /30: %w", l.MAC, l.Addr, errdefs.ErrInvalid)
	}
	if l.Router.IsValid() && (!l.Router.Is4() || !l.Addr.Masked().Contains(l.Router)) {
		return fmt.Errorf("lease %s: router %s is not in %s: %w", l.MAC, l.Router, l.Addr.Masked(), errdefs.ErrInvalid)
	}
	for _, d := range l.DNS {
		if !d.Is4() {
			return fmt.Errorf("lease %s: dns server %s is not IPv4: %w", l.MAC, d, errdefs.ErrInvalid)
		}
	}
	if len(l.Hostname) > 255 || len(l.Domain) > 255 {
		return fmt.Errorf("lease %s: hostname and domain must be at most 255 bytes: %w", l.MAC, errdefs.ErrInvalid)
	}
	if l.MTU != 0 && (l.MTU < 68 || l.MTU > 65535) {
		return fmt.Errorf("lease %s: mtu %d outside 68..65535: %w", l.MAC, l.MTU, errdefs.ErrInvalid)
	}
	if l.LeaseTime < 0 || l.LeaseTime > 0xfffffffe*time.Second {
		return fmt.Errorf("lease %s: lease time %s out of range: %w", l.MAC, l.LeaseTime, errdefs.ErrInvalid)
	}
	return nil
}

// leaseTable is an immutable MAC -> lease index; SetLeases swaps it whole.
type leaseTable map[[6]byte]Lease

func newLeaseTable(leases []Lease) (leaseTable, error) {
	t := make(leaseTable, len(leases))
	ips := map[netip.Addr]string{}
	for _, l := range leases {
		if err := l.Validate(); err != nil {
			return nil, err
		}
		k := [6]byte(l.MAC)
		if _, dup := t[k]; dup {
			return nil, fmt.Errorf("two leases for mac %s: %w", l.MAC, errdefs.ErrInvalid)
		}
		if other, dup := ips[l.Addr.Addr()]; dup {
			return nil, fmt.Errorf("address %s leased to both %s and %s: %w", l.Addr.Addr(), other, l.MAC, errdefs.ErrInvalid)
		}
		ips[l.Addr.Addr()] = l.MAC.String()
		l.MAC = slices.Clone(l.MAC)
		l.DNS = slices.Clone(l.DNS)
		if l.LeaseTime == 0 {
			l.LeaseTime = DefaultLeaseTime
		}
		t[k] = l
	}
	return t, nil
}

func (t leaseTable) lookup(m *Message) (Lease, bool) {
	if m.HType != HTypeEthernet || m.HLen != 6 {
		return Lease{}, false
	}
	l, ok := t[[6]byte(m.CHAddr[:6])]
	return l, ok
}
