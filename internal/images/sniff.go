package images

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// Format is a disk image format recognised from the image's own bytes.
// vmd never trusts a file name or a Content-Type: the name is chosen by
// whoever serves the file, the bytes are what qemu will parse.
type Format string

// Formats vmd accepts. The values are vmd's names; QemuFormat gives the
// name qemu-img expects after -f.
const (
	// FormatRaw is a plain disk: the bytes are the disk.
	FormatRaw Format = "raw"
	// FormatQcow2 is QEMU copy-on-write v2 or v3.
	FormatQcow2 Format = "qcow2"
	// FormatVMDK is VMware's format: a sparse extent with an embedded
	// descriptor, or a text descriptor.
	FormatVMDK Format = "vmdk"
	// FormatVHD is Microsoft Virtual PC / Hyper-V VHD (qemu's "vpc").
	FormatVHD Format = "vhd"
	// FormatVHDX is Hyper-V VHDX.
	FormatVHDX Format = "vhdx"
	// FormatVDI is VirtualBox's VDI.
	FormatVDI Format = "vdi"
	// FormatISO is an ISO 9660 optical image; qemu reads it as raw.
	FormatISO Format = "iso"
)

// QemuFormat is the qemu-img/libvirt driver name for f, to be passed
// explicitly (-f, -F, <driver type=...>) so qemu never probes.
func (f Format) QemuFormat() string {
	switch f {
	case FormatVHD:
		return "vpc"
	case FormatISO:
		return "raw"
	default:
		return string(f)
	}
}

// ErrHostile marks an image that would make qemu open files other than the
// image itself (a qcow2 backing file or external data file, a vmdk extent
// or parent, a differencing VHD/VHDX/VDI) or that cannot be read without
// secrets. Such images are how CVE-2024-32498, CVE-2024-44082 and
// CVE-2026-24708 read host files; vmd refuses them outright. It matches
// errdefs.ErrInvalid under errors.Is, so the API reports 422.
var ErrHostile = fmt.Errorf("hostile image: %w", errdefs.ErrInvalid)

// hostile returns an error naming the reason that matches ErrHostile.
func hostile(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, ErrHostile)...)
}

// malformed returns an error for a structurally broken or unsupported
// image; it matches errdefs.ErrInvalid.
func malformed(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, errdefs.ErrInvalid)...)
}

// Info is what vmd knows about an image after reading its headers.
type Info struct {
	// Format is the recognised format.
	Format Format
	// VirtualSize is the size in bytes of the disk the guest sees, computed
	// as qemu does for the format.
	VirtualSize int64
	// Version is the on-disk format version where the format has one
	// (qcow2 2 or 3, vmdk sparse 1-3); 0 otherwise.
	Version uint32
	// Guessed is true when Format is FormatRaw only because no header
	// matched and the bytes do not even carry an MBR or GPT: qemu-img
	// would have to guess, so callers must refuse it (see Check).
	Guessed bool
}

// Check applies vmd's acceptance rule for a disk with the given optical
// flag. An optical disk must be an ISO 9660 image. Any other disk may be
// any recognised format, but raw only when it is recognisably a disk (MBR
// boot signature 0x55AA at 510 or a GPT header): a blob with no header at
// all would be a guess, and guessing is how format-confusion attacks start.
func (i Info) Check(optical bool) error {
	if optical {
		if i.Format != FormatISO {
			return malformed("optical disk needs an ISO 9660 image, got %s", i.describe())
		}
		return nil
	}
	if i.Guessed {
		return malformed("unrecognised image: no known format header, MBR or GPT; refusing to guess")
	}
	return nil
}

func (i Info) describe() string {
	if i.Guessed {
		return "unrecognised data"
	}
	return string(i.Format)
}

// Offsets and magics of the formats, all from the public specifications.
var (
	magicQcow2    = []byte("QFI\xfb")
	magicVMDK4    = []byte("KDMV")
	magicVMDK3    = []byte("COWD")
	magicVHDX     = []byte("vhdxfile")
	magicVHD      = []byte("conectix")
	magicVDIText  = []byte("<<< ")
	magicISO      = []byte("CD001")
	magicGPT      = []byte("EFI PART")
	vmdkDescStart = []byte("# Disk DescriptorFile")
)

const (
	sector        = 512
	vdiSignature  = 0xbeda107f
	vdiSigOffset  = 0x40
	vhdFooterSize = 512
	// headLen covers every fixed-offset magic near the start of a file.
	headLen = 4096
)

// isoOffsets are where the ISO 9660 volume descriptor identifier "CD001"
// sits in sector 16, 17 or 18 (2048-byte sectors).
var isoOffsets = []int64{0x8001, 0x8801, 0x9001}

// foreignMagic lists formats vmd recognises only to refuse them with a
// clear reason rather than calling them unrecognised raw data.
var foreignMagic = []struct {
	off   int64
	magic []byte
	name  string
}{
	{0, []byte("QED\x00"), "qed"},
	{0, []byte("LUKS\xba\xbe"), "luks"},
	{0, []byte("WithoutFreeSpace"), "parallels"},
	{0, []byte("WithouFreSpacExt"), "parallels"},
	{0, []byte("Bochs Virtual HD Image"), "bochs"},
	{0, []byte("#!/bin/sh\n#V2.0 Format"), "cloop"},
	{0, []byte("\x1f\x8b"), "gzip-compressed data"},
	{0, []byte("\xfd7zXZ\x00"), "xz-compressed data"},
	{0, []byte("\x28\xb5\x2f\xfd"), "zstd-compressed data"},
	{257, []byte("ustar"), "tar archive"},
}

// Sniff identifies the format of the size-byte image r from its bytes
// alone. Anything without a known header is FormatRaw; formats vmd
// recognises but does not accept (qed, luks, compressed data, tar, ...)
// are errors matching errdefs.ErrInvalid. Sniff does not judge whether the
// image is safe; Probe and Inspect do.
func Sniff(r io.ReaderAt, size int64) (Format, error) {
	if size < 0 {
		return "", malformed("negative image size %d", size)
	}
	head, err := readAt(r, 0, min(size, headLen), size)
	if err != nil {
		return "", err
	}
	switch {
	case bytes.HasPrefix(head, magicQcow2):
		return FormatQcow2, nil
	case bytes.HasPrefix(head, magicVMDK4), bytes.HasPrefix(head, magicVMDK3):
		return FormatVMDK, nil
	case bytes.HasPrefix(head, magicVHDX):
		return FormatVHDX, nil
	case bytes.HasPrefix(head, magicVHD):
		// A dynamic VHD starts with a copy of its footer.
		return FormatVHD, nil
	case bytes.HasPrefix(head, magicVDIText) && len(head) >= vdiSigOffset+4 &&
		binary.LittleEndian.Uint32(head[vdiSigOffset:]) == vdiSignature:
		return FormatVDI, nil
	case isVMDKDescriptor(head):
		return FormatVMDK, nil
	}
	for _, m := range foreignMagic {
		if int64(len(head)) >= m.off+int64(len(m.magic)) && bytes.Equal(head[m.off:m.off+int64(len(m.magic))], m.magic) {
			return "", malformed("unsupported image format: %s", m.name)
		}
	}
	// A fixed VHD is raw data followed by a 512-byte footer.
	if size >= vhdFooterSize {
		footer, err := readAt(r, size-vhdFooterSize, len(magicVHD), size)
		if err != nil {
			return "", err
		}
		if bytes.Equal(footer, magicVHD) {
			return FormatVHD, nil
		}
	}
	for _, off := range isoOffsets {
		if size < off+int64(len(magicISO)) {
			break
		}
		id, err := readAt(r, off, len(magicISO), size)
		if err != nil {
			return "", err
		}
		if bytes.Equal(id, magicISO) {
			return FormatISO, nil
		}
	}
	return FormatRaw, nil
}

// isVMDKDescriptor reports whether head is a VMDK text descriptor: either
// it starts with the conventional "# Disk DescriptorFile" line, or — the
// rule qemu's own probe uses — its first line that is neither a comment
// nor blank is "version=N".
func isVMDKDescriptor(head []byte) bool {
	if bytes.HasPrefix(head, vmdkDescStart) {
		return true
	}
	for line := range bytes.Lines(head) {
		l := bytes.TrimSpace(line)
		if len(l) == 0 || l[0] == '#' {
			continue
		}
		// The line must be complete: a line cut by the end of head could
		// be anything.
		if !bytes.HasSuffix(line, []byte("\n")) {
			return false
		}
		switch string(l) {
		case "version=1", "version=2", "version=3":
			return true
		}
		return false
	}
	return false
}

// Probe sniffs r and parses the format's header: it returns the virtual
// size and refuses hostile images with an error matching ErrHostile, and
// broken or unsupported ones with an error matching errdefs.ErrInvalid.
// It never reads more than a few MiB whatever the headers claim.
func Probe(r io.ReaderAt, size int64) (Info, error) {
	format, err := Sniff(r, size)
	if err != nil {
		return Info{}, err
	}
	switch format {
	case FormatQcow2:
		h, err := parseQcow2(r, size)
		if err != nil {
			return Info{}, err
		}
		if err := h.check(); err != nil {
			return Info{}, err
		}
		return Info{Format: format, VirtualSize: int64(h.Size), Version: h.Version}, nil
	case FormatVMDK:
		return probeVMDK(r, size)
	case FormatVHD:
		return probeVHD(r, size)
	case FormatVHDX:
		return probeVHDX(r, size)
	case FormatVDI:
		return probeVDI(r, size)
	case FormatISO:
		return Info{Format: FormatISO, VirtualSize: size}, nil
	default:
		disk, err := looksLikeDisk(r, size)
		if err != nil {
			return Info{}, err
		}
		return Info{Format: FormatRaw, VirtualSize: size, Guessed: !disk}, nil
	}
}

// Inspect opens the image at path and probes it; see Probe.
func Inspect(path string) (Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return Info{}, fmt.Errorf("inspecting %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Info{}, fmt.Errorf("inspecting %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return Info{}, fmt.Errorf("inspecting %s: not a regular file: %w", path, errdefs.ErrInvalid)
	}
	info, err := Probe(f, st.Size())
	if err != nil {
		return Info{}, fmt.Errorf("inspecting %s: %w", path, err)
	}
	return info, nil
}

// looksLikeDisk reports whether raw bytes carry an MBR boot signature or a
// GPT header (512-byte or 4096-byte logical sectors).
func looksLikeDisk(r io.ReaderAt, size int64) (bool, error) {
	if size >= 512 {
		sig, err := readAt(r, 510, 2, size)
		if err != nil {
			return false, err
		}
		if sig[0] == 0x55 && sig[1] == 0xaa {
			return true, nil
		}
	}
	for _, off := range []int64{512, 4096} {
		if size < off+int64(len(magicGPT)) {
			break
		}
		sig, err := readAt(r, off, len(magicGPT), size)
		if err != nil {
			return false, err
		}
		if bytes.Equal(sig, magicGPT) {
			return true, nil
		}
	}
	return false, nil
}

// maxRead bounds every single read driven by a header field, so a hostile
// header cannot make vmd allocate gigabytes.
const maxRead = 4 << 20

// readAt reads exactly n bytes at off of an image of the given size. A
// range outside the image is a malformed image, not an I/O error.
func readAt[N int | int64](r io.ReaderAt, off int64, n N, size int64) ([]byte, error) {
	ln := int64(n)
	if off < 0 || ln < 0 || ln > maxRead || off > size || ln > size-off {
		return nil, malformed("image truncated: need %d bytes at offset %d of %d", ln, off, size)
	}
	buf := make([]byte, ln)
	got, err := r.ReadAt(buf, off)
	if int64(got) == ln {
		return buf, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return nil, malformed("image truncated: need %d bytes at offset %d, read %d", ln, off, got)
	}
	return nil, fmt.Errorf("reading image at offset %d: %w", off, err)
}

// vhdMaxGeometry is the largest CHS geometry a VHD footer can hold; images
// that use it store their true size only in current_size.
const vhdMaxGeometry = 65535 * 16 * 255

// probeVHD reads the VHD footer (the copy at 0 of a dynamic disk, else the
// one at the end of a fixed disk) and computes the virtual size as qemu's
// vpc driver does: from the CHS geometry for creators that size by
// geometry (Virtual PC, old qemu), from current_size for Hyper-V, Disk2vhd,
// XenServer and qemu's "qem2".
func probeVHD(r io.ReaderAt, size int64) (Info, error) {
	if size < vhdFooterSize {
		return Info{}, malformed("vhd shorter than its footer")
	}
	footer, err := readAt(r, 0, vhdFooterSize, size)
	if err != nil {
		return Info{}, err
	}
	if !bytes.HasPrefix(footer, magicVHD) {
		if footer, err = readAt(r, size-vhdFooterSize, vhdFooterSize, size); err != nil {
			return Info{}, err
		}
	}
	const (
		vhdFixed        = 2
		vhdDynamic      = 3
		vhdDifferencing = 4
	)
	switch typ := binary.BigEndian.Uint32(footer[60:]); typ {
	case vhdFixed, vhdDynamic:
	case vhdDifferencing:
		return Info{}, hostile("vhd is a differencing disk that names a parent file")
	default:
		return Info{}, malformed("vhd has unknown disk type %d", typ)
	}
	currentSize := binary.BigEndian.Uint64(footer[48:])
	cyls := uint64(binary.BigEndian.Uint16(footer[56:]))
	sectors := cyls * uint64(footer[58]) * uint64(footer[59])
	virtual := sectors * sector
	switch string(footer[28:32]) {
	case "win ", "qem2", "d2v ", "CTXS", "tap\x00":
		virtual = currentSize
	default:
		if sectors == vhdMaxGeometry {
			virtual = currentSize
		}
	}
	virtual = virtual / sector * sector
	if virtual > 1<<62 {
		return Info{}, malformed("vhd virtual size %d out of range", virtual)
	}
	return Info{Format: FormatVHD, VirtualSize: int64(virtual)}, nil
}

// VHDX layout constants from the VHDX specification (MS-VHDX).
const (
	vhdxRegionTable1  = 192 << 10
	vhdxRegionTable2  = 256 << 10
	vhdxRegionMaxLen  = 64 << 10
	vhdxMaxEntries    = 2047
	vhdxEntrySize     = 32
	vhdxHasParentFlag = 1 << 1
)

// GUIDs in their on-disk (mixed-endian) byte order.
var (
	vhdxMetadataRegion = msGUID(0x8B7CA206, 0x4790, 0x4B9A, [8]byte{0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E})
	vhdxVirtualSize    = msGUID(0x2FA54224, 0xCD1B, 0x4876, [8]byte{0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8})
	vhdxFileParams     = msGUID(0xCAA16737, 0xFA36, 0x4D43, [8]byte{0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B})
	vhdxParentLocator  = msGUID(0xA8D35F2D, 0xB30B, 0x454D, [8]byte{0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C})
)

func msGUID(d1 uint32, d2, d3 uint16, d4 [8]byte) [16]byte {
	var g [16]byte
	binary.LittleEndian.PutUint32(g[0:], d1)
	binary.LittleEndian.PutUint16(g[4:], d2)
	binary.LittleEndian.PutUint16(g[6:], d3)
	copy(g[8:], d4[:])
	return g
}

// probeVHDX finds the metadata region through the region table (the first
// copy, else the second) and reads the virtual disk size and the file
// parameters from it. A parent locator or the HasParent flag makes it a
// differencing disk, which names another file.
func probeVHDX(r io.ReaderAt, size int64) (Info, error) {
	var metaOff, metaLen uint64
	found := false
	for _, off := range []int64{vhdxRegionTable1, vhdxRegionTable2} {
		hdr, err := readAt(r, off, 16, size)
		if err != nil {
			continue
		}
		count := binary.LittleEndian.Uint32(hdr[8:])
		if string(hdr[:4]) != "regi" || count > vhdxMaxEntries {
			continue
		}
		entries, err := readAt(r, off+16, int64(count)*vhdxEntrySize, size)
		if err != nil {
			continue
		}
		for e := range slices.Chunk(entries, vhdxEntrySize) {
			if [16]byte(e[:16]) == vhdxMetadataRegion {
				metaOff = binary.LittleEndian.Uint64(e[16:])
				metaLen = uint64(binary.LittleEndian.Uint32(e[24:]))
				found = true
			}
		}
		if found {
			break
		}
	}
	if !found {
		return Info{}, malformed("vhdx has no metadata region")
	}
	if metaOff > uint64(size) || metaLen < 32 {
		return Info{}, malformed("vhdx metadata region out of range")
	}
	hdr, err := readAt(r, int64(metaOff), 32, size)
	if err != nil {
		return Info{}, err
	}
	count := binary.LittleEndian.Uint16(hdr[10:])
	if string(hdr[:8]) != "metadata" || count > vhdxMaxEntries {
		return Info{}, malformed("vhdx metadata table is invalid")
	}
	entries, err := readAt(r, int64(metaOff)+32, int64(count)*vhdxEntrySize, size)
	if err != nil {
		return Info{}, err
	}
	item := func(e []byte, n int) ([]byte, error) {
		off := uint64(binary.LittleEndian.Uint32(e[16:]))
		ln := uint64(binary.LittleEndian.Uint32(e[20:]))
		if ln < uint64(n) || off+uint64(n) > metaLen {
			return nil, malformed("vhdx metadata item out of range")
		}
		return readAt(r, int64(metaOff+off), n, size)
	}
	var virtual uint64
	haveSize := false
	for e := range slices.Chunk(entries, vhdxEntrySize) {
		switch [16]byte(e[:16]) {
		case vhdxParentLocator:
			return Info{}, hostile("vhdx is a differencing disk with a parent locator")
		case vhdxFileParams:
			b, err := item(e, 8)
			if err != nil {
				return Info{}, err
			}
			if binary.LittleEndian.Uint32(b[4:])&vhdxHasParentFlag != 0 {
				return Info{}, hostile("vhdx is a differencing disk (HasParent is set)")
			}
		case vhdxVirtualSize:
			b, err := item(e, 8)
			if err != nil {
				return Info{}, err
			}
			virtual = binary.LittleEndian.Uint64(b)
			haveSize = true
		}
	}
	if !haveSize {
		return Info{}, malformed("vhdx has no virtual disk size")
	}
	if virtual > 1<<62 {
		return Info{}, malformed("vhdx virtual size %d out of range", virtual)
	}
	return Info{Format: FormatVHDX, VirtualSize: int64(virtual)}, nil
}

// probeVDI reads a VirtualBox 1.1 header, the only version qemu supports.
// Undo and differencing images refer to a parent by UUID and are refused.
func probeVDI(r io.ReaderAt, size int64) (Info, error) {
	hdr, err := readAt(r, 0, 0x180, size)
	if err != nil {
		return Info{}, err
	}
	const (
		vdiVersion11 = 0x00010001
		vdiDynamic   = 1
		vdiStatic    = 2
		vdiUndo      = 3
		vdiDiff      = 4
	)
	if v := binary.LittleEndian.Uint32(hdr[0x44:]); v != vdiVersion11 {
		return Info{}, malformed("unsupported vdi version %d.%d", v>>16, v&0xffff)
	}
	switch typ := binary.LittleEndian.Uint32(hdr[0x4c:]); typ {
	case vdiDynamic, vdiStatic:
	case vdiUndo, vdiDiff:
		return Info{}, hostile("vdi is a differencing image with a parent")
	default:
		return Info{}, malformed("vdi has unknown image type %d", typ)
	}
	virtual := binary.LittleEndian.Uint64(hdr[0x170:])
	if virtual > 1<<62 {
		return Info{}, malformed("vdi virtual size %d out of range", virtual)
	}
	return Info{Format: FormatVDI, VirtualSize: int64(virtual)}, nil
}
