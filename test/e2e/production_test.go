//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/hypervisor"
	"github.com/vmdhq/vmd/test/images"
	"github.com/vmdhq/vmd/test/lab"
)

// Sizes of the production example, scaled down from the seeds' 50Gi/200Gi to what this machine
// holds; the data disk is then grown online to prodDataGrown. All three differ, so a size alone
// names a disk in the guest.
const (
	prodSystemSize = 4 << 30
	prodDataSize   = 3 << 30
	prodDataGrown  = 5 << 30
	// prodMarker is the file the example's runcmd writes; its content proves the command ran
	// through a shell as cloud-init's final stage does.
	prodMarker = "/var/lib/vmd-e2e/runcmd-marker"
)

// prodManifest is the seeds' "VM de Production avec Données" example (seed 004), adapted to the
// lab: the system disk comes from the golden image debian-12 (served by the lab mirror) instead
// of an Ubuntu URL on the internet; the sizes and the instance type fit a 2-core TCG host; there
// are no packages to install (no internet) and runcmd writes a marker instead of configuring
// nginx and ufw; the key is the lab's. The profile stays "ubuntu": a BIOS, virtio profile, which
// is how the lab's extlinux-booted Debian image has to boot.
//
// users starts with "default" (the seed lists only admin): cloud-init gives the meta-data
// public-keys, i.e. spec.sshKeys, to the image's default user, and without "default" in users
// that user is not created and sshKeys would only reach root's "please log in as ..." stub. With
// it, both paths a Hikube user relies on are exercised: sshKeys -> default user, cloudInit users
// -> admin.
func prodManifest(key string, dataSize int64) string {
	return fmt.Sprintf(`# Disque système
apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: prod-system
spec:
  source:
    image:
      name: debian-12
  optical: false
  storage: %[1]dGi
  storageClass: "replicated"
---
# Disque données
apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: prod-data
spec:
  source: {}
  optical: false
  storage: %[2]dGi
  storageClass: "replicated"
---
# Machine virtuelle
apiVersion: apps.cozystack.io/v1alpha1
kind: VMInstance
metadata:
  name: vm-production
spec:
  external: true
  externalMethod: PortList
  externalPorts:
  - 22 # SSH
  - 80 # HTTP
  - 443 # HTTPS
  running: true
  instanceType: "u1.medium" # 1 vCPU, 4 GiB
  instanceProfile: "ubuntu"
  disks:
  - prod-system
  - prod-data
  sshKeys:
  - %[3]q
  cloudInit: |
    #cloud-config
    users:
    - default
    - name: admin
      sudo: ALL=(ALL) NOPASSWD:ALL
      shell: /bin/bash
      ssh_authorized_keys:
      - %[3]q
    runcmd:
    - mkdir -p %[4]s
    - echo "runcmd ran for $(cat /var/lib/cloud/data/instance-id)" > %[5]s
`, prodSystemSize>>30, dataSize>>30, key, filepath.Dir(prodMarker), prodMarker)
}

// TestProductionExample applies the seeds' production example (system disk from a golden image,
// blank data disk, VMInstance with a PortList external IP, sshKeys and a cloudInit with users
// and runcmd) from one multi-document file with vmctl, on the lab's real Debian 12 image, and
// checks what its user would: the VM gets Ready and GuestReady; SSH works on the external IP
// from outside as the cloudInit user admin and as the image's default user (sshKeys); the guest's
// cloud-init instance-id, SMBIOS UUID and status.uuid are Cozystack's UUID; admin has
// passwordless sudo; runcmd ran; the hostname is vm-instance-<name>; both disks have their
// requested sizes in the guest; only the listed ports pass; growing the data VMDisk grows the
// disk in the running guest without a reboot; and deleting the VMInstance and its disks leaves
// no domain, file or volume behind.
func TestProductionExample(t *testing.T) {
	if reason := lab.HostProblem(); reason != "" {
		t.Skipf("vmd lab unavailable: %s", reason)
	}
	start := time.Now()
	l := lab.New(t, lab.Options{Images: []images.Name{images.Debian12}, Logf: t.Logf})
	ctx := t.Context()
	domainType, err := l.DomainType(ctx)
	if err != nil {
		t.Fatalf("deciding domain type: %v", err)
	}

	serveGoldenDebian12(t, l)
	const externalPool = "10.78.0.100-10.78.0.110"
	cfgPath := filepath.Join(l.Dir, "vmd.yaml")
	cfg := fmt.Sprintf(`instances:
  shutdownTimeout: 60s
network:
  uplink: vmdlab-up
  externalPool: %s
`, externalPool)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newVMD(t, l, "--config", cfgPath, "--image-mirror", l.HTTPBase)
	vmd := h.Start("vmd")
	vmctl, mustVmctl := h.Vmctl, h.MustVmctl

	const name, ns = "vm-production", "default"
	domain := hypervisor.LibvirtName(ns, name)
	instanceDir := filepath.Join(h.StateDir, "instances", ns, name)
	t.Cleanup(func() {
		if t.Failed() {
			prodDiagnostics(t, l, h, domain, instanceDir)
		}
		// Leave the lab clean even when the test stops half-way.
		_, _ = l.Virsh(context.Background(), "destroy", domain)
		_, _ = l.Virsh(context.Background(), "undefine", domain, "--nvram")
	})

	key := strings.TrimSpace(l.SSHAuthorizedKey)
	manifest := filepath.Join(t.TempDir(), "production.yaml")
	if err := os.WriteFile(manifest, []byte(prodManifest(key, prodDataSize)), 0o600); err != nil {
		t.Fatal(err)
	}
	timings := []string{}
	note := func(what string, d time.Duration) {
		timings = append(timings, fmt.Sprintf("%s %.2fs", what, d.Seconds()))
		t.Logf("%s: %.2fs", what, d.Seconds())
	}
	getVM := func() v1alpha1.VMInstance {
		t.Helper()
		var vm v1alpha1.VMInstance
		if err := json.Unmarshal([]byte(mustVmctl("get", "vmi", name, "-o", "json")), &vm); err != nil {
			t.Fatal(err)
		}
		return vm
	}
	getDisk := func(disk string) v1alpha1.VMDisk {
		t.Helper()
		var d v1alpha1.VMDisk
		if err := json.Unmarshal([]byte(mustVmctl("get", "vmd", disk, "-o", "json")), &d); err != nil {
			t.Fatal(err)
		}
		return d
	}

	// 1. One apply of the three documents; Ready, then SSH and GuestReady measured side by side.
	applied := time.Now()
	t.Logf("vmctl apply -f production.yaml:\n%s", mustVmctl("apply", "-f", manifest))
	if _, err := vmctl("wait", "vmi/"+name, "--for=condition=Ready", "--timeout=8m"); err != nil {
		t.Fatal(err)
	}
	note("apply->Ready", time.Since(applied))
	var (
		guestReadyAt  time.Time
		guestReadyErr error
		guestReadyWG  sync.WaitGroup
	)
	guestReadyWG.Go(func() {
		_, guestReadyErr = vmctl("wait", "vmi/"+name, "--for=condition=GuestReady", "--timeout=8m")
		guestReadyAt = time.Now()
	})

	vm := getVM()
	wantUUID := hypervisor.StableUUID(ns, name, vm.Spec.CloudInitSeed)
	if vm.Status.UUID != wantUUID {
		t.Fatalf("status.uuid %q, want the Cozystack UUID %q", vm.Status.UUID, wantUUID)
	}
	if vm.Status.InstanceType != "u1.medium" || vm.Status.Profile != "ubuntu" {
		t.Fatalf("status resolved instance type %q and profile %q, want u1.medium and ubuntu", vm.Status.InstanceType, vm.Status.Profile)
	}
	var private, external string
	for _, a := range vm.Status.Addresses {
		switch a.Type {
		case "Private":
			private = a.Address
		case "External":
			external = a.Address
		}
	}
	extIP, err := netip.ParseAddr(external)
	if err != nil || private == "" || !strings.HasPrefix(external, "10.78.0.1") {
		t.Fatalf("addresses %+v: want a private address and an external one in %s", vm.Status.Addresses, externalPool)
	}
	table := mustVmctl("get", "vmi", name)
	for _, want := range []string{"u1.medium", "ubuntu", private} {
		if !strings.Contains(table, want) {
			t.Fatalf("vmctl get vmi does not show %q:\n%s", want, table)
		}
	}
	t.Logf("vmctl get vmi:\n%s", table)
	if uuid, err := l.Virsh(ctx, "domuuid", domain); err != nil || strings.TrimSpace(uuid) != wantUUID {
		t.Fatalf("domain SMBIOS uuid %q (%v), want %q", uuid, err, wantUUID)
	}

	// 2. SSH on the external IP from the client namespace, port 22 of the PortList, as admin
	// (cloudInit users) as soon as cloud-init has created it.
	sshAddr := netip.AddrPortFrom(extIP, 22)
	var admin *ssh.Client
	lastErr := pollUntil(ctx, 8*time.Minute-time.Since(applied), 2*time.Second, func() error {
		dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		c, err := l.SSH(dctx, lab.InClient, sshAddr, "admin")
		if err != nil {
			return err
		}
		admin = c
		return nil
	})
	if admin == nil {
		t.Fatalf("ssh admin@%s from the client namespace: %v", sshAddr, lastErr)
	}
	defer admin.Close()
	note("apply->SSH admin", time.Since(applied))
	run := func(c *ssh.Client, cmd string) string {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		out, err := lab.SSHRun(rctx, c, cmd)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}

	guestReadyWG.Wait()
	if guestReadyErr != nil {
		t.Fatal(guestReadyErr)
	}
	note("apply->GuestReady", guestReadyAt.Sub(applied))
	// GuestReady comes from cloud-init's final message: by then every stage has run.
	if st := run(admin, "cloud-init status --wait"); !strings.Contains(st, "status: done") {
		t.Fatalf("cloud-init status %q, want done (an error means the example's user-data failed)", st)
	}

	// 3. The guest's identity and what the cloudInit asked for.
	if id := run(admin, "cat /var/lib/cloud/data/instance-id"); id != wantUUID {
		t.Fatalf("guest cloud-init instance-id %q, want the Cozystack UUID %q", id, wantUUID)
	}
	if id := run(admin, "cloud-init query instance_id"); id != wantUUID {
		t.Fatalf("cloud-init query instance_id %q, want %q", id, wantUUID)
	}
	run(admin, "sudo -n true") // fails the test unless admin's sudo is passwordless
	if dmi := run(admin, "sudo -n cat /sys/class/dmi/id/product_uuid"); !strings.EqualFold(dmi, wantUUID) {
		t.Fatalf("guest SMBIOS product_uuid %q, want %q", dmi, wantUUID)
	}
	if m := run(admin, "cat "+prodMarker); m != "runcmd ran for "+wantUUID {
		t.Fatalf("runcmd marker %s holds %q", prodMarker, m)
	}
	wantHost := hypervisor.DomainName(name)
	if hn := run(admin, "hostname"); hn != wantHost {
		t.Fatalf("guest hostname %q, want %q (the NoCloud local-hostname)", hn, wantHost)
	}
	// sshKeys reach the image's default user through meta-data public-keys. Its name is in the
	// image's cloud.cfg (+ cloud.cfg.d), read the way cloud-init reads it.
	defaultUser := run(admin, `python3 -c 'from cloudinit import util; `+
		`print(util.read_conf_with_confd("/etc/cloud/cloud.cfg")["system_info"]["default_user"]["name"])'`)
	if defaultUser == "" || defaultUser == "admin" {
		t.Fatalf("the lab image's default user is %q; it must have one for sshKeys to land on", defaultUser)
	}
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	du, err := l.SSH(dctx, lab.InClient, sshAddr, defaultUser)
	cancel()
	if err != nil {
		t.Fatalf("ssh with the sshKeys key as the default user %s: %v", defaultUser, err)
	}
	if who := run(du, "id -un"); who != defaultUser {
		t.Fatalf("logged in as %q, want %q", who, defaultUser)
	}
	du.Close()

	// 4. Both disks in the guest with their requested sizes: virtio in list order (vda system,
	// vdb data), the seed after them.
	disks := guestDisks(t, run(admin, "lsblk -b -dn -o NAME,SIZE"))
	if disks["vda"] != prodSystemSize || disks["vdb"] != prodDataSize {
		t.Fatalf("guest disks %v: want vda (prod-system) %d and vdb (prod-data) %d bytes", disks, int64(prodSystemSize), int64(prodDataSize))
	}
	if n := countSize(disks, prodDataSize); n != 1 {
		t.Fatalf("guest disks %v: %d disks of %d bytes, want exactly the data disk", disks, n, int64(prodDataSize))
	}

	// PortList from outside: 80 is listed, so with nothing listening the guest itself refuses
	// it; 8080 is not, so even with a listener the client never gets through, while the lab
	// namespace reaches that listener on the private address (the filter, not the guest, stops it).
	if err := dialFrom(ctx, l, lab.InClient, external, 80); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("port 80 (listed, nothing listening) from the client: %v, want connection refused by the guest", err)
	}
	for _, port := range []int{80, 8080} {
		run(admin, fmt.Sprintf("sudo -n systemd-run --unit vmd-e2e-http%d --property=Type=exec python3 -m http.server --bind 0.0.0.0 %d", port, port))
	}
	if err := pollUntil(ctx, time.Minute, time.Second, func() error { return dialFrom(ctx, l, lab.InLab, private, 8080) }); err != nil {
		t.Fatalf("the guest's listener on 8080 is not reachable on %s from the lab namespace: %v", private, err)
	}
	if err := pollUntil(ctx, time.Minute, time.Second, func() error { return dialFrom(ctx, l, lab.InClient, external, 80) }); err != nil {
		t.Fatalf("port 80 (listed, listening) not reachable from the client: %v", err)
	}
	if err := dialFrom(ctx, l, lab.InClient, external, 8080); err == nil {
		t.Fatalf("port 8080 of a PortList VM is reachable on its external IP; only 22, 80, 443 are listed")
	}

	// 5. Grow the data disk by re-applying the edited manifest: the running guest must see it
	// without a reboot. A failure here is an error, not fatal, so deletion is still checked.
	bootID := run(admin, "cat /proc/sys/kernel/random/boot_id")
	if err := os.WriteFile(manifest, []byte(prodManifest(key, prodDataGrown)), 0o600); err != nil {
		t.Fatal(err)
	}
	grew := time.Now()
	t.Logf("vmctl apply -f production.yaml (prod-data %d bytes):\n%s", int64(prodDataGrown), mustVmctl("apply", "-f", manifest))
	var seen map[string]int64
	growErr := pollUntil(ctx, 3*time.Minute, 2*time.Second, func() error {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		out, err := lab.SSHRun(rctx, admin, "lsblk -b -dn -o NAME,SIZE")
		if err != nil {
			return err
		}
		seen = guestDisks(t, out)
		if seen["vdb"] != prodDataGrown {
			return fmt.Errorf("guest disks %v", seen)
		}
		return nil
	})
	if growErr != nil {
		describe, _ := vmctl("describe", "vmd", "prod-data")
		events, _ := vmctl("events")
		t.Errorf("online growth: the guest does not see prod-data at %d bytes %s after the apply: %v\n%s\n%s",
			int64(prodDataGrown), time.Since(grew).Round(time.Second), growErr, describe, events)
	} else {
		note("apply grow->seen in guest", time.Since(grew))
		if id := run(admin, "cat /proc/sys/kernel/random/boot_id"); id != bootID {
			t.Errorf("the guest rebooted to see the new size: boot id %s -> %s", bootID, id)
		}
		// The VMDisk reports the size it now has, and no growth left pending.
		err := pollUntil(ctx, 30*time.Second, time.Second, func() error {
			d := getDisk("prod-data")
			if c := v1alpha1.FindCondition(d.Status.Conditions, "Resizing"); d.Status.Size != prodDataGrown || (c != nil && c.Status == v1alpha1.ConditionTrue) {
				return fmt.Errorf("prod-data status: size %d (want %d), Resizing %+v", d.Status.Size, int64(prodDataGrown), c)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		if vm := getVM(); vm.Status.Phase != v1alpha1.PhaseRunning {
			t.Errorf("after the growth: phase %s", vm.Status.Phase)
		}
	}
	admin.Close()

	// 6. Delete the VMInstance, then its disks; nothing of them may stay.
	volumes := []string{getDisk("prod-system").Status.Path, getDisk("prod-data").Status.Path}
	began := time.Now()
	mustVmctl("delete", "vmi", name, "--timeout=3m")
	note("delete vmi", time.Since(began))
	began = time.Now()
	mustVmctl("delete", "vmd", "prod-system", "prod-data", "--timeout=2m")
	note("delete disks", time.Since(began))
	if out, err := l.Virsh(ctx, "list", "--all", "--name"); err != nil || strings.Contains(out, domain) {
		t.Errorf("domain left after delete (%v):\n%s", err, out)
	}
	if _, err := os.Stat(instanceDir); !os.IsNotExist(err) {
		t.Errorf("instance dir %s left after delete: %v", instanceDir, err)
	}
	for _, p := range volumes {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("volume %s left after delete: %v", p, err)
		}
	}
	// No seed ISO, NVRAM or volume anywhere: under vmd's instance and pool directories, nor in
	// the lab libvirt's own NVRAM directory.
	for _, dir := range []string{filepath.Join(h.StateDir, "instances"), filepath.Join(h.StateDir, "pools"),
		filepath.Join(l.Dir, "libvirt", "lib", "qemu", "nvram")} {
		if left := filesUnder(t, dir); len(left) > 0 {
			t.Errorf("files left under %s after delete: %v", dir, left)
		}
	}
	if out := mustVmctl("get", "vmd"); strings.Contains(out, "prod-") {
		t.Errorf("disks still listed after delete:\n%s", out)
	}
	t.Logf("SUMMARY production e2e (%s): %s; total %.1fs", domainType, strings.Join(timings, "; "), time.Since(start).Seconds())
	if t.Failed() {
		return // vmd stays up for the diagnostics; the lab stops it
	}
	if err := vmd.Stop(10 * time.Second); err != nil {
		t.Error(err)
	}
}

// pollUntil calls try every interval until it succeeds, ctx ends or timeout passes, and returns
// nil or the last error.
func pollUntil(ctx context.Context, timeout, interval time.Duration, try func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := try()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-time.After(interval):
		}
	}
}

// dialFrom opens and closes a TCP connection to ip:port from side; a connection set up at all
// means the port passed every filter and something listens.
func dialFrom(ctx context.Context, l *lab.Lab, side lab.Side, ip string, port int) error {
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := l.Dial(dctx, side, "tcp", ip+":"+strconv.Itoa(port))
	if err != nil {
		return err
	}
	return conn.Close()
}

// guestDisks parses `lsblk -b -dn -o NAME,SIZE` into sizes by device name.
func guestDisks(t *testing.T, out string) map[string]int64 {
	t.Helper()
	disks := map[string]int64{}
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) != 2 {
			t.Fatalf("unexpected lsblk line %q in:\n%s", line, out)
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			t.Fatalf("lsblk size %q: %v", f[1], err)
		}
		disks[f[0]] = n
	}
	return disks
}

// countSize counts the disks of exactly size bytes.
func countSize(disks map[string]int64, size int64) int {
	n := 0
	for _, s := range disks {
		if s == size {
			n++
		}
	}
	return n
}

// filesUnder lists the non-directories below dir (none when dir does not exist).
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Errorf("walking %s: %v", dir, err)
	}
	return files
}

// prodDiagnostics logs what explains a failed production run: the objects as vmd sees them,
// the end of the guest's serial console, the domain XML and libvirt's qemu log.
func prodDiagnostics(t *testing.T, l *lab.Lab, h *vmdHarness, domain, instanceDir string) {
	ctx := context.Background()
	for _, args := range [][]string{{"describe", "vmi", "vm-production"}, {"get", "vmd", "-o", "yaml"}, {"events"}} {
		out, err := h.Vmctl(args...)
		t.Logf("vmctl %s (%v):\n%s", strings.Join(args, " "), err, out)
	}
	if b, err := os.ReadFile(filepath.Join(instanceDir, "serial.log")); err == nil {
		lines := strings.Split(string(b), "\n")
		t.Logf("serial.log (last 80 of %d lines):\n%s", len(lines), strings.Join(lines[max(0, len(lines)-80):], "\n"))
	}
	if out, err := l.Virsh(ctx, "dumpxml", domain); err == nil {
		t.Logf("virsh dumpxml %s:\n%s", domain, out)
	}
	if b, err := os.ReadFile(filepath.Join(l.Dir, "libvirt", "log", "qemu", domain+".log")); err == nil {
		t.Logf("qemu log:\n%s", b)
	}
	if out, err := exec.CommandContext(ctx, "ls", "-lR", filepath.Join(h.StateDir)).CombinedOutput(); err == nil {
		t.Logf("state dir:\n%s", out)
	}
}
