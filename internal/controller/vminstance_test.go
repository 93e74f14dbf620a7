package controller

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/cloudinit"
	"github.com/vmdhq/vmd/internal/hypervisor"
)

// clock is a settable test clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func (f *fixture) mustReconcileVM(name string) Result {
	f.t.Helper()
	res, err := f.reconcile(f.vms, v1alpha1.KindVMInstance, name)
	if err != nil {
		f.t.Fatalf("reconcile %s: %v", name, err)
	}
	return res
}

func (f *fixture) annotate(name string, kv ...string) {
	f.t.Helper()
	vm := f.vm(name)
	if vm.ObjectMeta.Annotations == nil {
		vm.ObjectMeta.Annotations = map[string]string{}
	}
	for i := 0; i < len(kv); i += 2 {
		vm.ObjectMeta.Annotations[kv[i]] = kv[i+1]
	}
	if err := f.store.Update(context.Background(), vm); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) setStrategy(name string, s v1alpha1.RunStrategy) {
	f.t.Helper()
	vm := f.vm(name)
	vm.Spec.RunStrategy, vm.Spec.Running = s, nil
	if err := f.store.Update(context.Background(), vm); err != nil {
		f.t.Fatal(err)
	}
}

func condition(vm *v1alpha1.VMInstance, typ string) v1alpha1.ConditionStatus {
	if c := v1alpha1.FindCondition(vm.Status.Conditions, typ); c != nil {
		return c.Status
	}
	return ""
}

func TestAlwaysRestartsAfterCrashAndBacksOff(t *testing.T) {
	f := newFixture(t)
	clk := &clock{t: t0}
	f.vms.Now = clk.now
	f.createVM("web", v1alpha1.VMInstanceSpec{})
	f.mustReconcileVM("web")
	const dom = "default.vm-instance-web"
	for i := 1; i <= crashLoopRestarts; i++ {
		clk.t = clk.t.Add(time.Second)
		if !f.domains.Crash(dom) {
			t.Fatalf("crash %d: domain not running", i)
		}
		f.mustReconcileVM("web")
		if d, _ := f.domains.Get(dom); !d.Running || d.Starts != i+1 {
			t.Fatalf("after crash %d: running=%v starts=%d", i, d.Running, d.Starts)
		}
	}
	vm := f.vm("web")
	if vm.Status.RestartCount != crashLoopRestarts || vm.Status.Phase != v1alpha1.PhaseRunning {
		t.Fatalf("restartCount %d phase %s", vm.Status.RestartCount, vm.Status.Phase)
	}
	// The next crash is held back.
	clk.t = clk.t.Add(time.Second)
	f.domains.Crash(dom)
	res := f.mustReconcileVM("web")
	vm = f.vm("web")
	if d, _ := f.domains.Get(dom); d.Running {
		t.Fatal("restarted during back-off")
	}
	if vm.Status.Phase != v1alpha1.PhaseCrashLoopBackOff || condition(vm, ConditionCrashLoopBackOff) != v1alpha1.ConditionTrue {
		t.Fatalf("phase %s conditions %+v", vm.Status.Phase, vm.Status.Conditions)
	}
	if res.RequeueAfter <= 0 || res.RequeueAfter > backoffInitial {
		t.Fatalf("requeue after %s", res.RequeueAfter)
	}
	clk.t = clk.t.Add(backoffInitial)
	f.mustReconcileVM("web")
	if d, _ := f.domains.Get(dom); !d.Running {
		t.Fatal("not restarted after the back-off")
	}
	// A stable run clears the back-off.
	clk.t = clk.t.Add(stableAfter)
	f.mustReconcileVM("web")
	if c := condition(f.vm("web"), ConditionCrashLoopBackOff); c != "" {
		t.Fatalf("CrashLoopBackOff still %s after a stable run", c)
	}
}

func TestRunStrategyTransitions(t *testing.T) {
	f := newFixture(t)
	const dom = "default.vm-instance-web"
	f.createVM("web", v1alpha1.VMInstanceSpec{RunStrategy: v1alpha1.RunStrategyRerunOnFailure})
	f.mustReconcileVM("web")
	f.domains.PowerOff(dom)
	f.mustReconcileVM("web")
	if d, _ := f.domains.Get(dom); d.Running {
		t.Fatal("RerunOnFailure restarted a guest that powered off")
	}
	if vm := f.vm("web"); vm.Status.Phase != v1alpha1.PhaseStopped {
		t.Fatalf("phase %s", vm.Status.Phase)
	}
	f.setStrategy("web", v1alpha1.RunStrategyAlways)
	f.mustReconcileVM("web")
	if d, _ := f.domains.Get(dom); !d.Running {
		t.Fatal("Always did not start it")
	}
	f.setStrategy("web", v1alpha1.RunStrategyHalted)
	f.mustReconcileVM("web")
	if d, _ := f.domains.Get(dom); d.Running || d.Reason != "shutdown" {
		t.Fatalf("Halted: running=%v reason=%s (want a graceful shutdown)", d.Running, d.Reason)
	}
	if vm := f.vm("web"); vm.Status.Phase != v1alpha1.PhaseStopped || condition(vm, v1alpha1.ConditionReady) != v1alpha1.ConditionFalse {
		t.Fatalf("phase %s", vm.Status.Phase)
	}
	f.setStrategy("web", v1alpha1.RunStrategyOnce)
	f.mustReconcileVM("web")
	f.domains.Crash(dom)
	f.mustReconcileVM("web")
	if d, _ := f.domains.Get(dom); d.Running || d.Starts != 3 {
		t.Fatalf("Once: running=%v starts=%d", d.Running, d.Starts)
	}
	if vm := f.vm("web"); vm.Status.Phase != v1alpha1.PhaseFailed {
		t.Fatalf("Once after a crash: phase %s", vm.Status.Phase)
	}
}

func TestManualFollowsRequests(t *testing.T) {
	f := newFixture(t)
	const dom = "default.vm-instance-web"
	f.createVM("web", v1alpha1.VMInstanceSpec{RunStrategy: v1alpha1.RunStrategyManual})
	f.mustReconcileVM("web")
	if d, ok := f.domains.Get(dom); !ok || d.Running {
		t.Fatalf("Manual: defined=%v running=%v", ok, d.Running)
	}
	f.annotate("web", v1alpha1.AnnotationRequestedState, v1alpha1.RequestedRunning, v1alpha1.AnnotationRequestedAt, "2026-01-01T00:00:01Z")
	f.mustReconcileVM("web")
	if d, _ := f.domains.Get(dom); !d.Running {
		t.Fatal("start request not honoured")
	}
	f.domains.Crash(dom)
	f.mustReconcileVM("web")
	if d, _ := f.domains.Get(dom); d.Running {
		t.Fatal("Manual restarted after a crash")
	}
	f.annotate("web", v1alpha1.AnnotationRestartRequestedAt, "2026-01-01T00:00:02Z")
	f.mustReconcileVM("web")
	f.mustReconcileVM("web")
	if d, _ := f.domains.Get(dom); !d.Running || d.Starts != 2 {
		t.Fatalf("restart request: running=%v starts=%d", d.Running, d.Starts)
	}
	f.annotate("web", v1alpha1.AnnotationRequestedState, v1alpha1.RequestedStopped, v1alpha1.AnnotationRequestedAt, "2026-01-01T00:00:03Z")
	f.mustReconcileVM("web")
	if d, _ := f.domains.Get(dom); d.Running {
		t.Fatal("stop request not honoured")
	}
}

func TestSeedAndAddress(t *testing.T) {
	f := newFixture(t)
	f.vms.Network = InterimNetwork{Bridge: "br0", Subnet: netip.MustParsePrefix("10.77.0.0/24")}
	f.createVM("a", v1alpha1.VMInstanceSpec{SSHKeys: []string{"ssh-ed25519 AAAA a@b"}})
	f.createVM("b", v1alpha1.VMInstanceSpec{})
	f.mustReconcileVM("a")
	f.mustReconcileVM("b")
	a, b := f.vm("a"), f.vm("b")
	if len(a.Status.Addresses) != 1 || a.Status.Addresses[0].Address != "10.77.0.2" ||
		len(b.Status.Addresses) != 1 || b.Status.Addresses[0].Address != "10.77.0.3" {
		t.Fatalf("addresses a=%+v b=%+v", a.Status.Addresses, b.Status.Addresses)
	}
	dom, _ := f.domains.Get("default.vm-instance-a")
	x := parseDomain(t, dom.XML)
	if len(x.Devices.Interfaces) != 1 || x.Devices.Interfaces[0].MAC.Address != a.Status.Addresses[0].MAC ||
		x.Devices.Interfaces[0].Source.Bridge.Bridge != "br0" {
		t.Fatalf("interfaces %+v", x.Devices.Interfaces)
	}
	iso := filepath.Join(f.vms.InstancesDir, "default", "a", "cidata.iso")
	files := readISO(t, iso)
	if !strings.Contains(string(files["meta-data"]), a.Status.UUID) ||
		!strings.Contains(string(files["network-config"]), "10.77.0.2/24") ||
		!strings.Contains(string(files["network-config"]), a.Status.Addresses[0].MAC) {
		t.Fatalf("seed: %q / %q", files["meta-data"], files["network-config"])
	}
	// An unchanged seed is not rewritten; a changed one is.
	st1, _ := os.Stat(iso)
	f.mustReconcileVM("a")
	if st2, _ := os.Stat(iso); !st2.ModTime().Equal(st1.ModTime()) || !os.SameFile(st1, st2) {
		t.Fatal("unchanged seed rewritten")
	}
	defines := dom.Defines
	vm := f.vm("a")
	vm.Spec.CloudInit = "#cloud-config\nruncmd: [true]\n"
	if err := f.store.Update(context.Background(), vm); err != nil {
		t.Fatal(err)
	}
	f.mustReconcileVM("a")
	if files := readISO(t, iso); !strings.Contains(string(files["user-data"]), "runcmd") {
		t.Fatalf("edited cloudInit not in the seed: %q", files["user-data"])
	}
	if d, _ := f.domains.Get("default.vm-instance-a"); d.Defines != defines+1 || d.Starts != 1 {
		t.Fatalf("redefine on generation change: defines %d->%d starts %d", defines, d.Defines, d.Starts)
	}
	if c := condition(f.vm("a"), ConditionRestartRequired); c != v1alpha1.ConditionTrue {
		t.Fatalf("RestartRequired = %q", c)
	}
}

func readISO(t *testing.T, path string) map[string][]byte {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	files, _, err := cloudinit.ReadISO(fh)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestDeleteRemovesDomainAndDir(t *testing.T) {
	f := newFixture(t)
	f.createVM("web", v1alpha1.VMInstanceSpec{SSHKeys: []string{"ssh-ed25519 AAAA a@b"}})
	f.mustReconcileVM("web")
	dir := filepath.Join(f.vms.InstancesDir, "default", "web")
	if _, err := os.Stat(filepath.Join(dir, "cidata.iso")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Delete(context.Background(), v1alpha1.KindVMInstance, "default", "web", ""); err != nil {
		t.Fatal(err)
	}
	f.mustReconcileVM("web")
	if f.domains.Len() != 0 {
		t.Fatal("domain left")
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("instance dir left: %v", err)
	}
}

func TestRecoveryAdoptsAndSweepsOrphans(t *testing.T) {
	f := newFixture(t)
	const dom = "default.vm-instance-web"
	f.createVM("web", v1alpha1.VMInstanceSpec{})
	f.mustReconcileVM("web")
	// An orphan: a domain whose object is gone.
	orphan, err := hypervisor.BuildDomain(hypervisor.DomainSpec{Name: "default.vm-instance-old", UUID: hypervisor.StableUUID("default", "old", ""),
		Namespace: "default", VMName: "old", UID: "gone-uid", Generation: 1, Type: hypervisor.DomainTypeQEMU, VCPUs: 1, MemoryBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.domains.Put(orphan.XML, true); err != nil {
		t.Fatal(err)
	}
	oldDir := filepath.Join(f.vms.InstancesDir, "default", "old")
	if err := os.MkdirAll(oldDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// "vmd restarts": a new reconciler with the same state, and lost
	// history for good measure.
	if err := os.Remove(filepath.Join(f.vms.InstancesDir, "default", "web", "lifecycle.json")); err != nil {
		t.Fatal(err)
	}
	if err := SweepOrphans(context.Background(), f.store, f.domains, f.vms.InstancesDir, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.domains.Get("default.vm-instance-old"); ok {
		t.Fatal("orphan domain kept")
	}
	if _, err := os.Stat(oldDir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("orphan dir kept")
	}
	f.vms = &InstanceReconciler{Store: f.store, Driver: f.domains, Catalog: f.vms.Catalog, DomainType: f.vms.DomainType, InstancesDir: f.vms.InstancesDir}
	f.mustReconcileVM("web")
	if d, _ := f.domains.Get(dom); !d.Running || d.Starts != 1 {
		t.Fatalf("adopted domain restarted: running=%v starts=%d", d.Running, d.Starts)
	}
	// Host reboot: everything shut off, Always starts it again.
	f.domains.HostReboot()
	f.mustReconcileVM("web")
	if d, _ := f.domains.Get(dom); !d.Running || d.Starts != 2 {
		t.Fatalf("after host reboot: running=%v starts=%d", d.Running, d.Starts)
	}
}

func TestWatchDomainsMapsEvents(t *testing.T) {
	f := newFixture(t)
	f.createVM("web", v1alpha1.VMInstanceSpec{})
	f.createVM("db", v1alpha1.VMInstanceSpec{})
	uid := f.vm("db").ObjectMeta.UID
	tests := []struct {
		name string
		ev   hypervisor.Event
		want []string
	}{
		{name: "by uid", ev: hypervisor.Event{Name: "default.vm-instance-x", UID: uid, Type: hypervisor.EventStopped}, want: []string{"db"}},
		{name: "by name without uid", ev: hypervisor.Event{Name: "default.vm-instance-web", Type: hypervisor.EventDefined}, want: []string{"web"}},
		{name: "unknown domain", ev: hypervisor.Event{Name: "foreign", Type: hypervisor.EventStarted}},
		{name: "reconnect wakes all", ev: hypervisor.Event{Reconnected: true}, want: []string{"db", "web"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ch := make(chan hypervisor.Event, 1)
			ch <- tc.ev
			close(ch)
			var got []string
			WatchDomains(context.Background(), f.store, ch, func(k Key) { got = append(got, k.Name) }, slog.New(slog.DiscardHandler))
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("keys %v, want %v", got, tc.want)
			}
		})
	}
}

func TestGuestReady(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		log  string
		want bool
	}{
		{name: "cloud-init finished", log: "boot\r\n[  12.3] cloud-init[812]: Cloud-init v. 22.4.2 finished at Mon, 01 Jan 2026 00:00:00 +0000. Datasource DataSourceNoCloud.  Up 12.30 seconds\n", want: true},
		{name: "cloud-init still running", log: "Cloud-init v. 22.4.2 running 'modules:config' at Mon\n", want: false},
		{name: "nothing", log: "", want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if err := os.WriteFile(p, []byte(tc.log), 0o600); err != nil {
				t.Fatal(err)
			}
			if got := guestReady(p, [][]string{DefaultGuestReadyMarkers}); got != tc.want {
				t.Fatalf("guestReady = %v", got)
			}
		})
	}
}

// A settled VM must reconcile without writes: every status write is a
// watch event that queues the key again, and a history write is an fsync.
func TestInstanceReconcileIsQuietWhenSettled(t *testing.T) {
	f := newFixture(t)
	f.vms.Network = InterimNetwork{Bridge: "br0", Subnet: netip.MustParsePrefix("10.77.0.0/24")}
	f.createVM("web", v1alpha1.VMInstanceSpec{SSHKeys: []string{"ssh-ed25519 AAAA a@b"}})
	f.mustReconcileVM("web")
	f.mustReconcileVM("web")
	rv := f.vm("web").ObjectMeta.ResourceVersion
	hist := filepath.Join(f.vms.InstancesDir, "default", "web", "lifecycle.json")
	before, err := os.Stat(hist)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		f.mustReconcileVM("web")
	}
	if got := f.vm("web").ObjectMeta.ResourceVersion; got != rv {
		t.Fatalf("settled reconciles wrote the object (rv %s -> %s)", rv, got)
	}
	after, err := os.Stat(hist)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Fatal("settled reconciles rewrote lifecycle.json")
	}
	if d, _ := f.domains.Get("default.vm-instance-web"); d.Defines != 1 || d.Starts != 1 {
		t.Fatalf("settled reconciles acted: defines %d starts %d", d.Defines, d.Starts)
	}
}

// Two tenants may both have a VM called web: they get two domains, and
// deleting one leaves the other alone.
func TestSameNameInTwoNamespaces(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, ns := range []string{"tenant-a", "tenant-b"} {
		vm := &v1alpha1.VMInstance{TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindVMInstance},
			ObjectMeta: v1alpha1.ObjectMeta{Name: "web", Namespace: ns, Finalizers: []string{v1alpha1.CleanupFinalizer}}}
		v1alpha1.SetDefaults(vm)
		if err := f.store.Create(ctx, vm); err != nil {
			t.Fatal(err)
		}
		if _, err := f.vms.Reconcile(ctx, Key{Kind: v1alpha1.KindVMInstance, Namespace: ns, Name: "web"}); err != nil {
			t.Fatal(err)
		}
	}
	a, okA := f.domains.Get("tenant-a.vm-instance-web")
	b, okB := f.domains.Get("tenant-b.vm-instance-web")
	if !okA || !okB || !a.Running || !b.Running {
		t.Fatalf("want two running domains, got a=%v/%v b=%v/%v", okA, a.Running, okB, b.Running)
	}
	if _, err := f.store.Delete(ctx, v1alpha1.KindVMInstance, "tenant-a", "web", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := f.vms.Reconcile(ctx, Key{Kind: v1alpha1.KindVMInstance, Namespace: "tenant-a", Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.domains.Get("tenant-a.vm-instance-web"); ok {
		t.Fatal("tenant-a's domain survived its delete")
	}
	if b, ok := f.domains.Get("tenant-b.vm-instance-web"); !ok || !b.Running {
		t.Fatal("deleting tenant-a's web touched tenant-b's")
	}
}

// RestartRequired means a restart would change what the guest runs: a new
// runStrategy (a new generation in the domain's metadata) does not, an
// edited cloudInit (read from the seed at boot) does.
func TestRestartRequiredOnlyForWhatTheGuestBootsFrom(t *testing.T) {
	f := newFixture(t)
	f.createVM("web", v1alpha1.VMInstanceSpec{})
	f.mustReconcileVM("web")
	f.setStrategy("web", v1alpha1.RunStrategyManual)
	f.mustReconcileVM("web")
	if d, _ := f.domains.Get("default.vm-instance-web"); d.Defines != 2 || !d.Running {
		t.Fatalf("defines %d running %v: the new generation is defined, the guest keeps running", d.Defines, d.Running)
	}
	if c := condition(f.vm("web"), ConditionRestartRequired); c != "" {
		t.Fatalf("RestartRequired = %q after a runStrategy change", c)
	}
	vm := f.vm("web")
	vm.Spec.CloudInit = "#cloud-config\nruncmd: [true]\n"
	if err := f.store.Update(context.Background(), vm); err != nil {
		t.Fatal(err)
	}
	f.mustReconcileVM("web")
	if c := condition(f.vm("web"), ConditionRestartRequired); c != v1alpha1.ConditionTrue {
		t.Fatalf("RestartRequired = %q after a cloudInit edit", c)
	}
}

// A definition that changes under an unchanged spec (vmd upgraded, or its
// configuration edited) still needs a restart, and says it was not the spec.
func TestRestartRequiredWhenVMDChangesTheDefinition(t *testing.T) {
	f := newFixture(t)
	f.createVM("web", v1alpha1.VMInstanceSpec{})
	f.mustReconcileVM("web")
	f.vms.DomainType = hypervisor.DomainTypeKVM
	f.mustReconcileVM("web")
	c := v1alpha1.FindCondition(f.vm("web").Status.Conditions, ConditionRestartRequired)
	if c == nil || c.Status != v1alpha1.ConditionTrue || c.Reason != "DefinitionChanged" {
		t.Fatalf("RestartRequired = %+v, want True with reason DefinitionChanged", c)
	}
	vm := f.vm("web")
	vm.Spec.CloudInit = "#cloud-config\nruncmd: [true]\n"
	if err := f.store.Update(context.Background(), vm); err != nil {
		t.Fatal(err)
	}
	f.mustReconcileVM("web")
	if c := v1alpha1.FindCondition(f.vm("web").Status.Conditions, ConditionRestartRequired); c == nil || c.Reason != "SpecChanged" {
		t.Fatalf("RestartRequired = %+v after a spec edit, want reason SpecChanged", c)
	}

	// A boot recorded by a vmd that did not note the generation: neither
	// is known to be the cause.
	path := filepath.Join(f.vms.InstancesDir, "default", "web", "lifecycle.json")
	h, err := loadHistory(path)
	if err != nil {
		t.Fatal(err)
	}
	h.BootGeneration = 0
	if err := saveHistory(path, h); err != nil {
		t.Fatal(err)
	}
	f.mustReconcileVM("web")
	if c := v1alpha1.FindCondition(f.vm("web").Status.Conditions, ConditionRestartRequired); c == nil || c.Reason != "OlderDefinition" {
		t.Fatalf("RestartRequired = %+v with an old history, want reason OlderDefinition", c)
	}
}

func TestBootsOlder(t *testing.T) {
	cur := definitionHashes{defined: "d2", boot: "b1"}
	tests := []struct {
		name string
		h    history
		want bool
	}{
		{name: "never started", h: history{}, want: false},
		{name: "same boot, other generation", h: history{RunningHash: "d1", BootHash: "b1"}, want: false},
		{name: "other boot", h: history{RunningHash: "d2", BootHash: "b0"}, want: true},
		{name: "history from before bootHash, same definition", h: history{RunningHash: "d2"}, want: false},
		{name: "history from before bootHash, other definition", h: history{RunningHash: "d1"}, want: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.h.bootsOlder(cur); got != tc.want {
				t.Fatalf("bootsOlder = %v, want %v", got, tc.want)
			}
		})
	}
}
