package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client/clienttest"
)

func TestParseResourceArgs(t *testing.T) {
	vmi, vmd := v1alpha1.KindVMInstance, v1alpha1.KindVMDisk
	cases := []struct {
		name    string
		args    []string
		want    []resourceRef
		wantErr bool
	}{
		{name: "short name", args: []string{"vmi"}, want: []resourceRef{{kind: vmi, names: []string{}}}},
		{name: "plural with names", args: []string{"vmdisks", "a", "b"}, want: []resourceRef{{kind: vmd, names: []string{"a", "b"}}}},
		{name: "list of types", args: []string{"vmi,vmd"}, want: []resourceRef{{kind: vmi, names: []string{}}, {kind: vmd, names: []string{}}}},
		{name: "all", args: []string{"all"}, want: []resourceRef{{kind: vmi, names: []string{}}, {kind: vmd, names: []string{}}}},
		{name: "duplicates collapse", args: []string{"vmi,vminstance"}, want: []resourceRef{{kind: vmi, names: []string{}}}},
		{name: "kind spelling", args: []string{"VMInstance/web"}, want: []resourceRef{{kind: vmi, names: []string{"web"}}}},
		{name: "type/name", args: []string{"vmi/a", "vmi/b", "vmd/c"}, want: []resourceRef{{kind: vmi, names: []string{"a", "b"}}, {kind: vmd, names: []string{"c"}}}},
		{name: "mixed forms", args: []string{"vmi/a", "b"}, wantErr: true},
		{name: "unknown", args: []string{"pods"}, wantErr: true},
		{name: "none", args: nil, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseResourceArgs(tc.args)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error = %v, wantErr %v", err, tc.wantErr)
			}
			if err == nil && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	srv := clienttest.NewServer(t)
	if got := execOK(t, srv, "version", "--client"); got != "Client Version: dev\n" {
		t.Errorf("version --client = %q", got)
	}
	want := "Client Version: dev\nServer Version: v0.0.0-test\nHypervisor: qemu (test:///default)\n"
	if got := execOK(t, srv, "version"); got != want {
		t.Errorf("version = %q, want %q", got, want)
	}
	if got := execOK(t, srv, "version", "-o", "json"); !strings.Contains(got, `"domainType": "qemu"`) || !strings.Contains(got, `"clientVersion"`) {
		t.Errorf("version -o json = %s", got)
	}
}

func TestCompletion(t *testing.T) {
	srv := clienttest.NewServer(t)
	srv.Put(sampleVM("default", "web", 0))
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		if out := execOK(t, srv, "completion", shell); !strings.Contains(out, "vmctl") {
			t.Errorf("completion %s does not mention vmctl", shell)
		}
	}
	// Cobra's hidden __complete command drives dynamic completion.
	if out := execOK(t, srv, "__complete", "get", "vmi", ""); !strings.HasPrefix(out, "web\n") {
		t.Errorf("name completion = %q", out)
	}
	if out := execOK(t, srv, "__complete", "describe", "vm"); !strings.HasPrefix(out, "vminstances\nvmdisks\n") {
		t.Errorf("type completion = %q", out)
	}
}
