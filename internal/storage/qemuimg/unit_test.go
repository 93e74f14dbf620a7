package qemuimg

// Unit tests of the pure parts: no qemu-img needed.

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/vmdhq/vmd/internal/errdefs"
)

func TestProgressWriter(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		want   []float64
	}{
		{
			name:   "qemu-img output in one write",
			chunks: []string{"    (0.00/100%)\r    (1.01/100%)\r    (57.50/100%)\r    (100.00/100%)\r\n"},
			want:   []float64{0, 1.01, 57.5, 100},
		},
		{
			name:   "update split across writes",
			chunks: []string{"    (0.00/100%)\r    (4", "2.", "10/100%)\r", "    (100.00/100%)\r\n"},
			want:   []float64{0, 42.1, 100},
		},
		{
			name:   "unterminated update waits for its terminator",
			chunks: []string{"    (0.00/100%)\r    (33.00/100%)"},
			want:   []float64{0},
		},
		{
			name:   "repeats and regressions are dropped",
			chunks: []string{"(10.00/100%)\r(10.00/100%)\r(5.00/100%)\r(20.00/100%)\r"},
			want:   []float64{10, 20},
		},
		{
			name:   "integers and clamping",
			chunks: []string{"(7/100%)\r(250.5/100%)\r"},
			want:   []float64{7, 100},
		},
		{
			name:   "noise is ignored",
			chunks: []string{"qemu-img: warning: something\n(abc/100%)\r(12.5/50%)\r\r\n(60.00/100%)\n"},
			want:   []float64{60},
		},
		{
			name:   "nothing",
			chunks: []string{""},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []float64
			pw := &progressWriter{fn: func(v float64) { got = append(got, v) }, last: -1}
			for _, c := range tc.chunks {
				if n, err := pw.Write([]byte(c)); n != len(c) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("progress %v, want %v", got, tc.want)
			}
		})
	}
}

// FuzzProgressWriter checks the writer's contract on arbitrary output cut
// at an arbitrary point: values stay in [0,100], strictly increase, and do
// not depend on how the output was split into writes.
func FuzzProgressWriter(f *testing.F) {
	f.Add("    (0.00/100%)\r    (50.00/100%)\r    (100.00/100%)\r\n", 7)
	f.Add("(1/100%)\n(2/100%)", 0)
	f.Add(strings.Repeat("x", 300)+"(9.5/100%)\r", 150)
	f.Fuzz(func(t *testing.T, out string, cut int) {
		collect := func(chunks ...string) []float64 {
			var vals []float64
			pw := &progressWriter{fn: func(v float64) { vals = append(vals, v) }, last: -1}
			for _, c := range chunks {
				_, _ = pw.Write([]byte(c))
			}
			return vals
		}
		whole := collect(out)
		for i, v := range whole {
			if v < 0 || v > 100 || (i > 0 && v <= whole[i-1]) {
				t.Fatalf("bad progress sequence %v", whole)
			}
		}
		if cut < 0 {
			cut = -cut
		}
		if len(out) > 0 {
			cut %= len(out) + 1
		} else {
			cut = 0
		}
		// Lines longer than maxPending may be truncated differently when
		// split; qemu-img's never are, so only compare short-lined input.
		longLine := slices.ContainsFunc(strings.FieldsFunc(out, func(r rune) bool { return r == '\r' || r == '\n' }),
			func(l string) bool { return len(l) > maxPending/2 })
		if split := collect(out[:cut], out[cut:]); !longLine && !slices.Equal(split, whole) {
			t.Fatalf("split at %d gives %v, whole gives %v", cut, split, whole)
		}
	})
}

func TestParseFormat(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Format
		err  bool
	}{
		{name: "qcow2", in: "qcow2", want: FormatQCOW2},
		{name: "upper case and spaces", in: " QCOW2 ", want: FormatQCOW2},
		{name: "vhd alias", in: "vhd", want: FormatVPC},
		{name: "vpc", in: "vpc", want: FormatVPC},
		{name: "iso is raw", in: "iso", want: FormatRaw},
		{name: "vmdk", in: "vmdk", want: FormatVMDK},
		{name: "vhdx", in: "vhdx", want: FormatVHDX},
		{name: "vdi", in: "vdi", want: FormatVDI},
		{name: "qed refused", in: "qed", err: true},
		{name: "empty refused", in: "", err: true},
		{name: "driver options refused", in: "qcow2,file.driver=nbd", err: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseFormat(tc.in)
			if tc.err {
				if !errors.Is(err, errdefs.ErrInvalid) {
					t.Fatalf("ParseFormat(%q) = %q, %v; want ErrInvalid", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseFormat(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestIsTemp(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{name: "fresh temp name", in: tempPath("/pool/disk.qcow2"), want: true},
		{name: "base name", in: "disk.qcow2.tmp-0123456789abcdef", want: true},
		{name: "final name", in: "/pool/disk.qcow2", want: false},
		{name: "short suffix", in: "disk.qcow2.tmp-0123", want: false},
		{name: "not hex", in: "disk.qcow2.tmp-0123456789abcdeg", want: false},
		{name: "nothing before the infix", in: ".tmp-0123456789abcdef", want: false},
		{name: "infix in a directory only", in: "/x.tmp-0123456789abcdef/disk", want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsTemp(tc.in); got != tc.want {
				t.Errorf("IsTemp(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
	if a, b := tempPath("/p/d"), tempPath("/p/d"); a == b {
		t.Errorf("two temp names collide: %s", a)
	}
}

func TestCheckSafeRules(t *testing.T) {
	const base = "/var/lib/vmd/images/debian12.qcow2"
	tests := []struct {
		name    string
		info    Info
		allowed string
		reasons []string // nil: safe
	}{
		{name: "flat", info: Info{Filename: "/p/a", Format: FormatQCOW2}},
		{name: "allowed overlay", info: Info{Filename: "/p/a", BackingFile: base, BackingFormat: "qcow2"}, allowed: base},
		{name: "allowing does not require a backing file", info: Info{Filename: "/p/a"}, allowed: base},
		{
			name: "imported backing file", info: Info{Filename: "/p/a", BackingFile: "/etc/passwd", BackingFormat: "raw"},
			reasons: []string{"image has a backing file /etc/passwd"},
		},
		{
			name: "near miss of the allowed base", info: Info{Filename: "/p/a", BackingFile: base + "/", BackingFormat: "qcow2"}, allowed: base,
			reasons: []string{"only " + base + " is allowed"},
		},
		{
			name: "allowed base without format", info: Info{Filename: "/p/a", BackingFile: base}, allowed: base,
			reasons: []string{"no recorded format"},
		},
		{
			name: "every reason at once",
			info: Info{Filename: "/p/a.vmdk", Format: FormatVMDK, BackingFile: "b", DataFile: "/dev/sda",
				Extents: []string{"/p/a.vmdk", "/etc/shadow"}, Encrypted: true, Corrupt: true},
			reasons: []string{"backing file b", "external data file /dev/sda", "extent in another file /etc/shadow", "encrypted", "marked corrupt", "unsafe vmdk /p/a.vmdk"},
		},
		{name: "monolithic vmdk", info: Info{Filename: "/p/a.vmdk", Format: FormatVMDK, Extents: []string{"/p/a.vmdk"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckSafe(tc.info, tc.allowed)
			if tc.reasons == nil {
				if err != nil {
					t.Fatalf("CheckSafe = %v, want safe", err)
				}
				return
			}
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("CheckSafe = %v, want ErrInvalid", err)
			}
			for _, r := range tc.reasons {
				if !strings.Contains(err.Error(), r) {
					t.Errorf("error %q does not say %q", err, r)
				}
			}
		})
	}
}

func TestStderrHandling(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		max    int
		want   string
	}{
		{name: "short", writes: []string{"qemu-img: Could not open 'x'\n"}, max: 64, want: "qemu-img: Could not open 'x'"},
		{name: "several lines fold", writes: []string{"a\n\n", "  b  \r\nc"}, max: 64, want: "a; b; c"},
		{name: "tail kept, partial line dropped", writes: []string{"ERROR 1\nERROR 2\n", "qemu-img: verdict\n"}, max: 24, want: "... qemu-img: verdict"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tb := &tailBuffer{max: tc.max}
			for _, w := range tc.writes {
				_, _ = tb.Write([]byte(w))
			}
			if got := foldStderr(tb.String()); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	if !isLockConflict(`qemu-img: Could not open 'd': Failed to get "write" lock; Is another process using the image [d]?`) {
		t.Error("write lock refusal not recognised")
	}
	if isLockConflict("qemu-img: Could not open 'd': invalid VPC image") {
		t.Error("format error taken for a lock conflict")
	}
}
