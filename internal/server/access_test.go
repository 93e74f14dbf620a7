package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vmdhq/vmd/internal/server"
	"github.com/vmdhq/vmd/internal/server/servertest"
)

// accessHarness is a server with a fake Access and one VMInstance, web.
func accessHarness(t *testing.T) (*harness, *servertest.Access) {
	t.Helper()
	fa := servertest.NewAccess(t)
	h := start(t, harnessOpts{server: server.Options{Access: fa}})
	if r := h.do(t, http.MethodPost, base+"/namespaces/default/vminstances", "application/json", vmManifest("web", "Always")); r.code != http.StatusCreated {
		t.Fatalf("create web: %d %s", r.code, r.body)
	}
	return h, fa
}

// upgradeConn sends an upgrade request for path on a raw connection and
// returns the status line's code, the reader positioned after the
// response head, and the connection.
func upgradeConn(t *testing.T, h *harness, path, proto string) (int, *bufio.Reader, net.Conn) {
	t.Helper()
	conn, err := net.Dial("unix", h.socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: vmd\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", path, proto)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading upgrade response: %v", err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		if got := resp.Header.Get("Upgrade"); got != proto {
			t.Fatalf("Upgrade = %q, want %q", got, proto)
		}
		return resp.StatusCode, br, conn
	}
	defer resp.Body.Close()
	return resp.StatusCode, br, conn
}

// roundTrip writes msg and reads back len(msg) bytes.
func roundTrip(t *testing.T, w io.Writer, r io.Reader, msg string) string {
	t.Helper()
	if _, err := io.WriteString(w, msg); err != nil {
		t.Fatalf("writing: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatalf("reading: %v", err)
	}
	return string(buf)
}

func TestAccessRoutesRefuse(t *testing.T) {
	h, _ := accessHarness(t)
	noAccess := start(t, harnessOpts{})
	vm := base + "/namespaces/default/vminstances/web"
	tests := []struct {
		name     string
		h        *harness
		path     string
		wantCode int
		wantMsg  string
	}{
		{name: "no access port", h: noAccess, path: vm + "/log", wantCode: http.StatusNotImplemented},
		{name: "unknown vm", h: h, path: base + "/namespaces/default/vminstances/nope/log", wantCode: http.StatusNotFound, wantMsg: "nope"},
		{name: "unknown namespace", h: h, path: base + "/namespaces/other/vminstances/web/log", wantCode: http.StatusNotFound},
		{name: "disks have no log", h: h, path: base + "/namespaces/default/vmdisks/web/log", wantCode: http.StatusNotFound, wantMsg: "console, log and vnc"},
		{name: "unknown subresource", h: h, path: vm + "/screenshot", wantCode: http.StatusNotFound, wantMsg: "console, log and vnc"},
		{name: "console without upgrade", h: h, path: vm + "/console", wantCode: http.StatusBadRequest, wantMsg: "Upgrade: vmd-console"},
		{name: "vnc without upgrade", h: h, path: vm + "/vnc", wantCode: http.StatusBadRequest, wantMsg: "Upgrade: vmd-vnc"},
		{name: "bad tail", h: h, path: vm + "/log?tail=x", wantCode: http.StatusBadRequest, wantMsg: "tail"},
		{name: "bad follow", h: h, path: vm + "/log?follow=maybe", wantCode: http.StatusBadRequest, wantMsg: "follow"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.h.do(t, http.MethodGet, tc.path, "", "")
			if r.code != tc.wantCode {
				t.Fatalf("code %d, want %d: %s", r.code, tc.wantCode, r.body)
			}
			if st := mustStatus(t, r); !strings.Contains(st.Message, tc.wantMsg) {
				t.Fatalf("message %q lacks %q", st.Message, tc.wantMsg)
			}
		})
	}
}

func TestConsoleSession(t *testing.T) {
	h, fa := accessHarness(t)
	path := base + "/namespaces/default/vminstances/web/console"

	code, br, conn := upgradeConn(t, h, path, server.ConsoleProtocol)
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("code %d, want 101", code)
	}
	if got := roundTrip(t, conn, br, "root\r\n"); got != "root\r\n" {
		t.Fatalf("echo = %q", got)
	}

	// A second session is refused while the first is open...
	if code, _, _ := upgradeConn(t, h, path, server.ConsoleProtocol); code != http.StatusConflict {
		t.Fatalf("second session: code %d, want 409", code)
	}
	// ...unless forced, which ends the first.
	code, br2, conn2 := upgradeConn(t, h, path+"?force=true", server.ConsoleProtocol)
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("forced session: code %d, want 101", code)
	}
	if got := roundTrip(t, conn2, br2, "again"); got != "again" {
		t.Fatalf("forced echo = %q", got)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("first session still open after a forced takeover")
	}
	if n := fa.Sessions(); n != 2 {
		t.Fatalf("%d consoles opened, want 2 (the refused one must not open)", n)
	}

	// Shutting the server down ends a live session.
	h.shutdown(t)
	if _, err := br2.ReadByte(); err == nil {
		t.Fatal("session survived server shutdown")
	}
}

func TestVNCPipe(t *testing.T) {
	h, fa := accessHarness(t)
	path := base + "/namespaces/default/vminstances/web/vnc"

	// Not running: no socket.
	if code, _, _ := upgradeConn(t, h, path, server.VNCProtocol); code != http.StatusConflict {
		t.Fatalf("without a vnc socket: code %d, want 409", code)
	}
	fa.ServeVNC(t, "default", "web")
	code, br, conn := upgradeConn(t, h, path, server.VNCProtocol)
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("code %d, want 101", code)
	}
	greeting := make([]byte, len(servertest.VNCGreeting))
	if _, err := io.ReadFull(br, greeting); err != nil || string(greeting) != servertest.VNCGreeting {
		t.Fatalf("greeting %q, %v", greeting, err)
	}
	payload := strings.Repeat("\x00\x01pixels", 4096)
	if got := roundTrip(t, conn, br, payload); got != payload {
		t.Fatal("vnc bytes changed in transit")
	}
	// The wrong protocol is refused.
	if code, _, _ := upgradeConn(t, h, path, server.ConsoleProtocol); code != http.StatusBadRequest {
		t.Fatalf("console protocol on vnc: code %d, want 400", code)
	}
}

func TestSerialLog(t *testing.T) {
	h, fa := accessHarness(t)
	path := base + "/namespaces/default/vminstances/web/log"

	if r := h.do(t, http.MethodGet, path, "", ""); r.code != http.StatusOK || len(r.body) != 0 {
		t.Fatalf("never booted: %d %q, want 200 and nothing", r.code, r.body)
	}
	fa.AppendLog(t, "default", "web", "one\ntwo\nthree\nfour")
	tests := []struct {
		name  string
		query string
		want  string
	}{
		{name: "whole log", query: "", want: "one\ntwo\nthree\nfour"},
		{name: "negative tail is the whole log", query: "?tail=-1", want: "one\ntwo\nthree\nfour"},
		{name: "last two, unterminated last line", query: "?tail=2", want: "three\nfour"},
		{name: "tail zero", query: "?tail=0", want: ""},
		{name: "tail beyond the log", query: "?tail=10", want: "one\ntwo\nthree\nfour"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(t, http.MethodGet, path+tc.query, "", "")
			if r.code != http.StatusOK || string(r.body) != tc.want {
				t.Fatalf("= %d %q, want 200 %q", r.code, r.body, tc.want)
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Fatalf("content type %q", ct)
			}
		})
	}
	t.Run("terminated last line", func(t *testing.T) {
		fa.AppendLog(t, "default", "web", "\n")
		if r := h.do(t, http.MethodGet, path+"?tail=1", "", ""); string(r.body) != "four\n" {
			t.Fatalf("tail=1 = %q, want %q", r.body, "four\n")
		}
	})
}

func TestSerialLogFollow(t *testing.T) {
	h, fa := accessHarness(t)
	fa.AppendLog(t, "default", "web", "boot 1\nlogin: ")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://vmd"+base+"/namespaces/default/vminstances/web/log?follow=true&tail=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("code %d", resp.StatusCode)
	}
	body := resp.Body
	expect := func(want string) {
		t.Helper()
		buf := make([]byte, len(want))
		if _, err := io.ReadFull(body, buf); err != nil || string(buf) != want {
			t.Fatalf("read %q, %v; want %q", buf, err, want)
		}
	}
	expect("login: ")
	fa.AppendLog(t, "default", "web", "root\n")
	expect("root\n")
	// A reboot truncates the log: the follower starts over.
	fa.TruncateLog(t, "default", "web")
	time.Sleep(300 * time.Millisecond) // let the follower see the empty file
	fa.AppendLog(t, "default", "web", "boot 2\n")
	expect("boot 2\n")
	// The client leaving ends the stream; the server must not wedge.
	cancel()
	if _, err := io.ReadAll(body); err == nil {
		t.Fatal("stream did not end with the client's context")
	}
}

func TestSerialLogFollowWaitsForTheFile(t *testing.T) {
	h, fa := accessHarness(t)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://vmd"+base+"/namespaces/default/vminstances/web/log?follow=true", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	fa.AppendLog(t, "default", "web", "first boot\n")
	buf := make([]byte, len("first boot\n"))
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first boot\n" {
		t.Fatalf("read %q, %v", buf, err)
	}
}
