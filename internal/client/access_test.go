package client_test

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"testing"

	"github.com/vmdhq/vmd/internal/catalog"
	"github.com/vmdhq/vmd/internal/client"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/registry"
	"github.com/vmdhq/vmd/internal/server"
	"github.com/vmdhq/vmd/internal/server/servertest"
	"github.com/vmdhq/vmd/internal/state"
	"github.com/vmdhq/vmd/internal/state/statetest"
)

// accessDaemon serves the real API with a fake Access over a unix socket
// and holds one VMInstance, default/web.
func accessDaemon(t *testing.T) (*client.Client, *servertest.Access) {
	t.Helper()
	fa := servertest.NewAccess(t)
	reg := registry.New(statetest.Open(t, state.Options{}), catalog.Default(), registry.Options{})
	sock := filepath.Join(fa.Dir, "vmd.sock")
	l, err := server.ListenUnix(sock, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.New(reg, server.Options{Access: fa}).Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-done })
	c, err := client.New(client.Options{Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(t.Context(), newVM("default", "web")); err != nil {
		t.Fatal(err)
	}
	return c, fa
}

func TestClientConsole(t *testing.T) {
	c, _ := accessDaemon(t)
	con, err := c.Console(t.Context(), "", "web", false)
	if err != nil {
		t.Fatal(err)
	}
	defer con.Close()
	if _, err := io.WriteString(con, "ls\r"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	if _, err := io.ReadFull(con, buf); err != nil || string(buf) != "ls\r" {
		t.Fatalf("echo %q, %v", buf, err)
	}
	tests := []struct {
		name     string
		vm       string
		force    bool
		wantKind error
	}{
		{name: "second session conflicts", vm: "web", wantKind: errdefs.ErrConflict},
		{name: "unknown vm", vm: "nope", wantKind: errdefs.ErrNotFound},
		{name: "forced takeover", vm: "web", force: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := c.Console(t.Context(), "default", tc.vm, tc.force)
			if tc.wantKind != nil {
				if !errors.Is(err, tc.wantKind) {
					t.Fatalf("err = %v, want %v", err, tc.wantKind)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			_ = s.Close()
		})
	}
}

func TestClientVNC(t *testing.T) {
	c, fa := accessDaemon(t)
	if _, err := c.VNC(t.Context(), "default", "web"); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("VNC of a stopped vm: err = %v, want conflict", err)
	}
	fa.ServeVNC(t, "default", "web")
	v, err := c.VNC(t.Context(), "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	buf := make([]byte, len(servertest.VNCGreeting))
	if _, err := io.ReadFull(v, buf); err != nil || string(buf) != servertest.VNCGreeting {
		t.Fatalf("greeting %q, %v", buf, err)
	}
}

func TestClientLogs(t *testing.T) {
	c, fa := accessDaemon(t)
	fa.AppendLog(t, "default", "web", "a\nb\nc\n")
	two := 2
	tests := []struct {
		name string
		opts client.LogOptions
		want string
	}{
		{name: "whole log", want: "a\nb\nc\n"},
		{name: "tail", opts: client.LogOptions{Tail: &two}, want: "b\nc\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := c.Logs(t.Context(), "default", "web", tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got, err := io.ReadAll(r)
			if err != nil || string(got) != tc.want {
				t.Fatalf("= %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	t.Run("follow", func(t *testing.T) {
		r, err := c.Logs(t.Context(), "default", "web", client.LogOptions{Follow: true, Tail: new(int)})
		if err != nil {
			t.Fatal(err)
		}
		fa.AppendLog(t, "default", "web", "d\n")
		buf := make([]byte, 2)
		if _, err := io.ReadFull(r, buf); err != nil || string(buf) != "d\n" {
			t.Fatalf("followed %q, %v", buf, err)
		}
		// Closing the reader ends the stream on both sides.
		if err := r.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Fatal(err)
		}
	})
	t.Run("unknown vm", func(t *testing.T) {
		if _, err := c.Logs(t.Context(), "default", "nope", client.LogOptions{}); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("err = %v, want not found", err)
		}
	})
}
