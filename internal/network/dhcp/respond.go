package dhcp

import (
	"net/netip"
	"slices"
	"time"
)

// Ports of the DHCP protocol (RFC 2131 §4.1).
const (
	ServerPort = 67
	ClientPort = 68
)

// Outcome says what Respond decided, for logs and tests.
type Outcome string

// Outcomes of Respond. Every request ends in exactly one.
const (
	OutcomeOffer       Outcome = "offer"
	OutcomeAck         Outcome = "ack"
	OutcomeNak         Outcome = "nak"
	OutcomeInform      Outcome = "inform-ack"
	OutcomeUnknownMAC  Outcome = "ignored: unknown mac"
	OutcomeOtherServer Outcome = "ignored: client chose another server"
	OutcomeReleased    Outcome = "released"
	OutcomeDeclined    Outcome = "declined"
	OutcomeNotRequest  Outcome = "ignored: not a client request"
	OutcomeRelayed     Outcome = "ignored: relayed request"
	OutcomeUnsupported Outcome = "ignored: unsupported message type"
)

// Reply is a message to send and where to send it.
type Reply struct {
	Msg *Message
	// Dst is 255.255.255.255:68 for clients without an address, or the
	// client's ciaddr:68 when it has one (renewing, INFORM).
	Dst netip.AddrPort
}

var broadcastDst = netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), ClientPort)

// optionalOptions are sent only when the client lists them in option 55
// (or sends no list): RFC 2131 §4.3.1 lets a server limit itself to the
// requested parameters, and clients that do not ask for, say, the MTU
// would ignore it anyway. Address, mask, router, DNS and lease times are
// always sent: without them the lease is useless.
var optionalOptions = []uint8{OptHostname, OptDomainName, OptMTU}

// Respond is the server's whole decision logic as a pure function of the
// request, the lease table and the server's own address (option 54, the
// bridge's gateway address). It returns a nil Reply when nothing must be
// sent. Relayed requests (giaddr set) are ignored: guests are always
// on-link, so a relayed packet can only be forged or misrouted.
func Respond(req *Message, leases []Lease, serverID netip.Addr) (*Reply, Outcome, error) {
	t, err := newLeaseTable(leases)
	if err != nil {
		return nil, "", err
	}
	r, o := respond(req, t, serverID)
	return r, o, nil
}

func respond(req *Message, t leaseTable, serverID netip.Addr) (*Reply, Outcome) {
	if req.Op != OpRequest {
		return nil, OutcomeNotRequest
	}
	if isSet(req.GIAddr) {
		return nil, OutcomeRelayed
	}
	typ := req.Type()
	switch typ {
	case Discover, Request, Decline, Release, Inform:
	default:
		return nil, OutcomeUnsupported
	}
	lease, ok := t.lookup(req)
	if !ok {
		// Never NAK or offer to a MAC vmd did not allocate: silence is
		// what a client sees on a segment without a server for it.
		return nil, OutcomeUnknownMAC
	}
	switch typ {
	case Discover:
		return &Reply{Msg: reply(req, Offer, lease, serverID), Dst: destination(req)}, OutcomeOffer
	case Request:
		if sid, ok := req.ServerID(); ok && sid != serverID {
			return nil, OutcomeOtherServer
		}
		want, ok := req.RequestedIP()
		if !ok {
			want = req.CIAddr
		}
		if want != lease.Addr.Addr() {
			return &Reply{Msg: nak(req, serverID), Dst: broadcastDst}, OutcomeNak
		}
		return &Reply{Msg: reply(req, Ack, lease, serverID), Dst: destination(req)}, OutcomeAck
	case Inform:
		m := reply(req, Ack, lease, serverID)
		// RFC 2131 §3.4: no yiaddr and no lease time in an INFORM answer.
		m.YIAddr = netip.IPv4Unspecified()
		m.Options = slices.DeleteFunc(m.Options, func(o Option) bool {
			return o.Code == OptLeaseTime || o.Code == OptRenewalTime || o.Code == OptRebindingTime
		})
		return &Reply{Msg: m, Dst: destination(req)}, OutcomeInform
	case Release:
		return nil, OutcomeReleased
	default: // Decline
		return nil, OutcomeDeclined
	}
}

// destination implements RFC 2131 §4.1 for on-link clients: unicast to a
// configured client's ciaddr, otherwise broadcast. The RFC's third case,
// unicasting to yiaddr at chaddr when the broadcast flag is clear, needs
// a raw socket or a forged ARP entry; broadcasting instead is allowed and
// every client vmd targets receives it (see docs/adr/0008).
func destination(req *Message) netip.AddrPort {
	if isSet(req.CIAddr) {
		return netip.AddrPortFrom(req.CIAddr, ClientPort)
	}
	return broadcastDst
}

func isSet(a netip.Addr) bool { return a.IsValid() && !a.IsUnspecified() }

func header(req *Message) *Message {
	zero := netip.IPv4Unspecified()
	return &Message{
		Op: OpReply, HType: req.HType, HLen: req.HLen, XID: req.XID,
		Flags: req.Flags, CIAddr: zero, YIAddr: zero, SIAddr: zero, GIAddr: zero,
		CHAddr: req.CHAddr,
	}
}

// reply builds an OFFER or ACK for lease.
func reply(req *Message, typ MessageType, l Lease, serverID netip.Addr) *Message {
	m := header(req)
	if isSet(req.CIAddr) {
		m.CIAddr = req.CIAddr
	}
	m.YIAddr = l.Addr.Addr()
	secs := uint32(l.LeaseTime / time.Second)
	m.Options = []Option{
		{Code: OptMessageType, Data: []byte{byte(typ)}},
		{Code: OptServerID, Data: addrs(serverID)},
		{Code: OptLeaseTime, Data: u32(secs)},
		{Code: OptRenewalTime, Data: u32(secs / 2)},
		{Code: OptRebindingTime, Data: u32(uint32(uint64(secs) * 7 / 8))},
		{Code: OptSubnetMask, Data: maskBytes(l.Addr.Bits())},
	}
	if l.Router.IsValid() {
		m.Options = append(m.Options, Option{Code: OptRouter, Data: addrs(l.Router)})
	}
	if len(l.DNS) > 0 {
		m.Options = append(m.Options, Option{Code: OptDNS, Data: addrs(l.DNS...)})
	}
	prl, hasPRL := req.ParamRequestList()
	wants := func(code uint8) bool { return !hasPRL || slices.Contains(prl, code) }
	for _, code := range optionalOptions {
		if !wants(code) {
			continue
		}
		switch {
		case code == OptHostname && l.Hostname != "":
			m.Options = append(m.Options, Option{Code: code, Data: []byte(l.Hostname)})
		case code == OptDomainName && l.Domain != "":
			m.Options = append(m.Options, Option{Code: code, Data: []byte(l.Domain)})
		case code == OptMTU && l.MTU != 0:
			m.Options = append(m.Options, Option{Code: code, Data: u16(uint16(l.MTU))})
		}
	}
	return m
}

// nak tells the client its requested address is wrong; it then restarts
// with DISCOVER and is offered the right one. RFC 2131 §4.3.2: a NAK is
// broadcast when giaddr is zero and carries only type, server id and
// optionally a message.
func nak(req *Message, serverID netip.Addr) *Message {
	m := header(req)
	m.Flags |= FlagBroadcast
	m.Options = []Option{
		{Code: OptMessageType, Data: []byte{byte(Nak)}},
		{Code: OptServerID, Data: addrs(serverID)},
		{Code: OptMessage, Data: []byte("requested address is not this client's")},
	}
	return m
}
