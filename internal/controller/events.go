package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

// EventRecorder receives Kubernetes-style events about objects (an import
// started, a volume became ready, a retry after an error). *events.Recorder
// implements it; the controller only needs this one method. Recording is
// best effort and MUST NOT block or fail the reconcile.
type EventRecorder interface {
	Record(obj v1alpha1.Object, typ, reason, messageFmt string, args ...any)
}

// Event reasons of VMDisks, as `vmctl describe` and `vmctl events` show
// them. Where the Ready condition has a reason, the event reuses it.
const (
	ReasonImportStarted     = "ImportStarted"
	ReasonImported          = "Imported"
	ReasonProvisioned       = "Provisioned"
	ReasonVolumeGrown       = "VolumeGrown"
	ReasonImportFailed      = "ImportFailed"
	ReasonRetrying          = "Retrying"
	ReasonNotImplemented    = "NotImplemented"
	ReasonWaitingForSource  = "WaitingForSource"
	ReasonWaitingForUpload  = "WaitingForUpload"
	ReasonWaitingForRelease = "WaitingForRelease"
	ReasonVolumeDeleted     = "VolumeDeleted"
)

// pendingEvent is an event decided during a reconcile, recorded once the
// status that explains it is stored.
type pendingEvent struct {
	typ, reason, message string
}

// diskSnapshot is what of a VMDisk's status decides its events: taken when
// the disk is read, compared with the status about to be written.
type diskSnapshot struct {
	phase           string
	reason, message string // of the Ready condition
	size            int64
	// resizeReason and resizeMessage are those of the Resizing condition
	// (empty without one).
	resizeReason, resizeMessage string
}

func snapshotDisk(d *v1alpha1.VMDisk) diskSnapshot {
	s := diskSnapshot{phase: d.Status.Phase, size: d.Status.Size}
	if c := v1alpha1.FindCondition(d.Status.Conditions, v1alpha1.ConditionReady); c != nil {
		s.reason, s.message = c.Reason, c.Message
	}
	if c := v1alpha1.FindCondition(d.Status.Conditions, ConditionResizing); c != nil {
		s.resizeReason, s.resizeMessage = c.Reason, c.Message
	}
	return s
}

// diskEvents is the pure rule of which status changes of a disk are worth
// an event. Only transitions count, never the state itself: a resync that
// finds nothing new, or an import whose progress moved, records nothing.
//   - a phase change into Importing or Ready says so once;
//   - a Ready volume found larger than before says it grew, and through
//     which running VMs when it was grown online (grownOnline, the one
//     input that is not status: how this pass grew it);
//   - a waiting or failing Ready reason is recorded when it, or its
//     message, changes, so each distinct error is told once;
//   - so is a growth that waits (condition Resizing), as a Warning.
func diskEvents(old diskSnapshot, d *v1alpha1.VMDisk, grownOnline []string) []pendingEvent {
	now := snapshotDisk(d)
	evs := readyEvents(old, now, d, grownOnline)
	if now.resizeReason != "" && (now.resizeReason != old.resizeReason || now.resizeMessage != old.resizeMessage) {
		evs = append(evs, pendingEvent{v1alpha1.EventTypeWarning, now.resizeReason, now.resizeMessage})
	}
	return evs
}

// readyEvents is diskEvents' rule for the phase, the Ready condition and
// the size.
func readyEvents(old, now diskSnapshot, d *v1alpha1.VMDisk, grownOnline []string) []pendingEvent {
	changed := now.reason != old.reason || now.message != old.message
	switch now.reason {
	case "Importing":
		if old.phase != v1alpha1.DiskPhaseImporting {
			return []pendingEvent{{v1alpha1.EventTypeNormal, ReasonImportStarted, "importing " + describeSource(d.Spec.Source)}}
		}
	case "VolumeReady":
		switch {
		case old.phase != v1alpha1.DiskPhaseReady && d.Spec.Source.Type() == v1alpha1.SourceBlank:
			return []pendingEvent{{v1alpha1.EventTypeNormal, ReasonProvisioned, "created blank volume " + describeVolume(d)}}
		case old.phase != v1alpha1.DiskPhaseReady:
			return []pendingEvent{{v1alpha1.EventTypeNormal, ReasonImported, "imported " + describeSource(d.Spec.Source) + " into volume " + describeVolume(d)}}
		case old.size > 0 && now.size > old.size:
			msg := "volume grown from " + humanBytes(old.size) + " to " + humanBytes(now.size)
			if len(grownOnline) > 0 {
				msg += " online, through running vminstance " + strings.Join(grownOnline, ", ")
			}
			return []pendingEvent{{v1alpha1.EventTypeNormal, ReasonVolumeGrown, msg}}
		}
	case ReasonWaitingForSource, ReasonWaitingForUpload, ReasonWaitingForRelease:
		if changed {
			return []pendingEvent{{v1alpha1.EventTypeNormal, now.reason, now.message}}
		}
	case ReasonImportFailed, ReasonRetrying, ReasonNotImplemented:
		if changed {
			return []pendingEvent{{v1alpha1.EventTypeWarning, now.reason, now.message}}
		}
	}
	return nil
}

// describeSource names where a disk's data comes from, for messages.
func describeSource(s v1alpha1.DiskSource) string {
	switch s.Type() {
	case v1alpha1.SourceHTTP:
		return "from " + s.HTTP.URL
	case v1alpha1.SourceImage:
		return "golden image " + s.Image.Name
	case v1alpha1.SourceDisk:
		return "a copy of vmdisk " + s.Disk.Name
	case v1alpha1.SourceUpload:
		return "uploaded data"
	}
	return "nothing"
}

// describeVolume is "/path (10.0 GiB, qcow2)".
func describeVolume(d *v1alpha1.VMDisk) string {
	var details []string
	if d.Status.Size > 0 {
		details = append(details, humanBytes(d.Status.Size))
	}
	if d.Status.Format != "" {
		details = append(details, d.Status.Format)
	}
	s := d.Status.Path
	if len(details) > 0 {
		s += " (" + strings.Join(details, ", ") + ")"
	}
	return s
}

// recordEvents hands events to rec, which may be nil (no recorder wired).
func recordEvents(rec EventRecorder, obj v1alpha1.Object, evs []pendingEvent) {
	if rec == nil {
		return
	}
	for _, e := range evs {
		rec.Record(obj, e.typ, e.reason, "%s", e.message)
	}
}

// writeStatus stores disk's status when it changed (see writeStatus) and
// then records the events the change deserves. Events follow the write, so
// a failed write (a conflict) records nothing and the next pass, starting
// from the same stored status, decides again. grownOnline names the VMs
// this pass grew the volume through (see diskEvents).
func (r *DiskReconciler) writeStatus(ctx context.Context, disk *v1alpha1.VMDisk, before []byte, grownOnline []string) error {
	var old v1alpha1.VMDisk
	if err := json.Unmarshal(before, &old.Status); err != nil {
		return fmt.Errorf("reading previous status: %w", err)
	}
	if err := writeStatus(ctx, r.Store, disk, before); err != nil {
		return err
	}
	recordEvents(r.Recorder, disk, diskEvents(snapshotDisk(&old), disk, grownOnline))
	return nil
}
