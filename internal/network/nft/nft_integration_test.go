//go:build integration

package nft

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/vmdhq/vmd/internal/network"
	"github.com/vmdhq/vmd/internal/network/nettest"
)

func nsNft(t *testing.T, ns string, args ...string) string {
	t.Helper()
	return nettest.Run(t, append([]string{"ip", "netns", "exec", ns, "nft"}, args...)...)
}

func plan(t *testing.T, d network.Desired) network.Ruleset {
	t.Helper()
	rs, err := network.Plan(d)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func dump(t *testing.T, fw *Firewall) string {
	t.Helper()
	s, err := fw.Dump()
	if err != nil {
		t.Fatalf("Dump: %v", err)
	}
	return s
}

func TestApplyDumpEqualsPlan(t *testing.T) {
	nettest.RequireRoot(t, "nft")
	tests := []struct {
		name string
		d    network.Desired
	}{
		{name: "no vms", d: fixture()},
		{name: "no external", d: fixture(nil)},
		{name: "portlist icmp", d: fixture(portList("192.0.2.10", true, 22, 80, 443))},
		{name: "portlist no icmp", d: fixture(portList("192.0.2.10", false, 22))},
		{name: "wholeip", d: fixture(wholeIP("192.0.2.10"))},
		{name: "mixed", d: fixture(wholeIP("192.0.2.11"), portList("192.0.2.10", false), nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns, fd := nettest.NewNetns(t, "vmdnft-")
			fw := New(WithNetNSFd(fd))
			rs := plan(t, tt.d)
			if err := fw.Apply(t.Context(), rs); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if got, want := dump(t, fw), rs.String(); got != want {
				t.Fatalf("kernel state differs from plan:\n--- plan\n%s\n--- kernel\n%s", want, got)
			}
			// The real nft binary must be able to list what we wrote.
			nsNft(t, ns, "list", "ruleset")
		})
	}
}

// nftJSON is the subset of `nft -j list ruleset` the tests read.
type nftJSON struct {
	Nftables []map[string]json.RawMessage `json:"nftables"`
}

type nftObj struct {
	Family string          `json:"family"`
	Table  string          `json:"table"`
	Name   string          `json:"name"`
	Chain  string          `json:"chain"`
	Elem   json.RawMessage `json:"elem"`
}

// counts returns, from nft's own JSON listing, how many tables, chains,
// sets (incl. maps), rules and set elements exist per "family table".
func counts(t *testing.T, ns string) map[string]map[string]int {
	t.Helper()
	var doc nftJSON
	if err := json.Unmarshal([]byte(nsNft(t, ns, "-j", "list", "ruleset")), &doc); err != nil {
		t.Fatalf("parsing nft -j output: %v", err)
	}
	out := map[string]map[string]int{}
	for _, item := range doc.Nftables {
		for kind, raw := range item {
			if kind == "metainfo" {
				continue
			}
			var o nftObj
			if err := json.Unmarshal(raw, &o); err != nil {
				t.Fatalf("parsing %s: %v", kind, err)
			}
			table := o.Family + " " + o.Table
			if kind == "table" {
				table = o.Family + " " + o.Name
			}
			if out[table] == nil {
				out[table] = map[string]int{}
			}
			if kind == "map" {
				kind = "set"
			}
			out[table][kind]++
			if len(o.Elem) > 0 {
				var elems []json.RawMessage
				if err := json.Unmarshal(o.Elem, &elems); err != nil {
					t.Fatalf("parsing elements: %v", err)
				}
				out[table]["elem"] += len(elems)
			}
		}
	}
	return out
}

func planCounts(rs network.Ruleset) map[string]map[string]int {
	out := map[string]map[string]int{}
	for _, tb := range rs.Tables {
		c := map[string]int{"table": 1, "chain": len(tb.Chains), "set": len(tb.Sets)}
		for _, ch := range tb.Chains {
			c["rule"] += len(ch.Rules)
		}
		for _, s := range tb.Sets {
			c["elem"] += len(s.Elements)
		}
		out[string(tb.Family)+" "+tb.Name] = c
	}
	return out
}

func equalCounts(t *testing.T, got, want map[string]map[string]int, table string) {
	t.Helper()
	for _, k := range []string{"table", "chain", "set", "rule", "elem"} {
		if got[table][k] != want[table][k] {
			t.Errorf("%s: nft lists %d %s(s), want %d", table, got[table][k], k, want[table][k])
		}
	}
}

func TestApplyTwiceNoDuplicates(t *testing.T) {
	nettest.RequireRoot(t, "nft")
	ns, fd := nettest.NewNetns(t, "vmdnft-")
	fw := New(WithNetNSFd(fd))
	rs := plan(t, fixture(portList("192.0.2.10", true, 22, 80), wholeIP("192.0.2.11")))
	for i := range 3 {
		if err := fw.Apply(t.Context(), rs); err != nil {
			t.Fatalf("Apply #%d: %v", i+1, err)
		}
	}
	if got, want := dump(t, fw), rs.String(); got != want {
		t.Fatalf("after three Applies:\n--- plan\n%s\n--- kernel\n%s", want, got)
	}
	got, want := counts(t, ns), planCounts(rs)
	for table := range want {
		equalCounts(t, got, want, table)
	}
}

func TestForeignTableSurvives(t *testing.T) {
	nettest.RequireRoot(t, "nft")
	ns, fd := nettest.NewNetns(t, "vmdnft-")
	nsNft(t, ns, "add", "table", "inet", "other")
	nsNft(t, ns, "add", "chain", "inet", "other", "input", "{ type filter hook input priority 0; policy accept; }")
	nsNft(t, ns, "add", "rule", "inet", "other", "input", "tcp", "dport", "9999", "counter", "accept")
	// A same-named table in a family vmd does not own is foreign too.
	nsNft(t, ns, "add", "table", "inet", "vmd")
	before := nsNft(t, ns, "list", "table", "inet", "other")

	fw := New(WithNetNSFd(fd))
	if err := fw.Apply(t.Context(), plan(t, fixture(portList("192.0.2.10", true, 22)))); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if after := nsNft(t, ns, "list", "table", "inet", "other"); after != before {
		t.Fatalf("Apply changed a foreign table:\n%s\n---\n%s", before, after)
	}
	for range 2 { // Remove is idempotent
		if err := fw.Remove(t.Context()); err != nil {
			t.Fatalf("Remove: %v", err)
		}
	}
	if after := nsNft(t, ns, "list", "table", "inet", "other"); after != before {
		t.Fatalf("Remove changed a foreign table:\n%s\n---\n%s", before, after)
	}
	nsNft(t, ns, "list", "table", "inet", "vmd")
	if got := dump(t, fw); got != "" {
		t.Fatalf("vmd tables left after Remove:\n%s", got)
	}
	tables := nsNft(t, ns, "list", "tables")
	for _, gone := range []string{"table ip vmd", "table bridge vmd"} {
		if strings.Contains(tables, gone) {
			t.Errorf("%q still listed after Remove:\n%s", gone, tables)
		}
	}
}

func TestSwitchPortListWholeIPPortList(t *testing.T) {
	nettest.RequireRoot(t, "nft")
	ns, fd := nettest.NewNetns(t, "vmdnft-")
	fw := New(WithNetNSFd(fd))
	steps := []struct {
		name string
		d    network.Desired
	}{
		{name: "portlist", d: fixture(portList("192.0.2.10", true, 22, 80), portList("192.0.2.11", false, 443))},
		{name: "wholeip", d: fixture(wholeIP("192.0.2.10"), portList("192.0.2.11", false, 443))},
		{name: "portlist again", d: fixture(portList("192.0.2.10", true, 22, 80), portList("192.0.2.11", false, 443))},
	}
	var first string
	for i, st := range steps {
		rs := plan(t, st.d)
		if err := fw.Apply(t.Context(), rs); err != nil {
			t.Fatalf("%s: Apply: %v", st.name, err)
		}
		got := dump(t, fw)
		if got != rs.String() {
			t.Fatalf("%s: kernel differs from plan:\n--- plan\n%s\n--- kernel\n%s", st.name, rs, got)
		}
		equalCounts(t, counts(t, ns), planCounts(rs), "ip vmd")
		if i == 0 {
			first = got
		}
	}
	if last := dump(t, fw); last != first {
		t.Fatalf("PortList -> WholeIP -> PortList does not return to the first state")
	}
}

func TestNftBinaryCrossCheck(t *testing.T) {
	nettest.RequireRoot(t, "nft")
	ns, fd := nettest.NewNetns(t, "vmdnft-")
	fw := New(WithNetNSFd(fd))
	rs := plan(t, fixture(portList("192.0.2.10", true, 22, 80, 443), wholeIP("192.0.2.11")))
	if err := fw.Apply(t.Context(), rs); err != nil {
		t.Fatal(err)
	}
	got, want := counts(t, ns), planCounts(rs)
	for _, table := range []string{"ip vmd", "bridge vmd"} {
		if got[table]["table"] != 1 {
			t.Fatalf("nft -j does not list %s: %v", table, got)
		}
		equalCounts(t, got, want, table)
	}
	// nft's own rendering of the key rules, as an operator would read them.
	text := nsNft(t, ns, "list", "ruleset")
	for _, want := range []string{
		"ct state established,related accept",
		"dnat to ip daddr map @ext_dnat",
		"snat to ip saddr map @ext_snat",
		"@exposed_tcp accept",
		`comment "not exposed"`,
		"10.100.0.2 . 443",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("nft list ruleset lacks %q:\n%s", want, text)
		}
	}
	// The planner's rendering is valid nft input: load it into a second
	// namespace with the real binary and compare what our reader sees.
	ns2, _ := nettest.NewNetns(t, "vmdnft-")
	path := t.TempDir() + "/plan.nft"
	if err := os.WriteFile(path, []byte(rs.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	nsNft(t, ns2, "-f", path)
	equalCounts(t, counts(t, ns2), want, "ip vmd")
	equalCounts(t, counts(t, ns2), want, "bridge vmd")
}
