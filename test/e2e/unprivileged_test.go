//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmdhq/vmd/internal/hypervisor"
	"github.com/vmdhq/vmd/test/images"
	"github.com/vmdhq/vmd/test/lab"
)

// qemuUser is the user a stock Debian libvirt runs qemu as.
const qemuUser = "libvirt-qemu"

// TestUnprivilegedQemu runs a VM the way a production host does: libvirtd starts qemu as
// libvirt-qemu and chowns each file of the domain to it (dynamic_ownership), instead of the
// lab's usual root qemu. Everything vmd gives qemu must work through that: the golden base and
// its overlay, a blank volume (0600), the seed ISO (0600), the kernel and initrd, the serial log,
// the VNC socket, and the EFI variable store of an EFI profile (debian: OVMF without Secure
// Boot, which loads the tiny kernel directly), all under vmd's 0711 state directories. Through vmctl only: the VM becomes
// Ready and GuestReady with qemu not running as root, `vmctl logs` shows the guest's console,
// `vmctl vnc` serves the display (a VNC server's RFB greeting), and delete leaves no file.
func TestUnprivilegedQemu(t *testing.T) {
	if reason := lab.HostProblem(); reason != "" {
		t.Skipf("vmd lab unavailable: %s", reason)
	}
	qu, err := user.Lookup(qemuUser)
	if err != nil {
		t.Skipf("no %s user (Debian's libvirt-daemon-system creates it): %v", qemuUser, err)
	}
	start := time.Now()
	l := lab.New(t, lab.Options{Images: []images.Name{images.Tiny}, Logf: t.Logf, QemuUser: qemuUser})
	ctx := t.Context()
	domainType, err := l.DomainType(ctx)
	if err != nil {
		t.Fatalf("deciding domain type: %v", err)
	}
	// The golden image's content does not matter (the tiny kernel boots directly); its place at
	// the bottom of a backing chain qemu opens as another user does. A small empty qcow2 does it.
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2",
		filepath.Join(l.Dir, "www", "debian-12.qcow2"), "2G").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	h := newVMD(t, l, "--config", writeTinyConfig(t, l), "--image-mirror", l.HTTPBase)
	vmd := h.Start("vmd")
	mustVmctl := h.MustVmctl

	const name, ns = "unpriv", "default"
	domain := hypervisor.LibvirtName(ns, name)
	instanceDir := filepath.Join(h.StateDir, "instances", ns, name)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := l.Virsh(context.Background(), "dumpxml", domain)
			t.Logf("domain XML:\n%s", out)
			b, _ := os.ReadFile(filepath.Join(l.Dir, "libvirt", "log", "qemu", domain+".log"))
			t.Logf("libvirt's qemu log:\n%s", b)
		}
		_, _ = l.Virsh(context.Background(), "destroy", domain)
		_, _ = l.Virsh(context.Background(), "undefine", domain, "--nvram")
	})

	manifest := filepath.Join(t.TempDir(), "unpriv.yaml")
	doc := fmt.Sprintf(`apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: unpriv-system
spec:
  source:
    image:
      name: debian-12
  storage: 4Gi
---
apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: unpriv-data
spec:
  source: {}
  storage: 1Gi
---
apiVersion: apps.cozystack.io/v1alpha1
kind: VMInstance
metadata:
  name: %s
spec:
  instanceType: u1.nano
  instanceProfile: debian
  runStrategy: Always
  disks:
  - name: unpriv-system
  - name: unpriv-data
  sshKeys:
  - %s
`, name, strings.TrimSpace(l.SSHAuthorizedKey))
	if err := os.WriteFile(manifest, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	applied := time.Now()
	mustVmctl("apply", "-f", manifest)
	mustVmctl("wait", "vmi/"+name, "--for=condition=Ready", "--timeout=5m")
	readyIn := time.Since(applied)
	mustVmctl("wait", "vmi/"+name, "--for=condition=GuestReady", "--timeout=2m")
	guestReadyIn := time.Since(applied)
	t.Logf("vmctl describe vmi %s:\n%s\nvmctl describe vmd unpriv-system:\n%s", name, mustVmctl("describe", "vmi", name),
		mustVmctl("describe", "vmd", "unpriv-system"))

	// qemu runs as libvirt-qemu, and the files vmd made for it are its own while it runs.
	pid := qemuPIDOf(t, l, domain)
	if uid := processUID(t, pid); strconv.Itoa(uid) != qu.Uid {
		t.Fatalf("qemu (pid %d) runs as uid %d, want %s (%s)", pid, uid, qu.Uid, qemuUser)
	}
	for _, f := range []string{filepath.Join(instanceDir, "cidata.iso"), filepath.Join(instanceDir, "nvram.fd")} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if uid := st.Sys().(*syscall.Stat_t).Uid; strconv.Itoa(int(uid)) != qu.Uid || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: owner uid %d mode %v while the VM runs, want %s and 0600", f, uid, st.Mode().Perm(), qemuUser)
		}
	}

	// The golden base under the overlay is shared by every VM made from it, of every tenant: it
	// stays root's and read-only, so no VM's qemu can change what the others boot from.
	base := filepath.Join(h.StateDir, "images", "debian-12.qcow2")
	if st, err := os.Stat(base); err != nil {
		t.Error(err)
	} else if uid := st.Sys().(*syscall.Stat_t).Uid; uid != 0 || st.Mode().Perm()&0o222 != 0 {
		t.Errorf("golden base %s: owner uid %d mode %v while a VM runs on it, want root's and read-only", base, uid, st.Mode().Perm())
	}

	// vmctl logs: the serial console the guest wrote through virtlogd.
	if out := mustVmctl("logs", name); !strings.Contains(out, "VMDLAB-TINY: READY") {
		t.Errorf("vmctl logs %s lacks the guest's READY line:\n%s", name, out)
	}

	// vmctl console: a line typed reaches the guest (tiny's init answers it), Ctrl-] detaches.
	if got := consoleRoundTrip(t, h, name, "hello-vmd"); !strings.Contains(got, "console got: hello-vmd") {
		t.Errorf("vmctl console: the guest did not answer the typed line; output:\n%s", got)
	}

	// vmctl vnc: a local port whose first bytes are the VNC server's RFB greeting.
	greeting := vncGreeting(t, h, name)
	if !regexp.MustCompile(`^RFB \d{3}\.\d{3}\n$`).MatchString(greeting) {
		t.Errorf("vmctl vnc: greeting %q, want \"RFB xxx.yyy\\n\"", greeting)
	}

	// Delete: nothing of the VM or its disks is left, whoever owned it last.
	deleted := time.Now()
	mustVmctl("delete", "vmi", name, "--timeout=2m")
	mustVmctl("delete", "vmd", "unpriv-system", "unpriv-data", "--timeout=2m")
	deleteIn := time.Since(deleted)
	if out, err := l.Virsh(ctx, "list", "--all", "--name"); err != nil || strings.Contains(out, domain) {
		t.Errorf("domain left after delete (%v):\n%s", err, out)
	}
	for _, dir := range []string{filepath.Join(h.StateDir, "instances"), filepath.Join(h.StateDir, "pools")} {
		if left := filesUnder(t, dir); len(left) > 0 {
			t.Errorf("files left under %s after delete: %v", dir, left)
		}
	}
	t.Logf("SUMMARY unprivileged qemu e2e (%s, qemu as %s): apply->Ready %.2fs, apply->GuestReady %.2fs, delete %.2fs; total %.1fs",
		domainType, qemuUser, readyIn.Seconds(), guestReadyIn.Seconds(), deleteIn.Seconds(), time.Since(start).Seconds())
	if err := vmd.Stop(10 * time.Second); err != nil {
		t.Error(err)
	}
}

// qemuPIDOf reads the pid of domain's qemu from the lab libvirtd's pid file.
func qemuPIDOf(t *testing.T, l *lab.Lab, domain string) int {
	t.Helper()
	p := filepath.Join("/proc", strconv.Itoa(l.NamespacePID()), "root", "run", "libvirt", "qemu", domain+".pid")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("qemu pid of %s: %v", domain, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("qemu pid file %s: %v", p, err)
	}
	return pid
}

// processUID is the real uid of pid, from /proc/PID/status.
func processUID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Uid:" {
			uid, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatal(err)
			}
			return uid
		}
	}
	t.Fatalf("no Uid line in /proc/%d/status", pid)
	return 0
}

// vncGreeting runs `vmctl vnc NAME` on a free loopback port, connects to the address it prints
// and returns the first 12 bytes the VNC server sends (RFC 6143 §7.1.1: "RFB 003.008\n").
func vncGreeting(t *testing.T, h *vmdHarness, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(h.bin, "vmctl"), "vnc", name, "--listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "VMD_SOCKET="+h.Socket)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("vmctl vnc printed no address: %v (stderr: %s)", err, stderr.String())
	}
	m := regexp.MustCompile(`on (127\.0\.0\.1:\d+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("vmctl vnc: no address in %q", line)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", m[1])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	buf := make([]byte, 12)
	if _, err := io.ReadFull(conn, buf); err != nil {
		t.Fatalf("reading the VNC greeting through vmctl vnc: %v (vmctl stderr: %s)", err, stderr.String())
	}
	return string(buf)
}

// consoleRoundTrip runs `vmctl console NAME`, types line on it until the guest's answer appears
// (the first bytes may arrive before the guest reads its console), then detaches with Ctrl-] and
// returns what the console printed. vmctl must exit 0 after the detach.
func consoleRoundTrip(t *testing.T, h *vmdHarness, name, line string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(h.bin, "vmctl"), "console", name)
	cmd.Env = append(os.Environ(), "VMD_SOCKET="+h.Socket)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	want := "console got: " + line
	for !strings.Contains(out.String(), want) && ctx.Err() == nil {
		if _, err := io.WriteString(stdin, line+"\n"); err != nil {
			t.Fatalf("typing on vmctl console: %v (stderr: %s)", err, stderr.String())
		}
		time.Sleep(time.Second)
	}
	if _, err := stdin.Write([]byte{0x1d}); err != nil { // Ctrl-]
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("vmctl console after Ctrl-]: %v (stderr: %s)", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "Detached from vminstance/"+name) {
		t.Errorf("vmctl console did not report the detach: %q", stderr.String())
	}
	return out.String()
}

// syncBuffer is a bytes.Buffer safe for a writing process and a reading test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
