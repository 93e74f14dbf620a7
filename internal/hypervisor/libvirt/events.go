package libvirt

import (
	"log/slog"
	"strconv"
	"sync"
	"time"

	"libvirt.org/go/libvirt"
)

// EventType is the kind of a lifecycle event, libvirt's
// virDomainEventType in vmd's words.
type EventType string

// Lifecycle event types. Stopped carries the stop kind in Detail; see
// LifecycleEvent.Failure for the one distinction runStrategy needs.
const (
	EventDefined     EventType = "Defined"
	EventUndefined   EventType = "Undefined"
	EventStarted     EventType = "Started"
	EventSuspended   EventType = "Suspended"
	EventResumed     EventType = "Resumed"
	EventStopped     EventType = "Stopped"
	EventShutdown    EventType = "Shutdown"
	EventPMSuspended EventType = "PMSuspended"
	EventCrashed     EventType = "Crashed"
	// EventReconnected is not a libvirt event: the connection to libvirtd
	// was lost and is back, events of the gap are lost, and every domain
	// must be observed again. Name is empty.
	EventReconnected EventType = "Reconnected"
	// EventUnknown stands for a type newer than this code.
	EventUnknown EventType = "Unknown"
)

// Stop details (Detail of an EventStopped), as libvirt reports them. What
// each stop looks like was verified in the lab (see integration_test.go):
// `virsh destroy`/Destroy → StopDestroyed; the guest powering off →
// StopShutdown; qemu killed (kill -9, OOM killer, qemu crash) →
// StopFailed; a guest kernel panic with a pvpanic device and
// on_crash=destroy → StopCrashed.
const (
	StopShutdown     = "shutdown"
	StopDestroyed    = "destroyed"
	StopCrashed      = "crashed"
	StopMigrated     = "migrated"
	StopSaved        = "saved"
	StopFailed       = "failed"
	StopFromSnapshot = "from-snapshot"
	StopRecreated    = "recreated"
)

// LifecycleEvent is one domain lifecycle change reported by libvirt.
type LifecycleEvent struct {
	// Name is the domain name.
	Name string
	// UID is the VMInstance uid from the domain's vmd metadata as this Conn
	// last saw it (through Define, Metadata or List); empty for a domain
	// this Conn never looked at. Events never query libvirt: they are
	// translated on libvirt's event loop, which must not block.
	UID string
	// Type is the kind of change, Detail libvirt's reason in lower case
	// ("booted", "shutdown", "destroyed", "failed", ...).
	Type   EventType
	Detail string
	// Time is when the event reached vmd.
	Time time.Time
}

// Failure reports whether the event is the domain dying without anyone
// asking: qemu exited on its own or was killed (Stopped/failed), the guest
// crashed (Stopped/crashed), or the guest panicked (Crashed). This is what
// runStrategy RerunOnFailure restarts after; a guest that shut itself down
// (Stopped/shutdown) and vmd's own Destroy (Stopped/destroyed) are not
// failures.
func (e LifecycleEvent) Failure() bool {
	switch e.Type {
	case EventCrashed:
		return true
	case EventStopped:
		return e.Detail == StopFailed || e.Detail == StopCrashed
	}
	return false
}

// eventTypes names libvirt's virDomainEventType values.
var eventTypes = map[libvirt.DomainEventType]EventType{
	libvirt.DOMAIN_EVENT_DEFINED:     EventDefined,
	libvirt.DOMAIN_EVENT_UNDEFINED:   EventUndefined,
	libvirt.DOMAIN_EVENT_STARTED:     EventStarted,
	libvirt.DOMAIN_EVENT_SUSPENDED:   EventSuspended,
	libvirt.DOMAIN_EVENT_RESUMED:     EventResumed,
	libvirt.DOMAIN_EVENT_STOPPED:     EventStopped,
	libvirt.DOMAIN_EVENT_SHUTDOWN:    EventShutdown,
	libvirt.DOMAIN_EVENT_PMSUSPENDED: EventPMSuspended,
	libvirt.DOMAIN_EVENT_CRASHED:     EventCrashed,
}

// eventDetails names the detail values of each event type; the detail's
// meaning depends on the type (libvirt's virDomainEvent*DetailType enums).
var eventDetails = map[libvirt.DomainEventType]map[int]string{
	libvirt.DOMAIN_EVENT_DEFINED: {
		int(libvirt.DOMAIN_EVENT_DEFINED_ADDED):         "added",
		int(libvirt.DOMAIN_EVENT_DEFINED_UPDATED):       "updated",
		int(libvirt.DOMAIN_EVENT_DEFINED_RENAMED):       "renamed",
		int(libvirt.DOMAIN_EVENT_DEFINED_FROM_SNAPSHOT): "from-snapshot",
	},
	libvirt.DOMAIN_EVENT_UNDEFINED: {
		int(libvirt.DOMAIN_EVENT_UNDEFINED_REMOVED): "removed",
		int(libvirt.DOMAIN_EVENT_UNDEFINED_RENAMED): "renamed",
	},
	libvirt.DOMAIN_EVENT_STARTED: {
		int(libvirt.DOMAIN_EVENT_STARTED_BOOTED):        "booted",
		int(libvirt.DOMAIN_EVENT_STARTED_MIGRATED):      "migrated",
		int(libvirt.DOMAIN_EVENT_STARTED_RESTORED):      "restored",
		int(libvirt.DOMAIN_EVENT_STARTED_FROM_SNAPSHOT): "from-snapshot",
		int(libvirt.DOMAIN_EVENT_STARTED_WAKEUP):        "wakeup",
		int(libvirt.DOMAIN_EVENT_STARTED_RECREATED):     "recreated",
	},
	libvirt.DOMAIN_EVENT_SUSPENDED: {
		int(libvirt.DOMAIN_EVENT_SUSPENDED_PAUSED):          "paused",
		int(libvirt.DOMAIN_EVENT_SUSPENDED_MIGRATED):        "migrated",
		int(libvirt.DOMAIN_EVENT_SUSPENDED_IOERROR):         "ioerror",
		int(libvirt.DOMAIN_EVENT_SUSPENDED_WATCHDOG):        "watchdog",
		int(libvirt.DOMAIN_EVENT_SUSPENDED_RESTORED):        "restored",
		int(libvirt.DOMAIN_EVENT_SUSPENDED_FROM_SNAPSHOT):   "from-snapshot",
		int(libvirt.DOMAIN_EVENT_SUSPENDED_API_ERROR):       "api-error",
		int(libvirt.DOMAIN_EVENT_SUSPENDED_POSTCOPY):        "postcopy",
		int(libvirt.DOMAIN_EVENT_SUSPENDED_POSTCOPY_FAILED): "postcopy-failed",
	},
	libvirt.DOMAIN_EVENT_RESUMED: {
		int(libvirt.DOMAIN_EVENT_RESUMED_UNPAUSED):        "unpaused",
		int(libvirt.DOMAIN_EVENT_RESUMED_MIGRATED):        "migrated",
		int(libvirt.DOMAIN_EVENT_RESUMED_FROM_SNAPSHOT):   "from-snapshot",
		int(libvirt.DOMAIN_EVENT_RESUMED_POSTCOPY):        "postcopy",
		int(libvirt.DOMAIN_EVENT_RESUMED_POSTCOPY_FAILED): "postcopy-failed",
	},
	libvirt.DOMAIN_EVENT_STOPPED: {
		int(libvirt.DOMAIN_EVENT_STOPPED_SHUTDOWN):      StopShutdown,
		int(libvirt.DOMAIN_EVENT_STOPPED_DESTROYED):     StopDestroyed,
		int(libvirt.DOMAIN_EVENT_STOPPED_CRASHED):       StopCrashed,
		int(libvirt.DOMAIN_EVENT_STOPPED_MIGRATED):      StopMigrated,
		int(libvirt.DOMAIN_EVENT_STOPPED_SAVED):         StopSaved,
		int(libvirt.DOMAIN_EVENT_STOPPED_FAILED):        StopFailed,
		int(libvirt.DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT): StopFromSnapshot,
		int(libvirt.DOMAIN_EVENT_STOPPED_RECREATED):     StopRecreated,
	},
	libvirt.DOMAIN_EVENT_SHUTDOWN: {
		int(libvirt.DOMAIN_EVENT_SHUTDOWN_FINISHED): "finished",
		int(libvirt.DOMAIN_EVENT_SHUTDOWN_GUEST):    "guest",
		int(libvirt.DOMAIN_EVENT_SHUTDOWN_HOST):     "host",
	},
	libvirt.DOMAIN_EVENT_PMSUSPENDED: {
		int(libvirt.DOMAIN_EVENT_PMSUSPENDED_MEMORY): "memory",
		int(libvirt.DOMAIN_EVENT_PMSUSPENDED_DISK):   "disk",
	},
	libvirt.DOMAIN_EVENT_CRASHED: {
		int(libvirt.DOMAIN_EVENT_CRASHED_PANICKED):    "panicked",
		int(libvirt.DOMAIN_EVENT_CRASHED_CRASHLOADED): "crashloaded",
	},
}

// translateEvent names a libvirt lifecycle event. Values newer than this
// code keep their number ("Unknown", "detail-12"), so nothing is lost.
func translateEvent(event libvirt.DomainEventType, detail int) (EventType, string) {
	t, ok := eventTypes[event]
	if !ok {
		return EventUnknown, "event-" + strconv.Itoa(int(event)) + "/detail-" + strconv.Itoa(detail)
	}
	d, ok := eventDetails[event][detail]
	if !ok {
		d = "detail-" + strconv.Itoa(detail)
	}
	return t, d
}

// defaultEventBuffer is how many events Events holds for a slow reader
// before the oldest are dropped.
const defaultEventBuffer = 1024

// eventHub fans libvirt's callbacks out to the Events channel and to
// callers waiting for a domain to stop, and remembers which VMInstance uid
// each domain belongs to. It is called on libvirt's event loop and so
// MUST never block: the channel drops its oldest event when full.
type eventHub struct {
	log *slog.Logger

	mu      sync.Mutex
	ch      chan LifecycleEvent
	closed  bool
	dropped uint64
	uids    map[string]string                     // domain name -> VMInstance uid
	waiters map[string]map[chan struct{}]struct{} // domain name -> woken on its events
}

func newEventHub(log *slog.Logger, size int) *eventHub {
	return &eventHub{
		log:     log,
		ch:      make(chan LifecycleEvent, size),
		uids:    map[string]string{},
		waiters: map[string]map[chan struct{}]struct{}{},
	}
}

// rememberUID records the owner of a domain for later events.
func (h *eventHub) rememberUID(name, uid string) {
	if uid == "" {
		return
	}
	h.mu.Lock()
	h.uids[name] = uid
	h.mu.Unlock()
}

// publish delivers ev to the channel, dropping the oldest queued event
// when the reader is behind, and wakes waiters for its domain (all
// waiters for an empty name, i.e. a reconnect).
func (h *eventHub) publish(ev LifecycleEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	if ev.Name != "" {
		ev.UID = h.uids[ev.Name]
		if ev.Type == EventUndefined {
			delete(h.uids, ev.Name)
		}
	}
	for name, set := range h.waiters {
		if ev.Name != "" && name != ev.Name {
			continue
		}
		for w := range set {
			select {
			case w <- struct{}{}:
			default: // already has a pending wake-up
			}
		}
	}
	select {
	case h.ch <- ev:
		return
	default:
	}
	// Full: the reader lags. Losing the oldest keeps the newest state,
	// which is what a reconciler needs; it resyncs periodically anyway.
	select {
	case old := <-h.ch:
		h.dropped++
		if h.dropped == 1 || h.dropped%100 == 0 {
			h.log.Warn("libvirt event buffer full, dropping oldest events",
				"dropped_total", h.dropped, "dropped_domain", old.Name, "dropped_type", old.Type)
		}
	default:
	}
	select {
	case h.ch <- ev:
	default:
		h.dropped++
	}
}

// wait returns a channel that receives a wake-up after any event for name
// (or a reconnect), and a function to stop waiting.
func (h *eventHub) wait(name string) (<-chan struct{}, func()) {
	w := make(chan struct{}, 1)
	h.mu.Lock()
	set := h.waiters[name]
	if set == nil {
		set = map[chan struct{}]struct{}{}
		h.waiters[name] = set
	}
	set[w] = struct{}{}
	h.mu.Unlock()
	return w, func() {
		h.mu.Lock()
		delete(h.waiters[name], w)
		if len(h.waiters[name]) == 0 {
			delete(h.waiters, name)
		}
		h.mu.Unlock()
	}
}

// droppedCount returns how many events were dropped so far.
func (h *eventHub) droppedCount() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dropped
}

// close ends the channel; later publishes are ignored.
func (h *eventHub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.closed = true
		close(h.ch)
	}
}
