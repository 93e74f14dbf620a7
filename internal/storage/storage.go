// Package storage is the port through which the controller turns a VMDisk
// into a volume on the host. The capability package is pure Go; technology
// adapters (qemu-img, directory pools) live in leaf packages and are wired in
// cmd/vmd only.
package storage

import (
	"fmt"

	"context"
	"github.com/vmdhq/vmd/internal/errdefs"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

// VolumeRequest is the desired volume for one VMDisk. It is derived from the
// validated, defaulted spec by the controller.
type VolumeRequest struct {
	// UID of the VMDisk: volumes are named after it so a re-created disk of
	// the same name never reuses old data.
	UID       string
	Namespace string
	Name      string
	// Class is the storage class (pool) name.
	Class string
	// SizeBytes is the virtual size requested by spec.storage.
	SizeBytes int64
	// Source is where the data comes from.
	Source v1alpha1.DiskSource
	// Optical keeps the data as a read-only ISO.
	Optical bool
}

// Volume is what exists on the host for a request.
type Volume struct {
	// Ready is true once the volume holds all its data.
	Ready bool
	// Path is the volume file.
	Path string
	// Format is qcow2, raw or iso.
	Format string
	// SizeBytes is the virtual size.
	SizeBytes int64
	// BytesDone / BytesTotal report import progress while !Ready.
	BytesDone, BytesTotal int64
	// Replicated tells whether the class really keeps more than one copy;
	// ReplicationNote explains the answer to the user.
	Replicated      bool
	ReplicationNote string
}

// Volumes manages volumes. Every method MUST be idempotent: the controller
// calls them again after a crash or a retry.
type Volumes interface {
	// EnsureVolume creates, imports or grows the volume so it matches req,
	// and reports its state. A long import returns Ready=false with progress
	// and is called again later.
	EnsureVolume(ctx context.Context, req VolumeRequest) (Volume, error)
	// DeleteVolume removes the volume of the VMDisk with uid; absent is fine.
	DeleteVolume(ctx context.Context, namespace, name, uid string) error
}

// NotImplemented is the Volumes used until a real storage adapter is wired
// in. It refuses every request with errdefs.ErrNotImplemented, so disks stay
// Pending with an honest reason instead of pretending to be Ready.
type NotImplemented struct{}

// EnsureVolume implements Volumes.
func (NotImplemented) EnsureVolume(context.Context, VolumeRequest) (Volume, error) {
	return Volume{}, fmt.Errorf("provisioning volumes: %w", errdefs.ErrNotImplemented)
}

// DeleteVolume implements Volumes; there is never anything to delete.
func (NotImplemented) DeleteVolume(context.Context, string, string, string) error { return nil }
