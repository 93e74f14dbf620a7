// Package libvirt is vmd's adapter to libvirtd, and the only package that
// imports the cgo binding libvirt.org/go/libvirt. It moves domain XML
// (built elsewhere, by hypervisor.BuildDomain) in and out of libvirt, turns
// libvirt's lifecycle callbacks into a channel of events, and translates
// libvirt's error codes into errdefs sentinels. It makes no decisions:
// what to define, when to start and when to restart is the controller's.
//
// Every method is idempotent (starting a running domain, destroying an
// absent one are no-ops) and survives a libvirtd restart: a Conn notices
// the lost connection (close callback, keepalive, or a failed call),
// reconnects in the background with back-off, re-registers its event
// callbacks and retries the interrupted call once.
package libvirt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"libvirt.org/go/libvirt"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// Keepalive settings: libvirt pings libvirtd every keepaliveInterval
// seconds and declares the connection dead after keepaliveCount
// unanswered pings, so a hung (not just dead) libvirtd is noticed within
// about 20 s. A dead one is noticed at once through the socket's EOF.
const (
	keepaliveInterval = 5
	keepaliveCount    = 3
)

// Reconnect back-off bounds: the first retry is quick because a restarting
// libvirtd is usually back within a second or two.
const (
	reconnectMinDelay = 100 * time.Millisecond
	reconnectMaxDelay = 5 * time.Second
)

// eventLoop is libvirt's default event loop, which keepalive, close
// callbacks, domain events and console streams all run on. libvirt wants
// it registered once per process before the first connection, and
// nothing can unregister it, so it lives as long as the process.
var eventLoop struct {
	once sync.Once
	err  error
}

// startEventLoop registers libvirt's default event loop implementation and
// runs it on a dedicated goroutine (which holds one OS thread in poll(2)).
func startEventLoop(log *slog.Logger) error {
	eventLoop.once.Do(func() {
		if err := libvirt.EventRegisterDefaultImpl(); err != nil {
			eventLoop.err = fmt.Errorf("registering libvirt event loop: %w", translate(err))
			return
		}
		go func() {
			for {
				if err := libvirt.EventRunDefaultImpl(); err != nil {
					log.Error("running libvirt event loop", "err", translate(err))
					time.Sleep(time.Second) // never spin on a persistent failure
				}
			}
		}()
	})
	return eventLoop.err
}

// session is one libvirt connection and what is registered on it.
type session struct {
	conn       *libvirt.Connect
	callbackID int
}

// Conn is a self-healing connection to one libvirtd. It is safe for
// concurrent use. Open one per process; Close it on shutdown.
type Conn struct {
	uri string
	log *slog.Logger
	hub *eventHub
	// undefineTPM is whether libvirtd knows VIR_DOMAIN_UNDEFINE_TPM
	// (libvirt >= 8.9); older ones reject unknown flags.
	undefineTPM bool

	mu     sync.Mutex
	cur    *session      // nil while disconnected
	ready  chan struct{} // closed while cur != nil
	stale  []*session    // lost sessions the reconnect loop must release
	closed bool

	lost chan struct{} // wakes the reconnect loop; capacity 1
	done chan struct{} // closed by Close
	wg   sync.WaitGroup
}

// Open connects to libvirtd at uri (e.g. "qemu:///system"), enables
// keepalive, registers for domain lifecycle events, and starts the
// background reconnect loop. The first connection must succeed (or fail
// with ErrUnavailable): a daemon that starts before libvirtd should retry
// Open, not run half-configured.
func Open(ctx context.Context, uri string, log *slog.Logger) (*Conn, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("libvirt_uri", uri)
	if err := startEventLoop(log); err != nil {
		return nil, fmt.Errorf("connecting to libvirt %s: %w", uri, err)
	}
	c := &Conn{
		uri:   uri,
		log:   log,
		hub:   newEventHub(log, defaultEventBuffer),
		ready: make(chan struct{}),
		lost:  make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	s, err := c.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting to libvirt %s: %w", uri, err)
	}
	if v, err := s.conn.GetLibVersion(); err == nil && v >= 8_009_000 {
		c.undefineTPM = true
	}
	c.cur = s
	close(c.ready)
	c.wg.Add(1)
	go c.reconnectLoop()
	return c, nil
}

// dial opens a connection and registers keepalive, the close callback
// and the lifecycle callback on it. libvirt's connect call cannot be
// cancelled; ctx is only checked before it starts.
func (c *Conn) dial(ctx context.Context) (*session, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrUnavailable, err)
	}
	conn, err := libvirt.NewConnect(c.uri)
	if err != nil {
		return nil, asUnavailable(err)
	}
	s := &session{conn: conn}
	fail := func(step string, err error) (*session, error) {
		_, _ = conn.Close()
		return nil, fmt.Errorf("%s: %w", step, asUnavailable(err))
	}
	if err := conn.SetKeepAlive(keepaliveInterval, keepaliveCount); err != nil {
		return fail("enabling keepalive", err)
	}
	if err := conn.RegisterCloseCallback(func(_ *libvirt.Connect, reason libvirt.ConnectCloseReason) {
		c.markLost(s, closeReason(reason))
	}); err != nil {
		return fail("registering close callback", err)
	}
	id, err := conn.DomainEventLifecycleRegister(nil, c.onLifecycle)
	if err != nil {
		return fail("registering lifecycle events", err)
	}
	s.callbackID = id
	return s, nil
}

// asUnavailable translates err and makes sure it matches ErrUnavailable:
// whatever stops vmd from connecting, libvirt is unavailable to it.
func asUnavailable(err error) error {
	err = translate(err)
	if errors.Is(err, errdefs.ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", errdefs.ErrUnavailable, err)
}

// closeReason names why libvirt closed a connection.
func closeReason(r libvirt.ConnectCloseReason) string {
	switch r {
	case libvirt.CONNECT_CLOSE_REASON_EOF:
		return "end of file from libvirtd"
	case libvirt.CONNECT_CLOSE_REASON_KEEPALIVE:
		return "keepalive timeout"
	case libvirt.CONNECT_CLOSE_REASON_CLIENT:
		return "closed by client"
	default:
		return "connection error"
	}
}

// onLifecycle runs on libvirt's event loop: translate and hand over,
// without calling libvirt.
func (c *Conn) onLifecycle(_ *libvirt.Connect, d *libvirt.Domain, ev *libvirt.DomainEventLifecycle) {
	name, err := d.GetName() // local: the name travels with the event
	if err != nil {
		c.log.Warn("reading domain name of lifecycle event", "err", translate(err))
		return
	}
	t, detail := translateEvent(ev.Event, ev.Detail)
	c.hub.publish(LifecycleEvent{Name: name, Type: t, Detail: detail, Time: time.Now()})
}

// markLost records that s no longer works and wakes the reconnect loop.
// It may run on libvirt's event loop (close callback) and so only
// flips state; the loop releases the connection.
func (c *Conn) markLost(s *session, why string) {
	c.mu.Lock()
	if c.cur != s || c.closed {
		c.mu.Unlock()
		return
	}
	c.cur = nil
	c.ready = make(chan struct{})
	c.stale = append(c.stale, s)
	c.mu.Unlock()
	c.log.Warn("lost connection to libvirtd, reconnecting", "reason", why)
	select {
	case c.lost <- struct{}{}:
	default:
	}
}

// reconnectLoop waits for a lost connection and dials until it is back,
// backing off exponentially, until Close.
func (c *Conn) reconnectLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.done:
			return
		case <-c.lost:
		}
		c.releaseStale()
		delay := reconnectMinDelay
		for attempt := 1; ; attempt++ {
			s, err := c.dial(context.Background())
			if err == nil {
				c.mu.Lock()
				if c.closed {
					c.mu.Unlock()
					s.release()
					return
				}
				c.cur = s
				close(c.ready)
				c.mu.Unlock()
				c.log.Info("reconnected to libvirtd", "attempts", attempt)
				c.hub.publish(LifecycleEvent{Type: EventReconnected, Time: time.Now()})
				break
			}
			if attempt == 1 || attempt%10 == 0 {
				c.log.Warn("reconnecting to libvirtd", "attempt", attempt, "retry_in", delay, "err", err)
			}
			select {
			case <-c.done:
				return
			case <-time.After(delay):
			}
			delay = min(2*delay, reconnectMaxDelay)
		}
	}
}

// releaseStale closes the sessions markLost retired.
func (c *Conn) releaseStale() {
	c.mu.Lock()
	stale := c.stale
	c.stale = nil
	c.mu.Unlock()
	for _, s := range stale {
		s.release()
	}
}

// release deregisters what dial registered and closes the connection.
// Errors are expected (the peer is usually gone) and ignored.
func (s *session) release() {
	_ = s.conn.DomainEventDeregister(s.callbackID)
	_ = s.conn.UnregisterCloseCallback()
	_, _ = s.conn.Close()
}

// session returns the live connection, waiting for a reconnect bounded by
// ctx.
func (c *Conn) session(ctx context.Context) (*session, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, fmt.Errorf("libvirt connection closed: %w", errdefs.ErrUnavailable)
		}
		s, ready := c.cur, c.ready
		c.mu.Unlock()
		if s != nil {
			return s, nil
		}
		select {
		case <-ready:
		case <-c.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for libvirtd: %w: %w", errdefs.ErrUnavailable, ctx.Err())
		}
	}
}

// do runs fn on the live connection and translates its error with op as
// context. When fn fails because the connection died under it, do marks
// the connection lost, waits for the reconnect (bounded by ctx) and runs
// fn once more; every operation of this package is idempotent, so a retry
// after an unknown outcome is safe.
func (c *Conn) do(ctx context.Context, op string, fn func(*libvirt.Connect) error) error {
	for attempt := 0; ; attempt++ {
		s, err := c.session(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		err = fn(s.conn)
		if err == nil {
			return nil
		}
		if !isConnectionError(err) || attempt > 0 {
			return wrap(op, err)
		}
		c.markLost(s, translate(err).Error())
	}
}

// Events returns the lifecycle events of every domain on this libvirtd,
// plus EventReconnected after a reconnect. The channel is buffered; when
// the reader falls behind, the oldest events are dropped (DroppedEvents
// counts them), so consumers must treat events as hints to observe, not
// as a complete log. It is closed by Close.
func (c *Conn) Events() <-chan LifecycleEvent { return c.hub.ch }

// DroppedEvents returns how many events were dropped because the Events
// reader lagged; export it as a metric.
func (c *Conn) DroppedEvents() uint64 { return c.hub.droppedCount() }

// Close stops reconnecting, deregisters the callbacks, closes the
// connection and the Events channel. It is idempotent. Domains keep
// running.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.done)
	s := c.cur
	c.cur = nil
	c.mu.Unlock()
	c.wg.Wait()
	c.releaseStale()
	var err error
	if s != nil {
		_ = s.conn.DomainEventDeregister(s.callbackID)
		_ = s.conn.UnregisterCloseCallback()
		if _, cerr := s.conn.Close(); cerr != nil {
			err = wrap("closing libvirt connection", cerr)
		}
	}
	c.hub.close()
	return err
}
