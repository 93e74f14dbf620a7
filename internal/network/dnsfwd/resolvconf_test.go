package dnsfwd

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParseResolvConf(t *testing.T) {
	ap := netip.MustParseAddrPort
	defaults := []netip.AddrPort{ap("127.0.0.1:53"), ap("[::1]:53")}
	tests := []struct {
		name string
		in   string
		want []netip.AddrPort
	}{
		{"systemd-resolved stub", "# This is /run/systemd/resolve/stub-resolv.conf managed by man:systemd-resolved(8).\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n",
			[]netip.AddrPort{ap("127.0.0.53:53")}},
		{"ipv4 and ipv6 in file order", "nameserver 2001:4860:4860::8888\nnameserver 8.8.8.8\n",
			[]netip.AddrPort{ap("[2001:4860:4860::8888]:53"), ap("8.8.8.8:53")}},
		{"comment lines", "#nameserver 1.1.1.1\n; nameserver 1.0.0.1\nnameserver 9.9.9.9\n",
			[]netip.AddrPort{ap("9.9.9.9:53")}},
		{"trailing text after the address", "nameserver 1.1.1.1 # cloudflare\nnameserver 8.8.4.4\textra\n",
			[]netip.AddrPort{ap("1.1.1.1:53"), ap("8.8.4.4:53")}},
		{"tabs, blank lines, CRLF, no final newline", "\n\nnameserver\t10.0.0.2\r\n\r\nnameserver 10.0.0.3",
			[]netip.AddrPort{ap("10.0.0.2:53"), ap("10.0.0.3:53")}},
		{"leading white space accepted as Go does", "   nameserver 10.0.0.4\n",
			[]netip.AddrPort{ap("10.0.0.4:53")}},
		{"only the first three count", "nameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nnameserver 10.0.0.4\n",
			[]netip.AddrPort{ap("10.0.0.1:53"), ap("10.0.0.2:53"), ap("10.0.0.3:53")}},
		{"invalid addresses are skipped and do not use a slot", "nameserver dns.google\nnameserver 10.0.0.1\nnameserver 300.1.1.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n",
			[]netip.AddrPort{ap("10.0.0.1:53"), ap("10.0.0.2:53"), ap("10.0.0.3:53")}},
		{"address with a port is not an address", "nameserver 10.0.0.1:5353\nnameserver 10.0.0.2\n",
			[]netip.AddrPort{ap("10.0.0.2:53")}},
		{"ipv6 zone kept", "nameserver fe80::1%eth0\n",
			[]netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("fe80::1%eth0"), 53)}},
		{"ipv4-mapped ipv6 becomes ipv4", "nameserver ::ffff:192.0.2.53\n",
			[]netip.AddrPort{ap("192.0.2.53:53")}},
		{"only ascii white space separates", "nameserver\u00a010.0.0.1\nnameserver\v10.0.0.2\n",
			[]netip.AddrPort{ap("10.0.0.2:53")}},
		{"keyword is exact and case-sensitive", "nameservers 10.0.0.1\nNAMESERVER 10.0.0.2\nnameserver10.0.0.3\nnameserver 10.0.0.4\n",
			[]netip.AddrPort{ap("10.0.0.4:53")}},
		{"duplicates kept as the host resolver keeps them", "nameserver 10.0.0.1\nnameserver 10.0.0.1\n",
			[]netip.AddrPort{ap("10.0.0.1:53"), ap("10.0.0.1:53")}},
		{"empty file means the local resolver", "", defaults},
		{"no usable nameserver means the local resolver", "search example.com\nnameserver\nnameserver bogus\n", defaults},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseResolvConf(strings.NewReader(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseResolvConfReadError(t *testing.T) {
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("nameserver 10.0.0.1\n"), iotest.ErrReader(boom))
	if _, err := ParseResolvConf(r); !errors.Is(err, boom) {
		t.Fatalf("error = %v, want one wrapping %v", err, boom)
	}
}

// The defaults must not alias package state: a caller appending to or
// editing the result must not change the next call's.
func TestParseResolvConfDefaultsAreCopied(t *testing.T) {
	a, _ := ParseResolvConf(strings.NewReader(""))
	a[0] = netip.MustParseAddrPort("192.0.2.1:53")
	b, _ := ParseResolvConf(strings.NewReader(""))
	if b[0] != netip.MustParseAddrPort("127.0.0.1:53") {
		t.Fatalf("defaults were modified through a returned slice: %v", b)
	}
}

func FuzzParseResolvConf(f *testing.F) {
	for _, s := range []string{
		"nameserver 127.0.0.53\noptions edns0 trust-ad\n",
		"nameserver 2001:db8::1\nnameserver 10.0.0.1 # x\n; c\n# c\n",
		"nameserver fe80::1%eth0\r\nnameserver ::ffff:1.2.3.4",
		"nameserver 1.1.1.1\nnameserver 1.1.1.2\nnameserver 1.1.1.3\nnameserver 1.1.1.4\n",
		"", "\x00\xff", "nameserver \n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := ParseResolvConf(bytes.NewReader(in))
		if err != nil {
			t.Fatalf("error reading from memory: %v", err)
		}
		if len(got) == 0 || len(got) > maxNameservers {
			t.Fatalf("got %d upstreams, want 1..%d", len(got), maxNameservers)
		}
		// Every upstream must come from a nameserver line of the input,
		// unless the result is the documented default.
		var named []netip.Addr
		for line := range strings.SplitSeq(string(in), "\n") {
			f := strings.FieldsFunc(line, func(r rune) bool { return strings.ContainsRune(" \t\r\v\f", r) })
			if len(f) >= 2 && f[0] == "nameserver" && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, ";") {
				if a, err := netip.ParseAddr(f[1]); err == nil {
					named = append(named, a.Unmap())
				}
			}
		}
		if len(named) == 0 {
			if !slices.Equal(got, defaultUpstreams) {
				t.Fatalf("no nameserver in input, got %v, want the defaults", got)
			}
			return
		}
		if want := named[:min(len(named), maxNameservers)]; len(got) != len(want) {
			t.Fatalf("got %v, want the first %d of %v", got, len(want), named)
		}
		for i, up := range got {
			if up.Port() != 53 || !up.Addr().IsValid() || up.Addr().Is4In6() || up.Addr() != named[i] {
				t.Fatalf("upstream %d is %v, want %v port 53", i, up, named[i])
			}
		}
	})
}
