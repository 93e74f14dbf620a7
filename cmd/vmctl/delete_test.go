package main

import (
	"testing"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client/clienttest"
)

func TestDelete(t *testing.T) {
	cases := []struct {
		name       string
		finalizers bool
		args       []string
		wantCode   int
		wantOut    string
		wantErr    string
		gone       []string
		kept       []string
	}{
		{
			name: "by type and names", args: []string{"delete", "vmi", "web", "api"},
			wantOut: "vminstance \"web\" deleted\nvminstance \"api\" deleted\n", gone: []string{"web", "api"},
		},
		{
			name: "type/name", args: []string{"delete", "vmd/ubuntu"},
			wantOut: "vmdisk \"ubuntu\" deleted\n", gone: []string{"ubuntu"}, kept: []string{"web"},
		},
		{
			name: "missing object fails but the others are deleted", args: []string{"delete", "vmi", "nope", "web"},
			wantCode: 1, wantOut: "vminstance \"web\" deleted\n", wantErr: "Error from server (NotFound): vminstances \"nope\" not found\n",
			gone: []string{"web"},
		},
		{
			name: "--ignore-not-found", args: []string{"delete", "vmi", "nope", "--ignore-not-found"},
		},
		{
			name: "server dry run", args: []string{"delete", "vmi/web", "--dry-run=server"},
			wantOut: "vminstance \"web\" deleted (server dry run)\n", kept: []string{"web"},
		},
		{
			name: "client dry run", args: []string{"delete", "vmi/web", "--dry-run"},
			wantOut: "vminstance \"web\" deleted (dry run)\n", kept: []string{"web"},
		},
		{
			name: "no wait leaves a pending deletion", finalizers: true, args: []string{"delete", "vmi/web", "--wait=false"},
			wantOut: "vminstance \"web\" deleted\n", kept: []string{"web"},
		},
		{
			name: "wait times out while finalizers are pending", finalizers: true, args: []string{"delete", "vmi/web", "--timeout=150ms"},
			wantCode: 1, wantOut: "vminstance \"web\" deleted\n", wantErr: "error: timed out waiting for the condition on vminstances/web\n",
			kept: []string{"web"},
		},
		{
			name: "type without name", args: []string{"delete", "vmi"},
			wantCode: 1, wantErr: "error: resource(s) were provided, but no name was specified\n", kept: []string{"web"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := clienttest.NewServer(t)
			srv.Finalizers = tc.finalizers
			srv.Put(sampleVM("default", "web", time.Minute))
			srv.Put(sampleVM("default", "api", time.Minute))
			srv.Put(sampleDisk("default", "ubuntu", time.Minute))
			r := vmctl(t, srv, "", tc.args...)
			if r.code != tc.wantCode || r.out != tc.wantOut || r.err != tc.wantErr {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr %q", r.code, r.out, r.err, tc.wantCode, tc.wantOut, tc.wantErr)
			}
			exists := func(n string) bool {
				return srv.Object(v1alpha1.KindVMInstance, "default", n) != nil || srv.Object(v1alpha1.KindVMDisk, "default", n) != nil
			}
			for _, n := range tc.gone {
				if exists(n) {
					t.Errorf("%s still exists", n)
				}
			}
			for _, n := range tc.kept {
				if !exists(n) {
					t.Errorf("%s was removed", n)
				}
			}
		})
	}
}

func TestDeleteWaitsForFinalizers(t *testing.T) {
	srv := clienttest.NewServer(t)
	srv.Finalizers = true
	srv.Put(sampleVM("default", "web", time.Minute))
	path := writeFile(t, t.TempDir(), "vm.yaml", vm)

	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() { done <- vmctlStreams(t.Context(), srv, "", &out, &errOut, "delete", "-f", path) }()

	waitForOutput(t, &out, "vminstance \"web\" deleted\n")
	waitForRequest(t, srv, "watch=true")
	select {
	case code := <-done:
		t.Fatalf("delete returned %d while the finalizer was pending", code)
	case <-time.After(50 * time.Millisecond):
	}
	if o := srv.Object(v1alpha1.KindVMInstance, "default", "web"); o == nil || o.GetObjectMeta().DeletionTimestamp == nil {
		t.Fatalf("object should be pending deletion, got %+v", o)
	}
	srv.Finalize(v1alpha1.KindVMInstance, "default", "web")
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d: %s", code, errOut.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("delete did not return after the object went away")
	}
}
