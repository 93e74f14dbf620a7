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
	"github.com/vmdhq/vmd/internal/state"
	"github.com/vmdhq/vmd/internal/storage"
)

// DiskReconciler makes a VMDisk's volume exist (or go away) and reports it.
type DiskReconciler struct {
	Store   state.Store
	Volumes storage.Volumes
	Log     *slog.Logger
	// ProgressInterval is how often an import in progress is looked at.
	ProgressInterval time.Duration
	// Now is the clock (tests replace it).
	Now func() time.Time
	// Recorder receives an event at each status transition (import
	// started, ready, failed, retrying, waiting, grown, deleted); nil
	// records nothing.
	Recorder EventRecorder
	// Domains, when set, grows volumes that a running VM holds through the
	// hypervisor (see growth.go); nil leaves every growth to Volumes, which
	// then waits for the VM to stop (qemu's image lock).
	Domains DiskDomains
}

// Reconcile implements Reconciler.
func (r *DiskReconciler) Reconcile(ctx context.Context, key Key) (Result, error) {
	obj, err := getObject(ctx, r.Store, key)
	if err != nil || obj == nil {
		return Result{}, err
	}
	disk := obj.(*v1alpha1.VMDisk)
	before, err := statusJSON(disk)
	if err != nil {
		return Result{}, err
	}
	users, err := instancesUsingDisk(ctx, r.Store, disk.ObjectMeta.Namespace, disk.ObjectMeta.Name)
	if err != nil {
		return Result{}, err
	}
	now := r.now()
	st := &disk.Status
	st.UsedBy = users
	if len(users) > 0 {
		v1alpha1.SetCondition(&st.Conditions, v1alpha1.Condition{
			Type: v1alpha1.ConditionInUse, Status: v1alpha1.ConditionTrue, Reason: "AttachedToInstance",
			Message: "used by vminstance " + strings.Join(users, ", "),
		}, now)
	} else {
		v1alpha1.RemoveCondition(&st.Conditions, v1alpha1.ConditionInUse)
	}

	if disk.ObjectMeta.DeletionTimestamp != nil {
		return r.finalize(ctx, disk, before, users)
	}
	if wrote, err := ensureFinalizer(ctx, r.Store, disk); err != nil || wrote {
		// The write is a watch event that brings the key back.
		return Result{}, err
	}

	st.ObservedGeneration = disk.ObjectMeta.Generation
	req, err := storage.RequestFor(disk)
	if err != nil {
		return Result{}, err
	}
	// A clone that holds its data no longer needs its source (which may
	// since have been deleted).
	if src := disk.Spec.Source.Disk; src != nil && st.Phase != v1alpha1.DiskPhaseReady {
		from, waiting, err := r.cloneSource(ctx, disk.ObjectMeta.Namespace, src.Name)
		if err != nil {
			return Result{}, err
		}
		if waiting != "" {
			// Not a failure: the source may still be importing or not
			// created yet. Its changes do not reach this key, so look again.
			st.Phase = v1alpha1.DiskPhasePending
			setReady(&st.Conditions, v1alpha1.ConditionFalse, "WaitingForSource", waiting, disk.ObjectMeta.Generation, now)
			return Result{RequeueAfter: r.sourceInterval()}, r.writeStatus(ctx, disk, before, nil)
		}
		req.CloneFrom = from
	}
	var grownOnline []string
	if r.Domains != nil && len(users) > 0 && needsGrowth(st, req) {
		var deferral *growthDeferral
		if grownOnline, deferral = r.growOnline(ctx, disk, req.SizeBytes, users); deferral != nil {
			return r.deferGrowth(ctx, disk, before, deferral)
		}
	}
	vol, err := r.Volumes.EnsureVolume(ctx, req)
	switch {
	case errors.Is(err, errdefs.ErrNotImplemented):
		// Not a failure to retry: this build cannot do it. Say so plainly.
		st.Phase = v1alpha1.DiskPhasePending
		setReady(&st.Conditions, v1alpha1.ConditionFalse, "NotImplemented", err.Error(), disk.ObjectMeta.Generation, now)
		return Result{}, r.writeStatus(ctx, disk, before, nil)
	case errors.Is(err, errdefs.ErrInvalid):
		st.Phase = v1alpha1.DiskPhaseFailed
		setReady(&st.Conditions, v1alpha1.ConditionFalse, "ImportFailed", err.Error(), disk.ObjectMeta.Generation, now)
		return Result{}, r.writeStatus(ctx, disk, before, nil)
	case err != nil:
		// Transient (network, host): keep the phase, show the error, retry
		// with back-off from the queue.
		if st.Phase == "" {
			st.Phase = v1alpha1.DiskPhasePending
		}
		setReady(&st.Conditions, v1alpha1.ConditionFalse, "Retrying", err.Error(), disk.ObjectMeta.Generation, now)
		if werr := r.writeStatus(ctx, disk, before, nil); werr != nil {
			return Result{}, werr
		}
		return Result{}, err
	}

	st.Path, st.Format, st.Size = vol.Path, vol.Format, vol.SizeBytes
	if vol.Ready {
		st.BackingFile, st.BackingFormat = vol.BackingPath, vol.BackingFormat
	}
	// A volume found ready after a restart reports no byte counts: keep
	// what the import recorded.
	if !vol.Ready || vol.BytesTotal > 0 {
		st.BytesDone, st.BytesTotal = vol.BytesDone, vol.BytesTotal
	}
	if vol.SHA256 != "" {
		st.SHA256 = vol.SHA256
	}
	replicated := v1alpha1.ConditionFalse
	reason := "SingleCopy"
	if vol.Replicated {
		replicated, reason = v1alpha1.ConditionTrue, "Replicated"
	}
	v1alpha1.SetCondition(&st.Conditions, v1alpha1.Condition{
		Type: v1alpha1.ConditionReplicated, Status: replicated, Reason: reason, Message: vol.ReplicationNote,
	}, now)
	res := Result{}
	growErr := r.reportGrowth(disk, req, vol, now)
	switch {
	case vol.Ready:
		st.Phase = v1alpha1.DiskPhaseReady
		st.Progress = "100.0%"
		msg := "volume " + vol.Path + " holds its data"
		if vol.Message != "" {
			msg += "; " + vol.Message
		}
		setReady(&st.Conditions, v1alpha1.ConditionTrue, "VolumeReady", msg, disk.ObjectMeta.Generation, now)
	case vol.WaitingForUpload:
		st.Phase = v1alpha1.DiskPhaseUploading
		st.Progress = ""
		msg := "waiting for data: vmctl upload vmdisk " + disk.ObjectMeta.Name + " --image-path FILE"
		if vol.Message != "" {
			msg += "; " + vol.Message
		}
		setReady(&st.Conditions, v1alpha1.ConditionFalse, "WaitingForUpload", msg, disk.ObjectMeta.Generation, now)
		// An upload arrives through the API, not the store: look again.
		res.RequeueAfter = r.uploadInterval()
	default:
		st.Phase = v1alpha1.DiskPhaseImporting
		st.Progress = progress(vol.BytesDone, vol.BytesTotal)
		setReady(&st.Conditions, v1alpha1.ConditionFalse, "Importing", importMessage(st.Progress, vol), disk.ObjectMeta.Generation, now)
		res.RequeueAfter = r.progressInterval()
	}
	if err := r.writeStatus(ctx, disk, before, grownOnline); err != nil {
		return Result{}, err
	}
	return res, growErr
}

// importMessage says what a running import does: "importing 42.0% (120.0
// MiB of 285.6 MiB, 55.2 MiB/s): downloading".
func importMessage(pct string, vol storage.Volume) string {
	msg := "importing " + pct
	var details []string
	if vol.BytesTotal > 0 {
		details = append(details, fmt.Sprintf("%s of %s", humanBytes(vol.BytesDone), humanBytes(vol.BytesTotal)))
	} else if vol.BytesDone > 0 {
		details = append(details, humanBytes(vol.BytesDone))
	}
	if vol.BytesPerSecond > 0 {
		details = append(details, humanBytes(vol.BytesPerSecond)+"/s")
	}
	if len(details) > 0 {
		msg += " (" + strings.Join(details, ", ") + ")"
	}
	if vol.Stage != "" {
		msg += ": " + vol.Stage
	}
	return msg
}

// humanBytes prints n with a binary unit ("1.5 GiB").
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// cloneSource resolves the volume path of the VMDisk a clone copies. When
// the source cannot be copied yet, waiting says why (and path is empty).
func (r *DiskReconciler) cloneSource(ctx context.Context, namespace, name string) (path, waiting string, err error) {
	obj, err := r.Store.Get(ctx, v1alpha1.KindVMDisk, namespace, name)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return "", "waiting for source vmdisk " + name + " to exist", nil
	case err != nil:
		return "", "", fmt.Errorf("reading clone source %s: %w", name, err)
	}
	src := obj.(*v1alpha1.VMDisk)
	switch {
	case src.ObjectMeta.DeletionTimestamp != nil:
		return "", "source vmdisk " + name + " is being deleted", nil
	case src.Status.Phase != v1alpha1.DiskPhaseReady || src.Status.Path == "":
		phase := src.Status.Phase
		if phase == "" {
			phase = v1alpha1.DiskPhasePending
		}
		return "", "waiting for source vmdisk " + name + " to be Ready (it is " + phase + ")", nil
	}
	return src.Status.Path, "", nil
}

func (r *DiskReconciler) sourceInterval() time.Duration { return 2 * r.progressInterval() }

func (r *DiskReconciler) uploadInterval() time.Duration { return 2 * r.progressInterval() }

// finalize releases the volume of a disk being deleted, unless an instance
// still attaches it: pulling a disk from under a VM is never right.
func (r *DiskReconciler) finalize(ctx context.Context, disk *v1alpha1.VMDisk, before []byte, users []string) (Result, error) {
	st := &disk.Status
	st.Phase = v1alpha1.DiskPhaseDeleting
	if len(users) > 0 {
		setReady(&st.Conditions, v1alpha1.ConditionFalse, "WaitingForRelease",
			"deletion waits until vminstance "+strings.Join(users, ", ")+" no longer attaches the disk",
			disk.ObjectMeta.Generation, r.now())
		// Instance changes re-queue this key (see DisksOfInstance).
		return Result{}, r.writeStatus(ctx, disk, before, nil)
	}
	if err := r.Volumes.DeleteVolume(ctx, disk.ObjectMeta.Namespace, disk.ObjectMeta.Name, disk.ObjectMeta.UID); err != nil {
		return Result{}, fmt.Errorf("deleting volume: %w", err)
	}
	if st.Path != "" {
		recordEvents(r.Recorder, disk, []pendingEvent{{v1alpha1.EventTypeNormal, ReasonVolumeDeleted, "deleted volume " + st.Path}})
	}
	return Result{}, removeFinalizer(ctx, r.Store, disk)
}

func (r *DiskReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *DiskReconciler) progressInterval() time.Duration {
	if r.ProgressInterval > 0 {
		return r.ProgressInterval
	}
	return time.Second
}

func progress(done, total int64) string {
	if total <= 0 {
		return "N/A"
	}
	return fmt.Sprintf("%.1f%%", float64(done)*100/float64(total))
}

func setReady(conds *[]v1alpha1.Condition, status v1alpha1.ConditionStatus, reason, msg string, gen int64, now time.Time) {
	v1alpha1.SetCondition(conds, v1alpha1.Condition{
		Type: v1alpha1.ConditionReady, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen,
	}, now)
}

// instancesUsingDisk lists the names of VMInstances in ns whose spec
// attaches the disk, sorted.
func instancesUsingDisk(ctx context.Context, store state.Store, ns, disk string) ([]string, error) {
	objs, _, err := store.List(ctx, v1alpha1.KindVMInstance, ns)
	if err != nil {
		return nil, fmt.Errorf("listing vminstances: %w", err)
	}
	var users []string
	for _, o := range objs {
		vm := o.(*v1alpha1.VMInstance)
		for _, d := range vm.Spec.Disks {
			if d.Name == disk {
				users = append(users, vm.ObjectMeta.Name)
				break
			}
		}
	}
	return users, nil
}

// DisksOfInstance maps an instance change to its disks, so their InUse
// status and any pending deletion move on when the instance changes.
func DisksOfInstance(_ context.Context, obj v1alpha1.Object) []Key {
	vm, ok := obj.(*v1alpha1.VMInstance)
	if !ok {
		return nil
	}
	keys := make([]Key, 0, len(vm.Spec.Disks))
	for _, d := range vm.Spec.Disks {
		keys = append(keys, Key{Kind: v1alpha1.KindVMDisk, Namespace: vm.ObjectMeta.Namespace, Name: d.Name})
	}
	return keys
}
