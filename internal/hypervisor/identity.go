package hypervisor

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

// DomainName is the libvirt domain (and guest hostname) of a VMInstance:
// Cozystack names the KubeVirt VM `vm-instance-<name>`, and guests see that
// as their hostname, so vmd does the same.
func DomainName(vmName string) string { return v1alpha1.DomainName(vmName) }

// LibvirtName is the libvirt domain name of a VMInstance. Names are unique
// only within a namespace (tenant) while libvirt's are host-wide, so the
// namespace qualifies the Cozystack name: "tenant-a.vm-instance-web".
// Namespaces and names are DNS labels, so the dot cannot be ambiguous.
// The guest still calls itself vm-instance-<name> (see DomainName).
func LibvirtName(namespace, vmName string) string {
	return namespace + "." + DomainName(vmName)
}

// StableUUID returns the SMBIOS UUID Cozystack computes for a VMInstance
// (chart helper virtual-machine.stableUuid): sha256 of
// "<namespace>-vm-instance-<name>-<seed>", hex, cut into UUID groups with
// the version nibble forced to 4 and the variant nibble to 9. KubeVirt
// also uses it as the NoCloud instance-id, so a new seed re-runs cloud-init
// and a guest moved between Hikube and vmd keeps its identity.
func StableUUID(namespace, name, seed string) string {
	sum := sha256.Sum256([]byte(namespace + "-" + DomainName(name) + "-" + seed))
	h := hex.EncodeToString(sum[:])
	return h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-9" + h[17:20] + "-" + h[20:32]
}
