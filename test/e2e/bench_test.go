//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"libvirt.org/go/libvirtxml"
	yaml "sigs.k8s.io/yaml/goyaml.v3"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/cloudinit"
	"github.com/vmdhq/vmd/internal/hypervisor"
	"github.com/vmdhq/vmd/test/images"
	"github.com/vmdhq/vmd/test/lab"
)

// Environment of the boot benchmark. It is not part of `make e2e`/CI: one run boots the
// debian12 image 3×(rounds+1) times under TCG, about a minute each.
const (
	// benchEnv must be "1" for TestBootBenchmark to run (`make bench-boot` sets it).
	benchEnv = "VMD_BENCH"
	// benchRoundsEnv is the number of measured rounds (default 3); each round boots once
	// with every method.
	benchRoundsEnv = "VMD_BENCH_ROUNDS"
	// benchOutEnv names a file the markdown table is written to. The guests' serial console
	// logs (up to SSH-ready) are kept beside it, in <file without .md>-consoles/<guest>.log,
	// to see where a boot spent its time.
	benchOutEnv = "VMD_BENCH_OUT"
)

const (
	// benchUser is the debian12 image's cloud-init default user (Debian's cloud.cfg). With
	// sshKeys and no cloudInit, vmd's user-data is a bare ssh_authorized_keys list, which
	// cloud-init gives to that user; the baselines get the same user-data.
	benchUser = "debian"
	// benchInstanceType and benchProfile size and shape the guest. "linux" is a BIOS, virtio
	// profile: the lab image boots with extlinux from its MBR, so an EFI profile (debian) cannot
	// boot it. u1.nano (1 vCPU, 512 MiB) is what TestLab boots the same image with.
	benchInstanceType = "u1.nano"
	benchProfile      = "linux"
	// benchDiskSize is the VMDisk size: the smallest the debian-12 golden image allows. The
	// baselines' overlays get the same virtual size, so every guest's cloud-init grows its root
	// partition and filesystem by the same amount on first boot.
	benchDiskSize = "4Gi"
	// Timeouts are generous: other tests share this 2-core TCG machine and have been seen to
	// slow a debian12 boot from 45 s to 130 s.
	benchRunningTimeout = 2 * time.Minute
	benchSSHTimeout     = 8 * time.Minute
)

// bootSample is one measured boot. Both durations count from just before the method's first
// command (vmctl apply, virsh define, virt-install) was started.
type bootSample struct {
	// Running is when `virsh domstate` first reported "running".
	Running time.Duration
	// SSHD is when the guest's serial console first showed systemd's "Started ssh.service": the
	// guest side of SSH-ready, independent of the network path to the guest.
	SSHD time.Duration
	// SSH is when an SSH login as benchUser with the lab's key to the guest's address, from the
	// lab namespace, first ran `true` successfully.
	SSH time.Duration
}

// vmdDetail is what vmd's own log and the VMDisk tell about one vmd boot: not part of the
// compared figures, it shows where vmd's share of apply→running goes.
type vmdDetail struct {
	// DiskReady is `vmctl apply` of the VMDisk → condition Ready (before the measured apply).
	DiskReady time.Duration
	// Defined and Started are the libvirt lifecycle events vmd logs (domain defined, domain
	// started), relative to the start of the measured apply; zero when not found in the log.
	Defined, Started time.Duration
}

// bootMethod is one way of booting the guest. boot prepares what the method needs (outside the
// measurement), measures, and leaves the guest running; cleanup removes it.
type bootMethod struct {
	name    string
	label   string // for the table
	boot    func(ctx context.Context, name string, round int) (bootSample, error)
	cleanup func(ctx context.Context, name string) error
	samples []bootSample
}

// TestBootBenchmark measures, in one lab and one run, how long the lab's debian12 image takes
// from "the user asks for a VM" to (a) a running domain and (b) an SSH login, booted three ways:
//
//   - vmd: `vmctl apply -f` of a VMInstance (u1.nano, profile linux, sshKeys) whose system
//     VMDisk from the golden image debian-12 was applied and became Ready just before (a fresh
//     overlay per round, like the baselines' overlays; its time is reported apart). Included:
//     vmctl, the API, reconcile, the tenant network (bridge, tap, firewall, DHCP lease), the
//     NoCloud seed ISO, the domain XML, define and start. SSH goes to the VM's private address.
//   - virsh: the domain XML vmd produced in the warm-up (`virsh dumpxml --inactive`) with its
//     own name, no uuid and no vmd metadata, its own overlay (same base, same virtual size), its
//     own seed ISO (vmd's user-data verbatim, meta-data of the same shape with its own
//     instance-id and hostname, a static address on the lab bridge), and a NIC on the lab
//     bridge: `virsh define` then `virsh start`. Everything is prepared before the clock starts:
//     this is the floor for "the same domain through libvirt".
//   - virt-install: `virt-install --import --cloud-init user-data=,meta-data=,network-config=`
//     with the same seed documents as the virsh baseline, the same memory and vCPUs, the same
//     kind of overlay, the lab bridge, `--noautoconsole` and the lab's domain type. virt-install
//     builds its own seed ISO and XML. It runs with `--machine pc`: it attaches the seed as a
//     CD-ROM on the machine's default bus, SATA on q35, and Debian's cloud kernel has no AHCI
//     driver (it does have ata_piix, the IDE of the pc machine).
//
// A warm-up boot per method comes first and is not counted (it pulls the golden image into
// vmd's cache, warms the page cache and provides vmd's XML and seed for the virsh baseline).
// Then, for VMD_BENCH_ROUNDS rounds (default 3), every method boots once, one guest at a time,
// the order rotating each round; each guest is removed before the next boot. The three never
// share a name, an overlay, a seed ISO, a MAC or an IP. The table goes to the test log
// (SUMMARY line) and, as markdown, to VMD_BENCH_OUT.
func TestBootBenchmark(t *testing.T) {
	if os.Getenv(benchEnv) != "1" {
		t.Skipf("boot benchmark: set %s=1 to run it (make bench-boot)", benchEnv)
	}
	if reason := lab.HostProblem(); reason != "" {
		t.Skipf("vmd lab unavailable: %s", reason)
	}
	rounds, err := benchRounds(os.Getenv(benchRoundsEnv))
	if err != nil {
		t.Fatal(err)
	}
	virtInstall, err := exec.LookPath("virt-install")
	if err != nil {
		t.Skipf("boot benchmark: %v (install the virtinst package: hack/deps.sh --bench)", err)
	}
	start := time.Now()
	loadBefore := loadAverage()
	l := lab.New(t, lab.Options{Images: []images.Name{images.Debian12}, Logf: t.Logf})
	ctx := t.Context()
	domainType, err := l.DomainType(ctx)
	if err != nil {
		t.Fatalf("deciding domain type: %v", err)
	}
	b := &bootBench{t: t, l: l, domainType: domainType, virtInstall: virtInstall,
		dir: filepath.Join(l.Dir, "bench"), details: map[string]vmdDetail{}}
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out := os.Getenv(benchOutEnv); out != "" {
		b.consoleDir = strings.TrimSuffix(out, ".md") + "-consoles"
		if err := os.MkdirAll(b.consoleDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b.startVMD()
	// virt-install writes its seed ISO into /var/lib/libvirt/boot, which a stock libvirt
	// package creates and the lab's private /var/lib/libvirt lacks.
	if _, err := l.Run(ctx, lab.InLab, "mkdir", "-p", "/var/lib/libvirt/boot"); err != nil {
		t.Fatal(err)
	}

	methods := []*bootMethod{
		{name: "vmd", label: "vmd: `vmctl apply -f` VMInstance", boot: b.bootVMD, cleanup: b.deleteVMD},
		{name: "virsh", label: "`virsh define` + `virsh start` (vmd's XML)", boot: b.bootVirsh, cleanup: b.destroyBaseline},
		{name: "virt-install", label: "`virt-install --import --cloud-init`", boot: b.bootVirtInstall, cleanup: b.destroyBaseline},
	}
	// Round 0 is the warm-up; vmd goes first because the virsh baseline needs its XML.
	for round := 0; round <= rounds; round++ {
		for i := range methods {
			m := methods[(i+max(round-1, 0))%len(methods)]
			name := fmt.Sprintf("bench-%s-r%d", m.name, round)
			if round == 0 {
				name = fmt.Sprintf("bench-%s-warmup", m.name)
			}
			s, err := m.boot(ctx, name, round)
			if err != nil {
				t.Fatalf("%s, round %d: %v", m.name, round, err)
			}
			t.Logf("round %d %-12s running %6.2fs  sshd started %6.1fs  ssh %6.1fs",
				round, m.name, s.Running.Seconds(), s.SSHD.Seconds(), s.SSH.Seconds())
			if round > 0 {
				m.samples = append(m.samples, s)
			}
			if err := m.cleanup(ctx, name); err != nil {
				t.Fatalf("%s, round %d: removing %s: %v", m.name, round, name, err)
			}
		}
	}
	loadAfter := loadAverage()

	report := b.report(methods, rounds, loadBefore, loadAfter)
	t.Logf("\n%s", report)
	if out := os.Getenv(benchOutEnv); out != "" {
		if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
			t.Errorf("writing %s: %v", out, err)
		} else {
			t.Logf("table written to %s", out)
		}
	}
	vmd, virsh, vi := methods[0], methods[1], methods[2]
	run := func(m *bootMethod) time.Duration {
		return median(m.samples, func(s bootSample) time.Duration { return s.Running })
	}
	ssh := func(m *bootMethod) time.Duration {
		return median(m.samples, func(s bootSample) time.Duration { return s.SSH })
	}
	sshd := func(m *bootMethod) time.Duration {
		return median(m.samples, func(s bootSample) time.Duration { return s.SSHD })
	}
	t.Logf("SUMMARY boot bench: %s, %d rounds, debian12; apply->running median vmd %.2fs virsh %.2fs virt-install %.2fs; "+
		"apply->ssh median vmd %.1fs virsh %.1fs virt-install %.1fs (sshd started %.1fs %.1fs %.1fs); "+
		"vmd/virsh running %.2f ssh %.2f; vmd/virt-install running %.2f ssh %.2f; load %s -> %s; total %.0fs",
		domainType, rounds, run(vmd).Seconds(), run(virsh).Seconds(), run(vi).Seconds(),
		ssh(vmd).Seconds(), ssh(virsh).Seconds(), ssh(vi).Seconds(), sshd(vmd).Seconds(), sshd(virsh).Seconds(), sshd(vi).Seconds(),
		ratio(run(vmd), run(virsh)), ratio(ssh(vmd), ssh(virsh)),
		ratio(run(vmd), run(vi)), ratio(ssh(vmd), ssh(vi)), loadBefore, loadAfter, time.Since(start).Seconds())
}

// bootBench holds the lab, vmd and what the baselines copy from vmd's warm-up boot.
type bootBench struct {
	t           *testing.T
	l           *lab.Lab
	domainType  string
	virtInstall string
	dir         string // baselines' files: <dir>/<name>/
	consoleDir  string // where console logs are kept; "" = nowhere

	h      *vmdHarness
	vmdLog string

	// From vmd's warm-up boot: its inactive domain XML, where its system disk and seed were,
	// its seed documents, and the system disk's virtual size.
	template              *libvirtxml.Domain
	vmdDisk, vmdSeed      string
	userData, networkYAML []byte
	diskSize              int64

	details map[string]vmdDetail // vmd boots by VM name
}

// startVMD starts vmd in the lab with tenant networking (uplink vmdlab-up, as TestVMInstance)
// and the lab's image server as golden-image mirror (as TestVMDisk).
func (b *bootBench) startVMD() {
	t, l := b.t, b.l
	serveGoldenDebian12(t, l)
	cfg := filepath.Join(l.Dir, "vmd.yaml")
	// A short shutdown timeout only speeds up the deletes between boots; they are not timed.
	if err := os.WriteFile(cfg, []byte("instances:\n  shutdownTimeout: 5s\nnetwork:\n  uplink: vmdlab-up\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b.h = newVMD(t, l, "--config", cfg, "--image-mirror", l.HTTPBase)
	b.vmdLog = b.h.Start("vmd").LogPath
}

// bootVMD applies a fresh system VMDisk and waits until it is Ready, then measures `vmctl apply`
// of the VMInstance. The warm-up boot also captures what the virsh baseline reuses.
func (b *bootBench) bootVMD(ctx context.Context, name string, round int) (bootSample, error) {
	t, h := b.t, b.h
	disk := name + "-system"
	diskYAML := fmt.Sprintf(`apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: %s
spec:
  source:
    image:
      name: debian-12
  storage: %s
  storageClass: local
`, disk, benchDiskSize)
	vmYAML := fmt.Sprintf(`apiVersion: apps.cozystack.io/v1alpha1
kind: VMInstance
metadata:
  name: %s
spec:
  runStrategy: Always
  instanceType: %s
  instanceProfile: %s
  disks:
  - %s
  sshKeys:
  - %q
`, name, benchInstanceType, benchProfile, disk, strings.TrimSpace(b.l.SSHAuthorizedKey))
	diskFile, vmFile := filepath.Join(b.dir, disk+".yaml"), filepath.Join(b.dir, name+".yaml")
	if err := os.WriteFile(diskFile, []byte(diskYAML), 0o600); err != nil {
		return bootSample{}, err
	}
	if err := os.WriteFile(vmFile, []byte(vmYAML), 0o600); err != nil {
		return bootSample{}, err
	}
	began := time.Now()
	if _, err := h.Vmctl("apply", "-f", diskFile); err != nil {
		return bootSample{}, err
	}
	if _, err := h.Vmctl("wait", "vmd/"+disk, "--for=condition=Ready", "--timeout=5m"); err != nil {
		return bootSample{}, err
	}
	diskReady := time.Since(began)

	domain := hypervisor.LibvirtName(v1alpha1.DefaultNamespace, name)
	instDir := filepath.Join(h.StateDir, "instances", v1alpha1.DefaultNamespace, name)
	console := filepath.Join(instDir, "serial.log")
	t0 := time.Now()
	if _, err := h.Vmctl("apply", "-f", vmFile); err != nil {
		return bootSample{}, err
	}
	var s bootSample
	var err error
	if s.Running, err = b.waitRunning(ctx, domain, t0); err != nil {
		return s, err
	}
	var addr netip.Addr
	err = benchPoll(ctx, time.Minute, 100*time.Millisecond, func() error {
		var vm v1alpha1.VMInstance
		out, err := h.Vmctl("get", "vmi", name, "-o", "json")
		if err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(out), &vm); err != nil {
			return err
		}
		for _, a := range vm.Status.Addresses {
			if a.Type == "Private" {
				addr, err = netip.ParseAddr(a.Address)
				return err
			}
		}
		return fmt.Errorf("no private address in status %+v", vm.Status.Addresses)
	})
	if err != nil {
		return s, fmt.Errorf("vmd VM %s: %w", name, err)
	}
	s.SSHD, s.SSH, err = b.waitSSH(ctx, domain, addr, console, t0)
	b.keepConsole(name, console)
	if err != nil {
		return s, err
	}
	d := vmdDetail{DiskReady: diskReady}
	d.Defined, d.Started = vmdEvents(b.vmdLog, domain, t0)
	b.details[name] = d
	t.Logf("vmd %s at %s: VMDisk apply->Ready %.2fs; apply->domain defined %.2fs, ->started %.2fs (vmd log)",
		name, addr, diskReady.Seconds(), d.Defined.Seconds(), d.Started.Seconds())

	if round == 0 {
		if err := b.captureTemplate(ctx, name, disk, domain, instDir); err != nil {
			return s, fmt.Errorf("capturing vmd's domain for the virsh baseline: %w", err)
		}
	}
	return s, nil
}

// captureTemplate keeps vmd's persistent domain XML, the paths of its system disk and seed, its
// seed documents and the system disk's virtual size, for the baselines.
func (b *bootBench) captureTemplate(ctx context.Context, name, disk, domain, instDir string) error {
	xml, err := b.l.Virsh(ctx, "dumpxml", "--inactive", domain)
	if err != nil {
		return err
	}
	b.template = &libvirtxml.Domain{}
	if err := b.template.Unmarshal(xml); err != nil {
		return fmt.Errorf("parsing vmd's domain XML: %w", err)
	}
	var vd v1alpha1.VMDisk
	out, err := b.h.Vmctl("get", "vmd", disk, "-o", "json")
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), &vd); err != nil {
		return err
	}
	b.vmdDisk = vd.Status.Path
	info, err := qemuInfo(ctx, b.vmdDisk)
	if err != nil {
		return err
	}
	b.diskSize = info.VirtualSize
	b.vmdSeed = filepath.Join(instDir, "cidata.iso")
	f, err := os.Open(b.vmdSeed)
	if err != nil {
		return err
	}
	defer f.Close()
	files, _, err := cloudinit.ReadISO(f)
	if err != nil {
		return fmt.Errorf("reading vmd's seed %s: %w", b.vmdSeed, err)
	}
	b.userData, b.networkYAML = files[cloudinit.UserDataFile], files[cloudinit.NetworkConfigFile]
	if len(b.userData) == 0 || len(b.networkYAML) == 0 {
		return fmt.Errorf("vmd's seed of %s has no user-data or network-config: files %v", name, slices.Sorted(maps.Keys(files)))
	}
	b.t.Logf("vmd's domain %s: %d MiB, %d vCPU, machine %s, disk %s (%d bytes virtual), seed %s",
		domain, b.template.Memory.Value>>10, b.template.VCPU.Value, b.template.OS.Type.Machine, b.vmdDisk, b.diskSize, b.vmdSeed)
	return nil
}

// deleteVMD deletes the VMInstance (waiting until its domain and files are gone) and its disk.
func (b *bootBench) deleteVMD(_ context.Context, name string) error {
	if _, err := b.h.Vmctl("delete", "vmi", name, "--timeout=2m"); err != nil {
		return err
	}
	_, err := b.h.Vmctl("delete", "vmd", name+"-system")
	return err
}

// baseline is what one virsh or virt-install boot gets: its own directory, overlay, seed
// documents, MAC and static address on the lab bridge.
type baseline struct {
	dir, overlay, console string
	ip                    netip.Addr
	mac                   string
	seed                  cloudinit.Seed
}

// prepareBaseline creates a baseline guest's overlay (same base image and virtual size as vmd's
// system disk) and its seed: vmd's user-data verbatim, meta-data as vmd renders it with the
// guest's own instance-id and hostname, and vmd's network-config with the guest's MAC, a static
// address in lab.Network and the lab gateway. Addresses: virsh .20+round, virt-install
// .40+round.
func (b *bootBench) prepareBaseline(ctx context.Context, name string, hostByte int) (*baseline, error) {
	if b.template == nil {
		return nil, fmt.Errorf("no template: vmd's warm-up boot did not run")
	}
	bl := &baseline{dir: filepath.Join(b.dir, name)}
	if err := os.MkdirAll(bl.dir, 0o755); err != nil {
		return nil, err
	}
	bl.overlay = filepath.Join(bl.dir, "disk.qcow2")
	bl.console = filepath.Join(bl.dir, "console.log")
	a := lab.Network.Addr().As4()
	a[3] = byte(hostByte)
	bl.ip = netip.AddrFrom4(a)
	bl.mac = fmt.Sprintf("52:54:00:77:%02x:%02x", a[2], a[3])
	base := b.l.Images[images.Debian12].Path(images.DiskFile)
	if _, err := b.l.Run(ctx, lab.InLab, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2",
		bl.overlay, strconv.FormatInt(b.diskSize, 10)); err != nil {
		return nil, err
	}
	var nc cloudinit.NetworkConfig
	if err := yaml.Unmarshal(b.networkYAML, &nc); err != nil {
		return nil, fmt.Errorf("parsing vmd's network-config: %w", err)
	}
	if len(nc.Ethernets) != 1 {
		return nil, fmt.Errorf("vmd's network-config has %d ethernets, want 1", len(nc.Ethernets))
	}
	for id, e := range nc.Ethernets {
		e.Match = &cloudinit.Match{MACAddress: bl.mac}
		e.Addresses = []netip.Prefix{netip.PrefixFrom(bl.ip, lab.Network.Bits())}
		e.Routes = []cloudinit.Route{cloudinit.DefaultRoute(lab.Gateway)}
		e.Nameservers = &cloudinit.Nameservers{Addresses: []netip.Addr{lab.Gateway}}
		nc.Ethernets[id] = e
	}
	bl.seed = cloudinit.Seed{
		InstanceID:   hypervisor.StableUUID(v1alpha1.DefaultNamespace, name, ""),
		Hostname:     name,
		InstanceType: benchInstanceType,
		PublicKeys:   []string{strings.TrimSpace(b.l.SSHAuthorizedKey)},
		UserData:     string(b.userData),
		Network:      &nc,
	}
	return bl, nil
}

// bootVirsh defines vmd's domain XML, adjusted to the baseline's own files and NIC, with `virsh
// define` and starts it with `virsh start`.
func (b *bootBench) bootVirsh(ctx context.Context, name string, round int) (bootSample, error) {
	bl, err := b.prepareBaseline(ctx, name, 20+round)
	if err != nil {
		return bootSample{}, err
	}
	seedISO := filepath.Join(bl.dir, "seed.iso")
	if err := cloudinit.WriteISOFile(seedISO, bl.seed); err != nil {
		return bootSample{}, err
	}
	xml, err := b.baselineXML(name, bl, seedISO)
	if err != nil {
		return bootSample{}, err
	}
	xmlPath := filepath.Join(bl.dir, "domain.xml")
	if err := os.WriteFile(xmlPath, []byte(xml), 0o644); err != nil {
		return bootSample{}, err
	}

	t0 := time.Now()
	if _, err := b.l.Virsh(ctx, "define", xmlPath); err != nil {
		return bootSample{}, err
	}
	if _, err := b.l.Virsh(ctx, "start", name); err != nil {
		return bootSample{}, err
	}
	return b.measureBaseline(ctx, name, bl, t0)
}

// baselineXML is vmd's domain with the baseline's name, no uuid (libvirt makes one), no title
// or vmd metadata (vmd would otherwise treat it as its own), the baseline's overlay and seed in
// place of vmd's disk and seed, its serial log and VNC socket in its own directory, and a NIC
// on the lab bridge with its own MAC instead of vmd's tap. It fails if anything of vmd's is
// left, so the baseline can share no state with vmd.
func (b *bootBench) baselineXML(name string, bl *baseline, seedISO string) (string, error) {
	orig, err := b.template.Marshal()
	if err != nil {
		return "", err
	}
	d := &libvirtxml.Domain{}
	if err := d.Unmarshal(orig); err != nil {
		return "", err
	}
	d.Name, d.UUID, d.Title, d.Description, d.Metadata = name, "", "", "", nil
	for i := range d.Devices.Disks {
		src := d.Devices.Disks[i].Source
		if src == nil || src.File == nil {
			continue
		}
		switch src.File.File {
		case b.vmdDisk:
			src.File.File = bl.overlay
		case b.vmdSeed:
			src.File.File = seedISO
		default:
			return "", fmt.Errorf("vmd's domain has a disk %s the benchmark does not know", src.File.File)
		}
	}
	if len(d.Devices.Interfaces) != 1 {
		return "", fmt.Errorf("vmd's domain has %d NICs, want 1", len(d.Devices.Interfaces))
	}
	nic := &d.Devices.Interfaces[0]
	nic.Source = &libvirtxml.DomainInterfaceSource{Bridge: &libvirtxml.DomainInterfaceSourceBridge{Bridge: b.l.Bridge}}
	nic.Target = nil
	nic.MAC = &libvirtxml.DomainInterfaceMAC{Address: bl.mac}
	for i := range d.Devices.Serials {
		if d.Devices.Serials[i].Log != nil {
			d.Devices.Serials[i].Log.File = bl.console
		}
	}
	for i := range d.Devices.Consoles {
		if d.Devices.Consoles[i].Log != nil {
			d.Devices.Consoles[i].Log.File = bl.console
		}
	}
	for i := range d.Devices.Graphics {
		if vnc := d.Devices.Graphics[i].VNC; vnc != nil && vnc.Socket != "" {
			vnc.Socket = filepath.Join(bl.dir, "vnc.sock")
			for j := range vnc.Listeners {
				if vnc.Listeners[j].Socket != nil {
					vnc.Listeners[j].Socket.Socket = vnc.Socket
				}
			}
		}
	}
	out, err := d.Marshal()
	if err != nil {
		return "", err
	}
	for _, vmds := range []string{b.h.StateDir, "vmt-", "vmd:"} {
		if strings.Contains(out, vmds) {
			return "", fmt.Errorf("baseline XML still refers to vmd (%q):\n%s", vmds, out)
		}
	}
	return out, nil
}

// bootVirtInstall runs virt-install inside the lab (so the seed ISO it writes to
// /var/lib/libvirt/boot is where the lab's libvirtd and qemu see it) with the baseline's seed
// documents as files.
func (b *bootBench) bootVirtInstall(ctx context.Context, name string, round int) (bootSample, error) {
	bl, err := b.prepareBaseline(ctx, name, 40+round)
	if err != nil {
		return bootSample{}, err
	}
	md, err := bl.seed.MetaData()
	if err != nil {
		return bootSample{}, err
	}
	nc, err := bl.seed.NetworkConfigBytes()
	if err != nil {
		return bootSample{}, err
	}
	docs := map[string][]byte{
		cloudinit.MetaDataFile:      md,
		cloudinit.UserDataFile:      bl.seed.UserDataBytes(),
		cloudinit.NetworkConfigFile: nc,
	}
	var ci []string
	for _, f := range []string{cloudinit.UserDataFile, cloudinit.MetaDataFile, cloudinit.NetworkConfigFile} {
		p := filepath.Join(bl.dir, f)
		if err := os.WriteFile(p, docs[f], 0o644); err != nil {
			return bootSample{}, err
		}
		ci = append(ci, f+"="+p)
	}
	args := []string{"--connect", b.l.URI, "--name", name,
		"--memory", strconv.FormatUint(uint64(domainMemoryMiB(b.template)), 10),
		"--vcpus", strconv.FormatUint(uint64(b.template.VCPU.Value), 10),
		"--import", "--disk", "path=" + bl.overlay + ",format=qcow2,bus=virtio",
		"--cloud-init", strings.Join(ci, ","),
		"--network", "bridge=" + b.l.Bridge + ",model=virtio,mac=" + bl.mac,
		// osinfo-db 20221130 (Debian 12) predates debian12; debian11 gives the same virtio
		// defaults.
		"--osinfo", "debian11",
		"--machine", "pc",
		"--virt-type", b.domainType,
		"--rng", "/dev/urandom",
		"--graphics", "vnc,listen=socket",
		"--serial", "pty,log.file=" + bl.console,
		"--noautoconsole",
	}

	t0 := time.Now()
	if out, err := b.l.Run(ctx, lab.InLab, b.virtInstall, args...); err != nil {
		return bootSample{}, fmt.Errorf("%w\n%s", err, out)
	}
	return b.measureBaseline(ctx, name, bl, t0)
}

// measureBaseline waits for a baseline guest to run and to accept SSH.
func (b *bootBench) measureBaseline(ctx context.Context, name string, bl *baseline, t0 time.Time) (bootSample, error) {
	var s bootSample
	var err error
	if s.Running, err = b.waitRunning(ctx, name, t0); err != nil {
		return s, err
	}
	s.SSHD, s.SSH, err = b.waitSSH(ctx, name, bl.ip, bl.console, t0)
	b.keepConsole(name, bl.console)
	return s, err
}

// keepConsole copies a guest's console log into consoleDir, if there is one. vmd removes its
// copy with the VMInstance, and the lab's directory goes with the lab.
func (b *bootBench) keepConsole(name, console string) {
	if b.consoleDir == "" {
		return
	}
	data, err := os.ReadFile(console)
	if err == nil {
		err = os.WriteFile(filepath.Join(b.consoleDir, name+".log"), data, 0o644)
	}
	if err != nil {
		b.t.Logf("keeping the console log of %s: %v", name, err)
	}
}

// destroyBaseline destroys and undefines a baseline domain and removes its overlay.
func (b *bootBench) destroyBaseline(ctx context.Context, name string) error {
	if _, err := b.l.Virsh(ctx, "destroy", name); err != nil {
		return err
	}
	if _, err := b.l.Virsh(ctx, "undefine", name); err != nil {
		return err
	}
	return os.Remove(filepath.Join(b.dir, name, "disk.qcow2"))
}

// waitRunning polls `virsh domstate` until the domain is running and returns the time since t0.
func (b *bootBench) waitRunning(ctx context.Context, domain string, t0 time.Time) (time.Duration, error) {
	var at time.Duration
	err := benchPoll(ctx, benchRunningTimeout, 50*time.Millisecond, func() error {
		out, err := b.l.Virsh(ctx, "domstate", domain)
		if err != nil {
			return err
		}
		if state := strings.TrimSpace(out); state != "running" {
			return fmt.Errorf("domain %s is %q", domain, state)
		}
		at = time.Since(t0)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("waiting for domain %s to run: %w", domain, err)
	}
	return at, nil
}

// waitSSH logs in as benchUser with the lab key from the lab namespace until `true` runs, and
// returns the time since t0, and when the console first showed that sshd was started. It gives
// up early, with the console tail, if the domain stops.
func (b *bootBench) waitSSH(ctx context.Context, domain string, ip netip.Addr, console string, t0 time.Time) (sshd, ssh time.Duration, _ error) {
	addr := netip.AddrPortFrom(ip, 22)
	var at time.Duration
	lastCheck := time.Now()
	sshdSeen := watchConsole(ctx, console, sshdStarted, t0)
	err := benchPoll(ctx, benchSSHTimeout, 200*time.Millisecond, func() error {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		c, err := b.l.SSH(actx, lab.InLab, addr, benchUser)
		if err == nil {
			_, err = lab.SSHRun(actx, c, "true")
			c.Close()
		}
		if err == nil {
			at = time.Since(t0)
			return nil
		}
		if time.Since(lastCheck) > 5*time.Second {
			lastCheck = time.Now()
			if out, verr := b.l.Virsh(ctx, "domstate", domain); verr == nil && strings.TrimSpace(out) != "running" {
				return &benchFatal{fmt.Errorf("domain %s is %s", domain, strings.TrimSpace(out))}
			}
		}
		return err
	})
	if err != nil {
		sshdSeen()
		return 0, 0, fmt.Errorf("ssh %s@%s (%s): %w; console:\n%s", benchUser, addr, domain, err, benchTail(console, 30))
	}
	return sshdSeen(), at, nil
}

// sshdStarted is what systemd prints on the serial console (after removing colour escapes) when
// the SSH server has started.
const sshdStarted = "Started ssh.service"

// ansiEscape matches the colour sequences systemd writes to the console.
var ansiEscape = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)

// watchConsole polls the console log every 100 ms for marker. The returned func stops the
// watch and returns when marker was first seen, relative to t0; it reads the log once more
// itself, so a marker written just before the call still counts, and returns 0 if it never
// appeared.
func watchConsole(ctx context.Context, path, marker string, t0 time.Time) func() time.Duration {
	seen := func() bool {
		b, err := os.ReadFile(path)
		return err == nil && strings.Contains(ansiEscape.ReplaceAllString(string(b), ""), marker)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan time.Duration, 1)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			if seen() {
				done <- time.Since(t0)
				return
			}
			select {
			case <-ctx.Done():
				done <- 0
				return
			case <-tick.C:
			}
		}
	}()
	return func() time.Duration {
		cancel()
		d := <-done
		if d == 0 && seen() {
			d = time.Since(t0)
		}
		return d
	}
}

// benchFatal stops benchPoll at once.
type benchFatal struct{ error }

// benchPoll calls try every interval until it succeeds, returns a *benchFatal, ctx ends or
// timeout passes; it returns nil or the last error.
func benchPoll(ctx context.Context, timeout, interval time.Duration, try func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := try()
		if err == nil {
			return nil
		}
		var fatal *benchFatal
		if errors.As(err, &fatal) {
			return fatal.error
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-time.After(interval):
		}
	}
}

// vmdLogLine matches the slog text lines of vmd's libvirt lifecycle events.
var vmdLogLine = regexp.MustCompile(`^time=(\S+) .*msg="domain event" .*domain=(\S+) type=(\S+)`)

// vmdEvents returns when vmd logged the domain's Defined and Started lifecycle events, relative
// to t0 (zero when absent).
func vmdEvents(logPath, domain string, t0 time.Time) (defined, started time.Duration) {
	f, err := os.Open(logPath)
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		m := vmdLogLine.FindStringSubmatch(sc.Text())
		if m == nil || m[2] != domain {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil || at.Before(t0.Truncate(time.Millisecond)) {
			continue
		}
		switch {
		case m[3] == "Defined" && defined == 0:
			defined = at.Sub(t0)
		case m[3] == "Started" && started == 0:
			started = at.Sub(t0)
		}
	}
	return defined, started
}

// report renders the markdown table of the run.
func (b *bootBench) report(methods []*bootMethod, rounds int, loadBefore, loadAfter string) string {
	run := func(s bootSample) time.Duration { return s.Running }
	sshd := func(s bootSample) time.Duration { return s.SSHD }
	ssh := func(s bootSample) time.Duration { return s.SSH }
	var w strings.Builder
	fmt.Fprintf(&w, "Boot benchmark `TestBootBenchmark`, %s: lab debian12 image, %s (%d MiB, %d vCPU), domain type %s, %d rounds "+
		"(plus one warm-up boot per method, not counted), one guest at a time, order rotating per round.\n"+
		"Host: %s, %d CPUs; load average before %s, after %s.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), benchInstanceType, domainMemoryMiB(b.template), b.template.VCPU.Value,
		b.domainType, rounds, cpuModel(), runtime.NumCPU(), loadBefore, loadAfter)
	w.WriteString("| method | apply → running, median | samples | apply → SSH, median | samples " +
		"| apply → sshd started (console), median | samples |\n|---|---|---|---|---|---|---|\n")
	for _, m := range methods {
		fmt.Fprintf(&w, "| %s | %.2f s | %s | %.1f s | %s | %.1f s | %s |\n", m.label,
			median(m.samples, run).Seconds(), samples(m.samples, run, "%.2f"),
			median(m.samples, ssh).Seconds(), samples(m.samples, ssh, "%.1f"),
			median(m.samples, sshd).Seconds(), samples(m.samples, sshd, "%.1f"))
	}
	w.WriteString("\n| ratio of medians | apply → running | apply → SSH |\n|---|---|---|\n")
	for _, other := range methods[1:] {
		fmt.Fprintf(&w, "| vmd / %s | %.2f | %.2f |\n", other.name,
			ratio(median(methods[0].samples, run), median(other.samples, run)),
			ratio(median(methods[0].samples, ssh), median(other.samples, ssh)))
	}
	w.WriteString("\nvmd per round (not in the figures above: the VMDisk is applied and Ready before the clock starts; " +
		"the domain events are from vmd's log, relative to the VMInstance apply):\n\n" +
		"| round | VMDisk apply → Ready | apply → domain defined | apply → domain started |\n|---|---|---|---|\n")
	for r := 1; r <= rounds; r++ {
		d := b.details[fmt.Sprintf("bench-vmd-r%d", r)]
		fmt.Fprintf(&w, "| %d | %.2f s | %.2f s | %.2f s |\n", r, d.DiskReady.Seconds(), d.Defined.Seconds(), d.Started.Seconds())
	}
	return w.String()
}

// median returns the median of the samples' field (the mean of the two middle ones for an even
// count), or 0 for none.
func median(ss []bootSample, field func(bootSample) time.Duration) time.Duration {
	if len(ss) == 0 {
		return 0
	}
	v := make([]time.Duration, len(ss))
	for i, s := range ss {
		v[i] = field(s)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// samples lists the samples' field in run order, in seconds.
func samples(ss []bootSample, field func(bootSample) time.Duration, format string) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf(format, field(s).Seconds())
	}
	return strings.Join(out, ", ")
}

// ratio is a/b, or 0 when b is 0.
func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// benchRounds parses VMD_BENCH_ROUNDS: 3 when empty; 1 to 19, so that the baselines' addresses
// (.20+round, .40+round) stay apart.
func benchRounds(s string) (int, error) {
	if s == "" {
		return 3, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 19 {
		return 0, fmt.Errorf("%s=%q: want a number of rounds from 1 to 19", benchRoundsEnv, s)
	}
	return n, nil
}

// domainMemoryMiB is the domain's memory in MiB.
func domainMemoryMiB(d *libvirtxml.Domain) uint {
	if d == nil || d.Memory == nil {
		return 0
	}
	switch strings.ToLower(d.Memory.Unit) {
	case "", "k", "kib":
		return d.Memory.Value >> 10
	case "m", "mib":
		return d.Memory.Value
	case "g", "gib":
		return d.Memory.Value << 10
	}
	return 0
}

// loadAverage returns the 1, 5 and 15 minute load averages.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// cpuModel returns the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// benchTail returns the last n lines of a file, for failure messages.
func benchTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestBootBenchmarkHelpers checks the arithmetic and parsing the benchmark's figures rest on. It
// needs neither root nor a lab.
func TestBootBenchmarkHelpers(t *testing.T) {
	s := func(secs ...float64) []bootSample {
		out := make([]bootSample, len(secs))
		for i, v := range secs {
			out[i].SSH = time.Duration(v * float64(time.Second))
		}
		return out
	}
	ssh := func(s bootSample) time.Duration { return s.SSH }
	for _, tc := range []struct {
		name    string
		samples []bootSample
		want    time.Duration
	}{
		{"none", nil, 0},
		{"one", s(7), 7 * time.Second},
		{"odd, unsorted", s(50, 40, 60), 50 * time.Second},
		{"even: mean of the middle two", s(4, 1, 3, 2), 2500 * time.Millisecond},
		{"outlier does not move it", s(40, 41, 400), 41 * time.Second},
	} {
		if got := median(tc.samples, ssh); got != tc.want {
			t.Errorf("median %s: got %s, want %s", tc.name, got, tc.want)
		}
	}

	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{{"", 3, true}, {"1", 1, true}, {"19", 19, true}, {"0", 0, false}, {"20", 0, false}, {"x", 0, false}, {"-2", 0, false}} {
		got, err := benchRounds(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("benchRounds(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}

	for _, tc := range []struct {
		mem  libvirtxml.DomainMemory
		want uint
	}{{libvirtxml.DomainMemory{Value: 524288, Unit: "KiB"}, 512}, {libvirtxml.DomainMemory{Value: 524288}, 512},
		{libvirtxml.DomainMemory{Value: 2, Unit: "GiB"}, 2048}, {libvirtxml.DomainMemory{Value: 1, Unit: "bytes"}, 0}} {
		if got := domainMemoryMiB(&libvirtxml.Domain{Memory: &tc.mem}); got != tc.want {
			t.Errorf("domainMemoryMiB(%+v) = %d, want %d", tc.mem, got, tc.want)
		}
	}

	// vmd's log: events of other domains, events before t0 and repeated events are ignored.
	t0 := time.Date(2026, 11, 22, 7, 41, 27, 500_000_000, time.UTC)
	log := `time=2026-11-22T07:41:20.000Z level=DEBUG msg="domain event" component=domain-events domain=default.vm-instance-a type=Defined detail=added failure=false keys=1
time=2026-11-22T07:41:27.570Z level=DEBUG msg="domain event" component=domain-events domain=default.vm-instance-b type=Defined detail=added failure=false keys=1
time=2026-11-22T07:41:27.550Z level=DEBUG msg="domain event" component=domain-events domain=default.vm-instance-a type=Defined detail=added failure=false keys=1
time=2026-11-22T07:41:27.554Z level=INFO msg="starting domain" kind=VMInstance vm=default/a domain=default.vm-instance-a reason="runStrategy is Always"
time=2026-11-22T07:41:28.010Z level=DEBUG msg="domain event" component=domain-events domain=default.vm-instance-a type=Started detail=booted failure=false keys=1
time=2026-11-22T07:41:40.000Z level=DEBUG msg="domain event" component=domain-events domain=default.vm-instance-a type=Started detail=booted failure=false keys=1
`
	path := filepath.Join(t.TempDir(), "vmd.log")
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	defined, started := vmdEvents(path, "default.vm-instance-a", t0)
	if defined != 50*time.Millisecond || started != 510*time.Millisecond {
		t.Errorf("vmdEvents: defined %s, started %s; want 50ms, 510ms", defined, started)
	}
	if d, s := vmdEvents(path, "default.vm-instance-c", t0); d != 0 || s != 0 {
		t.Errorf("vmdEvents of an absent domain: %s, %s; want 0, 0", d, s)
	}
}
