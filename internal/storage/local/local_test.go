package local_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/images"
	"github.com/vmdhq/vmd/internal/storage"
	"github.com/vmdhq/vmd/internal/storage/local"
	"github.com/vmdhq/vmd/internal/storage/qemuimg"
)

func TestBlank(t *testing.T) {
	e := newEnv(t, nil)
	req := request("blank", 64*mib)
	v, err := e.EnsureVolume(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Ready || v.Format != "qcow2" || v.SizeBytes != 64*mib || v.Replicated || v.ReplicationNote != "one local copy" {
		t.Fatalf("volume = %+v", v)
	}
	if want := filepath.Join(e.pool, "tenant", "blank-"+req.UID[:8]+".qcow2"); v.Path != want {
		t.Fatalf("path = %s, want %s", v.Path, want)
	}
	if q := info(t, v.Path, "qcow2"); q.VirtualSize != 64*mib || q.Backing != "" {
		t.Fatalf("qemu-img info = %+v", q)
	}
	// Idempotent: a second call changes nothing.
	v2, err := e.EnsureVolume(t.Context(), req)
	if err != nil || v2 != v {
		t.Fatalf("second call = %+v, %v; want %+v", v2, err, v)
	}
}

func TestUnknownStorageClass(t *testing.T) {
	e := newEnv(t, nil)
	req := request("d", mib)
	req.Class = "fast"
	_, err := e.EnsureVolume(t.Context(), req)
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), `storageClass "fast" is not configured on this host (configured: local, replicated)`) {
		t.Fatalf("err = %v", err)
	}
	if got := files(t, e.root); len(got) != 0 {
		t.Fatalf("files created: %v", got)
	}
}

// TestHTTPFormats imports one raw disk served in every format and
// compression: each becomes a qcow2 of exactly spec.storage holding the
// same data.
func TestHTTPFormats(t *testing.T) {
	e := newEnv(t, nil)
	raw := e.srv.path("disk.raw")
	rawDisk(t, raw, 8*mib)
	for _, f := range []struct{ name, format string }{
		{"disk.qcow2", "qcow2"}, {"disk.vmdk", "vmdk"}, {"disk.vhd", "vpc"}, {"disk.vhdx", "vhdx"}, {"disk.vdi", "vdi"},
	} {
		run(t, "qemu-img", "convert", "-f", "raw", "-O", f.format, raw, e.srv.path(f.name))
	}
	gzipFile(t, raw, e.srv.path("disk.raw.gz"))
	run(t, "sh", "-c", "xz -T1 -c "+e.srv.path("disk.qcow2")+" > "+e.srv.path("disk.qcow2.xz"))
	// A misleading name: the bytes decide.
	run(t, "cp", e.srv.path("disk.vmdk"), e.srv.path("disk.iso"))

	for _, file := range []string{"disk.raw", "disk.qcow2", "disk.vmdk", "disk.vhd", "disk.vhdx", "disk.vdi", "disk.raw.gz", "disk.qcow2.xz", "disk.iso"} {
		t.Run(file, func(t *testing.T) {
			req := request(strings.ReplaceAll(file, ".", "-"), 16*mib)
			req.Source.HTTP = &v1alpha1.HTTPSource{URL: e.srv.url(file)}
			v, err := e.wait(t, req)
			if err != nil {
				t.Fatal(err)
			}
			q := info(t, v.Path, "qcow2")
			if q.VirtualSize != 16*mib || q.Backing != "" || v.SizeBytes != 16*mib || v.BackingPath != "" {
				t.Fatalf("volume %+v, qemu-img info %+v; want 16 MiB qcow2 without backing file", v, q)
			}
			sameData(t, raw, v.Path, "qcow2")
			if v.SHA256 != sha256File(t, e.srv.path(file)) {
				t.Fatalf("sha256 = %q, want the digest of the served bytes", v.SHA256)
			}
		})
	}
}

// TestRefused covers everything that must fail the disk with a reason and
// leave no volume behind.
func TestRefused(t *testing.T) {
	e := newEnv(t, nil)
	dir := e.srv.dir
	rawDisk(t, e.srv.path("big.raw"), 32*mib)
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", e.srv.path("big.raw"), e.srv.path("big.qcow2"))
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", "/etc/passwd", e.srv.path("backing.qcow2"), "1M")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+filepath.Join(dir, "data.bin"), e.srv.path("datafile.qcow2"), "1M")
	desc := "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\nRW 2048 FLAT \"/etc/passwd\" 0\n\nddb.virtualHWVersion = \"4\"\n"
	if err := os.WriteFile(e.srv.path("extent.vmdk"), []byte(desc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.srv.path("blob.bin"), bytes.Repeat([]byte("not a disk "), 100000), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, file, sha, want string
		size                  int64
		optical               bool
	}{
		{name: "larger than storage", file: "big.qcow2", size: 16 * mib, want: "image virtual size 33554432 bytes (32.0 MiB) is larger than storage 16777216 bytes (16.0 MiB)"},
		{name: "checksum mismatch", file: "big.raw", size: 64 * mib, sha: strings.Repeat("ab", 32), want: "checksum mismatch"},
		{name: "qcow2 backing file", file: "backing.qcow2", size: 16 * mib, want: "backing file"},
		{name: "qcow2 data file", file: "datafile.qcow2", size: 16 * mib, want: "data file"},
		{name: "vmdk extent outside", file: "extent.vmdk", size: 16 * mib, want: "extent"},
		{name: "raw without header", file: "blob.bin", size: 16 * mib, want: "refusing to guess"},
		{name: "optical needs iso", file: "big.raw", size: 64 * mib, optical: true, want: "optical disk needs an ISO 9660 image"},
		{name: "http 404", file: "missing.qcow2", size: 16 * mib, want: "404"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request("refused", tt.size)
			req.Optical = tt.optical
			req.Source.HTTP = &v1alpha1.HTTPSource{URL: e.srv.url(tt.file), SHA256: tt.sha}
			_, err := e.wait(t, req)
			if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v; want ErrInvalid containing %q", err, tt.want)
			}
			if got := files(t, e.pool); len(got) != 0 {
				t.Fatalf("pool not empty after refusal: %v", got)
			}
			// The failure is remembered: no new download on a resync.
			before := e.srv.count(tt.file)
			if _, err2 := e.EnsureVolume(t.Context(), req); !errors.Is(err2, errdefs.ErrInvalid) || e.srv.count(tt.file) != before {
				t.Fatalf("second call: %v, gets %d -> %d", err2, before, e.srv.count(tt.file))
			}
		})
	}
}

func TestOpticalKeepsISO(t *testing.T) {
	e := newEnv(t, nil)
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "hello.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	iso := e.srv.path("install.bin") // the name says nothing
	run(t, "genisoimage", "-quiet", "-V", "TEST", "-o", iso, src)
	req := request("cdrom", 16*mib)
	req.Optical = true
	req.Source.HTTP = &v1alpha1.HTTPSource{URL: e.srv.url("install.bin")}
	v, err := e.wait(t, req)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(v.Path, ".iso") || v.Format != "iso" {
		t.Fatalf("volume = %+v", v)
	}
	if sha256File(t, v.Path) != sha256File(t, iso) {
		t.Fatal("the ISO was not kept byte for byte")
	}
	if st, _ := os.Stat(v.Path); st.Mode().Perm() != 0o444 {
		t.Fatalf("mode = %v, want read-only", st.Mode())
	}
}

// TestGoldenMirror: two disks of one golden image cost one download, and
// each is an overlay on the one read-only base.
func TestGoldenMirror(t *testing.T) {
	e := newEnv(t, nil)
	raw := filepath.Join(t.TempDir(), "base.raw")
	rawDisk(t, raw, 24*mib)
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, e.srv.path("debian-12.qcow2"))
	e.srv.throttle = 1e6 // 1ms per 64 KiB: both disks start before the download ends

	a, b := request("a", 32*mib), request("b", 48*mib)
	for _, r := range []*storage.VolumeRequest{&a, &b} {
		r.Source.Image = &v1alpha1.ImageSource{Name: "debian-12"}
		if _, err := e.EnsureVolume(t.Context(), *r); err != nil {
			t.Fatal(err)
		}
	}
	va, err := e.wait(t, a)
	if err != nil {
		t.Fatal(err)
	}
	vb, err := e.wait(t, b)
	if err != nil {
		t.Fatal(err)
	}
	if n := e.srv.count("debian-12.qcow2"); n != 1 {
		t.Fatalf("golden image downloaded %d times, want 1", n)
	}
	base := filepath.Join(e.cache, "debian-12.qcow2")
	for _, c := range []struct {
		v    storage.Volume
		size int64
	}{{va, 32 * mib}, {vb, 48 * mib}} {
		q := info(t, c.v.Path, "qcow2")
		if q.Backing != base || q.VirtualSize != c.size {
			t.Fatalf("overlay %s: %+v; want backing %s and size %d", c.v.Path, q, base, c.size)
		}
		// The volume reports its base, for the domain to name it.
		if c.v.BackingPath != base || c.v.BackingFormat != "qcow2" {
			t.Fatalf("overlay %s reports backing %q (%q), want %s (qcow2)", c.v.Path, c.v.BackingPath, c.v.BackingFormat, base)
		}
		sameData(t, raw, c.v.Path, "qcow2")
	}
	if st, _ := os.Stat(base); st.Mode().Perm() != 0o444 {
		t.Fatalf("base mode = %v, want 0444", st.Mode())
	}
	list, err := e.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != "debian-12" || !list[0].Ready || list[0].VirtualSize != 24*mib ||
		list[0].URL != e.srv.url("debian-12.qcow2") || list[0].SHA256 != sha256File(t, e.srv.path("debian-12.qcow2")) ||
		strings.Join(list[0].Users, ",") != "tenant/a,tenant/b" {
		t.Fatalf("List = %+v", list)
	}
	// Pull of a cached image is a no-op; a base larger than storage fails.
	if _, err := e.Pull(t.Context(), "debian-12", nil); err != nil || e.srv.count("debian-12.qcow2") != 1 {
		t.Fatalf("Pull: %v (gets %d)", err, e.srv.count("debian-12.qcow2"))
	}
	small := request("small", 8*mib)
	small.Source.Image = &v1alpha1.ImageSource{Name: "debian-12"}
	if _, err := e.EnsureVolume(t.Context(), small); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "golden image debian-12 virtual size") {
		t.Fatalf("small disk: %v", err)
	}
	// Deleting a disk releases the base; the base itself stays.
	if err := e.DeleteVolume(t.Context(), a.Namespace, a.Name, a.UID); err != nil {
		t.Fatal(err)
	}
	list, _ = e.List(t.Context())
	if len(list) != 1 || strings.Join(list[0].Users, ",") != "tenant/b" {
		t.Fatalf("after delete List = %+v", list)
	}
	if _, err := os.Stat(base); err != nil {
		t.Fatal(err)
	}
}

func TestGoldenUnknownName(t *testing.T) {
	e := newEnv(t, nil)
	req := request("x", mib)
	req.Source.Image = &v1alpha1.ImageSource{Name: "no-such-os"}
	if _, err := e.wait(t, req); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "not in the catalogue") {
		t.Fatalf("err = %v", err)
	}
}

func TestCloneAndGrow(t *testing.T) {
	e := newEnv(t, nil)
	raw := filepath.Join(t.TempDir(), "base.raw")
	rawDisk(t, raw, 8*mib)
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, e.srv.path("debian-12.qcow2"))
	src := request("src", 16*mib)
	src.Source.Image = &v1alpha1.ImageSource{Name: "debian-12"}
	vs, err := e.wait(t, src)
	if err != nil {
		t.Fatal(err)
	}
	clone := request("clone", 32*mib)
	clone.Source.Disk = &v1alpha1.DiskClone{Name: "src"}
	clone.CloneFrom = vs.Path
	vc, err := e.wait(t, clone)
	if err != nil {
		t.Fatal(err)
	}
	q := info(t, vc.Path, "qcow2")
	if q.Backing != "" || q.VirtualSize != 32*mib {
		t.Fatalf("clone %+v: want a flat 32 MiB qcow2", q)
	}
	sameData(t, raw, vc.Path, "qcow2")

	// Grow: a larger storage grows the volume; a smaller one never shrinks it.
	clone.SizeBytes = 40 * mib
	v, err := e.EnsureVolume(t.Context(), clone)
	if err != nil || v.SizeBytes != 40*mib || info(t, vc.Path, "qcow2").VirtualSize != 40*mib {
		t.Fatalf("grow: %+v, %v", v, err)
	}
	clone.SizeBytes = 8 * mib
	v, err = e.EnsureVolume(t.Context(), clone)
	if err != nil || v.SizeBytes != 40*mib || !strings.Contains(v.Message, "never shrink") {
		t.Fatalf("shrink: %+v, %v", v, err)
	}
	// A clone source outside the pools is refused.
	bad := request("bad", 32*mib)
	bad.Source.Disk = &v1alpha1.DiskClone{Name: "x"}
	bad.CloneFrom = "/etc/passwd"
	if _, err := e.wait(t, bad); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("clone of /etc/passwd: %v", err)
	}
}

func TestDeleteAndSweep(t *testing.T) {
	e := newEnv(t, nil)
	keep := request("web", mib)
	if _, err := e.EnsureVolume(t.Context(), keep); err != nil {
		t.Fatal(err)
	}
	del := request("web", mib) // same name, another uid (a re-created disk)
	v, err := e.EnsureVolume(t.Context(), del)
	if err != nil {
		t.Fatal(err)
	}
	leftover := v.Path + qemuimg.TempInfix + "0123456789abcdef"
	if err := os.WriteFile(leftover, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.DeleteVolume(t.Context(), del.Namespace, del.Name, del.UID); err != nil {
		t.Fatal(err)
	}
	if got := files(t, e.pool); len(got) != 1 || !strings.Contains(got[0], keep.UID[:8]) {
		t.Fatalf("after delete: %v; want only the other disk", got)
	}
	if err := e.DeleteVolume(t.Context(), del.Namespace, del.Name, del.UID); err != nil {
		t.Fatalf("second delete: %v", err)
	}

	// A crash mid-import leaves temporary files: Sweep removes them, and a
	// half-written staging file is never taken for the volume.
	req := request("crashed", 16*mib)
	rawDisk(t, e.srv.path("d.raw"), 4*mib)
	req.Source.HTTP = &v1alpha1.HTTPSource{URL: e.srv.url("d.raw")}
	final := filepath.Join(e.pool, "tenant", "crashed-"+req.UID[:8]+".qcow2")
	leftovers := []string{
		final + qemuimg.TempInfix + "00112233445566aa",
		final + qemuimg.TempInfix + "00112233445566aa" + qemuimg.TempInfix + "ffeeddccbbaa9988",
		filepath.Join(e.cache, "debian-12.qcow2"+qemuimg.TempInfix+"0011223344556677"),
		filepath.Join(e.scratch, "uploads", req.UID+"-1.upload.tmp"),
		filepath.Join(e.scratch, "downloads", "x.unpack.tmp"),
	}
	for _, p := range leftovers {
		if err := os.WriteFile(p, []byte("garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Sweep(); err != nil {
		t.Fatal(err)
	}
	for _, p := range leftovers {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s survived the sweep: %v", p, err)
		}
	}
	v, err = e.wait(t, req)
	if err != nil || v.Path != final {
		t.Fatalf("import after sweep: %+v, %v", v, err)
	}
	if q := info(t, final, "qcow2"); q.VirtualSize != 16*mib {
		t.Fatalf("imported %+v", q)
	}
}

// TestDeleteCancelsImport: deleting a disk mid-download stops the job and
// nothing appears afterwards.
func TestDeleteCancelsImport(t *testing.T) {
	e := newEnv(t, nil)
	rawDisk(t, e.srv.path("slow.raw"), 16*mib)
	e.srv.throttle = 20e6 // 20ms per 64 KiB: ~5 s in all
	req := request("slow", 32*mib)
	req.Source.HTTP = &v1alpha1.HTTPSource{URL: e.srv.url("slow.raw")}
	if v, err := e.EnsureVolume(t.Context(), req); err != nil || v.Ready {
		t.Fatalf("start: %+v, %v", v, err)
	}
	if err := e.DeleteVolume(t.Context(), req.Namespace, req.Name, req.UID); err != nil {
		t.Fatal(err)
	}
	if got := files(t, e.pool); len(got) != 0 {
		t.Fatalf("pool after delete: %v", got)
	}
}

// TestResumeAfterCut: a connection cut mid-file resumes with a Range
// request; the bytes already received are not fetched again.
func TestResumeAfterCut(t *testing.T) {
	e := newEnv(t, nil)
	rawDisk(t, e.srv.path("cut.raw"), 8*mib)
	e.srv.cut = 4 * mib
	req := request("cut", 8*mib)
	req.Source.HTTP = &v1alpha1.HTTPSource{URL: e.srv.url("cut.raw")}
	v, err := e.wait(t, req)
	if err != nil {
		t.Fatal(err)
	}
	sameData(t, e.srv.path("cut.raw"), v.Path, "qcow2")
	if n := e.srv.count("cut.raw"); n != 2 {
		t.Fatalf("requests = %d, want 2 (cut, then resumed)", n)
	}
	if sent := e.srv.sent.Load(); sent > 8*mib+mib {
		t.Fatalf("server sent %d bytes for an 8 MiB file: the prefix was fetched again", sent)
	}
}

// TestConcurrentDisksOneURL: two disks of one URL, imported at the same
// time, download it once.
func TestConcurrentDisksOneURL(t *testing.T) {
	e := newEnv(t, nil)
	rawDisk(t, e.srv.path("shared.raw"), 8*mib)
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", e.srv.path("shared.raw"), e.srv.path("shared.qcow2"))
	e.srv.throttle = 2e6
	a, b := request("a", 16*mib), request("b", 16*mib)
	for _, r := range []*storage.VolumeRequest{&a, &b} {
		r.Source.HTTP = &v1alpha1.HTTPSource{URL: e.srv.url("shared.qcow2")}
		if _, err := e.EnsureVolume(t.Context(), *r); err != nil {
			t.Fatal(err)
		}
	}
	va, errA := e.wait(t, a)
	vb, errB := e.wait(t, b)
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if n := e.srv.count("shared.qcow2"); n != 1 {
		t.Fatalf("downloaded %d times, want 1", n)
	}
	// Both adopted the one download: they must not share an inode.
	sa, _ := os.Stat(va.Path)
	sb, _ := os.Stat(vb.Path)
	if os.SameFile(sa, sb) {
		t.Fatal("two disks share one file")
	}
	sameData(t, e.srv.path("shared.raw"), va.Path, "qcow2")
	sameData(t, e.srv.path("shared.raw"), vb.Path, "qcow2")
}

func TestUpload(t *testing.T) {
	e := newEnv(t, nil)
	raw := filepath.Join(t.TempDir(), "up.raw")
	rawDisk(t, raw, 4*mib)
	gz := filepath.Join(t.TempDir(), "up.raw.gz")
	gzipFile(t, raw, gz)
	data, _ := os.ReadFile(gz)

	req := request("up", 8*mib)
	req.Source.Upload = &v1alpha1.UploadSource{}
	v, err := e.EnsureVolume(t.Context(), req)
	if err != nil || v.Ready || !v.WaitingForUpload {
		t.Fatalf("before upload: %+v, %v", v, err)
	}
	// Hostile data is refused; the disk keeps waiting and says why.
	_, err = e.Upload(t.Context(), storage.UploadRequest{Volume: req, Body: strings.NewReader(strings.Repeat("x", 4096)), Size: 4096})
	if !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("garbage upload: %v", err)
	}
	v, err = e.EnsureVolume(t.Context(), req)
	if err != nil || !v.WaitingForUpload || !strings.Contains(v.Message, "refusing to guess") {
		t.Fatalf("after refused upload: %+v, %v", v, err)
	}
	// A truncated stream is refused too.
	if _, err := e.Upload(t.Context(), storage.UploadRequest{Volume: req, Body: bytes.NewReader(data[:100]), Size: int64(len(data))}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("truncated upload: %v", err)
	}
	v, err = e.Upload(t.Context(), storage.UploadRequest{Volume: req, Body: bytes.NewReader(data), Size: -1})
	if err != nil || !v.Ready || v.SizeBytes != 8*mib || v.SHA256 != sha256File(t, gz) {
		t.Fatalf("upload: %+v, %v", v, err)
	}
	sameData(t, raw, v.Path, "qcow2")
	if _, err := e.Upload(t.Context(), storage.UploadRequest{Volume: req, Body: bytes.NewReader(data), Size: -1}); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("second upload: %v", err)
	}
	other := request("notupload", 8*mib)
	if _, err := e.Upload(t.Context(), storage.UploadRequest{Volume: other, Body: bytes.NewReader(data), Size: -1}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("upload to a blank disk: %v", err)
	}
	if got := files(t, filepath.Join(e.scratch, "uploads")); len(got) != 0 {
		t.Fatalf("scratch left behind: %v", got)
	}
}

func TestNewRefusesRelativePaths(t *testing.T) {
	needQemuImg(t)
	_, err := local.New(local.Config{
		Classes: map[string]local.Class{"local": {Path: "pools/local"}}, CacheDir: "/tmp/x", ScratchDir: "/tmp/y",
		Fetcher: &images.Fetcher{}, Tool: &qemuimg.Runner{},
	})
	if !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
}

// TestPreloadAndOverride: preloaded names are pulled in the background; a
// configured override (URL and checksum) wins over the mirror.
func TestPreloadAndOverride(t *testing.T) {
	e := newEnv(t, func(c *local.Config) {
		c.Overrides = map[string]local.GoldenOverride{"ubuntu-2404": {URL: c.Mirror + "/custom.qcow2"}}
	})
	raw := filepath.Join(t.TempDir(), "base.raw")
	rawDisk(t, raw, 4*mib)
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, e.srv.path("custom.qcow2"))
	e.Preload([]string{"ubuntu-2404"})
	deadline := time.Now().Add(20 * time.Second)
	for {
		list, err := e.List(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(list) == 1 && list[0].Ready {
			if list[0].Name != "ubuntu-2404" || list[0].URL != e.srv.url("custom.qcow2") || len(list[0].Users) != 0 {
				t.Fatalf("List = %+v", list)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not preloaded: %+v", list)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := e.srv.count("ubuntu-2404.qcow2"); n != 0 {
		t.Fatalf("the mirror was asked %d times despite the override", n)
	}
}
