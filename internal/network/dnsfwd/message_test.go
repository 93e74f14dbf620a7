package dnsfwd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

// query builds a standard query (opcode QUERY, RD set) for name with
// type A, class IN.
func query(id uint16, name string) []byte {
	b := make([]byte, headerLen, 64)
	binary.BigEndian.PutUint16(b[0:], id)
	b[2] = flagRD
	binary.BigEndian.PutUint16(b[4:], 1)
	for l := range strings.SplitSeq(strings.TrimSuffix(name, "."), ".") {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	return append(b, 0, 0, 1, 0, 1)
}

// answer turns a query into a response with the given rcode and a
// trailing tag byte identifying who answered. The forwarder relays
// bytes, so the tag need not be valid DNS.
func answer(q []byte, rc int, tag byte) []byte {
	r := append(bytes.Clone(q), tag)
	r[2] |= flagQR
	r[3] = r[3]&^maskRcode | flagRA | byte(rc)
	return r
}

func TestCheckQuery(t *testing.T) {
	q := query(7, "example.com")
	tests := []struct {
		name string
		msg  []byte
		want error
	}{
		{"query", q, nil},
		{"bare header", q[:headerLen], nil},
		{"empty", nil, errShort},
		{"eleven bytes", q[:headerLen-1], errShort},
		{"response", answer(q, 0, 1), errResponse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := checkQuery(tt.msg); !errors.Is(got, tt.want) {
				t.Errorf("checkQuery = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestIsReplyTo(t *testing.T) {
	q := query(0xbeef, "example.com")
	notify := bytes.Clone(q)
	notify[2] |= 4 << 3 // opcode NOTIFY
	wrongID := answer(q, 0, 1)
	wrongID[1]++
	tests := []struct {
		name  string
		reply []byte
		want  bool
	}{
		{"answer", answer(q, 0, 1), true},
		{"error answer is still the answer", answer(q, rcodeRefused, 1), true},
		{"header only", answer(q, 0, 1)[:headerLen], true},
		{"query echoed back", q, false},
		{"wrong id", wrongID, false},
		{"other opcode", answer(notify, 0, 1), false},
		{"short", answer(q, 0, 1)[:headerLen-1], false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isReplyTo(q, tt.reply); got != tt.want {
				t.Errorf("isReplyTo = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRetryable(t *testing.T) {
	q := query(1, "a")
	for rc, want := range map[int]bool{0: false, 1: false, 2: true, 3: false, 4: true, 5: true, 9: false} {
		if got := retryable(answer(q, rc, 0)); got != want {
			t.Errorf("rcode %d: retryable = %v, want %v", rc, got, want)
		}
	}
}

func TestServFail(t *testing.T) {
	q := query(0x1234, "www.example.com")
	withEDNS := append(bytes.Clone(q), 0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0) // OPT RR
	binary.BigEndian.PutUint16(withEDNS[10:], 1)
	cd := bytes.Clone(q)
	cd[3] |= flagCD
	noRD := bytes.Clone(q)
	noRD[2] &^= flagRD
	twoQuestions := bytes.Clone(q)
	binary.BigEndian.PutUint16(twoQuestions[4:], 2)
	compressed := append(bytes.Clone(q[:headerLen]), 0xc0, 0x0c, 0, 1, 0, 1)
	longLabel := append(bytes.Clone(q[:headerLen]), 64)
	longLabel = append(longLabel, bytes.Repeat([]byte{'a'}, 64)...)
	longLabel = append(longLabel, 0, 0, 1, 0, 1)
	var longName []byte // 5 labels of 63: 5*64+1 = 321 > 255
	longName = append(longName, q[:headerLen]...)
	for range 5 {
		longName = append(longName, 63)
		longName = append(longName, bytes.Repeat([]byte{'b'}, 63)...)
	}
	longName = append(longName, 0, 0, 1, 0, 1)
	root := append(bytes.Clone(q[:headerLen]), 0, 0, 2, 0, 1)

	tests := []struct {
		name  string
		query []byte
		// want is the expected response header bytes 2-3 and question
		// length; ok false means no SERVFAIL can be built.
		flags [2]byte
		qlen  int
		ok    bool
	}{
		{"plain", q, [2]byte{flagQR | flagRD, flagRA | rcodeServFail}, len(q), true},
		{"edns opt dropped", withEDNS, [2]byte{flagQR | flagRD, flagRA | rcodeServFail}, len(q), true},
		{"cd copied", cd, [2]byte{flagQR | flagRD, flagRA | flagCD | rcodeServFail}, len(q), true},
		{"rd copied when clear", noRD, [2]byte{flagQR, flagRA | rcodeServFail}, len(q), true},
		{"root name", root, [2]byte{flagQR | flagRD, flagRA | rcodeServFail}, len(root), true},
		{"no question", q[:headerLen], [2]byte{}, 0, false},
		{"two questions", twoQuestions, [2]byte{}, 0, false},
		{"truncated question", q[:len(q)-1], [2]byte{}, 0, false},
		{"truncated name", q[:headerLen+3], [2]byte{}, 0, false},
		{"compression pointer", compressed, [2]byte{}, 0, false},
		{"label over 63", longLabel, [2]byte{}, 0, false},
		{"name over 255", longName, [2]byte{}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := servFail(tt.query)
			if !tt.ok {
				if r != nil {
					t.Fatalf("servFail = %x, want nil", r)
				}
				return
			}
			if len(r) != tt.qlen {
				t.Fatalf("servFail is %d bytes, want %d: %x", len(r), tt.qlen, r)
			}
			if !bytes.Equal(r[0:2], tt.query[0:2]) {
				t.Errorf("id %x, want %x", r[0:2], tt.query[0:2])
			}
			if [2]byte(r[2:4]) != tt.flags {
				t.Errorf("flags %08b %08b, want %08b %08b", r[2], r[3], tt.flags[0], tt.flags[1])
			}
			if want := []byte{0, 1, 0, 0, 0, 0, 0, 0}; !bytes.Equal(r[4:headerLen], want) {
				t.Errorf("counts %x, want %x", r[4:headerLen], want)
			}
			if !bytes.Equal(r[headerLen:], tt.query[headerLen:tt.qlen]) {
				t.Errorf("question %x, want %x", r[headerLen:], tt.query[headerLen:tt.qlen])
			}
			if !isReplyTo(tt.query, r) || !retryable(r) {
				t.Errorf("servFail is not a retryable reply to its query")
			}
		})
	}
}

func TestReadWriteMsg(t *testing.T) {
	var b bytes.Buffer
	big := bytes.Repeat([]byte{0xab}, maxMsg)
	for _, m := range [][]byte{query(1, "a"), big} {
		if err := writeMsg(&b, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeMsg(&b, make([]byte, maxMsg+1)); err == nil {
		t.Error("writeMsg accepted a message over 65535 bytes")
	}
	for _, want := range [][]byte{query(1, "a"), big} {
		got, err := readMsg(&b)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("readMsg = %d bytes, %v; want %d bytes", len(got), err, len(want))
		}
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"clean eof", nil, io.EOF},
		{"eof in prefix", []byte{0}, io.ErrUnexpectedEOF},
		{"eof in message", []byte{0, 5, 1, 2}, io.ErrUnexpectedEOF},
		{"zero length", []byte{0, 0}, errZeroLength},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := readMsg(bytes.NewReader(tt.in)); !errors.Is(err, tt.want) {
				t.Errorf("readMsg = %v, want %v", err, tt.want)
			}
		})
	}
}
