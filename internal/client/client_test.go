package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client"
	"github.com/vmdhq/vmd/internal/client/clienttest"
	"github.com/vmdhq/vmd/internal/errdefs"
)

func ptr[T any](v T) *T { return &v }

func newVM(ns, name string) *v1alpha1.VMInstance {
	return &v1alpha1.VMInstance{
		TypeMeta:   v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindVMInstance},
		ObjectMeta: v1alpha1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       v1alpha1.VMInstanceSpec{InstanceType: ptr("u1.medium"), Disks: []v1alpha1.DiskRef{{Name: name}}},
	}
}

// rawServer serves h on a unix socket, for responses the fake would never
// produce (non-Status bodies, missing headers).
func rawServer(t *testing.T, h http.HandlerFunc) *client.Client {
	t.Helper()
	c, err := client.New(client.Options{Socket: rawSocket(t, h), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// rawSocket serves h on a unix socket and returns its path.
func rawSocket(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "raw.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	_ = srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return sock
}

func TestStatusErrors(t *testing.T) {
	cases := []struct {
		name     string
		status   *v1alpha1.Status
		sentinel error
		reason   string
		want     string
	}{
		{
			name:     "not found",
			status:   clienttest.Status(404, "NotFound", `vminstances "web" not found`),
			sentinel: errdefs.ErrNotFound, reason: "NotFound",
			want: `vminstances "web" not found`,
		},
		{
			name:     "already exists is 409 with its own reason",
			status:   clienttest.Status(409, "AlreadyExists", `vminstances "web" already exists`),
			sentinel: errdefs.ErrAlreadyExists, reason: "AlreadyExists",
			want: `vminstances "web" already exists`,
		},
		{
			name:     "conflict",
			status:   clienttest.Status(409, "Conflict", "the object has been modified"),
			sentinel: errdefs.ErrConflict, reason: "Conflict",
			want: "the object has been modified",
		},
		{
			name:     "bare 409 is a conflict",
			status:   &v1alpha1.Status{Code: 409, Message: "stale resourceVersion"},
			sentinel: errdefs.ErrConflict, reason: "Conflict",
			want: "stale resourceVersion",
		},
		{
			name: "invalid lists every cause on its own line",
			status: clienttest.Invalid(v1alpha1.KindVMInstance, "web",
				v1alpha1.StatusCause{Field: "spec.instanceType", Type: "FieldValueNotSupported", Message: `Unsupported value: "u1.huge"`},
				v1alpha1.StatusCause{Field: "spec.externalPorts[0]", Type: "FieldValueInvalid", Message: "Invalid value: 0: must be between 1 and 65535"}),
			sentinel: errdefs.ErrInvalid, reason: "Invalid",
			want: "VMInstance \"web\" is invalid:\n" +
				"  * spec.instanceType: Unsupported value: \"u1.huge\"\n" +
				"  * spec.externalPorts[0]: Invalid value: 0: must be between 1 and 65535",
		},
		{
			name: "causes already folded into the message are not repeated",
			status: &v1alpha1.Status{Code: 422, Reason: "Invalid",
				Message: `VMDisk "d" is invalid: spec.storage: Invalid value: "1x": not a quantity`,
				Details: &v1alpha1.StatusDetails{Causes: []v1alpha1.StatusCause{{Field: "spec.storage", Message: `spec.storage: Invalid value: "1x": not a quantity`}}}},
			sentinel: errdefs.ErrInvalid, reason: "Invalid",
			want: "VMDisk \"d\" is invalid:\n  * spec.storage: Invalid value: \"1x\": not a quantity",
		},
		{
			name:     "gone",
			status:   clienttest.Status(410, "Expired", "too old resource version: 3"),
			sentinel: errdefs.ErrGone, reason: "Expired",
			want: "too old resource version: 3",
		},
		{
			name:     "unavailable",
			status:   clienttest.Status(503, "ServiceUnavailable", "store is closing"),
			sentinel: errdefs.ErrUnavailable, reason: "ServiceUnavailable",
			want: "store is closing",
		},
		{
			name:     "no message falls back to the HTTP status text",
			status:   &v1alpha1.Status{Code: 501},
			sentinel: errdefs.ErrNotImplemented, reason: "NotImplemented",
			want: "Not Implemented",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := clienttest.NewServer(t)
			srv.Intercept = func(*http.Request) *v1alpha1.Status { return tc.status }
			_, err := srv.Client(t).Get(t.Context(), v1alpha1.KindVMInstance, "default", "web")
			if !errors.Is(err, tc.sentinel) {
				t.Fatalf("errors.Is(%v, %v) = false", err, tc.sentinel)
			}
			var se *client.StatusError
			if !errors.As(err, &se) {
				t.Fatalf("error %T is not a *StatusError", err)
			}
			if se.Code() != tc.status.Code {
				t.Errorf("Code() = %d, want %d", se.Code(), tc.status.Code)
			}
			if got := client.ReasonOf(err); got != tc.reason {
				t.Errorf("ReasonOf = %q, want %q", got, tc.reason)
			}
			if err.Error() != tc.want {
				t.Errorf("Error() =\n%s\nwant\n%s", err.Error(), tc.want)
			}
		})
	}
}

func TestNonStatusErrorBodies(t *testing.T) {
	cases := []struct {
		name     string
		code     int
		body     string
		sentinel error
		want     string
	}{
		{name: "echo style json", code: 404, body: `{"message":"Not Found"}`, sentinel: errdefs.ErrNotFound, want: "Not Found"},
		{name: "plain text", code: 503, body: "draining\n", sentinel: errdefs.ErrUnavailable, want: "draining"},
		{name: "html page", code: 500, body: "<html><body>oops</body></html>", sentinel: nil, want: "Internal Server Error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := rawServer(t, func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(tc.code)
				_, _ = io.WriteString(w, tc.body)
			})
			_, err := c.List(t.Context(), v1alpha1.KindVMDisk, "default")
			if err == nil {
				t.Fatal("List succeeded, want error")
			}
			if tc.sentinel != nil && !errors.Is(err, tc.sentinel) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.sentinel)
			}
			if err.Error() != tc.want {
				t.Errorf("Error() = %q, want %q", err.Error(), tc.want)
			}
		})
	}
}

func TestCRUD(t *testing.T) {
	srv := clienttest.NewServer(t)
	c := srv.Client(t)
	ctx := t.Context()

	created, err := c.Create(ctx, newVM("team-a", "web"))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if created.GetObjectMeta().UID == "" || created.GetObjectMeta().ResourceVersion == "" {
		t.Errorf("created object lacks uid/resourceVersion: %+v", created.GetObjectMeta())
	}
	if _, err := c.Create(ctx, newVM("team-a", "web")); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("second Create: got %v, want ErrAlreadyExists", err)
	}
	if _, err := c.Create(ctx, newVM("", "api")); err != nil {
		t.Fatalf("Create in default namespace: %v", err)
	}
	if srv.Object(v1alpha1.KindVMInstance, "default", "api") == nil {
		t.Error("object without namespace was not created in \"default\"")
	}

	vm, err := c.GetVMInstance(ctx, "team-a", "web")
	if err != nil {
		t.Fatalf("GetVMInstance: %v", err)
	}
	if got := *vm.Spec.InstanceType; got != "u1.medium" {
		t.Errorf("instanceType = %q", got)
	}

	stale := vm.DeepCopyObject().(*v1alpha1.VMInstance)
	vm.Spec.InstanceType = ptr("u1.large")
	updated, err := c.Update(ctx, vm)
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if g := updated.GetObjectMeta().Generation; g != 2 {
		t.Errorf("generation after spec change = %d, want 2", g)
	}
	stale.Spec.InstanceType = ptr("u1.xlarge")
	if _, err := c.Update(ctx, stale); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("stale Update: got %v, want ErrConflict", err)
	}

	all, err := c.List(ctx, v1alpha1.KindVMInstance, "")
	if err != nil {
		t.Fatalf("List all: %v", err)
	}
	var names []string
	for _, o := range all.Items {
		names = append(names, o.GetObjectMeta().Namespace+"/"+o.GetObjectMeta().Name)
	}
	if got := strings.Join(names, ","); got != "default/api,team-a/web" {
		t.Errorf("List all = %s", got)
	}
	if all.ResourceVersion != srv.ResourceVersion() {
		t.Errorf("list resourceVersion = %q, want %q", all.ResourceVersion, srv.ResourceVersion())
	}

	if _, err := c.Delete(ctx, v1alpha1.KindVMInstance, "team-a", "web", client.DryRun()); err != nil {
		t.Fatalf("dry-run Delete: %v", err)
	}
	if srv.Object(v1alpha1.KindVMInstance, "team-a", "web") == nil {
		t.Fatal("dry-run Delete removed the object")
	}
	if _, err := c.Delete(ctx, v1alpha1.KindVMInstance, "team-a", "web"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := c.Get(ctx, v1alpha1.KindVMInstance, "team-a", "web"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Get after Delete: got %v, want ErrNotFound", err)
	}
	if _, err := c.Delete(ctx, v1alpha1.KindVMInstance, "team-a", "web"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("second Delete: got %v, want ErrNotFound", err)
	}
}

func TestApply(t *testing.T) {
	const doc = `apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: ubuntu
spec:
  source:
    image:
      name: ubuntu
  storage: %s
`
	srv := clienttest.NewServer(t)
	c := srv.Client(t)
	steps := []struct {
		name    string
		storage string
		dryRun  bool
		want    client.ApplyResult
		stored  string // spec.storage stored afterwards; "" = absent
	}{
		{name: "dry run of a new object stores nothing", storage: "20Gi", dryRun: true, want: client.ApplyCreated, stored: ""},
		{name: "create", storage: "20Gi", want: client.ApplyCreated, stored: "20Gi"},
		{name: "same document", storage: "20Gi", want: client.ApplyUnchanged, stored: "20Gi"},
		{name: "dry run of a change stores nothing", storage: "30Gi", dryRun: true, want: client.ApplyConfigured, stored: "20Gi"},
		{name: "change", storage: "30Gi", want: client.ApplyConfigured, stored: "30Gi"},
	}
	for _, st := range steps {
		obj, res, err := c.Apply(t.Context(), v1alpha1.KindVMDisk, "", "ubuntu", fmt.Appendf(nil, doc, st.storage), st.dryRun)
		if err != nil {
			t.Fatalf("%s: Apply: %v", st.name, err)
		}
		if res != st.want {
			t.Errorf("%s: result = %q, want %q", st.name, res, st.want)
		}
		if got := string(obj.(*v1alpha1.VMDisk).Spec.Storage); got != st.storage {
			t.Errorf("%s: returned storage = %q, want %q", st.name, got, st.storage)
		}
		var stored string
		if o := srv.Object(v1alpha1.KindVMDisk, "default", "ubuntu"); o != nil {
			stored = string(o.(*v1alpha1.VMDisk).Spec.Storage)
		}
		if stored != st.stored {
			t.Errorf("%s: stored storage = %q, want %q", st.name, stored, st.stored)
		}
	}
	reqs := srv.Requests()
	if !strings.HasSuffix(reqs[0], "/namespaces/default/vmdisks/ubuntu?dryRun=All") || !strings.HasPrefix(reqs[0], "PATCH ") {
		t.Errorf("first request = %q, want a dry-run PATCH", reqs[0])
	}
}

func TestApplyResultWithoutHeader(t *testing.T) {
	cases := []struct {
		name   string
		code   int
		header string
		want   client.ApplyResult
	}{
		{name: "201 means created", code: 201, want: client.ApplyCreated},
		{name: "200 means configured", code: 200, want: client.ApplyConfigured},
		{name: "header wins", code: 200, header: "unchanged", want: client.ApplyUnchanged},
		{name: "unknown header falls back to the code", code: 201, header: "bogus", want: client.ApplyCreated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var gotType string
			c := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
				gotType = r.Header.Get("Content-Type")
				if tc.header != "" {
					w.Header().Set(client.ApplyResultHeader, tc.header)
				}
				w.WriteHeader(tc.code)
				_, _ = io.WriteString(w, `{"apiVersion":"apps.cozystack.io/v1alpha1","kind":"VMDisk","metadata":{"name":"d","namespace":"default"},"spec":{"source":{}}}`)
			})
			_, res, err := c.Apply(t.Context(), v1alpha1.KindVMDisk, "default", "d", []byte("kind: VMDisk"), false)
			if err != nil {
				t.Fatal(err)
			}
			if res != tc.want {
				t.Errorf("result = %q, want %q", res, tc.want)
			}
			if gotType != client.ApplyPatchContentType {
				t.Errorf("Content-Type = %q", gotType)
			}
		})
	}
}

func TestWatch(t *testing.T) {
	srv := clienttest.NewServer(t)
	c := srv.Client(t)
	srv.Put(newVM("default", "before"))
	rv := srv.ResourceVersion()

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch, err := c.Watch(ctx, v1alpha1.KindVMInstance, "default", rv)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	srv.Put(newVM("other", "elsewhere")) // another namespace: not seen
	srv.Put(newVM("default", "web"))
	srv.Mutate(v1alpha1.KindVMInstance, "default", "web", func(o v1alpha1.Object) {
		o.(*v1alpha1.VMInstance).Status.Phase = v1alpha1.PhaseRunning
	})
	if _, err := c.Delete(ctx, v1alpha1.KindVMInstance, "default", "web"); err != nil {
		t.Fatal(err)
	}

	want := []struct {
		typ   v1alpha1.WatchEventType
		name  string
		phase string
	}{
		{v1alpha1.Added, "web", ""},
		{v1alpha1.Modified, "web", v1alpha1.PhaseRunning},
		{v1alpha1.Deleted, "web", v1alpha1.PhaseRunning},
	}
	for i, w := range want {
		ev := recv(t, ch)
		if ev.Type != w.typ {
			t.Fatalf("event %d: type %s, want %s (err %v)", i, ev.Type, w.typ, ev.Err)
		}
		vm, ok := ev.Object.(*v1alpha1.VMInstance)
		if !ok {
			t.Fatalf("event %d: object %T", i, ev.Object)
		}
		if vm.ObjectMeta.Name != w.name || vm.Status.Phase != w.phase {
			t.Errorf("event %d: %s phase %q, want %s phase %q", i, vm.ObjectMeta.Name, vm.Status.Phase, w.name, w.phase)
		}
		if ev.ResourceVersion() == "" {
			t.Errorf("event %d has no resourceVersion", i)
		}
	}

	srv.ExpireWatches()
	ev := recv(t, ch)
	if ev.Type != v1alpha1.Error || !errors.Is(ev.Err, errdefs.ErrGone) {
		t.Fatalf("after expiry got %s (%v), want ERROR matching ErrGone", ev.Type, ev.Err)
	}
	if _, ok := <-ch; ok {
		t.Error("channel still open after an ERROR event")
	}

	if _, err := c.Watch(ctx, v1alpha1.KindVMInstance, "default", rv); !errors.Is(err, errdefs.ErrGone) {
		t.Errorf("Watch from a compacted resourceVersion: got %v, want ErrGone", err)
	}
}

func recv(t *testing.T, ch <-chan client.Event) client.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no watch event within 5s")
	}
	return client.Event{}
}

func setReady(status v1alpha1.ConditionStatus, observedGen int64) func(v1alpha1.Object) {
	return func(o v1alpha1.Object) {
		vm := o.(*v1alpha1.VMInstance)
		v1alpha1.SetCondition(&vm.Status.Conditions, v1alpha1.Condition{
			Type: v1alpha1.ConditionReady, Status: status, Reason: "Test", ObservedGeneration: observedGen,
		}, time.Now())
	}
}

// countRequests counts requests whose "METHOD uri" contains all parts.
func countRequests(srv *clienttest.Server, parts ...string) int {
	n := 0
	for _, r := range srv.Requests() {
		match := true
		for _, p := range parts {
			match = match && strings.Contains(r, p)
		}
		if match {
			n++
		}
	}
	return n
}

// waitForRequests polls until n requests matching parts were served.
func waitForRequests(t *testing.T, srv *clienttest.Server, n int, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for countRequests(srv, parts...) < n {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d requests matching %q: %q", n, parts, srv.Requests())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWaitForRelistsAfterGone(t *testing.T) {
	srv := clienttest.NewServer(t)
	c := srv.Client(t)
	srv.Put(newVM("default", "web"))

	done := make(chan error, 1)
	var got v1alpha1.Object
	go func() {
		var err error
		got, err = c.WaitFor(t.Context(), v1alpha1.KindVMInstance, "default", "web", client.ConditionIs("Ready", "True"))
		done <- err
	}()
	waitForRequests(t, srv, 1, "watch=true")
	srv.ExpireWatches()
	// The waiter must list again, then watch from the new revision.
	waitForRequests(t, srv, 2, "watch=true")
	srv.Mutate(v1alpha1.KindVMInstance, "default", "web", setReady(v1alpha1.ConditionTrue, 1))

	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WaitFor: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitFor did not return after Ready=True")
	}
	if !client.ConditionMet(got, "Ready", "True") {
		t.Errorf("returned object is not Ready: %+v", got.GetConditions())
	}
	if n := countRequests(srv, "GET /apis/apps.cozystack.io/v1alpha1/namespaces/default/vminstances") - countRequests(srv, "watch=true"); n != 2 {
		t.Errorf("lists = %d, want 2 (initial and after 410): %q", n, srv.Requests())
	}
}

func TestWaitForResumesClosedStream(t *testing.T) {
	srv := clienttest.NewServer(t)
	c := srv.Client(t)
	srv.Put(newVM("default", "web"))

	done := make(chan error, 1)
	go func() {
		_, err := c.WaitFor(t.Context(), v1alpha1.KindVMInstance, "default", "web", client.ConditionIs("Ready", "True"))
		done <- err
	}()
	waitForRequests(t, srv, 1, "watch=true")
	srv.Mutate(v1alpha1.KindVMInstance, "default", "web", setReady(v1alpha1.ConditionFalse, 1))
	srv.CloseWatches()
	waitForRequests(t, srv, 2, "watch=true")
	srv.Mutate(v1alpha1.KindVMInstance, "default", "web", setReady(v1alpha1.ConditionTrue, 1))

	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WaitFor: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitFor did not return")
	}
	lists := countRequests(srv, "GET /apis/apps.cozystack.io/v1alpha1/namespaces/default/vminstances") - countRequests(srv, "watch=true")
	if lists != 1 {
		t.Errorf("lists = %d, want 1 (a closed stream resumes, it does not re-list): %q", lists, srv.Requests())
	}
}

func TestWaitForDeletion(t *testing.T) {
	srv := clienttest.NewServer(t)
	srv.Finalizers = true
	c := srv.Client(t)
	srv.Put(newVM("default", "web"))

	obj, err := c.Delete(t.Context(), v1alpha1.KindVMInstance, "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	if obj.GetObjectMeta().DeletionTimestamp == nil {
		t.Fatal("delete of an object with finalizers returned no deletionTimestamp")
	}
	done := make(chan error, 1)
	go func() {
		done <- c.WaitForDeletion(t.Context(), v1alpha1.KindVMInstance, "default", "web", obj.GetObjectMeta().UID)
	}()
	waitForRequests(t, srv, 1, "watch=true")
	select {
	case err := <-done:
		t.Fatalf("WaitForDeletion returned before the finalizer was removed: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	srv.Finalize(v1alpha1.KindVMInstance, "default", "web")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WaitForDeletion: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitForDeletion did not return after the object went away")
	}
}

func TestWaitForTimeout(t *testing.T) {
	srv := clienttest.NewServer(t)
	c := srv.Client(t)
	srv.Put(newVM("default", "web"))
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := c.WaitFor(ctx, v1alpha1.KindVMInstance, "default", "web", client.ConditionIs("Ready", "True"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want context.DeadlineExceeded", err)
	}
}

func TestWaitForConditionError(t *testing.T) {
	srv := clienttest.NewServer(t)
	c := srv.Client(t)
	boom := errors.New("boom")
	_, err := c.WaitFor(t.Context(), v1alpha1.KindVMInstance, "default", "missing", func(obj v1alpha1.Object, deleted bool) (bool, error) {
		if !deleted || obj != nil {
			t.Errorf("cond(%v, %v) for a missing object", obj, deleted)
		}
		return false, boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want the condition's error", err)
	}
}

func TestConditionMet(t *testing.T) {
	cases := []struct {
		name       string
		generation int64
		conds      []v1alpha1.Condition
		status     v1alpha1.ConditionStatus
		want       bool
	}{
		{name: "true", generation: 1, conds: []v1alpha1.Condition{{Type: "Ready", Status: "True", ObservedGeneration: 1}}, status: "True", want: true},
		{name: "case-insensitive", generation: 1, conds: []v1alpha1.Condition{{Type: "Ready", Status: "True"}}, status: "true", want: true},
		{name: "false wanted", generation: 1, conds: []v1alpha1.Condition{{Type: "Ready", Status: "False"}}, status: "False", want: true},
		{name: "wrong status", generation: 1, conds: []v1alpha1.Condition{{Type: "Ready", Status: "False"}}, status: "True", want: false},
		{name: "stale generation", generation: 3, conds: []v1alpha1.Condition{{Type: "Ready", Status: "True", ObservedGeneration: 2}}, status: "True", want: false},
		{name: "missing", generation: 1, conds: []v1alpha1.Condition{{Type: "InUse", Status: "True"}}, status: "True", want: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := &v1alpha1.VMDisk{ObjectMeta: v1alpha1.ObjectMeta{Generation: tc.generation}, Status: v1alpha1.VMDiskStatus{Conditions: tc.conds}}
			if got := client.ConditionMet(d, "ready", tc.status); got != tc.want {
				t.Errorf("ConditionMet = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestConnectionErrors(t *testing.T) {
	dir := t.TempDir()
	refused := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", refused)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	_ = ln.Close() // the file stays, nobody listens: ECONNREFUSED

	cases := []struct {
		name   string
		socket string
		errno  error
	}{
		{name: "missing socket", socket: filepath.Join(dir, "absent.sock"), errno: syscall.ENOENT},
		{name: "nobody listening", socket: refused, errno: syscall.ECONNREFUSED},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.New(client.Options{Socket: tc.socket})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.List(t.Context(), v1alpha1.KindVMInstance, "default")
			if !errors.Is(err, errdefs.ErrUnavailable) || !errors.Is(err, tc.errno) {
				t.Fatalf("got %v, want ErrUnavailable wrapping %v", err, tc.errno)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "cannot reach vmd at "+tc.socket+": ") || !strings.HasSuffix(msg, " (is vmd running?)") {
				t.Errorf("message %q", msg)
			}
		})
	}
}

func TestVersionAndHealthz(t *testing.T) {
	srv := clienttest.NewServer(t)
	c := srv.Client(t)
	if err := c.Healthz(t.Context()); err != nil {
		t.Fatalf("Healthz: %v", err)
	}
	v, err := c.Version(t.Context())
	if err != nil {
		t.Fatalf("Version: %v", err)
	}
	if *v != srv.Version {
		t.Errorf("Version = %+v, want %+v", *v, srv.Version)
	}
}

func TestServerURL(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/prefix/healthz" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	}))
	defer ts.Close()
	c, err := client.New(client.Options{Server: ts.URL + "/prefix/"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Healthz(t.Context()); err != nil {
		t.Errorf("Healthz over TCP: %v", err)
	}

	for _, bad := range []string{"127.0.0.1:80", "unix:///run/vmd.sock", "http://"} {
		if _, err := client.New(client.Options{Server: bad}); err == nil {
			t.Errorf("New(Server: %q) succeeded", bad)
		}
	}
}

func TestRequestTimeout(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "slow.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	_ = srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	c, err := client.New(client.Options{Socket: sock, Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(t.Context(), v1alpha1.KindVMDisk, "default", "d"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want context.DeadlineExceeded", err)
	}
}
