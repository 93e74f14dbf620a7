package dnsfwd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// testTimeout is the per-attempt upstream timeout of most tests: short,
// so fail-over tests are fast, and still far above loopback latency.
const testTimeout = 300 * time.Millisecond

// harness is a forwarder serving on 127.0.0.1 random ports.
type harness struct {
	f       *Forwarder
	udp     net.PacketConn
	tcp     net.Listener
	udpAddr string
	tcpAddr string
	cancel  context.CancelFunc
	done    chan error
}

// startForwarder runs a forwarder until the test ends. Zero Timeout in
// cfg becomes testTimeout; the logger writes debug lines to the test log.
func startForwarder(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := newHarness(t, cfg)
	h.serve(t)
	return h
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = testTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	f, err := New(udp, tcp, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{f: f, udp: udp, tcp: tcp, udpAddr: udp.LocalAddr().String(), tcpAddr: tcp.Addr().String()}
}

func (h *harness) serve(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- h.f.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-h.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return within 5s of cancel")
		}
	})
}

// stop cancels Serve and returns its result, failing if it takes long.
func (h *harness) stop(t *testing.T) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	h.cancel()
	select {
	case err := <-h.done:
		h.done <- nil // for the cleanup
		return time.Since(start), err
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return within 5s of cancel")
		return 0, nil
	}
}

// askUDP sends q from a fresh guest socket and returns the first reply
// within wait, or errNoReply.
func askUDP(t *testing.T, addr string, q []byte, wait time.Duration) ([]byte, error) {
	t.Helper()
	c, err := net.Dial("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(q); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, maxMsg)
	n, err := c.Read(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, errNoReply
	}
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// dialTCP opens a guest connection to the forwarder.
func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// askTCP sends q on c and reads one message within wait.
func askTCP(t *testing.T, c net.Conn, q []byte, wait time.Duration) ([]byte, error) {
	t.Helper()
	if err := writeMsg(c, q); err != nil {
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	return readMsg(c)
}

// ask sends q over proto ("udp" or "tcp", a fresh connection) and
// returns the reply.
func (h *harness) ask(t *testing.T, proto string, q []byte, wait time.Duration) ([]byte, error) {
	t.Helper()
	if proto == "udp" {
		return askUDP(t, h.udpAddr, q, wait)
	}
	return askTCP(t, dialTCP(t, h.tcpAddr), q, wait)
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func wantTag(t *testing.T, q, reply []byte, tag byte) {
	t.Helper()
	if !isReplyTo(q, reply) {
		t.Fatalf("reply %x does not answer query %x", reply, q)
	}
	if got := reply[len(reply)-1]; got != tag {
		t.Fatalf("reply came from upstream %d, want %d", got, tag)
	}
}

var protocols = []string{"udp", "tcp"}

// errConnReset is how a closed connection can also show up on the
// guest's side when it had unread data.
var errConnReset = syscall.ECONNRESET

func TestRelay(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			up := startUpstream(t, answers, 1)
			var dials sync.Map
			h := startForwarder(t, Config{Upstreams: []netip.AddrPort{up.addr}, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
				n, _ := dials.LoadOrStore(network+" "+address, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
				var d net.Dialer
				return d.DialContext(ctx, network, address)
			}})
			q := query(0xabcd, "example.com")
			start := time.Now()
			reply, err := h.ask(t, proto, q, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("relayed over %s in %v", proto, time.Since(start))
			if want := answer(q, 0, 1); !bytes.Equal(reply, want) {
				t.Fatalf("reply %x, want the upstream's %x unchanged", reply, want)
			}
			key := proto + " " + up.addr.String()
			if n, ok := dials.Load(key); !ok || n.(*atomic.Int64).Load() != 1 {
				t.Errorf("injected dialer was not used exactly once for %q", key)
			}
			eventually(t, "stats", func() bool {
				return h.f.Stats() == Stats{Queries: 1, Answered: 1}
			})
		})
	}
}

// A guest TCP connection carries several queries, also pipelined, over
// one upstream connection.
func TestTCPConnectionCarriesManyQueries(t *testing.T) {
	up := startUpstream(t, answers, 1)
	h := startForwarder(t, Config{Upstreams: []netip.AddrPort{up.addr}})
	c := dialTCP(t, h.tcpAddr)
	q1, q2, q3 := query(1, "a.example"), query(2, "b.example"), query(3, "c.example")
	if r, err := askTCP(t, c, q1, 2*time.Second); err != nil || !bytes.Equal(r, answer(q1, 0, 1)) {
		t.Fatalf("first reply %x, %v", r, err)
	}
	var pipelined bytes.Buffer
	_ = writeMsg(&pipelined, q2)
	_ = writeMsg(&pipelined, q3)
	if _, err := c.Write(pipelined.Bytes()); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	for _, q := range [][]byte{q2, q3} {
		r, err := readMsg(c)
		if err != nil || !bytes.Equal(r, answer(q, 0, 1)) {
			t.Fatalf("pipelined reply %x, %v; want the answer to %x", r, err, q)
		}
	}
	if n := up.tcpConns.Load(); n != 1 {
		t.Errorf("upstream saw %d tcp connections, want 1 reused", n)
	}
}

// An upstream that closes its idle connection is redialled, not failed
// over from.
func TestTCPRedialsUpstreamThatClosed(t *testing.T) {
	up := startUpstream(t, answersThenCloses, 1)
	h := startForwarder(t, Config{Upstreams: []netip.AddrPort{up.addr}})
	c := dialTCP(t, h.tcpAddr)
	for id := range uint16(3) {
		q := query(id, "example.com")
		r, err := askTCP(t, c, q, 2*time.Second)
		if err != nil {
			t.Fatalf("query %d: %v", id, err)
		}
		wantTag(t, q, r, 1)
		// Let the upstream's FIN arrive before the next query, so the
		// forwarder really reuses a closed connection.
		eventually(t, "upstream to close", func() bool {
			up.mu.Lock()
			defer up.mu.Unlock()
			return len(up.conns) == 0
		})
	}
	// The guest can read a reply before the forwarder counts it.
	eventually(t, "3 answered, no upstream failure", func() bool {
		return h.f.Stats() == Stats{Queries: 3, Answered: 3}
	})
	if n := up.tcpConns.Load(); n != 3 {
		t.Errorf("upstream saw %d connections, want 3", n)
	}
}

func TestFailover(t *testing.T) {
	tests := []struct {
		name  string
		first behaviour
		// closed makes the first upstream a port nothing listens on.
		closed bool
		// protos the case applies to.
		protos []string
	}{
		{name: "silent", first: silent, protos: protocols},
		{name: "wrong id", first: wrongID, protos: protocols},
		{name: "wrong source", first: wrongSource, protos: []string{"udp"}},
		{name: "servfail", first: servFails, protos: protocols},
		{name: "refused", first: refuses, protos: protocols},
		{name: "connection refused", closed: true, protos: protocols},
	}
	for _, tt := range tests {
		for _, proto := range tt.protos {
			t.Run(tt.name+"/"+proto, func(t *testing.T) {
				var first netip.AddrPort
				var firstUp *fakeUpstream
				if tt.closed {
					first = closedPort(t)
				} else {
					firstUp = startUpstream(t, tt.first, 1)
					first = firstUp.addr
				}
				second := startUpstream(t, answers, 2)
				h := startForwarder(t, Config{Upstreams: []netip.AddrPort{first, second.addr}})
				q := query(0x4242, "example.com")
				start := time.Now()
				r, err := h.ask(t, proto, q, 3*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				took := time.Since(start)
				wantTag(t, q, r, 2)
				if firstUp != nil && firstUp.queries() != 1 {
					t.Errorf("first upstream got %d queries, want 1", firstUp.queries())
				}
				// A failure that is not a timeout must not cost one.
				if tt.first != silent && tt.first != wrongID && tt.first != wrongSource && took >= testTimeout {
					t.Errorf("fail-over took %v, want less than the %v attempt timeout", took, testTimeout)
				}
				eventually(t, "stats", func() bool {
					return h.f.Stats() == Stats{Queries: 1, Answered: 1, UpstreamFailures: 1}
				})
			})
		}
	}
}

func TestIgnoresWrongIDThenTakesTheAnswer(t *testing.T) {
	up := startUpstream(t, wrongIDThenAnswers, 1)
	h := startForwarder(t, Config{Upstreams: []netip.AddrPort{up.addr}, Timeout: 5 * time.Second})
	q := query(7, "example.com")
	r, err := h.ask(t, "udp", q, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wantTag(t, q, r, 1)
	if s := h.f.Stats(); s.UpstreamFailures != 0 {
		t.Errorf("stats %+v, want no upstream failure", s)
	}
}

// Wrong-ID and wrong-source datagrams are never relayed to the guest: with
// one such upstream the guest gets the forwarder's SERVFAIL, not them.
func TestUnmatchedRepliesNeverReachTheGuest(t *testing.T) {
	for _, b := range []behaviour{wrongID, wrongSource} {
		up := startUpstream(t, b, 1)
		h := startForwarder(t, Config{Upstreams: []netip.AddrPort{up.addr}})
		q := query(9, "example.com")
		r, err := h.ask(t, "udp", q, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(r, servFail(q)) {
			t.Errorf("behaviour %d: guest got %x, want the forwarder's servfail", b, r)
		}
	}
}

// unconnectedUDP is an upstream socket the kernel does not filter: a
// DialFunc may return one, and then only the forwarder's own source check
// stands between a spoofed datagram and the guest.
type unconnectedUDP struct {
	*net.UDPConn
	to *net.UDPAddr
}

func (u unconnectedUDP) Write(b []byte) (int, error) { return u.WriteTo(b, u.to) }

func TestSourceCheckWithoutKernelFiltering(t *testing.T) {
	spoofer := startUpstream(t, wrongSource, 1)
	h := startForwarder(t, Config{Upstreams: []netip.AddrPort{spoofer.addr}, Dial: func(_ context.Context, network, address string) (net.Conn, error) {
		if network != "udp" {
			return nil, errors.New("udp only")
		}
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return nil, err
		}
		return unconnectedUDP{UDPConn: c, to: net.UDPAddrFromAddrPort(netip.MustParseAddrPort(address))}, nil
	}})
	q := query(9, "example.com")
	r, err := h.ask(t, "udp", q, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r, servFail(q)) {
		t.Errorf("guest got %x, want the forwarder's servfail, not the spoofed reply", r)
	}
}

// Go's own stub resolver, as a stand-in for a guest's: it resolves
// through the forwarder, follows a truncated answer to TCP, and takes the
// forwarder's SERVFAIL as a fast, temporary failure instead of waiting
// out its timeouts.
func TestRealStubResolver(t *testing.T) {
	tests := []struct {
		name      string
		upstream  behaviour
		wantErr   bool
		wantProto []string // protocols the stub used, in order
	}{
		{"answer", validA, false, []string{"udp"}},
		{"truncated then tcp", validTruncatedA, false, []string{"udp", "tcp"}},
		{"no upstream answers", silent, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := startUpstream(t, tt.upstream, 1)
			h := startForwarder(t, Config{Upstreams: []netip.AddrPort{up.addr}})
			var mu sync.Mutex
			var used []string
			r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				mu.Lock()
				used = append(used, network)
				mu.Unlock()
				addr := h.udpAddr
				if network == "tcp" {
					addr = h.tcpAddr
				}
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			}}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			addrs, err := r.LookupNetIP(ctx, "ip4", "host.example.")
			took := time.Since(start)
			t.Logf("lookup took %v over %v", took, used)
			if tt.wantErr {
				// Not a timeout: the stub got, and accepted, an answer
				// (the SERVFAIL) after one attempt timeout of the
				// forwarder per try, instead of waiting out its own 5 s.
				var dnsErr *net.DNSError
				if !errors.As(err, &dnsErr) || !dnsErr.IsTemporary || dnsErr.IsTimeout {
					t.Fatalf("lookup = %v, %v; want a temporary, non-timeout DNS error", addrs, err)
				}
				return
			}
			if err != nil || len(addrs) != 1 || addrs[0] != validAAddr {
				t.Fatalf("lookup = %v, %v; want [%v]", addrs, err, validAAddr)
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(used, tt.wantProto) {
				t.Errorf("stub used %v, want %v", used, tt.wantProto)
			}
		})
	}
}

func TestNoUpstreamAnswers(t *testing.T) {
	headerOnly := query(5, "x")[:headerLen]
	headerOnly[5] = 0 // QDCOUNT 0: no question to echo
	tests := []struct {
		name      string
		upstream  behaviour
		q         []byte
		want      func(q []byte) []byte // nil: no reply (udp) / closed (tcp)
		wantStats Stats
	}{
		{"silent: forwarder's servfail", silent, query(5, "example.com"), servFail,
			Stats{Queries: 1, Unanswered: 1, UpstreamFailures: 1}},
		{"servfail: upstream's own reply", servFails, query(5, "example.com"), func(q []byte) []byte { return answer(q, rcodeServFail, 1) },
			Stats{Queries: 1, Answered: 1, UpstreamFailures: 1}},
		{"refused: upstream's own reply", refuses, query(5, "example.com"), func(q []byte) []byte { return answer(q, rcodeRefused, 1) },
			Stats{Queries: 1, Answered: 1, UpstreamFailures: 1}},
		{"silent, no question: nothing", silent, headerOnly, nil,
			Stats{Queries: 1, Unanswered: 1, UpstreamFailures: 1}},
	}
	for _, tt := range tests {
		for _, proto := range protocols {
			t.Run(tt.name+"/"+proto, func(t *testing.T) {
				up := startUpstream(t, tt.upstream, 1)
				h := startForwarder(t, Config{Upstreams: []netip.AddrPort{up.addr}})
				r, err := h.ask(t, proto, tt.q, testTimeout+time.Second)
				switch {
				case tt.want == nil && proto == "udp":
					if !errors.Is(err, errNoReply) {
						t.Fatalf("got %x, %v; want no reply", r, err)
					}
				case tt.want == nil:
					if !errors.Is(err, io.EOF) {
						t.Fatalf("got %x, %v; want the connection closed", r, err)
					}
				default:
					if err != nil || !bytes.Equal(r, tt.want(tt.q)) {
						t.Fatalf("got %x, %v; want %x", r, err, tt.want(tt.q))
					}
				}
				eventually(t, "stats", func() bool { return h.f.Stats() == tt.wantStats })
			})
		}
	}
}

// A truncated UDP answer reaches the guest unchanged, and the guest's
// retry over TCP gets the full one.
func TestTruncatedPassesThrough(t *testing.T) {
	up := startUpstream(t, truncates, 1)
	h := startForwarder(t, Config{Upstreams: []netip.AddrPort{up.addr}})
	q := query(11, "big.example")
	r, err := h.ask(t, "udp", q, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r[2]&0x02 == 0 || !bytes.Equal(r[headerLen:], answer(q, 0, 1)[headerLen:]) {
		t.Fatalf("udp reply %x, want the upstream's truncated reply unchanged", r)
	}
	r, err = h.ask(t, "tcp", q, 2*time.Second)
	if err != nil || !bytes.Equal(r, answer(q, 0, 1)) {
		t.Fatalf("tcp reply %x, %v; want the full answer", r, err)
	}
}

func TestDropsWhatIsNotAQuery(t *testing.T) {
	q := query(3, "example.com")
	tests := []struct {
		name string
		msg  []byte
	}{
		{"empty", []byte{}}, // over TCP: a zero length prefix
		{"shorter than a header", q[:headerLen-1]},
		{"response", answer(q, 0, 9)},
	}
	for _, tt := range tests {
		for _, proto := range protocols {
			t.Run(tt.name+"/"+proto, func(t *testing.T) {
				up := startUpstream(t, answers, 1)
				h := startForwarder(t, Config{Upstreams: []netip.AddrPort{up.addr}})
				switch proto {
				case "udp":
					if r, err := askUDP(t, h.udpAddr, tt.msg, 200*time.Millisecond); !errors.Is(err, errNoReply) {
						t.Fatalf("got %x, %v; want no reply", r, err)
					}
				case "tcp":
					c := dialTCP(t, h.tcpAddr)
					if r, err := askTCP(t, c, tt.msg, 2*time.Second); !errors.Is(err, io.EOF) {
						t.Fatalf("got %x, %v; want the connection closed", r, err)
					}
				}
				eventually(t, "stats", func() bool { return h.f.Stats() == Stats{Malformed: 1} })
				if n := up.queries(); n != 0 {
					t.Errorf("upstream got %d queries, want none", n)
				}
				// The forwarder still serves after dropping.
				r, err := h.ask(t, proto, q, 2*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				wantTag(t, q, r, 1)
			})
		}
	}
}

func TestClients(t *testing.T) {
	up := startUpstream(t, answers, 1)
	q := query(1, "example.com")
	t.Run("outside", func(t *testing.T) {
		h := startForwarder(t, Config{Upstreams: []netip.AddrPort{up.addr}, Clients: []netip.Prefix{netip.MustParsePrefix("10.240.0.0/24")}})
		if r, err := h.ask(t, "udp", q, 200*time.Millisecond); !errors.Is(err, errNoReply) {
			t.Errorf("udp: got %x, %v; want no reply", r, err)
		}
		if r, err := h.ask(t, "tcp", q, 2*time.Second); !errors.Is(err, io.EOF) && !errors.Is(err, errConnReset) {
			t.Errorf("tcp: got %x, %v; want the connection closed", r, err)
		}
		eventually(t, "stats", func() bool { return h.f.Stats() == Stats{Foreign: 2} })
	})
	t.Run("inside", func(t *testing.T) {
		h := startForwarder(t, Config{Upstreams: []netip.AddrPort{up.addr}, Clients: []netip.Prefix{netip.MustParsePrefix("10.240.0.0/24"), netip.MustParsePrefix("127.0.0.0/8")}})
		for _, proto := range protocols {
			if r, err := h.ask(t, proto, q, 2*time.Second); err != nil {
				t.Errorf("%s: %v", proto, err)
			} else {
				wantTag(t, q, r, 1)
			}
		}
	})
	if n := up.queries(); n != 2 {
		t.Errorf("upstream got %d queries, want only the 2 from inside", n)
	}
}

func TestUDPInflightCap(t *testing.T) {
	up := startUpstream(t, silent, 1)
	h := startForwarder(t, Config{Upstreams: []netip.AddrPort{up.addr}, Timeout: time.Minute, MaxInflight: 2})
	c, err := net.Dial("udp4", h.udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for id := range uint16(5) {
		if _, err := c.Write(query(id, "example.com")); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "2 relayed and 3 dropped", func() bool {
		s := h.f.Stats()
		return s.Queries == 2 && s.Overload == 3 && up.udpQueries.Load() == 2
	})
	// Stopping abandons the queries stuck on the silent upstream at once,
	// not after the one-minute attempt timeout.
	took, err := h.stop(t)
	if err != nil || took > time.Second {
		t.Fatalf("Serve returned %v after %v, want nil within 1s", err, took)
	}
	if s := h.f.Stats(); s.Unanswered != 2 || s.UpstreamFailures != 0 {
		t.Errorf("stats %+v: abandoned queries are unanswered, not upstream failures", s)
	}
}

func TestTCPConnCap(t *testing.T) {
	up := startUpstream(t, answers, 1)
	h := startForwarder(t, Config{Upstreams: []netip.AddrPort{up.addr}, MaxConns: 1})
	q := query(1, "example.com")
	first := dialTCP(t, h.tcpAddr)
	if r, err := askTCP(t, first, q, 2*time.Second); err != nil {
		t.Fatal(err)
	} else {
		wantTag(t, q, r, 1)
	}
	second := dialTCP(t, h.tcpAddr)
	if r, err := askTCP(t, second, q, 2*time.Second); !errors.Is(err, io.EOF) && !errors.Is(err, errConnReset) {
		t.Fatalf("second connection got %x, %v; want it closed", r, err)
	}
	if s := h.f.Stats(); s.Overload != 1 {
		t.Errorf("stats %+v, want 1 overload", s)
	}
	_ = first.Close()
	// The slot is freed once the forwarder notices the close.
	eventually(t, "a new connection to be served", func() bool {
		r, err := askTCP(t, dialTCP(t, h.tcpAddr), q, 2*time.Second)
		return err == nil && isReplyTo(q, r)
	})
}

func TestTCPIdleTimeout(t *testing.T) {
	up := startUpstream(t, answers, 1)
	const idle = 200 * time.Millisecond
	h := startForwarder(t, Config{Upstreams: []netip.AddrPort{up.addr}, IdleTimeout: idle})
	for _, tt := range []struct {
		name string
		send []byte
	}{
		{"nothing sent", nil},
		{"half a length prefix", []byte{0}},
		{"incomplete message", []byte{0, 20, 1, 2, 3}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialTCP(t, h.tcpAddr)
			if _, err := c.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err := c.Read(make([]byte, 1))
			took := time.Since(start)
			if !errors.Is(err, io.EOF) {
				t.Fatalf("read = %v, want EOF", err)
			}
			if took < idle-20*time.Millisecond || took > idle+time.Second {
				t.Errorf("closed after %v, want about %v", took, idle)
			}
		})
	}
}

// goroutinesSettle waits until the goroutine count is back to baseline.
func goroutinesSettle(t *testing.T, baseline int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Serve returns promptly on cancel with queries in flight, open idle and
// busy TCP connections, and leaves no goroutine behind.
func TestServeStopsOnCancel(t *testing.T) {
	good := startUpstream(t, answers, 1)
	stuck := startUpstream(t, silent, 2)
	baseline := runtime.NumGoroutine()
	h := newHarness(t, Config{Upstreams: []netip.AddrPort{stuck.addr, good.addr}, Timeout: time.Minute})
	h.serve(t)
	q := query(1, "example.com")
	for range 3 {
		c, err := net.Dial("udp4", h.udpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(q); err != nil {
			t.Fatal(err)
		}
	}
	idle := dialTCP(t, h.tcpAddr)
	busy := dialTCP(t, h.tcpAddr)
	if err := writeMsg(busy, q); err != nil {
		t.Fatal(err)
	}
	eventually(t, "queries in flight", func() bool { return stuck.queries() == 4 })

	took, err := h.stop(t)
	if err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
	if took > time.Second {
		t.Errorf("Serve took %v to return, want well under 1s", took)
	}
	for _, c := range []net.Conn{idle, busy} {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, errConnReset) {
			t.Errorf("guest connection after stop: read = %v, want closed", err)
		}
	}
	if _, err := net.Dial("tcp4", h.tcpAddr); err == nil {
		t.Error("tcp listener still accepts after Serve returned")
	}
	if s := h.f.Stats(); s.Queries != 4 || s.Unanswered != 4 || s.Answered != 0 {
		t.Errorf("stats %+v, want 4 queries, all unanswered", s)
	}
	goroutinesSettle(t, baseline)
}

func TestClose(t *testing.T) {
	up := startUpstream(t, silent, 1)
	t.Run("while serving", func(t *testing.T) {
		baseline := runtime.NumGoroutine()
		h := newHarness(t, Config{Upstreams: []netip.AddrPort{up.addr}, Timeout: time.Minute})
		h.serve(t)
		if _, err := askUDP(t, h.udpAddr, query(1, "a"), 10*time.Millisecond); !errors.Is(err, errNoReply) {
			t.Fatal(err)
		}
		eventually(t, "query in flight", func() bool { return h.f.Stats().Queries == 1 })
		start := time.Now()
		if err := h.f.Close(); err != nil {
			t.Fatalf("Close = %v", err)
		}
		// Close waits for Serve, so Serve's result is already there.
		select {
		case err := <-h.done:
			h.done <- nil
			if err != nil {
				t.Fatalf("Serve = %v, want nil after Close", err)
			}
		default:
			t.Fatal("Close returned before Serve did")
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("Close took %v", took)
		}
		if err := h.f.Close(); err != nil {
			t.Errorf("second Close = %v", err)
		}
		goroutinesSettle(t, baseline)
	})
	t.Run("before serve", func(t *testing.T) {
		h := newHarness(t, Config{Upstreams: []netip.AddrPort{up.addr}})
		if err := h.f.Close(); err != nil {
			t.Fatal(err)
		}
		if err := h.f.Serve(context.Background()); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Serve after Close = %v, want net.ErrClosed", err)
		}
		if _, err := net.Dial("tcp4", h.tcpAddr); err == nil {
			t.Error("Close left the listener open")
		}
	})
	t.Run("serve twice", func(t *testing.T) {
		h := startForwarder(t, Config{Upstreams: []netip.AddrPort{up.addr}})
		// A relayed query proves the first Serve is running.
		_, _ = askUDP(t, h.udpAddr, query(1, "a"), time.Millisecond)
		eventually(t, "the first Serve to relay", func() bool { return h.f.Stats().Queries == 1 })
		if err := h.f.Serve(context.Background()); err == nil {
			t.Fatal("second Serve succeeded")
		}
	})
}

// Serve returns an error, not nil, when a socket is closed under it.
func TestServeReturnsWhenSocketCloses(t *testing.T) {
	up := startUpstream(t, answers, 1)
	for _, which := range protocols {
		t.Run(which, func(t *testing.T) {
			h := newHarness(t, Config{Upstreams: []netip.AddrPort{up.addr}})
			done := make(chan error, 1)
			go func() { done <- h.f.Serve(context.Background()) }()
			// Let Serve start reading before pulling the socket away.
			if r, err := h.ask(t, which, query(1, "a"), 2*time.Second); err != nil || !isReplyTo(query(1, "a"), r) {
				t.Fatalf("forwarder not serving: %x, %v", r, err)
			}
			if which == "udp" {
				_ = h.udp.Close()
			} else {
				_ = h.tcp.Close()
			}
			select {
			case err := <-done:
				if !errors.Is(err, net.ErrClosed) {
					t.Fatalf("Serve = %v, want an error wrapping net.ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Serve did not return after its socket closed")
			}
			if _, err := net.Dial("tcp4", h.tcpAddr); err == nil {
				t.Error("the other socket was left open")
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	tcp, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	ok := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.53:53")}
	self := udp.LocalAddr().(*net.UDPAddr).AddrPort()
	selfMapped := netip.AddrPortFrom(netip.AddrFrom16(self.Addr().As16()), self.Port())
	tests := []struct {
		name    string
		udp     net.PacketConn
		tcp     net.Listener
		cfg     Config
		wantErr string
	}{
		{"valid", udp, tcp, Config{Upstreams: ok}, ""},
		{"no udp", nil, tcp, Config{Upstreams: ok}, "both"},
		{"no tcp", udp, nil, Config{Upstreams: ok}, "both"},
		{"no upstreams", udp, tcp, Config{}, "no upstream"},
		{"zero upstream", udp, tcp, Config{Upstreams: []netip.AddrPort{{}}}, "invalid upstream"},
		{"port zero", udp, tcp, Config{Upstreams: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:0")}}, "invalid upstream"},
		{"unspecified", udp, tcp, Config{Upstreams: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:53")}}, "invalid upstream"},
		{"itself", udp, tcp, Config{Upstreams: []netip.AddrPort{self}}, "own address"},
		{"itself, ipv4-mapped", udp, tcp, Config{Upstreams: []netip.AddrPort{selfMapped}}, "own address"},
		{"itself over tcp", udp, tcp, Config{Upstreams: []netip.AddrPort{tcp.Addr().(*net.TCPAddr).AddrPort()}}, "own address"},
		{"invalid client prefix", udp, tcp, Config{Upstreams: ok, Clients: []netip.Prefix{{}}}, "client prefix"},
		{"negative timeout", udp, tcp, Config{Upstreams: ok, Timeout: -1}, "negative"},
		{"negative cap", udp, tcp, Config{Upstreams: ok, MaxConns: -1}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.udp, tt.tcp, tt.cfg)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("New = %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("New = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
