package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/events"
	"github.com/vmdhq/vmd/internal/storage"
)

// withRecorder gives the fixture's disk reconciler a real in-memory
// recorder. Because the recorder folds repeats into Count, "recorded once"
// is checked as Count == 1, so a transition recorded twice cannot hide.
func (f *fixture) withRecorder() *events.Recorder {
	rec := events.New(events.Options{})
	f.disks.Recorder = rec
	return rec
}

// eventLog renders the events of disk name as "Type Reason xCount".
func eventLog(rec *events.Recorder, name string) string {
	return kindEventLog(rec, v1alpha1.KindVMDisk, name)
}

// kindEventLog renders the events of the object kind/name in namespace
// default as "Type Reason xCount; ...".
func kindEventLog(rec *events.Recorder, kind v1alpha1.Kind, name string) string {
	var parts []string
	for _, e := range rec.List("default", kind, name) {
		parts = append(parts, fmt.Sprintf("%s %s x%d", e.Type, e.Reason, e.Count))
	}
	return strings.Join(parts, "; ")
}

func (f *fixture) reconcileDiskN(name string, n int) {
	f.t.Helper()
	for range n {
		if _, err := f.reconcile(f.disks, v1alpha1.KindVMDisk, name); err != nil && !errors.Is(err, errTransient) {
			f.t.Fatal(err)
		}
	}
}

var errTransient = errors.New("dial tcp 192.0.2.1:443: connection refused")

func TestDiskEventsImportRecordedOnce(t *testing.T) {
	f := newFixture(t)
	rec := f.withRecorder()
	f.volumes.ImportSteps = 3
	f.createDisk("img", v1alpha1.VMDiskSpec{Storage: "10Gi",
		Source: v1alpha1.DiskSource{HTTP: &v1alpha1.HTTPSource{URL: "https://example.test/img.qcow2"}}})
	f.reconcileDiskN("img", 8) // import takes three passes; the rest are resyncs
	if got, want := eventLog(rec, "img"), "Normal ImportStarted x1; Normal Imported x1"; got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
	evs := rec.List("default", v1alpha1.KindVMDisk, "img")
	if !strings.Contains(evs[0].Message, "https://example.test/img.qcow2") ||
		!strings.Contains(evs[1].Message, "/fake/") || !strings.Contains(evs[1].Message, "10.0 GiB") {
		t.Fatalf("messages: %q / %q", evs[0].Message, evs[1].Message)
	}
	if d := f.disk("img"); evs[1].InvolvedObject.UID != d.ObjectMeta.UID || d.ObjectMeta.UID == "" {
		t.Fatalf("involved object %+v, disk uid %q", evs[1].InvolvedObject, d.ObjectMeta.UID)
	}
}

func TestDiskEventsBlankIsProvisioned(t *testing.T) {
	f := newFixture(t)
	rec := f.withRecorder()
	f.createDisk("blank", v1alpha1.VMDiskSpec{Storage: "1Gi"})
	f.reconcileDiskN("blank", 3)
	if got, want := eventLog(rec, "blank"), "Normal Provisioned x1"; got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
}

func TestDiskEventsRetryingOncePerMessage(t *testing.T) {
	f := newFixture(t)
	rec := f.withRecorder()
	f.createDisk("d", v1alpha1.VMDiskSpec{Storage: "1Gi", Source: v1alpha1.DiskSource{Image: &v1alpha1.ImageSource{Name: "ubuntu"}}})
	f.volumes.Err = errTransient
	f.reconcileDiskN("d", 4)
	if got, want := eventLog(rec, "d"), "Warning Retrying x1"; got != want {
		t.Fatalf("after one error repeated: %q, want %q", got, want)
	}
	f.volumes.Err = fmt.Errorf("other: %w", errTransient)
	f.reconcileDiskN("d", 3)
	f.volumes.Err = nil
	f.reconcileDiskN("d", 2)
	if got, want := eventLog(rec, "d"), "Warning Retrying x1; Warning Retrying x1; Normal Imported x1"; got != want {
		t.Fatalf("after a second error and recovery: %q, want %q", got, want)
	}
	if msg := rec.List("default", v1alpha1.KindVMDisk, "d")[0].Message; !strings.Contains(msg, "connection refused") {
		t.Fatalf("retry message %q", msg)
	}
}

func TestDiskEventsFailuresAreQuiet(t *testing.T) {
	tests := []struct {
		name    string
		volumes storage.Volumes
		err     error
		want    string
	}{
		{name: "not implemented", volumes: storage.NotImplemented{}, want: "Warning NotImplemented x1"},
		{name: "import failed", err: fmt.Errorf("sniffing image: not a disk image: %w", errdefs.ErrInvalid), want: "Warning ImportFailed x1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			rec := f.withRecorder()
			if tc.volumes != nil {
				f.disks.Volumes = tc.volumes
			}
			f.volumes.Err = tc.err
			f.createDisk("d", v1alpha1.VMDiskSpec{Storage: "1Gi", Source: v1alpha1.DiskSource{HTTP: &v1alpha1.HTTPSource{URL: "https://example.test/x"}}})
			f.reconcileDiskN("d", 5)
			if got := eventLog(rec, "d"); got != tc.want {
				t.Fatalf("events %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDiskEventsWaitingForSource(t *testing.T) {
	f := newFixture(t)
	rec := f.withRecorder()
	f.createDisk("copy", v1alpha1.VMDiskSpec{Storage: "1Gi", Source: v1alpha1.DiskSource{Disk: &v1alpha1.DiskClone{Name: "orig"}}})
	f.reconcileDiskN("copy", 3)
	f.createDisk("orig", v1alpha1.VMDiskSpec{Storage: "1Gi"})
	f.reconcileDiskN("copy", 2) // source exists but is not Ready: a new reason to wait
	f.reconcileDiskN("orig", 1)
	f.reconcileDiskN("copy", 2)
	if got, want := eventLog(rec, "copy"), "Normal WaitingForSource x1; Normal WaitingForSource x1; Normal Imported x1"; got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
}

func TestDiskEventsWaitingForUpload(t *testing.T) {
	f := newFixture(t)
	rec := f.withRecorder()
	vols := &scriptedVolumes{vol: storage.Volume{WaitingForUpload: true}}
	f.disks.Volumes = vols
	f.createDisk("up", v1alpha1.VMDiskSpec{Storage: "1Gi", Source: v1alpha1.DiskSource{Upload: &v1alpha1.UploadSource{}}})
	f.reconcileDiskN("up", 3)
	vols.vol = storage.Volume{Ready: true, Path: "/p/up.qcow2", SizeBytes: 1 << 30, Format: "qcow2"}
	f.reconcileDiskN("up", 2)
	if got, want := eventLog(rec, "up"), "Normal WaitingForUpload x1; Normal Imported x1"; got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
}

func TestDiskEventsVolumeGrown(t *testing.T) {
	f := newFixture(t)
	rec := f.withRecorder()
	vols := &scriptedVolumes{vol: storage.Volume{Ready: true, Path: "/p/d.qcow2", SizeBytes: 1 << 30, Format: "qcow2"}}
	f.disks.Volumes = vols
	f.createDisk("d", v1alpha1.VMDiskSpec{Storage: "1Gi"})
	f.reconcileDiskN("d", 2)
	vols.vol.SizeBytes = 2 << 30
	f.reconcileDiskN("d", 3)
	if got, want := eventLog(rec, "d"), "Normal Provisioned x1; Normal VolumeGrown x1"; got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
	if msg := rec.List("default", v1alpha1.KindVMDisk, "d")[1].Message; msg != "volume grown from 1.0 GiB to 2.0 GiB" {
		t.Fatalf("message %q", msg)
	}
}

func TestDiskEventsDelete(t *testing.T) {
	f := newFixture(t)
	rec := f.withRecorder()
	ctx := context.Background()
	f.createDisk("data", v1alpha1.VMDiskSpec{Storage: "1Gi"})
	f.createVM("web", v1alpha1.VMInstanceSpec{Disks: []v1alpha1.DiskRef{{Name: "data"}}})
	f.reconcileDiskN("data", 1)
	if _, err := f.store.Delete(ctx, v1alpha1.KindVMDisk, "default", "data", ""); err != nil {
		t.Fatal(err)
	}
	f.reconcileDiskN("data", 3)
	vm := f.vm("web")
	vm.Spec.Disks = nil
	if err := f.store.Update(ctx, vm); err != nil {
		t.Fatal(err)
	}
	f.reconcileDiskN("data", 2) // the second pass finds the disk gone
	if got, want := eventLog(rec, "data"), "Normal Provisioned x1; Normal WaitingForRelease x1; Normal VolumeDeleted x1"; got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
	if f.volumes.Len() != 0 {
		t.Fatal("volume not deleted")
	}
}

// TestDiskEventsRule covers the pure transition rule on its own.
func TestDiskEventsRule(t *testing.T) {
	ready := func(reason, msg string) []v1alpha1.Condition {
		return []v1alpha1.Condition{{Type: v1alpha1.ConditionReady, Status: v1alpha1.ConditionFalse, Reason: reason, Message: msg}}
	}
	httpSrc := v1alpha1.DiskSource{HTTP: &v1alpha1.HTTPSource{URL: "https://x.test/a"}}
	resizing := func(reason, msg string) v1alpha1.Condition {
		return v1alpha1.Condition{Type: ConditionResizing, Status: v1alpha1.ConditionTrue, Reason: reason, Message: msg}
	}
	readyOK := v1alpha1.Condition{Type: v1alpha1.ConditionReady, Status: v1alpha1.ConditionTrue, Reason: "VolumeReady", Message: "m"}
	readyDisk := diskSnapshot{phase: v1alpha1.DiskPhaseReady, reason: "VolumeReady", message: "m", size: 1 << 30}
	tests := []struct {
		name   string
		old    diskSnapshot
		src    v1alpha1.DiskSource
		st     v1alpha1.VMDiskStatus
		online []string
		want   string
	}{
		{name: "grown online", old: readyDisk, src: httpSrc, online: []string{"web"},
			st:   v1alpha1.VMDiskStatus{Phase: v1alpha1.DiskPhaseReady, Size: 2 << 30, Conditions: []v1alpha1.Condition{readyOK}},
			want: "Normal VolumeGrown volume grown from 1.0 GiB to 2.0 GiB online, through running vminstance web"},
		{name: "growth starts waiting", old: readyDisk, src: httpSrc,
			st:   v1alpha1.VMDiskStatus{Phase: v1alpha1.DiskPhaseReady, Size: 1 << 30, Conditions: []v1alpha1.Condition{readyOK, resizing(ReasonWaitingForHypervisor, "libvirt down")}},
			want: "Warning WaitingForHypervisor libvirt down"},
		{name: "growth still waiting", src: httpSrc,
			old: diskSnapshot{phase: v1alpha1.DiskPhaseReady, reason: "VolumeReady", message: "m", size: 1 << 30, resizeReason: ReasonWaitingForHypervisor, resizeMessage: "libvirt down"},
			st:  v1alpha1.VMDiskStatus{Phase: v1alpha1.DiskPhaseReady, Size: 1 << 30, Conditions: []v1alpha1.Condition{readyOK, resizing(ReasonWaitingForHypervisor, "libvirt down")}}},
		{name: "growth wait changes cause", src: httpSrc,
			old:  diskSnapshot{phase: v1alpha1.DiskPhaseReady, reason: "VolumeReady", message: "m", size: 1 << 30, resizeReason: ReasonWaitingForHypervisor, resizeMessage: "libvirt down"},
			st:   v1alpha1.VMDiskStatus{Phase: v1alpha1.DiskPhaseReady, Size: 1 << 30, Conditions: []v1alpha1.Condition{readyOK, resizing(ReasonResizeFailed, "block_resize failed")}},
			want: "Warning ResizeFailed block_resize failed"},
		{name: "import progress moves", old: diskSnapshot{phase: v1alpha1.DiskPhaseImporting, reason: "Importing", message: "importing 10%"}, src: httpSrc,
			st: v1alpha1.VMDiskStatus{Phase: v1alpha1.DiskPhaseImporting, Conditions: ready("Importing", "importing 20%")}},
		{name: "import starts", old: diskSnapshot{}, src: httpSrc,
			st:   v1alpha1.VMDiskStatus{Phase: v1alpha1.DiskPhaseImporting, Conditions: ready("Importing", "importing 0%")},
			want: "Normal ImportStarted importing from https://x.test/a"},
		{name: "import resumes after a retry", old: diskSnapshot{phase: v1alpha1.DiskPhaseImporting, reason: "Retrying", message: "x"}, src: httpSrc,
			st: v1alpha1.VMDiskStatus{Phase: v1alpha1.DiskPhaseImporting, Conditions: ready("Importing", "importing 0%")}},
		{name: "ready disk resynced", old: diskSnapshot{phase: v1alpha1.DiskPhaseReady, reason: "VolumeReady", message: "m", size: 5}, src: httpSrc,
			st: v1alpha1.VMDiskStatus{Phase: v1alpha1.DiskPhaseReady, Size: 5, Conditions: ready("VolumeReady", "m")}},
		{name: "ready disk recovers from a retry", old: diskSnapshot{phase: v1alpha1.DiskPhaseReady, reason: "Retrying", message: "e", size: 5}, src: httpSrc,
			st: v1alpha1.VMDiskStatus{Phase: v1alpha1.DiskPhaseReady, Size: 5, Conditions: ready("VolumeReady", "m")}},
		{name: "size first learnt is not growth", old: diskSnapshot{phase: v1alpha1.DiskPhaseReady, reason: "VolumeReady"}, src: httpSrc,
			st: v1alpha1.VMDiskStatus{Phase: v1alpha1.DiskPhaseReady, Size: 5, Conditions: ready("VolumeReady", "m")}},
		{name: "clone ready", old: diskSnapshot{phase: v1alpha1.DiskPhasePending, reason: "WaitingForSource"},
			src:  v1alpha1.DiskSource{Disk: &v1alpha1.DiskClone{Name: "orig"}},
			st:   v1alpha1.VMDiskStatus{Phase: v1alpha1.DiskPhaseReady, Path: "/p/c", Conditions: ready("VolumeReady", "m")},
			want: "Normal Imported imported a copy of vmdisk orig into volume /p/c"},
		{name: "same failure again", old: diskSnapshot{phase: v1alpha1.DiskPhaseFailed, reason: "ImportFailed", message: "bad"}, src: httpSrc,
			st: v1alpha1.VMDiskStatus{Phase: v1alpha1.DiskPhaseFailed, Conditions: ready("ImportFailed", "bad")}},
		{name: "new failure", old: diskSnapshot{phase: v1alpha1.DiskPhaseFailed, reason: "ImportFailed", message: "bad"}, src: httpSrc,
			st:   v1alpha1.VMDiskStatus{Phase: v1alpha1.DiskPhaseFailed, Conditions: ready("ImportFailed", "worse")},
			want: "Warning ImportFailed worse"},
		{name: "deleting, waiting for release", old: diskSnapshot{phase: v1alpha1.DiskPhaseReady, reason: "VolumeReady"}, src: httpSrc,
			st:   v1alpha1.VMDiskStatus{Phase: v1alpha1.DiskPhaseDeleting, Conditions: ready("WaitingForRelease", "waits for web")},
			want: "Normal WaitingForRelease waits for web"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &v1alpha1.VMDisk{Spec: v1alpha1.VMDiskSpec{Source: tc.src}, Status: tc.st}
			var got []string
			for _, e := range diskEvents(tc.old, d, tc.online) {
				got = append(got, e.typ+" "+e.reason+" "+e.message)
			}
			if strings.Join(got, "|") != tc.want {
				t.Fatalf("diskEvents = %q, want %q", got, tc.want)
			}
		})
	}
}
