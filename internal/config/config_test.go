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
