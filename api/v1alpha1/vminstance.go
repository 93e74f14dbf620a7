package v1alpha1

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// VMInstance is a virtual machine: sizing, OS profile, disks, cloud-init and
// external exposure. vmd realises it as one libvirt domain named
// `vm-instance-<name>` (the name KubeVirt gives it under Cozystack).
type VMInstance struct {
	TypeMeta   `json:",inline"`
	ObjectMeta ObjectMeta       `json:"metadata"`
	Spec       VMInstanceSpec   `json:"spec"`
	Status     VMInstanceStatus `json:"status,omitempty"`
}

// RunStrategy says when the VM should run, as KubeVirt's runStrategy.
type RunStrategy string

// Run strategies accepted in spec.runStrategy.
const (
	RunStrategyAlways         RunStrategy = "Always"
	RunStrategyHalted         RunStrategy = "Halted"
	RunStrategyManual         RunStrategy = "Manual"
	RunStrategyRerunOnFailure RunStrategy = "RerunOnFailure"
	RunStrategyOnce           RunStrategy = "Once"
)

// RunStrategies lists the valid values in documentation order.
var RunStrategies = []RunStrategy{RunStrategyAlways, RunStrategyHalted, RunStrategyManual, RunStrategyRerunOnFailure, RunStrategyOnce}

// ExternalMethod selects how an external IP exposes the VM.
type ExternalMethod string

// Exposure methods (cozy-proxy semantics).
const (
	// ExternalMethodPortList lets only TCP to spec.externalPorts (and ICMP
	// when allowed) through to the VM.
	ExternalMethodPortList ExternalMethod = "PortList"
	// ExternalMethodWholeIP forwards every protocol and port.
	ExternalMethodWholeIP ExternalMethod = "WholeIP"
)

// ExternalMethods lists the valid values.
var ExternalMethods = []ExternalMethod{ExternalMethodPortList, ExternalMethodWholeIP}

// VMInstanceSpec is the desired state of a VM. Pointer fields distinguish
// "not set" (a default applies) from an explicit zero value.
type VMInstanceSpec struct {
	// External gives the VM a dedicated external IP.
	External *bool `json:"external,omitempty"`
	// ExternalMethod is PortList (default) or WholeIP.
	ExternalMethod ExternalMethod `json:"externalMethod,omitempty"`
	// ExternalPorts are the TCP ports open on the external IP under
	// PortList; default [22]. Not omitempty: an explicit [] (no port open)
	// must survive storage and copies instead of turning back into [22].
	ExternalPorts []int `json:"externalPorts"`
	// ExternalAllowICMP lets ICMP reach the VM under PortList; default true.
	ExternalAllowICMP *bool `json:"externalAllowICMP,omitempty"`
	// Running is the legacy (Cozystack ≤ v0.41, Hikube docs) switch:
	// true means runStrategy Always, false means Halted. Defaulting folds it
	// into RunStrategy and clears it, so stored objects carry one truth.
	Running *bool `json:"running,omitempty"`
	// RunStrategy is Always (default), Halted, Manual, RerunOnFailure or Once.
	RunStrategy RunStrategy `json:"runStrategy,omitempty"`
	// InstanceType names the sizing (default u1.medium). An explicit empty
	// string means "custom": Resources must then be given.
	InstanceType *string `json:"instanceType,omitempty"`
	// InstanceProfile names the OS preference (default ubuntu); "" = none.
	InstanceProfile *string `json:"instanceProfile,omitempty"`
	// Disks lists VMDisk names in boot order. Each item may be a bare
	// string (Hikube docs) or an object {name, bus} (Cozystack chart).
	Disks []DiskRef `json:"disks,omitempty"`
	// Networks attaches extra tenant networks (Cozystack v1.3+).
	Networks []NetworkRef `json:"networks,omitempty"`
	// Subnets is the deprecated alias of Networks; Networks wins.
	Subnets []NetworkRef `json:"subnets,omitempty"`
	// GPUs lists host devices to pass through, by resource name.
	GPUs []GPURef `json:"gpus,omitempty"`
	// CPUModel is a libvirt CPU model name, host-model or host-passthrough.
	CPUModel string `json:"cpuModel,omitempty"`
	// Resources sizes a custom VM when InstanceType is "".
	Resources *Resources `json:"resources,omitempty"`
	// SSHKeys are authorized_keys lines given to the guest.
	SSHKeys []string `json:"sshKeys,omitempty"`
	// CloudInit is user-data, passed to the guest verbatim.
	CloudInit string `json:"cloudInit,omitempty"`
	// CloudInitSeed is hashed into the SMBIOS UUID / NoCloud instance-id;
	// changing it makes cloud-init run again.
	CloudInitSeed string `json:"cloudInitSeed,omitempty"`
}

// DiskRef names a VMDisk to attach and, optionally, the bus to use.
type DiskRef struct {
	Name string `json:"name"`
	// Bus overrides the profile's disk bus: virtio, sata or scsi.
	Bus string `json:"bus,omitempty"`
}

// UnmarshalJSON accepts both `- name` and `- {name: name, bus: virtio}`.
// Unknown keys in the object form are reported by the strict decoder
// (internal/manifest) before this runs.
func (d *DiskRef) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*d = DiskRef{Name: s}
		return nil
	}
	type plain DiskRef
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("disk must be a name or an object {name, bus}: %w", err)
	}
	*d = DiskRef(p)
	return nil
}

// NetworkRef names an extra network.
type NetworkRef struct {
	Name string `json:"name,omitempty"`
}

// GPURef names a host GPU resource such as nvidia.com/AD102GL_L40S.
type GPURef struct {
	Name string `json:"name"`
}

// Resources is custom sizing. CPU is cores per socket; the VM gets
// CPU × Sockets vCPUs, as in Cozystack's chart. An empty string counts as
// unset (Hikube's documentation shows `cpu: ""`).
type Resources struct {
	CPU     Quantity `json:"cpu,omitempty"`
	Sockets Quantity `json:"sockets,omitempty"`
	Memory  Quantity `json:"memory,omitempty"`
}

// IsEmpty reports whether no resource is set.
func (r *Resources) IsEmpty() bool {
	return r == nil || (r.CPU == "" && r.Sockets == "" && r.Memory == "")
}

// VMInstance phases, as KubeVirt's printableStatus.
const (
	PhasePending          = "Pending"
	PhaseProvisioning     = "Provisioning"
	PhaseStarting         = "Starting"
	PhaseRunning          = "Running"
	PhaseStopping         = "Stopping"
	PhaseStopped          = "Stopped"
	PhaseFailed           = "Failed"
	PhaseCrashLoopBackOff = "CrashLoopBackOff"
	PhaseTerminating      = "Terminating"
)

// VMInstanceStatus is what vmd observed. It is written only by the daemon.
type VMInstanceStatus struct {
	Phase              string      `json:"phase,omitempty"`
	ObservedGeneration int64       `json:"observedGeneration,omitempty"`
	Conditions         []Condition `json:"conditions,omitempty"`
	// DomainName is the libvirt domain, vm-instance-<name>.
	DomainName string `json:"domainName,omitempty"`
	// UUID is the SMBIOS UUID, also the NoCloud instance-id.
	UUID string `json:"uuid,omitempty"`
	// InstanceType and Profile are the resolved names actually used.
	InstanceType string `json:"instanceType,omitempty"`
	Profile      string `json:"profile,omitempty"`
	// Addresses lists the VM's private and external addresses.
	Addresses []Address `json:"addresses,omitempty"`
	// RestartCount counts restarts made by the run strategy.
	RestartCount int32 `json:"restartCount,omitempty"`
}

// Address is one IP the VM is reachable at.
type Address struct {
	// Type is Private or External.
	Type    string `json:"type"`
	Address string `json:"address"`
	MAC     string `json:"mac,omitempty"`
}

// GetTypeMeta implements Object.
func (v *VMInstance) GetTypeMeta() *TypeMeta { return &v.TypeMeta }

// GetObjectMeta implements Object.
func (v *VMInstance) GetObjectMeta() *ObjectMeta { return &v.ObjectMeta }

// SpecJSON implements Object.
func (v *VMInstance) SpecJSON() ([]byte, error) { return json.Marshal(v.Spec) }

// GetConditions implements Object.
func (v *VMInstance) GetConditions() []Condition { return v.Status.Conditions }

// CopyStatusFrom implements Object.
func (v *VMInstance) CopyStatusFrom(o Object) {
	if src, ok := o.(*VMInstance); ok {
		v.Status = *deepCopy(&src.Status)
	}
}

// DeepCopyObject implements Object.
func (v *VMInstance) DeepCopyObject() Object { return deepCopy(v) }

// deepCopy copies through JSON: the types are plain data and small, and a
// generated deep-copy would be one more thing to keep in sync.
func deepCopy[T any](in *T) *T {
	b, err := json.Marshal(in)
	if err != nil {
		panic(fmt.Sprintf("deep copy: marshal: %v", err))
	}
	out := new(T)
	if err := json.Unmarshal(b, out); err != nil {
		panic(fmt.Sprintf("deep copy: unmarshal: %v", err))
	}
	return out
}
