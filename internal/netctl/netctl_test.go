package netctl

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/controller"
	"github.com/vmdhq/vmd/internal/network"
	"github.com/vmdhq/vmd/internal/network/dhcp"
	"github.com/vmdhq/vmd/internal/network/ipamstore"
	"github.com/vmdhq/vmd/internal/network/netlink"
	"github.com/vmdhq/vmd/internal/state"
)

var (
	tenantPool = netip.MustParsePrefix("10.240.0.0/16")
	extPool    = network.AddrRange{First: netip.MustParseAddr("192.0.2.10"), Last: netip.MustParseAddr("192.0.2.20")}
	hostCfg    = network.HostConfig{Uplink: "eth0", TenantPool: tenantPool, ExternalPool: extPool}
)

func ptr[T any](v T) *T { return &v }

func instance(ns, name, uid string, spec v1alpha1.VMInstanceSpec) *v1alpha1.VMInstance {
	vm := &v1alpha1.VMInstance{
		TypeMeta:   v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindVMInstance},
		ObjectMeta: v1alpha1.ObjectMeta{Namespace: ns, Name: name, UID: uid},
		Spec:       spec,
	}
	v1alpha1.SetDefaults(vm)
	vm.ObjectMeta.UID = uid
	return vm
}

func endpoint(ns, name, uid, ip, ext string) ipamstore.Endpoint {
	ep := ipamstore.Endpoint{
		VM:  ipamstore.VM{UID: uid, Namespace: ns, Name: name},
		MAC: network.MACFor(uid), IP: netip.MustParseAddr(ip),
	}
	if ext != "" {
		ep.External = netip.MustParseAddr(ext)
	}
	return ep
}

func TestBuildDesired(t *testing.T) {
	subnets := map[string]netip.Prefix{"a": netip.MustParsePrefix("10.240.0.0/24"), "b": netip.MustParsePrefix("10.240.1.0/24")}
	portList := v1alpha1.VMInstanceSpec{External: ptr(true), ExternalPorts: []int{22, 443}, ExternalAllowICMP: ptr(false)}
	wholeIP := v1alpha1.VMInstanceSpec{External: ptr(true), ExternalMethod: v1alpha1.ExternalMethodWholeIP}
	tests := []struct {
		name     string
		host     network.HostConfig
		eps      []ipamstore.Endpoint
		vms      []*v1alpha1.VMInstance
		skip     string
		wantUp   string
		tenants  []string                     // namespaces, sorted
		exposed  map[string]*network.Exposure // by VM name; absent = not exposed
		private  []string                     // endpoint names in Desired
		skipped  []string                     // uids left out
		wantPool network.AddrRange
	}{
		{
			name: "no external", host: hostCfg,
			eps:    []ipamstore.Endpoint{endpoint("a", "web", "u1", "10.240.0.2", "")},
			vms:    []*v1alpha1.VMInstance{instance("a", "web", "u1", v1alpha1.VMInstanceSpec{})},
			wantUp: "eth0", tenants: []string{"a"}, private: []string{"web"}, wantPool: extPool,
		},
		{
			name: "port list", host: hostCfg,
			eps:    []ipamstore.Endpoint{endpoint("a", "web", "u1", "10.240.0.2", "192.0.2.10")},
			vms:    []*v1alpha1.VMInstance{instance("a", "web", "u1", portList)},
			wantUp: "eth0", tenants: []string{"a"}, private: []string{"web"}, wantPool: extPool,
			exposed: map[string]*network.Exposure{"web": {IP: netip.MustParseAddr("192.0.2.10"),
				Method: v1alpha1.ExternalMethodPortList, Ports: []int{22, 443}}},
		},
		{
			name: "whole ip with defaults", host: hostCfg,
			eps:    []ipamstore.Endpoint{endpoint("a", "web", "u1", "10.240.0.2", "192.0.2.11")},
			vms:    []*v1alpha1.VMInstance{instance("a", "web", "u1", wholeIP)},
			wantUp: "eth0", tenants: []string{"a"}, private: []string{"web"}, wantPool: extPool,
			exposed: map[string]*network.Exposure{"web": {IP: netip.MustParseAddr("192.0.2.11"),
				Method: v1alpha1.ExternalMethodWholeIP, Ports: []int{22}, AllowICMP: true}},
		},
		{
			name: "two tenants, one exposed", host: hostCfg,
			eps: []ipamstore.Endpoint{
				endpoint("b", "db", "u2", "10.240.1.2", ""),
				endpoint("a", "web", "u1", "10.240.0.2", "192.0.2.10"),
			},
			vms:    []*v1alpha1.VMInstance{instance("a", "web", "u1", portList), instance("b", "db", "u2", v1alpha1.VMInstanceSpec{})},
			wantUp: "eth0", tenants: []string{"a", "b"}, private: []string{"db", "web"}, wantPool: extPool,
			exposed: map[string]*network.Exposure{"web": {IP: netip.MustParseAddr("192.0.2.10"),
				Method: v1alpha1.ExternalMethodPortList, Ports: []int{22, 443}}},
		},
		{
			name: "allocated external no longer asked for", host: hostCfg,
			eps:    []ipamstore.Endpoint{endpoint("a", "web", "u1", "10.240.0.2", "192.0.2.10")},
			vms:    []*v1alpha1.VMInstance{instance("a", "web", "u1", v1alpha1.VMInstanceSpec{External: ptr(false)})},
			wantUp: "eth0", tenants: []string{"a"}, private: []string{"web"}, wantPool: extPool,
		},
		{
			name: "no uplink: private only, inert stand-ins",
			host: network.HostConfig{TenantPool: tenantPool},
			eps:  []ipamstore.Endpoint{endpoint("a", "web", "u1", "10.240.0.2", "192.0.2.10")},
			vms:  []*v1alpha1.VMInstance{instance("a", "web", "u1", portList)},
			// No uplink: the external IP kept in IPAM is not exposed.
			wantUp: NoUplink, tenants: []string{"a"}, private: []string{"web"}, wantPool: NoExternalPool,
		},
		{
			name: "orphan allocation and the released vm are left out", host: hostCfg,
			eps: []ipamstore.Endpoint{
				endpoint("a", "web", "u1", "10.240.0.2", ""),
				endpoint("a", "gone", "u9", "10.240.0.3", ""),
				endpoint("b", "db", "u2", "10.240.1.2", ""),
			},
			vms:    []*v1alpha1.VMInstance{instance("a", "web", "u1", v1alpha1.VMInstanceSpec{}), instance("b", "db", "u2", v1alpha1.VMInstanceSpec{})},
			skip:   "u2",
			wantUp: "eth0", tenants: []string{"a"}, private: []string{"web"}, skipped: []string{"u9", "u2"}, wantPool: extPool,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vms := map[string]*v1alpha1.VMInstance{}
			for _, vm := range tt.vms {
				vms[vm.ObjectMeta.UID] = vm
			}
			for i := range tt.eps {
				tt.eps[i].Subnet = subnets[tt.eps[i].Namespace]
			}
			d, skipped := BuildDesired(tt.host, ipamstore.Snapshot{Subnets: subnets, Endpoints: tt.eps}, vms, tt.skip)
			if d.Host.Uplink != tt.wantUp || d.Host.ExternalPool != tt.wantPool {
				t.Errorf("host = %s / %s, want %s / %s", d.Host.Uplink, d.Host.ExternalPool, tt.wantUp, tt.wantPool)
			}
			var gotTenants []string
			for _, tn := range d.Tenants {
				gotTenants = append(gotTenants, tn.Namespace)
				if tn.Bridge != network.BridgeName(tn.Namespace) || tn.Subnet != subnets[tn.Namespace] || tn.Gateway != network.GatewayFor(tn.Subnet) {
					t.Errorf("tenant %+v", tn)
				}
			}
			if !slices.Equal(gotTenants, tt.tenants) {
				t.Errorf("tenants = %v, want %v", gotTenants, tt.tenants)
			}
			var names []string
			for _, e := range d.Endpoints {
				names = append(names, e.Name)
				if e.Tap != network.TapName(e.Namespace, e.Name) {
					t.Errorf("%s: tap %q", e.Name, e.Tap)
				}
				want := tt.exposed[e.Name]
				switch {
				case want == nil && e.External != nil:
					t.Errorf("%s exposed as %+v, want not exposed", e.Name, e.External)
				case want != nil && (e.External == nil || e.External.IP != want.IP || e.External.Method != want.Method ||
					!slices.Equal(e.External.Ports, want.Ports) || e.External.AllowICMP != want.AllowICMP):
					t.Errorf("%s exposure = %+v, want %+v", e.Name, e.External, want)
				}
			}
			slices.Sort(names)
			if !slices.Equal(names, tt.private) {
				t.Errorf("endpoints = %v, want %v", names, tt.private)
			}
			var gotSkipped []string
			for _, ep := range skipped {
				gotSkipped = append(gotSkipped, ep.UID)
			}
			if !slices.Equal(gotSkipped, tt.skipped) {
				t.Errorf("skipped = %v, want %v", gotSkipped, tt.skipped)
			}
			// Whatever BuildDesired produces must be plannable: links and
			// rules are derived from it on every Sync.
			if _, err := network.Plan(d); err != nil {
				t.Fatalf("Plan refused the desired state: %v", err)
			}
		})
	}
}

func TestLeases(t *testing.T) {
	sub := netip.MustParsePrefix("10.240.0.0/24")
	d := network.Desired{
		Host:    hostCfg,
		Tenants: []network.Tenant{{Namespace: "a", Bridge: network.BridgeName("a"), Subnet: sub, Gateway: network.GatewayFor(sub)}},
		Endpoints: []network.Endpoint{
			{Namespace: "a", Name: "web", MAC: network.MACFor("u1"), IP: netip.MustParseAddr("10.240.0.2")},
		},
	}
	tests := []struct {
		name    string
		dns     []netip.Addr
		wantDNS []netip.Addr
	}{
		{name: "gateway as resolver by default", wantDNS: []netip.Addr{netip.MustParseAddr("10.240.0.1")}},
		{name: "configured resolvers", dns: []netip.Addr{netip.MustParseAddr("9.9.9.9")}, wantDNS: []netip.Addr{netip.MustParseAddr("9.9.9.9")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d.Host.DNS = tt.dns
			got := Leases(d)[network.BridgeName("a")]
			if len(got) != 1 {
				t.Fatalf("leases = %+v", got)
			}
			l := got[0]
			if l.MAC.String() != network.MACFor("u1").String() || l.Addr != netip.MustParsePrefix("10.240.0.2/24") ||
				l.Router != netip.MustParseAddr("10.240.0.1") || l.Hostname != "web" || !slices.Equal(l.DNS, tt.wantDNS) {
				t.Fatalf("lease = %+v", l)
			}
			if err := l.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Fakes for the host-facing pieces.

type fakeLinks struct {
	calls   int
	last    network.Desired
	changes []netlink.Change // returned by the next call only
	err     error
}

func (f *fakeLinks) Reconcile(_ context.Context, d network.Desired) ([]netlink.Change, error) {
	f.calls++
	f.last = d
	c := f.changes
	f.changes = nil
	return c, f.err
}

type fakeFirewall struct {
	calls int
	last  network.Ruleset
}

func (f *fakeFirewall) Apply(_ context.Context, rs network.Ruleset) error {
	f.calls++
	f.last = rs
	return nil
}

type fakeServer struct {
	bridge  string
	gateway netip.Addr
	leases  []dhcp.Lease
	stopped bool
	dead    bool
}

func (s *fakeServer) SetLeases(l []dhcp.Lease) error { s.leases = l; return nil }
func (s *fakeServer) Stop()                          { s.stopped = true }
func (s *fakeServer) Running() bool                  { return !s.stopped && !s.dead }

type fakeDHCP struct{ started []*fakeServer }

func (f *fakeDHCP) start(bridge string, gw netip.Addr) (LeaseServer, error) {
	s := &fakeServer{bridge: bridge, gateway: gw}
	f.started = append(f.started, s)
	return s, nil
}

// live returns the running server of bridge, failing when there is not
// exactly one.
func (f *fakeDHCP) live(t *testing.T, bridge string) *fakeServer {
	t.Helper()
	var out []*fakeServer
	for _, s := range f.started {
		if s.bridge == bridge && s.Running() {
			out = append(out, s)
		}
	}
	if len(out) != 1 {
		t.Fatalf("%d running dhcp servers on %s, want 1", len(out), bridge)
	}
	return out[0]
}

type fixture struct {
	t     *testing.T
	store state.Store
	ipam  *ipamstore.Store
	links *fakeLinks
	fw    *fakeFirewall
	dhcp  *fakeDHCP
	net   *Networker
}

func newFixture(t *testing.T, host network.HostConfig) *fixture {
	t.Helper()
	dir := t.TempDir()
	st, err := state.Open(filepath.Join(dir, "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ipam, err := ipamstore.Open(filepath.Join(dir, ipamstore.DefaultFileName), ipamstore.Config{TenantPool: host.TenantPool, ExternalPool: host.ExternalPool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ipam.Close() })
	f := &fixture{t: t, store: st, ipam: ipam, links: &fakeLinks{}, fw: &fakeFirewall{}, dhcp: &fakeDHCP{}}
	f.net, err = New(Config{Host: host, IPAM: ipam, Objects: st, Links: f.links, Firewall: f.fw, DHCP: f.dhcp.start})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// create stores a VMInstance and returns it with its store-assigned UID.
func (f *fixture) create(ns, name string, spec v1alpha1.VMInstanceSpec) *v1alpha1.VMInstance {
	f.t.Helper()
	vm := instance(ns, name, "", spec)
	if err := f.store.Create(context.Background(), vm); err != nil {
		f.t.Fatal(err)
	}
	o, err := f.store.Get(context.Background(), v1alpha1.KindVMInstance, ns, name)
	if err != nil {
		f.t.Fatal(err)
	}
	return o.(*v1alpha1.VMInstance)
}

func (f *fixture) attach(vm *v1alpha1.VMInstance) controller.NetworkAttachment {
	f.t.Helper()
	att, err := f.net.Attach(context.Background(), vm)
	if err != nil {
		f.t.Fatal(err)
	}
	return att
}

func TestNetworkerAttachSyncRelease(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, hostCfg)
	web := f.create("a", "web", v1alpha1.VMInstanceSpec{External: ptr(true), ExternalPorts: []int{80}})
	db := f.create("b", "db", v1alpha1.VMInstanceSpec{})

	aw := f.attach(web)
	if aw.Tap != network.TapName("a", "web") || aw.MAC != network.MACFor(web.ObjectMeta.UID).String() ||
		aw.IP != netip.MustParseAddr("10.240.0.2") || aw.Gateway != netip.MustParseAddr("10.240.0.1") ||
		aw.Subnet != netip.MustParsePrefix("10.240.0.0/24") || aw.ExternalUnavailable != "" {
		t.Fatalf("web attachment = %+v", aw)
	}
	wantAddrs := []v1alpha1.Address{
		{Type: controller.AddressTypePrivate, Address: "10.240.0.2", MAC: aw.MAC},
		{Type: controller.AddressTypeExternal, Address: "192.0.2.10"},
	}
	if !slices.Equal(aw.Addresses, wantAddrs) {
		t.Fatalf("web addresses = %+v, want %+v", aw.Addresses, wantAddrs)
	}
	if again := f.attach(web); !slices.Equal(again.Addresses, aw.Addresses) || again.MAC != aw.MAC {
		t.Fatalf("second attach = %+v, want the same as %+v", again, aw)
	}
	ad := f.attach(db)
	if ad.IP != netip.MustParseAddr("10.240.1.2") || len(ad.Addresses) != 1 {
		t.Fatalf("db attachment = %+v", ad)
	}
	if f.links.calls != 0 || f.fw.calls != 0 || len(f.dhcp.started) != 0 {
		t.Fatal("Attach touched the host")
	}

	if err := f.net.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(f.links.last.Endpoints) != 2 || len(f.links.last.Tenants) != 2 {
		t.Fatalf("links got %+v", f.links.last)
	}
	want, err := network.Plan(f.links.last)
	if err != nil {
		t.Fatal(err)
	}
	if f.fw.last.String() != want.String() {
		t.Fatalf("firewall got a ruleset other than the plan of what links got:\n%s", f.fw.last.String())
	}
	if !strings.Contains(f.fw.last.String(), "192.0.2.10") {
		t.Fatalf("ruleset does not expose web:\n%s", f.fw.last.String())
	}
	sa, sb := f.dhcp.live(t, network.BridgeName("a")), f.dhcp.live(t, network.BridgeName("b"))
	if sa.gateway != aw.Gateway || len(sa.leases) != 1 || sa.leases[0].Addr.Addr() != aw.IP || sa.leases[0].MAC.String() != aw.MAC {
		t.Fatalf("dhcp on a = %+v", sa)
	}
	if len(sb.leases) != 1 || sb.leases[0].Addr.Addr() != ad.IP {
		t.Fatalf("dhcp on b = %+v", sb)
	}

	// A bridge recreated behind vmd's back gets a new DHCP socket.
	f.links.changes = []netlink.Change{{Action: netlink.ActionCreate, Kind: netlink.KindBridge, Link: network.BridgeName("b")}}
	if err := f.net.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !sb.stopped || f.dhcp.live(t, network.BridgeName("b")) == sb {
		t.Fatal("dhcp server of a recreated bridge was not replaced")
	}
	if f.dhcp.live(t, network.BridgeName("a")) != sa {
		t.Fatal("dhcp server of an unchanged bridge was replaced")
	}

	// Unexposing gives the external IP back.
	web.Spec.External = ptr(false)
	if got := f.attach(web); len(got.Addresses) != 1 {
		t.Fatalf("unexposed addresses = %+v", got.Addresses)
	}
	snap, err := f.ipam.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ep := range snap.Endpoints {
		if ep.External.IsValid() {
			t.Fatalf("external IP %s still allocated to %s", ep.External, ep.Name)
		}
	}

	// Release: the host forgets db before its allocation goes.
	if err := f.net.Release(ctx, db.ObjectMeta.UID); err != nil {
		t.Fatal(err)
	}
	if len(f.links.last.Endpoints) != 1 || f.links.last.Endpoints[0].Name != "web" || len(f.links.last.Tenants) != 1 {
		t.Fatalf("after release links got %+v", f.links.last)
	}
	for _, s := range f.dhcp.started {
		if s.bridge == network.BridgeName("b") && s.Running() {
			t.Fatal("dhcp server of an empty tenant still runs")
		}
	}
	if snap, _ = f.ipam.Snapshot(ctx); len(snap.Endpoints) != 1 {
		t.Fatalf("allocations after release = %+v", snap.Endpoints)
	}
	if err := f.net.Release(ctx, db.ObjectMeta.UID); err != nil {
		t.Fatalf("second release: %v", err)
	}
}

func TestNetworkerExternalUnavailable(t *testing.T) {
	single := network.AddrRange{First: netip.MustParseAddr("192.0.2.10"), Last: netip.MustParseAddr("192.0.2.10")}
	tests := []struct {
		name string
		host network.HostConfig
		want string
	}{
		{name: "no uplink", host: network.HostConfig{TenantPool: tenantPool, ExternalPool: extPool}, want: "no uplink configured"},
		{name: "no external pool", host: network.HostConfig{Uplink: "eth0", TenantPool: tenantPool}, want: "no external pool configured"},
		{name: "pool exhausted", host: network.HostConfig{Uplink: "eth0", TenantPool: tenantPool, ExternalPool: single}, want: "no free address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.host)
			first := f.create("a", "first", v1alpha1.VMInstanceSpec{External: ptr(true)})
			vm := f.create("a", "second", v1alpha1.VMInstanceSpec{External: ptr(true)})
			f.attach(first)
			att := f.attach(vm)
			if !strings.Contains(att.ExternalUnavailable, tt.want) {
				t.Fatalf("ExternalUnavailable = %q, want it to say %q", att.ExternalUnavailable, tt.want)
			}
			if len(att.Addresses) != 1 || att.Addresses[0].Type != controller.AddressTypePrivate {
				t.Fatalf("addresses = %+v, want the private one only", att.Addresses)
			}
			if err := f.net.Sync(context.Background()); err != nil {
				t.Fatalf("private networking must still work: %v", err)
			}
			if len(f.links.last.Endpoints) != 2 {
				t.Fatalf("endpoints = %+v", f.links.last.Endpoints)
			}
		})
	}
}

func TestNetworkerStartReleasesOrphansAndKeepsGoing(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, hostCfg)
	web := f.create("a", "web", v1alpha1.VMInstanceSpec{})
	f.attach(web)
	// An allocation whose object is gone (crash between domain removal
	// and release).
	if _, err := f.ipam.AllocateEndpoint(ctx, ipamstore.VM{UID: "gone", Namespace: "a", Name: "old"}); err != nil {
		t.Fatal(err)
	}
	f.links.err = errors.New("boom")
	err := f.net.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("Start = %v, want the link error", err)
	}
	if f.fw.calls != 1 {
		t.Fatal("a link failure kept the firewall from being applied")
	}
	f.links.err = nil
	if err := f.net.Start(ctx); err != nil {
		t.Fatal(err)
	}
	snap, err := f.ipam.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Endpoints) != 1 || snap.Endpoints[0].UID != web.ObjectMeta.UID {
		t.Fatalf("allocations after start = %+v", snap.Endpoints)
	}
	if len(f.links.last.Endpoints) != 1 {
		t.Fatalf("links got %+v", f.links.last.Endpoints)
	}
}

type fakeForwarder struct {
	bridge          string
	gateway         netip.Addr
	subnet          netip.Prefix
	stopped, failed bool
}

func (s *fakeForwarder) Stop()         { s.stopped = true }
func (s *fakeForwarder) Running() bool { return !s.stopped && !s.failed }

type fakeDNS struct {
	started []*fakeForwarder
	err     error
}

func (f *fakeDNS) start(bridge string, gw netip.Addr, subnet netip.Prefix) (Service, error) {
	if f.err != nil {
		return nil, f.err
	}
	s := &fakeForwarder{bridge: bridge, gateway: gw, subnet: subnet}
	f.started = append(f.started, s)
	return s, nil
}

func (f *fakeDNS) running() map[string]*fakeForwarder {
	out := map[string]*fakeForwarder{}
	for _, s := range f.started {
		if s.Running() {
			if out[s.bridge] != nil {
				panic("two forwarders on " + s.bridge)
			}
			out[s.bridge] = s
		}
	}
	return out
}

// TestNetworkerDNSForwarders: one forwarder per tenant bridge on its
// gateway, serving its subnet, beside the DHCP server; none when guests
// are given configured resolvers; a failed start does not fail the sync
// and is retried; a forwarder that died is replaced; an empty tenant's
// is stopped.
func TestNetworkerDNSForwarders(t *testing.T) {
	ctx := context.Background()
	t.Run("configured resolvers: no forwarder", func(t *testing.T) {
		host := hostCfg
		host.DNS = []netip.Addr{netip.MustParseAddr("192.0.2.53")}
		f := newFixture(t, host)
		dns := &fakeDNS{}
		f.net.cfg.DNS = dns.start
		f.attach(f.create("a", "web", v1alpha1.VMInstanceSpec{}))
		if err := f.net.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if len(dns.started) != 0 {
			t.Fatalf("forwarders started although guests use %v: %+v", host.DNS, dns.started)
		}
	})

	f := newFixture(t, hostCfg)
	dns := &fakeDNS{err: errors.New("address already in use")}
	f.net.cfg.DNS = dns.start
	web := f.create("a", "web", v1alpha1.VMInstanceSpec{})
	db := f.create("b", "db", v1alpha1.VMInstanceSpec{})
	aw, ad := f.attach(web), f.attach(db)
	if err := f.net.Sync(ctx); err != nil {
		t.Fatalf("a forwarder that cannot start failed the sync: %v", err)
	}
	dns.err = nil
	if err := f.net.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	got := dns.running()
	fa, fb := got[network.BridgeName("a")], got[network.BridgeName("b")]
	if len(got) != 2 || fa == nil || fb == nil {
		t.Fatalf("running forwarders %+v, want one on each tenant bridge", got)
	}
	if fa.gateway != aw.Gateway || fa.subnet != aw.Subnet || fb.gateway != ad.Gateway || fb.subnet != ad.Subnet {
		t.Fatalf("forwarders %+v %+v, want gateways/subnets of %+v %+v", fa, fb, aw, ad)
	}
	if err := f.net.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(dns.started) != 2 {
		t.Fatalf("a sync without changes started forwarders again: %d started", len(dns.started))
	}
	fa.failed = true
	if err := f.net.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if now := dns.running()[network.BridgeName("a")]; now == nil || now == fa || !fa.stopped {
		t.Fatalf("a dead forwarder was not replaced: %+v", dns.running())
	}
	if err := f.net.Release(ctx, db.ObjectMeta.UID); err != nil {
		t.Fatal(err)
	}
	if !fb.stopped || dns.running()[network.BridgeName("b")] != nil {
		t.Fatal("the forwarder of an empty tenant still runs")
	}
	f.net.Close()
	if len(dns.running()) != 0 {
		t.Fatalf("Close left forwarders running: %+v", dns.running())
	}
}
