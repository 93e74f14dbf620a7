package images

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vmdhq/vmd/internal/errdefs"
)

func gzipBytes(t *testing.T, parts ...[]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, p := range parts { // one gzip member per part
		zw := gzip.NewWriter(&buf)
		if _, err := zw.Write(p); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func xzBytes(t *testing.T, args []string, data []byte) []byte {
	t.Helper()
	needTool(t, "xz")
	cmd := exec.Command("xz", append([]string{"-c"}, args...)...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz: %v", err)
	}
	return out
}

func TestDetectCompression(t *testing.T) {
	tests := []struct {
		name string
		head []byte
		want Compression
	}{
		{name: "gzip", head: []byte{0x1f, 0x8b, 0x08, 0, 0, 0}, want: CompressionGzip},
		{name: "xz", head: []byte{0xfd, '7', 'z', 'X', 'Z', 0}, want: CompressionXZ},
		{name: "gzip magic with unknown method", head: []byte{0x1f, 0x8b, 0x09}, want: CompressionNone},
		{name: "qcow2", head: []byte("QFI\xfb\x00\x00\x00\x03"), want: CompressionNone},
		{name: "short", head: []byte{0x1f}, want: CompressionNone},
		{name: "empty", head: nil, want: CompressionNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := DetectCompression(tt.head); got != tt.want {
				t.Fatalf("DetectCompression = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDecompress(t *testing.T) {
	plain := diskBytes(t, 300<<10)
	gz := gzipBytes(t, plain)
	tests := []struct {
		name    string
		d       Decompressor
		input   func(t *testing.T) []byte
		want    []byte
		wantErr error
	}{
		{name: "gzip", d: GzipDecompressor{}, input: func(*testing.T) []byte { return gz }, want: plain},
		{name: "gzip multi-member", d: GzipDecompressor{},
			input: func(t *testing.T) []byte { return gzipBytes(t, plain[:1000], plain[1000:]) }, want: plain},
		{name: "gzip truncated", d: GzipDecompressor{}, wantErr: errdefs.ErrInvalid,
			input: func(*testing.T) []byte { return gz[:len(gz)/2] }},
		{name: "gzip bad checksum", d: GzipDecompressor{}, wantErr: errdefs.ErrInvalid,
			input: func(*testing.T) []byte {
				b := bytes.Clone(gz)
				b[len(b)-8] ^= 0xff // CRC-32 in the trailer
				return b
			}},
		{name: "gzip trailing garbage", d: GzipDecompressor{}, wantErr: errdefs.ErrInvalid,
			input: func(*testing.T) []byte { return append(bytes.Clone(gz), "garbage"...) }},
		{name: "not gzip", d: GzipDecompressor{}, wantErr: errdefs.ErrInvalid,
			input: func(*testing.T) []byte { return plain }},
		{name: "xz", d: XZCommand{}, want: plain,
			input: func(t *testing.T) []byte { return xzBytes(t, []string{"-1"}, plain) }},
		{name: "xz multi-block (threaded)", d: XZCommand{}, want: plain,
			input: func(t *testing.T) []byte { return xzBytes(t, []string{"-1", "--block-size=65536", "-T2"}, plain) }},
		{name: "xz truncated", d: XZCommand{}, wantErr: errdefs.ErrInvalid,
			input: func(t *testing.T) []byte { b := xzBytes(t, []string{"-1"}, plain); return b[:len(b)-20] }},
		{name: "xz dictionary above the memory limit", d: XZCommand{MemLimit: "1MiB"}, wantErr: errdefs.ErrInvalid,
			input: func(t *testing.T) []byte { return xzBytes(t, []string{"-6"}, plain) }},
		{name: "xz program missing", d: XZCommand{Path: filepath.Join(t.TempDir(), "no-xz")}, wantErr: errdefs.ErrUnavailable,
			input: func(*testing.T) []byte { return []byte{0xfd, '7', 'z', 'X', 'Z', 0} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := tt.d.Decompress(t.Context(), &out, bytes.NewReader(tt.input(t)))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Decompress = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), tt.want) {
				t.Fatalf("decompressed %d bytes, not the original %d", out.Len(), len(tt.want))
			}
		})
	}
}

func TestDecompressCancelled(t *testing.T) {
	gz := gzipBytes(t, make([]byte, 1<<20))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var out bytes.Buffer
	if err := (GzipDecompressor{}).Decompress(ctx, &out, bytes.NewReader(gz)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Decompress = %v, want context.Canceled", err)
	}
}
