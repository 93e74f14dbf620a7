package main

import (
	"reflect"
	"testing"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client/clienttest"
)

func TestParseFor(t *testing.T) {
	cases := []struct {
		name    string
		expr    string
		want    waitFor
		wantErr bool
	}{
		{name: "condition defaults to True", expr: "condition=Ready", want: waitFor{condType: "Ready", status: "True"}},
		{name: "condition with status", expr: "condition=Ready=False", want: waitFor{condType: "Ready", status: "False"}},
		{name: "delete", expr: "delete", want: waitFor{deletion: true}},
		{name: "jsonpath with value", expr: "jsonpath={.status.phase}=Running", want: waitFor{path: []string{"status", "phase"}, value: "Running", hasValue: true}},
		{name: "jsonpath existence", expr: "jsonpath={.status.uuid}", want: waitFor{path: []string{"status", "uuid"}}},
		{name: "jsonpath without braces", expr: "jsonpath=.status.phase=Ready", want: waitFor{path: []string{"status", "phase"}, value: "Ready", hasValue: true}},
		{name: "jsonpath with filter is refused", expr: `jsonpath={.status.conditions[?(@.type=="Ready")].status}=True`, wantErr: true},
		{name: "jsonpath unterminated", expr: "jsonpath={.status.phase", wantErr: true},
		{name: "condition without type", expr: "condition=", wantErr: true},
		{name: "delete with value", expr: "delete=true", wantErr: true},
		{name: "unknown", expr: "ready", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseFor(tc.expr)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseFor(%q) error = %v, wantErr %v", tc.expr, err, tc.wantErr)
			}
			if err == nil && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parseFor(%q) = %+v, want %+v", tc.expr, got, tc.want)
			}
		})
	}
}

func TestWaitImmediate(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{name: "condition already met", args: []string{"wait", "vmi/web", "--for=condition=Ready"}, wantOut: "vminstance/web condition met\n"},
		{name: "type and names", args: []string{"wait", "vmd", "ubuntu", "--for=condition=Ready=False"}, wantOut: "vmdisk/ubuntu condition met\n"},
		{name: "jsonpath", args: []string{"wait", "vmi/web", "--for=jsonpath={.status.phase}=Running"}, wantOut: "vminstance/web condition met\n"},
		{
			name: "timeout", args: []string{"wait", "vmd/ubuntu", "--for=condition=Ready", "--timeout=200ms"},
			wantCode: 1, wantErr: "error: timed out waiting for the condition on vmdisks/ubuntu\n",
		},
		{
			name: "zero timeout checks once", args: []string{"wait", "vmd/ubuntu", "--for=jsonpath={.status.phase}=Ready", "--timeout=0"},
			wantCode: 1, wantErr: "error: timed out waiting for the condition on vmdisks/ubuntu\n",
		},
		{
			name: "missing object", args: []string{"wait", "vmi/nope", "--for=condition=Ready"},
			wantCode: 1, wantErr: "Error from server (NotFound): vminstances \"nope\" not found\n",
		},
		{name: "delete of a missing object is met", args: []string{"wait", "vmi/nope", "--for=delete"}, wantOut: "vminstance/nope condition met\n"},
		{
			name: "stale generation does not count", args: []string{"wait", "vmi/api", "--for=condition=Ready", "--timeout=100ms"},
			wantCode: 1, wantErr: "error: timed out waiting for the condition on vminstances/api\n",
		},
		{
			name: "--for is required", args: []string{"wait", "vmi/web"},
			wantCode: 1, wantErr: "error: required flag(s) \"for\" not set\n",
		},
	}
	srv := clienttest.NewServer(t)
	srv.Put(sampleVM("default", "web", time.Minute))
	srv.Put(sampleDisk("default", "ubuntu", time.Minute))
	stale := sampleVM("default", "api", time.Minute)
	stale.ObjectMeta.Generation = 2 // spec changed after Ready was observed at generation 1
	srv.Put(stale)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := vmctl(t, srv, "", tc.args...)
			if r.code != tc.wantCode || r.out != tc.wantOut || r.err != tc.wantErr {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr %q", r.code, r.out, r.err, tc.wantCode, tc.wantOut, tc.wantErr)
			}
		})
	}
}

func TestWaitUntilReady(t *testing.T) {
	srv := clienttest.NewServer(t)
	srv.Put(sampleDisk("default", "ubuntu", time.Minute))
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- vmctlStreams(t.Context(), srv, "", &out, &errOut, "wait", "vmd/ubuntu", "--for=condition=Ready", "--timeout=10s")
	}()
	waitForRequest(t, srv, "watch=true")
	select {
	case code := <-done:
		t.Fatalf("wait returned %d before the disk was Ready: %s", code, errOut.String())
	default:
	}
	srv.Mutate(v1alpha1.KindVMDisk, "default", "ubuntu", func(o v1alpha1.Object) {
		d := o.(*v1alpha1.VMDisk)
		v1alpha1.SetCondition(&d.Status.Conditions, v1alpha1.Condition{Type: "Ready", Status: "True", Reason: "Imported"}, time.Now())
	})
	select {
	case code := <-done:
		if code != 0 || out.String() != "vmdisk/ubuntu condition met\n" {
			t.Errorf("exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not return after Ready=True")
	}
}
