package main

import (
	"context"
	"maps"
	"sync"
	"time"

	"github.com/vmdhq/vmd/internal/hypervisor"
)

// capsMaxAge bounds how long host capabilities are reused. What they
// report changes rarely (reserved huge pages, the CPU count), and each
// change should reach new domains without a vmd restart; a reconnect to
// libvirtd (perhaps restarted after a host change) drops them at once.
const capsMaxAge = time.Minute

// capsCache keeps the host capabilities libvirt reported, so reconciles
// do not ask libvirtd for them every time: the instance reconciler needs
// them on every pass, and virConnectGetCapabilities builds a large XML
// document in libvirtd (and, where libvirt cannot cache its view of qemu,
// probes qemu again). Entries expire after maxAge or on invalidate.
type capsCache struct {
	fetch  func(context.Context) (hypervisor.HostCapabilities, error)
	maxAge time.Duration
	now    func() time.Time

	mu    sync.Mutex
	caps  hypervisor.HostCapabilities
	at    time.Time
	valid bool
	// gen counts invalidations, so a fetch that started before one does
	// not store what it read from the libvirtd that went away.
	gen uint64
}

func newCapsCache(fetch func(context.Context) (hypervisor.HostCapabilities, error)) *capsCache {
	return &capsCache{fetch: fetch, maxAge: capsMaxAge, now: time.Now}
}

// get returns the cached capabilities, fetching them when there are none
// or they are older than maxAge. Errors are not cached. The lock is not
// held while libvirtd answers, so an invalidation (from the event
// forwarder) never waits for a slow call; two reconciles missing at once
// both ask, which only happens once per maxAge.
func (c *capsCache) get(ctx context.Context) (hypervisor.HostCapabilities, error) {
	c.mu.Lock()
	if c.valid && c.now().Sub(c.at) < c.maxAge {
		caps := cloneCaps(c.caps)
		c.mu.Unlock()
		return caps, nil
	}
	gen := c.gen
	c.mu.Unlock()
	caps, err := c.fetch(ctx)
	if err != nil {
		return hypervisor.HostCapabilities{}, err
	}
	c.mu.Lock()
	if gen == c.gen {
		c.caps, c.at, c.valid = cloneCaps(caps), c.now(), true
	}
	c.mu.Unlock()
	return caps, nil
}

// invalidate drops the cached capabilities (libvirtd reconnected: it may
// have been restarted on a changed host).
func (c *capsCache) invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.valid = false
	c.gen++
}

// cloneCaps copies c so callers cannot change the cached map.
func cloneCaps(c hypervisor.HostCapabilities) hypervisor.HostCapabilities {
	c.HugepagesKiB = maps.Clone(c.HugepagesKiB)
	return c
}
