// Package catalog adapts vmd's built-in tables (instance types, profiles,
// golden images) to the v1alpha1.Catalog interface that validation uses.
// It exists so api/v1alpha1 can ask "does u1.medium exist and how big is
// it?" without importing host-side packages.
package catalog

import (
	"maps"
	"slices"
	"sync"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/hypervisor"
	"github.com/vmdhq/vmd/internal/images"
)

// Catalog answers validation's questions from fixed tables. It is
// immutable after construction and safe for concurrent use.
type Catalog struct {
	instanceTypes map[string]v1alpha1.InstanceTypeInfo
	// profiles holds real profiles and aliases; an alias maps to the
	// resolved profile's info, whose Name is the real preference.
	profiles map[string]v1alpha1.ProfileInfo
	images   map[string]v1alpha1.GoldenImageInfo

	instanceTypeNames []string
	profileNames      []string
	imageNames        []string
}

var _ v1alpha1.Catalog = (*Catalog)(nil)

// Default returns the catalogue built from the tables compiled into vmd:
// KubeVirt's and Hikube's instance types, KubeVirt's preferences plus the
// Hikube short aliases, and the Hikube and Cozystack golden images. The
// catalogue is built once and shared; it is read-only.
func Default() *Catalog { return defaultCatalog() }

// defaultCatalog builds the shared catalogue on first use.
var defaultCatalog = sync.OnceValue(build)

// build assembles a catalogue from the embedded tables.
func build() *Catalog {
	c := &Catalog{
		instanceTypes: make(map[string]v1alpha1.InstanceTypeInfo),
		profiles:      make(map[string]v1alpha1.ProfileInfo),
		images:        make(map[string]v1alpha1.GoldenImageInfo),
	}
	for _, t := range hypervisor.InstanceTypes() {
		c.instanceTypes[t.Name] = v1alpha1.InstanceTypeInfo{Name: t.Name, CPU: int64(t.CPU), Memory: t.Memory}
	}
	for _, p := range hypervisor.Profiles() {
		c.profiles[p.Name] = profileInfo(p)
	}
	for alias := range hypervisor.ProfileAliases() {
		// LookupProfile resolves the alias the same way callers would.
		if p, ok := hypervisor.LookupProfile(alias); ok {
			c.profiles[alias] = profileInfo(p)
		}
	}
	for _, g := range images.GoldenImages() {
		c.images[g.Name] = v1alpha1.GoldenImageInfo{Name: g.Name, MinStorage: g.MinStorage, ISO: g.Kind == images.KindISO}
	}
	c.instanceTypeNames = slices.Sorted(maps.Keys(c.instanceTypes))
	c.profileNames = slices.Sorted(maps.Keys(c.profiles))
	c.imageNames = slices.Sorted(maps.Keys(c.images))
	return c
}

// profileInfo keeps what validation needs of a profile.
func profileInfo(p hypervisor.Profile) v1alpha1.ProfileInfo {
	return v1alpha1.ProfileInfo{
		Name:      p.Name,
		MinCPU:    int64(p.Requirements.MinCPU),
		MinMemory: p.Requirements.MinMemory,
	}
}

// InstanceType returns the sizing of a named instance type.
func (c *Catalog) InstanceType(name string) (v1alpha1.InstanceTypeInfo, bool) {
	t, ok := c.instanceTypes[name]
	return t, ok
}

// InstanceTypeNames lists every instance type, sorted.
func (c *Catalog) InstanceTypeNames() []string { return slices.Clone(c.instanceTypeNames) }

// Profile returns a profile by name or alias; Name in the result is the
// resolved preference.
func (c *Catalog) Profile(name string) (v1alpha1.ProfileInfo, bool) {
	p, ok := c.profiles[name]
	return p, ok
}

// ProfileNames lists every accepted profile name, aliases included, sorted.
func (c *Catalog) ProfileNames() []string { return slices.Clone(c.profileNames) }

// GoldenImage returns a golden image by name.
func (c *Catalog) GoldenImage(name string) (v1alpha1.GoldenImageInfo, bool) {
	g, ok := c.images[name]
	return g, ok
}

// GoldenImageNames lists every golden image name, sorted.
func (c *Catalog) GoldenImageNames() []string { return slices.Clone(c.imageNames) }
