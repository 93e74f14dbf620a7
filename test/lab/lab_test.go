package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"
	"sigs.k8s.io/yaml"

	"github.com/vmdhq/vmd/test/images"
)

func TestCompleteSpec(t *testing.T) {
	l := &Lab{}
	ip := netip.MustParseAddr("10.77.0.10")
	tests := []struct {
		name    string
		spec    GuestSpec
		wantErr string
		check   func(t *testing.T, s GuestSpec)
	}{
		{
			name: "defaults for debian12",
			spec: GuestSpec{Name: "vm1", Image: images.Debian12, IP: ip, DomainType: "qemu"},
			check: func(t *testing.T, s GuestSpec) {
				if s.InstanceID != "vm1" || s.MAC != "52:54:00:77:00:0a" || s.MemoryMiB != 512 || s.VCPUs != 1 {
					t.Errorf("defaults = %+v", s)
				}
				if !strings.HasPrefix(s.UserData, "#cloud-config") {
					t.Errorf("default user-data %q is not a cloud-config", s.UserData)
				}
			},
		},
		{
			name: "tiny gets less memory",
			spec: GuestSpec{Name: "t", Image: images.Tiny, IP: ip, DomainType: "kvm"},
			check: func(t *testing.T, s GuestSpec) {
				if s.MemoryMiB != 256 {
					t.Errorf("MemoryMiB = %d, want 256", s.MemoryMiB)
				}
			},
		},
		{
			name: "explicit values kept",
			spec: GuestSpec{Name: "vm1", Image: images.Tiny, IP: ip, DomainType: "qemu", InstanceID: "iid",
				MAC: "52:54:00:00:00:01", MemoryMiB: 128, VCPUs: 2, UserData: "#cloud-config\nx: 1\n"},
			check: func(t *testing.T, s GuestSpec) {
				if s.InstanceID != "iid" || s.MAC != "52:54:00:00:00:01" || s.MemoryMiB != 128 || s.VCPUs != 2 ||
					s.UserData != "#cloud-config\nx: 1\n" {
					t.Errorf("explicit values changed: %+v", s)
				}
			},
		},
		{name: "no name", spec: GuestSpec{Image: images.Tiny, IP: ip, DomainType: "qemu"}, wantErr: "needs a name"},
		{name: "unknown image", spec: GuestSpec{Name: "x", Image: "win11", IP: ip, DomainType: "qemu"}, wantErr: "unknown image"},
		{name: "no address", spec: GuestSpec{Name: "x", Image: images.Tiny, DomainType: "qemu"}, wantErr: "not a free host address"},
		{name: "gateway address", spec: GuestSpec{Name: "x", Image: images.Tiny, IP: Gateway, DomainType: "qemu"}, wantErr: "not a free host address"},
		{name: "network address", spec: GuestSpec{Name: "x", Image: images.Tiny, IP: Network.Addr(), DomainType: "qemu"}, wantErr: "not a free host address"},
		{name: "broadcast address", spec: GuestSpec{Name: "x", Image: images.Tiny, IP: netip.MustParseAddr("10.77.0.255"), DomainType: "qemu"}, wantErr: "not a free host address"},
		{name: "outside the network", spec: GuestSpec{Name: "x", Image: images.Tiny, IP: ClientAddr, DomainType: "qemu"}, wantErr: "not a free host address"},
		{name: "ipv6", spec: GuestSpec{Name: "x", Image: images.Tiny, IP: netip.MustParseAddr("fd00::5"), DomainType: "qemu"}, wantErr: "not a free host address"},
		{name: "bad domain type", spec: GuestSpec{Name: "x", Image: images.Tiny, IP: ip, DomainType: "xen"}, wantErr: "neither kvm nor qemu"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := tt.spec
			err := l.completeSpec(context.Background(), &spec)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, spec)
		})
	}
}

func TestSeedFiles(t *testing.T) {
	spec := GuestSpec{Name: "web", InstanceID: "iid-42", IP: netip.MustParseAddr("10.77.0.20"),
		MAC: "52:54:00:77:00:14", UserData: "#cloud-config\n{}\n"}
	files := seedFiles(spec)

	var meta struct {
		InstanceID    string `json:"instance-id"`
		LocalHostname string `json:"local-hostname"`
	}
	if err := yaml.UnmarshalStrict([]byte(files["meta-data"]), &meta); err != nil {
		t.Fatalf("meta-data: %v", err)
	}
	if meta.InstanceID != "iid-42" || meta.LocalHostname != "web" {
		t.Errorf("meta-data = %+v", meta)
	}
	if files["user-data"] != spec.UserData {
		t.Errorf("user-data = %q", files["user-data"])
	}

	var netcfg struct {
		Version   int `json:"version"`
		Ethernets map[string]struct {
			Match struct {
				MACAddress string `json:"macaddress"`
			} `json:"match"`
			SetName   string   `json:"set-name"`
			Addresses []string `json:"addresses"`
			Routes    []struct {
				To  string `json:"to"`
				Via string `json:"via"`
			} `json:"routes"`
			Nameservers struct {
				Addresses []string `json:"addresses"`
			} `json:"nameservers"`
		} `json:"ethernets"`
	}
	if err := yaml.UnmarshalStrict([]byte(files["network-config"]), &netcfg); err != nil {
		t.Fatalf("network-config: %v", err)
	}
	eth0, ok := netcfg.Ethernets["eth0"]
	if netcfg.Version != 2 || !ok {
		t.Fatalf("network-config = %+v, want version 2 with eth0", netcfg)
	}
	if eth0.Match.MACAddress != spec.MAC || eth0.SetName != "eth0" ||
		len(eth0.Addresses) != 1 || eth0.Addresses[0] != "10.77.0.20/24" ||
		len(eth0.Routes) != 1 || eth0.Routes[0].Via != Gateway.String() || eth0.Routes[0].To != "0.0.0.0/0" {
		t.Errorf("eth0 = %+v", eth0)
	}
}

func TestDomainXML(t *testing.T) {
	tiny := images.Image{Name: images.Tiny, Dir: "/cache/tiny-1"}
	debian := images.Image{Name: images.Debian12, Dir: "/cache/debian12-1"}
	base := GuestSpec{Name: "g", InstanceID: "g", IP: netip.MustParseAddr("10.77.0.9"),
		MAC: "52:54:00:77:00:09", MemoryMiB: 256, VCPUs: 2}
	tests := []struct {
		name       string
		image      images.Image
		domainType string
		overlay    string
		wantDisks  map[string]string // target dev -> source file
		wantKernel string
		wantBootHD bool
	}{
		{
			name: "debian12 boots its overlay", image: debian, domainType: "qemu", overlay: "/run/g/disk.qcow2",
			wantDisks:  map[string]string{"vda": "/run/g/disk.qcow2", "sda": "/run/g/seed.iso"},
			wantBootHD: true,
		},
		{
			name: "tiny boots the kernel directly", image: tiny, domainType: "kvm",
			wantDisks:  map[string]string{"sda": "/run/g/seed.iso"},
			wantKernel: "/cache/tiny-1/vmlinuz",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := base
			spec.Image = tt.image.Name
			spec.DomainType = tt.domainType
			out, err := domainXML(spec, tt.image, "br0", tt.overlay, "/run/g/seed.iso", "/run/g/console.log")
			if err != nil {
				t.Fatal(err)
			}
			var dom libvirtxml.Domain
			if err := dom.Unmarshal(out); err != nil {
				t.Fatalf("rendered XML does not parse: %v\n%s", err, out)
			}
			if dom.Type != tt.domainType || dom.Name != "g" || dom.Memory.Value != 256 || dom.Memory.Unit != "MiB" || dom.VCPU.Value != 2 {
				t.Errorf("type/name/size = %s/%s/%d%s/%d", dom.Type, dom.Name, dom.Memory.Value, dom.Memory.Unit, dom.VCPU.Value)
			}
			disks := map[string]string{}
			for _, d := range dom.Devices.Disks {
				disks[d.Target.Dev] = d.Source.File.File
				switch d.Device {
				case "cdrom":
					// The cloud kernel has no AHCI driver: the seed must never sit on SATA.
					if d.Target.Bus != "scsi" || d.ReadOnly == nil {
						t.Errorf("seed cdrom on bus %q (read-only %v), want read-only scsi", d.Target.Bus, d.ReadOnly != nil)
					}
				case "disk":
					if d.Target.Bus != "virtio" || d.Driver.Type != "qcow2" {
						t.Errorf("disk bus %q format %q, want virtio qcow2", d.Target.Bus, d.Driver.Type)
					}
				}
			}
			if fmt.Sprint(disks) != fmt.Sprint(tt.wantDisks) {
				t.Errorf("disks = %v, want %v", disks, tt.wantDisks)
			}
			if dom.OS.Kernel != tt.wantKernel {
				t.Errorf("kernel = %q, want %q", dom.OS.Kernel, tt.wantKernel)
			}
			if tt.wantKernel != "" && !strings.Contains(dom.OS.Cmdline, "net.ifnames=0") {
				t.Errorf("cmdline %q lacks net.ifnames=0", dom.OS.Cmdline)
			}
			if hd := len(dom.OS.BootDevices) == 1 && dom.OS.BootDevices[0].Dev == "hd"; hd != tt.wantBootHD {
				t.Errorf("boot from hd = %v, want %v", hd, tt.wantBootHD)
			}
			nic := dom.Devices.Interfaces[0]
			if nic.Source.Bridge.Bridge != "br0" || nic.MAC.Address != spec.MAC || nic.Model.Type != "virtio" {
				t.Errorf("nic = bridge %q mac %q model %q", nic.Source.Bridge.Bridge, nic.MAC.Address, nic.Model.Type)
			}
			if got := dom.Devices.Serials[0].Source.File.Path; got != "/run/g/console.log" {
				t.Errorf("serial console goes to %q", got)
			}
		})
	}
}

func TestProcessIdentity(t *testing.T) {
	self := os.Getpid()
	if !processAlive(self) {
		t.Error("own process not alive")
	}
	st, err := processStartTime(self)
	if err != nil || st == "" {
		t.Fatalf("processStartTime(self) = %q, %v", st, err)
	}
	// A child that has exited and been reaped no longer exists.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if processAlive(cmd.Process.Pid) {
		t.Errorf("exited child %d reported alive", cmd.Process.Pid)
	}
	tests := []struct {
		name, stat, want string
	}{
		{name: "plain comm", stat: "12 (sleep) S 1 2 3", want: " S 1 2 3"},
		{name: "comm with spaces and parens", stat: "12 (a b) c) R 1", want: " R 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := afterComm(tt.stat); got != tt.want {
				t.Errorf("afterComm(%q) = %q, want %q", tt.stat, got, tt.want)
			}
		})
	}
}

func TestListAndSweepRunDirectories(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	mk := func(name, owner string, kept bool) string {
		t.Helper()
		dir := filepath.Join(tmp, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if owner != "" {
			if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(owner), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if kept {
			if err := os.WriteFile(filepath.Join(dir, keepFile), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	st, err := processStartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	live := mk("vmdlab-0000000a", fmt.Sprintf("%d %s\n", os.Getpid(), st), false)
	dead := mk("vmdlab-0000000b", fmt.Sprintf("%d 1\n", os.Getpid()), false) // pid reused: start time differs
	kept := mk("vmdlab-0000000c", "", true)
	noOwner := mk("vmdlab-0000000d", "", false)
	other := mk("vmdlab-build-debian12.abc", "", false) // not a lab: an image build's scratch

	labs, err := List()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Leftover{}
	for _, lo := range labs {
		if lo.Dir != "" {
			got[lo.Name] = lo
		}
	}
	want := map[string]struct{ alive, kept bool }{
		"vmdlab-0000000a": {alive: true},
		"vmdlab-0000000b": {},
		"vmdlab-0000000c": {kept: true},
		"vmdlab-0000000d": {},
	}
	if len(got) != len(want) {
		t.Errorf("List found %d run directories, want %d: %+v", len(got), len(want), got)
	}
	for name, w := range want {
		lo, ok := got[name]
		if !ok || lo.OwnerAlive != w.alive || lo.Kept != w.kept {
			t.Errorf("%s: found %v, %+v; want alive %v kept %v", name, ok, lo, w.alive, w.kept)
		}
	}

	names := []string{"vmdlab-0000000a", "vmdlab-0000000b", "vmdlab-0000000c", "vmdlab-0000000d"}
	if err := Sweep(context.Background(), SweepOptions{Names: names}, t.Logf); err != nil {
		t.Fatal(err)
	}
	exists := func(dir string) bool { _, err := os.Stat(dir); return err == nil }
	for _, c := range []struct {
		dir  string
		want bool
	}{{live, true}, {dead, false}, {kept, true}, {noOwner, false}, {other, true}} {
		if exists(c.dir) != c.want {
			t.Errorf("after Sweep, %s exists = %v, want %v", filepath.Base(c.dir), !c.want, c.want)
		}
	}
	if err := Sweep(context.Background(), SweepOptions{Kept: true, Names: names}, t.Logf); err != nil {
		t.Fatal(err)
	}
	if exists(kept) || !exists(live) {
		t.Errorf("Sweep with Kept: kept survived %v, live removed %v", exists(kept), !exists(live))
	}
}

func TestTailFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	if err := os.WriteFile(p, []byte("one\r\ntwo\r\nthree\r\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		n    int
		want string
	}{
		{name: "fewer lines than the file", n: 2, want: "two\nthree"},
		{name: "more lines than the file", n: 10, want: "one\ntwo\nthree"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tailFile(p, tt.n); got != tt.want {
				t.Errorf("tailFile(%d) = %q, want %q", tt.n, got, tt.want)
			}
		})
	}
	if got := tailFile(filepath.Join(t.TempDir(), "missing"), 3); !strings.Contains(got, "no such file") {
		t.Errorf("tailFile of a missing file = %q", got)
	}
}
