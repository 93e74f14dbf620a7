package netctl

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/vmdhq/vmd/internal/network/dhcp"
	"github.com/vmdhq/vmd/internal/network/dnsfwd"
)

// NamespaceRunner runs fn inside the network namespace vmd manages
// (netlink.Host.Do), so DHCP sockets are created next to the bridges.
type NamespaceRunner interface {
	Do(fn func() error) error
}

// HostDHCP is the production DHCPStarter: a dhcp.Server on a socket
// opened inside ns, served until Stop or until ctx ends.
func HostDHCP(ctx context.Context, ns NamespaceRunner, log *slog.Logger) DHCPStarter {
	if log == nil {
		log = slog.Default()
	}
	return func(bridge string, serverID netip.Addr) (LeaseServer, error) {
		var conn net.PacketConn
		err := ns.Do(func() error {
			c, err := dhcp.Listen(bridge)
			conn = c
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("opening dhcp socket on %s: %w", bridge, err)
		}
		srv, err := dhcp.NewServer(conn, dhcp.Config{ServerID: serverID, Logger: log.With("bridge", bridge)})
		if err != nil {
			_ = conn.Close()
			return nil, err
		}
		ctx, cancel := context.WithCancel(ctx)
		r := &runningServer{Server: srv, cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(r.done)
			if err := srv.Serve(ctx); err != nil {
				log.Error("dhcp server stopped", "bridge", bridge, "err", err)
			}
		}()
		return r, nil
	}
}

// runningServer is a dhcp.Server with its serving goroutine.
type runningServer struct {
	*dhcp.Server
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// Stop implements LeaseServer: it waits for the socket to be closed, so
// a new server on the same bridge never races the old one for port 67.
func (r *runningServer) Stop() {
	r.once.Do(r.cancel)
	<-r.done
}

// Running implements LeaseServer.
func (r *runningServer) Running() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// HostDNS is the production DNSStarter: a dnsfwd.Forwarder on gateway:53
// (UDP and TCP), its sockets opened inside ns next to the bridge, relaying
// the queries of subnet to upstreams. Upstream sockets are opened on the
// forwarder's own goroutines, that is in vmd's network namespace, which is
// what makes a loopback resolver of the host (systemd-resolved on
// 127.0.0.53) usable by guests.
func HostDNS(ctx context.Context, ns NamespaceRunner, upstreams []netip.AddrPort, log *slog.Logger) DNSStarter {
	if log == nil {
		log = slog.Default()
	}
	return func(bridge string, gateway netip.Addr, subnet netip.Prefix) (Service, error) {
		addr := netip.AddrPortFrom(gateway, 53).String()
		var (
			udp net.PacketConn
			tcp net.Listener
		)
		err := ns.Do(func() error {
			var err error
			if udp, err = net.ListenPacket("udp4", addr); err != nil {
				return err
			}
			if tcp, err = net.Listen("tcp4", addr); err != nil {
				_ = udp.Close()
				return err
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("opening dns sockets on %s (%s): %w", bridge, addr, err)
		}
		fwd, err := dnsfwd.New(udp, tcp, dnsfwd.Config{
			Upstreams: upstreams, Clients: []netip.Prefix{subnet}, Logger: log.With("bridge", bridge),
		})
		if err != nil {
			_ = udp.Close()
			_ = tcp.Close()
			return nil, err
		}
		r := &runningForwarder{fwd: fwd, done: make(chan struct{})}
		go func() {
			defer close(r.done)
			if err := fwd.Serve(ctx); err != nil {
				log.Error("dns forwarder stopped", "bridge", bridge, "err", err)
			}
		}()
		return r, nil
	}
}

// runningForwarder is a dnsfwd.Forwarder with its serving goroutine.
type runningForwarder struct {
	fwd  *dnsfwd.Forwarder
	done chan struct{}
}

// Stop implements Service; it returns once the sockets are closed.
func (r *runningForwarder) Stop() {
	_ = r.fwd.Close()
	<-r.done
}

// Running implements Service.
func (r *runningForwarder) Running() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}
