//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/hypervisor"
	"github.com/vmdhq/vmd/test/images"
	"github.com/vmdhq/vmd/test/lab"
)

// Ports of the network test's observers in the client namespace.
const (
	// reportPort collects the lines guests send from their user-data scripts.
	reportPort = 9000
	// spoofPort is where a guest sends from a forged source address; nothing may arrive.
	spoofPort = 9001
	// hostProbePort listens in the lab namespace (the host of the guests); guests may not reach it.
	hostProbePort = 9100
)

// spoofTarget is a second address of the client namespace, routed by the guest with its forged
// source, so forged packets are told apart from the guest's honest reports.
var spoofTarget = netip.MustParseAddr("10.78.0.3")

// TestNetwork checks tenant networks and external exposure with real guests and real packets,
// through vmctl only. Three tiny guests: web and peer in tenant-a, other in tenant-b.
//
//   - web: external PortList [22 80 443] without ICMP. From the client namespace a scan of TCP
//     1-1024 and 7777 finds exactly 22 and 80 open, 443 closed by the guest (the filter passed
//     it) and every other port silently dropped; UDP probes get no answer; ping fails.
//   - other: external WholeIP. The same scan finds every port the guest listens on open and
//     every other one refused by the guest itself; UDP probes come back as port-unreachable;
//     ping answers.
//   - Guest scripts (user-data run by tiny's init) report to the client: the client sees web's
//     and other's connections come from their external IPs and peer's (no external IP) from
//     the uplink's address; web reaches peer (same tenant) but not other (other tenant) nor a
//     listener on the host; a connection web sends from a forged source address never arrives.
//   - vmd's nftables tables are identical (no duplicates) after a vmd restart; PortList ->
//     WholeIP -> PortList gives back exactly the first rules; after delete no rule mentions the
//     VMs.
func TestNetwork(t *testing.T) {
	if reason := lab.HostProblem(); reason != "" {
		t.Skipf("vmd lab unavailable: %s", reason)
	}
	start := time.Now()
	l := lab.New(t, lab.Options{Images: []images.Name{images.Tiny}, Logf: t.Logf})
	obs := observe(t, l)
	serveDNS(t, l)

	h := newVMD(t, l, "--config", writeTinyConfig(t, l))
	vmd := h.Start("vmd")
	n := &netTest{t: t, l: l, h: h, dir: t.TempDir()}
	t.Cleanup(func() {
		for _, vm := range []string{"tenant-a.vm-instance-web", "tenant-a.vm-instance-peer", "tenant-b.vm-instance-other"} {
			_, _ = l.Virsh(context.Background(), "destroy", vm)
			_, _ = l.Virsh(context.Background(), "undefine", vm)
		}
	})
	timings := []string{}
	note := func(what string, d time.Duration) {
		timings = append(timings, fmt.Sprintf("%s %.1fs", what, d.Seconds()))
		t.Logf("%s: %.1fs", what, d.Seconds())
	}

	// 1. peer (tenant-a, private only) and other (tenant-b, WholeIP) first: web's script needs
	// their addresses.
	report := "#!/bin/sh\n" + reportFunc + "report egress\n"
	n.apply(vmSpec{ns: "tenant-a", name: "peer", userData: report}, vmSpec{ns: "tenant-b", name: "other", method: "WholeIP", userData: report})
	peer, other := n.waitReady("tenant-a", "peer"), n.waitReady("tenant-b", "other")
	if peer.external.IsValid() || !other.external.IsValid() {
		t.Fatalf("addresses: peer %+v (want no external IP), other %+v (want one)", peer, other)
	}
	if peer.private.As4()[2] == other.private.As4()[2] {
		t.Fatalf("tenant-a (%s) and tenant-b (%s) share a subnet", peer.private, other.private)
	}

	// 2. web, whose script probes the neighbourhood and forges a source address.
	forged := netip.AddrFrom4([4]byte{peer.private.As4()[0], peer.private.As4()[1], peer.private.As4()[2], 200})
	webScript := "#!/bin/sh\n" + reportFunc + fmt.Sprintf(`report egress
probe() { echo "$1 [$(nc -w 3 "$2" "$3" </dev/null 2>/dev/null)]" | tr -d '\r\n'; echo; }
report "$(probe same-tenant %[1]s %[5]d)"
report "$(probe other-tenant %[2]s %[5]d)"
report "$(probe host "$GW" %[6]d)"
report "dns [$(nslookup %[8]s "$GW" 2>&1 | sed -n 's/^Address:[[:space:]]*\([0-9.]*\)$/\1/p')]"
ip addr add %[3]s/32 dev eth0
ip route add %[4]s/32 via "$GW" src %[3]s
echo forged | nc -w 3 %[4]s %[7]d
report forged-sent
`, peer.private, other.private, forged, spoofTarget, lab.TinyIDPort, hostProbePort, spoofPort, dnsName)
	webSpec := vmSpec{ns: "tenant-a", name: "web", method: "PortList", ports: []int{22, 80, 443}, icmp: "false", userData: webScript}
	applied := time.Now()
	n.apply(webSpec)
	web := n.waitReady("tenant-a", "web")
	note("web apply->Ready", time.Since(applied))
	if !web.external.IsValid() || web.private.As4()[2] != peer.private.As4()[2] {
		t.Fatalf("web %+v: want an external IP and a private one in peer's subnet (%s)", web, peer.private)
	}
	reports := obs.waitReports(t, 2*time.Minute, web.external, "forged-sent")
	note("web apply->all reports", time.Since(applied))

	// 3. What the guests reported, and from which address it came.
	for _, vm := range []struct {
		name string
		want netip.Addr
	}{{"web", web.external}, {"other", other.external}, {"peer", lab.UplinkAddr}} {
		if got := obs.waitReports(t, time.Minute, vm.want, "egress"); !slices.Contains(got, "egress") {
			t.Errorf("%s: egress not seen from %s; reports by source: %v", vm.name, vm.want, obs.snapshot())
		}
	}
	t.Logf("reports by source address: %v", obs.snapshot())
	if len(obs.synsTo(reportPort)) == 0 {
		t.Fatal("the raw capture saw no SYN of the reports: the forged-source check below would be blind")
	}
	peerID := hypervisor.StableUUID("tenant-a", "peer", "")
	for _, want := range []string{
		"same-tenant [" + peerID + "]", // positive control: the probe itself works
		"other-tenant []",
		"host []",
		"dns [" + dnsAnswer.String() + "]", // through the gateway's forwarder to the lab's server
	} {
		if !slices.Contains(reports, want) {
			t.Errorf("web reported %q, want a line %q", reports, want)
		}
	}
	if hits := obs.synsTo(spoofPort); len(hits) > 0 {
		t.Errorf("a connection from a forged source reached the client: SYNs to :%d from %v", spoofPort, hits)
	}
	if hits := obs.hostProbes(); hits > 0 {
		t.Errorf("the host listener on :%d accepted %d connections from guests", hostProbePort, hits)
	}
	if t.Failed() {
		t.FailNow()
	}

	// 4. Exposure as seen from the outside.
	webPortList := map[uint16]portState{22: portOpen, 80: portOpen, 443: portClosed}
	began := time.Now()
	n.expectTCP(web.external, "PortList web", webPortList, portFiltered)
	note("scan PortList (1025 ports)", time.Since(began))
	n.expectUDP(web.external, "PortList web", false)
	n.expectPing(web.external, "PortList web without ICMP", false)
	began = time.Now()
	wholeIP := map[uint16]portState{22: portOpen, 80: portOpen, lab.TinyIDPort: portOpen}
	n.expectTCP(other.external, "WholeIP other", wholeIP, portClosed)
	note("scan WholeIP (1025 ports)", time.Since(began))
	n.expectUDP(other.external, "WholeIP other", true)
	n.expectPing(other.external, "WholeIP other", true)

	// 5. A vmd restart rebuilds the same rules, without duplicates.
	rulesPortList := n.rules()
	for _, ip := range []netip.Addr{web.private, web.external, peer.private, other.private, other.external} {
		if !mentions(rulesPortList, ip) {
			t.Fatalf("vmd's rules do not mention %s:\n%s", ip, rulesPortList)
		}
	}
	if err := vmd.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got := n.rules(); got != rulesPortList {
		t.Fatalf("stopping vmd changed its rules (guests must stay reachable while it is down):\n%s", diffLines(rulesPortList, got))
	}
	vmd = h.Start("vmd-restarted")
	n.waitReady("tenant-a", "web")
	time.Sleep(3 * time.Second) // a few reconcile passes after the start
	if got := n.rules(); got != rulesPortList {
		t.Fatalf("rules after a vmd restart differ from before:\n%s", diffLines(rulesPortList, got))
	}
	n.expectTCP(web.external, "PortList web after vmd restart", webPortList, portFiltered)

	// 5b. A host reboot, as far as a lab can have one: vmd stopped, every domain off, vmd's
	// links and nftables tables gone. vmd rebuilds all of it from its state and boots what
	// should run: the same rules, the same addresses, reachable again.
	if err := vmd.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, dom := range []string{"tenant-a.vm-instance-web", "tenant-a.vm-instance-peer", "tenant-b.vm-instance-other"} {
		if out, err := l.Virsh(t.Context(), "destroy", dom); err != nil {
			t.Fatalf("virsh destroy %s: %v\n%s", dom, err, out)
		}
	}
	n.wipeHostNetwork()
	rebooted := time.Now()
	vmd = h.Start("vmd-after-reboot")
	n.waitRules("rules rebuilt after the reboot", func(r string) bool { return r == rulesPortList })
	wctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := l.WaitTCP(wctx, lab.InClient, netip.AddrPortFrom(web.external, 22)); err != nil {
		t.Fatalf("web unreachable on its external IP after the reboot: %v", err)
	}
	note("reboot->web reachable again", time.Since(rebooted))
	if again := n.waitReady("tenant-a", "web"); again != web {
		t.Fatalf("web's addresses changed across the reboot: %+v -> %+v", web, again)
	}

	// 6. PortList -> WholeIP -> PortList, each one transaction: exactly the expected rules.
	began = time.Now()
	n.apply(vmSpec{ns: "tenant-a", name: "web", method: "WholeIP", icmp: "false", userData: webScript})
	rulesWholeIP := n.waitRules("web switched to WholeIP", func(r string) bool { return r != rulesPortList })
	note("PortList->WholeIP rules", time.Since(began))
	n.expectTCP(web.external, "web switched to WholeIP", wholeIP, portClosed)
	n.expectPing(web.external, "web switched to WholeIP", true)
	// Only web's exposure may differ: its TCP ports leave exposed_tcp, its address joins
	// exposed_wholeip (plus the braces of a set that became empty or non-empty).
	d := diffLines(rulesPortList, rulesWholeIP)
	for _, line := range strings.Split(strings.TrimSpace(d), "\n") {
		_, rule, _ := strings.Cut(line[2:], ": ")
		if !mentions(rule, web.private) && rule != "elements = {" && rule != "}" {
			t.Errorf("PortList -> WholeIP changed more than web's exposure:\n%s", d)
			break
		}
	}
	if !strings.Contains(d, "+ ip: "+web.private.String()+"\n") {
		t.Errorf("web's address did not join a set of its own (exposed_wholeip) for WholeIP:\n%s", d)
	}
	began = time.Now()
	n.apply(webSpec)
	n.waitRules("web back to PortList", func(r string) bool { return r == rulesPortList })
	note("WholeIP->PortList rules", time.Since(began))
	n.expectTCP(web.external, "web back to PortList", webPortList, portFiltered)
	n.expectPing(web.external, "web back to PortList without ICMP", false)

	// 7. externalAllowICMP alone opens ping.
	webICMP := webSpec
	webICMP.icmp = "true"
	n.apply(webICMP)
	n.waitRules("web allows ICMP", func(r string) bool { return r != rulesPortList })
	n.expectPing(web.external, "PortList web with ICMP", true)

	// 8. Delete: no rule mentions the VMs any more.
	for _, vm := range []struct{ ns, name string }{{"tenant-a", "web"}, {"tenant-a", "peer"}, {"tenant-b", "other"}} {
		h.MustVmctl("delete", "vmi", vm.name, "-n", vm.ns, "--timeout=2m")
	}
	left := n.rules()
	for _, ip := range []netip.Addr{web.private, web.external, peer.private, other.private, other.external} {
		if mentions(left, ip) {
			t.Errorf("rules still mention %s after every VM was deleted:\n%s", ip, left)
		}
	}
	for _, name := range []string{`"vmt-`, `"vmd-`} {
		if strings.Contains(left, name) {
			t.Errorf("rules still name an interface %s... after every VM was deleted:\n%s", name, left)
		}
	}
	t.Logf("SUMMARY network e2e: %s; total %.1fs", strings.Join(timings, "; "), time.Since(start).Seconds())
	if err := vmd.Stop(10 * time.Second); err != nil {
		t.Error(err)
	}
}

// The name the lab's DNS server answers, and its address.
const dnsName = "probe.vmd.test"

var dnsAnswer = netip.MustParseAddr("192.0.2.77")

// serveDNS answers UDP queries on labDNS in the lab namespace, where vmd's gateway forwarder
// relays guest queries: an A query for dnsName gets dnsAnswer, any other query an empty
// NOERROR answer. Enough DNS for busybox nslookup, on purpose no more.
func serveDNS(t *testing.T, l *lab.Lab) {
	t.Helper()
	pc, err := l.ListenPacket(lab.InLab, "udp", labDNS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if reply := dnsReply(buf[:n]); reply != nil {
				_, _ = pc.WriteTo(reply, from)
			}
		}
	}()
}

// dnsReply builds the answer to one query (nil for anything that is not a one-question query).
func dnsReply(q []byte) []byte {
	if len(q) < 12 || q[2]&0x80 != 0 || binary.BigEndian.Uint16(q[4:6]) != 1 {
		return nil
	}
	var labels []string
	i := 12
	for i < len(q) && q[i] != 0 {
		l := int(q[i])
		if l > 63 || i+1+l > len(q) {
			return nil
		}
		labels = append(labels, string(q[i+1:i+1+l]))
		i += 1 + l
	}
	if i+5 > len(q) {
		return nil
	}
	end := i + 5 // root label, QTYPE, QCLASS
	qtype := binary.BigEndian.Uint16(q[i+1 : i+3])
	r := append([]byte{}, q[:end]...)
	r[2], r[3] = 0x81, 0x80 // response, recursion desired and available, NOERROR
	binary.BigEndian.PutUint16(r[6:8], 0)
	binary.BigEndian.PutUint16(r[8:10], 0)
	binary.BigEndian.PutUint16(r[10:12], 0)
	if strings.EqualFold(strings.Join(labels, "."), dnsName) && qtype == 1 {
		binary.BigEndian.PutUint16(r[6:8], 1)
		a := dnsAnswer.As4()
		r = append(r, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, a[0], a[1], a[2], a[3])
	}
	return r
}

// reportFunc is the shell function guest scripts report with: one line per connection to the
// client's collector, retried while the collector (or the guest's route) is not there yet.
const reportFunc = `report() {
  for i in 1 2 3 4 5; do echo "$*" | nc -w 3 10.78.0.2 9000 && return; sleep 1; done
}
`

// netTest drives the VMs of TestNetwork.
type netTest struct {
	t   *testing.T
	l   *lab.Lab
	h   *vmdHarness
	dir string
}

// vmSpec is the part of a tiny VMInstance the network test varies.
type vmSpec struct {
	ns, name string
	method   string // "" = not external
	ports    []int
	icmp     string // "" = default
	userData string
}

func (s vmSpec) yaml() string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: apps.cozystack.io/v1alpha1\nkind: VMInstance\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n", s.name, s.ns)
	b.WriteString("  instanceType: u1.nano\n  instanceProfile: alpine\n  runStrategy: Always\n")
	if s.method != "" {
		fmt.Fprintf(&b, "  external: true\n  externalMethod: %s\n", s.method)
	}
	if len(s.ports) > 0 {
		fmt.Fprintf(&b, "  externalPorts: %s\n", strings.ReplaceAll(fmt.Sprint(s.ports), " ", ", "))
	}
	if s.icmp != "" {
		fmt.Fprintf(&b, "  externalAllowICMP: %s\n", s.icmp)
	}
	if s.userData != "" {
		b.WriteString("  cloudInit: |\n")
		for _, line := range strings.Split(strings.TrimRight(s.userData, "\n"), "\n") {
			b.WriteString("    " + line + "\n")
		}
	}
	return b.String()
}

// apply writes the VMs to one manifest and applies it with vmctl.
func (n *netTest) apply(vms ...vmSpec) {
	n.t.Helper()
	docs := make([]string, len(vms))
	for i, vm := range vms {
		docs[i] = vm.yaml()
	}
	path := filepath.Join(n.dir, "vms.yaml")
	if err := os.WriteFile(path, []byte(strings.Join(docs, "---\n")), 0o600); err != nil {
		n.t.Fatal(err)
	}
	n.h.MustVmctl("apply", "-f", path)
}

// vmAddrs are a VM's addresses from its status.
type vmAddrs struct {
	private, external netip.Addr
}

// waitReady waits for the VM's Ready condition and returns its addresses.
func (n *netTest) waitReady(ns, name string) vmAddrs {
	n.t.Helper()
	n.h.MustVmctl("wait", "vmi/"+name, "-n", ns, "--for=condition=Ready", "--timeout=3m")
	var vm v1alpha1.VMInstance
	if err := json.Unmarshal([]byte(n.h.MustVmctl("get", "vmi", name, "-n", ns, "-o", "json")), &vm); err != nil {
		n.t.Fatal(err)
	}
	var a vmAddrs
	for _, addr := range vm.Status.Addresses {
		ip, err := netip.ParseAddr(addr.Address)
		if err != nil {
			n.t.Fatalf("%s/%s: address %+v: %v", ns, name, addr, err)
		}
		switch addr.Type {
		case "Private":
			a.private = ip
		case "External":
			a.external = ip
		}
	}
	if !a.private.IsValid() {
		n.t.Fatalf("%s/%s has no private address: %+v", ns, name, vm.Status.Addresses)
	}
	return a
}

// rules returns vmd's nftables tables in the lab namespace, normalised: set elements one per
// line and every line sorted, so two renderings compare equal exactly when they hold the same
// rules and elements the same number of times (the kernel lists hash-set elements in no fixed
// order).
func (n *netTest) rules() string {
	n.t.Helper()
	var lines []string
	for _, family := range []string{"ip", "bridge"} {
		out, err := n.l.Run(n.t.Context(), lab.InLab, "nft", "list", "table", family, "vmd")
		if err != nil {
			if strings.Contains(out+err.Error(), "No such file") {
				continue // no table at all is fine: nothing is exposed
			}
			n.t.Fatalf("nft list table %s vmd: %v\n%s", family, err, out)
		}
		out = strings.NewReplacer("{", "{\n", "}", "\n}", ",", "\n").Replace(out)
		for _, line := range strings.Split(out, "\n") {
			if line = strings.TrimSpace(line); line != "" {
				lines = append(lines, family+": "+line)
			}
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}

// wipeHostNetwork removes what a reboot takes away from the lab namespace: vmd's nftables
// tables, its bridges ("vmd-") and taps ("vmt-"), and the external /32s on the uplink.
func (n *netTest) wipeHostNetwork() {
	n.t.Helper()
	ctx := n.t.Context()
	for _, family := range []string{"ip", "bridge"} {
		if out, err := n.l.Run(ctx, lab.InLab, "nft", "delete", "table", family, "vmd"); err != nil {
			n.t.Fatalf("nft delete table %s vmd: %v\n%s", family, err, out)
		}
	}
	out, err := n.l.Run(ctx, lab.InLab, "ip", "-o", "link", "show")
	if err != nil {
		n.t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if strings.HasPrefix(name, "vmd-") || strings.HasPrefix(name, "vmt-") {
			if out, err := n.l.Run(ctx, lab.InLab, "ip", "link", "del", name); err != nil {
				n.t.Fatalf("ip link del %s: %v\n%s", name, err, out)
			}
		}
	}
	if out, err := n.l.Run(ctx, lab.InLab, "ip", "addr", "flush", "dev", "vmdlab-up", "scope", "global", "to", "10.78.0.96/27"); err != nil {
		n.t.Fatalf("removing external IPs: %v\n%s", err, out)
	}
}

// waitRules polls the rules until ok accepts them (vmd applies a spec change asynchronously).
func (n *netTest) waitRules(what string, ok func(string) bool) string {
	n.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		r := n.rules()
		if ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("%s: rules not as expected after a minute:\n%s", what, r)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// mentions says whether rules contain ip as a word of its own (10.240.0.2 is not in 10.240.0.20).
func mentions(rules string, ip netip.Addr) bool {
	return slices.Contains(strings.Fields(rules), ip.String())
}

// diffLines lists the lines only in a ("-") and only in b ("+").
func diffLines(a, b string) string {
	count := map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(b, "\n") {
		count[l]--
	}
	var out []string
	for l, c := range count {
		for ; c > 0; c-- {
			out = append(out, "- "+l)
		}
		for ; c < 0; c++ {
			out = append(out, "+ "+l)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n") + "\n"
}

// portState is what a TCP connect from the client concludes about a port.
type portState string

const (
	portOpen     portState = "open"     // handshake completed
	portClosed   portState = "closed"   // RST: the packet reached the guest, nothing listens
	portFiltered portState = "filtered" // no answer: dropped on the way
)

// expectTCP scans TCP ports 1-1024 and 7777 of ip from the client namespace and fails unless
// every port in want has that state and every other port has rest. Ports that first differ
// are probed again with a longer timeout, so a slow answer under load is not mistaken for a
// drop; a dropped port stays dropped.
func (n *netTest) expectTCP(ip netip.Addr, what string, want map[uint16]portState, rest portState) {
	n.t.Helper()
	ports := make([]uint16, 0, 1025)
	for p := uint16(1); p <= 1024; p++ {
		ports = append(ports, p)
	}
	ports = append(ports, lab.TinyIDPort)
	expected := func(p uint16) portState {
		if s, ok := want[p]; ok {
			return s
		}
		return rest
	}
	got := n.scan(ip, ports, 2*time.Second)
	var again []uint16
	for _, p := range ports {
		if got[p] != expected(p) {
			again = append(again, p)
		}
	}
	if len(again) > 0 && len(again) < 64 {
		for p, s := range n.scan(ip, again, 6*time.Second) {
			got[p] = s
		}
	}
	var wrong []string
	for _, p := range ports {
		if got[p] != expected(p) {
			wrong = append(wrong, fmt.Sprintf("%d %s (want %s)", p, got[p], expected(p)))
		}
	}
	if len(wrong) > 0 {
		if len(wrong) > 20 {
			wrong = append(wrong[:20], fmt.Sprintf("... %d more", len(wrong)-20))
		}
		n.t.Fatalf("%s: TCP scan of %s: %s", what, ip, strings.Join(wrong, ", "))
	}
	n.t.Logf("%s: TCP scan of %s (%d ports): %v, all others %s", what, ip, len(ports), want, rest)
}

// scan connects to every port concurrently from the client namespace.
func (n *netTest) scan(ip netip.Addr, ports []uint16, timeout time.Duration) map[uint16]portState {
	n.t.Helper()
	var mu sync.Mutex
	got := make(map[uint16]portState, len(ports))
	var failed error
	sem := make(chan struct{}, 128)
	var wg sync.WaitGroup
	for _, p := range ports {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ctx, cancel := context.WithTimeout(n.t.Context(), timeout)
			defer cancel()
			conn, err := n.l.Dial(ctx, lab.InClient, "tcp", netip.AddrPortFrom(ip, p).String())
			var s portState
			switch {
			case err == nil:
				conn.Close()
				s = portOpen
			case errors.Is(err, syscall.ECONNREFUSED):
				s = portClosed
			case errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err):
				s = portFiltered
			default:
				mu.Lock()
				failed = fmt.Errorf("port %d: %w", p, err)
				mu.Unlock()
			}
			mu.Lock()
			got[p] = s
			mu.Unlock()
		}()
	}
	wg.Wait()
	if failed != nil {
		n.t.Fatalf("scanning %s: %v", ip, failed)
	}
	return got
}

// expectUDP sends a datagram to a few UDP ports where the guest listens on none: when UDP
// passes, the guest's kernel answers ICMP port-unreachable (a refused read); when it is
// dropped, nothing comes back.
func (n *netTest) expectUDP(ip netip.Addr, what string, passes bool) {
	n.t.Helper()
	for _, p := range []uint16{53, 123, 161, 7777} {
		conn, err := n.l.Dial(n.t.Context(), lab.InClient, "udp", netip.AddrPortFrom(ip, p).String())
		if err != nil {
			n.t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		_, err = conn.Write([]byte("vmd e2e probe\n"))
		if err == nil {
			_, err = conn.Read(make([]byte, 64))
		}
		conn.Close()
		refused := errors.Is(err, syscall.ECONNREFUSED)
		if refused != passes || (!refused && !os.IsTimeout(err)) {
			n.t.Fatalf("%s: UDP %s:%d: %v (want UDP to pass: %v)", what, ip, p, err, passes)
		}
		time.Sleep(300 * time.Millisecond) // the guest rate-limits its ICMP errors
	}
}

// expectPing pings ip from the client namespace.
func (n *netTest) expectPing(ip netip.Addr, what string, answers bool) {
	n.t.Helper()
	out, err := n.l.Run(n.t.Context(), lab.InClient, "busybox", "ping", "-c", "3", "-W", "2", ip.String())
	if (err == nil) != answers {
		n.t.Fatalf("%s: ping %s answered=%v, want %v\n%s", what, ip, err == nil, answers, out)
	}
}

// observer collects what arrives in the client namespace (reports, and a raw copy of every
// TCP segment) and whether the host listener in the lab namespace was reached.
type observer struct {
	mu        sync.Mutex
	reports   map[netip.Addr][]string
	syns      map[uint16][]netip.Addr
	hostConns int
}

func observe(t *testing.T, l *lab.Lab) *observer {
	t.Helper()
	o := &observer{reports: map[netip.Addr][]string{}, syns: map[uint16][]netip.Addr{}}
	if out, err := l.Run(t.Context(), lab.InClient, "ip", "addr", "add", spoofTarget.String()+"/24", "dev", "vmdlab-down"); err != nil {
		t.Fatalf("adding %s to the client: %v\n%s", spoofTarget, err, out)
	}
	ln, err := l.Listen(lab.InClient, "tcp", ":"+strconv.Itoa(reportPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
				from := conn.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
				sc := bufio.NewScanner(conn)
				for sc.Scan() {
					o.mu.Lock()
					o.reports[from] = append(o.reports[from], strings.TrimSpace(sc.Text()))
					o.mu.Unlock()
				}
			}()
		}
	}()
	raw, err := l.ListenPacket(lab.InClient, "ip4:tcp", "0.0.0.0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := raw.ReadFrom(buf)
			if err != nil {
				return
			}
			const syn, ack = 0x02, 0x10
			if n < 14 || buf[13]&syn == 0 || buf[13]&ack != 0 {
				continue
			}
			src, _ := netip.ParseAddr(from.String())
			dport := binary.BigEndian.Uint16(buf[2:4])
			o.mu.Lock()
			o.syns[dport] = append(o.syns[dport], src)
			o.mu.Unlock()
		}
	}()
	host, err := l.Listen(lab.InLab, "tcp", ":"+strconv.Itoa(hostProbePort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close() })
	go func() {
		for {
			conn, err := host.Accept()
			if err != nil {
				return
			}
			o.mu.Lock()
			o.hostConns++
			o.mu.Unlock()
			_, _ = conn.Write([]byte("host\n"))
			conn.Close()
		}
	}()
	return o
}

// waitReports waits until from has reported last and returns its reports.
func (o *observer) waitReports(t *testing.T, timeout time.Duration, from netip.Addr, last string) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		o.mu.Lock()
		got := slices.Clone(o.reports[from])
		o.mu.Unlock()
		if slices.Contains(got, last) || time.Now().After(deadline) {
			return got
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (o *observer) snapshot() map[netip.Addr][]string {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[netip.Addr][]string, len(o.reports))
	for k, v := range o.reports {
		out[k] = slices.Clone(v)
	}
	return out
}

func (o *observer) synsTo(port uint16) []netip.Addr {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.syns[port])
}

func (o *observer) hostProbes() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.hostConns
}
