// Package storagetest provides a stateful in-memory storage.Volumes for
// tests of the controller and the whole daemon. It behaves like a real
// adapter (volumes appear, grow, import over several calls, disappear)
// rather than asserting call sequences.
package storagetest

import (
	"context"
	"fmt"
	"sync"

	"github.com/vmdhq/vmd/internal/storage"
)

// Fake keeps volumes in memory, keyed by VMDisk uid.
type Fake struct {
	mu sync.Mutex
	// ImportSteps is how many EnsureVolume calls an http/image/disk
	// source takes to become Ready (0 or 1 = at once).
	ImportSteps int
	// Err, when set, is returned by every EnsureVolume.
	Err     error
	volumes map[string]*fakeVolume
}

type fakeVolume struct {
	vol   storage.Volume
	steps int
}

// New returns an empty Fake.
func New() *Fake { return &Fake{volumes: map[string]*fakeVolume{}} }

// EnsureVolume implements storage.Volumes.
func (f *Fake) EnsureVolume(_ context.Context, req storage.VolumeRequest) (storage.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return storage.Volume{}, f.Err
	}
	v, ok := f.volumes[req.UID]
	if !ok {
		format := "qcow2"
		if req.Optical {
			format = "iso"
		}
		v = &fakeVolume{vol: storage.Volume{
			Path:            fmt.Sprintf("/fake/%s/%s-%s.%s", req.Class, req.Namespace, req.Name, format),
			Format:          format,
			BytesTotal:      req.SizeBytes,
			ReplicationNote: "fake storage keeps one copy",
		}}
		if req.Source.Image != nil && !req.Optical {
			// A golden-image disk is an overlay on the cached base, as
			// the local pools make it.
			v.vol.BackingPath, v.vol.BackingFormat = "/fake/images/"+req.Source.Image.Name+".qcow2", "qcow2"
		}
		f.volumes[req.UID] = v
	}
	if req.SizeBytes > v.vol.SizeBytes {
		v.vol.SizeBytes = req.SizeBytes
	}
	v.steps++
	if v.steps >= f.ImportSteps {
		v.vol.Ready = true
		v.vol.BytesDone = v.vol.BytesTotal
	} else {
		v.vol.BytesDone = v.vol.BytesTotal * int64(v.steps) / int64(f.ImportSteps)
	}
	return v.vol, nil
}

// DeleteVolume implements storage.Volumes.
func (f *Fake) DeleteVolume(_ context.Context, _, _, uid string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.volumes, uid)
	return nil
}

// Len returns the number of volumes that exist.
func (f *Fake) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.volumes)
}
