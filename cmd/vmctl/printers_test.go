package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

func TestAgeOf(t *testing.T) {
	cases := []struct {
		name string
		ago  time.Duration
		nil  bool
		want string
	}{
		{name: "no timestamp", nil: true, want: "<unknown>"},
		{name: "seconds", ago: 5 * time.Second, want: "5s"},
		{name: "under two minutes stays in seconds", ago: 119 * time.Second, want: "119s"},
		{name: "minutes and seconds", ago: 3*time.Minute + 12*time.Second, want: "3m12s"},
		{name: "whole minutes", ago: 5 * time.Minute, want: "5m"},
		{name: "minutes only past ten", ago: 42*time.Minute + 7*time.Second, want: "42m"},
		{name: "hours", ago: 4 * time.Hour, want: "4h"},
		{name: "hours and minutes", ago: 4*time.Hour + 30*time.Minute, want: "4h30m"},
		{name: "days", ago: 48 * time.Hour, want: "2d"},
		{name: "days and hours", ago: 50 * time.Hour, want: "2d2h"},
		{name: "clock skew of a second", ago: -time.Second, want: "0s"},
		{name: "future", ago: -time.Hour, want: "<invalid>"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := at(tc.ago)
			if tc.nil {
				ts = nil
			}
			if got := ageOf(ts, testNow); got != tc.want {
				t.Errorf("ageOf(%v) = %q, want %q", tc.ago, got, tc.want)
			}
		})
	}
}

func TestReadyColumn(t *testing.T) {
	cases := []struct {
		name  string
		conds []v1alpha1.Condition
		want  string
	}{
		{name: "no conditions", want: "Unknown"},
		{name: "true", conds: []v1alpha1.Condition{{Type: "Ready", Status: "True", Reason: "Running"}}, want: "True"},
		{name: "false shows the reason", conds: []v1alpha1.Condition{{Type: "Ready", Status: "False", Reason: "NotImplemented"}}, want: "NotImplemented"},
		{name: "false without reason", conds: []v1alpha1.Condition{{Type: "Ready", Status: "False"}}, want: "False"},
		{name: "unknown", conds: []v1alpha1.Condition{{Type: "Ready", Status: "Unknown", Reason: "Pending"}}, want: "Unknown"},
		{name: "other conditions only", conds: []v1alpha1.Condition{{Type: "InUse", Status: "True"}}, want: "Unknown"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := readyColumn(tc.conds); got != tc.want {
				t.Errorf("readyColumn = %q, want %q", got, tc.want)
			}
		})
	}
}

// pendingVM is a freshly applied VM that the controller has not acted on:
// only spec fields are known.
func pendingVM() *v1alpha1.VMInstance {
	return &v1alpha1.VMInstance{
		TypeMeta:   v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindVMInstance},
		ObjectMeta: v1alpha1.ObjectMeta{Namespace: "team-b", Name: "db", CreationTimestamp: at(5 * time.Second)},
		Spec:       v1alpha1.VMInstanceSpec{InstanceType: ptr(""), InstanceProfile: ptr("centos.stream9"), Running: ptr(false)},
	}
}

func TestTables(t *testing.T) {
	blank := &v1alpha1.VMDisk{
		TypeMeta:   v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindVMDisk},
		ObjectMeta: v1alpha1.ObjectMeta{Namespace: "default", Name: "scratch", CreationTimestamp: at(3 * 24 * time.Hour)},
		Spec:       v1alpha1.VMDiskSpec{Storage: "5Gi", StorageClass: "local"},
		Status: v1alpha1.VMDiskStatus{Phase: "Ready", Size: 5 << 30, Format: "qcow2", Path: "/var/lib/vmd/volumes/scratch.qcow2",
			Conditions: []v1alpha1.Condition{{Type: "Ready", Status: "True"}}},
	}
	cases := []struct {
		name string
		kind v1alpha1.Kind
		objs []v1alpha1.Object
		opts tableOptions
		want string
	}{
		{
			name: "vminstances",
			kind: v1alpha1.KindVMInstance,
			objs: []v1alpha1.Object{sampleVM("default", "web", 3*time.Minute+12*time.Second), pendingVM()},
			want: `
NAME   PHASE     TYPE        PROFILE          IP          READY     AGE
web    Running   u1.medium   ubuntu           10.77.0.5   True      3m12s
db     <none>    custom      centos.stream9   <none>      Unknown   5s
`,
		},
		{
			name: "vminstances wide across namespaces",
			kind: v1alpha1.KindVMInstance,
			objs: []v1alpha1.Object{sampleVM("default", "web", 4*time.Hour), pendingVM()},
			opts: tableOptions{wide: true, withNamespace: true},
			want: `
NAMESPACE   NAME   PHASE     TYPE        PROFILE          IP          READY     AGE   RUNSTRATEGY   DISKS           EXTERNAL     UUID
default     web    Running   u1.medium   ubuntu           10.77.0.5   True      4h    Always        web-root,data   192.0.2.10   5f0c3c1e-0000-4000-8000-000000000001
team-b      db     <none>    custom      centos.stream9   <none>      Unknown   5s    Halted        <none>          <none>       <none>
`,
		},
		{
			name: "vmdisks",
			kind: v1alpha1.KindVMDisk,
			objs: []v1alpha1.Object{sampleDisk("default", "ubuntu", 30*time.Second), blank},
			want: `
NAME      PHASE       PROGRESS   SIZE   CLASS        SOURCE                         READY       AGE
ubuntu    Importing   42.5%      20Gi   replicated   http:cloud-images.ubuntu.com   Importing   30s
scratch   Ready       N/A        5Gi    local        blank                          True        3d
`,
		},
		{
			name: "vmdisks wide with kind prefix",
			kind: v1alpha1.KindVMDisk,
			objs: []v1alpha1.Object{blank},
			opts: tableOptions{wide: true, withKind: true},
			want: `
NAME             PHASE   PROGRESS   SIZE   CLASS   SOURCE   READY   AGE   PATH                                 FORMAT
vmdisk/scratch   Ready   N/A        5Gi    local   blank    True    3d    /var/lib/vmd/volumes/scratch.qcow2   qcow2
`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.now = testNow
			var buf bytes.Buffer
			if err := printTable(&buf, tc.kind, tc.objs, tc.opts, true); err != nil {
				t.Fatal(err)
			}
			if got, want := buf.String(), strings.TrimPrefix(tc.want, "\n"); got != want {
				t.Errorf("table:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestDiskSource(t *testing.T) {
	cases := []struct {
		name string
		src  v1alpha1.DiskSource
		want string
	}{
		{name: "blank", want: "blank"},
		{name: "image", src: v1alpha1.DiskSource{Image: &v1alpha1.ImageSource{Name: "ubuntu"}}, want: "image:ubuntu"},
		{name: "http", src: v1alpha1.DiskSource{HTTP: &v1alpha1.HTTPSource{URL: "https://example.org/a.iso"}}, want: "http:example.org"},
		{name: "clone", src: v1alpha1.DiskSource{Disk: &v1alpha1.DiskClone{Name: "golden"}}, want: "disk:golden"},
		{name: "upload", src: v1alpha1.DiskSource{Upload: &v1alpha1.UploadSource{}}, want: "upload"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := diskSource(&v1alpha1.VMDisk{Spec: v1alpha1.VMDiskSpec{Source: tc.src}}); got != tc.want {
				t.Errorf("diskSource = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPrintObjects(t *testing.T) {
	vm := sampleVM("default", "web", time.Minute)
	disk := sampleDisk("default", "ubuntu", time.Minute)

	t.Run("single object as yaml", func(t *testing.T) {
		var buf bytes.Buffer
		if err := printObjects(&buf, outputYAML, []v1alpha1.Object{vm}, true); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(buf.String(), "apiVersion: apps.cozystack.io/v1alpha1\nkind: VMInstance\nmetadata:\n") {
			t.Errorf("yaml does not start with the object header:\n%s", buf.String())
		}
		var back v1alpha1.VMInstance
		if err := yaml.UnmarshalStrict(buf.Bytes(), &back); err != nil {
			t.Fatalf("yaml does not decode strictly back into a VMInstance: %v", err)
		}
		if back.Status.UUID != vm.Status.UUID || *back.Spec.InstanceType != "u1.medium" {
			t.Errorf("round trip lost data: %+v", back)
		}
	})
	t.Run("several objects as a json list", func(t *testing.T) {
		var buf bytes.Buffer
		if err := printObjects(&buf, outputJSON, []v1alpha1.Object{vm, disk}, false); err != nil {
			t.Fatal(err)
		}
		var l struct {
			APIVersion string            `json:"apiVersion"`
			Kind       string            `json:"kind"`
			Items      []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(buf.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		if l.APIVersion != "v1" || l.Kind != "List" || len(l.Items) != 2 {
			t.Errorf("list header %s/%s with %d items", l.APIVersion, l.Kind, len(l.Items))
		}
		if !strings.Contains(string(l.Items[1]), `"kind": "VMDisk"`) {
			t.Errorf("second item is not the disk: %s", l.Items[1])
		}
	})
	t.Run("empty list as yaml", func(t *testing.T) {
		var buf bytes.Buffer
		if err := printObjects(&buf, outputYAML, nil, false); err != nil {
			t.Fatal(err)
		}
		want := "apiVersion: v1\nitems: []\nkind: List\nmetadata:\n  resourceVersion: \"\"\n"
		if buf.String() != want {
			t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
		}
	})
	t.Run("names", func(t *testing.T) {
		var buf bytes.Buffer
		printName(&buf, vm)
		printName(&buf, disk)
		if want := "vminstance/web\nvmdisk/ubuntu\n"; buf.String() != want {
			t.Errorf("got %q, want %q", buf.String(), want)
		}
	})
}

func TestDescribe(t *testing.T) {
	var buf bytes.Buffer
	describe(&buf, sampleVM("default", "web", time.Hour), testNow)
	got := buf.String()
	for _, want := range []string{
		"Name:                   web\n",
		"Labels:                 app=web\n",
		"Created:                2025-06-01T11:00:00Z (60m ago)\n",
		"Spec:\n",
		"  Disks:                web-root, data (scsi)\n",
		"  External:             true (PortList, ports 22, 443, ICMP allowed)\n",
		"Status:\n",
		"  Addresses:            192.0.2.10 (External), 10.77.0.5 (Private, 52:54:00:aa:bb:cc)\n",
		"Conditions:\n  TYPE    STATUS   REASON    MESSAGE   AGE\n  Ready   True     Running   <none>    2m\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("describe output lacks %q:\n%s", want, got)
		}
	}

	buf.Reset()
	describe(&buf, pendingVM(), testNow)
	for _, want := range []string{"  Instance Type:        custom\n", "  Run Strategy:         Halted\n", "Conditions:  <none>\n"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("describe of a pending VM lacks %q:\n%s", want, buf.String())
		}
	}
}

func TestDescribeDiskBackingFile(t *testing.T) {
	d := &v1alpha1.VMDisk{
		TypeMeta:   v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindVMDisk},
		ObjectMeta: v1alpha1.ObjectMeta{Namespace: "default", Name: "system", CreationTimestamp: at(time.Minute)},
		Spec:       v1alpha1.VMDiskSpec{Storage: "10Gi", StorageClass: "local"},
		Status: v1alpha1.VMDiskStatus{Phase: "Ready", Format: "qcow2", Path: "/var/lib/vmd/pools/local/default/system-1.qcow2",
			BackingFile: "/var/lib/vmd/images/debian-12.qcow2", BackingFormat: "qcow2"},
	}
	var buf bytes.Buffer
	describe(&buf, d, testNow)
	if want := "  Backing File:         /var/lib/vmd/images/debian-12.qcow2 (qcow2, read-only, shared)\n"; !strings.Contains(buf.String(), want) {
		t.Errorf("describe vmd lacks %q:\n%s", want, buf.String())
	}
	d.Status.BackingFile = ""
	buf.Reset()
	describe(&buf, d, testNow)
	if strings.Contains(buf.String(), "Backing File") {
		t.Errorf("a standalone volume shows a backing file:\n%s", buf.String())
	}
}

func TestSelector(t *testing.T) {
	labels := map[string]string{"app": "web", "tier": "front"}
	cases := []struct {
		name    string
		sel     string
		want    bool
		wantErr bool
	}{
		{name: "empty matches", sel: "", want: true},
		{name: "equality", sel: "app=web", want: true},
		{name: "double equals", sel: "app==web", want: true},
		{name: "and", sel: "app=web,tier=back", want: false},
		{name: "inequality", sel: "tier!=back", want: true},
		{name: "inequality of a missing key holds", sel: "zone!=a", want: true},
		{name: "exists", sel: "tier", want: true},
		{name: "not exists", sel: "!tier", want: false},
		{name: "set based is refused", sel: "app in (web)", wantErr: true},
		{name: "empty term", sel: "app=web,", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := parseSelector(tc.sel)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseSelector(%q) error = %v, wantErr %v", tc.sel, err, tc.wantErr)
			}
			if err == nil && sel.matches(labels) != tc.want {
				t.Errorf("matches = %v, want %v", !tc.want, tc.want)
			}
		})
	}
}
