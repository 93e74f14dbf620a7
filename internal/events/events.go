// Package events records what happens to objects (an import started, a
// volume became ready, a retry after an error) as Kubernetes-style Events,
// so `vmctl describe` can end with an Events table and `vmctl events` can
// list them, as kubectl users expect.
//
// Events are best-effort history kept in memory only, exactly as in
// Kubernetes, where they live in etcd with a one-hour TTL and any of them
// may be dropped: a Recorder keeps at most MaxPerObject events per object
// and MaxTotal overall (evicting the least recently seen), forgets an event
// TTL after it last occurred, and starts empty when vmd restarts. Nothing
// may depend on an event existing; object status is the source of truth.
// See docs/adr/0010-events.md.
//
// Repeats are folded like Kubernetes' event correlator: recording the same
// type, reason and message for the same object again bumps Count and
// LastTimestamp of the existing event instead of adding one.
package events

import (
	"container/list"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

// Defaults for Options, those of Kubernetes where it has one (the API
// server's --event-ttl is one hour).
const (
	DefaultTTL          = time.Hour
	DefaultMaxPerObject = 50
	DefaultMaxTotal     = 5000
	// DefaultComponent is the reporting component of every event.
	DefaultComponent = "vmd"
	// MaxMessageBytes bounds a message, as Kubernetes' recorder does
	// (1 KiB); a longer one is cut on a rune boundary and marked "...".
	MaxMessageBytes = 1024
)

// Options configure a Recorder. The zero value is usable.
type Options struct {
	// TTL is how long an event is kept after it last occurred; default
	// DefaultTTL.
	TTL time.Duration
	// MaxPerObject bounds the events kept for one object, so a flapping
	// object cannot push every other object's history out; default
	// DefaultMaxPerObject.
	MaxPerObject int
	// MaxTotal bounds all events kept (and so the memory used); default
	// DefaultMaxTotal.
	MaxTotal int
	// Component and Host fill every event's source; Component defaults
	// to DefaultComponent.
	Component, Host string
	// Now is the clock; default time.Now. Tests inject one to expire
	// events without waiting.
	Now func() time.Time
}

// Recorder is the in-memory event store: the controller records into it,
// the API server lists from it. It is safe for concurrent use.
//
// A nil *Recorder is a valid recorder that keeps nothing, so code under
// test can be given one without setting anything up.
type Recorder struct {
	opts Options

	mu sync.Mutex
	// seen orders every kept event by its last occurrence, least recent
	// at the front: expiry and the MaxTotal eviction both pop the front.
	seen *list.List
	// byKey finds the event a repeat folds into.
	byKey map[dedupeKey]*entry
	// byObject holds each object's events, least recently seen first,
	// for the MaxPerObject eviction.
	byObject map[v1alpha1.ObjectReference][]*entry
	// seq makes event names unique; it starts at the creation time so
	// names do not repeat across restarts either.
	seq uint64
}

// dedupeKey is what makes two recordings the same event (Kubernetes'
// correlator also keys on the source, which is constant here).
type dedupeKey struct {
	object               v1alpha1.ObjectReference
	typ, reason, message string
}

// entry is one kept event with its positions in the indexes.
type entry struct {
	event    v1alpha1.Event
	key      dedupeKey
	lastSeen time.Time // full precision; event timestamps are in seconds
	elem     *list.Element
}

// New returns an empty Recorder.
func New(opts Options) *Recorder {
	if opts.TTL <= 0 {
		opts.TTL = DefaultTTL
	}
	if opts.MaxPerObject <= 0 {
		opts.MaxPerObject = DefaultMaxPerObject
	}
	if opts.MaxTotal <= 0 {
		opts.MaxTotal = DefaultMaxTotal
	}
	if opts.Component == "" {
		opts.Component = DefaultComponent
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Recorder{
		opts:     opts,
		seen:     list.New(),
		byKey:    map[dedupeKey]*entry{},
		byObject: map[v1alpha1.ObjectReference][]*entry{},
		seq:      uint64(opts.Now().UnixNano()),
	}
}

// Record notes that something of type typ (v1alpha1.EventTypeNormal or
// EventTypeWarning) happened to obj, for reason, described by messageFmt
// formatted with args. A repeat of the last identical event folds into it.
// Record never fails and never blocks for long: events are best effort. An
// unknown type is recorded as Warning rather than lost, since the caller
// meant to say something.
func (r *Recorder) Record(obj v1alpha1.Object, typ, reason, messageFmt string, args ...any) {
	if r == nil || obj == nil {
		return
	}
	if typ != v1alpha1.EventTypeNormal {
		typ = v1alpha1.EventTypeWarning
	}
	msg := messageFmt
	if len(args) > 0 {
		msg = fmt.Sprintf(messageFmt, args...)
	}
	msg = truncate(msg, MaxMessageBytes)
	ref := referenceTo(obj)
	key := dedupeKey{object: ref, typ: typ, reason: reason, message: msg}

	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.opts.Now()
	r.expire(now)
	if e, ok := r.byKey[key]; ok {
		e.event.Count++
		e.event.LastTimestamp = *v1alpha1.NewTime(now)
		e.lastSeen = now
		r.seen.MoveToBack(e.elem)
		r.touchObject(e)
		return
	}
	r.seq++
	e := &entry{
		key:      key,
		lastSeen: now,
		event: v1alpha1.Event{
			TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindEvent},
			ObjectMeta: v1alpha1.ObjectMeta{
				Name:              ref.Name + "." + strconv.FormatUint(r.seq, 16),
				Namespace:         ref.Namespace,
				CreationTimestamp: v1alpha1.NewTime(now),
			},
			InvolvedObject: ref,
			Type:           typ,
			Reason:         reason,
			Message:        msg,
			Count:          1,
			FirstTimestamp: *v1alpha1.NewTime(now),
			LastTimestamp:  *v1alpha1.NewTime(now),
			Source:         v1alpha1.EventSource{Component: r.opts.Component, Host: r.opts.Host},
		},
	}
	e.elem = r.seen.PushBack(e)
	r.byKey[key] = e
	r.byObject[ref] = append(r.byObject[ref], e)
	if objs := r.byObject[ref]; len(objs) > r.opts.MaxPerObject {
		r.forget(objs[0])
	}
	for r.seen.Len() > r.opts.MaxTotal {
		r.forget(r.seen.Front().Value.(*entry))
	}
}

// List returns copies of the events kept, least recently seen first (the
// order kubectl prints them in). Empty namespace, kind or name match any.
func (r *Recorder) List(namespace string, kind v1alpha1.Kind, name string) []v1alpha1.Event {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expire(r.opts.Now())
	var out []v1alpha1.Event
	for el := r.seen.Front(); el != nil; el = el.Next() {
		ev := el.Value.(*entry).event
		o := ev.InvolvedObject
		if namespace != "" && o.Namespace != namespace || kind != "" && o.Kind != kind || name != "" && o.Name != name {
			continue
		}
		if ev.CreationTimestamp != nil {
			// The copy must not share the kept event's pointer.
			t := *ev.CreationTimestamp
			ev.CreationTimestamp = &t
		}
		out = append(out, ev)
	}
	return out
}

// Len returns how many events are kept (for tests and metrics).
func (r *Recorder) Len() int {
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expire(r.opts.Now())
	return r.seen.Len()
}

// expire forgets the events last seen more than TTL before now. The front
// of seen is the least recently seen, so it stops at the first survivor.
func (r *Recorder) expire(now time.Time) {
	cutoff := now.Add(-r.opts.TTL)
	for el := r.seen.Front(); el != nil; el = r.seen.Front() {
		e := el.Value.(*entry)
		if e.lastSeen.After(cutoff) {
			return
		}
		r.forget(e)
	}
}

// touchObject moves e to the most recent end of its object's events.
func (r *Recorder) touchObject(e *entry) {
	objs := r.byObject[e.key.object]
	if i := slices.Index(objs, e); i >= 0 {
		objs = append(slices.Delete(objs, i, i+1), e)
		r.byObject[e.key.object] = objs
	}
}

// forget removes e from every index.
func (r *Recorder) forget(e *entry) {
	r.seen.Remove(e.elem)
	delete(r.byKey, e.key)
	objs := r.byObject[e.key.object]
	if i := slices.Index(objs, e); i >= 0 {
		objs = slices.Delete(objs, i, i+1)
	}
	if len(objs) == 0 {
		delete(r.byObject, e.key.object)
		return
	}
	r.byObject[e.key.object] = objs
}

// referenceTo names obj for InvolvedObject.
func referenceTo(obj v1alpha1.Object) v1alpha1.ObjectReference {
	tm, m := obj.GetTypeMeta(), obj.GetObjectMeta()
	ns := m.Namespace
	if ns == "" {
		ns = v1alpha1.DefaultNamespace
	}
	apiVersion := tm.APIVersion
	if apiVersion == "" {
		apiVersion = v1alpha1.GroupVersion
	}
	return v1alpha1.ObjectReference{APIVersion: apiVersion, Kind: tm.Kind, Namespace: ns, Name: m.Name, UID: m.UID}
}

// truncate cuts s to at most n bytes on a rune boundary, ending in "...".
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ellipsis = "..."
	cut := n - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}
