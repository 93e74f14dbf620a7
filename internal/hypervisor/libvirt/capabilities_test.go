package libvirt

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestParseCapabilities(t *testing.T) {
	tests := []struct {
		name      string
		file      string
		cpus      int
		sizes     []uint64
		hugepages map[uint64]uint64
	}{
		{
			name:      "two NUMA cells with reserved huge pages",
			file:      "caps-numa-hugepages.xml",
			cpus:      16,
			sizes:     []uint64{2048, 1048576},
			hugepages: map[uint64]uint64{2048: 1536, 1048576: 2},
		},
		{
			name:      "no NUMA topology: CPUs from the CPU topology, nothing reserved",
			file:      "caps-no-numa.xml",
			cpus:      6,
			sizes:     []uint64{2048},
			hugepages: map[uint64]uint64{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseCapabilities(string(raw))
			if err != nil {
				t.Fatal(err)
			}
			if got.CPUs != tt.cpus {
				t.Errorf("CPUs = %d, want %d", got.CPUs, tt.cpus)
			}
			if !slices.Equal(got.HugepageSizesKiB, tt.sizes) {
				t.Errorf("HugepageSizesKiB = %v, want %v", got.HugepageSizesKiB, tt.sizes)
			}
			if len(got.HugepagesKiB) != len(tt.hugepages) {
				t.Errorf("HugepagesKiB = %v, want %v", got.HugepagesKiB, tt.hugepages)
			}
			for size, n := range tt.hugepages {
				if got.HugepagesKiB[size] != n {
					t.Errorf("HugepagesKiB[%d] = %d, want %d", size, got.HugepagesKiB[size], n)
				}
			}
		})
	}
}

func TestParseCapabilitiesRejects(t *testing.T) {
	tests := []struct {
		name string
		raw  string
	}{
		{"not xml", "<capabilities"},
		{"unknown page unit", "<capabilities><host><cpu><pages unit='parsecs' size='4'/></cpu></host></capabilities>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parseCapabilities(tt.raw); err == nil {
				t.Error("parseCapabilities accepted it")
			}
		})
	}
}

func TestToKiB(t *testing.T) {
	tests := []struct {
		name string
		size int
		unit string
		want uint64
	}{
		{"KiB", 2048, "KiB", 2048},
		{"default unit", 4, "", 4},
		{"MiB", 2, "MiB", 2048},
		{"GiB", 1, "GiB", 1048576},
		{"bytes", 4096, "b", 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := toKiB(tt.size, tt.unit)
			if err != nil || got != tt.want {
				t.Errorf("toKiB(%d, %q) = %d, %v; want %d", tt.size, tt.unit, got, err, tt.want)
			}
		})
	}
}
