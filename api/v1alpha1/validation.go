package v1alpha1

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"
)

// Validation limits. Each is either Cozystack's (so an object valid here
// can move to Hikube) or a documented vmd choice.
const (
	// InstanceNamePrefix and DiskNamePrefix are what Cozystack puts in
	// front of metadata.name to name the Helm release, the KubeVirt VM and
	// the DataVolume. The kinds' MaxNameLength keeps prefix+name within
	// Helm's 53-character release name.
	InstanceNamePrefix = "vm-instance-"
	DiskNamePrefix     = "vm-disk-"

	// MaxCloudInitBytes bounds spec.cloudInit. NoCloud itself has no
	// limit; Cozystack stores user-data in a Secret, which Kubernetes caps
	// at 1 MiB, so the same cap keeps manifests portable.
	MaxCloudInitBytes = 1 << 20
	// MaxCloudInitSeedLength bounds spec.cloudInitSeed (it is only hashed;
	// the bound stops it being used as a data channel).
	MaxCloudInitSeedLength = 253
	// MaxVCPUs bounds resources.cpu × resources.sockets: QEMU's q35
	// machine accepts at most 1024 vCPUs.
	MaxVCPUs = 1024
	// MaxAnnotationsBytes is the Kubernetes limit on the total size of
	// metadata.annotations.
	MaxAnnotationsBytes = 256 << 10
)

// Size limits as quantities, compared with Quantity.Cmp so that absurd
// values (1e30) cannot overflow an int64 comparison.
var (
	minMemory      = resource.MustParse("64Mi")
	minStorage     = resource.MustParse("1Mi")
	maxStorage     = resource.MustParse("64Ti")
	gpuMinMemory   = resource.MustParse("4Gi")
	supportedBuses = []string{"virtio", "sata", "scsi"}
	httpSchemes    = []string{"http", "https"}
	// cpuModelRegexp accepts libvirt cpu_map names (Skylake-Server-IBRS,
	// EPYC-Rome, qemu64) and KubeVirt's host-model / host-passthrough.
	cpuModelRegexp = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
)

// DomainName returns the libvirt domain name of a VMInstance. It is the
// name KubeVirt gives the VM under Cozystack, which is also the guest's
// hostname, so guests see the same identity on both platforms.
func DomainName(vmName string) string { return InstanceNamePrefix + vmName }

// Validate checks a VMInstance or VMDisk as submitted for creation and
// returns every problem at once, each with its field path. It accepts
// defaulted and un-defaulted objects alike; an unset field is judged by its
// default (a missing instanceType is u1.medium). c answers which instance
// types, profiles and golden images exist; with a nil Catalog those
// look-ups are skipped and only the shape of the names is checked.
//
// Validating before SetDefaults gives slightly better messages (an error
// can say "u1.medium (the default)"); the verdict and the field paths are
// the same either way.
func Validate(obj Object, c Catalog) field.ErrorList {
	switch o := obj.(type) {
	case *VMInstance:
		if o != nil {
			return validateVMInstance(o, c)
		}
	case *VMDisk:
		if o != nil {
			return validateVMDisk(o, c)
		}
	}
	return field.ErrorList{field.NotSupported(field.NewPath("kind"), fmt.Sprintf("%T", obj), Kinds)}
}

// ValidateUpdate is Validate for a change from oldObj to newObj, plus the
// rules that only make sense across versions: the name and namespace are
// fixed; a disk never shrinks and keeps its storage class and source (the
// data was imported once; Cozystack copies the DataVolume spec back
// verbatim for the same reason). optical stays mutable, as in Cozystack.
func ValidateUpdate(newObj, oldObj Object, c Catalog) field.ErrorList {
	errs := Validate(newObj, c)
	switch n := newObj.(type) {
	case *VMInstance:
		o, ok := oldObj.(*VMInstance)
		if !ok || n == nil || o == nil {
			return append(errs, kindChanged(oldObj, newObj))
		}
		errs = append(errs, validateMetaUpdate(&n.ObjectMeta, &o.ObjectMeta)...)
	case *VMDisk:
		o, ok := oldObj.(*VMDisk)
		if !ok || n == nil || o == nil {
			return append(errs, kindChanged(oldObj, newObj))
		}
		errs = append(errs, validateMetaUpdate(&n.ObjectMeta, &o.ObjectMeta)...)
		errs = append(errs, validateVMDiskSpecUpdate(&n.Spec, &o.Spec, field.NewPath("spec"))...)
	}
	return errs
}

// kindChanged reports an update that would change the kind of an object.
func kindChanged(oldObj, newObj Object) *field.Error {
	return field.Invalid(field.NewPath("kind"), kindOf(newObj), fmt.Sprintf("field is immutable (was %s)", kindOf(oldObj)))
}

// kindOf names the kind of obj for messages.
func kindOf(obj Object) string {
	switch obj.(type) {
	case *VMInstance:
		return string(KindVMInstance)
	case *VMDisk:
		return string(KindVMDisk)
	}
	return fmt.Sprintf("%T", obj)
}

// ValidateName checks metadata.name of an object of the given kind: a
// DNS-1035 label no longer than kind.MaxNameLength(). It is exported for
// callers that take a name on its own (the CLI, URL paths).
func ValidateName(kind Kind, name string, fldPath *field.Path) field.ErrorList {
	if name == "" {
		return field.ErrorList{field.Required(fldPath, "name is required")}
	}
	var errs field.ErrorList
	if limit := kind.MaxNameLength(); len(name) > limit {
		errs = append(errs, field.Invalid(fldPath, name, fmt.Sprintf(
			"must be no more than %d characters (%s names get a %q prefix in Cozystack and the result must fit a 53-character Helm release name)",
			limit, kind, namePrefix(kind))))
	}
	if !dns1035LabelRegexp.MatchString(name) {
		errs = append(errs, field.Invalid(fldPath, name, regexError(dns1035LabelErrMsg, dns1035LabelFmt, "my-name", "abc-123")))
	}
	return errs
}

// namePrefix returns the Cozystack release prefix of a kind.
func namePrefix(kind Kind) string {
	if kind == KindVMDisk {
		return DiskNamePrefix
	}
	return InstanceNamePrefix
}

// validateTypeMeta requires the exact apiVersion and the kind of the Go type.
func validateTypeMeta(tm *TypeMeta, want Kind) field.ErrorList {
	var errs field.ErrorList
	switch tm.APIVersion {
	case GroupVersion:
	case "":
		errs = append(errs, field.Required(field.NewPath("apiVersion"), "must be "+GroupVersion))
	default:
		errs = append(errs, field.NotSupported(field.NewPath("apiVersion"), tm.APIVersion, []string{GroupVersion}))
	}
	switch tm.Kind {
	case want:
	case "":
		errs = append(errs, field.Required(field.NewPath("kind"), "must be "+string(want)))
	default:
		errs = append(errs, field.NotSupported(field.NewPath("kind"), string(tm.Kind), []Kind{want}))
	}
	return errs
}

// validateObjectMeta checks the user-settable metadata.
func validateObjectMeta(m *ObjectMeta, kind Kind) field.ErrorList {
	p := field.NewPath("metadata")
	errs := ValidateName(kind, m.Name, p.Child("name"))
	if m.Namespace != "" {
		for _, msg := range isDNS1123Label(m.Namespace) {
			errs = append(errs, field.Invalid(p.Child("namespace"), m.Namespace, msg))
		}
	}
	errs = append(errs, validateLabels(m.Labels, p.Child("labels"))...)
	errs = append(errs, validateAnnotations(m.Annotations, p.Child("annotations"))...)
	return errs
}

// validateLabels applies Kubernetes' label rules: keys are qualified names,
// values are empty or short alphanumeric strings.
func validateLabels(labels map[string]string, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, k := range sortedKeys(labels) {
		for _, msg := range isQualifiedName(k) {
			errs = append(errs, field.Invalid(fldPath, k, msg))
		}
		for _, msg := range isValidLabelValue(labels[k]) {
			errs = append(errs, field.Invalid(fldPath.Key(k), labels[k], msg))
		}
	}
	return errs
}

// validateAnnotations applies Kubernetes' annotation rules: keys are
// qualified names (case-insensitively) and the total size is bounded.
func validateAnnotations(annotations map[string]string, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	size := 0
	for _, k := range sortedKeys(annotations) {
		for _, msg := range isQualifiedName(strings.ToLower(k)) {
			errs = append(errs, field.Invalid(fldPath, k, msg))
		}
		size += len(k) + len(annotations[k])
	}
	if size > MaxAnnotationsBytes {
		errs = append(errs, field.TooLong(fldPath, "", MaxAnnotationsBytes))
	}
	return errs
}

// validateMetaUpdate keeps the identity of an object fixed.
func validateMetaUpdate(n, o *ObjectMeta) field.ErrorList {
	p := field.NewPath("metadata")
	var errs field.ErrorList
	if n.Name != o.Name {
		errs = append(errs, field.Invalid(p.Child("name"), n.Name, fmt.Sprintf("field is immutable (was %q)", o.Name)))
	}
	if nn, on := effectiveNamespace(n), effectiveNamespace(o); nn != on {
		errs = append(errs, field.Invalid(p.Child("namespace"), nn, fmt.Sprintf("field is immutable (was %q)", on)))
	}
	return errs
}

// ---- VMInstance ----

// validateVMInstance checks a whole VMInstance.
func validateVMInstance(vm *VMInstance, c Catalog) field.ErrorList {
	errs := validateTypeMeta(&vm.TypeMeta, KindVMInstance)
	errs = append(errs, validateObjectMeta(&vm.ObjectMeta, KindVMInstance)...)
	return append(errs, validateVMInstanceSpec(&vm.Spec, c, field.NewPath("spec"))...)
}

// validateVMInstanceSpec checks every spec field and the cross-field rules.
func validateVMInstanceSpec(s *VMInstanceSpec, c Catalog, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, validateRunStrategy(s, p)...)
	errs = append(errs, validateExternal(s, p)...)
	errs = append(errs, validateSizing(s, c, p)...)
	errs = append(errs, validateDiskRefs(s.Disks, p.Child("disks"))...)
	// subnets is copied into networks by defaulting; report a bad list
	// once, under the name the user wrote.
	errs = append(errs, validateNetworks(s.Subnets, p.Child("subnets"))...)
	if !slices.Equal(s.Networks, s.Subnets) {
		errs = append(errs, validateNetworks(s.Networks, p.Child("networks"))...)
	}
	errs = append(errs, validateGPUs(s.GPUs, p.Child("gpus"))...)
	if s.CPUModel != "" && !cpuModelRegexp.MatchString(s.CPUModel) {
		errs = append(errs, field.Invalid(p.Child("cpuModel"), s.CPUModel,
			"must be host-model, host-passthrough or a libvirt CPU model name (letters, digits, '_', '.', '-')"))
	}
	errs = append(errs, validateSSHKeys(s.SSHKeys, p.Child("sshKeys"))...)
	errs = append(errs, validateCloudInit(s.CloudInit, p.Child("cloudInit"))...)
	if len(s.CloudInitSeed) > MaxCloudInitSeedLength {
		errs = append(errs, field.TooLong(p.Child("cloudInitSeed"), "", MaxCloudInitSeedLength))
	}
	return errs
}

// validateRunStrategy checks the enum and that the legacy running flag
// does not contradict it.
func validateRunStrategy(s *VMInstanceSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if s.RunStrategy != "" && !slices.Contains(RunStrategies, s.RunStrategy) {
		errs = append(errs, field.NotSupported(p.Child("runStrategy"), string(s.RunStrategy), RunStrategies))
	}
	if s.Running != nil && s.RunStrategy != "" && s.RunStrategy != runStrategyFor(*s.Running) {
		errs = append(errs, field.Invalid(p.Child("running"), *s.Running, fmt.Sprintf(
			"contradicts runStrategy %q: running: %t means runStrategy %q; remove running (it is the legacy form of runStrategy)",
			s.RunStrategy, *s.Running, runStrategyFor(*s.Running))))
	}
	return errs
}

// validateExternal checks the exposure method and ports.
func validateExternal(s *VMInstanceSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if s.ExternalMethod != "" && !slices.Contains(ExternalMethods, s.ExternalMethod) {
		errs = append(errs, field.NotSupported(p.Child("externalMethod"), string(s.ExternalMethod), ExternalMethods))
	}
	seen := make(map[int]bool, len(s.ExternalPorts))
	for i, port := range s.ExternalPorts {
		ip := p.Child("externalPorts").Index(i)
		switch {
		case port < 1 || port > 65535:
			errs = append(errs, field.Invalid(ip, port, "must be between 1 and 65535, inclusive"))
		case seen[port]:
			errs = append(errs, field.Duplicate(ip, port))
		}
		seen[port] = true
	}
	return errs
}

// sizing is what a VM gets: vCPUs and memory, and the fields to blame when
// they are too small.
type sizing struct {
	cpu     int64
	memory  resource.Quantity
	cpuPath *field.Path
	memPath *field.Path
	cpuBad  any
	memBad  any
	what    string // "instance type \"u1.nano\"" or "resources"
}

// validateSizing checks instanceType, instanceProfile and resources, and the
// rules between them: exactly one of a named instance type or custom
// resources (Cozystack issue #2909), the profile's minimums and the GPU
// driver's memory floor.
func validateSizing(s *VMInstanceSpec, c Catalog, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	itPath, profPath, resPath := p.Child("instanceType"), p.Child("instanceProfile"), p.Child("resources")
	it := effectiveInstanceType(s)
	itWhat := fmt.Sprintf("instance type %q", it)
	if s.InstanceType == nil {
		itWhat = fmt.Sprintf("instance type %q (the default)", it)
	}

	var size *sizing
	if it != "" && c != nil {
		if info, ok := c.InstanceType(it); ok {
			size = &sizing{
				cpu: info.CPU, memory: *resource.NewQuantity(info.Memory, resource.BinarySI),
				cpuPath: itPath, memPath: itPath, cpuBad: it, memBad: it, what: itWhat,
			}
		} else {
			errs = append(errs, field.NotSupported(itPath, it, c.InstanceTypeNames()))
		}
	}

	resErrs, resSize := validateResources(s.Resources, resPath)
	errs = append(errs, resErrs...)
	switch {
	case it == "" && s.Resources.IsEmpty():
		errs = append(errs, field.Required(resPath,
			`instanceType is "", so resources.cpu, resources.sockets and resources.memory must all be set`))
	case it == "":
		r := s.Resources
		for _, f := range []struct {
			name string
			v    Quantity
		}{{"cpu", r.CPU}, {"sockets", r.Sockets}, {"memory", r.Memory}} {
			if f.v == "" {
				errs = append(errs, field.Required(resPath.Child(f.name),
					`instanceType is "", so resources.cpu, resources.sockets and resources.memory must all be set`))
			}
		}
		size = resSize
	case !s.Resources.IsEmpty():
		errs = append(errs, field.Forbidden(resPath, fmt.Sprintf(
			"may not be set together with %s: KubeVirt rejects a VM that has both (cozystack/cozystack#2909); "+
				`set instanceType: "" to size the VM with resources, or remove resources`, itWhat)))
	}

	prof := effectiveInstanceProfile(s)
	if prof != "" && c != nil {
		info, ok := c.Profile(prof)
		if !ok {
			errs = append(errs, field.NotSupported(profPath, prof, c.ProfileNames()))
		} else if size != nil {
			errs = append(errs, profileMinimums(prof, info, size)...)
		}
	}
	if len(s.GPUs) > 0 && size != nil && size.memory.Cmp(gpuMinMemory) < 0 {
		errs = append(errs, field.Invalid(size.memPath, size.memBad, fmt.Sprintf(
			"%s provides %s of memory, but with gpus set the NVIDIA driver needs at least %s",
			size.what, size.memory.String(), gpuMinMemory.String())))
	}
	return errs
}

// profileMinimums compares a VM's size with what its profile requires, as
// KubeVirt does at admission ("insufficient Memory resources ...").
func profileMinimums(name string, info ProfileInfo, size *sizing) field.ErrorList {
	var errs field.ErrorList
	prof := fmt.Sprintf("profile %q", name)
	if info.Name != "" && info.Name != name {
		prof = fmt.Sprintf("profile %q (%s)", name, info.Name)
	}
	if info.MinCPU > 0 && size.cpu < info.MinCPU {
		errs = append(errs, field.Invalid(size.cpuPath, size.cpuBad, fmt.Sprintf(
			"%s provides %d vCPU but %s requires at least %d", size.what, size.cpu, prof, info.MinCPU)))
	}
	if need := resource.NewQuantity(info.MinMemory, resource.BinarySI); info.MinMemory > 0 && size.memory.Cmp(*need) < 0 {
		errs = append(errs, field.Invalid(size.memPath, size.memBad, fmt.Sprintf(
			"%s provides %s of memory but %s requires at least %s", size.what, size.memory.String(), prof, need.String())))
	}
	return errs
}

// validateResources checks each quantity given in resources and, when all
// three are present and valid, returns the resulting size.
func validateResources(r *Resources, p *field.Path) (field.ErrorList, *sizing) {
	if r.IsEmpty() {
		return nil, nil
	}
	var errs field.ErrorList
	cpu, cpuOK := positiveCount(r.CPU, p.Child("cpu"), &errs)
	sockets, socketsOK := positiveCount(r.Sockets, p.Child("sockets"), &errs)
	var mem resource.Quantity
	memOK := false
	if r.Memory != "" {
		q, err := r.Memory.Parse()
		switch {
		case err != nil:
			errs = append(errs, field.Invalid(p.Child("memory"), string(r.Memory), err.Error()))
		case q.Cmp(minMemory) < 0:
			errs = append(errs, field.Invalid(p.Child("memory"), string(r.Memory), "must be at least "+minMemory.String()))
		default:
			mem, memOK = q, true
		}
	}
	if !cpuOK || !socketsOK || !memOK {
		return errs, nil
	}
	if cpu*sockets > MaxVCPUs {
		errs = append(errs, field.Invalid(p, fmt.Sprintf("%d×%d", cpu, sockets),
			fmt.Sprintf("cpu × sockets must be at most %d vCPUs", MaxVCPUs)))
		return errs, nil
	}
	return errs, &sizing{
		cpu: cpu * sockets, memory: mem,
		cpuPath: p.Child("cpu"), memPath: p.Child("memory"), cpuBad: string(r.CPU), memBad: string(r.Memory),
		what: fmt.Sprintf("resources (%d vCPU)", cpu*sockets),
	}
}

// positiveCount parses a quantity that must be a whole number between 1
// and MaxVCPUs (cores per socket, sockets). An empty quantity is not an
// error here; the caller decides whether it is required.
func positiveCount(q Quantity, p *field.Path, errs *field.ErrorList) (int64, bool) {
	if q == "" {
		return 0, false
	}
	v, err := q.Parse()
	if err != nil {
		*errs = append(*errs, field.Invalid(p, string(q), err.Error()))
		return 0, false
	}
	if v.Sign() <= 0 || v.Cmp(*resource.NewQuantity(MaxVCPUs, resource.DecimalSI)) > 0 {
		*errs = append(*errs, field.Invalid(p, string(q), fmt.Sprintf("must be a whole number between 1 and %d", MaxVCPUs)))
		return 0, false
	}
	n := v.Value()
	if v.Cmp(*resource.NewQuantity(n, resource.DecimalSI)) != 0 {
		*errs = append(*errs, field.Invalid(p, string(q), "must be a whole number"))
		return 0, false
	}
	return n, true
}

// validateDiskRefs checks the attached disks: valid VMDisk names, no disk
// twice, and a bus libvirt can attach a disk to.
func validateDiskRefs(disks []DiskRef, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	seen := map[string]bool{}
	for i, d := range disks {
		ip := p.Index(i)
		errs = append(errs, ValidateName(KindVMDisk, d.Name, ip.Child("name"))...)
		if d.Name != "" && seen[d.Name] {
			errs = append(errs, field.Duplicate(ip.Child("name"), d.Name))
		}
		seen[d.Name] = true
		if d.Bus != "" && !slices.Contains(supportedBuses, d.Bus) {
			errs = append(errs, field.NotSupported(ip.Child("bus"), d.Bus, supportedBuses))
		}
	}
	return errs
}

// validateNetworks checks network references: required DNS-1123 labels
// (they name host networks and must be usable in interface and object
// names), each at most once.
func validateNetworks(nets []NetworkRef, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	seen := map[string]bool{}
	for i, n := range nets {
		np := p.Index(i).Child("name")
		if n.Name == "" {
			errs = append(errs, field.Required(np, ""))
			continue
		}
		for _, msg := range isDNS1123Label(n.Name) {
			errs = append(errs, field.Invalid(np, n.Name, msg))
		}
		if seen[n.Name] {
			errs = append(errs, field.Duplicate(np, n.Name))
		}
		seen[n.Name] = true
	}
	return errs
}

// validateGPUs checks GPU resource names: `vendor.tld/NAME`, as device
// plugins name them (nvidia.com/AD102GL_L40S).
func validateGPUs(gpus []GPURef, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, g := range gpus {
		np := p.Index(i).Child("name")
		if g.Name == "" {
			errs = append(errs, field.Required(np, "a GPU resource name such as nvidia.com/AD102GL_L40S"))
			continue
		}
		prefix, _, found := strings.Cut(g.Name, "/")
		if !found || !strings.Contains(prefix, ".") {
			errs = append(errs, field.Invalid(np, g.Name, "must be a vendor-prefixed resource name such as nvidia.com/AD102GL_L40S"))
			continue
		}
		for _, msg := range isQualifiedName(g.Name) {
			errs = append(errs, field.Invalid(np, g.Name, msg))
		}
	}
	return errs
}

// validateSSHKeys requires each entry to be exactly one authorized_keys
// line, so a placeholder such as "ssh-rsa AAAA..." is caught at apply time
// rather than by a guest that silently ignores it.
func validateSSHKeys(keys []string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, k := range keys {
		ip := p.Index(i)
		if strings.TrimSpace(k) == "" {
			errs = append(errs, field.Required(ip, "an SSH public key in authorized_keys format"))
			continue
		}
		_, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(k))
		switch {
		case err != nil:
			errs = append(errs, field.Invalid(ip, abbreviate(k), "not a valid SSH public key: "+err.Error()))
		case len(bytes.TrimSpace(rest)) > 0:
			errs = append(errs, field.Invalid(ip, abbreviate(k), "must hold exactly one key; put each key in its own list item"))
		}
	}
	return errs
}

// validateCloudInit checks user-data as far as its format allows:
//   - "#cloud-config": must be YAML whose top level is a mapping (or empty),
//     as cloud-init requires; a syntax error would otherwise surface only
//     in the guest's log;
//   - "#cloud-config-archive": must be YAML whose top level is a list;
//   - "## template: jinja" headers, "#!" scripts, MIME multipart and every
//     other format cloud-init knows are passed through unchecked.
//
// The size is bounded by MaxCloudInitBytes.
func validateCloudInit(ud string, p *field.Path) field.ErrorList {
	if len(ud) > MaxCloudInitBytes {
		return field.ErrorList{field.TooLong(p, "", MaxCloudInitBytes)}
	}
	first, _, _ := strings.Cut(ud, "\n")
	first = strings.TrimRight(first, " \t\r")
	var want, what string
	switch first {
	case "#cloud-config":
		want, what = "{", "a mapping"
	case "#cloud-config-archive":
		want, what = "[", "a list"
	default:
		return nil
	}
	j, err := yaml.YAMLToJSON([]byte(ud))
	if err != nil {
		return field.ErrorList{field.Invalid(p, field.OmitValueType{}, fmt.Sprintf(
			"%s user-data is not valid YAML (line 1 is the %s line): %v", first, first, err))}
	}
	j = bytes.TrimSpace(j)
	if string(j) == "null" || strings.HasPrefix(string(j), want) {
		return nil
	}
	return field.ErrorList{field.Invalid(p, field.OmitValueType{}, fmt.Sprintf(
		"%s user-data must be %s at the top level, not %s", first, what, jsonKind(j)))}
}

// jsonKind names the JSON type of an encoded value for messages.
func jsonKind(j []byte) string {
	switch {
	case len(j) == 0:
		return "nothing"
	case j[0] == '{':
		return "a mapping"
	case j[0] == '[':
		return "a list"
	case j[0] == '"':
		return "a string"
	case string(j) == "true" || string(j) == "false":
		return "a boolean"
	}
	return "a number"
}

// ---- VMDisk ----

// validateVMDisk checks a whole VMDisk.
func validateVMDisk(d *VMDisk, c Catalog) field.ErrorList {
	errs := validateTypeMeta(&d.TypeMeta, KindVMDisk)
	errs = append(errs, validateObjectMeta(&d.ObjectMeta, KindVMDisk)...)
	return append(errs, validateVMDiskSpec(d.ObjectMeta.Name, &d.Spec, c, field.NewPath("spec"))...)
}

// validateVMDiskSpec checks the source, the size and the storage class.
func validateVMDiskSpec(name string, s *VMDiskSpec, c Catalog, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	sp := p.Child("source")
	if types := s.Source.Types(); len(types) > 1 {
		errs = append(errs, field.Invalid(sp, field.OmitValueType{}, fmt.Sprintf(
			"at most one of http, image, upload, disk may be set, got %d: %s", len(types), joinSourceTypes(types))))
	}
	storage := effectiveStorage(s)
	size, sizeErrs := validateStorage(storage, p.Child("storage"))
	errs = append(errs, sizeErrs...)

	if h := s.Source.HTTP; h != nil {
		errs = append(errs, validateHTTPSource(h, sp.Child("http"))...)
	}
	if img := s.Source.Image; img != nil {
		np := sp.Child("image", "name")
		switch {
		case img.Name == "":
			errs = append(errs, field.Required(np, "the name of a golden image such as ubuntu-2404"))
		case c != nil:
			info, ok := c.GoldenImage(img.Name)
			if !ok {
				errs = append(errs, field.NotSupported(np, img.Name, c.GoldenImageNames()))
				break
			}
			errs = append(errs, goldenImageFit(img.Name, info, s, size)...)
		}
	}
	if d := s.Source.Disk; d != nil {
		np := sp.Child("disk", "name")
		errs = append(errs, ValidateName(KindVMDisk, d.Name, np)...)
		if d.Name != "" && d.Name == name {
			errs = append(errs, field.Invalid(np, d.Name, "a disk cannot be cloned from itself"))
		}
	}
	if s.StorageClass != "" {
		for _, msg := range isDNS1123Subdomain(s.StorageClass) {
			errs = append(errs, field.Invalid(p.Child("storageClass"), s.StorageClass, msg))
		}
	}
	return errs
}

// validateStorage parses the disk size and bounds it; it returns the size
// when valid.
func validateStorage(q Quantity, p *field.Path) (*resource.Quantity, field.ErrorList) {
	v, err := q.Parse()
	switch {
	case err != nil:
		return nil, field.ErrorList{field.Invalid(p, string(q), err.Error())}
	case v.Sign() <= 0:
		return nil, field.ErrorList{field.Invalid(p, string(q), "must be greater than zero")}
	case v.Cmp(minStorage) < 0:
		return nil, field.ErrorList{field.Invalid(p, string(q), "must be at least "+minStorage.String())}
	case v.Cmp(maxStorage) > 0:
		return nil, field.ErrorList{field.Invalid(p, string(q), "must be at most "+maxStorage.String())}
	}
	return &v, nil
}

// goldenImageFit checks that a disk is big enough for the golden image it
// clones (CDI refuses a clone target smaller than the source) and that an
// installer ISO is attached as a cdrom.
func goldenImageFit(name string, info GoldenImageInfo, s *VMDiskSpec, size *resource.Quantity) field.ErrorList {
	var errs field.ErrorList
	need := resource.NewQuantity(info.MinStorage, resource.BinarySI)
	if size != nil && info.MinStorage > 0 && size.Cmp(*need) < 0 {
		detail := fmt.Sprintf("golden image %q needs at least %s", name, need.String())
		if s.Storage == "" {
			detail += fmt.Sprintf(" (storage defaults to %s)", DefaultDiskStorage)
		}
		errs = append(errs, field.Invalid(field.NewPath("spec", "storage"), string(effectiveStorage(s)), detail))
	}
	if info.ISO && (s.Optical == nil || !*s.Optical) {
		errs = append(errs, field.Invalid(field.NewPath("spec", "optical"), false, fmt.Sprintf(
			"golden image %q is an installer ISO and must be attached as a cdrom: set optical: true", name)))
	}
	return errs
}

// validateHTTPSource checks an import URL: absolute http(s) with a host, and
// a well-formed checksum when one is given.
func validateHTTPSource(h *HTTPSource, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	up := p.Child("url")
	if h.URL == "" {
		errs = append(errs, field.Required(up, "an http:// or https:// URL"))
	} else if u, err := url.Parse(h.URL); err != nil {
		errs = append(errs, field.Invalid(up, h.URL, err.Error()))
	} else {
		if !slices.Contains(httpSchemes, u.Scheme) {
			errs = append(errs, field.Invalid(up, h.URL, fmt.Sprintf("scheme %q is not supported: use http or https", u.Scheme)))
		}
		if !validURLHost(u.Hostname()) {
			errs = append(errs, field.Invalid(up, h.URL, "must include a valid host name or IP address"))
		}
	}
	if h.SHA256 != "" {
		if b, err := hex.DecodeString(h.SHA256); err != nil || len(b) != 32 {
			errs = append(errs, field.Invalid(p.Child("sha256"), h.SHA256, "must be 64 hexadecimal characters"))
		}
	}
	return errs
}

// hostLabelRegexp is one label of a host name. It is more lenient than
// RFC 1123 (underscores, upper case) because real mirrors use both.
var hostLabelRegexp = regexp.MustCompile(`^[A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9_])?$`)

// validURLHost accepts an IP address or a dotted host name whose labels are
// all non-empty, so placeholders such as "https://..." are refused.
func validURLHost(h string) bool {
	if h == "" {
		return false
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	for _, l := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if !hostLabelRegexp.MatchString(l) {
			return false
		}
	}
	return true
}

// validateVMDiskSpecUpdate holds the rules of a disk across versions.
func validateVMDiskSpecUpdate(n, o *VMDiskSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	ns, olds := effectiveStorage(n), effectiveStorage(o)
	nq, nerr := ns.Parse()
	oq, oerr := olds.Parse()
	if nerr == nil && oerr == nil && nq.Cmp(oq) < 0 {
		errs = append(errs, field.Forbidden(p.Child("storage"), fmt.Sprintf(
			"may not decrease from %s to %s (a disk can only grow)", olds, ns)))
	}
	if nc, oc := effectiveStorageClass(n), effectiveStorageClass(o); nc != oc {
		errs = append(errs, field.Invalid(p.Child("storageClass"), nc, fmt.Sprintf("field is immutable (was %q)", oc)))
	}
	nj, nerr2 := json.Marshal(n.Source)
	oj, oerr2 := json.Marshal(o.Source)
	if nerr2 != nil || oerr2 != nil || !bytes.Equal(nj, oj) {
		errs = append(errs, field.Invalid(p.Child("source"), field.OmitValueType{}, fmt.Sprintf(
			"field is immutable (was %s, now %s): the data is imported once; create a new VMDisk for another source", oj, nj)))
	}
	return errs
}

// joinSourceTypes lists source types for messages.
func joinSourceTypes(ts []SourceType) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = string(t)
	}
	return strings.Join(s, ", ")
}

// abbreviate shortens a long value for an error message.
func abbreviate(s string) string {
	const limit = 48
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "..."
}

// sortedKeys returns the keys of m in order, so errors come out stable.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// ---- name formats ----
//
// These mirror k8s.io/apimachinery/pkg/util/validation (same regular
// expressions, same messages). That package cannot be imported: it pulls in
// k8s.io/utils, which is not among the pinned modules.

const (
	dns1123LabelFmt     = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
	dns1123LabelErrMsg  = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
	dns1123SubdomainFmt = dns1123LabelFmt + "(\\." + dns1123LabelFmt + ")*"
	dns1123SubdomainErr = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
	dns1035LabelFmt     = "[a-z]([-a-z0-9]*[a-z0-9])?"
	dns1035LabelErrMsg  = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character"
	qnameCharFmt        = "[A-Za-z0-9]"
	qnameExtCharFmt     = "[-A-Za-z0-9_.]"
	qualifiedNameFmt    = "(" + qnameCharFmt + qnameExtCharFmt + "*)?" + qnameCharFmt
	qualifiedNameErrMsg = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
	labelValueFmt       = "(" + qualifiedNameFmt + ")?"
	labelValueErrMsg    = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
	dns1123LabelMaxLen  = 63
	dns1123SubdomainMax = 253
	qualifiedNameMaxLen = 63
	labelValueMaxLen    = 63
)

var (
	dns1123LabelRegexp     = regexp.MustCompile("^" + dns1123LabelFmt + "$")
	dns1123SubdomainRegexp = regexp.MustCompile("^" + dns1123SubdomainFmt + "$")
	dns1035LabelRegexp     = regexp.MustCompile("^" + dns1035LabelFmt + "$")
	qualifiedNameRegexp    = regexp.MustCompile("^" + qualifiedNameFmt + "$")
	labelValueRegexp       = regexp.MustCompile("^" + labelValueFmt + "$")
)

// isDNS1123Label is validation.IsDNS1123Label.
func isDNS1123Label(v string) []string {
	var errs []string
	if len(v) > dns1123LabelMaxLen {
		errs = append(errs, maxLenError(dns1123LabelMaxLen))
	}
	if !dns1123LabelRegexp.MatchString(v) {
		if dns1123SubdomainRegexp.MatchString(v) {
			errs = append(errs, "must not contain dots")
		} else {
			errs = append(errs, regexError(dns1123LabelErrMsg, dns1123LabelFmt, "my-name", "123-abc"))
		}
	}
	return errs
}

// isDNS1123Subdomain is validation.IsDNS1123Subdomain.
func isDNS1123Subdomain(v string) []string {
	var errs []string
	if len(v) > dns1123SubdomainMax {
		errs = append(errs, maxLenError(dns1123SubdomainMax))
	}
	if !dns1123SubdomainRegexp.MatchString(v) {
		errs = append(errs, regexError(dns1123SubdomainErr, dns1123SubdomainFmt, "example.com"))
	}
	return errs
}

// isQualifiedName is validation.IsQualifiedName: an optional DNS subdomain
// prefix and '/', then a short name.
func isQualifiedName(v string) []string {
	var errs []string
	parts := strings.Split(v, "/")
	var name string
	switch len(parts) {
	case 1:
		name = parts[0]
	case 2:
		var prefix string
		prefix, name = parts[0], parts[1]
		if prefix == "" {
			errs = append(errs, "prefix part must be non-empty")
		} else {
			for _, msg := range isDNS1123Subdomain(prefix) {
				errs = append(errs, "prefix part "+msg)
			}
		}
	default:
		return append(errs, "a qualified name "+regexError(qualifiedNameErrMsg, qualifiedNameFmt, "MyName", "my.name", "123-abc")+
			" with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')")
	}
	if name == "" {
		errs = append(errs, "name part must be non-empty")
	} else if len(name) > qualifiedNameMaxLen {
		errs = append(errs, "name part "+maxLenError(qualifiedNameMaxLen))
	}
	if !qualifiedNameRegexp.MatchString(name) {
		errs = append(errs, "name part "+regexError(qualifiedNameErrMsg, qualifiedNameFmt, "MyName", "my.name", "123-abc"))
	}
	return errs
}

// isValidLabelValue is validation.IsValidLabelValue.
func isValidLabelValue(v string) []string {
	var errs []string
	if len(v) > labelValueMaxLen {
		errs = append(errs, maxLenError(labelValueMaxLen))
	}
	if !labelValueRegexp.MatchString(v) {
		errs = append(errs, regexError(labelValueErrMsg, labelValueFmt, "MyValue", "my_value", "12345"))
	}
	return errs
}

// maxLenError is validation.MaxLenError.
func maxLenError(n int) string { return fmt.Sprintf("must be no more than %d characters", n) }

// regexError is validation.RegexError.
func regexError(msg, format string, examples ...string) string {
	if len(examples) == 0 {
		return msg + " (regex used for validation is '" + format + "')"
	}
	msg += " (e.g. "
	for i, e := range examples {
		if i > 0 {
			msg += " or "
		}
		msg += "'" + e + "', "
	}
	return msg + "regex used for validation is '" + format + "')"
}
