package qemuimg

import (
	"context"
	"encoding/json"
	"fmt"
)

// Info is what qemu-img reports about one image file, without following its
// backing chain or opening its data file.
type Info struct {
	// Filename is the path qemu-img was given (always absolute here).
	Filename string
	// Format is the format the image was opened as: the one the caller
	// asserted, never a probed one.
	Format Format
	// VirtualSize is the size of the disk the guest sees, in bytes.
	VirtualSize int64
	// ActualSize is the space the file occupies on the host, in bytes.
	ActualSize int64
	// ClusterSize is the allocation unit of qcow2/vmdk/vhdx/vdi; 0 for raw.
	ClusterSize int64
	// BackingFile is the backing file name exactly as recorded in the
	// image header (not resolved), empty when there is none.
	BackingFile string
	// BackingFormat is the recorded format of BackingFile; empty means
	// qemu would have to probe it.
	BackingFormat string
	// DataFile is a qcow2 external data file ("data-file" in the
	// format-specific section): guest data lives in that other file.
	DataFile string
	// DataFileRaw is qcow2's data-file-raw flag.
	DataFileRaw bool
	// Extents lists the files a vmdk reads its data from. A monolithic
	// vmdk has one extent: itself.
	Extents []string
	// Dirty is set on a qcow2 with lazy refcounts that was not closed
	// cleanly; qemu repairs it on the next read-write open.
	Dirty bool
	// Corrupt is qcow2's corrupt bit: qemu refuses writes until repaired.
	Corrupt bool
	// Encrypted is set when the image needs a key to be read.
	Encrypted bool
}

// infoJSON mirrors the fields of `qemu-img info --output=json` vmd uses.
type infoJSON struct {
	Filename        string `json:"filename"`
	Format          string `json:"format"`
	VirtualSize     int64  `json:"virtual-size"`
	ActualSize      int64  `json:"actual-size"`
	ClusterSize     int64  `json:"cluster-size"`
	BackingFilename string `json:"backing-filename"`
	BackingFormat   string `json:"backing-filename-format"`
	DirtyFlag       bool   `json:"dirty-flag"`
	Encrypted       bool   `json:"encrypted"`
	FormatSpecific  struct {
		Type string `json:"type"`
		Data struct {
			// qcow2
			DataFile    string `json:"data-file"`
			DataFileRaw bool   `json:"data-file-raw"`
			Corrupt     bool   `json:"corrupt"`
			// vmdk
			Extents []struct {
				Filename string `json:"filename"`
			} `json:"extents"`
		} `json:"data"`
	} `json:"format-specific"`
}

// Info inspects the image at path, opened as format:
//
//	qemu-img info --output=json -f FORMAT --force-share PATH
//
// --force-share lets it read the header of a disk a running VM holds open.
// qemu-img info opens neither the backing file nor a qcow2 data file, so
// inspecting a hostile qcow2 reads only its own header. (A vmdk descriptor's
// extents are opened: the byte-level sniffer must reject foreign extents
// before Info ever sees such a file.) A missing path is errdefs.ErrNotFound.
func (r *Runner) Info(ctx context.Context, path string, format Format) (Info, error) {
	if err := format.Validate(); err != nil {
		return Info{}, fmt.Errorf("inspecting %s: %w", path, err)
	}
	abs, err := absPath("image", path)
	if err != nil {
		return Info{}, fmt.Errorf("inspecting %s: %w", path, err)
	}
	if _, err := statExisting(abs); err != nil {
		return Info{}, fmt.Errorf("inspecting: %w", err)
	}
	out, err := r.run(ctx, nil, "info", "--output=json", "-f", string(format), "--force-share", abs)
	if err != nil {
		return Info{}, fmt.Errorf("inspecting %s: %w", abs, err)
	}
	info, err := parseInfo(out)
	if err != nil {
		return Info{}, fmt.Errorf("inspecting %s: %w", abs, err)
	}
	return info, nil
}

// parseInfo decodes qemu-img's JSON. Sizes are int64 in the JSON already;
// decoding into int64 keeps exact byte counts above 2^53.
func parseInfo(out []byte) (Info, error) {
	var j infoJSON
	if err := json.Unmarshal(out, &j); err != nil {
		return Info{}, fmt.Errorf("decoding qemu-img info output: %w", err)
	}
	info := Info{
		Filename:      j.Filename,
		Format:        Format(j.Format),
		VirtualSize:   j.VirtualSize,
		ActualSize:    j.ActualSize,
		ClusterSize:   j.ClusterSize,
		BackingFile:   j.BackingFilename,
		BackingFormat: j.BackingFormat,
		Dirty:         j.DirtyFlag,
		Encrypted:     j.Encrypted,
		DataFile:      j.FormatSpecific.Data.DataFile,
		DataFileRaw:   j.FormatSpecific.Data.DataFileRaw,
		Corrupt:       j.FormatSpecific.Data.Corrupt,
	}
	for _, e := range j.FormatSpecific.Data.Extents {
		info.Extents = append(info.Extents, e.Filename)
	}
	return info, nil
}
