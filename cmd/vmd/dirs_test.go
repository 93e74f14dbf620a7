package main

import (
	"bytes"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vmdhq/vmd/internal/config"
)

func modeOf(t *testing.T, path string) fs.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// The state tree is traversable by qemu's user down to every directory
// qemu opens files in, and listable by nobody but vmd, whatever the umask;
// a tree an older vmd made (0700, 0755) is corrected at start.
func TestPrepareStateDirs(t *testing.T) {
	old := syscall.Umask(0o027) // process-wide; this package's tests are not parallel
	t.Cleanup(func() { syscall.Umask(old) })
	root := t.TempDir()
	cfg := config.Default()
	cfg.StateDir = filepath.Join(root, "vmd")
	log := slog.New(slog.DiscardHandler)

	want := []string{"", "instances", "images", "pools", "pools/local", "pools/replicated"}
	check := func(when string) {
		t.Helper()
		for _, rel := range want {
			if got := modeOf(t, filepath.Join(cfg.StateDir, rel)); got != stateDirMode {
				t.Errorf("%s: %s/%s mode %#o, want %#o", when, filepath.Base(cfg.StateDir), rel, got, stateDirMode)
			}
		}
	}
	if err := prepareStateDirs(cfg, log); err != nil {
		t.Fatal(err)
	}
	check("created")
	if _, err := os.Stat(cfg.ScratchDir()); err == nil {
		t.Error("scratch created here: it is the storage adapter's, 0700")
	}
	for rel, mode := range map[string]fs.FileMode{"": 0o700, "pools": 0o700, "pools/local": 0o700, "instances": 0o755} {
		if err := os.Chmod(filepath.Join(cfg.StateDir, rel), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := prepareStateDirs(cfg, log); err != nil {
		t.Fatal(err)
	}
	check("after an older vmd")
}

// A pool configured outside the state directory is created, but its
// ancestors are not vmd's: one that stops qemu is named in a warning and
// left as it is.
func TestPrepareStateDirsWarnsAboutForeignAncestors(t *testing.T) {
	root := t.TempDir()
	// t.TempDir makes its directories 0700: open them as /var/lib is.
	for _, d := range []string{root, filepath.Dir(root)} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	private := filepath.Join(root, "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.StateDir = filepath.Join(root, "vmd")
	c := cfg.StorageClasses["local"]
	c.Path = filepath.Join(private, "pool")
	cfg.StorageClasses["local"] = c
	var buf bytes.Buffer
	if err := prepareStateDirs(cfg, slog.New(slog.NewTextHandler(&buf, nil))); err != nil {
		t.Fatal(err)
	}
	if got := modeOf(t, c.Path); got != stateDirMode {
		t.Errorf("pool mode %#o, want %#o", got, stateDirMode)
	}
	if got := modeOf(t, private); got != 0o700 {
		t.Errorf("a directory that is not vmd's was changed to %#o", got)
	}
	out := buf.String()
	if strings.Count(out, "level=WARN") != 1 || !strings.Contains(out, "blocking="+private) {
		t.Fatalf("want one warning naming %s, got:\n%s", private, out)
	}
}
