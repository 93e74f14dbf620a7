package state

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
)

// eventTimeout bounds every wait for a watch event; it is a hang guard,
// not a timing assertion.
const eventTimeout = 10 * time.Second

func openTest(t testing.TB, opts Options) *Bolt {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), DefaultFileName), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func newVM(ns, name string) *v1alpha1.VMInstance {
	return &v1alpha1.VMInstance{
		ObjectMeta: v1alpha1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       v1alpha1.VMInstanceSpec{CloudInit: "#cloud-config\n", SSHKeys: []string{"ssh-ed25519 AAAA test"}},
	}
}

func newDisk(ns, name string) *v1alpha1.VMDisk {
	return &v1alpha1.VMDisk{
		ObjectMeta: v1alpha1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       v1alpha1.VMDiskSpec{StorageClass: "local"},
	}
}

func mustCreate(t testing.TB, s *Bolt, obj v1alpha1.Object) {
	t.Helper()
	if err := s.Create(t.Context(), obj); err != nil {
		t.Fatalf("Create %s: %v", obj.GetObjectMeta().Name, err)
	}
}

func mustGetVM(t testing.TB, s *Bolt, ns, name string) *v1alpha1.VMInstance {
	t.Helper()
	o, err := s.Get(t.Context(), v1alpha1.KindVMInstance, ns, name)
	if err != nil {
		t.Fatalf("Get %s/%s: %v", ns, name, err)
	}
	return o.(*v1alpha1.VMInstance)
}

func rvOf(t testing.TB, obj v1alpha1.Object) uint64 {
	t.Helper()
	rv, err := strconv.ParseUint(obj.GetObjectMeta().ResourceVersion, 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q: %v", obj.GetObjectMeta().ResourceVersion, err)
	}
	return rv
}

func recv(t testing.TB, ch <-chan Event) Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed, want an event")
		}
		return ev
	case <-time.After(eventTimeout):
		t.Fatal("no watch event")
	}
	return Event{}
}

// expectClosed drains ch and returns how many events it still held.
func expectClosed(t testing.TB, ch <-chan Event) int {
	t.Helper()
	n := 0
	deadline := time.After(eventTimeout)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return n
			}
			n++
		case <-deadline:
			t.Fatalf("watch channel not closed (drained %d events)", n)
		}
	}
}

func expectIdle(t testing.TB, ch <-chan Event) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		t.Fatalf("unexpected watch activity: %+v (open=%v)", ev, ok)
	default:
	}
}

func keyOf(o v1alpha1.Object) string {
	m := o.GetObjectMeta()
	return m.Namespace + "/" + m.Name
}

func TestCreateGetList(t *testing.T) {
	s := openTest(t, Options{})
	ctx := t.Context()
	// Namespaces "a" and "a-b" sort differently as raw keys ('-' < '/').
	for _, o := range []v1alpha1.Object{
		newVM("a-b", "x"), newVM("a", "z"), newVM("a", "y"), newVM("", "web"),
		newDisk("a", "root"), newDisk("zeta", "data"),
	} {
		mustCreate(t, s, o)
		m := o.GetObjectMeta()
		if m.UID == "" || m.Generation != 1 || m.CreationTimestamp == nil || m.ResourceVersion == "" {
			t.Errorf("Create %s: server fields not set: %+v", m.Name, m)
		}
		if tm := o.GetTypeMeta(); tm.APIVersion != v1alpha1.GroupVersion || tm.Kind == "" {
			t.Errorf("Create %s: type meta not set: %+v", m.Name, tm)
		}
	}
	got := mustGetVM(t, s, "", "web")
	if got.ObjectMeta.Namespace != v1alpha1.DefaultNamespace {
		t.Errorf("namespace = %q, want %q", got.ObjectMeta.Namespace, v1alpha1.DefaultNamespace)
	}
	if got.Spec.CloudInit != "#cloud-config\n" || len(got.Spec.SSHKeys) != 1 {
		t.Errorf("spec not round-tripped: %+v", got.Spec)
	}

	tests := []struct {
		name      string
		kind      v1alpha1.Kind
		namespace string
		want      []string
	}{
		{name: "all namespaces sorted", kind: v1alpha1.KindVMInstance, want: []string{"a/y", "a/z", "a-b/x", "default/web"}},
		{name: "one namespace", kind: v1alpha1.KindVMInstance, namespace: "a", want: []string{"a/y", "a/z"}},
		{name: "namespace is not a prefix match", kind: v1alpha1.KindVMInstance, namespace: "a-", want: nil},
		{name: "empty namespace", kind: v1alpha1.KindVMInstance, namespace: "nope", want: nil},
		{name: "other kind", kind: v1alpha1.KindVMDisk, want: []string{"a/root", "zeta/data"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, rv, err := s.List(ctx, tt.kind, tt.namespace)
			if err != nil {
				t.Fatal(err)
			}
			if rv != "6" {
				t.Errorf("list resourceVersion = %q, want 6 (six writes)", rv)
			}
			var keys []string
			for _, o := range objs {
				if o.GetTypeMeta().Kind != tt.kind {
					t.Errorf("%s has kind %q", keyOf(o), o.GetTypeMeta().Kind)
				}
				keys = append(keys, keyOf(o))
			}
			if fmt.Sprint(keys) != fmt.Sprint(tt.want) {
				t.Errorf("keys = %v, want %v", keys, tt.want)
			}
		})
	}
}

func TestCreateErrors(t *testing.T) {
	s := openTest(t, Options{})
	mustCreate(t, s, newVM("ns", "taken"))
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		obj  v1alpha1.Object
		want error
	}{
		{name: "already exists", ctx: t.Context(), obj: newVM("ns", "taken"), want: errdefs.ErrAlreadyExists},
		{name: "same name other kind is fine", ctx: t.Context(), obj: newDisk("ns", "taken")},
		{name: "same name other namespace is fine", ctx: t.Context(), obj: newVM("other", "taken")},
		{name: "empty name", ctx: t.Context(), obj: newVM("ns", ""), want: errdefs.ErrInvalid},
		{name: "slash in name", ctx: t.Context(), obj: newVM("ns", "a/b"), want: errdefs.ErrInvalid},
		{name: "slash in namespace", ctx: t.Context(), obj: newVM("a/b", "c"), want: errdefs.ErrInvalid},
		{name: "nil object", ctx: t.Context(), obj: (*v1alpha1.VMInstance)(nil), want: errdefs.ErrInvalid},
		{name: "canceled context", ctx: canceled, obj: newVM("ns", "late"), want: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Create(tt.ctx, tt.obj)
			if tt.want == nil && err != nil {
				t.Fatalf("Create: %v", err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Create error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestNotFound(t *testing.T) {
	s := openTest(t, Options{})
	ctx := t.Context()
	tests := []struct {
		name string
		op   func() error
	}{
		{name: "get", op: func() error { _, err := s.Get(ctx, v1alpha1.KindVMInstance, "ns", "ghost"); return err }},
		{name: "update", op: func() error { return s.Update(ctx, newVM("ns", "ghost")) }},
		{name: "update status", op: func() error { return s.UpdateStatus(ctx, newVM("ns", "ghost")) }},
		{name: "delete", op: func() error { _, err := s.Delete(ctx, v1alpha1.KindVMDisk, "ns", "ghost", ""); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.op()
			if !errors.Is(err, errdefs.ErrNotFound) {
				t.Fatalf("error = %v, want ErrNotFound", err)
			}
			if !strings.Contains(err.Error(), "ns/ghost") {
				t.Errorf("error %q does not name the object", err)
			}
		})
	}
	if _, err := s.Get(ctx, "Pod", "ns", "x"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Get of unknown kind: error = %v, want ErrInvalid", err)
	}
}

func TestUpdatePreconditions(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(vm, stored *v1alpha1.VMInstance)
		want   error
	}{
		{name: "current resourceVersion", mutate: func(_, _ *v1alpha1.VMInstance) {}},
		{name: "empty resourceVersion is unconditional", mutate: func(vm, _ *v1alpha1.VMInstance) { vm.ObjectMeta.ResourceVersion = "" }},
		{name: "stale resourceVersion", mutate: func(vm, stored *v1alpha1.VMInstance) {
			vm.ObjectMeta.ResourceVersion = strconv.FormatUint(rvOf(t, stored)-1, 10)
		}, want: errdefs.ErrConflict},
		{name: "future resourceVersion", mutate: func(vm, stored *v1alpha1.VMInstance) {
			vm.ObjectMeta.ResourceVersion = strconv.FormatUint(rvOf(t, stored)+100, 10)
		}, want: errdefs.ErrConflict},
		{name: "other uid", mutate: func(vm, _ *v1alpha1.VMInstance) {
			vm.ObjectMeta.ResourceVersion, vm.ObjectMeta.UID = "", "00000000-0000-0000-0000-000000000000"
		}, want: errdefs.ErrConflict},
	}
	for _, tt := range tests {
		for _, status := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/status=%v", tt.name, status), func(t *testing.T) {
				s := openTest(t, Options{})
				ctx := t.Context()
				mustCreate(t, s, newDisk("ns", "d")) // so the VM's rv is not 1
				mustCreate(t, s, newVM("ns", "vm"))
				stored := mustGetVM(t, s, "ns", "vm")
				vm := stored.DeepCopyObject().(*v1alpha1.VMInstance)
				vm.Spec.CloudInit = "changed"
				vm.Status.Phase = v1alpha1.PhaseRunning
				tt.mutate(vm, stored)
				var err error
				if status {
					err = s.UpdateStatus(ctx, vm)
				} else {
					err = s.Update(ctx, vm)
				}
				if tt.want == nil && err != nil {
					t.Fatalf("write: %v", err)
				}
				if tt.want != nil && !errors.Is(err, tt.want) {
					t.Fatalf("write error = %v, want %v", err, tt.want)
				}
				got := mustGetVM(t, s, "ns", "vm")
				specWritten := got.Spec.CloudInit == "changed"
				statusWritten := got.Status.Phase == v1alpha1.PhaseRunning
				wantSpec, wantStatus := tt.want == nil && !status, tt.want == nil && status
				if specWritten != wantSpec || statusWritten != wantStatus {
					t.Errorf("spec written %v (want %v), status written %v (want %v)", specWritten, wantSpec, statusWritten, wantStatus)
				}
			})
		}
	}
}

func TestUpdateGenerationAndNoop(t *testing.T) {
	tests := []struct {
		name      string
		mutate    func(vm *v1alpha1.VMInstance)
		wantGen   int64
		wantWrite bool
	}{
		{name: "label change keeps generation", mutate: func(vm *v1alpha1.VMInstance) {
			vm.ObjectMeta.Labels = map[string]string{"app": "web"}
		}, wantGen: 1, wantWrite: true},
		{name: "annotation and finalizer change keeps generation", mutate: func(vm *v1alpha1.VMInstance) {
			vm.ObjectMeta.Annotations = map[string]string{"note": "x"}
			vm.ObjectMeta.Finalizers = []string{v1alpha1.CleanupFinalizer}
		}, wantGen: 1, wantWrite: true},
		{name: "spec change bumps generation", mutate: func(vm *v1alpha1.VMInstance) {
			vm.Spec.SSHKeys = append(vm.Spec.SSHKeys, "ssh-ed25519 BBBB second")
		}, wantGen: 2, wantWrite: true},
		{name: "no change writes nothing", mutate: func(*v1alpha1.VMInstance) {}, wantGen: 1},
		{name: "server-owned fields are ignored", mutate: func(vm *v1alpha1.VMInstance) {
			vm.ObjectMeta.Generation = 42
			vm.ObjectMeta.CreationTimestamp = v1alpha1.NewTime(time.Unix(0, 0))
			vm.ObjectMeta.DeletionTimestamp = v1alpha1.NewTime(time.Unix(0, 0))
			vm.Status.Phase = "Forged"
		}, wantGen: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t, Options{})
			ctx := t.Context()
			created := newVM("ns", "vm")
			mustCreate(t, s, created)
			created.Status.Phase = v1alpha1.PhaseRunning
			if err := s.UpdateStatus(ctx, created); err != nil {
				t.Fatal(err)
			}
			before := mustGetVM(t, s, "ns", "vm")
			ch, err := s.Watch(ctx, v1alpha1.KindVMInstance, "", "")
			if err != nil {
				t.Fatal(err)
			}

			vm := before.DeepCopyObject().(*v1alpha1.VMInstance)
			tt.mutate(vm)
			if err := s.Update(ctx, vm); err != nil {
				t.Fatalf("Update: %v", err)
			}
			got := mustGetVM(t, s, "ns", "vm")
			if got.ObjectMeta.Generation != tt.wantGen {
				t.Errorf("generation = %d, want %d", got.ObjectMeta.Generation, tt.wantGen)
			}
			if wrote := got.ObjectMeta.ResourceVersion != before.ObjectMeta.ResourceVersion; wrote != tt.wantWrite {
				t.Errorf("wrote = %v (rv %s -> %s), want %v", wrote, before.ObjectMeta.ResourceVersion, got.ObjectMeta.ResourceVersion, tt.wantWrite)
			}
			if tt.wantWrite {
				if ev := recv(t, ch); ev.Type != v1alpha1.Modified || ev.ResourceVersion != got.ObjectMeta.ResourceVersion {
					t.Errorf("event = %s@%s, want MODIFIED@%s", ev.Type, ev.ResourceVersion, got.ObjectMeta.ResourceVersion)
				}
			} else {
				expectIdle(t, ch)
			}
			// The caller's object now mirrors the store.
			if vm.ObjectMeta.ResourceVersion != got.ObjectMeta.ResourceVersion || vm.ObjectMeta.Generation != got.ObjectMeta.Generation {
				t.Errorf("obj not updated with stored result: rv %s gen %d", vm.ObjectMeta.ResourceVersion, vm.ObjectMeta.Generation)
			}
			// Status and creation metadata always survive an Update.
			if got.Status.Phase != v1alpha1.PhaseRunning || vm.Status.Phase != v1alpha1.PhaseRunning {
				t.Errorf("status phase stored %q, returned %q; want %q", got.Status.Phase, vm.Status.Phase, v1alpha1.PhaseRunning)
			}
			if got.ObjectMeta.UID != before.ObjectMeta.UID || !got.ObjectMeta.CreationTimestamp.Equal(before.ObjectMeta.CreationTimestamp.Time) || got.ObjectMeta.DeletionTimestamp != nil {
				t.Errorf("server-owned metadata changed: %+v", got.ObjectMeta)
			}
		})
	}
}

func TestUpdateStatusTouchesOnlyStatus(t *testing.T) {
	s := openTest(t, Options{})
	ctx := t.Context()
	vm := newVM("ns", "vm")
	vm.ObjectMeta.Labels = map[string]string{"app": "web"}
	mustCreate(t, s, vm)
	before := mustGetVM(t, s, "ns", "vm")

	vm.Spec.CloudInit = "ignored"
	vm.ObjectMeta.Labels = map[string]string{"app": "ignored"}
	vm.Status = v1alpha1.VMInstanceStatus{Phase: v1alpha1.PhaseProvisioning, ObservedGeneration: 1, DomainName: "vm-instance-vm"}
	if err := s.UpdateStatus(ctx, vm); err != nil {
		t.Fatal(err)
	}
	got := mustGetVM(t, s, "ns", "vm")
	if got.Spec.CloudInit != before.Spec.CloudInit || got.ObjectMeta.Labels["app"] != "web" || got.ObjectMeta.Generation != 1 {
		t.Errorf("UpdateStatus changed spec or metadata: %+v %+v", got.Spec, got.ObjectMeta)
	}
	if got.Status.Phase != v1alpha1.PhaseProvisioning || got.Status.DomainName != "vm-instance-vm" {
		t.Errorf("status = %+v", got.Status)
	}
	if rvOf(t, got) <= rvOf(t, before) {
		t.Errorf("rv did not advance: %s -> %s", before.ObjectMeta.ResourceVersion, got.ObjectMeta.ResourceVersion)
	}
	// The caller gets the stored object back, spec included.
	if vm.Spec.CloudInit != before.Spec.CloudInit || vm.ObjectMeta.ResourceVersion != got.ObjectMeta.ResourceVersion {
		t.Errorf("obj not updated with stored result: spec %q rv %s", vm.Spec.CloudInit, vm.ObjectMeta.ResourceVersion)
	}
	// Writing the same status again is not a write.
	if err := s.UpdateStatus(ctx, vm); err != nil {
		t.Fatal(err)
	}
	if again := mustGetVM(t, s, "ns", "vm"); again.ObjectMeta.ResourceVersion != got.ObjectMeta.ResourceVersion {
		t.Errorf("no-op status write bumped rv %s -> %s", got.ObjectMeta.ResourceVersion, again.ObjectMeta.ResourceVersion)
	}
}

func TestResourceVersionStrictlyIncreasesAcrossKinds(t *testing.T) {
	s := openTest(t, Options{})
	ctx := t.Context()
	var last uint64
	check := func(step string, obj v1alpha1.Object) {
		t.Helper()
		rv := rvOf(t, obj)
		if rv <= last {
			t.Fatalf("%s: resourceVersion %d not above previous %d", step, rv, last)
		}
		last = rv
	}
	for i := range 5 {
		vm, d := newVM("ns", fmt.Sprint("vm", i)), newDisk("ns", fmt.Sprint("d", i))
		mustCreate(t, s, vm)
		check("create vm", vm)
		mustCreate(t, s, d)
		check("create disk", d)
		d.Status.Phase = v1alpha1.DiskPhaseReady
		if err := s.UpdateStatus(ctx, d); err != nil {
			t.Fatal(err)
		}
		check("disk status", d)
		vm.ObjectMeta.Labels = map[string]string{"i": fmt.Sprint(i)}
		if err := s.Update(ctx, vm); err != nil {
			t.Fatal(err)
		}
		check("vm update", vm)
		gone, err := s.Delete(ctx, v1alpha1.KindVMDisk, "ns", d.ObjectMeta.Name, "")
		if err != nil {
			t.Fatal(err)
		}
		check("disk delete", gone)
	}
	if _, rv, err := s.List(ctx, v1alpha1.KindVMDisk, ""); err != nil || rv != fmt.Sprint(last) {
		t.Errorf("List rv = %q, %v; want %d", rv, err, last)
	}
}

func TestDelete(t *testing.T) {
	tests := []struct {
		name       string
		finalizers []string
		wantEvent  v1alpha1.WatchEventType
		wantGone   bool
	}{
		{name: "without finalizers removes at once", wantEvent: v1alpha1.Deleted, wantGone: true},
		{name: "with finalizers marks for deletion", finalizers: []string{v1alpha1.CleanupFinalizer, "example.com/other"}, wantEvent: v1alpha1.Modified},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t, Options{})
			ctx := t.Context()
			vm := newVM("ns", "vm")
			vm.ObjectMeta.Finalizers = tt.finalizers
			mustCreate(t, s, vm)
			ch, err := s.Watch(ctx, v1alpha1.KindVMInstance, "ns", vm.ObjectMeta.ResourceVersion)
			if err != nil {
				t.Fatal(err)
			}
			stale := strconv.FormatUint(rvOf(t, vm)-1, 10)
			if _, err := s.Delete(ctx, v1alpha1.KindVMInstance, "ns", "vm", stale); !errors.Is(err, errdefs.ErrConflict) {
				t.Fatalf("Delete with stale precondition: error = %v, want ErrConflict", err)
			}

			got, err := s.Delete(ctx, v1alpha1.KindVMInstance, "ns", "vm", vm.ObjectMeta.ResourceVersion)
			if err != nil {
				t.Fatalf("Delete: %v", err)
			}
			ev := recv(t, ch)
			if ev.Type != tt.wantEvent || ev.ResourceVersion != got.GetObjectMeta().ResourceVersion || keyOf(ev.Object) != "ns/vm" {
				t.Errorf("event = %s@%s %s, want %s@%s ns/vm", ev.Type, ev.ResourceVersion, keyOf(ev.Object), tt.wantEvent, got.GetObjectMeta().ResourceVersion)
			}
			if rvOf(t, got) <= rvOf(t, vm) {
				t.Errorf("delete rv %d not above %d", rvOf(t, got), rvOf(t, vm))
			}
			_, err = s.Get(ctx, v1alpha1.KindVMInstance, "ns", "vm")
			if gone := errors.Is(err, errdefs.ErrNotFound); gone != tt.wantGone {
				t.Fatalf("after delete: Get error = %v, want gone=%v", err, tt.wantGone)
			}
			if tt.wantGone {
				if ev.Object.GetObjectMeta().UID != vm.ObjectMeta.UID {
					t.Error("DELETED event does not carry the last state")
				}
				return
			}

			// Marked: deletionTimestamp set once, a repeat delete writes nothing.
			marked := mustGetVM(t, s, "ns", "vm")
			if marked.ObjectMeta.DeletionTimestamp == nil {
				t.Fatal("deletionTimestamp not set")
			}
			again, err := s.Delete(ctx, v1alpha1.KindVMInstance, "ns", "vm", "")
			if err != nil || again.GetObjectMeta().ResourceVersion != marked.ObjectMeta.ResourceVersion {
				t.Errorf("repeat delete = rv %s, %v; want unchanged rv %s", again.GetObjectMeta().ResourceVersion, err, marked.ObjectMeta.ResourceVersion)
			}
			expectIdle(t, ch)

			// A terminating object accepts no new finalizer.
			add := marked.DeepCopyObject().(*v1alpha1.VMInstance)
			add.ObjectMeta.Finalizers = append(add.ObjectMeta.Finalizers, "example.com/late")
			if err := s.Update(ctx, add); !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("adding a finalizer while deleting: error = %v, want ErrInvalid", err)
			}

			// Removing one finalizer keeps it; removing the last deletes it.
			marked.ObjectMeta.Finalizers = marked.ObjectMeta.Finalizers[1:]
			if err := s.Update(ctx, marked); err != nil {
				t.Fatal(err)
			}
			if ev := recv(t, ch); ev.Type != v1alpha1.Modified {
				t.Errorf("after first finalizer removal: event %s, want MODIFIED", ev.Type)
			}
			mustGetVM(t, s, "ns", "vm")
			marked.ObjectMeta.Finalizers = nil
			if err := s.Update(ctx, marked); err != nil {
				t.Fatal(err)
			}
			if ev := recv(t, ch); ev.Type != v1alpha1.Deleted || ev.ResourceVersion != marked.ObjectMeta.ResourceVersion {
				t.Errorf("after last finalizer removal: event %s@%s, want DELETED@%s", ev.Type, ev.ResourceVersion, marked.ObjectMeta.ResourceVersion)
			}
			if _, err := s.Get(ctx, v1alpha1.KindVMInstance, "ns", "vm"); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("after last finalizer removal: Get error = %v, want ErrNotFound", err)
			}
		})
	}
}

// writeN creates n VMInstances ns/vm1..vmN, one resourceVersion each.
func writeN(t testing.TB, s *Bolt, ns string, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		mustCreate(t, s, newVM(ns, fmt.Sprint("vm", i)))
	}
}

func TestWatchReplay(t *testing.T) {
	s := openTest(t, Options{})
	ctx := t.Context()
	writeN(t, s, "ns", 3) // rv 1..3
	vm := mustGetVM(t, s, "ns", "vm2")
	vm.Status.Phase = v1alpha1.PhaseRunning
	if err := s.UpdateStatus(ctx, vm); err != nil { // rv 4
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, v1alpha1.KindVMInstance, "ns", "vm1", ""); err != nil { // rv 5
		t.Fatal(err)
	}
	ch, err := s.Watch(ctx, v1alpha1.KindVMInstance, "", "2")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ADDED ns/vm3 3", "MODIFIED ns/vm2 4", "DELETED ns/vm1 5"}
	for _, w := range want {
		ev := recv(t, ch)
		if got := fmt.Sprint(ev.Type, " ", keyOf(ev.Object), " ", ev.ResourceVersion); got != w {
			t.Errorf("event %q, want %q", got, w)
		}
		if ev.Object.GetObjectMeta().ResourceVersion != ev.ResourceVersion {
			t.Errorf("object rv %s differs from event rv %s", ev.Object.GetObjectMeta().ResourceVersion, ev.ResourceVersion)
		}
	}
	expectIdle(t, ch)
	// Live events follow the replay without gap or duplicate.
	writeN(t, s, "live", 1)
	if ev := recv(t, ch); ev.ResourceVersion != "6" || keyOf(ev.Object) != "live/vm1" {
		t.Errorf("live event %s %s, want rv 6 live/vm1", ev.ResourceVersion, keyOf(ev.Object))
	}
}

func TestWatchWindow(t *testing.T) {
	tests := []struct {
		name       string
		since      string
		want       error
		wantReplay int
	}{
		{name: "from now", since: "", wantReplay: 0},
		{name: "current", since: "10", wantReplay: 0},
		{name: "oldest kept minus one", since: "6", wantReplay: 4},
		{name: "inside window", since: "8", wantReplay: 2},
		{name: "evicted", since: "5", want: errdefs.ErrGone},
		{name: "far evicted", since: "0", want: errdefs.ErrGone},
		{name: "future", since: "11", want: errdefs.ErrGone},
		{name: "not a number", since: "abc", want: errdefs.ErrInvalid},
	}
	s := openTest(t, Options{WatchWindow: 4})
	writeN(t, s, "ns", 10) // window keeps rv 7..10
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			ch, err := s.Watch(ctx, v1alpha1.KindVMInstance, "", tt.since)
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("Watch(%q) error = %v, want %v", tt.since, err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Watch(%q): %v", tt.since, err)
			}
			cancel()
			if n := expectClosed(t, ch); n != tt.wantReplay {
				t.Errorf("replayed %d events, want %d", n, tt.wantReplay)
			}
		})
	}
}

func TestWatchAfterReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), DefaultFileName)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	writeN(t, s, "ns", 3)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	// The window is in memory: nothing older than the reopen can replay,
	// but the current version is a valid starting point.
	if _, err := s.Watch(t.Context(), v1alpha1.KindVMInstance, "", "2"); !errors.Is(err, errdefs.ErrGone) {
		t.Errorf("Watch(2) after reopen: error = %v, want ErrGone", err)
	}
	ch, err := s.Watch(t.Context(), v1alpha1.KindVMInstance, "", "3")
	if err != nil {
		t.Fatalf("Watch(3) after reopen: %v", err)
	}
	writeN(t, s, "after", 1)
	if ev := recv(t, ch); ev.ResourceVersion != "4" {
		t.Errorf("first event after reopen has rv %s, want 4", ev.ResourceVersion)
	}
}

func TestWatchFilter(t *testing.T) {
	tests := []struct {
		name      string
		kind      v1alpha1.Kind
		namespace string
		want      []string
	}{
		{name: "kind all namespaces", kind: v1alpha1.KindVMInstance, want: []string{"a/vm", "b/vm"}},
		{name: "kind one namespace", kind: v1alpha1.KindVMInstance, namespace: "b", want: []string{"b/vm"}},
		{name: "other kind", kind: v1alpha1.KindVMDisk, want: []string{"a/disk"}},
		{name: "no match", kind: v1alpha1.KindVMDisk, namespace: "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t, Options{})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			live, err := s.Watch(ctx, tt.kind, tt.namespace, "")
			if err != nil {
				t.Fatal(err)
			}
			mustCreate(t, s, newVM("a", "vm"))
			mustCreate(t, s, newDisk("a", "disk"))
			mustCreate(t, s, newVM("b", "vm"))
			replay, err := s.Watch(ctx, tt.kind, tt.namespace, "0")
			if err != nil {
				t.Fatal(err)
			}
			cancel()
			for name, ch := range map[string]<-chan Event{"live": live, "replay": replay} {
				var got []string
				for ev := range ch {
					got = append(got, keyOf(ev.Object))
				}
				if fmt.Sprint(got) != fmt.Sprint(tt.want) {
					t.Errorf("%s: events for %v, want %v", name, got, tt.want)
				}
			}
		})
	}
}

func TestWatchSlowConsumerIsClosed(t *testing.T) {
	const buffer = 4
	s := openTest(t, Options{WatchBuffer: buffer})
	ctx := t.Context()
	slow, err := s.Watch(ctx, v1alpha1.KindVMInstance, "", "")
	if err != nil {
		t.Fatal(err)
	}
	fast, err := s.Watch(ctx, v1alpha1.KindVMInstance, "", "")
	if err != nil {
		t.Fatal(err)
	}
	// The fast watcher is read in lockstep with the writes, so it keeps up
	// however loaded the machine is; the slow one is never read.
	fastGot := make(chan string, 1)
	go func() {
		for ev := range fast {
			fastGot <- ev.ResourceVersion
		}
		close(fastGot)
	}()

	writersDone := make(chan error, 1)
	var got []string
	go func() {
		for i := range 3 * buffer {
			if err := s.Create(ctx, newVM("ns", fmt.Sprint("vm", i))); err != nil {
				writersDone <- err
				return
			}
			select {
			case rv, ok := <-fastGot:
				if !ok {
					writersDone <- fmt.Errorf("fast watcher closed after %v", got)
					return
				}
				got = append(got, rv)
			case <-time.After(eventTimeout):
				writersDone <- fmt.Errorf("fast watcher got nothing for write %d", i+1)
				return
			}
		}
		writersDone <- nil
	}()
	select {
	case err := <-writersDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * buffer * eventTimeout):
		// Unblock the writer so the cleanup's Close can finish.
		go func() {
			for range slow {
			}
		}()
		t.Fatal("writers blocked by a slow watcher")
	}
	// The slow watcher kept what fit, then was closed.
	if n := expectClosed(t, slow); n != buffer {
		t.Errorf("slow watcher received %d events before close, want %d", n, buffer)
	}
	// The watcher that kept up saw everything, in order.
	if len(got) != 3*buffer || got[len(got)-1] != fmt.Sprint(3*buffer) {
		t.Errorf("fast watcher got %v, want rv 1..%d", got, 3*buffer)
	}
	// Close ends its stream.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range fastGot {
	}
}

func TestWatchEndsWithContextAndClose(t *testing.T) {
	s := openTest(t, Options{})
	ctx, cancel := context.WithCancel(t.Context())
	byCtx, err := s.Watch(ctx, v1alpha1.KindVMInstance, "", "")
	if err != nil {
		t.Fatal(err)
	}
	byClose, err := s.Watch(t.Context(), v1alpha1.KindVMDisk, "", "")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	expectClosed(t, byCtx)
	expectIdle(t, byClose)
	if _, err := s.Watch(ctx, v1alpha1.KindVMInstance, "", ""); !errors.Is(err, context.Canceled) {
		t.Errorf("Watch with a done context: error = %v, want context.Canceled", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, byClose)
	// A closed store refuses work with ErrUnavailable; Close is idempotent.
	if _, err := s.Watch(t.Context(), v1alpha1.KindVMDisk, "", ""); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("Watch after Close: error = %v, want ErrUnavailable", err)
	}
	if err := s.Create(t.Context(), newVM("ns", "late")); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("Create after Close: error = %v, want ErrUnavailable", err)
	}
	if _, err := s.Get(t.Context(), v1alpha1.KindVMInstance, "ns", "late"); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("Get after Close: error = %v, want ErrUnavailable", err)
	}
}

func TestReturnedObjectsAreCopies(t *testing.T) {
	s := openTest(t, Options{})
	ctx := t.Context()
	vm := newVM("ns", "vm")
	vm.ObjectMeta.Labels = map[string]string{"k": "v"}
	mustCreate(t, s, vm)
	ch1, err := s.Watch(ctx, v1alpha1.KindVMInstance, "", "0")
	if err != nil {
		t.Fatal(err)
	}
	ch2, err := s.Watch(ctx, v1alpha1.KindVMInstance, "", "0")
	if err != nil {
		t.Fatal(err)
	}
	// Mutating what the caller passed, got or received changes nothing else.
	vm.ObjectMeta.Labels["k"] = "caller"
	got := mustGetVM(t, s, "ns", "vm")
	got.ObjectMeta.Labels["k"] = "get"
	ev1 := recv(t, ch1)
	ev1.Object.GetObjectMeta().Labels["k"] = "watch"
	list, _, err := s.List(ctx, v1alpha1.KindVMInstance, "")
	if err != nil {
		t.Fatal(err)
	}
	list[0].GetObjectMeta().Labels["k"] = "list"
	if v := mustGetVM(t, s, "ns", "vm").ObjectMeta.Labels["k"]; v != "v" {
		t.Errorf("stored label = %q, want v", v)
	}
	if v := recv(t, ch2).Object.GetObjectMeta().Labels["k"]; v != "v" {
		t.Errorf("second watcher saw label %q, want v", v)
	}
}

func TestPersistence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", DefaultFileName)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	vm := newVM("ns", "vm")
	vm.ObjectMeta.Finalizers = []string{v1alpha1.CleanupFinalizer}
	mustCreate(t, s, vm)
	vm.Status.Phase = v1alpha1.PhaseRunning
	if err := s.UpdateStatus(ctx, vm); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, newDisk("ns", "d"))
	before := mustGetVM(t, s, "ns", "vm")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("file mode = %o, want 600", mode)
	}

	s, err = Open(path, Options{})
	if err != nil {
		t.Fatalf("reopening: %v", err)
	}
	defer func() { _ = s.Close() }()
	after := mustGetVM(t, s, "ns", "vm")
	for _, c := range []struct{ field, got, want string }{
		{"uid", after.ObjectMeta.UID, before.ObjectMeta.UID},
		{"resourceVersion", after.ObjectMeta.ResourceVersion, before.ObjectMeta.ResourceVersion},
		{"phase", after.Status.Phase, v1alpha1.PhaseRunning},
		{"finalizers", fmt.Sprint(after.ObjectMeta.Finalizers), fmt.Sprint(vm.ObjectMeta.Finalizers)},
		{"creationTimestamp", after.ObjectMeta.CreationTimestamp.String(), before.ObjectMeta.CreationTimestamp.String()},
	} {
		if c.got != c.want {
			t.Errorf("%s after reopen = %q, want %q", c.field, c.got, c.want)
		}
	}
	if _, rv, err := s.List(ctx, v1alpha1.KindVMDisk, ""); err != nil || rv != "3" {
		t.Errorf("List rv after reopen = %q, %v; want 3", rv, err)
	}
	d := newDisk("ns", "d2")
	mustCreate(t, s, d)
	if d.ObjectMeta.ResourceVersion != "4" {
		t.Errorf("first write after reopen got rv %s, want 4 (counter must survive)", d.ObjectMeta.ResourceVersion)
	}
}

// writeRaw builds a bbolt file by hand, as an older or newer vmd (or some
// other program) would have left it.
func writeRaw(t *testing.T, path string, buckets map[string]map[string]string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	err = db.Update(func(tx *bolt.Tx) error {
		for b, kv := range buckets {
			bk, err := tx.CreateBucketIfNotExists([]byte(b))
			if err != nil {
				return err
			}
			for k, v := range kv {
				if err := bk.Put([]byte(k), []byte(v)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func readRaw(t *testing.T, path, bucket, key string) string {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	var v string
	_ = db.View(func(tx *bolt.Tx) error {
		if bk := tx.Bucket([]byte(bucket)); bk != nil {
			v = string(bk.Get([]byte(key)))
		}
		return nil
	})
	return v
}

func TestSchemaVersion(t *testing.T) {
	// The v1 layout with one object, as version 1 writes it.
	v1 := map[string]map[string]string{
		"meta":       {"schemaVersion": "1", "resourceVersion": "7"},
		"VMInstance": {"ns/vm": `{"apiVersion":"apps.cozystack.io/v1alpha1","kind":"VMInstance","metadata":{"name":"vm","namespace":"ns","resourceVersion":"7","generation":1},"spec":{}}`},
	}
	addLabel := migration{from: 1, description: "label every VMInstance", apply: func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte("VMInstance"))
		return bk.ForEach(func(k, v []byte) error {
			return bk.Put(k, []byte(strings.Replace(string(v), `"generation":1`, `"generation":1,"labels":{"migrated":"yes"}`, 1)))
		})
	}}
	failing := migration{from: 1, description: "always fails", apply: func(tx *bolt.Tx) error {
		if err := tx.Bucket([]byte("meta")).Put([]byte("resourceVersion"), []byte("999")); err != nil {
			return err
		}
		return errors.New("disk on fire")
	}}
	tests := []struct {
		name        string
		file        map[string]map[string]string
		target      int
		migs        []migration
		wantErr     []string // substrings; nil = success
		wantVersion string   // schemaVersion on disk afterwards
		wantLabel   string
	}{
		{name: "current version opens", file: v1, target: 1, wantVersion: "1"},
		{name: "newer version is refused", file: map[string]map[string]string{"meta": {"schemaVersion": "2"}},
			target: 1, wantErr: []string{"schema version 2", "supports (1)"}, wantVersion: "2"},
		{name: "garbage version is refused", file: map[string]map[string]string{"meta": {"schemaVersion": "two"}},
			target: 1, wantErr: []string{`invalid value "two"`}, wantVersion: "two"},
		{name: "meta without version is refused", file: map[string]map[string]string{"meta": {}},
			target: 1, wantErr: []string{"no schemaVersion"}},
		{name: "foreign file is refused", file: map[string]map[string]string{"widgets": {"a": "b"}},
			target: 1, wantErr: []string{`bucket "widgets"`, "not a vmd state file"}},
		{name: "older version is migrated", file: v1, target: 2, migs: []migration{addLabel}, wantVersion: "2", wantLabel: "yes"},
		{name: "missing migration is refused", file: v1, target: 2, wantErr: []string{"no migration from version 1 to 2"}, wantVersion: "1"},
		{name: "failed migration leaves the file untouched", file: v1, target: 2, migs: []migration{failing},
			wantErr: []string{"always fails", "disk on fire"}, wantVersion: "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), DefaultFileName)
			writeRaw(t, path, tt.file)
			s, err := openWith(path, Options{}, tt.target, tt.migs)
			if tt.wantErr != nil {
				if err == nil {
					_ = s.Close()
					t.Fatal("open succeeded, want error")
				}
				for _, sub := range tt.wantErr {
					if !strings.Contains(err.Error(), sub) {
						t.Errorf("error %q does not mention %q", err, sub)
					}
				}
				if !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name the file", err)
				}
			} else {
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				vm := mustGetVM(t, s, "ns", "vm")
				if got := vm.ObjectMeta.Labels["migrated"]; got != tt.wantLabel {
					t.Errorf("label migrated = %q, want %q", got, tt.wantLabel)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if got := readRaw(t, path, "meta", "schemaVersion"); got != tt.wantVersion {
				t.Errorf("schemaVersion on disk = %q, want %q", got, tt.wantVersion)
			}
			if tt.file["meta"]["resourceVersion"] != "" {
				if got := readRaw(t, path, "meta", "resourceVersion"); got != tt.file["meta"]["resourceVersion"] {
					t.Errorf("resourceVersion counter on disk = %q, want %q", got, tt.file["meta"]["resourceVersion"])
				}
			}
		})
	}
}

func TestFreshFileLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), DefaultFileName)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, newVM("", "vm"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The layout docs/internals.md promises.
	for _, c := range []struct{ bucket, key, want string }{
		{"meta", "schemaVersion", strconv.Itoa(SchemaVersion)},
		{"meta", "resourceVersion", "1"},
	} {
		if got := readRaw(t, path, c.bucket, c.key); got != c.want {
			t.Errorf("%s/%s = %q, want %q", c.bucket, c.key, got, c.want)
		}
	}
	raw := readRaw(t, path, "VMInstance", "default/vm")
	for _, sub := range []string{`"kind":"VMInstance"`, `"resourceVersion":"1"`, `"spec":{`} {
		if !strings.Contains(raw, sub) {
			t.Errorf("stored value %s lacks %s", raw, sub)
		}
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), DefaultFileName)
	first, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = first.Close() }()
	second, err := Open(path, Options{LockTimeout: 50 * time.Millisecond})
	if err == nil {
		_ = second.Close()
		t.Fatal("second Open succeeded while the first holds the lock")
	}
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "locked") {
		t.Errorf("error = %v, want ErrUnavailable naming %s and the lock", err, path)
	}
	// Once the first lets go, the file opens again.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	third, err := Open(path, Options{LockTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open after release: %v", err)
	}
	_ = third.Close()
}

// TestConcurrentWriters hammers one store from many goroutines (run with
// -race) and checks that a watcher sees every write exactly once, in
// strictly increasing resourceVersion order.
func TestConcurrentWriters(t *testing.T) {
	const workers, rounds = 8, 10
	s := openTest(t, Options{WatchBuffer: 4 * workers * rounds})
	ctx := t.Context()
	shared := newDisk("ns", "shared")
	mustCreate(t, s, shared)
	ch, err := s.Watch(ctx, v1alpha1.KindVMInstance, "", shared.ObjectMeta.ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, workers)
	var statusWrites sync.Map
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				name := fmt.Sprintf("w%d-%d", w, r)
				vm := newVM("ns", name)
				if err := s.Create(ctx, vm); err != nil {
					errs <- err
					return
				}
				vm.Status.RestartCount = int32(r)
				vm.Status.Phase = v1alpha1.PhaseRunning
				if err := s.UpdateStatus(ctx, vm); err != nil {
					errs <- err
					return
				}
				// Everyone races on one disk's status with a precondition:
				// some win, the rest must see ErrConflict, nobody errs else.
				d, err := s.Get(ctx, v1alpha1.KindVMDisk, "ns", "shared")
				if err != nil {
					errs <- err
					return
				}
				d.(*v1alpha1.VMDisk).Status.Progress = name
				switch err := s.UpdateStatus(ctx, d); {
				case errors.Is(err, errdefs.ErrConflict):
				case err != nil:
					errs <- err
					return
				default:
					statusWrites.Store(name, true)
				}
				if _, _, err := s.List(ctx, v1alpha1.KindVMInstance, "ns"); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	objs, _, err := s.List(ctx, v1alpha1.KindVMInstance, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != workers*rounds {
		t.Fatalf("listed %d instances, want %d", len(objs), workers*rounds)
	}
	// Two events (ADDED, MODIFIED) per instance, in order.
	var last uint64
	seen := map[string]int{}
	for range 2 * workers * rounds {
		ev := recv(t, ch)
		rv, err := strconv.ParseUint(ev.ResourceVersion, 10, 64)
		if err != nil || rv <= last {
			t.Fatalf("event rv %q after %d: not strictly increasing", ev.ResourceVersion, last)
		}
		last = rv
		seen[keyOf(ev.Object)]++
	}
	expectIdle(t, ch)
	for k, n := range seen {
		if n != 2 {
			t.Errorf("%s: %d events, want 2", k, n)
		}
	}
	wins := 0
	statusWrites.Range(func(any, any) bool { wins++; return true })
	if wins == 0 {
		t.Error("no conditional status write succeeded")
	}
}

func BenchmarkCreate(b *testing.B) {
	s := openTest(b, Options{})
	ctx := b.Context()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := s.Create(ctx, newVM("bench", fmt.Sprint("vm", i))); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkGet(b *testing.B) {
	s := openTest(b, Options{})
	ctx := b.Context()
	for i := range 100 {
		mustCreate(b, s, newVM("bench", fmt.Sprint("vm", i)))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.Get(ctx, v1alpha1.KindVMInstance, "bench", fmt.Sprint("vm", i%100)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// TestListThenWatchIsConsistent checks the informer pattern under
// concurrent writes: a Watch from a List's resourceVersion always starts
// (never ErrGone for a version the store just handed out) and delivers only
// later writes, the first of them being exactly the next version.
func TestListThenWatchIsConsistent(t *testing.T) {
	s := openTest(t, Options{})
	ctx := t.Context()
	// A few objects whose status keeps changing: many writes, short lists.
	vms := make([]*v1alpha1.VMInstance, 5)
	for i := range vms {
		vms[i] = newVM("ns", fmt.Sprint("vm", i))
		mustCreate(t, s, vms[i])
	}
	stop := make(chan struct{})
	writerDone := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				writerDone <- nil
				return
			default:
			}
			vm := vms[i%len(vms)]
			vm.Status.RestartCount = int32(i)
			if err := s.UpdateStatus(ctx, vm); err != nil {
				writerDone <- err
				return
			}
		}
	}()
	for i := range 200 {
		_, listRV, err := s.List(ctx, v1alpha1.KindVMInstance, "")
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithCancel(ctx)
		ch, err := s.Watch(wctx, v1alpha1.KindVMInstance, "", listRV)
		if err != nil {
			cancel()
			t.Fatalf("iteration %d: Watch(%s) right after List: %v", i, listRV, err)
		}
		if i%20 == 0 {
			// Now and then wait for the next write and check it follows on.
			rv, _ := strconv.ParseUint(listRV, 10, 64)
			if ev := recv(t, ch); ev.ResourceVersion != strconv.FormatUint(rv+1, 10) {
				t.Errorf("first event after list rv %s has rv %s", listRV, ev.ResourceVersion)
			}
		}
		cancel()
	}
	close(stop)
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
}
