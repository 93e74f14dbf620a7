package controller

import (
	"sync"
	"time"
)

// Queue is a work queue of keys with the guarantees the reconcile loop
// relies on:
//   - dedupe: a key waiting in the queue is held once, however often added;
//   - one worker per key: a key handed out by Get is not handed out again
//     until Done, and an Add during processing re-queues it after Done;
//   - back-off lives here, not in sleeping goroutines: AddRateLimited
//     delays a key exponentially per consecutive failure, Forget resets it;
//   - delayed adds (AddAfter) keep only the earliest due time per key.
type Queue[K comparable] struct {
	mu         sync.Mutex
	cond       *sync.Cond
	ready      []K
	dirty      map[K]struct{}
	processing map[K]struct{}
	delayed    map[K]*delayedItem
	failures   map[K]int
	shutdown   bool

	baseDelay time.Duration
	maxDelay  time.Duration
}

type delayedItem struct {
	due   time.Time
	timer *time.Timer
}

// NewQueue returns a queue whose back-off starts at base and doubles per
// consecutive failure up to max.
func NewQueue[K comparable](base, maxDelay time.Duration) *Queue[K] {
	q := &Queue[K]{
		dirty:      map[K]struct{}{},
		processing: map[K]struct{}{},
		delayed:    map[K]*delayedItem{},
		failures:   map[K]int{},
		baseDelay:  base,
		maxDelay:   maxDelay,
	}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Add makes key ready for processing now.
func (q *Queue[K]) Add(key K) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.addLocked(key)
}

func (q *Queue[K]) addLocked(key K) {
	if q.shutdown {
		return
	}
	if d, ok := q.delayed[key]; ok {
		d.timer.Stop()
		delete(q.delayed, key)
	}
	if _, ok := q.dirty[key]; ok {
		return
	}
	q.dirty[key] = struct{}{}
	if _, ok := q.processing[key]; ok {
		// Done will put it back; never two workers on one key.
		return
	}
	q.ready = append(q.ready, key)
	q.cond.Signal()
}

// AddAfter makes key ready after d. If the key is already due earlier (or
// is ready now) the earlier time wins.
func (q *Queue[K]) AddAfter(key K, d time.Duration) {
	if d <= 0 {
		q.Add(key)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shutdown {
		return
	}
	if _, ok := q.dirty[key]; ok {
		return
	}
	due := time.Now().Add(d)
	if old, ok := q.delayed[key]; ok {
		if !old.due.After(due) {
			return
		}
		old.timer.Stop()
	}
	item := &delayedItem{due: due}
	item.timer = time.AfterFunc(d, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		if cur, ok := q.delayed[key]; ok && cur == item {
			delete(q.delayed, key)
			q.addLocked(key)
		}
	})
	q.delayed[key] = item
}

// AddRateLimited re-adds key after its back-off delay and counts a failure.
func (q *Queue[K]) AddRateLimited(key K) {
	q.AddAfter(key, q.NextBackoff(key))
}

// NextBackoff counts a failure of key and returns the delay to wait.
func (q *Queue[K]) NextBackoff(key K) time.Duration {
	q.mu.Lock()
	n := q.failures[key]
	q.failures[key] = n + 1
	q.mu.Unlock()
	d := q.baseDelay
	for i := 0; i < n && d < q.maxDelay; i++ {
		d *= 2
	}
	if d > q.maxDelay {
		d = q.maxDelay
	}
	return d
}

// Failures returns the consecutive failure count of key.
func (q *Queue[K]) Failures(key K) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.failures[key]
}

// Forget resets the back-off of key after a success.
func (q *Queue[K]) Forget(key K) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.failures, key)
}

// Get blocks until a key is ready or the queue shuts down (ok false).
// The caller MUST call Done(key) when finished.
func (q *Queue[K]) Get() (key K, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.ready) == 0 && !q.shutdown {
		q.cond.Wait()
	}
	if len(q.ready) == 0 {
		return key, false
	}
	key = q.ready[0]
	q.ready = q.ready[1:]
	delete(q.dirty, key)
	q.processing[key] = struct{}{}
	return key, true
}

// Done marks key finished; if it was added meanwhile it becomes ready.
func (q *Queue[K]) Done(key K) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.processing, key)
	if _, ok := q.dirty[key]; ok && !q.shutdown {
		q.ready = append(q.ready, key)
		q.cond.Signal()
	}
}

// Len returns the number of keys ready now (not delayed, not processing).
func (q *Queue[K]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.ready)
}

// ShutDown wakes every Get with ok false and drops pending work; keys
// being processed finish normally.
func (q *Queue[K]) ShutDown() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.shutdown = true
	for k, d := range q.delayed {
		d.timer.Stop()
		delete(q.delayed, k)
	}
	q.ready = nil
	q.cond.Broadcast()
}
