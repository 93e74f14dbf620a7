//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/test/images"
	"github.com/vmdhq/vmd/test/lab"
)

// TestVMDisk runs the real vmd inside a lab and turns two VMDisks into volumes through vmctl: one
// from the golden image debian-12 (the catalogue pointed at the lab's image server with
// --image-mirror) and one from an http URL on the same server. Both must reach Ready, and qemu-img
// must see the requested virtual sizes.
func TestVMDisk(t *testing.T) {
	if reason := lab.HostProblem(); reason != "" {
		t.Skipf("vmd lab unavailable: %s", reason)
	}
	start := time.Now()
	l := lab.New(t, lab.Options{Images: []images.Name{images.Debian12}, Logf: t.Logf})
	ctx := t.Context()

	serveGoldenDebian12(t, l)

	h := newVMD(t, l, "--image-mirror", l.HTTPBase)
	vmd := h.Start("vmd")
	vmctl := h.Vmctl
	upAt := time.Now()

	manifest := filepath.Join(t.TempDir(), "disks.yaml")
	yaml := fmt.Sprintf(`apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: golden
spec:
  source:
    image:
      name: debian-12
  storage: 4Gi
  storageClass: local
---
apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: fromhttp
spec:
  source:
    http:
      url: %sdebian12.qcow2
  storage: 3Gi
  storageClass: replicated
`, l.HTTPBase)
	if err := os.WriteFile(manifest, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := vmctl("apply", "-f", manifest); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("%s", out)
	}
	timings := map[string]time.Duration{}
	for _, d := range []struct {
		name string
		size int64
	}{{"golden", 4 << 30}, {"fromhttp", 3 << 30}} {
		if _, err := vmctl("wait", "vmd/"+d.name, "--for=condition=Ready", "--timeout=5m"); err != nil {
			out, _ := vmctl("get", "vmd", d.name, "-o", "yaml")
			t.Fatalf("%v\n%s", err, out)
		}
		timings[d.name] = time.Since(upAt)
		out, err := vmctl("get", "vmd", d.name, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var disk v1alpha1.VMDisk
		if err := json.Unmarshal([]byte(out), &disk); err != nil {
			t.Fatal(err)
		}
		if disk.Status.Phase != v1alpha1.DiskPhaseReady || disk.Status.Path == "" {
			t.Fatalf("%s: status %+v", d.name, disk.Status)
		}
		if c := v1alpha1.FindCondition(disk.Status.Conditions, v1alpha1.ConditionReplicated); c == nil || c.Status != v1alpha1.ConditionFalse {
			t.Fatalf("%s: Replicated condition %+v; the default classes keep one copy and must say so", d.name, c)
		}
		info, err := qemuInfo(ctx, disk.Status.Path)
		if err != nil {
			t.Fatal(err)
		}
		if info.VirtualSize != d.size {
			t.Fatalf("%s: qemu-img virtual size %d, want %d", d.name, info.VirtualSize, d.size)
		}
		t.Logf("%s: %s, virtual size %d, backing %q, sha256 %q", d.name, disk.Status.Path, info.VirtualSize, info.Backing, disk.Status.SHA256)
		if d.name == "golden" && !strings.HasPrefix(info.Backing, filepath.Join(h.StateDir, "images")+"/") {
			t.Fatalf("golden disk is not an overlay on the cached base: backing %q", info.Backing)
		}
	}
	if out, err := vmctl("get", "vmd"); err == nil {
		t.Logf("\n%s", out)
	}
	if out, err := vmctl("image", "list"); err == nil {
		t.Logf("\n%s", out)
	} else {
		t.Logf("vmctl image list: %v", err)
	}
	t.Logf("SUMMARY vmdisk e2e: vmd up %.1fs after start; golden Ready %.1fs; http Ready %.1fs; total %.1fs",
		upAt.Sub(start).Seconds(), timings["golden"].Seconds(), timings["fromhttp"].Seconds(), time.Since(start).Seconds())

	if _, err := vmctl("delete", "vmd", "golden", "fromhttp"); err != nil {
		t.Fatal(err)
	}
	if err := vmd.Stop(10 * time.Second); err != nil {
		t.Error(err)
	}
}

type qemuImgInfo struct {
	VirtualSize int64  `json:"virtual-size"`
	Backing     string `json:"backing-filename"`
}

func qemuInfo(ctx context.Context, path string) (qemuImgInfo, error) {
	out, err := exec.CommandContext(ctx, "qemu-img", "info", "-U", "-f", "qcow2", "--output=json", path).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return qemuImgInfo{}, fmt.Errorf("qemu-img info %s: %w: %s", path, err, ee.Stderr)
		}
		return qemuImgInfo{}, err
	}
	var info qemuImgInfo
	return info, json.Unmarshal(out, &info)
}
