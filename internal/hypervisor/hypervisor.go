// Package hypervisor is the port through which the controller turns a
// VMInstance into a running domain, plus the pure data the domain is built
// from (instance types, profiles). Only the leaf package hypervisor/libvirt
// imports the cgo libvirt binding.
package hypervisor

import (
	"context"
	"fmt"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// DomainRequest is the desired domain for one VMInstance, derived from the
// validated spec, the instance type and the profile.
type DomainRequest struct {
	// Name is the libvirt domain name, vm-instance-<name>.
	Name string
	// UID of the VMInstance, recorded in the domain metadata so vmd can
	// re-adopt the domain after a restart.
	UID string
	// Generation of the spec the domain was built from.
	Generation int64
	// UUID is the SMBIOS UUID (also the NoCloud instance-id).
	UUID string
	// VCPUs and MemoryBytes size the guest.
	VCPUs       int
	MemoryBytes int64
	// Disks are volume paths in boot order.
	Disks []DomainDisk
	// Running says whether the domain should be running now.
	Running bool
}

// DomainDisk is one disk of a domain.
type DomainDisk struct {
	Path    string
	Format  string
	Bus     string
	Optical bool
}

// DomainState is what the hypervisor reports about a domain.
type DomainState struct {
	// Exists is false when no domain of that name is defined.
	Exists bool
	// Running is true while the guest runs.
	Running bool
	// Reason is the hypervisor's word for the state (e.g. "crashed").
	Reason string
}

// Driver manages domains. Every method MUST be idempotent.
type Driver interface {
	// EnsureDomain defines or updates the domain and starts or stops it
	// to match req.Running, and reports the resulting state.
	EnsureDomain(ctx context.Context, req DomainRequest) (DomainState, error)
	// DeleteDomain stops and undefines the domain; absent is fine.
	DeleteDomain(ctx context.Context, name string) error
}

// NotImplemented is the Driver used until the libvirt adapter is wired in.
// It refuses to define domains with errdefs.ErrNotImplemented, so a
// VMInstance never shows a pretend Running.
type NotImplemented struct{}

// EnsureDomain implements Driver.
func (NotImplemented) EnsureDomain(context.Context, DomainRequest) (DomainState, error) {
	return DomainState{}, fmt.Errorf("defining domains: %w", errdefs.ErrNotImplemented)
}

// DeleteDomain implements Driver; there is never a domain to delete.
func (NotImplemented) DeleteDomain(context.Context, string) error { return nil }
