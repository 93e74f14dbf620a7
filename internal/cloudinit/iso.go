package cloudinit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/kdomanski/iso9660"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// MaxReadFileSize bounds each file ReadISO loads. Seeds are a few KiB; the
// limit only keeps a corrupt or hostile image from claiming gigabytes.
const MaxReadFileSize = 16 << 20

// WriteISO writes the seed as a NoCloud volume: ISO9660 with the volume
// label "cidata" and the files meta-data, user-data and, when Network is
// set, network-config in the root directory.
//
// kdomanski/iso9660 writes neither Joliet nor Rock Ridge, so the names are
// plain ISO9660 identifiers ("meta-data;1"); the library keeps them
// lowercase, and Linux's isofs (default map=normal) shows them as
// meta-data, user-data and network-config, which is what cloud-init opens.
// The label is stored as given, lowercase, like genisoimage -V cidata
// (the lab's and KubeVirt's recipe), and blkid reports it as cidata.
//
// The image is followed by 300 KiB of zeros (see padSectors). The library
// stages files in a temporary directory (os.TempDir) before it
// writes the image; WriteISO removes it before returning.
func WriteISO(w io.Writer, s Seed) error {
	docs, err := s.documents()
	if err != nil {
		return fmt.Errorf("rendering seed: %w", err)
	}
	return writeISO(w, docs)
}

// writeISO writes already rendered documents.
func writeISO(w io.Writer, docs []document) (err error) {
	iw, err := iso9660.NewWriter()
	if err != nil {
		return fmt.Errorf("creating iso staging area: %w", err)
	}
	defer func() {
		if cerr := iw.Cleanup(); cerr != nil && err == nil {
			err = fmt.Errorf("removing iso staging area: %w", cerr)
		}
	}()
	for _, d := range docs {
		if err := iw.AddFile(bytes.NewReader(d.data), d.name); err != nil {
			return fmt.Errorf("staging %s: %w", d.name, err)
		}
	}
	if err := iw.WriteTo(w, VolumeLabel); err != nil {
		return fmt.Errorf("writing iso: %w", err)
	}
	if _, err := w.Write(make([]byte, padSectors*sectorSize)); err != nil {
		return fmt.Errorf("padding iso: %w", err)
	}
	return nil
}

// sectorSize is the ISO9660 logical block size.
const sectorSize = 2048

// padSectors of zeros follow the image, as genisoimage's default -pad
// writes them. A seed is only ~44 KiB otherwise, and busybox's volume_id
// (findfs LABEL=cidata, as minimal initramfs and tiny guests use) reads
// the first 68 KiB of a device at once and finds no filesystem at all on a
// shorter one. The pad also keeps CD-ROM read-ahead off the device end.
// It lies outside the ISO9660 volume, which parsers ignore.
const padSectors = 150

// WriteISOFile writes the seed ISO to path atomically: into a temporary file
// in the same directory, synced, made mode 0600, then renamed over path, and the directory synced. A
// crash leaves either the old ISO or the new one, never a torn file that a
// booting guest would read; on error no temporary file is left behind.
func WriteISOFile(path string, s Seed) (err error) {
	docs, err := s.documents()
	if err != nil {
		return fmt.Errorf("rendering seed: %w", err)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("creating temporary seed file: %w", err)
	}
	tmp := f.Name()
	closed := false
	defer func() {
		if err == nil {
			return
		}
		if !closed {
			_ = f.Close()
		}
		_ = os.Remove(tmp)
	}()

	bw := bufio.NewWriter(f)
	if err := writeISO(bw, docs); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	// 0600: user-data can carry password hashes and tokens. qemu still
	// reads it as its own unprivileged user because libvirt chowns each
	// disk and ISO of a domain to that user when it starts the domain
	// (dynamic_ownership, the default), as it does for the 0600 volumes.
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("setting mode of %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", tmp, err)
	}
	closed = true
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("renaming seed into place: %w", err)
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// ReadISO returns the files in the root directory of an ISO9660 image, by
// the name a guest sees (Rock Ridge name when present, else the ISO9660
// name without its ";1" version), and the volume label with ISO padding
// removed. It reads seeds written by WriteISO as well as genisoimage or
// xorriso ones, for tests and for `vmctl` debugging.
//
// The image may come from anywhere, and the reader library indexes into
// on-disk structures without always checking bounds: a panic while
// parsing is turned into an error wrapping errdefs.ErrInvalid.
func ReadISO(r io.ReaderAt) (files map[string][]byte, label string, err error) {
	defer func() {
		if p := recover(); p != nil {
			files, label, err = nil, "", fmt.Errorf("reading iso: malformed image (%v): %w", p, errdefs.ErrInvalid)
		}
	}()
	img, err := iso9660.OpenImage(r)
	if err != nil {
		return nil, "", fmt.Errorf("opening iso: %w", invalidUnlessIO(err))
	}
	label, err = img.Label()
	if err != nil {
		return nil, "", fmt.Errorf("reading volume label: %w", invalidUnlessIO(err))
	}
	root, err := img.RootDir()
	if err != nil {
		return nil, "", fmt.Errorf("reading root directory: %w", invalidUnlessIO(err))
	}
	children, err := root.GetChildren()
	if err != nil {
		return nil, "", fmt.Errorf("listing root directory: %w", invalidUnlessIO(err))
	}
	files = make(map[string][]byte, len(children))
	for _, c := range children {
		if c.IsDir() {
			continue
		}
		name := c.Name()
		if c.Size() > MaxReadFileSize {
			return nil, "", fmt.Errorf("reading %s: %d bytes is over the %d byte limit: %w", name, c.Size(), MaxReadFileSize, errdefs.ErrInvalid)
		}
		data, err := io.ReadAll(c.Reader())
		if err != nil {
			return nil, "", fmt.Errorf("reading %s: %w", name, err)
		}
		if int64(len(data)) != c.Size() {
			return nil, "", fmt.Errorf("reading %s: image ends inside the file: %w", name, errdefs.ErrInvalid)
		}
		files[name] = data
	}
	return files, strings.TrimRight(label, " \x00"), nil
}

// invalidUnlessIO marks a parse failure as ErrInvalid; an I/O error from
// the underlying reader (other than a short image) stays what it is.
func invalidUnlessIO(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return err
	}
	return fmt.Errorf("%w: %w", err, errdefs.ErrInvalid)
}
