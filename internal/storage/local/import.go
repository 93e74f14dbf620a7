package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/images"
	"github.com/vmdhq/vmd/internal/storage"
	"github.com/vmdhq/vmd/internal/storage/qemuimg"
)

// importHTTP downloads req's http source (resumable, hashed, single-flight
// per URL, decompressed, sniffed: see images.Fetcher) and installs it.
func (p *Pools) importHTTP(ctx context.Context, j *job, req storage.VolumeRequest, final string) error {
	src := req.Source.HTTP
	j.setStage("downloading")
	res, err := p.cfg.Fetcher.Fetch(ctx, images.FetchRequest{URL: src.URL, ExpectedSHA256: src.SHA256, Progress: j.progress, Retrying: j.retrying})
	if err != nil {
		return err
	}
	defer removeFile(res.Path) //nolint:errcheck // gone when installed by rename; best effort otherwise
	j.mu.Lock()
	j.sha256 = res.SHA256
	j.mu.Unlock()
	return p.install(ctx, j, res.Path, res.Info, req, final)
}

// install turns the local image file src (sniffed as info) into the volume
// final: it applies the acceptance rule, the size rule and qemu-img's own
// safety view, then assembles the volume under a temporary name and
// renames it into place. src may be consumed (renamed).
func (p *Pools) install(ctx context.Context, j *job, src string, info images.Info, req storage.VolumeRequest, final string) error {
	if err := info.Check(req.Optical); err != nil {
		return fmt.Errorf("importing: %w", err)
	}
	if info.VirtualSize > req.SizeBytes {
		return tooLarge("image", info.VirtualSize, req.SizeBytes)
	}
	if req.Optical {
		j.setStage("storing ISO")
		return placeReadOnly(src, final)
	}
	format, err := qemuimg.ParseFormat(info.Format.QemuFormat())
	if err != nil {
		return fmt.Errorf("importing: %w", err)
	}
	if err := p.vet(ctx, src, format, "", req.SizeBytes); err != nil {
		return err
	}
	staging := tempName(final)
	defer removeFile(staging) //nolint:errcheck // gone after commit; best effort otherwise
	if err := p.toQcow2(ctx, j, src, format, staging); err != nil {
		return err
	}
	j.setStage("resizing")
	if err := p.cfg.Tool.Resize(ctx, staging, qemuimg.FormatQCOW2, req.SizeBytes); err != nil {
		return fmt.Errorf("importing: %w", err)
	}
	if err := os.Chmod(staging, volumeMode); err != nil {
		return fmt.Errorf("importing: %w", err)
	}
	if err := commitFile(staging, final); err != nil {
		return fmt.Errorf("importing: %w", err)
	}
	return nil
}

// vet asks qemu-img what it sees in src (opened as format, never probed)
// and refuses it by qemuimg.CheckSafe: defence in depth behind the byte
// sniffer. maxSize > 0 also bounds the virtual size as qemu computes it.
func (p *Pools) vet(ctx context.Context, src string, format qemuimg.Format, allowedBacking string, maxSize int64) error {
	qi, err := p.cfg.Tool.Info(ctx, src, format)
	if err != nil {
		return fmt.Errorf("importing: %w", err)
	}
	if err := qemuimg.CheckSafe(qi, allowedBacking); err != nil {
		return fmt.Errorf("importing: %w", err)
	}
	if maxSize > 0 && qi.VirtualSize > maxSize {
		return tooLarge("image", qi.VirtualSize, maxSize)
	}
	return nil
}

// toQcow2 writes src as a self-contained qcow2 at dst. A qcow2 source that
// passes qemu-img check is adopted as it is (renamed, or copied when it is
// shared or on another filesystem): rewriting it would cost a full read and
// write of the data and gain nothing. Every other format is converted with
// explicit formats.
func (p *Pools) toQcow2(ctx context.Context, j *job, src string, format qemuimg.Format, dst string) error {
	if format == qemuimg.FormatQCOW2 {
		j.setStage("checking")
		if err := p.checkConsistent(ctx, src); err != nil {
			return err
		}
		j.setStage("storing")
		if err := moveOrCopy(src, dst); err != nil {
			return fmt.Errorf("importing: %w", err)
		}
		return nil
	}
	j.setStage("converting 0%")
	err := p.cfg.Tool.Convert(ctx, qemuimg.ConvertRequest{
		Src: src, SrcFormat: format, Dst: dst, DstFormat: qemuimg.FormatQCOW2, Progress: j.convertProgress,
	})
	if err != nil {
		return fmt.Errorf("importing: %w", err)
	}
	return nil
}

// checkConsistent runs qemu-img check. Leaked clusters only waste space
// and are tolerated; corruption is refused.
func (p *Pools) checkConsistent(ctx context.Context, path string) error {
	err := p.cfg.Tool.Check(ctx, path, qemuimg.FormatQCOW2)
	var ce *qemuimg.CheckError
	if errors.As(err, &ce) && ce.Corruptions == 0 && ce.CheckErrors == 0 {
		p.log.Info("image has leaked clusters; accepted", "leaks", ce.Leaks)
		return nil
	}
	if err != nil {
		return fmt.Errorf("importing: %w", err)
	}
	return nil
}

// placeReadOnly stores an ISO as a read-only file at final.
func placeReadOnly(src, final string) error {
	staging := tempName(final)
	defer removeFile(staging) //nolint:errcheck // gone after commit; best effort otherwise
	if err := moveOrCopy(src, staging); err != nil {
		return fmt.Errorf("storing iso: %w", err)
	}
	if err := os.Chmod(staging, 0o444); err != nil {
		return fmt.Errorf("storing iso: %w", err)
	}
	if err := commitFile(staging, final); err != nil {
		return fmt.Errorf("storing iso: %w", err)
	}
	return nil
}

// tooLarge is the error for data that does not fit spec.storage.
func tooLarge(what string, size, storageBytes int64) error {
	return fmt.Errorf("%s virtual size %d bytes (%s) is larger than storage %d bytes (%s); raise spec.storage: %w",
		what, size, human(size), storageBytes, human(storageBytes), errdefs.ErrInvalid)
}

// human prints a byte count with a binary unit.
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// clone copies the source volume req.CloneFrom into final: a full,
// flattened copy (qemu-img convert follows an overlay's backing chain), so
// the clone shares nothing with its source.
func (p *Pools) clone(ctx context.Context, j *job, req storage.VolumeRequest, final string) error {
	src := filepath.Clean(req.CloneFrom)
	if !p.inPool(src) {
		return fmt.Errorf("cloning: source %s is not a volume of this host's pools: %w", src, errdefs.ErrInvalid)
	}
	srcOptical := strings.HasSuffix(src, extISO)
	if srcOptical != req.Optical {
		return fmt.Errorf("cloning: source vmdisk %q is optical=%t, the clone optical=%t: %w",
			req.Source.Disk.Name, srcOptical, req.Optical, errdefs.ErrInvalid)
	}
	if srcOptical {
		st, err := os.Stat(src)
		if err != nil {
			return fmt.Errorf("cloning: %w", err)
		}
		if st.Size() > req.SizeBytes {
			return tooLarge("source volume", st.Size(), req.SizeBytes)
		}
		staging := tempName(final)
		defer removeFile(staging) //nolint:errcheck // gone after commit
		j.setStage("copying")
		if err := copyFile(src, staging); err != nil {
			return fmt.Errorf("cloning: %w", err)
		}
		return placeReadOnly(staging, final)
	}
	info, err := p.cfg.Tool.Info(ctx, src, qemuimg.FormatQCOW2)
	if err != nil {
		return fmt.Errorf("cloning: %w", err)
	}
	// Our own volumes have at most a golden base from the cache.
	if info.BackingFile != "" && filepath.Dir(info.BackingFile) != p.cfg.CacheDir {
		return fmt.Errorf("cloning: source %s has backing file %s outside the image cache: %w", src, info.BackingFile, errdefs.ErrInvalid)
	}
	if err := qemuimg.CheckSafe(info, info.BackingFile); err != nil {
		return fmt.Errorf("cloning: %w", err)
	}
	if info.VirtualSize > req.SizeBytes {
		return tooLarge("source volume", info.VirtualSize, req.SizeBytes)
	}
	staging := tempName(final)
	defer removeFile(staging) //nolint:errcheck // gone after commit
	j.progress(0, info.VirtualSize)
	j.setStage("copying 0%")
	err = p.cfg.Tool.Convert(ctx, qemuimg.ConvertRequest{
		Src: src, SrcFormat: qemuimg.FormatQCOW2, Dst: staging, DstFormat: qemuimg.FormatQCOW2,
		Progress: func(pct float64) {
			j.progress(int64(pct/100*float64(info.VirtualSize)), info.VirtualSize)
			j.setStage(fmt.Sprintf("copying %.0f%%", pct))
		},
	})
	if err != nil {
		return fmt.Errorf("cloning: %w", err)
	}
	if err := p.cfg.Tool.Resize(ctx, staging, qemuimg.FormatQCOW2, req.SizeBytes); err != nil {
		return fmt.Errorf("cloning: %w", err)
	}
	if err := os.Chmod(staging, volumeMode); err != nil {
		return fmt.Errorf("cloning: %w", err)
	}
	if err := commitFile(staging, final); err != nil {
		return fmt.Errorf("cloning: %w", err)
	}
	return nil
}

// inPool reports whether path lies in one of the pools.
func (p *Pools) inPool(path string) bool {
	for _, c := range p.cfg.Classes {
		if rel, err := filepath.Rel(c.Path, path); err == nil && !strings.HasPrefix(rel, "..") && rel != "." {
			return true
		}
	}
	return false
}
