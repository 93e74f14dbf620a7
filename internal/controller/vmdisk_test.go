package controller

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/storage"
)

// scriptedVolumes returns a fixed volume and records the requests.
type scriptedVolumes struct {
	mu   sync.Mutex
	vol  storage.Volume
	reqs []storage.VolumeRequest
}

func (s *scriptedVolumes) EnsureVolume(_ context.Context, req storage.VolumeRequest) (storage.Volume, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, req)
	return s.vol, nil
}

func (s *scriptedVolumes) DeleteVolume(context.Context, string, string, string) error { return nil }

func TestDiskStatusFromVolume(t *testing.T) {
	tests := []struct {
		name        string
		vol         storage.Volume
		wantPhase   string
		wantReason  string
		wantMessage string
		wantRequeue bool
	}{
		{
			name:      "waiting for upload",
			vol:       storage.Volume{WaitingForUpload: true, Message: "last upload refused: bad"},
			wantPhase: v1alpha1.DiskPhaseUploading, wantReason: "WaitingForUpload",
			wantMessage: "vmctl upload vmdisk data --image-path FILE; last upload refused: bad", wantRequeue: true,
		},
		{
			name:      "importing with rate and stage",
			vol:       storage.Volume{BytesDone: 50 << 20, BytesTotal: 200 << 20, BytesPerSecond: 25 << 20, Stage: "downloading"},
			wantPhase: v1alpha1.DiskPhaseImporting, wantReason: "Importing",
			wantMessage: "importing 25.0% (50.0 MiB of 200.0 MiB, 25.0 MiB/s): downloading", wantRequeue: true,
		},
		{
			name:      "ready with a note",
			vol:       storage.Volume{Ready: true, Path: "/p/v.qcow2", SHA256: "ab", Message: "growing waits"},
			wantPhase: v1alpha1.DiskPhaseReady, wantReason: "VolumeReady", wantMessage: "volume /p/v.qcow2 holds its data; growing waits",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			vols := &scriptedVolumes{vol: tc.vol}
			f.disks.Volumes = vols
			f.createDisk("data", v1alpha1.VMDiskSpec{Storage: "10Gi"})
			res, err := f.reconcile(f.disks, v1alpha1.KindVMDisk, "data")
			if err != nil {
				t.Fatal(err)
			}
			if (res.RequeueAfter > 0) != tc.wantRequeue {
				t.Fatalf("RequeueAfter = %v", res.RequeueAfter)
			}
			d := f.disk("data")
			c := v1alpha1.FindCondition(d.Status.Conditions, v1alpha1.ConditionReady)
			if d.Status.Phase != tc.wantPhase || c == nil || c.Reason != tc.wantReason || !strings.HasSuffix(c.Message, tc.wantMessage) {
				t.Fatalf("phase %q condition %+v; want %q %q ...%q", d.Status.Phase, c, tc.wantPhase, tc.wantReason, tc.wantMessage)
			}
			if tc.vol.SHA256 != "" && d.Status.SHA256 != tc.vol.SHA256 {
				t.Fatalf("sha256 = %q", d.Status.SHA256)
			}
		})
	}
}

// TestCloneWaitsForSource: a clone stays Pending (WaitingForSource) until
// its source is Ready, then gets the source's volume path.
func TestCloneWaitsForSource(t *testing.T) {
	f := newFixture(t)
	vols := &scriptedVolumes{vol: storage.Volume{Ready: true, Path: "/pool/default/copy.qcow2"}}
	f.disks.Volumes = vols
	f.createDisk("copy", v1alpha1.VMDiskSpec{Storage: "10Gi", Source: v1alpha1.DiskSource{Disk: &v1alpha1.DiskClone{Name: "orig"}}})

	check := func(wantPhase, wantReason, wantMsg string) {
		t.Helper()
		res, err := f.reconcile(f.disks, v1alpha1.KindVMDisk, "copy")
		if err != nil {
			t.Fatal(err)
		}
		d := f.disk("copy")
		c := v1alpha1.FindCondition(d.Status.Conditions, v1alpha1.ConditionReady)
		if d.Status.Phase != wantPhase || c.Reason != wantReason || !strings.Contains(c.Message, wantMsg) {
			t.Fatalf("phase %q %+v; want %q %q %q", d.Status.Phase, c, wantPhase, wantReason, wantMsg)
		}
		if wantPhase == v1alpha1.DiskPhasePending && res.RequeueAfter == 0 {
			t.Fatal("a waiting clone must be looked at again")
		}
	}
	check(v1alpha1.DiskPhasePending, "WaitingForSource", "source vmdisk orig to exist")
	if len(vols.reqs) != 0 {
		t.Fatalf("EnsureVolume called before the source exists: %+v", vols.reqs)
	}

	f.createDisk("orig", v1alpha1.VMDiskSpec{Storage: "10Gi"})
	check(v1alpha1.DiskPhasePending, "WaitingForSource", "to be Ready (it is Pending)")

	orig := f.disk("orig")
	orig.Status.Phase, orig.Status.Path = v1alpha1.DiskPhaseReady, "/pool/default/orig.qcow2"
	if err := f.store.UpdateStatus(context.Background(), orig); err != nil {
		t.Fatal(err)
	}
	check(v1alpha1.DiskPhaseReady, "VolumeReady", "holds its data")
	if len(vols.reqs) != 1 || vols.reqs[0].CloneFrom != "/pool/default/orig.qcow2" {
		t.Fatalf("requests = %+v", vols.reqs)
	}
}
