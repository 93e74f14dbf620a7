package controller

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/hypervisor"
)

// Event reasons of VMInstances, as `vmctl describe vmi` and `vmctl events`
// show them. Failures recorded from the Ready condition reuse its reason
// (DefineFailed, StartFailed, InvalidSpec, HypervisorUnavailable, ...).
const (
	ReasonDefined         = "Defined"
	ReasonStarted         = "Started"
	ReasonRestarted       = "Restarted"
	ReasonStopping        = "Stopping"
	ReasonStopped         = "Stopped"
	ReasonCrashed         = "Crashed"
	ReasonGuestShutdown   = "GuestShutdown"
	ReasonDestroyed       = "Destroyed"
	ReasonBackOff         = "BackOff"
	ReasonRestartRequired = "RestartRequired"
	ReasonHostLimits      = "HostLimits"
	ReasonGuestReady      = "GuestReady"
	ReasonWaitingForDisks = "WaitingForDisks"
	ReasonDeleted         = "Deleted"
)

// warningReadyReasons are the Ready reasons of a VMInstance that report a
// failure: each distinct one (reason or message) is a Warning event.
var warningReadyReasons = map[string]bool{
	"Failed": true, "InvalidSpec": true, "NotImplemented": true,
	"ObserveFailed": true, "HypervisorUnavailable": true,
	"DefineFailed": true, "StartFailed": true,
	"NetworkUnavailable": true, "NetworkSyncFailed": true,
}

// instanceSnapshot is what of a VMInstance's status, and of its lifecycle
// history, decides its events: taken from the stored status and the
// history as loaded, compared with the status about to be written and the
// history as the pass leaves it.
type instanceSnapshot struct {
	phase           string
	reason, message string // of the Ready condition
	restartCount    int32
	// crashLoop, restartRequired and hostLimits are the messages of those
	// conditions while True ("" otherwise).
	crashLoop, restartRequired, hostLimits string
	guestReady                             bool
	// definedHash is the history's hash of the defined XML (equal in both
	// snapshots when a write knows no history).
	definedHash string
	// exit is how the pass found the domain stopped (ExitNone if running
	// or not looked at); only the new snapshot has one.
	exit hypervisor.ExitKind
}

func snapshotInstance(st *v1alpha1.VMInstanceStatus) instanceSnapshot {
	s := instanceSnapshot{phase: st.Phase, restartCount: st.RestartCount}
	if c := v1alpha1.FindCondition(st.Conditions, v1alpha1.ConditionReady); c != nil {
		s.reason, s.message = c.Reason, c.Message
	}
	whenTrue := func(typ string) string {
		if c := v1alpha1.FindCondition(st.Conditions, typ); c != nil && c.Status == v1alpha1.ConditionTrue {
			return c.Message
		}
		return ""
	}
	s.crashLoop, s.restartRequired, s.hostLimits = whenTrue(ConditionCrashLoopBackOff), whenTrue(ConditionRestartRequired), whenTrue(ConditionHostLimits)
	if c := v1alpha1.FindCondition(st.Conditions, ConditionGuestReady); c != nil {
		s.guestReady = c.Status == v1alpha1.ConditionTrue
	}
	return s
}

// wasUp reports whether a phase means vmd believed the domain was up.
func wasUp(phase string) bool {
	return phase == v1alpha1.PhaseRunning || phase == v1alpha1.PhaseStarting
}

// instanceEvents is the pure rule of which changes of a VMInstance are
// worth an event. Only transitions count, never the state itself: a resync
// of a settled VM, or vmd re-adopting a running domain, records nothing.
//   - Defined: the domain was defined, or redefined for a new spec;
//   - Crashed, GuestShutdown, Destroyed: a domain vmd believed up (stored
//     phase Running or Starting) was found stopped; how, is libvirt's
//     reason (or the history's, when libvirt lost it);
//   - Restarted when restartCount grew (the run strategy restarted it),
//     otherwise Started when the phase becomes Running;
//   - Stopping when vmd begins a stop (with why), Stopped when a domain
//     that was up is now stopped and no exit above explains it;
//   - BackOff when the crash-loop back-off holds a restart;
//   - RestartRequired and HostLimits when those conditions appear (or,
//     for HostLimits, change), GuestReady when the guest finished booting;
//   - each distinct failure in Ready as a Warning with Ready's reason, and
//     each distinct wait for disks.
func instanceEvents(old, now instanceSnapshot, vm *v1alpha1.VMInstance) []pendingEvent {
	dom := vm.Status.DomainName
	var evs []pendingEvent
	add := func(typ, reason, msg string) { evs = append(evs, pendingEvent{typ, reason, msg}) }

	if now.definedHash != "" && now.definedHash != old.definedHash {
		if old.definedHash == "" {
			add(v1alpha1.EventTypeNormal, ReasonDefined, "defined domain "+dom)
		} else {
			add(v1alpha1.EventTypeNormal, ReasonDefined, fmt.Sprintf("redefined domain %s for generation %d", dom, vm.ObjectMeta.Generation))
		}
	}
	exited := now.exit != hypervisor.ExitNone && wasUp(old.phase)
	if exited {
		switch now.exit {
		case hypervisor.ExitFailure:
			add(v1alpha1.EventTypeWarning, ReasonCrashed, "domain "+dom+" stopped unexpectedly: qemu exited or the guest crashed")
		case hypervisor.ExitShutdown:
			add(v1alpha1.EventTypeNormal, ReasonGuestShutdown, "the guest powered itself off")
		case hypervisor.ExitDestroyed:
			add(v1alpha1.EventTypeWarning, ReasonDestroyed, "domain "+dom+" was destroyed outside vmd")
		default:
			add(v1alpha1.EventTypeWarning, ReasonCrashed, "domain "+dom+" was found shut off for a reason libvirt no longer knows (host reboot?)")
		}
	}
	readyChanged := now.reason != old.reason || now.message != old.message
	switch {
	case warningReadyReasons[now.reason] && readyChanged:
		add(v1alpha1.EventTypeWarning, now.reason, now.message)
	case now.reason == ReasonWaitingForDisks && readyChanged:
		add(v1alpha1.EventTypeNormal, ReasonWaitingForDisks, now.message)
	}
	switch {
	case now.restartCount > old.restartCount:
		add(v1alpha1.EventTypeNormal, ReasonRestarted, "runStrategy "+string(vm.Spec.RunStrategy)+" restarted domain "+dom)
	case now.phase == v1alpha1.PhaseRunning && old.phase != v1alpha1.PhaseRunning:
		add(v1alpha1.EventTypeNormal, ReasonStarted, "domain "+dom+" is running")
	case now.phase == v1alpha1.PhaseStopping && old.phase != v1alpha1.PhaseStopping:
		add(v1alpha1.EventTypeNormal, ReasonStopping, "stopping domain "+dom+": "+now.message)
	case now.phase == v1alpha1.PhaseStopped && !exited &&
		(wasUp(old.phase) || old.phase == v1alpha1.PhaseStopping || old.phase == v1alpha1.PhaseCrashLoopBackOff):
		add(v1alpha1.EventTypeNormal, ReasonStopped, now.message)
	}
	if now.phase == v1alpha1.PhaseCrashLoopBackOff && old.phase != v1alpha1.PhaseCrashLoopBackOff {
		msg := now.message
		if now.crashLoop != "" {
			msg = now.crashLoop
		}
		add(v1alpha1.EventTypeWarning, ReasonBackOff, msg)
	}
	if now.restartRequired != "" && old.restartRequired == "" {
		add(v1alpha1.EventTypeNormal, ReasonRestartRequired, now.restartRequired)
	}
	if now.hostLimits != "" && now.hostLimits != old.hostLimits {
		add(v1alpha1.EventTypeWarning, ReasonHostLimits, now.hostLimits)
	}
	if now.guestReady && !old.guestReady {
		add(v1alpha1.EventTypeNormal, ReasonGuestReady, "the guest announced the end of its boot on the serial console")
	}
	return evs
}

// historyChange carries what a status write's events need beyond status:
// the defined XML's hash as the pass found it (or as its last write left
// it) and now, and how the pass found the domain stopped.
type historyChange struct {
	oldDefined, newDefined string
	stoppedAs              hypervisor.ExitKind
}

// writeStatus stores vm's status when it changed and then records the
// events the change deserves, as the disk reconciler does: events follow a
// successful write, so a conflict records nothing and the next pass, from
// the same stored status, decides again. hc is nil where the pass has not
// read the history; its facts then produce no event.
func (r *InstanceReconciler) writeStatus(ctx context.Context, vm *v1alpha1.VMInstance, before []byte, hc *historyChange) error {
	var old v1alpha1.VMInstanceStatus
	if err := json.Unmarshal(before, &old); err != nil {
		return fmt.Errorf("reading previous status: %w", err)
	}
	if err := writeStatus(ctx, r.Store, vm, before); err != nil {
		return err
	}
	o, n := snapshotInstance(&old), snapshotInstance(&vm.Status)
	if hc != nil {
		o.definedHash, n.definedHash, n.exit = hc.oldDefined, hc.newDefined, hc.stoppedAs
	}
	recordEvents(r.Recorder, vm, instanceEvents(o, n, vm))
	return nil
}
