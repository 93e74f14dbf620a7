package images

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// Compression is how a downloaded image is compressed, detected from its
// magic bytes and never from a ".gz"/".xz" suffix.
type Compression string

// Compressions vmd can undo.
const (
	// CompressionNone means the bytes are the image itself.
	CompressionNone Compression = ""
	// CompressionGzip is RFC 1952 gzip (possibly several members).
	CompressionGzip Compression = "gzip"
	// CompressionXZ is the .xz container (LZMA2), as cloud images ship.
	CompressionXZ Compression = "xz"
)

var (
	magicGzip = []byte{0x1f, 0x8b, 0x08} // ID1, ID2, CM=deflate
	magicXZ   = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
)

// DetectCompression reports the compression of data that starts with
// head (at least 6 bytes when available).
func DetectCompression(head []byte) Compression {
	switch {
	case bytes.HasPrefix(head, magicGzip):
		return CompressionGzip
	case bytes.HasPrefix(head, magicXZ):
		return CompressionXZ
	default:
		return CompressionNone
	}
}

// Decompressor streams the decompressed form of src into dst. It is an
// interface so the xz implementation, which today runs the xz program,
// can be swapped for a pure-Go decoder without touching the fetcher.
type Decompressor interface {
	// Decompress MUST read src to its end and fail on trailing garbage or
	// a truncated stream: a silently short image would boot corrupt.
	Decompress(ctx context.Context, dst io.Writer, src io.Reader) error
}

// GzipDecompressor uses the standard library.
type GzipDecompressor struct{}

// Decompress implements Decompressor.
func (GzipDecompressor) Decompress(ctx context.Context, dst io.Writer, src io.Reader) error {
	zr, err := gzip.NewReader(bufio.NewReaderSize(src, 1<<20))
	if err != nil {
		return fmt.Errorf("reading gzip header: %w: %w", err, errdefs.ErrInvalid)
	}
	defer zr.Close()
	if _, err := io.Copy(dst, ctxReader{ctx, zr}); err != nil {
		if isCorrupt(err) {
			return fmt.Errorf("decompressing gzip: %w: %w", err, errdefs.ErrInvalid)
		}
		return fmt.Errorf("decompressing gzip: %w", err)
	}
	return nil
}

// isCorrupt tells bad data (the image's fault) from I/O errors on the
// destination (the host's fault).
func isCorrupt(err error) bool {
	var corrupt flate.CorruptInputError
	return errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &corrupt)
}

// ctxReader stops a long copy when ctx is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// XZCommand decompresses by streaming through the xz program (Debian
// package xz-utils). The standard library has no xz decoder and the pinned
// module set has none either, so this is the one place images runs a
// program; the bytes still never touch a shell or a temporary file.
type XZCommand struct {
	// Path is the xz binary; "xz" (looked up in PATH) when empty.
	Path string
	// MemLimit caps the decoder's memory, as xz's --memlimit-decompress
	// accepts it ("25%", "1GiB"). A hostile header can ask for a 4 GiB
	// dictionary; default "25%" of RAM, far above the 64 MiB that xz -9
	// needs.
	MemLimit string
}

// Decompress implements Decompressor.
func (x XZCommand) Decompress(ctx context.Context, dst io.Writer, src io.Reader) error {
	path := x.Path
	if path == "" {
		path = "xz"
	}
	bin, err := exec.LookPath(path)
	if err != nil {
		return fmt.Errorf("decompressing xz: the xz program (xz-utils) is needed: %w: %w", err, errdefs.ErrUnavailable)
	}
	limit := x.MemLimit
	if limit == "" {
		limit = "25%"
	}
	// -T0 lets xz decode multi-block files on every core; --single-stream
	// is not set so concatenated .xz streams work as with xz -dc.
	cmd := exec.CommandContext(ctx, bin, "--decompress", "--stdout", "--quiet", "--threads=0",
		"--memlimit-decompress="+limit)
	cmd.Stdin = src
	cmd.Stdout = dst
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("decompressing xz: %w", ctx.Err())
		}
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			// xz exits 1 on corrupt or truncated input and on memory
			// limit violations: the data is at fault, not the host.
			return fmt.Errorf("decompressing xz: %s: %w", strings.TrimSpace(stderr.String()), errdefs.ErrInvalid)
		}
		return fmt.Errorf("decompressing xz: %w", err)
	}
	return nil
}

// limitedBuffer keeps the first 4 KiB written to it: enough of xz's
// stderr for an error message, bounded whatever xz prints.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// DefaultDecompressors is what a Fetcher uses unless configured otherwise.
func DefaultDecompressors() map[Compression]Decompressor {
	return map[Compression]Decompressor{
		CompressionGzip: GzipDecompressor{},
		CompressionXZ:   XZCommand{},
	}
}
