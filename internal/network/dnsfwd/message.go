package dnsfwd

import (
	"encoding/binary"
	"errors"
)

// DNS header layout (RFC 1035 §4.1.1). The forwarder reads nothing beyond
// the 12-byte header, except when it has to answer SERVFAIL itself (see
// servFail), where it also walks the single question.
const (
	headerLen = 12
	// maxMsg is the largest DNS message: the TCP length prefix is 16 bits,
	// and a UDP payload cannot exceed it either.
	maxMsg = 65535

	flagQR     = 0x80 // byte 2: message is a response
	maskOpcode = 0x78 // byte 2: opcode
	flagRD     = 0x01 // byte 2: recursion desired
	flagRA     = 0x80 // byte 3: recursion available
	flagCD     = 0x10 // byte 3: checking disabled (DNSSEC)
	maskRcode  = 0x0f // byte 3: response code

	rcodeServFail = 2
	rcodeNotImp   = 4
	rcodeRefused  = 5
)

// Reasons a guest's message is not relayed.
var (
	errShort    = errors.New("shorter than a dns header")
	errResponse = errors.New("is a response, not a query")
)

// checkQuery accepts a message from a guest if it can be a query: at least
// a header, QR clear. Anything else is dropped without a reply: answering
// garbage (or a response, which could be a reflected packet) only helps
// loops and reflection.
func checkQuery(msg []byte) error {
	if len(msg) < headerLen {
		return errShort
	}
	if msg[2]&flagQR != 0 {
		return errResponse
	}
	return nil
}

// isReplyTo reports whether reply answers query as far as the header can
// tell: a response, same ID, same opcode. Together with the fresh,
// connected upstream socket per query (random source port, peer address
// filtered by the kernel and re-checked) this is the classic stub
// resolver's spoofing defence; the question section is not compared,
// which is the one check a full resolver would add.
func isReplyTo(query, reply []byte) bool {
	return len(reply) >= headerLen &&
		reply[0] == query[0] && reply[1] == query[1] &&
		reply[2]&flagQR != 0 &&
		(reply[2]^query[2])&maskOpcode == 0
}

// rcode is the (non-extended) response code of a message of at least
// headerLen bytes.
func rcode(msg []byte) int { return int(msg[3] & maskRcode) }

// retryable reports whether a reply says "this server cannot help" rather
// than "this is the answer": SERVFAIL, NOTIMP and REFUSED. glibc's stub
// (res_send) tries the next nameserver on exactly these, so a forwarder
// in front of it behaves the same way the host's own resolver would.
func retryable(reply []byte) bool {
	switch rcode(reply) {
	case rcodeServFail, rcodeNotImp, rcodeRefused:
		return true
	}
	return false
}

// servFail builds the SERVFAIL response a forwarder sends when no
// upstream answered, or nil when the query's question cannot be echoed.
// Stub resolvers (glibc res_queriesmatch, musl, Go) discard a response
// whose question does not match the query's, so a header-only SERVFAIL
// would be ignored: the guest would wait out its timeout exactly as if
// nothing had been sent. Only a query with one question whose name uses
// plain labels (no compression pointers: a query's first name cannot
// point anywhere earlier) gets one; everything else gets silence.
func servFail(query []byte) []byte {
	if len(query) < headerLen || binary.BigEndian.Uint16(query[4:6]) != 1 {
		return nil
	}
	end, ok := questionEnd(query)
	if !ok {
		return nil
	}
	resp := make([]byte, end)
	copy(resp, query[:end])
	resp[2] = flagQR | query[2]&(maskOpcode|flagRD)
	resp[3] = flagRA | query[3]&flagCD | rcodeServFail
	binary.BigEndian.PutUint16(resp[4:6], 1)
	clear(resp[6:headerLen]) // no answer, authority or additional records
	return resp
}

// questionEnd returns the offset just past the first question (name, type,
// class) of msg, and false if it is not well formed: a label longer than
// 63 bytes, a name longer than 255 bytes (RFC 1035 §2.3.4), a compression
// pointer or extended label type, or a truncated question.
func questionEnd(msg []byte) (int, bool) {
	off, nameLen := headerLen, 1 // the root label's zero byte
	for {
		if off >= len(msg) {
			return 0, false
		}
		l := int(msg[off])
		if l == 0 {
			off++
			break
		}
		if l&0xc0 != 0 {
			return 0, false
		}
		nameLen += 1 + l
		if nameLen > 255 {
			return 0, false
		}
		off += 1 + l
	}
	if off+4 > len(msg) {
		return 0, false
	}
	return off + 4, true
}
