package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/images"
	"github.com/vmdhq/vmd/internal/storage"
	"github.com/vmdhq/vmd/internal/storage/qemuimg"
)

// goldenSource is where one golden image comes from on this host.
type goldenSource struct {
	name, url, sha256 string
	kind              images.ImageKind
}

// resolve picks the URL of a golden image: a configured override, else the
// mirror (MIRROR/NAME.qcow2, or .iso for installers), else the catalogue.
func (p *Pools) resolve(name string) (goldenSource, error) {
	g, inCatalogue := images.LookupGoldenImage(name)
	src := goldenSource{name: name, kind: images.KindCloud}
	if inCatalogue {
		src.kind, src.url = g.Kind, g.URL
	}
	o, overridden := p.cfg.Overrides[name]
	switch {
	case overridden:
		src.url, src.sha256 = o.URL, o.SHA256
	case !inCatalogue:
		return goldenSource{}, fmt.Errorf("golden image %q is not in the catalogue and has no override in the configuration: %w", name, errdefs.ErrInvalid)
	case p.cfg.Mirror != "":
		src.url = strings.TrimSuffix(p.cfg.Mirror, "/") + "/" + name + baseExt(src.kind)
	}
	return src, nil
}

func baseExt(kind images.ImageKind) string {
	if kind == images.KindISO {
		return extISO
	}
	return extQcow2
}

func (p *Pools) basePath(src goldenSource) string {
	return filepath.Join(p.cfg.CacheDir, src.name+baseExt(src.kind))
}

// meta is the sidecar <cache>/<name>.json of a base: where it came from.
type meta struct {
	URL    string    `json:"url"`
	SHA256 string    `json:"sha256"`
	Format string    `json:"sourceFormat"`
	Pulled time.Time `json:"pulled"`
}

func (p *Pools) metaPath(name string) string { return filepath.Join(p.cfg.CacheDir, name+".json") }

// base is an installed golden image.
type base struct {
	src         goldenSource
	path        string
	virtualSize int64
}

// cachedBase returns the installed base of a golden image, if any.
func (p *Pools) cachedBase(ctx context.Context, name string) (base, bool, error) {
	src, err := p.resolve(name)
	if err != nil {
		return base{}, false, err
	}
	path := p.basePath(src)
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return base{}, false, nil
	case err != nil:
		return base{}, false, fmt.Errorf("reading golden image %s: %w", name, err)
	}
	b := base{src: src, path: path, virtualSize: fi.Size()}
	if src.kind != images.KindISO {
		info, err := p.cfg.Tool.Info(ctx, path, qemuimg.FormatQCOW2)
		if err != nil {
			return base{}, false, fmt.Errorf("reading golden image %s: %w", name, err)
		}
		b.virtualSize = info.VirtualSize
	}
	return b, true, nil
}

// pullState is a golden image being downloaded, for List.
type pullState struct {
	url         string
	mu          sync.Mutex
	done, total int64
}

// Pull implements storage.Images: it downloads and installs golden image
// name unless it is cached. Concurrent pulls of one name share one download.
func (p *Pools) Pull(ctx context.Context, name string, progress func(done, total int64)) (storage.ImageInfo, error) {
	b, err := p.pull(ctx, name, progress, nil)
	if err != nil {
		return storage.ImageInfo{}, err
	}
	return p.imageInfo(ctx, b, nil)
}

func (p *Pools) pull(ctx context.Context, name string, progress func(done, total int64), retrying func(error, time.Duration)) (base, error) {
	if b, ok, err := p.cachedBase(ctx, name); err != nil || ok {
		return b, err
	}
	src, err := p.resolve(name)
	if err != nil {
		return base{}, err
	}
	ps := p.trackPull(src)
	defer p.untrackPull(name, ps)
	log := p.log.With("image", name, "url", src.url)
	log.Info("pulling golden image")
	start := time.Now()
	res, err := p.cfg.Fetcher.Fetch(ctx, images.FetchRequest{URL: src.url, ExpectedSHA256: src.sha256, Progress: func(done, total int64) {
		ps.mu.Lock()
		ps.done, ps.total = done, total
		ps.mu.Unlock()
		if progress != nil {
			progress(done, total)
		}
	}, Retrying: retrying})
	if err != nil {
		return base{}, fmt.Errorf("pulling golden image %s: %w", name, err)
	}
	defer removeFile(res.Path) //nolint:errcheck // gone when installed by rename

	// One installer per name; the others find the base installed.
	unlock, err := p.lockGolden(ctx, name)
	if err != nil {
		return base{}, err
	}
	defer unlock()
	if b, ok, err := p.cachedBase(ctx, name); err != nil || ok {
		return b, err
	}
	if err := p.installBase(ctx, src, res); err != nil {
		return base{}, fmt.Errorf("pulling golden image %s: %w", name, err)
	}
	log.Info("golden image installed", "sha256", res.SHA256, "bytes", res.Downloaded, "duration", time.Since(start))
	b, ok, err := p.cachedBase(ctx, name)
	if err == nil && !ok {
		err = fmt.Errorf("golden image %s vanished after install", name)
	}
	return b, err
}

// installBase makes the fetched res the immutable base of src: checked
// like any import, stored as qcow2 (or the ISO bytes), mode 0444.
func (p *Pools) installBase(ctx context.Context, src goldenSource, res images.Result) error {
	iso := src.kind == images.KindISO
	if err := res.Check(iso); err != nil {
		return err
	}
	final := p.basePath(src)
	m := meta{URL: src.url, SHA256: res.SHA256, Format: string(res.Format), Pulled: time.Now().UTC()}
	if err := writeJSON(p.metaPath(src.name), m); err != nil {
		return err
	}
	if iso {
		return placeReadOnly(res.Path, final)
	}
	format, err := qemuimg.ParseFormat(res.Format.QemuFormat())
	if err != nil {
		return err
	}
	if err := p.vet(ctx, res.Path, format, "", 0); err != nil {
		return err
	}
	staging := tempName(final)
	defer removeFile(staging) //nolint:errcheck // gone after commit
	if err := p.toQcow2(ctx, newJob(jobImport, func() {}), res.Path, format, staging); err != nil {
		return err
	}
	if err := os.Chmod(staging, 0o444); err != nil {
		return err
	}
	return commitFile(staging, final)
}

// writeJSON writes v to path atomically.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := tempName(path)
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	if err := syncPath(tmp); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// lockGolden takes the install lock of one image name.
func (p *Pools) lockGolden(ctx context.Context, name string) (func(), error) {
	p.mu.Lock()
	ch, ok := p.golden[name]
	if !ok {
		ch = make(chan struct{}, 1)
		p.golden[name] = ch
	}
	p.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting to install golden image %s: %w", name, ctx.Err())
	}
}

func (p *Pools) trackPull(src goldenSource) *pullState {
	p.mu.Lock()
	defer p.mu.Unlock()
	ps, ok := p.pulling[src.name]
	if !ok {
		ps = &pullState{url: src.url, total: -1}
		p.pulling[src.name] = ps
	}
	return ps
}

func (p *Pools) untrackPull(name string, ps *pullState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pulling[name] == ps {
		delete(p.pulling, name)
	}
}

// importGolden pulls the golden image of req (one download whatever the
// number of disks) and makes the disk an overlay on it.
func (p *Pools) importGolden(ctx context.Context, j *job, req storage.VolumeRequest, final string) error {
	j.setStage("pulling golden image " + req.Source.Image.Name)
	b, err := p.pull(ctx, req.Source.Image.Name, j.progress, j.retrying)
	if err != nil {
		return err
	}
	return p.fromBase(ctx, b, req, final)
}

// fromBase creates the disk from an installed base: a qcow2 overlay (no
// data copied, instant whatever the base's size), or for an installer ISO
// a hard link to the read-only base (a copy across filesystems).
func (p *Pools) fromBase(ctx context.Context, b base, req storage.VolumeRequest, final string) error {
	iso := b.src.kind == images.KindISO
	switch {
	case iso && !req.Optical:
		return fmt.Errorf("golden image %q is an installer ISO: use it on a disk with optical: true: %w", b.src.name, errdefs.ErrInvalid)
	case !iso && req.Optical:
		return fmt.Errorf("golden image %q is a disk image, not an ISO: an optical disk cannot use it: %w", b.src.name, errdefs.ErrInvalid)
	case b.virtualSize > req.SizeBytes:
		return tooLarge("golden image "+b.src.name, b.virtualSize, req.SizeBytes)
	}
	if iso {
		staging := tempName(final)
		defer removeFile(staging) //nolint:errcheck // gone after commit
		if err := os.Link(b.path, staging); err != nil {
			if err := copyFile(b.path, staging); err != nil {
				return fmt.Errorf("creating disk from golden image %s: %w", b.src.name, err)
			}
		}
		if err := commitFile(staging, final); err != nil && !errors.Is(err, errdefs.ErrAlreadyExists) {
			return fmt.Errorf("creating disk from golden image %s: %w", b.src.name, err)
		}
		return nil
	}
	err := p.cfg.Tool.CreateOverlay(ctx, qemuimg.OverlayRequest{
		Path: final, BackingPath: b.path, BackingFormat: qemuimg.FormatQCOW2, SizeBytes: req.SizeBytes,
	})
	if err != nil && !errors.Is(err, errdefs.ErrAlreadyExists) {
		return fmt.Errorf("creating disk from golden image %s: %w", b.src.name, err)
	}
	return nil
}

// List implements storage.Images: the installed bases (with the volumes
// that use each) and the pulls in progress.
func (p *Pools) List(ctx context.Context) ([]storage.ImageInfo, error) {
	entries, err := os.ReadDir(p.cfg.CacheDir)
	if err != nil {
		return nil, fmt.Errorf("listing golden images: %w", err)
	}
	users, err := p.baseUsers(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing golden images: %w", err)
	}
	var out []storage.ImageInfo
	seen := map[string]bool{}
	for _, e := range entries {
		n := e.Name()
		ext := filepath.Ext(n)
		if e.IsDir() || qemuimg.IsTemp(n) || (ext != extQcow2 && ext != extISO) {
			continue
		}
		name := strings.TrimSuffix(n, ext)
		kind := images.KindCloud
		if ext == extISO {
			kind = images.KindISO
		}
		b := base{src: goldenSource{name: name, kind: kind}, path: filepath.Join(p.cfg.CacheDir, n)}
		info, err := p.imageInfo(ctx, b, users)
		if err != nil {
			return nil, fmt.Errorf("listing golden images: %w", err)
		}
		seen[name] = true
		out = append(out, info)
	}
	p.mu.Lock()
	for name, ps := range p.pulling {
		if !seen[name] {
			out = append(out, storage.ImageInfo{Name: name, URL: ps.url})
		}
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b storage.ImageInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// imageInfo describes an installed base; users nil means compute them.
func (p *Pools) imageInfo(ctx context.Context, b base, users map[string][]string) (storage.ImageInfo, error) {
	if users == nil {
		var err error
		if users, err = p.baseUsers(ctx); err != nil {
			return storage.ImageInfo{}, err
		}
	}
	fi, err := os.Stat(b.path)
	if err != nil {
		return storage.ImageInfo{}, err
	}
	info := storage.ImageInfo{
		Name: b.src.name, Path: b.path, Format: "qcow2", Ready: true,
		VirtualSize: fi.Size(), ActualSize: actualSize(fi), Users: users[b.path],
	}
	if b.src.kind == images.KindISO {
		info.Format = "iso"
	} else {
		qi, err := p.cfg.Tool.Info(ctx, b.path, qemuimg.FormatQCOW2)
		if err != nil {
			return storage.ImageInfo{}, err
		}
		info.VirtualSize = qi.VirtualSize
	}
	var m meta
	if data, err := os.ReadFile(p.metaPath(b.src.name)); err == nil && json.Unmarshal(data, &m) == nil {
		info.URL, info.SHA256 = m.URL, m.SHA256
	}
	return info, nil
}

// baseUsers maps each base path to the volumes (namespace/name) built on
// it, read from the volumes themselves: the backing file qemu-img reports
// for overlays, the inode for ISO links. Reading the truth costs one
// qemu-img info per volume, which is cheap next to a stale index.
func (p *Pools) baseUsers(ctx context.Context) (map[string][]string, error) {
	isoBases := map[string]fs.FileInfo{}
	if entries, err := os.ReadDir(p.cfg.CacheDir); err == nil {
		for _, e := range entries {
			if filepath.Ext(e.Name()) == extISO && !qemuimg.IsTemp(e.Name()) {
				if fi, err := e.Info(); err == nil {
					isoBases[filepath.Join(p.cfg.CacheDir, e.Name())] = fi
				}
			}
		}
	}
	users := map[string][]string{}
	for _, c := range p.cfg.Classes {
		namespaces, err := os.ReadDir(c.Path)
		if err != nil {
			return nil, err
		}
		for _, ns := range namespaces {
			if !ns.IsDir() {
				continue
			}
			vols, err := os.ReadDir(filepath.Join(c.Path, ns.Name()))
			if err != nil {
				return nil, err
			}
			for _, v := range vols {
				n := v.Name()
				path := filepath.Join(c.Path, ns.Name(), n)
				disk, ok := diskName(n)
				if !ok {
					continue
				}
				user := ns.Name() + "/" + disk
				switch filepath.Ext(n) {
				case extQcow2:
					info, err := p.cfg.Tool.Info(ctx, path, qemuimg.FormatQCOW2)
					if errors.Is(err, errdefs.ErrNotFound) {
						continue // deleted meanwhile
					} else if err != nil {
						return nil, err
					}
					if info.BackingFile != "" {
						users[info.BackingFile] = append(users[info.BackingFile], user)
					}
				case extISO:
					fi, err := os.Stat(path)
					if err != nil {
						continue
					}
					for bp, bfi := range isoBases {
						if os.SameFile(fi, bfi) {
							users[bp] = append(users[bp], user)
						}
					}
				}
			}
		}
	}
	for k := range users {
		slices.Sort(users[k])
		users[k] = slices.Compact(users[k])
	}
	return users, nil
}

// diskName extracts the VMDisk name from a volume file name
// "<name>-<uid8>.<ext>"; temporary and foreign files are not volumes.
func diskName(file string) (string, bool) {
	ext := filepath.Ext(file)
	if qemuimg.IsTemp(file) || (ext != extQcow2 && ext != extISO) {
		return "", false
	}
	stem := strings.TrimSuffix(file, ext)
	i := strings.LastIndexByte(stem, '-')
	if i <= 0 {
		return "", false
	}
	return stem[:i], true
}

// Preload pulls the named golden images in the background, one after the
// other, retrying transient failures with exponential back-off until they
// succeed or Close is called. Permanent failures (unknown name, checksum
// mismatch, hostile image) are logged and not retried.
func (p *Pools) Preload(names []string) {
	if len(names) == 0 {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for _, name := range names {
			p.preloadOne(name)
		}
	}()
}

// Preload back-off bounds.
const (
	preloadInitialBackoff = 5 * time.Second
	preloadMaxBackoff     = 5 * time.Minute
)

func (p *Pools) preloadOne(name string) {
	log := p.log.With("image", name)
	delay := preloadInitialBackoff
	for {
		_, err := p.pull(p.ctx, name, nil, nil)
		switch {
		case err == nil:
			log.Info("golden image preloaded")
			return
		case p.ctx.Err() != nil:
			return
		case errors.Is(err, errdefs.ErrInvalid):
			log.Error("preloading golden image failed; not retrying", "err", err)
			return
		}
		log.Warn("preloading golden image failed; retrying", "err", err, "in", delay)
		select {
		case <-time.After(delay):
		case <-p.ctx.Done():
			return
		}
		delay = min(2*delay, preloadMaxBackoff)
	}
}
