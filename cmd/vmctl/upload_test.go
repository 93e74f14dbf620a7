package main

import (
	"bytes"
	"crypto/rand"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client/clienttest"
)

// uploadDisk is a VMDisk waiting for an upload (or, with upload false, a
// blank disk).
func uploadDisk(ns, name string, upload bool) *v1alpha1.VMDisk {
	d := &v1alpha1.VMDisk{
		TypeMeta:   v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindVMDisk},
		ObjectMeta: v1alpha1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: at(time.Minute), Generation: 1},
		Spec:       v1alpha1.VMDiskSpec{Storage: "1Gi", StorageClass: "local"},
		Status:     v1alpha1.VMDiskStatus{Phase: v1alpha1.DiskPhaseUploading},
	}
	if upload {
		d.Spec.Source.Upload = &v1alpha1.UploadSource{}
	}
	return d
}

// failed is an OnUpload that reports the data as rejected.
func failed(d *v1alpha1.VMDisk, _ []byte) {
	d.Status.Phase = v1alpha1.DiskPhaseFailed
	v1alpha1.SetCondition(&d.Status.Conditions, v1alpha1.Condition{Type: v1alpha1.ConditionReady, Status: v1alpha1.ConditionFalse,
		Reason: "ImportFailed", Message: "qcow2 image has a backing file", ObservedGeneration: d.ObjectMeta.Generation}, testNow)
}

// stillConverting is an OnUpload after which the disk never gets Ready.
func stillConverting(d *v1alpha1.VMDisk, _ []byte) { d.Status.Phase = v1alpha1.DiskPhaseImporting }

func TestUpload(t *testing.T) {
	image := make([]byte, 300<<10)
	if _, err := rand.Read(image); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "disk.qcow2")
	if err := os.WriteFile(path, image, 0o600); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name     string
		args     []string
		stdin    string
		onUpload func(*v1alpha1.VMDisk, []byte)
		// intercept answers the upload request in the daemon's place.
		intercept *v1alpha1.Status
		wantCode  int
		wantOut   string
		wantErr   []string // lines or fragments of stderr, in order
		wantData  []byte   // what the server received (nil: nothing)
		wantNS    string
	}{
		{
			name:    "file with plain progress, then Ready",
			args:    []string{"upload", "vmdisk", "up", "--image-path", path},
			wantOut: "vmdisk/up uploaded (300.0 KiB in 0s)\n",
			wantErr: []string{
				"uploading " + path + " (300.0 KiB) to vmdisk/up\n",
				"vmdisk/up: 300.0 KiB / 300.0 KiB (100.0%)\n",
				"waiting for vmdisk/up to become Ready\n",
			},
			wantData: image,
		},
		{
			name:     "type/name form in another namespace, no wait",
			args:     []string{"upload", "vmd/up", "-n", "team", "--image-path", path, "--no-progress", "--wait=false"},
			onUpload: stillConverting,
			wantOut:  "vmdisk/up uploaded (300.0 KiB in 0s)\n",
			wantErr:  []string{"uploading " + path + " (300.0 KiB) to vmdisk/up\n", "vmdisk/up: 300.0 KiB / 300.0 KiB (100.0%)\n"},
			wantData: image,
			wantNS:   "team",
		},
		{
			name:     "standard input of unknown size",
			args:     []string{"upload", "vmdisk", "up", "--image-path", "-"},
			stdin:    "raw disk bytes",
			wantOut:  "vmdisk/up uploaded (14 B in 0s)\n",
			wantErr:  []string{"uploading standard input (size unknown) to vmdisk/up\n", "vmdisk/up: 14 B\n"},
			wantData: []byte("raw disk bytes"),
		},
		{
			name:     "disk that does not take uploads",
			args:     []string{"upload", "vmdisk", "blank", "--image-path", path},
			wantCode: 1,
			wantErr:  []string{"error: vmdisk/blank does not accept uploads: its source is blank; only a disk created with \"source: {upload: {}}\" waits for data\n"},
		},
		{
			name:     "missing disk",
			args:     []string{"upload", "vmdisk", "nope", "--image-path", path},
			wantCode: 1,
			wantErr:  []string{"Error from server (NotFound): vmdisks \"nope\" not found\n"},
		},
		{
			name:     "missing file",
			args:     []string{"upload", "vmdisk", "up", "--image-path", path + ".missing"},
			wantCode: 1,
			wantErr:  []string{"error: opening image: open " + path + ".missing: no such file or directory\n"},
		},
		{
			name:     "not a disk",
			args:     []string{"upload", "vmi", "web", "--image-path", path},
			wantCode: 1,
			wantErr:  []string{"error: only vmdisks take uploads, not vminstances\n"},
		},
		{
			name:     "no image path",
			args:     []string{"upload", "vmdisk", "up"},
			wantCode: 1,
			wantErr:  []string{`error: required flag(s) "image-path" not set`},
		},
		{
			name: "refused by the daemon",
			args: []string{"upload", "vmdisk", "up", "--image-path", path},
			intercept: clienttest.Status(http.StatusConflict, v1alpha1.StatusReasonConflict,
				"uploading to vmdisk default/up: an upload to this disk is already running: conflict"),
			wantCode: 1,
			wantErr:  []string{"Error from server (Conflict): uploading to vmdisk default/up: an upload to this disk is already running: conflict\n"},
		},
		{
			name:     "rejected after the upload",
			args:     []string{"upload", "vmdisk", "up", "--image-path", path},
			onUpload: failed,
			wantCode: 1,
			wantErr:  []string{"error: vmdisk/up failed after the upload: qcow2 image has a backing file\n"},
			wantData: image,
		},
		{
			name:     "never Ready",
			args:     []string{"upload", "vmdisk", "up", "--image-path", path, "--timeout", "200ms"},
			onUpload: stillConverting,
			wantCode: 1,
			wantErr:  []string{"error: the data of vmdisk/up is stored, but the disk did not become Ready within 200ms (vmctl describe vmd up)\n"},
			wantData: image,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := clienttest.NewServer(t)
			srv.OnUpload = tc.onUpload
			if tc.intercept != nil {
				srv.Intercept = func(r *http.Request) *v1alpha1.Status {
					if strings.HasSuffix(r.URL.Path, "/upload") {
						return tc.intercept
					}
					return nil
				}
			}
			ns := tc.wantNS
			if ns == "" {
				ns = "default"
			}
			srv.Put(uploadDisk(ns, "up", true))
			srv.Put(uploadDisk(ns, "blank", false))
			res := vmctl(t, srv, tc.stdin, tc.args...)
			if res.code != tc.wantCode || res.out != tc.wantOut {
				t.Fatalf("code %d, stdout %q; want %d, %q\nstderr:\n%s", res.code, res.out, tc.wantCode, tc.wantOut, res.err)
			}
			rest := res.err
			for _, want := range tc.wantErr {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Fatalf("stderr lacks %q (in order); got:\n%s", want, res.err)
				}
				rest = rest[i+len(want):]
			}
			got := srv.Uploaded(ns, "up")
			if !bytes.Equal(got, tc.wantData) {
				t.Errorf("server received %d bytes, want %d", len(got), len(tc.wantData))
			}
			if got := srv.Uploaded(ns, "blank"); got != nil {
				t.Errorf("the blank disk received %d bytes", len(got))
			}
		})
	}
}

// TestUploadIgnoresEarlierFailure: a Failed status left by an earlier
// attempt does not end the wait; the new report does.
func TestUploadIgnoresEarlierFailure(t *testing.T) {
	srv := clienttest.NewServer(t)
	d := uploadDisk("default", "up", true)
	failed(d, nil)
	srv.Put(d)
	srv.OnUpload = func(*v1alpha1.VMDisk, []byte) {} // the controller has not looked yet
	path := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(path, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}

	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- vmctlStreams(t.Context(), srv, "", &out, &errOut, "upload", "vmdisk", "up", "--image-path", path)
	}()
	waitForOutput(t, &errOut, "waiting for vmdisk/up to become Ready")
	select {
	case code := <-done:
		t.Fatalf("upload ended (code %d) on the stale failure:\n%s", code, errOut.String())
	case <-time.After(200 * time.Millisecond):
	}
	srv.Mutate(v1alpha1.KindVMDisk, "default", "up", func(o v1alpha1.Object) {
		d := o.(*v1alpha1.VMDisk)
		d.Status.Phase = v1alpha1.DiskPhaseReady
		d.Status.Conditions = []v1alpha1.Condition{{Type: v1alpha1.ConditionReady, Status: v1alpha1.ConditionTrue, ObservedGeneration: 1}}
	})
	if code := <-done; code != 0 || out.String() != "vmdisk/up uploaded (4 B in 0s)\n" {
		t.Fatalf("code %d, stdout %q; stderr:\n%s", code, out.String(), errOut.String())
	}
}

func TestUploadTarget(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		want    string
		wantErr string
	}{
		{name: "type and name", args: []string{"vmdisk", "a"}, want: "a"},
		{name: "short type", args: []string{"vmd", "a"}, want: "a"},
		{name: "slash form", args: []string{"vmdisks/a"}, want: "a"},
		{name: "name only", args: []string{"a"}, wantErr: "upload needs a disk"},
		{name: "empty name", args: []string{"vmdisk/"}, wantErr: "invalid disk name"},
		{name: "unknown type", args: []string{"pods", "a"}, wantErr: "doesn't have a resource type"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := uploadTarget(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("uploadTarget(%q) = %q, %v; want error %q", tc.args, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("uploadTarget(%q) = %q, %v; want %q", tc.args, got, err, tc.want)
			}
		})
	}
}
