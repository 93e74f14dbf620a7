package main

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/catalog"
	"github.com/vmdhq/vmd/internal/client"
	"github.com/vmdhq/vmd/internal/client/clienttest"
	"github.com/vmdhq/vmd/internal/registry"
	"github.com/vmdhq/vmd/internal/server"
	"github.com/vmdhq/vmd/internal/server/servertest"
	"github.com/vmdhq/vmd/internal/state"
	"github.com/vmdhq/vmd/internal/state/statetest"
)

// accessDaemon runs the real API server with a fake Access on a unix
// socket, holding the VMInstance default/web; the fake clienttest server
// has no console, log or vnc routes.
func accessDaemon(t *testing.T) (string, *servertest.Access) {
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
	vm := &v1alpha1.VMInstance{
		TypeMeta:   v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindVMInstance},
		ObjectMeta: v1alpha1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec:       v1alpha1.VMInstanceSpec{InstanceType: ptr("u1.medium"), Disks: []v1alpha1.DiskRef{{Name: "web"}}},
	}
	if _, err := c.Create(t.Context(), vm); err != nil {
		t.Fatal(err)
	}
	return sock, fa
}

// vmctlAt runs vmctl against the daemon at sock.
func vmctlAt(ctx context.Context, sock string, in io.Reader, out, errOut *syncBuffer, args ...string) int {
	factory := func(opts client.Options) (*client.Client, error) {
		opts.Socket, opts.Server = sock, ""
		return client.New(opts)
	}
	streams := IOStreams{In: in, Out: out, ErrOut: errOut}
	return execute(ctx, newRootCmd(streams, factory, func() time.Time { return testNow }), args, errOut)
}

func TestLogsCmd(t *testing.T) {
	sock, fa := accessDaemon(t)
	fa.AppendLog(t, "default", "web", "a\nb\nc\n")
	tests := []struct {
		name     string
		args     []string
		wantOut  string
		wantErr  string
		wantCode int
	}{
		{name: "whole log", args: []string{"logs", "web"}, wantOut: "a\nb\nc\n"},
		{name: "tail", args: []string{"logs", "web", "--tail", "1"}, wantOut: "c\n"},
		{name: "tail zero", args: []string{"logs", "web", "--tail=0"}, wantOut: ""},
		{name: "unknown vm", args: []string{"logs", "nope"}, wantErr: `vminstances "nope" not found`, wantCode: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut syncBuffer
			code := vmctlAt(t.Context(), sock, strings.NewReader(""), &out, &errOut, tc.args...)
			if code != tc.wantCode || out.String() != tc.wantOut || !strings.Contains(errOut.String(), tc.wantErr) {
				t.Fatalf("code %d out %q err %q; want %d %q %q", code, out.String(), errOut.String(), tc.wantCode, tc.wantOut, tc.wantErr)
			}
		})
	}
}

func TestLogsFollow(t *testing.T) {
	sock, fa := accessDaemon(t)
	fa.AppendLog(t, "default", "web", "old\n")
	ctx, cancel := context.WithCancel(t.Context())
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() { done <- vmctlAt(ctx, sock, strings.NewReader(""), &out, &errOut, "logs", "web", "-f") }()
	waitForOutput(t, &out, "old\n")
	fa.AppendLog(t, "default", "web", "new\n")
	waitForOutput(t, &out, "old\nnew\n")
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d after Ctrl-C: %s", code, errOut.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("logs -f did not stop when interrupted")
	}
}

func TestConsoleCmd(t *testing.T) {
	sock, _ := accessDaemon(t)
	in, typing := io.Pipe()
	defer typing.Close()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() { done <- vmctlAt(t.Context(), sock, in, &out, &errOut, "console", "web") }()
	waitForOutput(t, &errOut, "escape character is ^]")
	if _, err := io.WriteString(typing, "uname\r"); err != nil {
		t.Fatal(err)
	}
	waitForOutput(t, &out, "uname\r") // the fake console echoes
	// Ctrl-] detaches; what follows it in the same write is never sent.
	if _, err := io.WriteString(typing, "x\x1dy"); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 || !strings.Contains(errOut.String(), "Detached from vminstance/web") {
			t.Fatalf("exit %d, stderr %q", code, errOut.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Ctrl-] did not detach")
	}
	if got := out.String(); strings.Contains(got, "y") {
		t.Fatalf("bytes after the escape were sent: %q", got)
	}

	t.Run("unknown vm", func(t *testing.T) {
		var out, errOut syncBuffer
		if code := vmctlAt(t.Context(), sock, strings.NewReader(""), &out, &errOut, "console", "nope"); code != 1 || !strings.Contains(errOut.String(), "not found") {
			t.Fatalf("exit %d, stderr %q", code, errOut.String())
		}
	})
}

func TestVNCCmd(t *testing.T) {
	sock, fa := accessDaemon(t)
	fa.ServeVNC(t, "default", "web")
	ctx, cancel := context.WithCancel(t.Context())
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- vmctlAt(ctx, sock, strings.NewReader(""), &out, &errOut, "vnc", "web", "--listen", "127.0.0.1:0")
	}()
	waitForOutput(t, &out, "Ctrl-C stops")
	addr := regexp.MustCompile(`on (127\.0\.0\.1:\d+)`).FindStringSubmatch(out.String())
	if addr == nil {
		t.Fatalf("no address in %q", out.String())
	}
	// Two viewers in turn, each with its own stream.
	for i := range 2 {
		conn, err := net.Dial("tcp", addr[1])
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, len(servertest.VNCGreeting))
		if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != servertest.VNCGreeting {
			t.Fatalf("viewer %d greeting %q, %v", i, buf, err)
		}
		if _, err := io.WriteString(conn, "frame"); err != nil {
			t.Fatal(err)
		}
		buf = make([]byte, 5)
		if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "frame" {
			t.Fatalf("viewer %d echo %q, %v", i, buf, err)
		}
		_ = conn.Close()
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("vnc did not stop when interrupted")
	}

	t.Run("unknown vm fails before listening", func(t *testing.T) {
		var out, errOut syncBuffer
		if code := vmctlAt(t.Context(), sock, strings.NewReader(""), &out, &errOut, "vnc", "nope"); code != 1 || out.String() != "" {
			t.Fatalf("exit %d, out %q", code, out.String())
		}
	})
}

func TestSSHCmd(t *testing.T) {
	srv := clienttest.NewServer(t)
	golden := sampleVM("default", "golden", time.Hour) // private 10.77.0.5, disks golden-root, data
	srv.Put(golden)
	srv.Put(&v1alpha1.VMDisk{
		TypeMeta:   v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindVMDisk},
		ObjectMeta: v1alpha1.ObjectMeta{Namespace: "default", Name: "golden-root"},
		Spec:       v1alpha1.VMDiskSpec{Source: v1alpha1.DiskSource{Image: &v1alpha1.ImageSource{Name: "debian-12"}}, Storage: "10Gi"},
	})
	custom := sampleVM("default", "custom", time.Hour) // custom-root does not exist: not a golden image
	srv.Put(custom)
	external := sampleVM("default", "ext", time.Hour)
	external.Status.Addresses = []v1alpha1.Address{{Type: "External", Address: "192.0.2.7"}}
	srv.Put(external)
	pending := sampleVM("default", "pending", time.Hour)
	pending.Status.Addresses, pending.Status.Phase = nil, "Provisioning"
	srv.Put(pending)

	var got []string
	origExec, origUser := execSSH, currentUser
	execSSH = func(argv []string) error { got = argv; return nil }
	currentUser = func() (string, error) { return "alice", nil }
	t.Cleanup(func() { execSSH, currentUser = origExec, origUser })

	tests := []struct {
		name     string
		args     []string
		want     []string
		wantErr  string
		wantCode int
	}{
		{name: "golden image user", args: []string{"ssh", "golden"}, want: []string{"ssh", "-l", "debian", "10.77.0.5"}},
		{name: "other disk: current user", args: []string{"ssh", "custom"}, want: []string{"ssh", "-l", "alice", "10.77.0.5"}},
		{
			name: "login, key and command", args: []string{"ssh", "golden", "-l", "root", "-i", "/k/id", "--", "uname", "-a"},
			want: []string{"ssh", "-l", "root", "-i", "/k/id", "10.77.0.5", "--", "uname", "-a"},
		},
		{name: "only an external address", args: []string{"ssh", "ext"}, want: []string{"ssh", "-l", "alice", "192.0.2.7"}},
		{name: "no address yet", args: []string{"ssh", "pending"}, wantErr: `vminstance "pending" has no address yet`, wantCode: 1},
		{name: "unknown vm", args: []string{"ssh", "nope"}, wantErr: `vminstances "nope" not found`, wantCode: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got = nil
			r := vmctl(t, srv, "", tc.args...)
			if r.code != tc.wantCode || !strings.Contains(r.err, tc.wantErr) {
				t.Fatalf("code %d stderr %q; want %d %q", r.code, r.err, tc.wantCode, tc.wantErr)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("argv %q, want %q", got, tc.want)
			}
		})
	}
}
