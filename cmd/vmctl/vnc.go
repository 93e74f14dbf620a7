package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/spf13/cobra"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

// newVNCCmd builds `vmctl vnc NAME [--listen ADDR]`: a local TCP proxy to
// the VM's VNC display, which vmd keeps on a unix socket that viewers
// cannot reach directly (and that needs no open port on the host).
func newVNCCmd(root *rootOptions) *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "vnc NAME",
		Short: "Serve the VNC display of a VMInstance on a local port",
		Long: `Listen on a local TCP address and forward each connection to the VNC
display of the VMInstance through vmd; point any VNC viewer at the
address printed. Runs until interrupted.`,
		Example: `  vmctl vnc web                       # picks a free port
  vmctl vnc web --listen 127.0.0.1:5900`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := root.client()
			if err != nil {
				return err
			}
			ns, _ := root.ns()
			ctx := cmd.Context()
			// Fail now on a typo rather than at the viewer's first connection.
			if _, err := c.Get(ctx, v1alpha1.KindVMInstance, ns, args[0]); err != nil {
				return notFound(err, v1alpha1.KindVMInstance, args[0])
			}
			var lc net.ListenConfig
			l, err := lc.Listen(ctx, "tcp", listen)
			if err != nil {
				return fmt.Errorf("listening on %s: %w", listen, err)
			}
			addr := l.Addr().(*net.TCPAddr)
			fmt.Fprintf(root.streams.Out, "VNC of vminstance/%s on %s (e.g. vncviewer %s::%d); Ctrl-C stops\n",
				args[0], addr, addr.IP, addr.Port)
			return serveVNC(ctx, l, func(ctx context.Context) (io.ReadWriteCloser, error) {
				return c.VNC(ctx, ns, args[0])
			}, root.streams.ErrOut)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "local address to serve VNC on (port 0: any free port)")
	return cmd
}

// serveVNC accepts viewers on l until ctx ends and joins each to a fresh
// stream from dial. A failed dial (VM stopped) closes that viewer only and
// is reported on errOut.
func serveVNC(ctx context.Context, l net.Listener, dial func(context.Context) (io.ReadWriteCloser, error), errOut io.Writer) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { _ = l.Close() })
	defer stop()
	defer l.Close()
	for {
		viewer, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accepting vnc viewers: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer viewer.Close()
			remote, err := dial(ctx)
			if err != nil {
				fmt.Fprintf(errOut, "error: %v\n", err)
				return
			}
			defer remote.Close()
			pipe(ctx, viewer, remote)
		}()
	}
}

// pipe copies both ways until either side ends or ctx does, then closes
// both.
func pipe(ctx context.Context, a, b io.ReadWriteCloser) {
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(a, b); done <- struct{}{} }()
	go func() { _, _ = io.Copy(b, a); done <- struct{}{} }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	_ = a.Close()
	_ = b.Close()
	<-done
}
