package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"

	"github.com/vmdhq/vmd/internal/config"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/hypervisor"
)

// fakeConsoles records what the access adapter asks the driver for.
type fakeConsoles struct {
	hypervisor.NotImplemented
	domain string
	force  bool
	err    error
}

// VNCSocket answers a path derived from the domain name.
func (f *fakeConsoles) VNCSocket(_ context.Context, domain string) (string, error) {
	f.domain = domain
	if f.err != nil {
		return "", f.err
	}
	return "/var/lib/libvirt/qemu/domain-1-" + domain + "/vnc.sock", nil
}

func (f *fakeConsoles) OpenConsole(_ context.Context, domain string, force bool) (io.ReadWriteCloser, error) {
	f.domain, f.force = domain, force
	if f.err != nil {
		return nil, f.err
	}
	a, b := net.Pipe()
	_ = b.Close()
	return a, nil
}

func TestAccessPaths(t *testing.T) {
	cfg := config.Default()
	cfg.StateDir = t.TempDir()
	a := newAccess(cfg, hypervisor.NotImplemented{})
	withDomains := newAccess(cfg, &fakeConsoles{})
	stopped := newAccess(cfg, &fakeConsoles{err: fmt.Errorf("domain is not running: %w", errdefs.ErrConflict)})
	dir := filepath.Join(cfg.StateDir, "instances", "tenant-a", "web")
	tests := []struct {
		name     string
		ns, vm   string
		get      func(context.Context, string, string) (string, error)
		want     string
		wantKind error
	}{
		{name: "serial log", ns: "tenant-a", vm: "web", get: a.SerialLog, want: filepath.Join(dir, "serial.log")},
		{name: "vnc socket from the running domain", ns: "tenant-a", vm: "web", get: withDomains.VNCSocket,
			want: "/var/lib/libvirt/qemu/domain-1-tenant-a.vm-instance-web/vnc.sock"},
		{name: "vnc without a hypervisor", ns: "tenant-a", vm: "web", get: a.VNCSocket, wantKind: errdefs.ErrNotImplemented},
		{name: "vnc of a stopped vm", ns: "tenant-a", vm: "web", get: stopped.VNCSocket, wantKind: errdefs.ErrConflict},
		{name: "dot-dot name", ns: "tenant-a", vm: "..", get: a.SerialLog, wantKind: errdefs.ErrInvalid},
		{name: "slash in namespace", ns: "a/b", vm: "web", get: withDomains.VNCSocket, wantKind: errdefs.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.get(t.Context(), tc.ns, tc.vm)
			if tc.wantKind != nil {
				if !errors.Is(err, tc.wantKind) {
					t.Fatalf("err = %v, want %v", err, tc.wantKind)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("= %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestAccessConsole(t *testing.T) {
	cfg := config.Default()
	cfg.StateDir = t.TempDir()
	t.Run("no console support", func(t *testing.T) {
		a := newAccess(cfg, hypervisor.NotImplemented{})
		if _, err := a.Console(t.Context(), "default", "web", false); !errors.Is(err, errdefs.ErrNotImplemented) {
			t.Fatalf("err = %v, want ErrNotImplemented", err)
		}
	})
	t.Run("opens the domain of the vm", func(t *testing.T) {
		f := &fakeConsoles{}
		a := newAccess(cfg, f)
		c, err := a.Console(t.Context(), "tenant-a", "web", true)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
		// The namespace qualifies the domain: tenant-b's "web" is another VM.
		if f.domain != "tenant-a.vm-instance-web" || !f.force {
			t.Fatalf("opened %q force=%v, want %q force=true", f.domain, f.force, "tenant-a.vm-instance-web")
		}
	})
	t.Run("driver errors pass through", func(t *testing.T) {
		f := &fakeConsoles{err: errdefs.ErrConflict}
		a := newAccess(cfg, f)
		if _, err := a.Console(t.Context(), "default", "web", false); !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("err = %v, want ErrConflict", err)
		}
	})
	t.Run("lazy driver before connecting", func(t *testing.T) {
		l := &lazyDriver{uri: "qemu:///nowhere", lastErr: errors.New("not connected yet")}
		a := newAccess(cfg, l)
		if _, err := a.Console(t.Context(), "default", "web", false); !errors.Is(err, errdefs.ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
		if err := l.ResizeDisk(t.Context(), "default.vm-instance-web", "vdb", 1<<30); !errors.Is(err, errdefs.ErrUnavailable) {
			t.Fatalf("ResizeDisk err = %v, want ErrUnavailable", err)
		}
	})
}
