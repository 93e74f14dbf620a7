package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
)

const hdr = "apiVersion: apps.cozystack.io/v1alpha1\n"

func TestSplitDocuments(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		want  []string // "kind/name@namespace" per document
		index []int
	}{
		{name: "empty input", in: ""},
		{name: "only comments and separators", in: "# a\n---\n\n---\n# b\n...\n"},
		{
			name: "leading separator and comments",
			in:   "---\n# disk\n" + hdr + "kind: VMDisk\nmetadata: {name: a}\n---\n# vm\n" + hdr + "kind: VMInstance\nmetadata:\n  name: b\n  namespace: t\n",
			want: []string{"VMDisk/a@", "VMInstance/b@t"}, index: []int{0, 1},
		},
		{
			name: "empty documents are skipped and do not count",
			in:   "---\n---\n" + hdr + "kind: VMDisk\nmetadata: {name: a}\n---\n---\n" + hdr + "kind: VMDisk\nmetadata: {name: b}\n",
			want: []string{"VMDisk/a@", "VMDisk/b@"}, index: []int{0, 1},
		},
		{
			name: "content on the separator line",
			in:   `--- {"apiVersion": "apps.cozystack.io/v1alpha1", "kind": "VMDisk", "metadata": {"name": "j"}}` + "\n",
			want: []string{"VMDisk/j@"}, index: []int{0},
		},
		{
			name: "separator with a trailing comment, CRLF line ends",
			in:   "--- # first\r\n" + strings.ReplaceAll(hdr, "\n", "\r\n") + "kind: VMDisk\r\nmetadata: {name: c}\r\n",
			want: []string{"VMDisk/c@"}, index: []int{0},
		},
		{
			name: "document end marker",
			in:   hdr + "kind: VMDisk\nmetadata: {name: a}\n...\n---\n" + hdr + "kind: VMDisk\nmetadata: {name: b}\n",
			want: []string{"VMDisk/a@", "VMDisk/b@"}, index: []int{0, 1},
		},
		{
			name: "three dashes inside a block scalar still split (YAML spec)",
			in:   hdr + "kind: VMInstance\nmetadata: {name: a}\nspec:\n  cloudInit: |\n    a\n---\n" + hdr + "kind: VMDisk\nmetadata: {name: b}\n",
			want: []string{"VMInstance/a@", "VMDisk/b@"}, index: []int{0, 1},
		},
		{
			name: "not a separator: dashes followed by text",
			in:   hdr + "kind: VMInstance\nmetadata: {name: a}\nspec:\n  cloudInit: |\n    ---x\n",
			want: []string{"VMInstance/a@"}, index: []int{0},
		},
		{
			name: "identity read leniently",
			in:   "kind: 3\nmetadata: [a]\n",
			want: []string{"/@"}, index: []int{0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, err := SplitDocuments([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for i, d := range docs {
				got = append(got, string(d.TypeMeta.Kind)+"/"+d.Name+"@"+d.Namespace)
				if d.Index != tt.index[i] {
					t.Errorf("doc %d: Index = %d, want %d", i, d.Index, tt.index[i])
				}
				// Raw must decode on its own to the same identity.
				if _, err := Decode(d.Raw); err != nil && d.TypeMeta.Kind != "" {
					var inv *errdefs.InvalidError
					if !errors.As(err, &inv) {
						t.Errorf("doc %d: Raw does not decode: %v", i, err)
					}
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSplitDocumentsSyntaxError(t *testing.T) {
	in := hdr + "kind: VMDisk\nmetadata: {name: a}\n---\n" + hdr + "kind: VMDisk\nmetadata:\n  name: [b\n"
	_, err := SplitDocuments([]byte(in))
	var de *DocumentError
	if !errors.As(err, &de) {
		t.Fatalf("err = %v, want a *DocumentError", err)
	}
	if de.Index != 1 || de.Line != 5 {
		t.Errorf("Index, Line = %d, %d; want 1, 5", de.Index, de.Line)
	}
	if !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("a syntax error must match errdefs.ErrInvalid: %v", err)
	}
	// The YAML library counts lines per document; the message must count
	// them in the stream (the bad line is line 8 of the input).
	if !strings.Contains(err.Error(), "line 8") {
		t.Errorf("message does not point at line 8: %v", err)
	}
}

// fieldErrors returns "path: message" of every field error in err.
func fieldErrors(t *testing.T, err error) []string {
	t.Helper()
	var inv *errdefs.InvalidError
	if !errors.As(err, &inv) {
		t.Fatalf("err = %v (%T), want *errdefs.InvalidError", err, err)
	}
	var out []string
	for _, fe := range inv.Errors {
		out = append(out, fe.Error())
	}
	return out
}

func TestDecodeStrictErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // each a substring of one field error, in order
	}{
		{
			name: "missing apiVersion and kind",
			in:   "metadata: {name: a}\n",
			want: []string{"apiVersion: Required value", "kind: Required value: must be one of VMInstance, VMDisk"},
		},
		{
			name: "unknown apiVersion",
			in:   "apiVersion: v1\nkind: VMDisk\n",
			want: []string{`apiVersion: Unsupported value: "v1": supported values: "apps.cozystack.io/v1alpha1"`},
		},
		{
			name: "unknown kind lists the kinds",
			in:   hdr + "kind: VirtualMachine\n",
			want: []string{`kind: Unsupported value: "VirtualMachine": supported values: "VMInstance", "VMDisk"`},
		},
		{
			name: "kind of the wrong type",
			in:   hdr + "kind: [VMDisk]\n",
			want: []string{"kind: Invalid value: invalid type: expected string, got list"},
		},
		{
			name: "every unknown field and type error at once",
			in: hdr + "kind: VMInstance\nmetadata:\n  name: a\n  labels: {app: 3}\nspec:\n  disks:\n  - a\n  - {name: b, size: 1}\n" +
				"  externalPorts: [\"22\", 1.5, 99999999999999999999]\n  running: \"yes\"\n  resources: {cpu: [1]}\n",
			want: []string{
				"metadata.labels.app: Invalid value: 3: invalid type: expected string, got number",
				"spec.disks[1].size: Forbidden: unknown field (known fields: bus, name)",
				`spec.externalPorts[0]: Invalid value: "22": invalid type: expected integer, got string`,
				"spec.externalPorts[1]: Invalid value: 1.5: invalid type: expected integer, got a fractional number",
				"spec.externalPorts[2]: Invalid value: 100000000000000000000: out of range",
				"spec.resources.cpu: Invalid value: invalid type: expected string or number, got list",
				`spec.running: Invalid value: "yes": invalid type: expected boolean, got string`,
			},
		},
		{
			name: "case typo gets a suggestion",
			in:   hdr + "kind: VMInstance\nspec: {InstanceType: u1.small}\n",
			want: []string{`spec.InstanceType: Forbidden: unknown field; did you mean "instanceType"?`},
		},
		{
			name: "null list items and map values are type errors",
			in:   hdr + "kind: VMInstance\nmetadata: {labels: {a: null}}\nspec: {sshKeys: [null], disks: [null]}\n",
			want: []string{
				"metadata.labels.a: Invalid value: invalid type: expected string, got null",
				"spec.disks[0]: Invalid value: invalid type: expected string or object, got null",
				"spec.sshKeys[0]: Invalid value: invalid type: expected string, got null",
			},
		},
		{
			name: "null source member",
			in:   hdr + "kind: VMDisk\nspec:\n  source:\n    http:\n",
			want: []string{"spec.source.http: Invalid value: must be an object, not null; write `http: {}`"},
		},
		{
			name: "status must be an object",
			in:   hdr + "kind: VMDisk\nstatus: [a]\n",
			want: []string{"status: Invalid value: invalid type: expected object, got list"},
		},
		{
			name: "bad timestamp",
			in:   hdr + "kind: VMDisk\nmetadata: {creationTimestamp: 2024-13-01}\n",
			want: []string{"metadata.creationTimestamp: Invalid value: \"2024-13-01\": must be an RFC 3339 time"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj, err := Decode([]byte(tt.in))
			if err == nil {
				t.Fatalf("accepted: %+v", obj)
			}
			got := fieldErrors(t, err)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%s", len(got), len(tt.want), strings.Join(got, "\n"))
			}
			for i := range got {
				if !strings.Contains(got[i], tt.want[i]) {
					t.Errorf("error %d = %q, want it to contain %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestDecodeSyntaxErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "empty", in: "# nothing\n", want: "no document"},
		{name: "two documents", in: hdr + "kind: VMDisk\n---\n" + hdr + "kind: VMDisk\n", want: "expected one document, found 2"},
		{name: "duplicate key", in: hdr + "kind: VMDisk\nkind: VMInstance\n", want: `key "kind" already set in map`},
		{name: "duplicate key in JSON", in: `{"apiVersion": "apps.cozystack.io/v1alpha1", "kind": "VMDisk", "kind": "VMDisk"}`, want: "already set"},
		{name: "top-level list", in: "- a\n", want: "must be a mapping at the top level, not list"},
		{name: "top-level scalar", in: "hello\n", want: "not string"},
		{name: "broken YAML", in: hdr + "kind: VMDisk\nspec: {a: [}\n", want: "yaml: line 2: did not find expected node content"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("err does not match errdefs.ErrInvalid: %v", err)
			}
		})
	}
}

func TestDecodeAccepts(t *testing.T) {
	in := hdr + `kind: VMInstance
metadata:
  name: web
  uid: 7d2c
  resourceVersion: "12"
  creationTimestamp: "2024-05-01T10:00:00+02:00"
spec:
  disks:
    - web-system
    - name: web-data
      bus: scsi
  resources:
    cpu: 2
    sockets: "1"
    memory: 4Gi
  externalPorts: [22, 443]
status:
  phase: Running
  anything: [goes, here]
`
	obj, err := Decode([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	vm, ok := obj.(*v1alpha1.VMInstance)
	if !ok {
		t.Fatalf("decoded %T", obj)
	}
	if vm.Kind != v1alpha1.KindVMInstance || vm.APIVersion != v1alpha1.GroupVersion {
		t.Errorf("TypeMeta = %+v", vm.TypeMeta)
	}
	wantDisks := []v1alpha1.DiskRef{{Name: "web-system"}, {Name: "web-data", Bus: "scsi"}}
	if len(vm.Spec.Disks) != 2 || vm.Spec.Disks[0] != wantDisks[0] || vm.Spec.Disks[1] != wantDisks[1] {
		t.Errorf("disks = %+v", vm.Spec.Disks)
	}
	if r := vm.Spec.Resources; r == nil || r.CPU != "2" || r.Sockets != "1" || r.Memory != "4Gi" {
		t.Errorf("resources = %+v", vm.Spec.Resources)
	}
	if vm.Status.Phase != "" {
		t.Errorf("status was not dropped: %+v", vm.Status)
	}
	if vm.ObjectMeta.UID != "7d2c" || vm.ObjectMeta.ResourceVersion != "12" {
		t.Errorf("server metadata lost: %+v", vm.ObjectMeta)
	}
	if ts := vm.ObjectMeta.CreationTimestamp; ts == nil || ts.UTC().Hour() != 8 {
		t.Errorf("creationTimestamp = %v", ts)
	}
}

func TestDecodeAllReportsEveryBadDocument(t *testing.T) {
	in := hdr + "kind: VMDisk\nmetadata: {name: ok}\n---\n" +
		hdr + "kind: VMDisk\nmetadata: {name: one}\nspec: {size: 1}\n---\n" +
		hdr + "kind: VMInstance\nmetadata: {name: two}\nspec: {disk: [a]}\n"
	objs, err := DecodeAll([]byte(in))
	if err == nil || objs != nil {
		t.Fatalf("objs, err = %v, %v; want nil and an error", objs, err)
	}
	var got []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var de *DocumentError
		if !errors.As(e, &de) {
			t.Fatalf("%v is not a *DocumentError", e)
		}
		var inv *errdefs.InvalidError
		if !errors.As(de, &inv) {
			t.Fatalf("%v does not wrap an *errdefs.InvalidError", de)
		}
		got = append(got, de.Error())
	}
	want := []string{
		`document 2 (line 5): VMDisk "one" is invalid: spec.size: Forbidden: unknown field`,
		`document 3 (line 10): VMInstance "two" is invalid: spec.disk: Forbidden: unknown field; did you mean "disks"?`,
	}
	if len(got) != len(want) {
		t.Fatalf("got %d errors: %q", len(got), got)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("error %d = %q\nwant prefix %q", i, got[i], want[i])
		}
	}
}

func TestDecodeAllOrder(t *testing.T) {
	in := "# a stream\n---\n" + hdr + "kind: VMDisk\nmetadata: {name: d1}\n---\n" + hdr + "kind: VMInstance\nmetadata: {name: v1}\n"
	objs, err := DecodeAll([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[0].GetObjectMeta().Name != "d1" || objs[1].GetObjectMeta().Name != "v1" {
		t.Fatalf("objects out of order: %v", objs)
	}
}

// seedCorpus returns the manifests under api/v1alpha1/testdata, the fuzz
// targets' starting points.
func seedCorpus(t interface {
	Helper()
	Fatal(...any)
}) [][]byte {
	t.Helper()
	var out [][]byte
	for _, pat := range []string{"*/*.yaml", "*/*.json"} {
		files, err := filepath.Glob(filepath.Join("..", "..", "api", "v1alpha1", "testdata", pat))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b)
		}
	}
	if len(out) < 50 {
		t.Fatal("fuzz seed corpus missing: api/v1alpha1/testdata not found")
	}
	return out
}

func FuzzDecode(f *testing.F) {
	for _, b := range seedCorpus(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		obj, err := Decode(data)
		if err != nil {
			return
		}
		// Whatever Decode accepts must encode and decode back to the
		// same object (compared as JSON: time zones are normalised).
		first, err := json.Marshal(obj)
		if err != nil {
			t.Fatalf("accepted object does not marshal: %v", err)
		}
		again, err := Decode(first)
		if err != nil {
			t.Fatalf("own JSON rejected: %v\n%s", err, first)
		}
		second, err := json.Marshal(again)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, second) {
			t.Fatalf("round trip changed the object:\n%s\n%s", first, second)
		}
		// Defaulting and validation must not panic on anything decoded.
		v1alpha1.SetDefaults(again)
		_ = v1alpha1.Validate(again, nil)
	})
}

func FuzzDecodeAll(f *testing.F) {
	for _, b := range seedCorpus(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, splitErr := SplitDocuments(data)
		objs, err := DecodeAll(data)
		if err == nil && len(objs) != len(docs) {
			t.Fatalf("%d documents but %d objects", len(docs), len(objs))
		}
		if splitErr != nil && err == nil {
			t.Fatalf("SplitDocuments failed (%v) but DecodeAll did not", splitErr)
		}
	})
}
