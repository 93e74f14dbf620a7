package libvirt

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"strconv"
	"time"

	"libvirt.org/go/libvirt"

	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/hypervisor"
)

// DomainStatus is what libvirt reports about one domain.
type DomainStatus struct {
	// Exists is false when no domain of that name is defined.
	Exists bool
	// Running is true while a qemu process exists for the domain (running,
	// paused, shutting down, suspended or crashed-and-preserved): starting
	// it again would fail, stopping it would not.
	Running bool
	// State is libvirt's state word: "running", "blocked", "paused",
	// "shutdown" (shutting down), "shutoff", "crashed", "pmsuspended".
	State string
	// Reason is libvirt's reason for the state, e.g. "booted" while
	// running, and for "shutoff": "shutdown" (the guest powered off),
	// "destroyed" (someone destroyed it), "crashed" (qemu died or was
	// killed, or the guest crashed), "daemon" (libvirtd found it gone).
	Reason string
}

// Hypervisor returns the status in the port's vocabulary.
func (s DomainStatus) Hypervisor() hypervisor.DomainState {
	return hypervisor.DomainState{Exists: s.Exists, Running: s.Running, Reason: s.Reason}
}

// DomainInfo describes one domain carrying vmd metadata, for re-adoption
// after a vmd restart.
type DomainInfo struct {
	Name string
	// Owner is the VMInstance the domain belongs to, from the metadata of
	// the running instance (or of the definition when shut off); its
	// Generation is the spec generation the guest runs with.
	Owner hypervisor.DomainOwner
	// DefinedGeneration is the generation of the persistent definition,
	// which the next boot uses; greater than Owner.Generation while a
	// redefined domain waits for a restart.
	DefinedGeneration int64
	Running           bool
	State, Reason     string
}

// undefineFlags remove everything libvirt keeps for a domain besides its
// definition: the EFI variable store, managed-save image and snapshot and
// checkpoint metadata (the vTPM state is added when supported). Disk
// images are never libvirt's to remove here: VMDisks outlive instances.
const undefineFlags = libvirt.DOMAIN_UNDEFINE_NVRAM |
	libvirt.DOMAIN_UNDEFINE_MANAGED_SAVE |
	libvirt.DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
	libvirt.DOMAIN_UNDEFINE_CHECKPOINTS_METADATA

// withDomain looks up name and runs fn on it, freeing the handle after.
func withDomain(conn *libvirt.Connect, name string, fn func(*libvirt.Domain) error) error {
	dom, err := conn.LookupDomainByName(name)
	if err != nil {
		return err
	}
	defer func() { _ = dom.Free() }()
	return fn(dom)
}

// Define creates the persistent domain described by domainXML, or updates
// the definition of the existing domain of the same name and UUID.
// libvirt validates the XML against its schema first (ErrInvalid). A
// running domain keeps running with its old definition; the new one takes
// effect at the next start. Redefining with a different UUID fails
// (libvirt refuses to change a domain's UUID).
func (c *Conn) Define(ctx context.Context, domainXML string) error {
	name := "(unnamed)"
	var head struct {
		Name string `xml:"name"`
	}
	if err := xml.Unmarshal([]byte(domainXML), &head); err == nil && head.Name != "" {
		name = head.Name
	}
	return c.do(ctx, "defining domain "+name, func(conn *libvirt.Connect) error {
		dom, err := conn.DomainDefineXMLFlags(domainXML, libvirt.DOMAIN_DEFINE_VALIDATE)
		if err != nil {
			return err
		}
		defer func() { _ = dom.Free() }()
		if owner, ok, err := readOwner(dom, libvirt.DOMAIN_AFFECT_CONFIG); err == nil && ok {
			c.hub.rememberUID(name, owner.UID)
		}
		return nil
	})
}

// Start boots the defined domain. Starting a running domain is a no-op;
// an absent one is ErrNotFound.
func (c *Conn) Start(ctx context.Context, name string) error {
	return c.do(ctx, "starting domain "+name, func(conn *libvirt.Connect) error {
		return withDomain(conn, name, func(dom *libvirt.Domain) error {
			err := dom.Create()
			if err != nil && hasCode(err, libvirt.ERR_OPERATION_INVALID) {
				// "domain is already running" — or some other state conflict,
				// which IsActive tells apart.
				if active, aerr := dom.IsActive(); aerr == nil && active {
					return nil
				}
			}
			return err
		})
	})
}

// Destroy stops the domain at once (SIGTERM to qemu, SIGKILL if it does
// not exit). A domain that is not running, or absent, is a no-op. The
// event reports Stopped/destroyed.
func (c *Conn) Destroy(ctx context.Context, name string) error {
	return c.do(ctx, "destroying domain "+name, func(conn *libvirt.Connect) error {
		err := withDomain(conn, name, func(dom *libvirt.Domain) error {
			return dom.DestroyFlags(libvirt.DOMAIN_DESTROY_DEFAULT)
		})
		if hasCode(err, libvirt.ERR_NO_DOMAIN) || hasCode(err, libvirt.ERR_OPERATION_INVALID) {
			return nil // absent, or "domain is not running"
		}
		return err
	})
}

// Shutdown asks the guest to power off by pressing the ACPI power button,
// waits (on lifecycle events, not by polling) up to timeout for the domain
// to stop, and destroys it if it has not (or at once when the domain
// cannot take the button, e.g. paused). A domain that is not running, or
// absent, is a no-op. ctx bounds the whole call; when it ends first,
// the domain is left as it is.
func (c *Conn) Shutdown(ctx context.Context, name string, timeout time.Duration) error {
	op := "shutting down domain " + name
	// Subscribe before asking, so the stop event cannot slip between the
	// request and the wait.
	wake, stop := c.hub.wait(name)
	defer stop()
	err := c.do(ctx, op, func(conn *libvirt.Connect) error {
		return withDomain(conn, name, func(dom *libvirt.Domain) error {
			return dom.ShutdownFlags(libvirt.DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
		})
	})
	switch {
	case hasCode(err, libvirt.ERR_NO_DOMAIN):
		return nil
	case hasCode(err, libvirt.ERR_OPERATION_INVALID):
		// Not running (done), or in a state that cannot take the button
		// (paused, starting up): then only Destroy stops it.
		st, serr := c.State(ctx, name)
		if serr != nil {
			return fmt.Errorf("%s: %w", op, serr)
		}
		if !st.Running {
			return nil
		}
		c.log.Info("domain cannot take the ACPI power button, destroying", "domain", name, "state", st.State)
		if derr := c.Destroy(ctx, name); derr != nil {
			return fmt.Errorf("%s: %w", op, derr)
		}
		return nil
	case err != nil:
		return err
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		// Look after every wake-up: events name the domain but a
		// reconnect wakes everyone, and the stop may predate the wait.
		st, err := c.State(ctx, name)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		if !st.Running {
			return nil
		}
		select {
		case <-wake:
		case <-timer.C:
			c.log.Info("guest ignored the ACPI power button, destroying", "domain", name, "timeout", timeout)
			if err := c.Destroy(ctx, name); err != nil {
				return fmt.Errorf("%s: after %s: %w", op, timeout, err)
			}
			return nil
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", op, ctx.Err())
		}
	}
}

// Undefine removes the domain's definition with its NVRAM, vTPM state,
// managed-save image and snapshot metadata. An absent domain is a no-op.
// A running domain becomes transient and keeps running until stopped:
// callers Destroy first.
func (c *Conn) Undefine(ctx context.Context, name string) error {
	flags := undefineFlags
	if c.undefineTPM {
		flags |= libvirt.DOMAIN_UNDEFINE_TPM
	}
	return c.do(ctx, "undefining domain "+name, func(conn *libvirt.Connect) error {
		err := withDomain(conn, name, func(dom *libvirt.Domain) error {
			return dom.UndefineFlags(flags)
		})
		if hasCode(err, libvirt.ERR_NO_DOMAIN) {
			return nil
		}
		// A transient domain (already undefined, still running) has no
		// definition left to remove.
		if hasCode(err, libvirt.ERR_OPERATION_INVALID) {
			return c.stillPersistent(conn, name, err)
		}
		return err
	})
}

// stillPersistent returns cause if name still has a persistent definition,
// nil if it is transient or gone.
func (c *Conn) stillPersistent(conn *libvirt.Connect, name string, cause error) error {
	err := withDomain(conn, name, func(dom *libvirt.Domain) error {
		persistent, err := dom.IsPersistent()
		if err != nil {
			return err
		}
		if persistent {
			return cause
		}
		return nil
	})
	if hasCode(err, libvirt.ERR_NO_DOMAIN) {
		return nil
	}
	return err
}

// State reports whether the domain exists and runs, with libvirt's state
// and reason. An absent domain is not an error: Exists is false.
func (c *Conn) State(ctx context.Context, name string) (DomainStatus, error) {
	var st DomainStatus
	err := c.do(ctx, "reading state of domain "+name, func(conn *libvirt.Connect) error {
		err := withDomain(conn, name, func(dom *libvirt.Domain) error {
			state, reason, err := dom.GetState()
			if err != nil {
				return err
			}
			st = statusOf(state, reason)
			return nil
		})
		if hasCode(err, libvirt.ERR_NO_DOMAIN) {
			st = DomainStatus{}
			return nil
		}
		return err
	})
	return st, err
}

// Metadata returns the VMInstance recorded in the domain's vmd metadata:
// of the running instance when the domain runs (so Generation is what the
// guest was booted with), of the definition otherwise. It is ErrNotFound
// when the domain is absent or carries no vmd metadata (not vmd's).
func (c *Conn) Metadata(ctx context.Context, name string) (hypervisor.DomainOwner, error) {
	var owner hypervisor.DomainOwner
	err := c.do(ctx, "reading vmd metadata of domain "+name, func(conn *libvirt.Connect) error {
		return withDomain(conn, name, func(dom *libvirt.Domain) error {
			o, ok, err := readOwner(dom, libvirt.DOMAIN_AFFECT_CURRENT)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("no vmd metadata: %w", errdefs.ErrNotFound)
			}
			owner = o
			return nil
		})
	})
	if err == nil {
		c.hub.rememberUID(name, owner.UID)
	}
	return owner, err
}

// List returns every domain carrying vmd metadata, running or not, in
// libvirt's order. Domains without it (defined by people or other tools)
// are left out: they are not vmd's. A domain vanishing during the listing
// is skipped.
func (c *Conn) List(ctx context.Context) ([]DomainInfo, error) {
	var out []DomainInfo
	err := c.do(ctx, "listing domains", func(conn *libvirt.Connect) error {
		doms, err := conn.ListAllDomains(0)
		if err != nil {
			return err
		}
		defer func() {
			for i := range doms {
				_ = doms[i].Free()
			}
		}()
		out = out[:0]
		for i := range doms {
			info, ok, err := describe(&doms[i])
			if hasCode(err, libvirt.ERR_NO_DOMAIN) {
				continue
			}
			if err != nil {
				return err
			}
			if ok {
				out = append(out, info)
			}
		}
		return nil
	})
	for _, d := range out {
		c.hub.rememberUID(d.Name, d.Owner.UID)
	}
	return out, err
}

// describe reads one domain for List; ok is false when it is not vmd's.
func describe(dom *libvirt.Domain) (DomainInfo, bool, error) {
	name, err := dom.GetName()
	if err != nil {
		return DomainInfo{}, false, err
	}
	owner, ok, err := readOwner(dom, libvirt.DOMAIN_AFFECT_CURRENT)
	if err != nil || !ok {
		return DomainInfo{}, false, err
	}
	state, reason, err := dom.GetState()
	if err != nil {
		return DomainInfo{}, false, err
	}
	st := statusOf(state, reason)
	info := DomainInfo{
		Name: name, Owner: owner, DefinedGeneration: owner.Generation,
		Running: st.Running, State: st.State, Reason: st.Reason,
	}
	if st.Running {
		persistent, err := dom.IsPersistent()
		if err != nil {
			return DomainInfo{}, false, err
		}
		if persistent {
			defined, ok, err := readOwner(dom, libvirt.DOMAIN_AFFECT_CONFIG)
			if err != nil {
				return DomainInfo{}, false, err
			}
			if ok {
				info.DefinedGeneration = defined.Generation
			}
		}
	}
	return info, true, nil
}

// readOwner reads vmd's metadata element of the live or persistent
// definition; ok is false when there is none.
func readOwner(dom *libvirt.Domain, impact libvirt.DomainModificationImpact) (hypervisor.DomainOwner, bool, error) {
	raw, err := dom.GetMetadata(libvirt.DOMAIN_METADATA_ELEMENT, hypervisor.MetadataNamespace, impact)
	if hasCode(err, libvirt.ERR_NO_DOMAIN_METADATA) {
		return hypervisor.DomainOwner{}, false, nil
	}
	if err != nil {
		return hypervisor.DomainOwner{}, false, err
	}
	owner, err := parseOwner(raw)
	if err != nil {
		return hypervisor.DomainOwner{}, false, err
	}
	return owner, true, nil
}

// ownerElement is vmd's metadata element as libvirt returns it from
// GetMetadata: libvirt selects the element by hypervisor.MetadataNamespace
// and returns it with the namespace stripped (libvirt 9.0 in the lab), so
// the names carry no namespace and match with or without one.
type ownerElement struct {
	XMLName    xml.Name `xml:"instance"`
	Namespace  string   `xml:"namespace"`
	Name       string   `xml:"name"`
	UID        string   `xml:"uid"`
	Generation string   `xml:"generation"`
}

// parseOwner decodes vmd's metadata element. A missing uid is an error:
// an element without it cannot be re-adopted.
func parseOwner(raw string) (hypervisor.DomainOwner, error) {
	var el ownerElement
	if err := xml.Unmarshal([]byte(raw), &el); err != nil {
		return hypervisor.DomainOwner{}, fmt.Errorf("parsing vmd metadata: %w", err)
	}
	if el.UID == "" {
		return hypervisor.DomainOwner{}, errors.New("parsing vmd metadata: no uid")
	}
	owner := hypervisor.DomainOwner{Namespace: el.Namespace, Name: el.Name, UID: el.UID}
	if el.Generation != "" {
		g, err := strconv.ParseInt(el.Generation, 10, 64)
		if err != nil {
			return hypervisor.DomainOwner{}, fmt.Errorf("parsing vmd metadata generation %q: %w", el.Generation, err)
		}
		owner.Generation = g
	}
	return owner, nil
}

// ResizeDisk grows the disk whose target (e.g. "vda", as in the domain
// XML) is given to bytes, online, through qemu: the guest sees the new
// size at once. Resizing to the current size is a no-op; shrinking is
// refused with ErrInvalid (it would destroy data). The domain must be
// running (ErrConflict otherwise): a shut-off domain's image is resized
// with qemu-img by the storage layer.
func (c *Conn) ResizeDisk(ctx context.Context, name, target string, bytes uint64) error {
	return c.do(ctx, fmt.Sprintf("resizing disk %s of domain %s", target, name), func(conn *libvirt.Connect) error {
		return withDomain(conn, name, func(dom *libvirt.Domain) error {
			info, err := dom.GetBlockInfo(target, 0)
			if err != nil {
				return err
			}
			switch {
			case bytes == info.Capacity:
				return nil
			case bytes < info.Capacity:
				return fmt.Errorf("shrinking from %d to %d bytes: %w", info.Capacity, bytes, errdefs.ErrInvalid)
			}
			return dom.BlockResize(target, bytes, libvirt.DOMAIN_BLOCK_RESIZE_BYTES)
		})
	})
}

// stateNames and reasonNames name libvirt's virDomainState values and the
// reasons of each state (virDomain<State>Reason).
var (
	stateNames = map[libvirt.DomainState]string{
		libvirt.DOMAIN_NOSTATE:     "nostate",
		libvirt.DOMAIN_RUNNING:     "running",
		libvirt.DOMAIN_BLOCKED:     "blocked",
		libvirt.DOMAIN_PAUSED:      "paused",
		libvirt.DOMAIN_SHUTDOWN:    "shutdown",
		libvirt.DOMAIN_SHUTOFF:     "shutoff",
		libvirt.DOMAIN_CRASHED:     "crashed",
		libvirt.DOMAIN_PMSUSPENDED: "pmsuspended",
	}
	reasonNames = map[libvirt.DomainState]map[int]string{
		libvirt.DOMAIN_RUNNING: {
			int(libvirt.DOMAIN_RUNNING_UNKNOWN):            "unknown",
			int(libvirt.DOMAIN_RUNNING_BOOTED):             "booted",
			int(libvirt.DOMAIN_RUNNING_MIGRATED):           "migrated",
			int(libvirt.DOMAIN_RUNNING_RESTORED):           "restored",
			int(libvirt.DOMAIN_RUNNING_FROM_SNAPSHOT):      "from-snapshot",
			int(libvirt.DOMAIN_RUNNING_UNPAUSED):           "unpaused",
			int(libvirt.DOMAIN_RUNNING_MIGRATION_CANCELED): "migration-canceled",
			int(libvirt.DOMAIN_RUNNING_SAVE_CANCELED):      "save-canceled",
			int(libvirt.DOMAIN_RUNNING_WAKEUP):             "wakeup",
			int(libvirt.DOMAIN_RUNNING_CRASHED):            "crashed",
			int(libvirt.DOMAIN_RUNNING_POSTCOPY):           "postcopy",
			int(libvirt.DOMAIN_RUNNING_POSTCOPY_FAILED):    "postcopy-failed",
		},
		libvirt.DOMAIN_BLOCKED: {
			int(libvirt.DOMAIN_BLOCKED_UNKNOWN): "unknown",
		},
		libvirt.DOMAIN_PAUSED: {
			int(libvirt.DOMAIN_PAUSED_UNKNOWN):         "unknown",
			int(libvirt.DOMAIN_PAUSED_USER):            "user",
			int(libvirt.DOMAIN_PAUSED_MIGRATION):       "migration",
			int(libvirt.DOMAIN_PAUSED_SAVE):            "save",
			int(libvirt.DOMAIN_PAUSED_DUMP):            "dump",
			int(libvirt.DOMAIN_PAUSED_IOERROR):         "ioerror",
			int(libvirt.DOMAIN_PAUSED_WATCHDOG):        "watchdog",
			int(libvirt.DOMAIN_PAUSED_FROM_SNAPSHOT):   "from-snapshot",
			int(libvirt.DOMAIN_PAUSED_SHUTTING_DOWN):   "shutting-down",
			int(libvirt.DOMAIN_PAUSED_SNAPSHOT):        "snapshot",
			int(libvirt.DOMAIN_PAUSED_CRASHED):         "crashed",
			int(libvirt.DOMAIN_PAUSED_STARTING_UP):     "starting-up",
			int(libvirt.DOMAIN_PAUSED_POSTCOPY):        "postcopy",
			int(libvirt.DOMAIN_PAUSED_POSTCOPY_FAILED): "postcopy-failed",
			int(libvirt.DOMAIN_PAUSED_API_ERROR):       "api-error",
		},
		libvirt.DOMAIN_SHUTDOWN: {
			int(libvirt.DOMAIN_SHUTDOWN_UNKNOWN): "unknown",
			int(libvirt.DOMAIN_SHUTDOWN_USER):    "user",
		},
		libvirt.DOMAIN_SHUTOFF: {
			int(libvirt.DOMAIN_SHUTOFF_UNKNOWN):       "unknown",
			int(libvirt.DOMAIN_SHUTOFF_SHUTDOWN):      "shutdown",
			int(libvirt.DOMAIN_SHUTOFF_DESTROYED):     "destroyed",
			int(libvirt.DOMAIN_SHUTOFF_CRASHED):       "crashed",
			int(libvirt.DOMAIN_SHUTOFF_MIGRATED):      "migrated",
			int(libvirt.DOMAIN_SHUTOFF_SAVED):         "saved",
			int(libvirt.DOMAIN_SHUTOFF_FAILED):        "failed",
			int(libvirt.DOMAIN_SHUTOFF_FROM_SNAPSHOT): "from-snapshot",
			int(libvirt.DOMAIN_SHUTOFF_DAEMON):        "daemon",
		},
		libvirt.DOMAIN_CRASHED: {
			int(libvirt.DOMAIN_CRASHED_UNKNOWN):  "unknown",
			int(libvirt.DOMAIN_CRASHED_PANICKED): "panicked",
		},
		libvirt.DOMAIN_PMSUSPENDED: {
			int(libvirt.DOMAIN_PMSUSPENDED_UNKNOWN): "unknown",
		},
	}
)

// statusOf names a state and reason from virDomainGetState. Every state
// but shutoff (and the never-reported nostate) has a qemu process.
func statusOf(state libvirt.DomainState, reason int) DomainStatus {
	st := DomainStatus{Exists: true}
	var ok bool
	if st.State, ok = stateNames[state]; !ok {
		st.State = "state-" + strconv.Itoa(int(state))
	}
	if st.Reason, ok = reasonNames[state][reason]; !ok {
		st.Reason = "reason-" + strconv.Itoa(reason)
	}
	st.Running = state != libvirt.DOMAIN_SHUTOFF && state != libvirt.DOMAIN_NOSTATE
	return st
}
