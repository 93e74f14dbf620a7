package qemuimg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// CreateRequest describes a blank volume.
type CreateRequest struct {
	// Path is the file to create. It must not exist.
	Path string
	// Format is qcow2 (the default for volumes) or raw.
	Format Format
	// SizeBytes is the virtual size; it must be positive.
	SizeBytes int64
	// Preallocation is qemu's preallocation mode: "" or "off" (sparse),
	// "metadata" (qcow2 only), "falloc" or "full".
	Preallocation string
	// ClusterSize is the qcow2 cluster size in bytes: 0 for qemu's
	// default (64 KiB), otherwise a power of two from 512 B to 2 MiB.
	ClusterSize int64
}

// Limits of qcow2 cluster sizes, from the qcow2 specification.
const (
	minClusterSize = 512
	maxClusterSize = 2 << 20
)

func (req CreateRequest) validate() error {
	var errs []string
	if req.Path == "" {
		errs = append(errs, "path is empty")
	}
	switch req.Format {
	case FormatQCOW2, FormatRaw:
	default:
		errs = append(errs, fmt.Sprintf("format %q cannot be created (want qcow2 or raw)", string(req.Format)))
	}
	if req.SizeBytes <= 0 {
		errs = append(errs, fmt.Sprintf("size %d must be positive", req.SizeBytes))
	}
	switch req.Preallocation {
	case "", "off", "falloc", "full":
	case "metadata":
		if req.Format != FormatQCOW2 {
			errs = append(errs, "preallocation metadata needs qcow2")
		}
	default:
		errs = append(errs, fmt.Sprintf("unknown preallocation %q (want off, metadata, falloc or full)", req.Preallocation))
	}
	if cs := req.ClusterSize; cs != 0 {
		if req.Format != FormatQCOW2 {
			errs = append(errs, "cluster size applies to qcow2 only")
		} else if cs < minClusterSize || cs > maxClusterSize || cs&(cs-1) != 0 {
			errs = append(errs, fmt.Sprintf("cluster size %d must be a power of two from %d to %d", cs, minClusterSize, maxClusterSize))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s: %w", strings.Join(errs, "; "), errdefs.ErrInvalid)
	}
	return nil
}

// Create makes a blank volume:
//
//	qemu-img create -f FORMAT [-o preallocation=..,cluster_size=..] TMP SIZE
//
// then renames TMP to req.Path. An existing req.Path is
// errdefs.ErrAlreadyExists and is left untouched; a missing directory is
// errdefs.ErrNotFound.
func (r *Runner) Create(ctx context.Context, req CreateRequest) error {
	if err := req.validate(); err != nil {
		return fmt.Errorf("creating %s: %w", req.Path, err)
	}
	dst, err := absPath("volume", req.Path)
	if err != nil {
		return fmt.Errorf("creating %s: %w", req.Path, err)
	}
	var opts []string
	if req.Preallocation != "" {
		opts = append(opts, "preallocation="+req.Preallocation)
	}
	if req.ClusterSize != 0 {
		opts = append(opts, "cluster_size="+strconv.FormatInt(req.ClusterSize, 10))
	}
	args := []string{"create", "-q", "-f", string(req.Format)}
	if len(opts) > 0 {
		args = append(args, "-o", strings.Join(opts, ","))
	}
	if err := r.produce(ctx, dst, nil, func(tmp string) []string {
		return append(args, tmp, strconv.FormatInt(req.SizeBytes, 10))
	}); err != nil {
		return fmt.Errorf("creating %s: %w", dst, err)
	}
	return nil
}

// OverlayRequest describes a copy-on-write qcow2 volume on an immutable base
// (a cached golden image): creating it is instant whatever the base's size.
type OverlayRequest struct {
	// Path is the overlay to create. It must not exist.
	Path string
	// BackingPath is the base image. It MUST be absolute and clean: qemu
	// records it verbatim in the overlay header and resolves a relative
	// name against the overlay's directory, not the caller's working
	// directory (lab pitfall 9), and CheckSafe compares it byte for byte.
	BackingPath string
	// BackingFormat is the base's format, recorded in the overlay (-F) so
	// nobody ever probes the base.
	BackingFormat Format
	// SizeBytes is the overlay's virtual size: at least the base's.
	SizeBytes int64
}

// CreateOverlay makes a qcow2 overlay on a base image:
//
//	qemu-img create -f qcow2 -F FMT -b /abs/base TMP SIZE
//
// then renames TMP to req.Path. The base must exist, be safe by CheckSafe's
// rules (no backing file or data file of its own: vmd keeps chains one level
// deep), and have a virtual size no larger than req.SizeBytes; a smaller
// overlay would hide the end of the base and is refused with both sizes
// named.
func (r *Runner) CreateOverlay(ctx context.Context, req OverlayRequest) error {
	if err := r.createOverlay(ctx, req); err != nil {
		return fmt.Errorf("creating overlay %s: %w", req.Path, err)
	}
	return nil
}

func (r *Runner) createOverlay(ctx context.Context, req OverlayRequest) error {
	switch {
	case req.BackingPath == "":
		return fmt.Errorf("backing path is empty: %w", errdefs.ErrInvalid)
	case !filepath.IsAbs(req.BackingPath):
		return fmt.Errorf("backing path %s is relative; qemu would resolve it against the overlay's directory: %w", req.BackingPath, errdefs.ErrInvalid)
	case filepath.Clean(req.BackingPath) != req.BackingPath:
		return fmt.Errorf("backing path %s is not clean (want %s): %w", req.BackingPath, filepath.Clean(req.BackingPath), errdefs.ErrInvalid)
	case req.SizeBytes <= 0:
		return fmt.Errorf("size %d must be positive: %w", req.SizeBytes, errdefs.ErrInvalid)
	}
	if err := req.BackingFormat.Validate(); err != nil {
		return fmt.Errorf("backing format: %w", err)
	}
	dst, err := absPath("overlay", req.Path)
	if err != nil {
		return err
	}
	if dst == req.BackingPath {
		return fmt.Errorf("overlay and backing file are the same file: %w", errdefs.ErrInvalid)
	}
	base, err := r.Info(ctx, req.BackingPath, req.BackingFormat)
	if err != nil {
		return fmt.Errorf("reading base: %w", err)
	}
	if err := CheckSafe(base, ""); err != nil {
		return fmt.Errorf("base: %w", err)
	}
	if req.SizeBytes < base.VirtualSize {
		return fmt.Errorf("overlay size %d is smaller than base %s of %d bytes: %w",
			req.SizeBytes, req.BackingPath, base.VirtualSize, errdefs.ErrInvalid)
	}
	return r.produce(ctx, dst, nil, func(tmp string) []string {
		return []string{"create", "-q", "-f", string(FormatQCOW2),
			"-F", string(req.BackingFormat), "-b", req.BackingPath,
			tmp, strconv.FormatInt(req.SizeBytes, 10)}
	})
}

// produce runs qemu-img to write a new file at a temporary name next to dst
// and commits it to dst. Whatever goes wrong (qemu-img failure, cancelled
// context, failed rename) the temporary file is removed; a cancelled context
// wins even over a qemu-img that just finished, so a cancelled call never
// creates dst.
func (r *Runner) produce(ctx context.Context, dst string, stdout io.Writer, args func(tmp string) []string) (err error) {
	if err := prepareDest(dst); err != nil {
		return err
	}
	tmp := tempPath(dst)
	defer func() {
		if err != nil {
			if rerr := os.Remove(tmp); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
				r.log().Warn("removing temporary image", "path", tmp, "err", rerr)
			}
		}
	}()
	if _, err := r.run(ctx, stdout, args(tmp)...); err != nil {
		return err
	}
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return commit(tmp, dst)
}
