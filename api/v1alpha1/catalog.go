package v1alpha1

// Catalog answers the questions validation asks about named things: which
// instance types, profiles and golden images exist and what they need. The
// tables live in internal/hypervisor and internal/images; internal/catalog
// adapts them to this interface, so this package stays free of host code.
type Catalog interface {
	// InstanceType returns the sizing of a named instance type.
	InstanceType(name string) (InstanceTypeInfo, bool)
	// InstanceTypeNames lists every valid instance type, sorted.
	InstanceTypeNames() []string
	// Profile returns a profile by name; short Hikube aliases such as
	// "centos" resolve to a documented preference.
	Profile(name string) (ProfileInfo, bool)
	// ProfileNames lists every valid profile name (aliases included), sorted.
	ProfileNames() []string
	// GoldenImage returns a golden image by its catalogue name.
	GoldenImage(name string) (GoldenImageInfo, bool)
	// GoldenImageNames lists every golden image name, sorted.
	GoldenImageNames() []string
}

// InstanceTypeInfo is what validation needs of an instance type.
type InstanceTypeInfo struct {
	Name   string
	CPU    int64 // vCPUs
	Memory int64 // bytes
}

// ProfileInfo is what validation needs of a profile (preference).
type ProfileInfo struct {
	// Name is the resolved preference name (differs from the requested
	// name for an alias).
	Name string
	// MinCPU and MinMemory (bytes) are the preference's requirements;
	// zero means none.
	MinCPU    int64
	MinMemory int64
}

// GoldenImageInfo is what validation needs of a golden image.
type GoldenImageInfo struct {
	Name string
	// MinStorage is the smallest VMDisk storage (bytes) the image fits in.
	MinStorage int64
	// ISO reports an installer image, which must be an optical disk.
	ISO bool
}
