package images

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// served is the server's log entry for one request: what was asked and
// which bytes of the file went out. The tests prove "no byte fetched
// twice" from these entries, not from the client's word.
type served struct {
	rangeHdr string
	ifRange  string
	status   int
	start    int64 // offset of the first body byte sent
	sent     int64 // body bytes sent
}

// imageServer serves one file with ETag, Range and If-Range, and can
// misbehave on cue: fail with a status, cut the connection or stall after
// a number of bytes, ignore Range or If-Range, or change the file.
type imageServer struct {
	t  testing.TB
	mu sync.Mutex
	// Fields below may be changed between requests under mu.
	body          []byte
	etag          string
	lastModified  string
	ignoreRange   bool
	ignoreIfRange bool
	// statuses[i], when non-zero, is returned for request i instead of the file.
	statuses []int
	// cutAt[i], when > 0, is the absolute offset at which request i's
	// connection is closed.
	cutAt []int64
	// stallAt[i], when > 0, is the absolute offset at which request i
	// stops sending until the client goes away.
	stallAt []int64
	// gate, when set, is waited on before any body byte is sent.
	gate chan struct{}
	// before, when set, runs (under mu) at the start of request i.
	before func(i int)
	log    []served
	// active counts handlers still running; requests() waits for them so
	// a test never reads an entry before its handler recorded the bytes
	// sent (the client can have everything while the handler still runs).
	active int
}

func newImageServer(t testing.TB, body []byte) (*imageServer, *httptest.Server) {
	s := &imageServer{t: t, body: body, etag: `"v1"`}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, ts
}

func (s *imageServer) requests() []served {
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		if s.active == 0 || time.Now().After(deadline) {
			defer s.mu.Unlock()
			return append([]served(nil), s.log...)
		}
		s.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
}

func at[T any](list []T, i int) T {
	var zero T
	if i < len(list) {
		return list[i]
	}
	return zero
}

func (s *imageServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.active++
	defer func() {
		s.mu.Lock()
		s.active--
		s.mu.Unlock()
	}()
	i := len(s.log)
	s.log = append(s.log, served{rangeHdr: r.Header.Get("Range"), ifRange: r.Header.Get("If-Range")})
	if s.before != nil {
		s.before(i)
	}
	body, etag, lastMod := s.body, s.etag, s.lastModified
	ignoreRange, ignoreIfRange := s.ignoreRange, s.ignoreIfRange
	status, cut, stall, gate := at(s.statuses, i), at(s.cutAt, i), at(s.stallAt, i), s.gate
	s.mu.Unlock()
	record := func(status int, start, sent int64) {
		s.mu.Lock()
		s.log[i].status, s.log[i].start, s.log[i].sent = status, start, sent
		s.mu.Unlock()
	}
	if status != 0 {
		record(status, 0, 0)
		w.Header().Set("Retry-After", "0")
		http.Error(w, http.StatusText(status), status)
		return
	}
	size := int64(len(body))
	start, code := int64(0), http.StatusOK
	if rh := r.Header.Get("Range"); rh != "" && !ignoreRange {
		ir := r.Header.Get("If-Range")
		if ir == "" || ignoreIfRange || ir == etag || (lastMod != "" && ir == lastMod) {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(rh, "bytes="), "-"), 10, 64)
			if err != nil {
				s.t.Errorf("unexpected Range %q", rh)
				http.Error(w, "bad range", http.StatusBadRequest)
				return
			}
			if n >= size {
				w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
				record(http.StatusRequestedRangeNotSatisfiable, n, 0)
				w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
				return
			}
			start, code = n, http.StatusPartialContent
		}
	}
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	if lastMod != "" {
		w.Header().Set("Last-Modified", lastMod)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(size-start, 10))
	if code == http.StatusPartialContent {
		w.Header().Set("Content-Range", "bytes "+strconv.FormatInt(start, 10)+"-"+strconv.FormatInt(size-1, 10)+"/"+strconv.FormatInt(size, 10))
	}
	w.WriteHeader(code)
	if gate != nil {
		<-gate
	}
	end := size
	if cut > start && cut < size {
		end = cut
	}
	if stall > start && stall < end {
		end = stall
	}
	n, _ := w.Write(body[start:end])
	record(code, start, int64(n))
	switch end {
	case cut:
		// Cut: flush what was written, then drop the connection mid-body.
		http.NewResponseController(w).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			s.t.Errorf("hijacking: %v", err)
			return
		}
		conn.Close()
	case stall:
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	}
}
