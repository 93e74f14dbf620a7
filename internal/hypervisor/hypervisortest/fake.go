// Package hypervisortest provides a stateful in-memory hypervisor.Driver
// for tests: domains are defined, started, stopped and undefined as libvirt
// does it (same idempotency, same state and reason words, same events), and
// tests can crash them or make the guest power off.
package hypervisortest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/hypervisor"
)

// Fake keeps domains in memory, keyed by name. Its zero value is not
// usable; call New.
type Fake struct {
	mu      sync.Mutex
	domains map[string]*Domain
	events  chan hypervisor.Event
	// images are the virtual sizes of disk images by path, as qemu reads
	// them from the image header (see SetImageSize, ResizeDisk).
	images map[string]uint64
	// resizes are the growths ResizeDisk applied, in order.
	resizes []ResizeCall
	// Err, when set, is returned by every mutating call.
	Err error
	// Caps is what Capabilities reports.
	Caps hypervisor.HostCapabilities
	// IgnoreACPI makes guests ignore the power button, so Shutdown has to
	// fall back to destroying them.
	IgnoreACPI bool
}

// Domain is a fake domain.
type Domain struct {
	Name  string
	XML   string
	Owner hypervisor.DomainOwner
	// Running, State and Reason are what State reports.
	Running       bool
	State, Reason string
	// Starts counts boots; Defines counts Define calls.
	Starts, Defines int
}

// New returns an empty Fake whose Events channel buffers 256 events (the
// oldest are dropped when nobody reads, as a real adapter would).
func New() *Fake {
	return &Fake{domains: map[string]*Domain{}, events: make(chan hypervisor.Event, 256), images: map[string]uint64{}}
}

var _ hypervisor.DiskResizer = (*Fake)(nil)

func (f *Fake) emit(d *Domain, typ hypervisor.EventType, detail string, failure bool) {
	ev := hypervisor.Event{Name: d.Name, UID: d.Owner.UID, Type: typ, Detail: detail, Failure: failure}
	select {
	case f.events <- ev:
	default:
	}
}

// Define implements hypervisor.Driver.
func (f *Fake) Define(_ context.Context, domainXML string) error {
	name, err := domainName(domainXML)
	if err != nil {
		return fmt.Errorf("defining domain: %w", errdefs.ErrInvalid)
	}
	owner, _, err := hypervisor.ReadDomainOwner(domainXML)
	if err != nil {
		return fmt.Errorf("defining domain: %w: %w", errdefs.ErrInvalid, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	d, ok := f.domains[name]
	detail := "updated"
	if !ok {
		d = &Domain{Name: name, State: "shutoff", Reason: "unknown"}
		f.domains[name] = d
		detail = "added"
	}
	d.XML, d.Owner = domainXML, owner
	d.Defines++
	f.emit(d, hypervisor.EventDefined, detail, false)
	return nil
}

// Start implements hypervisor.Driver.
func (f *Fake) Start(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	d, ok := f.domains[name]
	if !ok {
		return fmt.Errorf("starting domain %s: %w", name, errdefs.ErrNotFound)
	}
	if d.Running {
		return nil
	}
	d.Running, d.State, d.Reason = true, "running", "booted"
	d.Starts++
	f.emit(d, hypervisor.EventStarted, "booted", false)
	return nil
}

// Shutdown implements hypervisor.Driver: the guest powers off at once
// unless IgnoreACPI, in which case the domain is destroyed (the timeout
// is not waited for).
func (f *Fake) Shutdown(_ context.Context, name string, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	d, ok := f.domains[name]
	if !ok || !d.Running {
		return nil
	}
	if f.IgnoreACPI {
		f.stop(d, "destroyed", false)
	} else {
		f.stop(d, "shutdown", false)
	}
	return nil
}

// Destroy implements hypervisor.Driver.
func (f *Fake) Destroy(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	if d, ok := f.domains[name]; ok && d.Running {
		f.stop(d, "destroyed", false)
	}
	return nil
}

func (f *Fake) stop(d *Domain, reason string, failure bool) {
	d.Running, d.State, d.Reason = false, "shutoff", reason
	f.emit(d, hypervisor.EventStopped, reason, failure)
}

// Undefine implements hypervisor.Driver. Like libvirt, undefining a
// running domain leaves it running (transient); the fake refuses that to
// catch callers that forget to stop first.
func (f *Fake) Undefine(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	d, ok := f.domains[name]
	if !ok {
		return nil
	}
	if d.Running {
		return fmt.Errorf("undefining running domain %s: %w", name, errdefs.ErrConflict)
	}
	delete(f.domains, name)
	f.emit(d, hypervisor.EventUndefined, "removed", false)
	return nil
}

// State implements hypervisor.Driver.
func (f *Fake) State(_ context.Context, name string) (hypervisor.DomainState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.domains[name]
	if !ok {
		return hypervisor.DomainState{}, nil
	}
	return hypervisor.DomainState{Exists: true, Running: d.Running, State: d.State, Reason: d.Reason}, nil
}

// Owner implements hypervisor.Driver.
func (f *Fake) Owner(_ context.Context, name string) (hypervisor.DomainOwner, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.domains[name]
	if !ok || d.Owner.UID == "" {
		return hypervisor.DomainOwner{}, fmt.Errorf("reading owner of %s: %w", name, errdefs.ErrNotFound)
	}
	return d.Owner, nil
}

// List implements hypervisor.Driver: domains with owner metadata, by name.
func (f *Fake) List(context.Context) ([]hypervisor.DomainInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []hypervisor.DomainInfo
	for _, d := range f.domains {
		if d.Owner.UID == "" {
			continue
		}
		out = append(out, hypervisor.DomainInfo{Name: d.Name, Owner: d.Owner, Running: d.Running, State: d.State, Reason: d.Reason})
	}
	slices.SortFunc(out, func(a, b hypervisor.DomainInfo) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out, nil
}

// Events implements hypervisor.Driver.
func (f *Fake) Events() <-chan hypervisor.Event { return f.events }

// Capabilities implements hypervisor.Driver.
func (f *Fake) Capabilities(context.Context) (hypervisor.HostCapabilities, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.Caps, nil
}

// ResizeCall is one growth ResizeDisk applied: the domain, the disk as the
// caller named it (target or source path), the image path it resolved to
// and the new size.
type ResizeCall struct {
	Domain, Disk, Path string
	Bytes              uint64
}

// ResizeDisk implements hypervisor.DiskResizer the way libvirt's
// virDomainBlockResize does: the disk is named by its target ("vdb") or its
// source path; an absent domain is ErrNotFound, a shut-off one ErrConflict,
// a disk the domain does not have ErrInvalid, a shrink ErrInvalid and the
// current size a no-op. A growth sets the image's size (what ImageSize and
// a later offline reader see) and is recorded (Resizes).
func (f *Fake) ResizeDisk(_ context.Context, name, disk string, bytes uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	d, ok := f.domains[name]
	if !ok {
		return fmt.Errorf("resizing disk %s of domain %s: %w", disk, name, errdefs.ErrNotFound)
	}
	if !d.Running {
		return fmt.Errorf("resizing disk %s of domain %s: domain is not running: %w", disk, name, errdefs.ErrConflict)
	}
	path, ok := diskSource(d.XML, disk)
	if !ok {
		return fmt.Errorf("resizing disk %s of domain %s: no such disk: %w", disk, name, errdefs.ErrInvalid)
	}
	switch cur := f.images[path]; {
	case bytes == cur:
		return nil
	case bytes < cur:
		return fmt.Errorf("resizing disk %s of domain %s: shrinking from %d to %d bytes: %w", disk, name, cur, bytes, errdefs.ErrInvalid)
	}
	f.images[path] = bytes
	f.resizes = append(f.resizes, ResizeCall{Domain: name, Disk: disk, Path: path, Bytes: bytes})
	return nil
}

// Resizes returns the growths ResizeDisk applied, oldest first.
func (f *Fake) Resizes() []ResizeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.resizes)
}

// SetImageSize records the virtual size of the image at path, as an
// offline tool (qemu-img) would leave it.
func (f *Fake) SetImageSize(path string, bytes uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images[path] = bytes
}

// ImageSize returns the virtual size of the image at path, if known.
func (f *Fake) ImageSize(path string) (uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.images[path]
	return n, ok
}

// Holds reports whether a running domain has the image at path open, as
// qemu's image lock would tell an offline tool.
func (f *Fake) Holds(path string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range f.domains {
		if !d.Running {
			continue
		}
		if _, ok := diskSource(d.XML, path); ok {
			return true
		}
	}
	return false
}

// diskSource finds the disk of a domain XML whose target device or source
// file is disk and returns its source file.
func diskSource(domainXML, disk string) (string, bool) {
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(domainXML); err != nil || dom.Devices == nil {
		return "", false
	}
	for _, dd := range dom.Devices.Disks {
		if dd.Source == nil || dd.Source.File == nil {
			continue
		}
		if dd.Source.File.File == disk || (dd.Target != nil && dd.Target.Dev == disk) {
			return dd.Source.File.File, true
		}
	}
	return "", false
}

// Crash kills the named domain's qemu as kill -9 would: shut off with
// reason "failed" and a Failure event. It reports whether it was running.
func (f *Fake) Crash(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.domains[name]
	if !ok || !d.Running {
		return false
	}
	f.stop(d, "failed", true)
	return true
}

// PowerOff makes the guest shut itself down (reason "shutdown"). It
// reports whether it was running.
func (f *Fake) PowerOff(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.domains[name]
	if !ok || !d.Running {
		return false
	}
	f.stop(d, "shutdown", false)
	return true
}

// HostReboot shuts every domain off the way a host reboot leaves them
// (reason "unknown", no events: vmd was down too).
func (f *Fake) HostReboot() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range f.domains {
		d.Running, d.State, d.Reason = false, "shutoff", "unknown"
	}
}

// Put inserts a domain as if a previous vmd (or someone else) had defined
// it; its owner is read from xml.
func (f *Fake) Put(domainXML string, running bool) error {
	if err := f.Define(context.Background(), domainXML); err != nil {
		return err
	}
	name, _ := domainName(domainXML)
	if running {
		return f.Start(context.Background(), name)
	}
	return nil
}

// Get returns a copy of the named domain.
func (f *Fake) Get(name string) (Domain, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.domains[name]
	if !ok {
		return Domain{}, false
	}
	return *d, true
}

// Len returns the number of defined domains.
func (f *Fake) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.domains)
}

// domainName reads <name> from a domain XML.
func domainName(domainXML string) (string, error) {
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(domainXML); err != nil {
		return "", err
	}
	if dom.Name == "" {
		return "", fmt.Errorf("domain xml has no name")
	}
	return dom.Name, nil
}
