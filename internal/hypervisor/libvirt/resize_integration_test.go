//go:build integration

package libvirt

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/test/images"
	"github.com/vmdhq/vmd/test/lab"
)

// TestResizeDiskBySourcePath covers ResizeDisk the way the disk reconciler
// calls it: the disk is named by its volume path, not its target, because
// the running definition's device order may be older than the spec.
// go test -tags integration -run TestResizeDiskBySourcePath ./internal/hypervisor/libvirt/
func TestResizeDiskBySourcePath(t *testing.T) {
	if reason := lab.HostProblem(); reason != "" {
		t.Skipf("vmd lab unavailable: %s", reason)
	}
	l := lab.New(t, lab.Options{Images: []images.Name{images.Tiny}})
	ctx := t.Context()
	domainType, err := l.DomainType(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Open(ctx, l.URI, nil)
	if err != nil {
		t.Fatalf("opening: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	d := buildTiny(t, l, domainType, "grow", 1)
	t.Cleanup(func() {
		cctx := context.Background()
		_ = c.Destroy(cctx, d.Name)
		_ = c.Undefine(cctx, d.Name)
	})
	// A fresh 64 MiB image: buildTiny keeps one from an earlier run.
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", d.DataDisk, "64M").CombinedOutput(); err != nil {
		t.Fatalf("creating data disk: %v: %s", err, out)
	}
	if err := c.Define(ctx, d.XML); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, d.Name); err != nil {
		t.Fatal(err)
	}

	// liveCapacity is the size qemu reports for the disk (libvirt asks the
	// running qemu), imageSize what the qcow2 header on disk says.
	liveCapacity := func() uint64 {
		t.Helper()
		out, err := l.Virsh(ctx, "domblkinfo", d.Name, d.DataDisk)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "Capacity:" {
				n, err := strconv.ParseUint(f[1], 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
		}
		t.Fatalf("no capacity in domblkinfo:\n%s", out)
		return 0
	}
	imageSize := func() uint64 {
		t.Helper()
		out, err := exec.Command("qemu-img", "info", "-U", "--output=json", d.DataDisk).Output()
		if err != nil {
			t.Fatal(err)
		}
		var info struct {
			VirtualSize uint64 `json:"virtual-size"`
		}
		if err := json.Unmarshal(out, &info); err != nil {
			t.Fatal(err)
		}
		return info.VirtualSize
	}

	const grown = 96 << 20
	start := time.Now()
	if err := c.ResizeDisk(ctx, d.Name, d.DataDisk, grown); err != nil {
		t.Fatalf("ResizeDisk by path: %v", err)
	}
	t.Logf("online resize by path took %s", time.Since(start).Round(time.Millisecond))
	if live, img := liveCapacity(), imageSize(); live != grown || img != grown {
		t.Fatalf("after resize: qemu sees %d, the image header says %d; want %d", live, img, grown)
	}
	if err := c.ResizeDisk(ctx, d.Name, d.DataDisk, grown); err != nil {
		t.Fatalf("resize to the current size: %v, want a no-op", err)
	}
	if err := c.ResizeDisk(ctx, d.Name, d.DataDisk, 32<<20); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("shrinking = %v, want ErrInvalid", err)
	}
	other := filepath.Join(filepath.Dir(d.DataDisk), "not-attached.qcow2")
	if err := c.ResizeDisk(ctx, d.Name, other, grown); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("a path the domain does not have = %v, want ErrInvalid", err)
	}

	// A stopped domain: libvirt cannot resize online; the caller uses
	// qemu-img then. Its current size is still a no-op.
	if err := c.Destroy(ctx, d.Name); err != nil {
		t.Fatal(err)
	}
	if err := c.ResizeDisk(ctx, d.Name, d.DataDisk, 128<<20); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("resizing a stopped domain = %v, want ErrConflict", err)
	}
	if err := c.ResizeDisk(ctx, d.Name, d.DataDisk, grown); err != nil {
		t.Errorf("current size of a stopped domain = %v, want a no-op", err)
	}
	if got := imageSize(); got != grown {
		t.Errorf("image size %d after the refused resize, want %d", got, grown)
	}
}
