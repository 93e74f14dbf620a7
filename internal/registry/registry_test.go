package registry_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/catalog"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/registry"
	"github.com/vmdhq/vmd/internal/state"
	"github.com/vmdhq/vmd/internal/state/statetest"
)

func ptr[T any](v T) *T { return &v }

func newRegistry(t *testing.T) (*registry.Registry, state.Store) {
	t.Helper()
	st := statetest.Open(t, state.Options{})
	return registry.New(st, catalog.Default(), registry.Options{}), st
}

func disk(name string, mut ...func(*v1alpha1.VMDisk)) *v1alpha1.VMDisk {
	d := &v1alpha1.VMDisk{
		TypeMeta:   v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindVMDisk},
		ObjectMeta: v1alpha1.ObjectMeta{Name: name},
	}
	for _, m := range mut {
		m(d)
	}
	return d
}

func instance(name string, mut ...func(*v1alpha1.VMInstance)) *v1alpha1.VMInstance {
	v := &v1alpha1.VMInstance{
		TypeMeta:   v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindVMInstance},
		ObjectMeta: v1alpha1.ObjectMeta{Name: name},
	}
	for _, m := range mut {
		m(v)
	}
	return v
}

// fields returns the field paths of an *errdefs.InvalidError, failing the
// test for any other error.
func fields(t *testing.T, err error) []string {
	t.Helper()
	var inv *errdefs.InvalidError
	if !errors.As(err, &inv) {
		t.Fatalf("error = %v (%T), want *errdefs.InvalidError", err, err)
	}
	var out []string
	for _, fe := range inv.Errors {
		out = append(out, fe.Field)
	}
	return out
}

func TestCreate(t *testing.T) {
	tests := []struct {
		name  string
		obj   v1alpha1.Object
		check func(t *testing.T, got v1alpha1.Object)
	}{
		{
			name: "disk gets defaults, finalizer and server metadata",
			obj:  disk("data"),
			check: func(t *testing.T, got v1alpha1.Object) {
				d := got.(*v1alpha1.VMDisk)
				if d.Spec.Storage != "5Gi" || d.Spec.StorageClass != "replicated" {
					t.Errorf("spec = %+v, want storage 5Gi class replicated", d.Spec)
				}
				m := d.ObjectMeta
				if m.Namespace != "default" || m.Generation != 1 || m.UID == "" || m.ResourceVersion == "" || m.CreationTimestamp == nil {
					t.Errorf("metadata = %+v, want defaulted namespace and server fields", m)
				}
				if !slices.Equal(m.Finalizers, []string{registry.Finalizer}) {
					t.Errorf("finalizers = %v, want [%s]", m.Finalizers, registry.Finalizer)
				}
			},
		},
		{
			name: "client server-owned metadata and status are ignored",
			obj: disk("forged", func(d *v1alpha1.VMDisk) {
				d.ObjectMeta.UID = "forged-uid"
				d.ObjectMeta.Generation = 42
				d.ObjectMeta.ResourceVersion = "999"
				d.ObjectMeta.DeletionTimestamp = v1alpha1.Now()
				d.ObjectMeta.Finalizers = []string{"example.com/other"}
				d.Status.Phase = v1alpha1.DiskPhaseReady
			}),
			check: func(t *testing.T, got v1alpha1.Object) {
				d := got.(*v1alpha1.VMDisk)
				m := d.ObjectMeta
				if m.UID == "forged-uid" || m.Generation != 1 || m.ResourceVersion == "999" || m.DeletionTimestamp != nil {
					t.Errorf("metadata = %+v, want server-assigned values", m)
				}
				if !slices.Equal(m.Finalizers, []string{registry.Finalizer}) {
					t.Errorf("finalizers = %v, want only %s", m.Finalizers, registry.Finalizer)
				}
				if d.Status.Phase != "" {
					t.Errorf("status.phase = %q, want client status dropped", d.Status.Phase)
				}
			},
		},
		{
			name: "instance gets chart defaults in its namespace",
			obj:  instance("web", func(v *v1alpha1.VMInstance) { v.ObjectMeta.Namespace = "tenant-a" }),
			check: func(t *testing.T, got v1alpha1.Object) {
				v := got.(*v1alpha1.VMInstance)
				if v.Spec.InstanceType == nil || *v.Spec.InstanceType != "u1.medium" || v.Spec.RunStrategy != v1alpha1.RunStrategyAlways {
					t.Errorf("spec = %+v, want u1.medium / Always", v.Spec)
				}
				if v.ObjectMeta.Namespace != "tenant-a" {
					t.Errorf("namespace = %q, want tenant-a", v.ObjectMeta.Namespace)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, st := newRegistry(t)
			ctx := t.Context()
			got, err := r.Create(ctx, tt.obj, registry.WriteOptions{})
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			tt.check(t, got)
			m := got.GetObjectMeta()
			stored, err := st.Get(ctx, got.GetTypeMeta().Kind, m.Namespace, m.Name)
			if err != nil {
				t.Fatalf("reading back: %v", err)
			}
			tt.check(t, stored)
		})
	}
}

func TestCreateRejects(t *testing.T) {
	tests := []struct {
		name   string
		obj    v1alpha1.Object
		fields []string
	}{
		{
			name: "unknown instance type and bad name",
			obj: instance("Bad_Name", func(v *v1alpha1.VMInstance) {
				v.Spec.InstanceType = ptr("u1.huge")
			}),
			fields: []string{"metadata.name", "spec.instanceType"},
		},
		{
			name: "two disk sources",
			obj: disk("two", func(d *v1alpha1.VMDisk) {
				d.Spec.Source.Image = &v1alpha1.ImageSource{Name: "ubuntu"}
				d.Spec.Source.HTTP = &v1alpha1.HTTPSource{URL: "https://example.com/x.img"}
			}),
			fields: []string{"spec.source"},
		},
		{
			name:   "wrong apiVersion",
			obj:    disk("d", func(d *v1alpha1.VMDisk) { d.APIVersion = "v1" }),
			fields: []string{"apiVersion"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, st := newRegistry(t)
			_, err := r.Create(t.Context(), tt.obj, registry.WriteOptions{})
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("Create error = %v, want ErrInvalid", err)
			}
			got := fields(t, err)
			for _, want := range tt.fields {
				if !slices.ContainsFunc(got, func(f string) bool { return strings.HasPrefix(f, want) }) {
					t.Errorf("field errors %v lack %s", got, want)
				}
			}
			objs, _, err := st.List(t.Context(), tt.obj.GetTypeMeta().Kind, "")
			if err != nil || len(objs) != 0 {
				t.Errorf("store holds %d objects (err %v) after a rejected create", len(objs), err)
			}
		})
	}
}

func TestCreateAlreadyExists(t *testing.T) {
	for _, dry := range []bool{false, true} {
		t.Run(map[bool]string{false: "real", true: "dry run"}[dry], func(t *testing.T) {
			r, _ := newRegistry(t)
			if _, err := r.Create(t.Context(), disk("d"), registry.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			_, err := r.Create(t.Context(), disk("d"), registry.WriteOptions{DryRun: dry})
			if !errors.Is(err, errdefs.ErrAlreadyExists) {
				t.Fatalf("second Create error = %v, want ErrAlreadyExists", err)
			}
		})
	}
}

func TestApplyResults(t *testing.T) {
	r, st := newRegistry(t)
	ctx := t.Context()
	steps := []struct {
		name    string
		obj     *v1alpha1.VMDisk
		want    registry.ApplyResult
		wantGen int64
		wantErr error
	}{
		{name: "first apply creates", obj: disk("d"), want: registry.ApplyCreated, wantGen: 1},
		{name: "same manifest is unchanged", obj: disk("d"), want: registry.ApplyUnchanged, wantGen: 1},
		{
			name: "explicit defaults are unchanged",
			obj: disk("d", func(d *v1alpha1.VMDisk) {
				d.Spec.Storage, d.Spec.StorageClass, d.Spec.Optical = "5Gi", "replicated", ptr(false)
			}),
			want: registry.ApplyUnchanged, wantGen: 1,
		},
		{
			name: "label change configures without a new generation",
			obj:  disk("d", func(d *v1alpha1.VMDisk) { d.ObjectMeta.Labels = map[string]string{"app": "web"} }),
			want: registry.ApplyConfigured, wantGen: 1,
		},
		{
			name: "spec change configures and bumps generation",
			obj: disk("d", func(d *v1alpha1.VMDisk) {
				d.ObjectMeta.Labels = map[string]string{"app": "web"}
				d.Spec.Storage = "10Gi"
			}),
			want: registry.ApplyConfigured, wantGen: 2,
		},
		{
			name: "storageClass is immutable",
			obj: disk("d", func(d *v1alpha1.VMDisk) {
				d.ObjectMeta.Labels = map[string]string{"app": "web"}
				d.Spec.Storage, d.Spec.StorageClass = "10Gi", "local"
			}),
			wantErr: errdefs.ErrInvalid, wantGen: 2,
		},
		{
			name: "storage never shrinks",
			obj: disk("d", func(d *v1alpha1.VMDisk) {
				d.ObjectMeta.Labels = map[string]string{"app": "web"}
				d.Spec.Storage = "1Gi"
			}),
			wantErr: errdefs.ErrInvalid, wantGen: 2,
		},
		{
			name: "dropping the label configures (apply is a full replace)",
			obj:  disk("d", func(d *v1alpha1.VMDisk) { d.Spec.Storage = "10Gi" }),
			want: registry.ApplyConfigured, wantGen: 2,
		},
	}
	for _, s := range steps {
		before, _ := st.Get(ctx, v1alpha1.KindVMDisk, "default", "d")
		got, res, err := r.Apply(ctx, s.obj, registry.WriteOptions{})
		after, gerr := st.Get(ctx, v1alpha1.KindVMDisk, "default", "d")
		if gerr != nil {
			t.Fatalf("%s: reading back: %v", s.name, gerr)
		}
		if s.wantErr != nil {
			if !errors.Is(err, s.wantErr) {
				t.Fatalf("%s: error = %v, want %v", s.name, err, s.wantErr)
			}
			if after.GetObjectMeta().ResourceVersion != before.GetObjectMeta().ResourceVersion {
				t.Errorf("%s: a rejected apply wrote to the store", s.name)
			}
		} else {
			if err != nil {
				t.Fatalf("%s: Apply: %v", s.name, err)
			}
			if res != s.want {
				t.Errorf("%s: result = %s, want %s", s.name, res, s.want)
			}
			if got.GetObjectMeta().ResourceVersion != after.GetObjectMeta().ResourceVersion {
				t.Errorf("%s: returned rv %s, stored %s", s.name, got.GetObjectMeta().ResourceVersion, after.GetObjectMeta().ResourceVersion)
			}
			if res == registry.ApplyUnchanged && after.GetObjectMeta().ResourceVersion != before.GetObjectMeta().ResourceVersion {
				t.Errorf("%s: unchanged apply moved rv %s -> %s", s.name, before.GetObjectMeta().ResourceVersion, after.GetObjectMeta().ResourceVersion)
			}
		}
		if g := after.GetObjectMeta().Generation; g != s.wantGen {
			t.Errorf("%s: generation = %d, want %d", s.name, g, s.wantGen)
		}
		if f := after.GetObjectMeta().Finalizers; !slices.Equal(f, []string{registry.Finalizer}) {
			t.Errorf("%s: finalizers = %v, want kept", s.name, f)
		}
	}
}

func TestApplyImmutableFieldPath(t *testing.T) {
	r, _ := newRegistry(t)
	if _, _, err := r.Apply(t.Context(), disk("d"), registry.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	_, _, err := r.Apply(t.Context(), disk("d", func(d *v1alpha1.VMDisk) { d.Spec.StorageClass = "local" }), registry.WriteOptions{})
	if got := fields(t, err); !slices.Contains(got, "spec.storageClass") {
		t.Errorf("field errors %v, want spec.storageClass", got)
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	tests := []struct {
		name  string
		setup bool // create "d" first
		run   func(ctx context.Context, r *registry.Registry) (v1alpha1.Object, error)
		check func(t *testing.T, got v1alpha1.Object)
	}{
		{
			name: "create",
			run: func(ctx context.Context, r *registry.Registry) (v1alpha1.Object, error) {
				return r.Create(ctx, disk("d"), registry.WriteOptions{DryRun: true})
			},
			check: func(t *testing.T, got v1alpha1.Object) {
				d := got.(*v1alpha1.VMDisk)
				if d.Spec.Storage != "5Gi" || d.ObjectMeta.Generation != 1 || d.ObjectMeta.ResourceVersion != "" {
					t.Errorf("dry-run create returned %+v / %+v", d.Spec, d.ObjectMeta)
				}
			},
		},
		{
			name:  "update",
			setup: true,
			run: func(ctx context.Context, r *registry.Registry) (v1alpha1.Object, error) {
				return r.Update(ctx, disk("d", func(d *v1alpha1.VMDisk) { d.Spec.Storage = "8Gi" }), registry.WriteOptions{DryRun: true})
			},
			check: func(t *testing.T, got v1alpha1.Object) {
				d := got.(*v1alpha1.VMDisk)
				if d.Spec.Storage != "8Gi" || d.ObjectMeta.Generation != 2 {
					t.Errorf("dry-run update returned storage %s generation %d, want 8Gi / 2", d.Spec.Storage, d.ObjectMeta.Generation)
				}
			},
		},
		{
			name:  "apply",
			setup: true,
			run: func(ctx context.Context, r *registry.Registry) (v1alpha1.Object, error) {
				o, res, err := r.Apply(ctx, disk("d", func(d *v1alpha1.VMDisk) { d.Spec.Storage = "8Gi" }), registry.WriteOptions{DryRun: true})
				if err == nil && res != registry.ApplyConfigured {
					err = errors.New("result " + string(res) + ", want configured")
				}
				return o, err
			},
			check: func(t *testing.T, got v1alpha1.Object) {
				if s := got.(*v1alpha1.VMDisk).Spec.Storage; s != "8Gi" {
					t.Errorf("dry-run apply returned storage %s, want 8Gi", s)
				}
			},
		},
		{
			name:  "delete",
			setup: true,
			run: func(ctx context.Context, r *registry.Registry) (v1alpha1.Object, error) {
				return r.Delete(ctx, v1alpha1.KindVMDisk, "default", "d", registry.DeleteOptions{DryRun: true})
			},
			check: func(t *testing.T, got v1alpha1.Object) {
				if got.GetObjectMeta().DeletionTimestamp == nil {
					t.Error("dry-run delete did not show the deletionTimestamp it would set")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, st := newRegistry(t)
			ctx := t.Context()
			if tt.setup {
				if _, err := r.Create(ctx, disk("d"), registry.WriteOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			_, rvBefore, _ := st.List(ctx, v1alpha1.KindVMDisk, "")
			got, err := tt.run(ctx, r)
			if err != nil {
				t.Fatalf("dry run: %v", err)
			}
			tt.check(t, got)
			objs, rvAfter, err := st.List(ctx, v1alpha1.KindVMDisk, "")
			if err != nil {
				t.Fatal(err)
			}
			if rvAfter != rvBefore {
				t.Errorf("store resourceVersion moved %s -> %s during a dry run", rvBefore, rvAfter)
			}
			if !tt.setup && len(objs) != 0 {
				t.Errorf("dry-run create stored %d objects", len(objs))
			}
		})
	}
}

func TestUpdate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(cur *v1alpha1.VMDisk) // applied to a fresh read of the stored object
		wantErr error
		wantGen int64
	}{
		{name: "current rv succeeds", mutate: func(d *v1alpha1.VMDisk) { d.Spec.Storage = "6Gi" }, wantGen: 2},
		{name: "empty rv is unconditional", mutate: func(d *v1alpha1.VMDisk) { d.ObjectMeta.ResourceVersion = ""; d.Spec.Storage = "6Gi" }, wantGen: 2},
		{name: "stale rv conflicts", mutate: func(d *v1alpha1.VMDisk) { d.ObjectMeta.ResourceVersion = "1"; d.Spec.Storage = "6Gi" }, wantErr: errdefs.ErrConflict, wantGen: 1},
		{name: "annotation change keeps generation", mutate: func(d *v1alpha1.VMDisk) { d.ObjectMeta.Annotations = map[string]string{"a": "b"} }, wantGen: 1},
		{
			name: "server-owned metadata and status are preserved",
			mutate: func(d *v1alpha1.VMDisk) {
				d.ObjectMeta.Finalizers = nil
				d.ObjectMeta.UID = ""
				d.ObjectMeta.Generation = 7
				d.Status.Phase = "Forged"
			},
			wantGen: 1,
		},
		{name: "missing object", mutate: func(d *v1alpha1.VMDisk) { d.ObjectMeta.Name = "other" }, wantErr: errdefs.ErrNotFound, wantGen: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, st := newRegistry(t)
			ctx := t.Context()
			// Make the stored rv > 1 and give the object a status, as the
			// controller would.
			if _, err := r.Create(ctx, disk("pad"), registry.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			created, err := r.Create(ctx, disk("d"), registry.WriteOptions{})
			if err != nil {
				t.Fatal(err)
			}
			created.(*v1alpha1.VMDisk).Status.Phase = v1alpha1.DiskPhasePending
			withStatus, err := r.UpdateStatus(ctx, created)
			if err != nil {
				t.Fatalf("UpdateStatus: %v", err)
			}
			in := withStatus.DeepCopyObject().(*v1alpha1.VMDisk)
			tt.mutate(in)
			_, err = r.Update(ctx, in, registry.WriteOptions{})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Update error = %v, want %v", err, tt.wantErr)
			}
			got, err := st.Get(ctx, v1alpha1.KindVMDisk, "default", "d")
			if err != nil {
				t.Fatal(err)
			}
			d := got.(*v1alpha1.VMDisk)
			if d.ObjectMeta.Generation != tt.wantGen {
				t.Errorf("generation = %d, want %d", d.ObjectMeta.Generation, tt.wantGen)
			}
			if d.Status.Phase != v1alpha1.DiskPhasePending {
				t.Errorf("status.phase = %q, want the controller's %q kept", d.Status.Phase, v1alpha1.DiskPhasePending)
			}
			if d.ObjectMeta.UID != created.GetObjectMeta().UID || !slices.Equal(d.ObjectMeta.Finalizers, []string{registry.Finalizer}) {
				t.Errorf("server-owned metadata changed: %+v", d.ObjectMeta)
			}
		})
	}
}

func TestDeleteWithFinalizer(t *testing.T) {
	r, st := newRegistry(t)
	ctx := t.Context()
	created, err := r.Create(ctx, disk("d"), registry.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Delete(ctx, v1alpha1.KindVMDisk, "default", "d", registry.DeleteOptions{PreconditionRV: "0"}); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Delete with stale precondition: %v, want ErrConflict", err)
	}
	deleted, err := r.Delete(ctx, v1alpha1.KindVMDisk, "default", "d", registry.DeleteOptions{PreconditionRV: created.GetObjectMeta().ResourceVersion})
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if deleted.GetObjectMeta().DeletionTimestamp == nil {
		t.Fatal("Delete returned no deletionTimestamp; the finalizer should hold the object")
	}
	if _, err := r.Get(ctx, v1alpha1.KindVMDisk, "default", "d"); err != nil {
		t.Fatalf("object gone before its finalizer was removed: %v", err)
	}
	// Writes from clients are refused while the object is being deleted.
	if _, _, err := r.Apply(ctx, disk("d", func(d *v1alpha1.VMDisk) { d.Spec.Storage = "9Gi" }), registry.WriteOptions{}); !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), "being deleted") {
		t.Errorf("Apply on a deleting object: %v, want conflict 'being deleted'", err)
	}
	if _, err := r.Update(ctx, disk("d"), registry.WriteOptions{}); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Update on a deleting object: %v, want ErrConflict", err)
	}
	// The controller releases host resources, then drops the finalizer.
	cur, err := st.Get(ctx, v1alpha1.KindVMDisk, "default", "d")
	if err != nil {
		t.Fatal(err)
	}
	cur.GetObjectMeta().Finalizers = nil
	if err := st.Update(ctx, cur); err != nil {
		t.Fatalf("removing finalizer: %v", err)
	}
	if _, err := r.Get(ctx, v1alpha1.KindVMDisk, "default", "d"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Get after finalizer removal: %v, want ErrNotFound", err)
	}
}

// racingStore makes the first Update lose a race: just before it, another
// writer (the controller) updates the status, moving the resourceVersion.
type racingStore struct {
	state.Store
	raced atomic.Int32
}

func (s *racingStore) Update(ctx context.Context, obj v1alpha1.Object) error {
	if s.raced.Add(1) == 1 {
		m := obj.GetObjectMeta()
		cur, err := s.Get(ctx, obj.GetTypeMeta().Kind, m.Namespace, m.Name)
		if err != nil {
			return err
		}
		cur.(*v1alpha1.VMDisk).Status.Phase = v1alpha1.DiskPhaseImporting
		if err := s.UpdateStatus(ctx, cur); err != nil {
			return err
		}
	}
	return s.Store.Update(ctx, obj)
}

func TestApplyRetriesOnConflict(t *testing.T) {
	tests := []struct {
		name    string
		rv      func(created v1alpha1.Object) string
		want    registry.ApplyResult
		wantErr error
	}{
		{name: "no rv: retried with the fresh one", rv: func(v1alpha1.Object) string { return "" }, want: registry.ApplyConfigured},
		{name: "client rv is a precondition, not retried", rv: func(c v1alpha1.Object) string { return c.GetObjectMeta().ResourceVersion }, wantErr: errdefs.ErrConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &racingStore{Store: statetest.Open(t, state.Options{})}
			r := registry.New(st, catalog.Default(), registry.Options{})
			ctx := t.Context()
			created, err := r.Create(ctx, disk("d"), registry.WriteOptions{})
			if err != nil {
				t.Fatal(err)
			}
			in := disk("d", func(d *v1alpha1.VMDisk) {
				d.Spec.Storage = "7Gi"
				d.ObjectMeta.ResourceVersion = tt.rv(created)
			})
			got, res, err := r.Apply(ctx, in, registry.WriteOptions{})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Apply error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if res != tt.want {
				t.Errorf("result = %s, want %s", res, tt.want)
			}
			d := got.(*v1alpha1.VMDisk)
			if d.Spec.Storage != "7Gi" || d.Status.Phase != v1alpha1.DiskPhaseImporting {
				t.Errorf("got storage %s phase %q, want 7Gi and the racing status kept", d.Spec.Storage, d.Status.Phase)
			}
			if n := st.raced.Load(); n != 2 {
				t.Errorf("store Update called %d times, want 2 (one conflict, one retry)", n)
			}
		})
	}
}

func TestWatch(t *testing.T) {
	r, _ := newRegistry(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	before, err := r.Create(ctx, disk("before"), registry.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fromNow, err := r.Watch(ctx, v1alpha1.KindVMDisk, "", "")
	if err != nil {
		t.Fatal(err)
	}
	// From "before"'s rv: replays nothing older, includes what follows.
	fromRV, err := r.Watch(ctx, v1alpha1.KindVMDisk, "default", before.GetObjectMeta().ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Create(ctx, disk("b"), registry.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Delete(ctx, v1alpha1.KindVMDisk, "default", "b", registry.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		typ  v1alpha1.WatchEventType
		name string
	}{{v1alpha1.Added, "b"}, {v1alpha1.Modified, "b"}}
	for _, ch := range []<-chan state.Event{fromNow, fromRV} {
		for i, w := range want {
			select {
			case ev, ok := <-ch:
				if !ok {
					t.Fatalf("event %d: channel closed", i)
				}
				if ev.Type != w.typ || ev.Object.GetObjectMeta().Name != w.name {
					t.Errorf("event %d = %s %q, want %s %q", i, ev.Type, ev.Object.GetObjectMeta().Name, w.typ, w.name)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("event %d: timed out", i)
			}
		}
	}
	// Ending the context must close the channels.
	cancel()
	for _, ch := range []<-chan state.Event{fromNow, fromRV} {
		deadline := time.After(5 * time.Second)
	drain:
		for {
			select {
			case _, ok := <-ch:
				if !ok {
					break drain
				}
			case <-deadline:
				t.Fatal("watch channel still open after its context ended")
			}
		}
	}
	if _, err := r.Watch(t.Context(), "Pod", "", ""); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Watch(Pod) error = %v, want ErrInvalid", err)
	}
}

func TestUnknownKind(t *testing.T) {
	r, _ := newRegistry(t)
	if _, err := r.Get(t.Context(), "Pod", "default", "x"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Get(Pod) error = %v, want ErrInvalid", err)
	}
	if _, _, err := r.List(t.Context(), "Pod", ""); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("List(Pod) error = %v, want ErrInvalid", err)
	}
}
