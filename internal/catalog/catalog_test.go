package catalog

import (
	"slices"
	"testing"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/hypervisor"
	"github.com/vmdhq/vmd/internal/images"
)

const (
	mi = int64(1) << 20
	gi = int64(1) << 30
)

func TestInstanceType(t *testing.T) {
	c := Default()
	tests := []struct {
		name   string
		lookup string
		want   v1alpha1.InstanceTypeInfo
		found  bool
	}{
		{name: "chart default", lookup: "u1.medium", want: v1alpha1.InstanceTypeInfo{Name: "u1.medium", CPU: 1, Memory: 4 * gi}, found: true},
		{name: "smallest", lookup: "u1.nano", want: v1alpha1.InstanceTypeInfo{Name: "u1.nano", CPU: 1, Memory: 512 * mi}, found: true},
		{name: "hikube s1", lookup: "s1.3xlarge", want: v1alpha1.InstanceTypeInfo{Name: "s1.3xlarge", CPU: 24, Memory: 48 * gi}, found: true},
		{name: "hikube m1", lookup: "m1.3xlarge", want: v1alpha1.InstanceTypeInfo{Name: "m1.3xlarge", CPU: 12, Memory: 96 * gi}, found: true},
		{name: "largest", lookup: "n1.8xlarge", want: v1alpha1.InstanceTypeInfo{Name: "n1.8xlarge", CPU: 64, Memory: 128 * gi}, found: true},
		{name: "unknown", lookup: "t2.micro"},
		{name: "empty", lookup: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := c.InstanceType(tc.lookup)
			if ok != tc.found || got != tc.want {
				t.Errorf("InstanceType(%q) = %+v, %v; want %+v, %v", tc.lookup, got, ok, tc.want, tc.found)
			}
		})
	}
}

func TestProfile(t *testing.T) {
	c := Default()
	tests := []struct {
		name   string
		lookup string
		want   v1alpha1.ProfileInfo
		found  bool
	}{
		{name: "chart default", lookup: "ubuntu", want: v1alpha1.ProfileInfo{Name: "ubuntu", MinCPU: 1, MinMemory: 2 * gi}, found: true},
		{name: "windows 11", lookup: "windows.11", want: v1alpha1.ProfileInfo{Name: "windows.11", MinCPU: 2, MinMemory: 4 * gi}, found: true},
		{name: "fractional memory", lookup: "rhel.9", want: v1alpha1.ProfileInfo{Name: "rhel.9", MinCPU: 1, MinMemory: 3 * gi / 2}, found: true},
		{name: "no requirements", lookup: "legacy", want: v1alpha1.ProfileInfo{Name: "legacy"}, found: true},
		{name: "alias windows", lookup: "windows", want: v1alpha1.ProfileInfo{Name: "windows.2k25", MinCPU: 1, MinMemory: 2 * gi}, found: true},
		{name: "alias centos", lookup: "centos", want: v1alpha1.ProfileInfo{Name: "centos.stream9", MinCPU: 1, MinMemory: 3 * gi / 2}, found: true},
		{name: "unknown", lookup: "haiku"},
		{name: "empty means no profile, not a lookup", lookup: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := c.Profile(tc.lookup)
			if ok != tc.found || got != tc.want {
				t.Errorf("Profile(%q) = %+v, %v; want %+v, %v", tc.lookup, got, ok, tc.want, tc.found)
			}
		})
	}
}

func TestGoldenImage(t *testing.T) {
	c := Default()
	tests := []struct {
		name   string
		lookup string
		want   v1alpha1.GoldenImageInfo
		found  bool
	}{
		{name: "hikube cloud image", lookup: "ubuntu-2404", want: v1alpha1.GoldenImageInfo{Name: "ubuntu-2404", MinStorage: 4 * gi}, found: true},
		{name: "cozystack name", lookup: "opensuse-leap-15.6", want: v1alpha1.GoldenImageInfo{Name: "opensuse-leap-15.6", MinStorage: gi}, found: true},
		{name: "installer", lookup: "proxmox-9", want: v1alpha1.GoldenImageInfo{Name: "proxmox-9", MinStorage: 2 * gi, ISO: true}, found: true},
		{name: "legacy", lookup: "cirros", want: v1alpha1.GoldenImageInfo{Name: "cirros", MinStorage: gi}, found: true},
		{name: "large minimum", lookup: "oracle-9", want: v1alpha1.GoldenImageInfo{Name: "oracle-9", MinStorage: 40 * gi}, found: true},
		{name: "unknown", lookup: "windows-2k25"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := c.GoldenImage(tc.lookup)
			if ok != tc.found || got != tc.want {
				t.Errorf("GoldenImage(%q) = %+v, %v; want %+v, %v", tc.lookup, got, ok, tc.want, tc.found)
			}
		})
	}
}

func TestNamesAreCompleteSortedAndResolvable(t *testing.T) {
	c := Default()
	var profiles []string
	for _, p := range hypervisor.Profiles() {
		profiles = append(profiles, p.Name)
	}
	for alias := range hypervisor.ProfileAliases() {
		profiles = append(profiles, alias)
	}
	tests := []struct {
		name    string
		got     []string
		want    int
		resolve func(string) bool
	}{
		{name: "instance types", got: c.InstanceTypeNames(), want: len(hypervisor.InstanceTypes()),
			resolve: func(n string) bool { _, ok := c.InstanceType(n); return ok }},
		{name: "profiles with aliases", got: c.ProfileNames(), want: len(profiles),
			resolve: func(n string) bool { _, ok := c.Profile(n); return ok }},
		{name: "golden images", got: c.GoldenImageNames(), want: len(images.GoldenImages()),
			resolve: func(n string) bool { _, ok := c.GoldenImage(n); return ok }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.got) != tc.want {
				t.Errorf("%d names, want %d", len(tc.got), tc.want)
			}
			if !slices.IsSorted(tc.got) {
				t.Errorf("names not sorted: %v", tc.got)
			}
			if len(slices.Compact(slices.Clone(tc.got))) != len(tc.got) {
				t.Errorf("duplicate names: %v", tc.got)
			}
			for _, n := range tc.got {
				if !tc.resolve(n) {
					t.Errorf("listed name %q does not resolve", n)
				}
			}
		})
	}
	for _, alias := range []string{"centos", "windows", "rhel", "opensuse"} {
		if !slices.Contains(c.ProfileNames(), alias) {
			t.Errorf("ProfileNames() lacks alias %q", alias)
		}
	}
}

func TestNamesAreCopies(t *testing.T) {
	c := Default()
	c.InstanceTypeNames()[0] = "x"
	c.ProfileNames()[0] = "x"
	c.GoldenImageNames()[0] = "x"
	if c.InstanceTypeNames()[0] == "x" || c.ProfileNames()[0] == "x" || c.GoldenImageNames()[0] == "x" {
		t.Errorf("mutating a returned name list changed the catalogue")
	}
}

func TestDefaultIsShared(t *testing.T) {
	first, second := Default(), Default()
	if first != second {
		t.Errorf("Default() built the catalogue twice")
	}
}
