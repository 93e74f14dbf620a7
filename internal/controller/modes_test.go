package controller

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

func permOf(t *testing.T, path string) fs.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// qemu runs as its own user (Debian: libvirt-qemu): it must search the
// namespace and instance directories to open the seed and the NVRAM
// libvirt chowns to it, nobody may list them, and the seed (cloud-init
// data) is readable by its owner only. A hardened umask changes nothing;
// modes an older vmd left (0755, a 0644 seed) are corrected.
func TestInstanceFileModes(t *testing.T) {
	old := syscall.Umask(0o027) // process-wide; this package's tests are not parallel
	t.Cleanup(func() { syscall.Umask(old) })
	f := newFixture(t)
	f.createVM("web", v1alpha1.VMInstanceSpec{SSHKeys: []string{"ssh-ed25519 AAAA a@b"}})
	f.mustReconcileVM("web")
	ns := filepath.Join(f.vms.InstancesDir, "default")
	dir := filepath.Join(ns, "web")
	iso := filepath.Join(dir, "cidata.iso")
	check := func(when string) {
		t.Helper()
		for path, want := range map[string]fs.FileMode{ns: 0o711, dir: 0o711, iso: 0o600, filepath.Join(dir, "lifecycle.json"): 0o600} {
			if got := permOf(t, path); got != want {
				t.Errorf("%s: %s mode %#o, want %#o", when, filepath.Base(path), got, want)
			}
		}
	}
	check("created")
	for path, mode := range map[string]fs.FileMode{ns: 0o755, dir: 0o755, iso: 0o644} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	f.mustReconcileVM("web")
	check("after an older vmd")
}
