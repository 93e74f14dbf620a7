package libvirt

import (
	"errors"
	"testing"

	"github.com/vmdhq/vmd/internal/errdefs"
)

func TestVNCSocketOf(t *testing.T) {
	tests := []struct {
		name, xml string
		want      string
		wantKind  error
	}{
		{
			name: "libvirt-placed socket, as a running domain shows it",
			xml: `<domain type="qemu"><devices><graphics type="vnc" socket="/var/lib/libvirt/qemu/domain-3-web/vnc.sock">
<listen type="socket" socket="/var/lib/libvirt/qemu/domain-3-web/vnc.sock"/></graphics></devices></domain>`,
			want: "/var/lib/libvirt/qemu/domain-3-web/vnc.sock",
		},
		{
			name: "listen element only",
			xml:  `<domain><devices><graphics type="vnc"><listen type="socket" socket="/run/a.sock"/></graphics></devices></domain>`,
			want: "/run/a.sock",
		},
		{
			name: "attribute only (old libvirt)",
			xml:  `<domain><devices><graphics type="vnc" socket="/run/b.sock"/></devices></domain>`,
			want: "/run/b.sock",
		},
		{
			name: "spice socket skipped, vnc socket found",
			xml: `<domain><devices><graphics type="spice"><listen type="socket" socket="/run/spice.sock"/></graphics>
<graphics type="vnc"><listen type="socket" socket="/run/vnc.sock"/></graphics></devices></domain>`,
			want: "/run/vnc.sock",
		},
		{
			name:     "loopback port",
			xml:      `<domain><devices><graphics type="vnc" port="5900" autoport="yes"><listen type="address" address="127.0.0.1"/></graphics></devices></domain>`,
			wantKind: errdefs.ErrNotFound,
		},
		{
			name:     "socket listener without a path (inactive XML)",
			xml:      `<domain><devices><graphics type="vnc"><listen type="socket"/></graphics></devices></domain>`,
			wantKind: errdefs.ErrNotFound,
		},
		{name: "no graphics", xml: `<domain><devices/></domain>`, wantKind: errdefs.ErrNotFound},
		{name: "not XML", xml: `<domain`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := vncSocketOf(tt.xml)
			switch {
			case tt.want != "":
				if err != nil || got != tt.want {
					t.Fatalf("vncSocketOf = %q, %v; want %q", got, err, tt.want)
				}
			case tt.wantKind != nil:
				if !errors.Is(err, tt.wantKind) {
					t.Fatalf("vncSocketOf = %q, %v; want %v", got, err, tt.wantKind)
				}
			default:
				if err == nil {
					t.Fatalf("vncSocketOf = %q, want an error", got)
				}
			}
		})
	}
}

// FuzzVNCSocketOf: any input gives a non-empty path or an error, never a
// panic.
func FuzzVNCSocketOf(f *testing.F) {
	f.Add(`<domain><devices><graphics type="vnc"><listen type="socket" socket="/run/a.sock"/></graphics></devices></domain>`)
	f.Add(`<domain><devices><graphics type="vnc" socket="/x"/></devices></domain>`)
	f.Add(`<domain`)
	f.Fuzz(func(t *testing.T, doc string) {
		p, err := vncSocketOf(doc)
		if err == nil && p == "" {
			t.Fatal("empty path without an error")
		}
	})
}
