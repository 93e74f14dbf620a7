package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/config"
)

// TestRealAdaptersBlankDisk runs the daemon with the real storage wiring
// (directory pools, qemu-img) and turns a blank VMDisk into a qcow2 volume
// of the requested size under the state directory.
func TestRealAdaptersBlankDisk(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skipf("qemu-img not installed: %v", err)
	}
	stateDir := t.TempDir()
	cfg := config.Default()
	cfg.StateDir = stateDir
	ad, closeAdapters, err := realAdapters(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeAdapters)
	if ad.network == nil {
		t.Fatal("the default config should enable tenant networking")
	}
	// This test is about storage. Tenant networking would program this
	// host's own network namespace (bridges, nftables); its tests run in
	// throwaway namespaces instead (internal/netctl, test/e2e).
	ad.network = nil
	d := startDaemon(t, stateDir, ad)
	manifest := filepath.Join(t.TempDir(), "disk.yaml")
	if err := os.WriteFile(manifest, []byte(`apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: scratch
spec:
  source: {}
  storage: 1Gi
  storageClass: replicated
`), 0o600); err != nil {
		t.Fatal(err)
	}
	d.mustVmctl("apply", "-f", manifest)
	d.mustVmctl("wait", "vmd/scratch", "--for=condition=Ready", "--timeout=20s")
	var disk v1alpha1.VMDisk
	if err := json.Unmarshal([]byte(d.mustVmctl("get", "vmd", "scratch", "-o", "json")), &disk); err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(filepath.Dir(disk.Status.Path)) != filepath.Join(stateDir, "pools", "replicated") || disk.Status.Size != 1<<30 {
		t.Fatalf("status = %+v", disk.Status)
	}
	c := v1alpha1.FindCondition(disk.Status.Conditions, v1alpha1.ConditionReplicated)
	if c == nil || c.Status != v1alpha1.ConditionFalse || c.Message != cfg.StorageClasses["replicated"].Note {
		t.Fatalf("Replicated condition = %+v", c)
	}
	if _, err := os.Stat(disk.Status.Path); err != nil {
		t.Fatal(err)
	}
}

func TestImageMirrorFlag(t *testing.T) {
	tests := []struct {
		name string
		flag string
		env  map[string]string
		want string
	}{
		{name: "default none", want: ""},
		{name: "env", env: map[string]string{"VMD_IMAGE_MIRROR": "http://10.0.0.1/img/"}, want: "http://10.0.0.1/img/"},
		{name: "flag wins", flag: "http://127.0.0.1:8000/", env: map[string]string{"VMD_IMAGE_MIRROR": "http://10.0.0.1/img/"}, want: "http://127.0.0.1:8000/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadConfig(flags{imageMirror: tt.flag}, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Images.Mirror != tt.want {
				t.Fatalf("mirror = %q, want %q", cfg.Images.Mirror, tt.want)
			}
		})
	}
}
