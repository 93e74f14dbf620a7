package dhcp

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// packet assembles a DHCP packet from hex fragments (whitespace ignored),
// so golden packets below read field by field against RFC 2131 Figure 1.
func packet(t testing.TB, parts ...string) []byte {
	t.Helper()
	var b []byte
	for _, p := range parts {
		p = strings.Join(strings.Fields(p), "")
		v, err := hex.DecodeString(p)
		if err != nil {
			t.Fatalf("bad hex %q: %v", p, err)
		}
		b = append(b, v...)
	}
	return b
}

func zeros(n int) string { return strings.Repeat("00", n) }

// discoverPacket is a DISCOVER as udhcpc sends it: broadcast flag set,
// client id, requested parameters, hostname.
func discoverPacket(t testing.TB) []byte {
	return packet(t,
		"01 01 06 00",                  // op BOOTREQUEST, htype ethernet, hlen 6, hops 0
		"de ad be ef",                  // xid
		"00 03",                        // secs
		"80 00",                        // flags: BROADCAST
		zeros(4),                       // ciaddr
		zeros(4),                       // yiaddr
		zeros(4),                       // siaddr
		zeros(4),                       // giaddr
		"02 aa bb cc dd ee", zeros(10), // chaddr
		zeros(64),                    // sname
		zeros(128),                   // file
		"63 82 53 63",                // magic cookie
		"35 01 01",                   // 53 message type DISCOVER
		"3d 07 01 02 aa bb cc dd ee", // 61 client id
		"37 05 01 03 06 0c 0f",       // 55 PRL: mask router dns hostname domain
		"0c 03 76 6d 31",             // 12 hostname "vm1"
		"ff",                         // end
		"00 00 00",                   // trailing pad
	)
}

func TestParseGoldenDiscover(t *testing.T) {
	m, err := Parse(discoverPacket(t))
	if err != nil {
		t.Fatal(err)
	}
	if m.Op != OpRequest || m.HType != HTypeEthernet || m.HLen != 6 || m.XID != 0xdeadbeef || m.Secs != 3 || m.Flags != FlagBroadcast {
		t.Errorf("header = %+v", m)
	}
	if m.HardwareAddr().String() != "02:aa:bb:cc:dd:ee" {
		t.Errorf("chaddr = %s", m.HardwareAddr())
	}
	if m.Type() != Discover {
		t.Errorf("type = %s", m.Type())
	}
	prl, ok := m.ParamRequestList()
	if !ok || !bytes.Equal(prl, []byte{1, 3, 6, 12, 15}) {
		t.Errorf("prl = %v %v", prl, ok)
	}
	if h, ok := m.Hostname(); !ok || h != "vm1" {
		t.Errorf("hostname = %q %v", h, ok)
	}
	if !m.CIAddr.IsUnspecified() || !m.GIAddr.IsUnspecified() {
		t.Errorf("addresses = %s %s", m.CIAddr, m.GIAddr)
	}
	wantOrder := []uint8{OptMessageType, OptClientID, OptParamRequestList, OptHostname}
	var got []uint8
	for _, o := range m.Options {
		got = append(got, o.Code)
	}
	if !reflect.DeepEqual(got, wantOrder) {
		t.Errorf("option order = %v, want %v", got, wantOrder)
	}
}

func TestParseOptions(t *testing.T) {
	base := func(opts ...string) []byte {
		return packet(t, append([]string{"01 01 06 00", zeros(8), zeros(16), "02 aa bb cc dd ee", zeros(10), zeros(192), "63 82 53 63"}, opts...)...)
	}
	tests := []struct {
		name    string
		pkt     []byte
		wantErr bool
		check   func(t *testing.T, m *Message)
	}{
		{
			name: "requested ip and server id (REQUEST in SELECTING)",
			pkt:  base("35 01 03", "32 04 0a 64 00 02", "36 04 0a 64 00 01", "ff"),
			check: func(t *testing.T, m *Message) {
				ip, ok := m.RequestedIP()
				sid, ok2 := m.ServerID()
				if m.Type() != Request || !ok || ip.String() != "10.100.0.2" || !ok2 || sid.String() != "10.100.0.1" {
					t.Errorf("type %s ip %s %v sid %s %v", m.Type(), ip, ok, sid, ok2)
				}
			},
		},
		{
			name: "pads between options and no end option",
			pkt:  base("00 00 35 01 01", "00", "0c 01 61"),
			check: func(t *testing.T, m *Message) {
				if h, _ := m.Hostname(); m.Type() != Discover || h != "a" {
					t.Errorf("type %s host %q", m.Type(), h)
				}
			},
		},
		{
			name: "split option is concatenated (RFC 3396)",
			pkt:  base("0c 02 76 6d", "35 01 01", "0c 01 31", "ff"),
			check: func(t *testing.T, m *Message) {
				if h, _ := m.Hostname(); h != "vm1" {
					t.Errorf("hostname = %q, want vm1", h)
				}
			},
		},
		{
			name: "options after end are ignored",
			pkt:  base("35 01 01", "ff", "0c 01 61"),
			check: func(t *testing.T, m *Message) {
				if _, ok := m.Hostname(); ok {
					t.Error("hostname after end must be ignored")
				}
			},
		},
		{
			name: "zero-length option",
			pkt:  base("35 01 01", "0c 00", "ff"),
			check: func(t *testing.T, m *Message) {
				if h, ok := m.Hostname(); !ok || h != "" {
					t.Errorf("hostname = %q %v", h, ok)
				}
			},
		},
		{
			name: "wrong-size address option reads as absent",
			pkt:  base("35 01 03", "32 03 0a 00 00", "ff"),
			check: func(t *testing.T, m *Message) {
				if _, ok := m.RequestedIP(); ok {
					t.Error("3-byte requested ip must not parse")
				}
			},
		},
		{
			name: "missing message type is type 0",
			pkt:  base("ff"),
			check: func(t *testing.T, m *Message) {
				if m.Type() != 0 {
					t.Errorf("type = %s", m.Type())
				}
			},
		},
		{name: "truncated option data", pkt: base("35 01 01", "0c 05 61 62"), wantErr: true},
		{name: "option without length byte", pkt: base("35 01 01", "0c"), wantErr: true},
		{name: "bad magic cookie", pkt: packet(t, "01 01 06 00", zeros(232), "63 82 53 64", "ff"), wantErr: true},
		{name: "short packet", pkt: packet(t, "01 01 06 00", zeros(100)), wantErr: true},
		{name: "hlen above 16", pkt: packet(t, "01 01 11 00", zeros(232), "63 82 53 63", "ff"), wantErr: true},
		{name: "invalid overload value", pkt: base("35 01 01", "34 01 04", "ff"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(tt.pkt)
			if tt.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err = %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, m)
		})
	}
}

func TestParseOverload(t *testing.T) {
	// Option 52 = 3: options continue in file, then sname (RFC 2132 §9.3).
	file := packet(t, "0c 02 76 6d", "ff")
	file = append(file, make([]byte, 128-len(file))...)
	sname := packet(t, "0c 01 31", "0f 03 6c 61 62", "ff")
	sname = append(sname, make([]byte, 64-len(sname))...)
	pkt := packet(t, "01 01 06 00", zeros(24), "02 aa bb cc dd ee", zeros(10))
	pkt = append(pkt, sname...)
	pkt = append(pkt, file...)
	pkt = append(pkt, packet(t, "63 82 53 63", "35 01 01", "34 01 03", "ff")...)
	m, err := Parse(pkt)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := m.Hostname(); h != "vm1" {
		t.Errorf("hostname = %q, want vm1 (file part first, then sname)", h)
	}
	if d, _ := m.Option(OptDomainName); string(d) != "lab" {
		t.Errorf("domain = %q", d)
	}
	if _, ok := m.Option(OptOverload); ok {
		t.Error("overload option must be consumed by Parse")
	}
	if m.File != [128]byte{} || m.SName != [64]byte{} {
		t.Error("overloaded fields must be cleared")
	}
}

// TestMarshalGoldenOffer checks an OFFER byte for byte against a packet
// written out by hand from RFC 2131 Figure 1 and RFC 2132.
func TestMarshalGoldenOffer(t *testing.T) {
	m := &Message{
		Op: OpReply, HType: HTypeEthernet, HLen: 6, XID: 0xdeadbeef, Flags: FlagBroadcast,
		CIAddr: netip.IPv4Unspecified(), YIAddr: netip.MustParseAddr("10.100.0.2"),
		SIAddr: netip.IPv4Unspecified(), GIAddr: netip.IPv4Unspecified(),
		CHAddr: [16]byte{0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee},
		Options: []Option{
			{Code: OptMessageType, Data: []byte{byte(Offer)}},
			{Code: OptServerID, Data: addrs(netip.MustParseAddr("10.100.0.1"))},
			{Code: OptLeaseTime, Data: u32(3600)},
			{Code: OptSubnetMask, Data: maskBytes(24)},
			{Code: OptRouter, Data: addrs(netip.MustParseAddr("10.100.0.1"))},
			{Code: OptDNS, Data: addrs(netip.MustParseAddr("10.100.0.1"), netip.MustParseAddr("9.9.9.9"))},
			{Code: OptMTU, Data: u16(1450)},
		},
	}
	want := packet(t,
		"02 01 06 00", "de ad be ef", "00 00", "80 00",
		zeros(4), "0a 64 00 02", zeros(4), zeros(4),
		"02 aa bb cc dd ee", zeros(10), zeros(64), zeros(128),
		"63 82 53 63",
		"35 01 02",
		"36 04 0a 64 00 01",
		"33 04 00 00 0e 10",
		"01 04 ff ff ff 00",
		"03 04 0a 64 00 01",
		"06 08 0a 64 00 01 09 09 09 09",
		"1a 02 05 aa",
		"ff",
	)
	want = append(want, make([]byte, MinReplyLen-len(want))...)
	got := m.Marshal()
	if !bytes.Equal(got, want) {
		t.Fatalf("marshal mismatch\n got %x\nwant %x", got, want)
	}
}

func TestMarshalSplitsLongOptions(t *testing.T) {
	long := bytes.Repeat([]byte("x"), 300)
	m := &Message{Op: OpReply, HType: 1, HLen: 6, Options: []Option{{Code: OptHostname, Data: long}}}
	b := m.Marshal()
	// First instance carries 255 bytes, the second 45 (RFC 3396).
	if b[240] != OptHostname || b[241] != 255 || b[240+2+255] != OptHostname || b[240+2+255+1] != 45 {
		t.Fatalf("unexpected split: % x", b[240:244])
	}
	back, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := back.Hostname(); h != string(long) {
		t.Fatalf("hostname did not round-trip: %d bytes", len(h))
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		pkt  []byte
	}{
		{name: "discover", pkt: discoverPacket(t)},
		{name: "marshalled offer", pkt: (&Message{
			Op: OpReply, HType: 1, HLen: 6, XID: 7, CIAddr: netip.MustParseAddr("10.0.0.9"),
			YIAddr: netip.MustParseAddr("10.0.0.9"), SIAddr: netip.IPv4Unspecified(), GIAddr: netip.IPv4Unspecified(),
			Options: []Option{{Code: OptMessageType, Data: []byte{5}}, {Code: 200, Data: []byte{1, 2, 3}}},
		}).Marshal()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m1, err := Parse(tt.pkt)
			if err != nil {
				t.Fatal(err)
			}
			m2, err := Parse(m1.Marshal())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m1, m2) {
				t.Fatalf("round trip changed the message:\n%+v\n%+v", m1, m2)
			}
		})
	}
}

// FuzzParse checks that Parse never panics and that whatever it accepts
// survives Marshal -> Parse unchanged.
func FuzzParse(f *testing.F) {
	f.Add(discoverPacket(f))
	f.Add((&Message{Op: 2, HType: 1, HLen: 6, Options: []Option{{Code: 53, Data: []byte{2}}}}).Marshal())
	over := discoverPacket(f)
	over = append(over[:240], packet(f, "34 01 03 ff")...)
	f.Add(over)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		_ = m.Type()
		_ = m.HardwareAddr()
		out := m.Marshal()
		m2, err := Parse(out)
		if err != nil {
			t.Fatalf("re-parsing marshalled message: %v", err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the message:\n%+v\n%+v", m, m2)
		}
	})
}
