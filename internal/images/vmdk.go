package images

import (
	"bytes"
	"encoding/binary"
	"io"
	"math"
	"strconv"
	"strings"
)

// vmdk limits. A descriptor is a few hundred bytes; qemu reads at most
// 1 MiB of one, and so does vmd.
const (
	vmdkSparseHeaderLen = 512
	vmdkMaxDescriptor   = 1 << 20
)

// vmdkDescriptor is what vmd reads from a VMDK descriptor.
type vmdkDescriptor struct {
	CreateType string
	// Parent is parentFileNameHint: a backing file.
	Parent    string
	HasParent bool
	Extents   []vmdkExtent
}

// vmdkExtent is one extent line: `RW 20480 SPARSE "disk.vmdk"`.
type vmdkExtent struct {
	Access  string
	Sectors int64
	Type    string
	// File is the file the extent lives in; empty for ZERO extents.
	File string
}

// probeVMDK handles both VMDK shapes. A sparse file ("KDMV") is the disk
// itself, and its embedded descriptor may only describe that one file; a
// text descriptor points at other files by definition, so any extent with
// a file name in it is refused. A parentFileNameHint is a backing file in
// either shape.
func probeVMDK(r io.ReaderAt, size int64) (Info, error) {
	head, err := readAt(r, 0, min(size, vmdkSparseHeaderLen), size)
	if err != nil {
		return Info{}, err
	}
	switch {
	case bytes.HasPrefix(head, magicVMDK3):
		return Info{}, malformed("unsupported vmdk version 3 (COWD) image")
	case bytes.HasPrefix(head, magicVMDK4):
		return probeVMDKSparse(r, size)
	}
	desc, err := readAt(r, 0, min(size, vmdkMaxDescriptor), size)
	if err != nil {
		return Info{}, err
	}
	d := parseVMDKDescriptor(desc)
	if d.HasParent {
		return Info{}, hostile("vmdk has a parent file %q", d.Parent)
	}
	if len(d.Extents) == 0 {
		return Info{}, malformed("vmdk descriptor has no extents")
	}
	var total int64
	for _, e := range d.Extents {
		if e.File != "" {
			return Info{}, hostile("vmdk extent references external file %q", e.File)
		}
		if e.Sectors < 0 || e.Sectors > (math.MaxInt64/sector)-total/sector {
			return Info{}, malformed("vmdk extent size out of range")
		}
		total += e.Sectors * sector
	}
	return Info{Format: FormatVMDK, VirtualSize: total}, nil
}

// probeVMDKSparse reads a VMDK4 sparse extent header and checks its
// embedded descriptor, if any.
func probeVMDKSparse(r io.ReaderAt, size int64) (Info, error) {
	h, err := readAt(r, 0, vmdkSparseHeaderLen, size)
	if err != nil {
		return Info{}, err
	}
	le := binary.LittleEndian
	version := le.Uint32(h[4:])
	capacity := le.Uint64(h[12:])
	descOff := le.Uint64(h[28:])
	descLen := le.Uint64(h[36:])
	if version < 1 || version > 3 {
		return Info{}, malformed("unsupported vmdk sparse version %d", version)
	}
	if capacity > math.MaxInt64/sector {
		return Info{}, malformed("vmdk capacity %d sectors out of range", capacity)
	}
	if descOff != 0 && descLen != 0 {
		if descLen > vmdkMaxDescriptor/sector || descOff > uint64(size)/sector {
			return Info{}, malformed("vmdk embedded descriptor out of range")
		}
		raw, err := readAt(r, int64(descOff)*sector, int64(descLen)*sector, size)
		if err != nil {
			return Info{}, err
		}
		// The descriptor area is NUL-padded.
		if i := bytes.IndexByte(raw, 0); i >= 0 {
			raw = raw[:i]
		}
		d := parseVMDKDescriptor(raw)
		if d.HasParent {
			return Info{}, hostile("vmdk has a parent file %q", d.Parent)
		}
		if len(d.Extents) > 1 {
			return Info{}, hostile("vmdk sparse image describes %d extents; only the image itself is allowed", len(d.Extents))
		}
		for _, e := range d.Extents {
			if e.Type != "SPARSE" || e.File == "" || strings.ContainsAny(e.File, `/\`) {
				return Info{}, hostile("vmdk sparse image describes extent %s %q; only the image itself is allowed", e.Type, e.File)
			}
		}
	}
	return Info{Format: FormatVMDK, VirtualSize: int64(capacity) * sector, Version: version}, nil
}

// vmdkAccess are the access modes that start an extent line.
var vmdkAccess = map[string]bool{"RW": true, "RDONLY": true, "NOACCESS": true}

// parseVMDKDescriptor reads the lines vmd cares about and ignores the rest
// (the disk database, comments). It is deliberately more suspicious than
// qemu: any line that starts with an access mode is an extent, whether or
// not qemu would use it, and an unquoted file name counts as a file name.
func parseVMDKDescriptor(b []byte) vmdkDescriptor {
	var d vmdkDescriptor
	for line := range strings.Lines(string(b)) {
		l := strings.TrimSpace(line)
		if l == "" || l[0] == '#' {
			continue
		}
		if key, val, ok := strings.Cut(l, "="); ok {
			key = strings.TrimSpace(key)
			val = strings.Trim(strings.TrimSpace(val), `"`)
			switch key {
			case "createType":
				d.CreateType = val
			case "parentFileNameHint":
				d.Parent, d.HasParent = val, true
			}
			if !strings.Contains(key, " ") {
				continue
			}
		}
		fields := strings.Fields(l)
		if len(fields) < 3 || !vmdkAccess[fields[0]] {
			continue
		}
		e := vmdkExtent{Access: fields[0], Type: fields[2]}
		e.Sectors, _ = strconv.ParseInt(fields[1], 10, 64)
		rest := afterFields(l, 3)
		if strings.HasPrefix(rest, `"`) {
			if end := strings.IndexByte(rest[1:], '"'); end >= 0 {
				e.File = rest[1 : 1+end]
			} else {
				e.File = rest[1:]
			}
		} else if len(fields) > 3 {
			e.File = fields[3]
		}
		d.Extents = append(d.Extents, e)
	}
	return d
}

// afterFields returns s without its first n whitespace-separated fields
// and the blanks after them.
func afterFields(s string, n int) string {
	for range n {
		s = strings.TrimLeft(s, " \t")
		i := strings.IndexAny(s, " \t")
		if i < 0 {
			return ""
		}
		s = s[i:]
	}
	return strings.TrimLeft(s, " \t")
}
