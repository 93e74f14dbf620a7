package nft

import (
	"net/netip"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/network"
)

// fixture returns a Desired with one tenant and the given exposures, one VM
// per exposure (nil = no external IP). The same helper drives the kernel
// integration tests.
func fixture(exposures ...*network.Exposure) network.Desired {
	pool := netip.MustParsePrefix("10.100.0.0/16")
	sub := netip.MustParsePrefix("10.100.0.0/24")
	d := network.Desired{
		Host: network.HostConfig{
			Uplink:       "up0",
			TenantPool:   pool,
			ExternalPool: network.AddrRange{First: netip.MustParseAddr("192.0.2.10"), Last: netip.MustParseAddr("192.0.2.20")},
		},
		Tenants: []network.Tenant{{Namespace: "tenant-a", Bridge: network.BridgeName("tenant-a"), Subnet: sub, Gateway: network.GatewayFor(sub)}},
	}
	var used []netip.Addr
	for i, x := range exposures {
		ip, err := network.AllocateIP(sub, used)
		if err != nil {
			panic(err)
		}
		used = append(used, ip)
		name := string(rune('a' + i))
		d.Endpoints = append(d.Endpoints, network.Endpoint{
			Namespace: "tenant-a", Name: "vm-" + name, MAC: network.MACFor("uid-" + name), IP: ip,
			Tap: network.TapName("tenant-a", "vm-"+name), External: x,
		})
	}
	return d
}

func portList(ip string, icmp bool, ports ...int) *network.Exposure {
	return &network.Exposure{IP: netip.MustParseAddr(ip), Method: v1alpha1.ExternalMethodPortList, Ports: ports, AllowICMP: icmp}
}

func wholeIP(ip string) *network.Exposure {
	return &network.Exposure{IP: netip.MustParseAddr(ip), Method: v1alpha1.ExternalMethodWholeIP}
}

// TestEncodeDecodeRoundTrip encodes every rule and set element of several
// plans to kernel expressions and decodes them back. It pins that Dump can
// read everything Apply writes, without needing root.
func TestEncodeDecodeRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		d    network.Desired
	}{
		{name: "no external", d: fixture(nil)},
		{name: "portlist with icmp", d: fixture(portList("192.0.2.10", true, 22, 80, 443))},
		{name: "mixed", d: fixture(wholeIP("192.0.2.11"), portList("192.0.2.10", false, 22), nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := network.Plan(tt.d)
			if err != nil {
				t.Fatal(err)
			}
			var back network.Ruleset
			for _, tb := range rs.Tables {
				sets := map[string]*nftables.Set{}
				out := network.Table{Family: tb.Family, Name: tb.Name}
				for _, s := range tb.Sets {
					sets[s.Name] = &nftables.Set{Name: s.Name}
					rs := network.Set{Name: s.Name, Key: s.Key, Data: s.Data}
					for _, e := range s.Elements {
						el := nftables.SetElement{Key: keyBytes(e.Key)}
						if s.IsMap() {
							el.Val = valueBytes(e.Data)
						}
						de, err := decodeElement(s, el)
						if err != nil {
							t.Fatalf("set %s: %v", s.Name, err)
						}
						rs.Elements = append(rs.Elements, de)
					}
					out.Sets = append(out.Sets, rs)
				}
				for _, ch := range tb.Chains {
					oc := network.Chain{Name: ch.Name, Base: ch.Base}
					for _, r := range ch.Rules {
						exprs, err := ruleExprs(r, sets)
						if err != nil {
							t.Fatalf("encoding %s: %v", r, err)
						}
						kr := &nftables.Rule{Exprs: exprs}
						if r.Comment != "" {
							kr.UserData = userdata.AppendString(nil, userdata.TypeComment, r.Comment)
						}
						dr, err := decodeRule(kr)
						if err != nil {
							t.Fatalf("decoding %s: %v", r, err)
						}
						oc.Rules = append(oc.Rules, dr)
					}
					out.Chains = append(out.Chains, oc)
				}
				back.Tables = append(back.Tables, out)
			}
			back.Normalize()
			if got, want := back.String(), rs.String(); got != want {
				t.Errorf("round trip differs:\n--- want\n%s\n--- got\n%s", want, got)
			}
		})
	}
}

func TestDecodeRejectsUnknown(t *testing.T) {
	tests := []struct {
		name  string
		exprs []expr.Any
	}{
		{name: "no verdict", exprs: []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Register: 1, Data: make([]byte, 16)}}},
		{name: "unsupported expression", exprs: []expr.Any{&expr.Log{}, &expr.Verdict{Kind: expr.VerdictAccept}}},
		{name: "unknown payload", exprs: []expr.Any{&expr.Payload{Base: expr.PayloadBaseNetworkHeader, Offset: 1, Len: 1, DestRegister: 1}, &expr.Cmp{Register: 1, Data: []byte{0}}, &expr.Verdict{Kind: expr.VerdictAccept}}},
		{name: "non-prefix mask", exprs: []expr.Any{
			&expr.Payload{Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4, DestRegister: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 0, 255, 0}, Xor: make([]byte, 4)},
			&expr.Cmp{Register: 1, Data: []byte{10, 0, 0, 0}}, &expr.Verdict{Kind: expr.VerdictAccept}}},
		{name: "unused load", exprs: []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Verdict{Kind: expr.VerdictAccept}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r, err := decodeRule(&nftables.Rule{Exprs: tt.exprs}); err == nil {
				t.Fatalf("decoded %q, want an error", r)
			}
		})
	}
}

func TestMaskBits(t *testing.T) {
	tests := []struct {
		name string
		mask []byte
		want int
	}{
		{name: "slash 0", mask: []byte{0, 0, 0, 0}, want: 0},
		{name: "slash 16", mask: []byte{255, 255, 0, 0}, want: 16},
		{name: "slash 23", mask: []byte{255, 255, 254, 0}, want: 23},
		{name: "slash 32", mask: []byte{255, 255, 255, 255}, want: 32},
		{name: "holes", mask: []byte{255, 0, 255, 0}, want: -1},
		{name: "wrong length", mask: []byte{255}, want: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := maskBits(tt.mask); got != tt.want {
				t.Errorf("maskBits(%v) = %d, want %d", tt.mask, got, tt.want)
			}
		})
	}
}
