//go:build integration

package nft

import (
	"net"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/vmdhq/vmd/internal/network/nettest"

	"golang.org/x/sys/unix"

	"github.com/vmdhq/vmd/internal/network"
)

// inNetns runs fn on an OS thread switched into the namespace behind fd.
// Sockets keep the namespace they were created in, so listeners made here
// can be used from any goroutine afterwards. The thread stays locked and
// dies with the goroutine, so no other goroutine ever runs in the wrong
// namespace.
func inNetns(t *testing.T, fd int, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			t.Errorf("entering netns: %v", err)
			return
		}
		fn()
	}()
	<-done
}

// serveTCP accepts and closes connections on port inside the VM netns.
func serveTCP(t *testing.T, fd, port int) {
	var ln net.Listener
	inNetns(t, fd, func() {
		var err error
		if ln, err = net.Listen("tcp4", ":"+strconv.Itoa(port)); err != nil {
			t.Fatalf("listening on %d: %v", port, err)
		}
	})
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// dial connects from the netns behind fd, optionally from a given source.
func dial(t *testing.T, fd int, src, dst string) error {
	t.Helper()
	var err error
	inNetns(t, fd, func() {
		d := net.Dialer{Timeout: 700 * time.Millisecond}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		var c net.Conn
		if c, err = d.Dial("tcp4", dst); err == nil {
			c.Close()
		}
	})
	return err
}

// udpReaches reports whether a datagram sent from the netns behind fromFd
// (from src, if set) to dst:port arrives at a listener in the netns behind
// toFd. UDP needs no reply, so it tests one direction only.
func udpReaches(t *testing.T, fromFd, toFd int, src, dst string, port int) bool {
	t.Helper()
	var pc net.PacketConn
	inNetns(t, toFd, func() {
		var err error
		if pc, err = net.ListenPacket("udp4", ":"+strconv.Itoa(port)); err != nil {
			t.Fatalf("listening udp: %v", err)
		}
	})
	defer pc.Close()
	inNetns(t, fromFd, func() {
		d := net.Dialer{}
		if src != "" {
			d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(src)}
		}
		c, err := d.Dial("udp4", net.JoinHostPort(dst, strconv.Itoa(port)))
		if err != nil {
			t.Fatalf("dialing udp: %v", err)
		}
		defer c.Close()
		_, _ = c.Write([]byte("probe"))
	})
	_ = pc.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
	buf := make([]byte, 16)
	_, _, err := pc.ReadFrom(buf)
	return err == nil
}

func pings(ns, dst string) bool {
	return exec.Command("ip", "netns", "exec", ns, "busybox", "ping", "-c", "1", "-W", "1", dst).Run() == nil
}

// TestPacketFiltering builds client <-> host <-> vm out of three namespaces
// and veth pairs (the vm's veth stands in for a tap on the tenant bridge),
// applies the plan in the host namespace and checks real traffic.
func TestPacketFiltering(t *testing.T) {
	nettest.RequireRoot(t, "nft")
	if _, err := exec.LookPath("busybox"); err != nil {
		t.Skip("needs busybox for ping")
	}
	hostNS, hostFd := nettest.NewNetns(t, "vmdnft-h-")
	clientNS, clientFd := nettest.NewNetns(t, "vmdnft-c-")
	vmNS, vmFd := nettest.NewNetns(t, "vmdnft-v-")

	d := fixture(portList("192.0.2.10", false, 22))
	ep, tn := d.Endpoints[0], d.Tenants[0]
	hx := func(args ...string) { nettest.Run(t, append([]string{"ip", "netns", "exec", hostNS}, args...)...) }
	cx := func(args ...string) { nettest.Run(t, append([]string{"ip", "netns", "exec", clientNS}, args...)...) }
	vx := func(args ...string) { nettest.Run(t, append([]string{"ip", "netns", "exec", vmNS}, args...)...) }

	nettest.Run(t, "ip", "link", "add", "up0", "netns", hostNS, "type", "veth", "peer", "name", "c0", "netns", clientNS)
	nettest.Run(t, "ip", "link", "add", ep.Tap, "netns", hostNS, "type", "veth", "peer", "name", "eth0", "netns", vmNS)
	hx("sysctl", "-qw", "net.ipv4.ip_forward=1")
	hx("ip", "addr", "add", "198.51.100.1/24", "dev", "up0")
	hx("ip", "link", "set", "up0", "up")
	hx("ip", "link", "add", tn.Bridge, "type", "bridge")
	hx("ip", "addr", "add", tn.Gateway.String()+"/24", "dev", tn.Bridge)
	hx("ip", "link", "set", tn.Bridge, "up")
	hx("ip", "link", "set", ep.Tap, "master", tn.Bridge, "up")
	cx("ip", "addr", "add", "198.51.100.2/24", "dev", "c0")
	cx("ip", "link", "set", "c0", "up")
	cx("ip", "route", "add", "192.0.2.0/24", "via", "198.51.100.1")
	// A route to the private subnet too: private addresses must stay unreachable anyway.
	cx("ip", "route", "add", "10.100.0.0/16", "via", "198.51.100.1")
	vx("ip", "link", "set", "eth0", "address", ep.MAC.String())
	vx("ip", "addr", "add", ep.IP.String()+"/24", "dev", "eth0")
	vx("ip", "link", "set", "eth0", "up")
	vx("ip", "link", "set", "lo", "up")
	vx("ip", "route", "add", "default", "via", tn.Gateway.String())

	serveTCP(t, vmFd, 22)
	serveTCP(t, vmFd, 80)
	var clientLn net.Listener
	inNetns(t, clientFd, func() {
		var err error
		if clientLn, err = net.Listen("tcp4", "198.51.100.2:9000"); err != nil {
			t.Fatal(err)
		}
	})
	defer clientLn.Close()
	seen := make(chan string, 8)
	go func() {
		for {
			c, err := clientLn.Accept()
			if err != nil {
				return
			}
			seen <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			c.Close()
		}
	}()

	fw := New(WithNetNSFd(hostFd))
	apply := func(d network.Desired) {
		t.Helper()
		if err := fw.Apply(t.Context(), plan(t, d)); err != nil {
			t.Fatalf("Apply: %v", err)
		}
	}
	expectTCP := func(what string, err error, open bool) {
		t.Helper()
		if open && err != nil {
			t.Errorf("%s: want open, got %v", what, err)
		}
		if !open && err == nil {
			t.Errorf("%s: want blocked, connection succeeded", what)
		}
	}

	apply(d)
	expectTCP("portlist: tcp/22 on the external ip", dial(t, clientFd, "", "192.0.2.10:22"), true)
	expectTCP("portlist: tcp/80 on the external ip", dial(t, clientFd, "", "192.0.2.10:80"), false)
	expectTCP("portlist: tcp/22 on the private ip", dial(t, clientFd, "", ep.IP.String()+":22"), false)
	if udpReaches(t, clientFd, vmFd, "", "192.0.2.10", 53) {
		t.Error("portlist: udp/53 reached the vm")
	}
	if pings(clientNS, "192.0.2.10") {
		t.Error("portlist without icmp: ping answered")
	}

	// Egress leaves from the external IP (SNAT), in PortList mode too.
	expectTCP("vm egress", dial(t, vmFd, "", "198.51.100.2:9000"), true)
	select {
	case src := <-seen:
		if src != "192.0.2.10" {
			t.Errorf("client saw the vm's egress from %s, want its external ip 192.0.2.10", src)
		}
	case <-time.After(2 * time.Second):
		t.Error("client saw no connection from the vm")
	}

	// Anti-spoofing: a datagram from the vm's own address leaves; the same
	// from a forged source never does (UDP, so no reply path is involved).
	if !udpReaches(t, vmFd, clientFd, "", "198.51.100.2", 9001) {
		t.Error("vm udp egress from its own address did not arrive")
	}
	vx("ip", "addr", "add", "10.100.0.99/32", "dev", "eth0")
	if udpReaches(t, vmFd, clientFd, "10.100.0.99", "198.51.100.2", 9001) {
		t.Error("vm udp egress from a spoofed source arrived")
	}
	expectTCP("vm tcp egress from a spoofed source", dial(t, vmFd, "10.100.0.99", "198.51.100.2:9000"), false)

	d.Endpoints[0].External = portList("192.0.2.10", true, 22)
	apply(d)
	if !pings(clientNS, "192.0.2.10") {
		t.Error("portlist with icmp: no ping answer")
	}

	d.Endpoints[0].External = wholeIP("192.0.2.10")
	apply(d)
	expectTCP("wholeip: tcp/80", dial(t, clientFd, "", "192.0.2.10:80"), true)
	if !udpReaches(t, clientFd, vmFd, "", "192.0.2.10", 53) {
		t.Error("wholeip: udp/53 did not reach the vm")
	}
	expectTCP("wholeip: tcp/22 on the private ip", dial(t, clientFd, "", ep.IP.String()+":22"), false)

	d.Endpoints[0].External = portList("192.0.2.10", false, 22)
	apply(d)
	expectTCP("back to portlist: tcp/80", dial(t, clientFd, "", "192.0.2.10:80"), false)
	expectTCP("back to portlist: tcp/22", dial(t, clientFd, "", "192.0.2.10:22"), true)

	if err := fw.Remove(t.Context()); err != nil {
		t.Fatal(err)
	}
}
