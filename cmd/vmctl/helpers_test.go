package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client"
	"github.com/vmdhq/vmd/internal/client/clienttest"
)

// testNow is the fixed clock of every command test.
var testNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// syncBuffer is a bytes.Buffer safe to read while a command writes to it
// (get -w, wait and delete run in goroutines in some tests).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// result is what one vmctl invocation produced.
type result struct {
	out, err string
	code     int
}

// vmctl runs the command tree against srv with a fixed clock.
func vmctl(t *testing.T, srv *clienttest.Server, stdin string, args ...string) result {
	t.Helper()
	var out, errOut syncBuffer
	code := vmctlStreams(t.Context(), srv, stdin, &out, &errOut, args...)
	return result{out: out.String(), err: errOut.String(), code: code}
}

func vmctlStreams(ctx context.Context, srv *clienttest.Server, stdin string, out, errOut *syncBuffer, args ...string) int {
	factory := func(opts client.Options) (*client.Client, error) {
		opts.Socket, opts.Server = srv.Socket(), ""
		return client.New(opts)
	}
	streams := IOStreams{In: strings.NewReader(stdin), Out: out, ErrOut: errOut}
	return execute(ctx, newRootCmd(streams, factory, func() time.Time { return testNow }), args, errOut)
}

// waitForOutput polls buf until it contains want.
func waitForOutput(t *testing.T, buf *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(buf.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output never contained %q; got:\n%s", want, buf.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitForRequest polls until srv served a request containing all parts.
func waitForRequest(t *testing.T, srv *clienttest.Server, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, r := range srv.Requests() {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(r, p)
			}
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no request matching %q in %q", parts, srv.Requests())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ptr[T any](v T) *T { return &v }

func at(ago time.Duration) *v1alpha1.Time { return v1alpha1.NewTime(testNow.Add(-ago)) }

// sampleVM is a VMInstance as vmd stores it once running.
func sampleVM(ns, name string, age time.Duration) *v1alpha1.VMInstance {
	return &v1alpha1.VMInstance{
		TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindVMInstance},
		ObjectMeta: v1alpha1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: at(age), Generation: 1,
			Labels: map[string]string{"app": name}},
		Spec: v1alpha1.VMInstanceSpec{
			InstanceType: ptr("u1.medium"), InstanceProfile: ptr("ubuntu"), RunStrategy: v1alpha1.RunStrategyAlways,
			Disks: []v1alpha1.DiskRef{{Name: name + "-root"}, {Name: "data", Bus: "scsi"}}, External: ptr(true),
			ExternalPorts: []int{22, 443},
		},
		Status: v1alpha1.VMInstanceStatus{
			Phase: v1alpha1.PhaseRunning, InstanceType: "u1.medium", Profile: "ubuntu",
			UUID: "5f0c3c1e-0000-4000-8000-000000000001", DomainName: "vm-instance-" + name,
			Addresses:  []v1alpha1.Address{{Type: "External", Address: "192.0.2.10"}, {Type: "Private", Address: "10.77.0.5", MAC: "52:54:00:aa:bb:cc"}},
			Conditions: []v1alpha1.Condition{{Type: "Ready", Status: "True", Reason: "Running", ObservedGeneration: 1, LastTransitionTime: at(2 * time.Minute)}},
		},
	}
}

// sampleDisk is a VMDisk part-way through an import.
func sampleDisk(ns, name string, age time.Duration) *v1alpha1.VMDisk {
	return &v1alpha1.VMDisk{
		TypeMeta:   v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindVMDisk},
		ObjectMeta: v1alpha1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: at(age), Generation: 1},
		Spec: v1alpha1.VMDiskSpec{
			Source:  v1alpha1.DiskSource{HTTP: &v1alpha1.HTTPSource{URL: "https://cloud-images.ubuntu.com/noble/current/noble.img"}},
			Storage: "20Gi", StorageClass: "replicated",
		},
		Status: v1alpha1.VMDiskStatus{
			Phase: v1alpha1.DiskPhaseImporting, Progress: "42.5%",
			Conditions: []v1alpha1.Condition{{Type: "Ready", Status: "False", Reason: "Importing", Message: "downloading"}},
		},
	}
}
