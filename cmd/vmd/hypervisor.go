package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/vmdhq/vmd/internal/config"
	"github.com/vmdhq/vmd/internal/errdefs"
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
	// caps caches Capabilities; a reconnect invalidates it (forward).
	caps     *capsCache
	events   chan hypervisor.Event
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

// newLibvirtDriver wraps conn and starts forwarding its events.
func newLibvirtDriver(conn *libvirt.Conn, kb *config.KernelBoot) *libvirtDriver {
	d := &libvirtDriver{conn: conn, kernelBoot: kb, events: make(chan hypervisor.Event, 256),
		stop: make(chan struct{}), done: make(chan struct{})}
	d.caps = newCapsCache(d.fetchCapabilities)
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
			if ev.Type == libvirt.EventReconnected {
				// Before the event goes out: the reconciles it wakes
				// must see the restarted libvirtd's view.
				d.caps.invalidate()
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

// Capabilities implements hypervisor.Driver from a cache (see capsCache).
func (d *libvirtDriver) Capabilities(ctx context.Context) (hypervisor.HostCapabilities, error) {
	return d.caps.get(ctx)
}

// fetchCapabilities asks libvirtd for the host capabilities.
func (d *libvirtDriver) fetchCapabilities(ctx context.Context) (hypervisor.HostCapabilities, error) {
	c, err := d.conn.Capabilities(ctx)
	if err != nil {
		return hypervisor.HostCapabilities{}, err
	}
	return hypervisor.HostCapabilities{CPUs: c.CPUs, HugepagesKiB: maps.Clone(c.HugepagesKiB)}, nil
}

// lazyDriver is the hypervisor.Driver vmd runs with: it connects to
// libvirt in the background, retrying with back-off, so the API serves and
// disks import even while libvirtd is down (at boot vmd may start first).
// Until connected every call fails with errdefs.ErrUnavailable naming the
// URI and the last error, which the instance reconciler shows in status
// and retries. Once connected it forwards the real driver's events, led by
// a Reconnected event so every instance is looked at again.
type lazyDriver struct {
	uri    string
	log    *slog.Logger
	events chan hypervisor.Event
	ready  chan struct{}
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.RWMutex
	drv     *libvirtDriver
	lastErr error
}

var _ hypervisor.Driver = (*lazyDriver)(nil)

// startDriver begins connecting to cfg.LibvirtURI in the background.
func startDriver(ctx context.Context, cfg *config.Config, log *slog.Logger) *lazyDriver {
	ctx, cancel := context.WithCancel(ctx)
	l := &lazyDriver{
		uri: cfg.LibvirtURI, log: log, events: make(chan hypervisor.Event, 256),
		ready: make(chan struct{}), cancel: cancel, done: make(chan struct{}),
		lastErr: errors.New("not connected yet"),
	}
	go l.connect(ctx, cfg.Testing.KernelBoot)
	return l
}

// connect dials until it succeeds or ctx ends, then forwards events.
func (l *lazyDriver) connect(ctx context.Context, kb *config.KernelBoot) {
	defer close(l.done)
	defer close(l.events)
	delay := time.Second
	for {
		conn, err := libvirt.Open(ctx, l.uri, l.log.With("component", "libvirt"))
		if err == nil {
			d := newLibvirtDriver(conn, kb)
			l.mu.Lock()
			l.drv, l.lastErr = d, nil
			l.mu.Unlock()
			close(l.ready)
			l.log.Info("connected to libvirt", "uri", l.uri)
			l.forward(ctx, d)
			return
		}
		l.mu.Lock()
		l.lastErr = err
		l.mu.Unlock()
		l.log.Warn("connecting to libvirt; retrying", "uri", l.uri, "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// forward copies d's events after announcing the connection.
func (l *lazyDriver) forward(ctx context.Context, d *libvirtDriver) {
	select {
	case l.events <- hypervisor.Event{Type: hypervisor.EventOther, Reconnected: true}:
	case <-ctx.Done():
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-d.Events():
			if !ok {
				return
			}
			select {
			case l.events <- ev:
			case <-ctx.Done():
				return
			}
		}
	}
}

// Ready is closed once libvirt is connected.
func (l *lazyDriver) Ready() <-chan struct{} { return l.ready }

// get returns the connected driver or an ErrUnavailable error.
func (l *lazyDriver) get() (*libvirtDriver, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.drv == nil {
		return nil, fmt.Errorf("connecting to libvirt at %s: %w: %w", l.uri, l.lastErr, errdefs.ErrUnavailable)
	}
	return l.drv, nil
}

// Close stops connecting and closes the connection if there is one.
func (l *lazyDriver) Close() error {
	l.cancel()
	<-l.done
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.drv == nil {
		return nil
	}
	return l.drv.Close()
}

// Define implements hypervisor.Driver.
func (l *lazyDriver) Define(ctx context.Context, domainXML string) error {
	d, err := l.get()
	if err != nil {
		return err
	}
	return d.Define(ctx, domainXML)
}

// Start implements hypervisor.Driver.
func (l *lazyDriver) Start(ctx context.Context, name string) error {
	d, err := l.get()
	if err != nil {
		return err
	}
	return d.Start(ctx, name)
}

// Shutdown implements hypervisor.Driver.
func (l *lazyDriver) Shutdown(ctx context.Context, name string, timeout time.Duration) error {
	d, err := l.get()
	if err != nil {
		return err
	}
	return d.Shutdown(ctx, name, timeout)
}

// Destroy implements hypervisor.Driver.
func (l *lazyDriver) Destroy(ctx context.Context, name string) error {
	d, err := l.get()
	if err != nil {
		return err
	}
	return d.Destroy(ctx, name)
}

// Undefine implements hypervisor.Driver.
func (l *lazyDriver) Undefine(ctx context.Context, name string) error {
	d, err := l.get()
	if err != nil {
		return err
	}
	return d.Undefine(ctx, name)
}

// State implements hypervisor.Driver.
func (l *lazyDriver) State(ctx context.Context, name string) (hypervisor.DomainState, error) {
	d, err := l.get()
	if err != nil {
		return hypervisor.DomainState{}, err
	}
	return d.State(ctx, name)
}

// Owner implements hypervisor.Driver.
func (l *lazyDriver) Owner(ctx context.Context, name string) (hypervisor.DomainOwner, error) {
	d, err := l.get()
	if err != nil {
		return hypervisor.DomainOwner{}, err
	}
	return d.Owner(ctx, name)
}

// List implements hypervisor.Driver.
func (l *lazyDriver) List(ctx context.Context) ([]hypervisor.DomainInfo, error) {
	d, err := l.get()
	if err != nil {
		return nil, err
	}
	return d.List(ctx)
}

// Events implements hypervisor.Driver.
func (l *lazyDriver) Events() <-chan hypervisor.Event { return l.events }

// Capabilities implements hypervisor.Driver.
func (l *lazyDriver) Capabilities(ctx context.Context) (hypervisor.HostCapabilities, error) {
	d, err := l.get()
	if err != nil {
		return hypervisor.HostCapabilities{}, err
	}
	return d.Capabilities(ctx)
}
