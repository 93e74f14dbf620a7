//go:build integration

package cloudinit

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Integration tests: the seed ISO as the host's and a guest's tools see
// it. Run with `go test -tags integration ./internal/cloudinit/`. Each test
// skips, saying why, when a tool (or root, or the kernel's isofs) is
// missing.

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// writeSeedISO writes the lab-like seed (all three documents) to a file.
func writeSeedISO(t *testing.T) (string, Seed) {
	t.Helper()
	s := goldenSeeds()[3].seed
	path := filepath.Join(t.TempDir(), "seed.iso")
	if err := WriteISOFile(path, s); err != nil {
		t.Fatal(err)
	}
	return path, s
}

// TestISOLabelAsCloudInitSeesIt: cloud-init's NoCloud datasource finds its
// volume with `blkid -t LABEL=CIDATA` and `blkid -t LABEL=cidata` (the
// match itself is case-sensitive, so one of the two must hit).
func TestISOLabelAsCloudInitSeesIt(t *testing.T) {
	needTools(t, "blkid")
	path, _ := writeSeedISO(t)
	if got := strings.TrimSpace(run(t, "blkid", "-p", "-o", "value", "-s", "TYPE", path)); got != "iso9660" {
		t.Errorf("blkid TYPE = %q, want iso9660", got)
	}
	if got := strings.TrimSpace(run(t, "blkid", "-p", "-o", "value", "-s", "LABEL", path)); !strings.EqualFold(got, VolumeLabel) {
		t.Errorf("blkid LABEL = %q, want cidata in any case", got)
	}
	found := false
	for _, label := range []string{"CIDATA", "cidata"} {
		out, _ := exec.Command("blkid", "-t", "LABEL="+label, "-o", "device", path).Output()
		if strings.TrimSpace(string(out)) == path {
			found = true
		}
	}
	if !found {
		t.Error("neither blkid -t LABEL=CIDATA nor LABEL=cidata finds the image")
	}
}

func TestISOVolumeIDWithIsoinfo(t *testing.T) {
	needTools(t, "isoinfo")
	path, _ := writeSeedISO(t)
	out := run(t, "isoinfo", "-d", "-i", path)
	if !strings.Contains(out, "Volume id: "+VolumeLabel+"\n") {
		t.Errorf("isoinfo -d does not report volume id cidata:\n%s", out)
	}
}

// TestISOFilesWithXorriso extracts the image with libisofs's reader and
// checks the names are exactly the lowercase NoCloud names.
func TestISOFilesWithXorriso(t *testing.T) {
	needTools(t, "xorriso")
	path, s := writeSeedISO(t)
	dst := filepath.Join(t.TempDir(), "x")
	run(t, "xorriso", "-osirrox", "on", "-indev", path, "-extract", "/", dst)
	checkDir(t, dst, s)
}

// TestISOFilesMountedByLinux mounts the image with the kernel's isofs, the
// driver a Linux guest uses, and checks names and contents.
func TestISOFilesMountedByLinux(t *testing.T) {
	needTools(t, "mount", "umount")
	if os.Geteuid() != 0 {
		t.Skip("mounting a loop device needs root")
	}
	fs, err := os.ReadFile("/proc/filesystems")
	if err != nil || !bytes.Contains(fs, []byte("\tiso9660\n")) {
		if exec.Command("modprobe", "isofs").Run() != nil {
			t.Skip("this kernel has no iso9660 filesystem (isofs not built in and no module to load)")
		}
	}
	path, s := writeSeedISO(t)
	mnt := t.TempDir()
	run(t, "mount", "-o", "loop,ro", "-t", "iso9660", path, mnt)
	t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
	checkDir(t, mnt, s)
}

// TestISOFoundByBusyboxFindfs: minimal guests (the lab's tiny initramfs,
// Alpine-style init scripts) locate the seed with busybox's
// `findfs LABEL=cidata`, whose volume_id probe ignores devices shorter than
// 68 KiB; the padded image must be found on a loop device.
func TestISOFoundByBusyboxFindfs(t *testing.T) {
	needTools(t, "busybox", "losetup")
	if os.Geteuid() != 0 {
		t.Skip("attaching a loop device needs root")
	}
	path, _ := writeSeedISO(t)
	dev := strings.TrimSpace(run(t, "losetup", "--find", "--show", "--read-only", path))
	t.Cleanup(func() { _ = exec.Command("losetup", "--detach", dev).Run() })
	out, err := exec.Command("busybox", "findfs", "LABEL="+VolumeLabel).Output()
	got := strings.TrimSpace(string(out))
	switch {
	case err != nil:
		t.Fatalf("busybox findfs LABEL=cidata does not find %s: %v", dev, err)
	case got != dev:
		t.Skipf("busybox findfs returned another cidata device %s first; cannot tell about %s", got, dev)
	}
}

// TestReadISOReadsGenisoimageSeeds: ReadISO understands the lab's and
// KubeVirt's recipe (genisoimage -V cidata -J -R, Rock Ridge names), so
// vmctl can inspect seeds it did not write.
func TestReadISOReadsGenisoimageSeeds(t *testing.T) {
	needTools(t, "genisoimage")
	_, s := writeSeedISO(t)
	src := t.TempDir()
	var files []string
	for name, data := range wantFiles(t, s) {
		p := filepath.Join(src, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	iso := filepath.Join(t.TempDir(), "genisoimage.iso")
	run(t, "genisoimage", append([]string{"-quiet", "-output", iso, "-volid", "cidata", "-joliet", "-rock"}, files...)...)
	f, err := os.Open(iso)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, label, err := ReadISO(f)
	if err != nil {
		t.Fatal(err)
	}
	if label != VolumeLabel {
		t.Errorf("label = %q", label)
	}
	checkFiles(t, got, wantFiles(t, s))
}

// checkDir compares a directory with the seed's documents.
func checkDir(t *testing.T, dir string, s Seed) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	got := map[string][]byte{}
	for _, e := range entries {
		names = append(names, e.Name())
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got[e.Name()] = b
	}
	want := []string{MetaDataFile, NetworkConfigFile, UserDataFile}
	if !slices.Equal(names, want) {
		t.Fatalf("guest sees files %q, want exactly %q", names, want)
	}
	checkFiles(t, got, wantFiles(t, s))
}
