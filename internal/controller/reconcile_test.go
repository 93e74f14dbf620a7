package controller

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/catalog"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/hypervisor"
	"github.com/vmdhq/vmd/internal/hypervisor/hypervisortest"
	"github.com/vmdhq/vmd/internal/state"
	"github.com/vmdhq/vmd/internal/storage/storagetest"
)

type fixture struct {
	t       *testing.T
	store   state.Store
	volumes *storagetest.Fake
	domains *hypervisortest.Fake
	disks   *DiskReconciler
	vms     *InstanceReconciler
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	st, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{t: t, store: st, volumes: storagetest.New(), domains: hypervisortest.New()}
	f.disks = &DiskReconciler{Store: st, Volumes: f.volumes}
	f.vms = &InstanceReconciler{Store: st, Driver: f.domains, Catalog: catalog.Default(),
		DomainType: hypervisor.DomainTypeQEMU, InstancesDir: filepath.Join(t.TempDir(), "instances")}
	return f
}

func ptr[T any](v T) *T { return &v }

func (f *fixture) createDisk(name string, spec v1alpha1.VMDiskSpec) {
	f.t.Helper()
	d := &v1alpha1.VMDisk{TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindVMDisk},
		ObjectMeta: v1alpha1.ObjectMeta{Name: name, Namespace: "default", Finalizers: []string{v1alpha1.CleanupFinalizer}},
		Spec:       spec}
	v1alpha1.SetDefaults(d)
	if err := f.store.Create(context.Background(), d); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) createVM(name string, spec v1alpha1.VMInstanceSpec) {
	f.t.Helper()
	vm := &v1alpha1.VMInstance{TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindVMInstance},
		ObjectMeta: v1alpha1.ObjectMeta{Name: name, Namespace: "default", Finalizers: []string{v1alpha1.CleanupFinalizer}},
		Spec:       spec}
	v1alpha1.SetDefaults(vm)
	if err := f.store.Create(context.Background(), vm); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) reconcile(r Reconciler, kind v1alpha1.Kind, name string) (Result, error) {
	f.t.Helper()
	return r.Reconcile(context.Background(), Key{Kind: kind, Namespace: "default", Name: name})
}

func (f *fixture) disk(name string) *v1alpha1.VMDisk {
	f.t.Helper()
	o, err := f.store.Get(context.Background(), v1alpha1.KindVMDisk, "default", name)
	if err != nil {
		f.t.Fatal(err)
	}
	return o.(*v1alpha1.VMDisk)
}

func (f *fixture) vm(name string) *v1alpha1.VMInstance {
	f.t.Helper()
	o, err := f.store.Get(context.Background(), v1alpha1.KindVMInstance, "default", name)
	if err != nil {
		f.t.Fatal(err)
	}
	return o.(*v1alpha1.VMInstance)
}

func ready(conds []v1alpha1.Condition) (v1alpha1.ConditionStatus, string) {
	c := v1alpha1.FindCondition(conds, v1alpha1.ConditionReady)
	if c == nil {
		return "", ""
	}
	return c.Status, c.Reason
}

func TestDiskReconcile(t *testing.T) {
	tests := []struct {
		name        string
		importSteps int
		err         error
		wantPhase   string
		wantReady   v1alpha1.ConditionStatus
		wantReason  string
		wantErr     bool
		wantRequeue bool
	}{
		{name: "ready at once", wantPhase: v1alpha1.DiskPhaseReady, wantReady: v1alpha1.ConditionTrue, wantReason: "VolumeReady"},
		{name: "import in progress", importSteps: 4, wantPhase: v1alpha1.DiskPhaseImporting, wantReady: v1alpha1.ConditionFalse, wantReason: "Importing", wantRequeue: true},
		{name: "not implemented is not retried", err: errdefs.ErrNotImplemented, wantPhase: v1alpha1.DiskPhasePending, wantReady: v1alpha1.ConditionFalse, wantReason: "NotImplemented"},
		{name: "bad image fails", err: errors.Join(errors.New("qcow2 has a backing file"), errdefs.ErrInvalid), wantPhase: v1alpha1.DiskPhaseFailed, wantReady: v1alpha1.ConditionFalse, wantReason: "ImportFailed"},
		{name: "transient error retried", err: errors.New("connection reset"), wantPhase: v1alpha1.DiskPhasePending, wantReady: v1alpha1.ConditionFalse, wantReason: "Retrying", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.volumes.ImportSteps, f.volumes.Err = tc.importSteps, tc.err
			f.createDisk("data", v1alpha1.VMDiskSpec{Storage: "10Gi"})
			res, err := f.reconcile(f.disks, v1alpha1.KindVMDisk, "data")
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if (res.RequeueAfter > 0) != tc.wantRequeue {
				t.Fatalf("RequeueAfter = %v", res.RequeueAfter)
			}
			d := f.disk("data")
			st, reason := ready(d.Status.Conditions)
			if d.Status.Phase != tc.wantPhase || st != tc.wantReady || reason != tc.wantReason {
				t.Fatalf("phase %q ready %q/%q, want %q %q/%q", d.Status.Phase, st, reason, tc.wantPhase, tc.wantReady, tc.wantReason)
			}
			if d.Status.ObservedGeneration != d.ObjectMeta.Generation {
				t.Fatalf("observedGeneration %d != generation %d", d.Status.ObservedGeneration, d.ObjectMeta.Generation)
			}
		})
	}
}

func TestReconcileIsQuietWhenNothingChanges(t *testing.T) {
	f := newFixture(t)
	f.createDisk("data", v1alpha1.VMDiskSpec{})
	if _, err := f.reconcile(f.disks, v1alpha1.KindVMDisk, "data"); err != nil {
		t.Fatal(err)
	}
	rv := f.disk("data").ObjectMeta.ResourceVersion
	for i := 0; i < 3; i++ {
		if _, err := f.reconcile(f.disks, v1alpha1.KindVMDisk, "data"); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.disk("data").ObjectMeta.ResourceVersion; got != rv {
		t.Fatalf("no-op reconciles wrote the object (rv %s -> %s); each write would wake the watch again", rv, got)
	}
}

func TestReconcileMissingKey(t *testing.T) {
	f := newFixture(t)
	if _, err := f.reconcile(f.disks, v1alpha1.KindVMDisk, "gone"); err != nil {
		t.Fatalf("disk: %v", err)
	}
	if _, err := f.reconcile(f.vms, v1alpha1.KindVMInstance, "gone"); err != nil {
		t.Fatalf("instance: %v", err)
	}
}

func TestInstanceWaitsForDisksThenRuns(t *testing.T) {
	f := newFixture(t)
	f.createVM("web", v1alpha1.VMInstanceSpec{
		InstanceType: ptr("u1.large"),
		Disks:        []v1alpha1.DiskRef{{Name: "system"}, {Name: "iso", Bus: "sata"}},
	})
	if _, err := f.reconcile(f.vms, v1alpha1.KindVMInstance, "web"); err != nil {
		t.Fatal(err)
	}
	vm := f.vm("web")
	if st, reason := ready(vm.Status.Conditions); vm.Status.Phase != v1alpha1.PhasePending || st != v1alpha1.ConditionFalse || reason != "WaitingForDisks" {
		t.Fatalf("without disks: phase %q ready %s/%s", vm.Status.Phase, st, reason)
	}
	if f.domains.Len() != 0 {
		t.Fatal("domain defined before its disks exist")
	}
	f.createDisk("system", v1alpha1.VMDiskSpec{Source: v1alpha1.DiskSource{Image: &v1alpha1.ImageSource{Name: "ubuntu-2404"}}, Storage: "20Gi"})
	f.createDisk("iso", v1alpha1.VMDiskSpec{Optical: ptr(true), Storage: "2Gi"})
	// The map function wakes the instance when a disk changes.
	keys := InstancesOfDisk(f.store)(context.Background(), f.disk("system"))
	if len(keys) != 1 || keys[0].Name != "web" {
		t.Fatalf("InstancesOfDisk = %v", keys)
	}
	for _, n := range []string{"system", "iso"} {
		if _, err := f.reconcile(f.disks, v1alpha1.KindVMDisk, n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.reconcile(f.vms, v1alpha1.KindVMInstance, "web"); err != nil {
		t.Fatal(err)
	}
	vm = f.vm("web")
	if st, _ := ready(vm.Status.Conditions); vm.Status.Phase != v1alpha1.PhaseRunning || st != v1alpha1.ConditionTrue {
		t.Fatalf("phase %q ready %s: %+v", vm.Status.Phase, st, vm.Status.Conditions)
	}
	dom, ok := f.domains.Get("default.vm-instance-web")
	if !ok {
		t.Fatal("no domain")
	}
	if !dom.Running {
		t.Fatal("domain not running")
	}
	x := parseDomain(t, dom.XML)
	if x.VCPU == nil || x.VCPU.Value != 2 || x.Memory == nil || x.Memory.Value != 8<<20 || x.Memory.Unit != "KiB" {
		t.Fatalf("sizing: vcpu %+v memory %+v", x.VCPU, x.Memory)
	}
	var disks []libvirtxml.DomainDisk
	for _, d := range x.Devices.Disks {
		if d.Source != nil && d.Source.File != nil && !strings.HasSuffix(d.Source.File.File, "cidata.iso") {
			disks = append(disks, d)
		}
	}
	if len(disks) != 2 || disks[1].Device != "cdrom" || disks[1].Target.Bus != "sata" {
		t.Fatalf("disks in boot order with bus and optical: %+v", disks)
	}
	if x.UUID != hypervisor.StableUUID("default", "web", "") || vm.Status.UUID != x.UUID {
		t.Fatalf("UUID %q / status %q", x.UUID, vm.Status.UUID)
	}
	// A disk now reports its user.
	if _, err := f.reconcile(f.disks, v1alpha1.KindVMDisk, "system"); err != nil {
		t.Fatal(err)
	}
	if u := f.disk("system").Status.UsedBy; len(u) != 1 || u[0] != "web" {
		t.Fatalf("UsedBy = %v", u)
	}
}

func TestInstanceCustomResourcesAndHalted(t *testing.T) {
	f := newFixture(t)
	f.createVM("big", v1alpha1.VMInstanceSpec{
		InstanceType: ptr(""),
		Resources:    &v1alpha1.Resources{CPU: "2", Sockets: "2", Memory: "6Gi"},
		RunStrategy:  v1alpha1.RunStrategyHalted,
	})
	if _, err := f.reconcile(f.vms, v1alpha1.KindVMInstance, "big"); err != nil {
		t.Fatal(err)
	}
	dom, _ := f.domains.Get("default.vm-instance-big")
	x := parseDomain(t, dom.XML)
	if x.VCPU.Value != 4 || x.Memory.Value != 6<<20 || x.CPU == nil || x.CPU.Topology == nil ||
		x.CPU.Topology.Sockets != 2 || x.CPU.Topology.Cores != 2 || dom.Running || dom.Starts != 0 {
		t.Fatalf("custom sizing / halted: vcpu %+v cpu %+v running=%v starts=%d", x.VCPU, x.CPU, dom.Running, dom.Starts)
	}
	vm := f.vm("big")
	if vm.Status.Phase != v1alpha1.PhaseStopped || vm.Status.InstanceType != "custom" {
		t.Fatalf("status %+v", vm.Status)
	}
}

func TestInstanceUUIDFollowsSeedButSurvivesItsRemoval(t *testing.T) {
	f := newFixture(t)
	f.createVM("web", v1alpha1.VMInstanceSpec{CloudInitSeed: "one"})
	ctx := context.Background()
	if _, err := f.reconcile(f.vms, v1alpha1.KindVMInstance, "web"); err != nil {
		t.Fatal(err)
	}
	first := f.vm("web").Status.UUID
	if first != hypervisor.StableUUID("default", "web", "one") {
		t.Fatalf("UUID %q", first)
	}
	vm := f.vm("web")
	vm.Spec.CloudInitSeed = ""
	if err := f.store.Update(ctx, vm); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reconcile(f.vms, v1alpha1.KindVMInstance, "web"); err != nil {
		t.Fatal(err)
	}
	if got := f.vm("web").Status.UUID; got != first {
		t.Fatalf("removing the seed changed the UUID %q -> %q (would re-run cloud-init)", first, got)
	}
}

func TestDeleteOrder(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.createDisk("system", v1alpha1.VMDiskSpec{})
	f.createVM("web", v1alpha1.VMInstanceSpec{Disks: []v1alpha1.DiskRef{{Name: "system"}}})
	f.reconcile(f.disks, v1alpha1.KindVMDisk, "system")
	f.reconcile(f.vms, v1alpha1.KindVMInstance, "web")

	// The disk is attached: deleting it waits.
	if _, err := f.store.Delete(ctx, v1alpha1.KindVMDisk, "default", "system", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reconcile(f.disks, v1alpha1.KindVMDisk, "system"); err != nil {
		t.Fatal(err)
	}
	d := f.disk("system")
	if _, reason := ready(d.Status.Conditions); reason != "WaitingForRelease" || f.volumes.Len() != 1 {
		t.Fatalf("attached disk deleted: reason %q volumes %d", reason, f.volumes.Len())
	}
	// Deleting the instance releases its domain, then the disk goes.
	if _, err := f.store.Delete(ctx, v1alpha1.KindVMInstance, "default", "web", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reconcile(f.vms, v1alpha1.KindVMInstance, "web"); err != nil {
		t.Fatal(err)
	}
	if f.domains.Len() != 0 {
		t.Fatal("domain left after instance delete")
	}
	if _, err := f.store.Get(ctx, v1alpha1.KindVMInstance, "default", "web"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("instance still stored: %v", err)
	}
	if _, err := f.reconcile(f.disks, v1alpha1.KindVMDisk, "system"); err != nil {
		t.Fatal(err)
	}
	if f.volumes.Len() != 0 {
		t.Fatal("volume left after disk delete")
	}
	if _, err := f.store.Get(ctx, v1alpha1.KindVMDisk, "default", "system"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("disk still stored: %v", err)
	}
}

func TestControllerRunConverges(t *testing.T) {
	f := newFixture(t)
	c := New(f.store, Options{Workers: 2, BackoffBase: 10 * time.Millisecond})
	c.Register(v1alpha1.KindVMDisk, f.disks, InstancesOfDisk(f.store))
	c.Register(v1alpha1.KindVMInstance, f.vms, DisksOfInstance)
	// Objects created before the controller starts are picked up by the
	// initial resync; those created after, by the watch.
	f.createVM("web", v1alpha1.VMInstanceSpec{Disks: []v1alpha1.DiskRef{{Name: "system"}}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	f.createDisk("system", v1alpha1.VMDiskSpec{})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if vm := f.vm("web"); vm.Status.Phase == v1alpha1.PhaseRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never converged: %+v", f.vm("web").Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func parseDomain(t *testing.T, x string) *libvirtxml.Domain {
	t.Helper()
	var d libvirtxml.Domain
	if err := d.Unmarshal(x); err != nil {
		t.Fatalf("parsing domain xml: %v", err)
	}
	return &d
}
