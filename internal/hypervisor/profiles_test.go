package hypervisor

import (
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// docProfileNames are the rows of the reference §8 table, in its order.
var docProfileNames = []string{
	"alpine", "centos.7", "centos.7.desktop", "centos.stream10", "centos.stream10.desktop",
	"centos.stream8", "centos.stream8.desktop", "centos.stream8.dpdk", "centos.stream9",
	"centos.stream9.desktop", "centos.stream9.dpdk", "cirros", "debian", "fedora", "fedora.arm64",
	"fedora.s390x", "legacy", "linux", "linux.efi", "linux.virtiotransitional", "opensuse.leap",
	"opensuse.tumbleweed", "oraclelinux", "rhel.10", "rhel.10.arm64", "rhel.10.s390x", "rhel.7",
	"rhel.7.desktop", "rhel.8", "rhel.8.desktop", "rhel.8.dpdk", "rhel.9", "rhel.9.arm64",
	"rhel.9.desktop", "rhel.9.dpdk", "rhel.9.realtime", "rhel.9.s390x", "sles", "ubuntu",
	"windows.10", "windows.10.virtio", "windows.11", "windows.11.virtio", "windows.2k12",
	"windows.2k12.virtio", "windows.2k16", "windows.2k16.virtio", "windows.2k19",
	"windows.2k19.virtio", "windows.2k22", "windows.2k22.virtio", "windows.2k25",
	"windows.2k25.virtio", "windows.2k3", "windows.2k8", "windows.2k8.virtio", "windows.7",
	"windows.7.virtio", "windows.xp",
}

func TestProfileNamesMatchReference(t *testing.T) {
	var got []string
	for _, p := range Profiles() {
		got = append(got, p.Name)
	}
	want := slices.Sorted(slices.Values(docProfileNames))
	if !slices.Equal(got, want) {
		t.Errorf("Profiles() names =\n%v\nwant (reference §8)\n%v", got, want)
	}
	if len(got) != 59 {
		t.Errorf("len(Profiles()) = %d, want the 59 rows of §8", len(got))
	}
	windows := 0
	for _, n := range got {
		if strings.HasPrefix(n, "windows.") {
			windows++
		}
	}
	if windows != 20 {
		t.Errorf("%d windows.* profiles, want 20", windows)
	}
}

// linuxRow is a §8 table row for the non-Windows profiles, reduced to its
// columns. Zero values are the table's empty cells.
type linuxRow struct {
	display    string
	os         OSType
	disk       DiskBus
	nic        NICModel
	fw         Firmware
	secureBoot bool
	smm        bool
	spread     int // spread ratio; 0 = default sockets topology
	rng        bool
	ioThread   bool
	tablet     InputBus
	multiqueue bool
	minCPU     int
	minMem     int64
	arch       Arch
	deprecated bool
}

// rowOf projects a profile onto the reference table's columns.
func rowOf(p Profile) linuxRow {
	r := linuxRow{
		display: p.DisplayName, os: p.OS, disk: p.DiskBus, nic: p.NICModel, fw: p.Firmware,
		secureBoot: p.SecureBoot, smm: p.SMM, rng: p.RNG, ioThread: p.DedicatedIOThreads,
		multiqueue: p.NetworkMultiQueue, minCPU: p.Requirements.MinCPU, minMem: p.Requirements.MinMemory,
		arch: p.Requirements.Architecture, deprecated: p.Deprecated,
	}
	if p.CPUTopology == CPUTopologySpread {
		r.spread = p.SpreadRatio
	}
	if p.InputTablet {
		r.tablet = p.InputBus
	}
	return r
}

func TestLinuxProfileRows(t *testing.T) {
	const gib15 = 3 * gi / 2
	v := func(r linuxRow) linuxRow { // the common virtio/linux cells
		r.os, r.disk, r.nic = OSLinux, DiskBusVirtio, NICModelVirtio
		if r.fw == "" {
			r.fw = FirmwareBIOS
		}
		return r
	}
	tests := []struct {
		name string
		want linuxRow
	}{
		{name: "alpine", want: v(linuxRow{display: "Alpine", rng: true, minCPU: 1, minMem: 512 * mi})},
		{name: "centos.7", want: v(linuxRow{display: "CentOS 7", minCPU: 1, minMem: gi, deprecated: true})},
		{name: "centos.7.desktop", want: v(linuxRow{display: "CentOS 7", tablet: InputBusVirtio, minCPU: 1, minMem: gi, deprecated: true})},
		{name: "centos.stream10", want: v(linuxRow{display: "CentOS Stream 10", rng: true, ioThread: true, minCPU: 1, minMem: gib15})},
		{name: "centos.stream10.desktop", want: v(linuxRow{display: "CentOS Stream 10", rng: true, ioThread: true, tablet: InputBusVirtio, minCPU: 1, minMem: gib15})},
		{name: "centos.stream8", want: v(linuxRow{display: "CentOS Stream 8", minCPU: 1, minMem: gib15, deprecated: true})},
		{name: "centos.stream8.desktop", want: v(linuxRow{display: "CentOS Stream 8", tablet: InputBusVirtio, minCPU: 1, minMem: gib15, deprecated: true})},
		{name: "centos.stream8.dpdk", want: v(linuxRow{display: "CentOS Stream 8", spread: 4, multiqueue: true, minCPU: 2, minMem: gib15, deprecated: true})},
		{name: "centos.stream9", want: v(linuxRow{display: "CentOS Stream 9", rng: true, ioThread: true, minCPU: 1, minMem: gib15})},
		{name: "centos.stream9.desktop", want: v(linuxRow{display: "CentOS Stream 9", rng: true, ioThread: true, tablet: InputBusVirtio, minCPU: 1, minMem: gib15})},
		{name: "centos.stream9.dpdk", want: v(linuxRow{display: "CentOS Stream 9", spread: 4, rng: true, ioThread: true, multiqueue: true, minCPU: 8, minMem: gib15})},
		{name: "cirros", want: v(linuxRow{display: "Cirros", rng: true, minCPU: 1, minMem: 256 * mi})},
		{name: "debian", want: v(linuxRow{display: "Debian", fw: FirmwareEFI, rng: true, minCPU: 1, minMem: 512 * mi})},
		{name: "fedora", want: v(linuxRow{display: "Fedora (amd64)", fw: FirmwareEFI, secureBoot: true, smm: true, rng: true, minCPU: 1, minMem: 2 * gi, arch: ArchAMD64})},
		{name: "fedora.arm64", want: v(linuxRow{display: "Fedora (arm64)", rng: true, minCPU: 1, minMem: 2 * gi, arch: ArchARM64})},
		{name: "fedora.s390x", want: v(linuxRow{display: "Fedora (s390x)", rng: true, minCPU: 1, minMem: 2 * gi, arch: ArchS390X})},
		{name: "legacy", want: linuxRow{display: "Legacy Guest", os: OSLegacy, disk: DiskBusSATA, nic: NICModelE1000, fw: FirmwareBIOS}},
		{name: "linux", want: v(linuxRow{display: "Linux Guest", rng: true})},
		{name: "linux.efi", want: v(linuxRow{display: "Linux EFI Guest", fw: FirmwareEFI, rng: true})},
		{name: "linux.virtiotransitional", want: v(linuxRow{display: "Linux Virtio Transitional Guest", rng: true})},
		{name: "opensuse.leap", want: v(linuxRow{display: "OpenSUSE Leap", rng: true, minCPU: 1, minMem: 2 * gi})},
		{name: "opensuse.tumbleweed", want: v(linuxRow{display: "OpenSUSE Tumbleweed", rng: true, minCPU: 1, minMem: 2 * gi})},
		{name: "oraclelinux", want: v(linuxRow{display: "Oracle Linux", fw: FirmwareEFI, rng: true, minCPU: 2, minMem: 4 * gi})},
		{name: "rhel.10", want: v(linuxRow{display: "Red Hat Enterprise Linux 10 (amd64)", fw: FirmwareEFI, secureBoot: true, smm: true, rng: true, ioThread: true, minCPU: 1, minMem: gib15, arch: ArchAMD64})},
		{name: "rhel.10.arm64", want: v(linuxRow{display: "Red Hat Enterprise Linux 10 (arm64)", rng: true, ioThread: true, minCPU: 1, minMem: gib15, arch: ArchARM64})},
		{name: "rhel.10.s390x", want: v(linuxRow{display: "Red Hat Enterprise Linux 10 (s390x)", rng: true, ioThread: true, minCPU: 1, minMem: gib15, arch: ArchS390X})},
		{name: "rhel.7", want: v(linuxRow{display: "Red Hat Enterprise Linux 7", rng: true, minCPU: 1, minMem: gi})},
		{name: "rhel.7.desktop", want: v(linuxRow{display: "Red Hat Enterprise Linux 7", rng: true, tablet: InputBusVirtio, minCPU: 1, minMem: gi})},
		{name: "rhel.8", want: v(linuxRow{display: "Red Hat Enterprise Linux 8", rng: true, minCPU: 1, minMem: gib15})},
		{name: "rhel.8.desktop", want: v(linuxRow{display: "Red Hat Enterprise Linux 8", rng: true, tablet: InputBusVirtio, minCPU: 1, minMem: gib15})},
		{name: "rhel.8.dpdk", want: v(linuxRow{display: "Red Hat Enterprise Linux 8", spread: 4, rng: true, multiqueue: true, minCPU: 8, minMem: gib15})},
		{name: "rhel.9", want: v(linuxRow{display: "Red Hat Enterprise Linux 9 (amd64)", fw: FirmwareEFI, secureBoot: true, smm: true, rng: true, ioThread: true, minCPU: 1, minMem: gib15, arch: ArchAMD64})},
		{name: "rhel.9.arm64", want: v(linuxRow{display: "Red Hat Enterprise Linux 9 (arm64)", rng: true, ioThread: true, minCPU: 1, minMem: gib15, arch: ArchARM64})},
		{name: "rhel.9.desktop", want: v(linuxRow{display: "Red Hat Enterprise Linux 9 Desktop (amd64)", fw: FirmwareEFI, secureBoot: true, smm: true, rng: true, ioThread: true, tablet: InputBusVirtio, minCPU: 1, minMem: gib15, arch: ArchAMD64})},
		{name: "rhel.9.dpdk", want: v(linuxRow{display: "Red Hat Enterprise Linux 9 DPDK (amd64)", fw: FirmwareEFI, secureBoot: true, smm: true, spread: 4, rng: true, ioThread: true, multiqueue: true, minCPU: 8, minMem: gib15, arch: ArchAMD64})},
		{name: "rhel.9.realtime", want: v(linuxRow{display: "Red Hat Enterprise Linux 9 Realtime (amd64)", fw: FirmwareEFI, secureBoot: true, smm: true, spread: 2, rng: true, ioThread: true, multiqueue: true, minCPU: 4, minMem: 4 * gi, arch: ArchAMD64})},
		{name: "rhel.9.s390x", want: v(linuxRow{display: "Red Hat Enterprise Linux 9 (s390x)", rng: true, ioThread: true, minCPU: 1, minMem: gib15, arch: ArchS390X})},
		{name: "sles", want: v(linuxRow{display: "SUSE Linux Enterprise Server", rng: true, minCPU: 1, minMem: 2 * gi})},
		{name: "ubuntu", want: v(linuxRow{display: "Ubuntu", rng: true, minCPU: 1, minMem: 2 * gi})},
	}
	covered := map[string]bool{}
	for _, tc := range tests {
		covered[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			p, ok := LookupProfile(tc.name)
			if !ok {
				t.Fatalf("LookupProfile(%q) not found", tc.name)
			}
			if got := rowOf(p); got != tc.want {
				t.Errorf("%s =\n%+v\nwant\n%+v", tc.name, got, tc.want)
			}
			// No Linux row has Windows-only settings.
			if p.HyperV != nil || p.Clock != nil || p.TPM || p.PersistentNVRAM || p.TerminationGracePeriodSeconds != 0 || p.DisablePCIHole64 {
				t.Errorf("%s has Windows-only settings: %+v", tc.name, p)
			}
		})
	}
	for _, p := range Profiles() {
		if !strings.HasPrefix(p.Name, "windows.") && !covered[p.Name] {
			t.Errorf("profile %s has no reference row in this test", p.Name)
		}
	}
}

func TestLinuxProfileSpecialColumns(t *testing.T) {
	tests := []struct {
		name  string
		check func(Profile) bool
	}{
		{name: "linux.virtiotransitional", check: func(p Profile) bool { return p.VirtioTransitional }},
		{name: "rhel.9.realtime", check: func(p Profile) bool {
			return p.SpreadAcross == SpreadSocketsCoresThreads &&
				p.AutoattachGraphicsDevice != nil && !*p.AutoattachGraphicsDevice &&
				p.AutoattachMemBalloon != nil && !*p.AutoattachMemBalloon &&
				p.AutoattachSerialConsole != nil && *p.AutoattachSerialConsole
		}},
		{name: "rhel.9.dpdk", check: func(p Profile) bool {
			return p.SpreadAcross == SpreadSocketsCoresThreads && p.AutoattachMemBalloon == nil
		}},
		{name: "ubuntu", check: func(p Profile) bool {
			return !p.VirtioTransitional && p.AutoattachGraphicsDevice == nil && p.EffectiveCPUTopology() == CPUTopologySockets && p.Source == SourceKubeVirt
		}},
		{name: "centos.7", check: func(p Profile) bool { return p.Source == SourceCozystack }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, ok := LookupProfile(tc.name)
			if !ok {
				t.Fatalf("LookupProfile(%q) not found", tc.name)
			}
			if !tc.check(p) {
				t.Errorf("%s: unexpected values %+v", tc.name, p)
			}
		})
	}
	// Only the virtio-transitional row sets that flag, and only the
	// deprecated Cozystack-local CentOS rows come from Cozystack.
	for _, p := range Profiles() {
		if p.VirtioTransitional != (p.Name == "linux.virtiotransitional") {
			t.Errorf("%s VirtioTransitional = %v", p.Name, p.VirtioTransitional)
		}
		local := strings.HasPrefix(p.Name, "centos.7") || strings.HasPrefix(p.Name, "centos.stream8")
		if local != (p.Source == SourceCozystack) || local != p.Deprecated {
			t.Errorf("%s: source %s deprecated %v", p.Name, p.Source, p.Deprecated)
		}
	}
}

func TestWindowsProfiles(t *testing.T) {
	wantHyperV := HyperV{
		Relaxed: true, VAPIC: true, Spinlocks: 8191, VPIndex: true, Runtime: true, SynIC: true,
		SynICTimer: true, SynICTimerDirect: true, Reset: true, Frequencies: true,
		Reenlightenment: true, TLBFlush: true, IPI: true,
	}
	wantClock := Clock{Offset: "utc", HPET: false, HyperVTimer: true, PITTickPolicy: "delay", RTCTickPolicy: "catchup"}
	// Per-version columns of §8: firmware, persistent EFI+TPM, minimums,
	// the NIC of the non-virtio variant and whether a .virtio variant exists.
	tests := []struct {
		name       string // version suffix after "windows."
		efi        bool
		persistent bool // persistent NVRAM and vTPM
		minCPU     int
		minMem     int64
		nic        NICModel
		virtio     bool
		pciHole64  bool
	}{
		{name: "10", efi: true, minCPU: 1, minMem: 2 * gi, nic: NICModelE1000E, virtio: true},
		{name: "11", efi: true, persistent: true, minCPU: 2, minMem: 4 * gi, nic: NICModelE1000E, virtio: true},
		{name: "2k12", minCPU: 1, minMem: 512 * mi, nic: NICModelE1000E, virtio: true},
		{name: "2k16", efi: true, minCPU: 1, minMem: 2 * gi, nic: NICModelE1000E, virtio: true},
		{name: "2k19", efi: true, minCPU: 1, minMem: 2 * gi, nic: NICModelE1000E, virtio: true},
		{name: "2k22", efi: true, persistent: true, minCPU: 1, minMem: 2 * gi, nic: NICModelE1000E, virtio: true},
		{name: "2k25", efi: true, persistent: true, minCPU: 1, minMem: 2 * gi, nic: NICModelE1000E, virtio: true},
		{name: "2k3", minCPU: 1, minMem: 256 * mi, nic: NICModelRTL8139, pciHole64: true},
		{name: "2k8", minCPU: 1, minMem: 512 * mi, nic: NICModelE1000, virtio: true},
		{name: "7", minCPU: 1, minMem: 2 * gi, nic: NICModelE1000E, virtio: true},
		{name: "xp", minCPU: 1, minMem: 128 * mi, nic: NICModelE1000E, pciHole64: true},
	}
	checked := 0
	for _, tc := range tests {
		variants := []string{"windows." + tc.name}
		if tc.virtio {
			variants = append(variants, "windows."+tc.name+".virtio")
		} else if _, ok := LookupProfile("windows." + tc.name + ".virtio"); ok {
			t.Errorf("windows.%s.virtio exists but the reference has no such row", tc.name)
		}
		for _, name := range variants {
			checked++
			t.Run(name, func(t *testing.T) {
				p, ok := LookupProfile(name)
				if !ok {
					t.Fatalf("LookupProfile(%q) not found", name)
				}
				if p.OS != OSWindows || !p.ACPI || !p.APIC || p.CPUTopology != CPUTopologySockets || p.TerminationGracePeriodSeconds != 3600 {
					t.Errorf("%s lacks the shared Windows settings: %+v", name, p)
				}
				if p.HyperV == nil || *p.HyperV != wantHyperV {
					t.Errorf("%s HyperV = %+v, want %+v", name, p.HyperV, wantHyperV)
				}
				if p.Clock == nil || *p.Clock != wantClock {
					t.Errorf("%s Clock = %+v, want %+v", name, p.Clock, wantClock)
				}
				wantBus, wantNIC, wantTablet := DiskBusSATA, tc.nic, InputBusUSB
				if strings.HasSuffix(name, ".virtio") {
					wantBus, wantNIC, wantTablet = DiskBusVirtio, NICModelVirtio, InputBusVirtio
				}
				if p.DiskBus != wantBus || p.NICModel != wantNIC || !p.InputTablet || p.InputBus != wantTablet {
					t.Errorf("%s bus/nic/tablet = %s/%s/%v %s, want %s/%s/true %s", name, p.DiskBus, p.NICModel, p.InputTablet, p.InputBus, wantBus, wantNIC, wantTablet)
				}
				wantFW := FirmwareBIOS
				if tc.efi {
					wantFW = FirmwareEFI
				}
				if p.Firmware != wantFW || p.SecureBoot != tc.efi || p.SMM != tc.efi {
					t.Errorf("%s firmware %s secureBoot %v smm %v, want %s %v %v", name, p.Firmware, p.SecureBoot, p.SMM, wantFW, tc.efi, tc.efi)
				}
				if p.PersistentNVRAM != tc.persistent || p.TPM != tc.persistent || p.TPMPersistent != tc.persistent {
					t.Errorf("%s NVRAM/TPM/TPM persistent = %v/%v/%v, want all %v", name, p.PersistentNVRAM, p.TPM, p.TPMPersistent, tc.persistent)
				}
				if p.Requirements.MinCPU != tc.minCPU || p.Requirements.MinMemory != tc.minMem || p.Requirements.Architecture != "" {
					t.Errorf("%s requirements = %+v, want %d vCPU / %d bytes", name, p.Requirements, tc.minCPU, tc.minMem)
				}
				if p.DisablePCIHole64 != tc.pciHole64 {
					t.Errorf("%s DisablePCIHole64 = %v, want %v", name, p.DisablePCIHole64, tc.pciHole64)
				}
				if p.RNG || p.DedicatedIOThreads || p.NetworkMultiQueue || p.Deprecated || p.Source != SourceKubeVirt {
					t.Errorf("%s has settings the reference does not list: %+v", name, p)
				}
			})
		}
	}
	if checked != 20 {
		t.Errorf("checked %d Windows profiles, want 20", checked)
	}
}

func TestProfileRequirements(t *testing.T) {
	// The requirement consequences spelled out in reference §8.
	tests := []struct {
		name    string
		profile string
		minCPU  int
		minMem  int64
	}{
		{name: "ubuntu needs 2Gi", profile: "ubuntu", minCPU: 1, minMem: 2 * gi},
		{name: "windows 11 needs 2 vCPU and 4Gi", profile: "windows.11", minCPU: 2, minMem: 4 * gi},
		{name: "windows 11 virtio likewise", profile: "windows.11.virtio", minCPU: 2, minMem: 4 * gi},
		{name: "oraclelinux needs 2 vCPU and 4Gi", profile: "oraclelinux", minCPU: 2, minMem: 4 * gi},
		{name: "centos stream 9 dpdk needs 8 vCPU", profile: "centos.stream9.dpdk", minCPU: 8, minMem: 3 * gi / 2},
		{name: "rhel 8 dpdk needs 8 vCPU", profile: "rhel.8.dpdk", minCPU: 8, minMem: 3 * gi / 2},
		{name: "rhel 9 dpdk needs 8 vCPU", profile: "rhel.9.dpdk", minCPU: 8, minMem: 3 * gi / 2},
		{name: "deprecated centos stream 8 dpdk keeps the old 2 vCPU", profile: "centos.stream8.dpdk", minCPU: 2, minMem: 3 * gi / 2},
		{name: "legacy has none", profile: "legacy"},
		{name: "linux has none", profile: "linux"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, ok := LookupProfile(tc.profile)
			if !ok {
				t.Fatalf("LookupProfile(%q) not found", tc.profile)
			}
			if p.Requirements.MinCPU != tc.minCPU || p.Requirements.MinMemory != tc.minMem {
				t.Errorf("%s requirements = %d vCPU / %d bytes, want %d / %d", tc.profile, p.Requirements.MinCPU, p.Requirements.MinMemory, tc.minCPU, tc.minMem)
			}
		})
	}
	// Every current (non-deprecated) DPDK profile needs 8 vCPUs.
	for _, p := range Profiles() {
		if strings.HasSuffix(p.Name, ".dpdk") && !p.Deprecated && p.Requirements.MinCPU != 8 {
			t.Errorf("%s MinCPU = %d, want 8", p.Name, p.Requirements.MinCPU)
		}
	}
}

func TestProfileAliases(t *testing.T) {
	tests := []struct {
		name   string
		lookup string
		want   string
	}{
		{name: "centos is stream 9", lookup: "centos", want: "centos.stream9"},
		{name: "windows is server 2025 without virtio drivers", lookup: "windows", want: "windows.2k25"},
		{name: "rhel is 9", lookup: "rhel", want: "rhel.9"},
		{name: "opensuse is leap", lookup: "opensuse", want: "opensuse.leap"},
		{name: "ubuntu is a real name", lookup: "ubuntu", want: "ubuntu"},
		{name: "debian is a real name", lookup: "debian", want: "debian"},
		{name: "fedora is a real name", lookup: "fedora", want: "fedora"},
		{name: "full names are untouched", lookup: "windows.2k25.virtio", want: "windows.2k25.virtio"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, ok := LookupProfile(tc.lookup)
			if !ok {
				t.Fatalf("LookupProfile(%q) not found", tc.lookup)
			}
			if p.Name != tc.want {
				t.Errorf("LookupProfile(%q).Name = %q, want %q", tc.lookup, p.Name, tc.want)
			}
			direct, _ := LookupProfile(tc.want)
			if !reflect.DeepEqual(p, direct) {
				t.Errorf("alias %q and %q resolve to different profiles", tc.lookup, tc.want)
			}
		})
	}
	want := map[string]string{"centos": "centos.stream9", "windows": "windows.2k25", "rhel": "rhel.9", "opensuse": "opensuse.leap"}
	if got := ProfileAliases(); !maps.Equal(got, want) {
		t.Errorf("ProfileAliases() = %v, want %v", got, want)
	}
}

func TestLookupProfileUnknown(t *testing.T) {
	for _, name := range []string{"", "Ubuntu", "windows.2k25.VIRTIO", "centos.stream7", "suse"} {
		t.Run(name, func(t *testing.T) {
			if p, ok := LookupProfile(name); ok {
				t.Errorf("LookupProfile(%q) = %s, want not found", name, p.Name)
			}
		})
	}
}

func TestProfileCopiesAreIndependent(t *testing.T) {
	p, _ := LookupProfile("windows.2k22")
	p.HyperV.Spinlocks = 1
	p.Clock.Offset = "localtime"
	rt, _ := LookupProfile("rhel.9.realtime")
	*rt.AutoattachSerialConsole = false
	aliases := ProfileAliases()
	aliases["centos"] = "centos.7"
	Profiles()[0].Name = "changed"

	if again, _ := LookupProfile("windows.2k22"); again.HyperV.Spinlocks != 8191 || again.Clock.Offset != "utc" {
		t.Errorf("mutating a returned profile changed the table")
	}
	if again, _ := LookupProfile("rhel.9.realtime"); !*again.AutoattachSerialConsole {
		t.Errorf("mutating a returned autoattach flag changed the table")
	}
	if again, _ := LookupProfile("centos"); again.Name != "centos.stream9" {
		t.Errorf("mutating ProfileAliases() changed alias resolution")
	}
	if Profiles()[0].Name == "changed" {
		t.Errorf("mutating Profiles() changed the table")
	}
	// The shared YAML anchors must not make two profiles share memory.
	a, _ := LookupProfile("windows.10")
	b, _ := LookupProfile("windows.11")
	if a.HyperV == b.HyperV {
		t.Errorf("two profiles returned the same HyperV pointer")
	}
}

func TestEffectiveCPUTopology(t *testing.T) {
	tests := []struct {
		name    string
		profile string
		want    CPUTopology
	}{
		{name: "unset defaults to sockets", profile: "ubuntu", want: CPUTopologySockets},
		{name: "explicit sockets", profile: "windows.2k25", want: CPUTopologySockets},
		{name: "spread", profile: "rhel.9.dpdk", want: CPUTopologySpread},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := LookupProfile(tc.profile)
			if got := p.EffectiveCPUTopology(); got != tc.want {
				t.Errorf("%s EffectiveCPUTopology() = %s, want %s", tc.profile, got, tc.want)
			}
		})
	}
}

func TestParseProfiles(t *testing.T) {
	const base = `name: p, displayName: P, os: linux, diskBus: virtio, nicModel: virtio, firmware: bios, source: kubevirt`
	doc := func(extra string) string { return "profiles:\n- {" + base + extra + "}\n" }
	tests := []struct {
		name    string
		yaml    string
		wantErr string // empty: must parse
	}{
		{name: "minimal row", yaml: doc("")},
		{name: "alias", yaml: doc("") + "aliases: {short: p}\n"},
		{name: "unknown row key", yaml: doc(", diskModel: sata"), wantErr: `unknown field "diskModel"`},
		{name: "unknown nested key", yaml: doc(", hyperv: {relaxed: true, evmcs: true}"), wantErr: `unknown field "evmcs"`},
		{name: "unknown requirements key", yaml: doc(", requirements: {minGPU: 1}"), wantErr: `unknown field "minGPU"`},
		{name: "unknown top-level key", yaml: doc("") + "preferences: []\n", wantErr: `unknown field "preferences"`},
		{name: "derived field is not an input", yaml: doc(", requirements: {minMemoryBytes: 5}"), wantErr: `unknown field "minMemoryBytes"`},
		{name: "empty table", yaml: "profiles: []\n", wantErr: "table is empty"},
		{name: "duplicate name", yaml: "profiles:\n- {" + base + "}\n- {" + base + "}\n", wantErr: "duplicate name"},
		{name: "uppercase name", yaml: "profiles:\n- {name: P, displayName: P, os: linux, diskBus: virtio, nicModel: virtio, firmware: bios, source: kubevirt}\n", wantErr: "lowercase"},
		{name: "missing display name", yaml: "profiles:\n- {name: p, os: linux, diskBus: virtio, nicModel: virtio, firmware: bios, source: kubevirt}\n", wantErr: "displayName is required"},
		{name: "unknown os", yaml: "profiles:\n- {name: p, displayName: P, os: bsd, diskBus: virtio, nicModel: virtio, firmware: bios, source: kubevirt}\n", wantErr: `os "bsd"`},
		{name: "unknown disk bus", yaml: "profiles:\n- {name: p, displayName: P, os: linux, diskBus: ide, nicModel: virtio, firmware: bios, source: kubevirt}\n", wantErr: `diskBus "ide"`},
		{name: "unknown nic", yaml: "profiles:\n- {name: p, displayName: P, os: linux, diskBus: virtio, nicModel: pcnet, firmware: bios, source: kubevirt}\n", wantErr: `nicModel "pcnet"`},
		{name: "unknown firmware", yaml: "profiles:\n- {name: p, displayName: P, os: linux, diskBus: virtio, nicModel: virtio, firmware: coreboot, source: kubevirt}\n", wantErr: `firmware "coreboot"`},
		{name: "secure boot on bios", yaml: doc(", secureBoot: true, smm: true"), wantErr: "secureBoot requires"},
		{name: "secure boot without smm", yaml: "profiles:\n- {name: p, displayName: P, os: linux, diskBus: virtio, nicModel: virtio, firmware: efi, secureBoot: true, source: kubevirt}\n", wantErr: "secureBoot requires"},
		{name: "nvram on bios", yaml: doc(", persistentNVRAM: true"), wantErr: "persistentNVRAM requires"},
		{name: "persistent tpm without tpm", yaml: doc(", tpmPersistent: true"), wantErr: "tpmPersistent requires tpm"},
		{name: "unknown topology", yaml: doc(", cpuTopology: numa"), wantErr: `cpuTopology "numa"`},
		{name: "spread without ratio", yaml: doc(", cpuTopology: spread, spreadAcross: SocketsCores"), wantErr: "spreadRatio 0"},
		{name: "spread across nothing", yaml: doc(", cpuTopology: spread, spreadAcross: Dies, spreadRatio: 2"), wantErr: `spreadAcross "Dies"`},
		{name: "spread options without spread", yaml: doc(", spreadRatio: 2"), wantErr: "require cpuTopology spread"},
		{name: "tablet on unknown bus", yaml: doc(", inputTablet: true, inputBus: ps2"), wantErr: `inputBus "ps2"`},
		{name: "bus without tablet", yaml: doc(", inputBus: usb"), wantErr: "inputBus requires inputTablet"},
		{name: "unknown clock offset", yaml: doc(", clock: {offset: mars, hpet: false, hypervTimer: true}"), wantErr: `clock offset "mars"`},
		{name: "unknown tick policy", yaml: doc(", clock: {offset: utc, hpet: false, hypervTimer: true, rtcTickPolicy: skip}"), wantErr: `tick policy "skip"`},
		{name: "too few spinlock retries", yaml: doc(", hyperv: {spinlocks: 10}"), wantErr: "spinlocks 10"},
		{name: "negative grace", yaml: doc(", terminationGracePeriodSeconds: -1"), wantErr: "terminationGracePeriodSeconds"},
		{name: "bad min memory", yaml: doc(", requirements: {minMemory: 1.5}"), wantErr: "whole number of bytes"},
		{name: "unknown architecture", yaml: doc(", requirements: {architecture: riscv64}"), wantErr: `architecture "riscv64"`},
		{name: "hikube is not a profile source", yaml: "profiles:\n- {name: p, displayName: P, os: linux, diskBus: virtio, nicModel: virtio, firmware: bios, source: hikube}\n", wantErr: `source "hikube"`},
		{name: "alias shadows a profile", yaml: doc("") + "aliases: {p: p}\n", wantErr: "shadows a profile"},
		{name: "alias to nowhere", yaml: doc("") + "aliases: {short: missing}\n", wantErr: `target "missing"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProfiles([]byte(tc.yaml))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("parseProfiles: %v", err)
				}
				if len(got.Profiles) != 1 || got.Profiles[0].Name != "p" {
					t.Errorf("parseProfiles = %+v", got)
				}
				return
			}
			if err == nil {
				t.Fatalf("parseProfiles accepted the table, want error containing %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error = %q, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestEmbeddedProfilesParse(t *testing.T) {
	table, err := parseProfiles(profilesYAML)
	if err != nil {
		t.Fatalf("parsing embedded profiles.yaml: %v", err)
	}
	if !reflect.DeepEqual(table.Profiles, Profiles()) {
		t.Errorf("re-parsing the embedded table gave a different result")
	}
	if !slices.IsSortedFunc(table.Profiles, func(a, b Profile) int { return strings.Compare(a.Name, b.Name) }) {
		t.Errorf("profiles are not sorted by name")
	}
}
