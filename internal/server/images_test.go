package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/images"
	"github.com/vmdhq/vmd/internal/server"
	"github.com/vmdhq/vmd/internal/storage"
)

// fakeImages is a golden-image cache in memory. Pull reports progress in
// the given steps of total bytes, then stores the image as Ready.
type fakeImages struct {
	total int64
	steps int
	// failAfter, when > 0, fails the pull with err after that many
	// progress reports; with failAfter 0 a non-nil err fails at once.
	failAfter int
	err       error
	// block makes Pull wait for its context to end (cancellation tests).
	block bool

	mu       sync.Mutex
	cache    map[string]storage.ImageInfo
	pulls    []string
	canceled chan struct{}
}

func newFakeImages() *fakeImages {
	return &fakeImages{total: 10 << 20, steps: 5, cache: map[string]storage.ImageInfo{}, canceled: make(chan struct{})}
}

func (f *fakeImages) Pull(ctx context.Context, name string, progress func(done, total int64)) (storage.ImageInfo, error) {
	f.mu.Lock()
	f.pulls = append(f.pulls, name)
	info, cached := f.cache[name]
	block, failAfter, failErr := f.block, f.failAfter, f.err
	f.mu.Unlock()
	if cached {
		return info, nil
	}
	if block {
		<-ctx.Done()
		close(f.canceled)
		return storage.ImageInfo{}, fmt.Errorf("downloading %s: %w", name, ctx.Err())
	}
	if failErr != nil && failAfter == 0 {
		return storage.ImageInfo{}, failErr
	}
	for i := 1; i <= f.steps; i++ {
		if failErr != nil && i > failAfter {
			return storage.ImageInfo{}, failErr
		}
		progress(f.total*int64(i)/int64(f.steps), f.total)
		// Let the server's throttle see more than one burst.
		time.Sleep(5 * time.Millisecond)
	}
	info = storage.ImageInfo{
		Name: name, Path: "/var/lib/vmd/images/" + name + ".qcow2", Format: "qcow2",
		URL: "https://mirror.example/" + name + ".qcow2", SHA256: strings.Repeat("ab", 32),
		VirtualSize: 4 << 30, ActualSize: f.total, Ready: true,
	}
	f.mu.Lock()
	f.cache[name] = info
	f.mu.Unlock()
	return info, nil
}

func (f *fakeImages) List(context.Context) ([]storage.ImageInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]storage.ImageInfo, 0, len(f.cache))
	for _, i := range f.cache {
		out = append(out, i)
	}
	return out, f.err
}

// set changes the fake's behaviour between requests.
func (f *fakeImages) set(failAfter int, err error, block bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failAfter, f.err, f.block = failAfter, err, block
}

func (f *fakeImages) pulled() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.pulls...)
}

const imagesPath = "/apis/vmd.cozystack.io/v1/images"

func TestListImages(t *testing.T) {
	fi := newFakeImages()
	fi.cache["ubuntu-2404"] = storage.ImageInfo{Name: "ubuntu-2404", Format: "qcow2", VirtualSize: 3 << 30,
		ActualSize: 600 << 20, Ready: true, Users: []string{"default/web-root", "team/db-root"}}
	fi.cache["retired"] = storage.ImageInfo{Name: "retired", Ready: true}
	h := start(t, harnessOpts{server: server.Options{Images: fi}})

	tests := []struct {
		name      string
		query     string
		wantCode  int
		wantCount int
	}{
		{name: "cache only", wantCode: http.StatusOK, wantCount: 2},
		{name: "whole catalogue", query: "?all=true", wantCode: http.StatusOK, wantCount: len(images.GoldenImages()) + 1},
		{name: "bad boolean", query: "?all=maybe", wantCode: http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(t, http.MethodGet, imagesPath+tc.query, "", "")
			if r.code != tc.wantCode {
				t.Fatalf("code = %d, want %d: %s", r.code, tc.wantCode, r.body)
			}
			if tc.wantCode != http.StatusOK {
				return
			}
			var l v1alpha1.ImageList
			mustJSON(t, r.body, &l)
			if l.APIVersion != "vmd.cozystack.io/v1" || l.Kind != "ImageList" || len(l.Items) != tc.wantCount {
				t.Fatalf("list = %s %s with %d items, want %d", l.APIVersion, l.Kind, len(l.Items), tc.wantCount)
			}
			byName := map[string]v1alpha1.Image{}
			for i, it := range l.Items {
				if i > 0 && l.Items[i-1].Name >= it.Name {
					t.Errorf("items not sorted: %q before %q", l.Items[i-1].Name, it.Name)
				}
				byName[it.Name] = it
			}
			u := byName["ubuntu-2404"]
			g, _ := images.LookupGoldenImage("ubuntu-2404")
			if u.OS != g.OS || u.Version != g.Version || u.Kind != string(g.Kind) || u.URL != g.URL ||
				!u.Ready || u.ActualSize != 600<<20 || len(u.Users) != 2 {
				t.Errorf("ubuntu-2404 = %+v, want catalogue data joined with the cache's", u)
			}
			if r := byName["retired"]; r.OS != "" || !r.Ready {
				t.Errorf("retired = %+v, want cached without catalogue data", r)
			}
			if tc.query != "" {
				if d := byName["debian-12"]; d.Ready || d.OS != "Debian" || d.Path != "" {
					t.Errorf("debian-12 = %+v, want an uncached catalogue entry", d)
				}
			}
		})
	}
}

// pullLines POSTs a pull and splits the NDJSON answer.
func pullLines(t *testing.T, h *harness, name string) (response, []v1alpha1.PullEvent) {
	t.Helper()
	r := h.do(t, http.MethodPost, imagesPath+"/"+name+"/pull", "", "")
	if r.code != http.StatusOK {
		return r, nil
	}
	if ct := r.header.Get("Content-Type"); ct != server.PullContentType {
		t.Errorf("Content-Type = %q, want %q", ct, server.PullContentType)
	}
	var evs []v1alpha1.PullEvent
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	for sc.Scan() {
		var ev v1alpha1.PullEvent
		mustJSON(t, sc.Bytes(), &ev)
		evs = append(evs, ev)
	}
	return r, evs
}

func TestPullImage(t *testing.T) {
	t.Run("progress then image", func(t *testing.T) {
		fi := newFakeImages()
		h := start(t, harnessOpts{server: server.Options{Images: fi}})
		_, evs := pullLines(t, h, "debian-12")
		if len(evs) < 2 {
			t.Fatalf("got %d lines, want progress lines and the image", len(evs))
		}
		last := evs[len(evs)-1]
		if last.Image == nil || last.Image.Name != "debian-12" || !last.Image.Ready || last.Image.OS != "Debian" {
			t.Fatalf("last line = %+v, want the ready image", last)
		}
		var prev int64 = -1
		for _, ev := range evs[:len(evs)-1] {
			if ev.Done == nil || ev.Total == nil || ev.Image != nil || ev.Error != nil {
				t.Fatalf("progress line %+v has the wrong members", ev)
			}
			if *ev.Done <= prev || *ev.Total != fi.total {
				t.Errorf("progress %d/%d after %d: want increasing done of %d", *ev.Done, *ev.Total, prev, fi.total)
			}
			prev = *ev.Done
		}
		if prev != fi.total {
			t.Errorf("last progress = %d, want the complete %d", prev, fi.total)
		}
	})

	t.Run("cached image answers at once", func(t *testing.T) {
		fi := newFakeImages()
		fi.cache["cirros"] = storage.ImageInfo{Name: "cirros", Ready: true}
		h := start(t, harnessOpts{server: server.Options{Images: fi}})
		_, evs := pullLines(t, h, "cirros")
		if len(evs) != 1 || evs[0].Image == nil || evs[0].Image.Name != "cirros" {
			t.Fatalf("lines = %+v, want only the image", evs)
		}
	})

	failures := []struct {
		name       string
		image      string
		fake       *fakeImages // nil: Options.Images left nil
		wantCode   int
		wantReason string
		wantMsg    string
		wantPulls  int
	}{
		{name: "unknown image lists the valid names", image: "ubunto", fake: newFakeImages(),
			wantCode: http.StatusNotFound, wantReason: "NotFound", wantMsg: `golden image "ubunto" not found; known images: almalinux-10, `},
		{name: "no image cache", image: "debian-12", wantCode: http.StatusNotImplemented, wantReason: "NotImplemented"},
		{name: "failure before any progress is a plain status", image: "debian-12",
			fake: func() *fakeImages {
				f := newFakeImages()
				f.err = fmt.Errorf("mirror down: %w", errdefs.ErrUnavailable)
				return f
			}(),
			wantCode: http.StatusServiceUnavailable, wantReason: "ServiceUnavailable", wantMsg: "pulling golden image debian-12: mirror down", wantPulls: 1},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			opts := server.Options{}
			if tc.fake != nil {
				opts.Images = tc.fake
			}
			h := start(t, harnessOpts{server: opts})
			r, _ := pullLines(t, h, tc.image)
			st := mustStatus(t, r)
			if r.code != tc.wantCode || st.Reason != tc.wantReason || !strings.Contains(st.Message, tc.wantMsg) {
				t.Errorf("pull = %d %s %q, want %d %s containing %q", r.code, st.Reason, st.Message, tc.wantCode, tc.wantReason, tc.wantMsg)
			}
			if tc.fake != nil && len(tc.fake.pulled()) != tc.wantPulls {
				t.Errorf("storage pulls = %v, want %d", tc.fake.pulled(), tc.wantPulls)
			}
		})
	}

	t.Run("failure after progress ends the stream with a status", func(t *testing.T) {
		fi := newFakeImages()
		fi.failAfter, fi.err = 2, fmt.Errorf("checksum mismatch: %w", errdefs.ErrInvalid)
		h := start(t, harnessOpts{server: server.Options{Images: fi}})
		_, evs := pullLines(t, h, "debian-12")
		if len(evs) < 2 {
			t.Fatalf("got %d lines, want progress then an error", len(evs))
		}
		last := evs[len(evs)-1]
		if last.Error == nil || last.Error.Code != http.StatusUnprocessableEntity || !strings.Contains(last.Error.Message, "checksum mismatch") {
			t.Fatalf("last line = %+v, want a 422 status about the checksum", last)
		}
		if d := last.Error.Details; d == nil || d.Kind != "images" || d.Name != "debian-12" {
			t.Errorf("details = %+v, want images/debian-12", d)
		}
	})
}

// TestClientPullImage drives the real client against the server: progress
// reaches the callback, the final image and stream errors come back typed,
// and cancelling the client cancels the pull on the server.
func TestClientPullImage(t *testing.T) {
	fi := newFakeImages()
	h := start(t, harnessOpts{server: server.Options{Images: fi}})
	c, err := client.New(client.Options{Socket: h.socket})
	if err != nil {
		t.Fatal(err)
	}

	var seen []int64
	img, err := c.PullImage(t.Context(), "ubuntu-2404", func(done, total int64) {
		if total != fi.total {
			t.Errorf("progress total = %d, want %d", total, fi.total)
		}
		seen = append(seen, done)
	})
	if err != nil {
		t.Fatalf("PullImage: %v", err)
	}
	if img.Name != "ubuntu-2404" || !img.Ready || img.OS != "Ubuntu" || img.SHA256 == "" || img.VirtualSize != 4<<30 {
		t.Errorf("image = %+v", img)
	}
	if len(seen) == 0 || seen[len(seen)-1] != fi.total {
		t.Errorf("progress = %v, want it to end at %d", seen, fi.total)
	}

	list, err := c.ListImages(t.Context())
	if err != nil || len(list) != 1 || list[0].Name != "ubuntu-2404" || list[0].ActualSize != fi.total {
		t.Fatalf("ListImages = %+v, %v; want the pulled image", list, err)
	}
	all, err := c.ListImages(t.Context(), client.AllImages())
	if err != nil || len(all) != len(images.GoldenImages()) {
		t.Fatalf("ListImages(all) = %d items, %v; want the %d catalogue images", len(all), err, len(images.GoldenImages()))
	}

	if _, err := c.PullImage(t.Context(), "nosuch", nil); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "debian-12") {
		t.Errorf("PullImage(nosuch) = %v, want NotFound listing the names", err)
	}

	fi.set(1, fmt.Errorf("checksum mismatch: %w", errdefs.ErrInvalid), false)
	if _, err := c.PullImage(t.Context(), "debian-12", nil); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Errorf("PullImage after progress failure = %v, want Invalid with the reason", err)
	}

	fi.set(0, nil, true)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := c.PullImage(ctx, "rocky-9", nil)
		errc <- err
	}()
	for !slices.Contains(fi.pulled(), "rocky-9") {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case <-fi.canceled:
	case <-time.After(5 * time.Second):
		t.Fatal("the server's pull was not cancelled with the client")
	}
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled PullImage = %v, want context.Canceled", err)
	}
}

// Every wire type the client mirrors decodes into the client's shape.
func TestImageWireNames(t *testing.T) {
	in := v1alpha1.Image{Name: "n", OS: "o", Version: "v", OSFamily: "linux", Kind: "cloud", URL: "u", SHA256: "s",
		Path: "p", Format: "qcow2", VirtualSize: 1, ActualSize: 2, Ready: true, Users: []string{"a/b"}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out client.Image
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("%+v", out) != fmt.Sprintf("%+v", in) {
		t.Errorf("client decoded %+v from %s, want %+v", out, b, in)
	}
}
