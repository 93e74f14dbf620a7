// Package hypervisor is the port through which the controller turns a
// VMInstance into a running domain, plus the pure data the domain is built
// from (instance types, profiles, the domain XML). Only the leaf package
// hypervisor/libvirt imports the cgo libvirt binding.
package hypervisor

import (
	"context"
	"fmt"
	"time"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// DomainState is what the hypervisor reports about a domain.
type DomainState struct {
	// Exists is false when no domain of that name is defined.
	Exists bool
	// Running is true while a qemu process exists for the domain (running,
	// paused, shutting down): starting it again would fail.
	Running bool
	// State is libvirt's state word ("running", "paused", "shutoff", ...).
	State string
	// Reason is the hypervisor's reason for the state; for a shut-off
	// domain it tells how it stopped (see Exit).
	Reason string
}

// ExitKind classifies how a shut-off domain stopped, the one fact
// runStrategy needs: RerunOnFailure restarts after ExitFailure only.
type ExitKind string

// Exit kinds.
const (
	// ExitNone: the domain runs, or never ran since it was defined.
	ExitNone ExitKind = ""
	// ExitShutdown: the guest powered itself off.
	ExitShutdown ExitKind = "Shutdown"
	// ExitDestroyed: someone (vmd or an operator) pulled the plug.
	ExitDestroyed ExitKind = "Destroyed"
	// ExitFailure: qemu died or was killed, the guest crashed, or libvirtd
	// found the process gone.
	ExitFailure ExitKind = "Failure"
	// ExitUnknown: shut off for a reason libvirt no longer knows, as after
	// a host reboot (the guest stopped without a clean shutdown).
	ExitUnknown ExitKind = "Unknown"
)

// Exit returns how a shut-off domain stopped (ExitNone while running).
func (s DomainState) Exit() ExitKind {
	if !s.Exists || s.Running {
		return ExitNone
	}
	switch s.Reason {
	case "shutdown":
		return ExitShutdown
	case "destroyed", "saved", "migrated", "from-snapshot":
		return ExitDestroyed
	case "crashed", "failed", "daemon":
		return ExitFailure
	}
	return ExitUnknown
}

// EventType is the kind of a lifecycle event.
type EventType string

// Event types the controller distinguishes; the adapter maps every other
// libvirt event to EventOther (it still wakes the owning VMInstance).
const (
	EventDefined   EventType = "Defined"
	EventUndefined EventType = "Undefined"
	EventStarted   EventType = "Started"
	EventStopped   EventType = "Stopped"
	EventCrashed   EventType = "Crashed"
	EventOther     EventType = "Other"
)

// Event is one domain lifecycle change. Events only wake the controller:
// it always observes State before acting, so a lost or duplicated event
// costs latency, never correctness.
type Event struct {
	// Name is the domain name ("" when Reconnected).
	Name string
	// UID is the owning VMInstance's uid when the adapter knows it.
	UID  string
	Type EventType
	// Detail is the hypervisor's reason in lower case ("failed", ...).
	Detail string
	// Failure says the domain died without anyone asking (qemu killed,
	// guest crash): the event behind RerunOnFailure's restarts.
	Failure bool
	// Reconnected says the connection to the hypervisor was lost and is
	// back: events of the gap are gone, every domain must be re-checked.
	Reconnected bool
}

// DomainInfo describes one domain that carries vmd's owner metadata.
type DomainInfo struct {
	Name    string
	Owner   DomainOwner
	Running bool
	State   string
	Reason  string
}

// HostCapabilities is what the host can offer domains.
type HostCapabilities struct {
	// CPUs is the number of logical host CPUs.
	CPUs int
	// HugepagesKiB maps each huge page size to the number of pages of that
	// size reserved on the host; sizes without reserved pages are absent.
	HugepagesKiB map[uint64]uint64
}

// HasHugepages reports whether pages of sizeKiB are reserved on the host.
func (c HostCapabilities) HasHugepages(sizeKiB uint64) bool { return c.HugepagesKiB[sizeKiB] > 0 }

// Driver manages domains. Every method MUST be idempotent: absent domains
// make Shutdown, Destroy and Undefine no-ops, Start of a running domain is
// a no-op, Define of an identical definition changes nothing.
type Driver interface {
	// Define creates or updates the persistent domain described by the
	// XML; a running domain keeps its old definition until restarted.
	Define(ctx context.Context, domainXML string) error
	// Start boots a defined domain.
	Start(ctx context.Context, name string) error
	// Shutdown presses the ACPI power button and destroys the domain when
	// it has not stopped after timeout.
	Shutdown(ctx context.Context, name string, timeout time.Duration) error
	// Destroy stops the domain at once (pulls the plug).
	Destroy(ctx context.Context, name string) error
	// Undefine removes the definition with its NVRAM and vTPM state.
	Undefine(ctx context.Context, name string) error
	// State observes one domain; an absent domain is Exists=false, no error.
	State(ctx context.Context, name string) (DomainState, error)
	// Owner reads the vmd metadata of a domain (errdefs.ErrNotFound when
	// the domain is absent or not vmd's).
	Owner(ctx context.Context, name string) (DomainOwner, error)
	// List returns every domain carrying vmd metadata.
	List(ctx context.Context) ([]DomainInfo, error)
	// Events delivers lifecycle events until the driver is closed; nil
	// means the driver has none (the periodic resync still converges).
	Events() <-chan Event
	// Capabilities reports what the host can offer domains.
	Capabilities(ctx context.Context) (HostCapabilities, error)
}

// NotImplemented is the Driver used when no hypervisor is configured. It
// refuses every change with errdefs.ErrNotImplemented, so a VMInstance
// never shows a pretend Running; observing finds no domain.
type NotImplemented struct{}

var errNoHypervisor = fmt.Errorf("no hypervisor: %w", errdefs.ErrNotImplemented)

// Define implements Driver.
func (NotImplemented) Define(context.Context, string) error { return errNoHypervisor }

// Start implements Driver.
func (NotImplemented) Start(context.Context, string) error { return errNoHypervisor }

// Shutdown implements Driver; there is never a domain to stop.
func (NotImplemented) Shutdown(context.Context, string, time.Duration) error { return nil }

// Destroy implements Driver; there is never a domain to stop.
func (NotImplemented) Destroy(context.Context, string) error { return nil }

// Undefine implements Driver; there is never a domain to remove.
func (NotImplemented) Undefine(context.Context, string) error { return nil }

// State implements Driver: no domain exists.
func (NotImplemented) State(context.Context, string) (DomainState, error) { return DomainState{}, nil }

// Owner implements Driver: no domain exists.
func (NotImplemented) Owner(context.Context, string) (DomainOwner, error) {
	return DomainOwner{}, fmt.Errorf("reading domain owner: %w", errdefs.ErrNotFound)
}

// List implements Driver: no domains.
func (NotImplemented) List(context.Context) ([]DomainInfo, error) { return nil, nil }

// Events implements Driver: none.
func (NotImplemented) Events() <-chan Event { return nil }

// Capabilities implements Driver: an empty host.
func (NotImplemented) Capabilities(context.Context) (HostCapabilities, error) {
	return HostCapabilities{}, nil
}
