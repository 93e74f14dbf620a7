package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/vmdhq/vmd/internal/config"
	"github.com/vmdhq/vmd/internal/hypervisor"
	"github.com/vmdhq/vmd/internal/hypervisor/libvirt"
)

// libvirtDriver adapts *libvirt.Conn to the controller's hypervisor.Driver
// port: it translates the adapter's richer types to the port's and
// forwards lifecycle events. The optional kernelBoot rewrites every domain
// to boot a kernel directly (test lab only, see config.TestingConfig).
type libvirtDriver struct {
	conn       *libvirt.Conn
	kernelBoot *config.KernelBoot
	events     chan hypervisor.Event
	stopOnce   sync.Once
	stop       chan struct{}
	done       chan struct{}
}

// newLibvirtDriver wraps conn and starts forwarding its events.
func newLibvirtDriver(conn *libvirt.Conn, kb *config.KernelBoot) *libvirtDriver {
	d := &libvirtDriver{conn: conn, kernelBoot: kb, events: make(chan hypervisor.Event, 256),
		stop: make(chan struct{}), done: make(chan struct{})}
	go d.forward()
	return d
}

// forward translates libvirt lifecycle events until Close; the outgoing
// channel is closed after the last one.
func (d *libvirtDriver) forward() {
	defer close(d.done)
	defer close(d.events)
	in := d.conn.Events()
	for {
		select {
		case <-d.stop:
			return
		case ev, ok := <-in:
			if !ok {
				return
			}
			select {
			case d.events <- translateEvent(ev):
			case <-d.stop:
				return
			}
		}
	}
}

// translateEvent maps a libvirt event to the port's.
func translateEvent(ev libvirt.LifecycleEvent) hypervisor.Event {
	out := hypervisor.Event{Name: ev.Name, UID: ev.UID, Detail: ev.Detail, Failure: ev.Failure()}
	switch ev.Type {
	case libvirt.EventDefined:
		out.Type = hypervisor.EventDefined
	case libvirt.EventUndefined:
		out.Type = hypervisor.EventUndefined
	case libvirt.EventStarted:
		out.Type = hypervisor.EventStarted
	case libvirt.EventStopped:
		out.Type = hypervisor.EventStopped
	case libvirt.EventCrashed:
		out.Type = hypervisor.EventCrashed
	case libvirt.EventReconnected:
		out.Type, out.Reconnected = hypervisor.EventOther, true
	default:
		out.Type = hypervisor.EventOther
	}
	return out
}

// Close stops forwarding events and closes the connection.
func (d *libvirtDriver) Close() error {
	d.stopOnce.Do(func() { close(d.stop) })
	<-d.done
	return d.conn.Close()
}

// Define implements hypervisor.Driver.
func (d *libvirtDriver) Define(ctx context.Context, domainXML string) error {
	if d.kernelBoot != nil {
		var err error
		if domainXML, err = withKernelBoot(domainXML, *d.kernelBoot); err != nil {
			return err
		}
	}
	return d.conn.Define(ctx, domainXML)
}

// withKernelBoot rewrites a domain to boot kernel and initrd directly
// (test lab only): the disks stay attached, the firmware loads the kernel.
func withKernelBoot(domainXML string, kb config.KernelBoot) (string, error) {
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(domainXML); err != nil {
		return "", fmt.Errorf("parsing domain xml: %w", err)
	}
	if dom.OS == nil {
		dom.OS = &libvirtxml.DomainOS{}
	}
	dom.OS.Kernel, dom.OS.Initrd, dom.OS.Cmdline = kb.Kernel, kb.Initrd, kb.Cmdline
	out, err := dom.Marshal()
	if err != nil {
		return "", fmt.Errorf("writing domain xml: %w", err)
	}
	return out, nil
}

// Start implements hypervisor.Driver.
func (d *libvirtDriver) Start(ctx context.Context, name string) error { return d.conn.Start(ctx, name) }

// Shutdown implements hypervisor.Driver.
func (d *libvirtDriver) Shutdown(ctx context.Context, name string, timeout time.Duration) error {
	return d.conn.Shutdown(ctx, name, timeout)
}

// Destroy implements hypervisor.Driver.
func (d *libvirtDriver) Destroy(ctx context.Context, name string) error {
	return d.conn.Destroy(ctx, name)
}

// Undefine implements hypervisor.Driver.
func (d *libvirtDriver) Undefine(ctx context.Context, name string) error {
	return d.conn.Undefine(ctx, name)
}

// State implements hypervisor.Driver.
func (d *libvirtDriver) State(ctx context.Context, name string) (hypervisor.DomainState, error) {
	st, err := d.conn.State(ctx, name)
	if err != nil {
		return hypervisor.DomainState{}, err
	}
	return hypervisor.DomainState{Exists: st.Exists, Running: st.Running, State: st.State, Reason: st.Reason}, nil
}

// Owner implements hypervisor.Driver.
func (d *libvirtDriver) Owner(ctx context.Context, name string) (hypervisor.DomainOwner, error) {
	return d.conn.Metadata(ctx, name)
}

// List implements hypervisor.Driver.
func (d *libvirtDriver) List(ctx context.Context) ([]hypervisor.DomainInfo, error) {
	infos, err := d.conn.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]hypervisor.DomainInfo, 0, len(infos))
	for _, i := range infos {
		out = append(out, hypervisor.DomainInfo{Name: i.Name, Owner: i.Owner, Running: i.Running, State: i.State, Reason: i.Reason})
	}
	return out, nil
}

// Events implements hypervisor.Driver.
func (d *libvirtDriver) Events() <-chan hypervisor.Event { return d.events }

// Capabilities implements hypervisor.Driver.
func (d *libvirtDriver) Capabilities(ctx context.Context) (hypervisor.HostCapabilities, error) {
	c, err := d.conn.Capabilities(ctx)
	if err != nil {
		return hypervisor.HostCapabilities{}, err
	}
	return hypervisor.HostCapabilities{CPUs: c.CPUs, HugepagesKiB: maps.Clone(c.HugepagesKiB)}, nil
}

// openDriver connects to libvirt, retrying while libvirtd is not up yet
// (vmd may start first at boot) until ctx ends.
func openDriver(ctx context.Context, cfg *config.Config, log *slog.Logger) (*libvirtDriver, error) {
	delay := time.Second
	for {
		conn, err := libvirt.Open(ctx, cfg.LibvirtURI, log.With("component", "libvirt"))
		if err == nil {
			return newLibvirtDriver(conn, cfg.Testing.KernelBoot), nil
		}
		log.Warn("connecting to libvirt; retrying", "uri", cfg.LibvirtURI, "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connecting to libvirt: %w", err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}
