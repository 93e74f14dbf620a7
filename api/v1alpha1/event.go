package v1alpha1

// KindEvent and KindEventList name the event resource. Events are not in
// Kinds: they are not stored, applied or reconciled, only reported by the
// daemon and read back (GET .../events).
const (
	KindEvent     Kind = "Event"
	KindEventList Kind = "EventList"
)

// Event types, as Kubernetes' core/v1 EventTypeNormal and EventTypeWarning:
// Normal says what happened, Warning says something needs attention.
const (
	EventTypeNormal  = "Normal"
	EventTypeWarning = "Warning"
)

// Event is one thing that happened to an object (an import started, a
// volume became ready, a retry after an error), shaped like Kubernetes'
// core/v1 Event so `describe` and `vmctl events` read like kubectl's.
//
// Events are best-effort history, not state: vmd keeps them in memory only,
// for about an hour after they last occurred, and they are lost on restart
// (see docs/adr/0010-events.md). Nothing may depend on an event existing;
// the object's status is the source of truth.
type Event struct {
	TypeMeta `json:",inline"`
	// Metadata carries a generated name (<object>.<hex>) and the
	// namespace of the involved object.
	ObjectMeta `json:"metadata"`
	// InvolvedObject is the object the event is about.
	InvolvedObject ObjectReference `json:"involvedObject"`
	// Type is EventTypeNormal or EventTypeWarning.
	Type string `json:"type"`
	// Reason is a short UpperCamelCase machine word ("Imported",
	// "Retrying"); together with Type and Message it identifies repeats.
	Reason string `json:"reason"`
	// Message is the human-readable description.
	Message string `json:"message"`
	// Count is how many times this same event occurred between
	// FirstTimestamp and LastTimestamp; repeats are folded into one event
	// instead of flooding the list, as Kubernetes' event correlator does.
	Count int32 `json:"count"`
	// FirstTimestamp and LastTimestamp are the first and the most recent
	// occurrence.
	FirstTimestamp Time `json:"firstTimestamp"`
	LastTimestamp  Time `json:"lastTimestamp"`
	// Source names the component that reported the event.
	Source EventSource `json:"source"`
}

// ObjectReference names the object an event is about. UID tells apart two
// objects that had the same name at different times.
type ObjectReference struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       Kind   `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
	UID        string `json:"uid,omitempty"`
}

// EventSource names the reporter, as Kubernetes' core/v1 EventSource: the
// component ("vmd") and the host it runs on.
type EventSource struct {
	Component string `json:"component,omitempty"`
	Host      string `json:"host,omitempty"`
}

// EventList is the wire form of a list of events, oldest LastTimestamp
// first (the order kubectl prints them in).
type EventList struct {
	TypeMeta `json:",inline"`
	Metadata ListMeta `json:"metadata"`
	Items    []Event  `json:"items"`
}
