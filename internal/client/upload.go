package client

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

// UploadContentType is the body type of a disk upload.
const UploadContentType = "application/octet-stream"

// UploadResult is the server's answer to a finished upload: the volume
// now holding the data. The VMDisk becomes Ready once the controller has
// seen it; wait for that condition rather than trusting Ready here.
type UploadResult struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// BytesReceived is what the server read of the body.
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

// Upload streams the image in r (size bytes, or negative when unknown) into
// the VMDisk namespace/name, whose source must be upload{}. The server
// sniffs, checks and converts the data as for an http import, and answers
// only once it is all stored, so the call lasts as long as the transfer
// plus the conversion: it is bounded by ctx only, never by
// Options.Timeout.
//
// The request asks for "100 Continue", so a refusal (no such disk, a disk
// that does not take uploads, an upload already running) comes back before
// r is read. r is not closed. To show progress, wrap r in a counting
// reader.
func (c *Client) Upload(ctx context.Context, namespace, name string, r io.Reader, size int64) (*UploadResult, error) {
	if namespace == "" {
		namespace = v1alpha1.DefaultNamespace
	}
	path, err := resourcePath(v1alpha1.KindVMDisk, namespace, name)
	if err != nil {
		return nil, err
	}
	if r == nil {
		return nil, fmt.Errorf("uploading to vmdisk %s/%s: no data", namespace, name)
	}
	var res UploadResult
	_, _, err = c.call(ctx, request{
		method:      http.MethodPut,
		path:        path + "/upload",
		contentType: UploadContentType,
		upload:      r,
		uploadSize:  size,
		stream:      true,
	}, &res)
	if err != nil {
		return nil, err
	}
	return &res, nil
}
