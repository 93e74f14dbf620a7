package images

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// strictReader fails the test on any read outside the image and counts
// what the parsers read, so a hostile header can neither make them read
// out of bounds nor read without limit.
type strictReader struct {
	t    *testing.T
	data []byte
	read int64
}

func (r *strictReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(r.data)) || int64(len(p)) > int64(len(r.data))-off {
		r.t.Fatalf("read of %d bytes at %d outside a %d-byte image", len(p), off, len(r.data))
	}
	r.read += int64(len(p))
	return copy(p, r.data[off:]), nil
}

// maxProbeRead bounds the bytes Probe may read whatever the image says:
// the first qcow2 cluster, a vmdk descriptor, vhdx tables.
const maxProbeRead = 16 * maxRead

// checkProbe runs Probe and checks the invariants every answer must keep.
func checkProbe(t *testing.T, data []byte) {
	r := &strictReader{t: t, data: data}
	info, err := Probe(r, int64(len(data)))
	if r.read > maxProbeRead {
		t.Fatalf("Probe read %d bytes", r.read)
	}
	if err != nil {
		if !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("Probe error %v does not match ErrInvalid", err)
		}
		return
	}
	if info.Format == "" || info.VirtualSize < 0 {
		t.Fatalf("Probe = %+v", info)
	}
	if info.Guessed && info.Format != FormatRaw {
		t.Fatalf("only raw can be guessed: %+v", info)
	}
	f, err := Sniff(&strictReader{t: t, data: data}, int64(len(data)))
	if err != nil || f != info.Format {
		t.Fatalf("Sniff = %s, %v; Probe said %s", f, err, info.Format)
	}
}

func FuzzSniff(f *testing.F) {
	seed := func(size int, off int, magic string) []byte {
		b := make([]byte, size)
		copy(b[off:], magic)
		return b
	}
	f.Add([]byte{})
	f.Add(seed(512, 510, "\x55\xaa"))
	f.Add(seed(0x9000, 0x8001, "CD001"))
	f.Add(seed(1024, 0, "conectix"))
	f.Add(seed(1024, 1024-512, "conectix"))
	f.Add(seed(1024, 0, "KDMV"))
	f.Add([]byte("# Disk DescriptorFile\nversion=1\nRW 2048 FLAT \"x.vmdk\" 0\nRW 1 ZERO\n"))
	f.Add([]byte("version=1\nRW 2048 SPARSE\tx.vmdk\n"))
	vdi := seed(0x200, 0, "<<< ")
	binary.LittleEndian.PutUint32(vdi[0x40:], vdiSignature)
	binary.LittleEndian.PutUint32(vdi[0x44:], 0x00010001)
	f.Add(vdi)
	vhdx := seed(vhdxRegionTable1+64, 0, "vhdxfile")
	copy(vhdx[vhdxRegionTable1:], "regi")
	f.Add(vhdx)
	f.Add(qcow2Spec{size: 1 << 20, backing: "b"}.bytes())
	f.Add(qcow2Spec{version: 2, size: 1 << 20}.bytes())
	f.Fuzz(checkProbe)
}

func FuzzQcow2Header(f *testing.F) {
	f.Add(qcow2Spec{clusterBits: 9, size: 1 << 30}.bytes())
	f.Add(qcow2Spec{clusterBits: 9, version: 2, size: 1 << 20, backing: "base.qcow2"}.bytes())
	f.Add(qcow2Spec{clusterBits: 9, incompat: qcow2IncompatDataFile,
		exts: []qcow2Ext{{typ: 0xe2792aca, data: []byte("qcow2")}, {typ: qcow2ExtDataFile, data: []byte("data.raw")}}}.bytes())
	f.Add(qcow2Spec{clusterBits: 9, crypt: 2, headerLen: 112}.bytes())
	f.Add(qcow2Spec{clusterBits: 21, truncate: 200}.bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		// Keep the magic so the fuzzer spends its time inside the parser.
		if len(data) >= len(magicQcow2) {
			copy(data, magicQcow2)
		}
		r := &strictReader{t: t, data: data}
		h, err := parseQcow2(r, int64(len(data)))
		if r.read > 2*(1<<qcow2MaxCluster) {
			t.Fatalf("parseQcow2 read %d bytes", r.read)
		}
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("error %v does not match ErrInvalid", err)
			}
			return
		}
		if h.Version != 2 && h.Version != 3 {
			t.Fatalf("accepted version %d", h.Version)
		}
		// A backing file or data file must never pass the check.
		verr := h.check()
		if (h.BackingFileOffset != 0 || h.HasDataFile || h.IncompatibleFeatures&qcow2IncompatDataFile != 0) &&
			!errors.Is(verr, ErrHostile) {
			t.Fatalf("header %+v passed as %v", h, verr)
		}
		checkProbe(t, data)
	})
}
