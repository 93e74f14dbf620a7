//go:build integration

package dhcp

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmdhq/vmd/internal/network/nettest"
)

// TestUdhcpc runs the server on a bridge in one namespace and busybox
// udhcpc in another, connected by a veth pair enslaved to the bridge:
// the same topology as a guest's tap on a tenant bridge.
func TestUdhcpc(t *testing.T) {
	nettest.RequireRoot(t, "busybox")
	srvNS, srvFd := nettest.NewNetns(t, "vmddhcp-s-")
	cliNS, cliFd := nettest.NewNetns(t, "vmddhcp-c-")
	in := func(ns string, args ...string) string {
		t.Helper()
		return nettest.Run(t, append([]string{"ip", "netns", "exec", ns}, args...)...)
	}
	in(srvNS, "ip", "link", "add", "vmd-br", "type", "bridge")
	in(srvNS, "ip", "addr", "add", "10.100.0.1/24", "dev", "vmd-br")
	in(srvNS, "ip", "link", "set", "vmd-br", "up")
	in(srvNS, "ip", "link", "add", "vmt-port", "type", "veth", "peer", "name", "eth0", "netns", cliNS)
	in(srvNS, "ip", "link", "set", "vmt-port", "master", "vmd-br", "up")
	in(cliNS, "ip", "link", "set", "eth0", "address", knownMAC.String(), "up")

	conn, err := Listen("vmd-br", InNetNS(srvFd))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(conn, Config{ServerID: netip.MustParseAddr("10.100.0.1"), Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	lease := testLease()
	lease.Router = netip.MustParseAddr("10.100.0.1")
	lease.DNS = []netip.Addr{netip.MustParseAddr("10.100.0.1"), netip.MustParseAddr("9.9.9.9")}
	if err := srv.SetLeases([]Lease{lease}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	// The script records what udhcpc learned, one line per event.
	dir := t.TempDir()
	out := filepath.Join(dir, "events")
	script := filepath.Join(dir, "script.sh")
	body := "#!/bin/sh\necho \"$1 ip=$ip mask=$mask router=$router dns=$dns hostname=$hostname domain=$domain mtu=$mtu lease=$lease serverid=$serverid\" >> " + out + "\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	udhcpc := func(args ...string) (string, error) {
		_ = os.Remove(out)
		cmd := exec.CommandContext(t.Context(), "ip", append([]string{"netns", "exec", cliNS,
			"busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "3", "-T", "1", "-s", script, "-O", "mtu"}, args...)...)
		cmdOut, err := cmd.CombinedOutput()
		events, _ := os.ReadFile(out)
		t.Logf("udhcpc output:\n%s", cmdOut)
		return string(events), err
	}

	t.Run("known mac gets its static lease", func(t *testing.T) {
		events, err := udhcpc()
		if err != nil {
			t.Fatalf("udhcpc failed: %v\nevents: %s", err, events)
		}
		var bound string
		for _, l := range strings.Split(events, "\n") {
			if strings.HasPrefix(l, "bound ") {
				bound = l
			}
		}
		want := "bound ip=10.100.0.2 mask=24 router=10.100.0.1 dns=10.100.0.1 9.9.9.9 hostname=web domain=default.vmd mtu=1450 lease=600 serverid=10.100.0.1"
		if bound != want {
			t.Fatalf("udhcpc bound with\n%q\nwant\n%q\n(all events: %q)", bound, want, events)
		}
	})

	t.Run("renewing client gets a unicast ack", func(t *testing.T) {
		// A bound guest renews by unicasting a REQUEST with ciaddr set; the
		// ACK comes back unicast to ciaddr:68 through the bridge.
		in(cliNS, "ip", "addr", "replace", "10.100.0.2/24", "dev", "eth0")
		defer in(cliNS, "ip", "addr", "flush", "dev", "eth0")
		var c *net.UDPConn
		err := inNetNS(cliFd, func() error {
			var err error
			c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 100, 0, 2), Port: ClientPort})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		req := request(Request, knownMAC, func(m *Message) { m.CIAddr = netip.MustParseAddr("10.100.0.2"); m.Flags = 0; m.XID = 0xcafe })
		if _, err := c.WriteToUDP(req.Marshal(), &net.UDPAddr{IP: net.IPv4(10, 100, 0, 1), Port: ServerPort}); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, maxPacket)
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no unicast reply: %v", err)
		}
		m, err := Parse(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		if m.Type() != Ack || m.XID != 0xcafe || m.YIAddr.String() != "10.100.0.2" || from.IP.String() != "10.100.0.1" {
			t.Fatalf("got %s xid %x yiaddr %s from %s", m.Type(), m.XID, m.YIAddr, from)
		}
	})

	t.Run("unknown mac gets no offer", func(t *testing.T) {
		in(cliNS, "ip", "link", "set", "eth0", "address", otherMAC.String())
		defer in(cliNS, "ip", "link", "set", "eth0", "address", knownMAC.String())
		start := time.Now()
		events, err := udhcpc()
		if err == nil {
			t.Fatalf("udhcpc succeeded for an unknown mac: %s", events)
		}
		if strings.Contains(events, "bound") {
			t.Fatalf("unknown mac was bound: %s", events)
		}
		if !strings.Contains(events, "leasefail") {
			t.Errorf("expected udhcpc to report leasefail, events: %q", events)
		}
		t.Logf("gave up after %s", time.Since(start))
	})

	t.Run("requested address hint is overridden by the static lease", func(t *testing.T) {
		events, err := udhcpc("-r", "10.100.0.77")
		if err != nil {
			t.Fatalf("udhcpc: %v\nevents: %s", err, events)
		}
		if !strings.Contains(events, "bound ip=10.100.0.2 ") {
			t.Fatalf("events %q, want the static address in the end", events)
		}
	})

	// The socket is bound to the bridge: nothing listens on port 67
	// elsewhere in the namespace, and a second server on the same bridge
	// cannot steal its packets.
	if _, err := Listen("vmd-br", InNetNS(srvFd)); err == nil {
		t.Error("second listener on the same bridge succeeded")
	}
}
