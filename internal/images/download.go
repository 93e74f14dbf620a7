package images

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// This file holds the network side of a download: attempts, retries,
// HTTP semantics (Range, If-Range, Content-Range) and progress.

// RetryPolicy is how a Fetcher retries transient failures (network errors,
// HTTP 5xx, 408, 429). Back-off is exponential with jitter. The count is of
// consecutive attempts that made no progress: a connection that drops
// every 100 MiB of a 10 GiB image still finishes, one that never delivers
// a byte gives up after MaxAttempts.
type RetryPolicy struct {
	// MaxAttempts is the number of consecutive unproductive attempts
	// before Fetch returns the last error; default 5.
	MaxAttempts int
	// InitialBackoff is the delay after the first failure; default 1s.
	InitialBackoff time.Duration
	// MaxBackoff caps the delay, including a server's Retry-After;
	// default 1m.
	MaxBackoff time.Duration
}

// delay is the wait after the n-th consecutive failure (n >= 1): the
// exponential step with "equal jitter" (half fixed, half random), so
// several hosts retrying one mirror do not stay in lock-step.
func (p RetryPolicy) delay(n int, retryAfter time.Duration) time.Duration {
	d := p.InitialBackoff
	for i := 1; i < n && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	if half := int64(d / 2); half > 0 {
		d = time.Duration(half + rand.Int64N(half+1))
	}
	return min(max(d, retryAfter), p.MaxBackoff)
}

// attemptErr classifies why an attempt ended.
type attemptErr struct {
	err        error
	kind       attemptKind
	retryAfter time.Duration
}

type attemptKind int

const (
	// transient: retry after back-off, resuming.
	transient attemptKind = iota
	// permanent: the request is wrong (4xx, too large); give up and drop
	// the partial file.
	permanent
	// restart: the partial file cannot be resumed; discard it and retry at
	// once.
	restart
	// local: the host failed (disk full, I/O error); give up, keep what
	// was saved.
	local
)

func (e *attemptErr) Error() string { return e.err.Error() }
func (e *attemptErr) Unwrap() error { return e.err }

// download runs attempts until the .part is complete or the retry policy
// gives up.
func (f *Fetcher) download(ctx context.Context, fl *flight, redacted string) (downloaded, error) {
	st, err := f.openPart(fl)
	if err != nil {
		return downloaded{}, fmt.Errorf("fetching %s: %w", redacted, err)
	}
	defer st.file.Close()
	if err := st.restoreHash(); err != nil {
		return downloaded{}, fmt.Errorf("fetching %s: %w", redacted, err)
	}
	prog := &progress{f: f, fl: fl}
	var transferred int64
	failures, restarts := 0, 0
	for !st.Complete {
		before := transferred
		err := f.attempt(ctx, fl, st, prog, &transferred)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			if serr := f.save(fl, st); serr != nil {
				fl.log.Warn("saving partial download", "error", serr)
			}
			return downloaded{}, fmt.Errorf("fetching %s: %w", redacted, ctx.Err())
		}
		var ae *attemptErr
		if !errors.As(err, &ae) {
			ae = &attemptErr{err: err, kind: transient}
		}
		switch ae.kind {
		case permanent:
			f.removePart(fl)
			return downloaded{}, ae.err
		case local:
			return downloaded{}, fmt.Errorf("fetching %s: %w", redacted, ae.err)
		case restart:
			// A server that never lets us resume must not loop forever.
			if restarts++; restarts > f.cfg.Retry.MaxAttempts {
				return downloaded{}, fmt.Errorf("fetching %s: %w: %w", redacted, ae.err, errdefs.ErrUnavailable)
			}
			fl.log.Info("restarting download", "reason", ae.err)
			if err := f.reset(fl, st); err != nil {
				return downloaded{}, fmt.Errorf("fetching %s: %w", redacted, err)
			}
			continue
		}
		if err := f.save(fl, st); err != nil {
			return downloaded{}, fmt.Errorf("fetching %s: %w", redacted, err)
		}
		if transferred > before {
			failures = 0
		}
		failures++
		if failures >= f.cfg.Retry.MaxAttempts {
			return downloaded{}, fmt.Errorf("fetching %s: giving up after %d attempts: %w: %w", redacted, failures, ae.err, errdefs.ErrUnavailable)
		}
		d := f.cfg.Retry.delay(failures, ae.retryAfter)
		fl.log.Info("download interrupted, retrying", "error", ae.err, "bytes", st.Written, "in", d)
		prog.retrying(ae.err, d)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return downloaded{}, fmt.Errorf("fetching %s: %w", redacted, ctx.Err())
		}
	}
	prog.emit(st.Written, st.Total, true)
	return downloaded{sha256: hex.EncodeToString(st.hash.Sum(nil)), size: st.Written, transferred: transferred}, nil
}

// attempt performs one HTTP request and streams its body into st. It
// returns nil once the download is complete.
func (f *Fetcher) attempt(ctx context.Context, fl *flight, st *partState, prog *progress, transferred *int64) error {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stalled atomic.Bool
	watchdog := time.AfterFunc(f.cfg.StallTimeout, func() { stalled.Store(true); cancel() })
	defer watchdog.Stop()

	req, err := http.NewRequestWithContext(actx, http.MethodGet, fl.url, nil)
	if err != nil {
		return &attemptErr{err: fmt.Errorf("building request: %w: %w", err, errdefs.ErrInvalid), kind: permanent}
	}
	// identity: the transport would otherwise gunzip transparently, and
	// offsets and digests are of the bytes served, not of a transfer
	// encoding.
	req.Header.Set("Accept-Encoding", "identity")
	req.Header.Set("User-Agent", f.cfg.UserAgent)
	resuming := false
	if st.Written > 0 {
		if v := st.validator(); v != "" {
			req.Header.Set("Range", "bytes="+strconv.FormatInt(st.Written, 10)+"-")
			req.Header.Set("If-Range", v)
			resuming = true
		} else {
			return &attemptErr{err: errors.New("server gave no validator (ETag or Last-Modified) to resume against"), kind: restart}
		}
	}
	resp, err := f.client.Do(req)
	if err != nil {
		if stalled.Load() {
			err = fmt.Errorf("no response within %s", f.cfg.StallTimeout)
		}
		return &attemptErr{err: err, kind: transient}
	}
	defer resp.Body.Close()

	switch resp.StatusCode {
	case http.StatusOK:
		if st.Written > 0 {
			// The server ignored Range, or If-Range failed because the
			// file changed: this body is the whole (new) file.
			fl.log.Info("server sent the whole file, restarting download", "had", st.Written)
			if err := f.reset(fl, st); err != nil {
				return &attemptErr{err: err, kind: local}
			}
		}
		st.ETag, st.LastModified = resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
		st.Total = resp.ContentLength
	case http.StatusPartialContent:
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		switch {
		case !resuming || !ok || start != st.Written:
			return &attemptErr{err: fmt.Errorf("unexpected Content-Range %q for offset %d", resp.Header.Get("Content-Range"), st.Written), kind: restart}
		case changed(st.ETag, resp.Header.Get("ETag")) || changed(st.LastModified, resp.Header.Get("Last-Modified")):
			return &attemptErr{err: errors.New("file changed on the server since the partial download"), kind: restart}
		}
		st.Total = total
	case http.StatusRequestedRangeNotSatisfiable:
		// Our offset is the end of the file: it was complete already.
		if _, total, ok := parseContentRange(resp.Header.Get("Content-Range")); ok && resuming && total == st.Written {
			st.Total, st.Complete = total, true
			return f.savedOrLocal(fl, st)
		}
		return &attemptErr{err: fmt.Errorf("range %d- not satisfiable", st.Written), kind: restart}
	default:
		herr := &HTTPError{URL: redactURL(fl.url), StatusCode: resp.StatusCode, Status: resp.Status}
		if herr.permanent() {
			return &attemptErr{err: herr, kind: permanent}
		}
		return &attemptErr{err: herr, kind: transient, retryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	}
	if st.Total > f.cfg.MaxImageSize {
		return &attemptErr{err: fmt.Errorf("fetching %s: image is %d bytes, more than the %d allowed: %w", redactURL(fl.url), st.Total, f.cfg.MaxImageSize, errdefs.ErrInvalid), kind: permanent}
	}

	buf := make([]byte, 1<<20)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			watchdog.Reset(f.cfg.StallTimeout)
			if st.Written+int64(n) > f.cfg.MaxImageSize {
				return &attemptErr{err: fmt.Errorf("fetching %s: image exceeds %d bytes: %w", redactURL(fl.url), f.cfg.MaxImageSize, errdefs.ErrInvalid), kind: permanent}
			}
			if _, err := st.file.Write(buf[:n]); err != nil {
				return &attemptErr{err: fmt.Errorf("writing partial download: %w", err), kind: local}
			}
			st.hash.Write(buf[:n])
			st.Written += int64(n)
			*transferred += int64(n)
			prog.emit(st.Written, st.Total, false)
			if st.Written-st.checkpoint >= f.cfg.CheckpointBytes {
				if err := f.save(fl, st); err != nil {
					return &attemptErr{err: err, kind: local}
				}
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			if stalled.Load() {
				rerr = fmt.Errorf("no data for %s", f.cfg.StallTimeout)
			}
			return &attemptErr{err: fmt.Errorf("reading body: %w", rerr), kind: transient}
		}
	}
	if st.Total >= 0 && st.Written != st.Total {
		return &attemptErr{err: fmt.Errorf("body ended at %d of %d bytes", st.Written, st.Total), kind: transient}
	}
	st.Total, st.Complete = st.Written, true
	return f.savedOrLocal(fl, st)
}

func (f *Fetcher) savedOrLocal(fl *flight, st *partState) error {
	if err := f.save(fl, st); err != nil {
		return &attemptErr{err: err, kind: local}
	}
	return nil
}

// changed reports a validator the server now sends that differs from the
// one we saved.
func changed(saved, now string) bool { return saved != "" && now != "" && saved != now }

// parseContentRange parses "bytes first-last/total" and "bytes */total";
// total is -1 for "*". first is -1 for the unsatisfied form.
func parseContentRange(s string) (first, total int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		t, err := strconv.ParseInt(tot, 10, 64)
		if err != nil || t < 0 {
			return 0, 0, false
		}
		total = t
	}
	if rng == "*" {
		return -1, total, total >= 0
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || first < 0 || last < first || (total >= 0 && last >= total) {
		return 0, 0, false
	}
	return first, total, true
}

// retryAfter parses a Retry-After header (seconds or HTTP date).
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// redactURL hides a password in the URL for messages and logs.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparsable url>"
	}
	return u.Redacted()
}

// progress throttles progress reports for a flight and fans them out to
// the Fetcher's observer and every waiter.
type progress struct {
	f    *Fetcher
	fl   *flight
	last time.Time
}

// retrying tells every waiter of the flight why the download paused.
func (p *progress) retrying(err error, wait time.Duration) {
	p.f.mu.Lock()
	var fns []func(error, time.Duration)
	for _, w := range p.fl.waiters {
		if w.retrying != nil {
			fns = append(fns, w.retrying)
		}
	}
	p.f.mu.Unlock()
	for _, fn := range fns {
		fn(err, wait)
	}
}

func (p *progress) emit(done, total int64, final bool) {
	now := time.Now()
	if !final && now.Sub(p.last) < p.f.cfg.ProgressInterval {
		return
	}
	p.last = now
	p.f.mu.Lock()
	var fns []ProgressFunc
	for _, w := range p.fl.waiters {
		if w.progress != nil {
			fns = append(fns, w.progress)
		}
	}
	p.f.mu.Unlock()
	if p.f.cfg.Progress != nil {
		p.f.cfg.Progress(redactURL(p.fl.url), done, total)
	}
	for _, fn := range fns {
		fn(done, total)
	}
}
