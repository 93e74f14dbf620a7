package hypervisor

import "context"

// DiskResizer is an optional capability of a Driver: growing a disk of a
// running domain so the guest sees the new size at once (a VMDisk's
// spec.storage grew while its VM runs). qemu holds a running domain's
// images open and locked, so such a volume can only be grown through qemu
// itself (QMP block_resize, which also tells the guest's virtio or SCSI
// controller); qemu-img is for volumes no domain runs on. It is separate
// from Driver so the fakes and drivers without it stay valid; callers test
// for it with a type assertion and otherwise leave the growth to qemu-img
// once the domain stops.
type DiskResizer interface {
	// ResizeDisk grows a disk of the running domain to bytes. disk names
	// it the way libvirt accepts: the guest device (as DiskTargets names
	// it, e.g. "vdb") or the image's source path. The path is what the
	// controller passes: it names the same volume whatever the running
	// definition's device order, which may be older than the spec (a
	// pending RestartRequired). Resizing to the current size is a no-op;
	// shrinking fails with errdefs.ErrInvalid, as does a disk the domain
	// does not have; a domain that is not running fails with
	// errdefs.ErrConflict and an absent one with errdefs.ErrNotFound.
	ResizeDisk(ctx context.Context, domainName, disk string, bytes uint64) error
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
