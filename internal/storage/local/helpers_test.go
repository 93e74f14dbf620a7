package local_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmdhq/vmd/internal/images"
	"github.com/vmdhq/vmd/internal/storage"
	"github.com/vmdhq/vmd/internal/storage/local"
	"github.com/vmdhq/vmd/internal/storage/qemuimg"
)

const mib = 1 << 20

// needQemuImg skips when qemu-img (Debian qemu-utils) is missing: these are
// integration tests against the real tool.
func needQemuImg(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skipf("qemu-img not installed (Debian package qemu-utils): %v", err)
	}
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// qinfo is `qemu-img info` of a volume as vmd would read it.
type qinfo struct {
	VirtualSize int64  `json:"virtual-size"`
	Backing     string `json:"backing-filename"`
	Format      string `json:"format"`
}

func info(t testing.TB, path, format string) qinfo {
	t.Helper()
	var q qinfo
	if err := json.Unmarshal([]byte(run(t, "qemu-img", "info", "-U", "--output=json", "-f", format, path)), &q); err != nil {
		t.Fatal(err)
	}
	return q
}

// rawDisk writes a raw disk of size bytes with an MBR boot signature,
// random data at the start and at the end, and zeros between.
func rawDisk(t testing.TB, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, mib)
	_, _ = rand.Read(head)
	head[510], head[511] = 0x55, 0xAA
	if _, err := f.WriteAt(head, 0); err != nil {
		t.Fatal(err)
	}
	tail := make([]byte, 64<<10)
	_, _ = rand.Read(tail)
	if _, err := f.WriteAt(tail, size-int64(len(tail))); err != nil {
		t.Fatal(err)
	}
}

// sameData asserts that the guest-visible data of vol equals raw (the
// extra size of vol must read as zeros).
func sameData(t testing.TB, raw, vol, volFormat string) {
	t.Helper()
	run(t, "qemu-img", "compare", "-U", "-f", "raw", "-F", volFormat, raw, vol)
}

func gzipFile(t testing.TB, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, _ = zw.Write(data)
	_ = zw.Close()
	if err := os.WriteFile(dst, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func sha256File(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// server serves a directory over HTTP with Range support and counts
// requests and bytes per path. cut, when > 0, makes the first response of
// each path stop after that many bytes.
type server struct {
	*httptest.Server
	dir      string
	mu       sync.Mutex
	gets     map[string]int
	sent     atomic.Int64
	cut      int64
	cutDone  map[string]bool
	throttle time.Duration // sleep per 64 KiB
}

func newServer(t testing.TB) *server {
	s := &server{dir: t.TempDir(), gets: map[string]int{}, cutDone: map[string]bool{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *server) serve(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/")
	f, err := os.Open(filepath.Join(s.dir, filepath.Base(name)))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	st, _ := f.Stat()
	s.mu.Lock()
	s.gets[name]++
	cut := s.cut > 0 && !s.cutDone[name]
	s.cutDone[name] = true
	s.mu.Unlock()
	var body io.ReadSeeker = f
	if cut || s.throttle > 0 {
		body = &slowCutReader{ReadSeeker: f, s: s, cut: cut}
	}
	cw := &countWriter{ResponseWriter: w, n: &s.sent}
	http.ServeContent(cw, r, name, st.ModTime(), body)
}

// slowCutReader throttles and, when cut, fails after s.cut bytes so the
// connection ends mid-body.
type slowCutReader struct {
	io.ReadSeeker
	s    *server
	cut  bool
	read int64
}

func (r *slowCutReader) Read(b []byte) (int, error) {
	if len(b) > 64<<10 {
		b = b[:64<<10]
	}
	if r.cut && r.read >= r.s.cut {
		return 0, errors.New("connection cut by the test")
	}
	if r.s.throttle > 0 {
		time.Sleep(r.s.throttle)
	}
	n, err := r.ReadSeeker.Read(b)
	r.read += int64(n)
	return n, err
}

type countWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n.Add(int64(n))
	return n, err
}

func (s *server) path(name string) string { return filepath.Join(s.dir, name) }
func (s *server) url(name string) string  { return s.URL + "/" + name }
func (s *server) count(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets[name]
}

// env is a Pools on temporary directories with a real fetcher and
// qemu-img.
type env struct {
	*local.Pools
	root, pool, cache, scratch string
	fetcher                    *images.Fetcher
	srv                        *server
}

func newEnv(t testing.TB, mutate func(*local.Config)) *env {
	t.Helper()
	needQemuImg(t)
	root := t.TempDir()
	e := &env{root: root, pool: filepath.Join(root, "pools", "local"), cache: filepath.Join(root, "images"),
		scratch: filepath.Join(root, "scratch"), srv: newServer(t)}
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	f, err := images.NewFetcher(images.FetcherConfig{
		ScratchDir: filepath.Join(e.scratch, "downloads"),
		Retry:      images.RetryPolicy{MaxAttempts: 5, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond},
		Logger:     log,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.fetcher = f
	cfg := local.Config{
		Classes: map[string]local.Class{
			"local":      {Path: e.pool, Note: "one local copy"},
			"replicated": {Path: filepath.Join(root, "pools", "replicated"), Note: "not really"},
		},
		CacheDir: e.cache, ScratchDir: e.scratch, Mirror: e.srv.URL,
		Fetcher: f, Tool: &qemuimg.Runner{Log: log}, Log: log,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	p, err := local.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	e.Pools = p
	return e
}

var uidSeq atomic.Int64

// request is a VolumeRequest with a fresh uid.
func request(name string, size int64) storage.VolumeRequest {
	return storage.VolumeRequest{
		UID: fmt.Sprintf("%08x-0000-4000-8000-000000000000", uidSeq.Add(1)), Namespace: "tenant", Name: name,
		Class: "local", SizeBytes: size,
	}
}

// wait calls EnsureVolume until the volume is Ready or an error comes.
func (e *env) wait(t testing.TB, req storage.VolumeRequest) (storage.Volume, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		v, err := e.EnsureVolume(ctx, req)
		if err != nil || v.Ready {
			return v, err
		}
		select {
		case <-ctx.Done():
			t.Fatalf("volume %s not ready: %+v", req.Name, v)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// files lists every regular file under dir, relative.
func files(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}
