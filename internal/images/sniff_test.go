package images

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// TestInspectRealImages builds every format with qemu-img from the same
// raw disk and checks the sniffed format, the hostile verdict, and the
// virtual size against what qemu-img itself reports for that format.
func TestInspectRealImages(t *testing.T) {
	needTool(t, "qemu-img")
	dir := t.TempDir()
	raw := rawDisk(t, dir)
	p := func(name string) string { return filepath.Join(dir, name) }

	tests := []struct {
		name  string
		build func(t *testing.T) string
		want  Format
		// qemuFormat, when set, cross-checks VirtualSize with qemu-img.
		qemuFormat string
		// wantErr is ErrHostile or errdefs.ErrInvalid; wantMsg a substring.
		wantErr error
		wantMsg string
	}{
		{name: "qcow2 v3", want: FormatQcow2, qemuFormat: "qcow2",
			build: func(t *testing.T) string { return convert(t, raw, p("v3.qcow2"), "qcow2") }},
		{name: "qcow2 v2", want: FormatQcow2, qemuFormat: "qcow2",
			build: func(t *testing.T) string { return convert(t, raw, p("v2.qcow2"), "qcow2", "compat=0.10") }},
		{name: "qcow2 zstd compression type", want: FormatQcow2, qemuFormat: "qcow2",
			build: func(t *testing.T) string { return convert(t, raw, p("zstd.qcow2"), "qcow2", "compression_type=zstd") }},
		{name: "vmdk monolithicSparse", want: FormatVMDK, qemuFormat: "vmdk",
			build: func(t *testing.T) string { return convert(t, raw, p("sparse.vmdk"), "vmdk") }},
		{name: "vmdk streamOptimized", want: FormatVMDK, qemuFormat: "vmdk",
			build: func(t *testing.T) string {
				return convert(t, raw, p("stream.vmdk"), "vmdk", "subformat=streamOptimized")
			}},
		{name: "vhd dynamic", want: FormatVHD, qemuFormat: "vpc",
			build: func(t *testing.T) string { return convert(t, raw, p("dyn.vhd"), "vpc") }},
		{name: "vhd fixed (footer only)", want: FormatVHD, qemuFormat: "vpc",
			build: func(t *testing.T) string { return convert(t, raw, p("fixed.vhd"), "vpc", "subformat=fixed") }},
		{name: "vhd fixed force_size", want: FormatVHD, qemuFormat: "vpc",
			build: func(t *testing.T) string {
				return convert(t, raw, p("forced.vhd"), "vpc", "subformat=fixed", "force_size=on")
			}},
		{name: "vhdx", want: FormatVHDX, qemuFormat: "vhdx",
			build: func(t *testing.T) string { return convert(t, raw, p("img.vhdx"), "vhdx") }},
		{name: "vdi", want: FormatVDI, qemuFormat: "vdi",
			build: func(t *testing.T) string { return convert(t, raw, p("img.vdi"), "vdi") }},
		{name: "vdi static", want: FormatVDI, qemuFormat: "vdi",
			build: func(t *testing.T) string { return convert(t, raw, p("static.vdi"), "vdi", "static=on") }},
		{name: "raw with MBR", want: FormatRaw, qemuFormat: "raw",
			build: func(t *testing.T) string { return raw }},
		{name: "iso", want: FormatISO, qemuFormat: "raw",
			build: func(t *testing.T) string { return makeISO(t, dir) }},
		{name: "qcow2 with backing file", wantErr: ErrHostile, wantMsg: `qcow2 has a backing file "` + p("base.qcow2") + `"`,
			build: func(t *testing.T) string {
				convert(t, raw, p("base.qcow2"), "qcow2")
				run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", p("base.qcow2"), "-F", "qcow2", p("overlay.qcow2"))
				return p("overlay.qcow2")
			}},
		{name: "qcow2 with external data file", wantErr: ErrHostile, wantMsg: `qcow2 has an external data file "` + p("data.raw") + `"`,
			build: func(t *testing.T) string {
				run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+p("data.raw"), p("datafile.qcow2"), "10M")
				return p("datafile.qcow2")
			}},
		// AES rather than LUKS: LUKS key setup times PBKDF2 with
		// getrusage, which fails in some containers.
		{name: "qcow2 encrypted", wantErr: ErrHostile, wantMsg: "qcow2 is encrypted (crypt method 1)",
			build: func(t *testing.T) string {
				run(t, "qemu-img", "create", "-q", "--object", "secret,id=sec0,data=123456", "-f", "qcow2",
					"-o", "encrypt.format=aes,encrypt.key-secret=sec0", p("aes.qcow2"), "10M")
				return p("aes.qcow2")
			}},
		{name: "vmdk descriptor with external flat extent", wantErr: ErrHostile, wantMsg: `vmdk extent references external file "flat-flat.vmdk"`,
			build: func(t *testing.T) string {
				return convert(t, raw, p("flat.vmdk"), "vmdk", "subformat=monolithicFlat")
			}},
		{name: "vmdk descriptor with split sparse extents", wantErr: ErrHostile, wantMsg: `vmdk extent references external file "split-s001.vmdk"`,
			build: func(t *testing.T) string {
				return convert(t, raw, p("split.vmdk"), "vmdk", "subformat=twoGbMaxExtentSparse")
			}},
		{name: "vmdk sparse whose descriptor names a parent", wantErr: ErrHostile, wantMsg: `vmdk has a parent file "/etc/shadow"`,
			build: func(t *testing.T) string {
				return patchVMDKDescriptor(t, convert(t, raw, p("parent.vmdk"), "vmdk"), "parentFileNameHint=\"/etc/shadow\"\n")
			}},
		{name: "vmdk sparse whose descriptor adds a flat extent", wantErr: ErrHostile, wantMsg: "only the image itself is allowed",
			build: func(t *testing.T) string {
				return patchVMDKDescriptor(t, convert(t, raw, p("extra.vmdk"), "vmdk"), "RW 20480 FLAT \"/dev/sda\" 0\n")
			}},
		{name: "vhd differencing", wantErr: ErrHostile, wantMsg: "vhd is a differencing disk",
			build: func(t *testing.T) string {
				path := convert(t, raw, p("diff.vhd"), "vpc")
				b := readAll(t, path)
				binary.BigEndian.PutUint32(b[60:], 4)
				binary.BigEndian.PutUint32(b[len(b)-512+60:], 4)
				return writeFile(t, dir, "diff-patched.vhd", b)
			}},
		{name: "vhdx differencing", wantErr: ErrHostile, wantMsg: "vhdx is a differencing disk (HasParent is set)",
			build: func(t *testing.T) string { return patchVHDXHasParent(t, convert(t, raw, p("diff.vhdx"), "vhdx")) }},
		{name: "vdi differencing", wantErr: ErrHostile, wantMsg: "vdi is a differencing image",
			build: func(t *testing.T) string {
				b := readAll(t, convert(t, raw, p("diff.vdi"), "vdi"))
				binary.LittleEndian.PutUint32(b[0x4c:], 4)
				return writeFile(t, dir, "diff-patched.vdi", b)
			}},
		{name: "qed is refused by name", wantErr: errdefs.ErrInvalid, wantMsg: "unsupported image format: qed",
			build: func(t *testing.T) string { return convert(t, raw, p("img.qed"), "qed") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.build(t)
			info, err := Inspect(path)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !errors.Is(err, errdefs.ErrInvalid) {
					t.Fatalf("Inspect = %+v, %v; want error matching %v and ErrInvalid", info, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("error %q does not name the reason %q", err, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Inspect: %v", err)
			}
			if info.Format != tt.want || info.Guessed {
				t.Fatalf("Inspect = %+v, want format %s, not guessed", info, tt.want)
			}
			if want := qemuVirtualSize(t, path, tt.qemuFormat); info.VirtualSize != want {
				t.Errorf("VirtualSize = %d, qemu-img says %d", info.VirtualSize, want)
			}
			if err := info.Check(tt.want == FormatISO); err != nil {
				t.Errorf("Check: %v", err)
			}
		})
	}
}

func readAll(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// makeISO builds a small ISO 9660 image with genisoimage (or xorriso).
func makeISO(t *testing.T, dir string) string {
	t.Helper()
	src := filepath.Join(dir, "iso-root")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, src, "meta-data", []byte("instance-id: test\n"))
	out := filepath.Join(dir, "cidata.iso")
	if _, err := os.Stat(out); err == nil {
		return out
	}
	if tool, err := lookTool("genisoimage", "xorriso"); err != nil {
		t.Skipf("no ISO tool: %v", err)
	} else if tool == "genisoimage" {
		run(t, tool, "-quiet", "-o", out, "-V", "cidata", "-J", "-r", src)
	} else {
		run(t, tool, "-as", "mkisofs", "-quiet", "-o", out, "-V", "cidata", "-J", "-r", src)
	}
	return out
}

// patchVMDKDescriptor appends line to the NUL-padded embedded descriptor
// of a monolithicSparse vmdk, as an attacker editing the file would.
func patchVMDKDescriptor(t *testing.T, path, line string) string {
	t.Helper()
	b := readAll(t, path)
	start := bytes.Index(b, vmdkDescStart)
	if start < 0 {
		t.Fatal("no embedded descriptor")
	}
	end := start + bytes.IndexByte(b[start:], 0)
	copy(b[end:], line)
	return writeFile(t, filepath.Dir(path), "patched-"+filepath.Base(path), b)
}

// patchVHDXHasParent sets the HasParent flag in the file parameters
// metadata item, turning the image into a (parentless) differencing disk.
func patchVHDXHasParent(t *testing.T, path string) string {
	t.Helper()
	b := readAll(t, path)
	le := binary.LittleEndian
	rt := b[vhdxRegionTable1:]
	var meta uint64
	for i := range le.Uint32(rt[8:]) {
		e := rt[16+32*i:]
		if [16]byte(e[:16]) == vhdxMetadataRegion {
			meta = le.Uint64(e[16:])
		}
	}
	mt := b[meta:]
	for i := range le.Uint16(mt[10:]) {
		e := mt[32+32*int(i):]
		if [16]byte(e[:16]) == vhdxFileParams {
			off := meta + uint64(le.Uint32(e[16:]))
			le.PutUint32(b[off+4:], le.Uint32(b[off+4:])|vhdxHasParentFlag)
			return writeFile(t, filepath.Dir(path), "parent-"+filepath.Base(path), b)
		}
	}
	t.Fatal("no file parameters item")
	return ""
}

// TestSniffBytes covers the magic-byte rules with synthetic images, no
// tools needed: what each format looks like, what raw may be, and that the
// name never matters (there is none).
func TestSniffBytes(t *testing.T) {
	at := func(size int, off int, magic string) []byte {
		b := make([]byte, size)
		copy(b[off:], magic)
		return b
	}
	mbr := at(4096, 510, "\x55\xaa")
	gpt := at(8192, 512, "EFI PART")
	gpt4k := at(8192, 4096, "EFI PART")
	vdi := at(1024, 0, "<<< Oracle VM VirtualBox Disk Image >>>\n")
	binary.LittleEndian.PutUint32(vdi[0x40:], vdiSignature)
	badVDI := at(1024, 0, "<<< not really >>>\n")
	fixedVHD := at(8192, 8192-512, "conectix")

	tests := []struct {
		name        string
		data        []byte
		want        Format
		wantGuessed bool
		wantErr     string
	}{
		{name: "qcow2 magic", data: at(512, 0, "QFI\xfb"), want: FormatQcow2},
		{name: "vmdk sparse magic", data: at(512, 0, "KDMV"), want: FormatVMDK},
		{name: "vmdk descriptor header", data: []byte("# Disk DescriptorFile\nversion=1\n"), want: FormatVMDK},
		{name: "vmdk descriptor as qemu probes it", data: []byte("# comment\n\nversion=1\nRW 1 FLAT \"x\" 0\n"), want: FormatVMDK},
		{name: "text that is not a descriptor", data: []byte("# comment\nhello=1\n"), want: FormatRaw, wantGuessed: true},
		{name: "vhdx magic", data: at(512, 0, "vhdxfile"), want: FormatVHDX},
		{name: "vhd dynamic header copy", data: at(1024, 0, "conectix"), want: FormatVHD},
		{name: "vhd fixed footer", data: fixedVHD, want: FormatVHD},
		{name: "vdi", data: vdi, want: FormatVDI},
		{name: "vdi text without signature is raw", data: badVDI, want: FormatRaw, wantGuessed: true},
		{name: "iso at sector 16", data: at(0x9000, 0x8001, "CD001"), want: FormatISO},
		{name: "iso at sector 17", data: at(0x9000, 0x8801, "CD001"), want: FormatISO},
		{name: "iso at sector 18", data: at(0xa000, 0x9001, "CD001"), want: FormatISO},
		{name: "raw with MBR", data: mbr, want: FormatRaw},
		{name: "raw with GPT", data: gpt, want: FormatRaw},
		{name: "raw with GPT on 4K sectors", data: gpt4k, want: FormatRaw},
		{name: "zeros are a guess", data: make([]byte, 4096), want: FormatRaw, wantGuessed: true},
		{name: "empty is a guess", data: nil, want: FormatRaw, wantGuessed: true},
		{name: "tiny is a guess", data: []byte("x"), want: FormatRaw, wantGuessed: true},
		{name: "gzip left compressed", data: at(512, 0, "\x1f\x8b\x08"), wantErr: "gzip-compressed data"},
		{name: "xz left compressed", data: at(512, 0, "\xfd7zXZ\x00"), wantErr: "xz-compressed data"},
		{name: "zstd", data: at(512, 0, "\x28\xb5\x2f\xfd"), wantErr: "zstd-compressed data"},
		{name: "luks", data: at(512, 0, "LUKS\xba\xbe"), wantErr: "luks"},
		{name: "tar (ova)", data: at(1024, 257, "ustar"), wantErr: "tar archive"},
		{name: "vmdk v3 COWD", data: at(512, 0, "COWD"), wantErr: "COWD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := Probe(bytes.NewReader(tt.data), int64(len(tt.data)))
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Probe = %+v, %v; want ErrInvalid mentioning %q", info, err, tt.wantErr)
				}
				return
			}
			// Sniff alone must agree with Probe on the format, or be
			// stricter (Probe may reject a header Sniff accepted).
			f, serr := Sniff(bytes.NewReader(tt.data), int64(len(tt.data)))
			if serr != nil || f != tt.want {
				t.Fatalf("Sniff = %s, %v; want %s", f, serr, tt.want)
			}
			if tt.want != FormatRaw && tt.want != FormatISO {
				return // headers are synthetic; Probe's parsing is tested elsewhere
			}
			if err != nil {
				t.Fatalf("Probe: %v", err)
			}
			if info.Format != tt.want || info.Guessed != tt.wantGuessed || info.VirtualSize != int64(len(tt.data)) {
				t.Fatalf("Probe = %+v, want %s guessed=%v size %d", info, tt.want, tt.wantGuessed, len(tt.data))
			}
		})
	}
}

func TestInfoCheck(t *testing.T) {
	tests := []struct {
		name    string
		info    Info
		optical bool
		wantErr string
	}{
		{name: "qcow2 disk", info: Info{Format: FormatQcow2}},
		{name: "raw disk with partition table", info: Info{Format: FormatRaw}},
		{name: "guessed raw disk", info: Info{Format: FormatRaw, Guessed: true}, wantErr: "refusing to guess"},
		{name: "iso as optical", info: Info{Format: FormatISO}, optical: true},
		{name: "qcow2 as optical", info: Info{Format: FormatQcow2}, optical: true, wantErr: "got qcow2"},
		{name: "guessed raw as optical", info: Info{Format: FormatRaw, Guessed: true}, optical: true, wantErr: "got unrecognised data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.info.Check(tt.optical)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Check = %v, want ErrInvalid mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestQemuFormat(t *testing.T) {
	tests := []struct {
		name string
		f    Format
		want string
	}{
		{name: "vhd is vpc", f: FormatVHD, want: "vpc"},
		{name: "iso is raw", f: FormatISO, want: "raw"},
		{name: "qcow2", f: FormatQcow2, want: "qcow2"},
		{name: "vmdk", f: FormatVMDK, want: "vmdk"},
		{name: "vhdx", f: FormatVHDX, want: "vhdx"},
		{name: "vdi", f: FormatVDI, want: "vdi"},
		{name: "raw", f: FormatRaw, want: "raw"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.f.QemuFormat(); got != tt.want {
				t.Fatalf("QemuFormat = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestInspectErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Inspect(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
	if _, err := Inspect(dir); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("directory: %v, want ErrInvalid", err)
	}
}
