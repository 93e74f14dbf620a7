package hypervisor

import (
	"fmt"
	"slices"
	"testing"
)

func TestDiskTargets(t *testing.T) {
	scsi := mustProfile(t, "ubuntu")
	scsi.DiskBus = DiskBusSCSI
	many := make([]DiskSpec, 28)
	wantMany := make([]string, 28)
	for i := range many {
		many[i] = DiskSpec{Path: fmt.Sprintf("/v/d%d.qcow2", i), Format: DiskFormatQCOW2}
		wantMany[i] = diskName("vd", i)
	}
	tests := []struct {
		name    string
		profile *Profile
		disks   []DiskSpec
		want    []string
	}{
		{name: "no disks", profile: mustProfile(t, "ubuntu"), want: []string{}},
		{
			name: "no profile is sata", profile: nil,
			disks: []DiskSpec{{Path: "/v/a.qcow2", Format: DiskFormatQCOW2}, {Path: "/v/b.qcow2", Format: DiskFormatQCOW2}},
			want:  []string{"sda", "sdb"},
		},
		{
			name: "virtio profile", profile: mustProfile(t, "ubuntu"),
			disks: []DiskSpec{{Path: "/v/a.qcow2", Format: DiskFormatQCOW2}, {Path: "/v/b.qcow2", Format: DiskFormatQCOW2}},
			want:  []string{"vda", "vdb"},
		},
		{
			name: "optical and bus overrides share sdX", profile: mustProfile(t, "ubuntu"),
			disks: []DiskSpec{
				{Path: "/v/installer.iso", Format: DiskFormatRaw, Optical: true},
				{Path: "/v/system.qcow2", Format: DiskFormatQCOW2},
				{Path: "/v/scsi.qcow2", Format: DiskFormatQCOW2, Bus: DiskBusSCSI},
				{Path: "/v/data.qcow2", Format: DiskFormatQCOW2},
				{Path: "/v/sata.qcow2", Format: DiskFormatQCOW2, Bus: DiskBusSATA},
			},
			want: []string{"sda", "vda", "sdb", "vdb", "sdc"},
		},
		{
			name: "scsi profile with a virtio override", profile: scsi,
			disks: []DiskSpec{{Path: "/v/a.qcow2", Format: DiskFormatQCOW2}, {Path: "/v/b.qcow2", Format: DiskFormatQCOW2, Bus: DiskBusVirtio}},
			want:  []string{"sda", "vda"},
		},
		{name: "past z", profile: mustProfile(t, "ubuntu"), disks: many, want: wantMany},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := spec(t, DomainTypeQEMU, "u1.large", "")
			s.Profile, s.Disks = tc.profile, tc.disks
			got := DiskTargets(s)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("DiskTargets = %v, want %v", got, tc.want)
			}
			// The names must be the ones the built domain uses: the
			// user disks come first, in spec order.
			dom, _ := parse(t, s)
			for i, want := range tc.want {
				if dev := dom.Devices.Disks[i].Target.Dev; dev != want {
					t.Errorf("BuildDomain disk %d = %s, DiskTargets says %s", i, dev, want)
				}
			}
		})
	}
}
