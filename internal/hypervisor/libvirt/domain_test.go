package libvirt

import (
	"testing"

	"libvirt.org/go/libvirt"

	"github.com/vmdhq/vmd/internal/hypervisor"
)

func TestParseOwner(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    hypervisor.DomainOwner
		wantErr bool
	}{
		{
			name: "as libvirt returns it (namespace stripped)",
			raw:  "<instance>\n  <namespace>tenant-a</namespace>\n  <name>web</name>\n  <uid>u-1</uid>\n  <generation>7</generation>\n</instance>",
			want: hypervisor.DomainOwner{Namespace: "tenant-a", Name: "web", UID: "u-1", Generation: 7},
		},
		{
			name: "as BuildDomain writes it",
			raw: `<vmd:instance xmlns:vmd="` + hypervisor.MetadataNamespace + `"><vmd:namespace>tenant-a</vmd:namespace>` +
				`<vmd:name>web</vmd:name><vmd:uid>u-1</vmd:uid><vmd:generation>7</vmd:generation></vmd:instance>`,
			want: hypervisor.DomainOwner{Namespace: "tenant-a", Name: "web", UID: "u-1", Generation: 7},
		},
		{
			name: "no generation yet",
			raw:  "<instance><namespace>n</namespace><name>web</name><uid>u-1</uid></instance>",
			want: hypervisor.DomainOwner{Namespace: "n", Name: "web", UID: "u-1"},
		},
		{name: "no uid", raw: "<instance><name>web</name></instance>", wantErr: true},
		{name: "bad generation", raw: "<instance><uid>u</uid><generation>seven</generation></instance>", wantErr: true},
		{name: "not xml", raw: "<instance", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseOwner(tt.raw)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseOwner error = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("parseOwner = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestStatusOf(t *testing.T) {
	tests := []struct {
		name   string
		state  libvirt.DomainState
		reason int
		want   DomainStatus
	}{
		{"booted", libvirt.DOMAIN_RUNNING, int(libvirt.DOMAIN_RUNNING_BOOTED),
			DomainStatus{Exists: true, Running: true, State: "running", Reason: "booted"}},
		{"paused by io error", libvirt.DOMAIN_PAUSED, int(libvirt.DOMAIN_PAUSED_IOERROR),
			DomainStatus{Exists: true, Running: true, State: "paused", Reason: "ioerror"}},
		{"shutting down", libvirt.DOMAIN_SHUTDOWN, int(libvirt.DOMAIN_SHUTDOWN_USER),
			DomainStatus{Exists: true, Running: true, State: "shutdown", Reason: "user"}},
		{"qemu killed", libvirt.DOMAIN_SHUTOFF, int(libvirt.DOMAIN_SHUTOFF_CRASHED),
			DomainStatus{Exists: true, State: "shutoff", Reason: "crashed"}},
		{"destroyed", libvirt.DOMAIN_SHUTOFF, int(libvirt.DOMAIN_SHUTOFF_DESTROYED),
			DomainStatus{Exists: true, State: "shutoff", Reason: "destroyed"}},
		{"guest powered off", libvirt.DOMAIN_SHUTOFF, int(libvirt.DOMAIN_SHUTOFF_SHUTDOWN),
			DomainStatus{Exists: true, State: "shutoff", Reason: "shutdown"}},
		{"panicked and preserved", libvirt.DOMAIN_CRASHED, int(libvirt.DOMAIN_CRASHED_PANICKED),
			DomainStatus{Exists: true, Running: true, State: "crashed", Reason: "panicked"}},
		{"future reason", libvirt.DOMAIN_SHUTOFF, 77,
			DomainStatus{Exists: true, State: "shutoff", Reason: "reason-77"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := statusOf(tt.state, tt.reason); got != tt.want {
				t.Errorf("statusOf = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDomainStatusHypervisor(t *testing.T) {
	st := DomainStatus{Exists: true, Running: false, State: "shutoff", Reason: "crashed"}
	want := hypervisor.DomainState{Exists: true, Running: false, Reason: "crashed"}
	if got := st.Hypervisor(); got != want {
		t.Errorf("Hypervisor() = %+v, want %+v", got, want)
	}
}
