// Package dhcp is vmd's DHCPv4 server: one per tenant bridge, serving
// STATIC leases only. vmd allocates every guest's MAC and IP itself
// (internal/network/ipamstore); DHCP merely tells the guest what was
// decided, so the server never picks an address, never keeps lease state
// and never answers a MAC it was not told about.
//
// The wire codec (RFC 2131 message, RFC 2132 options, RFC 3396 long
// options) is implemented here rather than imported: it is a few hundred
// lines, it is the only part of the server that touches untrusted input,
// and owning it lets the parser be fuzzed and kept strict. See
// docs/adr/0008-tenant-networking.md for why vmd serves DHCP itself
// instead of running dnsmasq.
package dhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// BOOTP operation codes (RFC 2131 §2, field op).
const (
	OpRequest uint8 = 1
	OpReply   uint8 = 2
)

// HTypeEthernet is the hardware type of 10/100/1000 Ethernet (RFC 1700).
const HTypeEthernet uint8 = 1

// FlagBroadcast is the BROADCAST bit of the flags field: the client cannot
// receive unicast IP datagrams before it is configured (RFC 2131 §2).
const FlagBroadcast uint16 = 0x8000

// Option codes vmd reads or writes (RFC 2132).
const (
	OptPad              uint8 = 0
	OptSubnetMask       uint8 = 1
	OptRouter           uint8 = 3
	OptDNS              uint8 = 6
	OptHostname         uint8 = 12
	OptDomainName       uint8 = 15
	OptMTU              uint8 = 26
	OptBroadcastAddr    uint8 = 28
	OptRequestedIP      uint8 = 50
	OptLeaseTime        uint8 = 51
	OptOverload         uint8 = 52
	OptMessageType      uint8 = 53
	OptServerID         uint8 = 54
	OptParamRequestList uint8 = 55
	OptMessage          uint8 = 56
	OptMaxMessageSize   uint8 = 57
	OptRenewalTime      uint8 = 58
	OptRebindingTime    uint8 = 59
	OptClientID         uint8 = 61
	OptEnd              uint8 = 255
)

// MessageType is the value of option 53 (RFC 2132 §9.6).
type MessageType uint8

// DHCP message types.
const (
	Discover MessageType = 1
	Offer    MessageType = 2
	Request  MessageType = 3
	Decline  MessageType = 4
	Ack      MessageType = 5
	Nak      MessageType = 6
	Release  MessageType = 7
	Inform   MessageType = 8
)

var messageTypeNames = map[MessageType]string{
	Discover: "DISCOVER", Offer: "OFFER", Request: "REQUEST", Decline: "DECLINE",
	Ack: "ACK", Nak: "NAK", Release: "RELEASE", Inform: "INFORM",
}

// String returns the RFC name ("DISCOVER") or the number.
func (t MessageType) String() string {
	if s, ok := messageTypeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Wire layout constants.
const (
	// headerLen is the fixed BOOTP header before the magic cookie.
	headerLen = 236
	// minMessageLen is header plus magic cookie: the shortest DHCP packet.
	minMessageLen = headerLen + 4
	// MinReplyLen is the BOOTP minimum message size; some old clients and
	// relays drop shorter packets, so Marshal pads to it (RFC 1542 §3.3).
	MinReplyLen = 300
)

// magicCookie marks the start of the options field (RFC 2131 §3).
var magicCookie = [4]byte{99, 130, 83, 99}

// ErrMalformed is wrapped by every Parse error: the packet is not a
// well-formed DHCP message and must be dropped.
var ErrMalformed = errors.New("malformed dhcp message")

// Option is one option as it appears on the wire, except that Parse joins
// repeated instances of one code into one (RFC 3396) and Marshal splits
// long data again.
type Option struct {
	Code uint8
	Data []byte
}

// Message is a DHCP message (RFC 2131 §2). Addresses are IPv4; a zero
// field is netip.IPv4Unspecified after Parse. Options keep their wire
// order, one entry per code.
type Message struct {
	Op     uint8
	HType  uint8
	HLen   uint8
	Hops   uint8
	XID    uint32
	Secs   uint16
	Flags  uint16
	CIAddr netip.Addr
	YIAddr netip.Addr
	SIAddr netip.Addr
	GIAddr netip.Addr
	// CHAddr is the full 16-byte field; HLen says how much is the address.
	CHAddr [16]byte
	// SName and File are the BOOTP server name and boot file fields. vmd
	// does not use them; when option 52 overloads them Parse has already
	// moved their options into Options and leaves them zeroed.
	SName   [64]byte
	File    [128]byte
	Options []Option
}

// Parse decodes a DHCP message. It rejects anything that is not a BOOTP
// message with the DHCP magic cookie, truncated options and invalid
// overload values; an options field without an End option is accepted
// (many clients pad with zeros up to the end instead). Every error wraps
// ErrMalformed. The returned message does not alias b.
func Parse(b []byte) (*Message, error) {
	if len(b) < minMessageLen {
		return nil, fmt.Errorf("%w: %d bytes, need at least %d", ErrMalformed, len(b), minMessageLen)
	}
	m := &Message{
		Op:     b[0],
		HType:  b[1],
		HLen:   b[2],
		Hops:   b[3],
		XID:    binary.BigEndian.Uint32(b[4:8]),
		Secs:   binary.BigEndian.Uint16(b[8:10]),
		Flags:  binary.BigEndian.Uint16(b[10:12]),
		CIAddr: netip.AddrFrom4([4]byte(b[12:16])),
		YIAddr: netip.AddrFrom4([4]byte(b[16:20])),
		SIAddr: netip.AddrFrom4([4]byte(b[20:24])),
		GIAddr: netip.AddrFrom4([4]byte(b[24:28])),
	}
	copy(m.CHAddr[:], b[28:44])
	copy(m.SName[:], b[44:108])
	copy(m.File[:], b[108:236])
	if m.HLen > 16 {
		return nil, fmt.Errorf("%w: hlen %d exceeds the 16-byte chaddr field", ErrMalformed, m.HLen)
	}
	if [4]byte(b[236:240]) != magicCookie {
		return nil, fmt.Errorf("%w: bad magic cookie % x", ErrMalformed, b[236:240])
	}
	var raw []Option
	var err error
	if raw, err = parseOptions(raw, b[minMessageLen:], "options"); err != nil {
		return nil, err
	}
	// Option overload (RFC 2132 §9.3): more options in file, then sname.
	if ov := lastValue(raw, OptOverload); ov != nil {
		if len(ov) != 1 || ov[0] < 1 || ov[0] > 3 {
			return nil, fmt.Errorf("%w: invalid option overload % x", ErrMalformed, ov)
		}
		if ov[0]&1 != 0 {
			if raw, err = parseOptions(raw, m.File[:], "file"); err != nil {
				return nil, err
			}
			m.File = [128]byte{}
		}
		if ov[0]&2 != 0 {
			if raw, err = parseOptions(raw, m.SName[:], "sname"); err != nil {
				return nil, err
			}
			m.SName = [64]byte{}
		}
	}
	m.Options = joinOptions(raw)
	return m, nil
}

// parseOptions appends the options in b up to End (or the end of b).
func parseOptions(dst []Option, b []byte, field string) ([]Option, error) {
	for i := 0; i < len(b); {
		code := b[i]
		switch code {
		case OptPad:
			i++
			continue
		case OptEnd:
			return dst, nil
		}
		if i+1 >= len(b) {
			return nil, fmt.Errorf("%w: option %d in %s has no length", ErrMalformed, code, field)
		}
		n := int(b[i+1])
		if i+2+n > len(b) {
			return nil, fmt.Errorf("%w: option %d in %s: length %d runs past the end", ErrMalformed, code, field, n)
		}
		dst = append(dst, Option{Code: code, Data: slices.Clone(b[i+2 : i+2+n])})
		i += 2 + n
	}
	return dst, nil
}

// joinOptions concatenates the data of repeated codes in first-seen order
// (RFC 3396 §7: a split option is the concatenation of its parts).
func joinOptions(raw []Option) []Option {
	var out []Option
	idx := map[uint8]int{}
	for _, o := range raw {
		if o.Code == OptOverload {
			continue
		}
		if i, ok := idx[o.Code]; ok {
			out[i].Data = append(out[i].Data, o.Data...)
			continue
		}
		idx[o.Code] = len(out)
		out = append(out, Option{Code: o.Code, Data: o.Data})
	}
	return out
}

func lastValue(opts []Option, code uint8) []byte {
	var v []byte
	for _, o := range opts {
		if o.Code == code {
			v = o.Data
		}
	}
	return v
}

// Marshal encodes m. Options longer than 255 bytes are split into several
// instances (RFC 3396); the message is padded to MinReplyLen. Marshal
// never uses option overload: vmd's replies are far smaller than the 576
// bytes every client accepts.
func (m *Message) Marshal() []byte {
	b := make([]byte, minMessageLen, MinReplyLen)
	b[0], b[1], b[2], b[3] = m.Op, m.HType, m.HLen, m.Hops
	binary.BigEndian.PutUint32(b[4:8], m.XID)
	binary.BigEndian.PutUint16(b[8:10], m.Secs)
	binary.BigEndian.PutUint16(b[10:12], m.Flags)
	putAddr(b[12:16], m.CIAddr)
	putAddr(b[16:20], m.YIAddr)
	putAddr(b[20:24], m.SIAddr)
	putAddr(b[24:28], m.GIAddr)
	copy(b[28:44], m.CHAddr[:])
	copy(b[44:108], m.SName[:])
	copy(b[108:236], m.File[:])
	copy(b[236:240], magicCookie[:])
	for _, o := range m.Options {
		if o.Code == OptPad || o.Code == OptEnd {
			continue
		}
		data := o.Data
		for {
			n := min(len(data), 255)
			b = append(b, o.Code, byte(n))
			b = append(b, data[:n]...)
			data = data[n:]
			if len(data) == 0 {
				break
			}
		}
	}
	b = append(b, OptEnd)
	for len(b) < MinReplyLen {
		b = append(b, OptPad)
	}
	return b
}

// putAddr writes an IPv4 address; an invalid (zero) Addr is 0.0.0.0.
func putAddr(dst []byte, a netip.Addr) {
	if a.Is4() {
		v := a.As4()
		copy(dst, v[:])
	}
}

// HardwareAddr returns the client's hardware address (the first HLen bytes
// of chaddr).
func (m *Message) HardwareAddr() net.HardwareAddr {
	return net.HardwareAddr(slices.Clone(m.CHAddr[:min(int(m.HLen), len(m.CHAddr))]))
}

// Option returns the data of option code and whether it is present.
func (m *Message) Option(code uint8) ([]byte, bool) {
	for _, o := range m.Options {
		if o.Code == code {
			return o.Data, true
		}
	}
	return nil, false
}

// SetOption adds or replaces option code.
func (m *Message) SetOption(code uint8, data []byte) {
	for i, o := range m.Options {
		if o.Code == code {
			m.Options[i].Data = data
			return
		}
	}
	m.Options = append(m.Options, Option{Code: code, Data: data})
}

// Type returns option 53, or 0 when it is missing or malformed (a plain
// BOOTP message, which vmd ignores).
func (m *Message) Type() MessageType {
	if v, ok := m.Option(OptMessageType); ok && len(v) == 1 {
		return MessageType(v[0])
	}
	return 0
}

// addrOption returns an option that holds exactly one IPv4 address.
func (m *Message) addrOption(code uint8) (netip.Addr, bool) {
	if v, ok := m.Option(code); ok && len(v) == 4 {
		return netip.AddrFrom4([4]byte(v)), true
	}
	return netip.Addr{}, false
}

// RequestedIP returns option 50 (RFC 2132 §9.1).
func (m *Message) RequestedIP() (netip.Addr, bool) { return m.addrOption(OptRequestedIP) }

// ServerID returns option 54 (RFC 2132 §9.7).
func (m *Message) ServerID() (netip.Addr, bool) { return m.addrOption(OptServerID) }

// ParamRequestList returns option 55: the option codes the client asks for.
func (m *Message) ParamRequestList() ([]uint8, bool) { return m.Option(OptParamRequestList) }

// Hostname returns option 12 (RFC 2132 §3.14).
func (m *Message) Hostname() (string, bool) {
	v, ok := m.Option(OptHostname)
	return string(v), ok
}

// Uint32 / address option encoders used when building replies.

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

func addrs(as ...netip.Addr) []byte {
	var b []byte
	for _, a := range as {
		v := a.As4()
		b = append(b, v[:]...)
	}
	return b
}

// maskBytes is the dotted mask of a prefix length (option 1).
func maskBytes(bits int) []byte {
	return net.CIDRMask(bits, 32)
}
