package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/images"
	"github.com/vmdhq/vmd/internal/storage"
)

// Upload implements storage.Uploads. The data is received into scratch
// (hashed and counted on the way), decompressed when gzip/xz, sniffed, and
// installed exactly like an http import. It returns once the volume is
// Ready or the upload was refused; a refused upload leaves the disk
// waiting for another one.
func (p *Pools) Upload(ctx context.Context, ur storage.UploadRequest) (storage.Volume, error) {
	req := ur.Volume
	if req.Source.Upload == nil {
		return storage.Volume{}, fmt.Errorf("vmdisk %s/%s does not take uploads (its source is %s): %w",
			req.Namespace, req.Name, req.Source.Type(), errdefs.ErrInvalid)
	}
	c, err := p.class(req.Class)
	if err != nil {
		return storage.Volume{}, err
	}
	if err := checkRequest(req); err != nil {
		return storage.Volume{}, err
	}
	final := volumePath(c, req)
	if ok, err := fileExists(final); err != nil {
		return storage.Volume{}, fmt.Errorf("looking for volume: %w", err)
	} else if ok {
		return storage.Volume{}, errdefs.Conflict("vmdisk", req.Namespace, req.Name, "it already holds its uploaded data")
	}
	if err := mkdirTraversable(filepath.Dir(final)); err != nil {
		return storage.Volume{}, fmt.Errorf("creating namespace directory: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(p.ctx, cancel) // Close ends uploads too
	defer stop()
	j := newJob(jobUpload, cancel)
	j.stage = "uploading"
	j.progress(0, ur.Size)
	if !p.registerJob(req.UID, j) {
		return storage.Volume{}, errdefs.Conflict("vmdisk", req.Namespace, req.Name, "an upload or import is already running")
	}
	log := p.log.With("disk", req.Namespace+"/"+req.Name, "uid", req.UID)
	err = p.receive(ctx, j, ur, req, final)
	p.finishJob(j, err)
	if err != nil {
		log.Warn("upload refused", "err", err)
		return storage.Volume{}, err
	}
	p.mu.Lock()
	delete(p.uploadErr, req.UID)
	p.mu.Unlock()
	log.Info("upload imported", "path", final, "sha256", j.sha256)
	v, err := p.existing(ctx, storage.Volume{Replicated: c.Replicated, ReplicationNote: c.Note}, req, final)
	v.SHA256 = j.sha256
	return v, err
}

// receive stores the body in scratch and installs it.
func (p *Pools) receive(ctx context.Context, j *job, ur storage.UploadRequest, req storage.VolumeRequest, final string) error {
	dir := filepath.Join(p.cfg.ScratchDir, uploadsDir)
	f, err := os.CreateTemp(dir, req.UID+"-*.upload.tmp")
	if err != nil {
		return fmt.Errorf("receiving upload: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()

	h := sha256.New()
	cr := &countingReader{ctx: ctx, r: ur.Body, j: j, total: ur.Size}
	lw := &limitWriter{w: io.MultiWriter(f, h), limit: p.cfg.MaxUploadSize}
	n, err := io.Copy(lw, cr)
	switch {
	case lw.exceeded:
		return fmt.Errorf("receiving upload: more than %d bytes: %w", p.cfg.MaxUploadSize, errdefs.ErrInvalid)
	case err != nil:
		return fmt.Errorf("receiving upload: %w", err)
	case ur.Size >= 0 && n != ur.Size:
		return fmt.Errorf("receiving upload: got %d of %d announced bytes: %w", n, ur.Size, errdefs.ErrInvalid)
	case n == 0:
		return fmt.Errorf("receiving upload: no data: %w", errdefs.ErrInvalid)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("receiving upload: %w", err)
	}
	j.mu.Lock()
	j.sha256 = hex.EncodeToString(h.Sum(nil))
	j.mu.Unlock()

	img := f.Name()
	head := make([]byte, 8)
	hn, _ := f.ReadAt(head, 0)
	if comp := images.DetectCompression(head[:hn]); comp != images.CompressionNone {
		j.setStage("decompressing")
		out, err := p.decompress(ctx, comp, f, dir, req.UID)
		if err != nil {
			return err
		}
		defer os.Remove(out)
		img = out
	}
	info, err := probe(img)
	if err != nil {
		return err
	}
	return p.install(ctx, j, img, info, req, final)
}

// decompress writes the decompressed form of src to a new scratch file.
func (p *Pools) decompress(ctx context.Context, comp images.Compression, src io.ReaderAt, dir, uid string) (string, error) {
	d, ok := p.cfg.Decompressors[comp]
	if !ok {
		return "", fmt.Errorf("decompressing upload: no decompressor for %s: %w", comp, errdefs.ErrNotImplemented)
	}
	out, err := os.CreateTemp(dir, uid+"-*.unpack.tmp")
	if err != nil {
		return "", fmt.Errorf("decompressing upload: %w", err)
	}
	name := out.Name()
	lw := &limitWriter{w: out, limit: p.cfg.MaxUploadSize}
	err = d.Decompress(ctx, lw, io.NewSectionReader(src, 0, 1<<62))
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(name)
		if lw.exceeded {
			return "", fmt.Errorf("decompressing upload: more than %d bytes: %w", p.cfg.MaxUploadSize, errdefs.ErrInvalid)
		}
		return "", fmt.Errorf("decompressing upload: %w", err)
	}
	return name, nil
}

// probe is images.Probe on a file, without the scratch path in errors.
func probe(path string) (images.Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return images.Info{}, fmt.Errorf("inspecting upload: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return images.Info{}, fmt.Errorf("inspecting upload: %w", err)
	}
	info, err := images.Probe(f, st.Size())
	if err != nil {
		return images.Info{}, fmt.Errorf("inspecting upload: %w", err)
	}
	return info, nil
}

// countingReader reports progress and stops at cancellation.
type countingReader struct {
	ctx   context.Context
	r     io.Reader
	j     *job
	n     int64
	total int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(b)
	c.n += int64(n)
	c.j.progress(c.n, c.total)
	return n, err
}

// limitWriter fails writes beyond limit bytes.
type limitWriter struct {
	w        io.Writer
	n, limit int64
	exceeded bool
}

var errTooLarge = errors.New("too large")

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n+int64(len(p)) > l.limit {
		l.exceeded = true
		return 0, errTooLarge
	}
	n, err := l.w.Write(p)
	l.n += int64(n)
	return n, err
}
