package images

import (
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// Defaults of FetcherConfig. They favour finishing a long download over
// failing fast: an import that gives up after a 30-second outage costs the
// user far more than one that waits.
const (
	DefaultProgressInterval = 250 * time.Millisecond
	DefaultStallTimeout     = 60 * time.Second
	DefaultCheckpointBytes  = 64 << 20
	DefaultMaxImageSize     = 1 << 40
)

// ProgressFunc receives the bytes of the download done so far (including a
// resumed prefix) and the total, or -1 when the server does not say.
type ProgressFunc func(done, total int64)

// FetcherConfig configures a Fetcher. Only ScratchDir is required.
type FetcherConfig struct {
	// ScratchDir holds partial downloads, their sidecars and finished
	// results. It MUST be on the filesystem the results are consumed on
	// (results are renamed and hard-linked, never copied) and MUST be used
	// by one Fetcher at a time.
	ScratchDir string
	// Client performs the requests; nil means a client with sane
	// connection and header timeouts and no overall timeout (a body may
	// take hours; StallTimeout guards it instead).
	Client *http.Client
	// Retry is the retry policy; zero fields take their defaults.
	Retry RetryPolicy
	// Progress, if set, observes every download (for metrics and logs);
	// per-caller progress goes in FetchRequest.Progress.
	Progress func(url string, done, total int64)
	// ProgressInterval is the minimum time between two progress calls;
	// default 250ms (at most four calls a second, plus a final one).
	ProgressInterval time.Duration
	// StallTimeout aborts and retries an attempt that receives no byte for
	// this long; default 60s.
	StallTimeout time.Duration
	// CheckpointBytes is how often the partial file is fsynced and its
	// sidecar rewritten, bounding what a crash loses; default 64 MiB.
	CheckpointBytes int64
	// MaxImageSize caps both the downloaded and the decompressed bytes so
	// a hostile server or a decompression bomb cannot fill the disk;
	// default 1 TiB.
	MaxImageSize int64
	// Decompressors by compression; nil means DefaultDecompressors().
	Decompressors map[Compression]Decompressor
	// Logger receives one line per restart, retry and result; nil means
	// slog.Default().
	Logger *slog.Logger
	// UserAgent is sent with every request; default "vmd".
	UserAgent string
}

// Fetcher downloads disk images over HTTP(S) into a scratch directory:
// streamed, hashed while downloading, resumable across connection cuts and
// process restarts, decompressed, and sniffed. It deduplicates concurrent
// downloads of one URL. It is safe for concurrent use.
//
// Scratch layout (ScratchDir):
//
//	<sha256(url)>.part        bytes received so far
//	<sha256(url)>.part.json   sidecar: URL, validators, bytes covered, hash state
//	<sha256(url)>.unpack.tmp  decompression in progress
//	<sha256(content)>-<random>.img   one finished result per caller
//	*.tmp                     sidecar being replaced
type Fetcher struct {
	cfg    FetcherConfig
	client *http.Client
	log    *slog.Logger

	mu      sync.Mutex
	flights map[string]*flight
}

// NewFetcher validates cfg, fills defaults and creates the scratch
// directory (mode 0700: partial images are nobody else's business).
func NewFetcher(cfg FetcherConfig) (*Fetcher, error) {
	if cfg.ScratchDir == "" {
		return nil, fmt.Errorf("creating fetcher: scratch directory is required: %w", errdefs.ErrInvalid)
	}
	if err := os.MkdirAll(cfg.ScratchDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating fetcher: %w", err)
	}
	if cfg.Retry.MaxAttempts <= 0 {
		cfg.Retry.MaxAttempts = 5
	}
	if cfg.Retry.InitialBackoff <= 0 {
		cfg.Retry.InitialBackoff = time.Second
	}
	if cfg.Retry.MaxBackoff <= 0 {
		cfg.Retry.MaxBackoff = time.Minute
	}
	cfg.Retry.MaxBackoff = max(cfg.Retry.MaxBackoff, cfg.Retry.InitialBackoff)
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = DefaultProgressInterval
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = DefaultStallTimeout
	}
	if cfg.CheckpointBytes <= 0 {
		cfg.CheckpointBytes = DefaultCheckpointBytes
	}
	if cfg.MaxImageSize <= 0 {
		cfg.MaxImageSize = DefaultMaxImageSize
	}
	if cfg.Decompressors == nil {
		cfg.Decompressors = DefaultDecompressors()
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "vmd"
	}
	f := &Fetcher{cfg: cfg, client: cfg.Client, log: cfg.Logger, flights: map[string]*flight{}}
	if f.client == nil {
		f.client = defaultClient()
	}
	if f.log == nil {
		f.log = slog.Default()
	}
	return f, nil
}

func defaultClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = time.Minute
	return &http.Client{Transport: tr}
}

// FetchRequest names what to download.
type FetchRequest struct {
	// URL is an absolute http or https URL.
	URL string
	// ExpectedSHA256 is the hex sha256 of the bytes served (before
	// decompression); empty means not checked.
	ExpectedSHA256 string
	// Progress, if set, is called at most every ProgressInterval while the
	// download (shared or not) runs, and once at the end.
	Progress ProgressFunc
	// Retrying, if set, is called when a transient failure interrupts the
	// download, with the error and the wait before the next attempt, so a
	// caller can tell its user why nothing moves (DNS, a dropped link).
	Retrying func(err error, wait time.Duration)
}

// Result is a downloaded, decompressed and recognised image.
type Result struct {
	// Path is the image file, decompressed if it was compressed. It
	// belongs to the caller: every caller gets its own name (a hard link
	// when several shared one download) and MUST remove it when done.
	Path string
	// Size is the size in bytes of the file at Path.
	Size int64
	// SHA256 is the hex sha256 of the bytes served, i.e. of the
	// compressed file when Compressed is set.
	SHA256 string
	// Compressed is the compression that was undone.
	Compressed Compression
	// Downloaded is the number of bytes SHA256 covers.
	Downloaded int64
	// Transferred is how many bytes this download received from the
	// network; less than Downloaded when a partial file was resumed.
	Transferred int64
	// Info is the sniffed format and virtual size. Hostile images are an
	// error, never a Result; raw images that had to be guessed are
	// returned with Guessed set for the caller's Check.
	Info
}

// ChecksumError reports downloaded bytes that do not hash to what the
// caller expected. It matches errdefs.ErrInvalid.
type ChecksumError struct {
	URL      string
	Expected string
	Actual   string
}

// Error names both digests so the user can tell a stale checksum from a
// tampered mirror.
func (e *ChecksumError) Error() string {
	return fmt.Sprintf("checksum mismatch for %s: expected sha256 %s, got %s", e.URL, e.Expected, e.Actual)
}

// Is makes errors.Is(err, errdefs.ErrInvalid) true.
func (e *ChecksumError) Is(target error) bool { return target == errdefs.ErrInvalid }

// HTTPError is an unexpected HTTP status. 4xx (other than 408/425/429)
// match errdefs.ErrInvalid: the request is wrong and retrying will not fix
// it. 5xx and the rest match errdefs.ErrUnavailable.
type HTTPError struct {
	URL        string
	StatusCode int
	Status     string
}

// Error names the URL and the status line.
func (e *HTTPError) Error() string {
	return fmt.Sprintf("fetching %s: HTTP %s", e.URL, e.Status)
}

// Is maps the status to the error vocabulary.
func (e *HTTPError) Is(target error) bool {
	if e.permanent() {
		return target == errdefs.ErrInvalid
	}
	return target == errdefs.ErrUnavailable
}

func (e *HTTPError) permanent() bool {
	switch e.StatusCode {
	case http.StatusRequestTimeout, http.StatusTooEarly, http.StatusTooManyRequests:
		return false
	}
	return e.StatusCode >= 400 && e.StatusCode < 500
}

// flight is one download shared by every Fetch of its URL that arrives
// before it finishes.
type flight struct {
	url     string
	key     string
	done    chan struct{}
	cancel  context.CancelFunc
	log     *slog.Logger
	waiters []*waiter // guarded by Fetcher.mu
	// closed (guarded by Fetcher.mu) stops new waiters from joining: the
	// flight is finishing or was abandoned by every waiter. A newcomer
	// waits for done and starts the next flight.
	closed bool
}

// waiter is one Fetch call waiting on a flight.
type waiter struct {
	expected string
	progress ProgressFunc
	retrying func(err error, wait time.Duration)
	res      Result
	err      error
}

// Fetch downloads req.URL (or joins a download of it already in flight)
// and returns the image. Errors: a bad request, a permanent HTTP status, a
// checksum mismatch, a hostile or broken image match errdefs.ErrInvalid;
// transient failures that outlived the retry policy match
// errdefs.ErrUnavailable. When ctx ends the partial download is kept for
// the next Fetch of the URL to resume, unless another caller still wants it.
func (f *Fetcher) Fetch(ctx context.Context, req FetchRequest) (Result, error) {
	u, err := checkRequest(req)
	if err != nil {
		return Result{}, err
	}
	w := &waiter{expected: strings.ToLower(req.ExpectedSHA256), progress: req.Progress, retrying: req.Retrying}
	for {
		f.mu.Lock()
		fl := f.flights[req.URL]
		if fl != nil && fl.closed {
			f.mu.Unlock()
			select {
			case <-fl.done:
				continue
			case <-ctx.Done():
				return Result{}, fmt.Errorf("fetching %s: %w", u.Redacted(), ctx.Err())
			}
		}
		if fl == nil {
			fl = f.start(req.URL, u)
		}
		fl.waiters = append(fl.waiters, w)
		f.mu.Unlock()

		select {
		case <-fl.done:
			return w.res, w.err
		case <-ctx.Done():
			if f.leave(fl, w) {
				return Result{}, fmt.Errorf("fetching %s: %w", u.Redacted(), ctx.Err())
			}
			// Too late to leave: the flight is handing out results. Take
			// ours and remove it, since nobody will use it.
			<-fl.done
			if w.err == nil {
				_ = os.Remove(w.res.Path)
			}
			return Result{}, fmt.Errorf("fetching %s: %w", u.Redacted(), ctx.Err())
		}
	}
}

// checkRequest accepts only absolute http(s) URLs and well-formed digests.
func checkRequest(req FetchRequest) (*url.URL, error) {
	u, err := url.Parse(req.URL)
	if err != nil {
		// url.Error repeats the URL, password included: keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("fetching: parsing url: %w: %w", err, errdefs.ErrInvalid)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("fetching %s: only absolute http and https URLs are supported: %w", u.Redacted(), errdefs.ErrInvalid)
	}
	if s := req.ExpectedSHA256; s != "" {
		if _, err := hex.DecodeString(s); err != nil || len(s) != sha256.Size*2 {
			return nil, fmt.Errorf("fetching %s: expected sha256 %q is not 64 hex digits: %w", u.Redacted(), s, errdefs.ErrInvalid)
		}
	}
	return u, nil
}

// start registers and launches a flight; f.mu must be held. The flight's
// context is independent of any caller's: it ends when the last waiter
// leaves, not when the first one does.
func (f *Fetcher) start(rawURL string, u *url.URL) *flight {
	sum := sha256.Sum256([]byte(rawURL))
	ctx, cancel := context.WithCancel(context.Background())
	fl := &flight{
		url:    rawURL,
		key:    hex.EncodeToString(sum[:]),
		done:   make(chan struct{}),
		cancel: cancel,
		log:    f.log.With("url", u.Redacted()),
	}
	f.flights[rawURL] = fl
	go f.run(ctx, fl, u.Redacted())
	return fl
}

// leave removes w from fl unless fl is already finishing, and cancels fl
// when nobody is left. It reports whether w left.
func (f *Fetcher) leave(fl *flight, w *waiter) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl.closed {
		return false
	}
	fl.waiters = slices.DeleteFunc(fl.waiters, func(x *waiter) bool { return x == w })
	if len(fl.waiters) == 0 {
		fl.closed = true
		fl.cancel()
	}
	return true
}

// run downloads, then closes the flight to newcomers and hands the result
// to every waiter.
func (f *Fetcher) run(ctx context.Context, fl *flight, redacted string) {
	defer fl.cancel()
	dl, err := f.download(ctx, fl, redacted)
	f.mu.Lock()
	fl.closed = true
	waiters := slices.Clone(fl.waiters)
	f.mu.Unlock()

	f.finish(ctx, fl, redacted, waiters, dl, err)

	f.mu.Lock()
	delete(f.flights, fl.url)
	f.mu.Unlock()
	close(fl.done)
}

// finish verifies the digest against each waiter's expectation, then
// decompresses, inspects and hands out one file per accepting waiter.
func (f *Fetcher) finish(ctx context.Context, fl *flight, redacted string, waiters []*waiter, dl downloaded, err error) {
	fail := func(ws []*waiter, err error) {
		for _, w := range ws {
			w.err = err
		}
	}
	if err != nil {
		fail(waiters, err)
		return
	}
	if len(waiters) == 0 {
		// Everybody left after the last byte: keep the complete .part for
		// the next Fetch, which will skip the network.
		return
	}
	var accepted []*waiter
	for _, w := range waiters {
		if w.expected != "" && w.expected != dl.sha256 {
			w.err = &ChecksumError{URL: redacted, Expected: w.expected, Actual: dl.sha256}
			continue
		}
		accepted = append(accepted, w)
	}
	if len(accepted) == 0 {
		f.removePart(fl)
		fl.log.Warn("checksum mismatch, download discarded", "sha256", dl.sha256)
		return
	}
	paths, size, comp, info, err := f.materialize(ctx, fl, dl, len(accepted))
	if err != nil {
		fail(accepted, fmt.Errorf("fetching %s: %w", redacted, err))
		return
	}
	for i, w := range accepted {
		w.res = Result{
			Path:        paths[i],
			Size:        size,
			SHA256:      dl.sha256,
			Compressed:  comp,
			Downloaded:  dl.size,
			Transferred: dl.transferred,
			Info:        info,
		}
	}
	fl.log.Info("image fetched", "sha256", dl.sha256, "bytes", dl.size, "transferred", dl.transferred,
		"compression", string(comp), "format", string(info.Format), "virtualSize", info.VirtualSize, "callers", len(accepted))
}

// materialize turns the complete .part into n result files: decompressed
// when compressed, inspected, then renamed/hard-linked to per-caller
// names. The .part and its sidecar are gone afterwards unless ctx ended
// (or the host failed) mid-way, in which case they stay for a retry.
func (f *Fetcher) materialize(ctx context.Context, fl *flight, dl downloaded, n int) (paths []string, size int64, comp Compression, info Info, err error) {
	part := f.partPath(fl.key)
	head := make([]byte, 8)
	pf, err := os.Open(part)
	if err != nil {
		return nil, 0, "", Info{}, fmt.Errorf("opening download: %w", err)
	}
	defer pf.Close()
	hn, _ := pf.ReadAt(head, 0)
	comp = DetectCompression(head[:hn])

	image := part
	if comp != CompressionNone {
		image = filepath.Join(f.cfg.ScratchDir, fl.key+".unpack.tmp")
		if err := f.decompress(ctx, comp, pf, image); err != nil {
			_ = os.Remove(image)
			if errors.Is(err, errdefs.ErrInvalid) {
				f.removePart(fl)
			}
			return nil, 0, "", Info{}, err
		}
		defer os.Remove(image)
	}
	info, size, err = probeFile(image)
	if err != nil {
		if errors.Is(err, errdefs.ErrInvalid) {
			f.removePart(fl)
		}
		return nil, 0, "", Info{}, err
	}
	// Hard links give each caller its own name for the same inode: each
	// removes its own when done, none pulls the file from under another.
	for range n {
		name, err := f.link(image, dl.sha256)
		if err != nil {
			for _, p := range paths {
				_ = os.Remove(p)
			}
			return nil, 0, "", Info{}, err
		}
		paths = append(paths, name)
	}
	if err := syncDir(f.cfg.ScratchDir); err != nil {
		return nil, 0, "", Info{}, err
	}
	f.removePart(fl)
	return paths, size, comp, info, nil
}

// probeFile is Inspect without the path in error messages: the scratch
// name means nothing to the user, the reason does.
func probeFile(path string) (Info, int64, error) {
	fh, err := os.Open(path)
	if err != nil {
		return Info{}, 0, fmt.Errorf("inspecting image: %w", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return Info{}, 0, fmt.Errorf("inspecting image: %w", err)
	}
	info, err := Probe(fh, st.Size())
	return info, st.Size(), err
}

// decompress streams src into a new file at dst, bounded by MaxImageSize,
// and fsyncs it.
func (f *Fetcher) decompress(ctx context.Context, comp Compression, src io.Reader, dst string) error {
	d, ok := f.cfg.Decompressors[comp]
	if !ok {
		return fmt.Errorf("decompressing: no decompressor for %s: %w", comp, errdefs.ErrNotImplemented)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("decompressing: %w", err)
	}
	defer out.Close()
	lw := &limitWriter{w: out, limit: f.cfg.MaxImageSize}
	if err := d.Decompress(ctx, lw, src); err != nil {
		if lw.exceeded {
			return fmt.Errorf("decompressing %s: image exceeds %d bytes: %w", comp, f.cfg.MaxImageSize, errdefs.ErrInvalid)
		}
		return err
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("decompressing: syncing: %w", err)
	}
	return out.Close()
}

// limitWriter fails writes beyond limit bytes.
type limitWriter struct {
	w        io.Writer
	n, limit int64
	exceeded bool
}

var errTooLarge = errors.New("image too large")

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n+int64(len(p)) > l.limit {
		l.exceeded = true
		return 0, errTooLarge
	}
	n, err := l.w.Write(p)
	l.n += int64(n)
	return n, err
}

// link gives image a new unique result name.
func (f *Fetcher) link(image, digest string) (string, error) {
	for range 10 {
		var rnd [8]byte
		_, _ = crand.Read(rnd[:])
		name := filepath.Join(f.cfg.ScratchDir, digest+"-"+hex.EncodeToString(rnd[:])+".img")
		err := os.Link(image, name)
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("linking result: %w", err)
		}
	}
	return "", errors.New("linking result: no unique name found")
}
