package network

import (
	"errors"
	"flag"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// testHost is the host configuration every fixture shares.
func testHost() HostConfig {
	return HostConfig{
		Uplink:       "eth0",
		TenantPool:   netip.MustParsePrefix("10.100.0.0/16"),
		ExternalPool: AddrRange{First: netip.MustParseAddr("192.0.2.10"), Last: netip.MustParseAddr("192.0.2.20")},
	}
}

func tenant(ns, subnet string) Tenant {
	p := netip.MustParsePrefix(subnet)
	return Tenant{Namespace: ns, Bridge: BridgeName(ns), Subnet: p, Gateway: GatewayFor(p)}
}

func endpoint(ns, name, ip string, x *Exposure) Endpoint {
	return Endpoint{
		Namespace: ns, Name: name,
		MAC:      MACFor(ns + "/" + name),
		IP:       netip.MustParseAddr(ip),
		Tap:      TapName(ns, name),
		External: x,
	}
}

func portList(ip string, icmp bool, ports ...int) *Exposure {
	return &Exposure{IP: netip.MustParseAddr(ip), Method: v1alpha1.ExternalMethodPortList, Ports: ports, AllowICMP: icmp}
}

func wholeIP(ip string) *Exposure {
	return &Exposure{IP: netip.MustParseAddr(ip), Method: v1alpha1.ExternalMethodWholeIP, Ports: []int{22}, AllowICMP: true}
}

// goldenCases are the desired states whose rulesets are pinned in
// testdata/<name>.nft. The two switch-* goldens are the same VM before and
// after switching PortList -> WholeIP; `diff` them to see what changes.
func goldenCases() []struct {
	name string
	d    Desired
} {
	a := tenant("tenant-a", "10.100.0.0/24")
	b := tenant("tenant-b", "10.100.1.0/24")
	return []struct {
		name string
		d    Desired
	}{
		{name: "one-tenant-no-external", d: Desired{Host: testHost(), Tenants: []Tenant{a},
			Endpoints: []Endpoint{endpoint("tenant-a", "web", "10.100.0.2", nil)}}},
		{name: "portlist-icmp", d: Desired{Host: testHost(), Tenants: []Tenant{a},
			Endpoints: []Endpoint{endpoint("tenant-a", "web", "10.100.0.2", portList("192.0.2.10", true, 443, 22, 80))}}},
		{name: "portlist-no-icmp", d: Desired{Host: testHost(), Tenants: []Tenant{a},
			Endpoints: []Endpoint{endpoint("tenant-a", "web", "10.100.0.2", portList("192.0.2.10", false, 22))}}},
		{name: "wholeip", d: Desired{Host: testHost(), Tenants: []Tenant{a},
			Endpoints: []Endpoint{endpoint("tenant-a", "web", "10.100.0.2", wholeIP("192.0.2.10"))}}},
		{name: "two-tenants", d: Desired{Host: testHost(), Tenants: []Tenant{b, a},
			Endpoints: []Endpoint{
				endpoint("tenant-b", "db", "10.100.1.2", nil),
				endpoint("tenant-a", "web", "10.100.0.3", portList("192.0.2.11", true, 80, 443)),
				endpoint("tenant-a", "api", "10.100.0.2", wholeIP("192.0.2.10")),
				endpoint("tenant-b", "cache", "10.100.1.3", portList("192.0.2.12", false)),
			}}},
		{name: "switch-1-portlist", d: Desired{Host: testHost(), Tenants: []Tenant{a},
			Endpoints: []Endpoint{
				endpoint("tenant-a", "web", "10.100.0.2", portList("192.0.2.10", true, 22, 80)),
				endpoint("tenant-a", "other", "10.100.0.3", portList("192.0.2.11", false, 8080)),
			}}},
		{name: "switch-2-wholeip", d: Desired{Host: testHost(), Tenants: []Tenant{a},
			Endpoints: []Endpoint{
				endpoint("tenant-a", "web", "10.100.0.2", wholeIP("192.0.2.10")),
				endpoint("tenant-a", "other", "10.100.0.3", portList("192.0.2.11", false, 8080)),
			}}},
	}
}

func TestPlanGolden(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := Plan(tc.d)
			if err != nil {
				t.Fatalf("Plan: %v", err)
			}
			got := rs.String()
			path := filepath.Join("testdata", tc.name+".nft")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("reading golden (run with -update to create): %v", err)
			}
			if got != string(want) {
				t.Errorf("ruleset differs from %s (run with -update after review):\n%s", path, lineDiff(string(want), got))
			}
		})
	}
}

// lineDiff is a minimal "-want +got" listing of lines present in only one
// side, enough to point at the element or rule that changed.
func lineDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for _, l := range wl {
		if !slices.Contains(gl, l) {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range gl {
		if !slices.Contains(wl, l) {
			b.WriteString("+ " + l + "\n")
		}
	}
	return b.String()
}

// TestPlanSwitchMethodChangesOnlyElements pins the property that makes a
// method switch safe: PortList -> WholeIP changes set elements, never a
// rule, a chain or a set definition; and the other VM is untouched.
func TestPlanSwitchMethodChangesOnlyElements(t *testing.T) {
	cases := goldenCases()
	var before, after Ruleset
	for _, tc := range cases {
		rs, err := Plan(tc.d)
		if err != nil {
			t.Fatal(err)
		}
		switch tc.name {
		case "switch-1-portlist":
			before = rs
		case "switch-2-wholeip":
			after = rs
		}
	}
	strip := func(rs Ruleset) Ruleset {
		out := Ruleset{}
		for _, tb := range rs.Tables {
			tb.Sets = slices.Clone(tb.Sets)
			for i := range tb.Sets {
				tb.Sets[i].Elements = nil
			}
			out.Tables = append(out.Tables, tb)
		}
		return out
	}
	if b, a := strip(before).String(), strip(after).String(); b != a {
		t.Fatalf("switching method changed more than set elements:\n%s", lineDiff(b, a))
	}
	elems := func(rs Ruleset, set string) []string {
		for _, tb := range rs.Tables {
			for _, s := range tb.Sets {
				if tb.Family == FamilyIP && s.Name == set {
					var out []string
					for _, e := range s.Elements {
						out = append(out, e.String())
					}
					return out
				}
			}
		}
		t.Fatalf("no set %s", set)
		return nil
	}
	tests := []struct {
		name          string
		set           string
		before, after []string
	}{
		{name: "tcp ports leave, other vm stays", set: SetExposedTCP,
			before: []string{"10.100.0.2 . 22", "10.100.0.2 . 80", "10.100.0.3 . 8080"}, after: []string{"10.100.0.3 . 8080"}},
		{name: "icmp leaves", set: SetExposedICMP, before: []string{"10.100.0.2"}, after: nil},
		{name: "wholeip arrives", set: SetExposedWholeIP, before: nil, after: []string{"10.100.0.2"}},
		{name: "dnat unchanged", set: MapExtDNAT,
			before: []string{"192.0.2.10 : 10.100.0.2", "192.0.2.11 : 10.100.0.3"}, after: []string{"192.0.2.10 : 10.100.0.2", "192.0.2.11 : 10.100.0.3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := elems(before, tt.set); !slices.Equal(got, tt.before) {
				t.Errorf("before: %s = %q, want %q", tt.set, got, tt.before)
			}
			if got := elems(after, tt.set); !slices.Equal(got, tt.after) {
				t.Errorf("after: %s = %q, want %q", tt.set, got, tt.after)
			}
		})
	}
}

// TestPlanDeterministic shuffles the input and expects byte-identical output.
func TestPlanDeterministic(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			want, err := Plan(tc.d)
			if err != nil {
				t.Fatal(err)
			}
			r := rand.New(rand.NewPCG(1, 2))
			for range 20 {
				d := tc.d
				d.Tenants = slices.Clone(d.Tenants)
				d.Endpoints = slices.Clone(d.Endpoints)
				r.Shuffle(len(d.Tenants), func(i, j int) { d.Tenants[i], d.Tenants[j] = d.Tenants[j], d.Tenants[i] })
				r.Shuffle(len(d.Endpoints), func(i, j int) { d.Endpoints[i], d.Endpoints[j] = d.Endpoints[j], d.Endpoints[i] })
				got, err := Plan(d)
				if err != nil {
					t.Fatal(err)
				}
				if got.String() != want.String() {
					t.Fatalf("shuffled input changed the plan:\n%s", lineDiff(want.String(), got.String()))
				}
			}
		})
	}
}

// TestPlanDuplicatePortsCollapse checks that a port listed twice is one set
// element (the kernel would reject a duplicate element in one batch).
func TestPlanDuplicatePortsCollapse(t *testing.T) {
	d := Desired{Host: testHost(), Tenants: []Tenant{tenant("a", "10.100.0.0/24")},
		Endpoints: []Endpoint{endpoint("a", "web", "10.100.0.2", portList("192.0.2.10", false, 22, 22, 80))}}
	rs, err := Plan(d)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(rs.String(), "10.100.0.2 . 22"); got != 1 {
		t.Errorf("port 22 appears %d times, want 1", got)
	}
}

func TestPlanValidation(t *testing.T) {
	base := func() Desired {
		return Desired{
			Host:    testHost(),
			Tenants: []Tenant{tenant("a", "10.100.0.0/24"), tenant("b", "10.100.1.0/24")},
			Endpoints: []Endpoint{
				endpoint("a", "web", "10.100.0.2", portList("192.0.2.10", true, 22)),
				endpoint("b", "db", "10.100.1.2", nil),
			},
		}
	}
	tests := []struct {
		name   string
		mutate func(d *Desired)
		want   []string // substrings the error must contain
	}{
		{name: "duplicate ip", mutate: func(d *Desired) { d.Endpoints[1].IP = d.Endpoints[0].IP; d.Endpoints[1].Namespace = "a" },
			want: []string{"endpoints[a/db].ip", "Duplicate value", "also a/web"}},
		{name: "duplicate mac", mutate: func(d *Desired) { d.Endpoints[1].MAC = d.Endpoints[0].MAC },
			want: []string{"endpoints[b/db].mac", "Duplicate value"}},
		{name: "multicast mac", mutate: func(d *Desired) { d.Endpoints[0].MAC = net.HardwareAddr{1, 0, 0x5e, 0, 0, 1} },
			want: []string{"endpoints[a/web].mac", "unicast"}},
		{name: "short mac", mutate: func(d *Desired) { d.Endpoints[0].MAC = net.HardwareAddr{2, 0} },
			want: []string{"endpoints[a/web].mac", "48-bit"}},
		{name: "ip outside tenant subnet", mutate: func(d *Desired) { d.Endpoints[0].IP = netip.MustParseAddr("10.100.1.9") },
			want: []string{"endpoints[a/web].ip", "tenant subnet 10.100.0.0/24"}},
		{name: "ip is the gateway", mutate: func(d *Desired) { d.Endpoints[0].IP = netip.MustParseAddr("10.100.0.1") },
			want: []string{"endpoints[a/web].ip", "not network, gateway or broadcast"}},
		{name: "ip is broadcast", mutate: func(d *Desired) { d.Endpoints[0].IP = netip.MustParseAddr("10.100.0.255") },
			want: []string{"endpoints[a/web].ip"}},
		{name: "ipv6 ip", mutate: func(d *Desired) { d.Endpoints[0].IP = netip.MustParseAddr("fd00::2") },
			want: []string{"endpoints[a/web].ip", "IPv4"}},
		{name: "tap too long", mutate: func(d *Desired) { d.Endpoints[0].Tap = "vmt-0123456789ab" },
			want: []string{"endpoints[a/web].tap", "1-15 bytes"}},
		{name: "tap with slash", mutate: func(d *Desired) { d.Endpoints[0].Tap = "vmt/x" },
			want: []string{"endpoints[a/web].tap", "forbidden character"}},
		{name: "tap equals a bridge", mutate: func(d *Desired) { d.Endpoints[0].Tap = d.Tenants[1].Bridge },
			want: []string{"endpoints[a/web].tap", "also tenants[b].bridge"}},
		{name: "tap equals the uplink", mutate: func(d *Desired) { d.Endpoints[0].Tap = "eth0" },
			want: []string{"endpoints[a/web].tap", "also host.uplink"}},
		{name: "external ip outside pool", mutate: func(d *Desired) { d.Endpoints[0].External.IP = netip.MustParseAddr("192.0.2.21") },
			want: []string{"endpoints[a/web].external.ip", "external pool 192.0.2.10-192.0.2.20"}},
		{name: "duplicate external ip", mutate: func(d *Desired) { d.Endpoints[1].External = wholeIP("192.0.2.10") },
			want: []string{"endpoints[b/db].external.ip", "Duplicate value"}},
		{name: "port zero", mutate: func(d *Desired) { d.Endpoints[0].External.Ports = []int{22, 0} },
			want: []string{"endpoints[a/web].external.ports[1]", "between 1 and 65535"}},
		{name: "port too high", mutate: func(d *Desired) { d.Endpoints[0].External.Ports = []int{65536} },
			want: []string{"endpoints[a/web].external.ports[0]"}},
		{name: "unknown method", mutate: func(d *Desired) { d.Endpoints[0].External.Method = "AllPorts" },
			want: []string{"endpoints[a/web].external.method", "Unsupported value"}},
		{name: "unknown tenant", mutate: func(d *Desired) { d.Endpoints[1].Namespace = "c" },
			want: []string{"endpoints[c/db].namespace", "Not found"}},
		{name: "duplicate endpoint", mutate: func(d *Desired) { d.Endpoints = append(d.Endpoints, d.Endpoints[0]) },
			want: []string{"endpoints[a/web]", "Duplicate value"}},
		{name: "missing endpoint name", mutate: func(d *Desired) { d.Endpoints[1].Name = "" },
			want: []string{"endpoints[1]", "Required value"}},
		{name: "overlapping tenant subnets", mutate: func(d *Desired) { d.Tenants[1].Subnet = netip.MustParsePrefix("10.100.0.0/23") },
			want: []string{"tenants[b].subnet", "overlaps the subnet of tenant a"}},
		{name: "tenant subnet outside pool", mutate: func(d *Desired) { d.Tenants[1].Subnet = netip.MustParsePrefix("10.200.0.0/24") },
			want: []string{"tenants[b].subnet", "inside the tenant pool"}},
		{name: "tenant subnet with host bits", mutate: func(d *Desired) { d.Tenants[1].Subnet = netip.MustParsePrefix("10.100.1.5/24") },
			want: []string{"tenants[b].subnet", "no host bits"}},
		{name: "gateway outside subnet", mutate: func(d *Desired) { d.Tenants[0].Gateway = netip.MustParseAddr("10.100.9.1") },
			want: []string{"tenants[a].gateway"}},
		{name: "duplicate bridge", mutate: func(d *Desired) { d.Tenants[1].Bridge = d.Tenants[0].Bridge },
			want: []string{"tenants[b].bridge", "Duplicate value"}},
		{name: "duplicate tenant", mutate: func(d *Desired) { d.Tenants = append(d.Tenants, d.Tenants[0]) },
			want: []string{"tenants[a]", "Duplicate value"}},
		{name: "empty uplink", mutate: func(d *Desired) { d.Host.Uplink = "" },
			want: []string{"host.uplink"}},
		{name: "external pool inside tenant pool", mutate: func(d *Desired) {
			d.Host.ExternalPool = AddrRange{First: netip.MustParseAddr("10.99.255.250"), Last: netip.MustParseAddr("10.100.0.5")}
		}, want: []string{"host.externalPool", "overlaps the tenant pool"}},
		{name: "ipv6 tenant pool", mutate: func(d *Desired) { d.Host.TenantPool = netip.MustParsePrefix("fd00::/64") },
			want: []string{"host.tenantPool"}},
		{name: "several errors reported together", mutate: func(d *Desired) {
			d.Endpoints[0].Tap = ""
			d.Endpoints[1].External = portList("192.0.2.11", false, -1)
		}, want: []string{"endpoints[a/web].tap", "endpoints[b/db].external.ports[0]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := base()
			// Deep-copy the exposures the mutation may touch.
			for i := range d.Endpoints {
				if x := d.Endpoints[i].External; x != nil {
					c := *x
					d.Endpoints[i].External = &c
				}
			}
			tt.mutate(&d)
			rs, err := Plan(d)
			if err == nil {
				t.Fatalf("Plan accepted invalid input; ruleset:\n%s", rs)
			}
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("error %v does not match errdefs.ErrInvalid", err)
			}
			if len(rs.Tables) != 0 {
				t.Errorf("Plan returned a ruleset with an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
	t.Run("base is valid", func(t *testing.T) {
		if _, err := Plan(base()); err != nil {
			t.Fatal(err)
		}
	})
}
