// Package hypervisortest provides a stateful in-memory hypervisor.Driver
// for tests: domains are defined, started, stopped and undefined as a real
// hypervisor would, and tests can crash them.
package hypervisortest

import (
	"context"
	"sync"

	"github.com/vmdhq/vmd/internal/hypervisor"
)

// Fake keeps domains in memory, keyed by name.
type Fake struct {
	mu      sync.Mutex
	domains map[string]*Domain
	// Err, when set, is returned by every EnsureDomain.
	Err error
}

// Domain is a fake domain.
type Domain struct {
	Request hypervisor.DomainRequest
	Running bool
	// Starts counts how often the domain was started.
	Starts int
}

// New returns an empty Fake.
func New() *Fake { return &Fake{domains: map[string]*Domain{}} }

// EnsureDomain implements hypervisor.Driver.
func (f *Fake) EnsureDomain(_ context.Context, req hypervisor.DomainRequest) (hypervisor.DomainState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return hypervisor.DomainState{}, f.Err
	}
	d, ok := f.domains[req.Name]
	if !ok {
		d = &Domain{}
		f.domains[req.Name] = d
	}
	d.Request = req
	if req.Running && !d.Running {
		d.Starts++
	}
	d.Running = req.Running
	return hypervisor.DomainState{Exists: true, Running: d.Running}, nil
}

// DeleteDomain implements hypervisor.Driver.
func (f *Fake) DeleteDomain(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.domains, name)
	return nil
}

// Get returns a copy of the named domain.
func (f *Fake) Get(name string) (Domain, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.domains[name]
	if !ok {
		return Domain{}, false
	}
	return *d, true
}

// Len returns the number of defined domains.
func (f *Fake) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.domains)
}
