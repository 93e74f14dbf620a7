package v1alpha1

import (
	"encoding/json"
	"reflect"
	"testing"
)

// specJSON decodes a spec written as JSON, failing the test on error.
func specJSON[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("decoding %s: %v", s, err)
	}
	return v
}

func TestSetDefaultsVMInstance(t *testing.T) {
	tests := []struct {
		name string
		in   string // spec as JSON
		want string // defaulted spec as JSON
	}{
		{
			name: "empty spec gets every chart default",
			in:   `{}`,
			want: `{"external":false,"externalMethod":"PortList","externalPorts":[22],"externalAllowICMP":true,
				"runStrategy":"Always","instanceType":"u1.medium","instanceProfile":"ubuntu"}`,
		},
		{
			name: "explicit values are kept",
			in: `{"external":true,"externalMethod":"WholeIP","externalPorts":[80,443],"externalAllowICMP":false,
				"runStrategy":"Manual","instanceType":"s1.large","instanceProfile":"debian"}`,
			want: `{"external":true,"externalMethod":"WholeIP","externalPorts":[80,443],"externalAllowICMP":false,
				"runStrategy":"Manual","instanceType":"s1.large","instanceProfile":"debian"}`,
		},
		{
			name: "explicit empty instanceType and profile stay empty",
			in:   `{"instanceType":"","instanceProfile":"","resources":{"cpu":2,"sockets":1,"memory":"4Gi"}}`,
			want: `{"external":false,"externalMethod":"PortList","externalPorts":[22],"externalAllowICMP":true,
				"runStrategy":"Always","instanceType":"","instanceProfile":"","resources":{"cpu":2,"sockets":1,"memory":"4Gi"}}`,
		},
		{
			name: "running false folds into Halted",
			in:   `{"running":false}`,
			want: `{"external":false,"externalMethod":"PortList","externalPorts":[22],"externalAllowICMP":true,
				"runStrategy":"Halted","instanceType":"u1.medium","instanceProfile":"ubuntu"}`,
		},
		{
			name: "running true folds into Always",
			in:   `{"running":true}`,
			want: `{"external":false,"externalMethod":"PortList","externalPorts":[22],"externalAllowICMP":true,
				"runStrategy":"Always","instanceType":"u1.medium","instanceProfile":"ubuntu"}`,
		},
		{
			name: "agreeing running and runStrategy fold into one",
			in:   `{"running":false,"runStrategy":"Halted"}`,
			want: `{"external":false,"externalMethod":"PortList","externalPorts":[22],"externalAllowICMP":true,
				"runStrategy":"Halted","instanceType":"u1.medium","instanceProfile":"ubuntu"}`,
		},
		{
			name: "contradicting running and runStrategy are both kept for validation",
			in:   `{"running":false,"runStrategy":"Always"}`,
			want: `{"external":false,"externalMethod":"PortList","externalPorts":[22],"externalAllowICMP":true,
				"running":false,"runStrategy":"Always","instanceType":"u1.medium","instanceProfile":"ubuntu"}`,
		},
		{
			name: "subnets are copied into empty networks",
			in:   `{"subnets":[{"name":"a"}]}`,
			want: `{"external":false,"externalMethod":"PortList","externalPorts":[22],"externalAllowICMP":true,
				"runStrategy":"Always","instanceType":"u1.medium","instanceProfile":"ubuntu",
				"networks":[{"name":"a"}],"subnets":[{"name":"a"}]}`,
		},
		{
			name: "networks win over subnets",
			in:   `{"networks":[{"name":"b"}],"subnets":[{"name":"a"}]}`,
			want: `{"external":false,"externalMethod":"PortList","externalPorts":[22],"externalAllowICMP":true,
				"runStrategy":"Always","instanceType":"u1.medium","instanceProfile":"ubuntu",
				"networks":[{"name":"b"}],"subnets":[{"name":"a"}]}`,
		},
		{
			name: "disks are kept as given",
			in:   `{"disks":["a",{"name":"b","bus":"sata"}]}`,
			want: `{"external":false,"externalMethod":"PortList","externalPorts":[22],"externalAllowICMP":true,
				"runStrategy":"Always","instanceType":"u1.medium","instanceProfile":"ubuntu",
				"disks":[{"name":"a"},{"name":"b","bus":"sata"}]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm := &VMInstance{Spec: specJSON[VMInstanceSpec](t, tt.in)}
			SetDefaultsVMInstance(vm)
			want := specJSON[VMInstanceSpec](t, tt.want)
			if !reflect.DeepEqual(vm.Spec, want) {
				got, _ := json.Marshal(vm.Spec)
				t.Errorf("spec = %s", got)
			}
			if vm.ObjectMeta.Namespace != DefaultNamespace {
				t.Errorf("namespace = %q, want %q", vm.ObjectMeta.Namespace, DefaultNamespace)
			}
		})
	}
}

// An explicit empty externalPorts list means "no ports" and must not be
// replaced by the default [22]; only an absent list is defaulted.
func TestSetDefaultsKeepsEmptyExternalPorts(t *testing.T) {
	vm := &VMInstance{Spec: VMInstanceSpec{ExternalPorts: []int{}}}
	SetDefaultsVMInstance(vm)
	if vm.Spec.ExternalPorts == nil || len(vm.Spec.ExternalPorts) != 0 {
		t.Fatalf("externalPorts = %#v, want an empty non-nil list", vm.Spec.ExternalPorts)
	}
}

func TestSetDefaultsVMDisk(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		want      string
		namespace string
	}{
		{
			name: "empty spec is a blank 5Gi replicated disk",
			in:   `{}`,
			want: `{"source":{},"optical":false,"storage":"5Gi","storageClass":"replicated"}`,
		},
		{
			name:      "explicit values are kept",
			in:        `{"source":{"image":{"name":"debian-12"}},"optical":true,"storage":"20Gi","storageClass":"local"}`,
			want:      `{"source":{"image":{"name":"debian-12"}},"optical":true,"storage":"20Gi","storageClass":"local"}`,
			namespace: "tenant-a",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &VMDisk{Spec: specJSON[VMDiskSpec](t, tt.in), ObjectMeta: ObjectMeta{Namespace: tt.namespace}}
			SetDefaultsVMDisk(d)
			if want := specJSON[VMDiskSpec](t, tt.want); !reflect.DeepEqual(d.Spec, want) {
				got, _ := json.Marshal(d.Spec)
				t.Errorf("spec = %s", got)
			}
			wantNS := tt.namespace
			if wantNS == "" {
				wantNS = DefaultNamespace
			}
			if d.ObjectMeta.Namespace != wantNS {
				t.Errorf("namespace = %q, want %q", d.ObjectMeta.Namespace, wantNS)
			}
		})
	}
}

// cozystack-api.md §3.1: `spec: {disks: [{name: ubuntu}]}` reads back with
// every chart default. (networks, subnets, gpus, sshKeys, cloudInit and the
// like are empty there too; omitempty leaves them out of the JSON.)
func TestRoundTripExampleFromCozystack(t *testing.T) {
	var vm VMInstance
	in := `{"apiVersion":"apps.cozystack.io/v1alpha1","kind":"VMInstance","metadata":{"name":"ubuntu"},
		"spec":{"disks":[{"name":"ubuntu"}]}}`
	if err := json.Unmarshal([]byte(in), &vm); err != nil {
		t.Fatal(err)
	}
	SetDefaults(&vm)
	got, err := vm.SpecJSON()
	if err != nil {
		t.Fatal(err)
	}
	var gotMap, wantMap map[string]any
	if err := json.Unmarshal(got, &gotMap); err != nil {
		t.Fatal(err)
	}
	want := `{"external":false,"externalMethod":"PortList","externalPorts":[22],"externalAllowICMP":true,
		"runStrategy":"Always","instanceType":"u1.medium","instanceProfile":"ubuntu","disks":[{"name":"ubuntu"}]}`
	if err := json.Unmarshal([]byte(want), &wantMap); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotMap, wantMap) {
		t.Errorf("defaulted spec = %s\nwant %s", got, want)
	}

	var d VMDisk
	if err := json.Unmarshal([]byte(`{"metadata":{"name":"ubuntu"},"spec":{}}`), &d); err != nil {
		t.Fatal(err)
	}
	SetDefaults(&d)
	if got, _ := d.SpecJSON(); string(got) != `{"source":{},"optical":false,"storage":"5Gi","storageClass":"replicated"}` {
		t.Errorf("defaulted disk spec = %s", got)
	}
}

// SetDefaults twice must equal SetDefaults once, for every shape of input.
func TestSetDefaultsIdempotent(t *testing.T) {
	specs := []string{
		`{}`,
		`{"running":true}`,
		`{"running":false,"runStrategy":"Always"}`,
		`{"running":true,"runStrategy":"Always"}`,
		`{"externalPorts":[],"instanceType":"","instanceProfile":""}`,
		`{"subnets":[{"name":"a"},{"name":"b"}]}`,
		`{"disks":["a"],"resources":{"cpu":"","memory":""}}`,
	}
	for _, s := range specs {
		t.Run(s, func(t *testing.T) {
			once := &VMInstance{Spec: specJSON[VMInstanceSpec](t, s)}
			SetDefaults(once)
			twice := &VMInstance{Spec: specJSON[VMInstanceSpec](t, s)}
			SetDefaults(twice)
			SetDefaults(twice)
			if !reflect.DeepEqual(once, twice) {
				a, _ := json.Marshal(once)
				b, _ := json.Marshal(twice)
				t.Errorf("not idempotent:\nonce  %s\ntwice %s", a, b)
			}
		})
	}
	disks := []string{`{}`, `{"storage":"1Ti","storageClass":"local","optical":true}`}
	for _, s := range disks {
		t.Run("disk "+s, func(t *testing.T) {
			once := &VMDisk{Spec: specJSON[VMDiskSpec](t, s)}
			SetDefaults(once)
			twice := &VMDisk{Spec: specJSON[VMDiskSpec](t, s)}
			SetDefaults(twice)
			SetDefaults(twice)
			if !reflect.DeepEqual(once, twice) {
				t.Errorf("not idempotent: %+v vs %+v", once.Spec, twice.Spec)
			}
		})
	}
}

// SetDefaults must tolerate nil objects of either kind (it is called on
// whatever a decoder produced).
func TestSetDefaultsNil(t *testing.T) {
	SetDefaults(nil)
	SetDefaults((*VMInstance)(nil))
	SetDefaults((*VMDisk)(nil))
}

func TestDiskRefForms(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []DiskRef
		wantErr bool
	}{
		{name: "Hikube bare strings", in: `["vm-system-disk","data"]`, want: []DiskRef{{Name: "vm-system-disk"}, {Name: "data"}}},
		{name: "Cozystack objects", in: `[{"name":"a"},{"name":"b","bus":"sata"}]`, want: []DiskRef{{Name: "a"}, {Name: "b", Bus: "sata"}}},
		{name: "mixed forms", in: `["a",{"name":"b","bus":"scsi"}]`, want: []DiskRef{{Name: "a"}, {Name: "b", Bus: "scsi"}}},
		{name: "number is refused", in: `[7]`, wantErr: true},
		{name: "list is refused", in: `[["a"]]`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []DiskRef
			err := json.Unmarshal([]byte(tt.in), &got)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
