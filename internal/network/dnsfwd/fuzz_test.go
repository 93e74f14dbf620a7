package dnsfwd

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// memUpstream is an in-memory "connected UDP socket" to an upstream: it
// records what is written and then returns the scripted datagrams, one
// per Read, then a timeout. It lets the fuzzer drive the whole UDP relay
// path (admission, relay, reply matching, fallback, SERVFAIL) thousands
// of times a second without sockets.
type memUpstream struct {
	sent    [][]byte
	replies [][]byte
}

func (m *memUpstream) Write(b []byte) (int, error) {
	m.sent = append(m.sent, bytes.Clone(b))
	return len(b), nil
}

func (m *memUpstream) Read(b []byte) (int, error) {
	if len(m.replies) == 0 {
		return 0, os.ErrDeadlineExceeded
	}
	r := m.replies[0]
	m.replies = m.replies[1:]
	return copy(b, r), nil
}

func (m *memUpstream) Close() error                     { return nil }
func (m *memUpstream) LocalAddr() net.Addr              { return &net.UDPAddr{} }
func (m *memUpstream) RemoteAddr() net.Addr             { return &net.UDPAddr{} }
func (m *memUpstream) SetDeadline(time.Time) error      { return nil }
func (m *memUpstream) SetReadDeadline(time.Time) error  { return nil }
func (m *memUpstream) SetWriteDeadline(time.Time) error { return nil }

// memGuest is the forwarder's guest-facing socket, recording replies.
type memGuest struct {
	net.PacketConn // unused methods panic: the relay path must not call them
	sent           [][]byte
}

func (g *memGuest) WriteTo(b []byte, _ net.Addr) (int, error) {
	g.sent = append(g.sent, bytes.Clone(b))
	return len(b), nil
}
func (g *memGuest) LocalAddr() net.Addr { return &net.UDPAddr{IP: net.IPv4(10, 240, 0, 1), Port: 53} }

type memListener struct{ net.Listener }

func (memListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(10, 240, 0, 1), Port: 53} }

// FuzzHandleQuery feeds a guest datagram and up to two upstream
// datagrams (each optionally given the query's ID, so the matching path
// is reached often) through admitUDP and relayUDP. Beyond not panicking,
// the guest must receive nothing for a non-query, and otherwise at most
// one message that answers its query: an upstream datagram as sent, or
// the forwarder's SERVFAIL.
func FuzzHandleQuery(f *testing.F) {
	q := query(0x1234, "example.com")
	f.Add(q, answer(q, 0, 1), []byte(nil), true, false)
	f.Add(q, answer(q, rcodeServFail, 1), []byte(nil), true, false)
	f.Add(q, answer(q, 0, 1), answer(q, 0, 2), false, true)
	f.Add(q[:headerLen], []byte{}, []byte{0xff}, false, false)
	f.Add(answer(q, 0, 1), answer(q, 0, 1), []byte(nil), true, true)
	f.Add([]byte{1, 2, 3}, []byte(nil), []byte(nil), false, false)
	f.Fuzz(func(t *testing.T, pkt, r1, r2 []byte, patch1, patch2 bool) {
		replies := [][]byte{}
		for _, r := range []struct {
			b     []byte
			patch bool
		}{{r1, patch1}, {r2, patch2}} {
			if r.b == nil {
				continue
			}
			b := bytes.Clone(r.b)
			if r.patch && len(b) >= 2 && len(pkt) >= 2 {
				copy(b, pkt[:2])
			}
			replies = append(replies, b)
		}
		up := &memUpstream{replies: replies}
		guest := &memGuest{}
		fw, err := New(guest, memListener{}, Config{
			Upstreams: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.53:53")},
			Dial:      func(context.Context, string, string) (net.Conn, error) { return up, nil },
			Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		src := &net.UDPAddr{IP: net.IPv4(10, 240, 0, 5), Port: 40000}
		admitted, ok := fw.admitUDP(pkt, src)
		if ok {
			fw.relayUDP(context.Background(), admitted, src)
		}
		if len(fw.inflight) != 0 {
			t.Fatalf("inflight slot leaked: %d held", len(fw.inflight))
		}

		if checkQuery(pkt) != nil {
			if ok || len(up.sent) != 0 || len(guest.sent) != 0 {
				t.Fatalf("non-query %x was relayed", pkt)
			}
			if s := fw.Stats(); s != (Stats{Malformed: 1}) {
				t.Fatalf("stats %+v, want 1 malformed", s)
			}
			return
		}
		if !ok || len(up.sent) != 1 || !bytes.Equal(up.sent[0], pkt) {
			t.Fatalf("query %x was not relayed unchanged: sent %x", pkt, up.sent)
		}
		if len(guest.sent) > 1 {
			t.Fatalf("guest got %d replies", len(guest.sent))
		}
		s := fw.Stats()
		if s.Queries != 1 || s.Answered+s.Unanswered != 1 {
			t.Fatalf("stats %+v: the query must end answered or unanswered", s)
		}
		// The first datagram that answers the query is the upstream's
		// reply; a later one is never read.
		var match []byte
		for _, r := range replies {
			if isReplyTo(pkt, r) {
				match = r
				break
			}
		}
		var want []byte
		switch {
		case match != nil && !retryable(match):
			want = match
			if s.Answered != 1 || s.UpstreamFailures != 0 {
				t.Fatalf("stats %+v for an accepted answer", s)
			}
		case match != nil:
			want = match // the only upstream's error reply, relayed as a fallback
		default:
			want = servFail(pkt)
			if s.Unanswered != 1 || s.UpstreamFailures != 1 {
				t.Fatalf("stats %+v for an unanswered query", s)
			}
		}
		if want == nil {
			if len(guest.sent) != 0 {
				t.Fatalf("guest got %x, want nothing", guest.sent[0])
			}
			return
		}
		if len(guest.sent) != 1 || !bytes.Equal(guest.sent[0], want) {
			t.Fatalf("guest got %x, want %x", guest.sent, want)
		}
		if !isReplyTo(pkt, guest.sent[0]) {
			t.Fatalf("guest got %x, which does not answer %x", guest.sent[0], pkt)
		}
	})
}
