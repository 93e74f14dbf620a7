package server

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"
)

// DefaultSocketMode lets root and the socket's group (the operators allowed
// to drive VMs) connect, nobody else.
const DefaultSocketMode os.FileMode = 0o660

// ErrDaemonRunning is returned by ListenUnix when a live daemon already
// answers on the socket path.
var ErrDaemonRunning = errors.New("another vmd is running")

// ListenUnix listens on a unix socket at path for the API.
//
// It creates the parent directory (0755) if needed. A socket file left
// behind by a crashed daemon is removed, but only after a connection
// attempt shows nothing answers: deleting a live daemon's socket would
// orphan it silently, so in that case ListenUnix fails with
// ErrDaemonRunning. A non-socket file at path is never removed.
//
// The socket is then chmod-ed to mode (DefaultSocketMode when 0) and, when
// gid >= 0, chown-ed to that group. Between bind and chmod the socket has
// the process umask's permissions; with the usual 022 that grants nobody
// else write (= connect) access, so the window is harmless.
func ListenUnix(path string, mode os.FileMode, gid int) (net.Listener, error) {
	if mode == 0 {
		mode = DefaultSocketMode
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating socket directory: %w", err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("setting mode of %s: %w", path, err)
	}
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			_ = l.Close()
			return nil, fmt.Errorf("setting group of %s: %w", path, err)
		}
	}
	return l, nil
}

// removeStaleSocket removes path if it is a socket nobody answers on.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking socket path: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("checking socket path: %s exists and is not a socket; refusing to remove it", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		_ = conn.Close()
		return fmt.Errorf("%w on %s", ErrDaemonRunning, path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing stale socket: %w", err)
	}
	return nil
}
