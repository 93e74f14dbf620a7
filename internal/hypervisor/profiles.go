package hypervisor

import (
	_ "embed"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// profilesYAML is the profile (preference) table and its aliases.
//
//go:embed profiles.yaml
var profilesYAML []byte

// OSType is the guest family a profile targets (KubeVirt's vm.kubevirt.io/os).
type OSType string

// Guest families.
const (
	OSLinux   OSType = "linux"
	OSWindows OSType = "windows"
	// OSLegacy is for old guests without virtio drivers.
	OSLegacy OSType = "legacy"
)

// DiskBus is the bus a disk is attached to when the VM does not say.
type DiskBus string

// Disk buses.
const (
	DiskBusVirtio DiskBus = "virtio"
	DiskBusSATA   DiskBus = "sata"
	DiskBusSCSI   DiskBus = "scsi"
)

// NICModel is the emulated network card model.
type NICModel string

// NIC models; the non-virtio ones exist for guests without virtio drivers.
const (
	NICModelVirtio  NICModel = "virtio"
	NICModelE1000   NICModel = "e1000"
	NICModelE1000E  NICModel = "e1000e"
	NICModelRTL8139 NICModel = "rtl8139"
)

// Firmware is the boot firmware.
type Firmware string

// Firmware kinds: SeaBIOS or OVMF (UEFI).
const (
	FirmwareBIOS Firmware = "bios"
	FirmwareEFI  Firmware = "efi"
)

// CPUTopology says how vCPUs are laid out as sockets, cores and threads.
// The empty value means the preference leaves KubeVirt's default, sockets.
type CPUTopology string

// CPU topologies (KubeVirt preferredCPUTopology).
const (
	CPUTopologySockets CPUTopology = "sockets"
	CPUTopologyCores   CPUTopology = "cores"
	CPUTopologyThreads CPUTopology = "threads"
	CPUTopologySpread  CPUTopology = "spread"
	CPUTopologyAny     CPUTopology = "any"
)

// SpreadAcross says which levels a spread topology uses.
type SpreadAcross string

// Spread layouts (KubeVirt spreadOptions.across).
const (
	// SpreadSocketsCores: sockets × ratio cores.
	SpreadSocketsCores SpreadAcross = "SocketsCores"
	// SpreadSocketsCoresThreads: sockets × ratio cores × 2 threads.
	SpreadSocketsCoresThreads SpreadAcross = "SocketsCoresThreads"
	// SpreadCoresThreads: cores × 2 threads in one socket.
	SpreadCoresThreads SpreadAcross = "CoresThreads"
)

// InputBus is the bus of the tablet input device.
type InputBus string

// Input buses.
const (
	InputBusUSB    InputBus = "usb"
	InputBusVirtio InputBus = "virtio"
)

// Arch is a guest CPU architecture a profile requires.
type Arch string

// Architectures KubeVirt preferences name.
const (
	ArchAMD64 Arch = "amd64"
	ArchARM64 Arch = "arm64"
	ArchS390X Arch = "s390x"
)

// HyperV lists the Hyper-V enlightenments offered to a Windows guest. They
// let Windows use paravirtual timers, spinlocks and IPIs instead of slow
// emulated hardware.
type HyperV struct {
	Relaxed bool `json:"relaxed,omitempty"`
	VAPIC   bool `json:"vapic,omitempty"`
	// Spinlocks is the retry count before a spinning vCPU yields; 0 = off.
	Spinlocks        int  `json:"spinlocks,omitempty"`
	VPIndex          bool `json:"vpindex,omitempty"`
	Runtime          bool `json:"runtime,omitempty"`
	SynIC            bool `json:"synic,omitempty"`
	SynICTimer       bool `json:"synicTimer,omitempty"`
	SynICTimerDirect bool `json:"synicTimerDirect,omitempty"`
	Reset            bool `json:"reset,omitempty"`
	Frequencies      bool `json:"frequencies,omitempty"`
	Reenlightenment  bool `json:"reenlightenment,omitempty"`
	TLBFlush         bool `json:"tlbflush,omitempty"`
	IPI              bool `json:"ipi,omitempty"`
}

// Clock is the guest clock a profile prefers. Windows keeps its RTC in
// local time unless told otherwise and needs tick policies that tolerate a
// descheduled vCPU.
type Clock struct {
	// Offset is the RTC base: "utc" (or "localtime").
	Offset string `json:"offset"`
	// HPET reports whether an HPET timer is present.
	HPET bool `json:"hpet"`
	// HyperVTimer adds the Hyper-V reference time counter.
	HyperVTimer bool `json:"hypervTimer"`
	// PITTickPolicy and RTCTickPolicy are libvirt timer tick policies
	// (delay, catchup, merge, discard).
	PITTickPolicy string `json:"pitTickPolicy,omitempty"`
	RTCTickPolicy string `json:"rtcTickPolicy,omitempty"`
}

// Requirements are the minimum resources a preference demands; KubeVirt
// rejects a VM below them at admission, and vmd does the same.
type Requirements struct {
	// MinCPU is the minimum vCPU count; 0 = none.
	MinCPU int `json:"minCPU,omitempty"`
	// MinMemoryQuantity is the minimum memory as written ("1.5Gi").
	MinMemoryQuantity string `json:"minMemory,omitempty"`
	// MinMemory is MinMemoryQuantity in bytes; 0 = none.
	MinMemory int64 `json:"-"`
	// Architecture is the only architecture the profile supports; "" = any.
	Architecture Arch `json:"architecture,omitempty"`
}

// Profile is one VirtualMachineClusterPreference: the guest-OS-specific
// device and firmware choices vmd applies where the VMInstance is silent.
// Flags default to false and numbers to "not set".
//
// The JSON tags are the schema of profiles.yaml.
type Profile struct {
	// Name is the spec.instanceProfile value (after alias resolution).
	Name string `json:"name"`
	// DisplayName is the human name of the guest OS.
	DisplayName string   `json:"displayName"`
	OS          OSType   `json:"os"`
	DiskBus     DiskBus  `json:"diskBus"`
	NICModel    NICModel `json:"nicModel"`
	Firmware    Firmware `json:"firmware"`
	SecureBoot  bool     `json:"secureBoot,omitempty"`
	// PersistentNVRAM keeps the EFI variable store across restarts.
	PersistentNVRAM bool `json:"persistentNVRAM,omitempty"`
	SMM             bool `json:"smm,omitempty"`
	TPM             bool `json:"tpm,omitempty"`
	// TPMPersistent keeps the vTPM state across restarts (BitLocker needs it).
	TPMPersistent bool    `json:"tpmPersistent,omitempty"`
	ACPI          bool    `json:"acpi,omitempty"`
	APIC          bool    `json:"apic,omitempty"`
	HyperV        *HyperV `json:"hyperv,omitempty"`
	Clock         *Clock  `json:"clock,omitempty"`
	// CPUTopology is the preferred layout; see EffectiveCPUTopology.
	CPUTopology CPUTopology `json:"cpuTopology,omitempty"`
	// SpreadAcross and SpreadRatio refine CPUTopologySpread.
	SpreadAcross SpreadAcross `json:"spreadAcross,omitempty"`
	SpreadRatio  int          `json:"spreadRatio,omitempty"`
	// RNG attaches a virtio-rng device so guests do not starve for entropy.
	RNG bool `json:"rng,omitempty"`
	// DedicatedIOThreads gives every disk its own IOThread.
	DedicatedIOThreads bool `json:"dedicatedIOThreads,omitempty"`
	// InputTablet adds an absolute pointer so the VNC cursor tracks.
	InputTablet        bool     `json:"inputTablet,omitempty"`
	InputBus           InputBus `json:"inputBus,omitempty"`
	NetworkMultiQueue  bool     `json:"networkMultiQueue,omitempty"`
	VirtioTransitional bool     `json:"virtioTransitional,omitempty"`
	DisablePCIHole64   bool     `json:"disablePCIHole64,omitempty"`
	// The Autoattach* flags are nil when KubeVirt's default (attach) holds.
	AutoattachGraphicsDevice *bool `json:"autoattachGraphicsDevice,omitempty"`
	AutoattachMemBalloon     *bool `json:"autoattachMemBalloon,omitempty"`
	AutoattachSerialConsole  *bool `json:"autoattachSerialConsole,omitempty"`
	// TerminationGracePeriodSeconds is the preferred shutdown grace; 0 = not set.
	TerminationGracePeriodSeconds int          `json:"terminationGracePeriodSeconds,omitempty"`
	Requirements                  Requirements `json:"requirements,omitzero"`
	Deprecated                    bool         `json:"deprecated,omitempty"`
	Source                        Source       `json:"source"`
}

// EffectiveCPUTopology is CPUTopology with KubeVirt's default (sockets)
// filled in.
func (p Profile) EffectiveCPUTopology() CPUTopology {
	if p.CPUTopology == "" {
		return CPUTopologySockets
	}
	return p.CPUTopology
}

// profileTable is the document shape of profiles.yaml.
type profileTable struct {
	// WindowsHyperV and WindowsClock only carry YAML anchors shared by the
	// windows.* rows; they are decoded (and so checked) but not used.
	WindowsHyperV *HyperV `json:"windowsHyperV"`
	WindowsClock  *Clock  `json:"windowsClock"`
	// Aliases maps a short Hikube name to a profile name.
	Aliases  map[string]string `json:"aliases"`
	Profiles []Profile         `json:"profiles"`
}

var (
	profileData  = mustParse(parseProfiles(profilesYAML))
	profileIndex = indexByName(profileData.Profiles, func(p Profile) string { return p.Name })
)

// Profiles returns every profile sorted by name; aliases are not listed
// (see ProfileAliases). The result is a copy the caller may modify.
func Profiles() []Profile {
	out := make([]Profile, len(profileData.Profiles))
	for i, p := range profileData.Profiles {
		out[i] = p.clone()
	}
	return out
}

// LookupProfile returns the profile called name, resolving the short
// Hikube aliases first, so the returned Profile.Name may differ from name:
//
//	centos   -> centos.stream9
//	windows  -> windows.2k25 (SATA + e1000e: installs without extra drivers;
//	            use windows.2k25.virtio with the virtio-win ISO)
//	rhel     -> rhel.9
//	opensuse -> opensuse.leap
//
// ubuntu, debian and fedora are real profile names. profiles.yaml records
// why each alias points where it does.
func LookupProfile(name string) (Profile, bool) {
	if target, ok := profileData.Aliases[name]; ok {
		name = target
	}
	i, ok := profileIndex[name]
	if !ok {
		return Profile{}, false
	}
	return profileData.Profiles[i].clone(), true
}

// ProfileAliases returns a copy of the alias table (short name -> profile
// name).
func ProfileAliases() map[string]string {
	return maps.Clone(profileData.Aliases)
}

// clone returns a copy that shares no pointer with p.
func (p Profile) clone() Profile {
	p.HyperV = clonePtr(p.HyperV)
	p.Clock = clonePtr(p.Clock)
	p.AutoattachGraphicsDevice = clonePtr(p.AutoattachGraphicsDevice)
	p.AutoattachMemBalloon = clonePtr(p.AutoattachMemBalloon)
	p.AutoattachSerialConsole = clonePtr(p.AutoattachSerialConsole)
	return p
}

// clonePtr returns a pointer to a copy of *v, or nil.
func clonePtr[T any](v *T) *T {
	if v == nil {
		return nil
	}
	c := *v
	return &c
}

// parseProfiles decodes and checks a profile table: unknown keys, duplicate
// names, values outside the enums, contradictory settings and aliases that
// shadow or miss a profile are all errors. Profiles come back sorted by name.
// Keys match fields ignoring case, as in encoding/json.
func parseProfiles(data []byte) (profileTable, error) {
	var table profileTable
	if err := yaml.UnmarshalStrict(data, &table); err != nil {
		return profileTable{}, fmt.Errorf("decoding profiles: %w", err)
	}
	if len(table.Profiles) == 0 {
		return profileTable{}, errors.New("decoding profiles: table is empty")
	}
	seen := make(map[string]bool, len(table.Profiles))
	var errs []error
	for i := range table.Profiles {
		p := &table.Profiles[i]
		if seen[p.Name] {
			errs = append(errs, fmt.Errorf("profile %q: duplicate name", p.Name))
		}
		seen[p.Name] = true
		for _, err := range p.complete() {
			errs = append(errs, fmt.Errorf("profile %q: %w", p.Name, err))
		}
	}
	for _, alias := range slices.Sorted(maps.Keys(table.Aliases)) {
		target := table.Aliases[alias]
		switch {
		case alias == "":
			errs = append(errs, errors.New("alias: empty name"))
		case seen[alias]:
			// An alias must never change what a real name means.
			errs = append(errs, fmt.Errorf("alias %q: shadows a profile", alias))
		case !seen[target]:
			errs = append(errs, fmt.Errorf("alias %q: target %q is not a profile", alias, target))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return profileTable{}, err
	}
	slices.SortFunc(table.Profiles, func(a, b Profile) int { return strings.Compare(a.Name, b.Name) })
	return table, nil
}

// complete fills the derived fields and returns every inconsistency.
func (p *Profile) complete() []error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(p.Name != "" && strings.ToLower(p.Name) == p.Name && !strings.ContainsAny(p.Name, " /"), "name must be non-empty lowercase without spaces or slashes")
	check(p.DisplayName != "", "displayName is required")
	check(slices.Contains([]OSType{OSLinux, OSWindows, OSLegacy}, p.OS), "os %q: unknown", p.OS)
	check(slices.Contains([]DiskBus{DiskBusVirtio, DiskBusSATA, DiskBusSCSI}, p.DiskBus), "diskBus %q: unknown", p.DiskBus)
	check(slices.Contains([]NICModel{NICModelVirtio, NICModelE1000, NICModelE1000E, NICModelRTL8139}, p.NICModel), "nicModel %q: unknown", p.NICModel)
	check(slices.Contains([]Firmware{FirmwareBIOS, FirmwareEFI}, p.Firmware), "firmware %q: unknown", p.Firmware)
	// OVMF only enforces Secure Boot with SMM, and only EFI has NVRAM.
	check(!p.SecureBoot || (p.Firmware == FirmwareEFI && p.SMM), "secureBoot requires firmware efi and smm")
	check(!p.PersistentNVRAM || p.Firmware == FirmwareEFI, "persistentNVRAM requires firmware efi")
	check(!p.TPMPersistent || p.TPM, "tpmPersistent requires tpm")
	check(p.CPUTopology == "" || slices.Contains([]CPUTopology{CPUTopologySockets, CPUTopologyCores, CPUTopologyThreads, CPUTopologySpread, CPUTopologyAny}, p.CPUTopology), "cpuTopology %q: unknown", p.CPUTopology)
	if p.CPUTopology == CPUTopologySpread {
		check(slices.Contains([]SpreadAcross{SpreadSocketsCores, SpreadSocketsCoresThreads, SpreadCoresThreads}, p.SpreadAcross), "spreadAcross %q: unknown", p.SpreadAcross)
		check(p.SpreadRatio >= 1, "spreadRatio %d: must be at least 1", p.SpreadRatio)
	} else {
		check(p.SpreadAcross == "" && p.SpreadRatio == 0, "spreadAcross/spreadRatio require cpuTopology spread")
	}
	if p.InputTablet {
		check(slices.Contains([]InputBus{InputBusUSB, InputBusVirtio}, p.InputBus), "inputBus %q: unknown", p.InputBus)
	} else {
		check(p.InputBus == "", "inputBus requires inputTablet")
	}
	if p.Clock != nil {
		check(p.Clock.Offset == "utc" || p.Clock.Offset == "localtime", "clock offset %q: unknown", p.Clock.Offset)
		for _, tp := range []string{p.Clock.PITTickPolicy, p.Clock.RTCTickPolicy} {
			check(slices.Contains([]string{"", "delay", "catchup", "merge", "discard"}, tp), "clock tick policy %q: unknown", tp)
		}
	}
	check(p.HyperV == nil || p.HyperV.Spinlocks == 0 || p.HyperV.Spinlocks >= 4095, "hyperv spinlocks %d: must be 0 or at least 4095", spinlocks(p.HyperV))
	check(p.TerminationGracePeriodSeconds >= 0, "terminationGracePeriodSeconds must not be negative")
	r := &p.Requirements
	check(r.MinCPU >= 0, "requirements minCPU %d: must not be negative", r.MinCPU)
	if r.MinMemoryQuantity != "" {
		v, err := parseBytes(r.MinMemoryQuantity)
		if err != nil {
			errs = append(errs, fmt.Errorf("requirements minMemory: %w", err))
		}
		r.MinMemory = v
	}
	check(r.Architecture == "" || slices.Contains([]Arch{ArchAMD64, ArchARM64, ArchS390X}, r.Architecture), "requirements architecture %q: unknown", r.Architecture)
	if err := checkSource(p.Source, SourceKubeVirt, SourceCozystack); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// spinlocks is h.Spinlocks, or 0 for nil, for error messages.
func spinlocks(h *HyperV) int {
	if h == nil {
		return 0
	}
	return h.Spinlocks
}
