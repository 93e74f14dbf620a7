package controller

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestQueueDedupe(t *testing.T) {
	q := NewQueue[string](time.Millisecond, time.Second)
	for i := 0; i < 5; i++ {
		q.Add("a")
	}
	q.Add("b")
	if got := q.Len(); got != 2 {
		t.Fatalf("Len = %d, want 2 (a added five times counts once)", got)
	}
	k, _ := q.Get()
	if k != "a" {
		t.Fatalf("first key = %q, want a (FIFO)", k)
	}
}

func TestQueueOneWorkerPerKey(t *testing.T) {
	q := NewQueue[string](time.Millisecond, time.Second)
	q.Add("a")
	k, _ := q.Get()
	// Added while processing: must not be handed out before Done.
	q.Add("a")
	if q.Len() != 0 {
		t.Fatalf("key re-queued while still processing")
	}
	got := make(chan string, 1)
	go func() {
		k2, _ := q.Get()
		got <- k2
	}()
	select {
	case <-got:
		t.Fatal("second worker received the key before Done")
	case <-time.After(50 * time.Millisecond):
	}
	q.Done(k)
	select {
	case k2 := <-got:
		if k2 != "a" {
			t.Fatalf("got %q", k2)
		}
	case <-time.After(time.Second):
		t.Fatal("key added during processing was lost")
	}
}

func TestQueueConcurrentWorkersNeverOverlap(t *testing.T) {
	q := NewQueue[int](time.Millisecond, time.Second)
	var active [4]atomic.Int32
	var overlaps atomic.Int32
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k, ok := q.Get()
				if !ok {
					return
				}
				if active[k].Add(1) > 1 {
					overlaps.Add(1)
				}
				time.Sleep(100 * time.Microsecond)
				active[k].Add(-1)
				q.Done(k)
			}
		}()
	}
	for i := 0; i < 2000; i++ {
		q.Add(i % 4)
	}
	time.Sleep(50 * time.Millisecond)
	q.ShutDown()
	wg.Wait()
	if n := overlaps.Load(); n != 0 {
		t.Fatalf("%d times two workers held one key", n)
	}
}

func TestQueueBackoff(t *testing.T) {
	q := NewQueue[string](10*time.Millisecond, 80*time.Millisecond)
	want := []time.Duration{10, 20, 40, 80, 80}
	for i, w := range want {
		if got := q.NextBackoff("a"); got != w*time.Millisecond {
			t.Fatalf("failure %d: backoff %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	if q.Failures("a") != 5 {
		t.Fatalf("Failures = %d", q.Failures("a"))
	}
	q.Forget("a")
	if got := q.NextBackoff("a"); got != 10*time.Millisecond {
		t.Fatalf("after Forget backoff = %v, want base", got)
	}
}

func TestQueueAddAfterKeepsEarliest(t *testing.T) {
	q := NewQueue[string](time.Millisecond, time.Second)
	q.AddAfter("a", time.Hour)
	q.AddAfter("a", 20*time.Millisecond)
	q.AddAfter("a", time.Hour) // later: ignored
	start := time.Now()
	k, ok := q.Get()
	if !ok || k != "a" {
		t.Fatalf("Get = %q, %v", k, ok)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("delayed key took %v; the earlier due time was lost", el)
	}
}

func TestQueueAddCancelsDelay(t *testing.T) {
	q := NewQueue[string](time.Millisecond, time.Second)
	q.AddAfter("a", time.Hour)
	q.Add("a")
	if q.Len() != 1 {
		t.Fatalf("Add did not make the delayed key ready")
	}
}

func TestQueueShutDown(t *testing.T) {
	q := NewQueue[string](time.Millisecond, time.Second)
	done := make(chan bool)
	go func() {
		_, ok := q.Get()
		done <- ok
	}()
	time.Sleep(10 * time.Millisecond)
	q.ShutDown()
	if ok := <-done; ok {
		t.Fatal("Get returned ok after ShutDown")
	}
	q.Add("a")
	if q.Len() != 0 {
		t.Fatal("Add after ShutDown queued a key")
	}
}
