package qemuimg_test

// Integration tests against the real qemu-img. They need no root and run in
// a few seconds, so they carry no build tag; without qemu-img (Debian
// package qemu-utils) they skip with the reason.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/storage/qemuimg"
)

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// newRunner returns a Runner logging to the test log, or skips the test when
// qemu-img is not installed.
func newRunner(tb testing.TB) *qemuimg.Runner {
	tb.Helper()
	if _, err := exec.LookPath(qemuimg.DefaultBinary); err != nil {
		tb.Skip("qemu-img not installed (Debian package qemu-utils); skipping integration test")
	}
	return &qemuimg.Runner{Log: slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))}
}

// qemuImg runs qemu-img directly, to build fixtures the adapter refuses to
// build (hostile images).
func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(qemuimg.DefaultBinary, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// extent is a region of a fixture file filled with data.
type extent struct {
	off, n int64
	// text fills the region with a repeated phrase (compressible)
	// instead of random bytes.
	text bool
}

// writeRaw creates a sparse raw image of size bytes with data in extents.
// The data is pseudo-random from a fixed seed, so reruns are comparable.
func writeRaw(tb testing.TB, path string, size int64, extents ...extent) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		tb.Fatal(err)
	}
	rng := rand.NewChaCha8([32]byte{'v', 'm', 'd'})
	const phrase = "vmd writes this phrase over and over so that it compresses. "
	for _, e := range extents {
		buf := make([]byte, e.n)
		if e.text {
			for i := range buf {
				buf[i] = phrase[i%len(phrase)]
			}
		} else {
			_, _ = rng.Read(buf) // never fails
		}
		if _, err := f.WriteAt(buf, e.off); err != nil {
			tb.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
}

// dirNames lists the names in dir, sorted: tests use it to prove that no
// temporary file or half-made result is left behind.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func mustInfo(t *testing.T, r *qemuimg.Runner, path string, f qemuimg.Format) qemuimg.Info {
	t.Helper()
	info, err := r.Info(t.Context(), path, f)
	if err != nil {
		t.Fatalf("Info(%s): %v", path, err)
	}
	return info
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// progressRecorder collects Progress callbacks and checks their contract.
type progressRecorder struct {
	mu   sync.Mutex
	vals []float64
}

func (p *progressRecorder) record(v float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.vals = append(p.vals, v)
}

func (p *progressRecorder) verify(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.vals) < 2 {
		t.Fatalf("progress callbacks %v: want the start and the end at least", p.vals)
	}
	for i := 1; i < len(p.vals); i++ {
		if p.vals[i] <= p.vals[i-1] {
			t.Fatalf("progress not increasing at %d: %v", i, p.vals)
		}
	}
	if p.vals[0] < 0 || p.vals[0] >= 100 {
		t.Errorf("first progress %v: want an update before completion", p.vals[0])
	}
	if last := p.vals[len(p.vals)-1]; last != 100 {
		t.Errorf("last progress %v, want 100 (all: %v)", last, p.vals)
	}
}

func TestCreate(t *testing.T) {
	r := newRunner(t)
	tests := []struct {
		name       string
		req        qemuimg.CreateRequest
		wantFormat qemuimg.Format
		wantSize   int64
		wantClust  int64
		// actual size bounds in bytes
		minActual, maxActual int64
	}{
		{
			name:       "qcow2 blank 5Gi is sparse",
			req:        qemuimg.CreateRequest{Format: qemuimg.FormatQCOW2, SizeBytes: 5 * gib},
			wantFormat: qemuimg.FormatQCOW2, wantSize: 5 * gib, wantClust: 64 * kib,
			maxActual: 1 * mib,
		},
		{
			name:       "qcow2 with 2MiB clusters",
			req:        qemuimg.CreateRequest{Format: qemuimg.FormatQCOW2, SizeBytes: 1 * gib, ClusterSize: 2 * mib},
			wantFormat: qemuimg.FormatQCOW2, wantSize: 1 * gib, wantClust: 2 * mib,
			maxActual: 16 * mib,
		},
		{
			name:       "raw sparse",
			req:        qemuimg.CreateRequest{Format: qemuimg.FormatRaw, SizeBytes: 64 * mib, Preallocation: "off"},
			wantFormat: qemuimg.FormatRaw, wantSize: 64 * mib,
			maxActual: 1 * mib,
		},
		{
			name:       "raw falloc allocates every byte",
			req:        qemuimg.CreateRequest{Format: qemuimg.FormatRaw, SizeBytes: 8 * mib, Preallocation: "falloc"},
			wantFormat: qemuimg.FormatRaw, wantSize: 8 * mib,
			minActual: 8 * mib, maxActual: 9 * mib,
		},
		{
			name:       "qcow2 odd size is exact",
			req:        qemuimg.CreateRequest{Format: qemuimg.FormatQCOW2, SizeBytes: 3*gib + 512},
			wantFormat: qemuimg.FormatQCOW2, wantSize: 3*gib + 512, wantClust: 64 * kib,
			maxActual: 1 * mib,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.req.Path = filepath.Join(dir, "vol")
			if err := r.Create(t.Context(), tc.req); err != nil {
				t.Fatalf("Create: %v", err)
			}
			info := mustInfo(t, r, tc.req.Path, tc.req.Format)
			if info.Format != tc.wantFormat || info.VirtualSize != tc.wantSize {
				t.Errorf("format %s size %d, want %s %d", info.Format, info.VirtualSize, tc.wantFormat, tc.wantSize)
			}
			if tc.wantClust != 0 && info.ClusterSize != tc.wantClust {
				t.Errorf("cluster size %d, want %d", info.ClusterSize, tc.wantClust)
			}
			if info.ActualSize < tc.minActual || info.ActualSize > tc.maxActual {
				t.Errorf("actual size %d, want within [%d, %d]", info.ActualSize, tc.minActual, tc.maxActual)
			}
			if info.BackingFile != "" || info.DataFile != "" {
				t.Errorf("blank volume refers to other files: %+v", info)
			}
			if got := dirNames(t, dir); !slices.Equal(got, []string{"vol"}) {
				t.Errorf("directory holds %v, want only the volume", got)
			}
		})
	}
}

func TestCreateRefuses(t *testing.T) {
	r := newRunner(t)
	tests := []struct {
		name    string
		req     qemuimg.CreateRequest
		existed bool // the destination exists beforehand
		noDir   bool // the destination's directory does not exist
		want    error
		msg     string
	}{
		{name: "vmdk", req: qemuimg.CreateRequest{Format: qemuimg.FormatVMDK, SizeBytes: mib}, want: errdefs.ErrInvalid, msg: "cannot be created"},
		{name: "empty format", req: qemuimg.CreateRequest{SizeBytes: mib}, want: errdefs.ErrInvalid, msg: "cannot be created"},
		{name: "zero size", req: qemuimg.CreateRequest{Format: qemuimg.FormatQCOW2}, want: errdefs.ErrInvalid, msg: "must be positive"},
		{name: "negative size", req: qemuimg.CreateRequest{Format: qemuimg.FormatQCOW2, SizeBytes: -1}, want: errdefs.ErrInvalid, msg: "must be positive"},
		{name: "metadata on raw", req: qemuimg.CreateRequest{Format: qemuimg.FormatRaw, SizeBytes: mib, Preallocation: "metadata"}, want: errdefs.ErrInvalid, msg: "needs qcow2"},
		{name: "unknown preallocation", req: qemuimg.CreateRequest{Format: qemuimg.FormatQCOW2, SizeBytes: mib, Preallocation: "all"}, want: errdefs.ErrInvalid, msg: "unknown preallocation"},
		{name: "cluster not power of two", req: qemuimg.CreateRequest{Format: qemuimg.FormatQCOW2, SizeBytes: mib, ClusterSize: 3000}, want: errdefs.ErrInvalid, msg: "power of two"},
		{name: "cluster too big", req: qemuimg.CreateRequest{Format: qemuimg.FormatQCOW2, SizeBytes: mib, ClusterSize: 4 * mib}, want: errdefs.ErrInvalid, msg: "power of two"},
		{name: "cluster on raw", req: qemuimg.CreateRequest{Format: qemuimg.FormatRaw, SizeBytes: mib, ClusterSize: 64 * kib}, want: errdefs.ErrInvalid, msg: "qcow2 only"},
		{name: "existing file kept", req: qemuimg.CreateRequest{Format: qemuimg.FormatQCOW2, SizeBytes: mib}, existed: true, want: errdefs.ErrAlreadyExists},
		{name: "missing directory", req: qemuimg.CreateRequest{Format: qemuimg.FormatQCOW2, SizeBytes: mib}, noDir: true, want: errdefs.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.req.Path = filepath.Join(dir, "vol")
			if tc.noDir {
				tc.req.Path = filepath.Join(dir, "absent", "vol")
			}
			const precious = "someone's data"
			if tc.existed {
				if err := os.WriteFile(tc.req.Path, []byte(precious), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := r.Create(t.Context(), tc.req)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Create = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
			want := []string{}
			if tc.existed {
				want = []string{"vol"}
				if got := string(readFile(t, tc.req.Path)); got != precious {
					t.Errorf("existing file overwritten: %q", got)
				}
			}
			if tc.noDir {
				want = []string{}
			}
			if got := dirNames(t, dir); !slices.Equal(got, want) {
				t.Errorf("directory holds %v, want %v", got, want)
			}
		})
	}
}

func TestCreateOverlay(t *testing.T) {
	r := newRunner(t)
	tests := []struct {
		name       string
		baseFormat qemuimg.Format
		baseSize   int64
		size       int64
	}{
		{name: "qcow2 base grown overlay", baseFormat: qemuimg.FormatQCOW2, baseSize: 16 * mib, size: 80 * mib},
		{name: "qcow2 base same size", baseFormat: qemuimg.FormatQCOW2, baseSize: 16 * mib, size: 16 * mib},
		{name: "raw base", baseFormat: qemuimg.FormatRaw, baseSize: 16 * mib, size: 48 * mib},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Base and overlay live in different directories, as the
			// image cache and the pool do: the backing reference must
			// not depend on either's location.
			baseDir, poolDir := t.TempDir(), t.TempDir()
			rawBase := filepath.Join(baseDir, "data.raw")
			writeRaw(t, rawBase, tc.baseSize, extent{off: 0, n: 1 * mib}, extent{off: tc.baseSize - mib, n: mib})
			base := rawBase
			if tc.baseFormat != qemuimg.FormatRaw {
				base = filepath.Join(baseDir, "base."+string(tc.baseFormat))
				if err := r.Convert(t.Context(), qemuimg.ConvertRequest{Src: rawBase, SrcFormat: qemuimg.FormatRaw, Dst: base, DstFormat: tc.baseFormat}); err != nil {
					t.Fatal(err)
				}
			}

			overlay := filepath.Join(poolDir, "disk.qcow2")
			if err := r.CreateOverlay(t.Context(), qemuimg.OverlayRequest{Path: overlay, BackingPath: base, BackingFormat: tc.baseFormat, SizeBytes: tc.size}); err != nil {
				t.Fatalf("CreateOverlay: %v", err)
			}
			info := mustInfo(t, r, overlay, qemuimg.FormatQCOW2)
			if info.BackingFile != base || info.BackingFormat != string(tc.baseFormat) {
				t.Errorf("backing %q (%q), want %q (%q)", info.BackingFile, info.BackingFormat, base, tc.baseFormat)
			}
			if info.VirtualSize != tc.size {
				t.Errorf("virtual size %d, want %d", info.VirtualSize, tc.size)
			}
			if err := qemuimg.CheckSafe(info, base); err != nil {
				t.Errorf("CheckSafe(overlay, base) = %v", err)
			}
			if got := dirNames(t, poolDir); !slices.Equal(got, []string{"disk.qcow2"}) {
				t.Errorf("pool holds %v", got)
			}

			// The guest sees the base's data through the overlay.
			flat := filepath.Join(poolDir, "flat.raw")
			if err := r.Convert(t.Context(), qemuimg.ConvertRequest{Src: overlay, SrcFormat: qemuimg.FormatQCOW2, Dst: flat, DstFormat: qemuimg.FormatRaw}); err != nil {
				t.Fatal(err)
			}
			got, want := readFile(t, flat), readFile(t, rawBase)
			if int64(len(got)) != tc.size || !bytes.Equal(got[:len(want)], want) {
				t.Errorf("flattened overlay (%d bytes) does not start with the base's %d bytes", len(got), len(want))
			}
		})
	}
}

func TestCreateOverlayRefuses(t *testing.T) {
	r := newRunner(t)
	baseDir := t.TempDir()
	base := filepath.Join(baseDir, "base.qcow2")
	if err := r.Create(t.Context(), qemuimg.CreateRequest{Path: base, Format: qemuimg.FormatQCOW2, SizeBytes: 1 * gib}); err != nil {
		t.Fatal(err)
	}
	chained := filepath.Join(baseDir, "chained.qcow2")
	if err := r.CreateOverlay(t.Context(), qemuimg.OverlayRequest{Path: chained, BackingPath: base, BackingFormat: qemuimg.FormatQCOW2, SizeBytes: gib}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		req  qemuimg.OverlayRequest
		want error
		msgs []string
	}{
		{
			name: "relative backing path",
			req:  qemuimg.OverlayRequest{BackingPath: "base.qcow2", BackingFormat: qemuimg.FormatQCOW2, SizeBytes: gib},
			want: errdefs.ErrInvalid, msgs: []string{"relative"},
		},
		{
			name: "unclean backing path",
			req:  qemuimg.OverlayRequest{BackingPath: baseDir + "/x/../base.qcow2", BackingFormat: qemuimg.FormatQCOW2, SizeBytes: gib},
			want: errdefs.ErrInvalid, msgs: []string{"not clean"},
		},
		{
			name: "smaller than base",
			req:  qemuimg.OverlayRequest{BackingPath: base, BackingFormat: qemuimg.FormatQCOW2, SizeBytes: gib - 512},
			want: errdefs.ErrInvalid, msgs: []string{strconv.FormatInt(gib-512, 10), strconv.FormatInt(gib, 10), base},
		},
		{
			name: "missing base",
			req:  qemuimg.OverlayRequest{BackingPath: filepath.Join(baseDir, "nope.qcow2"), BackingFormat: qemuimg.FormatQCOW2, SizeBytes: gib},
			want: errdefs.ErrNotFound, msgs: []string{"nope.qcow2"},
		},
		{
			name: "base with a backing file",
			req:  qemuimg.OverlayRequest{BackingPath: chained, BackingFormat: qemuimg.FormatQCOW2, SizeBytes: gib},
			want: errdefs.ErrInvalid, msgs: []string{"backing file " + base},
		},
		{
			name: "no backing format",
			req:  qemuimg.OverlayRequest{BackingPath: base, SizeBytes: gib},
			want: errdefs.ErrInvalid, msgs: []string{"must never guess"},
		},
		{
			name: "zero size",
			req:  qemuimg.OverlayRequest{BackingPath: base, BackingFormat: qemuimg.FormatQCOW2},
			want: errdefs.ErrInvalid, msgs: []string{"must be positive"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pool := t.TempDir()
			tc.req.Path = filepath.Join(pool, "disk.qcow2")
			err := r.CreateOverlay(t.Context(), tc.req)
			if !errors.Is(err, tc.want) {
				t.Fatalf("CreateOverlay = %v, want %v", err, tc.want)
			}
			for _, m := range tc.msgs {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not name %q", err, m)
				}
			}
			if got := dirNames(t, pool); len(got) != 0 {
				t.Errorf("pool holds %v after a refusal", got)
			}
		})
	}
}

func TestConvertRoundTrip(t *testing.T) {
	r := newRunner(t)
	const size = 96 * mib
	tests := []struct {
		name     string
		compress bool
	}{
		{name: "plain"},
		{name: "compressed", compress: true},
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	writeRaw(t, src, size,
		extent{off: 0, n: 8 * mib},
		extent{off: 20 * mib, n: 16 * mib, text: true},
		extent{off: 50*mib + 4096, n: 3 * mib},
		extent{off: size - 1*mib, n: 1 * mib})
	want := readFile(t, src)

	actual := map[bool]int64{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			qcow := filepath.Join(dir, tc.name+".qcow2")
			var toQcow progressRecorder
			if err := r.Convert(t.Context(), qemuimg.ConvertRequest{
				Src: src, SrcFormat: qemuimg.FormatRaw, Dst: qcow, DstFormat: qemuimg.FormatQCOW2,
				Compress: tc.compress, Progress: toQcow.record,
			}); err != nil {
				t.Fatalf("raw to qcow2: %v", err)
			}
			toQcow.verify(t)
			info := mustInfo(t, r, qcow, qemuimg.FormatQCOW2)
			if info.VirtualSize != size {
				t.Errorf("qcow2 virtual size %d, want %d", info.VirtualSize, size)
			}
			actual[tc.compress] = info.ActualSize
			if err := r.Check(t.Context(), qcow, qemuimg.FormatQCOW2); err != nil {
				t.Errorf("Check(converted) = %v", err)
			}

			back := filepath.Join(dir, tc.name+".raw")
			var toRaw progressRecorder
			if err := r.Convert(t.Context(), qemuimg.ConvertRequest{
				Src: qcow, SrcFormat: qemuimg.FormatQCOW2, Dst: back, DstFormat: qemuimg.FormatRaw, Progress: toRaw.record,
			}); err != nil {
				t.Fatalf("qcow2 to raw: %v", err)
			}
			toRaw.verify(t)
			if !bytes.Equal(readFile(t, back), want) {
				t.Error("raw → qcow2 → raw changed the data")
			}
		})
	}
	if actual[true] >= actual[false] {
		t.Errorf("compressed qcow2 takes %d bytes, plain %d: compression had no effect", actual[true], actual[false])
	}
	for _, n := range dirNames(t, dir) {
		if qemuimg.IsTemp(n) {
			t.Errorf("temporary file %s left behind", n)
		}
	}
}

func TestConvertRefuses(t *testing.T) {
	r := newRunner(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	writeRaw(t, src, mib, extent{n: 4096})
	existing := filepath.Join(dir, "existing.qcow2")
	if err := os.WriteFile(existing, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  qemuimg.ConvertRequest
		want error
	}{
		{name: "missing source", req: qemuimg.ConvertRequest{Src: filepath.Join(dir, "nope"), SrcFormat: qemuimg.FormatRaw, Dst: filepath.Join(dir, "out"), DstFormat: qemuimg.FormatQCOW2}, want: errdefs.ErrNotFound},
		{name: "no source format", req: qemuimg.ConvertRequest{Src: src, Dst: filepath.Join(dir, "out"), DstFormat: qemuimg.FormatQCOW2}, want: errdefs.ErrInvalid},
		{name: "unknown destination format", req: qemuimg.ConvertRequest{Src: src, SrcFormat: qemuimg.FormatRaw, Dst: filepath.Join(dir, "out"), DstFormat: "qed"}, want: errdefs.ErrInvalid},
		{name: "compressed raw", req: qemuimg.ConvertRequest{Src: src, SrcFormat: qemuimg.FormatRaw, Dst: filepath.Join(dir, "out"), DstFormat: qemuimg.FormatRaw, Compress: true}, want: errdefs.ErrInvalid},
		{name: "onto itself", req: qemuimg.ConvertRequest{Src: src, SrcFormat: qemuimg.FormatRaw, Dst: src, DstFormat: qemuimg.FormatRaw}, want: errdefs.ErrInvalid},
		{name: "existing destination", req: qemuimg.ConvertRequest{Src: src, SrcFormat: qemuimg.FormatRaw, Dst: existing, DstFormat: qemuimg.FormatQCOW2}, want: errdefs.ErrAlreadyExists},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := r.Convert(t.Context(), tc.req)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Convert = %v, want %v", err, tc.want)
			}
			if got := dirNames(t, dir); !slices.Equal(got, []string{"existing.qcow2", "src.raw"}) {
				t.Errorf("directory holds %v", got)
			}
			if string(readFile(t, existing)) != "keep" {
				t.Error("existing destination overwritten")
			}
		})
	}
}

// isPaddedCopy reports whether got is want followed by zeros up to the next
// 512-byte sector: qemu's raw driver sees a file's length rounded up to a
// whole sector.
func isPaddedCopy(got, want []byte) bool {
	padded := (len(want) + 511) / 512 * 512
	return len(got) == padded && bytes.Equal(got[:len(want)], want) &&
		bytes.Count(got[len(want):], []byte{0}) == padded-len(want)
}

// TestConvertHonoursExplicitFormat proves qemu-img reads a file as the
// format vmd asserts, never as what its bytes claim. A qcow2 file declared
// raw converts to a byte-for-byte copy of the qcow2 container, not the
// guest data it describes, and a hostile header's backing file (here a
// stand-in for a host secret) is never read. The same file declared qcow2
// does leak the secret: that is the attack CheckSafe and the sniffer stop.
func TestConvertHonoursExplicitFormat(t *testing.T) {
	r := newRunner(t)
	dir := t.TempDir()

	secret := filepath.Join(dir, "host-secret")
	secretData := bytes.Repeat([]byte("HOST-SECRET-0123456789abcdef\n"), 2048)
	if err := os.WriteFile(secret, secretData, 0o600); err != nil {
		t.Fatal(err)
	}
	evil := filepath.Join(dir, "evil.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", secret, evil, strconv.Itoa(len(secretData)))

	guestRaw := filepath.Join(dir, "guest.raw")
	writeRaw(t, guestRaw, 4*mib, extent{off: 0, n: 2 * mib})
	guestQcow := filepath.Join(dir, "guest.qcow2")
	if err := r.Convert(t.Context(), qemuimg.ConvertRequest{Src: guestRaw, SrcFormat: qemuimg.FormatRaw, Dst: guestQcow, DstFormat: qemuimg.FormatQCOW2}); err != nil {
		t.Fatal(err)
	}

	t.Run("qcow2 declared raw copies the container", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out.raw")
		if err := r.Convert(t.Context(), qemuimg.ConvertRequest{Src: guestQcow, SrcFormat: qemuimg.FormatRaw, Dst: out, DstFormat: qemuimg.FormatRaw}); err != nil {
			t.Fatal(err)
		}
		got := readFile(t, out)
		if !isPaddedCopy(got, readFile(t, guestQcow)) {
			t.Error("output is not the qcow2 container's bytes")
		}
		if bytes.Equal(got, readFile(t, guestRaw)) {
			t.Error("output is the guest data: the format was probed")
		}
	})
	t.Run("hostile qcow2 declared raw never reads the backing file", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out.raw")
		if err := r.Convert(t.Context(), qemuimg.ConvertRequest{Src: evil, SrcFormat: qemuimg.FormatRaw, Dst: out, DstFormat: qemuimg.FormatRaw}); err != nil {
			t.Fatal(err)
		}
		got := readFile(t, out)
		if !isPaddedCopy(got, readFile(t, evil)) {
			t.Error("output is not the container's bytes")
		}
		if bytes.Contains(got, []byte("HOST-SECRET")) {
			t.Error("host secret leaked into a raw-declared conversion")
		}
	})
	t.Run("hostile qcow2 declared qcow2 leaks, CheckSafe catches it", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out.raw")
		if err := r.Convert(t.Context(), qemuimg.ConvertRequest{Src: evil, SrcFormat: qemuimg.FormatQCOW2, Dst: out, DstFormat: qemuimg.FormatRaw}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(readFile(t, out), []byte("HOST-SECRET")) {
			t.Fatal("expected the backing file's bytes in the output; the fixture is not hostile")
		}
		err := qemuimg.CheckSafe(mustInfo(t, r, evil, qemuimg.FormatQCOW2), "")
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "image has a backing file "+secret) {
			t.Errorf("CheckSafe = %v, want the backing file named", err)
		}
	})
	t.Run("qcow2 declared vmdk fails cleanly", func(t *testing.T) {
		outDir := t.TempDir()
		err := r.Convert(t.Context(), qemuimg.ConvertRequest{Src: guestQcow, SrcFormat: qemuimg.FormatVMDK, Dst: filepath.Join(outDir, "out.raw"), DstFormat: qemuimg.FormatRaw})
		if err == nil || errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("Convert = %v, want a format error", err)
		}
		if got := dirNames(t, outDir); len(got) != 0 {
			t.Errorf("failed conversion left %v", got)
		}
	})
}

func TestConvertCancel(t *testing.T) {
	r := newRunner(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "big.raw")
	var extents []extent
	for i := range int64(8) {
		extents = append(extents, extent{off: i * 256 * mib, n: 8 * mib})
	}
	writeRaw(t, src, 2*gib, extents...)

	tests := []struct {
		name string
		// cancelAt is the progress value at or after which the test
		// cancels; < 0 cancels before Convert starts.
		cancelAt float64
	}{
		{name: "before start", cancelAt: -1},
		{name: "at the first progress update", cancelAt: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if tc.cancelAt < 0 {
				cancel()
			}
			dst := filepath.Join(dir, "out.qcow2")
			err := r.Convert(ctx, qemuimg.ConvertRequest{
				Src: src, SrcFormat: qemuimg.FormatRaw, Dst: dst, DstFormat: qemuimg.FormatQCOW2,
				Progress: func(pct float64) {
					if pct >= tc.cancelAt {
						cancel()
					}
				},
			})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Convert = %v, want context.Canceled", err)
			}
			if got := dirNames(t, dir); !slices.Equal(got, []string{"big.raw"}) {
				t.Errorf("cancelled conversion left %v", got)
			}
		})
	}
}

func TestResize(t *testing.T) {
	r := newRunner(t)
	tests := []struct {
		name   string
		format qemuimg.Format
	}{
		{name: "qcow2", format: qemuimg.FormatQCOW2},
		{name: "raw", format: qemuimg.FormatRaw},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "vol")
			if err := r.Create(t.Context(), qemuimg.CreateRequest{Path: path, Format: tc.format, SizeBytes: 1 * gib}); err != nil {
				t.Fatal(err)
			}
			if err := r.Resize(t.Context(), path, tc.format, 2*gib+4096); err != nil {
				t.Fatalf("grow: %v", err)
			}
			if got := mustInfo(t, r, path, tc.format).VirtualSize; got != 2*gib+4096 {
				t.Errorf("after grow: %d", got)
			}
			if err := r.Resize(t.Context(), path, tc.format, 2*gib+4096); err != nil {
				t.Errorf("same size: %v", err)
			}
			err := r.Resize(t.Context(), path, tc.format, 1*gib)
			if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "shrinking") {
				t.Errorf("shrink = %v, want ErrInvalid naming the shrink", err)
			}
			if got := mustInfo(t, r, path, tc.format).VirtualSize; got != 2*gib+4096 {
				t.Errorf("refused shrink changed the size to %d", got)
			}
			if err := r.Resize(t.Context(), path+".nope", tc.format, 4*gib); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("missing image = %v, want ErrNotFound", err)
			}
		})
	}
}

// corruptL1 overwrites a qcow2's L1 table with garbage entries.
func corruptL1(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var hdr [48]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		t.Fatal(err)
	}
	l1Size := binary.BigEndian.Uint32(hdr[36:40])
	l1Off := int64(binary.BigEndian.Uint64(hdr[40:48]))
	if l1Size == 0 || l1Off == 0 {
		t.Fatalf("no L1 table in header (size %d offset %d)", l1Size, l1Off)
	}
	garbage := bytes.Repeat([]byte{0x5a, 0x17, 0x3c, 0x99, 0x01, 0x02, 0x03, 0x04}, int(l1Size))
	if _, err := f.WriteAt(garbage, l1Off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCheck(t *testing.T) {
	r := newRunner(t)
	tests := []struct {
		name    string
		format  qemuimg.Format
		corrupt bool
		missing bool
		want    error
	}{
		{name: "fresh qcow2", format: qemuimg.FormatQCOW2},
		{name: "raw has nothing to check", format: qemuimg.FormatRaw},
		{name: "garbage L1 table", format: qemuimg.FormatQCOW2, corrupt: true, want: errdefs.ErrInvalid},
		{name: "missing image", format: qemuimg.FormatQCOW2, missing: true, want: errdefs.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "vol")
			if !tc.missing {
				if err := r.Create(t.Context(), qemuimg.CreateRequest{Path: path, Format: tc.format, SizeBytes: 64 * mib}); err != nil {
					t.Fatal(err)
				}
			}
			if tc.corrupt {
				corruptL1(t, path)
			}
			err := r.Check(t.Context(), path, tc.format)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Check = %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Check = %v, want %v", err, tc.want)
			}
			if tc.corrupt {
				var ce *qemuimg.CheckError
				if !errors.As(err, &ce) || ce.Corruptions == 0 {
					t.Fatalf("Check = %v, want a CheckError with corruptions", err)
				}
				if !strings.Contains(ce.Detail, "L1") {
					t.Errorf("detail %q does not carry qemu-img's report", ce.Detail)
				}
			}
		})
	}
}

// dropBackingFormat turns a qcow2's backing-format header extension into
// an unknown one, which qemu ignores: the result is an overlay whose backing
// format qemu would have to probe. (qemu-img 7+ refuses to create one.)
func dropBackingFormat(t *testing.T, path string) {
	t.Helper()
	const backingFormatExt = 0xe2792aca
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hdr := make([]byte, 4096)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		t.Fatal(err)
	}
	// Version 3 header: header_length at byte 100, extensions follow.
	for off := int(binary.BigEndian.Uint32(hdr[100:104])); off+8 <= len(hdr); {
		typ, n := binary.BigEndian.Uint32(hdr[off:]), int(binary.BigEndian.Uint32(hdr[off+4:]))
		if typ == 0 {
			break
		}
		if typ == backingFormatExt {
			if _, err := f.WriteAt([]byte{0, 0, 0xca, 0xfe}, int64(off)); err != nil {
				t.Fatal(err)
			}
			return
		}
		off += 8 + (n+7)/8*8
	}
	t.Fatalf("%s has no backing format extension", path)
}

func TestCheckSafeOnRealImages(t *testing.T) {
	r := newRunner(t)
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }

	qemuImg(t, "create", "-q", "-f", "qcow2", p("base.qcow2"), "64M")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", p("base.qcow2"), p("overlay.qcow2"), "64M")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", "/etc/passwd", p("passwd.qcow2"), "1M")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", p("base.qcow2"), p("unformatted.qcow2"), "64M")
	dropBackingFormat(t, p("unformatted.qcow2"))
	qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "data_file="+p("data.raw")+",data_file_raw=on", p("datafile.qcow2"), "16M")
	qemuImg(t, "create", "-q", "-f", "vmdk", p("mono.vmdk"), "16M")
	qemuImg(t, "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentFlat", p("split.vmdk"), "16M")
	// Legacy AES rather than LUKS: LUKS key derivation takes seconds, and
	// qemu-img reports both as "encrypted".
	qemuImg(t, "create", "-q", "-f", "qcow2", "--object", "secret,id=s0,data=vmd", "-o", "encrypt.format=aes,encrypt.key-secret=s0", p("encrypted.qcow2"), "16M")

	tests := []struct {
		name    string
		file    string
		format  qemuimg.Format
		allowed string
		reason  string // "" means safe
	}{
		{name: "flat qcow2", file: "base.qcow2", format: qemuimg.FormatQCOW2},
		{name: "vmd overlay on its base", file: "overlay.qcow2", format: qemuimg.FormatQCOW2, allowed: p("base.qcow2")},
		{name: "overlay imported", file: "overlay.qcow2", format: qemuimg.FormatQCOW2, reason: "image has a backing file " + p("base.qcow2")},
		{name: "overlay on another base", file: "overlay.qcow2", format: qemuimg.FormatQCOW2, allowed: p("other.qcow2"), reason: "only " + p("other.qcow2") + " is allowed"},
		{name: "backing file /etc/passwd", file: "passwd.qcow2", format: qemuimg.FormatQCOW2, reason: "image has a backing file /etc/passwd"},
		{name: "backing format not recorded", file: "unformatted.qcow2", format: qemuimg.FormatQCOW2, allowed: p("base.qcow2"), reason: "no recorded format"},
		{name: "external data file", file: "datafile.qcow2", format: qemuimg.FormatQCOW2, reason: "image has an external data file " + p("data.raw")},
		{name: "monolithic vmdk", file: "mono.vmdk", format: qemuimg.FormatVMDK},
		{name: "vmdk with a flat extent", file: "split.vmdk", format: qemuimg.FormatVMDK, reason: "image has an extent in another file " + p("split-f001.vmdk")},
		{name: "encrypted qcow2", file: "encrypted.qcow2", format: qemuimg.FormatQCOW2, reason: "image is encrypted"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := qemuimg.CheckSafe(mustInfo(t, r, p(tc.file), tc.format), tc.allowed)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("CheckSafe = %v, want safe", err)
				}
				return
			}
			if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("CheckSafe = %v, want ErrInvalid saying %q", err, tc.reason)
			}
		})
	}
}

func TestInfoErrors(t *testing.T) {
	r := newRunner(t)
	dir := t.TempDir()
	qcow := filepath.Join(dir, "disk.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", qcow, "1M")
	tests := []struct {
		name   string
		path   string
		format qemuimg.Format
		want   error // nil: any error other than the sentinels below
	}{
		{name: "missing file", path: filepath.Join(dir, "nope"), format: qemuimg.FormatRaw, want: errdefs.ErrNotFound},
		{name: "directory", path: dir, format: qemuimg.FormatRaw, want: errdefs.ErrInvalid},
		{name: "no format", path: qcow, want: errdefs.ErrInvalid},
		{name: "probe-bait format", path: qcow, format: "qed", want: errdefs.ErrInvalid},
		{name: "qcow2 declared vhd", path: qcow, format: qemuimg.FormatVPC},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.Info(t.Context(), tc.path, tc.format)
			if err == nil {
				t.Fatal("Info succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Info = %v, want %v", err, tc.want)
			}
			if tc.want == nil && (errors.Is(err, errdefs.ErrNotFound) || errors.Is(err, errdefs.ErrUnavailable)) {
				t.Fatalf("Info = %v: a format mismatch is neither missing file nor missing tool", err)
			}
		})
	}
	// Declared raw, the same qcow2 file is a disk holding the container's
	// bytes, its length rounded up to a whole sector.
	info := mustInfo(t, r, qcow, qemuimg.FormatRaw)
	st, err := os.Stat(qcow)
	if err != nil {
		t.Fatal(err)
	}
	if want := (st.Size() + 511) / 512 * 512; info.Format != qemuimg.FormatRaw || info.VirtualSize != want || info.BackingFile != "" {
		t.Errorf("qcow2 read as raw: %+v, want raw of %d bytes", info, want)
	}
}

// holdLikeVM takes the byte-range locks a running QEMU holds on a disk it
// writes: the consistent-read/write/resize permission bytes (100+) and the
// "others may not write or resize" bytes (200+). It uses open file
// description locks, as QEMU does.
func holdLikeVM(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	for _, b := range []int64{100, 101, 103, 201, 203} {
		lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: b, Len: 1}
		if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
			t.Fatalf("locking byte %d: %v", b, err)
		}
	}
}

func TestImageInUse(t *testing.T) {
	r := newRunner(t)
	path := filepath.Join(t.TempDir(), "disk.qcow2")
	if err := r.Create(t.Context(), qemuimg.CreateRequest{Path: path, Format: qemuimg.FormatQCOW2, SizeBytes: gib}); err != nil {
		t.Fatal(err)
	}
	holdLikeVM(t, path)

	if info, err := r.Info(t.Context(), path, qemuimg.FormatQCOW2); err != nil || info.VirtualSize != gib {
		t.Errorf("Info on an in-use disk = %+v, %v; --force-share should allow it", info, err)
	}
	if err := r.Resize(t.Context(), path, qemuimg.FormatQCOW2, 2*gib); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Resize = %v, want ErrConflict", err)
	}
	if err := r.Check(t.Context(), path, qemuimg.FormatQCOW2); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Check = %v, want ErrConflict", err)
	}
}

func TestMissingBinary(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.raw")
	writeRaw(t, img, mib)
	tests := []struct {
		name   string
		binary string
	}{
		{name: "not in PATH", binary: "vmd-test-no-such-qemu-img"},
		{name: "absent path", binary: filepath.Join(dir, "bin", "qemu-img")},
		{name: "not executable", binary: img},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &qemuimg.Runner{Binary: tc.binary}
			calls := map[string]error{}
			_, calls["Version"] = r.Version(t.Context())
			_, calls["Info"] = r.Info(t.Context(), img, qemuimg.FormatRaw)
			calls["Create"] = r.Create(t.Context(), qemuimg.CreateRequest{Path: filepath.Join(dir, "new.qcow2"), Format: qemuimg.FormatQCOW2, SizeBytes: mib})
			calls["Convert"] = r.Convert(t.Context(), qemuimg.ConvertRequest{Src: img, SrcFormat: qemuimg.FormatRaw, Dst: filepath.Join(dir, "new.qcow2"), DstFormat: qemuimg.FormatQCOW2})
			for call, err := range calls {
				if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "qemu-utils") {
					t.Errorf("%s = %v, want ErrUnavailable naming qemu-utils", call, err)
				}
			}
			if got := dirNames(t, dir); !slices.Equal(got, []string{"disk.raw"}) {
				t.Errorf("directory holds %v", got)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	r := newRunner(t)
	v, err := r.Version(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v, "qemu-img version ") {
		t.Errorf("Version = %q", v)
	}
}

// BenchmarkConvertRawToQcow2 measures an import-shaped conversion: 256 MiB
// of incompressible data, raw to qcow2, through the adapter (temp file,
// fsync, rename). Run with: go test -run '^$' -bench ConvertRawToQcow2
// ./internal/storage/qemuimg/
func BenchmarkConvertRawToQcow2(b *testing.B) {
	r := newRunner(b)
	r.Log = nil
	dir := b.TempDir()
	const size = 256 * mib
	src := filepath.Join(dir, "src.raw")
	writeRaw(b, src, size, extent{n: size})
	dst := filepath.Join(dir, "dst.qcow2")
	b.SetBytes(size)
	for b.Loop() {
		if err := r.Convert(b.Context(), qemuimg.ConvertRequest{Src: src, SrcFormat: qemuimg.FormatRaw, Dst: dst, DstFormat: qemuimg.FormatQCOW2}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := os.Remove(dst); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
