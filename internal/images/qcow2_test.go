package images

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// qcow2Ext is a header extension for the builder.
type qcow2Ext struct {
	typ  uint32
	data []byte
}

// qcow2Spec builds a first cluster of a qcow2 image byte by byte, so the
// parser is tested against the specification, not against itself.
type qcow2Spec struct {
	version     uint32
	clusterBits uint32
	size        uint64
	backing     string
	backingOff  uint64 // default: after the extensions
	crypt       uint32
	incompat    uint64
	headerLen   uint32 // v3 only; default 104
	exts        []qcow2Ext
	truncate    int // keep only this many bytes when > 0
}

func (s qcow2Spec) bytes() []byte {
	if s.version == 0 {
		s.version = 3
	}
	if s.clusterBits == 0 {
		s.clusterBits = 12
	}
	b := make([]byte, 1<<s.clusterBits)
	be := binary.BigEndian
	copy(b, "QFI\xfb")
	be.PutUint32(b[4:], s.version)
	be.PutUint32(b[20:], s.clusterBits)
	be.PutUint64(b[24:], s.size)
	be.PutUint32(b[32:], s.crypt)
	off := uint32(qcow2V2HeaderLen)
	if s.version >= 3 {
		hl := s.headerLen
		if hl == 0 {
			hl = qcow2V3HeaderLen
		}
		be.PutUint64(b[72:], s.incompat)
		be.PutUint32(b[96:], 4) // refcount_order
		be.PutUint32(b[100:], hl)
		off = hl
	}
	for _, e := range s.exts {
		be.PutUint32(b[off:], e.typ)
		be.PutUint32(b[off+4:], uint32(len(e.data)))
		copy(b[off+8:], e.data)
		off += 8 + uint32((len(e.data)+7)&^7)
	}
	off += 8 // end-of-extensions marker (zeros)
	if s.backing != "" {
		bo := s.backingOff
		if bo == 0 {
			bo = uint64(off)
		}
		be.PutUint64(b[8:], bo)
		be.PutUint32(b[16:], uint32(len(s.backing)))
		if bo < uint64(len(b)) {
			copy(b[bo:], s.backing)
		}
	}
	if s.truncate > 0 {
		b = b[:s.truncate]
	}
	return b
}

func TestParseQcow2(t *testing.T) {
	tests := []struct {
		name        string
		spec        qcow2Spec
		wantSize    int64
		wantVersion uint32
		wantErr     error
		wantMsg     string
	}{
		{name: "v3 plain", spec: qcow2Spec{size: 1 << 30}, wantSize: 1 << 30, wantVersion: 3},
		{name: "v2 plain", spec: qcow2Spec{version: 2, size: 5 << 20}, wantSize: 5 << 20, wantVersion: 2},
		{name: "v3 with long header (compression type)", spec: qcow2Spec{size: 4096, headerLen: 112}, wantSize: 4096, wantVersion: 3},
		{name: "dirty and extended L2 are harmless", spec: qcow2Spec{size: 4096, incompat: qcow2IncompatDirty | qcow2IncompatExtL2}, wantSize: 4096, wantVersion: 3},
		{name: "unknown extension is ignored", spec: qcow2Spec{size: 4096, exts: []qcow2Ext{{typ: 0x12345678, data: []byte("abc")}}}, wantSize: 4096, wantVersion: 3},
		{name: "backing file", spec: qcow2Spec{size: 4096, backing: "/etc/passwd"},
			wantErr: ErrHostile, wantMsg: `qcow2 has a backing file "/etc/passwd"`},
		{name: "v2 backing file", spec: qcow2Spec{version: 2, size: 4096, backing: "base.img"},
			wantErr: ErrHostile, wantMsg: `qcow2 has a backing file "base.img"`},
		{name: "backing file name out of the cluster still refused", spec: qcow2Spec{size: 4096, backing: "x", backingOff: 1 << 40},
			wantErr: ErrHostile, wantMsg: "qcow2 has a backing file \"<1 bytes at offset 1099511627776>\""},
		{name: "data file extension", spec: qcow2Spec{size: 4096, exts: []qcow2Ext{{typ: qcow2ExtDataFile, data: []byte("/dev/sda")}}},
			wantErr: ErrHostile, wantMsg: `qcow2 has an external data file "/dev/sda"`},
		{name: "data file extension after another", spec: qcow2Spec{size: 4096, exts: []qcow2Ext{{typ: 0xe2792aca, data: []byte("raw")}, {typ: qcow2ExtDataFile, data: []byte("d")}}},
			wantErr: ErrHostile, wantMsg: `external data file "d"`},
		{name: "data file feature bit alone", spec: qcow2Spec{size: 4096, incompat: qcow2IncompatDataFile},
			wantErr: ErrHostile, wantMsg: "incompatible feature bit 2"},
		{name: "aes encryption", spec: qcow2Spec{size: 4096, crypt: 1},
			wantErr: ErrHostile, wantMsg: "encrypted (crypt method 1)"},
		{name: "luks encryption", spec: qcow2Spec{size: 4096, crypt: 2},
			wantErr: ErrHostile, wantMsg: "encrypted (crypt method 2)"},
		{name: "marked corrupt", spec: qcow2Spec{size: 4096, incompat: qcow2IncompatCorrupt},
			wantErr: errdefs.ErrInvalid, wantMsg: "marked corrupt"},
		{name: "unknown incompatible feature", spec: qcow2Spec{size: 4096, incompat: 1 << 9},
			wantErr: errdefs.ErrInvalid, wantMsg: "unknown incompatible feature bit 9"},
		{name: "version 1", spec: qcow2Spec{version: 1},
			wantErr: errdefs.ErrInvalid, wantMsg: "unsupported qcow2 version 1"},
		{name: "cluster bits too small", spec: qcow2Spec{clusterBits: 8},
			wantErr: errdefs.ErrInvalid, wantMsg: "cluster bits 8"},
		{name: "header length beyond the cluster", spec: qcow2Spec{clusterBits: 9, headerLen: 1024},
			wantErr: errdefs.ErrInvalid, wantMsg: "header length 1024"},
		{name: "header length below v3 minimum", spec: qcow2Spec{headerLen: 80},
			wantErr: errdefs.ErrInvalid, wantMsg: "header length 80"},
		{name: "extension overruns the cluster", spec: qcow2Spec{clusterBits: 9, exts: []qcow2Ext{{typ: 7, data: make([]byte, 401)}}},
			wantErr: errdefs.ErrInvalid, wantMsg: "overruns the first cluster"},
		{name: "virtual size beyond int64", spec: qcow2Spec{size: 1 << 63},
			wantErr: errdefs.ErrInvalid, wantMsg: "virtual size"},
		{name: "truncated v3 header", spec: qcow2Spec{truncate: 90},
			wantErr: errdefs.ErrInvalid, wantMsg: "truncated"},
		{name: "truncated v2 header", spec: qcow2Spec{version: 2, truncate: 40},
			wantErr: errdefs.ErrInvalid, wantMsg: "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.spec.bytes()
			info, err := Probe(bytes.NewReader(b), int64(len(b)))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("Probe = %+v, %v; want %v mentioning %q", info, err, tt.wantErr, tt.wantMsg)
				}
				if !errors.Is(tt.wantErr, ErrHostile) && errors.Is(err, ErrHostile) {
					t.Fatalf("broken image reported as hostile: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Probe: %v", err)
			}
			want := Info{Format: FormatQcow2, VirtualSize: tt.wantSize, Version: tt.wantVersion}
			if info != want {
				t.Fatalf("Probe = %+v, want %+v", info, want)
			}
		})
	}
}
