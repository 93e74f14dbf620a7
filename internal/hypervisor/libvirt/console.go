package libvirt

import (
	"context"
	"errors"
	"io"
	"sync"

	"libvirt.org/go/libvirt"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// consoleBuffer bounds the guest output held for a slow reader. When it is
// full the stream stops being read, so qemu's chardev (and, behind it, the
// guest's UART) waits: flow control instead of lost output.
const consoleBuffer = 64 << 10

// OpenConsole attaches to the domain's first serial console and returns
// it as a byte stream: Read returns what the guest writes (io.EOF when
// the domain stops), Write types into the guest.
//
// The console is opened with VIR_DOMAIN_CONSOLE_SAFE, so libvirt
// guarantees one session at a time: a second OpenConsole fails with
// ErrConflict while the first is open, unless force is set, which
// disconnects the first (its Read fails: libvirt reports "stream had I/O
// failure") — `vmctl console
// --force`, like `virsh console --force`, for a session left behind by a
// dead client. The domain must be running (ErrConflict otherwise) and its
// serial port must be a pty (hypervisor.BuildDomain makes it one; a file
// backend cannot be attached to).
func (c *Conn) OpenConsole(ctx context.Context, name string, force bool) (io.ReadWriteCloser, error) {
	flags := libvirt.DOMAIN_CONSOLE_SAFE
	if force {
		flags |= libvirt.DOMAIN_CONSOLE_FORCE
	}
	var cs *console
	err := c.do(ctx, "opening console of domain "+name, func(conn *libvirt.Connect) error {
		stream, err := conn.NewStream(libvirt.STREAM_NONBLOCK)
		if err != nil {
			return err
		}
		err = withDomain(conn, name, func(dom *libvirt.Domain) error {
			return dom.OpenConsole("", stream, flags)
		})
		if err != nil {
			_ = stream.Free()
			if !force && hasCode(err, libvirt.ERR_OPERATION_FAILED) {
				// libvirt reports "Active console session exists for this
				// domain" as a plain operation failure; it is the one
				// failure of a SAFE open on a running domain with a pty.
				return &Error{Kind: errdefs.ErrConflict, Code: libvirt.ERR_OPERATION_FAILED, Message: translate(err).Error()}
			}
			return err
		}
		cs = newConsole(stream)
		if err := stream.EventAddCallback(cs.mask(), cs.onEvent); err != nil {
			_ = stream.Abort()
			_ = stream.Free()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return cs, nil
}

// console adapts a non-blocking libvirt stream to io.ReadWriteCloser. The
// stream is driven by libvirt's event loop: onEvent drains it into buf
// (never blocking the loop); Read and Write run on the caller's goroutine
// and wait on cond.
type console struct {
	stream *libvirt.Stream

	mu       sync.Mutex
	cond     *sync.Cond
	buf      []byte
	err      error // terminal read error (io.EOF at hang-up)
	closed   bool
	paused   bool // buf full: not watching READABLE
	writable bool // a writer waits for room in the stream
}

func newConsole(s *libvirt.Stream) *console {
	cs := &console{stream: s}
	cs.cond = sync.NewCond(&cs.mu)
	return cs
}

// mask is the set of stream events to watch; call with mu held (or
// before the console is shared).
func (cs *console) mask() libvirt.StreamEventType {
	m := libvirt.STREAM_EVENT_ERROR | libvirt.STREAM_EVENT_HANGUP
	if !cs.paused {
		m |= libvirt.STREAM_EVENT_READABLE
	}
	if cs.writable {
		m |= libvirt.STREAM_EVENT_WRITABLE
	}
	return m
}

// onEvent runs on libvirt's event loop.
func (cs *console) onEvent(_ *libvirt.Stream, events libvirt.StreamEventType) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed {
		return
	}
	if events&libvirt.STREAM_EVENT_WRITABLE != 0 {
		cs.writable = false
	}
	if events&(libvirt.STREAM_EVENT_READABLE|libvirt.STREAM_EVENT_HANGUP|libvirt.STREAM_EVENT_ERROR) != 0 {
		cs.drain()
	}
	if cs.err != nil {
		_ = cs.stream.EventRemoveCallback()
	} else {
		_ = cs.stream.EventUpdateCallback(cs.mask())
	}
	cs.cond.Broadcast()
}

// drain reads what the stream holds into buf, up to consoleBuffer; call
// with mu held.
func (cs *console) drain() {
	var chunk [4096]byte
	for cs.err == nil {
		if len(cs.buf) >= consoleBuffer {
			cs.paused = true
			return
		}
		n, err := cs.stream.Recv(chunk[:min(len(chunk), consoleBuffer-len(cs.buf))])
		switch {
		case errors.Is(err, io.EOF):
			cs.err = io.EOF
		case err != nil:
			cs.err = translate(err)
		case n == -2: // would block: drained
			return
		case n > 0:
			cs.buf = append(cs.buf, chunk[:n]...)
		}
	}
}

// Read returns buffered guest output, waiting for some.
func (cs *console) Read(p []byte) (int, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for len(cs.buf) == 0 && cs.err == nil && !cs.closed {
		cs.cond.Wait()
	}
	if cs.closed {
		return 0, io.ErrClosedPipe
	}
	if len(cs.buf) == 0 {
		return 0, cs.err
	}
	n := copy(p, cs.buf)
	cs.buf = cs.buf[:copy(cs.buf, cs.buf[n:])]
	if cs.paused && len(cs.buf) < consoleBuffer/2 && cs.err == nil {
		cs.paused = false
		_ = cs.stream.EventUpdateCallback(cs.mask())
	}
	return n, nil
}

// Write sends p to the guest, waiting for room in the stream as needed.
func (cs *console) Write(p []byte) (int, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	written := 0
	for written < len(p) {
		if cs.closed {
			return written, io.ErrClosedPipe
		}
		if cs.err != nil {
			return written, cs.err
		}
		n, err := cs.stream.Send(p[written:])
		if err != nil {
			return written, translate(err)
		}
		if n == -2 { // stream full: wait until libvirt says it is writable
			cs.writable = true
			_ = cs.stream.EventUpdateCallback(cs.mask())
			cs.cond.Wait()
			continue
		}
		written += n
	}
	return written, nil
}

// Close detaches from the console; the guest keeps running. It is
// idempotent.
func (cs *console) Close() error {
	cs.mu.Lock()
	if cs.closed {
		cs.mu.Unlock()
		return nil
	}
	cs.closed = true
	ended := cs.err != nil
	cs.cond.Broadcast()
	cs.mu.Unlock()
	_ = cs.stream.EventRemoveCallback()
	var err error
	if !ended {
		// Abort, not Finish: a console has no end of data to confirm.
		if aerr := cs.stream.Abort(); aerr != nil {
			err = wrap("closing console", aerr)
		}
	}
	_ = cs.stream.Free()
	return err
}
