package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client/clienttest"
)

func seeded(t *testing.T) *clienttest.Server {
	t.Helper()
	srv := clienttest.NewServer(t)
	srv.Put(sampleVM("default", "web", 3*time.Minute+12*time.Second))
	srv.Put(sampleVM("team-a", "api", 2*24*time.Hour))
	srv.Put(sampleDisk("default", "ubuntu", 30*time.Second))
	return srv
}

func TestGet(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{
			name: "one kind in the default namespace",
			args: []string{"get", "vmi"},
			wantOut: `NAME   PHASE     TYPE        PROFILE   IP          READY   AGE
web    Running   u1.medium   ubuntu    10.77.0.5   True    3m12s
`,
		},
		{
			name: "all namespaces",
			args: []string{"get", "vminstances", "-A"},
			wantOut: `NAMESPACE   NAME   PHASE     TYPE        PROFILE   IP          READY   AGE
default     web    Running   u1.medium   ubuntu    10.77.0.5   True    3m12s
team-a      api    Running   u1.medium   ubuntu    10.77.0.5   True    2d
`,
		},
		{
			name: "two kinds print two tables with kind-prefixed names",
			args: []string{"get", "vmi,vmd"},
			wantOut: `NAME             PHASE     TYPE        PROFILE   IP          READY   AGE
vminstance/web   Running   u1.medium   ubuntu    10.77.0.5   True    3m12s

NAME            PHASE       PROGRESS   SIZE   CLASS        SOURCE                         READY       AGE
vmdisk/ubuntu   Importing   42.5%      20Gi   replicated   http:cloud-images.ubuntu.com   Importing   30s
`,
		},
		{
			name:    "names",
			args:    []string{"get", "all", "-o", "name"},
			wantOut: "vminstance/web\nvmdisk/ubuntu\n",
		},
		{
			name:    "type/name form",
			args:    []string{"get", "vmd/ubuntu", "vmi/web", "-o", "name"},
			wantOut: "vmdisk/ubuntu\nvminstance/web\n",
		},
		{
			name:    "label selector",
			args:    []string{"get", "vmi", "-A", "-l", "app=api", "-o", "name"},
			wantOut: "vminstance/api\n",
		},
		{
			name:     "missing name",
			args:     []string{"get", "vmi", "nope"},
			wantCode: 1,
			wantErr:  "Error from server (NotFound): vminstances \"nope\" not found\n",
		},
		{
			name:     "found and missing names",
			args:     []string{"get", "vmi", "web", "nope", "-o", "name"},
			wantCode: 1,
			wantOut:  "vminstance/web\n",
			wantErr:  "Error from server (NotFound): vminstances \"nope\" not found\n",
		},
		{
			name:    "empty namespace",
			args:    []string{"get", "vmd", "-n", "team-z"},
			wantErr: "No resources found in team-z namespace.\n",
		},
		{
			name:     "unknown type",
			args:     []string{"get", "pods"},
			wantCode: 1,
			wantErr:  "error: the server doesn't have a resource type \"pods\" (known: vminstances (vmi), vmdisks (vmd))\n",
		},
		{
			name:     "unknown output",
			args:     []string{"get", "vmi", "-o", "xml"},
			wantCode: 1,
			wantErr:  "error: unable to match a printer suitable for the output format \"xml\", allowed formats are: json,name,wide,yaml\n",
		},
	}
	srv := seeded(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := vmctl(t, srv, "", tc.args...)
			if r.code != tc.wantCode || r.out != tc.wantOut || r.err != tc.wantErr {
				t.Errorf("exit %d, stdout:\n%s\nstderr:\n%s\nwant exit %d, stdout:\n%s\nstderr:\n%s", r.code, r.out, r.err, tc.wantCode, tc.wantOut, tc.wantErr)
			}
		})
	}
}

func TestGetYAML(t *testing.T) {
	srv := seeded(t)

	out := execOK(t, srv, "get", "vmi", "web", "-o", "yaml")
	var vm v1alpha1.VMInstance
	if err := yaml.UnmarshalStrict([]byte(out), &vm); err != nil {
		t.Fatalf("get NAME -o yaml is not one VMInstance: %v\n%s", err, out)
	}
	if vm.ObjectMeta.Name != "web" || vm.Status.Phase != v1alpha1.PhaseRunning || vm.ObjectMeta.ResourceVersion == "" {
		t.Errorf("decoded %+v", vm.ObjectMeta)
	}

	out = execOK(t, srv, "get", "vmi", "-A", "-o", "yaml")
	var l struct {
		Kind  string                `json:"kind"`
		Items []v1alpha1.VMInstance `json:"items"`
	}
	if err := yaml.Unmarshal([]byte(out), &l); err != nil {
		t.Fatal(err)
	}
	if l.Kind != "List" || len(l.Items) != 2 || l.Items[1].ObjectMeta.Name != "api" {
		t.Errorf("get -A -o yaml gave %s with %d items", l.Kind, len(l.Items))
	}
}

func TestGetWatch(t *testing.T) {
	srv := seeded(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() { done <- vmctlStreams(ctx, srv, "", &out, &errOut, "get", "vmd", "-w") }()

	waitForOutput(t, &out, "ubuntu")
	waitForRequest(t, srv, "watch=true")
	srv.Mutate(v1alpha1.KindVMDisk, "default", "ubuntu", func(o v1alpha1.Object) {
		d := o.(*v1alpha1.VMDisk)
		d.Status.Phase, d.Status.Progress = v1alpha1.DiskPhaseReady, "100.0%"
		d.Status.Conditions = []v1alpha1.Condition{{Type: "Ready", Status: "True"}}
	})
	srv.Put(sampleVM("default", "not-a-disk", time.Second)) // other kind: not shown
	waitForOutput(t, &out, "100.0%")
	// A 410 in the middle of the watch is survived by listing again.
	srv.ExpireWatches()
	waitForRequest(t, srv, "watch=true", "resourceVersion="+srv.ResourceVersion())
	srv.Put(sampleDisk("default", "data", 0))
	waitForOutput(t, &out, "data ")
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("get -w exit %d after interrupt: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "NAME ") || !strings.HasPrefix(lines[2], "ubuntu ") || !strings.HasPrefix(lines[3], "data ") {
		t.Errorf("want header, initial row, one row per change; got:\n%s", out.String())
	}
	if !strings.Contains(lines[2], " Ready ") || !strings.Contains(lines[2], " True ") {
		t.Errorf("modified row does not show the new state: %q", lines[2])
	}
}
