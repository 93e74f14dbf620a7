package network

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vmdhq/vmd/internal/errdefs"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func TestAllocateSubnet(t *testing.T) {
	tests := []struct {
		name    string
		pool    string
		size    int
		used    []string
		want    string
		wantErr error
	}{
		{name: "empty pool gives first", pool: "10.100.0.0/16", size: 24, want: "10.100.0.0/24"},
		{name: "skips used", pool: "10.100.0.0/16", size: 24, used: []string{"10.100.0.0/24", "10.100.1.0/24"}, want: "10.100.2.0/24"},
		{name: "fills a hole", pool: "10.100.0.0/16", size: 24, used: []string{"10.100.0.0/24", "10.100.2.0/24"}, want: "10.100.1.0/24"},
		{name: "skips a larger used block", pool: "10.100.0.0/16", size: 24, used: []string{"10.100.0.0/20"}, want: "10.100.16.0/24"},
		{name: "smaller used block taints its candidate", pool: "10.100.0.0/16", size: 24, used: []string{"10.100.0.128/25"}, want: "10.100.1.0/24"},
		{name: "used outside pool is ignored", pool: "10.100.0.0/16", size: 24, used: []string{"192.168.0.0/16"}, want: "10.100.0.0/24"},
		{name: "pool with host bits is masked", pool: "10.100.7.9/16", size: 24, want: "10.100.0.0/24"},
		{name: "exhausted", pool: "10.100.0.0/23", size: 24, used: []string{"10.100.0.0/24", "10.100.1.0/24"}, wantErr: ErrPoolExhausted},
		{name: "size larger than pool", pool: "10.100.0.0/24", size: 16, wantErr: errdefs.ErrInvalid},
		{name: "size too small for a gateway and a guest", pool: "10.100.0.0/24", size: 31, wantErr: errdefs.ErrInvalid},
		{name: "ipv6 pool", pool: "fd00::/48", size: 64, wantErr: errdefs.ErrInvalid},
		{name: "whole ipv4 space", pool: "0.0.0.0/0", size: 30, used: []string{"0.0.0.0/1"}, want: "128.0.0.0/30"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var used []netip.Prefix
			for _, u := range tt.used {
				used = append(used, pfx(u))
			}
			got, err := AllocateSubnet(pfx(tt.pool), tt.size, used)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != pfx(tt.want) {
				t.Fatalf("got %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

func TestExhaustionIsUnavailable(t *testing.T) {
	_, err := AllocateIP(pfx("10.0.0.0/30"), []netip.Addr{addr("10.0.0.2")})
	if !errors.Is(err, ErrPoolExhausted) || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrPoolExhausted matching errdefs.ErrUnavailable", err)
	}
}

func TestAllocateIP(t *testing.T) {
	tests := []struct {
		name    string
		subnet  string
		used    []string
		want    string
		wantErr error
	}{
		{name: "first guest is .2", subnet: "10.0.0.0/24", want: "10.0.0.2"},
		{name: "skips used", subnet: "10.0.0.0/24", used: []string{"10.0.0.2", "10.0.0.3"}, want: "10.0.0.4"},
		{name: "used gateway changes nothing", subnet: "10.0.0.0/24", used: []string{"10.0.0.1"}, want: "10.0.0.2"},
		{name: "last guest before broadcast", subnet: "10.0.0.0/29", used: []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"}, want: "10.0.0.6"},
		{name: "never broadcast", subnet: "10.0.0.0/29", used: []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"}, wantErr: ErrPoolExhausted},
		{name: "slash 30 has one guest", subnet: "10.0.0.4/30", want: "10.0.0.6"},
		{name: "slash 31 rejected", subnet: "10.0.0.0/31", wantErr: errdefs.ErrInvalid},
		{name: "ipv6 rejected", subnet: "fd00::/64", wantErr: errdefs.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var used []netip.Addr
			for _, u := range tt.used {
				used = append(used, addr(u))
			}
			got, err := AllocateIP(pfx(tt.subnet), used)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != addr(tt.want) {
				t.Fatalf("got %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

func TestParseAddrRangeAndAllocateExternal(t *testing.T) {
	tests := []struct {
		name      string
		pool      string
		used      []string
		wantRange string
		want      string
		wantErr   bool
	}{
		{name: "cidr excludes network and broadcast", pool: "192.0.2.0/29", wantRange: "192.0.2.1-192.0.2.6", want: "192.0.2.1"},
		{name: "slash 32 is one address", pool: "192.0.2.7/32", wantRange: "192.0.2.7", want: "192.0.2.7"},
		{name: "slash 31 keeps both", pool: "192.0.2.6/31", wantRange: "192.0.2.6-192.0.2.7", want: "192.0.2.6"},
		{name: "range includes both ends", pool: "192.0.2.10-192.0.2.12", used: []string{"192.0.2.10", "192.0.2.11"}, wantRange: "192.0.2.10-192.0.2.12", want: "192.0.2.12"},
		{name: "single address", pool: " 198.51.100.5 ", wantRange: "198.51.100.5", want: "198.51.100.5"},
		{name: "exhausted", pool: "192.0.2.10-192.0.2.11", used: []string{"192.0.2.11", "192.0.2.10"}, wantRange: "192.0.2.10-192.0.2.11", wantErr: true},
		{name: "top of address space", pool: "255.255.255.254-255.255.255.255", used: []string{"255.255.255.254", "255.255.255.255"}, wantRange: "255.255.255.254-255.255.255.255", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseAddrRange(tt.pool)
			if err != nil {
				t.Fatal(err)
			}
			if r.String() != tt.wantRange {
				t.Errorf("range = %s, want %s", r, tt.wantRange)
			}
			var used []netip.Addr
			for _, u := range tt.used {
				used = append(used, addr(u))
			}
			got, err := AllocateExternal(r, used)
			if tt.wantErr {
				if !errors.Is(err, ErrPoolExhausted) {
					t.Fatalf("err = %v, want exhausted", err)
				}
				return
			}
			if err != nil || got != addr(tt.want) {
				t.Fatalf("got %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

func TestParseAddrRangeErrors(t *testing.T) {
	tests := []struct{ name, in string }{
		{name: "garbage", in: "pool"},
		{name: "ipv6 cidr", in: "fd00::/64"},
		{name: "reversed", in: "192.0.2.9-192.0.2.1"},
		{name: "mixed families", in: "192.0.2.1-fd00::1"},
		{name: "ipv6 single", in: "fd00::1"},
		{name: "bad prefix", in: "192.0.2.0/33"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r, err := ParseAddrRange(tt.in); err == nil {
				t.Fatalf("ParseAddrRange(%q) = %v, want error", tt.in, r)
			}
		})
	}
}

func TestMACFor(t *testing.T) {
	a, b := MACFor("3f0e1c2a-uid-a"), MACFor("3f0e1c2a-uid-b")
	if a.String() != MACFor("3f0e1c2a-uid-a").String() {
		t.Error("MACFor is not stable")
	}
	if a.String() == b.String() {
		t.Error("different UIDs gave the same MAC")
	}
	for _, m := range []net.HardwareAddr{a, b} {
		if len(m) != 6 || m[0] != 0x02 {
			t.Errorf("%s: want a locally administered unicast 02:xx MAC", m)
		}
	}
	got, err := AllocateMAC("3f0e1c2a-uid-a", []net.HardwareAddr{a})
	if err != nil || got.String() == a.String() || got[0] != 0x02 {
		t.Errorf("AllocateMAC with its first choice taken = %v, %v", got, err)
	}
	again, _ := AllocateMAC("3f0e1c2a-uid-a", []net.HardwareAddr{a})
	if again.String() != got.String() {
		t.Error("AllocateMAC is not deterministic")
	}
	if first, _ := AllocateMAC("3f0e1c2a-uid-a", nil); first.String() != a.String() {
		t.Errorf("AllocateMAC without collisions = %s, want MACFor = %s", first, a)
	}
}

func TestInterfaceNames(t *testing.T) {
	long := strings.Repeat("n", 253)
	tests := []struct {
		name, got, prefix string
		wantLen           int
	}{
		{name: "bridge", got: BridgeName("tenant-a"), prefix: BridgePrefix, wantLen: 12},
		{name: "bridge of a long namespace", got: BridgeName(long), prefix: BridgePrefix, wantLen: 12},
		{name: "tap", got: TapName("tenant-a", "web"), prefix: TapPrefix, wantLen: 14},
		{name: "tap of long names", got: TapName(long, long), prefix: TapPrefix, wantLen: 14},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.HasPrefix(tt.got, tt.prefix) || len(tt.got) != tt.wantLen {
				t.Errorf("%q: want prefix %q and %d bytes", tt.got, tt.prefix, tt.wantLen)
			}
			if err := checkIfName(tt.got); err != nil {
				t.Error(err)
			}
		})
	}
	// Pinned values: a change would rename every bridge and tap on upgrade.
	if got := BridgeName("tenant-a"); got != "vmd-300a9121" {
		t.Errorf("BridgeName(tenant-a) = %s, want vmd-300a9121", got)
	}
	if got := TapName("tenant-a", "web"); got != "vmt-823007ef83" {
		t.Errorf("TapName(tenant-a, web) = %s, want vmt-823007ef83", got)
	}
	// The separator keeps ("ab","c") and ("a","bc") apart.
	if TapName("ab", "c") == TapName("a", "bc") {
		t.Error("tap names are ambiguous across the namespace/name boundary")
	}
}

// addrsFromBytes turns fuzz input into IPv4 addresses near base, so the
// used list actually hits the subnet under test.
func addrsFromBytes(base netip.Addr, b []byte) []netip.Addr {
	var out []netip.Addr
	v := addrToUint(base)
	for i := 0; i+1 < len(b); i += 2 {
		out = append(out, uintToAddr(v+(uint32(b[i])<<8|uint32(b[i+1]))))
	}
	return out
}

func FuzzAllocateIP(f *testing.F) {
	f.Add(uint32(0x0a000000), uint8(24), []byte{0, 2, 0, 3})
	f.Add(uint32(0x0a0000fc), uint8(30), []byte{})
	f.Add(uint32(0xffffff00), uint8(28), []byte{0, 2, 0, 3, 0, 4, 0, 5})
	f.Fuzz(func(t *testing.T, base uint32, bits uint8, usedRaw []byte) {
		subnet, err := uintToAddr(base).Prefix(int(bits % 33))
		if err != nil {
			t.Skip()
		}
		used := addrsFromBytes(subnet.Addr(), usedRaw)
		got, err := AllocateIP(subnet, used)
		if err != nil {
			if subnet.Bits() <= MaxSubnetBits && !errors.Is(err, ErrPoolExhausted) {
				t.Fatalf("unexpected error for %s: %v", subnet, err)
			}
			return
		}
		if IsReservedInSubnet(subnet, got) {
			t.Fatalf("AllocateIP(%s) = %s: reserved or outside", subnet, got)
		}
		for _, u := range used {
			if u == got {
				t.Fatalf("AllocateIP(%s) = %s: already used", subnet, got)
			}
		}
	})
}

func FuzzAllocateSubnet(f *testing.F) {
	f.Add(uint32(0x0a640000), uint8(16), uint8(24), []byte{0, 0, 1, 0})
	f.Add(uint32(0), uint8(0), uint8(30), []byte{255, 255})
	f.Fuzz(func(t *testing.T, base uint32, poolBits, size uint8, usedRaw []byte) {
		pool, err := uintToAddr(base).Prefix(int(poolBits % 33))
		if err != nil {
			t.Skip()
		}
		var used []netip.Prefix
		for i, a := range addrsFromBytes(pool.Addr(), usedRaw) {
			bits := 16 + int(usedRaw[i*2]%15) // /16 .. /30
			used = append(used, netip.PrefixFrom(a, bits).Masked())
		}
		got, err := AllocateSubnet(pool, int(size%33), used)
		if err != nil {
			return
		}
		if got.Bits() != int(size%33) || got.Masked() != got {
			t.Fatalf("AllocateSubnet = %s: wrong size or host bits", got)
		}
		if !pool.Contains(got.Addr()) || !pool.Contains(lastAddr(got)) {
			t.Fatalf("AllocateSubnet(%s) = %s: outside pool", pool, got)
		}
		for _, u := range used {
			if u.Overlaps(got) {
				t.Fatalf("AllocateSubnet(%s) = %s overlaps used %s", pool, got, u)
			}
		}
	})
}

func FuzzAllocateExternal(f *testing.F) {
	f.Add(uint32(0xc0000200), uint16(10), []byte{0, 0, 0, 1})
	f.Add(uint32(0xfffffffe), uint16(5), []byte{0, 0})
	f.Fuzz(func(t *testing.T, first uint32, span uint16, usedRaw []byte) {
		last := first + uint32(span)
		if last < first {
			last = 0xffffffff
		}
		pool := AddrRange{First: uintToAddr(first), Last: uintToAddr(last)}
		used := addrsFromBytes(pool.First, usedRaw)
		got, err := AllocateExternal(pool, used)
		if err != nil {
			if !errors.Is(err, ErrPoolExhausted) {
				t.Fatalf("unexpected error: %v", err)
			}
			// Exhaustion must be real: every address is used.
			if len(used) < int(last-first)+1 {
				t.Fatalf("exhausted with only %d used addresses for %s", len(used), pool)
			}
			return
		}
		if !pool.Contains(got) {
			t.Fatalf("AllocateExternal(%s) = %s: outside", pool, got)
		}
		for _, u := range used {
			if u == got {
				t.Fatalf("AllocateExternal(%s) = %s: already used", pool, got)
			}
		}
	})
}
