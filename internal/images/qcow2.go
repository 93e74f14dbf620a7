package images

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/bits"
	"strconv"
)

// qcow2 header layout (docs/interop/qcow2.txt in the QEMU tree). All
// fields are big-endian.
const (
	qcow2V2HeaderLen = 72
	qcow2V3HeaderLen = 104
	qcow2MinCluster  = 9
	qcow2MaxCluster  = 21
	// qcow2MaxName is qemu's limit on backing and data file names.
	qcow2MaxName = 1023

	qcow2ExtEnd      = 0x00000000
	qcow2ExtDataFile = 0x44415441

	qcow2IncompatDirty    = 1 << 0
	qcow2IncompatCorrupt  = 1 << 1
	qcow2IncompatDataFile = 1 << 2
	qcow2IncompatCompress = 1 << 3
	qcow2IncompatExtL2    = 1 << 4
	qcow2IncompatKnown    = qcow2IncompatDirty | qcow2IncompatCorrupt | qcow2IncompatDataFile |
		qcow2IncompatCompress | qcow2IncompatExtL2
)

// qcow2Header is the part of a qcow2 header vmd needs to decide whether an
// image is safe to hand to qemu-img.
type qcow2Header struct {
	Version              uint32
	BackingFileOffset    uint64
	BackingFileSize      uint32
	BackingFile          string
	ClusterBits          uint32
	Size                 uint64
	CryptMethod          uint32
	IncompatibleFeatures uint64
	HeaderLength         uint32
	// Extensions are the header extension types in file order.
	Extensions []uint32
	// DataFile is the external data file name extension, if present.
	DataFile    string
	HasDataFile bool
}

// parseQcow2 decodes the header and walks the header extensions. It fails
// only on a structurally broken header (errdefs.ErrInvalid); whether the
// image is acceptable is check's decision. Every offset is bounded by the
// first cluster, where qemu requires the header and its extensions to be.
func parseQcow2(r io.ReaderAt, size int64) (qcow2Header, error) {
	var h qcow2Header
	b, err := readAt(r, 0, qcow2V2HeaderLen, size)
	if err != nil {
		return h, fmt.Errorf("reading qcow2 header: %w", err)
	}
	if string(b[:4]) != string(magicQcow2) {
		return h, malformed("not a qcow2 image")
	}
	be := binary.BigEndian
	h.Version = be.Uint32(b[4:])
	h.BackingFileOffset = be.Uint64(b[8:])
	h.BackingFileSize = be.Uint32(b[16:])
	h.ClusterBits = be.Uint32(b[20:])
	h.Size = be.Uint64(b[24:])
	h.CryptMethod = be.Uint32(b[32:])
	switch h.Version {
	case 2:
		h.HeaderLength = qcow2V2HeaderLen
	case 3:
		if b, err = readAt(r, 0, qcow2V3HeaderLen, size); err != nil {
			return h, fmt.Errorf("reading qcow2 v3 header: %w", err)
		}
		h.IncompatibleFeatures = be.Uint64(b[72:])
		h.HeaderLength = be.Uint32(b[100:])
	default:
		return h, malformed("unsupported qcow2 version %d", h.Version)
	}
	if h.ClusterBits < qcow2MinCluster || h.ClusterBits > qcow2MaxCluster {
		return h, malformed("qcow2 cluster bits %d out of range", h.ClusterBits)
	}
	cluster := uint64(1) << h.ClusterBits
	if h.HeaderLength < qcow2V2HeaderLen || (h.Version == 3 && h.HeaderLength < qcow2V3HeaderLen) ||
		uint64(h.HeaderLength) > cluster {
		return h, malformed("qcow2 header length %d invalid", h.HeaderLength)
	}
	if h.Size > math.MaxInt64 {
		return h, malformed("qcow2 virtual size %d out of range", h.Size)
	}
	// Extensions follow the header, padded to 8 bytes, up to the end of
	// the first cluster (at most 2 MiB, read once); type 0 ends the list.
	first, err := readAt(r, 0, int64(min(cluster, uint64(size))), size)
	if err != nil {
		return h, fmt.Errorf("reading qcow2 first cluster: %w", err)
	}
	end := uint64(len(first))
	for off := uint64(h.HeaderLength); off+8 <= end; {
		typ, ln := be.Uint32(first[off:]), uint64(be.Uint32(first[off+4:]))
		if typ == qcow2ExtEnd {
			break
		}
		if ln > end-off-8 {
			return h, malformed("qcow2 header extension 0x%08x overruns the first cluster", typ)
		}
		h.Extensions = append(h.Extensions, typ)
		if typ == qcow2ExtDataFile {
			h.HasDataFile = true
			h.DataFile = nameIn(first, off+8, ln)
		}
		// ln < 2^21, so the padding cannot overflow.
		off += 8 + (ln+7)&^7
	}
	if h.BackingFileOffset != 0 {
		h.BackingFile = nameIn(first, h.BackingFileOffset, uint64(h.BackingFileSize))
	}
	return h, nil
}

// nameIn returns a file name stored in the first cluster, for an error
// message. A name that is out of range is still reported, by offset: its
// presence alone is what makes the image hostile.
func nameIn(first []byte, off, ln uint64) string {
	if ln == 0 || ln > qcow2MaxName || off > uint64(len(first)) || ln > uint64(len(first))-off {
		return "<" + strconv.FormatUint(ln, 10) + " bytes at offset " + strconv.FormatUint(off, 10) + ">"
	}
	return string(first[off : off+ln])
}

// check refuses what would make qemu open another file or need a
// secret, and what qemu itself would refuse or mistrust.
func (h qcow2Header) check() error {
	if h.BackingFileOffset != 0 || h.BackingFileSize != 0 {
		return hostile("qcow2 has a backing file %q", h.BackingFile)
	}
	if h.HasDataFile {
		return hostile("qcow2 has an external data file %q", h.DataFile)
	}
	if h.IncompatibleFeatures&qcow2IncompatDataFile != 0 {
		return hostile("qcow2 has an external data file (incompatible feature bit 2)")
	}
	if h.CryptMethod != 0 {
		return hostile("qcow2 is encrypted (crypt method %d)", h.CryptMethod)
	}
	if h.IncompatibleFeatures&qcow2IncompatCorrupt != 0 {
		return malformed("qcow2 is marked corrupt")
	}
	if unknown := h.IncompatibleFeatures &^ qcow2IncompatKnown; unknown != 0 {
		return malformed("qcow2 has unknown incompatible feature bit %d", bits.TrailingZeros64(unknown))
	}
	return nil
}
