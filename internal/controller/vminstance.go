package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/cloudinit"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/fsmode"
	"github.com/vmdhq/vmd/internal/hypervisor"
	"github.com/vmdhq/vmd/internal/network"
	"github.com/vmdhq/vmd/internal/state"
)

// Condition types of a VMInstance besides Ready.
const (
	// ConditionGuestReady: the guest finished booting, as announced on its
	// serial console (see GuestReadyMarkers).
	ConditionGuestReady = "GuestReady"
	// ConditionCrashLoopBackOff: automatic restarts are being delayed.
	ConditionCrashLoopBackOff = "CrashLoopBackOff"
	// ConditionRestartRequired: the spec changed in a way the running guest
	// only picks up at its next boot.
	ConditionRestartRequired = "RestartRequired"
	// ConditionHostLimits lists instance-type or profile requests the host
	// cannot honour (hugepages, dedicated CPUs).
	ConditionHostLimits = "HostLimits"
)

// GuestReady polling: the serial log is read every guestReadyPoll for the
// first guestReadyPollFor after a boot.
const (
	guestReadyPoll    = 2 * time.Second
	guestReadyPollFor = 10 * time.Minute
)

// AddressTypePrivate is the Address.Type of the VM's private address.
const AddressTypePrivate = "Private"

// DefaultGuestReadyMarkers are the serial-console lines that mean "the
// guest finished booting": cloud-init's final message, printed by every
// cloud image vmd targets when its last stage is done. Guests without
// cloud-init never become GuestReady (Ready still tells the domain runs).
var DefaultGuestReadyMarkers = []string{"Cloud-init v. ", " finished at "}

// InterimNetwork is the stop-gap guest network: one NIC on an existing
// host bridge with a static private address from Subnet. It is replaced by
// the tenant networks of the networking work.
type InterimNetwork struct {
	// Bridge is the host bridge; "" gives guests no NIC at all.
	Bridge string
	// Subnet is the bridge's IPv4 subnet; the host is its first address
	// (network.GatewayFor), which is also the guests' gateway and DNS.
	Subnet netip.Prefix
}

// InstanceReconciler makes a VMInstance's domain match its spec and run
// strategy.
type InstanceReconciler struct {
	Store   state.Store
	Driver  hypervisor.Driver
	Catalog v1alpha1.Catalog
	Log     *slog.Logger
	// DomainType is hypervisor.DomainTypeKVM or DomainTypeQEMU.
	DomainType string
	// InstancesDir holds one directory per VMInstance,
	// <InstancesDir>/<namespace>/<name>/, with cidata.iso, serial.log,
	// nvram.fd and lifecycle.json.
	InstancesDir string
	// Net, when set, gives every VM a NIC on its namespace's tenant
	// network (ADR 0008) and takes precedence over Network.
	Net Networker
	// Network is the deprecated interim guest network, used when Net is
	// nil.
	Network InterimNetwork
	// ShutdownTimeout is how long a guest may take to power off after the
	// ACPI button before it is destroyed (default 60 s).
	ShutdownTimeout time.Duration
	// GuestReadyMarkers: GuestReady turns True once one serial-log line
	// contains all the strings of any marker. Nil means
	// DefaultGuestReadyMarkers only.
	GuestReadyMarkers [][]string
	// Now is the clock (tests replace it).
	Now func() time.Time
	// Recorder receives an event at each lifecycle transition (defined,
	// started, crashed, restarted, stopped, back-off, failures, deleted;
	// see instanceEvents); nil records nothing.
	Recorder EventRecorder

	// ipMu serialises address allocation: the used set is read from other
	// objects' status, so two workers must not allocate at once.
	ipMu sync.Mutex
}

// instancePaths are the host files of one VMInstance.
type instancePaths struct {
	Dir, ISO, SerialLog, NVRAM, History string
}

func (r *InstanceReconciler) paths(namespace, name string) instancePaths {
	dir := filepath.Join(r.InstancesDir, namespace, name)
	return instancePaths{
		Dir: dir, ISO: filepath.Join(dir, "cidata.iso"), SerialLog: filepath.Join(dir, "serial.log"),
		NVRAM: filepath.Join(dir, "nvram.fd"), History: filepath.Join(dir, "lifecycle.json"),
	}
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
	st.DomainName = hypervisor.LibvirtName(meta.Namespace, meta.Name)
	paths := r.paths(meta.Namespace, meta.Name)

	if meta.DeletionTimestamp != nil {
		return Result{}, r.delete(ctx, vm, before, paths)
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
	disks, waiting, err := r.resolveDisks(ctx, vm)
	if err != nil {
		return Result{}, err
	}
	if waiting != "" {
		st.Phase = v1alpha1.PhasePending
		setReady(&st.Conditions, v1alpha1.ConditionFalse, "WaitingForDisks", waiting, gen, now)
		// Disk changes re-queue this key (see InstancesOfDisk).
		return Result{}, r.writeStatus(ctx, vm, before, nil)
	}

	obs, err := r.Driver.State(ctx, st.DomainName)
	if err != nil {
		// Say why in status (e.g. libvirtd is down), then retry with
		// back-off; the phase stays what it was.
		if st.Phase == "" {
			st.Phase = v1alpha1.PhasePending
		}
		reason := "ObserveFailed"
		if errors.Is(err, errdefs.ErrUnavailable) {
			reason = "HypervisorUnavailable"
		}
		return r.retry(ctx, vm, before, reason, fmt.Errorf("observing domain %s: %w", st.DomainName, err))
	}
	if err := ensureInstanceDir(paths.Dir); err != nil {
		return Result{}, fmt.Errorf("creating instance dir: %w", err)
	}
	hist, err := loadHistory(paths.History)
	if err != nil {
		return Result{}, err
	}
	// The definition as this pass found it, for the Defined event.
	foundDefined := hist.DefinedHash
	if obs.Exists && hist.DefinedHash == "" {
		// A domain we have no record of: ours from before (re-adoption
		// with a lost history) or one left by an older object of the
		// same name, which must go before ours is defined.
		if err := r.adoptOrReplace(ctx, vm, obs); err != nil {
			return Result{}, err
		}
		if obs, err = r.Driver.State(ctx, st.DomainName); err != nil {
			return Result{}, fmt.Errorf("observing domain %s: %w", st.DomainName, err)
		}
	}

	// Network: the address is recorded in status before anything uses it,
	// so a crash cannot hand it to a second VM.
	var nic *hypervisor.NICSpec
	var netcfg *cloudinit.NetworkConfig
	if r.Net != nil {
		var reason string
		if nic, netcfg, reason, err = r.attachNetwork(ctx, vm, &before); err != nil {
			if reason == "" {
				return Result{}, err
			}
			return r.retry(ctx, vm, before, reason, err)
		}
	} else if nic, netcfg, err = r.ensureAddress(ctx, vm, before); err != nil {
		return Result{}, err
	}
	if nic != nil && r.Net == nil {
		// ensureAddress may have written status; take a new baseline.
		if before, err = statusJSON(vm); err != nil {
			return Result{}, err
		}
	}

	iso, err := r.ensureSeed(vm, netcfg, paths, &hist)
	if err != nil {
		return Result{}, err
	}
	caps, err := r.Driver.Capabilities(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("reading host capabilities: %w", err)
	}
	spec, err := planDomain(vm, disks, nic, iso, paths, caps, r.DomainType)
	if err != nil {
		return r.failed(ctx, vm, before, "InvalidSpec", err)
	}
	if p, ok := r.Catalog.Profile(deref(vm.Spec.InstanceProfile)); ok {
		st.Profile = p.Name
	}
	built, err := hypervisor.BuildDomain(spec)
	if err != nil {
		return r.failed(ctx, vm, before, "InvalidSpec", err)
	}
	if len(built.Warnings) > 0 {
		setCondition(&st.Conditions, ConditionHostLimits, v1alpha1.ConditionTrue, "NotHonoured", strings.Join(built.Warnings, "; "), gen, now)
	} else {
		v1alpha1.RemoveCondition(&st.Conditions, ConditionHostLimits)
	}
	xmlHash := hashString(built.XML)
	hashes := definitionHashes{defined: xmlHash}
	if hashes.boot, err = bootHash(spec, hist.SeedHash); err != nil {
		return r.failed(ctx, vm, before, "InvalidSpec", err)
	}
	if !obs.Exists || xmlHash != hist.DefinedHash {
		if err := r.Driver.Define(ctx, built.XML); err != nil {
			if errors.Is(err, errdefs.ErrNotImplemented) {
				st.Phase = v1alpha1.PhasePending
				setReady(&st.Conditions, v1alpha1.ConditionFalse, "NotImplemented", err.Error(), gen, now)
				return Result{}, r.writeStatus(ctx, vm, before, nil)
			}
			return r.retry(ctx, vm, before, "DefineFailed", fmt.Errorf("defining domain %s: %w", spec.Name, err))
		}
		hist.DefinedHash = xmlHash
		if err := saveHistory(paths.History, hist); err != nil {
			return Result{}, err
		}
		if obs, err = r.Driver.State(ctx, st.DomainName); err != nil {
			return Result{}, fmt.Errorf("observing domain %s: %w", st.DomainName, err)
		}
	}
	return r.lifecycle(ctx, vm, before, paths, obs, hist, foundDefined, hashes)
}

// lifecycle applies the run strategy to the observed domain and writes
// the resulting status. foundDefined is the defined XML's hash as the pass
// found it, for the Defined event.
func (r *InstanceReconciler) lifecycle(ctx context.Context, vm *v1alpha1.VMInstance, before []byte, paths instancePaths,
	obs hypervisor.DomainState, hist history, foundDefined string, hashes definitionHashes) (Result, error) {
	st, gen, now, name := &vm.Status, vm.ObjectMeta.Generation, r.now(), vm.Status.DomainName
	strategy := vm.Spec.RunStrategy
	loaded := hist.clone()
	// How the domain was found stopped, told once by the final status
	// write (a failed start leaves the stored phase as it was, so the
	// pass that finally succeeds tells it).
	stoppedAs := hypervisor.ExitNone
	if obs.Exists && !obs.Running {
		stoppedAs = exitOf(obs, hist)
	}
	// changes is what the next status write reports beyond status; after
	// a write succeeds the definition's baseline moves on.
	changes := func(final bool) *historyChange {
		hc := &historyChange{oldDefined: foundDefined, newDefined: hist.DefinedHash}
		if final {
			hc.stoppedAs = stoppedAs
		}
		return hc
	}
	hist.settle(strategy, obs, now)
	req := requestOf(vm)
	d := decide(strategy, obs, hist, req, now)
	if d.Action != actBackoff {
		hist.honour(req)
	}
	log := r.log().With("vm", vm.ObjectMeta.Namespace+"/"+vm.ObjectMeta.Name, "domain", name)
	switch d.Action {
	case actStop, actRestart:
		st.Phase = v1alpha1.PhaseStopping
		setReady(&st.Conditions, v1alpha1.ConditionFalse, "Stopping", d.Reason, gen, now)
		hc := changes(false)
		if err := r.writeStatus(ctx, vm, before, hc); err != nil {
			return Result{}, err
		}
		foundDefined = hc.newDefined
		if err := saveHistory(paths.History, hist); err != nil {
			return Result{}, err
		}
		log.Info("stopping domain", "reason", d.Reason)
		if err := r.Driver.Shutdown(ctx, name, r.shutdownTimeout()); err != nil {
			return Result{}, fmt.Errorf("stopping domain %s: %w", name, err)
		}
		if d.Action == actStop {
			break
		}
		fallthrough
	case actStart:
		if d.Action == actStart && d.Restart {
			st.RestartCount++
		}
		hist.recordStart(d, now)
		hist.RunningHash, hist.BootHash = hashes.defined, hashes.boot
		hist.BootGeneration = vm.ObjectMeta.Generation
		// Truncate the serial log so GuestReady reflects this boot only.
		if err := truncate(paths.SerialLog); err != nil {
			return Result{}, err
		}
		if err := saveHistory(paths.History, hist); err != nil {
			return Result{}, err
		}
		log.Info("starting domain", "reason", d.Reason)
		if err := r.Driver.Start(ctx, name); err != nil {
			return r.retryFresh(ctx, vm, changes(false), "StartFailed", fmt.Errorf("starting domain %s: %w", name, err))
		}
	default:
		// Most passes change nothing: skip the fsync.
		if !hist.equal(loaded) {
			if err := saveHistory(paths.History, hist); err != nil {
				return Result{}, err
			}
		}
	}
	obs, err := r.Driver.State(ctx, name)
	if err != nil {
		return Result{}, fmt.Errorf("observing domain %s: %w", name, err)
	}
	vm, before, err = r.fresh(ctx, vm)
	if err != nil || vm == nil {
		return Result{}, err
	}
	res := r.reportPhase(vm, obs, hist, d, paths, hashes, now)
	return res, r.writeStatus(ctx, vm, before, changes(true))
}

// reportPhase sets phase and conditions from the observation after acting.
func (r *InstanceReconciler) reportPhase(vm *v1alpha1.VMInstance, obs hypervisor.DomainState, hist history, d decision,
	paths instancePaths, hashes definitionHashes, now time.Time) Result {
	st, gen, name := &vm.Status, vm.ObjectMeta.Generation, vm.Status.DomainName
	var res Result
	if hist.inBackoff(now) && !obs.Running {
		setCondition(&st.Conditions, ConditionCrashLoopBackOff, v1alpha1.ConditionTrue, "BackOff",
			fmt.Sprintf("%d restarts within %s; next restart in %s", len(hist.Restarts), crashLoopWindow, hist.BackoffUntil.Sub(now).Round(time.Second)), gen, now)
	} else if hist.Backoff == 0 {
		v1alpha1.RemoveCondition(&st.Conditions, ConditionCrashLoopBackOff)
	}
	switch {
	case obs.Running && obs.State == "running":
		st.Phase = v1alpha1.PhaseRunning
		setReady(&st.Conditions, v1alpha1.ConditionTrue, "Running", "domain "+name+" is running", gen, now)
	case obs.Running && obs.State == "shutdown":
		st.Phase = v1alpha1.PhaseStopping
		setReady(&st.Conditions, v1alpha1.ConditionFalse, "Stopping", "domain "+name+" is shutting down", gen, now)
	case obs.Running:
		st.Phase = v1alpha1.PhaseStarting
		setReady(&st.Conditions, v1alpha1.ConditionFalse, "DomainState", "domain "+name+" is "+obs.State+" ("+obs.Reason+")", gen, now)
	case d.Action == actBackoff:
		st.Phase = v1alpha1.PhaseCrashLoopBackOff
		setReady(&st.Conditions, v1alpha1.ConditionFalse, "CrashLoopBackOff", d.Reason, gen, now)
		res.RequeueAfter = max(hist.BackoffUntil.Sub(now), time.Second)
	case hist.Started && (vm.Spec.RunStrategy == v1alpha1.RunStrategyOnce || vm.Spec.RunStrategy == v1alpha1.RunStrategyRerunOnFailure) &&
		failed(obs, hist) && hist.LastExit == hypervisor.ExitFailure:
		st.Phase = v1alpha1.PhaseFailed
		setReady(&st.Conditions, v1alpha1.ConditionFalse, "Failed", "domain "+name+" failed and runStrategy "+string(vm.Spec.RunStrategy)+" does not restart it", gen, now)
	default:
		st.Phase = v1alpha1.PhaseStopped
		setReady(&st.Conditions, v1alpha1.ConditionFalse, "Stopped", "domain "+name+" is not running: "+d.Reason, gen, now)
	}
	if obs.Running && hist.bootsOlder(hashes) {
		reason, msg := "SpecChanged", "the running guest uses an older definition; restart it to apply the spec"
		switch hist.BootGeneration {
		case gen:
			reason, msg = "DefinitionChanged", "vmd now builds this VM's domain differently than when the guest booted "+
				"(a vmd upgrade or a change of its configuration), although the spec is the same; restart it to apply"
		case 0:
			// Booted by a vmd that did not record the generation.
			reason, msg = "OlderDefinition", "the running guest booted from an older domain definition "+
				"(a spec edit, or a vmd upgrade or configuration change); restart it to apply"
		}
		setCondition(&st.Conditions, ConditionRestartRequired, v1alpha1.ConditionTrue, reason, msg, gen, now)
	} else {
		v1alpha1.RemoveCondition(&st.Conditions, ConditionRestartRequired)
	}
	switch {
	case !obs.Running:
		setCondition(&st.Conditions, ConditionGuestReady, v1alpha1.ConditionFalse, "NotRunning", "the domain is not running", gen, now)
	case guestReady(paths.SerialLog, r.markers()):
		setCondition(&st.Conditions, ConditionGuestReady, v1alpha1.ConditionTrue, "BootFinished", "the guest announced the end of its boot on the serial console", gen, now)
	default:
		setCondition(&st.Conditions, ConditionGuestReady, v1alpha1.ConditionFalse, "Booting", "waiting for the guest's boot-finished line on the serial console", gen, now)
		// The serial log produces no event: look again shortly while a
		// boot may still finish; a guest silent for longer (no cloud-init)
		// is left to the periodic resync.
		if hist.LastStart.IsZero() || now.Sub(hist.LastStart) < guestReadyPollFor {
			res.RequeueAfter = guestReadyPoll
		}
	}
	if obs.Running && !hist.LastStart.IsZero() && hist.Backoff > 0 {
		// Clear the back-off once the domain has proved stable.
		if wait := stableAfter - now.Sub(hist.LastStart); wait > 0 && (res.RequeueAfter == 0 || wait < res.RequeueAfter) {
			res.RequeueAfter = wait + time.Second
		}
	}
	return res
}

// failed records a permanent problem with the spec: no retry until it
// changes.
func (r *InstanceReconciler) failed(ctx context.Context, vm *v1alpha1.VMInstance, before []byte, reason string, err error) (Result, error) {
	vm.Status.Phase = v1alpha1.PhaseFailed
	setReady(&vm.Status.Conditions, v1alpha1.ConditionFalse, reason, err.Error(), vm.ObjectMeta.Generation, r.now())
	return Result{}, r.writeStatus(ctx, vm, before, nil)
}

// retry shows a transient error and returns it so the key backs off.
func (r *InstanceReconciler) retry(ctx context.Context, vm *v1alpha1.VMInstance, before []byte, reason string, err error) (Result, error) {
	return r.retryWith(ctx, vm, before, nil, reason, err)
}

// retryWith is retry reporting the history change hc (may be nil).
func (r *InstanceReconciler) retryWith(ctx context.Context, vm *v1alpha1.VMInstance, before []byte, hc *historyChange, reason string, err error) (Result, error) {
	setReady(&vm.Status.Conditions, v1alpha1.ConditionFalse, reason, err.Error(), vm.ObjectMeta.Generation, r.now())
	if werr := r.writeStatus(ctx, vm, before, hc); werr != nil {
		return Result{}, errors.Join(err, werr)
	}
	return Result{}, err
}

// retryFresh is retry after status may have been written already.
func (r *InstanceReconciler) retryFresh(ctx context.Context, vm *v1alpha1.VMInstance, hc *historyChange, reason string, err error) (Result, error) {
	vm, before, ferr := r.fresh(ctx, vm)
	if ferr != nil || vm == nil {
		return Result{}, errors.Join(err, ferr)
	}
	return r.retryWith(ctx, vm, before, hc, reason, err)
}

// fresh re-reads vm keeping the status computed so far, so a status
// written mid-reconcile (Stopping) does not make the final write conflict.
func (r *InstanceReconciler) fresh(ctx context.Context, vm *v1alpha1.VMInstance) (*v1alpha1.VMInstance, []byte, error) {
	obj, err := getObject(ctx, r.Store, Key{Kind: v1alpha1.KindVMInstance, Namespace: vm.ObjectMeta.Namespace, Name: vm.ObjectMeta.Name})
	if err != nil || obj == nil {
		return nil, nil, err
	}
	cur := obj.(*v1alpha1.VMInstance)
	if cur.ObjectMeta.UID != vm.ObjectMeta.UID {
		return nil, nil, nil
	}
	before, err := statusJSON(cur)
	if err != nil {
		return nil, nil, err
	}
	cur.CopyStatusFrom(vm)
	return cur, before, nil
}

// adoptOrReplace handles a domain found without a history record: when its
// metadata names this object it is adopted as it is; otherwise it belongs
// to an earlier object of the same name (or to nobody) and is removed.
func (r *InstanceReconciler) adoptOrReplace(ctx context.Context, vm *v1alpha1.VMInstance, obs hypervisor.DomainState) error {
	name := vm.Status.DomainName
	owner, err := r.Driver.Owner(ctx, name)
	switch {
	case err == nil && owner.UID == vm.ObjectMeta.UID:
		r.log().Info("adopting domain", "domain", name, "running", obs.Running)
		return nil
	case err != nil && !errors.Is(err, errdefs.ErrNotFound):
		return fmt.Errorf("reading owner of domain %s: %w", name, err)
	}
	r.log().Warn("replacing a domain that belongs to another object", "domain", name, "owner_uid", owner.UID, "uid", vm.ObjectMeta.UID)
	return removeDomain(ctx, r.Driver, name, 0)
}

// removeDomain stops (gracefully when timeout > 0) and undefines name.
func removeDomain(ctx context.Context, d hypervisor.Driver, name string, timeout time.Duration) error {
	if timeout > 0 {
		if err := d.Shutdown(ctx, name, timeout); err != nil {
			return fmt.Errorf("stopping domain %s: %w", name, err)
		}
	}
	if err := d.Destroy(ctx, name); err != nil {
		return fmt.Errorf("destroying domain %s: %w", name, err)
	}
	if err := d.Undefine(ctx, name); err != nil {
		return fmt.Errorf("undefining domain %s: %w", name, err)
	}
	return nil
}

// delete releases the domain and the instance directory, then lets the
// object go.
func (r *InstanceReconciler) delete(ctx context.Context, vm *v1alpha1.VMInstance, before []byte, paths instancePaths) error {
	st := &vm.Status
	st.Phase = v1alpha1.PhaseTerminating
	if err := r.writeStatus(ctx, vm, before, nil); err != nil {
		return err
	}
	// Only remove a domain that is ours: a same-named domain of a newer
	// object cannot exist yet (the name is taken until the finalizer goes),
	// but one without metadata is someone else's.
	if owner, err := r.Driver.Owner(ctx, st.DomainName); err == nil && owner.UID == vm.ObjectMeta.UID {
		if err := removeDomain(ctx, r.Driver, st.DomainName, r.shutdownTimeout()); err != nil {
			return err
		}
	} else if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("reading owner of domain %s: %w", st.DomainName, err)
	}
	// The domain is gone, so nothing uses the tap any more: remove the
	// host side, then free the addresses.
	if r.Net != nil {
		if err := r.Net.Release(ctx, vm.ObjectMeta.UID); err != nil {
			return fmt.Errorf("releasing network of %s: %w", vm.ObjectMeta.Name, err)
		}
	}
	if err := os.RemoveAll(paths.Dir); err != nil {
		return fmt.Errorf("removing instance dir: %w", err)
	}
	// Drop the namespace directory when this was its last instance.
	_ = os.Remove(filepath.Dir(paths.Dir))
	if err := removeFinalizer(ctx, r.Store, vm); err != nil {
		return err
	}
	recordEvents(r.Recorder, vm, []pendingEvent{{v1alpha1.EventTypeNormal, ReasonDeleted,
		"released domain " + st.DomainName + " (with its NVRAM and TPM state), its network and the instance's files"}})
	return nil
}

// resolveDisks reads the VMDisks in boot order. A non-empty waiting message
// means a disk is missing or not Ready yet.
func (r *InstanceReconciler) resolveDisks(ctx context.Context, vm *v1alpha1.VMInstance) ([]hypervisor.DiskSpec, string, error) {
	meta := &vm.ObjectMeta
	var out []hypervisor.DiskSpec
	for _, ref := range vm.Spec.Disks {
		obj, err := r.Store.Get(ctx, v1alpha1.KindVMDisk, meta.Namespace, ref.Name)
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil, fmt.Sprintf("vmdisk %q does not exist", ref.Name), nil
		}
		if err != nil {
			return nil, "", fmt.Errorf("reading vmdisk %s: %w", ref.Name, err)
		}
		d := obj.(*v1alpha1.VMDisk)
		if d.ObjectMeta.DeletionTimestamp != nil {
			return nil, fmt.Sprintf("vmdisk %q is being deleted", ref.Name), nil
		}
		if c := v1alpha1.FindCondition(d.Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Status != v1alpha1.ConditionTrue {
			msg := fmt.Sprintf("vmdisk %q is not Ready", ref.Name)
			if c != nil && c.Reason != "" {
				msg += " (" + c.Reason + ")"
			}
			return nil, msg, nil
		}
		spec := hypervisor.DiskSpec{
			Path: d.Status.Path, Format: domainDiskFormat(d.Status.Format), Bus: hypervisor.DiskBus(ref.Bus),
			Optical: d.Spec.Optical != nil && *d.Spec.Optical,
		}
		if d.Status.BackingFile != "" {
			spec.BackingPath, spec.BackingFormat = d.Status.BackingFile, domainDiskFormat(d.Status.BackingFormat)
		}
		out = append(out, spec)
	}
	return out, "", nil
}

// ensureAddress gives the VM its interim private address: the one in
// status if still valid, else the lowest free one in the subnet, written to
// status before it is used. It returns the NIC and the guest's
// network-config, or nils when no interim network is configured.
func (r *InstanceReconciler) ensureAddress(ctx context.Context, vm *v1alpha1.VMInstance, before []byte) (*hypervisor.NICSpec, *cloudinit.NetworkConfig, error) {
	n := r.Network
	if n.Bridge == "" {
		return nil, nil, nil
	}
	mac := network.MACFor(vm.ObjectMeta.UID).String()
	addr, ok := privateAddress(vm, n.Subnet)
	if !ok {
		r.ipMu.Lock()
		defer r.ipMu.Unlock()
		used, err := r.usedAddresses(ctx, vm)
		if err != nil {
			return nil, nil, err
		}
		if addr, err = network.AllocateIP(n.Subnet, used); err != nil {
			return nil, nil, err
		}
		setPrivateAddress(vm, addr, mac)
		vm.Status.Phase = v1alpha1.PhaseProvisioning
		if err := r.writeStatus(ctx, vm, before, nil); err != nil {
			return nil, nil, err
		}
	} else {
		setPrivateAddress(vm, addr, mac)
	}
	dns := []netip.Addr{network.GatewayFor(n.Subnet)}
	return &hypervisor.NICSpec{MAC: mac, Bridge: n.Bridge}, guestNetwork(mac, addr, n.Subnet, dns), nil
}

// attachNetwork gives the VM its tenant NIC: the allocation is recorded in
// status (and *before rebased) before anything uses it, then the host is
// synced so the tap exists before the domain is defined. A non-empty
// reason means a transient failure to show in Ready and retry.
func (r *InstanceReconciler) attachNetwork(ctx context.Context, vm *v1alpha1.VMInstance, before *[]byte) (*hypervisor.NICSpec, *cloudinit.NetworkConfig, string, error) {
	att, err := r.Net.Attach(ctx, vm)
	if err != nil {
		return nil, nil, "NetworkUnavailable", fmt.Errorf("allocating network: %w", err)
	}
	st, gen, now := &vm.Status, vm.ObjectMeta.Generation, r.now()
	st.Addresses = att.Addresses
	if att.ExternalUnavailable != "" {
		setCondition(&st.Conditions, ConditionExternalUnavailable, v1alpha1.ConditionTrue, "ExternalUnavailable", att.ExternalUnavailable, gen, now)
	} else {
		v1alpha1.RemoveCondition(&st.Conditions, ConditionExternalUnavailable)
	}
	if st.Phase == "" {
		st.Phase = v1alpha1.PhaseProvisioning
	}
	if err := r.writeStatus(ctx, vm, *before, nil); err != nil {
		return nil, nil, "", err
	}
	if *before, err = statusJSON(vm); err != nil {
		return nil, nil, "", err
	}
	if err := r.Net.Sync(ctx); err != nil {
		return nil, nil, "NetworkSyncFailed", fmt.Errorf("configuring host network: %w", err)
	}
	nic := &hypervisor.NICSpec{MAC: att.MAC, TapName: att.Tap}
	return nic, guestNetwork(att.MAC, att.IP, att.Subnet, att.DNS), "", nil
}

// privateAddress returns the VM's recorded private address when it lies
// in subnet.
func privateAddress(vm *v1alpha1.VMInstance, subnet netip.Prefix) (netip.Addr, bool) {
	for _, a := range vm.Status.Addresses {
		if a.Type != AddressTypePrivate {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && subnet.Contains(ip) && !network.IsReservedInSubnet(subnet, ip) {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

func setPrivateAddress(vm *v1alpha1.VMInstance, addr netip.Addr, mac string) {
	out := []v1alpha1.Address{{Type: AddressTypePrivate, Address: addr.String(), MAC: mac}}
	for _, a := range vm.Status.Addresses {
		if a.Type != AddressTypePrivate {
			out = append(out, a)
		}
	}
	vm.Status.Addresses = out
}

// usedAddresses lists the private addresses recorded by every other
// VMInstance.
func (r *InstanceReconciler) usedAddresses(ctx context.Context, vm *v1alpha1.VMInstance) ([]netip.Addr, error) {
	objs, _, err := r.Store.List(ctx, v1alpha1.KindVMInstance, "")
	if err != nil {
		return nil, fmt.Errorf("listing vminstances: %w", err)
	}
	var used []netip.Addr
	for _, o := range objs {
		other := o.(*v1alpha1.VMInstance)
		if other.ObjectMeta.UID == vm.ObjectMeta.UID {
			continue
		}
		for _, a := range other.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil && a.Type == AddressTypePrivate {
				used = append(used, ip)
			}
		}
	}
	return used, nil
}

// guestNetwork is the netplan v2 config that gives the NIC with mac its
// static address, the subnet's gateway as default route and dns as
// resolvers. With tenant networks the DHCP server offers the same lease,
// so a guest that ignores either source still gets the same address.
func guestNetwork(mac string, addr netip.Addr, subnet netip.Prefix, dns []netip.Addr) *cloudinit.NetworkConfig {
	gw := network.GatewayFor(subnet)
	var ns *cloudinit.Nameservers
	if len(dns) > 0 {
		ns = &cloudinit.Nameservers{Addresses: dns}
	}
	acceptRA := false
	return &cloudinit.NetworkConfig{Ethernets: map[string]cloudinit.Ethernet{
		"eth0": {
			Match:       &cloudinit.Match{MACAddress: mac},
			SetName:     "eth0",
			AcceptRA:    &acceptRA,
			Addresses:   []netip.Prefix{netip.PrefixFrom(addr, subnet.Bits())},
			Routes:      []cloudinit.Route{cloudinit.DefaultRoute(gw)},
			Nameservers: ns,
		},
	}}
}

// ensureSeed writes cidata.iso when the seed changed (atomically, so a
// running guest's next boot never sees half a file) and returns its path,
// or "" when the VM needs no seed.
func (r *InstanceReconciler) ensureSeed(vm *v1alpha1.VMInstance, netcfg *cloudinit.NetworkConfig, paths instancePaths, hist *history) (string, error) {
	seed := cloudinit.SeedFor(vm, netcfg)
	seed.InstanceID = vm.Status.UUID
	if !seed.Needed() {
		if err := os.Remove(paths.ISO); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("removing seed: %w", err)
		}
		hist.SeedHash = ""
		return "", nil
	}
	h := seed.Hash()
	if _, err := os.Stat(paths.ISO); err == nil && h == hist.SeedHash {
		return paths.ISO, privateFile(paths.ISO)
	}
	if err := cloudinit.WriteISOFile(paths.ISO, seed); err != nil {
		return "", fmt.Errorf("writing seed: %w", err)
	}
	if err := privateFile(paths.ISO); err != nil {
		return "", err
	}
	hist.SeedHash = h
	return paths.ISO, saveHistory(paths.History, *hist)
}

// privateFile takes group and other permissions away from path. The seed
// carries the user's cloud-init data (passwords, keys) and its directory
// is searchable by everyone (instanceDirMode), so it must not be readable
// by others; libvirt chowns it to qemu's user, which can then read it as
// owner.
func privateFile(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("checking mode of %s: %w", path, err)
	}
	if st.Mode().Perm()&0o077 == 0 {
		return nil
	}
	if err := os.Chmod(path, st.Mode().Perm()&^0o077); err != nil {
		return fmt.Errorf("making %s private: %w", path, err)
	}
	return nil
}

// planDomain is the pure translation of a VMInstance, its resolved disks,
// NIC and seed, the host's capabilities and the instance's paths into the
// domain builder's input.
func planDomain(vm *v1alpha1.VMInstance, disks []hypervisor.DiskSpec, nic *hypervisor.NICSpec, iso string,
	paths instancePaths, caps hypervisor.HostCapabilities, domainType string) (hypervisor.DomainSpec, error) {
	meta := &vm.ObjectMeta
	spec := hypervisor.DomainSpec{
		Name: hypervisor.LibvirtName(meta.Namespace, meta.Name), UUID: vm.Status.UUID,
		Namespace: meta.Namespace, VMName: meta.Name, UID: meta.UID, Generation: meta.Generation,
		Type: domainType, CPUModel: vm.Spec.CPUModel,
		Disks: disks, CloudInitISO: iso,
		// VNC on a socket libvirt places: qemu, running as its own user,
		// cannot create one in vmd's instance directory.
		SerialLogPath: paths.SerialLog, VNCAutoSocket: true, NVRAMPath: paths.NVRAM,
	}
	if nic != nil {
		spec.NICs = []hypervisor.NICSpec{*nic}
	}
	if name := deref(vm.Spec.InstanceType); name != "" {
		it, ok := hypervisor.LookupInstanceType(name)
		if !ok {
			return spec, fmt.Errorf("instance type %q: %w", name, errdefs.ErrInvalid)
		}
		spec.InstanceType = &it
		vm.Status.InstanceType = name
		if it.Hugepages != "" {
			spec.HugepagesAvailable = caps.HasHugepages(hugepageKiB(it.Hugepages))
		}
	} else if res := vm.Spec.Resources; !res.IsEmpty() {
		cores, err := res.CPU.Bytes()
		if err != nil {
			return spec, fmt.Errorf("resources.cpu: %w", err)
		}
		sockets, err := res.Sockets.Bytes()
		if err != nil {
			return spec, fmt.Errorf("resources.sockets: %w", err)
		}
		mem, err := res.Memory.Bytes()
		if err != nil {
			return spec, fmt.Errorf("resources.memory: %w", err)
		}
		spec.Sockets, spec.Cores = int(max(sockets, 1)), int(max(cores, 1))
		spec.VCPUs, spec.MemoryBytes = spec.Sockets*spec.Cores, mem
		vm.Status.InstanceType = "custom"
	}
	if name := deref(vm.Spec.InstanceProfile); name != "" {
		p, ok := hypervisor.LookupProfile(name)
		if !ok {
			return spec, fmt.Errorf("instance profile %q: %w", name, errdefs.ErrInvalid)
		}
		spec.Profile = &p
	}
	return spec, nil
}

// domainDiskFormat maps a VMDisk's reported format to the image driver
// QEMU opens it with: an ISO image is a flat file, opened raw. Any other
// format is passed through for BuildDomain to refuse; guessing would let a
// guest-written header choose how the host parses the file.
func domainDiskFormat(f string) string {
	if f == "iso" {
		return hypervisor.DiskFormatRaw
	}
	return f
}

func hugepageKiB(size string) uint64 {
	switch size {
	case hypervisor.Hugepages1Gi:
		return 1 << 20
	case hypervisor.Hugepages2Mi:
		return 2 << 10
	}
	return 0
}

func (r *InstanceReconciler) markers() [][]string {
	if r.GuestReadyMarkers != nil {
		return r.GuestReadyMarkers
	}
	return [][]string{DefaultGuestReadyMarkers}
}

func (r *InstanceReconciler) shutdownTimeout() time.Duration {
	if r.ShutdownTimeout > 0 {
		return r.ShutdownTimeout
	}
	return 60 * time.Second
}

func (r *InstanceReconciler) log() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return slog.New(slog.DiscardHandler)
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

// definitionHashes identify a domain definition: defined is the sha256 of
// the XML as defined (what Define compares), boot that of what the guest
// boots from (see bootHash).
type definitionHashes struct{ defined, boot string }

// bootHash hashes what a guest boots from: the domain XML built with
// generation 0, and the cloud-init seed. The generation in the metadata
// changes with every spec edit, including those a running guest never
// sees (runStrategy, a power request); comparing it would raise
// RestartRequired for all of them. The seed is read at boot, so an edited
// cloudInit or new sshKeys need a restart although the XML is the same.
func bootHash(spec hypervisor.DomainSpec, seedHash string) (string, error) {
	spec.Generation = 0
	b, err := hypervisor.BuildDomain(spec)
	if err != nil {
		return "", err
	}
	return hashString(b.XML + "\x00" + seedHash), nil
}

func hashString(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// loadHistory reads lifecycle.json; a missing file is an empty history.
func loadHistory(path string) (history, error) {
	var h history
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return h, nil
	}
	if err != nil {
		return h, fmt.Errorf("reading lifecycle history: %w", err)
	}
	if err := json.Unmarshal(b, &h); err != nil {
		// A torn or foreign file must not wedge the VM: start afresh.
		return history{}, nil
	}
	return h, nil
}

// saveHistory writes lifecycle.json atomically (temp file, fsync, rename).
func saveHistory(path string, h history) error {
	b, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("encoding lifecycle history: %w", err)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("writing lifecycle history: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing lifecycle history: %w", err)
	}
	return nil
}

// setCondition sets a condition of type typ.
func setCondition(conds *[]v1alpha1.Condition, typ string, status v1alpha1.ConditionStatus, reason, msg string, gen int64, now time.Time) {
	v1alpha1.SetCondition(conds, v1alpha1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen,
	}, now)
}

// guestReady reports whether a line of the serial log contains every
// string of one of the markers. The log is read whole: it is truncated at
// every boot, and a boot's console output is small.
func guestReady(serialLog string, markers [][]string) bool {
	b, err := os.ReadFile(serialLog)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		for _, m := range markers {
			if len(m) > 0 && containsAll(line, m) {
				return true
			}
		}
	}
	return false
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// instanceDirMode is the mode of <InstancesDir>/<namespace> and of the
// instance directory below it. qemu runs as an unprivileged user (Debian:
// libvirt-qemu) and libvirt chowns the seed ISO and the NVRAM to it at
// start; qemu must search both directories to open them, nobody needs to
// list them (they name tenants' VMs). The serial log is written by
// virtlogd, which runs as root.
const instanceDirMode fs.FileMode = 0o711

// ensureInstanceDir creates an instance directory and its namespace
// directory with exactly instanceDirMode, whatever the umask, and corrects
// them when they have another mode (0755, as an older vmd made them).
func ensureInstanceDir(dir string) error {
	for _, d := range []string{filepath.Dir(dir), dir} {
		if _, _, err := fsmode.MkdirAll(d, instanceDirMode); err != nil {
			return err
		}
	}
	return nil
}

// truncate empties path if it exists.
func truncate(path string) error {
	if err := os.Truncate(path, 0); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("truncating serial log: %w", err)
	}
	return nil
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
