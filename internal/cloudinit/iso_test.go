package cloudinit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// wantFiles is what the guest must find on the volume for s.
func wantFiles(t *testing.T, s Seed) map[string][]byte {
	t.Helper()
	docs, err := s.documents()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]byte{}
	for _, d := range docs {
		m[d.name] = d.data
	}
	return m
}

func checkFiles(t *testing.T, got, want map[string][]byte) {
	t.Helper()
	if len(got) != len(want) {
		names := make([]string, 0, len(got))
		for n := range got {
			names = append(names, n)
		}
		t.Fatalf("image holds %q, want %d files", names, len(want))
	}
	for name, data := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("image lacks %s", name)
			continue
		}
		if !bytes.Equal(g, data) {
			t.Errorf("%s = %q, want %q", name, g, data)
		}
	}
}

func TestISORoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		seed  Seed
		names []string
	}{
		{name: "keys only", seed: goldenSeeds()[0].seed, names: []string{MetaDataFile, UserDataFile}},
		{name: "with network-config", seed: goldenSeeds()[3].seed, names: []string{MetaDataFile, UserDataFile, NetworkConfigFile}},
		{name: "empty user-data still present", seed: Seed{InstanceID: "x", Network: labNetwork()}, names: []string{MetaDataFile, UserDataFile, NetworkConfigFile}},
		{
			// 5000 bytes spans three 2048-byte sectors; the tail sector is
			// padded, and the reader must stop at the file length.
			name: "user-data over several sectors", seed: Seed{InstanceID: "x", UserData: "#cloud-config\n#" + strings.Repeat("0123456789", 500)},
			names: []string{MetaDataFile, UserDataFile},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteISO(&buf, tt.seed); err != nil {
				t.Fatal(err)
			}
			if buf.Len()%2048 != 0 {
				t.Errorf("image is %d bytes, not whole 2048-byte sectors", buf.Len())
			}
			// busybox volume_id needs 0x11000 bytes to recognise any
			// filesystem (see padSectors).
			if buf.Len() < 0x11000 {
				t.Errorf("image is %d bytes; busybox findfs ignores devices under %d", buf.Len(), 0x11000)
			}
			files, label, err := ReadISO(bytes.NewReader(buf.Bytes()))
			if err != nil {
				t.Fatal(err)
			}
			if label != VolumeLabel {
				t.Errorf("label = %q, want %q", label, VolumeLabel)
			}
			for _, n := range tt.names {
				if _, ok := files[n]; !ok {
					t.Errorf("image lacks %s (has %d files)", n, len(files))
				}
			}
			checkFiles(t, files, wantFiles(t, tt.seed))
		})
	}
}

func TestWriteISORejectsInvalidNetwork(t *testing.T) {
	s := Seed{InstanceID: "x", Network: &NetworkConfig{}}
	var buf bytes.Buffer
	if err := WriteISO(&buf, s); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("WriteISO() = %v, want ErrInvalid", err)
	}
	if buf.Len() != 0 {
		t.Errorf("%d bytes written for an invalid seed", buf.Len())
	}
}

func TestWriteISOFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vm-instance-web.iso")

	first := goldenSeeds()[0].seed
	if err := WriteISOFile(path, first); err != nil {
		t.Fatal(err)
	}
	second := goldenSeeds()[3].seed
	if err := WriteISOFile(path, second); err != nil {
		t.Fatalf("overwriting: %v", err)
	}

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600: user-data may hold secrets; libvirt chowns it to qemu's user", fi.Mode().Perm())
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files, label, err := ReadISO(f)
	if err != nil {
		t.Fatal(err)
	}
	if label != VolumeLabel {
		t.Errorf("label = %q", label)
	}
	checkFiles(t, files, wantFiles(t, second))
	assertOnlyFiles(t, dir, "vm-instance-web.iso")
}

func TestWriteISOFileFailureLeavesNothing(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string) (path string)
		seed    Seed
		wantErr error
		keep    []string
	}{
		{
			name:    "invalid seed creates no file",
			prepare: func(_ *testing.T, dir string) string { return filepath.Join(dir, "seed.iso") },
			seed:    Seed{InstanceID: "x", Network: &NetworkConfig{}},
			wantErr: errdefs.ErrInvalid,
		},
		{
			name: "rename onto a directory keeps the directory and drops the temp file",
			prepare: func(t *testing.T, dir string) string {
				p := filepath.Join(dir, "seed.iso")
				if err := os.Mkdir(p, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(p, "x"), nil, 0o644); err != nil {
					t.Fatal(err)
				}
				return p
			},
			seed: Seed{InstanceID: "x"},
			keep: []string{"seed.iso"},
		},
		{
			name:    "missing directory",
			prepare: func(_ *testing.T, dir string) string { return filepath.Join(dir, "no", "seed.iso") },
			seed:    Seed{InstanceID: "x"},
			wantErr: os.ErrNotExist,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			err := WriteISOFile(tt.prepare(t, dir), tt.seed)
			if err == nil {
				t.Fatal("WriteISOFile succeeded")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error = %v, want %v", err, tt.wantErr)
			}
			assertOnlyFiles(t, dir, tt.keep...)
		})
	}
}

// assertOnlyFiles fails when dir holds anything but names (temp files).
func assertOnlyFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("directory holds %q, want %q", got, names)
	}
}

func TestReadISORejectsGarbage(t *testing.T) {
	var valid bytes.Buffer
	if err := WriteISO(&valid, Seed{InstanceID: "x", UserData: strings.Repeat("u", 3000)}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data []byte
	}{
		{name: "empty", data: nil},
		{name: "zeros", data: make([]byte, 64<<10)},
		{name: "not an iso", data: bytes.Repeat([]byte("not an iso "), 8000)},
		{name: "truncated inside a file", data: valid.Bytes()[:valid.Len()-(padSectors+1)*sectorSize]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files, _, err := ReadISO(bytes.NewReader(tt.data))
			if err == nil {
				t.Fatalf("ReadISO accepted it and returned %d files", len(files))
			}
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("error = %v, want one matching ErrInvalid", err)
			}
		})
	}
}
