package dhcp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxPacket bounds a received datagram. DHCP messages are at most a few
// hundred bytes (576 is the guaranteed minimum; option 57 may raise it);
// anything beyond an Ethernet MTU is not DHCP.
const maxPacket = 1500

// Config configures a Server.
type Config struct {
	// ServerID is the server's address on the bridge (the tenant gateway),
	// sent as option 54 and matched against a REQUEST's option 54.
	ServerID netip.Addr
	// Logger receives one line per answered or ignored request (default
	// slog.Default()).
	Logger *slog.Logger
}

// Server answers DHCP on one bridge with static leases. It is safe for
// concurrent use: SetLeases may run while Serve does.
type Server struct {
	conn     net.PacketConn
	serverID netip.Addr
	log      *slog.Logger
	leases   atomic.Pointer[leaseTable]
}

// NewServer returns a server reading from conn, usually from Listen. The
// server starts with no leases, so it stays silent until SetLeases.
func NewServer(conn net.PacketConn, cfg Config) (*Server, error) {
	if !cfg.ServerID.Is4() {
		return nil, fmt.Errorf("creating dhcp server: server id %s is not IPv4", cfg.ServerID)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{conn: conn, serverID: cfg.ServerID, log: log.With("dhcp_server", cfg.ServerID.String())}
	empty := leaseTable{}
	s.leases.Store(&empty)
	return s, nil
}

// SetLeases replaces the whole lease table atomically: a request is
// answered either entirely from the old table or entirely from the new
// one. An invalid lease, a duplicate MAC or a duplicate address rejects
// the call and keeps the old table.
func (s *Server) SetLeases(leases []Lease) error {
	t, err := newLeaseTable(leases)
	if err != nil {
		return fmt.Errorf("setting dhcp leases: %w", err)
	}
	s.leases.Store(&t)
	return nil
}

// Serve answers requests until ctx ends (then it returns nil) or the
// socket fails. It closes the socket when it returns. Malformed packets
// are logged at debug level and dropped: a guest can send anything.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = s.conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	defer s.conn.Close()
	buf := make([]byte, maxPacket)
	for {
		n, _, err := s.conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("serving dhcp: reading: %w", err)
		}
		s.handle(buf[:n])
	}
}

// handle answers one datagram. Write errors are logged, not fatal: a
// guest that went away must not stop the server for its neighbours.
func (s *Server) handle(pkt []byte) {
	req, err := Parse(pkt)
	if err != nil {
		s.log.Debug("dropping packet", "error", err)
		return
	}
	r, outcome := respond(req, *s.leases.Load(), s.serverID)
	log := s.log.With("mac", req.HardwareAddr().String(), "type", req.Type().String(), "xid", req.XID, "outcome", string(outcome))
	switch outcome {
	case OutcomeDeclined:
		// The guest saw its address answered by someone else: either
		// another guest is spoofing (anti-spoofing should prevent that)
		// or the subnet overlaps something on the host.
		log.Warn("guest declined its address")
	case OutcomeUnknownMAC, OutcomeRelayed, OutcomeNotRequest, OutcomeUnsupported:
		log.Debug("ignoring request")
	default:
		log.Debug("handled request")
	}
	if r == nil {
		return
	}
	if _, err := s.conn.WriteTo(r.Msg.Marshal(), net.UDPAddrFromAddrPort(r.Dst)); err != nil {
		log.Warn("sending reply", "dst", r.Dst.String(), "error", err)
	}
}

// ListenOption configures Listen.
type ListenOption func(*listenOptions)

type listenOptions struct {
	netnsFd int
	port    int
}

// InNetNS creates the socket in the network namespace behind fd (an open
// /run/netns/NAME or /proc/PID/ns/net) instead of the caller's. A socket
// stays in the namespace it was created in, so only creation needs it.
func InNetNS(fd int) ListenOption { return func(o *listenOptions) { o.netnsFd = fd } }

// Listen opens the server socket for one bridge: UDP 0.0.0.0:67 bound to
// the interface with SO_BINDTODEVICE, so each bridge gets its own socket
// (the kernel lets sockets bound to different devices share a port) and
// a guest's broadcast is answered only by its own tenant's server, and
// with SO_BROADCAST, so replies to 255.255.255.255 are allowed and leave
// through that interface. Binding 0.0.0.0 rather than the gateway address
// is required to receive requests sent to 255.255.255.255.
func Listen(ifname string, opts ...ListenOption) (net.PacketConn, error) {
	o := listenOptions{netnsFd: -1, port: ServerPort}
	for _, f := range opts {
		f(&o)
	}
	if ifname == "" || len(ifname) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("listening for dhcp: invalid interface name %q", ifname)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname); serr != nil {
				serr = fmt.Errorf("binding to device %s: %w", ifname, serr)
				return
			}
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
				serr = fmt.Errorf("enabling broadcast: %w", serr)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	var conn net.PacketConn
	listen := func() error {
		var err error
		conn, err = lc.ListenPacket(context.Background(), "udp4", fmt.Sprintf("0.0.0.0:%d", o.port))
		return err
	}
	var err error
	if o.netnsFd >= 0 {
		err = inNetNS(o.netnsFd, listen)
	} else {
		err = listen()
	}
	if err != nil {
		return nil, fmt.Errorf("listening for dhcp on %s: %w", ifname, err)
	}
	return conn, nil
}

// inNetNS runs fn on an OS thread switched into the namespace behind fd.
// The goroutine exits with the thread still locked, so the Go runtime
// throws that thread away instead of reusing a thread in the wrong
// namespace: no "switch back" can fail half-way.
func inNetNS(fd int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering network namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
