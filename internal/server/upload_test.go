package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/server"
	"github.com/vmdhq/vmd/internal/storage"
)

// fakeUploads is a storage.Uploads that keeps what it was given: the
// request and every body byte, as a real pool would write them.
type fakeUploads struct {
	// err, when set, is returned after the body was read.
	err error

	mu    sync.Mutex
	calls []uploadCall
}

type uploadCall struct {
	req  storage.VolumeRequest
	size int64
	data []byte
	// readErr is the error that ended reading the body, if not EOF.
	readErr error
}

func (f *fakeUploads) Upload(ctx context.Context, req storage.UploadRequest) (storage.Volume, error) {
	data, readErr := io.ReadAll(req.Body)
	f.mu.Lock()
	f.calls = append(f.calls, uploadCall{req: req.Volume, size: req.Size, data: data, readErr: readErr})
	f.mu.Unlock()
	if readErr != nil {
		return storage.Volume{}, fmt.Errorf("writing volume: %w", readErr)
	}
	if f.err != nil {
		return storage.Volume{}, f.err
	}
	return storage.Volume{
		Ready:     true,
		Path:      "/var/lib/vmd/pools/" + req.Volume.Class + "/" + req.Volume.UID + ".qcow2",
		Format:    "qcow2",
		SizeBytes: req.Volume.SizeBytes,
	}, nil
}

func (f *fakeUploads) recorded() []uploadCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]uploadCall(nil), f.calls...)
}

const uploadDiskYAML = `apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: %s
spec:
  source:
    upload: {}
  storage: 2Gi
  storageClass: local
  optical: %t
`

// createDisk stores a disk through the API and returns its uid.
func (h *harness) createDisk(t *testing.T, manifest string) string {
	t.Helper()
	r := h.do(t, http.MethodPost, base+"/namespaces/default/vmdisks", "application/yaml", manifest)
	if r.code != http.StatusCreated {
		t.Fatalf("creating disk: %d %s", r.code, r.body)
	}
	var d diskResp
	mustJSON(t, r.body, &d)
	return d.Metadata.UID
}

// upload sends body to path; chunked hides the length from the server.
func (h *harness) upload(t *testing.T, path, contentType string, body []byte, chunked bool) response {
	t.Helper()
	var rd io.Reader = bytes.NewReader(body)
	if chunked {
		rd = io.MultiReader(rd) // not a type http.NewRequest can measure
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://vmd"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatalf("PUT %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: b}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestUpload(t *testing.T) {
	const disks = base + "/namespaces/default/vmdisks"
	payload := randomBytes(t, 3<<20+17) // several buffers, odd length

	tests := []struct {
		name        string
		uploads     *fakeUploads // nil: Options.Uploads left nil
		maxUpload   int64
		path        string
		contentType string
		body        []byte
		chunked     bool
		wantCode    int
		wantReason  string
		wantMessage string // substring of Status.message
		wantCalls   int
		wantSize    int64 // UploadRequest.Size seen by storage
	}{
		{
			// MaxBodyBytes is 64 KiB: uploads are not manifests.
			name: "happy path with length", uploads: &fakeUploads{}, path: disks + "/up/upload",
			contentType: "application/octet-stream", body: payload,
			wantCode: http.StatusOK, wantCalls: 1, wantSize: int64(len(payload)),
		},
		{
			name: "chunked body has unknown size", uploads: &fakeUploads{}, path: disks + "/up/upload",
			body: payload, chunked: true, wantCode: http.StatusOK, wantCalls: 1, wantSize: -1,
		},
		{
			name: "disk without upload source", uploads: &fakeUploads{}, path: disks + "/blank/upload",
			body: payload, wantCode: http.StatusConflict, wantReason: "Conflict",
			wantMessage: "vmdisk default/blank does not accept uploads: its source is blank",
		},
		{
			name: "missing disk", uploads: &fakeUploads{}, path: disks + "/nope/upload",
			body: payload, wantCode: http.StatusNotFound, wantReason: "NotFound",
		},
		{
			name: "no upload backend", path: disks + "/up/upload", body: payload,
			wantCode: http.StatusNotImplemented, wantReason: "NotImplemented",
		},
		{
			name: "vminstances have no upload", uploads: &fakeUploads{}, path: base + "/namespaces/default/vminstances/up/upload",
			body: payload, wantCode: http.StatusNotFound, wantMessage: "only vmdisks do",
		},
		{
			name: "wrong content type", uploads: &fakeUploads{}, path: disks + "/up/upload",
			contentType: "application/yaml", body: payload, wantCode: http.StatusUnsupportedMediaType,
			wantReason: "UnsupportedMediaType",
		},
		{
			name: "declared length over the limit", uploads: &fakeUploads{}, maxUpload: 1 << 20,
			path: disks + "/up/upload", body: payload, wantCode: http.StatusRequestEntityTooLarge,
			wantReason: "RequestEntityTooLarge",
		},
		{
			name: "chunked body over the limit", uploads: &fakeUploads{}, maxUpload: 1 << 20,
			path: disks + "/up/upload", body: payload, chunked: true,
			wantCode: http.StatusRequestEntityTooLarge, wantReason: "RequestEntityTooLarge",
			wantCalls: 1, wantSize: -1,
		},
		{
			name: "upload already running", uploads: &fakeUploads{err: fmt.Errorf("upload of default/up: already running: %w", errdefs.ErrConflict)},
			path: disks + "/up/upload", body: payload, wantCode: http.StatusConflict, wantReason: "Conflict",
			wantMessage: "already running", wantCalls: 1, wantSize: int64(len(payload)),
		},
		{
			name: "bad image data", uploads: &fakeUploads{err: fmt.Errorf("qcow2 has a backing file: %w", errdefs.ErrInvalid)},
			path: disks + "/up/upload", body: payload, wantCode: http.StatusUnprocessableEntity, wantReason: "Invalid",
			wantMessage: "uploading to vmdisk default/up: qcow2 has a backing file", wantCalls: 1, wantSize: int64(len(payload)),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := server.Options{MaxBodyBytes: 64 << 10, MaxUploadBytes: tc.maxUpload}
			if tc.uploads != nil {
				opts.Uploads = tc.uploads
			}
			h := start(t, harnessOpts{server: opts})
			uid := h.createDisk(t, fmt.Sprintf(uploadDiskYAML, "up", false))
			h.createDisk(t, diskManifest("blank", "1Gi"))

			r := h.upload(t, tc.path, tc.contentType, tc.body, tc.chunked)
			if r.code != tc.wantCode {
				t.Fatalf("code = %d, want %d; body %s", r.code, tc.wantCode, r.body)
			}
			var calls []uploadCall
			if tc.uploads != nil {
				calls = tc.uploads.recorded()
			}
			if len(calls) != tc.wantCalls {
				t.Fatalf("storage saw %d uploads, want %d", len(calls), tc.wantCalls)
			}
			if tc.wantCalls > 0 && calls[0].size != tc.wantSize {
				t.Errorf("UploadRequest.Size = %d, want %d", calls[0].size, tc.wantSize)
			}
			if tc.wantCode != http.StatusOK {
				st := mustStatus(t, r)
				if st.Code != tc.wantCode || tc.wantReason != "" && st.Reason != tc.wantReason {
					t.Errorf("status = %d %s, want %d %s", st.Code, st.Reason, tc.wantCode, tc.wantReason)
				}
				if !strings.Contains(st.Message, tc.wantMessage) {
					t.Errorf("message = %q, want it to contain %q", st.Message, tc.wantMessage)
				}
				return
			}

			// Success: the bytes arrived intact, the request is the
			// controller's, and the answer describes the volume.
			got := calls[0]
			if !bytes.Equal(got.data, tc.body) {
				t.Errorf("storage received %d bytes differing from the %d sent", len(got.data), len(tc.body))
			}
			gotReq, gotSrc := got.req, got.req.Source
			gotReq.Source = v1alpha1.DiskSource{}
			want := storage.VolumeRequest{UID: uid, Namespace: "default", Name: "up", Class: "local", SizeBytes: 2 << 30}
			if gotReq != want || !slices.Equal(gotSrc.Types(), []v1alpha1.SourceType{v1alpha1.SourceUpload}) {
				t.Errorf("VolumeRequest = %+v (source %v), want %+v (source upload)", gotReq, gotSrc.Types(), want)
			}
			var res server.UploadResult
			mustJSON(t, r.body, &res)
			wantRes := server.UploadResult{
				Namespace: "default", Name: "up", BytesReceived: int64(len(tc.body)), Ready: true,
				Path: "/var/lib/vmd/pools/local/" + uid + ".qcow2", Format: "qcow2", SizeBytes: 2 << 30,
			}
			if res != wantRes {
				t.Errorf("result = %+v, want %+v", res, wantRes)
			}
		})
	}
}

func TestUploadOpticalAndDeleting(t *testing.T) {
	up := &fakeUploads{}
	h := start(t, harnessOpts{server: server.Options{Uploads: up}})
	h.createDisk(t, fmt.Sprintf(uploadDiskYAML, "iso", true))
	if r := h.upload(t, base+"/namespaces/default/vmdisks/iso/upload", "", []byte("CD001"), false); r.code != http.StatusOK {
		t.Fatalf("upload = %d %s", r.code, r.body)
	}
	if calls := up.recorded(); len(calls) != 1 || !calls[0].req.Optical {
		t.Fatalf("storage saw %+v, want one optical request", calls)
	}

	// A disk being deleted (held by its finalizer) takes no more data.
	if r := h.do(t, http.MethodDelete, base+"/namespaces/default/vmdisks/iso", "", ""); r.code != http.StatusOK {
		t.Fatalf("delete = %d %s", r.code, r.body)
	}
	r := h.upload(t, base+"/namespaces/default/vmdisks/iso/upload", "", []byte("CD001"), false)
	if r.code != http.StatusConflict || !strings.Contains(mustStatus(t, r).Message, "being deleted") {
		t.Fatalf("upload to a deleting disk = %d %s, want 409 being deleted", r.code, r.body)
	}
}

// trackingReader records whether anything read it.
type trackingReader struct {
	r    io.Reader
	mu   sync.Mutex
	read int64
}

func (t *trackingReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.mu.Lock()
	t.read += int64(n)
	t.mu.Unlock()
	return n, err
}

func (t *trackingReader) bytesRead() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.read
}

// TestClientUpload drives the real client against the real server: the
// wire format matches, and a refused upload is refused before its body
// is sent (100-continue).
func TestClientUpload(t *testing.T) {
	up := &fakeUploads{}
	h := start(t, harnessOpts{server: server.Options{Uploads: up}})
	uid := h.createDisk(t, fmt.Sprintf(uploadDiskYAML, "up", false))
	h.createDisk(t, diskManifest("blank", "1Gi"))
	c, err := client.New(client.Options{Socket: h.socket})
	if err != nil {
		t.Fatal(err)
	}
	payload := randomBytes(t, 1<<20)

	res, err := c.Upload(t.Context(), "default", "up", bytes.NewReader(payload), int64(len(payload)))
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	want := client.UploadResult{Namespace: "default", Name: "up", BytesReceived: int64(len(payload)), Ready: true,
		Path: "/var/lib/vmd/pools/local/" + uid + ".qcow2", Format: "qcow2", SizeBytes: 2 << 30}
	if *res != want {
		t.Errorf("Upload = %+v, want %+v", *res, want)
	}
	if calls := up.recorded(); len(calls) != 1 || !bytes.Equal(calls[0].data, payload) {
		t.Fatalf("storage did not receive the payload intact")
	}

	refused := &trackingReader{r: bytes.NewReader(payload)}
	_, err = c.Upload(t.Context(), "default", "blank", refused, int64(len(payload)))
	if !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), "does not accept uploads") {
		t.Fatalf("Upload to a blank disk: %v, want a conflict explaining why", err)
	}
	if n := refused.bytesRead(); n != 0 {
		t.Errorf("client read %d bytes of a refused upload, want 0 (100-continue)", n)
	}
	if _, err := c.Upload(t.Context(), "default", "nope", bytes.NewReader(payload), -1); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Upload to a missing disk: %v, want NotFound", err)
	}
}

// Ensure the result type stays plain data the client mirrors field for
// field.
func TestUploadResultWireNames(t *testing.T) {
	b, err := json.Marshal(server.UploadResult{Namespace: "n", Name: "d", BytesReceived: 1, Ready: true, Path: "p", Format: "qcow2", SizeBytes: 2})
	if err != nil {
		t.Fatal(err)
	}
	var c client.UploadResult
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	want := client.UploadResult{Namespace: "n", Name: "d", BytesReceived: 1, Ready: true, Path: "p", Format: "qcow2", SizeBytes: 2}
	if c != want {
		t.Errorf("client decoded %+v from %s, want %+v", c, b, want)
	}
}
