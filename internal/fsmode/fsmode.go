// Package fsmode creates directories with an exact mode. vmd's state
// directories must be searchable by qemu's unprivileged user (0711) and a
// umask, hardened ones especially (027), would silently take that away
// from anything os.MkdirAll creates; directories an older vmd made with
// another mode must be corrected too.
package fsmode

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// MkdirAll makes dir, and any missing parent, with exactly mode whatever
// the umask. An existing dir with another mode gets mode, and its old mode
// is returned with changed = true so the caller can say so; existing
// parents are left alone (they need not be the caller's).
func MkdirAll(dir string, mode fs.FileMode) (old fs.FileMode, changed bool, err error) {
	dir = filepath.Clean(dir)
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return 0, false, err
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := os.MkdirAll(dir, mode); err != nil {
		return 0, false, err
	}
	for _, d := range missing {
		if err := os.Chmod(d, mode); err != nil {
			return 0, false, err
		}
	}
	if len(missing) > 0 {
		return 0, false, nil
	}
	st, err := os.Stat(dir)
	if err != nil {
		return 0, false, err
	}
	if !st.IsDir() {
		return 0, false, fmt.Errorf("%s is not a directory", dir)
	}
	if st.Mode().Perm() == mode {
		return 0, false, nil
	}
	return st.Mode().Perm(), true, os.Chmod(dir, mode)
}
