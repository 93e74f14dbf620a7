package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/vmdhq/vmd/test/images"
)

// GuestSpec describes a guest booted through plain libvirt, without vmd: for tests of the lab
// itself, for the domain-type probe, and as a reference for what vmd must produce.
type GuestSpec struct {
	// Name is the libvirt domain name; unique within the lab.
	Name string
	// Image is the image to boot: Debian12 from a qcow2 overlay over the cached disk, or Tiny
	// with direct kernel boot.
	Image images.Name
	// InstanceID goes into the NoCloud meta-data; default Name.
	InstanceID string
	// IP is the guest's static address in Network, given through the NoCloud network-config.
	IP netip.Addr
	// MAC of the guest's NIC; default 52:54:00:77:<last two bytes of IP>.
	MAC string
	// UserData is the NoCloud user-data; default an empty #cloud-config.
	UserData string
	// MemoryMiB and VCPUs size the guest; defaults 512 MiB (Tiny: 256) and 1.
	MemoryMiB int
	VCPUs     int
	// DomainType is "kvm" or "qemu"; default the lab's DomainType decision.
	DomainType string
}

// Guest is a libvirt domain defined by DefineGuest. Its files live in Dir; the serial console is
// logged to ConsoleLog and qemu's own output to QEMULog, both kept until the lab is closed.
type Guest struct {
	GuestSpec
	// Dir holds the guest's overlay, seed ISO, seed files, domain XML and console log.
	Dir string
	// ConsoleLog receives everything the guest writes to its serial port.
	ConsoleLog string
	// QEMULog is libvirt's log of the qemu process (command line, qemu errors).
	QEMULog string
	// Started is when Start returned; boot timings are measured from it.
	Started time.Time

	lab *Lab
}

// DefineGuest writes the guest's NoCloud seed ISO (label cidata: meta-data, user-data,
// network-config v2), its overlay when the image has a disk, and its domain XML, and defines the
// domain. It does not start it.
func (l *Lab) DefineGuest(ctx context.Context, spec GuestSpec) (*Guest, error) {
	if err := l.completeSpec(ctx, &spec); err != nil {
		return nil, fmt.Errorf("defining guest %s: %w", spec.Name, err)
	}
	l.mu.Lock()
	_, dup := l.guests[spec.Name]
	l.mu.Unlock()
	if dup {
		return nil, fmt.Errorf("defining guest %s: already defined", spec.Name)
	}
	img, ok := l.Images[spec.Image]
	if !ok {
		return nil, fmt.Errorf("defining guest %s: image %s was not prepared (Options.Images)", spec.Name, spec.Image)
	}
	g := &Guest{GuestSpec: spec, Dir: filepath.Join(l.Dir, "guests", spec.Name), lab: l}
	g.ConsoleLog = filepath.Join(g.Dir, "console.log")
	g.QEMULog = filepath.Join(l.Dir, "libvirt", "log", "qemu", spec.Name+".log")
	if err := os.MkdirAll(g.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("defining guest %s: %w", spec.Name, err)
	}
	seed := filepath.Join(g.Dir, "seed.iso")
	if err := writeSeed(ctx, g.Dir, seed, spec); err != nil {
		return nil, fmt.Errorf("defining guest %s: %w", spec.Name, err)
	}
	var overlay string
	if spec.Image == images.Debian12 {
		overlay = filepath.Join(g.Dir, "disk.qcow2")
		// The backing path must be absolute (a relative one resolves against the overlay's
		// folder) and its format explicit (-F): qemu refuses to probe backing formats.
		out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2",
			"-b", img.Path(images.DiskFile), "-F", "qcow2", overlay).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("defining guest %s: creating overlay: %w: %s", spec.Name, err, out)
		}
	}
	xml, err := domainXML(spec, img, l.Bridge, overlay, seed, g.ConsoleLog)
	if err != nil {
		return nil, fmt.Errorf("defining guest %s: %w", spec.Name, err)
	}
	xmlPath := filepath.Join(g.Dir, "domain.xml")
	if err := os.WriteFile(xmlPath, []byte(xml), 0o644); err != nil {
		return nil, fmt.Errorf("defining guest %s: %w", spec.Name, err)
	}
	if _, err := l.Virsh(ctx, "define", xmlPath); err != nil {
		return nil, fmt.Errorf("defining guest %s: %w", spec.Name, err)
	}
	l.mu.Lock()
	l.guests[spec.Name] = g
	l.mu.Unlock()
	return g, nil
}

// completeSpec validates spec and fills in its defaults.
func (l *Lab) completeSpec(ctx context.Context, spec *GuestSpec) error {
	if spec.Name == "" {
		return errors.New("guest needs a name")
	}
	if spec.Image != images.Debian12 && spec.Image != images.Tiny {
		return fmt.Errorf("unknown image %q", spec.Image)
	}
	if !spec.IP.Is4() || !Network.Contains(spec.IP) || spec.IP == Gateway ||
		spec.IP == Network.Addr() || spec.IP.As4()[3] == 255 {
		return fmt.Errorf("address %v is not a free host address in %s", spec.IP, Network)
	}
	if spec.InstanceID == "" {
		spec.InstanceID = spec.Name
	}
	if spec.MAC == "" {
		a := spec.IP.As4()
		spec.MAC = fmt.Sprintf("52:54:00:77:%02x:%02x", a[2], a[3])
	}
	if spec.UserData == "" {
		spec.UserData = "#cloud-config\n{}\n"
	}
	if spec.MemoryMiB == 0 {
		spec.MemoryMiB = 512
		if spec.Image == images.Tiny {
			spec.MemoryMiB = 256
		}
	}
	if spec.VCPUs == 0 {
		spec.VCPUs = 1
	}
	if spec.DomainType == "" {
		t, err := l.DomainType(ctx)
		if err != nil {
			return err
		}
		spec.DomainType = t
	}
	if spec.DomainType != "kvm" && spec.DomainType != "qemu" {
		return fmt.Errorf("domain type %q is neither kvm nor qemu", spec.DomainType)
	}
	return nil
}

// seedFiles returns the NoCloud documents of spec, by file name.
func seedFiles(spec GuestSpec) map[string]string {
	return map[string]string{
		"meta-data": fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", spec.InstanceID, spec.Name),
		"user-data": spec.UserData,
		// set-name + net.ifnames=0: cloud-init's networkd renderer matches on the name eth0.
		"network-config": fmt.Sprintf(`version: 2
ethernets:
  eth0:
    match:
      macaddress: "%s"
    set-name: eth0
    addresses: [%s/%d]
    routes:
      - to: 0.0.0.0/0
        via: %s
    nameservers:
      addresses: [%s]
`, spec.MAC, spec.IP, Network.Bits(), Gateway, Gateway),
	}
}

// writeSeed writes the seed documents into dir and packs them into an ISO 9660 image labelled
// cidata (with Rock Ridge and Joliet names, so "meta-data" keeps its dash).
func writeSeed(ctx context.Context, dir, iso string, spec GuestSpec) error {
	files := seedFiles(spec)
	args := []string{"-quiet", "-output", iso, "-volid", "cidata", "-joliet", "-rock"}
	for _, name := range []string{"meta-data", "user-data", "network-config"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(files[name]), 0o644); err != nil {
			return fmt.Errorf("writing seed %s: %w", name, err)
		}
		args = append(args, p)
	}
	if out, err := exec.CommandContext(ctx, "genisoimage", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("creating seed ISO: %w: %s", err, out)
	}
	return nil
}

// domainXML renders the libvirt domain of a lab guest.
//
// Choices that matter: machine "pc" with the seed on a virtio-scsi cdrom (Debian's cloud kernel
// has no AHCI, so a SATA cdrom would be invisible); the serial port logged to a file (the only
// window into a guest that never reaches the network); a virtio RNG so first-boot key generation
// does not wait for entropy; no balloon.
func domainXML(spec GuestSpec, img images.Image, bridge, overlay, seed, console string) (string, error) {
	zero := uint(0)
	dom := &libvirtxml.Domain{
		Type:   spec.DomainType,
		Name:   spec.Name,
		Memory: &libvirtxml.DomainMemory{Value: uint(spec.MemoryMiB), Unit: "MiB"},
		VCPU:   &libvirtxml.DomainVCPU{Placement: "static", Value: uint(spec.VCPUs)},
		OS: &libvirtxml.DomainOS{
			Type: &libvirtxml.DomainOSType{Arch: "x86_64", Machine: "pc", Type: "hvm"},
		},
		Features:   &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}, APIC: &libvirtxml.DomainFeatureAPIC{}},
		Clock:      &libvirtxml.DomainClock{Offset: "utc"},
		OnPoweroff: "destroy",
		OnReboot:   "restart",
		OnCrash:    "destroy",
		Devices: &libvirtxml.DomainDeviceList{
			Emulator:    "/usr/bin/qemu-system-x86_64",
			Controllers: []libvirtxml.DomainController{{Type: "scsi", Index: &zero, Model: "virtio-scsi"}},
			Interfaces: []libvirtxml.DomainInterface{{
				Source: &libvirtxml.DomainInterfaceSource{Bridge: &libvirtxml.DomainInterfaceSourceBridge{Bridge: bridge}},
				MAC:    &libvirtxml.DomainInterfaceMAC{Address: spec.MAC},
				Model:  &libvirtxml.DomainInterfaceModel{Type: "virtio"},
			}},
			Serials: []libvirtxml.DomainSerial{{
				Source: &libvirtxml.DomainChardevSource{File: &libvirtxml.DomainChardevSourceFile{Path: console}},
				Target: &libvirtxml.DomainSerialTarget{Port: &zero},
			}},
			RNGs: []libvirtxml.DomainRNG{{
				Model:   "virtio",
				Backend: &libvirtxml.DomainRNGBackend{Random: &libvirtxml.DomainRNGBackendRandom{Device: "/dev/urandom"}},
			}},
			MemBalloon: &libvirtxml.DomainMemBalloon{Model: "none"},
		},
	}
	switch spec.Image {
	case images.Debian12:
		// The image boots itself (extlinux in its MBR), as a real cloud image would.
		dom.OS.BootDevices = []libvirtxml.DomainBootDevice{{Dev: "hd"}}
		dom.Devices.Disks = append(dom.Devices.Disks, libvirtxml.DomainDisk{
			Device: "disk",
			Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "qcow2", Discard: "unmap"},
			Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: overlay}},
			Target: &libvirtxml.DomainDiskTarget{Dev: "vda", Bus: "virtio"},
		})
	case images.Tiny:
		dom.OS.Kernel = img.Path(images.KernelFile)
		dom.OS.Initrd = img.Path(images.InitrdFile)
		dom.OS.Cmdline = "console=ttyS0,115200n8 net.ifnames=0 panic=-1 quiet"
	}
	dom.Devices.Disks = append(dom.Devices.Disks, libvirtxml.DomainDisk{
		Device:   "cdrom",
		Driver:   &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "raw"},
		Source:   &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: seed}},
		Target:   &libvirtxml.DomainDiskTarget{Dev: "sda", Bus: "scsi"},
		ReadOnly: &libvirtxml.DomainDiskReadOnly{},
	})
	return dom.Marshal()
}

// Start starts the defined domain and records the time boot measurements start from.
func (g *Guest) Start(ctx context.Context) error {
	if _, err := g.lab.Virsh(ctx, "start", g.Name); err != nil {
		return fmt.Errorf("starting guest %s: %w", g.Name, err)
	}
	g.Started = time.Now()
	return nil
}

// State returns libvirt's state of the domain ("running", "shut off", ...).
func (g *Guest) State(ctx context.Context) (string, error) {
	out, err := g.lab.Virsh(ctx, "domstate", g.Name)
	return strings.TrimSpace(out), err
}

// Addr returns the guest's address and the given port.
func (g *Guest) Addr(port uint16) netip.AddrPort { return netip.AddrPortFrom(g.IP, port) }

// WaitPort waits until the guest accepts TCP connections on port from side, and returns the
// time since Start. It gives up early, with the console tail, if the domain stops running.
func (g *Guest) WaitPort(ctx context.Context, side Side, port uint16, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr := g.Addr(port)
	for {
		dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := g.lab.Dial(dctx, side, "tcp", addr.String())
		dcancel()
		if err == nil {
			_ = conn.Close()
			return time.Since(g.Started), nil
		}
		if state, serr := g.State(ctx); serr == nil && state != "running" {
			return 0, fmt.Errorf("guest %s is %s before %s answered; console:\n%s", g.Name, state, addr, g.ConsoleTail(20))
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("guest %s: %s not reachable from the %s namespace after %s (%w); console:\n%s",
				g.Name, addr, side, timeout, err, g.ConsoleTail(20))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// ConsoleTail returns the last n lines of the serial console log.
func (g *Guest) ConsoleTail(n int) string { return tailFile(g.ConsoleLog, n) }

// Destroy stops the domain if it runs and undefines it. Its files stay for diagnostics until
// the lab closes.
func (g *Guest) Destroy(ctx context.Context) error {
	if state, err := g.State(ctx); err == nil && state != "shut off" {
		if _, err := g.lab.Virsh(ctx, "destroy", g.Name); err != nil {
			return fmt.Errorf("destroying guest %s: %w", g.Name, err)
		}
	}
	if _, err := g.lab.Virsh(ctx, "undefine", g.Name); err != nil {
		return fmt.Errorf("undefining guest %s: %w", g.Name, err)
	}
	g.lab.mu.Lock()
	delete(g.lab.guests, g.Name)
	g.lab.mu.Unlock()
	return nil
}
