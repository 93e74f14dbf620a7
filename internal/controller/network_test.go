package controller

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
)

// fakeNetworker records calls in order and answers Attach from a fixed
// attachment.
type fakeNetworker struct {
	att       NetworkAttachment
	attachErr error
	syncErr   error
	calls     []string
}

func (f *fakeNetworker) Attach(_ context.Context, vm *v1alpha1.VMInstance) (NetworkAttachment, error) {
	f.calls = append(f.calls, "attach "+vm.ObjectMeta.Name)
	return f.att, f.attachErr
}

func (f *fakeNetworker) Sync(context.Context) error {
	f.calls = append(f.calls, "sync")
	return f.syncErr
}

func (f *fakeNetworker) Release(_ context.Context, uid string) error {
	f.calls = append(f.calls, "release "+uid)
	return nil
}

func tenantAttachment() NetworkAttachment {
	return NetworkAttachment{
		Tap: "vmt-0123456789", MAC: "02:00:00:00:00:01",
		IP: netip.MustParseAddr("10.240.0.2"), Subnet: netip.MustParsePrefix("10.240.0.0/24"),
		Gateway: netip.MustParseAddr("10.240.0.1"), DNS: []netip.Addr{netip.MustParseAddr("9.9.9.9")},
		Addresses: []v1alpha1.Address{
			{Type: AddressTypePrivate, Address: "10.240.0.2", MAC: "02:00:00:00:00:01"},
			{Type: AddressTypeExternal, Address: "192.0.2.10"},
		},
	}
}

func TestTenantNetworkAttachDefineRelease(t *testing.T) {
	f := newFixture(t)
	nw := &fakeNetworker{att: tenantAttachment()}
	f.vms.Net = nw
	// The interim network must be ignored when a Networker is set.
	f.vms.Network = InterimNetwork{Bridge: "br0", Subnet: netip.MustParsePrefix("10.77.0.0/24")}
	f.createVM("web", v1alpha1.VMInstanceSpec{External: ptr(true), SSHKeys: []string{"ssh-ed25519 AAAA a@b"}})
	f.mustReconcileVM("web")

	vm := f.vm("web")
	if !slices.Equal(vm.Status.Addresses, nw.att.Addresses) {
		t.Fatalf("addresses = %+v", vm.Status.Addresses)
	}
	if !slices.Equal(nw.calls, []string{"attach web", "sync"}) {
		t.Fatalf("calls = %v, want attach then sync before define", nw.calls)
	}
	dom, _ := f.domains.Get("default.vm-instance-web")
	x := parseDomain(t, dom.XML)
	if len(x.Devices.Interfaces) != 1 {
		t.Fatalf("interfaces %+v", x.Devices.Interfaces)
	}
	nic := x.Devices.Interfaces[0]
	if nic.MAC.Address != nw.att.MAC || nic.Target == nil || nic.Target.Dev != nw.att.Tap || nic.Source != nil && nic.Source.Bridge != nil {
		t.Fatalf("nic = %+v, want the pre-created tap", nic)
	}
	files := readISO(t, f.vms.paths("default", "web").ISO)
	netcfg := string(files["network-config"])
	for _, want := range []string{"10.240.0.2/24", nw.att.MAC, "10.240.0.1", "9.9.9.9"} {
		if !strings.Contains(netcfg, want) {
			t.Fatalf("network-config lacks %q:\n%s", want, netcfg)
		}
	}

	if _, err := f.store.Delete(context.Background(), v1alpha1.KindVMInstance, "default", "web", ""); err != nil {
		t.Fatal(err)
	}
	f.mustReconcileVM("web")
	if last := nw.calls[len(nw.calls)-1]; last != "release "+vm.ObjectMeta.UID {
		t.Fatalf("calls = %v, want a release last", nw.calls)
	}
	if f.domains.Len() != 0 {
		t.Fatal("domain left")
	}
}

func TestTenantNetworkConditions(t *testing.T) {
	tests := []struct {
		name       string
		mutate     func(*fakeNetworker)
		wantReady  string // Ready reason when the reconcile fails
		wantExtMsg string // ExternalUnavailable message, "" = absent
	}{
		{name: "external refused", mutate: func(n *fakeNetworker) {
			n.att.Addresses = n.att.Addresses[:1]
			n.att.ExternalUnavailable = "no uplink configured"
		}, wantExtMsg: "no uplink configured"},
		{name: "pool exhausted", mutate: func(n *fakeNetworker) { n.attachErr = errdefs.ErrUnavailable }, wantReady: "NetworkUnavailable"},
		{name: "host sync fails", mutate: func(n *fakeNetworker) { n.syncErr = errors.New("no CAP_NET_ADMIN") }, wantReady: "NetworkSyncFailed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			nw := &fakeNetworker{att: tenantAttachment()}
			tt.mutate(nw)
			f.vms.Net = nw
			f.createVM("web", v1alpha1.VMInstanceSpec{External: ptr(true)})
			_, err := f.reconcile(f.vms, v1alpha1.KindVMInstance, "web")
			vm := f.vm("web")
			if tt.wantReady != "" {
				c := v1alpha1.FindCondition(vm.Status.Conditions, v1alpha1.ConditionReady)
				if err == nil || c == nil || c.Reason != tt.wantReady {
					t.Fatalf("err = %v, Ready = %+v; want a retry with reason %s", err, c, tt.wantReady)
				}
				if f.domains.Len() != 0 {
					t.Fatal("domain defined without its network")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := v1alpha1.FindCondition(vm.Status.Conditions, ConditionExternalUnavailable)
			if c == nil || c.Status != v1alpha1.ConditionTrue || c.Message != tt.wantExtMsg {
				t.Fatalf("ExternalUnavailable = %+v", c)
			}
			if f.domains.Len() != 1 {
				t.Fatal("a refused external IP must not keep the VM from running")
			}
			// Once exposure works, the condition goes.
			nw.att = tenantAttachment()
			f.mustReconcileVM("web")
			if c := v1alpha1.FindCondition(f.vm("web").Status.Conditions, ConditionExternalUnavailable); c != nil {
				t.Fatalf("ExternalUnavailable still set: %+v", c)
			}
		})
	}
}
