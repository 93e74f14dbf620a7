package hypervisor

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
	"libvirt.org/go/libvirtxml"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// MetadataNamespace is the XML namespace of the element vmd writes into a
// domain's <metadata>. It identifies domains vmd owns and carries the
// VMInstance's uid and generation, so a restarted vmd re-adopts running
// domains instead of restarting them. Changing it orphans every existing
// domain: bump the trailing version only with a migration.
const MetadataNamespace = "https://vmd.cozystack.io/xmlns/domain/1"

// Domain types (libvirt <domain type=...>): kvm needs a working /dev/kvm;
// qemu is TCG, pure emulation, which is what the lab host can run.
const (
	DomainTypeKVM  = "kvm"
	DomainTypeQEMU = "qemu"
)

// OVMF firmware images of Debian 12's ovmf package, the same pairs its QEMU
// firmware descriptors (/usr/share/qemu/firmware/{40,60}-edk2-*.json)
// advertise. The 4 MiB builds are used because the 2 MiB ones have no room
// for large Secure Boot variable stores. The secure code image requires SMM;
// its variable template has Microsoft's keys enrolled, so Windows and
// shim-signed Linux boot with Secure Boot enforced.
const (
	DefaultOVMFCode       = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	DefaultOVMFVars       = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	DefaultOVMFSecureCode = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd"
	DefaultOVMFSecureVars = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
)

// Disk image formats a DiskSpec may name.
const (
	DiskFormatQCOW2 = "qcow2"
	DiskFormatRaw   = "raw"
)

// DiskSpec is one user disk (a VMDisk) of a domain, in boot order.
type DiskSpec struct {
	// Path is the absolute path of the image file.
	Path string
	// Format is DiskFormatQCOW2 or DiskFormatRaw.
	Format string
	// Bus overrides the profile's disk bus ("" = the profile's, SATA
	// without a profile). Optical disks default to SATA whatever the
	// profile says, as KubeVirt does on amd64.
	Bus DiskBus
	// Optical attaches the image as a read-only CD-ROM (a VMDisk with the
	// vm-disk.cozystack.io/optical annotation).
	Optical bool
	// ReadOnly attaches a hard disk read-only.
	ReadOnly bool
	// BackingPath is the base image Path is a copy-on-write overlay of,
	// with its format (DiskFormatQCOW2 or DiskFormatRaw); "" for a
	// standalone image. The domain then names the backing chain itself,
	// with libvirt's DAC relabelling off for the base: otherwise libvirt
	// chowns the base to qemu's user for each VM it starts, and a golden
	// base shared by every tenant's VMs would belong to whichever qemu
	// started last, which could make it writable and change what all the
	// others read. The base stays root's, 0444, and qemu reads it through
	// its "other" permission (vmd's directories are 0711).
	BackingPath, BackingFormat string
}

// NICSpec is one network interface. Bridge, TapName or both must be set:
// Bridge alone lets libvirt create and enslave a tap; Bridge with TapName
// also fixes the tap's name (so firewall rules can name it); TapName alone
// attaches a tap vmd's network layer created beforehand (type='ethernet',
// managed='no').
type NICSpec struct {
	// MAC is the guest MAC address; it is kept stable across rebuilds so
	// the guest's DHCP lease and interface naming survive.
	MAC     string
	Bridge  string
	TapName string
	// Model overrides the profile's NIC model ("" = the profile's, virtio
	// without a profile).
	Model NICModel
}

// PCIAddress is a host PCI address in the canonical sysfs form
// "dddd:bb:ss.f" (e.g. "0000:65:00.0").
type PCIAddress string

// pciAddressRE matches the canonical form: slot is at most 0x1f and
// function at most 7.
var pciAddressRE = regexp.MustCompile(`^([0-9a-f]{4}):([0-9a-f]{2}):([01][0-9a-f])\.([0-7])$`)

// parts returns the address's domain, bus, slot and function, or ok=false
// when it is not canonical.
func (a PCIAddress) parts() (domain, bus, slot, function uint, ok bool) {
	m := pciAddressRE.FindStringSubmatch(string(a))
	if m == nil {
		return 0, 0, 0, 0, false
	}
	var v [4]uint
	for i := range v {
		n, err := strconv.ParseUint(m[i+1], 16, 16)
		if err != nil {
			return 0, 0, 0, 0, false
		}
		v[i] = uint(n)
	}
	return v[0], v[1], v[2], v[3], true
}

// DomainSpec is everything BuildDomain needs to write a VMInstance's domain
// XML. It is richer than DomainRequest (the Driver port's input) because
// it also carries host facts (paths, capabilities) and the resolved
// instance type and profile. The zero values mean "not requested".
type DomainSpec struct {
	// Name is the libvirt domain name, DomainName(vmName).
	Name string
	// UUID is the SMBIOS system UUID (StableUUID); the guest also sees it
	// as its NoCloud instance-id.
	UUID string
	// Namespace, VMName, UID and Generation identify the VMInstance the
	// domain realises; they are written into the domain's <metadata>.
	Namespace  string
	VMName     string
	UID        string
	Generation int64
	// Type is DomainTypeKVM or DomainTypeQEMU.
	Type string

	// InstanceType sizes the guest; nil means custom sizing from VCPUs,
	// Sockets, Cores and MemoryBytes. With an instance type, VCPUs and
	// MemoryBytes may be left zero (or must agree with it) and Sockets
	// and Cores must be zero: the profile lays the vCPUs out.
	InstanceType *InstanceType
	VCPUs        int
	// Sockets × Cores is the custom topology (Cozystack's resources.sockets
	// and resources.cpu, cores per socket). Both zero lets the profile lay
	// out VCPUs.
	Sockets, Cores int
	MemoryBytes    int64

	// Profile supplies device and firmware choices; nil means no preference
	// (KubeVirt's amd64 defaults: SATA disks, virtio NIC, BIOS).
	Profile *Profile
	// CPUModel is the VMInstance's cpuModel: "" (host-model on kvm, the
	// emulator's default on qemu), "host-model", "host-passthrough",
	// "maximum" or a libvirt CPU model name such as "Skylake-Server".
	CPUModel string

	// Disks are the user disks in boot order (boot order i+1).
	Disks []DiskSpec
	// CloudInitISO is the NoCloud seed; "" attaches none. It is attached
	// after every user disk and never booted from.
	CloudInitISO string
	// NICs are the network interfaces in guest order.
	NICs []NICSpec

	// SerialLogPath, when set, receives a copy of everything the guest
	// writes to its serial console (vmctl logs).
	SerialLogPath string
	// VNCSocket is the unix socket VNC listens on. Qemu creates it, so its
	// directory must be writable by qemu's user (libvirt-qemu on a stock
	// host), which vmd's own directories are not.
	VNCSocket string
	// VNCAutoSocket, when VNCSocket is "", makes VNC listen on a unix
	// socket libvirt names and places in its per-domain directory, which
	// it makes qemu's own; the live domain XML gives the path (see
	// libvirt.Conn.VNCSocket). Neither set listens on 127.0.0.1 on a port
	// libvirt picks, reachable by every local user.
	VNCAutoSocket bool

	// NVRAMPath is the per-domain EFI variable store; required when the
	// profile boots EFI. libvirt copies the template into it on first start.
	NVRAMPath string
	// OVMFCode and OVMFVars override the firmware code image and the
	// variable-store template ("" = the Default* constants matching the
	// profile's Secure Boot setting).
	OVMFCode, OVMFVars string
	// TPMStatePath is the directory swtpm keeps the vTPM state in, written
	// as <backend><source type='dir'>. Only libvirt releases newer than
	// Debian 12's 9.0 know that element (9.0's schema rejects it): leave it
	// empty there, and libvirt keeps the state under
	// /var/lib/libvirt/swtpm/<uuid> (removed by undefine with the TPM flag).
	TPMStatePath string

	// HugepagesAvailable says the host has hugepages of the size the
	// instance type asks for. Without them the domain uses ordinary pages
	// and BuildResult carries a warning.
	HugepagesAvailable bool
	// DedicatedCPUsAvailable says the host can dedicate CPUs to this
	// domain; PinnedCPUs then lists the host CPUs reserved for it: one per
	// vCPU, plus one for QEMU's emulator thread when the instance type
	// isolates it. Pinning needs a host CPU inventory that only the
	// caller has, so the builder never invents CPU numbers.
	DedicatedCPUsAvailable bool
	PinnedCPUs             []uint

	// GPUs are host PCI devices passed through with VFIO (kvm only).
	GPUs []PCIAddress
}

// BuildResult is a domain's XML and what the host could not honour.
type BuildResult struct {
	// XML is the libvirt domain definition.
	XML string
	// Warnings name every instance-type or profile request the domain
	// does not carry out (hugepages, dedicated CPUs, NUMA passthrough...),
	// for the VMInstance's conditions.
	Warnings []string
}

// BuildDomain validates s and returns the libvirt domain XML realising it.
// It is a pure function of s: the same spec gives byte-identical XML, so a
// caller can compare it with what libvirt holds. Invalid specs return an
// error matching errdefs.ErrInvalid that names every offending field.
// Requests the host cannot honour are not errors: the domain is built
// without them and BuildResult.Warnings says so.
func BuildDomain(s DomainSpec) (BuildResult, error) {
	b := &builder{spec: s}
	if err := b.resolve(); err != nil {
		return BuildResult{}, err
	}
	dom := b.domain()
	out, err := dom.Marshal()
	if err != nil {
		return BuildResult{}, fmt.Errorf("marshalling domain %s: %w", s.Name, err)
	}
	return BuildResult{XML: out + "\n", Warnings: b.warnings}, nil
}

// builder carries the validated, resolved choices from resolve to domain.
type builder struct {
	spec     DomainSpec
	errs     field.ErrorList
	warnings []string

	vcpus                   int
	sockets, cores, threads int
	memoryKiB               uint
	hugepageKiB             uint
	diskBus                 DiskBus  // the profile's bus, for disks and the seed
	nicModel                NICModel // the profile's NIC model
	efi, secureBoot         bool
	pin                     bool // vCPUs (and maybe the emulator) are pinned
	ioThreads               uint
	diskIOThread            []uint // per user disk; 0 = none
}

// Field paths used in validation errors.
var (
	pathName          = field.NewPath("name")
	pathUUID          = field.NewPath("uuid")
	pathNamespace     = field.NewPath("namespace")
	pathVMName        = field.NewPath("vmName")
	pathUID           = field.NewPath("uid")
	pathGeneration    = field.NewPath("generation")
	pathType          = field.NewPath("type")
	pathVCPUs         = field.NewPath("vcpus")
	pathSockets       = field.NewPath("sockets")
	pathCores         = field.NewPath("cores")
	pathMemory        = field.NewPath("memoryBytes")
	pathProfile       = field.NewPath("profile")
	pathCPUModel      = field.NewPath("cpuModel")
	pathDisks         = field.NewPath("disks")
	pathCloudInit     = field.NewPath("cloudInitISO")
	pathNICs          = field.NewPath("nics")
	pathSerialLog     = field.NewPath("serialLogPath")
	pathVNCSocket     = field.NewPath("vncSocket")
	pathNVRAM         = field.NewPath("nvramPath")
	pathOVMFCode      = field.NewPath("ovmfCode")
	pathOVMFVars      = field.NewPath("ovmfVars")
	pathTPMState      = field.NewPath("tpmStatePath")
	pathPinnedCPUs    = field.NewPath("pinnedCPUs")
	pathGPUs          = field.NewPath("gpus")
	domainNameRE      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	uuidRE            = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	cpuModelRE        = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	supportedBuses    = []string{string(DiskBusVirtio), string(DiskBusSATA), string(DiskBusSCSI)}
	supportedNICs     = []string{string(NICModelVirtio), string(NICModelE1000), string(NICModelE1000E), string(NICModelRTL8139)}
	supportedFormats  = []string{DiskFormatQCOW2, DiskFormatRaw}
	supportedDomTypes = []string{DomainTypeKVM, DomainTypeQEMU}
)

// warnf records a request the domain does not carry out.
func (b *builder) warnf(format string, args ...any) {
	b.warnings = append(b.warnings, fmt.Sprintf(format, args...))
}

// resolve validates the spec and computes every derived choice. It
// collects all field errors before failing so the caller sees them at once.
func (b *builder) resolve() error {
	s := &b.spec
	b.checkIdentity()
	b.resolveSizing()
	b.resolveProfile()
	b.resolveCPUModel()
	b.resolveDisks()
	b.resolveNICs()
	b.checkPath(pathSerialLog, s.SerialLogPath, false)
	b.checkPath(pathVNCSocket, s.VNCSocket, false)
	b.resolveFirmware()
	b.resolveGPUs()
	b.resolvePlacement()
	if len(b.errs) > 0 {
		return errdefs.NewInvalid("domain", s.Name, b.errs)
	}
	b.resolveIOThreads()
	return nil
}

// checkIdentity validates the names written into the domain.
func (b *builder) checkIdentity() {
	s := &b.spec
	switch {
	case s.Name == "":
		b.errs = append(b.errs, field.Required(pathName, "the libvirt domain name"))
	case !domainNameRE.MatchString(s.Name):
		b.errs = append(b.errs, field.Invalid(pathName, s.Name, "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"))
	}
	switch {
	case s.UUID == "":
		b.errs = append(b.errs, field.Required(pathUUID, "the SMBIOS UUID"))
	case !uuidRE.MatchString(s.UUID):
		b.errs = append(b.errs, field.Invalid(pathUUID, s.UUID, "must be a lowercase canonical UUID"))
	}
	for _, f := range []struct {
		path  *field.Path
		value string
	}{{pathNamespace, s.Namespace}, {pathVMName, s.VMName}, {pathUID, s.UID}} {
		if f.value == "" {
			b.errs = append(b.errs, field.Required(f.path, "needed to re-adopt the domain"))
		}
	}
	if s.Generation < 0 {
		b.errs = append(b.errs, field.Invalid(pathGeneration, s.Generation, "must not be negative"))
	}
	if s.Type != DomainTypeKVM && s.Type != DomainTypeQEMU {
		b.errs = append(b.errs, field.NotSupported(pathType, s.Type, supportedDomTypes))
	}
}

// resolveSizing settles vCPUs, memory and the custom topology.
func (b *builder) resolveSizing() {
	s := &b.spec
	vcpus, mem := s.VCPUs, s.MemoryBytes
	if it := s.InstanceType; it != nil {
		if vcpus != 0 && vcpus != it.CPU {
			b.errs = append(b.errs, field.Invalid(pathVCPUs, vcpus, fmt.Sprintf("instance type %s has %d vCPUs; leave vcpus 0", it.Name, it.CPU)))
		}
		if mem != 0 && mem != it.Memory {
			b.errs = append(b.errs, field.Invalid(pathMemory, mem, fmt.Sprintf("instance type %s has %d bytes; leave memoryBytes 0", it.Name, it.Memory)))
		}
		if s.Sockets != 0 || s.Cores != 0 {
			b.errs = append(b.errs, field.Forbidden(pathSockets, "sockets and cores conflict with an instance type (KubeVirt rejects both); the profile lays out its vCPUs"))
		}
		vcpus, mem = it.CPU, it.Memory
	}
	if vcpus < 1 {
		b.errs = append(b.errs, field.Invalid(pathVCPUs, vcpus, "must be at least 1"))
	}
	switch {
	case mem <= 0:
		b.errs = append(b.errs, field.Invalid(pathMemory, mem, "must be positive"))
	case mem%1024 != 0:
		b.errs = append(b.errs, field.Invalid(pathMemory, mem, "must be a whole number of KiB"))
	}
	switch {
	case s.Sockets == 0 && s.Cores == 0:
	case s.Sockets < 1:
		b.errs = append(b.errs, field.Invalid(pathSockets, s.Sockets, "must be at least 1 when cores is set"))
	case s.Cores < 1:
		b.errs = append(b.errs, field.Invalid(pathCores, s.Cores, "must be at least 1 when sockets is set"))
	case s.Sockets*s.Cores != vcpus:
		b.errs = append(b.errs, field.Invalid(pathVCPUs, vcpus, fmt.Sprintf("must equal sockets × cores = %d", s.Sockets*s.Cores)))
	}
	b.vcpus = vcpus
	b.memoryKiB = uint(mem / 1024)
}

// resolveProfile picks the profile's buses and firmware, or KubeVirt's
// amd64 defaults without a profile.
func (b *builder) resolveProfile() {
	p := b.spec.Profile
	b.diskBus, b.nicModel = DiskBusSATA, NICModelVirtio
	if p == nil {
		return
	}
	// vmd builds x86_64 domains only; KubeVirt would refuse an arm64 or
	// s390x preference on an amd64 node at admission.
	if a := p.Requirements.Architecture; a != "" && a != ArchAMD64 {
		b.errs = append(b.errs, field.Invalid(pathProfile, p.Name, fmt.Sprintf("requires architecture %s; vmd builds x86_64 (amd64) domains", a)))
	}
	b.diskBus, b.nicModel = p.DiskBus, p.NICModel
	b.efi = p.Firmware == FirmwareEFI
	b.secureBoot = b.efi && p.SecureBoot
}

// resolveCPUModel validates cpuModel; what it becomes depends on Type.
func (b *builder) resolveCPUModel() {
	m := b.spec.CPUModel
	if m != "" && !cpuModelRE.MatchString(m) {
		b.errs = append(b.errs, field.Invalid(pathCPUModel, m, "must be host-model, host-passthrough, maximum or a libvirt CPU model name"))
	}
	if b.spec.Type == DomainTypeQEMU && (m == "host-model" || m == "host-passthrough") {
		// Both copy the host CPU through KVM; TCG cannot expose it.
		b.warnf("cpuModel %s needs KVM; the qemu (TCG) domain uses the emulator's default CPU", m)
	}
}

// resolveDisks validates the user disks and the cloud-init seed.
func (b *builder) resolveDisks() {
	s := &b.spec
	seen := map[string]bool{}
	for i, d := range s.Disks {
		p := pathDisks.Index(i)
		if b.checkPath(p.Child("path"), d.Path, true) {
			if seen[d.Path] {
				b.errs = append(b.errs, field.Duplicate(p.Child("path"), d.Path))
			}
			seen[d.Path] = true
		}
		if d.Format != DiskFormatQCOW2 && d.Format != DiskFormatRaw {
			b.errs = append(b.errs, field.NotSupported(p.Child("format"), d.Format, supportedFormats))
		}
		if b.checkPath(p.Child("backingPath"), d.BackingPath, false) {
			switch {
			case d.Format != DiskFormatQCOW2:
				b.errs = append(b.errs, field.Invalid(p.Child("backingPath"), d.BackingPath, "only a qcow2 image has a backing file"))
			case d.BackingPath == d.Path:
				b.errs = append(b.errs, field.Invalid(p.Child("backingPath"), d.BackingPath, "an image cannot be its own backing file"))
			case d.BackingFormat != DiskFormatQCOW2 && d.BackingFormat != DiskFormatRaw:
				b.errs = append(b.errs, field.NotSupported(p.Child("backingFormat"), d.BackingFormat, supportedFormats))
			}
		}
		switch d.Bus {
		case "", DiskBusSATA, DiskBusSCSI:
		case DiskBusVirtio:
			if d.Optical {
				b.errs = append(b.errs, field.Invalid(p.Child("bus"), d.Bus, "virtio cannot carry a CD-ROM; use sata or scsi"))
			}
		default:
			b.errs = append(b.errs, field.NotSupported(p.Child("bus"), string(d.Bus), supportedBuses))
		}
	}
	if b.checkPath(pathCloudInit, s.CloudInitISO, false) && seen[s.CloudInitISO] {
		b.errs = append(b.errs, field.Duplicate(pathCloudInit, s.CloudInitISO))
	}
}

// resolveNICs validates the interfaces.
func (b *builder) resolveNICs() {
	seen := map[string]bool{}
	for i, n := range b.spec.NICs {
		p := pathNICs.Index(i)
		mac, err := net.ParseMAC(n.MAC)
		switch {
		case n.MAC == "":
			b.errs = append(b.errs, field.Required(p.Child("mac"), "a stable MAC keeps the guest's interface and lease"))
		case err != nil || len(mac) != 6:
			b.errs = append(b.errs, field.Invalid(p.Child("mac"), n.MAC, "must be an EUI-48 address such as 52:54:00:12:34:56"))
		case mac[0]&1 == 1:
			b.errs = append(b.errs, field.Invalid(p.Child("mac"), n.MAC, "must be a unicast address"))
		case seen[mac.String()]:
			b.errs = append(b.errs, field.Duplicate(p.Child("mac"), n.MAC))
		default:
			seen[mac.String()] = true
		}
		if n.Bridge == "" && n.TapName == "" {
			b.errs = append(b.errs, field.Required(p.Child("bridge"), "set bridge, tapName or both"))
		}
		b.checkIfName(p.Child("bridge"), n.Bridge)
		b.checkIfName(p.Child("tapName"), n.TapName)
		switch n.Model {
		case "", NICModelVirtio, NICModelE1000, NICModelE1000E, NICModelRTL8139:
		default:
			b.errs = append(b.errs, field.NotSupported(p.Child("model"), string(n.Model), supportedNICs))
		}
	}
}

// checkIfName validates an optional Linux interface name.
func (b *builder) checkIfName(p *field.Path, name string) {
	if name == "" {
		return
	}
	// IFNAMSIZ is 16 including the NUL; '/', ':' and whitespace break
	// sysfs paths and alias syntax.
	if len(name) > 15 || name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n") {
		b.errs = append(b.errs, field.Invalid(p, name, "must be a Linux interface name of at most 15 characters without '/', ':' or spaces"))
	}
}

// checkPath validates an absolute, clean path; required says whether ""
// is an error. It reports whether the path is usable and non-empty.
func (b *builder) checkPath(p *field.Path, path string, required bool) bool {
	switch {
	case path == "":
		if required {
			b.errs = append(b.errs, field.Required(p, "an absolute path"))
		}
		return false
	case !filepath.IsAbs(path) || filepath.Clean(path) != path:
		b.errs = append(b.errs, field.Invalid(p, path, "must be an absolute, clean path"))
		return false
	}
	return true
}

// resolveFirmware validates the EFI and vTPM paths the profile needs.
func (b *builder) resolveFirmware() {
	s := &b.spec
	if b.efi {
		if s.NVRAMPath == "" {
			b.errs = append(b.errs, field.Required(pathNVRAM, fmt.Sprintf("profile %s boots EFI and needs a per-domain variable store", s.Profile.Name)))
		}
		b.checkPath(pathNVRAM, s.NVRAMPath, false)
		b.checkPath(pathOVMFCode, s.OVMFCode, false)
		b.checkPath(pathOVMFVars, s.OVMFVars, false)
	}
	if s.Profile != nil && s.Profile.TPM {
		b.checkPath(pathTPMState, s.TPMStatePath, false)
	}
}

// resolveGPUs validates the passthrough devices.
func (b *builder) resolveGPUs() {
	seen := map[PCIAddress]bool{}
	for i, a := range b.spec.GPUs {
		p := pathGPUs.Index(i)
		if _, _, _, _, ok := a.parts(); !ok {
			b.errs = append(b.errs, field.Invalid(p, string(a), "must be a PCI address dddd:bb:ss.f in lowercase hex, e.g. 0000:65:00.0"))
			continue
		}
		if seen[a] {
			b.errs = append(b.errs, field.Duplicate(p, string(a)))
		}
		seen[a] = true
	}
	if len(b.spec.GPUs) > 0 && b.spec.Type != DomainTypeKVM {
		b.errs = append(b.errs, field.Forbidden(pathGPUs, "PCI passthrough (VFIO) needs a kvm domain"))
	}
}

// resolvePlacement settles the topology and the host-dependent placement
// the instance type asks for: hugepages, dedicated CPUs, NUMA, realtime.
func (b *builder) resolvePlacement() {
	s := &b.spec
	if b.vcpus >= 1 {
		b.sockets, b.cores, b.threads = b.topology()
	}
	it := s.InstanceType
	if it == nil {
		if len(s.PinnedCPUs) > 0 {
			b.errs = append(b.errs, field.Forbidden(pathPinnedCPUs, "only instance types with dedicated CPUs are pinned"))
		}
		return
	}
	if it.Hugepages != "" {
		if s.HugepagesAvailable {
			b.hugepageKiB = uint(hugepageBytes[it.Hugepages] / 1024)
		} else {
			b.warnf("hugepages %s requested by %s are not available on this host; guest memory uses ordinary pages", it.Hugepages, it.Name)
		}
	}
	switch {
	case !it.DedicatedCPU:
		if len(s.PinnedCPUs) > 0 {
			b.errs = append(b.errs, field.Forbidden(pathPinnedCPUs, fmt.Sprintf("instance type %s does not dedicate CPUs", it.Name)))
		}
	case !s.DedicatedCPUsAvailable:
		b.warnf("dedicated CPUs requested by %s are not available on this host; vCPUs share host CPUs", it.Name)
		if len(s.PinnedCPUs) > 0 {
			b.errs = append(b.errs, field.Forbidden(pathPinnedCPUs, "set only when dedicatedCPUsAvailable"))
		}
	default:
		want := b.vcpus
		if it.IsolateEmulatorThread {
			want++
		}
		if len(s.PinnedCPUs) != want {
			why := "one per vCPU"
			if it.IsolateEmulatorThread {
				why += " and one for the emulator thread"
			}
			b.errs = append(b.errs, field.Invalid(pathPinnedCPUs, len(s.PinnedCPUs), fmt.Sprintf("instance type %s needs %d reserved host CPUs, %s", it.Name, want, why)))
			break
		}
		seen := map[uint]bool{}
		for i, c := range s.PinnedCPUs {
			if seen[c] {
				b.errs = append(b.errs, field.Duplicate(pathPinnedCPUs.Index(i), c))
			}
			seen[c] = true
		}
		b.pin = true
	}
	if it.NUMAPassthrough {
		b.warnf("NUMA passthrough requested by %s is not applied; the guest sees one NUMA node", it.Name)
	}
	if it.Realtime && !b.pin {
		b.warnf("realtime vCPU scheduling requested by %s needs dedicated CPUs; vCPUs use the default scheduler", it.Name)
	}
}

// topology lays out the vCPUs as sockets × cores × threads. Custom sizing
// keeps the given sockets × cores (Cozystack renders both); otherwise the
// profile's preferred topology applies as KubeVirt applies it, sockets
// being the default.
func (b *builder) topology() (sockets, cores, threads int) {
	s, n := &b.spec, b.vcpus
	if s.Sockets > 0 {
		return s.Sockets, s.Cores, 1
	}
	if s.Profile == nil {
		return n, 1, 1
	}
	p := s.Profile
	switch p.EffectiveCPUTopology() {
	case CPUTopologyCores:
		return 1, n, 1
	case CPUTopologyThreads:
		return 1, 1, n
	case CPUTopologySpread:
		r := p.SpreadRatio
		var per int
		var layout string
		switch p.SpreadAcross {
		case SpreadSocketsCores:
			sockets, cores, threads, per, layout = n/r, r, 1, r, fmt.Sprintf("sockets × %d cores", r)
		case SpreadSocketsCoresThreads:
			sockets, cores, threads, per, layout = n/(2*r), r, 2, 2*r, fmt.Sprintf("sockets × %d cores × 2 threads", r)
		case SpreadCoresThreads:
			sockets, cores, threads, per, layout = 1, n/2, 2, 2, "cores × 2 threads"
		}
		if n%per != 0 {
			// KubeVirt refuses such a VM at admission too.
			b.errs = append(b.errs, field.Invalid(pathVCPUs, n, fmt.Sprintf("profile %s spreads vCPUs as %s; the count must be a multiple of %d", p.Name, layout, per)))
			return n, 1, 1
		}
		return sockets, cores, threads
	default: // sockets, and any: KubeVirt puts instance-type vCPUs on sockets
		return n, 1, 1
	}
}

// effectiveBus is the bus a user disk is attached to.
func (b *builder) effectiveBus(d DiskSpec) DiskBus {
	switch {
	case d.Bus != "":
		return d.Bus
	case d.Optical:
		// No shipped preference sets preferredCdromBus: KubeVirt's amd64
		// default for CD-ROMs is SATA.
		return DiskBusSATA
	default:
		return b.diskBus
	}
}

// resolveIOThreads assigns IOThreads to virtio disks; it runs on a valid
// spec only. Only virtio-blk
// takes a per-disk IOThread; SATA disks have none, and SCSI disks would
// need it on the controller, which no shipped profile combines.
//
//   - profile dedicatedIOThreads: one IOThread per disk;
//   - instance type ioThreadsPolicy shared: one IOThread for all disks;
//   - auto (and supplementalPool): a pool of min(disks, 2 × vCPUs)
//     IOThreads shared round-robin, as KubeVirt sizes it.
//
// The cloud-init seed is read once at boot and gets none.
func (b *builder) resolveIOThreads() {
	s := &b.spec
	var virtio []int
	for i, d := range s.Disks {
		if !d.Optical && b.effectiveBus(d) == DiskBusVirtio {
			virtio = append(virtio, i)
		}
	}
	b.diskIOThread = make([]uint, len(s.Disks))
	if len(virtio) == 0 {
		return
	}
	pool := 0
	switch {
	case s.Profile != nil && s.Profile.DedicatedIOThreads:
		pool = len(virtio)
	case s.InstanceType == nil:
	case s.InstanceType.IOThreadsPolicy == IOThreadsPolicyShared:
		pool = 1
	case s.InstanceType.IOThreadsPolicy == IOThreadsPolicyAuto, s.InstanceType.IOThreadsPolicy == IOThreadsPolicySupplementalPool:
		pool = min(len(virtio), 2*b.vcpus)
	}
	if pool == 0 {
		return
	}
	for j, i := range virtio {
		b.diskIOThread[i] = uint(j%pool + 1)
	}
	b.ioThreads = uint(pool)
}

// domain assembles the libvirt domain from the resolved choices.
func (b *builder) domain() *libvirtxml.Domain {
	s := &b.spec
	d := &libvirtxml.Domain{
		Type:       s.Type,
		Name:       s.Name,
		UUID:       s.UUID,
		Title:      s.Namespace + "/" + s.VMName,
		Metadata:   &libvirtxml.DomainMetadata{XML: b.metadata()},
		Memory:     &libvirtxml.DomainMemory{Value: b.memoryKiB, Unit: "KiB"},
		VCPU:       &libvirtxml.DomainVCPU{Placement: "static", Value: uint(b.vcpus)},
		IOThreads:  b.ioThreads,
		CPUTune:    b.cpuTune(),
		OS:         b.os(),
		Features:   b.features(),
		CPU:        b.cpu(),
		Clock:      b.clock(),
		OnPoweroff: "destroy",
		// vmd's controller enforces runStrategy: libvirt only restarts a
		// rebooting guest and leaves crashed or powered-off guests down.
		OnReboot: "restart",
		OnCrash:  "destroy",
		Devices:  b.devices(),
	}
	if b.hugepageKiB > 0 {
		d.MemoryBacking = &libvirtxml.DomainMemoryBacking{
			MemoryHugePages: &libvirtxml.DomainMemoryHugepages{
				Hugepages: []libvirtxml.DomainMemoryHugepage{{Size: b.hugepageKiB, Unit: "KiB"}},
			},
		}
	}
	return d
}

// ownerXML is the metadata element as vmd writes it, with the prefix "vmd"
// bound to MetadataNamespace. encoding/xml cannot emit a namespace prefix,
// so the prefix is spelled out in the names; readers (ReadDomainOwner,
// libvirt) resolve it like any other prefix.
type ownerXML struct {
	XMLName    xml.Name `xml:"vmd:instance"`
	XMLNS      string   `xml:"xmlns:vmd,attr"`
	Namespace  string   `xml:"vmd:namespace"`
	Name       string   `xml:"vmd:name"`
	UID        string   `xml:"vmd:uid"`
	Generation int64    `xml:"vmd:generation"`
}

// metadata returns the <metadata> content identifying the VMInstance.
func (b *builder) metadata() string {
	s := &b.spec
	out, err := xml.Marshal(ownerXML{XMLNS: MetadataNamespace, Namespace: s.Namespace, Name: s.VMName, UID: s.UID, Generation: s.Generation})
	if err != nil {
		// Only strings and an integer: encoding cannot fail.
		panic(fmt.Sprintf("hypervisor: marshalling domain metadata: %v", err))
	}
	return string(out)
}

// DomainOwner is the VMInstance a domain was built for, as recorded in the
// domain's metadata by BuildDomain.
type DomainOwner struct {
	Namespace  string
	Name       string
	UID        string
	Generation int64
}

// ReadDomainOwner returns the owner recorded in a domain XML (as libvirt
// dumps it), and false when the domain carries no vmd metadata, i.e. it is
// not vmd's to manage.
func ReadDomainOwner(domainXML string) (DomainOwner, bool, error) {
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(domainXML); err != nil {
		return DomainOwner{}, false, fmt.Errorf("parsing domain xml: %w", err)
	}
	if dom.Metadata == nil {
		return DomainOwner{}, false, nil
	}
	// The metadata holds one element per application; wrap them so the
	// decoder sees a single document and resolves each element's prefix.
	var doc struct {
		Owners []struct {
			Namespace  string `xml:"https://vmd.cozystack.io/xmlns/domain/1 namespace"`
			Name       string `xml:"https://vmd.cozystack.io/xmlns/domain/1 name"`
			UID        string `xml:"https://vmd.cozystack.io/xmlns/domain/1 uid"`
			Generation int64  `xml:"https://vmd.cozystack.io/xmlns/domain/1 generation"`
		} `xml:"https://vmd.cozystack.io/xmlns/domain/1 instance"`
	}
	var buf bytes.Buffer
	buf.WriteString("<metadata>")
	buf.WriteString(dom.Metadata.XML)
	buf.WriteString("</metadata>")
	if err := xml.Unmarshal(buf.Bytes(), &doc); err != nil {
		return DomainOwner{}, false, fmt.Errorf("parsing domain metadata: %w", err)
	}
	switch len(doc.Owners) {
	case 0:
		return DomainOwner{}, false, nil
	case 1:
		o := doc.Owners[0]
		return DomainOwner{Namespace: o.Namespace, Name: o.Name, UID: o.UID, Generation: o.Generation}, true, nil
	default:
		return DomainOwner{}, false, fmt.Errorf("parsing domain metadata: %d vmd instance elements", len(doc.Owners))
	}
}

// cpuTune pins vCPUs and the emulator thread to the reserved host CPUs.
func (b *builder) cpuTune() *libvirtxml.DomainCPUTune {
	if !b.pin {
		return nil
	}
	s := &b.spec
	t := &libvirtxml.DomainCPUTune{}
	for i := range b.vcpus {
		t.VCPUPin = append(t.VCPUPin, libvirtxml.DomainCPUTuneVCPUPin{VCPU: uint(i), CPUSet: strconv.FormatUint(uint64(s.PinnedCPUs[i]), 10)})
	}
	if s.InstanceType.IsolateEmulatorThread {
		t.EmulatorPin = &libvirtxml.DomainCPUTuneEmulatorPin{CPUSet: strconv.FormatUint(uint64(s.PinnedCPUs[b.vcpus]), 10)}
	}
	if s.InstanceType.Realtime {
		// KubeVirt's realtime: FIFO priority 1 on every pinned vCPU.
		prio := 1
		t.VCPUSched = []libvirtxml.DomainCPUTuneVCPUSched{{VCPUs: fmt.Sprintf("0-%d", b.vcpus-1), Scheduler: "fifo", Priority: &prio}}
	}
	return t
}

// os selects q35 and, for EFI profiles, OVMF with an explicit loader (no
// firmware auto-selection: the pair must not change under a domain whose
// NVRAM was made from a given template).
func (b *builder) os() *libvirtxml.DomainOS {
	s := &b.spec
	o := &libvirtxml.DomainOS{Type: &libvirtxml.DomainOSType{Arch: "x86_64", Machine: "q35", Type: "hvm"}}
	if !b.efi {
		return o
	}
	code, vars, secure := DefaultOVMFCode, DefaultOVMFVars, "no"
	if b.secureBoot {
		code, vars, secure = DefaultOVMFSecureCode, DefaultOVMFSecureVars, "yes"
	}
	if s.OVMFCode != "" {
		code = s.OVMFCode
	}
	if s.OVMFVars != "" {
		vars = s.OVMFVars
	}
	o.Loader = &libvirtxml.DomainLoader{Path: code, Readonly: "yes", Secure: secure, Type: "pflash"}
	o.NVRam = &libvirtxml.DomainNVRam{NVRam: s.NVRAMPath, Template: vars}
	return o
}

// features enables ACPI and APIC always (KubeVirt's default; ACPI is what
// a graceful shutdown presses), SMM and Hyper-V when the profile asks.
func (b *builder) features() *libvirtxml.DomainFeatureList {
	f := &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}, APIC: &libvirtxml.DomainFeatureAPIC{}}
	p := b.spec.Profile
	if p == nil {
		return f
	}
	if p.SMM || b.secureBoot {
		f.SMM = &libvirtxml.DomainFeatureSMM{State: "on"}
	}
	if h := p.HyperV; h != nil {
		f.HyperV = hyperV(h)
	}
	return f
}

// hyperV maps the profile's enlightenments one to one.
func hyperV(h *HyperV) *libvirtxml.DomainFeatureHyperV {
	on := func(b bool) *libvirtxml.DomainFeatureState {
		if !b {
			return nil
		}
		return &libvirtxml.DomainFeatureState{State: "on"}
	}
	x := &libvirtxml.DomainFeatureHyperV{
		Mode:            "custom",
		Relaxed:         on(h.Relaxed),
		VAPIC:           on(h.VAPIC),
		VPIndex:         on(h.VPIndex),
		Runtime:         on(h.Runtime),
		Synic:           on(h.SynIC),
		Reset:           on(h.Reset),
		Frequencies:     on(h.Frequencies),
		ReEnlightenment: on(h.Reenlightenment),
		IPI:             on(h.IPI),
	}
	if h.Spinlocks > 0 {
		x.Spinlocks = &libvirtxml.DomainFeatureHyperVSpinlocks{DomainFeatureState: libvirtxml.DomainFeatureState{State: "on"}, Retries: uint(h.Spinlocks)}
	}
	if h.SynICTimer {
		x.STimer = &libvirtxml.DomainFeatureHyperVSTimer{DomainFeatureState: libvirtxml.DomainFeatureState{State: "on"}, Direct: on(h.SynICTimerDirect)}
	}
	if h.TLBFlush {
		x.TLBFlush = &libvirtxml.DomainFeatureHyperVTLBFlush{DomainFeatureState: libvirtxml.DomainFeatureState{State: "on"}}
	}
	return x
}

// cpu sets the CPU model and topology. On kvm the default is host-model
// (KubeVirt's default); on qemu no mode is written, so QEMU's TCG default
// CPU applies, unless cpuModel names one TCG can emulate.
func (b *builder) cpu() *libvirtxml.DomainCPU {
	c := &libvirtxml.DomainCPU{Topology: &libvirtxml.DomainCPUTopology{Sockets: b.sockets, Cores: b.cores, Threads: b.threads}}
	kvm := b.spec.Type == DomainTypeKVM
	switch m := b.spec.CPUModel; m {
	case "":
		if kvm {
			c.Mode = "host-model"
		}
	case "host-model", "host-passthrough":
		if kvm {
			c.Mode = m
		}
	case "maximum":
		c.Mode = m
	default:
		// fallback='allow' lets libvirt substitute the closest model the
		// host can run rather than refuse to start.
		c.Mode, c.Match = "custom", "exact"
		c.Model = &libvirtxml.DomainCPUModel{Value: m, Fallback: "allow"}
	}
	return c
}

// clock is UTC; Windows profiles add their timers (no HPET, PIT delay,
// RTC catch-up, the Hyper-V reference clock).
func (b *builder) clock() *libvirtxml.DomainClock {
	p := b.spec.Profile
	if p == nil || p.Clock == nil {
		return &libvirtxml.DomainClock{Offset: "utc"}
	}
	c := p.Clock
	clk := &libvirtxml.DomainClock{Offset: c.Offset}
	if c.PITTickPolicy != "" {
		clk.Timer = append(clk.Timer, libvirtxml.DomainTimer{Name: "pit", TickPolicy: c.PITTickPolicy})
	}
	if c.RTCTickPolicy != "" {
		clk.Timer = append(clk.Timer, libvirtxml.DomainTimer{Name: "rtc", TickPolicy: c.RTCTickPolicy})
	}
	clk.Timer = append(clk.Timer, libvirtxml.DomainTimer{Name: "hpet", Present: yesNo(c.HPET)})
	if c.HyperVTimer {
		clk.Timer = append(clk.Timer, libvirtxml.DomainTimer{Name: "hypervclock", Present: "yes"})
	}
	return clk
}

// yesNo spells a bool the way libvirt attributes want it.
func yesNo(v bool) string {
	if v {
		return "yes"
	}
	return "no"
}

// virtioModel is model for virtio devices, or its transitional variant
// when the profile asks for legacy virtio-pci (old guests).
func (b *builder) virtioModel(model string) string {
	if p := b.spec.Profile; p != nil && p.VirtioTransitional {
		return model + "-transitional"
	}
	return model
}

// autoattach reads a tri-state profile flag; nil means KubeVirt's default,
// attach.
func autoattach(p *Profile, get func(*Profile) *bool) bool {
	if p == nil {
		return true
	}
	v := get(p)
	return v == nil || *v
}

// devices lists every device, in a fixed order so the XML is stable.
func (b *builder) devices() *libvirtxml.DomainDeviceList {
	s := &b.spec
	p := s.Profile
	dev := &libvirtxml.DomainDeviceList{}
	b.disks(dev)
	if p != nil && p.DisablePCIHole64 {
		// KubeVirt's preferredDisablePCIHole64: a zero-sized 64-bit PCI
		// hole on the root complex, for guests (XP, 2003) that mishandle it.
		zero := uint(0)
		dev.Controllers = append(dev.Controllers, libvirtxml.DomainController{
			Type: "pci", Index: &zero, Model: "pcie-root",
			PCI: &libvirtxml.DomainControllerPCI{Hole64: &libvirtxml.DomainControllerPCIHole64{Size: 0, Unit: "KiB"}},
		})
	}
	for _, n := range s.NICs {
		dev.Interfaces = append(dev.Interfaces, b.nic(n))
	}
	if autoattach(p, func(p *Profile) *bool { return p.AutoattachSerialConsole }) {
		port := uint(0)
		serial := libvirtxml.DomainSerial{
			Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
			Target: &libvirtxml.DomainSerialTarget{Port: &port},
		}
		if s.SerialLogPath != "" {
			serial.Log = &libvirtxml.DomainChardevLog{File: s.SerialLogPath, Append: "on"}
		}
		dev.Serials = []libvirtxml.DomainSerial{serial}
		dev.Consoles = []libvirtxml.DomainConsole{{
			Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
			Target: &libvirtxml.DomainConsoleTarget{Type: "serial", Port: &port},
		}}
	}
	if p != nil && p.InputTablet {
		bus := string(p.InputBus)
		input := libvirtxml.DomainInput{Type: "tablet", Bus: bus}
		if p.InputBus == InputBusVirtio && p.VirtioTransitional {
			input.Model = "virtio-transitional"
		}
		dev.Inputs = append(dev.Inputs, input)
	}
	if p != nil && p.TPM {
		emu := &libvirtxml.DomainTPMBackendEmulator{Version: "2.0"}
		if p.TPMPersistent {
			// Keep the state when the domain is undefined and redefined;
			// deleting the VMInstance removes it explicitly.
			emu.PersistentState = "yes"
		}
		if s.TPMStatePath != "" {
			emu.Source = &libvirtxml.DomainTPMBackendSource{Dir: &libvirtxml.DomainTPMBackendSourceDir{Path: s.TPMStatePath}}
		}
		dev.TPMs = []libvirtxml.DomainTPM{{Model: "tpm-crb", Backend: &libvirtxml.DomainTPMBackend{Emulator: emu}}}
	}
	if autoattach(p, func(p *Profile) *bool { return p.AutoattachGraphicsDevice }) {
		vnc := &libvirtxml.DomainGraphicVNC{}
		switch {
		case s.VNCSocket != "":
			vnc.Listeners = []libvirtxml.DomainGraphicListener{{Socket: &libvirtxml.DomainGraphicListenerSocket{Socket: s.VNCSocket}}}
		case s.VNCAutoSocket:
			vnc.Listeners = []libvirtxml.DomainGraphicListener{{Socket: &libvirtxml.DomainGraphicListenerSocket{}}}
		default:
			vnc.Port, vnc.AutoPort = -1, "yes"
			vnc.Listeners = []libvirtxml.DomainGraphicListener{{Address: &libvirtxml.DomainGraphicListenerAddress{Address: "127.0.0.1"}}}
		}
		dev.Graphics = []libvirtxml.DomainGraphic{{VNC: vnc}}
		// VGA: every guest and both firmwares drive it without extra drivers.
		dev.Videos = []libvirtxml.DomainVideo{{Model: libvirtxml.DomainVideoModel{Type: "vga"}}}
	}
	for _, a := range s.GPUs {
		dom, bus, slot, fn, _ := a.parts()
		dev.Hostdevs = append(dev.Hostdevs, libvirtxml.DomainHostdev{
			Managed: "yes",
			SubsysPCI: &libvirtxml.DomainHostdevSubsysPCI{Source: &libvirtxml.DomainHostdevSubsysPCISource{
				Address: &libvirtxml.DomainAddressPCI{Domain: &dom, Bus: &bus, Slot: &slot, Function: &fn},
			}},
		})
	}
	if autoattach(p, func(p *Profile) *bool { return p.AutoattachMemBalloon }) {
		dev.MemBalloon = &libvirtxml.DomainMemBalloon{Model: b.virtioModel("virtio")}
	} else {
		dev.MemBalloon = &libvirtxml.DomainMemBalloon{Model: "none"}
	}
	if p != nil && p.RNG {
		dev.RNGs = []libvirtxml.DomainRNG{{
			Model:   b.virtioModel("virtio"),
			Backend: &libvirtxml.DomainRNGBackend{Random: &libvirtxml.DomainRNGBackendRandom{Device: "/dev/urandom"}},
		}}
	}
	return dev
}

// disks attaches the user disks in boot order, then the cloud-init seed.
func (b *builder) disks(dev *libvirtxml.DomainDeviceList) {
	s := &b.spec
	var vd, sd int // next vdX and sdX index; SATA and SCSI share sdX
	target := func(bus DiskBus) string {
		if bus == DiskBusVirtio {
			vd++
			return diskName("vd", vd-1)
		}
		sd++
		return diskName("sd", sd-1)
	}
	scsi := false
	for i, d := range s.Disks {
		bus := b.effectiveBus(d)
		scsi = scsi || bus == DiskBusSCSI
		disk := libvirtxml.DomainDisk{
			Device: "disk",
			Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: d.Format},
			Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: d.Path}},
			Target: &libvirtxml.DomainDiskTarget{Dev: target(bus), Bus: string(bus)},
			Boot:   &libvirtxml.DomainDeviceBoot{Order: uint(i + 1)},
		}
		switch {
		case d.Optical:
			disk.Device = "cdrom"
			disk.ReadOnly = &libvirtxml.DomainDiskReadOnly{}
		case d.ReadOnly:
			disk.ReadOnly = &libvirtxml.DomainDiskReadOnly{}
		default:
			// Guests' TRIM punches holes in the image file: thin volumes
			// stay thin. The cache mode stays libvirt's default because
			// cache='none' needs O_DIRECT, which tmpfs lacks.
			disk.Driver.Discard = "unmap"
		}
		if d.BackingPath != "" {
			disk.BackingStore = backingStore(d.BackingPath, d.BackingFormat)
		}
		if id := b.diskIOThread[i]; id > 0 {
			disk.Driver.IOThread = &id
		}
		if bus == DiskBusVirtio {
			disk.Model = b.transitionalDiskModel()
		}
		dev.Disks = append(dev.Disks, disk)
	}
	if s.CloudInitISO != "" {
		// The seed uses the profile's disk bus, as KubeVirt attaches its
		// cloudinitdisk with preferredDiskBus. virtio cannot be a CD-ROM,
		// so there it is a read-only virtio disk, which is also what
		// kernels without AHCI (Debian's cloud kernel) can see.
		bus := b.diskBus
		scsi = scsi || bus == DiskBusSCSI
		seed := libvirtxml.DomainDisk{
			Device:   "cdrom",
			Driver:   &libvirtxml.DomainDiskDriver{Name: "qemu", Type: DiskFormatRaw},
			Source:   &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: s.CloudInitISO}},
			Target:   &libvirtxml.DomainDiskTarget{Dev: target(bus), Bus: string(bus)},
			ReadOnly: &libvirtxml.DomainDiskReadOnly{},
		}
		if bus == DiskBusVirtio {
			seed.Device = "disk"
			seed.Model = b.transitionalDiskModel()
		}
		dev.Disks = append(dev.Disks, seed)
	}
	if scsi {
		zero := uint(0)
		dev.Controllers = append(dev.Controllers, libvirtxml.DomainController{Type: "scsi", Index: &zero, Model: "virtio-scsi"})
	}
}

// transitionalDiskModel is the virtio disk model attribute: empty (libvirt
// default) unless the profile wants transitional virtio.
func (b *builder) transitionalDiskModel() string {
	if p := b.spec.Profile; p != nil && p.VirtioTransitional {
		return "virtio-transitional"
	}
	return ""
}

// nic builds one interface.
func (b *builder) nic(n NICSpec) libvirtxml.DomainInterface {
	model := n.Model
	if model == "" {
		model = b.nicModel
	}
	mac, _ := net.ParseMAC(n.MAC) // validated
	iface := libvirtxml.DomainInterface{
		MAC:   &libvirtxml.DomainInterfaceMAC{Address: mac.String()},
		Model: &libvirtxml.DomainInterfaceModel{Type: string(model)},
	}
	if model == NICModelVirtio {
		iface.Model.Type = b.virtioModel(string(model))
	}
	if n.Bridge != "" {
		iface.Source = &libvirtxml.DomainInterfaceSource{Bridge: &libvirtxml.DomainInterfaceSourceBridge{Bridge: n.Bridge}}
		if n.TapName != "" {
			iface.Target = &libvirtxml.DomainInterfaceTarget{Dev: n.TapName}
		}
	} else {
		iface.Source = &libvirtxml.DomainInterfaceSource{Ethernet: &libvirtxml.DomainInterfaceSourceEthernet{}}
		iface.Target = &libvirtxml.DomainInterfaceTarget{Dev: n.TapName, Managed: "no"}
	}
	if p := b.spec.Profile; p != nil && p.NetworkMultiQueue && model == NICModelVirtio && b.vcpus > 1 {
		if n.Bridge == "" {
			// libvirt opens a pre-created tap once per queue, which only
			// works if it was created with IFF_MULTI_QUEUE; vmd cannot
			// know, so it keeps one queue.
			b.warnf("network multi-queue requested by profile %s is not applied to pre-created tap %s", p.Name, n.TapName)
		} else {
			// KubeVirt's preferredNetworkInterfaceMultiQueue: one queue
			// per vCPU.
			iface.Driver = &libvirtxml.DomainInterfaceDriver{Queues: uint(b.vcpus)}
		}
	}
	return iface
}

// diskName is libvirt's disk naming: prefix + a..z, aa..az, ... for
// index 0, 1, ... (virIndexToDiskName).
func diskName(prefix string, index int) string {
	var suffix []byte
	for i := index; i >= 0; i = i/26 - 1 {
		suffix = append([]byte{byte('a' + i%26)}, suffix...)
	}
	return prefix + string(suffix)
}

// backingStore names a disk's base image, and that the chain ends there,
// with DAC relabelling off for the base (see DiskSpec.BackingPath). libvirt
// takes a backing chain given in the XML instead of probing the overlay's
// header, so the seclabel applies.
func backingStore(path, format string) *libvirtxml.DomainDiskBackingStore {
	return &libvirtxml.DomainDiskBackingStore{
		Format: &libvirtxml.DomainDiskFormat{Type: format},
		Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{
			File:     path,
			SecLabel: []libvirtxml.DomainDeviceSecLabel{{Model: "dac", Relabel: "no"}},
		}},
		BackingStore: &libvirtxml.DomainDiskBackingStore{},
	}
}
