//go:build e2e

// Package e2e holds the end-to-end tier: real guests under libvirt inside a throwaway network
// namespace. See README.md in this directory for how to run it.
package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmdhq/vmd/test/images"
	"github.com/vmdhq/vmd/test/lab"
)

// labUser is the account the debian12 guest's user-data creates for the SSH login.
const labUser = "labuser"

// TestLab proves the lab itself, through plain libvirt (vmd is not involved): both images are
// built or reused, the debian12 image boots from a qcow2 overlay with a NoCloud seed and takes a
// freshly generated SSH key, the tiny guest is reachable from the client namespace, and closing
// the lab leaves nothing behind.
func TestLab(t *testing.T) {
	if reason := lab.HostProblem(); reason != "" {
		t.Skipf("vmd lab unavailable: %s", reason)
	}
	testStart := time.Now()
	l := lab.New(t, lab.Options{})
	ctx := t.Context()

	var summary []string
	for _, name := range images.All {
		img := l.Images[name]
		verb := "reused"
		if img.Built {
			verb = "built"
		}
		t.Logf("image %s: %s in %.1fs (recipe %s, %s)", name, verb, img.Duration.Seconds(), img.Key[:16], img.Dir)
		summary = append(summary, fmt.Sprintf("image %s %s %.1fs", name, verb, img.Duration.Seconds()))
	}
	domainType, err := l.DomainType(ctx)
	if err != nil {
		t.Fatalf("deciding domain type: %v", err)
	}
	summary = append(summary, "domain type "+domainType)

	t.Run("ImageServer", func(t *testing.T) {
		testImageServer(t, l)
	})
	t.Run("Debian12", func(t *testing.T) {
		toSSH, toCloudInit := testDebian12(t, l)
		summary = append(summary, fmt.Sprintf("debian12 boot->ssh %.1fs boot->cloud-init done %.1fs",
			toSSH.Seconds(), toCloudInit.Seconds()))
	})
	t.Run("TinyFromClient", func(t *testing.T) {
		toPort := testTinyFromClient(t, l)
		summary = append(summary, fmt.Sprintf("tiny boot->port from client %.1fs", toPort.Seconds()))
	})
	parent := t
	t.Run("NoLeftovers", func(t *testing.T) {
		if parent.Failed() {
			if os.Getenv(lab.KeepEnv) == "1" {
				t.Skipf("an earlier step failed and %s=1 keeps the lab for inspection", lab.KeepEnv)
			}
			l.LogDiagnostics() // before Close removes the console logs
		}
		testNoLeftovers(t, l)
	})
	t.Logf("SUMMARY lab e2e: %s; total %.1fs", strings.Join(summary, "; "), time.Since(testStart).Seconds())
}

// testImageServer checks that the lab serves the cached images over HTTP inside its namespace,
// byte-exact in size, where vmd will download them from.
func testImageServer(t *testing.T, l *lab.Lab) {
	disk := l.Images[images.Debian12].Path(images.DiskFile)
	st, err := os.Stat(disk)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodHead, l.HTTPBase+"debian12.qcow2", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := l.HTTPClient(lab.InLab).Do(req)
	if err != nil {
		t.Fatalf("HEAD %s from the lab namespace: %v", req.URL, err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != st.Size() {
		t.Errorf("HEAD %s = %s, %d bytes; want 200 OK, %d bytes", req.URL, resp.Status, resp.ContentLength, st.Size())
	}
}

// testDebian12 boots the debian12 image from an overlay with a NoCloud seed, logs in over SSH
// with the lab's fresh ed25519 key and checks cloud-init finished with the instance-id it was
// given. It returns the boot-to-SSH and boot-to-cloud-init-done times.
func testDebian12(t *testing.T, l *lab.Lab) (toSSH, toCloudInit time.Duration) {
	ctx, cancel := context.WithTimeout(t.Context(), 12*time.Minute)
	defer cancel()
	instanceID := l.Name + "-debian12"
	userData := fmt.Sprintf(`#cloud-config
ssh_pwauth: false
disable_root: true
users:
  - name: %s
    shell: /bin/bash
    lock_passwd: true
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    ssh_authorized_keys:
      - %s
`, labUser, l.SSHAuthorizedKey)
	g, err := l.DefineGuest(ctx, lab.GuestSpec{
		Name:       "debian12",
		Image:      images.Debian12,
		InstanceID: instanceID,
		IP:         netip.MustParseAddr("10.77.0.10"),
		UserData:   userData,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("debian12 started (console %s)", g.ConsoleLog)

	// sshd may accept connections before cloud-init has created the user: retry the login.
	toPort, err := g.WaitPort(ctx, lab.InLab, 22, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("debian12: tcp/22 open %.1fs after start", toPort.Seconds())
	client, lastErr := l.SSH(ctx, lab.InLab, g.Addr(22), labUser)
	for lastErr != nil {
		select {
		case <-ctx.Done():
			t.Fatalf("ssh login as %s never succeeded: %v; console:\n%s", labUser, lastErr, g.ConsoleTail(30))
		case <-time.After(time.Second):
		}
		client, lastErr = l.SSH(ctx, lab.InLab, g.Addr(22), labUser)
	}
	defer client.Close()
	toSSH = time.Since(g.Started)
	t.Logf("debian12: ssh key login as %s %.1fs after start", labUser, toSSH.Seconds())

	status, err := lab.SSHRun(ctx, client, "cloud-init status --wait")
	toCloudInit = time.Since(g.Started)
	if err != nil {
		t.Fatalf("cloud-init status: %v (output %q)", err, status)
	}
	if !strings.Contains(status, "status: done") {
		t.Fatalf("cloud-init status = %q, want status: done", status)
	}
	t.Logf("debian12: cloud-init done %.1fs after start", toCloudInit.Seconds())

	got, err := lab.SSHRun(ctx, client, "sudo -n cloud-init query v1.instance_id")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(got) != instanceID {
		t.Errorf("guest instance-id = %q, want %q", strings.TrimSpace(got), instanceID)
	}
	user, err := lab.SSHRun(ctx, client, "id -un")
	if err != nil || strings.TrimSpace(user) != labUser {
		t.Errorf("logged in as %q (err %v), want %s", strings.TrimSpace(user), err, labUser)
	}
	return toSSH, toCloudInit
}

// testTinyFromClient boots the tiny guest and reaches its ports from the client namespace,
// which has no address on the guest network: the connection is routed through the veth and the
// lab namespace, as traffic from outside the host would be. Returns the boot-to-port time.
func testTinyFromClient(t *testing.T, l *lab.Lab) time.Duration {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	instanceID := l.Name + "-tiny"
	g, err := l.DefineGuest(ctx, lab.GuestSpec{
		Name:       "tiny",
		Image:      images.Tiny,
		InstanceID: instanceID,
		IP:         netip.MustParseAddr("10.77.0.11"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	toPort, err := g.WaitPort(ctx, lab.InClient, lab.TinyIDPort, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("tiny: tcp/%d reachable from the client namespace %.1fs after start", lab.TinyIDPort, toPort.Seconds())

	route, err := l.Run(ctx, lab.InClient, "ip", "-4", "route", "get", g.IP.String())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(route, "via "+lab.UplinkAddr.String()) {
		t.Errorf("client route to %s = %q, want it via %s", g.IP, strings.TrimSpace(route), lab.UplinkAddr)
	}

	tests := []struct {
		name string
		port uint16
		want string
	}{
		{name: "id port", port: lab.TinyIDPort, want: instanceID + "\n"},
		{name: "ssh banner", port: lab.TinySSHPort, want: "SSH-2.0-vmdlab-tiny " + instanceID + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := l.ReadTCP(ctx, lab.InClient, g.Addr(tt.port), 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("tcp/%d answered %q, want %q", tt.port, got, tt.want)
			}
		})
	}
	t.Run("http", func(t *testing.T) {
		url := "http://" + g.Addr(lab.TinyHTTPPort).String() + "/"
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := l.HTTPClient(lab.InClient).Do(req)
		if err != nil {
			t.Fatalf("GET %s from the client namespace: %v", url, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if want := "instance-id=" + instanceID; resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s = %s %q, want 200 with %q", url, resp.Status, body, want)
		}
	})
	return toPort
}

// testNoLeftovers closes the lab and checks that no namespace, process, bridge, domain or file
// of it survived. Domains die with the lab's libvirtd and its qemu processes: both are covered by
// the process checks, and Close itself fails if libvirtd still listed a domain after teardown.
func testNoLeftovers(t *testing.T, l *lab.Lab) {
	if err := l.Close(); err != nil {
		t.Fatalf("closing lab: %v", err)
	}
	if left := l.Leftovers(); len(left) > 0 {
		t.Errorf("lab %s left behind:\n  %s", l.Name, strings.Join(left, "\n  "))
	}
	labs, err := lab.List()
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(labs, func(lo lab.Leftover) bool { return lo.Name == l.Name }); i >= 0 {
		t.Errorf("lab.List still finds %+v", labs[i])
	}
}
