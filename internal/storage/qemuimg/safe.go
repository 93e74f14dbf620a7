package qemuimg

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// CheckSafe applies vmd's hostile-image policy to what qemu-img reports
// about an image. An image vmd imports (allowedBacking == "") must be
// self-contained: no backing file, no external data file, no vmdk extent in
// another file. Only the overlays vmd creates itself may have a backing
// file, and then only exactly allowedBacking with a recorded backing format.
// Encrypted images and qcow2 images marked corrupt are refused too: vmd
// cannot use them as they are.
//
// Every reason found is named in one error that wraps errdefs.ErrInvalid,
// e.g. "image has a backing file /etc/passwd". This is defence in depth: the
// byte-level sniffer in internal/images rejects such files before qemu-img
// opens them at all.
func CheckSafe(info Info, allowedBacking string) error {
	var reasons []string
	if info.BackingFile != "" {
		switch {
		case allowedBacking == "":
			reasons = append(reasons, "image has a backing file "+info.BackingFile)
		case info.BackingFile != allowedBacking:
			reasons = append(reasons, fmt.Sprintf("image has a backing file %s, only %s is allowed", info.BackingFile, allowedBacking))
		case info.BackingFormat == "":
			reasons = append(reasons, fmt.Sprintf("image's backing file %s has no recorded format (qemu would have to guess it)", info.BackingFile))
		}
	}
	if info.DataFile != "" {
		reasons = append(reasons, "image has an external data file "+info.DataFile)
	}
	for _, e := range info.Extents {
		if filepath.Clean(e) != filepath.Clean(info.Filename) {
			reasons = append(reasons, "image has an extent in another file "+e)
		}
	}
	if info.Encrypted {
		reasons = append(reasons, "image is encrypted")
	}
	if info.Corrupt {
		reasons = append(reasons, "image is marked corrupt")
	}
	if len(reasons) == 0 {
		return nil
	}
	what := strings.TrimSpace(string(info.Format) + " " + info.Filename)
	if what == "" {
		what = "image"
	}
	return fmt.Errorf("unsafe %s: %s: %w", what, strings.Join(reasons, "; "), errdefs.ErrInvalid)
}
