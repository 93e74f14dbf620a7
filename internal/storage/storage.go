// Package storage is the port through which the controller turns a VMDisk
// into a volume on the host. The capability package is pure Go; technology
// adapters (qemu-img, directory pools) live in leaf packages and are wired in
// cmd/vmd only.
package storage

import (
	"context"
	"fmt"
	"io"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
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
	// CloneFrom is the path of the source volume when Source.Disk is set.
	// The controller resolves it from the source VMDisk's status.path once
	// that disk is Ready; Volumes never reads the store itself.
	CloneFrom string
}

// Volume is what exists on the host for a request.
type Volume struct {
	// Ready is true once the volume holds all its data.
	Ready bool
	// Path is the volume file.
	Path string
	// Format is qcow2, raw or iso.
	Format string
	// BackingPath is the read-only base image a copy-on-write volume
	// reads through (a golden image in the cache), with its format; empty
	// for a standalone volume. The hypervisor names it in the domain so
	// the base is never handed to one VM's qemu (see
	// hypervisor.DiskSpec.BackingPath).
	BackingPath, BackingFormat string
	// SizeBytes is the virtual size.
	SizeBytes int64
	// BytesDone / BytesTotal report import progress while !Ready.
	BytesDone, BytesTotal int64
	// Replicated tells whether the class really keeps more than one copy;
	// ReplicationNote explains the answer to the user.
	Replicated      bool
	ReplicationNote string
	// WaitingForUpload is true for an upload{} disk whose data has not been
	// received yet (Ready is false).
	WaitingForUpload bool
	// BytesPerSecond is the average transfer rate of the running import
	// (0 when unknown or not importing).
	BytesPerSecond int64
	// Stage names what a running import is doing ("downloading",
	// "converting 42%", "uploading"), for the user; empty when idle.
	Stage string
	// SHA256 is the hex digest of the imported source bytes, when the
	// volume was imported (http, upload) in this process's lifetime.
	SHA256 string
	// Message is a note for the user about a volume that is not Ready
	// (for example why the last upload was refused).
	Message string
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

// Uploads accepts the data of a VMDisk whose source is upload{}.
type Uploads interface {
	// Upload streams body (size bytes, -1 unknown) into the disk's volume: the same sniffing, hostile-image
	// checks, conversion and size rules as an http import. ErrInvalid for bad data, ErrConflict if an upload
	// for this disk is already running or the disk is already Ready, ErrNotFound if the disk is unknown.
	Upload(ctx context.Context, req UploadRequest) (Volume, error)
}

// UploadRequest is one upload: the disk it fills and the data stream.
type UploadRequest struct {
	Volume VolumeRequest // the disk, resolved by the caller from the store
	Body   io.Reader
	Size   int64
}

// Images is the golden-image cache.
type Images interface {
	Pull(ctx context.Context, name string, progress func(done, total int64)) (ImageInfo, error) // download once; idempotent
	List(ctx context.Context) ([]ImageInfo, error)
}

// ImageInfo describes one golden image of the cache.
type ImageInfo struct {
	Name, Path, Format, URL, SHA256 string
	VirtualSize, ActualSize         int64
	Ready                           bool
	// Users are the volumes (namespace/name) whose overlay uses this base.
	Users []string
}

// RequestFor maps a stored VMDisk to the volume it wants. The controller
// and the upload route both use it, so a disk is never described two ways.
// The store only holds validated disks; a malformed spec.storage is still
// reported instead of becoming a 0-byte request.
func RequestFor(d *v1alpha1.VMDisk) (VolumeRequest, error) {
	size, err := d.Spec.Storage.Bytes()
	if err != nil {
		return VolumeRequest{}, fmt.Errorf("reading spec.storage of vmdisk %s/%s: %w: %w", d.ObjectMeta.Namespace, d.ObjectMeta.Name, err, errdefs.ErrInvalid)
	}
	return VolumeRequest{
		UID:       d.ObjectMeta.UID,
		Namespace: d.ObjectMeta.Namespace,
		Name:      d.ObjectMeta.Name,
		Class:     d.Spec.StorageClass,
		SizeBytes: size,
		Source:    d.Spec.Source,
		Optical:   d.Spec.Optical != nil && *d.Spec.Optical,
	}, nil
}
