// Package cloudinit builds the NoCloud seed a VMInstance's guest reads at
// first boot: meta-data, user-data and (optionally) network-config on an
// ISO9660 volume labelled "cidata".
//
// The guest-visible identity is the point of this package. A VM that boots
// on Hikube (Cozystack's chart + KubeVirt) and the same manifest booted by
// vmd must look the same from inside: the same instance-id (so cloud-init
// does not re-run, or does, exactly when it would on Hikube), the same
// hostname, the same instance-type and public-keys in meta-data, and the
// same user-data Cozystack would have stored in its `-cloud-init` Secret.
// Every rule below names the Cozystack or KubeVirt code it copies.
//
// The package is pure Go: documents are typed values, the ISO is written
// with github.com/kdomanski/iso9660, and nothing here touches libvirt.
package cloudinit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/hypervisor"
)

// Names the NoCloud datasource looks for. cloud-init finds the volume by
// filesystem label (blkid LABEL=cidata or LABEL=CIDATA) and then reads the
// files by these exact lowercase names; meta-data and user-data MUST both be
// present (an empty user-data is fine), network-config is optional.
const (
	VolumeLabel       = "cidata"
	MetaDataFile      = "meta-data"
	UserDataFile      = "user-data"
	NetworkConfigFile = "network-config"
)

// hashVersion is mixed into Hash. Bump it when the ISO layout changes in a
// way the documents do not show (another file, another label), so that
// existing seeds are rewritten once after an upgrade.
const hashVersion = "vmd-nocloud-v1"

// Seed is everything the guest receives through NoCloud. It is a plain
// value: the controller builds it with SeedFor, may adjust it (see
// InstanceID), and hands it to WriteISOFile.
type Seed struct {
	// InstanceID is the NoCloud instance-id. KubeVirt uses the domain's
	// SMBIOS UUID (spec.domain.firmware.uuid), which Cozystack computes
	// with hypervisor.StableUUID; cloud-init runs its per-instance modules
	// again whenever it changes.
	//
	// Cozystack keeps the existing firmware UUID when cloudInitSeed is
	// removed from a VM that already exists (so removing a seed does not
	// re-run cloud-init). SeedFor cannot know the previous UUID; a caller
	// that tracks it overwrites this field.
	InstanceID string
	// Hostname is the NoCloud local-hostname: the KubeVirt VMI name
	// `vm-instance-<name>`, sanitised the way KubeVirt does.
	Hostname string
	// InstanceType is the cluster instance type name KubeVirt publishes
	// as instance-type; "" (custom sizing) omits the field.
	InstanceType string
	// PublicKeys are spec.sshKeys in order. They reach meta-data
	// public-keys always, and user-data only when UserData is empty.
	PublicKeys []string
	// UserData is spec.cloudInit, passed verbatim. When it is empty,
	// UserDataBytes generates a #cloud-config with PublicKeys, as
	// Cozystack's chart does.
	UserData string
	// Network, when not nil, becomes the network-config file (netplan v2).
	// Hikube guests get DHCP on the pod network and no network-config;
	// vmd adds one only when the host network needs a static address.
	Network *NetworkConfig
}

// SeedFor applies Cozystack's and KubeVirt's rules to a VMInstance: the
// instance-id from namespace, name and cloudInitSeed; the hostname
// `vm-instance-<name>`; the instance type in force (u1.medium when the spec
// leaves it unset, none for custom sizing); sshKeys and cloudInit as given.
// net is the guest network configuration chosen by the networking layer, or
// nil for DHCP without a network-config file. SeedFor copies what it keeps,
// so later changes to vm or net do not alter the returned Seed.
func SeedFor(vm *v1alpha1.VMInstance, net *NetworkConfig) Seed {
	ns := vm.ObjectMeta.Namespace
	if ns == "" {
		ns = v1alpha1.DefaultNamespace
	}
	return Seed{
		InstanceID:   hypervisor.StableUUID(ns, vm.ObjectMeta.Name, vm.Spec.CloudInitSeed),
		Hostname:     sanitizeHostname(hypervisor.DomainName(vm.ObjectMeta.Name)),
		InstanceType: instanceTypeInForce(&vm.Spec),
		PublicKeys:   slices.Clone(vm.Spec.SSHKeys),
		UserData:     vm.Spec.CloudInit,
		Network:      net.Clone(),
	}
}

// Needed reports whether the VM gets a seed disk at all. Cozystack creates
// the cloudinitdisk iff cloudInit or sshKeys is non-empty (a Hikube guest
// without either boots with no NoCloud volume); vmd also needs one to pass a
// network-config.
func (s Seed) Needed() bool {
	return s.UserData != "" || len(s.PublicKeys) > 0 || s.Network != nil
}

// instanceTypeInForce mirrors the API defaulting: an absent instanceType is
// the default, an explicit "" is custom sizing.
func instanceTypeInForce(spec *v1alpha1.VMInstanceSpec) string {
	if spec.InstanceType == nil {
		return v1alpha1.DefaultInstanceType
	}
	return *spec.InstanceType
}

// sanitizeHostname is KubeVirt's dns.SanitizeHostname for a VMI without
// spec.hostname: the part before the first dot, cut to a DNS label's 63
// characters.
func sanitizeHostname(vmiName string) string {
	h, _, _ := strings.Cut(vmiName, ".")
	if len(h) > 63 {
		h = h[:63]
	}
	return h
}

// noCloudMetaData is KubeVirt's NoCloudMetadata (pkg/cloud-init): the field
// order and JSON names decide the exact bytes the guest reads.
type noCloudMetaData struct {
	InstanceType  string            `json:"instance-type,omitempty"`
	InstanceID    string            `json:"instance-id"`
	LocalHostname string            `json:"local-hostname,omitempty"`
	PublicSSHKeys map[string]string `json:"public-keys,omitempty"`
}

// MetaData renders the meta-data file exactly as KubeVirt does: the JSON
// encoding of {instance-type, instance-id, local-hostname, public-keys}
// (JSON is YAML, which is how cloud-init reads it). A guest therefore finds
// byte-for-byte the meta-data it would have on Hikube.
//
// The one deviation: characters that YAML forbids in a document or reads as
// a line break even inside a quoted string (DEL, C1 controls including NEL,
// U+FEFF, U+FFFE, U+FFFF), which Go's JSON encoder leaves raw, are written
// as \u escapes, so a stray control character in an ssh key cannot make
// cloud-init reject or misread the file. Ordinary input is unaffected.
func (s Seed) MetaData() ([]byte, error) {
	md := noCloudMetaData{
		InstanceType:  s.InstanceType,
		InstanceID:    s.InstanceID,
		LocalHostname: s.Hostname,
		PublicSSHKeys: publicKeyMap(s.PublicKeys),
	}
	b, err := json.Marshal(md)
	if err != nil {
		return nil, fmt.Errorf("encoding meta-data: %w", err)
	}
	return escapeYAMLUnprintable(b), nil
}

// publicKeyMap numbers the keys the way they reach KubeVirt's meta-data.
// Cozystack stores sshKeys[i] in its `-ssh-keys` Secret under "key<i>";
// KubeVirt reads the mounted Secret directory in file-name order, skips
// empty values and numbers the rest from "0". File-name order is
// lexicographic, so with eleven or more keys key10 comes before key2, and
// the numbering follows.
func publicKeyMap(keys []string) map[string]string {
	if len(keys) == 0 {
		return nil
	}
	order := make([]int, len(keys))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		return strings.Compare("key"+strconv.Itoa(a), "key"+strconv.Itoa(b))
	})
	m := make(map[string]string, len(keys))
	n := 0
	for _, i := range order {
		if keys[i] == "" {
			continue
		}
		m[strconv.Itoa(n)] = keys[i]
		n++
	}
	return m
}

// escapeYAMLUnprintable rewrites, in JSON text, every rune outside YAML's
// printable set as a \uXXXX escape. Such runes can only occur inside JSON
// strings (the syntax is ASCII), where the escape means the same rune, so
// the JSON value is unchanged. YAML's printable set excludes only BMP code
// points here, so four hex digits always suffice.
func escapeYAMLUnprintable(b []byte) []byte {
	if !bytes.ContainsFunc(b, notYAMLPrintable) {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	for _, r := range string(b) {
		if notYAMLPrintable(r) {
			out = fmt.Appendf(out, `\u%04x`, r)
			continue
		}
		out = utf8.AppendRune(out, r)
	}
	return out
}

// notYAMLPrintable reports runes a YAML 1.1 parser (cloud-init's PyYAML)
// would not read back unchanged from a double-quoted scalar: those outside
// c-printable, NEL (a line break in YAML 1.1, folded to a space), and
// U+FEFF, which parsers treat as a byte-order mark. Go's JSON encoder
// already escapes the other line breaks (U+2028, U+2029).
func notYAMLPrintable(r rune) bool {
	switch {
	case r == '\t' || r == '\n' || r == '\r':
		return false
	case r < 0x20 || r == 0x7f:
		return true
	case r >= 0x80 && r <= 0x9f:
		return true // C1 controls, and NEL (U+0085), a YAML 1.1 line break
	case r == 0xfeff || r == 0xfffe || r == 0xffff:
		return true
	case r >= 0xd800 && r <= 0xdfff:
		return true
	}
	return false
}

// UserDataBytes returns the user-data file. A non-empty UserData
// (spec.cloudInit) is passed verbatim, as Cozystack stores it in its
// `-cloud-init` Secret. Otherwise, when there are keys, it generates what
// Cozystack's secret.yaml renders:
//
//	#cloud-config
//	ssh_authorized_keys:
//	  - "<key0>"
//	  - "<key1>"
//
// Each key is quoted like Helm's `quote` (Go %q). For ordinary OpenSSH keys
// that is the key between double quotes; a key with quotes, backslashes,
// colons, '#' or control characters still yields valid YAML that decodes to
// the key, because every escape Go emits is also a YAML double-quoted
// escape. With neither cloudInit nor keys the result is empty, which
// cloud-init reads as "no user data".
func (s Seed) UserDataBytes() []byte {
	if s.UserData != "" {
		return []byte(s.UserData)
	}
	if len(s.PublicKeys) == 0 {
		return []byte{}
	}
	var b strings.Builder
	b.WriteString("#cloud-config\nssh_authorized_keys:\n")
	for _, k := range s.PublicKeys {
		b.WriteString("  - ")
		b.WriteString(strconv.Quote(k))
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// NetworkConfigBytes returns the network-config file, or nil (no file) when
// Network is nil. An invalid NetworkConfig is an error wrapping
// errdefs.ErrInvalid.
func (s Seed) NetworkConfigBytes() ([]byte, error) {
	if s.Network == nil {
		return nil, nil
	}
	if err := s.Network.Validate(); err != nil {
		return nil, err
	}
	return s.Network.render()
}

// documents renders the files of the seed in ISO order.
func (s Seed) documents() ([]document, error) {
	md, err := s.MetaData()
	if err != nil {
		return nil, err
	}
	docs := []document{{MetaDataFile, md}, {UserDataFile, s.UserDataBytes()}}
	nc, err := s.NetworkConfigBytes()
	if err != nil {
		return nil, err
	}
	if nc != nil {
		docs = append(docs, document{NetworkConfigFile, nc})
	}
	return docs, nil
}

// document is one file of the seed volume.
type document struct {
	name string
	data []byte
}

// Hash identifies the seed's content: sha256 over the file names and bytes
// of the three documents (length-prefixed, so moving bytes from one file to
// another changes it) and the layout version. The controller stores it and
// rewrites the ISO only when it changes, so an unchanged VM keeps its file
// and an edited cloudInit or sshKeys is picked up on the next boot.
//
// A network configuration that fails validation is hashed by its rendering
// anyway: the hash still changes when it changes, and WriteISO reports the
// error.
func (s Seed) Hash() string {
	h := sha256.New()
	h.Write([]byte(hashVersion))
	put := func(name string, data []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(name)))
		h.Write(n[:])
		h.Write([]byte(name))
		binary.BigEndian.PutUint64(n[:], uint64(len(data)))
		h.Write(n[:])
		h.Write(data)
	}
	md, err := s.MetaData()
	if err != nil {
		md = []byte("error: " + err.Error())
	}
	put(MetaDataFile, md)
	put(UserDataFile, s.UserDataBytes())
	if s.Network != nil {
		nc, err := s.Network.render()
		if err != nil {
			nc = []byte("error: " + err.Error())
		}
		put(NetworkConfigFile, nc)
	}
	return hex.EncodeToString(h.Sum(nil))
}
