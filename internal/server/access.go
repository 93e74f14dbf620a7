package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
)

// Access is what the server needs to reach a VMInstance's guest: its
// serial console, the file the console is logged to and the VNC socket.
// It is a port of its own, not part of Service, because it touches the
// host (libvirt streams, files under the state dir) while Service only
// touches objects. The server checks that the VMInstance exists before
// calling it, so implementations may assume ns/name name a stored object.
type Access interface {
	// Console attaches to the guest's serial console. Only one session
	// may be open per VM: a second fails with errdefs.ErrConflict unless
	// force is set, which disconnects the first. A stopped VM fails with
	// errdefs.ErrConflict.
	Console(ctx context.Context, ns, name string, force bool) (io.ReadWriteCloser, error)
	// SerialLog returns the path of the file the serial console is
	// logged to; the file may not exist yet (never booted).
	SerialLog(ctx context.Context, ns, name string) (path string, err error)
	// VNCSocket returns the path of the unix socket the VM's VNC server
	// listens on while the VM runs.
	VNCSocket(ctx context.Context, ns, name string) (path string, err error)
}

// Upgrade protocols of the console and vnc subresources. Both are raw,
// bidirectional byte streams after an HTTP/1.1 "101 Switching Protocols":
// no framing, no WebSocket, so they work unchanged over the unix socket
// and any client can speak them with a plain connection.
const (
	ConsoleProtocol = "vmd-console"
	VNCProtocol     = "vmd-vnc"
)

// Access subresources of a VMInstance (GET .../vminstances/NAME/SUB).
const (
	SubresourceConsole = "console"
	SubresourceLog     = "log"
	SubresourceVNC     = "vnc"
)

// logPollInterval is how often a followed serial log is checked for
// growth. Polling (rather than inotify) also notices the truncation at
// each boot and costs one stat per follower per tick.
var logPollInterval = 200 * time.Millisecond

// vncDialTimeout bounds connecting to a VM's VNC socket; QEMU accepts at
// once or not at all.
const vncDialTimeout = 5 * time.Second

// access serves GET .../:plural/:name/{console,log,vnc}.
func (s *Server) access(c echo.Context) error {
	kind, err := resource(c)
	if err != nil {
		return err
	}
	sub := c.Param("sub")
	if kind != v1alpha1.KindVMInstance || (sub != SubresourceConsole && sub != SubresourceLog && sub != SubresourceVNC) {
		return &requestError{
			code:    http.StatusNotFound,
			reason:  v1alpha1.StatusReasonNotFound,
			message: fmt.Sprintf("%s have no %q subresource: vminstances have console, log and vnc", kind.Plural(), sub),
		}
	}
	if s.opts.Access == nil {
		return fmt.Errorf("%s of vminstances: %w", sub, errdefs.ErrNotImplemented)
	}
	ctx := c.Request().Context()
	ns, name := c.Param("ns"), c.Param("name")
	// 404 for an unknown VM comes from the registry, in its words, before
	// anything on the host is touched.
	if _, err := s.svc.Get(ctx, kind, ns, name); err != nil {
		return err
	}
	switch sub {
	case SubresourceConsole:
		return s.console(c, ns, name)
	case SubresourceVNC:
		return s.vnc(c, ns, name)
	default:
		return s.serialLog(c, ns, name)
	}
}

// console upgrades the request to a raw byte stream joined to the guest's
// serial console (?force=true takes over an existing session).
func (s *Server) console(c echo.Context, ns, name string) error {
	if err := wantUpgrade(c.Request(), ConsoleProtocol); err != nil {
		return err
	}
	force, err := boolParam(c, "force")
	if err != nil {
		return err
	}
	con, err := s.opts.Access.Console(c.Request().Context(), ns, name, force)
	if err != nil {
		return err
	}
	return s.splice(c, ConsoleProtocol, con)
}

// vnc upgrades the request to a raw byte stream joined to a fresh
// connection to the VM's VNC socket (the RFB protocol runs end to end).
func (s *Server) vnc(c echo.Context, ns, name string) error {
	if err := wantUpgrade(c.Request(), VNCProtocol); err != nil {
		return err
	}
	path, err := s.opts.Access.VNCSocket(c.Request().Context(), ns, name)
	if err != nil {
		return err
	}
	d := net.Dialer{Timeout: vncDialTimeout}
	conn, err := d.DialContext(c.Request().Context(), "unix", path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			// QEMU creates the socket at start and removes it at exit.
			return fmt.Errorf("vminstance %q has no VNC display (is it running?): %w", name, errdefs.ErrConflict)
		}
		return fmt.Errorf("connecting to vnc of vminstance %q: %w", name, err)
	}
	return s.splice(c, VNCProtocol, conn)
}

// wantUpgrade refuses a request that does not ask to switch to proto:
// answering 101 to a client that expects a body would wedge it.
func wantUpgrade(r *http.Request, proto string) error {
	if headerHasToken(r.Header, "Connection", "upgrade") && strings.EqualFold(r.Header.Get("Upgrade"), proto) {
		return nil
	}
	return badRequest(fmt.Sprintf("this subresource is a byte stream: send \"Connection: Upgrade\" and \"Upgrade: %s\"", proto))
}

// headerHasToken reports whether the comma-separated header contains
// token (case-insensitively), as Connection: keep-alive, Upgrade does.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// splice answers 101, takes the connection over from net/http and copies
// bytes both ways between it and remote until either side ends or the
// server shuts down; then both are closed. remote is closed in every case.
func (s *Server) splice(c echo.Context, proto string, remote io.ReadWriteCloser) error {
	resp := c.Response()
	conn, brw, err := resp.Hijack()
	if err != nil {
		_ = remote.Close()
		return fmt.Errorf("taking over the connection: %w", err)
	}
	// From here on net/http and echo no longer own the connection: record
	// the status for metrics and keep the error handler from writing.
	resp.Status, resp.Committed = http.StatusSwitchingProtocols, true
	defer conn.Close()
	defer remote.Close()
	_, _ = fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", proto)
	if err := brw.Flush(); err != nil {
		s.log.Debug("writing upgrade response", "err", err)
		return nil
	}
	done := make(chan struct{}, 2)
	// brw.Reader may already hold bytes the client sent right after its
	// request; reading through it loses none.
	go func() { _, _ = io.Copy(remote, brw.Reader); done <- struct{}{} }()
	go func() { _, _ = io.Copy(conn, remote); done <- struct{}{} }()
	select {
	case <-done:
	case <-s.draining.Done():
	}
	// Closing both ends unblocks whichever copy still runs.
	_ = conn.Close()
	_ = remote.Close()
	s.log.Debug("stream ended", "protocol", proto, "path", c.Request().URL.Path)
	return nil
}

// serialLog serves the serial console log as text/plain: the last ?tail=N
// lines (all when absent or negative), then, with ?follow=true, what the
// guest writes next, until the client goes away. The log is truncated at
// each boot; a follower then continues from the new beginning.
func (s *Server) serialLog(c echo.Context, ns, name string) error {
	follow, err := boolParam(c, "follow")
	if err != nil {
		return err
	}
	tail := -1
	if v := c.QueryParam("tail"); v != "" {
		if tail, err = strconv.Atoi(v); err != nil {
			return badRequest(fmt.Sprintf("invalid tail value %q: want a number of lines", v))
		}
	}
	ctx := c.Request().Context()
	path, err := s.opts.Access.SerialLog(ctx, ns, name)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Never booted: nothing logged yet. A follower waits for it.
		f = nil
	case err != nil:
		return fmt.Errorf("opening serial log of vminstance %q: %w", name, err)
	}
	defer func() {
		if f != nil {
			_ = f.Close()
		}
	}()
	resp := c.Response()
	resp.Header().Set(echo.HeaderContentType, "text/plain; charset=utf-8")
	resp.Header().Set("X-Content-Type-Options", "nosniff")
	resp.WriteHeader(http.StatusOK)
	var offset int64
	if f != nil {
		if offset, err = tailOffset(f, tail); err != nil {
			return fmt.Errorf("reading serial log of vminstance %q: %w", name, err)
		}
		if offset, err = copyFrom(resp, f, offset); err != nil {
			return nil // the client went away
		}
	}
	resp.Flush()
	if !follow {
		return nil
	}
	tick := time.NewTicker(logPollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.draining.Done():
			return nil
		case <-tick.C:
		}
		if f, offset, err = reopenIfReplaced(path, f, offset); err != nil {
			s.log.Debug("following serial log", "path", path, "err", err)
			continue
		}
		if f == nil {
			continue
		}
		fi, err := f.Stat()
		if err != nil {
			continue
		}
		if fi.Size() < offset {
			// Truncated (a new boot): start over from its beginning.
			offset = 0
		}
		if fi.Size() == offset {
			continue
		}
		if offset, err = copyFrom(resp, f, offset); err != nil {
			return nil
		}
		resp.Flush()
	}
}

// reopenIfReplaced opens path when f is nil or path now names another
// file (the log was deleted and recreated); the offset restarts at 0 for a
// new file. A missing file leaves f as is.
func reopenIfReplaced(path string, f *os.File, offset int64) (*os.File, int64, error) {
	pfi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return f, offset, nil
	}
	if err != nil {
		return f, offset, err
	}
	if f != nil {
		if ffi, err := f.Stat(); err == nil && os.SameFile(pfi, ffi) {
			return f, offset, nil
		}
	}
	nf, err := os.Open(path)
	if err != nil {
		return f, offset, err
	}
	if f != nil {
		_ = f.Close()
	}
	return nf, 0, nil
}

// copyFrom writes f's bytes from offset to its current end to w and
// returns the new offset; an error means w failed (the client left).
func copyFrom(w io.Writer, f *os.File, offset int64) (int64, error) {
	n, err := io.Copy(w, io.NewSectionReader(f, offset, 1<<62))
	return offset + n, err
}

// tailChunk is how much of the log tailOffset reads at a time, backwards.
const tailChunk = 32 << 10

// tailOffset returns where the last n lines of f begin (0 for n < 0, the
// end for n == 0). A final line without its newline counts as a line, as
// with tail(1).
func tailOffset(f *os.File, n int) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := fi.Size()
	if n < 0 || size == 0 {
		return 0, nil
	}
	if n == 0 {
		return size, nil
	}
	// Scan backwards counting newlines; the newline ending the file does
	// not start a line.
	end := size
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, size-1); err != nil {
		return 0, err
	}
	if last[0] == '\n' {
		end--
	}
	buf := make([]byte, tailChunk)
	for pos := end; pos > 0; {
		start := max(pos-tailChunk, 0)
		chunk := buf[:pos-start]
		if _, err := f.ReadAt(chunk, start); err != nil {
			return 0, err
		}
		for i := len(chunk) - 1; i >= 0; i-- {
			if chunk[i] != '\n' {
				continue
			}
			if n--; n == 0 {
				return start + int64(i) + 1, nil
			}
		}
		pos = start
	}
	return 0, nil
}
