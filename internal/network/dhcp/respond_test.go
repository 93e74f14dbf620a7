package dhcp

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vmdhq/vmd/internal/errdefs"
)

var (
	gw       = netip.MustParseAddr("10.100.0.1")
	knownMAC = net.HardwareAddr{0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}
	otherMAC = net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
)

func testLease() Lease {
	return Lease{
		MAC:       knownMAC,
		Addr:      netip.MustParsePrefix("10.100.0.2/24"),
		Router:    gw,
		DNS:       []netip.Addr{gw},
		Hostname:  "web",
		Domain:    "default.vmd",
		MTU:       1450,
		LeaseTime: 600 * time.Second,
	}
}

// request builds a client message of typ from mac with extra options.
func request(typ MessageType, mac net.HardwareAddr, mod func(m *Message)) *Message {
	m := &Message{
		Op: OpRequest, HType: HTypeEthernet, HLen: 6, XID: 0x1234, Flags: FlagBroadcast,
		CIAddr: netip.IPv4Unspecified(), YIAddr: netip.IPv4Unspecified(),
		SIAddr: netip.IPv4Unspecified(), GIAddr: netip.IPv4Unspecified(),
		Options: []Option{{Code: OptMessageType, Data: []byte{byte(typ)}}},
	}
	copy(m.CHAddr[:], mac)
	if mod != nil {
		mod(m)
	}
	return m
}

func withOpt(code uint8, data []byte) func(*Message) {
	return func(m *Message) { m.SetOption(code, data) }
}

func TestRespond(t *testing.T) {
	bcast := "255.255.255.255:68"
	tests := []struct {
		name     string
		req      *Message
		want     Outcome
		wantDst  string
		wantYI   string
		wantOpts map[uint8][]byte // exact data of these options
		noOpts   []uint8          // options that must be absent
	}{
		{
			name: "discover from known mac gets offer with everything", req: request(Discover, knownMAC, nil),
			want: OutcomeOffer, wantDst: bcast, wantYI: "10.100.0.2",
			wantOpts: map[uint8][]byte{
				OptMessageType: {byte(Offer)}, OptServerID: {10, 100, 0, 1}, OptLeaseTime: {0, 0, 2, 0x58},
				OptRenewalTime: {0, 0, 1, 0x2c}, OptRebindingTime: {0, 0, 0x02, 0x0d},
				OptSubnetMask: {255, 255, 255, 0}, OptRouter: {10, 100, 0, 1}, OptDNS: {10, 100, 0, 1},
				OptHostname: []byte("web"), OptDomainName: []byte("default.vmd"), OptMTU: {0x05, 0xaa},
			},
		},
		{
			name: "parameter request list limits optional options",
			req:  request(Discover, knownMAC, withOpt(OptParamRequestList, []byte{1, 3, 6, 12})),
			want: OutcomeOffer, wantDst: bcast, wantYI: "10.100.0.2",
			wantOpts: map[uint8][]byte{OptHostname: []byte("web"), OptSubnetMask: {255, 255, 255, 0}},
			noOpts:   []uint8{OptDomainName, OptMTU},
		},
		{
			name: "discover from unknown mac is ignored", req: request(Discover, otherMAC, nil),
			want: OutcomeUnknownMAC,
		},
		{
			name: "request selecting our offer is acked",
			req: request(Request, knownMAC, func(m *Message) {
				withOpt(OptRequestedIP, []byte{10, 100, 0, 2})(m)
				withOpt(OptServerID, []byte{10, 100, 0, 1})(m)
			}),
			want: OutcomeAck, wantDst: bcast, wantYI: "10.100.0.2",
			wantOpts: map[uint8][]byte{OptMessageType: {byte(Ack)}},
		},
		{
			name: "request for wrong address is naked",
			req:  request(Request, knownMAC, withOpt(OptRequestedIP, []byte{10, 100, 0, 9})),
			want: OutcomeNak, wantDst: bcast, wantYI: "0.0.0.0",
			wantOpts: map[uint8][]byte{OptMessageType: {byte(Nak)}, OptServerID: {10, 100, 0, 1}},
			noOpts:   []uint8{OptLeaseTime, OptSubnetMask, OptRouter},
		},
		{
			name: "request without any address is naked",
			req:  request(Request, knownMAC, nil),
			want: OutcomeNak, wantDst: bcast, wantYI: "0.0.0.0",
		},
		{
			name: "request for another server is ignored",
			req: request(Request, knownMAC, func(m *Message) {
				withOpt(OptRequestedIP, []byte{10, 100, 0, 2})(m)
				withOpt(OptServerID, []byte{10, 100, 0, 99})(m)
			}),
			want: OutcomeOtherServer,
		},
		{
			name: "renewing request is unicast to ciaddr",
			req:  request(Request, knownMAC, func(m *Message) { m.CIAddr = netip.MustParseAddr("10.100.0.2"); m.Flags = 0 }),
			want: OutcomeAck, wantDst: "10.100.0.2:68", wantYI: "10.100.0.2",
		},
		{
			name: "request from unknown mac is not naked",
			req:  request(Request, otherMAC, withOpt(OptRequestedIP, []byte{10, 100, 0, 2})),
			want: OutcomeUnknownMAC,
		},
		{
			name: "inform gets parameters but no lease",
			req:  request(Inform, knownMAC, func(m *Message) { m.CIAddr = netip.MustParseAddr("10.100.0.2") }),
			want: OutcomeInform, wantDst: "10.100.0.2:68", wantYI: "0.0.0.0",
			wantOpts: map[uint8][]byte{OptMessageType: {byte(Ack)}, OptRouter: {10, 100, 0, 1}},
			noOpts:   []uint8{OptLeaseTime, OptRenewalTime, OptRebindingTime},
		},
		{name: "release is silent", req: request(Release, knownMAC, nil), want: OutcomeReleased},
		{name: "decline is silent", req: request(Decline, knownMAC, nil), want: OutcomeDeclined},
		{
			name: "relayed request is ignored",
			req:  request(Discover, knownMAC, func(m *Message) { m.GIAddr = netip.MustParseAddr("10.0.0.1") }),
			want: OutcomeRelayed,
		},
		{name: "server message is ignored", req: request(Discover, knownMAC, func(m *Message) { m.Op = OpReply }), want: OutcomeNotRequest},
		{name: "plain bootp is ignored", req: request(Discover, knownMAC, func(m *Message) { m.Options = nil }), want: OutcomeUnsupported},
		{name: "offer from a client is ignored", req: request(Offer, knownMAC, nil), want: OutcomeUnsupported},
		{
			name: "non-ethernet hardware is ignored",
			req:  request(Discover, knownMAC, func(m *Message) { m.HType = 6 }),
			want: OutcomeUnknownMAC,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, got, err := Respond(tt.req, []Lease{testLease()}, gw)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("outcome = %q, want %q", got, tt.want)
			}
			if tt.wantDst == "" {
				if r != nil {
					t.Fatalf("unexpected reply %+v", r.Msg)
				}
				return
			}
			if r == nil {
				t.Fatal("no reply")
			}
			if r.Dst.String() != tt.wantDst {
				t.Errorf("dst = %s, want %s", r.Dst, tt.wantDst)
			}
			// Round-trip through the wire format, as a client would see it.
			m, err := Parse(r.Msg.Marshal())
			if err != nil {
				t.Fatal(err)
			}
			if m.Op != OpReply || m.XID != tt.req.XID || m.CHAddr != tt.req.CHAddr {
				t.Errorf("reply header op %d xid %x chaddr %x", m.Op, m.XID, m.CHAddr[:6])
			}
			if m.YIAddr.String() != tt.wantYI {
				t.Errorf("yiaddr = %s, want %s", m.YIAddr, tt.wantYI)
			}
			for code, want := range tt.wantOpts {
				if got, ok := m.Option(code); !ok || !bytes.Equal(got, want) {
					t.Errorf("option %d = %v (%v), want %v", code, got, ok, want)
				}
			}
			for _, code := range tt.noOpts {
				if _, ok := m.Option(code); ok {
					t.Errorf("option %d must be absent", code)
				}
			}
		})
	}
}

func TestLeaseValidation(t *testing.T) {
	mod := func(f func(l *Lease)) Lease { l := testLease(); f(&l); return l }
	tests := []struct {
		name   string
		leases []Lease
	}{
		{name: "short mac", leases: []Lease{mod(func(l *Lease) { l.MAC = l.MAC[:4] })}},
		{name: "ipv6 address", leases: []Lease{mod(func(l *Lease) { l.Addr = netip.MustParsePrefix("fd00::2/64") })}},
		{name: "router outside subnet", leases: []Lease{mod(func(l *Lease) { l.Router = netip.MustParseAddr("10.9.9.9") })}},
		{name: "ipv6 dns", leases: []Lease{mod(func(l *Lease) { l.DNS = []netip.Addr{netip.MustParseAddr("::1")} })}},
		{name: "mtu too small", leases: []Lease{mod(func(l *Lease) { l.MTU = 40 })}},
		{name: "negative lease time", leases: []Lease{mod(func(l *Lease) { l.LeaseTime = -time.Second })}},
		{name: "duplicate mac", leases: []Lease{testLease(), mod(func(l *Lease) { l.Addr = netip.MustParsePrefix("10.100.0.3/24") })}},
		{name: "duplicate address", leases: []Lease{testLease(), mod(func(l *Lease) { l.MAC = otherMAC })}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := Respond(request(Discover, knownMAC, nil), tt.leases, gw); !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

// fakeConn is an in-memory net.PacketConn: tests push requests in and
// read the server's writes out.
type fakeConn struct {
	in     chan []byte
	out    chan sent
	mu     sync.Mutex
	closed chan struct{}
	dl     chan struct{}
}

type sent struct {
	b   []byte
	dst string
}

func newFakeConn() *fakeConn {
	return &fakeConn{in: make(chan []byte, 8), out: make(chan sent, 8), closed: make(chan struct{}), dl: make(chan struct{})}
}

func (c *fakeConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-c.in:
		return copy(b, p), &net.UDPAddr{IP: net.IPv4zero, Port: ClientPort}, nil
	case <-c.dl:
		return 0, nil, errTimeout{}
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *fakeConn) WriteTo(b []byte, a net.Addr) (int, error) {
	c.out <- sent{b: bytes.Clone(b), dst: a.String()}
	return len(b), nil
}

func (c *fakeConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.closed:
	default:
		close(c.closed)
	}
	return nil
}

func (c *fakeConn) LocalAddr() net.Addr { return &net.UDPAddr{Port: ServerPort} }
func (c *fakeConn) SetDeadline(time.Time) error {
	return nil
}

func (c *fakeConn) SetReadDeadline(time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.dl:
	default:
		close(c.dl)
	}
	return nil
}
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }

type errTimeout struct{}

func (errTimeout) Error() string   { return "i/o timeout" }
func (errTimeout) Timeout() bool   { return true }
func (errTimeout) Temporary() bool { return true }

func TestServerServe(t *testing.T) {
	conn := newFakeConn()
	s, err := NewServer(conn, Config{ServerID: gw})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()

	expectNothing := func(what string) {
		t.Helper()
		select {
		case p := <-conn.out:
			t.Fatalf("%s: unexpected reply to %s", what, p.dst)
		case <-time.After(50 * time.Millisecond):
		}
	}
	expectReply := func(what string, typ MessageType) *Message {
		t.Helper()
		select {
		case p := <-conn.out:
			m, err := Parse(p.b)
			if err != nil {
				t.Fatal(err)
			}
			if m.Type() != typ || p.dst != "255.255.255.255:68" {
				t.Fatalf("%s: got %s to %s", what, m.Type(), p.dst)
			}
			return m
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no reply", what)
		}
		return nil
	}

	// No leases yet: silence, even for the MAC that will be known.
	conn.in <- request(Discover, knownMAC, nil).Marshal()
	expectNothing("before SetLeases")
	// Garbage is dropped without killing the server.
	conn.in <- []byte("not dhcp")
	expectNothing("garbage")

	if err := s.SetLeases([]Lease{testLease()}); err != nil {
		t.Fatal(err)
	}
	conn.in <- request(Discover, knownMAC, nil).Marshal()
	if m := expectReply("after SetLeases", Offer); m.YIAddr.String() != "10.100.0.2" {
		t.Fatalf("offered %s", m.YIAddr)
	}
	// A rejected update keeps the old table.
	if err := s.SetLeases([]Lease{testLease(), testLease()}); err == nil {
		t.Fatal("duplicate leases accepted")
	}
	conn.in <- request(Discover, knownMAC, nil).Marshal()
	expectReply("after rejected update", Offer)
	// Replacing the table removes the old lease.
	moved := testLease()
	moved.MAC = otherMAC
	if err := s.SetLeases([]Lease{moved}); err != nil {
		t.Fatal(err)
	}
	conn.in <- request(Discover, knownMAC, nil).Marshal()
	expectNothing("removed lease")

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve returned %v after cancel, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not stop on cancel")
	}
	select {
	case <-conn.closed:
	default:
		t.Error("Serve must close its socket")
	}
}
