package controller

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/events"
	"github.com/vmdhq/vmd/internal/hypervisor"
)

// withVMRecorder gives the instance reconciler a real recorder; repeats
// fold into Count, so "x1" proves a transition was told once.
func (f *fixture) withVMRecorder() *events.Recorder {
	rec := events.New(events.Options{})
	f.vms.Recorder = rec
	return rec
}

// vmEventLog renders the events of vminstance name as "Type Reason xCount".
func vmEventLog(rec *events.Recorder, name string) string {
	return kindEventLog(rec, v1alpha1.KindVMInstance, name)
}

func requireEvents(t *testing.T, rec *events.Recorder, name, want string) {
	t.Helper()
	if got := vmEventLog(rec, name); got != want {
		t.Fatalf("events:\n got %q\nwant %q", got, want)
	}
}

func TestInstanceEventsAlwaysCrashLoop(t *testing.T) {
	f := newFixture(t)
	rec := f.withVMRecorder()
	clk := &clock{t: t0}
	f.vms.Now = clk.now
	const dom = "default.vm-instance-web"
	f.createVM("web", v1alpha1.VMInstanceSpec{})
	for range 3 { // the first pass acts, the rest are resyncs
		f.mustReconcileVM("web")
	}
	requireEvents(t, rec, "web", "Normal Defined x1; Normal Started x1")
	if e := rec.List("default", v1alpha1.KindVMInstance, "web")[0]; e.Message != "defined domain "+dom || e.InvolvedObject.UID != f.vm("web").ObjectMeta.UID {
		t.Fatalf("Defined event %+v", e)
	}
	for i := 1; i <= crashLoopRestarts; i++ {
		clk.t = clk.t.Add(time.Second)
		f.domains.Crash(dom)
		f.mustReconcileVM("web")
		f.mustReconcileVM("web")
	}
	// The recorder lists events least recently seen first.
	requireEvents(t, rec, "web", "Normal Defined x1; Normal Started x1; Warning Crashed x3; Normal Restarted x3")
	clk.t = clk.t.Add(time.Second)
	f.domains.Crash(dom)
	f.mustReconcileVM("web")
	f.mustReconcileVM("web")
	requireEvents(t, rec, "web", "Normal Defined x1; Normal Started x1; Normal Restarted x3; Warning Crashed x4; Warning BackOff x1")
	clk.t = clk.t.Add(backoffInitial)
	f.mustReconcileVM("web")
	requireEvents(t, rec, "web", "Normal Defined x1; Normal Started x1; Warning Crashed x4; Warning BackOff x1; Normal Restarted x4")
}

func TestInstanceEventsStopsAndStarts(t *testing.T) {
	const dom = "default.vm-instance-web"
	tests := []struct {
		name     string
		strategy v1alpha1.RunStrategy
		act      func(f *fixture)
		want     string
	}{
		{
			name: "halted by spec: vmd stops it", strategy: v1alpha1.RunStrategyAlways,
			act: func(f *fixture) { f.setStrategy("web", v1alpha1.RunStrategyHalted) },
			// A new runStrategy is a new generation, so a new definition.
			want: "Normal Defined x1; Normal Started x1; Normal Defined x1; Normal Stopping x1; Normal Stopped x1",
		},
		{
			name: "guest powers off under Manual", strategy: v1alpha1.RunStrategyManual,
			act:  func(f *fixture) { f.domains.PowerOff(dom) },
			want: "Normal Defined x1; Normal Started x1; Normal GuestShutdown x1",
		},
		{
			name: "guest powers off under Always", strategy: v1alpha1.RunStrategyAlways,
			act:  func(f *fixture) { f.domains.PowerOff(dom) },
			want: "Normal Defined x1; Normal Started x1; Normal GuestShutdown x1; Normal Restarted x1",
		},
		{
			name: "qemu killed under RerunOnFailure", strategy: v1alpha1.RunStrategyRerunOnFailure,
			act:  func(f *fixture) { f.domains.Crash(dom) },
			want: "Normal Defined x1; Normal Started x1; Warning Crashed x1; Normal Restarted x1",
		},
		{
			name: "qemu killed under Once", strategy: v1alpha1.RunStrategyOnce,
			act:  func(f *fixture) { f.domains.Crash(dom) },
			want: "Normal Defined x1; Normal Started x1; Warning Crashed x1; Warning Failed x1",
		},
		{
			name: "destroyed behind vmd's back under Manual", strategy: v1alpha1.RunStrategyManual,
			act:  func(f *fixture) { _ = f.domains.Destroy(context.Background(), dom) },
			want: "Normal Defined x1; Normal Started x1; Warning Destroyed x1",
		},
		{
			name: "host reboot under Always", strategy: v1alpha1.RunStrategyAlways,
			act:  func(f *fixture) { f.domains.HostReboot() },
			want: "Normal Defined x1; Normal Started x1; Warning Crashed x1; Normal Restarted x1",
		},
		{
			name: "restart requested", strategy: v1alpha1.RunStrategyAlways,
			act:  func(f *fixture) { f.annotate("web", v1alpha1.AnnotationRestartRequestedAt, "2026-01-01T00:00:09Z") },
			want: "Normal Defined x1; Normal Stopping x1; Normal Started x2",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			rec := f.withVMRecorder()
			f.createVM("web", v1alpha1.VMInstanceSpec{RunStrategy: tc.strategy})
			if tc.strategy == v1alpha1.RunStrategyManual {
				f.annotate("web", v1alpha1.AnnotationRequestedState, v1alpha1.RequestedRunning, v1alpha1.AnnotationRequestedAt, "2026-01-01T00:00:01Z")
			}
			f.mustReconcileVM("web")
			requireEvents(t, rec, "web", "Normal Defined x1; Normal Started x1")
			tc.act(f)
			for range 3 {
				f.mustReconcileVM("web")
			}
			// Repeats fold: a second start is "Started x2", listed
			// where it was last seen.
			requireEvents(t, rec, "web", tc.want)
		})
	}
}

func TestInstanceEventsStopReason(t *testing.T) {
	f := newFixture(t)
	rec := f.withVMRecorder()
	f.createVM("web", v1alpha1.VMInstanceSpec{RunStrategy: v1alpha1.RunStrategyManual})
	f.annotate("web", v1alpha1.AnnotationRequestedState, v1alpha1.RequestedRunning, v1alpha1.AnnotationRequestedAt, "2026-01-01T00:00:01Z")
	f.mustReconcileVM("web")
	f.annotate("web", v1alpha1.AnnotationRequestedState, v1alpha1.RequestedStopped, v1alpha1.AnnotationRequestedAt, "2026-01-01T00:00:02Z")
	f.mustReconcileVM("web")
	f.mustReconcileVM("web")
	evs := rec.List("default", v1alpha1.KindVMInstance, "web")
	var msgs []string
	for _, e := range evs[2:] {
		msgs = append(msgs, e.Reason+": "+e.Message)
	}
	want := "Stopping: stopping domain default.vm-instance-web: stop requested|Stopped: domain default.vm-instance-web is not running: stop requested"
	if got := strings.Join(msgs, "|"); got != want {
		t.Fatalf("stop events\n got %q\nwant %q", got, want)
	}
}

func TestInstanceEventsFailuresOncePerMessage(t *testing.T) {
	f := newFixture(t)
	rec := f.withVMRecorder()
	f.createVM("web", v1alpha1.VMInstanceSpec{})
	f.domains.Err = errors.New("internal error: qemu unexpectedly closed the monitor")
	for range 3 {
		if _, err := f.reconcile(f.vms, v1alpha1.KindVMInstance, "web"); err == nil {
			t.Fatal("define with a failing hypervisor succeeded")
		}
	}
	requireEvents(t, rec, "web", "Warning DefineFailed x1")
	f.domains.Err = nil
	f.mustReconcileVM("web")
	requireEvents(t, rec, "web", "Warning DefineFailed x1; Normal Defined x1; Normal Started x1")
}

func TestInstanceEventsWaitingForDisksAndGuestReady(t *testing.T) {
	f := newFixture(t)
	rec := f.withVMRecorder()
	f.createVM("web", v1alpha1.VMInstanceSpec{Disks: []v1alpha1.DiskRef{{Name: "system"}}})
	f.mustReconcileVM("web")
	f.mustReconcileVM("web")
	requireEvents(t, rec, "web", "Normal WaitingForDisks x1")
	f.createDisk("system", v1alpha1.VMDiskSpec{Storage: "1Gi"})
	if _, err := f.reconcile(f.disks, v1alpha1.KindVMDisk, "system"); err != nil {
		t.Fatal(err)
	}
	f.mustReconcileVM("web")
	serial := filepath.Join(f.vms.InstancesDir, "default", "web", "serial.log")
	if err := os.WriteFile(serial, []byte("Cloud-init v. 22.4.2 finished at Mon, 01 Jan 2026\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.mustReconcileVM("web")
	f.mustReconcileVM("web")
	requireEvents(t, rec, "web", "Normal WaitingForDisks x1; Normal Defined x1; Normal Started x1; Normal GuestReady x1")
}

func TestInstanceEventsSpecChangeAndDelete(t *testing.T) {
	f := newFixture(t)
	rec := f.withVMRecorder()
	ctx := context.Background()
	f.createVM("web", v1alpha1.VMInstanceSpec{})
	f.mustReconcileVM("web")
	vm := f.vm("web")
	vm.Spec.SSHKeys = []string{"ssh-ed25519 AAAA a@b"} // a new seed: a new definition
	if err := f.store.Update(ctx, vm); err != nil {
		t.Fatal(err)
	}
	f.mustReconcileVM("web")
	f.mustReconcileVM("web")
	requireEvents(t, rec, "web", "Normal Defined x1; Normal Started x1; Normal Defined x1; Normal RestartRequired x1")
	if e := rec.List("default", v1alpha1.KindVMInstance, "web")[2]; e.Message != "redefined domain default.vm-instance-web for generation 2" {
		t.Fatalf("redefinition message %q", e.Message)
	}
	if _, err := f.store.Delete(ctx, v1alpha1.KindVMInstance, "default", "web", ""); err != nil {
		t.Fatal(err)
	}
	f.mustReconcileVM("web")
	f.mustReconcileVM("web") // gone: nothing more
	got := vmEventLog(rec, "web")
	if !strings.HasSuffix(got, "; Normal Deleted x1") || strings.Count(got, "Stopp") != 0 {
		t.Fatalf("events after delete %q", got)
	}
}

// A restarted vmd re-adopts a running VM silently.
func TestInstanceEventsReadoptionIsQuiet(t *testing.T) {
	f := newFixture(t)
	f.createVM("web", v1alpha1.VMInstanceSpec{})
	f.mustReconcileVM("web")
	rec := f.withVMRecorder() // a new process: a new, empty recorder
	for range 2 {
		f.mustReconcileVM("web")
	}
	requireEvents(t, rec, "web", "")
}

// TestInstanceEventsRule covers the pure rule on its own.
func TestInstanceEventsRule(t *testing.T) {
	running := instanceSnapshot{phase: v1alpha1.PhaseRunning, reason: "Running", message: "domain d is running", definedHash: "h1"}
	with := func(s instanceSnapshot, edit func(*instanceSnapshot)) instanceSnapshot {
		edit(&s)
		return s
	}
	tests := []struct {
		name     string
		old, now instanceSnapshot
		want     string
	}{
		{name: "steady running", old: running, now: running},
		{name: "guest ready toggles back on", old: running, now: with(running, func(s *instanceSnapshot) { s.guestReady = true }),
			want: "Normal GuestReady the guest announced the end of its boot on the serial console"},
		{name: "first definition, starting", old: instanceSnapshot{}, now: with(running, func(s *instanceSnapshot) { s.phase = v1alpha1.PhaseStarting }),
			want: "Normal Defined defined domain d"},
		{name: "redefinition", old: running, now: with(running, func(s *instanceSnapshot) { s.definedHash = "h2" }),
			want: "Normal Defined redefined domain d for generation 7"},
		{name: "exit recorded while already stopped is no news",
			old: with(running, func(s *instanceSnapshot) { s.phase = v1alpha1.PhaseStopped }),
			now: with(running, func(s *instanceSnapshot) { s.phase = v1alpha1.PhaseStopped; s.exit = hypervisor.ExitShutdown })},
		{name: "crash held by back-off", old: running,
			now: with(running, func(s *instanceSnapshot) {
				s.phase, s.reason, s.message, s.exit = v1alpha1.PhaseCrashLoopBackOff, "CrashLoopBackOff", "crash loop", hypervisor.ExitFailure
				s.crashLoop = "3 restarts within 1m0s; next restart in 10s"
			}),
			want: "Warning Crashed domain d stopped unexpectedly: qemu exited or the guest crashed|Warning BackOff 3 restarts within 1m0s; next restart in 10s"},
		{name: "back-off message moves", old: with(running, func(s *instanceSnapshot) { s.phase, s.crashLoop = v1alpha1.PhaseCrashLoopBackOff, "in 10s" }),
			now: with(running, func(s *instanceSnapshot) { s.phase, s.crashLoop = v1alpha1.PhaseCrashLoopBackOff, "in 4s" })},
		{name: "restart required appears", old: running, now: with(running, func(s *instanceSnapshot) { s.restartRequired = "restart it" }),
			want: "Normal RestartRequired restart it"},
		{name: "restart required stays", old: with(running, func(s *instanceSnapshot) { s.restartRequired = "restart it" }),
			now: with(running, func(s *instanceSnapshot) { s.restartRequired = "restart it" })},
		{name: "host limits appear", old: running, now: with(running, func(s *instanceSnapshot) { s.hostLimits = "no 1Gi hugepages" }),
			want: "Warning HostLimits no 1Gi hugepages"},
		{name: "same failure again", old: with(running, func(s *instanceSnapshot) { s.reason, s.message = "StartFailed", "e" }),
			now: with(running, func(s *instanceSnapshot) { s.reason, s.message = "StartFailed", "e" })},
		{name: "hypervisor goes away", old: running, now: with(running, func(s *instanceSnapshot) { s.reason, s.message = "HypervisorUnavailable", "libvirtd down" }),
			want: "Warning HypervisorUnavailable libvirtd down"},
		{name: "stopped from pending is not a stop", old: instanceSnapshot{phase: v1alpha1.PhasePending},
			now: instanceSnapshot{phase: v1alpha1.PhaseStopped, reason: "Stopped", message: "waiting for vmctl start"}},
		{name: "back-off released into a restart",
			old:  with(running, func(s *instanceSnapshot) { s.phase, s.restartCount = v1alpha1.PhaseCrashLoopBackOff, 3 }),
			now:  with(running, func(s *instanceSnapshot) { s.restartCount = 4 }),
			want: "Normal Restarted runStrategy Always restarted domain d"},
	}
	vm := &v1alpha1.VMInstance{ObjectMeta: v1alpha1.ObjectMeta{Generation: 7},
		Spec: v1alpha1.VMInstanceSpec{RunStrategy: v1alpha1.RunStrategyAlways}, Status: v1alpha1.VMInstanceStatus{DomainName: "d"}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, e := range instanceEvents(tc.old, tc.now, vm) {
				got = append(got, e.typ+" "+e.reason+" "+e.message)
			}
			if strings.Join(got, "|") != tc.want {
				t.Fatalf("instanceEvents =\n %q\nwant\n %q", strings.Join(got, "|"), tc.want)
			}
		})
	}
}
