package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/events"
	"github.com/vmdhq/vmd/internal/hypervisor"
	"github.com/vmdhq/vmd/internal/hypervisor/hypervisortest"
	"github.com/vmdhq/vmd/internal/storage"
)

// lockingVolumes is a storage.Volumes that behaves like the local adapter
// with qemu-img where growth matters: a volume's virtual size lives in the
// fake hypervisor's image table, so the offline tool and an online
// block_resize see one file, and an offline growth of an image a running
// domain holds is refused (qemu's image lock), leaving a Ready volume at
// its old size with a message, as local.Pools does.
type lockingVolumes struct {
	dom *hypervisortest.Fake
	mu  sync.Mutex
	// offline are the sizes qemu-img grew volumes to, in order.
	offline []int64
}

func (v *lockingVolumes) EnsureVolume(_ context.Context, req storage.VolumeRequest) (storage.Volume, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	path := "/pool/" + req.Namespace + "/" + req.Name + ".qcow2"
	cur, ok := v.dom.ImageSize(path)
	if !ok {
		cur = uint64(req.SizeBytes)
		v.dom.SetImageSize(path, cur)
	}
	vol := storage.Volume{Ready: true, Path: path, Format: "qcow2", SizeBytes: int64(cur)}
	if req.SizeBytes > int64(cur) {
		if v.dom.Holds(path) {
			vol.Message = fmt.Sprintf("growing to %d bytes waits for the attached VM (online resize)", req.SizeBytes)
			return vol, nil
		}
		v.dom.SetImageSize(path, uint64(req.SizeBytes))
		v.offline = append(v.offline, req.SizeBytes)
		vol.SizeBytes = req.SizeBytes
	}
	return vol, nil
}

func (v *lockingVolumes) DeleteVolume(context.Context, string, string, string) error { return nil }

func (v *lockingVolumes) offlineGrowths() []int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]int64(nil), v.offline...)
}

// flakyDomains wraps the fake hypervisor to inject what a real one does
// between two calls: libvirtd down (stateErr), a stale "not running"
// answer (hideRunning: the domain started after State looked), or the
// domain stopping just before the resize (beforeResize).
type flakyDomains struct {
	*hypervisortest.Fake
	stateErr     error
	hideRunning  bool
	beforeResize func()
}

func (d *flakyDomains) State(ctx context.Context, name string) (hypervisor.DomainState, error) {
	if d.stateErr != nil {
		return hypervisor.DomainState{}, d.stateErr
	}
	st, err := d.Fake.State(ctx, name)
	if d.hideRunning {
		st.Running, st.State = false, "shutoff"
	}
	return st, err
}

func (d *flakyDomains) ResizeDisk(ctx context.Context, name, disk string, bytes uint64) error {
	if d.beforeResize != nil {
		d.beforeResize()
	}
	return d.Fake.ResizeDisk(ctx, name, disk, bytes)
}

// growthFixture: vmdisk "data" (1Gi, Ready) attached to vminstance "web",
// whose domain runs unless halted.
type growthFixture struct {
	*fixture
	vols *lockingVolumes
	dom  *flakyDomains
	rec  *events.Recorder
}

const (
	growthDomain = "default.vm-instance-web"
	growthPath   = "/pool/default/data.qcow2"
)

func newGrowthFixture(t *testing.T, strategy v1alpha1.RunStrategy) *growthFixture {
	t.Helper()
	f := newFixture(t)
	g := &growthFixture{fixture: f, vols: &lockingVolumes{dom: f.domains}, dom: &flakyDomains{Fake: f.domains}}
	g.rec = f.withRecorder()
	f.disks.Volumes, f.disks.Domains = g.vols, g.dom
	f.createDisk("data", v1alpha1.VMDiskSpec{Storage: "1Gi"})
	f.createVM("web", v1alpha1.VMInstanceSpec{RunStrategy: strategy, Disks: []v1alpha1.DiskRef{{Name: "data"}}})
	g.mustReconcileDisk()
	f.mustReconcileVM("web")
	g.mustReconcileDisk() // learns its user
	return g
}

func (g *growthFixture) mustReconcileDisk() Result {
	g.t.Helper()
	res, err := g.reconcile(g.disks, v1alpha1.KindVMDisk, "data")
	if err != nil {
		g.t.Fatalf("reconcile disk: %v", err)
	}
	return res
}

func (g *growthFixture) grow(storage string) {
	g.t.Helper()
	d := g.disk("data")
	d.Spec.Storage = v1alpha1.Quantity(storage)
	if err := g.store.Update(context.Background(), d); err != nil {
		g.t.Fatal(err)
	}
}

// requireSize checks status.size and that the growth no longer waits.
func (g *growthFixture) requireGrown(size int64) {
	g.t.Helper()
	d := g.disk("data")
	if d.Status.Size != size {
		g.t.Fatalf("status.size %d, want %d", d.Status.Size, size)
	}
	if c := v1alpha1.FindCondition(d.Status.Conditions, ConditionResizing); c != nil {
		g.t.Fatalf("Resizing condition left: %+v", *c)
	}
	if st, reason := ready(d.Status.Conditions); st != v1alpha1.ConditionTrue || reason != "VolumeReady" {
		g.t.Fatalf("Ready %s/%s", st, reason)
	}
}

func TestDiskGrowthOnlineThroughRunningDomain(t *testing.T) {
	g := newGrowthFixture(t, v1alpha1.RunStrategyAlways)
	if d, _ := g.domains.Get(growthDomain); !d.Running {
		t.Fatal("fixture: domain not running")
	}
	g.grow("3Gi")
	g.mustReconcileDisk()
	want := []hypervisortest.ResizeCall{{Domain: growthDomain, Disk: growthPath, Path: growthPath, Bytes: 3 << 30}}
	if got := g.domains.Resizes(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("online resizes %+v, want %+v", got, want)
	}
	if off := g.vols.offlineGrowths(); len(off) != 0 {
		t.Fatalf("qemu-img grew an image a running domain holds: %v", off)
	}
	g.requireGrown(3 << 30)
	// Settled: further passes neither resize nor write.
	rv := g.disk("data").ObjectMeta.ResourceVersion
	g.mustReconcileDisk()
	if n := len(g.domains.Resizes()); n != 1 {
		t.Fatalf("%d resizes after a resync", n)
	}
	if got := g.disk("data").ObjectMeta.ResourceVersion; got != rv {
		t.Fatalf("resync wrote the disk (rv %s -> %s)", rv, got)
	}
	if got, want := eventLog(g.rec, "data"), "Normal Provisioned x1; Normal VolumeGrown x1"; got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
	if msg := g.rec.List("default", v1alpha1.KindVMDisk, "data")[1].Message; msg != "volume grown from 1.0 GiB to 3.0 GiB online, through running vminstance web" {
		t.Fatalf("message %q", msg)
	}
}

func TestDiskGrowthOfflineWhenNoDomainRuns(t *testing.T) {
	g := newGrowthFixture(t, v1alpha1.RunStrategyHalted)
	g.grow("2Gi")
	g.mustReconcileDisk()
	if r := g.domains.Resizes(); len(r) != 0 {
		t.Fatalf("online resize of a stopped domain: %+v", r)
	}
	if off := g.vols.offlineGrowths(); len(off) != 1 || off[0] != 2<<30 {
		t.Fatalf("offline growths %v", off)
	}
	g.requireGrown(2 << 30)
	if msg := g.rec.List("default", v1alpha1.KindVMDisk, "data")[1].Message; msg != "volume grown from 1.0 GiB to 2.0 GiB" {
		t.Fatalf("message %q", msg)
	}
}

// A crash after the online resize but before the status write: the next
// pass resizes again (a no-op) and records the size.
func TestDiskGrowthConvergesAfterCrashBeforeStatus(t *testing.T) {
	g := newGrowthFixture(t, v1alpha1.RunStrategyAlways)
	g.grow("2Gi")
	if err := g.domains.ResizeDisk(context.Background(), growthDomain, growthPath, 2<<30); err != nil {
		t.Fatal(err)
	}
	g.mustReconcileDisk()
	if n := len(g.domains.Resizes()); n != 1 {
		t.Fatalf("%d resizes, want the one before the crash", n)
	}
	if off := g.vols.offlineGrowths(); len(off) != 0 {
		t.Fatalf("offline growths %v", off)
	}
	g.requireGrown(2 << 30)
}

// While libvirt cannot say whether the VM runs, neither tool may touch the
// volume: the disk stays Ready at its old size and says why.
func TestDiskGrowthWaitsForHypervisor(t *testing.T) {
	g := newGrowthFixture(t, v1alpha1.RunStrategyAlways)
	g.grow("2Gi")
	g.dom.stateErr = fmt.Errorf("connecting to libvirt: %w", errdefs.ErrUnavailable)
	for range 2 {
		if _, err := g.reconcile(g.disks, v1alpha1.KindVMDisk, "data"); !errors.Is(err, errGrowthDeferred) || !errors.Is(err, errdefs.ErrUnavailable) {
			t.Fatalf("err = %v, want a deferred growth retried with back-off", err)
		}
	}
	d := g.disk("data")
	c := v1alpha1.FindCondition(d.Status.Conditions, ConditionResizing)
	if c == nil || c.Status != v1alpha1.ConditionTrue || c.Reason != ReasonWaitingForHypervisor || !strings.Contains(c.Message, "vminstance web") {
		t.Fatalf("Resizing = %+v", c)
	}
	if st, _ := ready(d.Status.Conditions); st != v1alpha1.ConditionTrue || d.Status.Size != 1<<30 {
		t.Fatalf("Ready %s size %d: a waiting growth must leave the disk usable", st, d.Status.Size)
	}
	if len(g.vols.offlineGrowths()) != 0 || len(g.domains.Resizes()) != 0 {
		t.Fatal("volume grown while the hypervisor was unavailable")
	}
	g.dom.stateErr = nil
	g.mustReconcileDisk()
	g.requireGrown(2 << 30)
	if got, want := eventLog(g.rec, "data"), "Normal Provisioned x1; Warning WaitingForHypervisor x1; Normal VolumeGrown x1"; got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
}

func TestDiskGrowthOnlineFailureIsRetried(t *testing.T) {
	g := newGrowthFixture(t, v1alpha1.RunStrategyAlways)
	g.grow("2Gi")
	g.domains.Err = errors.New("block_resize: Could not resize: Operation not permitted")
	if _, err := g.reconcile(g.disks, v1alpha1.KindVMDisk, "data"); !errors.Is(err, errGrowthDeferred) {
		t.Fatalf("err = %v", err)
	}
	d := g.disk("data")
	if c := v1alpha1.FindCondition(d.Status.Conditions, ConditionResizing); c == nil || c.Reason != ReasonResizeFailed || !strings.Contains(c.Message, "Operation not permitted") {
		t.Fatalf("Resizing = %+v", c)
	}
	if len(g.vols.offlineGrowths()) != 0 {
		t.Fatal("fell back to qemu-img on a running domain")
	}
	g.domains.Err = nil
	g.mustReconcileDisk()
	g.requireGrown(2 << 30)
}

// The domain started after State looked: qemu-img meets the image lock,
// the growth waits (VolumeInUse) and the next pass does it online.
func TestDiskGrowthLockIsTheSafetyNet(t *testing.T) {
	g := newGrowthFixture(t, v1alpha1.RunStrategyAlways)
	g.grow("2Gi")
	g.dom.hideRunning = true
	if _, err := g.reconcile(g.disks, v1alpha1.KindVMDisk, "data"); !errors.Is(err, errGrowthDeferred) {
		t.Fatalf("err = %v", err)
	}
	if c := v1alpha1.FindCondition(g.disk("data").Status.Conditions, ConditionResizing); c == nil || c.Reason != ReasonVolumeInUse {
		t.Fatalf("Resizing = %+v", c)
	}
	g.dom.hideRunning = false
	g.mustReconcileDisk()
	if n := len(g.domains.Resizes()); n != 1 {
		t.Fatalf("%d online resizes", n)
	}
	g.requireGrown(2 << 30)
}

// The domain stopped between State and the resize: libvirt answers "not
// running" and the same pass grows the volume with qemu-img.
func TestDiskGrowthDomainStopsMeanwhile(t *testing.T) {
	g := newGrowthFixture(t, v1alpha1.RunStrategyAlways)
	g.grow("2Gi")
	g.dom.beforeResize = func() { g.domains.PowerOff(growthDomain) }
	g.mustReconcileDisk()
	if off := g.vols.offlineGrowths(); len(off) != 1 {
		t.Fatalf("offline growths %v", off)
	}
	g.requireGrown(2 << 30)
}

// Without a hypervisor to ask, a held volume waits for its VM to stop.
func TestDiskGrowthWithoutHypervisorWaitsForTheVM(t *testing.T) {
	g := newGrowthFixture(t, v1alpha1.RunStrategyManual)
	g.disks.Domains = nil
	g.annotate("web", v1alpha1.AnnotationRequestedState, v1alpha1.RequestedRunning, v1alpha1.AnnotationRequestedAt, "2026-01-01T00:00:00Z")
	g.mustReconcileVM("web")
	g.grow("2Gi")
	if _, err := g.reconcile(g.disks, v1alpha1.KindVMDisk, "data"); !errors.Is(err, errGrowthDeferred) {
		t.Fatalf("err = %v", err)
	}
	if c := v1alpha1.FindCondition(g.disk("data").Status.Conditions, ConditionResizing); c == nil || c.Reason != ReasonVolumeInUse ||
		!strings.Contains(c.Message, "vminstance web") {
		t.Fatalf("Resizing = %+v", c)
	}
	g.annotate("web", v1alpha1.AnnotationRequestedState, v1alpha1.RequestedStopped, v1alpha1.AnnotationRequestedAt, "2026-01-01T00:01:00Z")
	g.mustReconcileVM("web")
	g.mustReconcileDisk()
	g.requireGrown(2 << 30)
	if off := g.vols.offlineGrowths(); len(off) != 1 {
		t.Fatalf("offline growths %v", off)
	}
}
