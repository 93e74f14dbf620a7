package ipamstore

import (
	"errors"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/network"
)

func testConfig() Config {
	return Config{
		TenantPool:   netip.MustParsePrefix("10.100.0.0/16"),
		SubnetBits:   24,
		ExternalPool: network.AddrRange{First: netip.MustParseAddr("192.0.2.10"), Last: netip.MustParseAddr("192.0.2.12")},
		LockTimeout:  50 * time.Millisecond,
	}
}

func open(t *testing.T, path string, cfg Config) *Store {
	t.Helper()
	s, err := Open(path, cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func mustEndpoint(t *testing.T, s *Store, vm VM) Endpoint {
	t.Helper()
	ep, err := s.AllocateEndpoint(t.Context(), vm)
	if err != nil {
		t.Fatalf("AllocateEndpoint(%+v): %v", vm, err)
	}
	return ep
}

func TestAllocateEndpoint(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), DefaultFileName), testConfig())
	steps := []struct {
		name       string
		vm         VM
		wantIP     string
		wantSubnet string
	}{
		{name: "first vm of first namespace", vm: VM{UID: "u1", Namespace: "a", Name: "web"}, wantIP: "10.100.0.2", wantSubnet: "10.100.0.0/24"},
		{name: "second vm same namespace", vm: VM{UID: "u2", Namespace: "a", Name: "db"}, wantIP: "10.100.0.3", wantSubnet: "10.100.0.0/24"},
		{name: "other namespace gets next subnet", vm: VM{UID: "u3", Namespace: "b", Name: "web"}, wantIP: "10.100.1.2", wantSubnet: "10.100.1.0/24"},
		{name: "same uid again is idempotent", vm: VM{UID: "u1", Namespace: "a", Name: "web"}, wantIP: "10.100.0.2", wantSubnet: "10.100.0.0/24"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			ep := mustEndpoint(t, s, st.vm)
			if ep.IP.String() != st.wantIP || ep.Subnet.String() != st.wantSubnet {
				t.Errorf("got ip %s subnet %s, want %s %s", ep.IP, ep.Subnet, st.wantIP, st.wantSubnet)
			}
			if want := network.MACFor(st.vm.UID); ep.MAC.String() != want.String() {
				t.Errorf("mac = %s, want MACFor(uid) %s", ep.MAC, want)
			}
		})
	}
}

func TestAllocateEndpointErrors(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), DefaultFileName), testConfig())
	mustEndpoint(t, s, VM{UID: "u1", Namespace: "a", Name: "web"})
	tests := []struct {
		name string
		vm   VM
		want error
	}{
		{name: "missing uid", vm: VM{Namespace: "a", Name: "x"}, want: errdefs.ErrInvalid},
		{name: "missing namespace", vm: VM{UID: "u9", Name: "x"}, want: errdefs.ErrInvalid},
		{name: "uid moved to another name", vm: VM{UID: "u1", Namespace: "a", Name: "other"}, want: errdefs.ErrConflict},
		{name: "uid moved to another namespace", vm: VM{UID: "u1", Namespace: "b", Name: "web"}, want: errdefs.ErrConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.AllocateEndpoint(t.Context(), tt.vm)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestPersistsAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), DefaultFileName)
	s, err := Open(path, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	ep := mustEndpoint(t, s, VM{UID: "u1", Namespace: "a", Name: "web"})
	ext, err := s.AllocateExternal(t.Context(), "u1")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopen with a different tenant pool: existing allocations are kept.
	cfg := testConfig()
	cfg.TenantPool = netip.MustParsePrefix("10.200.0.0/16")
	s2 := open(t, path, cfg)
	again := mustEndpoint(t, s2, VM{UID: "u1", Namespace: "a", Name: "web"})
	if again.IP != ep.IP || again.MAC.String() != ep.MAC.String() || again.Subnet != ep.Subnet || again.External != ext {
		t.Fatalf("after reopen got %+v, want %+v with external %s", again, ep, ext)
	}
	other := mustEndpoint(t, s2, VM{UID: "u2", Namespace: "b", Name: "web"})
	if other.Subnet.String() != "10.200.0.0/24" {
		t.Errorf("new namespace subnet = %s, want one from the new pool", other.Subnet)
	}
}

func TestExternal(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), DefaultFileName), testConfig())
	for _, uid := range []string{"u1", "u2", "u3", "u4"} {
		mustEndpoint(t, s, VM{UID: uid, Namespace: "a", Name: "vm-" + uid})
	}
	ctx := t.Context()
	steps := []struct {
		name    string
		uid     string
		release bool
		want    string
		wantErr error
	}{
		{name: "first", uid: "u1", want: "192.0.2.10"},
		{name: "second", uid: "u2", want: "192.0.2.11"},
		{name: "idempotent", uid: "u1", want: "192.0.2.10"},
		{name: "third fills pool", uid: "u3", want: "192.0.2.12"},
		{name: "pool exhausted", uid: "u4", wantErr: network.ErrPoolExhausted},
		{name: "release second", uid: "u2", release: true},
		{name: "freed address is reused", uid: "u4", want: "192.0.2.11"},
		{name: "no endpoint", uid: "nope", wantErr: errdefs.ErrNotFound},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.release {
				if err := s.ReleaseExternal(ctx, st.uid); err != nil {
					t.Fatal(err)
				}
				return
			}
			got, err := s.AllocateExternal(ctx, st.uid)
			if st.wantErr != nil {
				if !errors.Is(err, st.wantErr) {
					t.Fatalf("err = %v, want %v", err, st.wantErr)
				}
				return
			}
			if err != nil || got.String() != st.want {
				t.Fatalf("got %s, %v; want %s", got, err, st.want)
			}
		})
	}
	if !errors.Is(network.ErrPoolExhausted, errdefs.ErrUnavailable) {
		t.Error("pool exhaustion should read as unavailable")
	}
}

func TestRelease(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), DefaultFileName), testConfig())
	ctx := t.Context()
	a1 := mustEndpoint(t, s, VM{UID: "a1", Namespace: "a", Name: "one"})
	mustEndpoint(t, s, VM{UID: "a2", Namespace: "a", Name: "two"})
	mustEndpoint(t, s, VM{UID: "b1", Namespace: "b", Name: "one"})
	if _, err := s.AllocateExternal(ctx, "a1"); err != nil {
		t.Fatal(err)
	}

	if err := s.Release(ctx, "a1"); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Endpoints) != 2 || snap.Endpoints[0].UID != "a2" || snap.Endpoints[1].UID != "b1" {
		t.Fatalf("endpoints after release = %+v", snap.Endpoints)
	}
	if _, ok := snap.Subnets["a"]; !ok {
		t.Fatal("namespace a still has a vm; its subnet must stay")
	}
	// The released VM's IP and external IP are free again.
	n := mustEndpoint(t, s, VM{UID: "a3", Namespace: "a", Name: "three"})
	if n.IP != a1.IP {
		t.Errorf("new vm got %s, want the released %s", n.IP, a1.IP)
	}
	if ext, err := s.AllocateExternal(ctx, "a3"); err != nil || ext.String() != "192.0.2.10" {
		t.Errorf("external after release = %s, %v", ext, err)
	}

	// Releasing the last VM of b returns its subnet; a new namespace reuses it.
	if err := s.Release(ctx, "b1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, "b1"); err != nil {
		t.Fatalf("second release: %v", err)
	}
	c := mustEndpoint(t, s, VM{UID: "c1", Namespace: "c", Name: "one"})
	if c.Subnet.String() != "10.100.1.0/24" {
		t.Errorf("namespace c got %s, want the freed 10.100.1.0/24", c.Subnet)
	}
}

func TestSnapshot(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), DefaultFileName), testConfig())
	ctx := t.Context()
	mustEndpoint(t, s, VM{UID: "z", Namespace: "b", Name: "web"})
	mustEndpoint(t, s, VM{UID: "y", Namespace: "a", Name: "web"})
	mustEndpoint(t, s, VM{UID: "x", Namespace: "a", Name: "api"})
	if _, err := s.AllocateExternal(ctx, "y"); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range snap.Endpoints {
		got = append(got, e.Namespace+"/"+e.Name+" "+e.IP.String()+" "+e.Subnet.String()+" ext="+e.External.String())
	}
	want := []string{
		"a/api 10.100.1.3 10.100.1.0/24 ext=invalid IP",
		"a/web 10.100.1.2 10.100.1.0/24 ext=192.0.2.10",
		"b/web 10.100.0.2 10.100.0.0/24 ext=invalid IP",
	}
	if len(got) != len(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("endpoint %d = %q, want %q", i, got[i], want[i])
		}
	}
	if len(snap.Subnets) != 2 || snap.Subnets["a"].String() != "10.100.1.0/24" || snap.Subnets["b"].String() != "10.100.0.0/24" {
		t.Errorf("subnets = %v", snap.Subnets)
	}
}

func TestSubnetExhaustion(t *testing.T) {
	cfg := testConfig()
	cfg.TenantPool = netip.MustParsePrefix("10.0.0.0/23")
	s := open(t, filepath.Join(t.TempDir(), DefaultFileName), cfg)
	for _, ns := range []string{"a", "b"} {
		if _, err := s.Subnet(t.Context(), ns); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Subnet(t.Context(), "c"); !errors.Is(err, network.ErrPoolExhausted) {
		t.Fatalf("err = %v, want pool exhausted", err)
	}
	// The failed allocation wrote nothing: a's subnet is unchanged and b still resolves.
	if p, err := s.Subnet(t.Context(), "b"); err != nil || p.String() != "10.0.1.0/24" {
		t.Fatalf("b = %s, %v", p, err)
	}
}

func TestConcurrentAllocationsAreDistinct(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), DefaultFileName), testConfig())
	const n = 40
	var wg sync.WaitGroup
	eps := make([]Endpoint, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			uid := "uid-" + string(rune('A'+i))
			eps[i], errs[i] = s.AllocateEndpoint(t.Context(), VM{UID: uid, Namespace: "ns", Name: uid})
		})
	}
	wg.Wait()
	ips, macs := map[netip.Addr]bool{}, map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if ips[eps[i].IP] || macs[eps[i].MAC.String()] {
			t.Fatalf("duplicate allocation %+v", eps[i])
		}
		ips[eps[i].IP], macs[eps[i].MAC.String()] = true, true
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	foreign := filepath.Join(dir, "foreign.db")
	db, err := bolt.Open(foreign, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("other")); return err }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	newer := filepath.Join(dir, "newer.db")
	db, err = bolt.Open(newer, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return b.Put(keySchemaVersion, []byte("2"))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	locked := filepath.Join(dir, "locked.db")
	open(t, locked, testConfig())

	badBits := testConfig()
	badBits.SubnetBits = 31
	tests := []struct {
		name string
		path string
		cfg  Config
		want error
	}{
		{name: "foreign bbolt file", path: foreign, cfg: testConfig(), want: errdefs.ErrInvalid},
		{name: "newer schema", path: newer, cfg: testConfig(), want: errdefs.ErrInvalid},
		{name: "locked by another opener", path: locked, cfg: testConfig(), want: errdefs.ErrUnavailable},
		{name: "no tenant pool", path: filepath.Join(dir, "x.db"), cfg: Config{}, want: errdefs.ErrInvalid},
		{name: "subnet too small", path: filepath.Join(dir, "y.db"), cfg: badBits, want: errdefs.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(tt.path, tt.cfg)
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestClosedStore(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), DefaultFileName), testConfig())
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.AllocateEndpoint(t.Context(), VM{UID: "u", Namespace: "a", Name: "b"}); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("err = %v, want unavailable", err)
	}
}
