package server

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/storage"
)

// UploadContentType is the body type of a disk upload: the image bytes as
// they are on the user's disk (any format vmd can sniff, optionally
// compressed). A missing Content-Type is accepted too, because `curl -T`
// sends none.
const UploadContentType = "application/octet-stream"

// DefaultMaxUploadBytes bounds an upload body. It is far above any disk
// image a host would hold and exists only so a runaway stream ends.
const DefaultMaxUploadBytes = 1 << 40 // 1 TiB

// UploadResult is the response to a successful upload: what the volume
// looks like now that it holds the data. The controller still has to see
// the volume and mark the VMDisk Ready; clients wait for that condition.
type UploadResult struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// BytesReceived counts the request body bytes read, before any
	// decompression or conversion.
	BytesReceived int64 `json:"bytesReceived"`
	// Ready is true when the volume holds all its data.
	Ready bool `json:"ready"`
	// Path is the volume file on the host.
	Path string `json:"path,omitempty"`
	// Format is the volume format (qcow2, raw, iso).
	Format string `json:"format,omitempty"`
	// SizeBytes is the volume's virtual size.
	SizeBytes int64 `json:"sizeBytes,omitempty"`
}

// upload serves PUT .../namespaces/:ns/vmdisks/:name/upload: it streams
// the body into the volume of a VMDisk whose source is upload{}.
//
// Every check that needs no body byte (route, content type, declared
// length, the disk and its source) happens before the body is read, so a
// client that sent "Expect: 100-continue" never transmits a refused image.
func (s *Server) upload(c echo.Context) error {
	kind, err := resource(c)
	if err != nil {
		return err
	}
	if kind != v1alpha1.KindVMDisk {
		return &requestError{
			code:    http.StatusNotFound,
			reason:  v1alpha1.StatusReasonNotFound,
			message: fmt.Sprintf("%s have no upload subresource: only vmdisks do", kind.Plural()),
		}
	}
	if s.opts.Uploads == nil {
		return fmt.Errorf("uploading disk data: %w", errdefs.ErrNotImplemented)
	}
	r := c.Request()
	if ct := r.Header.Get(echo.HeaderContentType); ct != "" {
		if mt, _, _ := mime.ParseMediaType(ct); mt != UploadContentType {
			return &requestError{
				code:    http.StatusUnsupportedMediaType,
				reason:  v1alpha1.StatusReasonUnsupportedMediaType,
				message: fmt.Sprintf("unsupported upload type %q: send the image bytes as %s", ct, UploadContentType),
			}
		}
	}
	limit := s.opts.MaxUploadBytes
	if r.ContentLength > limit {
		return &requestError{
			code:    http.StatusRequestEntityTooLarge,
			reason:  v1alpha1.StatusReasonRequestEntityTooLarge,
			message: fmt.Sprintf("upload of %d bytes is larger than the limit of %d bytes", r.ContentLength, limit),
		}
	}

	ns, name := c.Param("ns"), c.Param("name")
	obj, err := s.svc.Get(r.Context(), v1alpha1.KindVMDisk, ns, name)
	if err != nil {
		return err
	}
	disk, ok := obj.(*v1alpha1.VMDisk)
	if !ok {
		return fmt.Errorf("reading vmdisk %s/%s: service returned %T", ns, name, obj)
	}
	if err := uploadable(disk); err != nil {
		return err
	}

	req, err := storage.RequestFor(disk)
	if err != nil {
		return err
	}

	body := &countingReader{r: http.MaxBytesReader(c.Response(), r.Body, limit)}
	size := r.ContentLength // -1 when unknown (chunked), as storage expects
	vol, err := s.opts.Uploads.Upload(r.Context(), storage.UploadRequest{
		Volume: req,
		Body:   body,
		Size:   size,
	})
	if err != nil {
		// A body cut short by the limit is the client's fault whatever
		// storage made of it.
		if mbe := (*http.MaxBytesError)(nil); errors.As(body.err, &mbe) {
			return fmt.Errorf("upload larger than %d bytes: %w", mbe.Limit, mbe)
		}
		return fmt.Errorf("uploading to vmdisk %s/%s: %w", ns, name, err)
	}
	return c.JSON(http.StatusOK, UploadResult{
		Namespace:     ns,
		Name:          name,
		BytesReceived: body.n,
		Ready:         vol.Ready,
		Path:          vol.Path,
		Format:        vol.Format,
		SizeBytes:     vol.SizeBytes,
	})
}

// uploadable refuses disks that must not receive data: those whose source
// is not upload{} and those being deleted.
func uploadable(d *v1alpha1.VMDisk) error {
	id := d.ObjectMeta.Namespace + "/" + d.ObjectMeta.Name
	if d.Spec.Source.Upload == nil {
		return fmt.Errorf("vmdisk %s does not accept uploads: its source is %s, and only a disk with source upload: {} waits for data: %w",
			id, d.Spec.Source.Type(), errdefs.ErrConflict)
	}
	if d.ObjectMeta.DeletionTimestamp != nil {
		return fmt.Errorf("vmdisk %s is being deleted: %w", id, errdefs.ErrConflict)
	}
	return nil
}

// countingReader counts the bytes read and remembers the first error, so
// the handler can tell a body over the limit from a storage failure.
type countingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && !errors.Is(err, io.EOF) && c.err == nil {
		c.err = err
	}
	return n, err
}
