package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

// imagesPath is the collection path of the golden-image cache.
const imagesPath = "/apis/" + v1alpha1.ImagesGroupVersion + "/images"

// maxPullLine bounds one line of a pull stream; a line is a progress pair
// or one image description, a few hundred bytes.
const maxPullLine = 1 << 20

// ImageListOption modifies ListImages.
type ImageListOption func(*imageListOptions)

type imageListOptions struct {
	all bool
}

// AllImages lists every image of the catalogue, cached or not, instead of
// only those in the cache.
func AllImages() ImageListOption { return func(o *imageListOptions) { o.all = true } }

// ListImages returns the golden images in the daemon's cache (with
// AllImages, the whole catalogue), sorted by name.
func (c *Client) ListImages(ctx context.Context, opts ...ImageListOption) ([]v1alpha1.Image, error) {
	var o imageListOptions
	for _, f := range opts {
		f(&o)
	}
	var q url.Values
	if o.all {
		q = url.Values{"all": {"true"}}
	}
	var l v1alpha1.ImageList
	if _, _, err := c.call(ctx, request{method: http.MethodGet, path: imagesPath, query: q}, &l); err != nil {
		return nil, err
	}
	return l.Items, nil
}

// PullImage downloads the golden image name into the daemon's cache (a
// no-op when it is already there) and returns it once complete. progress,
// when not nil, receives the downloaded and total bytes (total 0 when
// unknown) as the daemon reports them, a few times a second, on the
// calling goroutine.
//
// The pull lasts as long as the download and is bounded by ctx only;
// cancelling ctx cancels the pull on the daemon (a later pull resumes it).
func (c *Client) PullImage(ctx context.Context, name string, progress func(done, total int64)) (*v1alpha1.Image, error) {
	if name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("pulling image %q: invalid name", name)
	}
	req := request{method: http.MethodPost, path: imagesPath + "/" + name + "/pull", stream: true}
	resp, cancel, err := c.do(ctx, req)
	if err != nil {
		return nil, err
	}
	defer cancel()
	defer resp.Body.Close()

	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), maxPullLine)
	for sc.Scan() {
		line := sc.Bytes()
		if len(strings.TrimSpace(string(line))) == 0 {
			continue
		}
		var ev v1alpha1.PullEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return nil, fmt.Errorf("pulling image %s: decoding progress: %w", name, err)
		}
		switch {
		case ev.Error != nil:
			if ev.Error.Code == 0 {
				ev.Error.Code = http.StatusInternalServerError
			}
			return nil, NewStatusError(*ev.Error)
		case ev.Image != nil:
			return ev.Image, nil
		case ev.Done != nil && progress != nil:
			var total int64
			if ev.Total != nil {
				total = *ev.Total
			}
			progress(*ev.Done, total)
		}
	}
	err = sc.Err()
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		err = ctxErr
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("pulling image %s: the daemon ended the stream without a result: %w", name, err)
	}
	return nil, fmt.Errorf("pulling image %s: %w", name, err)
}

// Image is one golden image as the daemon describes it (kept as a name in
// this package so callers need not import the API package for it).
type Image = v1alpha1.Image

// ImagesGroupVersion is the API group of vmd's host-level resources.
const ImagesGroupVersion = v1alpha1.ImagesGroupVersion
