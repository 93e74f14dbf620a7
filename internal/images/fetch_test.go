package images

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmdhq/vmd/internal/errdefs"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// newTestFetcher returns a Fetcher with millisecond back-off so retry
// tests run fast; cfg fields that are set win.
func newTestFetcher(t testing.TB, cfg FetcherConfig) *Fetcher {
	t.Helper()
	if cfg.ScratchDir == "" {
		cfg.ScratchDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	if cfg.Retry.InitialBackoff == 0 {
		cfg.Retry = RetryPolicy{MaxAttempts: 4, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
	}
	f, err := NewFetcher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// scratchFiles lists the scratch directory.
func scratchFiles(t testing.TB, f *Fetcher) []string {
	t.Helper()
	entries, err := os.ReadDir(f.cfg.ScratchDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// checkResult verifies the result file holds want and the metadata
// agrees with the bytes served.
func checkResult(t *testing.T, res Result, served, want []byte) {
	t.Helper()
	got, err := os.ReadFile(res.Path)
	if err != nil {
		t.Fatalf("reading result: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("result content differs from the image (%d vs %d bytes)", len(got), len(want))
	}
	if res.SHA256 != sha(served) || res.Downloaded != int64(len(served)) || res.Size != int64(len(want)) {
		t.Fatalf("result %+v; want sha256 %s, downloaded %d, size %d", res, sha(served), len(served), len(want))
	}
}

// sentTotal sums the body bytes the server sent over all requests.
func sentTotal(log []served) int64 {
	var n int64
	for _, s := range log {
		n += s.sent
	}
	return n
}

func TestFetchFullDownload(t *testing.T) {
	needTool(t, "qemu-img")
	dir := t.TempDir()
	img := readAll(t, convert(t, rawDisk(t, dir), filepath.Join(dir, "d.qcow2"), "qcow2"))
	srv, ts := newImageServer(t, img)
	f := newTestFetcher(t, FetcherConfig{})

	res, err := f.Fetch(t.Context(), FetchRequest{URL: ts.URL + "/disk.img", ExpectedSHA256: strings.ToUpper(sha(img))})
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, img, img)
	if res.Format != FormatQcow2 || res.Compressed != CompressionNone || res.VirtualSize != 10<<20 || res.Transferred != int64(len(img)) {
		t.Fatalf("result %+v", res)
	}
	if log := srv.requests(); len(log) != 1 || log[0].rangeHdr != "" {
		t.Fatalf("server log %+v, want one plain GET", log)
	}
	// Only the caller's result is left: no .part, no sidecar, no temp.
	if files := scratchFiles(t, f); len(files) != 1 || filepath.Join(f.cfg.ScratchDir, files[0]) != res.Path {
		t.Fatalf("scratch holds %v, want only %s", files, res.Path)
	}
}

// TestFetchResume cuts or stalls the connection mid-file and checks, from
// the server's log, that the retry asked for the rest only and that no
// byte was sent twice.
func TestFetchResume(t *testing.T) {
	body := diskBytes(t, 3<<20+123)
	const cut = 1<<20 + 12345
	tests := []struct {
		name  string
		setup func(s *imageServer)
		cfg   FetcherConfig
	}{
		{name: "connection cut", setup: func(s *imageServer) { s.cutAt = []int64{cut} }},
		{name: "two cuts", setup: func(s *imageServer) { s.cutAt = []int64{cut, 2 * cut} }},
		{name: "stall", setup: func(s *imageServer) { s.stallAt = []int64{cut} },
			cfg: FetcherConfig{StallTimeout: 200 * time.Millisecond}},
		{name: "resume validated by Last-Modified", setup: func(s *imageServer) {
			s.etag, s.lastModified, s.cutAt = "", "Mon, 02 Jan 2006 15:04:05 GMT", []int64{cut}
		}},
		{name: "weak ETag falls back to Last-Modified", setup: func(s *imageServer) {
			s.etag, s.lastModified, s.cutAt = `W/"weak"`, "Mon, 02 Jan 2006 15:04:05 GMT", []int64{cut}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, ts := newImageServer(t, body)
			tt.setup(srv)
			f := newTestFetcher(t, tt.cfg)
			res, err := f.Fetch(t.Context(), FetchRequest{URL: ts.URL + "/disk.raw", ExpectedSHA256: sha(body)})
			if err != nil {
				t.Fatal(err)
			}
			checkResult(t, res, body, body)
			log := srv.requests()
			if len(log) < 2 {
				t.Fatalf("server log %+v, want a resumed request", log)
			}
			var next int64
			for i, s := range log {
				if s.start != next {
					t.Fatalf("request %d started at %d, want %d (log %+v)", i, s.start, next, log)
				}
				if i > 0 && (s.status != http.StatusPartialContent || s.ifRange == "") {
					t.Fatalf("request %d: %+v, want a 206 with If-Range", i, s)
				}
				next += s.sent
			}
			if sentTotal(log) != int64(len(body)) || res.Transferred != int64(len(body)) {
				t.Fatalf("server sent %d bytes, client received %d, for a %d-byte file", sentTotal(log), res.Transferred, len(body))
			}
		})
	}
}

// TestFetchRestart covers the cases where the partial file must be thrown
// away: the server ignores Range, or the file changed on the server.
func TestFetchRestart(t *testing.T) {
	v1 := diskBytes(t, 2<<20)
	v2 := diskBytes(t, 2<<20+7)
	const cut = 700_000
	tests := []struct {
		name     string
		setup    func(s *imageServer)
		want     []byte
		requests int
		// statuses the server answered, in order.
		statuses []int
	}{
		{name: "server ignores Range", want: v1, requests: 2, statuses: []int{200, 200},
			setup: func(s *imageServer) { s.ignoreRange, s.cutAt = true, []int64{cut} }},
		{name: "ETag changed, If-Range makes the server send the new file", want: v2, requests: 2, statuses: []int{200, 200},
			setup: func(s *imageServer) {
				s.cutAt = []int64{cut}
				s.before = func(i int) {
					if i == 1 {
						s.body, s.etag = v2, `"v2"`
					}
				}
			}},
		{name: "ETag changed, server honours Range but ignores If-Range", want: v2, requests: 3, statuses: []int{200, 206, 200},
			setup: func(s *imageServer) {
				s.cutAt, s.ignoreIfRange = []int64{cut}, true
				s.before = func(i int) {
					if i == 1 {
						s.body, s.etag = v2, `"v2"`
					}
				}
			}},
		{name: "no validator to resume against", want: v1, requests: 2, statuses: []int{200, 200},
			setup: func(s *imageServer) { s.etag, s.cutAt = "", []int64{cut} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, ts := newImageServer(t, v1)
			tt.setup(srv)
			f := newTestFetcher(t, FetcherConfig{})
			res, err := f.Fetch(t.Context(), FetchRequest{URL: ts.URL + "/disk.raw"})
			if err != nil {
				t.Fatal(err)
			}
			// The digest must be of the new file alone: a mix of old prefix
			// and new tail would hash to neither.
			checkResult(t, res, tt.want, tt.want)
			log := srv.requests()
			var statuses []int
			for _, s := range log {
				statuses = append(statuses, s.status)
			}
			if len(log) != tt.requests || !slices.Equal(statuses, tt.statuses) {
				t.Fatalf("server log %+v, want statuses %v", log, tt.statuses)
			}
			if last := log[len(log)-1]; last.start != 0 || last.sent != int64(len(tt.want)) {
				t.Fatalf("last request %+v, want the whole file", last)
			}
		})
	}
}

func TestFetchChecksumMismatch(t *testing.T) {
	body := diskBytes(t, 1<<20)
	_, ts := newImageServer(t, body)
	f := newTestFetcher(t, FetcherConfig{})
	wrong := sha([]byte("something else"))
	_, err := f.Fetch(t.Context(), FetchRequest{URL: ts.URL + "/disk.raw", ExpectedSHA256: wrong})
	var ce *ChecksumError
	if !errors.Is(err, errdefs.ErrInvalid) || !errors.As(err, &ce) {
		t.Fatalf("Fetch = %v, want a ChecksumError matching ErrInvalid", err)
	}
	if !strings.Contains(err.Error(), wrong) || !strings.Contains(err.Error(), sha(body)) {
		t.Fatalf("error %q must name expected and actual digests", err)
	}
	if files := scratchFiles(t, f); len(files) != 0 {
		t.Fatalf("scratch holds %v after a mismatch, want nothing", files)
	}
}

func TestFetchHTTPErrors(t *testing.T) {
	body := diskBytes(t, 64<<10)
	tests := []struct {
		name     string
		statuses []int
		wantErr  error
		// wantRequests is what the server sees: 1 for a permanent error,
		// MaxAttempts (4) when retries run out, or the failures plus one.
		wantRequests int
		wantMsg      string
	}{
		{name: "404 is permanent", statuses: []int{404, 404, 404, 404, 404}, wantErr: errdefs.ErrInvalid, wantRequests: 1, wantMsg: "HTTP 404 Not Found"},
		{name: "403 is permanent", statuses: []int{403, 403, 403, 403, 403}, wantErr: errdefs.ErrInvalid, wantRequests: 1, wantMsg: "HTTP 403 Forbidden"},
		{name: "503 twice then OK", statuses: []int{503, 503}, wantRequests: 3},
		{name: "429 then OK", statuses: []int{429}, wantRequests: 2},
		{name: "500 until retries run out", statuses: []int{500, 500, 500, 500, 500, 500}, wantErr: errdefs.ErrUnavailable, wantRequests: 4, wantMsg: "giving up after 4 attempts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, ts := newImageServer(t, body)
			srv.statuses = tt.statuses
			f := newTestFetcher(t, FetcherConfig{})
			var mu sync.Mutex
			var retries []string
			res, err := f.Fetch(t.Context(), FetchRequest{URL: ts.URL + "/x.img", Retrying: func(err error, _ time.Duration) {
				mu.Lock()
				defer mu.Unlock()
				retries = append(retries, err.Error())
			}})
			if got := len(srv.requests()); got != tt.wantRequests {
				t.Errorf("server saw %d requests, want %d", got, tt.wantRequests)
			}
			// Every transient failure that is retried is reported to the
			// caller with its cause; permanent ones and the last are not.
			mu.Lock()
			wantRetries := tt.wantRequests - 1
			if errors.Is(tt.wantErr, errdefs.ErrInvalid) {
				wantRetries = 0
			}
			if len(retries) != wantRetries {
				t.Errorf("Retrying called %d times (%v), want %d", len(retries), retries, wantRetries)
			}
			for _, r := range retries {
				if !strings.Contains(r, "HTTP") {
					t.Errorf("retry reason %q does not name the HTTP status", r)
				}
			}
			mu.Unlock()
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				checkResult(t, res, body, body)
				return
			}
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) || !strings.Contains(err.Error(), ts.URL+"/x.img") {
				t.Fatalf("Fetch = %v, want %v naming the URL and %q", err, tt.wantErr, tt.wantMsg)
			}
			if files := scratchFiles(t, f); len(files) != 0 && errors.Is(tt.wantErr, errdefs.ErrInvalid) {
				t.Fatalf("scratch holds %v after a permanent error", files)
			}
		})
	}
}

func TestFetchBadRequests(t *testing.T) {
	f := newTestFetcher(t, FetcherConfig{})
	tests := []struct {
		name string
		req  FetchRequest
	}{
		{name: "file URL", req: FetchRequest{URL: "file:///etc/passwd"}},
		{name: "relative URL", req: FetchRequest{URL: "/disk.img"}},
		{name: "ftp URL", req: FetchRequest{URL: "ftp://example.com/disk.img"}},
		{name: "short digest", req: FetchRequest{URL: "http://127.0.0.1:1/x", ExpectedSHA256: "abc"}},
		{name: "unparsable URL", req: FetchRequest{URL: "http://user:s3cret@[::1"}},
		{name: "non-hex digest", req: FetchRequest{URL: "http://127.0.0.1:1/x", ExpectedSHA256: strings.Repeat("z", 64)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.Fetch(t.Context(), tt.req)
			if !errors.Is(err, errdefs.ErrInvalid) || strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("Fetch = %v, want ErrInvalid without the password", err)
			}
		})
	}
}

// TestFetchPasswordNotInErrors: credentials in a URL stay out of messages.
func TestFetchPasswordNotInErrors(t *testing.T) {
	srv, ts := newImageServer(t, []byte("x"))
	srv.statuses = []int{404}
	f := newTestFetcher(t, FetcherConfig{})
	u := strings.Replace(ts.URL, "http://", "http://user:s3cret@", 1) + "/x"
	_, err := f.Fetch(t.Context(), FetchRequest{URL: u})
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("Fetch = %v, want an error without the password", err)
	}
}

// TestFetchSingleFlight starts ten Fetches of one URL while the server
// holds the body back, so all of them are in flight at once.
func TestFetchSingleFlight(t *testing.T) {
	body := diskBytes(t, 2<<20)
	srv, ts := newImageServer(t, body)
	srv.gate = make(chan struct{})
	f := newTestFetcher(t, FetcherConfig{})
	url := ts.URL + "/shared.img"
	const n = 10
	results := make([]Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = f.Fetch(t.Context(), FetchRequest{URL: url, ExpectedSHA256: sha(body)})
		})
	}
	waitFor(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		fl := f.flights[url]
		return fl != nil && len(fl.waiters) == n
	})
	close(srv.gate)
	wg.Wait()
	if log := srv.requests(); len(log) != 1 {
		t.Fatalf("server saw %d requests, want exactly 1: %+v", len(log), log)
	}
	first, err := os.Stat(results[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		checkResult(t, results[i], body, body)
		// One inode, one name per caller: each may delete its own.
		st, err := os.Stat(results[i].Path)
		if err != nil || !os.SameFile(first, st) {
			t.Fatalf("caller %d got %s, not the same file as caller 0", i, results[i].Path)
		}
		paths[results[i].Path] = true
	}
	if len(paths) != n {
		t.Fatalf("%d distinct paths for %d callers", len(paths), n)
	}
	// Removing one caller's file leaves the others intact.
	if err := os.Remove(results[0].Path); err != nil {
		t.Fatal(err)
	}
	checkResult(t, results[1], body, body)
}

// TestFetchSingleFlightMixedChecksums: callers sharing one download each
// get their own verdict.
func TestFetchSingleFlightMixedChecksums(t *testing.T) {
	body := diskBytes(t, 1<<20)
	srv, ts := newImageServer(t, body)
	srv.gate = make(chan struct{})
	f := newTestFetcher(t, FetcherConfig{})
	url := ts.URL + "/x.img"
	expect := []string{sha(body), "", sha([]byte("stale"))}
	results := make([]Result, len(expect))
	errs := make([]error, len(expect))
	var wg sync.WaitGroup
	for i, e := range expect {
		wg.Go(func() { results[i], errs[i] = f.Fetch(t.Context(), FetchRequest{URL: url, ExpectedSHA256: e}) })
	}
	waitFor(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.flights[url] != nil && len(f.flights[url].waiters) == len(expect)
	})
	close(srv.gate)
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("matching and unchecked callers failed: %v, %v", errs[0], errs[1])
	}
	checkResult(t, results[0], body, body)
	checkResult(t, results[1], body, body)
	var ce *ChecksumError
	if !errors.As(errs[2], &ce) || ce.Expected != expect[2] {
		t.Fatalf("stale caller got %v, want its ChecksumError", errs[2])
	}
	if len(srv.requests()) != 1 {
		t.Fatalf("server saw %d requests", len(srv.requests()))
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFetchCompressed(t *testing.T) {
	needTool(t, "qemu-img")
	dir := t.TempDir()
	// Mostly zeros: xz is slow on random data and the point is the format.
	disk := make([]byte, 10<<20)
	copy(disk, diskBytes(t, 256<<10))
	img := readAll(t, convert(t, writeFile(t, dir, "disk.raw", disk), filepath.Join(dir, "d.qcow2"), "qcow2"))
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(img)
	zw.Close()
	tests := []struct {
		name       string
		compressed func(t *testing.T) []byte
		want       Compression
	}{
		{name: "gzip", compressed: func(t *testing.T) []byte { return gz.Bytes() }, want: CompressionGzip},
		{name: "xz", want: CompressionXZ, compressed: func(t *testing.T) []byte {
			needTool(t, "xz")
			out, err := exec.Command("xz", "-c", "-1", writeFile(t, t.TempDir(), "d.qcow2", img)).Output()
			if err != nil {
				t.Fatal(err)
			}
			return out
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := tt.compressed(t)
			_, ts := newImageServer(t, data)
			f := newTestFetcher(t, FetcherConfig{})
			// The name says .img: compression comes from the bytes.
			res, err := f.Fetch(t.Context(), FetchRequest{URL: ts.URL + "/disk.img", ExpectedSHA256: sha(data)})
			if err != nil {
				t.Fatal(err)
			}
			checkResult(t, res, data, img)
			if res.Compressed != tt.want || res.Format != FormatQcow2 {
				t.Fatalf("result %+v, want %s-compressed qcow2", res, tt.want)
			}
			if files := scratchFiles(t, f); len(files) != 1 {
				t.Fatalf("scratch holds %v, want only the result", files)
			}
		})
	}
}

func TestFetchCorruptCompressed(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(diskBytes(t, 256<<10))
	zw.Close()
	data := gz.Bytes()
	data = data[:len(data)-100] // truncated stream
	_, ts := newImageServer(t, data)
	f := newTestFetcher(t, FetcherConfig{})
	_, err := f.Fetch(t.Context(), FetchRequest{URL: ts.URL + "/disk.gz"})
	if !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("Fetch = %v, want ErrInvalid", err)
	}
	if files := scratchFiles(t, f); len(files) != 0 {
		t.Fatalf("scratch holds %v", files)
	}
}

// TestFetchDecompressionBomb: MaxImageSize bounds the decompressed size.
func TestFetchDecompressionBomb(t *testing.T) {
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zw.Write(make([]byte, 8<<20))
	zw.Close()
	_, ts := newImageServer(t, gz.Bytes())
	f := newTestFetcher(t, FetcherConfig{MaxImageSize: 1 << 20})
	_, err := f.Fetch(t.Context(), FetchRequest{URL: ts.URL + "/bomb"})
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("Fetch = %v, want ErrInvalid about the size", err)
	}
	if files := scratchFiles(t, f); len(files) != 0 {
		t.Fatalf("scratch holds %v", files)
	}
}

func TestFetchTooLarge(t *testing.T) {
	srv, ts := newImageServer(t, make([]byte, 2<<20))
	f := newTestFetcher(t, FetcherConfig{MaxImageSize: 1 << 20})
	_, err := f.Fetch(t.Context(), FetchRequest{URL: ts.URL + "/big"})
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "more than the 1048576 allowed") {
		t.Fatalf("Fetch = %v, want ErrInvalid about the size", err)
	}
	if len(srv.requests()) != 1 {
		t.Fatal("a too-large image must not be retried")
	}
}

func TestFetchHostile(t *testing.T) {
	b := qcow2Spec{size: 1 << 20, backing: "/etc/shadow"}.bytes()
	_, ts := newImageServer(t, b)
	f := newTestFetcher(t, FetcherConfig{})
	_, err := f.Fetch(t.Context(), FetchRequest{URL: ts.URL + "/evil.qcow2"})
	if !errors.Is(err, ErrHostile) || !strings.Contains(err.Error(), `backing file "/etc/shadow"`) {
		t.Fatalf("Fetch = %v, want ErrHostile naming the backing file", err)
	}
	if files := scratchFiles(t, f); len(files) != 0 {
		t.Fatalf("scratch holds %v after a hostile image", files)
	}
}

func TestFetchGuessedRaw(t *testing.T) {
	body := make([]byte, 64<<10)
	_, ts := newImageServer(t, body)
	f := newTestFetcher(t, FetcherConfig{})
	res, err := f.Fetch(t.Context(), FetchRequest{URL: ts.URL + "/blob"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Format != FormatRaw || !res.Guessed || res.Check(false) == nil {
		t.Fatalf("result %+v: a headerless blob must come back as guessed raw that Check refuses", res)
	}
}

// writeSidecar plays a previous process: it leaves a .part holding the
// first n bytes of body (plus tail, bytes written after the last
// checkpoint) and the sidecar that process would have saved.
func writeSidecar(t *testing.T, f *Fetcher, url string, body []byte, n int, tail []byte, etag string) {
	t.Helper()
	key := sha([]byte(url))
	h := sha256.New()
	h.Write(body[:n])
	state, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	sc := sidecar{Version: sidecarVersion, URL: url, ETag: etag, Written: int64(n), Total: int64(len(body)), HashState: state,
		Complete: n == len(body)}
	b, err := json.Marshal(sc)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, f.cfg.ScratchDir, key+".part", append(slices.Clone(body[:n]), tail...))
	writeFile(t, f.cfg.ScratchDir, key+".part.json", b)
}

// TestFetchCrashRecovery starts a Fetcher on a scratch directory a
// "previous process" left behind.
func TestFetchCrashRecovery(t *testing.T) {
	body := diskBytes(t, 3<<20)
	const n = 1<<20 + 999
	tests := []struct {
		name string
		// leave prepares the scratch directory.
		leave func(t *testing.T, f *Fetcher, url string)
		// wantStart is the offset the server is asked for first; -1 means
		// no request at all.
		wantStart int64
	}{
		{name: "part and sidecar resume", wantStart: n,
			leave: func(t *testing.T, f *Fetcher, url string) { writeSidecar(t, f, url, body, n, nil, `"v1"`) }},
		{name: "bytes past the checkpoint are dropped", wantStart: n,
			leave: func(t *testing.T, f *Fetcher, url string) {
				writeSidecar(t, f, url, body, n, []byte("garbage written after the last checkpoint"), `"v1"`)
			}},
		{name: "complete download is not fetched again", wantStart: -1,
			leave: func(t *testing.T, f *Fetcher, url string) { writeSidecar(t, f, url, body, len(body), nil, `"v1"`) }},
		{name: "part without sidecar starts over", wantStart: 0,
			leave: func(t *testing.T, f *Fetcher, url string) {
				writeFile(t, f.cfg.ScratchDir, sha([]byte(url))+".part", body[:n])
			}},
		{name: "sidecar claiming more than the part starts over", wantStart: 0,
			leave: func(t *testing.T, f *Fetcher, url string) {
				writeSidecar(t, f, url, body, n, nil, `"v1"`)
				os.Truncate(filepath.Join(f.cfg.ScratchDir, sha([]byte(url))+".part"), n-1)
			}},
		{name: "corrupt sidecar starts over", wantStart: 0,
			leave: func(t *testing.T, f *Fetcher, url string) {
				writeSidecar(t, f, url, body, n, nil, `"v1"`)
				writeFile(t, f.cfg.ScratchDir, sha([]byte(url))+".part.json", []byte("{not json"))
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, ts := newImageServer(t, body)
			scratch := t.TempDir()
			url := ts.URL + "/disk.raw"
			tt.leave(t, newTestFetcher(t, FetcherConfig{ScratchDir: scratch}), url)

			f := newTestFetcher(t, FetcherConfig{ScratchDir: scratch})
			res, err := f.Fetch(t.Context(), FetchRequest{URL: url, ExpectedSHA256: sha(body)})
			if err != nil {
				t.Fatal(err)
			}
			checkResult(t, res, body, body)
			log := srv.requests()
			if tt.wantStart < 0 {
				if len(log) != 0 || res.Transferred != 0 {
					t.Fatalf("server log %+v, transferred %d; want no request", log, res.Transferred)
				}
				return
			}
			if len(log) != 1 || log[0].start != tt.wantStart || sentTotal(log) != int64(len(body))-tt.wantStart {
				t.Fatalf("server log %+v, want one request from %d", log, tt.wantStart)
			}
			if res.Transferred != int64(len(body))-tt.wantStart {
				t.Fatalf("transferred %d, want %d", res.Transferred, int64(len(body))-tt.wantStart)
			}
		})
	}
}

// TestFetchCancelThenResume: a caller that goes away (daemon shutdown)
// leaves a resumable partial download for the next process.
func TestFetchCancelThenResume(t *testing.T) {
	body := diskBytes(t, 4<<20)
	const stall = 1500_000
	srv, ts := newImageServer(t, body)
	srv.stallAt = []int64{stall}
	scratch := t.TempDir()
	url := ts.URL + "/disk.raw"

	// Report every read, so the test sees the stall offset.
	f1 := newTestFetcher(t, FetcherConfig{ScratchDir: scratch, ProgressInterval: time.Nanosecond})
	ctx, cancel := context.WithCancel(t.Context())
	var mu sync.Mutex
	var done int64
	errc := make(chan error, 1)
	go func() {
		_, err := f1.Fetch(ctx, FetchRequest{URL: url, Progress: func(d, _ int64) { mu.Lock(); done = d; mu.Unlock() }})
		errc <- err
	}()
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return done == stall })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Fetch = %v", err)
	}
	// The flight saves its state asynchronously after the caller left.
	waitFor(t, func() bool { f1.mu.Lock(); defer f1.mu.Unlock(); return len(f1.flights) == 0 })

	f2 := newTestFetcher(t, FetcherConfig{ScratchDir: scratch})
	res, err := f2.Fetch(t.Context(), FetchRequest{URL: url, ExpectedSHA256: sha(body)})
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, body, body)
	log := srv.requests()
	if len(log) != 2 || log[1].start != stall || sentTotal(log) != int64(len(body)) {
		t.Fatalf("server log %+v, want the second request to start at %d", log, stall)
	}
}

// TestFetchProgress: reports are throttled, monotonic and end at the total.
func TestFetchProgress(t *testing.T) {
	body := diskBytes(t, 4<<20)
	srv, ts := newImageServer(t, body)
	// A stall in the middle makes the download last long enough for
	// throttling to matter.
	srv.stallAt = []int64{1 << 20}
	var mu sync.Mutex
	var calls [][2]int64
	var observed int
	f := newTestFetcher(t, FetcherConfig{
		ProgressInterval: 50 * time.Millisecond, StallTimeout: 300 * time.Millisecond,
		Progress: func(string, int64, int64) { mu.Lock(); observed++; mu.Unlock() },
	})
	start := time.Now()
	_, err := f.Fetch(t.Context(), FetchRequest{URL: ts.URL + "/p", Progress: func(d, total int64) {
		mu.Lock()
		calls = append(calls, [2]int64{d, total})
		mu.Unlock()
	}})
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) == 0 || calls[len(calls)-1] != [2]int64{int64(len(body)), int64(len(body))} {
		t.Fatalf("progress calls %v, want the last to be done=total=%d", calls, len(body))
	}
	for i := 1; i < len(calls); i++ {
		if calls[i][0] < calls[i-1][0] {
			t.Fatalf("progress went backwards: %v", calls)
		}
	}
	if limit := int(elapsed/(50*time.Millisecond)) + 2; len(calls) > limit {
		t.Fatalf("%d progress calls in %s, more than %d", len(calls), elapsed, limit)
	}
	if observed != len(calls) {
		t.Fatalf("config observer saw %d calls, caller %d", observed, len(calls))
	}
}

func TestSweep(t *testing.T) {
	f := newTestFetcher(t, FetcherConfig{})
	old := time.Now().Add(-48 * time.Hour)
	files := map[string]bool{ // name -> kept
		"abc.part":               true,
		"abc.part.json":          true,
		"old.part":               false,
		"old.part.json":          false,
		"abc.part.json.tmp":      false,
		"abc.unpack.tmp":         false,
		"0123-deadbeef.img":      false,
		"unrelated-file.keep.me": true,
	}
	for name := range files {
		p := writeFile(t, f.cfg.ScratchDir, name, []byte("x"))
		if strings.HasPrefix(name, "old") {
			os.Chtimes(p, old, old)
		}
	}
	if err := f.Sweep(24 * time.Hour); err != nil {
		t.Fatal(err)
	}
	left := scratchFiles(t, f)
	for name, kept := range files {
		if slices.Contains(left, name) != kept {
			t.Errorf("%s: kept=%v, want %v", name, !kept, kept)
		}
	}
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		first, tot int64
		ok         bool
	}{
		{name: "range", in: "bytes 100-199/200", first: 100, tot: 200, ok: true},
		{name: "unknown total", in: "bytes 0-9/*", first: 0, tot: -1, ok: true},
		{name: "unsatisfied", in: "bytes */500", first: -1, tot: 500, ok: true},
		{name: "last beyond total", in: "bytes 0-200/200", ok: false},
		{name: "inverted", in: "bytes 9-0/20", ok: false},
		{name: "wrong unit", in: "items 0-1/2", ok: false},
		{name: "garbage", in: "bytes x-y/z", ok: false},
		{name: "empty", in: "", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, tot, ok := parseContentRange(tt.in)
			if ok != tt.ok || (ok && (first != tt.first || tot != tt.tot)) {
				t.Fatalf("parseContentRange(%q) = %d, %d, %v", tt.in, first, tot, ok)
			}
		})
	}
}

func TestRetryDelay(t *testing.T) {
	p := RetryPolicy{MaxAttempts: 5, InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	tests := []struct {
		name       string
		n          int
		retryAfter time.Duration
		lo, hi     time.Duration
	}{
		{name: "first", n: 1, lo: 50 * time.Millisecond, hi: 100 * time.Millisecond},
		{name: "third doubles twice", n: 3, lo: 200 * time.Millisecond, hi: 400 * time.Millisecond},
		{name: "capped", n: 20, lo: 500 * time.Millisecond, hi: time.Second},
		{name: "Retry-After wins", n: 1, retryAfter: 700 * time.Millisecond, lo: 700 * time.Millisecond, hi: 700 * time.Millisecond},
		{name: "Retry-After capped", n: 1, retryAfter: time.Hour, lo: time.Second, hi: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 50 {
				if d := p.delay(tt.n, tt.retryAfter); d < tt.lo || d > tt.hi {
					t.Fatalf("delay = %s, want in [%s, %s]", d, tt.lo, tt.hi)
				}
			}
		})
	}
}

// BenchmarkFetch measures a full fetch with sha256 verification from a
// local server: the fetcher's own overhead, since loopback is not the
// bottleneck. Run: go test -run XXX -bench Fetch ./internal/images/
func BenchmarkFetch(b *testing.B) {
	body := make([]byte, 64<<20)
	for i := range body {
		body[i] = byte(i * 7)
	}
	digest := sha(body)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"bench"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	defer ts.Close()
	f := newTestFetcher(b, FetcherConfig{})
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for b.Loop() {
		res, err := f.Fetch(context.Background(), FetchRequest{URL: ts.URL + "/bench.raw", ExpectedSHA256: digest})
		if err != nil {
			b.Fatal(err)
		}
		if err := os.Remove(res.Path); err != nil {
			b.Fatal(err)
		}
	}
}
