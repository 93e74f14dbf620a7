package hypervisor

import (
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// update regenerates the golden files: go test ./internal/hypervisor -run Golden -update
var update = flag.Bool("update", false, "rewrite testdata/golden/*.xml from the builder's output")

const goldenDir = "testdata/golden"

// mustInstanceType and mustProfile fetch table rows the tests rely on.
func mustInstanceType(t *testing.T, name string) *InstanceType {
	t.Helper()
	it, ok := LookupInstanceType(name)
	if !ok {
		t.Fatalf("instance type %s missing from the table", name)
	}
	return &it
}

func mustProfile(t *testing.T, name string) *Profile {
	t.Helper()
	p, ok := LookupProfile(name)
	if !ok {
		t.Fatalf("profile %s missing from the table", name)
	}
	return &p
}

// spec returns a typical VMInstance domain: one system disk (an overlay
// on a golden image), the
// cloud-init seed, one bridged NIC, a logged serial console and VNC on a
// unix socket. Paths are fixed strings (nothing is opened), so golden
// files are stable.
func spec(t *testing.T, typ, instanceType, profile string) DomainSpec {
	t.Helper()
	s := DomainSpec{
		Name:       DomainName("web"),
		UUID:       StableUUID("tenant-a", "web", ""),
		Namespace:  "tenant-a",
		VMName:     "web",
		UID:        "5f0c8a52-3a49-4d3e-9a43-1c2b3d4e5f60",
		Generation: 3,
		Type:       typ,
		Disks: []DiskSpec{{Path: "/var/lib/vmd/volumes/tenant-a/system.qcow2", Format: DiskFormatQCOW2,
			BackingPath: "/var/lib/vmd/images/ubuntu.qcow2", BackingFormat: DiskFormatQCOW2}},
		CloudInitISO:  "/var/lib/vmd/instances/tenant-a/web/cloud-init.iso",
		NICs:          []NICSpec{{MAC: "52:54:00:6b:3c:01", Bridge: "vmd-br0"}},
		SerialLogPath: "/var/log/vmd/tenant-a/web/serial.log",
		VNCAutoSocket: true,
	}
	if instanceType != "" {
		s.InstanceType = mustInstanceType(t, instanceType)
	}
	if profile != "" {
		s.Profile = mustProfile(t, profile)
		if s.Profile.Firmware == FirmwareEFI {
			s.NVRAMPath = "/var/lib/vmd/instances/tenant-a/web/nvram.fd"
		}
	}
	return s
}

// goldenCases are representative instance types × profiles. Each builds
// testdata/golden/<name>.xml; wantWarnings lists the warnings exactly.
func goldenCases(t *testing.T) []struct {
	name         string
	spec         DomainSpec
	wantWarnings []string
} {
	t.Helper()
	type gc = struct {
		name         string
		spec         DomainSpec
		wantWarnings []string
	}
	var cases []gc
	add := func(name string, s DomainSpec, warnings ...string) {
		cases = append(cases, gc{name: name, spec: s, wantWarnings: warnings})
	}

	add("u1.medium-ubuntu-kvm", spec(t, DomainTypeKVM, "u1.medium", "ubuntu"))
	add("u1.medium-ubuntu-qemu", spec(t, DomainTypeQEMU, "u1.medium", "ubuntu"))

	// Custom sizing (instanceType ""), 2 sockets × 2 cores, EFI without
	// Secure Boot, a raw data disk forced onto SCSI, VNC on loopback.
	s := spec(t, DomainTypeQEMU, "", "debian")
	s.VCPUs, s.Sockets, s.Cores, s.MemoryBytes = 4, 2, 2, 2<<30
	s.Disks = append(s.Disks, DiskSpec{Path: "/var/lib/vmd/volumes/tenant-a/data.raw", Format: DiskFormatRaw, Bus: DiskBusSCSI})
	s.VNCAutoSocket = false
	add("custom-2x2-debian-efi", s)

	// Windows Server 2025 from its install ISO: Secure Boot, SMM, vTPM,
	// Hyper-V, SATA + e1000e, USB tablet.
	s = spec(t, DomainTypeKVM, "s1.large", "windows.2k25")
	s.Disks = append(s.Disks, DiskSpec{Path: "/var/lib/vmd/volumes/tenant-a/win2k25.iso", Format: DiskFormatRaw, Optical: true})
	add("s1.large-windows.2k25", s)

	s = spec(t, DomainTypeKVM, "u1.large", "windows.11.virtio")
	s.Disks = append(s.Disks, DiskSpec{Path: "/var/lib/vmd/volumes/tenant-a/virtio-win.iso", Format: DiskFormatRaw, Optical: true})
	add("u1.large-windows.11.virtio", s)

	s = spec(t, DomainTypeKVM, "m1.large", "ubuntu")
	s.HugepagesAvailable = true
	add("m1.large-ubuntu-hugepages", s)
	add("m1.large1gi-ubuntu-no-hugepages", spec(t, DomainTypeKVM, "m1.large1gi", "ubuntu"),
		"hugepages 1Gi requested by m1.large1gi are not available on this host; guest memory uses ordinary pages")

	add("cx1.medium-ubuntu-shared-host", spec(t, DomainTypeKVM, "cx1.medium", "ubuntu"),
		"hugepages 2Mi requested by cx1.medium are not available on this host; guest memory uses ordinary pages",
		"dedicated CPUs requested by cx1.medium are not available on this host; vCPUs share host CPUs",
		"NUMA passthrough requested by cx1.medium is not applied; the guest sees one NUMA node")

	// The same type on a host that reserved CPUs 6 (vCPU) and 7 (emulator).
	s = spec(t, DomainTypeKVM, "cx1.medium", "ubuntu")
	s.HugepagesAvailable, s.DedicatedCPUsAvailable, s.PinnedCPUs = true, true, []uint{6, 7}
	add("cx1.medium-ubuntu-pinned", s,
		"NUMA passthrough requested by cx1.medium is not applied; the guest sees one NUMA node")

	// One IOThread per disk; the seed gets none.
	s = spec(t, DomainTypeKVM, "u1.large", "centos.stream9")
	s.Disks = append(s.Disks, DiskSpec{Path: "/var/lib/vmd/volumes/tenant-a/data.qcow2", Format: DiskFormatQCOW2})
	add("u1.large-centos.stream9-iothreads", s)

	// No preference: KubeVirt's amd64 defaults (SATA, virtio NIC, BIOS).
	s = spec(t, DomainTypeKVM, "u1.medium", "")
	s.Disks = append(s.Disks, DiskSpec{Path: "/var/lib/vmd/volumes/tenant-a/data.qcow2", Format: DiskFormatQCOW2})
	add("u1.medium-no-profile", s)

	// A SATA profile with an installer ISO first in boot order and the
	// seed on SATA too; the second NIC is a pre-created tap.
	s = spec(t, DomainTypeQEMU, "u1.medium", "legacy")
	s.Disks = []DiskSpec{
		{Path: "/var/lib/vmd/volumes/tenant-a/installer.iso", Format: DiskFormatRaw, Optical: true},
		{Path: "/var/lib/vmd/volumes/tenant-a/system.qcow2", Format: DiskFormatQCOW2},
	}
	s.NICs = append(s.NICs, NICSpec{MAC: "52:54:00:6b:3c:02", TapName: "vmd-tap-web1"})
	add("u1.medium-legacy-optical", s)

	s = spec(t, DomainTypeKVM, "gn1.xlarge", "ubuntu")
	s.GPUs = []PCIAddress{"0000:65:00.0", "0000:b3:00.1"}
	add("gn1.xlarge-ubuntu-gpus", s)

	// Windows Server 2003: rtl8139 and a zero 64-bit PCI hole, BIOS.
	add("u1.medium-windows.2k3", spec(t, DomainTypeKVM, "u1.medium", "windows.2k3"))

	// DPDK: spread 1 socket × 4 cores × 2 threads, one queue per vCPU.
	add("u1.2xlarge-rhel.9.dpdk", spec(t, DomainTypeKVM, "u1.2xlarge", "rhel.9.dpdk"))
	return cases
}

func TestBuildDomainGolden(t *testing.T) {
	for _, tc := range goldenCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			res, err := BuildDomain(tc.spec)
			if err != nil {
				t.Fatalf("BuildDomain: %v", err)
			}
			if !slices.Equal(res.Warnings, tc.wantWarnings) {
				t.Errorf("warnings =\n  %q\nwant\n  %q", res.Warnings, tc.wantWarnings)
			}
			path := filepath.Join(goldenDir, tc.name+".xml")
			if *update {
				if err := os.MkdirAll(goldenDir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(res.XML), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("reading golden file (run with -update to create it): %v", err)
			}
			if res.XML != string(want) {
				t.Errorf("XML differs from %s (run with -update after checking the change):\n%s", path, firstDiff(string(want), res.XML))
			}
			// The XML must read back into the same structure libvirt
			// bindings would see, and marshal to the same text.
			var dom libvirtxml.Domain
			if err := dom.Unmarshal(res.XML); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			again, err := dom.Marshal()
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if again+"\n" != res.XML {
				t.Errorf("XML does not survive a libvirtxml round trip:\n%s", firstDiff(res.XML, again+"\n"))
			}
		})
	}
}

// firstDiff shows the first differing line of two texts.
func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := range max(len(w), len(g)) {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return "line " + strconv.Itoa(i+1) + ":\n  want: " + wl + "\n  got:  " + gl
		}
	}
	return "(no line differs)"
}

// TestGoldenFilesValidate checks every golden file against libvirt's
// domain schema with virt-xml-validate (package libvirt-clients).
func TestGoldenFilesValidate(t *testing.T) {
	validator, err := exec.LookPath("virt-xml-validate")
	if err != nil {
		t.Skip("virt-xml-validate not installed (Debian package libvirt-clients); schema check skipped")
	}
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(goldenCases(t)) {
		t.Fatalf("%d golden files, %d golden cases: stale files or missing -update", len(files), len(goldenCases(t)))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, err := exec.CommandContext(t.Context(), validator, f, "domain").CombinedOutput()
			if err != nil {
				t.Errorf("virt-xml-validate %s: %v\n%s", f, err, out)
			}
		})
	}
}

// parse builds s and parses the XML back.
func parse(t *testing.T, s DomainSpec) (*libvirtxml.Domain, BuildResult) {
	t.Helper()
	res, err := BuildDomain(s)
	if err != nil {
		t.Fatalf("BuildDomain: %v", err)
	}
	dom := &libvirtxml.Domain{}
	if err := dom.Unmarshal(res.XML); err != nil {
		t.Fatalf("Unmarshal: %v\n%s", err, res.XML)
	}
	return dom, res
}

// TestBuildDomainEveryProfile builds every profile with an instance type
// that meets all their requirements (8 vCPUs, 32Gi) and checks the
// profile's choices reached the XML. Profiles for other architectures
// must be refused: vmd builds x86_64 domains.
func TestBuildDomainEveryProfile(t *testing.T) {
	for _, p := range Profiles() {
		t.Run(p.Name, func(t *testing.T) {
			s := spec(t, DomainTypeKVM, "u1.2xlarge", p.Name)
			s.TPMStatePath = ""
			if a := p.Requirements.Architecture; a != "" && a != ArchAMD64 {
				_, err := BuildDomain(s)
				if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "profile") {
					t.Fatalf("BuildDomain(%s profile) error = %v, want an invalid-profile error", a, err)
				}
				return
			}
			dom, _ := parse(t, s)
			if got := dom.OS.Type.Machine; got != "q35" {
				t.Errorf("machine = %q, want q35", got)
			}
			if got := dom.Devices.Disks[0].Target.Bus; got != string(p.DiskBus) {
				t.Errorf("system disk bus = %q, want the profile's %q", got, p.DiskBus)
			}
			seed := dom.Devices.Disks[len(dom.Devices.Disks)-1]
			if seed.Source.File.File != s.CloudInitISO || seed.Boot != nil || seed.ReadOnly == nil {
				t.Errorf("last disk = %+v, want the read-only seed without boot order", seed.Source.File)
			}
			if got := dom.Devices.Interfaces[0].Model.Type; !strings.HasPrefix(got, string(p.NICModel)) {
				t.Errorf("NIC model = %q, want the profile's %q", got, p.NICModel)
			}
			if efi := dom.OS.Loader != nil; efi != (p.Firmware == FirmwareEFI) {
				t.Errorf("EFI loader present = %v, profile firmware %s", efi, p.Firmware)
			}
			if dom.OS.Loader != nil && (dom.OS.Loader.Secure == "yes") != p.SecureBoot {
				t.Errorf("loader secure = %q, profile secureBoot %v", dom.OS.Loader.Secure, p.SecureBoot)
			}
			if smm := dom.Features.SMM != nil; smm != p.SMM {
				t.Errorf("SMM = %v, profile %v", smm, p.SMM)
			}
			if tpm := len(dom.Devices.TPMs) == 1; tpm != p.TPM {
				t.Errorf("TPM = %v, profile %v", tpm, p.TPM)
			}
			if hv := dom.Features.HyperV != nil; hv != (p.HyperV != nil) {
				t.Errorf("Hyper-V = %v, profile %v", hv, p.HyperV != nil)
			}
			if rng := len(dom.Devices.RNGs) == 1; rng != p.RNG {
				t.Errorf("RNG = %v, profile %v", rng, p.RNG)
			}
			if tablet := len(dom.Devices.Inputs) == 1; tablet != p.InputTablet {
				t.Errorf("tablet = %v, profile %v", tablet, p.InputTablet)
			}
			topo := dom.CPU.Topology
			if n := topo.Sockets * topo.Cores * topo.Threads; n != 8 {
				t.Errorf("topology %d×%d×%d = %d vCPUs, want 8", topo.Sockets, topo.Cores, topo.Threads, n)
			}
		})
	}
}

func TestBuildDomainBootOrderAndSeed(t *testing.T) {
	s := spec(t, DomainTypeKVM, "u1.medium", "ubuntu")
	s.Disks = []DiskSpec{
		{Path: "/v/installer.iso", Format: DiskFormatRaw, Optical: true},
		{Path: "/v/system.qcow2", Format: DiskFormatQCOW2},
		{Path: "/v/data.raw", Format: DiskFormatRaw, ReadOnly: true},
		{Path: "/v/sata.qcow2", Format: DiskFormatQCOW2, Bus: DiskBusSATA},
	}
	dom, _ := parse(t, s)
	disks := dom.Devices.Disks
	if len(disks) != 5 {
		t.Fatalf("%d disks, want 4 user disks + seed", len(disks))
	}
	want := []struct {
		path, device, dev, bus string
		readonly               bool
	}{
		{"/v/installer.iso", "cdrom", "sda", "sata", true},
		{"/v/system.qcow2", "disk", "vda", "virtio", false},
		{"/v/data.raw", "disk", "vdb", "virtio", true},
		{"/v/sata.qcow2", "disk", "sdb", "sata", false},
		{s.CloudInitISO, "disk", "vdc", "virtio", true},
	}
	for i, w := range want {
		d := disks[i]
		if d.Source.File.File != w.path || d.Device != w.device || d.Target.Dev != w.dev || d.Target.Bus != w.bus || (d.ReadOnly != nil) != w.readonly {
			t.Errorf("disk %d = {%s %s %s %s ro=%v}, want %+v", i, d.Source.File.File, d.Device, d.Target.Dev, d.Target.Bus, d.ReadOnly != nil, w)
		}
		switch {
		case i < len(s.Disks) && (d.Boot == nil || d.Boot.Order != uint(i+1)):
			t.Errorf("disk %d boot = %+v, want order %d", i, d.Boot, i+1)
		case i == len(s.Disks) && d.Boot != nil:
			t.Errorf("seed has boot order %d; it must never be booted", d.Boot.Order)
		}
	}
	if len(dom.OS.BootDevices) != 0 {
		t.Errorf("<os><boot dev> set; libvirt forbids it beside per-device boot order")
	}
}

func TestCloudInitSeedFollowsProfileBus(t *testing.T) {
	scsiProfile := mustProfile(t, "ubuntu")
	scsiProfile.DiskBus = DiskBusSCSI
	tests := []struct {
		name         string
		profile      *Profile
		device, bus  string
		dev          string
		scsiCtrl     bool
		wantReadOnly bool
	}{
		// Debian's cloud kernel has no AHCI: on virtio profiles the seed
		// must be a virtio disk for the guest to find it.
		{name: "virtio profile", profile: mustProfile(t, "debian"), device: "disk", bus: "virtio", dev: "vdb"},
		{name: "sata profile", profile: mustProfile(t, "windows.2k19"), device: "cdrom", bus: "sata", dev: "sdb"},
		{name: "no profile", profile: nil, device: "cdrom", bus: "sata", dev: "sdb"},
		{name: "scsi profile", profile: scsiProfile, device: "cdrom", bus: "scsi", dev: "sdb", scsiCtrl: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := spec(t, DomainTypeQEMU, "u1.large", "")
			s.Profile = tc.profile
			s.NVRAMPath = "/v/nvram.fd"
			dom, _ := parse(t, s)
			seed := dom.Devices.Disks[len(dom.Devices.Disks)-1]
			if seed.Device != tc.device || seed.Target.Bus != tc.bus || seed.Target.Dev != tc.dev {
				t.Errorf("seed = %s on %s as %s, want %s on %s as %s", seed.Device, seed.Target.Bus, seed.Target.Dev, tc.device, tc.bus, tc.dev)
			}
			if seed.ReadOnly == nil || seed.Driver.Type != DiskFormatRaw {
				t.Errorf("seed readonly=%v format=%s, want read-only raw", seed.ReadOnly != nil, seed.Driver.Type)
			}
			hasCtrl := slices.ContainsFunc(dom.Devices.Controllers, func(c libvirtxml.DomainController) bool {
				return c.Type == "scsi" && c.Model == "virtio-scsi"
			})
			if hasCtrl != tc.scsiCtrl {
				t.Errorf("virtio-scsi controller = %v, want %v", hasCtrl, tc.scsiCtrl)
			}
		})
	}
}

func TestBuildDomainNICs(t *testing.T) {
	s := spec(t, DomainTypeKVM, "u1.medium", "ubuntu")
	s.NICs = []NICSpec{
		{MAC: "52:54:00:AB:CD:EF", Bridge: "br-a"},
		{MAC: "52:54:00:00:00:02", Bridge: "br-b", TapName: "vmd-tap-b"},
		{MAC: "52:54:00:00:00:03", TapName: "vmd-tap-c", Model: NICModelE1000E},
	}
	dom, _ := parse(t, s)
	want := []struct{ mac, bridge, tap, managed, model string }{
		{"52:54:00:ab:cd:ef", "br-a", "", "", "virtio"},
		{"52:54:00:00:00:02", "br-b", "vmd-tap-b", "", "virtio"},
		{"52:54:00:00:00:03", "", "vmd-tap-c", "no", "e1000e"},
	}
	if len(dom.Devices.Interfaces) != len(want) {
		t.Fatalf("%d interfaces, want %d", len(dom.Devices.Interfaces), len(want))
	}
	for i, w := range want {
		n := dom.Devices.Interfaces[i]
		var bridge, tap, managed string
		if n.Source != nil && n.Source.Bridge != nil {
			bridge = n.Source.Bridge.Bridge
		}
		if n.Target != nil {
			tap, managed = n.Target.Dev, n.Target.Managed
		}
		if n.MAC.Address != w.mac || bridge != w.bridge || tap != w.tap || managed != w.managed || n.Model.Type != w.model {
			t.Errorf("nic %d = {%s %s %s %s %s}, want %+v", i, n.MAC.Address, bridge, tap, managed, n.Model.Type, w)
		}
		if w.bridge == "" && (n.Source == nil || n.Source.Ethernet == nil) {
			t.Errorf("nic %d: want type ethernet for a pre-created tap", i)
		}
	}
}

func TestBuildDomainMultiQueue(t *testing.T) {
	s := spec(t, DomainTypeKVM, "u1.2xlarge", "centos.stream9.dpdk")
	s.NICs = append(s.NICs, NICSpec{MAC: "52:54:00:00:00:09", TapName: "vmd-tap-x"})
	dom, res := parse(t, s)
	if d := dom.Devices.Interfaces[0].Driver; d == nil || d.Queues != 8 {
		t.Errorf("bridge NIC driver = %+v, want 8 queues (one per vCPU)", d)
	}
	if d := dom.Devices.Interfaces[1].Driver; d != nil {
		t.Errorf("pre-created tap NIC driver = %+v, want none", d)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "vmd-tap-x") {
		t.Errorf("warnings = %q, want one about the pre-created tap", res.Warnings)
	}
}

func TestBuildDomainTopology(t *testing.T) {
	spread := func(across SpreadAcross, ratio int) *Profile {
		p := mustProfile(t, "linux")
		p.CPUTopology, p.SpreadAcross, p.SpreadRatio = CPUTopologySpread, across, ratio
		return p
	}
	withTopology := func(topo CPUTopology) *Profile {
		p := mustProfile(t, "linux")
		p.CPUTopology = topo
		return p
	}
	tests := []struct {
		name                  string
		instanceType          string
		vcpus, sockets, cores int
		profile               *Profile
		wantS, wantC, wantT   int
		wantErr               string
	}{
		{name: "default sockets", instanceType: "u1.xlarge", profile: mustProfile(t, "ubuntu"), wantS: 4, wantC: 1, wantT: 1},
		{name: "no profile", instanceType: "u1.xlarge", wantS: 4, wantC: 1, wantT: 1},
		{name: "cores", instanceType: "u1.xlarge", profile: withTopology(CPUTopologyCores), wantS: 1, wantC: 4, wantT: 1},
		{name: "threads", instanceType: "u1.xlarge", profile: withTopology(CPUTopologyThreads), wantS: 1, wantC: 1, wantT: 4},
		{name: "any", instanceType: "u1.xlarge", profile: withTopology(CPUTopologyAny), wantS: 4, wantC: 1, wantT: 1},
		{name: "spread sockets cores", instanceType: "u1.2xlarge", profile: spread(SpreadSocketsCores, 2), wantS: 4, wantC: 2, wantT: 1},
		{name: "spread sockets cores threads", instanceType: "u1.2xlarge", profile: spread(SpreadSocketsCoresThreads, 2), wantS: 2, wantC: 2, wantT: 2},
		{name: "spread cores threads", instanceType: "u1.2xlarge", profile: spread(SpreadCoresThreads, 2), wantS: 1, wantC: 4, wantT: 2},
		{name: "spread not divisible", instanceType: "u1.xlarge", profile: mustProfile(t, "rhel.9.dpdk"), wantErr: "vcpus"},
		{name: "custom sockets × cores wins over profile", vcpus: 6, sockets: 3, cores: 2, profile: withTopology(CPUTopologyThreads), wantS: 3, wantC: 2, wantT: 1},
		{name: "custom without topology uses profile", vcpus: 3, profile: withTopology(CPUTopologyCores), wantS: 1, wantC: 3, wantT: 1},
		{name: "custom product mismatch", vcpus: 4, sockets: 3, cores: 2, wantErr: "vcpus"},
		{name: "custom cores without sockets", vcpus: 4, cores: 4, wantErr: "sockets"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := spec(t, DomainTypeQEMU, tc.instanceType, "")
			s.Profile, s.NVRAMPath = tc.profile, "/v/nvram.fd"
			if tc.instanceType == "" {
				s.VCPUs, s.Sockets, s.Cores, s.MemoryBytes = tc.vcpus, tc.sockets, tc.cores, 1<<30
			}
			res, err := BuildDomain(s)
			if tc.wantErr != "" {
				if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want an invalid %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var dom libvirtxml.Domain
			if err := dom.Unmarshal(res.XML); err != nil {
				t.Fatal(err)
			}
			got := dom.CPU.Topology
			if got.Sockets != tc.wantS || got.Cores != tc.wantC || got.Threads != tc.wantT {
				t.Errorf("topology = %d×%d×%d, want %d×%d×%d", got.Sockets, got.Cores, got.Threads, tc.wantS, tc.wantC, tc.wantT)
			}
			if int(dom.VCPU.Value) != got.Sockets*got.Cores*got.Threads {
				t.Errorf("<vcpu> %d does not match the topology", dom.VCPU.Value)
			}
		})
	}
}

func TestBuildDomainCPUModel(t *testing.T) {
	tests := []struct {
		name, typ, model    string
		wantMode, wantModel string
		wantMatch           string
		wantWarning         bool
	}{
		{name: "kvm default", typ: DomainTypeKVM, wantMode: "host-model"},
		{name: "qemu default", typ: DomainTypeQEMU},
		{name: "kvm passthrough", typ: DomainTypeKVM, model: "host-passthrough", wantMode: "host-passthrough"},
		{name: "qemu passthrough", typ: DomainTypeQEMU, model: "host-passthrough", wantWarning: true},
		{name: "qemu host-model", typ: DomainTypeQEMU, model: "host-model", wantWarning: true},
		{name: "qemu maximum", typ: DomainTypeQEMU, model: "maximum", wantMode: "maximum"},
		{name: "kvm named", typ: DomainTypeKVM, model: "Skylake-Server", wantMode: "custom", wantMatch: "exact", wantModel: "Skylake-Server"},
		{name: "qemu named", typ: DomainTypeQEMU, model: "Haswell-noTSX", wantMode: "custom", wantMatch: "exact", wantModel: "Haswell-noTSX"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := spec(t, tc.typ, "u1.medium", "ubuntu")
			s.CPUModel = tc.model
			dom, res := parse(t, s)
			var model, fallback string
			if dom.CPU.Model != nil {
				model, fallback = dom.CPU.Model.Value, dom.CPU.Model.Fallback
			}
			if dom.CPU.Mode != tc.wantMode || dom.CPU.Match != tc.wantMatch || model != tc.wantModel {
				t.Errorf("cpu mode=%q match=%q model=%q, want %q %q %q", dom.CPU.Mode, dom.CPU.Match, model, tc.wantMode, tc.wantMatch, tc.wantModel)
			}
			if model != "" && fallback != "allow" {
				t.Errorf("model fallback = %q, want allow", fallback)
			}
			if got := len(res.Warnings) > 0; got != tc.wantWarning {
				t.Errorf("warnings = %q, want warning %v", res.Warnings, tc.wantWarning)
			}
		})
	}
}

func TestBuildDomainHugepagesAndPinning(t *testing.T) {
	t.Run("1Gi pages", func(t *testing.T) {
		s := spec(t, DomainTypeKVM, "m1.large1gi", "ubuntu")
		s.HugepagesAvailable = true
		dom, res := parse(t, s)
		hp := dom.MemoryBacking.MemoryHugePages.Hugepages
		if len(hp) != 1 || hp[0].Size != 1<<20 || hp[0].Unit != "KiB" {
			t.Errorf("hugepages = %+v, want one 1048576 KiB page size", hp)
		}
		if len(res.Warnings) != 0 {
			t.Errorf("warnings = %q, want none", res.Warnings)
		}
	})
	t.Run("pinned realtime", func(t *testing.T) {
		s := spec(t, DomainTypeKVM, "rt1.large", "ubuntu")
		s.HugepagesAvailable, s.DedicatedCPUsAvailable, s.PinnedCPUs = true, true, []uint{4, 5, 11}
		dom, _ := parse(t, s)
		ct := dom.CPUTune
		if ct == nil || len(ct.VCPUPin) != 2 || ct.VCPUPin[0].CPUSet != "4" || ct.VCPUPin[1].CPUSet != "5" {
			t.Fatalf("cputune = %+v, want vCPU 0→4, 1→5", ct)
		}
		if ct.EmulatorPin == nil || ct.EmulatorPin.CPUSet != "11" {
			t.Errorf("emulatorpin = %+v, want 11", ct.EmulatorPin)
		}
		if len(ct.VCPUSched) != 1 || ct.VCPUSched[0].Scheduler != "fifo" || ct.VCPUSched[0].VCPUs != "0-1" {
			t.Errorf("vcpusched = %+v, want fifo on 0-1", ct.VCPUSched)
		}
	})
	t.Run("no cputune without dedicated CPUs", func(t *testing.T) {
		dom, _ := parse(t, spec(t, DomainTypeKVM, "d1.small", "ubuntu"))
		if dom.CPUTune != nil {
			t.Errorf("cputune = %+v on a host without dedicated CPUs", dom.CPUTune)
		}
	})
}

func TestBuildDomainIOThreads(t *testing.T) {
	threeDisks := []DiskSpec{
		{Path: "/v/a.qcow2", Format: DiskFormatQCOW2},
		{Path: "/v/b.qcow2", Format: DiskFormatQCOW2},
		{Path: "/v/c.qcow2", Format: DiskFormatQCOW2, Bus: DiskBusSATA},
	}
	tests := []struct {
		name, instanceType, profile string
		wantThreads                 uint
		wantDisk                    []uint // per user disk; 0 = none
	}{
		{name: "dedicated per disk", instanceType: "u1.large", profile: "centos.stream9", wantThreads: 2, wantDisk: []uint{1, 2, 0}},
		{name: "none", instanceType: "u1.large", profile: "ubuntu", wantThreads: 0, wantDisk: []uint{0, 0, 0}},
		{name: "auto pool capped by vCPUs", instanceType: "d1.nano", profile: "ubuntu", wantThreads: 2, wantDisk: []uint{1, 2, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := spec(t, DomainTypeKVM, tc.instanceType, tc.profile)
			s.Disks = threeDisks
			dom, _ := parse(t, s)
			if dom.IOThreads != tc.wantThreads {
				t.Errorf("iothreads = %d, want %d", dom.IOThreads, tc.wantThreads)
			}
			for i, want := range tc.wantDisk {
				var got uint
				if p := dom.Devices.Disks[i].Driver.IOThread; p != nil {
					got = *p
				}
				if got != want {
					t.Errorf("disk %d iothread = %d, want %d", i, got, want)
				}
			}
			if seed := dom.Devices.Disks[len(dom.Devices.Disks)-1]; seed.Driver.IOThread != nil {
				t.Errorf("seed has iothread %d", *seed.Driver.IOThread)
			}
		})
	}
	t.Run("shared policy", func(t *testing.T) {
		s := spec(t, DomainTypeKVM, "u1.large", "ubuntu")
		s.InstanceType.IOThreadsPolicy = IOThreadsPolicyShared
		s.Disks = threeDisks
		dom, _ := parse(t, s)
		if dom.IOThreads != 1 || *dom.Devices.Disks[0].Driver.IOThread != 1 || *dom.Devices.Disks[1].Driver.IOThread != 1 {
			t.Errorf("iothreads = %d, want one shared by both virtio disks", dom.IOThreads)
		}
	})
}

func TestBuildDomainDevicesFromProfile(t *testing.T) {
	t.Run("realtime profile drops graphics and balloon", func(t *testing.T) {
		dom, _ := parse(t, spec(t, DomainTypeKVM, "u1.2xlarge", "rhel.9.realtime"))
		if len(dom.Devices.Graphics) != 0 || len(dom.Devices.Videos) != 0 {
			t.Errorf("graphics/video attached despite autoattachGraphicsDevice false")
		}
		if dom.Devices.MemBalloon == nil || dom.Devices.MemBalloon.Model != "none" {
			t.Errorf("memballoon = %+v, want model none", dom.Devices.MemBalloon)
		}
		if len(dom.Devices.Serials) != 1 || len(dom.Devices.Consoles) != 1 {
			t.Errorf("serial console missing")
		}
	})
	t.Run("virtio transitional", func(t *testing.T) {
		dom, _ := parse(t, spec(t, DomainTypeKVM, "u1.medium", "linux.virtiotransitional"))
		if got := dom.Devices.Interfaces[0].Model.Type; got != "virtio-transitional" {
			t.Errorf("NIC model = %q", got)
		}
		if got := dom.Devices.Disks[0].Model; got != "virtio-transitional" {
			t.Errorf("disk model = %q", got)
		}
		if got := dom.Devices.RNGs[0].Model; got != "virtio-transitional" {
			t.Errorf("rng model = %q", got)
		}
	})
	t.Run("golden base named with relabelling off", func(t *testing.T) {
		s := spec(t, DomainTypeKVM, "u1.medium", "ubuntu")
		dom, _ := parse(t, s)
		bs := dom.Devices.Disks[0].BackingStore
		if bs == nil || bs.Format == nil || bs.Format.Type != DiskFormatQCOW2 || bs.Source == nil || bs.Source.File == nil ||
			bs.Source.File.File != "/var/lib/vmd/images/ubuntu.qcow2" || bs.BackingStore == nil ||
			(bs.BackingStore.Source != nil && bs.BackingStore.Source.File != nil) {
			t.Fatalf("backing store = %+v, want the base, qcow2, then the end of the chain", bs)
		}
		if l := bs.Source.File.SecLabel; len(l) != 1 || l[0].Model != "dac" || l[0].Relabel != "no" {
			t.Errorf("base seclabel = %+v, want dac relabel=no", l)
		}
		if dom.Devices.Disks[1].BackingStore != nil {
			t.Errorf("the seed ISO got a backing store: %+v", dom.Devices.Disks[1].BackingStore)
		}
	})
	t.Run("vnc on loopback", func(t *testing.T) {
		s := spec(t, DomainTypeKVM, "u1.medium", "ubuntu")
		s.VNCAutoSocket = false
		dom, _ := parse(t, s)
		vnc := dom.Devices.Graphics[0].VNC
		if vnc.AutoPort != "yes" || len(vnc.Listeners) != 1 || vnc.Listeners[0].Address == nil || vnc.Listeners[0].Address.Address != "127.0.0.1" {
			t.Errorf("vnc = %+v, want autoport on 127.0.0.1", vnc)
		}
	})
	t.Run("vnc on a socket libvirt places", func(t *testing.T) {
		s := spec(t, DomainTypeKVM, "u1.medium", "ubuntu")
		dom, _ := parse(t, s)
		vnc := dom.Devices.Graphics[0].VNC
		if l := vnc.Listeners; len(l) != 1 || l[0].Socket == nil || l[0].Socket.Socket != "" || vnc.AutoPort != "" {
			t.Errorf("vnc = %+v, want one socket listener without a path", vnc)
		}
	})
	t.Run("vnc on a given socket and serial log", func(t *testing.T) {
		s := spec(t, DomainTypeKVM, "u1.medium", "ubuntu")
		s.VNCSocket = "/run/vmd/vnc/tenant-a_web.sock"
		dom, _ := parse(t, s)
		l := dom.Devices.Graphics[0].VNC.Listeners
		if len(l) != 1 || l[0].Socket == nil || l[0].Socket.Socket != s.VNCSocket {
			t.Errorf("vnc listeners = %+v, want socket %s", l, s.VNCSocket)
		}
		if lg := dom.Devices.Serials[0].Log; lg == nil || lg.File != s.SerialLogPath || lg.Append != "on" {
			t.Errorf("serial log = %+v, want %s appended", lg, s.SerialLogPath)
		}
	})
	t.Run("tpm state directory", func(t *testing.T) {
		s := spec(t, DomainTypeKVM, "u1.large", "windows.11")
		s.TPMStatePath = "/var/lib/vmd/instances/tenant-a/web/tpm"
		dom, _ := parse(t, s)
		emu := dom.Devices.TPMs[0].Backend.Emulator
		if emu.Source == nil || emu.Source.Dir == nil || emu.Source.Dir.Path != s.TPMStatePath || emu.PersistentState != "yes" || emu.Version != "2.0" {
			t.Errorf("tpm backend = %+v, want persistent 2.0 in %s", emu, s.TPMStatePath)
		}
	})
	t.Run("ovmf override", func(t *testing.T) {
		s := spec(t, DomainTypeKVM, "u1.medium", "debian")
		s.OVMFCode, s.OVMFVars = "/opt/ovmf/CODE.fd", "/opt/ovmf/VARS.fd"
		dom, _ := parse(t, s)
		if dom.OS.Loader.Path != s.OVMFCode || dom.OS.NVRam.Template != s.OVMFVars || dom.OS.NVRam.NVRam != s.NVRAMPath {
			t.Errorf("loader %+v nvram %+v, want the overrides", dom.OS.Loader, dom.OS.NVRam)
		}
	})
}

func TestBuildDomainErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*DomainSpec)
		want   []string // field paths the error must name
	}{
		{name: "missing name", mutate: func(s *DomainSpec) { s.Name = "" }, want: []string{"name: Required"}},
		{name: "bad name", mutate: func(s *DomainSpec) { s.Name = "a/b" }, want: []string{"name: Invalid"}},
		{name: "bad uuid", mutate: func(s *DomainSpec) { s.UUID = "not-a-uuid" }, want: []string{"uuid"}},
		{name: "missing identity", mutate: func(s *DomainSpec) { s.Namespace, s.VMName, s.UID = "", "", "" }, want: []string{"namespace", "vmName", "uid"}},
		{name: "negative generation", mutate: func(s *DomainSpec) { s.Generation = -1 }, want: []string{"generation"}},
		{name: "bad type", mutate: func(s *DomainSpec) { s.Type = "xen" }, want: []string{"type: Unsupported"}},
		{name: "custom vcpus 0", mutate: func(s *DomainSpec) { s.InstanceType, s.MemoryBytes = nil, 1<<30 }, want: []string{"vcpus"}},
		{name: "custom memory missing", mutate: func(s *DomainSpec) { s.InstanceType, s.VCPUs = nil, 2 }, want: []string{"memoryBytes"}},
		{name: "custom memory not KiB", mutate: func(s *DomainSpec) { s.InstanceType, s.VCPUs, s.MemoryBytes = nil, 2, 1<<30+1 }, want: []string{"memoryBytes"}},
		{name: "instance type and sockets", mutate: func(s *DomainSpec) { s.Sockets, s.Cores = 1, 1 }, want: []string{"sockets: Forbidden"}},
		{name: "instance type vcpu mismatch", mutate: func(s *DomainSpec) { s.VCPUs = 7 }, want: []string{"vcpus"}},
		{name: "relative disk path", mutate: func(s *DomainSpec) { s.Disks[0].Path = "system.qcow2" }, want: []string{"disks[0].path"}},
		{name: "duplicate disk", mutate: func(s *DomainSpec) { s.Disks = append(s.Disks, s.Disks[0]) }, want: []string{"disks[1].path: Duplicate"}},
		{name: "bad format", mutate: func(s *DomainSpec) { s.Disks[0].Format = "vmdk" }, want: []string{"disks[0].format"}},
		{name: "raw image with a backing file", mutate: func(s *DomainSpec) { s.Disks[0].Format = DiskFormatRaw }, want: []string{"disks[0].backingPath"}},
		{name: "own backing file", mutate: func(s *DomainSpec) { s.Disks[0].BackingPath = s.Disks[0].Path }, want: []string{"disks[0].backingPath"}},
		{name: "relative backing file", mutate: func(s *DomainSpec) { s.Disks[0].BackingPath = "images/ubuntu.qcow2" }, want: []string{"disks[0].backingPath"}},
		{name: "bad backing format", mutate: func(s *DomainSpec) { s.Disks[0].BackingFormat = "vmdk" }, want: []string{"disks[0].backingFormat"}},
		{name: "bad bus", mutate: func(s *DomainSpec) { s.Disks[0].Bus = "ide" }, want: []string{"disks[0].bus"}},
		{name: "virtio cdrom", mutate: func(s *DomainSpec) { s.Disks[0].Optical, s.Disks[0].Bus = true, DiskBusVirtio }, want: []string{"disks[0].bus"}},
		{name: "seed is a disk", mutate: func(s *DomainSpec) { s.CloudInitISO = s.Disks[0].Path }, want: []string{"cloudInitISO"}},
		{name: "missing mac", mutate: func(s *DomainSpec) { s.NICs[0].MAC = "" }, want: []string{"nics[0].mac: Required"}},
		{name: "multicast mac", mutate: func(s *DomainSpec) { s.NICs[0].MAC = "01:00:5e:00:00:01" }, want: []string{"nics[0].mac"}},
		{name: "duplicate mac", mutate: func(s *DomainSpec) { s.NICs = append(s.NICs, NICSpec{MAC: "52:54:00:6B:3C:01", Bridge: "b"}) }, want: []string{"nics[1].mac: Duplicate"}},
		{name: "nic without attachment", mutate: func(s *DomainSpec) { s.NICs[0].Bridge = "" }, want: []string{"nics[0].bridge"}},
		{name: "long tap name", mutate: func(s *DomainSpec) { s.NICs[0].TapName = "a-very-long-tap-name" }, want: []string{"nics[0].tapName"}},
		{name: "bad nic model", mutate: func(s *DomainSpec) { s.NICs[0].Model = "ne2k" }, want: []string{"nics[0].model"}},
		{name: "bad cpu model", mutate: func(s *DomainSpec) { s.CPUModel = "Sky lake" }, want: []string{"cpuModel"}},
		{name: "relative serial log", mutate: func(s *DomainSpec) { s.SerialLogPath = "serial.log" }, want: []string{"serialLogPath"}},
		{name: "efi without nvram", mutate: func(s *DomainSpec) { s.Profile = mustProfile(t, "debian") }, want: []string{"nvramPath: Required"}},
		{name: "bad pci address", mutate: func(s *DomainSpec) { s.GPUs = []PCIAddress{"65:00.0"} }, want: []string{"gpus[0]"}},
		{name: "pci slot out of range", mutate: func(s *DomainSpec) { s.GPUs = []PCIAddress{"0000:65:20.0"} }, want: []string{"gpus[0]"}},
		{name: "gpus on tcg", mutate: func(s *DomainSpec) { s.Type, s.GPUs = DomainTypeQEMU, []PCIAddress{"0000:65:00.0"} }, want: []string{"gpus: Forbidden"}},
		{name: "pinned cpus without dedicated type", mutate: func(s *DomainSpec) { s.PinnedCPUs = []uint{1} }, want: []string{"pinnedCPUs: Forbidden"}},
		{name: "pinned cpus wrong count", mutate: func(s *DomainSpec) {
			s.InstanceType, s.DedicatedCPUsAvailable, s.PinnedCPUs = mustInstanceType(t, "cx1.large"), true, []uint{1, 2}
		}, want: []string{"pinnedCPUs", "emulator thread"}},
		{name: "arm64 profile", mutate: func(s *DomainSpec) { s.Profile = mustProfile(t, "fedora.arm64") }, want: []string{"profile"}},
		{name: "several at once", mutate: func(s *DomainSpec) { s.Name, s.Disks[0].Format = "", "" }, want: []string{"name", "disks[0].format"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := spec(t, DomainTypeKVM, "u1.medium", "ubuntu")
			tc.mutate(&s)
			res, err := BuildDomain(s)
			if err == nil {
				t.Fatalf("BuildDomain succeeded:\n%s", res.XML)
			}
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("error %v does not match errdefs.ErrInvalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestReadDomainOwner(t *testing.T) {
	s := spec(t, DomainTypeKVM, "u1.medium", "ubuntu")
	s.UID, s.Generation = `uid-with-<xml>&"chars"`, 42
	res, err := BuildDomain(s)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		xml     string
		want    DomainOwner
		wantOK  bool
		wantErr bool
	}{
		{name: "built by vmd", xml: res.XML, want: DomainOwner{Namespace: "tenant-a", Name: "web", UID: s.UID, Generation: 42}, wantOK: true},
		{
			// libvirt may rewrite the prefix and keeps other applications' elements.
			name:   "other prefix beside foreign metadata",
			xml:    `<domain type="kvm"><name>x</name><metadata><app:info xmlns:app="urn:other">y</app:info><ns0:instance xmlns:ns0="` + MetadataNamespace + `"><ns0:namespace>n</ns0:namespace><ns0:name>x</ns0:name><ns0:uid>u</ns0:uid><ns0:generation>7</ns0:generation></ns0:instance></metadata></domain>`,
			want:   DomainOwner{Namespace: "n", Name: "x", UID: "u", Generation: 7},
			wantOK: true,
		},
		{
			// Reformatted the way libvirt 9.0's dumpxml returns it.
			name: "as dumped by libvirt",
			xml: "<domain type='kvm'>\n  <name>vm-instance-web</name>\n  <metadata>\n    <vmd:instance xmlns:vmd=\"" + MetadataNamespace + "\">\n" +
				"      <vmd:namespace>tenant-a</vmd:namespace>\n      <vmd:name>web</vmd:name>\n      <vmd:uid>u-1</vmd:uid>\n      <vmd:generation>3</vmd:generation>\n" +
				"    </vmd:instance>\n  </metadata>\n</domain>\n",
			want:   DomainOwner{Namespace: "tenant-a", Name: "web", UID: "u-1", Generation: 3},
			wantOK: true,
		},
		{name: "not vmd's", xml: `<domain type="kvm"><name>x</name><metadata><app:info xmlns:app="urn:other">y</app:info></metadata></domain>`},
		{name: "no metadata", xml: `<domain type="kvm"><name>x</name></domain>`},
		{name: "unprefixed element of another namespace", xml: `<domain type="kvm"><name>x</name><metadata><instance><uid>u</uid></instance></metadata></domain>`},
		{name: "not xml", xml: `<domain`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := ReadDomainOwner(tc.xml)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error = %v, want error %v", err, tc.wantErr)
			}
			if ok != tc.wantOK || got != tc.want {
				t.Errorf("ReadDomainOwner = %+v, %v; want %+v, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestDiskName(t *testing.T) {
	tests := []struct {
		name  string
		index int
		want  string
	}{
		{name: "first", index: 0, want: "vda"},
		{name: "last single letter", index: 25, want: "vdz"},
		{name: "first double", index: 26, want: "vdaa"},
		{name: "last double", index: 701, want: "vdzz"},
		{name: "first triple", index: 702, want: "vdaaa"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := diskName("vd", tc.index); got != tc.want {
				t.Errorf("diskName(vd, %d) = %q, want %q", tc.index, got, tc.want)
			}
		})
	}
}

func TestBuildDomainDoesNotMutateSpec(t *testing.T) {
	s := spec(t, DomainTypeKVM, "cx1.medium", "windows.11")
	s.DedicatedCPUsAvailable, s.PinnedCPUs = true, []uint{2, 3}
	before := *s.Profile
	beforeIT := *s.InstanceType
	first, err := BuildDomain(s)
	if err != nil {
		t.Fatal(err)
	}
	second, err := BuildDomain(s)
	if err != nil {
		t.Fatal(err)
	}
	if first.XML != second.XML || !slices.Equal(first.Warnings, second.Warnings) {
		t.Errorf("two builds of one spec differ")
	}
	if *s.Profile.HyperV != *before.HyperV || s.InstanceType.Name != beforeIT.Name || !slices.Equal(s.PinnedCPUs, []uint{2, 3}) {
		t.Errorf("BuildDomain modified its input")
	}
}
