package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/vmdhq/vmd/internal/client"
	"github.com/vmdhq/vmd/internal/client/clienttest"
)

// imageServer has a cached image with users, an interrupted download and
// an image never pulled.
func imageServer(t *testing.T) *clienttest.Server {
	t.Helper()
	srv := clienttest.NewServer(t)
	srv.SetImage(client.Image{Name: "ubuntu-2404", OS: "Ubuntu", Version: "24.04", Kind: "cloud", Format: "qcow2",
		VirtualSize: 3584 << 20, ActualSize: 600 << 20, Ready: true, Users: []string{"default/web-root", "team/db-root"},
		URL: "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img"})
	srv.SetImage(client.Image{Name: "debian-12", OS: "Debian", Version: "12", Kind: "cloud", ActualSize: 100 << 20,
		URL: "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-generic-amd64.qcow2"})
	srv.SetImage(client.Image{Name: "alpine-3.21", OS: "Alpine Linux", Version: "3.21", Kind: "cloud"})
	return srv
}

func TestImageList(t *testing.T) {
	cases := []struct {
		name     string
		srv      func(t *testing.T) *clienttest.Server
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{
			name: "cached only",
			srv:  imageServer,
			args: []string{"image", "list"},
			wantOut: `NAME          OS             KIND    SIZE        CACHED   USERS
ubuntu-2404   Ubuntu 24.04   cloud   600.0 MiB   yes      2
`,
		},
		{
			name: "whole catalogue",
			srv:  imageServer,
			args: []string{"images", "ls", "--all"},
			wantOut: `NAME          OS                  KIND    SIZE        CACHED    USERS
alpine-3.21   Alpine Linux 3.21   cloud   <none>      no        0
debian-12     Debian 12           cloud   100.0 MiB   partial   0
ubuntu-2404   Ubuntu 24.04        cloud   600.0 MiB   yes       2
`,
		},
		{
			name: "wide",
			srv:  imageServer,
			args: []string{"image", "list", "-o", "wide"},
			wantOut: `NAME          OS             KIND    SIZE        CACHED   USERS   VIRTUAL   FORMAT   USED-BY                         URL
ubuntu-2404   Ubuntu 24.04   cloud   600.0 MiB   yes      2       3.5 GiB   qcow2    default/web-root,team/db-root   https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img
`,
		},
		{
			name:    "nothing cached",
			srv:     func(t *testing.T) *clienttest.Server { return clienttest.NewServer(t) },
			args:    []string{"image", "list"},
			wantErr: "No golden images are cached; vmctl image list --all shows the catalogue.\n",
		},
		{
			name:     "bad output",
			srv:      imageServer,
			args:     []string{"image", "list", "-o", "name"},
			wantCode: 1,
			wantErr:  "error: unable to match a printer suitable for the output format \"name\", allowed formats are: json,wide,yaml\n",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := vmctl(t, tc.srv(t), "", tc.args...)
			if res.code != tc.wantCode || res.out != tc.wantOut || res.err != tc.wantErr {
				t.Errorf("code %d\nstdout:\n%s\nstderr:\n%s\nwant code %d\nstdout:\n%s\nstderr:\n%s", res.code, res.out, res.err, tc.wantCode, tc.wantOut, tc.wantErr)
			}
		})
	}
}

func TestImageListJSON(t *testing.T) {
	res := vmctl(t, imageServer(t), "", "image", "list", "--all", "-o", "json")
	if res.code != 0 {
		t.Fatalf("code %d: %s", res.code, res.err)
	}
	var doc struct {
		APIVersion string         `json:"apiVersion"`
		Kind       string         `json:"kind"`
		Items      []client.Image `json:"items"`
	}
	if err := json.Unmarshal([]byte(res.out), &doc); err != nil {
		t.Fatalf("decoding %s: %v", res.out, err)
	}
	if doc.APIVersion != "vmd.cozystack.io/v1" || doc.Kind != "ImageList" || len(doc.Items) != 3 || doc.Items[2].Users[1] != "team/db-root" {
		t.Errorf("document = %+v", doc)
	}
}

func TestImagePull(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  []string // fragments of stderr, in order
	}{
		{
			name:    "download with plain progress",
			args:    []string{"image", "pull", "debian-12"},
			wantOut: "image/debian-12 pulled (100.0 MiB in 0s)\n",
			wantErr: []string{"pulling image/debian-12\n", "image/debian-12: 100.0 MiB / 100.0 MiB (100.0%)\n"},
		},
		{
			name:    "already cached",
			args:    []string{"image", "pull", "ubuntu-2404"},
			wantOut: "image/ubuntu-2404 already cached (600.0 MiB)\n",
		},
		{
			name:     "a bad name does not stop the others",
			args:     []string{"image", "pull", "ubunto", "alpine-3.21"},
			wantCode: 1,
			wantOut:  "image/alpine-3.21 pulled (1.0 MiB in 0s)\n",
			wantErr: []string{
				`Error from server (NotFound): golden image "ubunto" not found; known images: alpine-3.21, debian-12, ubuntu-2404` + "\n",
				"pulling image/alpine-3.21\n",
				"image/alpine-3.21: 1.0 MiB / 1.0 MiB (100.0%)\n",
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := imageServer(t)
			res := vmctl(t, srv, "", tc.args...)
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
			if len(tc.wantErr) == 0 && res.err != "" {
				t.Errorf("stderr = %q, want nothing", res.err)
			}
			for _, name := range tc.args[2:] {
				if img, ok := srv.Image(name); ok && !img.Ready {
					t.Errorf("%s is not cached after the pull", name)
				}
			}
		})
	}
}
