package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/hypervisor"
	"github.com/vmdhq/vmd/internal/state"
)

// InstanceReconciler makes a VMInstance's domain match its spec.
type InstanceReconciler struct {
	Store   state.Store
	Driver  hypervisor.Driver
	Catalog v1alpha1.Catalog
	Log     *slog.Logger
	// Now is the clock (tests replace it).
	Now func() time.Time
}

// Reconcile implements Reconciler.
func (r *InstanceReconciler) Reconcile(ctx context.Context, key Key) (Result, error) {
	obj, err := getObject(ctx, r.Store, key)
	if err != nil || obj == nil {
		return Result{}, err
	}
	vm := obj.(*v1alpha1.VMInstance)
	before, err := statusJSON(vm)
	if err != nil {
		return Result{}, err
	}
	meta := &vm.ObjectMeta
	st := &vm.Status
	st.DomainName = hypervisor.DomainName(meta.Name)

	if meta.DeletionTimestamp != nil {
		st.Phase = v1alpha1.PhaseTerminating
		if err := writeStatus(ctx, r.Store, vm, before); err != nil {
			return Result{}, err
		}
		if err := r.Driver.DeleteDomain(ctx, st.DomainName); err != nil {
			return Result{}, fmt.Errorf("deleting domain %s: %w", st.DomainName, err)
		}
		return Result{}, removeFinalizer(ctx, r.Store, vm)
	}
	if wrote, err := ensureFinalizer(ctx, r.Store, vm); err != nil || wrote {
		return Result{}, err
	}

	now := r.now()
	gen := meta.Generation
	st.ObservedGeneration = gen
	// The UUID is the guest's identity: keep it when the seed is removed,
	// as Cozystack does, so dropping a seed does not re-run cloud-init.
	if vm.Spec.CloudInitSeed != "" || st.UUID == "" {
		st.UUID = hypervisor.StableUUID(meta.Namespace, meta.Name, vm.Spec.CloudInitSeed)
	}
	req, waiting, err := r.plan(ctx, vm)
	if err != nil {
		return Result{}, err
	}
	if waiting != "" {
		st.Phase = v1alpha1.PhasePending
		setReady(&st.Conditions, v1alpha1.ConditionFalse, "WaitingForDisks", waiting, gen, now)
		// Disk changes re-queue this key (see InstancesOfDisk).
		return Result{}, writeStatus(ctx, r.Store, vm, before)
	}

	state, err := r.Driver.EnsureDomain(ctx, req)
	switch {
	case errors.Is(err, errdefs.ErrNotImplemented):
		st.Phase = v1alpha1.PhasePending
		setReady(&st.Conditions, v1alpha1.ConditionFalse, "NotImplemented", err.Error(), gen, now)
		return Result{}, writeStatus(ctx, r.Store, vm, before)
	case err != nil:
		setReady(&st.Conditions, v1alpha1.ConditionFalse, "DomainError", err.Error(), gen, now)
		if werr := writeStatus(ctx, r.Store, vm, before); werr != nil {
			return Result{}, werr
		}
		return Result{}, fmt.Errorf("ensuring domain %s: %w", req.Name, err)
	}
	if state.Running {
		st.Phase = v1alpha1.PhaseRunning
		setReady(&st.Conditions, v1alpha1.ConditionTrue, "Running", "domain "+req.Name+" is running", gen, now)
	} else {
		st.Phase = v1alpha1.PhaseStopped
		setReady(&st.Conditions, v1alpha1.ConditionFalse, "Stopped", "domain "+req.Name+" is not running (runStrategy "+string(vm.Spec.RunStrategy)+")", gen, now)
	}
	return Result{}, writeStatus(ctx, r.Store, vm, before)
}

// plan resolves sizing and disks into a DomainRequest. A non-empty waiting
// message means a disk is missing or not Ready yet.
func (r *InstanceReconciler) plan(ctx context.Context, vm *v1alpha1.VMInstance) (hypervisor.DomainRequest, string, error) {
	meta := &vm.ObjectMeta
	req := hypervisor.DomainRequest{
		Name:       hypervisor.DomainName(meta.Name),
		UID:        meta.UID,
		Generation: meta.Generation,
		UUID:       vm.Status.UUID,
		Running:    wantsRunning(vm.Spec.RunStrategy),
	}
	if it := deref(vm.Spec.InstanceType); it != "" {
		info, ok := r.Catalog.InstanceType(it)
		if !ok {
			// Validation refuses unknown types; the catalogue may have
			// shrunk since (older object, newer vmd).
			return req, "", fmt.Errorf("instance type %q: %w", it, errdefs.ErrInvalid)
		}
		req.VCPUs, req.MemoryBytes = int(info.CPU), info.Memory
		vm.Status.InstanceType = it
	} else if res := vm.Spec.Resources; res != nil {
		cores, _ := res.CPU.Bytes()
		sockets, _ := res.Sockets.Bytes()
		req.VCPUs = int(cores * sockets)
		req.MemoryBytes = res.Memory.MustBytes()
		vm.Status.InstanceType = "custom"
	}
	if p := deref(vm.Spec.InstanceProfile); p != "" {
		if info, ok := r.Catalog.Profile(p); ok {
			vm.Status.Profile = info.Name
		}
	}
	for _, ref := range vm.Spec.Disks {
		obj, err := r.Store.Get(ctx, v1alpha1.KindVMDisk, meta.Namespace, ref.Name)
		if errors.Is(err, errdefs.ErrNotFound) {
			return req, fmt.Sprintf("vmdisk %q does not exist", ref.Name), nil
		}
		if err != nil {
			return req, "", fmt.Errorf("reading vmdisk %s: %w", ref.Name, err)
		}
		d := obj.(*v1alpha1.VMDisk)
		if d.ObjectMeta.DeletionTimestamp != nil {
			return req, fmt.Sprintf("vmdisk %q is being deleted", ref.Name), nil
		}
		if c := v1alpha1.FindCondition(d.Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Status != v1alpha1.ConditionTrue {
			msg := fmt.Sprintf("vmdisk %q is not Ready", ref.Name)
			if c != nil && c.Reason != "" {
				msg += " (" + c.Reason + ")"
			}
			return req, msg, nil
		}
		req.Disks = append(req.Disks, hypervisor.DomainDisk{
			Path: d.Status.Path, Format: d.Status.Format, Bus: ref.Bus,
			Optical: d.Spec.Optical != nil && *d.Spec.Optical,
		})
	}
	return req, "", nil
}

// wantsRunning maps a run strategy to "should the domain run now". Manual
// and Once need the start/stop verbs and exit tracking of the lifecycle
// work; until then Manual keeps the VM stopped and Once runs it.
func wantsRunning(s v1alpha1.RunStrategy) bool {
	switch s {
	case v1alpha1.RunStrategyHalted, v1alpha1.RunStrategyManual:
		return false
	}
	return true
}

func (r *InstanceReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// InstancesOfDisk maps a disk change to the instances in its namespace
// that attach it, so they start once their disks are Ready.
func InstancesOfDisk(store state.Store) MapFunc {
	return func(ctx context.Context, obj v1alpha1.Object) []Key {
		m := obj.GetObjectMeta()
		users, err := instancesUsingDisk(ctx, store, m.Namespace, m.Name)
		if err != nil {
			return nil
		}
		keys := make([]Key, 0, len(users))
		for _, u := range users {
			keys = append(keys, Key{Kind: v1alpha1.KindVMInstance, Namespace: m.Namespace, Name: u})
		}
		return keys
	}
}
