package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmdhq/vmd/internal/errdefs"
)

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("embedded default invalid: %v", err)
	}
	if c.Socket != "/run/vmd/vmd.sock" || c.DomainType != "kvm" || c.Controller.ResyncPeriod.Duration != 10*time.Minute {
		t.Fatalf("unexpected defaults: %+v", c)
	}
	if m, _ := c.Mode(); m != 0o660 {
		t.Fatalf("socket mode = %o, want 660", m)
	}
}

func TestLayering(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vmd.yaml")
	if err := os.WriteFile(path, []byte("domainType: qemu\nlog:\n  level: debug\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := Default()
	if err := c.LoadFile(path); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"VMD_STATE_DIR": "/tmp/x", "VMD_WORKERS": "2"}
	if err := c.LoadEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if c.DomainType != "qemu" || c.Log.Level != "debug" || c.StateDir != "/tmp/x" || c.Controller.Workers != 2 {
		t.Fatalf("layering lost a value: %+v", c)
	}
	// Untouched keys keep the embedded default.
	if c.Socket != "/run/vmd/vmd.sock" || c.Log.Format != "text" {
		t.Fatalf("file overlay reset a default: %+v", c)
	}
}

func TestLoadFileRejectsUnknownKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vmd.yaml")
	if err := os.WriteFile(path, []byte("domain_type: qemu\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := Default().LoadFile(path)
	if err == nil || !strings.Contains(err.Error(), "domain_type") {
		t.Fatalf("want an error naming the unknown key, got %v", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   string
	}{
		{name: "domain type", mutate: func(c *Config) { c.DomainType = "xen" }, want: `domainType: Unsupported value: "xen"`},
		{name: "relative state dir", mutate: func(c *Config) { c.StateDir = "state" }, want: "stateDir: Invalid value"},
		{name: "relative socket", mutate: func(c *Config) { c.Socket = "vmd.sock" }, want: "socket: Invalid value"},
		{name: "socket mode", mutate: func(c *Config) { c.SocketMode = "rw" }, want: "socketMode: Invalid value"},
		{name: "log level", mutate: func(c *Config) { c.Log.Level = "loud" }, want: "log.level: Unsupported value"},
		{name: "log format", mutate: func(c *Config) { c.Log.Format = "xml" }, want: "log.format: Unsupported value"},
		{name: "workers", mutate: func(c *Config) { c.Controller.Workers = 0 }, want: "controller.workers: Invalid value"},
		{name: "resync", mutate: func(c *Config) { c.Controller.ResyncPeriod.Duration = time.Millisecond }, want: "controller.resyncPeriod"},
		{name: "libvirt uri", mutate: func(c *Config) { c.LibvirtURI = "" }, want: "libvirtURI: Required value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.mutate(c)
			err := c.Validate()
			if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an ErrInvalid containing %q", err, tc.want)
			}
		})
	}
}

func TestStorageDefaults(t *testing.T) {
	c := Default()
	c.StateDir = "/srv/vmd"
	tests := []struct {
		name, got, want string
	}{
		{name: "local pool under stateDir", got: c.PoolPath("local"), want: "/srv/vmd/pools/local"},
		{name: "replicated pool under stateDir", got: c.PoolPath("replicated"), want: "/srv/vmd/pools/replicated"},
		{name: "image cache", got: c.ImageCacheDir(), want: "/srv/vmd/images"},
		{name: "scratch", got: c.ScratchDir(), want: "/srv/vmd/scratch"},
		{name: "instances", got: c.InstancesDir(), want: "/srv/vmd/instances"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("got %s, want %s", tt.got, tt.want)
			}
		})
	}
	if c.StorageClasses["replicated"].Replicated {
		t.Fatal("the embedded replicated class must not claim replication")
	}
	if !strings.Contains(c.StorageClasses["replicated"].Note, "single local copy") {
		t.Fatalf("replicated note = %q", c.StorageClasses["replicated"].Note)
	}
}

func TestStorageFileAndEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vmd.yaml")
	data := "storageClasses:\n  replicated:\n    path: /mnt/ceph/vmd\n    replicated: true\n    note: cephfs, 3 copies\n" +
		"images:\n  overrides:\n    debian-12:\n      url: https://mirror.example/d12.qcow2\n      sha256: " + strings.Repeat("a", 64) + "\n  preload: [debian-12]\n"
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	c := Default()
	if err := c.LoadFile(path); err != nil {
		t.Fatal(err)
	}
	if err := c.LoadEnv(func(k string) (string, bool) {
		return map[string]string{"VMD_IMAGE_MIRROR": "http://10.0.0.1/images/"}[k], k == "VMD_IMAGE_MIRROR"
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.PoolPath("replicated") != "/mnt/ceph/vmd" || !c.StorageClasses["replicated"].Replicated {
		t.Fatalf("replicated = %+v", c.StorageClasses["replicated"])
	}
	if c.PoolPath("local") != "/var/lib/vmd/pools/local" {
		t.Fatalf("the file dropped the embedded local class: %+v", c.StorageClasses)
	}
	if c.Images.Mirror != "http://10.0.0.1/images/" || c.Images.Preload[0] != "debian-12" || c.Images.Overrides["debian-12"].URL == "" {
		t.Fatalf("images = %+v", c.Images)
	}
}

func TestStorageValidation(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{name: "no classes", mutate: func(c *Config) { c.StorageClasses = nil }, want: "storageClasses"},
		{name: "bad class name", mutate: func(c *Config) { c.StorageClasses["Fast_SSD"] = StorageClass{} }, want: "storageClasses[Fast_SSD]"},
		{name: "two classes one dir", mutate: func(c *Config) {
			c.StorageClasses["replicated"] = StorageClass{Path: "pools/local"}
		}, want: "is also the pool of storage class"},
		{name: "mirror not a URL", mutate: func(c *Config) { c.Images.Mirror = "ftp://x" }, want: "images.mirror"},
		{name: "override without URL", mutate: func(c *Config) {
			c.Images.Overrides = map[string]ImageOverride{"x": {SHA256: "zz"}}
		}, want: "images.overrides[x].url"},
		{name: "override bad sha", mutate: func(c *Config) {
			c.Images.Overrides = map[string]ImageOverride{"x": {URL: "https://a/b", SHA256: "zz"}}
		}, want: "images.overrides[x].sha256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(c)
			err := c.Validate()
			if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v; want one naming %q", err, tt.want)
			}
		})
	}
}

func TestInstancesValidation(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // "" = valid
	}{
		{name: "bridge with subnet", mutate: func(c *Config) { c.Network = NetworkConfig{Bridge: "br0", Subnet: "10.77.0.0/24"} }},
		{name: "bridge without subnet", mutate: func(c *Config) { c.Network.Bridge = "br0" }, want: "network.subnet"},
		{name: "ipv6 subnet", mutate: func(c *Config) { c.Network = NetworkConfig{Bridge: "br0", Subnet: "fd00::/64"} }, want: "network.subnet"},
		{name: "subnet without bridge", mutate: func(c *Config) { c.Network.Subnet = "10.0.0.0/24" }, want: "network.bridge"},
		{name: "tenant defaults", mutate: func(*Config) {}},
		{name: "uplink, external range and dns", mutate: func(c *Config) {
			c.Network.Uplink, c.Network.ExternalPool, c.Network.DNS = "eth0", "192.0.2.10-192.0.2.20", []string{"9.9.9.9"}
		}},
		{name: "external cidr", mutate: func(c *Config) { c.Network.ExternalPool = "192.0.2.16/28" }},
		{name: "bad tenant pool", mutate: func(c *Config) { c.Network.TenantPool = "10.240.0.1/16" }, want: "network.tenantPool"},
		{name: "ipv6 tenant pool", mutate: func(c *Config) { c.Network.TenantPool = "fd00::/48" }, want: "network.tenantPool"},
		{name: "subnet wider than pool", mutate: func(c *Config) { c.Network.TenantSubnetBits = 8 }, want: "network.tenantSubnetBits"},
		{name: "subnet too small", mutate: func(c *Config) { c.Network.TenantSubnetBits = 31 }, want: "network.tenantSubnetBits"},
		{name: "external overlaps tenants", mutate: func(c *Config) { c.Network.ExternalPool = "10.240.3.0/24" }, want: "overlaps the tenant pool"},
		{name: "external pool garbage", mutate: func(c *Config) { c.Network.ExternalPool = "eth0" }, want: "network.externalPool"},
		{name: "ipv6 dns", mutate: func(c *Config) { c.Network.DNS = []string{"2001:db8::1"} }, want: "network.dns[0]"},
		{name: "dns upstream without port", mutate: func(c *Config) { c.Network.DNSUpstreams = []string{"127.0.0.53", "[2001:db8::1]:5353"} }},
		{name: "dns upstream hostname", mutate: func(c *Config) { c.Network.DNSUpstreams = []string{"127.0.0.1", "dns.example:53"} }, want: "network.dnsUpstreams[1]"},
		{name: "dns upstream port 0", mutate: func(c *Config) { c.Network.DNSUpstreams = []string{"127.0.0.1:0"} }, want: "network.dnsUpstreams[0]"},
		{name: "uplink too long", mutate: func(c *Config) { c.Network.Uplink = "a-very-long-interface" }, want: "network.uplink"},
		{name: "zero shutdown timeout", mutate: func(c *Config) { c.Instances.ShutdownTimeout.Duration = 0 }, want: "instances.shutdownTimeout"},
		{name: "relative kernel", mutate: func(c *Config) { c.Testing.KernelBoot = &KernelBoot{Kernel: "vmlinuz"} }, want: "testing.kernelBoot.kernel"},
		{name: "absolute kernel", mutate: func(c *Config) { c.Testing.KernelBoot = &KernelBoot{Kernel: "/k", Initrd: "/i"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("err = %v; want valid", err)
				}
				return
			}
			if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v; want one naming %q", err, tt.want)
			}
		})
	}
}
