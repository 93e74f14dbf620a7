package fsmode

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestMkdirAll(t *testing.T) {
	old := syscall.Umask(0o027) // hardened: would strip o+x from a plain MkdirAll
	t.Cleanup(func() { syscall.Umask(old) })
	root := t.TempDir()
	if err := os.Chmod(root, 0o750); err != nil {
		t.Fatal(err)
	}
	perm := func(p string) fs.FileMode {
		t.Helper()
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return st.Mode().Perm()
	}

	deep := filepath.Join(root, "a", "b", "c")
	if _, changed, err := MkdirAll(deep, 0o711); err != nil || changed {
		t.Fatalf("MkdirAll(new) = changed %v, %v", changed, err)
	}
	for _, d := range []string{filepath.Join(root, "a"), filepath.Join(root, "a", "b"), deep} {
		if got := perm(d); got != 0o711 {
			t.Errorf("%s: mode %v, want 0711 despite umask 027", d, got)
		}
	}
	if got := perm(root); got != 0o750 {
		t.Errorf("existing parent changed to %v: it is not ours", got)
	}

	// An existing directory with another mode is corrected and reported.
	if err := os.Chmod(deep, 0o700); err != nil {
		t.Fatal(err)
	}
	was, changed, err := MkdirAll(deep, 0o711)
	if err != nil || !changed || was != 0o700 || perm(deep) != 0o711 {
		t.Fatalf("MkdirAll(0700 dir) = was %v, changed %v, %v; mode now %v", was, changed, err, perm(deep))
	}
	if _, changed, err := MkdirAll(deep, 0o711); err != nil || changed {
		t.Fatalf("MkdirAll(right mode) = changed %v, %v; want a no-op", changed, err)
	}

	file := filepath.Join(root, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := MkdirAll(file, 0o711); err == nil {
		t.Error("MkdirAll over a file succeeded")
	}
}
