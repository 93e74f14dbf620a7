package netctl

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/vmdhq/vmd/internal/network/dhcp"
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
