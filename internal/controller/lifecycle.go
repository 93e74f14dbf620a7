package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/hypervisor"
	"github.com/vmdhq/vmd/internal/state"
)

// Crash-loop back-off: crashLoopRestarts automatic restarts within
// crashLoopWindow start a back-off of backoffInitial, doubling per further
// crash up to backoffMax; a domain that stays up for stableAfter resets it.
// The numbers follow Kubernetes' CrashLoopBackOff (10 s doubling to 5 min).
const (
	crashLoopRestarts = 3
	crashLoopWindow   = 60 * time.Second
	backoffInitial    = 10 * time.Second
	backoffMax        = 5 * time.Minute
	stableAfter       = 60 * time.Second
)

// action is what the lifecycle asks the reconciler to do with the domain.
type action string

const (
	actNone    action = "None"
	actStart   action = "Start"
	actStop    action = "Stop"
	actRestart action = "Restart"
	// actBackoff: the domain should start, but the crash-loop back-off
	// holds it until history.BackoffUntil.
	actBackoff action = "Backoff"
)

// request is the user's pending power request, read from annotations.
type request struct {
	State     string
	StateAt   string
	RestartAt string
}

// requestOf reads the power-request annotations of vm.
func requestOf(vm *v1alpha1.VMInstance) request {
	a := vm.ObjectMeta.Annotations
	return request{State: a[v1alpha1.AnnotationRequestedState], StateAt: a[v1alpha1.AnnotationRequestedAt], RestartAt: a[v1alpha1.AnnotationRestartRequestedAt]}
}

// history is what the lifecycle must remember across reconciles and vmd
// restarts, kept in the instance directory (lifecycle.json). It is written
// before the action it records, so a crash in between repeats at most
// that action.
type history struct {
	// Strategy is the run strategy the rest was recorded under; a change
	// of strategy starts afresh (Once may run once more, RerunOnFailure
	// starts a VM that Halted stopped).
	Strategy v1alpha1.RunStrategy `json:"strategy,omitempty"`
	// Started says vmd booted (or found running) the domain under Strategy.
	Started bool `json:"started,omitempty"`
	// LastStart is when vmd last booted the domain.
	LastStart time.Time `json:"lastStart,omitzero"`
	// Restarts are the automatic restarts within crashLoopWindow.
	Restarts []time.Time `json:"restarts,omitempty"`
	// Backoff is the current back-off step; BackoffUntil holds restarts.
	Backoff      time.Duration `json:"backoff,omitempty"`
	BackoffUntil time.Time     `json:"backoffUntil,omitzero"`
	// HonouredStateAt and HonouredRestartAt are the request timestamps
	// already acted on.
	HonouredStateAt   string `json:"honouredStateAt,omitempty"`
	HonouredRestartAt string `json:"honouredRestartAt,omitempty"`
	// LastExit is how the domain last stopped on its own.
	LastExit hypervisor.ExitKind `json:"lastExit,omitempty"`
	// SeedHash is the hash of the cloud-init seed written to cidata.iso.
	SeedHash string `json:"seedHash,omitempty"`
	// DefinedHash is the hash of the domain XML last defined;
	// RunningHash the one the running guest booted with, and BootHash
	// the same without the generation counter (see bootHash). A history
	// written before BootHash existed has RunningHash only.
	DefinedHash string `json:"definedHash,omitempty"`
	RunningHash string `json:"runningHash,omitempty"`
	BootHash    string `json:"bootHash,omitempty"`
	// BootGeneration is the spec generation the running guest booted
	// with: when a restart would change what it runs while the spec is the
	// same, vmd itself (an upgrade, its configuration) changed the
	// definition, and RestartRequired says so instead of blaming the spec.
	BootGeneration int64 `json:"bootGeneration,omitempty"`
}

// bootsOlder reports whether the running guest booted from a definition
// other than the current one (a restart would change what it runs).
func (h *history) bootsOlder(cur definitionHashes) bool {
	if h.BootHash != "" {
		return h.BootHash != cur.boot
	}
	return h.RunningHash != "" && h.RunningHash != cur.defined
}

// settle folds an observation into h before deciding: a strategy change
// starts afresh, a running domain counts as started, and one that has run
// for stableAfter clears the crash-loop back-off.
func (h *history) settle(strategy v1alpha1.RunStrategy, obs hypervisor.DomainState, now time.Time) {
	if h.Strategy != strategy {
		h.Strategy, h.Started = strategy, false
		h.Restarts, h.Backoff, h.BackoffUntil = nil, 0, time.Time{}
	}
	if obs.Running {
		h.Started, h.LastExit = true, hypervisor.ExitNone
		if !h.LastStart.IsZero() && now.Sub(h.LastStart) >= stableAfter {
			h.Restarts, h.Backoff, h.BackoffUntil = nil, 0, time.Time{}
		}
	} else if e := obs.Exit(); e != hypervisor.ExitNone && (e != hypervisor.ExitUnknown || h.LastExit == hypervisor.ExitNone) {
		// libvirt forgets the reason when libvirtd restarts: an exit
		// already recorded beats "unknown".
		h.LastExit = e
	}
}

// decision is decide's answer: the action, a word for the status, and
// whether a start counts as an automatic restart (crash-loop accounting).
type decision struct {
	Action action
	// Reason explains the decision for conditions and logs.
	Reason string
	// Restart marks a start that is the run strategy restarting the VM.
	Restart bool
}

// decide is the run strategy as a pure function of what the hypervisor
// reports, what happened before and what the user asked for. It never
// looks at the clock except through now.
//
//   - Always: the domain runs; any stop (guest shutdown, crash, destroy,
//     host reboot) is followed by a restart.
//   - RerunOnFailure: runs; restarted only after a failure (qemu killed,
//     guest crash, host reboot); a guest that powers itself off stays off.
//   - Once: started once; never restarted after it stops.
//   - Manual: never started or stopped by vmd on its own; follows
//     `vmctl start|stop` requests, each once.
//   - Halted: stopped (ACPI shutdown, then destroy after the timeout).
//
// A restart request (`vmctl restart`) reboots a running domain under
// every strategy but Halted, and starts a stopped Manual one.
func decide(strategy v1alpha1.RunStrategy, obs hypervisor.DomainState, h history, req request, now time.Time) decision {
	restartAsked := req.RestartAt != "" && req.RestartAt != h.HonouredRestartAt
	stateAsked := req.StateAt != "" && req.StateAt != h.HonouredStateAt
	if obs.Running {
		switch {
		case strategy == v1alpha1.RunStrategyHalted:
			return decision{Action: actStop, Reason: "runStrategy is Halted"}
		case strategy == v1alpha1.RunStrategyManual && stateAsked && req.State == v1alpha1.RequestedStopped:
			return decision{Action: actStop, Reason: "stop requested"}
		case restartAsked:
			return decision{Action: actRestart, Reason: "restart requested"}
		}
		return decision{Action: actNone, Reason: "running"}
	}
	var d decision
	switch strategy {
	case v1alpha1.RunStrategyHalted:
		return decision{Action: actNone, Reason: "runStrategy is Halted"}
	case v1alpha1.RunStrategyManual:
		if (stateAsked && req.State == v1alpha1.RequestedRunning) || restartAsked {
			return decision{Action: actStart, Reason: "start requested"}
		}
		return decision{Action: actNone, Reason: "runStrategy is Manual; waiting for vmctl start"}
	case v1alpha1.RunStrategyOnce:
		if h.Started {
			return decision{Action: actNone, Reason: "runStrategy is Once and the VM has run"}
		}
		d = decision{Action: actStart, Reason: "runStrategy is Once"}
	case v1alpha1.RunStrategyRerunOnFailure:
		switch {
		case !h.Started:
			d = decision{Action: actStart, Reason: "runStrategy is RerunOnFailure"}
		case failed(obs, h):
			d = decision{Action: actStart, Reason: "restarting after a failure", Restart: true}
		default:
			return decision{Action: actNone, Reason: "the guest stopped without failure (runStrategy RerunOnFailure)"}
		}
	default: // Always
		d = decision{Action: actStart, Reason: "runStrategy is Always"}
		if h.Started {
			d = decision{Action: actStart, Reason: "restarting after the domain stopped (" + exitWord(obs, h) + ")", Restart: true}
		}
	}
	if d.Restart && now.Before(h.BackoffUntil) {
		return decision{Action: actBackoff, Reason: "crash loop: restart delayed until " + h.BackoffUntil.UTC().Format(time.RFC3339)}
	}
	return d
}

// failed reports whether the last stop was a failure. A domain that is
// gone altogether (undefined behind vmd's back) or shut off for a reason
// libvirt lost (host reboot) counts as failed: nobody asked it to stop.
func failed(obs hypervisor.DomainState, h history) bool {
	switch e := exitOf(obs, h); e {
	case hypervisor.ExitShutdown, hypervisor.ExitDestroyed:
		return false
	}
	return true
}

// exitOf is how the domain last stopped: libvirt's reason, unless libvirt
// lost it and the history recorded it while it still knew.
func exitOf(obs hypervisor.DomainState, h history) hypervisor.ExitKind {
	if e := obs.Exit(); e != hypervisor.ExitNone && (e != hypervisor.ExitUnknown || h.LastExit == hypervisor.ExitNone) {
		return e
	}
	if h.LastExit != hypervisor.ExitNone {
		return h.LastExit
	}
	if !obs.Exists {
		return hypervisor.ExitUnknown
	}
	return h.LastExit
}

func exitWord(obs hypervisor.DomainState, h history) string {
	if e := exitOf(obs, h); e != hypervisor.ExitNone {
		return string(e)
	}
	return "unknown"
}

// recordStart updates h for a start vmd is about to make. Automatic
// restarts are counted; crashLoopRestarts of them within crashLoopWindow
// arm the back-off for the next one.
func (h *history) recordStart(d decision, now time.Time) {
	h.Started, h.LastStart = true, now
	if !d.Restart {
		return
	}
	kept := h.Restarts[:0]
	for _, t := range h.Restarts {
		if now.Sub(t) < crashLoopWindow {
			kept = append(kept, t)
		}
	}
	kept = append(kept, now)
	h.Restarts = kept
	if len(h.Restarts) >= crashLoopRestarts {
		if h.Backoff == 0 {
			h.Backoff = backoffInitial
		} else {
			h.Backoff = min(2*h.Backoff, backoffMax)
		}
		h.BackoffUntil = now.Add(h.Backoff)
	}
}

// honour marks the requests decide acted on, so each is done once.
func (h *history) honour(req request) {
	h.HonouredStateAt, h.HonouredRestartAt = req.StateAt, req.RestartAt
}

// clone returns a deep copy of h.
func (h *history) clone() history {
	c := *h
	c.Restarts = slices.Clone(h.Restarts)
	return c
}

// equal reports whether h and o record the same facts.
func (h *history) equal(o history) bool {
	a, errA := json.Marshal(h)
	b, errB := json.Marshal(o)
	return errA == nil && errB == nil && bytes.Equal(a, b)
}

// inBackoff reports whether restarts are being held back.
func (h *history) inBackoff(now time.Time) bool { return now.Before(h.BackoffUntil) }

// WatchDomains turns the driver's lifecycle events into reconcile requests
// until ctx ends or the channel closes: an event wakes the VMInstance that
// owns the domain (found by uid, else by status.domainName), and a
// Reconnected event wakes every VMInstance, since events of the gap are
// lost. A nil channel (a driver without events) returns at once.
func WatchDomains(ctx context.Context, store state.Store, events <-chan hypervisor.Event, enqueue func(Key), log *slog.Logger) {
	if events == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			keys, err := keysForEvent(ctx, store, ev)
			if err != nil {
				log.Warn("mapping domain event", "domain", ev.Name, "type", ev.Type, "err", err)
				continue
			}
			log.Debug("domain event", "domain", ev.Name, "type", ev.Type, "detail", ev.Detail, "failure", ev.Failure, "keys", len(keys))
			for _, k := range keys {
				enqueue(k)
			}
		}
	}
}

// keysForEvent lists the VMInstances an event concerns.
func keysForEvent(ctx context.Context, store state.Store, ev hypervisor.Event) ([]Key, error) {
	objs, _, err := store.List(ctx, v1alpha1.KindVMInstance, "")
	if err != nil {
		return nil, fmt.Errorf("listing vminstances: %w", err)
	}
	var byName []Key
	for _, o := range objs {
		vm := o.(*v1alpha1.VMInstance)
		k := Key{Kind: v1alpha1.KindVMInstance, Namespace: vm.ObjectMeta.Namespace, Name: vm.ObjectMeta.Name}
		switch {
		case ev.Reconnected:
			byName = append(byName, k)
		case ev.UID != "" && vm.ObjectMeta.UID == ev.UID:
			return []Key{k}, nil
		case hypervisor.LibvirtName(vm.ObjectMeta.Namespace, vm.ObjectMeta.Name) == ev.Name:
			byName = append(byName, k)
		}
	}
	return byName, nil
}

// SweepOrphans runs once at start-up, before the controller: every domain
// carrying vmd metadata whose uid matches no VMInstance is destroyed and
// undefined (with its instance directory, unless a live object of the same
// name owns that), and logged. Domains that match an object are left alone
// here; their reconcile adopts them without a restart.
func SweepOrphans(ctx context.Context, store state.Store, driver hypervisor.Driver, instancesDir string, log *slog.Logger) error {
	doms, err := driver.List(ctx)
	if err != nil {
		return fmt.Errorf("listing domains: %w", err)
	}
	objs, _, err := store.List(ctx, v1alpha1.KindVMInstance, "")
	if err != nil {
		return fmt.Errorf("listing vminstances: %w", err)
	}
	uids := map[string]bool{}
	names := map[string]bool{}
	for _, o := range objs {
		m := o.GetObjectMeta()
		uids[m.UID] = true
		names[m.Namespace+"/"+m.Name] = true
	}
	var errs []error
	for _, d := range doms {
		if uids[d.Owner.UID] {
			log.Info("found domain to adopt", "domain", d.Name, "uid", d.Owner.UID, "running", d.Running)
			continue
		}
		log.Warn("removing orphaned domain", "domain", d.Name, "owner", d.Owner.Namespace+"/"+d.Owner.Name, "uid", d.Owner.UID, "running", d.Running)
		if err := removeDomain(ctx, driver, d.Name, 0); err != nil {
			errs = append(errs, err)
			continue
		}
		if d.Owner.Namespace == "" || d.Owner.Name == "" || names[d.Owner.Namespace+"/"+d.Owner.Name] || instancesDir == "" {
			continue
		}
		dir := filepath.Join(instancesDir, d.Owner.Namespace, d.Owner.Name)
		if filepath.Dir(filepath.Dir(dir)) != filepath.Clean(instancesDir) {
			continue // a name with separators never comes from vmd
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("removing instance dir of orphan %s: %w", d.Name, err))
		}
	}
	return errors.Join(errs...)
}
