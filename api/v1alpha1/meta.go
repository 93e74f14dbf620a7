// Package v1alpha1 holds the wire types of the apps.cozystack.io/v1alpha1 API
// that vmd serves: VMInstance and VMDisk, their metadata and status. The same
// types are used by the daemon, the CLI and the tests, so a manifest that
// Hikube or Cozystack accepts decodes here without translation.
//
// This package depends only on the standard library, a YAML/JSON library and
// apimachinery's quantity and field-error helpers; it never touches the host.
package v1alpha1

import (
	"encoding/json"
	"fmt"
	"time"
)

// Group, Version and GroupVersion identify the API. They match Cozystack's so
// manifests written for Hikube apply unchanged.
const (
	Group        = "apps.cozystack.io"
	Version      = "v1alpha1"
	GroupVersion = Group + "/" + Version
)

// Kind names a resource kind as it appears in `kind:`.
type Kind string

// The kinds vmd serves.
const (
	KindVMInstance Kind = "VMInstance"
	KindVMDisk     Kind = "VMDisk"
)

// Kinds lists every kind served, in display order.
var Kinds = []Kind{KindVMInstance, KindVMDisk}

// Plural returns the lowercase plural used in URL paths (vminstances, vmdisks).
func (k Kind) Plural() string {
	switch k {
	case KindVMInstance:
		return "vminstances"
	case KindVMDisk:
		return "vmdisks"
	}
	return ""
}

// MaxNameLength returns the longest metadata.name Cozystack accepts for the
// kind: 53 (Helm release limit) minus the release prefix ("vm-instance-" or
// "vm-disk-"). Keeping the same limit means an object that works here can be
// moved to Hikube.
func (k Kind) MaxNameLength() int {
	switch k {
	case KindVMInstance:
		return 41
	case KindVMDisk:
		return 45
	}
	return 63
}

// KindForResource maps a plural, singular or short name (as typed on the
// command line or used in a URL) to its Kind.
func KindForResource(s string) (Kind, bool) {
	switch s {
	case "vminstances", "vminstance", "vmi", "vmis", "VMInstance":
		return KindVMInstance, true
	case "vmdisks", "vmdisk", "vmd", "vmds", "VMDisk":
		return KindVMDisk, true
	}
	return "", false
}

// DefaultNamespace is the tenant used when metadata.namespace is empty.
const DefaultNamespace = "default"

// TypeMeta carries apiVersion and kind, the first thing read from a manifest.
type TypeMeta struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       Kind   `json:"kind,omitempty"`
}

// ObjectMeta is the subset of Kubernetes object metadata vmd keeps.
// Server-owned fields (uid, generation, resourceVersion, timestamps) are
// ignored when a client sends them, except resourceVersion on update, which
// is the optimistic-concurrency precondition.
type ObjectMeta struct {
	Name              string            `json:"name,omitempty"`
	Namespace         string            `json:"namespace,omitempty"`
	UID               string            `json:"uid,omitempty"`
	Generation        int64             `json:"generation,omitempty"`
	ResourceVersion   string            `json:"resourceVersion,omitempty"`
	CreationTimestamp *Time             `json:"creationTimestamp,omitempty"`
	DeletionTimestamp *Time             `json:"deletionTimestamp,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
	// Finalizers block final removal after a delete request until the
	// controller has released what the object holds on the host.
	Finalizers []string `json:"finalizers,omitempty"`
}

// Time is a timestamp serialised as RFC 3339 in UTC with second precision,
// as Kubernetes does.
type Time struct{ time.Time }

// NewTime returns t truncated to seconds, as it will round-trip.
func NewTime(t time.Time) *Time { return &Time{t.UTC().Truncate(time.Second)} }

// Now is NewTime(time.Now()).
func Now() *Time { return NewTime(time.Now()) }

// MarshalJSON writes the RFC 3339 form, or null for the zero time.
func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(t.UTC().Format(time.RFC3339))
}

// UnmarshalJSON accepts RFC 3339 strings and null.
func (t *Time) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		t.Time = time.Time{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("time must be an RFC 3339 string: %w", err)
	}
	if s == "" {
		t.Time = time.Time{}
		return nil
	}
	p, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return err
	}
	t.Time = p
	return nil
}

// Object is implemented by VMInstance and VMDisk so that the store, the
// server and the client can handle both without reflection.
type Object interface {
	GetTypeMeta() *TypeMeta
	GetObjectMeta() *ObjectMeta
	// SpecJSON returns the canonical JSON of the spec; two objects have the
	// same desired state iff their SpecJSON is byte-equal. The store uses it
	// to bump generation only on a real spec change.
	SpecJSON() ([]byte, error)
	// CopyStatusFrom replaces this object's status with other's (same kind).
	CopyStatusFrom(other Object)
	// GetConditions returns the status conditions (for `wait --for`).
	GetConditions() []Condition
	// DeepCopyObject returns an independent copy.
	DeepCopyObject() Object
}

// NewObject returns an empty object of the kind with TypeMeta filled in.
func NewObject(kind Kind) (Object, error) {
	switch kind {
	case KindVMInstance:
		return &VMInstance{TypeMeta: TypeMeta{APIVersion: GroupVersion, Kind: KindVMInstance}}, nil
	case KindVMDisk:
		return &VMDisk{TypeMeta: TypeMeta{APIVersion: GroupVersion, Kind: KindVMDisk}}, nil
	}
	return nil, fmt.Errorf("unknown kind %q", kind)
}

// List is the wire form of a list response; Items holds objects of one kind.
type List struct {
	TypeMeta `json:",inline"`
	Metadata ListMeta          `json:"metadata"`
	Items    []json.RawMessage `json:"items"`
}

// ListMeta carries the resourceVersion a list was read at; a watch started
// from it misses no event.
type ListMeta struct {
	ResourceVersion string `json:"resourceVersion,omitempty"`
}

// WatchEventType is the type of a watch event, as in Kubernetes.
type WatchEventType string

// Watch event types.
const (
	Added    WatchEventType = "ADDED"
	Modified WatchEventType = "MODIFIED"
	Deleted  WatchEventType = "DELETED"
	// Bookmark carries only a resourceVersion, sent so an idle watcher
	// can resume from a recent point.
	Bookmark WatchEventType = "BOOKMARK"
	// Error carries a Status object; the stream ends after it.
	Error WatchEventType = "ERROR"
)

// WatchEvent is one line of a `?watch=true` stream (newline-delimited JSON).
type WatchEvent struct {
	Type   WatchEventType  `json:"type"`
	Object json.RawMessage `json:"object"`
}

// Status is the Kubernetes-style error body every failed request returns.
type Status struct {
	TypeMeta `json:",inline"`
	Status   string         `json:"status"` // "Failure"
	Message  string         `json:"message"`
	Reason   string         `json:"reason,omitempty"`
	Details  *StatusDetails `json:"details,omitempty"`
	Code     int            `json:"code"`
}

// StatusDetails names the object and lists one cause per field error.
type StatusDetails struct {
	Name   string        `json:"name,omitempty"`
	Kind   string        `json:"kind,omitempty"`
	Causes []StatusCause `json:"causes,omitempty"`
}

// StatusCause is one field error: the path, a machine reason and the text.
type StatusCause struct {
	Type    string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	Field   string `json:"field,omitempty"`
}

// CleanupFinalizer is put on every object at creation. A delete request
// only marks the object; the controller removes this finalizer once it has
// released what the object holds on the host (domain, volume, addresses),
// and only then does the object disappear. So `delete` never leaks host
// resources, even across a crash.
const CleanupFinalizer = "vmd.cozystack.io/cleanup"

// Status reasons, spelled as Kubernetes' metav1.StatusReason so tools and
// people trained on kubectl recognise them. The server sets them; clients
// map them back to the errdefs sentinels.
const (
	StatusReasonNotFound              = "NotFound"
	StatusReasonAlreadyExists         = "AlreadyExists"
	StatusReasonConflict              = "Conflict"
	StatusReasonInvalid               = "Invalid"
	StatusReasonBadRequest            = "BadRequest"
	StatusReasonGone                  = "Gone"
	StatusReasonExpired               = "Expired"
	StatusReasonForbidden             = "Forbidden"
	StatusReasonServiceUnavailable    = "ServiceUnavailable"
	StatusReasonNotImplemented        = "NotImplemented"
	StatusReasonMethodNotAllowed      = "MethodNotAllowed"
	StatusReasonUnsupportedMediaType  = "UnsupportedMediaType"
	StatusReasonRequestEntityTooLarge = "RequestEntityTooLarge"
	StatusReasonInternalError         = "InternalError"
	StatusReasonTimeout               = "Timeout"
)

// Annotations through which `vmctl start|stop|restart` ask the controller
// for a power change. They are plain metadata, so the request is durable
// (it survives a vmd crash between the API call and the action) and needs
// no extra registry: the controller remembers the timestamp it last acted
// on (its per-VM history) and acts once per request.
const (
	// AnnotationRequestedState is Running or Stopped; only runStrategy
	// Manual follows it (the other strategies decide by themselves).
	AnnotationRequestedState = "vmd.cozystack.io/requested-state"
	// AnnotationRequestedAt is when requested-state was last set
	// (RFC 3339); a new value is a new request.
	AnnotationRequestedAt = "vmd.cozystack.io/requested-at"
	// AnnotationRestartRequestedAt asks for one reboot (RFC 3339).
	AnnotationRestartRequestedAt = "vmd.cozystack.io/restart-requested-at"
)

// Requested states.
const (
	RequestedRunning = "Running"
	RequestedStopped = "Stopped"
)
