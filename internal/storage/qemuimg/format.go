package qemuimg

import (
	"fmt"
	"strings"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// Format is a qemu block driver name for an image file format. Only the
// formats vmd imports are listed: everything else (qed, vvfat, parallels,
// cloop, dmg, ...) is refused, because an allow-list is the only safe answer
// to a hostile image.
type Format string

// The formats vmd understands, spelled as qemu-img spells them.
const (
	FormatQCOW2 Format = "qcow2"
	// FormatRaw is a plain byte-for-byte disk. ISO 9660 images are raw to
	// qemu-img; whether a disk is optical is modelled outside this package.
	FormatRaw  Format = "raw"
	FormatVMDK Format = "vmdk"
	// FormatVPC is the Microsoft VHD format, which qemu calls "vpc".
	FormatVPC  Format = "vpc"
	FormatVHDX Format = "vhdx"
	FormatVDI  Format = "vdi"
)

// Formats lists every supported format, in a stable order.
var Formats = []Format{FormatQCOW2, FormatRaw, FormatVMDK, FormatVPC, FormatVHDX, FormatVDI}

// ParseFormat maps a format name as users and sniffers say it to the qemu
// driver name: "vhd" is "vpc" and "iso" is "raw". Unknown names are
// errdefs.ErrInvalid.
func ParseFormat(s string) (Format, error) {
	switch v := strings.ToLower(strings.TrimSpace(s)); v {
	case "vhd":
		return FormatVPC, nil
	case "iso":
		return FormatRaw, nil
	default:
		f := Format(v)
		if err := f.Validate(); err != nil {
			return "", err
		}
		return f, nil
	}
}

// Validate reports whether f is one of Formats. An empty format is an error:
// an empty -f would let qemu-img probe, which is exactly what this package
// exists to prevent.
func (f Format) Validate() error {
	for _, ok := range Formats {
		if f == ok {
			return nil
		}
	}
	if f == "" {
		return fmt.Errorf("image format is not set (qemu-img must never guess it): %w", errdefs.ErrInvalid)
	}
	return fmt.Errorf("unsupported image format %q (want one of %s): %w", string(f), formatList(), errdefs.ErrInvalid)
}

func formatList() string {
	names := make([]string, len(Formats))
	for i, f := range Formats {
		names[i] = string(f)
	}
	return strings.Join(names, ", ")
}
