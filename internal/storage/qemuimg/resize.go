package qemuimg

import (
	"context"
	"fmt"
	"strconv"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// Resize grows the image at path to newSize bytes of virtual size:
//
//	qemu-img resize -f FORMAT PATH SIZE
//
// Growing is the only direction: a smaller newSize is refused with
// errdefs.ErrInvalid before qemu-img runs, because shrinking deletes guest
// data past the new end. An unchanged size is a no-op, so Resize is
// idempotent. A disk held by a running VM fails with errdefs.ErrConflict
// (qemu's image lock); growing a live disk goes through QMP block_resize.
func (r *Runner) Resize(ctx context.Context, path string, format Format, newSize int64) error {
	if err := r.resize(ctx, path, format, newSize); err != nil {
		return fmt.Errorf("resizing %s: %w", path, err)
	}
	return nil
}

func (r *Runner) resize(ctx context.Context, path string, format Format, newSize int64) error {
	if newSize <= 0 {
		return fmt.Errorf("size %d must be positive: %w", newSize, errdefs.ErrInvalid)
	}
	info, err := r.Info(ctx, path, format)
	if err != nil {
		return err
	}
	switch {
	case newSize == info.VirtualSize:
		return nil
	case newSize < info.VirtualSize:
		return fmt.Errorf("shrinking from %d to %d bytes is refused (it would delete guest data): %w",
			info.VirtualSize, newSize, errdefs.ErrInvalid)
	}
	_, err = r.run(ctx, nil, "resize", "-q", "-f", string(format), info.Filename, strconv.FormatInt(newSize, 10))
	return err
}
