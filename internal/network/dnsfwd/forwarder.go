package dnsfwd

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Config fields left zero.
const (
	// DefaultTimeout bounds one attempt at one upstream. With the three
	// upstreams resolv.conf allows, the third is asked after 4 s, still
	// inside a glibc guest's default 5 s timeout for its query, so even
	// two dead upstreams cost the guest latency rather than a retry.
	DefaultTimeout = 2 * time.Second
	// DefaultMaxInflight caps UDP queries being relayed at once (each
	// holds one upstream socket).
	DefaultMaxInflight = 256
	// DefaultMaxConns caps guest TCP connections (each holds up to one
	// upstream connection per upstream). TCP is the fallback for
	// truncated answers, so far fewer are needed than UDP slots.
	DefaultMaxConns = 64
	// DefaultIdleTimeout closes a guest TCP connection that has not sent a
	// complete query for this long: RFC 7766 §6.2.3 asks for "a few
	// seconds" at least, and long enough for the guest to pipeline.
	DefaultIdleTimeout = 10 * time.Second
)

// DialFunc opens a connection to an upstream; network is "udp" or "tcp",
// address is host:port. It has the signature of (*net.Dialer).DialContext.
// A UDP connection must be connected (as net.Dial's are), so that the
// kernel discards datagrams from other sources.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Config configures a Forwarder.
type Config struct {
	// Upstreams are the resolvers queries are relayed to, tried in order.
	// At least one is required; ParseResolvConf reads the host's.
	Upstreams []netip.AddrPort
	// Clients, when not empty, lists the source prefixes that are served
	// (usually the tenant subnet); queries from elsewhere are dropped.
	// Empty serves every source the firewall lets through.
	Clients []netip.Prefix
	// Dial opens upstream sockets (default: a zero net.Dialer). It is
	// called on the forwarder's goroutines, so sockets land in the
	// network namespace of whatever thread the Go runtime picks: vmd's.
	Dial DialFunc
	// Timeout bounds one attempt at one upstream, dial included (default
	// DefaultTimeout).
	Timeout time.Duration
	// MaxInflight caps UDP queries relayed at once; queries beyond it are
	// dropped (default DefaultMaxInflight).
	MaxInflight int
	// MaxConns caps concurrent guest TCP connections; connections beyond
	// it are closed at once (default DefaultMaxConns).
	MaxConns int
	// IdleTimeout closes a guest TCP connection that has not sent a
	// complete query for this long (default DefaultIdleTimeout).
	IdleTimeout time.Duration
	// Logger receives debug lines for failures (default slog.Default()).
	Logger *slog.Logger
}

// Stats are the forwarder's counters since New. Every query accepted for
// relaying ends as exactly one of Answered or Unanswered (once it is no
// longer in flight); Malformed, Foreign and Overload count messages and
// connections that were never relayed.
type Stats struct {
	// Queries is the number of guest queries accepted for relaying (UDP
	// datagrams and TCP messages).
	Queries uint64
	// Answered counts replies delivered to a guest, including an
	// upstream's SERVFAIL or REFUSED relayed because no upstream did
	// better.
	Answered uint64
	// Unanswered counts queries no upstream answered: the guest got the
	// forwarder's own SERVFAIL, or nothing (question not echoable, guest
	// gone, shutting down).
	Unanswered uint64
	// UpstreamFailures counts failed attempts at an upstream: dial, write
	// or read errors, timeouts, and SERVFAIL/NOTIMP/REFUSED replies.
	UpstreamFailures uint64
	// Malformed counts guest messages dropped for not being a query
	// (shorter than a header, a response, a zero-length TCP message).
	Malformed uint64
	// Foreign counts queries and connections dropped because their source
	// is outside Config.Clients.
	Foreign uint64
	// Overload counts UDP queries and TCP connections dropped because
	// MaxInflight or MaxConns was reached.
	Overload uint64
}

type counters struct {
	queries, answered, unanswered, upstreamFailures, malformed, foreign, overload atomic.Uint64
}

// Forwarder relays DNS queries from guests on one tenant gateway to the
// upstream resolvers. Create it with New, run it with Serve.
type Forwarder struct {
	udp         net.PacketConn
	tcp         net.Listener
	upstreams   []netip.AddrPort
	clients     []netip.Prefix
	dial        DialFunc
	timeout     time.Duration
	idleTimeout time.Duration
	log         *slog.Logger

	// inflight and conns are semaphores: a send that would block means
	// the cap is reached.
	inflight chan struct{}
	conns    chan struct{}

	stats counters

	closeOnce sync.Once
	closeErr  error

	mu      sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc // Serve's, set while it runs
	done    chan struct{}      // closed when Serve returns

	workers sync.WaitGroup // UDP relays and TCP connection handlers
}

// New returns a forwarder serving queries that arrive on udp and tcp,
// usually sockets bound to the tenant gateway's port 53, opened by the
// caller in the bridges' network namespace. Once New succeeds the
// forwarder owns both (Serve and Close close them); when it fails they
// are still the caller's to close.
func New(udp net.PacketConn, tcp net.Listener, cfg Config) (*Forwarder, error) {
	if udp == nil || tcp == nil {
		return nil, errors.New("creating dns forwarder: both a udp socket and a tcp listener are required")
	}
	if len(cfg.Upstreams) == 0 {
		return nil, errors.New("creating dns forwarder: no upstream resolvers")
	}
	if cfg.Timeout < 0 || cfg.IdleTimeout < 0 || cfg.MaxInflight < 0 || cfg.MaxConns < 0 {
		return nil, errors.New("creating dns forwarder: timeouts and limits must not be negative")
	}
	local := localAddrs(udp, tcp)
	for _, u := range cfg.Upstreams {
		if !u.IsValid() || u.Port() == 0 || u.Addr().IsUnspecified() {
			return nil, fmt.Errorf("creating dns forwarder: invalid upstream %s", u)
		}
		// Relaying to itself would turn every query into a loop that only
		// MaxInflight ends. An unspecified bind address is not detected.
		if slices.Contains(local, normalize(u)) {
			return nil, fmt.Errorf("creating dns forwarder: upstream %s is the forwarder's own address", u)
		}
	}
	for _, p := range cfg.Clients {
		if !p.IsValid() {
			return nil, fmt.Errorf("creating dns forwarder: invalid client prefix %s", p)
		}
	}
	f := &Forwarder{
		udp:         udp,
		tcp:         tcp,
		upstreams:   slices.Clone(cfg.Upstreams),
		clients:     slices.Clone(cfg.Clients),
		dial:        cfg.Dial,
		timeout:     cmp.Or(cfg.Timeout, DefaultTimeout),
		idleTimeout: cmp.Or(cfg.IdleTimeout, DefaultIdleTimeout),
		inflight:    make(chan struct{}, cmp.Or(cfg.MaxInflight, DefaultMaxInflight)),
		conns:       make(chan struct{}, cmp.Or(cfg.MaxConns, DefaultMaxConns)),
		log:         cfg.Logger,
		done:        make(chan struct{}),
	}
	if f.dial == nil {
		var d net.Dialer
		f.dial = d.DialContext
	}
	if f.log == nil {
		f.log = slog.Default()
	}
	f.log = f.log.With("dns_forwarder", udp.LocalAddr().String())
	return f, nil
}

// Stats returns a snapshot of the counters. It is safe to call at any
// time, also after Serve returned.
func (f *Forwarder) Stats() Stats {
	return Stats{
		Queries:          f.stats.queries.Load(),
		Answered:         f.stats.answered.Load(),
		Unanswered:       f.stats.unanswered.Load(),
		UpstreamFailures: f.stats.upstreamFailures.Load(),
		Malformed:        f.stats.malformed.Load(),
		Foreign:          f.stats.foreign.Load(),
		Overload:         f.stats.overload.Load(),
	}
}

// Serve relays queries until ctx ends or Close is called (it returns nil
// then) or a socket fails (it returns the error). Either way it closes
// both sockets, abandons queries in flight and returns only after every
// goroutine it started has exited. Serve may be called once.
func (f *Forwarder) Serve(ctx context.Context) error {
	f.mu.Lock()
	if f.started || f.closed {
		f.mu.Unlock()
		return fmt.Errorf("serving dns: forwarder already served or closed: %w", net.ErrClosed)
	}
	f.started = true
	ctx, cancel := context.WithCancel(ctx)
	f.cancel = cancel
	f.mu.Unlock()
	defer close(f.done)
	defer cancel()

	// Closing the sockets is what unblocks ReadFrom and Accept.
	stop := context.AfterFunc(ctx, func() { _ = f.closeSockets() })
	defer stop()

	errc := make(chan error, 2)
	var loops sync.WaitGroup
	loops.Go(func() { errc <- f.serveUDP(ctx) })
	loops.Go(func() { errc <- f.serveTCP(ctx) })
	err := <-errc
	cancel()
	_ = f.closeSockets()
	loops.Wait()
	f.workers.Wait()

	// A loop returns nil only once ctx has ended; an error from one
	// means a socket failed while serving, unless Close raced with it.
	f.mu.Lock()
	closed := f.closed
	f.mu.Unlock()
	if closed {
		return nil
	}
	return err
}

// Close stops the forwarder: it closes both sockets, abandons queries in
// flight and, if Serve is running, waits until it has returned. It may be
// called more than once and before Serve (which then returns at once).
func (f *Forwarder) Close() error {
	f.mu.Lock()
	f.closed = true
	cancel, started := f.cancel, f.started
	f.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	err := f.closeSockets()
	if started {
		<-f.done
	}
	return err
}

func (f *Forwarder) closeSockets() error {
	f.closeOnce.Do(func() {
		f.closeErr = errors.Join(f.udp.Close(), f.tcp.Close())
		if f.closeErr != nil {
			f.closeErr = fmt.Errorf("closing dns forwarder sockets: %w", f.closeErr)
		}
	})
	return f.closeErr
}

// serveUDP reads guest datagrams and starts one relay per admitted query.
// It returns nil when ctx ended, otherwise the read error (a closed or
// failed socket): reads on an unconnected UDP socket do not fail for
// transient reasons.
func (f *Forwarder) serveUDP(ctx context.Context) error {
	buf := make([]byte, maxMsg)
	for {
		n, src, err := f.udp.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("serving dns: reading udp: %w", err)
		}
		if q, ok := f.admitUDP(buf[:n], src); ok {
			f.workers.Go(func() { f.relayUDP(ctx, q, src) })
		}
	}
}

// admitUDP decides whether a datagram is relayed. When it is, it returns
// a copy (buf is reused) and holds an inflight slot that relayUDP frees.
func (f *Forwarder) admitUDP(msg []byte, src net.Addr) ([]byte, bool) {
	if err := checkQuery(msg); err != nil {
		f.stats.malformed.Add(1)
		f.log.Debug("dropping udp message", "src", src.String(), "len", len(msg), "error", err)
		return nil, false
	}
	if !f.allowed(src) {
		f.stats.foreign.Add(1)
		f.log.Debug("dropping udp query from outside the served prefixes", "src", src.String())
		return nil, false
	}
	select {
	case f.inflight <- struct{}{}:
	default:
		f.stats.overload.Add(1)
		f.log.Debug("dropping udp query: too many in flight", "src", src.String(), "max", cap(f.inflight))
		return nil, false
	}
	f.stats.queries.Add(1)
	return bytes.Clone(msg), true
}

// relayUDP answers one admitted query and frees its inflight slot.
func (f *Forwarder) relayUDP(ctx context.Context, query []byte, src net.Addr) {
	defer func() { <-f.inflight }()
	reply, fromUpstream := f.resolve(ctx, query, f.exchangeUDP)
	var err error
	if reply != nil {
		if _, err = f.udp.WriteTo(reply, src); err != nil {
			f.log.Debug("sending udp reply", "dst", src.String(), "error", err)
		}
	}
	f.count(reply, fromUpstream, err)
}

// count records how an admitted query ended: Answered when an upstream's
// reply was delivered, Unanswered otherwise.
func (f *Forwarder) count(reply []byte, fromUpstream bool, sendErr error) {
	if reply != nil && fromUpstream && sendErr == nil {
		f.stats.answered.Add(1)
	} else {
		f.stats.unanswered.Add(1)
	}
}

// exchangeFunc sends query to upstream i and returns its matching reply.
type exchangeFunc func(ctx context.Context, i int, query []byte) ([]byte, error)

// resolve tries the upstreams in order and returns the reply to send to
// the guest (nil for none) and whether it came from an upstream rather
// than being the forwarder's own SERVFAIL.
func (f *Forwarder) resolve(ctx context.Context, query []byte, exchange exchangeFunc) (reply []byte, fromUpstream bool) {
	var fallback []byte
	for i, up := range f.upstreams {
		if ctx.Err() != nil {
			break
		}
		reply, err := exchange(ctx, i, query)
		if err != nil {
			if ctx.Err() != nil {
				break // shutting down: not the upstream's fault
			}
			f.stats.upstreamFailures.Add(1)
			f.log.Debug("upstream failed", "upstream", up.String(), "id", queryID(query), "error", err)
			continue
		}
		if retryable(reply) {
			f.stats.upstreamFailures.Add(1)
			f.log.Debug("upstream cannot answer", "upstream", up.String(), "id", queryID(query), "rcode", rcode(reply))
			fallback = reply
			continue
		}
		return reply, true
	}
	switch {
	case ctx.Err() != nil:
		return nil, false
	case fallback != nil:
		return fallback, true
	}
	return servFail(query), false
}

func queryID(msg []byte) uint16 { return binary.BigEndian.Uint16(msg[0:2]) }

// exchangeUDP relays query to upstream i over a fresh connected UDP
// socket and waits, within the attempt timeout, for a datagram that
// answers it; other datagrams (wrong ID, not a response, wrong source)
// are ignored, since an off-path spoofer must not be able to cut the
// wait short either.
func (f *Forwarder) exchangeUDP(ctx context.Context, i int, query []byte) ([]byte, error) {
	up := f.upstreams[i]
	actx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	c, err := f.dial(actx, "udp", up.String())
	if err != nil {
		return nil, fmt.Errorf("dialing udp: %w", err)
	}
	defer c.Close()
	deadline, _ := actx.Deadline()
	if err := c.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("setting deadline: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := c.Write(query); err != nil {
		return nil, fmt.Errorf("sending udp query: %w", err)
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	pc, isPacketConn := c.(net.PacketConn)
	for {
		var n int
		if isPacketConn {
			var from net.Addr
			n, from, err = pc.ReadFrom(buf)
			if err == nil && !sentBy(from, up) {
				f.log.Debug("ignoring udp reply from another source", "upstream", up.String(), "from", from.String())
				continue
			}
		} else {
			n, err = c.Read(buf)
		}
		if err != nil {
			return nil, fmt.Errorf("waiting for udp reply: %w", err)
		}
		if isReplyTo(query, buf[:n]) {
			return bytes.Clone(buf[:n]), nil
		}
		f.log.Debug("ignoring udp datagram that does not answer the query", "upstream", up.String(), "id", queryID(query), "len", n)
	}
}

// bufPool holds maximum-size receive buffers for upstream UDP replies:
// a reply can be as large as the guest's EDNS buffer size says, and up
// to MaxInflight relays need one at the same time.
var bufPool = sync.Pool{New: func() any { b := make([]byte, maxMsg); return &b }}

// sentBy reports whether a datagram's source is the upstream. A source
// that is not a *net.UDPAddr cannot be checked and is left to the
// connected socket's filtering.
func sentBy(from net.Addr, up netip.AddrPort) bool {
	ua, ok := from.(*net.UDPAddr)
	if !ok {
		return true
	}
	return normalize(ua.AddrPort()) == normalize(up)
}

// normalize makes addresses comparable across the IPv4/IPv4-mapped and
// zone spellings of the same endpoint.
func normalize(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}

// localAddrs returns the forwarder's own bound addresses that are
// specific enough to compare upstreams against.
func localAddrs(udp net.PacketConn, tcp net.Listener) []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range []net.Addr{udp.LocalAddr(), tcp.Addr()} {
		var ap netip.AddrPort
		switch a := a.(type) {
		case *net.UDPAddr:
			ap = a.AddrPort()
		case *net.TCPAddr:
			ap = a.AddrPort()
		default:
			continue
		}
		if ap.IsValid() && !ap.Addr().IsUnspecified() {
			out = append(out, normalize(ap))
		}
	}
	return out
}

// allowed reports whether a guest address may be served.
func (f *Forwarder) allowed(src net.Addr) bool {
	if len(f.clients) == 0 {
		return true
	}
	var a netip.Addr
	switch s := src.(type) {
	case *net.UDPAddr:
		a = s.AddrPort().Addr()
	case *net.TCPAddr:
		a = s.AddrPort().Addr()
	default:
		return false
	}
	a = a.Unmap().WithZone("")
	for _, p := range f.clients {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// serveTCP accepts guest connections and starts one handler for each,
// up to MaxConns. It returns nil when ctx ended and an error when the
// listener was closed from elsewhere. Other accept errors (EMFILE,
// ECONNABORTED) are transient: it backs off and retries, as net/http
// does, rather than taking UDP service down with it.
func (f *Forwarder) serveTCP(ctx context.Context) error {
	var backoff time.Duration
	for {
		c, err := f.tcp.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("serving dns: accepting tcp: %w", err)
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			f.log.Debug("accepting tcp connection", "error", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		if !f.allowed(c.RemoteAddr()) {
			f.stats.foreign.Add(1)
			f.log.Debug("closing tcp connection from outside the served prefixes", "src", c.RemoteAddr().String())
			_ = c.Close()
			continue
		}
		select {
		case f.conns <- struct{}{}:
		default:
			f.stats.overload.Add(1)
			f.log.Debug("closing tcp connection: too many open", "src", c.RemoteAddr().String(), "max", cap(f.conns))
			_ = c.Close()
			continue
		}
		f.workers.Go(func() {
			defer func() { <-f.conns }()
			f.serveConn(ctx, c)
		})
	}
}

// serveConn relays the queries of one guest TCP connection, one at a
// time, until the guest closes it, idles, sends something that is not a
// query, or no upstream answers and there is no SERVFAIL to send (closing
// tells the guest at once).
func (f *Forwarder) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	// Closing, not a deadline: the loop below sets deadlines of its own.
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	log := f.log.With("src", c.RemoteAddr().String())
	ups := &upstreamConns{conns: make([]net.Conn, len(f.upstreams))}
	defer ups.close()
	exchange := func(ctx context.Context, i int, query []byte) ([]byte, error) {
		return f.exchangeTCP(ctx, ups, i, query)
	}
	for {
		if err := c.SetReadDeadline(time.Now().Add(f.idleTimeout)); err != nil {
			return
		}
		query, err := readMsg(c)
		if err == nil {
			err = checkQuery(query)
		}
		if errors.Is(err, errZeroLength) || errors.Is(err, errShort) || errors.Is(err, errResponse) {
			f.stats.malformed.Add(1)
			log.Debug("closing tcp connection: not a query", "len", len(query), "error", err)
			return
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				log.Debug("closing tcp connection", "error", err)
			}
			return
		}
		f.stats.queries.Add(1)
		reply, fromUpstream := f.resolve(ctx, query, exchange)
		if reply != nil {
			if err = c.SetWriteDeadline(time.Now().Add(f.idleTimeout)); err == nil {
				err = writeMsg(c, reply)
			}
			if err != nil {
				log.Debug("sending tcp reply", "error", err)
			}
		}
		f.count(reply, fromUpstream, err)
		if reply == nil || err != nil {
			return
		}
	}
}

// upstreamConns are one guest connection's upstream TCP connections,
// indexed like Forwarder.upstreams; nil means not connected.
type upstreamConns struct {
	conns []net.Conn
}

func (u *upstreamConns) drop(i int) {
	if u.conns[i] != nil {
		_ = u.conns[i].Close()
		u.conns[i] = nil
	}
}

func (u *upstreamConns) close() {
	for i := range u.conns {
		u.drop(i)
	}
}

// exchangeTCP relays query to upstream i over the guest connection's
// upstream connection, dialing it if needed. Only one query is
// outstanding per upstream connection, so the next message is the reply:
// one with another ID means the stream is not what we think it is, and
// the connection is dropped. A reused connection that fails before
// anything was read, other than by timeout, is most likely one the
// upstream closed while idle; the query is retried once on a fresh one.
func (f *Forwarder) exchangeTCP(ctx context.Context, ups *upstreamConns, i int, query []byte) ([]byte, error) {
	up := f.upstreams[i]
	actx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	for {
		c, reused := ups.conns[i], true
		if c == nil {
			reused = false
			var err error
			if c, err = f.dial(actx, "tcp", up.String()); err != nil {
				return nil, fmt.Errorf("dialing tcp: %w", err)
			}
			ups.conns[i] = c
		}
		reply, err := f.roundTripTCP(ctx, actx, c, query)
		if err == nil {
			return reply, nil
		}
		ups.drop(i)
		if reused && actx.Err() == nil && !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, errMismatch) {
			f.log.Debug("reused upstream tcp connection failed, redialing", "upstream", up.String(), "error", err)
			continue
		}
		return nil, err
	}
}

var (
	errMismatch   = errors.New("reply does not answer the query")
	errZeroLength = errors.New("zero-length message")
)

// roundTripTCP writes query to c and reads its reply, bounded by actx's
// deadline and abandoned when ctx ends.
func (f *Forwarder) roundTripTCP(ctx, actx context.Context, c net.Conn, query []byte) ([]byte, error) {
	deadline, _ := actx.Deadline()
	if err := c.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("setting deadline: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := writeMsg(c, query); err != nil {
		return nil, fmt.Errorf("sending tcp query: %w", err)
	}
	reply, err := readMsg(c)
	if err != nil {
		return nil, fmt.Errorf("reading tcp reply: %w", err)
	}
	if !isReplyTo(query, reply) {
		return nil, fmt.Errorf("tcp reply of %d bytes: %w", len(reply), errMismatch)
	}
	return reply, nil
}

// readMsg reads one length-prefixed DNS message (RFC 1035 §4.2.2). The
// 16-bit prefix bounds it to 65535 bytes; a zero length is an error.
// A clean EOF before the prefix is io.EOF; one inside a message is
// io.ErrUnexpectedEOF.
func readMsg(r io.Reader) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint16(l[:])
	if n == 0 {
		return nil, errZeroLength
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return msg, nil
}

// writeMsg writes one length-prefixed message in a single write, so the
// prefix and the message leave in one segment.
func writeMsg(w io.Writer, msg []byte) error {
	if len(msg) > maxMsg {
		return fmt.Errorf("message of %d bytes exceeds %d", len(msg), maxMsg)
	}
	buf := make([]byte, 2+len(msg))
	binary.BigEndian.PutUint16(buf, uint16(len(msg)))
	copy(buf[2:], msg)
	_, err := w.Write(buf)
	return err
}
