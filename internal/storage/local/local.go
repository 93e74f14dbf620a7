// Package local is the storage adapter that keeps VMDisk volumes as files
// in directory pools on this host, one pool per storage class, with golden
// base images in a read-only cache beside them. It implements the
// storage.Volumes, storage.Uploads and storage.Images ports on top of the
// image fetcher (internal/images) and qemu-img (through ImageTool).
//
// # Layout
//
//	<pool>/<namespace>/<name>-<uid[:8]>.qcow2   a disk (a qcow2 overlay for golden images)
//	<pool>/<namespace>/<name>-<uid[:8]>.iso     an optical disk, raw ISO 9660 bytes, 0444
//	<cache>/<image>.qcow2 (.iso)                a golden base, 0444, never written after install
//	<cache>/<image>.json                        where the base came from (URL, sha256)
//	<scratch>/uploads/<uid>.upload.tmp          an upload being received
//	*.tmp-<16 hex>                              anything being written (qemuimg.IsTemp)
//
// # Invariant: a final name means complete data
//
// Every volume and base is assembled under a temporary name recognised by
// qemuimg.IsTemp and renamed to its final name (without replacing) only when
// it holds all its data at its final size. "The file exists" therefore means
// "the import finished"; EnsureVolume relies on it after a crash, and the
// start-up Sweep deletes every temporary name, so nothing half-written is
// ever used.
package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/fsmode"
	"github.com/vmdhq/vmd/internal/images"
	"github.com/vmdhq/vmd/internal/storage"
	"github.com/vmdhq/vmd/internal/storage/qemuimg"
)

// ImageTool is the part of qemu-img this package uses. cmd/vmd passes a
// *qemuimg.Runner; declaring it here keeps the dependency narrow and lets
// tests count or fail calls.
type ImageTool interface {
	Info(ctx context.Context, path string, format qemuimg.Format) (qemuimg.Info, error)
	Create(ctx context.Context, req qemuimg.CreateRequest) error
	CreateOverlay(ctx context.Context, req qemuimg.OverlayRequest) error
	Convert(ctx context.Context, req qemuimg.ConvertRequest) error
	Resize(ctx context.Context, path string, format qemuimg.Format, newSize int64) error
	Check(ctx context.Context, path string, format qemuimg.Format) error
}

// Fetcher downloads images; *images.Fetcher implements it.
type Fetcher interface {
	Fetch(ctx context.Context, req images.FetchRequest) (images.Result, error)
	Sweep(partMaxAge time.Duration) error
}

// Class is one storage class: a directory pool.
type Class struct {
	// Path is the pool directory; it must be absolute.
	Path string
	// Replicated and Note are reported on every volume of the class.
	Replicated bool
	Note       string
}

// GoldenOverride replaces the catalogue URL of one golden image.
type GoldenOverride struct {
	URL    string
	SHA256 string
}

// Config configures New.
type Config struct {
	// Classes maps storage class names to pools; at least one.
	Classes map[string]Class
	// CacheDir holds golden base images. It must be absolute: overlays
	// record their base by absolute path.
	CacheDir string
	// ScratchDir holds uploads being received. It should be on the pools'
	// filesystem so finished imports are renamed, not copied.
	ScratchDir string
	// Mirror, when set, is the base URL golden image NAME is fetched from
	// as Mirror/NAME.qcow2 (NAME.iso for installer images).
	Mirror string
	// Overrides win over Mirror and the catalogue, per image name.
	Overrides map[string]GoldenOverride
	// Fetcher downloads http sources and golden images.
	Fetcher Fetcher
	// Tool runs qemu-img.
	Tool ImageTool
	// Decompressors undo the compression of uploads; nil means
	// images.DefaultDecompressors().
	Decompressors map[images.Compression]images.Decompressor
	// MaxUploadSize caps an upload (compressed and decompressed); 0 means
	// images.DefaultMaxImageSize.
	MaxUploadSize int64
	// PartMaxAge is passed to Fetcher.Sweep: partial downloads untouched
	// for longer are removed at start-up; 0 keeps them all.
	PartMaxAge time.Duration
	// Log receives one line per import, pull and sweep; nil discards.
	Log *slog.Logger
}

// Pools implements storage.Volumes, storage.Uploads and storage.Images
// with directory pools. It is safe for concurrent use.
type Pools struct {
	cfg Config
	log *slog.Logger

	// ctx is the parent of every background job; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	jobs map[string]*job // by VMDisk uid
	// failed remembers the permanent error of a request (by uid) so a
	// resync does not download a known-bad image again; a changed request
	// (other fingerprint) tries again.
	failed map[string]failure
	// uploadErr is why the last upload of a disk was refused; the disk
	// keeps waiting for a good one.
	uploadErr map[string]string
	// golden guards installing golden bases, one lock per image name.
	golden map[string]chan struct{}
	// pulling is the progress of golden images being downloaded, by name.
	pulling map[string]*pullState
}

type failure struct {
	fingerprint string
	err         error
}

var (
	_ storage.Volumes = (*Pools)(nil)
	_ storage.Uploads = (*Pools)(nil)
	_ storage.Images  = (*Pools)(nil)
)

// New validates cfg and creates the pool, cache and scratch directories.
func New(cfg Config) (*Pools, error) {
	if len(cfg.Classes) == 0 {
		return nil, fmt.Errorf("creating pools: no storage class configured: %w", errdefs.ErrInvalid)
	}
	if cfg.Fetcher == nil || cfg.Tool == nil {
		return nil, fmt.Errorf("creating pools: fetcher and image tool are required: %w", errdefs.ErrInvalid)
	}
	// qemu reads the volumes and the bases (see dirMode); the scratch
	// space is vmd's alone.
	qemuDirs := []string{cfg.CacheDir}
	for _, name := range slices.Sorted(maps.Keys(cfg.Classes)) {
		qemuDirs = append(qemuDirs, cfg.Classes[name].Path)
	}
	for _, d := range append(slices.Clone(qemuDirs), cfg.ScratchDir) {
		if !filepath.IsAbs(d) || filepath.Clean(d) != d {
			return nil, fmt.Errorf("creating pools: directory %q must be absolute and clean: %w", d, errdefs.ErrInvalid)
		}
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, d := range qemuDirs {
		if err := mkdirTraversable(d); err != nil {
			return nil, fmt.Errorf("creating pools: %w", err)
		}
	}
	// Namespace directories made by an older vmd (0700) hide their
	// volumes from qemu: give them the mode new ones get.
	for _, c := range cfg.Classes {
		entries, err := os.ReadDir(c.Path)
		if err != nil {
			return nil, fmt.Errorf("creating pools: %w", err)
		}
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			dir := filepath.Join(c.Path, e.Name())
			if _, changed, err := fsmode.MkdirAll(dir, dirMode); err != nil {
				return nil, fmt.Errorf("creating pools: %w", err)
			} else if changed {
				log.Info("made namespace directory traversable for qemu", "dir", dir, "mode", fmt.Sprintf("%#o", dirMode))
			}
		}
	}
	if err := os.MkdirAll(filepath.Join(cfg.ScratchDir, uploadsDir), 0o700); err != nil {
		return nil, fmt.Errorf("creating pools: %w", err)
	}
	if cfg.Decompressors == nil {
		cfg.Decompressors = images.DefaultDecompressors()
	}
	if cfg.MaxUploadSize <= 0 {
		cfg.MaxUploadSize = images.DefaultMaxImageSize
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Pools{
		cfg: cfg, log: log, ctx: ctx, cancel: cancel,
		jobs: map[string]*job{}, failed: map[string]failure{}, uploadErr: map[string]string{},
		golden: map[string]chan struct{}{}, pulling: map[string]*pullState{},
	}, nil
}

// Close cancels every running import and waits for them to stop. Partial
// downloads stay in scratch for the next process to resume.
func (p *Pools) Close() {
	p.cancel()
	p.wg.Wait()
}

// Sweep removes what an earlier process left half-written: temporary
// files in the pools and the cache, unfinished uploads, and the fetcher's
// leftovers. Call it once at start-up, before the first EnsureVolume.
func (p *Pools) Sweep() error {
	var errs []error
	remove := func(path string) {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			return
		}
		p.log.Info("removed leftover temporary file", "path", path)
	}
	roots := []string{p.cfg.CacheDir}
	for _, c := range p.cfg.Classes {
		roots = append(roots, c.Path)
	}
	for _, root := range roots {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && qemuimg.IsTemp(d.Name()) {
				remove(path)
			}
			return nil
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := p.reclaimBases(); err != nil {
		errs = append(errs, err)
	}
	uploads := filepath.Join(p.cfg.ScratchDir, uploadsDir)
	entries, err := os.ReadDir(uploads)
	if err != nil {
		errs = append(errs, err)
	}
	for _, e := range entries {
		// No upload survives a restart: the client's stream is gone.
		remove(filepath.Join(uploads, e.Name()))
	}
	if err := p.cfg.Fetcher.Sweep(p.cfg.PartMaxAge); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sweeping pools: %w", err)
	}
	return nil
}

// reclaimBases makes every golden base in the cache vmd's and read-only
// (0444) again. A VM's qemu must never own one: a base is shared by every
// overlay made from it, in every tenant. vmd names bases in domains with
// relabelling off (hypervisor.DiskSpec.BackingPath), but a vmd before that
// let libvirt chown them to qemu's user, which libvirt never undoes for a
// backing file.
func (p *Pools) reclaimBases() error {
	entries, err := os.ReadDir(p.cfg.CacheDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	uid, gid := os.Geteuid(), os.Getegid()
	var errs []error
	for _, e := range entries {
		if !e.Type().IsRegular() || qemuimg.IsTemp(e.Name()) {
			continue
		}
		path := filepath.Join(p.cfg.CacheDir, e.Name())
		fi, err := e.Info()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || (int(st.Uid) == uid && fi.Mode().Perm() == 0o444) {
			continue
		}
		if err := os.Chown(path, uid, gid); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Chmod(path, 0o444); err != nil {
			errs = append(errs, err)
			continue
		}
		p.log.Warn("golden base reclaimed: it was owned by another user or writable", "path", path,
			"was_uid", st.Uid, "was_mode", fi.Mode().Perm().String())
	}
	return errors.Join(errs...)
}

// class returns the pool of a storage class, or ErrInvalid naming the
// classes that exist.
func (p *Pools) class(name string) (Class, error) {
	c, ok := p.cfg.Classes[name]
	if !ok {
		return Class{}, fmt.Errorf("storageClass %q is not configured on this host (configured: %s): %w",
			name, strings.Join(slices.Sorted(maps.Keys(p.cfg.Classes)), ", "), errdefs.ErrInvalid)
	}
	return c, nil
}

// Volume file extensions.
const (
	extQcow2 = ".qcow2"
	extISO   = ".iso"
)

// uploadsDir is the subdirectory of ScratchDir for uploads.
const uploadsDir = "uploads"

// uidLen is how much of the uid goes into a volume name: enough to tell a
// re-created disk of the same name from the old one.
const uidLen = 8

// volumeStem is "<pool>/<ns>/<name>-<uid[:8]>" without extension.
func volumeStem(pool, namespace, name, uid string) string {
	return filepath.Join(pool, namespace, name+"-"+uid[:min(len(uid), uidLen)])
}

// volumePath is the final file of a request.
func volumePath(c Class, req storage.VolumeRequest) string {
	ext := extQcow2
	if req.Optical {
		ext = extISO
	}
	return volumeStem(c.Path, req.Namespace, req.Name, req.UID) + ext
}

// EnsureVolume implements storage.Volumes. Quick work (blank volumes,
// overlays on a cached golden image, growth) is done before it returns;
// downloads, conversions and clones run as a background job keyed by the
// disk's uid, and later calls report their progress and then their result.
func (p *Pools) EnsureVolume(ctx context.Context, req storage.VolumeRequest) (storage.Volume, error) {
	c, err := p.class(req.Class)
	if err != nil {
		return storage.Volume{}, err
	}
	if err := checkRequest(req); err != nil {
		return storage.Volume{}, err
	}
	base := storage.Volume{Replicated: c.Replicated, ReplicationNote: c.Note}
	final := volumePath(c, req)

	// A job's outcome comes first: it may have just produced final.
	var sha string
	if j, running := p.jobOutcome(req.UID); j != nil {
		if running {
			return j.volume(base, final), nil
		}
		if j.err != nil {
			if j.kind == jobUpload {
				// A refused upload leaves the disk waiting for a good one.
				p.setUploadErr(req.UID, j.err)
			} else {
				if errors.Is(j.err, errdefs.ErrInvalid) {
					p.setFailed(req, j.err)
				}
				return storage.Volume{}, j.err
			}
		}
		sha = j.sha256
	}
	if err := p.knownFailure(req); err != nil {
		return storage.Volume{}, err
	}
	if exists, err := fileExists(final); err != nil {
		return storage.Volume{}, fmt.Errorf("looking for volume: %w", err)
	} else if exists {
		v, err := p.existing(ctx, base, req, final)
		v.SHA256 = sha
		return v, err
	}
	if err := mkdirTraversable(filepath.Dir(final)); err != nil {
		return storage.Volume{}, fmt.Errorf("creating namespace directory: %w", err)
	}

	switch req.Source.Type() {
	case v1alpha1.SourceBlank:
		if err := p.cfg.Tool.Create(ctx, qemuimg.CreateRequest{Path: final, Format: qemuimg.FormatQCOW2, SizeBytes: req.SizeBytes}); err != nil && !errors.Is(err, errdefs.ErrAlreadyExists) {
			return storage.Volume{}, fmt.Errorf("creating blank volume: %w", err)
		}
		p.log.Info("blank volume created", "path", final, "size", req.SizeBytes)
		return p.existing(ctx, base, req, final)
	case v1alpha1.SourceImage:
		// The fast path: a cached base makes the disk an instant overlay.
		if g, ok, err := p.cachedBase(ctx, req.Source.Image.Name); err != nil {
			return storage.Volume{}, err
		} else if ok {
			if err := p.fromBase(ctx, g, req, final); err != nil {
				return storage.Volume{}, err
			}
			return p.existing(ctx, base, req, final)
		}
		return p.startJob(req, jobImport, base, final, func(ctx context.Context, j *job) error {
			return p.importGolden(ctx, j, req, final)
		}), nil
	case v1alpha1.SourceHTTP:
		return p.startJob(req, jobImport, base, final, func(ctx context.Context, j *job) error {
			return p.importHTTP(ctx, j, req, final)
		}), nil
	case v1alpha1.SourceDisk:
		if req.CloneFrom == "" {
			return storage.Volume{}, fmt.Errorf("clone source volume of vmdisk %q is not resolved: %w", req.Source.Disk.Name, errdefs.ErrInvalid)
		}
		return p.startJob(req, jobClone, base, final, func(ctx context.Context, j *job) error {
			return p.clone(ctx, j, req, final)
		}), nil
	case v1alpha1.SourceUpload:
		v := base
		v.Path, v.Format, v.SizeBytes = final, volumeFormat(req), req.SizeBytes
		v.WaitingForUpload = true
		v.Stage = "waiting for upload"
		if msg := p.uploadError(req.UID); msg != "" {
			v.Message = "last upload refused: " + msg
		}
		return v, nil
	}
	return storage.Volume{}, fmt.Errorf("source type %q: %w", req.Source.Type(), errdefs.ErrNotImplemented)
}

// checkRequest refuses requests no source can satisfy.
func checkRequest(req storage.VolumeRequest) error {
	switch {
	case req.UID == "" || req.Namespace == "" || req.Name == "":
		return fmt.Errorf("volume request needs uid, namespace and name: %w", errdefs.ErrInvalid)
	case strings.ContainsAny(req.Namespace+req.Name, "/\\") || req.Namespace == "." || req.Namespace == "..":
		return fmt.Errorf("namespace %q and name %q must not contain path separators: %w", req.Namespace, req.Name, errdefs.ErrInvalid)
	case req.SizeBytes <= 0:
		return fmt.Errorf("storage must be positive, got %d bytes: %w", req.SizeBytes, errdefs.ErrInvalid)
	case req.Optical && req.Source.Type() == v1alpha1.SourceBlank:
		return fmt.Errorf("an optical disk needs a source with an ISO image; a blank cdrom holds nothing: %w", errdefs.ErrInvalid)
	}
	return nil
}

func volumeFormat(req storage.VolumeRequest) string {
	if req.Optical {
		return "iso"
	}
	return "qcow2"
}

// existing reports a volume whose final file exists and grows it when the
// request asks for more. Shrinking is never done (validation refuses it;
// here it would delete guest data).
func (p *Pools) existing(ctx context.Context, v storage.Volume, req storage.VolumeRequest, path string) (storage.Volume, error) {
	v.Ready, v.Path, v.Format = true, path, volumeFormat(req)
	if req.Optical {
		st, err := os.Stat(path)
		if err != nil {
			return storage.Volume{}, fmt.Errorf("reading volume: %w", err)
		}
		v.SizeBytes = st.Size()
		return v, nil
	}
	// qemu-img creates files with 0644 less the umask; a volume made by
	// Create or CreateOverlay, or by an older vmd, is made private here,
	// before any VM uses it (it holds no guest data yet).
	if err := privateVolume(path); err != nil {
		return storage.Volume{}, fmt.Errorf("reading volume: %w", err)
	}
	info, err := p.cfg.Tool.Info(ctx, path, qemuimg.FormatQCOW2)
	if err != nil {
		return storage.Volume{}, fmt.Errorf("reading volume: %w", err)
	}
	v.SizeBytes = info.VirtualSize
	v.BackingPath, v.BackingFormat = info.BackingFile, info.BackingFormat
	switch {
	case req.SizeBytes > info.VirtualSize:
		err := p.cfg.Tool.Resize(ctx, path, qemuimg.FormatQCOW2, req.SizeBytes)
		switch {
		case errors.Is(err, errdefs.ErrConflict):
			// A running VM holds the image: growing it is the VM's online
			// resize, not ours. Report the truth and keep the disk usable.
			v.Message = fmt.Sprintf("growing to %d bytes waits for the attached VM (online resize)", req.SizeBytes)
		case err != nil:
			return storage.Volume{}, fmt.Errorf("growing volume: %w", err)
		default:
			p.log.Info("volume grown", "path", path, "from", info.VirtualSize, "to", req.SizeBytes)
			v.SizeBytes = req.SizeBytes
		}
	case req.SizeBytes < info.VirtualSize:
		v.Message = fmt.Sprintf("volume is %d bytes, larger than storage %d: volumes never shrink", info.VirtualSize, req.SizeBytes)
	}
	return v, nil
}

// DeleteVolume implements storage.Volumes: it stops a running import of the
// disk, waits for it, and removes the volume and any temporary file of it
// from every pool (the request's class is not known here, and a class's
// path may have been reconfigured). A golden base is never removed.
func (p *Pools) DeleteVolume(ctx context.Context, namespace, name, uid string) error {
	if uid == "" || namespace == "" || name == "" {
		return fmt.Errorf("deleting volume: uid, namespace and name are required: %w", errdefs.ErrInvalid)
	}
	if err := p.stopJob(ctx, uid); err != nil {
		return fmt.Errorf("deleting volume %s/%s: %w", namespace, name, err)
	}
	p.mu.Lock()
	delete(p.failed, uid)
	delete(p.uploadErr, uid)
	p.mu.Unlock()
	var errs []error
	for _, c := range p.cfg.Classes {
		stem := volumeStem(c.Path, namespace, name, uid)
		matches, err := filepath.Glob(globEscape(stem) + "*")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, m := range matches {
			rest := strings.TrimPrefix(m, stem)
			if rest != extQcow2 && rest != extISO && !qemuimg.IsTemp(m) {
				continue // another disk whose name merely starts the same
			}
			if err := removeFile(m); err != nil {
				errs = append(errs, err)
				continue
			}
			p.log.Info("volume removed", "path", m)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("deleting volume %s/%s: %w", namespace, name, err)
	}
	return nil
}

// globEscape quotes the glob metacharacters of a literal path.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// fingerprint identifies what a request asks for, so a remembered failure
// applies only to the same request.
func fingerprint(req storage.VolumeRequest) string {
	return fmt.Sprintf("%s|%d|%t|%+v|%s|%s", req.Class, req.SizeBytes, req.Optical, sourceKey(req.Source), req.CloneFrom, req.Namespace)
}

func sourceKey(s v1alpha1.DiskSource) string {
	switch {
	case s.HTTP != nil:
		return "http:" + s.HTTP.URL + "#" + s.HTTP.SHA256
	case s.Image != nil:
		return "image:" + s.Image.Name
	case s.Disk != nil:
		return "disk:" + s.Disk.Name
	case s.Upload != nil:
		return "upload"
	}
	return "blank"
}

func (p *Pools) setFailed(req storage.VolumeRequest, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failed[req.UID] = failure{fingerprint: fingerprint(req), err: err}
}

func (p *Pools) knownFailure(req storage.VolumeRequest) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, ok := p.failed[req.UID]
	if !ok {
		return nil
	}
	if f.fingerprint != fingerprint(req) {
		delete(p.failed, req.UID)
		return nil
	}
	return f.err
}

func (p *Pools) setUploadErr(uid string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.uploadErr[uid] = err.Error()
}

func (p *Pools) uploadError(uid string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.uploadErr[uid]
}
