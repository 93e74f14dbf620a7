package images

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// needTool skips the test when a program the fixtures need is missing. CI
// installs qemu-utils, xz-utils and genisoimage, so there the tests run.
func needTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (needed to build real image fixtures): %v", name, err)
	}
	return p
}

// run runs a fixture-building command and fails the test on error.
func run(t testing.TB, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out.String())
	}
}

// qemuVirtualSize is what qemu-img itself reports, given the format
// explicitly (as vmd always does).
func qemuVirtualSize(t testing.TB, path, format string) int64 {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "-f", format, "--output=json", path).Output()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v", path, err)
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("decoding qemu-img info: %v", err)
	}
	return info.VirtualSize
}

// diskBytes is a raw disk of size bytes: random data, a zeroed region (so
// sparse formats have something to skip) and an MBR boot signature.
func diskBytes(t testing.TB, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	clear(b[size/4 : size/2])
	b[510], b[511] = 0x55, 0xaa
	return b
}

// writeFile writes data under dir and returns the path.
func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// rawDisk writes a 10 MiB raw disk with an MBR signature under dir.
func rawDisk(t testing.TB, dir string) string {
	t.Helper()
	return writeFile(t, dir, "disk.raw", diskBytes(t, 10<<20))
}

// convert makes dst from the raw disk src with qemu-img convert.
func convert(t testing.TB, src, dst, format string, opts ...string) string {
	t.Helper()
	args := []string{"convert", "-q", "-f", "raw", "-O", format}
	for _, o := range opts {
		args = append(args, "-o", o)
	}
	run(t, "qemu-img", append(args, src, dst)...)
	return dst
}

// lookTool returns the first of names that is installed.
func lookTool(names ...string) (string, error) {
	var err error
	for _, n := range names {
		if _, err = exec.LookPath(n); err == nil {
			return n, nil
		}
	}
	return "", err
}
