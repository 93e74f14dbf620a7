package local

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/fsmode"
	"github.com/vmdhq/vmd/internal/storage/qemuimg"
)

// dirMode is the mode of every directory on qemu's way to a volume: the
// pools, their namespace directories and the image cache. libvirt runs
// qemu as an unprivileged user (Debian: libvirt-qemu) and, with
// dynamic_ownership, chowns each image to that user when the domain
// starts; qemu must still be able to search (x) every directory above the
// image, but nobody needs to list (r) them, so group and other get x only.
// Files keep their own modes: volumes 0600 (libvirt chowns them), bases
// 0444. The scratch directory stays 0700: qemu never reads it.
const dirMode fs.FileMode = 0o711

// volumeMode is the mode of a writable volume: guest data, readable by
// vmd only; libvirt chowns it to qemu's user while a domain runs it. It
// matters because the directories above are searchable (dirMode) and
// volume names can be guessed.
const volumeMode fs.FileMode = 0o600

// mkdirTraversable makes dir exist with exactly mode dirMode, and any
// missing parent, whatever the umask (a hardened umask such as 027 would
// take qemu's search permission away); existing ancestors are left alone:
// they are not vmd's.
func mkdirTraversable(dir string) error {
	_, _, err := fsmode.MkdirAll(dir, dirMode)
	return err
}

// privateVolume takes group and other permissions away from the volume at
// path (see volumeMode); the owner's are left as they are.
func privateVolume(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Mode().Perm()&0o077 == 0 {
		return nil
	}
	return os.Chmod(path, st.Mode().Perm()&^0o077)
}

// tempName returns a fresh temporary name next to final that
// qemuimg.IsTemp recognises, so the start-up sweep removes it after a
// crash.
func tempName(final string) string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return final + qemuimg.TempInfix + hex.EncodeToString(b[:])
}

// fileExists reports whether path exists; other stat errors are returned.
func fileExists(path string) (bool, error) {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}

// removeFile removes path; absent is fine.
func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// commitFile makes the complete file tmp durable under final: fsync the
// data, rename without replacing (an existing final is
// errdefs.ErrAlreadyExists and tmp is left for the caller), fsync the
// directory so the name survives a crash.
func commitFile(tmp, final string) error {
	if err := syncPath(tmp); err != nil {
		return fmt.Errorf("syncing %s: %w", tmp, err)
	}
	if err := renameNoReplace(tmp, final); err != nil {
		return err
	}
	if err := syncPath(filepath.Dir(final)); err != nil {
		return fmt.Errorf("syncing directory of %s: %w", final, err)
	}
	return nil
}

// renameNoReplace renames oldPath to newPath unless newPath exists. It
// falls back to link+unlink on filesystems without RENAME_NOREPLACE.
func renameNoReplace(oldPath, newPath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldPath, unix.AT_FDCWD, newPath, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("renaming to %s: %w", newPath, errdefs.ErrAlreadyExists)
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS):
		if err := os.Link(oldPath, newPath); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("renaming to %s: %w", newPath, errdefs.ErrAlreadyExists)
			}
			return fmt.Errorf("renaming to %s: %w", newPath, err)
		}
		return os.Remove(oldPath)
	}
	return fmt.Errorf("renaming to %s: %w", newPath, err)
}

func syncPath(p string) error {
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

// soleLink reports whether path is the only name of its inode. The fetcher
// hands each of several callers of one URL a hard link to the same file: a
// caller that adopted (and then resized) its link would change every
// other caller's file too, so it must copy instead.
func soleLink(path string) (bool, error) {
	st, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return false, nil
	}
	return sys.Nlink == 1, nil
}

// moveOrCopy puts the bytes of src at dst (which must not exist): a rename
// when src is the inode's only name and on the same filesystem, a copy
// otherwise. src is gone afterwards only when it was renamed.
func moveOrCopy(src, dst string) error {
	if sole, err := soleLink(src); err != nil {
		return err
	} else if sole {
		err := renameNoReplace(src, dst)
		if err == nil || !errors.Is(err, unix.EXDEV) {
			return err
		}
	}
	return copyFile(src, dst)
}

// copyFile copies src into a new file dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		_ = os.Remove(dst)
		return fmt.Errorf("copying %s: %w", src, err)
	}
	return out.Close()
}

// actualSize is the space a file occupies on the host.
func actualSize(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}
