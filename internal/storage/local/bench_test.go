package local_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

// BenchmarkGoldenToReady measures a VMDisk from a cached golden image,
// EnsureVolume to Ready: an overlay on the base, so the time must not grow
// with the base's size. The bases are sparse qcow2 files made by qemu-img.
func BenchmarkGoldenToReady(b *testing.B) {
	for _, size := range []int64{2 << 30, 20 << 30} {
		b.Run(fmt.Sprintf("base=%dGiB", size>>30), func(b *testing.B) {
			e := newEnv(b, nil)
			run(b, "qemu-img", "create", "-q", "-f", "qcow2", e.srv.path("debian-12.qcow2"), fmt.Sprint(size))
			if _, err := e.Pull(context.Background(), "debian-12", nil); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				req := request(fmt.Sprintf("d%d", i), size)
				req.Source.Image = &v1alpha1.ImageSource{Name: "debian-12"}
				v, err := e.EnsureVolume(context.Background(), req)
				if err != nil || !v.Ready {
					b.Fatalf("%+v, %v", v, err)
				}
			}
		})
	}
}

// BenchmarkHTTPImportVsBaseline imports one image over HTTP from a local
// server with vmd (download hashed while streaming, sniff, qemu-img
// checks, qcow2 adopted or converted, resized, fsynced, renamed) and with
// the baseline a careful admin would type:
//
//	curl -o f URL && sha256sum f && qemu-img convert -f qcow2 -O qcow2 f out
//
// in the same process, alternating, and reports both and their ratio. The
// image is the lab's debian12 disk ($VMD_LAB_CACHE, default
// /var/cache/vmd-lab) when it is cached, else a 1 GiB qcow2 of random data.
func BenchmarkHTTPImportVsBaseline(b *testing.B) {
	if _, err := exec.LookPath("curl"); err != nil {
		b.Skip("curl not installed")
	}
	e := newEnv(b, nil)
	img, label := benchImage(b, e)
	b.Logf("image: %s", label)
	size := info(b, img, "qcow2").VirtualSize
	var vmd, base time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		req := request(fmt.Sprintf("import%d", i), size)
		req.Source.HTTP = &v1alpha1.HTTPSource{URL: e.srv.url(filepath.Base(img))}
		v, err := e.wait(b, req)
		if err != nil {
			b.Fatal(err)
		}
		vmd += time.Since(start)

		dir := b.TempDir()
		start = time.Now()
		script := fmt.Sprintf("curl -sS -o %[1]s/f %[2]s && sha256sum %[1]s/f >/dev/null && qemu-img convert -f qcow2 -O qcow2 %[1]s/f %[1]s/out.qcow2",
			dir, e.srv.url(filepath.Base(img)))
		run(b, "sh", "-c", script)
		base += time.Since(start)

		b.StopTimer()
		_ = e.DeleteVolume(context.Background(), req.Namespace, req.Name, req.UID)
		_ = os.RemoveAll(dir)
		_ = v
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(vmd.Seconds()/n, "vmd-s/import")
	b.ReportMetric(base.Seconds()/n, "baseline-s/import")
	b.ReportMetric(base.Seconds()/vmd.Seconds(), "speedup-x")
}

// benchImage links the lab's debian12 disk into the server, or makes a
// 1 GiB qcow2 of random data.
func benchImage(b *testing.B, e *env) (path, label string) {
	cache := os.Getenv("VMD_LAB_CACHE")
	if cache == "" {
		cache = "/var/cache/vmd-lab"
	}
	if m, _ := filepath.Glob(filepath.Join(cache, "debian12-*", "disk.qcow2")); len(m) > 0 {
		dst := e.srv.path("debian12.qcow2")
		if err := os.Symlink(m[0], dst); err != nil {
			b.Fatal(err)
		}
		st, _ := os.Stat(m[0])
		return dst, fmt.Sprintf("lab debian12 %s (%d bytes)", m[0], st.Size())
	}
	raw := filepath.Join(b.TempDir(), "random.raw")
	run(b, "sh", "-c", "head -c 1073741824 /dev/urandom > "+raw)
	dst := e.srv.path("random.qcow2")
	run(b, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, dst)
	_ = os.Remove(raw)
	return dst, "1 GiB qcow2 of random data"
}
