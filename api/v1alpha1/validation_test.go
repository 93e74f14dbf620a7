package v1alpha1

import (
	"encoding/json"
	"math"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// fakeCatalog is a tiny Catalog for unit tests of this package; the
// fixture tests (package v1alpha1_test) use the real internal/catalog.
type fakeCatalog struct{}

const gi = int64(1) << 30

func (fakeCatalog) InstanceType(n string) (InstanceTypeInfo, bool) {
	switch n {
	case "u1.nano":
		return InstanceTypeInfo{Name: n, CPU: 1, Memory: gi / 2}, true
	case "u1.medium":
		return InstanceTypeInfo{Name: n, CPU: 1, Memory: 4 * gi}, true
	case "u1.large":
		return InstanceTypeInfo{Name: n, CPU: 2, Memory: 8 * gi}, true
	}
	return InstanceTypeInfo{}, false
}
func (fakeCatalog) InstanceTypeNames() []string { return []string{"u1.large", "u1.medium", "u1.nano"} }
func (fakeCatalog) Profile(n string) (ProfileInfo, bool) {
	switch n {
	case "ubuntu":
		return ProfileInfo{Name: n, MinCPU: 1, MinMemory: 2 * gi}, true
	case "windows":
		return ProfileInfo{Name: "windows.11", MinCPU: 2, MinMemory: 4 * gi}, true
	}
	return ProfileInfo{}, false
}
func (fakeCatalog) ProfileNames() []string { return []string{"ubuntu", "windows"} }
func (fakeCatalog) GoldenImage(n string) (GoldenImageInfo, bool) {
	switch n {
	case "ubuntu-2404":
		return GoldenImageInfo{Name: n, MinStorage: 4 * gi}, true
	case "proxmox-9":
		return GoldenImageInfo{Name: n, MinStorage: 2 * gi, ISO: true}, true
	}
	return GoldenImageInfo{}, false
}
func (fakeCatalog) GoldenImageNames() []string { return []string{"proxmox-9", "ubuntu-2404"} }

// newVM returns a valid VMInstance to be modified by a test.
func newVM(mut func(*VMInstance)) *VMInstance {
	vm := &VMInstance{
		TypeMeta:   TypeMeta{APIVersion: GroupVersion, Kind: KindVMInstance},
		ObjectMeta: ObjectMeta{Name: "web"},
	}
	if mut != nil {
		mut(vm)
	}
	return vm
}

// newDisk returns a valid VMDisk to be modified by a test.
func newDisk(mut func(*VMDisk)) *VMDisk {
	d := &VMDisk{
		TypeMeta:   TypeMeta{APIVersion: GroupVersion, Kind: KindVMDisk},
		ObjectMeta: ObjectMeta{Name: "data"},
	}
	if mut != nil {
		mut(d)
	}
	return d
}

// errorText joins errors one per line for matching and failure output.
func errorText(errs field.ErrorList) string {
	s := make([]string, len(errs))
	for i, e := range errs {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		obj  Object
		cat  Catalog
		want []string // substrings, each expected in one error; none = valid
	}{
		{name: "minimal vm", obj: newVM(nil), cat: fakeCatalog{}},
		{name: "minimal disk", obj: newDisk(nil), cat: fakeCatalog{}},
		{
			name: "nil catalog skips look-ups but not shape rules",
			obj: newVM(func(v *VMInstance) {
				v.Spec.InstanceType = ptrTo("x9.mega")
				v.Spec.Resources = &Resources{CPU: "2", Sockets: "1", Memory: "4Gi"}
			}),
			want: []string{`spec.resources: Forbidden: may not be set together with instance type "x9.mega"`},
		},
		{
			name: "unknown instance type lists the catalogue",
			obj:  newVM(func(v *VMInstance) { v.Spec.InstanceType = ptrTo("u1.huge") }),
			cat:  fakeCatalog{},
			want: []string{`spec.instanceType: Unsupported value: "u1.huge": supported values: "u1.large", "u1.medium", "u1.nano"`},
		},
		{
			name: "profile alias is resolved and named in the message",
			obj:  newVM(func(v *VMInstance) { v.Spec.InstanceProfile = ptrTo("windows") }),
			cat:  fakeCatalog{},
			want: []string{
				`spec.instanceType: Invalid value: "u1.medium": instance type "u1.medium" (the default) provides 1 vCPU but profile "windows" (windows.11) requires at least 2`,
			},
		},
		{
			name: "profile minimum from custom resources",
			obj: newVM(func(v *VMInstance) {
				v.Spec.InstanceType = ptrTo("")
				v.Spec.Resources = &Resources{CPU: "1", Sockets: "1", Memory: "1Gi"}
			}),
			cat:  fakeCatalog{},
			want: []string{`spec.resources.memory: Invalid value: "1Gi": resources (1 vCPU) provides 1Gi of memory but profile "ubuntu" requires at least 2Gi`},
		},
		{
			name: "no profile means no minimum",
			obj: newVM(func(v *VMInstance) {
				v.Spec.InstanceType = ptrTo("u1.nano")
				v.Spec.InstanceProfile = ptrTo("")
			}),
			cat: fakeCatalog{},
		},
		{
			name: "cores times sockets counts toward the profile minimum",
			obj: newVM(func(v *VMInstance) {
				v.Spec.InstanceType = ptrTo("")
				v.Spec.InstanceProfile = ptrTo("windows")
				v.Spec.Resources = &Resources{CPU: "1", Sockets: "2", Memory: "4Gi"}
			}),
			cat: fakeCatalog{},
		},
		{
			name: "wrong apiVersion and kind",
			obj: newDisk(func(d *VMDisk) {
				d.TypeMeta = TypeMeta{APIVersion: "v1", Kind: KindVMInstance}
			}),
			cat: fakeCatalog{},
			want: []string{
				`apiVersion: Unsupported value: "v1": supported values: "apps.cozystack.io/v1alpha1"`,
				`kind: Unsupported value: "VMInstance": supported values: "VMDisk"`,
			},
		},
		{
			name: "golden ISO needs optical and enough storage",
			obj: newDisk(func(d *VMDisk) {
				d.Spec.Source.Image = &ImageSource{Name: "proxmox-9"}
				d.Spec.Storage = "1Gi"
			}),
			cat: fakeCatalog{},
			want: []string{
				`spec.storage: Invalid value: "1Gi": golden image "proxmox-9" needs at least 2Gi`,
				`spec.optical: Invalid value: false: golden image "proxmox-9" is an installer ISO`,
			},
		},
		{
			name: "absurd storage does not overflow",
			obj:  newDisk(func(d *VMDisk) { d.Spec.Storage = "1e30" }),
			cat:  fakeCatalog{},
			want: []string{`spec.storage: Invalid value: "1e30": must be at most 64Ti`},
		},
		{
			name: "URL with IPv6 host and port",
			obj: newDisk(func(d *VMDisk) {
				d.Spec.Source.HTTP = &HTTPSource{URL: "http://[2001:db8::1]:8080/a.img"}
			}),
			cat: fakeCatalog{},
		},
		{
			name: "nil object",
			obj:  (*VMDisk)(nil),
			want: []string{`kind: Unsupported value: "*v1alpha1.VMDisk"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := Validate(tt.obj, tt.cat)
			text := errorText(errs)
			if len(tt.want) == 0 && len(errs) > 0 {
				t.Fatalf("unexpected errors:\n%s", text)
			}
			if len(errs) != len(tt.want) {
				t.Errorf("got %d errors, want %d:\n%s", len(errs), len(tt.want), text)
			}
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("missing %q in:\n%s", w, text)
				}
			}
		})
	}
}

// The name limits are Cozystack's: exactly 41 (VMInstance) and 45 (VMDisk)
// characters pass, one more fails.
func TestValidateNameLengths(t *testing.T) {
	tests := []struct {
		name  string
		kind  Kind
		n     int
		valid bool
	}{
		{name: "vminstance 41", kind: KindVMInstance, n: 41, valid: true},
		{name: "vminstance 42", kind: KindVMInstance, n: 42},
		{name: "vmdisk 45", kind: KindVMDisk, n: 45, valid: true},
		{name: "vmdisk 46", kind: KindVMDisk, n: 46},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := "a" + strings.Repeat("b", tt.n-1)
			errs := ValidateName(tt.kind, name, field.NewPath("metadata", "name"))
			if (len(errs) == 0) != tt.valid {
				t.Fatalf("len %d valid=%v, errors: %v", tt.n, tt.valid, errs)
			}
			if len(DomainName(name)) > 53 && tt.kind == KindVMInstance && tt.valid {
				t.Errorf("domain name %q exceeds the 53-character release name", DomainName(name))
			}
		})
	}
}

func TestValidateCloudInit(t *testing.T) {
	tests := []struct {
		name string
		ud   string
		want string // substring of the error; "" = accepted
	}{
		{name: "empty", ud: ""},
		{name: "header only", ud: "#cloud-config\n"},
		{name: "mapping", ud: "#cloud-config\npackages: [htop]\n"},
		{name: "header with trailing spaces", ud: "#cloud-config  \r\nhostname: a\n"},
		{name: "syntax error", ud: "#cloud-config\na: [\n", want: "is not valid YAML"},
		{name: "list at top", ud: "#cloud-config\n- a\n", want: "must be a mapping at the top level, not a list"},
		{name: "scalar at top", ud: "#cloud-config\nhello\n", want: "not a string"},
		{name: "archive list", ud: "#cloud-config-archive\n- type: text/cloud-config\n  content: 'a: b'\n"},
		{name: "archive mapping", ud: "#cloud-config-archive\na: b\n", want: "must be a list at the top level"},
		{name: "shell script", ud: "#!/bin/sh\necho [\n"},
		{name: "jinja template", ud: "## template: jinja\n#cloud-config\nhostname: {{ v1.local_hostname }\n"},
		{name: "multipart", ud: "Content-Type: multipart/mixed; boundary=\"x\"\n\n--x\n"},
		{name: "unknown format passes", ud: "#include\nhttps://example.com/ud\n"},
		{name: "too large", ud: "#!/bin/sh\n" + strings.Repeat("#", MaxCloudInitBytes), want: "Too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := errorText(validateCloudInit(tt.ud, field.NewPath("spec", "cloudInit")))
			if tt.want == "" && text != "" {
				t.Fatalf("unexpected error: %s", text)
			}
			if !strings.Contains(text, tt.want) {
				t.Fatalf("error %q does not contain %q", text, tt.want)
			}
		})
	}
}

func TestValidateUpdate(t *testing.T) {
	tests := []struct {
		name     string
		old, new Object
		want     []string
	}{
		{
			name: "disk grows",
			old:  newDisk(func(d *VMDisk) { d.Spec.Storage = "10Gi" }),
			new:  newDisk(func(d *VMDisk) { d.Spec.Storage = "11Gi" }),
		},
		{
			name: "disk shrinks",
			old:  newDisk(func(d *VMDisk) { d.Spec.Storage = "20Gi" }),
			new:  newDisk(func(d *VMDisk) { d.Spec.Storage = "10Gi" }),
			want: []string{"spec.storage: Forbidden: may not decrease from 20Gi to 10Gi"},
		},
		{
			name: "sha256 added to an http source changes the source",
			old:  newDisk(func(d *VMDisk) { d.Spec.Source.HTTP = &HTTPSource{URL: "https://example.com/a"} }),
			new: newDisk(func(d *VMDisk) {
				d.Spec.Source.HTTP = &HTTPSource{URL: "https://example.com/a", SHA256: strings.Repeat("a", 64)}
			}),
			want: []string{"spec.source: Invalid value: field is immutable"},
		},
		{
			name: "vm spec changes freely, identity does not",
			old:  newVM(nil),
			new: newVM(func(v *VMInstance) {
				v.ObjectMeta.Namespace = "other"
				v.Spec.RunStrategy = RunStrategyHalted
			}),
			want: []string{`metadata.namespace: Invalid value: "other": field is immutable (was "default")`},
		},
		{
			name: "kind change",
			old:  newVM(nil),
			new:  newDisk(nil),
			want: []string{"kind: Invalid value: \"VMDisk\": field is immutable (was VMInstance)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := ValidateUpdate(tt.new, tt.old, fakeCatalog{})
			text := errorText(errs)
			if len(errs) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%s", len(errs), len(tt.want), text)
			}
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("missing %q in:\n%s", w, text)
				}
			}
		})
	}
}

func TestDomainName(t *testing.T) {
	if got := DomainName("web"); got != "vm-instance-web" {
		t.Fatalf("DomainName(web) = %q", got)
	}
}

// referenceName is the name rule written the obvious way, to check the
// real one against.
var referenceName = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)

func FuzzName(f *testing.F) {
	for _, s := range []string{"web", "a", "vm-1", "1vm", "-a", "a-", "A", "a.b", "a_b", "", strings.Repeat("a", 45), strings.Repeat("a", 46), "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		for _, kind := range Kinds {
			errs := ValidateName(kind, name, field.NewPath("metadata", "name"))
			want := referenceName.MatchString(name) && len(name) <= kind.MaxNameLength()
			if (len(errs) == 0) != want {
				t.Fatalf("%s name %q: valid=%v, reference says %v (%v)", kind, name, len(errs) == 0, want, errs)
			}
		}
	})
}

func FuzzQuantity(f *testing.F) {
	for _, s := range []string{`"5Gi"`, `"1.5Gi"`, `2`, `"500m"`, `1e3`, `"1e30"`, `-1`, `"-5Gi"`, `null`, `"abc"`, `true`, `[]`, `"0.0001"`, `"9223372036854775807"`} {
		f.Add([]byte(s))
	}
	maxInt := resource.NewQuantity(math.MaxInt64, resource.DecimalSI)
	f.Fuzz(func(t *testing.T, data []byte) {
		var q Quantity
		if q.UnmarshalJSON(data) != nil {
			return
		}
		p, err := q.Parse()
		b, berr := q.Bytes()
		if (err == nil) != (berr == nil) {
			t.Fatalf("%q: Parse err %v but Bytes err %v", q, err, berr)
		}
		if err != nil {
			return
		}
		// Within int64 range, Bytes is the value rounded up, never less.
		if p.Sign() >= 0 && p.Cmp(*maxInt) < 0 {
			if b != p.Value() {
				t.Fatalf("%q: Bytes %d, Value %d", q, b, p.Value())
			}
			if resource.NewQuantity(b, resource.DecimalSI).Cmp(p) < 0 {
				t.Fatalf("%q: Bytes %d is less than the quantity", q, b)
			}
		}
		if q.MustBytes() != b {
			t.Fatalf("%q: MustBytes %d, Bytes %d", q, q.MustBytes(), b)
		}
		// A quantity that decoded must encode again (the store and
		// DeepCopyObject go through JSON) and decode to itself.
		enc, err := json.Marshal(q)
		if err != nil {
			t.Fatalf("%q: marshal: %v", q, err)
		}
		var back Quantity
		if err := json.Unmarshal(enc, &back); err != nil || back != q {
			t.Fatalf("%q: round trip gave %q (%v)", q, back, err)
		}
	})
}
