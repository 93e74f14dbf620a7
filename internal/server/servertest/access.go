// Package servertest provides in-memory fakes of the server's host-facing
// ports, for tests of the server, the client and vmctl.
package servertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// Access is a stateful fake of server.Access. Consoles echo what they
// are sent, one session per VM as libvirt enforces (force takes over);
// serial logs and VNC sockets are real files under Dir/<ns>/<name>/, so
// the server's file and socket handling runs for real.
type Access struct {
	// Dir holds each VM's serial.log and vnc.sock.
	Dir string

	mu       sync.Mutex
	sessions map[string]io.Closer // open console per "ns/name"
	opened   int
}

// NewAccess returns an empty fake whose files live in a test directory.
func NewAccess(t testing.TB) *Access {
	t.Helper()
	// A short directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "vmd-access")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return &Access{Dir: dir, sessions: map[string]io.Closer{}}
}

// Console implements server.Access: the session echoes every byte.
func (a *Access) Console(_ context.Context, ns, name string, force bool) (io.ReadWriteCloser, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	key := ns + "/" + name
	if old, ok := a.sessions[key]; ok {
		if !force {
			return nil, fmt.Errorf("opening console of %s: active console session exists: %w", key, errdefs.ErrConflict)
		}
		_ = old.Close()
	}
	ours, theirs := net.Pipe()
	a.sessions[key] = theirs
	a.opened++
	go func() {
		_, _ = io.Copy(theirs, theirs)
		_ = theirs.Close()
		a.mu.Lock()
		if a.sessions[key] == theirs {
			delete(a.sessions, key)
		}
		a.mu.Unlock()
	}()
	return ours, nil
}

// Sessions returns how many consoles were opened so far.
func (a *Access) Sessions() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.opened
}

// SerialLog implements server.Access.
func (a *Access) SerialLog(_ context.Context, ns, name string) (string, error) {
	return filepath.Join(a.Dir, ns, name, "serial.log"), nil
}

// VNCSocket implements server.Access.
func (a *Access) VNCSocket(_ context.Context, ns, name string) (string, error) {
	return filepath.Join(a.Dir, ns, name, "vnc.sock"), nil
}

// AppendLog appends s to the serial log of ns/name, creating it.
func (a *Access) AppendLog(t testing.TB, ns, name, s string) {
	t.Helper()
	p, _ := a.SerialLog(context.Background(), ns, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// TruncateLog empties the serial log of ns/name, as a new boot does.
func (a *Access) TruncateLog(t testing.TB, ns, name string) {
	t.Helper()
	p, _ := a.SerialLog(context.Background(), ns, name)
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}
}

// ServeVNC listens on the VNC socket of ns/name until the test ends;
// each connection gets "RFB 003.008\n" (the VNC greeting), then an echo
// of what it sends.
func (a *Access) ServeVNC(t testing.TB, ns, name string) {
	t.Helper()
	p, _ := a.VNCSocket(context.Background(), ns, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			go func() {
				defer c.Close()
				if _, err := io.WriteString(c, VNCGreeting); err != nil {
					return
				}
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

// VNCGreeting is what ServeVNC's server sends first (an RFB version).
const VNCGreeting = "RFB 003.008\n"
