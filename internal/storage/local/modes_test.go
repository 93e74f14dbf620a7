package local_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/storage"
	"github.com/vmdhq/vmd/internal/storage/local"
)

// withUmask runs the test under a hardened umask (CIS benchmarks ask for
// 027), which would strip the search bit qemu needs from any directory
// created with a plain MkdirAll. The umask is process-wide; the package's
// tests do not run in parallel.
func withUmask(t *testing.T, mask int) {
	t.Helper()
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

func perm(t *testing.T, path string) fs.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// qemu runs as its own user (Debian: libvirt-qemu); libvirt chowns each
// image to it at start, but qemu must search every directory above it.
// Nobody else may list them, and only vmd may enter scratch.
func TestDirectoryModesLetQemuTraverse(t *testing.T) {
	withUmask(t, 0o027)
	e := newEnv(t, nil)
	req := request("blank", mib)
	v, err := e.EnsureVolume(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]fs.FileMode{
		filepath.Join(e.root, "pools"):               0o711, // created on the way to the pools
		e.pool:                                       0o711,
		filepath.Join(e.pool, "tenant"):              0o711,
		filepath.Join(e.root, "pools", "replicated"): 0o711,
		e.cache:   0o711,
		e.scratch: 0o700,
		v.Path:    0o600,
	}
	for path, mode := range want {
		if got := perm(t, path); got != mode {
			t.Errorf("%s: mode %#o, want %#o", path, got, mode)
		}
	}
}

// Every kind of volume is private to vmd (libvirt chowns it to qemu's
// user while a domain runs), whatever the umask: the directories above
// are searchable and volume names can be guessed. Golden bases are
// public, read-only images.
func TestVolumeModes(t *testing.T) {
	withUmask(t, 0o022)
	e := newEnv(t, nil)
	raw := e.srv.path("disk.raw")
	rawDisk(t, raw, 4*mib)
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, e.srv.path("debian-12.qcow2"))

	blank := request("blank", mib)
	converted := request("converted", 8*mib)
	converted.Source.HTTP = &v1alpha1.HTTPSource{URL: e.srv.url("disk.raw")}
	overlay := request("overlay", 8*mib)
	overlay.Source.Image = &v1alpha1.ImageSource{Name: "debian-12"}
	var paths []string
	for _, req := range []storage.VolumeRequest{blank, converted, overlay} {
		v, err := e.wait(t, req)
		if err != nil {
			t.Fatalf("%s: %v", req.Name, err)
		}
		paths = append(paths, v.Path)
	}
	clone := request("clone", 8*mib)
	clone.Source.Disk = &v1alpha1.DiskClone{Name: "converted"}
	clone.CloneFrom = paths[1]
	v, err := e.wait(t, clone)
	if err != nil {
		t.Fatal(err)
	}
	paths = append(paths, v.Path)
	for _, p := range paths {
		if got := perm(t, p); got != 0o600 {
			t.Errorf("%s: mode %#o, want 0600", filepath.Base(p), got)
		}
	}
	if got := perm(t, filepath.Join(e.cache, "debian-12.qcow2")); got != 0o444 {
		t.Errorf("golden base: mode %#o, want 0444", got)
	}
}

// A state tree made by an older vmd (pools and namespace directories 0700)
// is made traversable at start-up; the volumes keep their mode.
func TestDirectoryModesFixedAtStart(t *testing.T) {
	needQemuImg(t)
	root := t.TempDir()
	pool := filepath.Join(root, "pools", "local")
	ns := filepath.Join(pool, "tenant")
	vol := filepath.Join(ns, "data-12345678.qcow2")
	if err := os.MkdirAll(ns, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vol, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{pool, ns} {
		if err := os.Chmod(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// A namespace directory someone left world-readable is tightened too.
	open := filepath.Join(pool, "other")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *local.Config) {
		c.Classes = map[string]local.Class{"local": {Path: pool}}
		c.CacheDir, c.ScratchDir = filepath.Join(root, "images"), filepath.Join(root, "scratch")
	})
	_ = e
	for _, d := range []string{pool, ns, open} {
		if got := perm(t, d); got != 0o711 {
			t.Errorf("%s: mode %#o after start, want 0711", d, got)
		}
	}
	if got := perm(t, vol); got != 0o600 {
		t.Errorf("volume mode %#o, want 0600 untouched", got)
	}
}

// TestSweepReclaimsGoldenBases: a base an older vmd let libvirt chown to
// qemu's user (or left writable) is vmd's and 0444 again after Sweep,
// while a base already right and temporary files are left as they are.
func TestSweepReclaimsGoldenBases(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown to another user needs root")
	}
	e := newEnv(t, nil)
	if err := os.MkdirAll(e.cache, 0o711); err != nil {
		t.Fatal(err)
	}
	stolen := filepath.Join(e.cache, "debian-12.qcow2")
	writable := filepath.Join(e.cache, "ubuntu-24.qcow2")
	fine := filepath.Join(e.cache, "alpine.qcow2")
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{{stolen, 0o444}, {writable, 0o644}, {fine, 0o444}} {
		if err := os.WriteFile(f.path, []byte("base"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(f.path, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(stolen, 64055, 64055); err != nil {
		t.Fatal(err)
	}
	if err := e.Sweep(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{stolen, writable, fine} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; int(uid) != os.Geteuid() || fi.Mode().Perm() != 0o444 {
			t.Errorf("%s: uid %d mode %v after Sweep, want vmd's and 0444", filepath.Base(p), uid, fi.Mode().Perm())
		}
	}
}
