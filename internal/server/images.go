package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/images"
	"github.com/vmdhq/vmd/internal/storage"
)

// ImagesPath is the collection path of the golden-image cache.
const ImagesPath = "/apis/" + v1alpha1.ImagesGroupVersion + "/images"

// PullContentType is the media type of a pull response: one JSON document
// per line (v1alpha1.PullEvent), flushed as the download progresses.
const PullContentType = "application/x-ndjson"

// pullProgressInterval is the least time between two progress lines of a
// pull: enough for a smooth bar, few enough not to cost anything.
const pullProgressInterval = 200 * time.Millisecond

// imageRef records the image a request is about for Status.details and
// the metrics' route label.
func imageRef(c echo.Context, name string) {
	c.Set(refKey, objectRef{resource: "images", name: name})
}

// listImages serves GET ImagesPath: the images in the cache, or with
// ?all=true every catalogue image, cached or not.
func (s *Server) listImages(c echo.Context) error {
	imageRef(c, "")
	if s.opts.Images == nil {
		return fmt.Errorf("listing golden images: %w", errdefs.ErrNotImplemented)
	}
	all, err := boolParam(c, "all")
	if err != nil {
		return err
	}
	infos, err := s.opts.Images.List(c.Request().Context())
	if err != nil {
		return fmt.Errorf("listing golden images: %w", err)
	}
	items := make([]v1alpha1.Image, 0, len(infos))
	seen := make(map[string]bool, len(infos))
	for _, info := range infos {
		seen[info.Name] = true
		items = append(items, imageFor(info))
	}
	if all {
		for _, g := range images.GoldenImages() {
			if !seen[g.Name] {
				items = append(items, imageFor(storage.ImageInfo{Name: g.Name, URL: g.URL}))
			}
		}
	}
	slices.SortFunc(items, func(a, b v1alpha1.Image) int { return strings.Compare(a.Name, b.Name) })
	return c.JSON(http.StatusOK, v1alpha1.ImageList{
		TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.ImagesGroupVersion, Kind: "ImageList"},
		Items:    items,
	})
}

// pullImage serves POST ImagesPath/:name/pull: it downloads a golden image
// into the cache (or finds it there) and streams v1alpha1.PullEvent lines.
//
// The pull runs for as long as the request does: a client that goes away,
// or a server shutting down, cancels it (a later pull resumes the partial
// download). Failures before the first progress line are ordinary Status
// responses with their proper code; after it, the status line is sent, so
// the failure travels as the stream's last line.
func (s *Server) pullImage(c echo.Context) error {
	name := c.Param("name")
	imageRef(c, name)
	if s.opts.Images == nil {
		return fmt.Errorf("pulling golden images: %w", errdefs.ErrNotImplemented)
	}
	if _, ok := images.LookupGoldenImage(name); !ok {
		return unknownImage(name)
	}

	ctx, cancel := context.WithCancel(c.Request().Context())
	defer cancel()
	stop := context.AfterFunc(s.draining, cancel)
	defer stop()

	// The progress callback may run on any goroutine (downloads are
	// shared between waiters), so it only publishes the latest figures;
	// every write to the response happens here, in the handler.
	type figures struct{ done, total int64 }
	var latest atomic.Pointer[figures]
	notify := make(chan struct{}, 1)
	progress := func(done, total int64) {
		latest.Store(&figures{done, total})
		select {
		case notify <- struct{}{}:
		default:
		}
	}
	type outcome struct {
		info storage.ImageInfo
		err  error
	}
	result := make(chan outcome, 1)
	go func() {
		info, err := s.opts.Images.Pull(ctx, name, progress)
		result <- outcome{info, err}
	}()

	w := c.Response()
	var (
		started bool
		sent    *figures
	)
	send := func(ev v1alpha1.PullEvent) bool {
		if !started {
			w.Header().Set(echo.HeaderContentType, PullContentType)
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(http.StatusOK)
			started = true
		}
		line, err := json.Marshal(ev)
		if err != nil {
			s.log.Error("encoding pull event", "image", name, "err", err)
			return false
		}
		if _, err := w.Write(append(line, '\n')); err != nil {
			return false // client went away; ctx ends the pull
		}
		w.Flush()
		return true
	}
	// flush sends the latest progress unless it was already sent.
	flush := func() {
		if f := latest.Load(); f != nil && f != sent {
			sent = f
			send(v1alpha1.PullEvent{Done: &f.done, Total: &f.total})
		}
	}

	ticker := time.NewTicker(pullProgressInterval)
	defer ticker.Stop()
	for {
		select {
		case <-notify:
			if !started {
				flush() // the first figures start the stream at once
			}
		case <-ticker.C:
			if started {
				flush()
			}
		case res := <-result:
			if res.err != nil {
				err := fmt.Errorf("pulling golden image %s: %w", name, res.err)
				if !started {
					return err
				}
				st := toStatus(err, objectRef{resource: "images", name: name})
				s.logFailure(c, st, err)
				send(v1alpha1.PullEvent{Error: &st})
				return nil
			}
			if started {
				flush() // the final figures, normally done == total
			}
			img := imageFor(res.info)
			send(v1alpha1.PullEvent{Image: &img})
			return nil
		}
	}
}

// unknownImage is the 404 of a name outside the catalogue; it lists the
// valid names, since a typo is the usual cause.
func unknownImage(name string) error {
	all := images.GoldenImages()
	names := make([]string, len(all))
	for i, g := range all {
		names[i] = g.Name
	}
	return &requestError{
		code:   http.StatusNotFound,
		reason: v1alpha1.StatusReasonNotFound,
		message: fmt.Sprintf("golden image %q not found; known images: %s",
			name, strings.Join(names, ", ")),
	}
}

// imageFor joins the cache's view of an image with its catalogue entry.
func imageFor(info storage.ImageInfo) v1alpha1.Image {
	img := v1alpha1.Image{
		Name:        info.Name,
		URL:         info.URL,
		SHA256:      info.SHA256,
		Path:        info.Path,
		Format:      info.Format,
		VirtualSize: info.VirtualSize,
		ActualSize:  info.ActualSize,
		Ready:       info.Ready,
		Users:       slices.Clone(info.Users),
	}
	if g, ok := images.LookupGoldenImage(info.Name); ok {
		img.OS, img.Version, img.OSFamily, img.Kind = g.OS, g.Version, g.OSFamily, string(g.Kind)
		if img.URL == "" {
			img.URL = g.URL
		}
	}
	return img
}

// boolParam reads an optional boolean query parameter; a value that is
// not a boolean is refused rather than read as false.
func boolParam(c echo.Context, name string) (bool, error) {
	switch v := c.QueryParam(name); v {
	case "", "false", "0":
		return false, nil
	case "true", "1":
		return true, nil
	default:
		return false, badRequest(fmt.Sprintf("invalid %s value %q: want true or false", name, v))
	}
}
