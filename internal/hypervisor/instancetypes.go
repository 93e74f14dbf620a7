package hypervisor

import (
	_ "embed"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

// instanceTypesYAML is the instance-type table. It is data rather than Go so
// that it can be compared row by row with the upstream catalogues it copies.
//
//go:embed instancetypes.yaml
var instanceTypesYAML []byte

// Source names the catalogue a table row was copied from. It matters when
// the upstreams drift apart: a kubevirt row must track common-instancetypes,
// a hikube row only Hikube's documentation.
type Source string

// Sources of instance types and profiles.
const (
	// SourceKubeVirt rows come from kubevirt/common-instancetypes as shipped
	// by Cozystack.
	SourceKubeVirt Source = "kubevirt"
	// SourceCozystack rows are Cozystack-local additions (gn1, old centos).
	SourceCozystack Source = "cozystack"
	// SourceHikube rows exist only on Hikube (s1, m1.3xlarge).
	SourceHikube Source = "hikube"
)

// Hugepage sizes an instance type may request; the empty string means the
// guest is backed by ordinary pages.
const (
	Hugepages2Mi = "2Mi"
	Hugepages1Gi = "1Gi"
)

// hugepageBytes is the size of each supported hugepage.
var hugepageBytes = map[string]int64{Hugepages2Mi: 2 << 20, Hugepages1Gi: 1 << 30}

// IOThreadsPolicy values accepted by KubeVirt's ioThreadsPolicy; the empty
// string leaves the KubeVirt default (no dedicated IOThreads policy).
const (
	IOThreadsPolicyShared           = "shared"
	IOThreadsPolicyAuto             = "auto"
	IOThreadsPolicySupplementalPool = "supplementalPool"
)

// InstanceType is one VirtualMachineClusterInstancetype: the size of a VM
// and how its CPUs and memory are backed on the host. vmd sizes the libvirt
// domain from CPU and Memory; the placement attributes (DedicatedCPU,
// Hugepages, NUMAPassthrough, Realtime, ...) are host capabilities the
// hypervisor layer honours when the host can and reports when it cannot.
//
// The JSON tags are the schema of instancetypes.yaml; fields tagged "-" are
// derived while parsing.
type InstanceType struct {
	// Name is the spec.instanceType value, "<series>.<size>".
	Name string `json:"name"`
	// Series is the part of Name before the dot (u1, cx1, s1, ...).
	Series string `json:"-"`
	// Class is the instancetype.kubevirt.io/class label (general.purpose,
	// compute.exclusive, ...), or Hikube's word for Hikube-only series.
	Class string `json:"class"`
	// CPU is the number of guest vCPUs (cpu.guest).
	CPU int `json:"cpu"`
	// MemoryQuantity is memory.guest as written in the table ("512Mi").
	MemoryQuantity string `json:"memory"`
	// Memory is MemoryQuantity in bytes.
	Memory int64 `json:"-"`
	// DedicatedCPU pins each vCPU to its own host CPU.
	DedicatedCPU bool `json:"dedicatedCPU,omitempty"`
	// IsolateEmulatorThread gives QEMU's emulator thread its own host CPU;
	// it implies DedicatedCPU.
	IsolateEmulatorThread bool `json:"isolateEmulatorThread,omitempty"`
	// Hugepages is the page size backing guest memory: "", "2Mi" or "1Gi".
	Hugepages string `json:"hugepages,omitempty"`
	// NUMAPassthrough mirrors the host NUMA layout into the guest.
	NUMAPassthrough bool `json:"numaPassthrough,omitempty"`
	// Realtime asks for realtime vCPU scheduling; it implies DedicatedCPU.
	Realtime bool `json:"realtime,omitempty"`
	// MaxSockets caps guest sockets (CPU hot-plug headroom); 0 leaves the
	// KubeVirt default.
	MaxSockets int `json:"maxSockets,omitempty"`
	// IOThreadsPolicy is KubeVirt's ioThreadsPolicy ("" = default).
	IOThreadsPolicy string `json:"ioThreadsPolicy,omitempty"`
	// MemoryOvercommitPercent lowers the host reservation below Memory by
	// this percentage while the guest still sees Memory.
	MemoryOvercommitPercent int `json:"overcommitPercent,omitempty"`
	// GPUs lists the device names of GPUs passed through to the guest.
	GPUs []string `json:"gpus,omitempty"`
	// Annotations are put on the KubeVirt VMI; here they record the CRI-O
	// hints (no CPU/IRQ load balancing) that pinned series rely on.
	Annotations map[string]string `json:"annotations,omitempty"`
	// Deprecated types are accepted for compatibility but not advertised.
	Deprecated bool `json:"deprecated,omitempty"`
	// Source is the catalogue the row comes from.
	Source Source `json:"source"`
}

// instanceTypeTable is the document shape of instancetypes.yaml.
type instanceTypeTable struct {
	InstanceTypes []InstanceType `json:"instanceTypes"`
}

var (
	// instanceTypeList is sorted (see InstanceTypes) and never mutated.
	instanceTypeList = mustParse(parseInstanceTypes(instanceTypesYAML))
	// instanceTypeIndex maps a name to its position in instanceTypeList.
	instanceTypeIndex = indexByName(instanceTypeList, func(t InstanceType) string { return t.Name })
)

// InstanceTypes returns every instance type, sorted by series, then by size
// (vCPUs, then memory, then name, so "m1.large" precedes "m1.large1gi").
// The result is a copy the caller may modify.
func InstanceTypes() []InstanceType {
	out := make([]InstanceType, len(instanceTypeList))
	for i, t := range instanceTypeList {
		out[i] = t.clone()
	}
	return out
}

// LookupInstanceType returns the instance type called name. Names are
// case-sensitive, as they are in Kubernetes.
func LookupInstanceType(name string) (InstanceType, bool) {
	i, ok := instanceTypeIndex[name]
	if !ok {
		return InstanceType{}, false
	}
	return instanceTypeList[i].clone(), true
}

// clone returns a copy that shares no slice or map with t, so callers
// cannot corrupt the embedded table.
func (t InstanceType) clone() InstanceType {
	t.GPUs = slices.Clone(t.GPUs)
	t.Annotations = maps.Clone(t.Annotations)
	return t
}

// instanceTypeName is "<series>.<size>", both lowercase alphanumerics.
var instanceTypeName = regexp.MustCompile(`^([a-z][a-z0-9]*)\.([a-z0-9]+)$`)

// parseInstanceTypes decodes and checks an instance-type table. It rejects
// unknown keys, duplicate names and rows KubeVirt itself would refuse, and
// returns the rows sorted as InstanceTypes promises. Keys match fields the
// way encoding/json does, ignoring case, so "diskbus" still sets diskBus;
// a key that names no field is an error.
func parseInstanceTypes(data []byte) ([]InstanceType, error) {
	var table instanceTypeTable
	if err := yaml.UnmarshalStrict(data, &table); err != nil {
		return nil, fmt.Errorf("decoding instance types: %w", err)
	}
	if len(table.InstanceTypes) == 0 {
		return nil, errors.New("decoding instance types: table is empty")
	}
	seen := make(map[string]bool, len(table.InstanceTypes))
	var errs []error
	for i := range table.InstanceTypes {
		t := &table.InstanceTypes[i]
		if seen[t.Name] {
			errs = append(errs, fmt.Errorf("instance type %q: duplicate name", t.Name))
		}
		seen[t.Name] = true
		for _, err := range t.complete() {
			errs = append(errs, fmt.Errorf("instance type %q: %w", t.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.SortFunc(table.InstanceTypes, func(a, b InstanceType) int {
		if c := strings.Compare(a.Series, b.Series); c != 0 {
			return c
		}
		if a.CPU != b.CPU {
			return a.CPU - b.CPU
		}
		if a.Memory != b.Memory {
			if a.Memory < b.Memory {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return table.InstanceTypes, nil
}

// complete fills the derived fields and returns every inconsistency of
// the row.
func (t *InstanceType) complete() []error {
	var errs []error
	if m := instanceTypeName.FindStringSubmatch(t.Name); m != nil {
		t.Series = m[1]
	} else {
		errs = append(errs, errors.New("name must be <series>.<size> in lowercase alphanumerics"))
	}
	if t.Class == "" {
		errs = append(errs, errors.New("class is required"))
	}
	if t.CPU < 1 {
		errs = append(errs, fmt.Errorf("cpu %d: must be at least 1", t.CPU))
	}
	mem, err := parseBytes(t.MemoryQuantity)
	if err != nil {
		errs = append(errs, fmt.Errorf("memory: %w", err))
	}
	t.Memory = mem
	if t.Hugepages != "" {
		page, ok := hugepageBytes[t.Hugepages]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("hugepages %q: must be %q or %q", t.Hugepages, Hugepages2Mi, Hugepages1Gi))
		case mem%page != 0:
			// Whole pages only: a partial page cannot back guest RAM.
			errs = append(errs, fmt.Errorf("memory %s is not a multiple of the %s hugepage size", t.MemoryQuantity, t.Hugepages))
		}
	}
	if t.IsolateEmulatorThread && !t.DedicatedCPU {
		errs = append(errs, errors.New("isolateEmulatorThread requires dedicatedCPU"))
	}
	if t.Realtime && !t.DedicatedCPU {
		errs = append(errs, errors.New("realtime requires dedicatedCPU"))
	}
	if t.MaxSockets < 0 {
		errs = append(errs, fmt.Errorf("maxSockets %d: must not be negative", t.MaxSockets))
	}
	switch t.IOThreadsPolicy {
	case "", IOThreadsPolicyShared, IOThreadsPolicyAuto, IOThreadsPolicySupplementalPool:
	default:
		errs = append(errs, fmt.Errorf("ioThreadsPolicy %q: unknown", t.IOThreadsPolicy))
	}
	if t.MemoryOvercommitPercent < 0 || t.MemoryOvercommitPercent > 100 {
		errs = append(errs, fmt.Errorf("overcommitPercent %d: must be within 0..100", t.MemoryOvercommitPercent))
	}
	if slices.Contains(t.GPUs, "") {
		errs = append(errs, errors.New("gpus: empty device name"))
	}
	if err := checkSource(t.Source, SourceKubeVirt, SourceCozystack, SourceHikube); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// checkSource reports a source outside allowed.
func checkSource(s Source, allowed ...Source) error {
	if slices.Contains(allowed, s) {
		return nil
	}
	return fmt.Errorf("source %q: must be one of %q", s, allowed)
}

// parseBytes parses a positive Kubernetes quantity that is a whole number
// of bytes, which is what every memory size in the tables must be.
func parseBytes(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("quantity is required")
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("parsing quantity %q: %w", s, err)
	}
	// Value rounds up; comparing back rejects fractions of a byte such as
	// "1.5" or "100m" while accepting "1.5Gi".
	v := q.Value()
	if v <= 0 || resource.NewQuantity(v, resource.BinarySI).Cmp(q) != 0 {
		return 0, fmt.Errorf("quantity %q: must be a positive whole number of bytes", s)
	}
	return v, nil
}

// indexByName maps each element's name to its index.
func indexByName[T any](list []T, name func(T) string) map[string]int {
	idx := make(map[string]int, len(list))
	for i, v := range list {
		idx[name(v)] = i
	}
	return idx
}

// mustParse turns a malformed embedded table into a panic at start-up. The
// tables are compiled in, so this can only be a programming error, and the
// package tests parse them first.
func mustParse[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("hypervisor: embedded table: %v", err))
	}
	return v
}
