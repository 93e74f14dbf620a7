package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client"
	"github.com/vmdhq/vmd/internal/client/clienttest"
)

const disk = `apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: ubuntu
spec:
  source:
    image:
      name: ubuntu
  storage: 20Gi
`

const vm = `apiVersion: apps.cozystack.io/v1alpha1
kind: VMInstance
metadata:
  name: web
spec:
  instanceType: u1.medium
  disks:
  - ubuntu
`

const badVM = `apiVersion: apps.cozystack.io/v1alpha1
kind: VMInstance
metadata:
  name: bad
spec:
  instanceType: u1.huge
`

// rejectBad makes the fake server refuse the VM named "bad" the way vmd
// does: 422 with one cause per field error.
func rejectBad(obj v1alpha1.Object) *v1alpha1.Status {
	if obj.GetObjectMeta().Name != "bad" {
		return nil
	}
	return clienttest.Invalid(v1alpha1.KindVMInstance, "bad",
		v1alpha1.StatusCause{Field: "spec.instanceType", Message: `Unsupported value: "u1.huge": supported values: "u1.medium", "u1.large"`},
		v1alpha1.StatusCause{Field: "spec.disks", Message: "Required value: a VM needs at least one disk"})
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestApply(t *testing.T) {
	dir := t.TempDir()
	multi := writeFile(t, dir, "all.yaml", disk+"---\n"+badVM+"---\n# only a comment\n---\n"+vm)

	cases := []struct {
		name     string
		setup    func(*clienttest.Server)
		args     []string
		stdin    string
		wantCode int
		wantOut  string
		wantErr  string
		stored   []string // names that must exist afterwards
		absent   []string // names that must not
	}{
		{
			name:     "multi-document file keeps going after a bad document",
			args:     []string{"apply", "-f", multi},
			wantCode: 1,
			wantOut:  "vmdisk/ubuntu created\nvminstance/web created\n",
			wantErr: "Error from server (Invalid): VMInstance \"bad\" is invalid:\n" +
				"  * spec.instanceType: Unsupported value: \"u1.huge\": supported values: \"u1.medium\", \"u1.large\"\n" +
				"  * spec.disks: Required value: a VM needs at least one disk\n",
			stored: []string{"ubuntu", "web"},
			absent: []string{"bad"},
		},
		{
			name: "re-applying reports unchanged and configured",
			setup: func(s *clienttest.Server) {
				execOK(t, s, "apply", "-f", writeFile(t, t.TempDir(), "d.yaml", strings.Replace(disk, "20Gi", "10Gi", 1)))
				execOK(t, s, "apply", "-f", writeFile(t, t.TempDir(), "v.yaml", vm))
			},
			args:    []string{"apply", "-f", writeFile(t, dir, "both.yaml", disk+"---\n"+vm)},
			wantOut: "vmdisk/ubuntu configured\nvminstance/web unchanged\n",
			stored:  []string{"ubuntu", "web"},
		},
		{
			name:    "server dry run stores nothing",
			args:    []string{"apply", "-f", writeFile(t, dir, "dry.yaml", disk+"---\n"+vm), "--dry-run=server"},
			wantOut: "vmdisk/ubuntu created (server dry run)\nvminstance/web created (server dry run)\n",
			absent:  []string{"ubuntu", "web"},
		},
		{
			name:    "client dry run asks whether the object exists",
			setup:   func(s *clienttest.Server) { execOK(t, s, "apply", "-f", writeFile(t, t.TempDir(), "v.yaml", vm)) },
			args:    []string{"apply", "-f", writeFile(t, dir, "client.yaml", disk+"---\n"+vm), "--dry-run=client"},
			wantOut: "vmdisk/ubuntu created (dry run)\nvminstance/web configured (dry run)\n",
			stored:  []string{"web"},
			absent:  []string{"ubuntu"},
		},
		{
			name:    "stdin",
			args:    []string{"apply", "-f", "-"},
			stdin:   vm,
			wantOut: "vminstance/web created\n",
			stored:  []string{"web"},
		},
		{
			name:     "namespace in the document must match -n",
			args:     []string{"apply", "-n", "team-b", "-f", writeFile(t, dir, "ns.yaml", strings.Replace(vm, "  name: web\n", "  name: web\n  namespace: team-a\n", 1))},
			wantCode: 1,
			wantErr:  "error: " + filepath.Join(dir, "ns.yaml") + ": document 1: the namespace from the provided object \"team-a\" does not match the namespace \"team-b\". You must pass '--namespace=team-a' to perform this operation\n",
			absent:   []string{"web"},
		},
		{
			name:     "unknown kind is reported and the rest applied",
			args:     []string{"apply", "-f", writeFile(t, dir, "kind.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n---\n"+disk)},
			wantCode: 1,
			wantOut:  "vmdisk/ubuntu created\n",
			wantErr:  "error: " + filepath.Join(dir, "kind.yaml") + ": document 1: no matches for kind \"Pod\" in version \"v1\"\n",
			stored:   []string{"ubuntu"},
		},
		{
			name:     "bad --dry-run value",
			args:     []string{"apply", "-f", multi, "--dry-run=maybe"},
			wantCode: 1,
			wantErr:  "error: invalid --dry-run value \"maybe\": must be \"none\", \"server\" or \"client\"\n",
			absent:   []string{"ubuntu"},
		},
		{
			name:     "empty input",
			args:     []string{"apply", "-f", writeFile(t, dir, "empty.yaml", "# nothing\n---\n")},
			wantCode: 1,
			wantErr:  "error: no objects passed to apply\n",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := clienttest.NewServer(t)
			srv.Validate = rejectBad
			if tc.setup != nil {
				tc.setup(srv)
			}
			r := vmctl(t, srv, tc.stdin, tc.args...)
			if r.code != tc.wantCode || r.out != tc.wantOut || r.err != tc.wantErr {
				t.Errorf("exit %d, stdout:\n%s\nstderr:\n%s\nwant exit %d, stdout:\n%s\nstderr:\n%s", r.code, r.out, r.err, tc.wantCode, tc.wantOut, tc.wantErr)
			}
			for _, n := range tc.stored {
				if srv.Object(v1alpha1.KindVMDisk, "default", n) == nil && srv.Object(v1alpha1.KindVMInstance, "default", n) == nil {
					t.Errorf("%s was not stored", n)
				}
			}
			for _, n := range tc.absent {
				if srv.Object(v1alpha1.KindVMDisk, "default", n) != nil || srv.Object(v1alpha1.KindVMInstance, "default", n) != nil {
					t.Errorf("%s was stored", n)
				}
			}
		})
	}
}

// execOK runs vmctl and fails the test unless it succeeds.
func execOK(t *testing.T, srv *clienttest.Server, args ...string) string {
	t.Helper()
	r := vmctl(t, srv, "", args...)
	if r.code != 0 {
		t.Fatalf("vmctl %s: exit %d: %s", strings.Join(args, " "), r.code, r.err)
	}
	return r.out
}

func TestApplyDirectory(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "b-vm.yaml", vm)
	writeFile(t, dir, "a-disk.yml", disk)
	writeFile(t, dir, "README.md", "not a manifest")
	writeFile(t, dir, "sub/c.json", `{"apiVersion":"apps.cozystack.io/v1alpha1","kind":"VMDisk","metadata":{"name":"data"},"spec":{"source":{}}}`)

	srv := clienttest.NewServer(t)
	if got, want := execOK(t, srv, "apply", "-f", dir), "vmdisk/ubuntu created\nvminstance/web created\n"; got != want {
		t.Errorf("apply -f DIR:\n%s\nwant:\n%s", got, want)
	}
	if got, want := execOK(t, srv, "apply", "-R", "-f", dir), "vmdisk/ubuntu unchanged\nvminstance/web unchanged\nvmdisk/data created\n"; got != want {
		t.Errorf("apply -R -f DIR:\n%s\nwant:\n%s", got, want)
	}
}

func TestApplyStopsWhenDaemonIsDown(t *testing.T) {
	path := writeFile(t, t.TempDir(), "x.yaml", disk+"---\n"+vm)
	var out, errOut syncBuffer
	// The real factory, so --socket is honoured and nothing listens there.
	code := run(t.Context(), []string{"apply", "-f", path, "--socket", filepath.Join(t.TempDir(), "absent.sock")},
		IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, client.New)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if n := strings.Count(errOut.String(), "cannot reach vmd at "); n != 1 {
		t.Errorf("connection error printed %d times, want once:\n%s", n, errOut.String())
	}
	if !strings.HasSuffix(errOut.String(), "absent.sock: connect: no such file or directory (is vmd running?)\n") {
		t.Errorf("stderr = %q", errOut.String())
	}
}
