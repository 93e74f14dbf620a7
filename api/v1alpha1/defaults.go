package v1alpha1

// Default values, taken from the Cozystack charts (packages/apps/vm-instance
// and packages/apps/vm-disk values.yaml), so that a manifest written for
// Hikube or Cozystack means the same thing here.
const (
	// DefaultInstanceType is used when spec.instanceType is absent. An
	// explicit "" is kept: it selects custom spec.resources.
	DefaultInstanceType = "u1.medium"
	// DefaultInstanceProfile is used when spec.instanceProfile is absent.
	// An explicit "" is kept: it means "no preference".
	DefaultInstanceProfile = "ubuntu"
	// DefaultExternalMethod is how an external IP is exposed by default.
	DefaultExternalMethod = ExternalMethodPortList
	// DefaultRunStrategy applies when neither runStrategy nor the legacy
	// running flag is given.
	DefaultRunStrategy = RunStrategyAlways
	// DefaultDiskStorage is the size of a VMDisk without spec.storage.
	DefaultDiskStorage Quantity = "5Gi"
	// DefaultStorageClass is the storage class of a VMDisk without
	// spec.storageClass.
	DefaultStorageClass = "replicated"
)

// DefaultExternalPorts returns the ports opened under PortList when
// spec.externalPorts is absent: SSH only. It returns a fresh slice so
// callers may keep it.
func DefaultExternalPorts() []int { return []int{22} }

// SetDefaults fills the unset fields of a VMInstance or VMDisk in place. It
// is idempotent: applying it twice gives the same object as applying it
// once. Objects of other types are left alone.
//
// Callers (the server on create, update and dry run) default first and
// validate second; Validate also accepts un-defaulted objects and judges an
// unset field by its default.
func SetDefaults(obj Object) {
	switch o := obj.(type) {
	case *VMInstance:
		SetDefaultsVMInstance(o)
	case *VMDisk:
		SetDefaultsVMDisk(o)
	}
}

// SetDefaultsVMInstance applies the chart defaults to a VMInstance.
//
// The legacy `running` flag is folded into runStrategy (false → Halted,
// true → Always) and cleared, so a stored object carries one truth. When
// the user gave both and they contradict each other (running: false with
// runStrategy: Always), both are left as written so that Validate can
// reject the object naming the two values; silently picking one would hide
// a mistake that decides whether the VM runs.
func SetDefaultsVMInstance(vm *VMInstance) {
	if vm == nil {
		return
	}
	setDefaultsMeta(&vm.ObjectMeta)
	s := &vm.Spec
	if s.External == nil {
		s.External = ptrTo(false)
	}
	if s.ExternalMethod == "" {
		s.ExternalMethod = DefaultExternalMethod
	}
	// Only an absent list gets the default; an explicit [] means "no
	// ports" and stays empty.
	if s.ExternalPorts == nil {
		s.ExternalPorts = DefaultExternalPorts()
	}
	if s.ExternalAllowICMP == nil {
		s.ExternalAllowICMP = ptrTo(true)
	}
	foldRunning(s)
	if s.InstanceType == nil {
		s.InstanceType = ptrTo(DefaultInstanceType)
	}
	if s.InstanceProfile == nil {
		s.InstanceProfile = ptrTo(DefaultInstanceProfile)
	}
	// subnets is the deprecated spelling of networks; the chart uses
	// `networks | default subnets`, so copy only when networks is empty.
	if len(s.Networks) == 0 && len(s.Subnets) > 0 {
		s.Networks = append([]NetworkRef(nil), s.Subnets...)
	}
}

// foldRunning turns the legacy running flag into a run strategy unless the
// two contradict each other (see SetDefaultsVMInstance).
func foldRunning(s *VMInstanceSpec) {
	if s.Running == nil {
		if s.RunStrategy == "" {
			s.RunStrategy = DefaultRunStrategy
		}
		return
	}
	implied := runStrategyFor(*s.Running)
	switch s.RunStrategy {
	case "":
		s.RunStrategy = implied
	case implied:
	default:
		// Contradiction: keep both for Validate to report.
		return
	}
	s.Running = nil
}

// runStrategyFor maps the legacy running flag to its run strategy.
func runStrategyFor(running bool) RunStrategy {
	if running {
		return RunStrategyAlways
	}
	return RunStrategyHalted
}

// SetDefaultsVMDisk applies the chart defaults to a VMDisk. The source is
// left alone: an empty source already means a blank disk.
func SetDefaultsVMDisk(d *VMDisk) {
	if d == nil {
		return
	}
	setDefaultsMeta(&d.ObjectMeta)
	s := &d.Spec
	if s.Storage == "" {
		s.Storage = DefaultDiskStorage
	}
	if s.StorageClass == "" {
		s.StorageClass = DefaultStorageClass
	}
	if s.Optical == nil {
		s.Optical = ptrTo(false)
	}
}

// setDefaultsMeta puts an object without a namespace into the default one.
func setDefaultsMeta(m *ObjectMeta) {
	if m.Namespace == "" {
		m.Namespace = DefaultNamespace
	}
}

// The effective* helpers answer "what will be used" for fields whose unset
// value means a default, so validation judges an un-defaulted object the
// same way as its defaulted form.

// effectiveInstanceType returns the instance type in force.
func effectiveInstanceType(s *VMInstanceSpec) string {
	if s.InstanceType == nil {
		return DefaultInstanceType
	}
	return *s.InstanceType
}

// effectiveInstanceProfile returns the profile in force.
func effectiveInstanceProfile(s *VMInstanceSpec) string {
	if s.InstanceProfile == nil {
		return DefaultInstanceProfile
	}
	return *s.InstanceProfile
}

// effectiveStorage returns the disk size in force.
func effectiveStorage(s *VMDiskSpec) Quantity {
	if s.Storage == "" {
		return DefaultDiskStorage
	}
	return s.Storage
}

// effectiveStorageClass returns the storage class in force.
func effectiveStorageClass(s *VMDiskSpec) string {
	if s.StorageClass == "" {
		return DefaultStorageClass
	}
	return s.StorageClass
}

// effectiveNamespace returns the namespace in force.
func effectiveNamespace(m *ObjectMeta) string {
	if m.Namespace == "" {
		return DefaultNamespace
	}
	return m.Namespace
}

// ptrTo returns a pointer to a copy of v.
func ptrTo[T any](v T) *T { return &v }
