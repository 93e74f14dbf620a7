package client_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client"
	"github.com/vmdhq/vmd/internal/client/clienttest"
	"github.com/vmdhq/vmd/internal/errdefs"
)

func uploadDisk(name string, upload bool) *v1alpha1.VMDisk {
	d := &v1alpha1.VMDisk{
		TypeMeta:   v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindVMDisk},
		ObjectMeta: v1alpha1.ObjectMeta{Namespace: "default", Name: name},
		Spec:       v1alpha1.VMDiskSpec{Storage: "1Gi", StorageClass: "local"},
	}
	if upload {
		d.Spec.Source.Upload = &v1alpha1.UploadSource{}
	}
	return d
}

// chunkedReader is a reader whose length http.NewRequest cannot learn,
// handing out small pieces, as a pipe does.
type chunkedReader struct {
	data []byte
}

func (r *chunkedReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 4096)], r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestUpload(t *testing.T) {
	payload := bytes.Repeat([]byte("vmd-upload "), 10000)
	tests := []struct {
		name     string
		disk     string
		ns       string
		body     func() io.Reader
		size     int64
		want     error
		wantData []byte
		wantMsg  string
	}{
		{name: "known size", disk: "up", body: func() io.Reader { return bytes.NewReader(payload) }, size: int64(len(payload)), wantData: payload},
		{name: "unknown size is sent chunked", disk: "up", body: func() io.Reader { return &chunkedReader{data: payload} }, size: -1, wantData: payload},
		{name: "empty image", disk: "up", body: func() io.Reader { return bytes.NewReader(nil) }, size: 0, wantData: []byte{}},
		{name: "default namespace", ns: "", disk: "up", body: func() io.Reader { return bytes.NewReader(payload) }, size: int64(len(payload)), wantData: payload},
		{name: "not an upload disk", disk: "blank", body: func() io.Reader { return bytes.NewReader(payload) }, size: int64(len(payload)),
			want: errdefs.ErrConflict, wantMsg: "does not accept uploads"},
		{name: "missing disk", disk: "nope", body: func() io.Reader { return bytes.NewReader(payload) }, size: -1, want: errdefs.ErrNotFound},
		{name: "slash in the name", disk: "a/b", body: func() io.Reader { return bytes.NewReader(payload) }, size: -1, wantMsg: "cannot contain '/'"},
		{name: "no reader", disk: "up", body: func() io.Reader { return nil }, size: 0, wantMsg: "no data"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := clienttest.NewServer(t)
			srv.Put(uploadDisk("up", true))
			srv.Put(uploadDisk("blank", false))
			c := srv.Client(t)
			res, err := c.Upload(t.Context(), tc.ns, tc.disk, tc.body(), tc.size)
			if tc.want != nil || tc.wantMsg != "" {
				if err == nil || tc.want != nil && !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Fatalf("Upload = %v, want %v containing %q", err, tc.want, tc.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Upload: %v", err)
			}
			if got := srv.Uploaded("default", tc.disk); !bytes.Equal(got, tc.wantData) {
				t.Errorf("server received %d bytes, want %d", len(got), len(tc.wantData))
			}
			if res.BytesReceived != int64(len(tc.wantData)) || !res.Ready || res.Format != "qcow2" || res.SizeBytes != 1<<30 {
				t.Errorf("result = %+v", res)
			}
		})
	}
}

// TestUploadIgnoresRequestTimeout: an upload lasts as long as the
// transfer and conversion, not Options.Timeout.
func TestUploadIgnoresRequestTimeout(t *testing.T) {
	sock := rawSocket(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		time.Sleep(300 * time.Millisecond) // the conversion
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"namespace":"default","name":"up","bytesReceived":`+strconv.FormatInt(n, 10)+`,"ready":true}`)
	})
	c, err := client.New(client.Options{Socket: sock, Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Upload(t.Context(), "default", "up", strings.NewReader("data"), 4)
	if err != nil || res.BytesReceived != 4 {
		t.Fatalf("Upload = %+v, %v; want success after the request timeout", res, err)
	}
}

func TestImages(t *testing.T) {
	srv := clienttest.NewServer(t)
	srv.SetImage(client.Image{Name: "ubuntu-2404", OS: "Ubuntu", Kind: "cloud", Ready: true, ActualSize: 600 << 20, Users: []string{"default/web"}})
	srv.SetImage(client.Image{Name: "debian-12", OS: "Debian", Kind: "cloud", ActualSize: 400 << 20})
	c := srv.Client(t)

	cached, err := c.ListImages(t.Context())
	if err != nil || len(cached) != 1 || cached[0].Name != "ubuntu-2404" || cached[0].Users[0] != "default/web" {
		t.Fatalf("ListImages = %+v, %v; want the cached ubuntu-2404", cached, err)
	}
	all, err := c.ListImages(t.Context(), client.AllImages())
	if err != nil || len(all) != 2 || all[0].Name != "debian-12" {
		t.Fatalf("ListImages(all) = %+v, %v; want both, sorted", all, err)
	}

	var progress [][2]int64
	img, err := c.PullImage(t.Context(), "debian-12", func(done, total int64) { progress = append(progress, [2]int64{done, total}) })
	if err != nil || !img.Ready || img.Name != "debian-12" {
		t.Fatalf("PullImage = %+v, %v", img, err)
	}
	want := [][2]int64{{100 << 20, 400 << 20}, {200 << 20, 400 << 20}, {300 << 20, 400 << 20}, {400 << 20, 400 << 20}}
	if len(progress) != len(want) {
		t.Fatalf("progress = %v, want %v", progress, want)
	}
	for i := range want {
		if progress[i] != want[i] {
			t.Fatalf("progress = %v, want %v", progress, want)
		}
	}
	if _, err := c.PullImage(t.Context(), "debian-12", nil); err != nil {
		t.Errorf("second pull: %v", err)
	}

	if _, err := c.PullImage(t.Context(), "ubunto", nil); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "known images: debian-12, ubuntu-2404") {
		t.Errorf("PullImage(ubunto) = %v, want NotFound listing the names", err)
	}
	if _, err := c.PullImage(t.Context(), "a/b", nil); err == nil {
		t.Error("PullImage(a/b) succeeded")
	}
}

func TestPullStreamErrors(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    error
		wantMsg string
	}{
		{name: "stream cut before the result", body: `{"done":1,"total":2}` + "\n", want: io.ErrUnexpectedEOF, wantMsg: "without a result"},
		{name: "error line", body: `{"done":1,"total":2}` + "\n" + `{"error":{"status":"Failure","message":"checksum mismatch","reason":"Invalid","code":422}}` + "\n",
			want: errdefs.ErrInvalid, wantMsg: "checksum mismatch"},
		{name: "garbage line", body: "<html>\n", wantMsg: "decoding progress"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := rawServer(t, func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/x-ndjson")
				_, _ = io.WriteString(w, tc.body)
			})
			_, err := c.PullImage(t.Context(), "debian-12", nil)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("PullImage = %v, want %v containing %q", err, tc.want, tc.wantMsg)
			}
		})
	}
}
