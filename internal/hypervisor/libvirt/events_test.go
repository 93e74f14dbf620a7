package libvirt

import (
	"log/slog"
	"testing"
	"time"

	"libvirt.org/go/libvirt"
)

func TestTranslateEvent(t *testing.T) {
	tests := []struct {
		name       string
		event      libvirt.DomainEventType
		detail     int
		wantType   EventType
		wantDetail string
		failure    bool
	}{
		{"boot", libvirt.DOMAIN_EVENT_STARTED, int(libvirt.DOMAIN_EVENT_STARTED_BOOTED), EventStarted, "booted", false},
		{"guest powered off", libvirt.DOMAIN_EVENT_STOPPED, int(libvirt.DOMAIN_EVENT_STOPPED_SHUTDOWN), EventStopped, StopShutdown, false},
		{"destroyed", libvirt.DOMAIN_EVENT_STOPPED, int(libvirt.DOMAIN_EVENT_STOPPED_DESTROYED), EventStopped, StopDestroyed, false},
		{"qemu killed", libvirt.DOMAIN_EVENT_STOPPED, int(libvirt.DOMAIN_EVENT_STOPPED_FAILED), EventStopped, StopFailed, true},
		{"guest crashed", libvirt.DOMAIN_EVENT_STOPPED, int(libvirt.DOMAIN_EVENT_STOPPED_CRASHED), EventStopped, StopCrashed, true},
		{"saved", libvirt.DOMAIN_EVENT_STOPPED, int(libvirt.DOMAIN_EVENT_STOPPED_SAVED), EventStopped, StopSaved, false},
		{"panic", libvirt.DOMAIN_EVENT_CRASHED, int(libvirt.DOMAIN_EVENT_CRASHED_PANICKED), EventCrashed, "panicked", true},
		{"acpi from host", libvirt.DOMAIN_EVENT_SHUTDOWN, int(libvirt.DOMAIN_EVENT_SHUTDOWN_HOST), EventShutdown, "host", false},
		{"defined", libvirt.DOMAIN_EVENT_DEFINED, int(libvirt.DOMAIN_EVENT_DEFINED_UPDATED), EventDefined, "updated", false},
		{"undefined", libvirt.DOMAIN_EVENT_UNDEFINED, int(libvirt.DOMAIN_EVENT_UNDEFINED_REMOVED), EventUndefined, "removed", false},
		{"paused on io error", libvirt.DOMAIN_EVENT_SUSPENDED, int(libvirt.DOMAIN_EVENT_SUSPENDED_IOERROR), EventSuspended, "ioerror", false},
		{"future detail", libvirt.DOMAIN_EVENT_STOPPED, 99, EventStopped, "detail-99", false},
		{"future type", libvirt.DomainEventType(42), 1, EventUnknown, "event-42/detail-1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ, detail := translateEvent(tt.event, tt.detail)
			if typ != tt.wantType || detail != tt.wantDetail {
				t.Errorf("translateEvent = %s/%s, want %s/%s", typ, detail, tt.wantType, tt.wantDetail)
			}
			if got := (LifecycleEvent{Type: typ, Detail: detail}).Failure(); got != tt.failure {
				t.Errorf("Failure() = %v, want %v", got, tt.failure)
			}
		})
	}
}

// Every type and detail the binding knows has a name: a new libvirt enum
// value added to the tables' source must not be forgotten in one of them.
func TestEventTablesComplete(t *testing.T) {
	for ev, details := range eventDetails {
		if _, ok := eventTypes[ev]; !ok {
			t.Errorf("details for unnamed event type %d", ev)
		}
		seen := map[string]bool{}
		for d, name := range details {
			if name == "" || seen[name] {
				t.Errorf("event %s detail %d: empty or duplicate name %q", eventTypes[ev], d, name)
			}
			seen[name] = true
		}
	}
	for ev := range eventTypes {
		if len(eventDetails[ev]) == 0 {
			t.Errorf("event type %s has no detail names", eventTypes[ev])
		}
	}
}

func TestEventHub(t *testing.T) {
	tests := []struct {
		name        string
		size        int
		publish     []LifecycleEvent
		wantNames   []string
		wantDropped uint64
	}{
		{
			name:      "fits",
			size:      4,
			publish:   []LifecycleEvent{{Name: "a", Type: EventStarted}, {Name: "b", Type: EventStarted}},
			wantNames: []string{"a", "b"},
		},
		{
			name: "overflow drops the oldest",
			size: 2,
			publish: []LifecycleEvent{
				{Name: "a", Type: EventStarted}, {Name: "b", Type: EventStarted},
				{Name: "c", Type: EventStarted}, {Name: "d", Type: EventStarted},
			},
			wantNames:   []string{"c", "d"},
			wantDropped: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newEventHub(slog.New(slog.DiscardHandler), tt.size)
			for _, ev := range tt.publish {
				h.publish(ev) // must never block
			}
			h.close()
			h.publish(LifecycleEvent{Name: "after-close"}) // ignored, no panic
			var got []string
			for ev := range h.ch {
				got = append(got, ev.Name)
			}
			if len(got) != len(tt.wantNames) {
				t.Fatalf("delivered %v, want %v", got, tt.wantNames)
			}
			for i := range got {
				if got[i] != tt.wantNames[i] {
					t.Fatalf("delivered %v, want %v", got, tt.wantNames)
				}
			}
			if h.droppedCount() != tt.wantDropped {
				t.Errorf("dropped %d, want %d", h.droppedCount(), tt.wantDropped)
			}
		})
	}
}

func TestEventHubUIDsAndWaiters(t *testing.T) {
	h := newEventHub(slog.New(slog.DiscardHandler), 8)
	h.rememberUID("vm-instance-web", "uid-1")
	wake, stop := h.wait("vm-instance-web")
	defer stop()
	other, stopOther := h.wait("vm-instance-db")
	defer stopOther()

	h.publish(LifecycleEvent{Name: "vm-instance-web", Type: EventStopped, Detail: StopFailed, Time: time.Now()})
	if ev := <-h.ch; ev.UID != "uid-1" {
		t.Errorf("event uid = %q, want uid-1", ev.UID)
	}
	select {
	case <-wake:
	default:
		t.Error("waiter for the domain not woken")
	}
	select {
	case <-other:
		t.Error("waiter for another domain woken")
	default:
	}

	// A reconnect wakes every waiter; an undefine forgets the uid.
	h.publish(LifecycleEvent{Type: EventReconnected})
	<-h.ch
	select {
	case <-other:
	default:
		t.Error("reconnect did not wake every waiter")
	}
	h.publish(LifecycleEvent{Name: "vm-instance-web", Type: EventUndefined})
	<-h.ch
	h.publish(LifecycleEvent{Name: "vm-instance-web", Type: EventDefined})
	if ev := <-h.ch; ev.UID != "" {
		t.Errorf("uid %q survived the undefine", ev.UID)
	}
}
