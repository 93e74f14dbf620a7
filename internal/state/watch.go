package state

import (
	"context"
	"fmt"
	"sync"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
)

// record is one committed write as kept in the replay window: the stored
// JSON rather than a decoded object, so every delivery decodes its own copy
// and no two consumers ever share an object.
type record struct {
	rv        uint64
	typ       v1alpha1.WatchEventType
	kind      v1alpha1.Kind
	namespace string
	data      []byte
}

// event decodes a fresh Event from the record.
func (r *record) event() (Event, error) {
	obj, err := decode(r.kind, r.data)
	if err != nil {
		return Event{}, err
	}
	return Event{Type: r.typ, Object: obj, ResourceVersion: formatRV(r.rv)}, nil
}

// watcher is one Watch call. Its channel is closed exactly once, by
// whichever comes first: its context ending, overflow, or store close.
type watcher struct {
	kind      v1alpha1.Kind
	namespace string // "" = all namespaces
	ch        chan Event
	// stop unregisters the context callback; set under broadcaster.mu.
	stop func() bool
}

func (w *watcher) matches(r *record) bool {
	return r.kind == w.kind && (w.namespace == "" || w.namespace == r.namespace)
}

// broadcaster fans committed writes out to watchers and keeps the last
// window records for replay. It never blocks: a full watcher channel closes
// that watcher instead.
//
// Every write consumes exactly one resourceVersion and produces exactly one
// record, so the window holds the contiguous versions
// oldest..current and "can replay from rv" is a range check.
type broadcaster struct {
	mu       sync.Mutex
	ring     []*record // circular, len == window once full
	start    int       // index of the oldest record in ring
	window   int
	buffer   int
	current  uint64 // resourceVersion of the last published write
	watchers map[*watcher]struct{}
	closed   bool
}

func newBroadcaster(current uint64, window, buffer int) *broadcaster {
	return &broadcaster{
		ring:     make([]*record, 0, window),
		window:   window,
		buffer:   buffer,
		current:  current,
		watchers: make(map[*watcher]struct{}),
	}
}

// subscribe registers a watcher for events after since (after the current
// version when fromNow) and queues the replay. The caller MUST hold the
// store's write lock so that current is the last committed version.
func (b *broadcaster) subscribe(ctx context.Context, kind v1alpha1.Kind, namespace string, since uint64, fromNow bool) (<-chan Event, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, fmt.Errorf("store is closed: %w", errdefs.ErrUnavailable)
	}
	if fromNow {
		since = b.current
	}
	if since > b.current {
		// Only possible if the state file was replaced by an older copy
		// while the client kept its version: a re-list resynchronises it.
		return nil, fmt.Errorf("resourceVersion %d is newer than the store's latest %d; re-list: %w",
			since, b.current, errdefs.ErrGone)
	}
	w := &watcher{kind: kind, namespace: namespace}
	var replay []*record
	if since < b.current {
		if len(b.ring) == 0 || since+1 < b.ring[b.start].rv {
			oldest := "none kept since start"
			if len(b.ring) > 0 {
				oldest = fmt.Sprintf("oldest kept is %d", b.ring[b.start].rv)
			}
			return nil, fmt.Errorf("resourceVersion %d is too old (%s); re-list: %w", since, oldest, errdefs.ErrGone)
		}
		for i := range b.ring {
			r := b.ring[(b.start+i)%len(b.ring)]
			if r.rv > since && w.matches(r) {
				replay = append(replay, r)
			}
		}
	}
	w.ch = make(chan Event, len(replay)+b.buffer)
	for _, r := range replay {
		ev, err := r.event()
		if err != nil {
			return nil, err
		}
		w.ch <- ev // cannot block: the channel has room for the replay
	}
	b.watchers[w] = struct{}{}
	w.stop = context.AfterFunc(ctx, func() { b.drop(w) })
	return w.ch, nil
}

// publish records a committed write and delivers it. It MUST be called in
// commit order (the store's write lock guarantees it).
func (b *broadcaster) publish(r *record) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	if len(b.ring) < b.window {
		b.ring = append(b.ring, r)
	} else {
		b.ring[b.start] = r
		b.start = (b.start + 1) % b.window
	}
	b.current = r.rv
	for w := range b.watchers {
		if !w.matches(r) {
			continue
		}
		ev, err := r.event()
		if err != nil {
			// Unreachable for JSON the store just wrote; closing makes
			// the consumer re-list rather than silently miss the event.
			b.closeLocked(w)
			continue
		}
		select {
		case w.ch <- ev:
		default:
			// Slow consumer: end its stream rather than block writers or
			// buffer without bound. It re-lists and watches again.
			b.closeLocked(w)
		}
	}
}

// drop ends w when its context is done.
func (b *broadcaster) drop(w *watcher) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.watchers[w]; ok {
		delete(b.watchers, w)
		close(w.ch)
	}
}

// closeLocked ends w; b.mu MUST be held.
func (b *broadcaster) closeLocked(w *watcher) {
	delete(b.watchers, w)
	close(w.ch)
	w.stop()
}

// close ends every watcher and refuses new ones.
func (b *broadcaster) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for w := range b.watchers {
		b.closeLocked(w)
	}
	b.ring = nil
}
