//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/hypervisor"
	"github.com/vmdhq/vmd/test/images"
	"github.com/vmdhq/vmd/test/lab"
)

// TestVMInstance runs the real vmd in a lab and drives one VMInstance through vmctl only: the
// tiny guest (kernel + initramfs, booted through vmd's test-only testing.kernelBoot knob) boots
// with its cloud-init seed, answers from the client namespace with the Cozystack UUID as its
// instance-id, is restarted after its qemu is killed (Always), stops and starts again with
// runStrategy Halted/Always and with vmctl stop/start (Manual), survives a kill -9 of vmd
// without a restart (same qemu pid), and leaves no domain, file or network link behind when
// deleted. The VM runs on vmd's tenant network with a PortList external IP: the client reaches
// it there on the listed port only.
func TestVMInstance(t *testing.T) {
	if reason := lab.HostProblem(); reason != "" {
		t.Skipf("vmd lab unavailable: %s", reason)
	}
	start := time.Now()
	l := lab.New(t, lab.Options{Images: []images.Name{images.Tiny}, Logf: t.Logf})
	ctx := t.Context()
	domainType, err := l.DomainType(ctx)
	if err != nil {
		t.Fatalf("deciding domain type: %v", err)
	}
	const externalPool = tinyExternalPool
	cfgPath := writeTinyConfig(t, l)
	h := newVMD(t, l, "--config", cfgPath)
	vmctl, mustVmctl := h.Vmctl, h.MustVmctl
	const name, domain = "tiny", "default.vm-instance-tiny"
	vmd := h.Start("vmd")
	t.Cleanup(func() {
		// Leave the lab clean even when the test stops half-way.
		_, _ = l.Virsh(context.Background(), "destroy", domain)
		_, _ = l.Virsh(context.Background(), "undefine", domain)
	})

	manifest := filepath.Join(t.TempDir(), "vm.yaml")
	writeVM := func(strategy string) {
		t.Helper()
		yaml := fmt.Sprintf(`apiVersion: apps.cozystack.io/v1alpha1
kind: VMInstance
metadata:
  name: %s
spec:
  instanceType: u1.nano
  instanceProfile: alpine
  runStrategy: %s
  external: true
  externalMethod: PortList
  externalPorts: [%d]
  sshKeys:
  - %s
`, name, strategy, lab.TinyIDPort, strings.TrimSpace(l.SSHAuthorizedKey))
		if err := os.WriteFile(manifest, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		mustVmctl("apply", "-f", manifest)
	}
	getVM := func() v1alpha1.VMInstance {
		t.Helper()
		var vm v1alpha1.VMInstance
		if err := json.Unmarshal([]byte(mustVmctl("get", "vmi", name, "-o", "json")), &vm); err != nil {
			t.Fatal(err)
		}
		return vm
	}
	qemuPID := func() int {
		pidFile := filepath.Join("/proc", strconv.Itoa(l.NamespacePID()), "root", "run", "libvirt", "qemu", domain+".pid")
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return 0
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if pid > 0 && syscall.Kill(pid, 0) != nil {
			return 0
		}
		return pid
	}
	virshState := func() string {
		out, _ := l.Virsh(ctx, "domstate", domain)
		return strings.TrimSpace(out)
	}
	waitFor := func(what string, timeout time.Duration, cond func() bool) time.Duration {
		t.Helper()
		began := time.Now()
		for !cond() {
			if time.Since(began) > timeout {
				vm := getVM()
				serial, _ := os.ReadFile(filepath.Join(h.StateDir, "instances", "default", name, "serial.log"))
				dumpxml, _ := l.Virsh(ctx, "dumpxml", domain)
				t.Fatalf("%s: not after %s (virsh: %q, phase %s, status %+v)\nserial log:\n%s\ndomain:\n%s",
					what, timeout, virshState(), vm.Status.Phase, vm.Status, serial, dumpxml)
			}
			time.Sleep(200 * time.Millisecond)
		}
		return time.Since(began)
	}
	// answerOn reads one line from a tiny guest's port from the client namespace.
	answerOn := func(ip string, port uint16) (string, error) {
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		conn, err := l.Dial(dctx, lab.InClient, "tcp", ip+":"+strconv.Itoa(int(port)))
		if err != nil {
			return "", err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(conn).ReadString('\n')
		return strings.TrimSpace(line), err
	}
	// answer reads the tiny guest's id port.
	answer := func(ip string) (string, error) { return answerOn(ip, lab.TinyIDPort) }
	timings := []string{}
	note := func(what string, d time.Duration) {
		timings = append(timings, fmt.Sprintf("%s %.1fs", what, d.Seconds()))
		t.Logf("%s: %.1fs", what, d.Seconds())
	}

	// 1. apply -> Running, GuestReady, reachable with the Cozystack UUID.
	applied := time.Now()
	writeVM("Always")
	if _, err := vmctl("wait", "vmi/"+name, "--for=condition=Ready", "--timeout=2m"); err != nil {
		t.Fatal(err)
	}
	note("apply->Ready", time.Since(applied))
	vm := getVM()
	wantID := hypervisor.StableUUID("default", name, "")
	if vm.Status.UUID != wantID || len(vm.Status.Addresses) == 0 {
		t.Fatalf("status: uuid %q (want %q) addresses %+v", vm.Status.UUID, wantID, vm.Status.Addresses)
	}
	private, ip := vm.Status.Addresses[0].Address, ""
	for _, a := range vm.Status.Addresses {
		if a.Type == "External" {
			ip = a.Address
		}
	}
	if !strings.HasPrefix(private, "10.240.") || !strings.HasPrefix(ip, "10.78.0.1") {
		t.Fatalf("addresses %+v: want a private address in the tenant pool and an external one in %s", vm.Status.Addresses, externalPool)
	}
	if out := mustVmctl("get", "vmi", name); !strings.Contains(out, private) {
		t.Fatalf("vmctl get vmi does not show the IP %s:\n%s", private, out)
	}
	reachable := func() bool { _, err := answer(ip); return err == nil }
	waitFor("guest answers on its external IP from the client namespace", 45*time.Second, reachable)
	note("apply->port from client", time.Since(applied))
	// PortList: the guest also listens on 22 and 80, which are not listed.
	// A connection that is set up at all means the port passed the filter.
	for _, port := range []uint16{22, 80} {
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := l.Dial(dctx, lab.InClient, "tcp", ip+":"+strconv.Itoa(int(port)))
		cancel()
		if err == nil {
			conn.Close()
			t.Fatalf("port %d of a PortList VM is reachable on its external IP; only %d is listed", port, lab.TinyIDPort)
		}
	}
	got, _ := answer(ip)
	// The guest's identity: the domain's SMBIOS UUID and the instance-id the guest read from
	// its seed (tiny echoes it on its id port) must both be the Cozystack UUID.
	if uuid, err := l.Virsh(ctx, "domuuid", domain); err != nil || strings.TrimSpace(uuid) != wantID {
		t.Fatalf("domain SMBIOS uuid %q (%v), want %q", uuid, err, wantID)
	}
	if got != wantID {
		t.Fatalf("guest instance-id %q, want the Cozystack UUID %q", got, wantID)
	}
	if _, err := vmctl("wait", "vmi/"+name, "--for=condition=GuestReady", "--timeout=1m"); err != nil {
		t.Fatal(err)
	}

	// 2. kill -9 of qemu -> restarted (Always).
	pid := qemuPID()
	if pid == 0 {
		t.Fatal("no qemu pid")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	note("qemu kill->new qemu", waitFor("restart after kill -9", time.Minute, func() bool { p := qemuPID(); return p != 0 && p != pid }))
	waitFor("guest answers after restart", 2*time.Minute, reachable)
	if vm := getVM(); vm.Status.RestartCount < 1 {
		t.Fatalf("restartCount %d", vm.Status.RestartCount)
	}

	// 3. Halted -> stopped; Always -> running again.
	writeVM("Halted")
	note("Halted->shut off", waitFor("Halted stops the domain", time.Minute, func() bool { return virshState() == "shut off" }))
	writeVM("Always")
	note("Always->running", waitFor("Always starts it", time.Minute, func() bool { return qemuPID() != 0 }))

	// 4. Manual + vmctl stop/start.
	writeVM("Manual")
	mustVmctl("stop", name)
	note("vmctl stop->shut off", waitFor("vmctl stop", time.Minute, func() bool { return virshState() == "shut off" }))
	time.Sleep(2 * time.Second)
	if virshState() != "shut off" {
		t.Fatal("Manual VM restarted on its own")
	}
	mustVmctl("start", name)
	note("vmctl start->answers", waitFor("vmctl start", 2*time.Minute, reachable))
	writeVM("Always")

	// 5. kill -9 of vmd -> restart -> guest not restarted, re-adopted.
	pid = qemuPID()
	if err := syscall.Kill(vmd.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor("vmd dies", 10*time.Second, vmd.Exited)
	vmd = h.Start("vmd-restarted")
	time.Sleep(3 * time.Second) // a few reconcile passes
	if p := qemuPID(); p != pid {
		t.Fatalf("vmd restart restarted the guest: qemu pid %d -> %d", pid, p)
	}
	if vm := getVM(); vm.Status.Phase != v1alpha1.PhaseRunning {
		t.Fatalf("after re-adoption: phase %s", vm.Status.Phase)
	}
	if !reachable() {
		t.Fatal("guest unreachable after vmd restart")
	}

	// 6. delete -> no domain, no instance dir.
	began := time.Now()
	mustVmctl("delete", "vmi", name, "--timeout=2m")
	note("delete", time.Since(began))
	if out, _ := l.Virsh(ctx, "list", "--all", "--name"); strings.Contains(out, domain) {
		t.Fatalf("domain left after delete:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(h.StateDir, "instances", "default", name)); !os.IsNotExist(err) {
		t.Fatalf("instance dir left after delete: %v", err)
	}
	// ... and no tap, tenant bridge or external address left in the lab namespace.
	var links []byte
	for _, obj := range []string{"link", "addr"} {
		out, err := exec.CommandContext(ctx, "ip", "-n", l.Name, "-o", obj).CombinedOutput()
		if err != nil {
			t.Fatalf("listing lab %ss: %v\n%s", obj, err, out)
		}
		links = append(links, out...)
	}
	for _, left := range []string{"vmt-", "vmd-", ip + "/32"} {
		if strings.Contains(string(links), left) {
			t.Fatalf("%q left in the lab namespace after delete:\n%s", left, links)
		}
	}
	t.Logf("SUMMARY vminstance e2e (%s): %s; total %.1fs", domainType, strings.Join(timings, "; "), time.Since(start).Seconds())
	if err := vmd.Stop(10 * time.Second); err != nil {
		t.Error(err)
	}
}
