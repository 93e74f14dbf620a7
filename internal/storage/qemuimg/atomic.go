package qemuimg

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// TempInfix marks the temporary files this package writes before renaming
// them into place: "<final name>.tmp-<random hex>". A file whose name
// contains it is never a finished image.
const TempInfix = ".tmp-"

// IsTemp reports whether name (a base name or a path) is one of this
// package's temporary files. The storage pool's start-up sweep deletes them:
// they are what a crash or kill during Create, CreateOverlay or Convert
// leaves behind, and nothing ever opens them under that name.
func IsTemp(name string) bool {
	base := filepath.Base(name)
	i := strings.LastIndex(base, TempInfix)
	if i <= 0 {
		return false
	}
	suffix := base[i+len(TempInfix):]
	if len(suffix) != 2*tempRandBytes {
		return false
	}
	_, err := hex.DecodeString(suffix)
	return err == nil
}

const tempRandBytes = 8

// tempPath returns a fresh temporary name next to final.
func tempPath(final string) string {
	var b [tempRandBytes]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return final + TempInfix + hex.EncodeToString(b[:])
}

// prepareDest checks that the destination's directory exists and that the
// destination itself does not: results never replace an existing file (the
// volume behind it may be in use).
func prepareDest(dst string) error {
	dir := filepath.Dir(dst)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("directory %s: %w", dir, errdefs.ErrNotFound)
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory: %w", dir, errdefs.ErrInvalid)
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("%s: %w", dst, errdefs.ErrAlreadyExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// commit makes the finished temporary file tmp durable under the name dst:
// fsync the data, rename without replacing, fsync the directory so the new
// name survives a crash.
func commit(tmp, dst string) error {
	if err := syncFile(tmp); err != nil {
		return fmt.Errorf("syncing %s: %w", tmp, err)
	}
	if err := renameNoReplace(tmp, dst); err != nil {
		return err
	}
	if err := syncFile(filepath.Dir(dst)); err != nil {
		return fmt.Errorf("syncing directory of %s: %w", dst, err)
	}
	return nil
}

func syncFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	serr := f.Sync()
	cerr := f.Close()
	if serr != nil {
		return serr
	}
	return cerr
}

// renameNoReplace renames old to new and fails with ErrAlreadyExists if new
// appeared meanwhile (two reconciles racing for one volume must not clobber
// each other). renameat2(RENAME_NOREPLACE) is atomic; filesystems without
// it get link+unlink, which is equally no-replace.
func renameNoReplace(oldPath, newPath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldPath, unix.AT_FDCWD, newPath, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		if err = os.Link(oldPath, newPath); err == nil {
			err = os.Remove(oldPath)
		}
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("renaming into place: %s: %w", newPath, errdefs.ErrAlreadyExists)
	default:
		return fmt.Errorf("renaming %s to %s: %w", oldPath, newPath, err)
	}
}
