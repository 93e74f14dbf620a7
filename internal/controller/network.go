package controller

import (
	"context"
	"net/netip"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

// Condition and address vocabulary of tenant networking.
const (
	// ConditionExternalUnavailable is True while the spec asks for an
	// external IP that this host cannot give (no uplink or no external
	// pool configured, or the pool is exhausted). The VM still runs with
	// its private address: exposure is an addition, not a prerequisite.
	ConditionExternalUnavailable = "ExternalUnavailable"
	// AddressTypeExternal is the Address.Type of the VM's external IP.
	AddressTypeExternal = "External"
)

// Networker is the controller's port to vmd's tenant networking
// (internal/netctl). The reconciler records what Attach returns in status
// before it defines the domain, so an address is never used before it is
// durable and visible; Sync then puts links, firewall rules and DHCP
// leases in place, so the tap exists before the guest starts.
type Networker interface {
	// Attach allocates (or returns, idempotently by UID) the VM's MAC,
	// private IP and, when the spec asks for one and the host can give
	// it, its external IP; a VM no longer asking for one gives it back.
	// It changes nothing on the host.
	Attach(ctx context.Context, vm *v1alpha1.VMInstance) (NetworkAttachment, error)
	// Sync converges the host (links, nftables, DHCP leases) to every
	// allocation and every VMInstance's exposure spec.
	Sync(ctx context.Context) error
	// Release removes the VM's host resources and then frees its
	// allocations. Releasing an unknown UID is not an error.
	Release(ctx context.Context, uid string) error
}

// NetworkAttachment is one VM's NIC as Attach allocated it.
type NetworkAttachment struct {
	// Tap is the pre-created tap the domain attaches to (managed='no').
	Tap string
	// MAC is the guest's MAC, "02:..." in canonical lowercase form.
	MAC string
	// IP is the private address; Subnet its tenant subnet; Gateway the
	// host's address there (default route).
	IP      netip.Addr
	Subnet  netip.Prefix
	Gateway netip.Addr
	// DNS lists the guest's resolvers.
	DNS []netip.Addr
	// Addresses is what status.addresses must say: the private address
	// (with the MAC) first, then the external IP when there is one.
	Addresses []v1alpha1.Address
	// ExternalUnavailable, when not empty, says why the external IP the
	// spec asks for was not given.
	ExternalUnavailable string
}
