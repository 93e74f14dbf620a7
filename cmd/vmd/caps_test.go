package main

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmdhq/vmd/internal/hypervisor"
)

func TestCapsCache(t *testing.T) {
	var calls atomic.Int32
	var fail atomic.Bool
	var beforeReturn func() // runs inside a fetch, as a reconnect would
	fetch := func(context.Context) (hypervisor.HostCapabilities, error) {
		n := calls.Add(1)
		if fail.Load() {
			return hypervisor.HostCapabilities{}, errors.New("libvirtd unavailable")
		}
		if beforeReturn != nil {
			beforeReturn()
		}
		return hypervisor.HostCapabilities{CPUs: int(n), HugepagesKiB: map[uint64]uint64{2048: 8}}, nil
	}
	now := time.Unix(1_000_000, 0)
	c := newCapsCache(fetch)
	c.now = func() time.Time { return now }
	get := func() hypervisor.HostCapabilities {
		t.Helper()
		caps, err := c.get(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return caps
	}

	first := get()
	first.HugepagesKiB[2048] = 0 // a caller's change must not reach the cache
	if again := get(); again.CPUs != 1 || again.HugepagesKiB[2048] != 8 || calls.Load() != 1 {
		t.Fatalf("second get = %+v after %d fetches; want the cached answer, unchanged", again, calls.Load())
	}
	now = now.Add(capsMaxAge)
	if got := get(); got.CPUs != 2 {
		t.Fatalf("after maxAge: %+v, want a fresh fetch", got)
	}
	c.invalidate()
	if got := get(); got.CPUs != 3 {
		t.Fatalf("after invalidate: %+v, want a fresh fetch", got)
	}
	// A fetch overtaken by an invalidation answers its caller but is
	// not kept: it may describe the libvirtd that went away.
	c.invalidate()
	beforeReturn = c.invalidate
	if got := get(); got.CPUs != 4 {
		t.Fatalf("racing fetch: %+v", got)
	}
	beforeReturn = nil
	if got := get(); got.CPUs != 5 {
		t.Fatalf("after a racing fetch: %+v, want a fresh fetch", got)
	}
	// Errors are not cached.
	c.invalidate()
	fail.Store(true)
	if _, err := c.get(t.Context()); err == nil {
		t.Fatal("want the fetch error")
	}
	fail.Store(false)
	if got := get(); got.CPUs != 7 {
		t.Fatalf("after an error: %+v, want a fresh fetch", got)
	}
}
