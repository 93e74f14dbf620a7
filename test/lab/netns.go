package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns` keeps the bind mounts that name network namespaces.
const netnsDir = "/run/netns"

// ip runs the ip(8) command with args.
func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// setUpNetwork creates both namespaces, the bridge and the routed veth between them. Links are
// created directly inside the namespaces, so nothing ever appears in the host's namespace.
func (l *Lab) setUpNetwork(ctx context.Context) error {
	up := fmt.Sprintf("%s/%d", UplinkAddr, uplinkLen)
	client := fmt.Sprintf("%s/%d", ClientAddr, uplinkLen)
	gw := fmt.Sprintf("%s/%d", Gateway, Network.Bits())
	steps := [][]string{
		{"netns", "add", l.Name},
		{"netns", "add", l.ClientNS},
		{"-n", l.Name, "link", "set", "lo", "up"},
		{"-n", l.ClientNS, "link", "set", "lo", "up"},
		{"-n", l.Name, "link", "add", l.Bridge, "type", "bridge"},
		{"-n", l.Name, "addr", "add", gw, "dev", l.Bridge},
		{"-n", l.Name, "link", "set", l.Bridge, "up"},
		{"-n", l.Name, "link", "add", uplinkDev, "type", "veth", "peer", "name", clientDev, "netns", l.ClientNS},
		{"-n", l.Name, "addr", "add", up, "dev", uplinkDev},
		{"-n", l.Name, "link", "set", uplinkDev, "up"},
		{"-n", l.ClientNS, "addr", "add", client, "dev", clientDev},
		{"-n", l.ClientNS, "link", "set", clientDev, "up"},
		{"-n", l.ClientNS, "route", "add", Network.String(), "via", UplinkAddr.String()},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return err
		}
	}
	// The lab namespace routes between the client and the guests.
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", l.Name,
		"sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput()
	if err != nil {
		return fmt.Errorf("enabling forwarding: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// netnsPIDs returns the processes in a named network namespace.
func netnsPIDs(ctx context.Context, ns string) ([]int, error) {
	if _, err := os.Stat(filepath.Join(netnsDir, ns)); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output()
	if err != nil {
		return nil, fmt.Errorf("listing processes in netns %s: %w", ns, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// killNetNSProcesses kills every process in the namespace except keep (the mount anchor, which
// is stopped last) and returns the pids it found.
func killNetNSProcesses(ctx context.Context, ns string, keep int) ([]int, error) {
	pids, err := netnsPIDs(ctx, ns)
	if err != nil {
		return nil, err
	}
	var kill []int
	for _, p := range pids {
		if p != keep {
			kill = append(kill, p)
		}
	}
	if err := killPIDs(kill, stopGrace); err != nil {
		return kill, fmt.Errorf("netns %s: %w", ns, err)
	}
	return kill, nil
}

// deleteNetNS removes a named network namespace; a missing one is not an error. Its links
// (bridge, veth ends, taps) go with it.
func deleteNetNS(ctx context.Context, ns string) error {
	if _, err := os.Stat(filepath.Join(netnsDir, ns)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return ip(ctx, "netns", "del", ns)
}

// linksNamed lists links in the host's network namespace whose name contains name: a lab never
// creates one there, so any hit is a leak.
func linksNamed(name string) []string {
	ifs, err := net.Interfaces()
	if err != nil {
		return []string{fmt.Sprintf("listing host links: %v", err)}
	}
	var out []string
	for _, i := range ifs {
		if strings.Contains(i.Name, name) || strings.HasPrefix(i.Name, bridgeName) ||
			i.Name == uplinkDev || i.Name == clientDev {
			out = append(out, "host link "+i.Name)
		}
	}
	return out
}

// Dial connects to address from inside the given side's network namespace, without any helper
// process: the socket is created on an OS thread that has entered the namespace, and a socket
// stays in the namespace it was created in. Use it for HTTP clients, SSH, or raw TCP to guests.
func (l *Lab) Dial(ctx context.Context, side Side, network, address string) (net.Conn, error) {
	return openInNetNS(l, side, func() (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, address)
	})
}

// Listen opens a stream listener (e.g. "tcp", "10.78.0.2:9000") inside side's namespace; the
// connections it accepts are that namespace's.
func (l *Lab) Listen(side Side, network, address string) (net.Listener, error) {
	return openInNetNS(l, side, func() (net.Listener, error) { return net.Listen(network, address) })
}

// ListenPacket opens a packet socket inside side's namespace: "udp", or a raw IP socket such as
// "ip4:tcp", which sees a copy of every TCP segment the namespace receives (root only) — the
// way a test observes packets that no listener would accept, e.g. a lone SYN.
func (l *Lab) ListenPacket(side Side, network, address string) (net.PacketConn, error) {
	return openInNetNS(l, side, func() (net.PacketConn, error) { return net.ListenPacket(network, address) })
}

// openInNetNS creates a socket with open inside side's namespace; a socket created there is
// closed again if the thread could not leave the namespace.
func openInNetNS[T io.Closer](l *Lab, side Side, open func() (T, error)) (T, error) {
	var sock T
	var opened bool
	err := l.InNetNS(side, func() error {
		var err error
		sock, err = open()
		opened = err == nil
		return err
	})
	if err != nil && opened {
		_ = sock.Close()
	}
	return sock, err
}

// InNetNS runs fn on an OS thread that has entered side's network namespace and returns its
// error. Sockets fn creates belong to that namespace for their whole life, wherever they are
// used afterwards; fn must not start goroutines that create sockets (they run elsewhere).
func (l *Lab) InNetNS(side Side, fn func() error) error {
	ns := l.Name
	if side == InClient {
		ns = l.ClientNS
	}
	return inNetNS(filepath.Join(netnsDir, ns), fn)
}

func inNetNS(nsPath string, fn func() error) error {
	ch := make(chan error, 1)
	go func() {
		// A locked thread that fails to switch back is never unlocked: the runtime then ends
		// the thread with the goroutine instead of reusing it in the wrong namespace.
		runtime.LockOSThread()
		err, restored := func() (error, bool) {
			self, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				return fmt.Errorf("opening own netns: %w", err), true
			}
			defer self.Close()
			target, err := os.Open(nsPath)
			if err != nil {
				return fmt.Errorf("opening netns: %w", err), true
			}
			defer target.Close()
			if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("entering netns %s: %w", nsPath, err), true
			}
			fnErr := fn()
			if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("leaving netns %s: %w", nsPath, err), false
			}
			return fnErr, true
		}()
		if restored {
			runtime.UnlockOSThread()
		}
		ch <- err
	}()
	return <-ch
}

// ReadTCP connects to addr from side and returns what the server sends until it closes the
// connection or timeout passes (whichever comes first); the guests' banner ports answer this way.
func (l *Lab) ReadTCP(ctx context.Context, side Side, addr netip.AddrPort, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := l.Dial(ctx, side, "tcp", addr.String())
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	data, err := io.ReadAll(conn)
	if err != nil && len(data) == 0 {
		return "", fmt.Errorf("reading from %s: %w", addr, err)
	}
	return string(data), nil
}

// WaitTCP polls addr from side until a TCP connection succeeds or ctx ends.
func (l *Lab) WaitTCP(ctx context.Context, side Side, addr netip.AddrPort) error {
	for {
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := l.Dial(dctx, side, "tcp", addr.String())
		cancel()
		if err == nil {
			_ = conn.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s from the %s namespace: %w (last error: %w)", addr, side, ctx.Err(), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
