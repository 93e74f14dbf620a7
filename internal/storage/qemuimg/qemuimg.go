// Package qemuimg is the leaf adapter that drives the qemu-img tool: it
// inspects, creates, converts, grows and checks disk image files for the
// storage capability. It shells out (no cgo) and is wired in cmd/vmd only.
//
// # Explicit formats, always
//
// Every call names the image format explicitly (-f, -F, -O); the adapter
// never lets qemu-img probe. Probing is the root of a family of host-file
// disclosure bugs (CVE-2024-32498, CVE-2024-44082 and their ancestors): a
// guest that owns a raw disk can write a qcow2 header into it whose backing
// file points at /etc/shadow or another guest's disk. If anything later opens
// that raw file with format probing, qemu sees qcow2, follows the backing
// file, and serves host bytes to the guest or into a converted image. With
// -f raw the same bytes are just data. The byte-level format sniffer lives in
// internal/images; CheckSafe here is defence in depth on what qemu-img itself
// reports.
//
// # Atomic results
//
// Create, CreateOverlay and Convert write into a temporary file next to the
// destination (name + TempInfix + random suffix), fsync it, and rename it
// into place without replacing anything. A crash or a cancelled context
// therefore never leaves a half-written file under the final name; leftover
// temporary files are recognisable with IsTemp for a startup sweep.
package qemuimg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// DefaultBinary is the qemu-img executable looked up in PATH when
// Runner.Binary is empty.
const DefaultBinary = "qemu-img"

// debianPackage is named in errors so an operator knows what to install.
const debianPackage = "qemu-utils"

// waitDelay bounds how long Wait waits for qemu-img's output pipes after the
// process was killed on context cancellation.
const waitDelay = 5 * time.Second

// stderrKeep is how many trailing bytes of qemu-img's stderr are kept for
// error messages. qemu-img check can print one line per broken cluster; its
// verdict comes last.
const stderrKeep = 4 << 10

// Runner runs qemu-img. The zero value is ready to use: it runs "qemu-img"
// from PATH and logs nothing. A Runner is safe for concurrent use.
type Runner struct {
	// Binary is the qemu-img executable, a name looked up in PATH or a
	// path. Empty means DefaultBinary.
	Binary string
	// Log receives one debug record per qemu-img invocation (arguments,
	// duration, outcome). Nil discards.
	Log *slog.Logger
}

// Version runs `qemu-img --version` and returns its first line. cmd/vmd
// calls it at start-up so a missing qemu-utils package is reported at once
// (errdefs.ErrUnavailable) rather than at the first disk import.
func (r *Runner) Version(ctx context.Context) (string, error) {
	out, err := r.run(ctx, nil, "--version")
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line), nil
}

func (r *Runner) binary() string {
	if r.Binary == "" {
		return DefaultBinary
	}
	return r.Binary
}

func (r *Runner) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

// cmdError is a qemu-img run that exited non-zero.
type cmdError struct {
	sub    string // qemu-img subcommand, for the message
	code   int    // exit status
	stderr string // trimmed tail of stderr, newlines folded
	kind   error  // errdefs sentinel the failure maps to, or nil
}

func (e *cmdError) Error() string {
	if e.stderr == "" {
		return fmt.Sprintf("qemu-img %s: exit status %d", e.sub, e.code)
	}
	return fmt.Sprintf("qemu-img %s: %s (exit status %d)", e.sub, e.stderr, e.code)
}

// Unwrap lets errors.Is match the sentinel the failure was classified as.
func (e *cmdError) Unwrap() error { return e.kind }

// run executes qemu-img with args. Stdout goes to stdout when it is non-nil
// (progress parsing); otherwise it is captured and returned. A context
// cancellation kills the process and the error wraps ctx.Err().
func (r *Runner) run(ctx context.Context, stdout io.Writer, args ...string) ([]byte, error) {
	bin := r.binary()
	cmd := exec.CommandContext(ctx, bin, args...)
	var captured bytes.Buffer
	if stdout == nil {
		stdout = &captured
	}
	stderr := &tailBuffer{max: stderrKeep}
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.WaitDelay = waitDelay
	// qemu-img is not localised today; pin the locale so error matching
	// (lock conflicts) keeps working if it ever is.
	cmd.Env = append(os.Environ(), "LC_ALL=C")

	start := time.Now()
	err := cmd.Run()
	log := r.log().With("binary", bin, "args", args, "duration", time.Since(start))
	if err == nil {
		log.Debug("qemu-img succeeded")
		return captured.Bytes(), nil
	}
	sub := "run"
	if len(args) > 0 {
		sub = args[0]
	}
	switch {
	case cmd.Process == nil && (errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission)):
		// The binary itself could not be started.
		return nil, fmt.Errorf("running %s: %w; install the Debian package %s: %w", bin, err, debianPackage, errdefs.ErrUnavailable)
	case ctx.Err() != nil:
		log.Debug("qemu-img cancelled", "err", ctx.Err())
		return nil, fmt.Errorf("qemu-img %s: %w", sub, context.Cause(ctx))
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		return nil, fmt.Errorf("qemu-img %s: %w", sub, err)
	}
	ce := &cmdError{sub: sub, code: exitErr.ExitCode(), stderr: foldStderr(stderr.String())}
	if isLockConflict(ce.stderr) {
		// Another process (a running VM) holds the image: not a bug in
		// the image, the caller should wait or go through QMP.
		ce.kind = errdefs.ErrConflict
	}
	log.Debug("qemu-img failed", "exit", ce.code, "stderr", ce.stderr)
	return captured.Bytes(), ce
}

// isLockConflict recognises qemu's image-locking refusals, e.g.
// `Failed to get "write" lock` / `Failed to get shared "write" lock`.
func isLockConflict(stderr string) bool {
	return strings.Contains(stderr, "Failed to get") && strings.Contains(stderr, "lock")
}

// foldStderr turns qemu-img's stderr into one line for an error message.
func foldStderr(s string) string {
	lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
	kept := lines[:0]
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" {
			kept = append(kept, l)
		}
	}
	return strings.Join(kept, "; ")
}

// tailBuffer is an io.Writer that keeps only the last max bytes written.
type tailBuffer struct {
	max       int
	buf       []byte
	truncated bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.truncated = true
	}
	return n, nil
}

func (t *tailBuffer) String() string {
	if t.truncated {
		// Drop the partial first line so the message starts cleanly.
		s := string(t.buf)
		if _, rest, ok := strings.Cut(s, "\n"); ok {
			s = rest
		}
		return "... " + s
	}
	return string(t.buf)
}

// absPath makes p absolute. qemu-img treats "proto:rest" filenames (json:,
// nbd:, http:, ...) as protocol specifications unless a '/' precedes the
// colon, and a leading '-' as an option; an absolute path is always a plain
// file, whatever its name.
func absPath(what, p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("%s path is empty: %w", what, errdefs.ErrInvalid)
	}
	a, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("resolving %s path %s: %w", what, p, err)
	}
	return a, nil
}

// statExisting returns ErrNotFound naming the path when it does not exist.
// It runs before qemu-img so "not found" means this file, never a file the
// image refers to.
func statExisting(p string) (fs.FileInfo, error) {
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("image %s: %w", p, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("image %s is a directory: %w", p, errdefs.ErrInvalid)
	}
	return fi, nil
}
