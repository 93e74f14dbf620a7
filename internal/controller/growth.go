package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/hypervisor"
	"github.com/vmdhq/vmd/internal/storage"
)

// Growth of a VMDisk's volume (spec.storage raised) is owned by the disk
// reconciler, which owns everything else the disk's status says; only the
// tool differs:
//
//   - no domain runs on the volume: storage.Volumes grows the file
//     (qemu-img resize), as for any other change of the request;
//   - a running domain attaches it: the hypervisor grows it (libvirt's
//     virDomainBlockResize, QMP block_resize), so the guest sees the new
//     size at once. qemu-img must not touch an image a running qemu holds:
//     qemu keeps the header and the L1 table in memory and would overwrite
//     the change, which is why qemu locks the image; the lock is a safety
//     net, not the plan.
//
// The size in status is always read back from the volume (EnsureVolume
// after the online resize finds nothing left to grow and reports the new
// virtual size), so a crash at any point repeats an idempotent resize and
// converges. While growth waits, condition Resizing says why and Ready stays
// True: the volume still holds its data at the old size.

// ConditionResizing is True while a Ready volume is smaller than
// spec.storage and its growth waits (see the Reason* below); absent
// otherwise.
const ConditionResizing = "Resizing"

// Reasons of the Resizing condition, also recorded as Warning events.
const (
	// ReasonWaitingForHypervisor: a VM attaches the disk and libvirt cannot
	// say whether its domain runs, so neither tool may be used yet.
	ReasonWaitingForHypervisor = "WaitingForHypervisor"
	// ReasonResizeFailed: the online resize of a running domain failed.
	ReasonResizeFailed = "ResizeFailed"
	// ReasonVolumeInUse: qemu-img found the image locked by a process
	// (a domain started meanwhile, or one vmd does not know of).
	ReasonVolumeInUse = "VolumeInUse"
)

// DiskDomains is what the disk reconciler needs of the hypervisor to grow
// a volume under a running VM: whether the VM's domain runs, and the online
// resize. cmd/vmd passes the libvirt driver, which implements both.
type DiskDomains interface {
	State(ctx context.Context, name string) (hypervisor.DomainState, error)
	hypervisor.DiskResizer
}

// errGrowthDeferred marks the error a deferred growth returns, so the
// queue retries with back-off while the disk stays Ready.
var errGrowthDeferred = errors.New("volume growth deferred")

// growthDeferral is why a pending growth cannot proceed in this pass.
type growthDeferral struct {
	reason string
	err    error
}

// needsGrowth reports whether the request asks a Ready volume to grow. The
// recorded size is the volume's last observed virtual size; 0 means it was
// never observed, in which case EnsureVolume has the last word.
func needsGrowth(st *v1alpha1.VMDiskStatus, req storage.VolumeRequest) bool {
	return st.Phase == v1alpha1.DiskPhaseReady && !req.Optical && st.Path != "" && st.Size > 0 && req.SizeBytes > st.Size
}

// growOnline grows the disk's volume through every running domain of the
// VMs that attach it (users) and returns their names; an empty list means
// no domain runs on it, so the volume is left to qemu-img. A non-nil
// deferral means the growth must wait (and neither tool may run now).
func (r *DiskReconciler) growOnline(ctx context.Context, disk *v1alpha1.VMDisk, size int64, users []string) ([]string, *growthDeferral) {
	ns, path := disk.ObjectMeta.Namespace, disk.Status.Path
	var running []string
	for _, u := range users {
		name := hypervisor.LibvirtName(ns, u)
		obs, err := r.Domains.State(ctx, name)
		if err != nil {
			return nil, &growthDeferral{ReasonWaitingForHypervisor, fmt.Errorf(
				"growing to %s waits: cannot tell whether vminstance %s runs: %w", humanBytes(size), u, err)}
		}
		if obs.Running {
			running = append(running, u)
		}
	}
	var through []string
	for _, u := range running {
		name := hypervisor.LibvirtName(ns, u)
		err := r.Domains.ResizeDisk(ctx, name, path, uint64(size))
		if errors.Is(err, errdefs.ErrConflict) {
			// Usually the domain stopped since State: then qemu-img may
			// do it. If it still runs, the conflict is real.
			if obs, serr := r.Domains.State(ctx, name); serr == nil && !obs.Running {
				continue
			}
		}
		if err != nil {
			return nil, &growthDeferral{ReasonResizeFailed, fmt.Errorf(
				"growing to %s through running vminstance %s: %w", humanBytes(size), u, err)}
		}
		r.log().Info("volume grown online", "disk", ns+"/"+disk.ObjectMeta.Name, "vm", u, "domain", name, "bytes", size)
		through = append(through, u)
	}
	return through, nil
}

// deferGrowth records why a growth waits and returns the error the queue
// retries on. The volume is untouched, so the rest of the status stays.
func (r *DiskReconciler) deferGrowth(ctx context.Context, disk *v1alpha1.VMDisk, before []byte, d *growthDeferral) (Result, error) {
	setCondition(&disk.Status.Conditions, ConditionResizing, v1alpha1.ConditionTrue, d.reason, d.err.Error(), disk.ObjectMeta.Generation, r.now())
	if err := r.writeStatus(ctx, disk, before, nil); err != nil {
		return Result{}, errors.Join(d.err, err)
	}
	return Result{}, fmt.Errorf("%w: %w", errGrowthDeferred, d.err)
}

// reportGrowth sets or clears the Resizing condition after EnsureVolume:
// a Ready volume still smaller than requested means qemu-img met the image
// lock. A volume without a reported size (0) is not judged. It returns the
// error to retry on, if any.
func (r *DiskReconciler) reportGrowth(disk *v1alpha1.VMDisk, req storage.VolumeRequest, vol storage.Volume, now time.Time) error {
	st := &disk.Status
	if !vol.Ready || req.Optical || vol.SizeBytes <= 0 || vol.SizeBytes >= req.SizeBytes {
		v1alpha1.RemoveCondition(&st.Conditions, ConditionResizing)
		return nil
	}
	msg := "growing to " + humanBytes(req.SizeBytes) + " waits: the volume is in use"
	if len(st.UsedBy) > 0 {
		msg += " (attached to vminstance " + strings.Join(st.UsedBy, ", ") + ")"
	}
	if vol.Message != "" {
		msg += "; " + vol.Message
	}
	setCondition(&st.Conditions, ConditionResizing, v1alpha1.ConditionTrue, ReasonVolumeInUse, msg, disk.ObjectMeta.Generation, now)
	return fmt.Errorf("%w: vmdisk %s: %s", errGrowthDeferred, disk.ObjectMeta.Name, msg)
}

func (r *DiskReconciler) log() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return slog.New(slog.DiscardHandler)
}
