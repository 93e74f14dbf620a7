package dnsfwd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
)

// behaviour is how a fake upstream treats the queries it receives.
type behaviour int

const (
	// answers replies with the query, QR set and the upstream's tag
	// appended.
	answers behaviour = iota
	// silent reads queries and never replies.
	silent
	// wrongID replies with the query ID plus one.
	wrongID
	// wrongIDThenAnswers sends a wrong-ID reply, then the right one.
	wrongIDThenAnswers
	// wrongSource replies over UDP from another port of the same host
	// (over TCP it answers normally: a TCP reply has no other source).
	wrongSource
	// truncates replies over UDP with TC set (and the answer cut), over
	// TCP in full.
	truncates
	// servFails and refuses reply with that rcode.
	servFails
	refuses
	// answersThenCloses answers one query per TCP connection, then closes
	// it, as an upstream with a short idle timeout does.
	answersThenCloses
	// validA answers with a well-formed response carrying one A record,
	// 192.0.2.7, for real stub resolvers.
	validA
	// validTruncatedA answers over UDP with a well-formed truncated
	// response (TC, no records) and over TCP like validA.
	validTruncatedA
)

// validAAddr is the address validA answers.
var validAAddr = netip.MustParseAddr("192.0.2.7")

// aResponse builds a well-formed response to q: one A record for the
// question name, or none with TC set when truncated.
func aResponse(q []byte, truncated bool) []byte {
	end, ok := questionEnd(q)
	if !ok {
		return nil
	}
	r := bytes.Clone(q[:end])
	r[2] |= flagQR
	r[3] = flagRA
	binary.BigEndian.PutUint16(r[4:], 1)
	binary.BigEndian.PutUint16(r[6:], 0)
	binary.BigEndian.PutUint16(r[8:], 0)
	binary.BigEndian.PutUint16(r[10:], 0)
	if truncated {
		r[2] |= 0x02
		return r
	}
	binary.BigEndian.PutUint16(r[6:], 1)
	a := validAAddr.As4()
	// Name: pointer to the question name; type A, class IN, TTL 60.
	return append(r, 0xc0, headerLen, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, a[0], a[1], a[2], a[3])
}

// fakeUpstream is a DNS server on 127.0.0.1, UDP and TCP on the same
// port, that replies to queries according to its behaviour.
type fakeUpstream struct {
	addr      netip.AddrPort
	tag       byte
	behaviour behaviour

	udp   *net.UDPConn
	other *net.UDPConn // wrongSource replies from here
	tcp   *net.TCPListener

	udpQueries, tcpQueries, tcpConns atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// startUpstream runs a fake upstream until the test ends.
func startUpstream(t *testing.T, b behaviour, tag byte) *fakeUpstream {
	t.Helper()
	u := &fakeUpstream{tag: tag, behaviour: b, conns: map[net.Conn]struct{}{}}
	u.udp, u.tcp = listenPair(t)
	u.addr = u.udp.LocalAddr().(*net.UDPAddr).AddrPort()
	other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	u.other = other
	u.wg.Go(u.serveUDP)
	u.wg.Go(u.serveTCP)
	t.Cleanup(u.stop)
	return u
}

// listenPair binds UDP and TCP to the same free port on 127.0.0.1. The
// UDP port is free, the same TCP port may not be: retry.
func listenPair(t *testing.T) (*net.UDPConn, *net.TCPListener) {
	t.Helper()
	var lastErr error
	for range 50 {
		u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: u.LocalAddr().(*net.UDPAddr).Port})
		if err == nil {
			return u, l
		}
		lastErr = err
		_ = u.Close()
	}
	t.Fatalf("no port free for both udp and tcp: %v", lastErr)
	return nil, nil
}

// closedPort returns an address on 127.0.0.1 where nothing listens, for
// either protocol: queries to it fail at once with "connection refused".
func closedPort(t *testing.T) netip.AddrPort {
	t.Helper()
	u, l := listenPair(t)
	ap := u.LocalAddr().(*net.UDPAddr).AddrPort()
	_ = u.Close()
	_ = l.Close()
	return ap
}

func (u *fakeUpstream) stop() {
	_ = u.udp.Close()
	_ = u.other.Close()
	_ = u.tcp.Close()
	u.mu.Lock()
	for c := range u.conns {
		_ = c.Close()
	}
	u.mu.Unlock()
	u.wg.Wait()
}

func (u *fakeUpstream) replies(q []byte, overTCP bool) [][]byte {
	switch u.behaviour {
	case silent:
		return nil
	case wrongID:
		r := answer(q, 0, u.tag)
		r[1]++
		return [][]byte{r}
	case wrongIDThenAnswers:
		r := answer(q, 0, u.tag)
		r[1]++
		return [][]byte{r, answer(q, 0, u.tag)}
	case truncates:
		if overTCP {
			return [][]byte{answer(q, 0, u.tag)}
		}
		r := answer(q, 0, u.tag)
		r[2] |= 0x02 // TC
		return [][]byte{r}
	case servFails:
		return [][]byte{answer(q, rcodeServFail, u.tag)}
	case refuses:
		return [][]byte{answer(q, rcodeRefused, u.tag)}
	case validA:
		return [][]byte{aResponse(q, false)}
	case validTruncatedA:
		return [][]byte{aResponse(q, !overTCP)}
	}
	return [][]byte{answer(q, 0, u.tag)}
}

func (u *fakeUpstream) serveUDP() {
	buf := make([]byte, maxMsg)
	for {
		n, src, err := u.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		u.udpQueries.Add(1)
		from := u.udp
		if u.behaviour == wrongSource {
			from = u.other
		}
		for _, r := range u.replies(buf[:n], false) {
			_, _ = from.WriteToUDPAddrPort(r, src)
		}
	}
}

func (u *fakeUpstream) serveTCP() {
	for {
		c, err := u.tcp.Accept()
		if err != nil {
			return
		}
		u.tcpConns.Add(1)
		u.mu.Lock()
		u.conns[c] = struct{}{}
		u.mu.Unlock()
		u.wg.Go(func() {
			defer func() {
				u.mu.Lock()
				delete(u.conns, c)
				u.mu.Unlock()
				_ = c.Close()
			}()
			for {
				q, err := readMsg(c)
				if err != nil {
					return
				}
				u.tcpQueries.Add(1)
				for _, r := range u.replies(q, true) {
					if writeMsg(c, r) != nil {
						return
					}
				}
				if u.behaviour == answersThenCloses {
					return
				}
			}
		})
	}
}

// queries is the number of queries received over both protocols.
func (u *fakeUpstream) queries() int64 { return u.udpQueries.Load() + u.tcpQueries.Load() }

var errNoReply = errors.New("no reply")
