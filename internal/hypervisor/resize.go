package hypervisor

import "context"

// DiskResizer is an optional capability of a Driver: growing a disk of a
// running domain so the guest sees the new size at once (a VMDisk's
// spec.storage grew while its VM runs). It is separate from Driver so the
// fakes and drivers without it stay valid; callers test for it with a
// type assertion and otherwise leave the growth to the next boot.
type DiskResizer interface {
	// ResizeDisk grows the disk whose guest device is target (as
	// DiskTargets names it, e.g. "vdb") to bytes. Resizing to the current
	// size is a no-op; shrinking fails with errdefs.ErrInvalid; a domain
	// that is not running fails with errdefs.ErrConflict.
	ResizeDisk(ctx context.Context, domainName, target string, bytes uint64) error
}

// DiskTargets returns the guest device name (libvirt's <target dev>) of
// each user disk of s, in the order of s.Disks: virtio disks are vda,
// vdb, ...; SATA and SCSI disks share sda, sdb, ... BuildDomain names them
// the same way (the test holds both to it), so a caller that knows a
// disk's index in the spec can address it in the running domain.
func DiskTargets(s DomainSpec) []string {
	profileBus := DiskBusSATA // KubeVirt's amd64 default without a preference
	if s.Profile != nil {
		profileBus = s.Profile.DiskBus
	}
	out := make([]string, len(s.Disks))
	var vd, sd int
	for i, d := range s.Disks {
		bus := d.Bus
		switch {
		case bus != "":
		case d.Optical:
			bus = DiskBusSATA
		default:
			bus = profileBus
		}
		if bus == DiskBusVirtio {
			out[i] = diskName("vd", vd)
			vd++
			continue
		}
		out[i] = diskName("sd", sd)
		sd++
	}
	return out
}
