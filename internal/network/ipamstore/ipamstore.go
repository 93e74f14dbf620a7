// Package ipamstore persists vmd's network allocations: per namespace a
// tenant subnet, per VM (by UID) a MAC and a private IP, and per exposed VM
// an external IP. The choices themselves are made by the pure allocators in
// internal/network; this package only makes them durable and idempotent.
//
// The allocations live in their own bbolt file (DefaultFileName under the
// state directory), not in state.db: bbolt allows a single opener per file
// and state.db belongs to internal/state. Keeping them apart also means the
// API objects never carry host-specific addressing that a backup restored
// on another host would have to undo.
//
// Crash safety: every Allocate* call runs in one bbolt read-write
// transaction that is fsync'ed before the call returns, so a caller that
// creates host resources (a tap, an nft element, a DHCP lease) with the
// answer only ever uses an allocation that survives a crash. Calls are
// idempotent by key: the same UID always gets the same answer back until
// it is released, so a controller that crashed between "allocate" and
// "use" simply asks again.
package ipamstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/network"
)

// DefaultFileName is the allocation database's name inside vmd's state
// directory (docs/internals.md, "network.db").
const DefaultFileName = "network.db"

// SchemaVersion is the on-disk layout version written to meta/schemaVersion.
const SchemaVersion = 1

// DefaultSubnetBits is the tenant subnet size when Config leaves it zero:
// a /24 holds 253 VMs per namespace, far more than one host runs.
const DefaultSubnetBits = 24

// DefaultLockTimeout bounds the wait for the file lock; only another live
// vmd holds it, and an operator wants an error rather than a hang.
const DefaultLockTimeout = time.Second

// Bucket and key names (docs/internals.md lists them).
var (
	bucketMeta      = []byte("meta")
	bucketSubnets   = []byte("subnets")
	bucketEndpoints = []byte("endpoints")
	bucketExternals = []byte("externals")

	keySchemaVersion = []byte("schemaVersion")
)

// Config says where new allocations come from. Existing allocations are
// kept even when they fall outside a changed pool: an address is stable
// for the VM's life, and moving it is an explicit Release + Allocate.
type Config struct {
	// TenantPool is the private range tenant subnets are carved from.
	TenantPool netip.Prefix
	// SubnetBits is the prefix length of each tenant subnet (default
	// DefaultSubnetBits).
	SubnetBits int
	// ExternalPool is the range external IPs are taken from. A zero range
	// makes AllocateExternal fail with errdefs.ErrInvalid.
	ExternalPool network.AddrRange
	// LockTimeout bounds the wait for the file lock (default
	// DefaultLockTimeout).
	LockTimeout time.Duration
}

// VM identifies the VM an endpoint is allocated for. UID is the key:
// a VM deleted and recreated under the same name is a new VM and may get a
// different address, exactly like a new Pod.
type VM struct {
	UID             string
	Namespace, Name string
}

// Endpoint is a VM's persistent addressing.
type Endpoint struct {
	VM
	MAC    net.HardwareAddr
	IP     netip.Addr
	Subnet netip.Prefix
	// External is the VM's external IP, invalid (zero) when it has none.
	External netip.Addr
}

// Snapshot is every allocation in the store, read in one transaction. The
// composition root builds network.Desired from it at start.
type Snapshot struct {
	// Subnets maps a namespace to its tenant subnet.
	Subnets map[string]netip.Prefix
	// Endpoints is sorted by namespace, then name, then UID.
	Endpoints []Endpoint
}

// Store is the bbolt-backed allocation store. It is safe for concurrent
// use; bbolt serialises writers.
type Store struct {
	db   *bolt.DB
	path string
	cfg  Config
}

// endpointRecord is the JSON stored under endpoints/<uid>.
type endpointRecord struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	MAC       string `json:"mac"`
	IP        string `json:"ip"`
}

// Open opens (creating if needed, mode 0600, parent 0700) the allocation
// database at path. A database locked by another process fails after the
// lock timeout with errdefs.ErrUnavailable; a newer schema is refused.
func Open(path string, cfg Config) (*Store, error) {
	if cfg.SubnetBits == 0 {
		cfg.SubnetBits = DefaultSubnetBits
	}
	if cfg.LockTimeout <= 0 {
		cfg.LockTimeout = DefaultLockTimeout
	}
	if !cfg.TenantPool.IsValid() || !cfg.TenantPool.Addr().Is4() {
		return nil, fmt.Errorf("opening network allocations: tenant pool %s is not an IPv4 prefix: %w", cfg.TenantPool, errdefs.ErrInvalid)
	}
	if cfg.SubnetBits < cfg.TenantPool.Bits() || cfg.SubnetBits > network.MaxSubnetBits {
		return nil, fmt.Errorf("opening network allocations: subnet size /%d must be between /%d and /%d: %w",
			cfg.SubnetBits, cfg.TenantPool.Bits(), network.MaxSubnetBits, errdefs.ErrInvalid)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("opening network allocations: creating state directory: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: cfg.LockTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("opening network allocations %s: database is locked by another process (is another vmd using this state directory?): %w",
			path, errdefs.ErrUnavailable)
	}
	if err != nil {
		return nil, fmt.Errorf("opening network allocations %s: %w", path, err)
	}
	if err := db.Update(prepareSchema); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("opening network allocations %s: %w", path, err)
	}
	return &Store{db: db, path: path, cfg: cfg}, nil
}

// prepareSchema writes the version on a new file, accepts the current one
// and refuses anything else without modifying the file.
func prepareSchema(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		empty := true
		_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
		if !empty {
			return fmt.Errorf("not a vmd network allocation file (buckets but no meta bucket): %w", errdefs.ErrInvalid)
		}
		var err error
		if meta, err = tx.CreateBucket(bucketMeta); err != nil {
			return fmt.Errorf("creating bucket meta: %w", err)
		}
		if err := meta.Put(keySchemaVersion, []byte(strconv.Itoa(SchemaVersion))); err != nil {
			return fmt.Errorf("writing schema version: %w", err)
		}
	}
	raw := meta.Get(keySchemaVersion)
	v, err := strconv.Atoi(string(raw))
	if err != nil {
		return fmt.Errorf("reading schema version %q: not a vmd network allocation file: %w", raw, errdefs.ErrInvalid)
	}
	if v != SchemaVersion {
		return fmt.Errorf("network allocation schema version %d is not supported by this vmd (%d): %w", v, SchemaVersion, errdefs.ErrInvalid)
	}
	for _, b := range [][]byte{bucketSubnets, bucketEndpoints, bucketExternals} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return fmt.Errorf("creating bucket %s: %w", b, err)
		}
	}
	return nil
}

// Path returns the database file, for logs.
func (s *Store) Path() string { return s.path }

// Close releases the database and its file lock.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("closing network allocations: %w", err)
	}
	return nil
}

// Subnet allocates (or returns the existing) tenant subnet of namespace.
// Most callers need not call it: AllocateEndpoint allocates the subnet of
// the VM's namespace in the same transaction.
func (s *Store) Subnet(ctx context.Context, namespace string) (netip.Prefix, error) {
	if namespace == "" {
		return netip.Prefix{}, fmt.Errorf("allocating subnet: empty namespace: %w", errdefs.ErrInvalid)
	}
	var p netip.Prefix
	err := s.update(ctx, func(tx *bolt.Tx) error {
		var err error
		p, err = s.subnetTx(tx, namespace)
		return err
	})
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("allocating subnet for namespace %s: %w", namespace, err)
	}
	return p, nil
}

// AllocateEndpoint returns vm's MAC and private IP, allocating them (and
// the namespace's subnet) on first use. Calling it again for the same UID
// returns the same endpoint. A UID already allocated under another
// namespace or name fails with errdefs.ErrConflict: a VM never moves.
func (s *Store) AllocateEndpoint(ctx context.Context, vm VM) (Endpoint, error) {
	if vm.UID == "" || vm.Namespace == "" || vm.Name == "" {
		return Endpoint{}, fmt.Errorf("allocating endpoint: uid, namespace and name are required: %w", errdefs.ErrInvalid)
	}
	var ep Endpoint
	err := s.update(ctx, func(tx *bolt.Tx) error {
		eps := tx.Bucket(bucketEndpoints)
		if raw := eps.Get([]byte(vm.UID)); raw != nil {
			got, err := decodeEndpoint(tx, vm.UID, raw)
			if err != nil {
				return err
			}
			if got.Namespace != vm.Namespace || got.Name != vm.Name {
				return fmt.Errorf("uid is allocated to %s/%s: %w", got.Namespace, got.Name, errdefs.ErrConflict)
			}
			ep = got
			return nil
		}
		subnet, err := s.subnetTx(tx, vm.Namespace)
		if err != nil {
			return err
		}
		all, err := allEndpoints(tx)
		if err != nil {
			return err
		}
		var usedIPs []netip.Addr
		var usedMACs []net.HardwareAddr
		for _, e := range all {
			usedMACs = append(usedMACs, e.MAC)
			if e.Namespace == vm.Namespace {
				usedIPs = append(usedIPs, e.IP)
			}
		}
		mac, err := network.AllocateMAC(vm.UID, usedMACs)
		if err != nil {
			return err
		}
		ip, err := network.AllocateIP(subnet, usedIPs)
		if err != nil {
			return err
		}
		rec, err := json.Marshal(endpointRecord{Namespace: vm.Namespace, Name: vm.Name, MAC: mac.String(), IP: ip.String()})
		if err != nil {
			return fmt.Errorf("encoding endpoint: %w", err)
		}
		if err := eps.Put([]byte(vm.UID), rec); err != nil {
			return fmt.Errorf("writing endpoint: %w", err)
		}
		ep = Endpoint{VM: vm, MAC: mac, IP: ip, Subnet: subnet}
		return nil
	})
	if err != nil {
		return Endpoint{}, fmt.Errorf("allocating endpoint for %s/%s: %w", vm.Namespace, vm.Name, err)
	}
	return ep, nil
}

// AllocateExternal returns the external IP of the VM with uid, allocating
// one from the external pool on first use. The VM must have an endpoint
// (errdefs.ErrNotFound otherwise), so an external IP never outlives the
// private address it is NATed to.
func (s *Store) AllocateExternal(ctx context.Context, uid string) (netip.Addr, error) {
	var ip netip.Addr
	err := s.update(ctx, func(tx *bolt.Tx) error {
		if tx.Bucket(bucketEndpoints).Get([]byte(uid)) == nil {
			return fmt.Errorf("no endpoint for uid %q: %w", uid, errdefs.ErrNotFound)
		}
		exts := tx.Bucket(bucketExternals)
		if raw := exts.Get([]byte(uid)); raw != nil {
			var err error
			ip, err = parseAddr(raw)
			return err
		}
		var used []netip.Addr
		err := exts.ForEach(func(_, v []byte) error {
			a, err := parseAddr(v)
			used = append(used, a)
			return err
		})
		if err != nil {
			return err
		}
		if ip, err = network.AllocateExternal(s.cfg.ExternalPool, used); err != nil {
			return err
		}
		if err := exts.Put([]byte(uid), []byte(ip.String())); err != nil {
			return fmt.Errorf("writing external address: %w", err)
		}
		return nil
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("allocating external address for uid %s: %w", uid, err)
	}
	return ip, nil
}

// ReleaseExternal returns the VM's external IP to the pool (when it stops
// being exposed). Releasing twice is not an error.
func (s *Store) ReleaseExternal(ctx context.Context, uid string) error {
	err := s.update(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketExternals).Delete([]byte(uid))
	})
	if err != nil {
		return fmt.Errorf("releasing external address for uid %s: %w", uid, err)
	}
	return nil
}

// Release frees everything allocated for the VM with uid: its endpoint,
// its external IP and, when it was the namespace's last VM, the tenant
// subnet (a namespace holds a segment only while it has VMs). The caller
// MUST have removed the host resources using them first. Releasing an
// unknown UID is not an error.
func (s *Store) Release(ctx context.Context, uid string) error {
	err := s.update(ctx, func(tx *bolt.Tx) error {
		eps := tx.Bucket(bucketEndpoints)
		raw := eps.Get([]byte(uid))
		if raw == nil {
			return tx.Bucket(bucketExternals).Delete([]byte(uid))
		}
		var rec endpointRecord
		if err := json.Unmarshal(raw, &rec); err != nil {
			return fmt.Errorf("decoding endpoint %s: %w", uid, err)
		}
		if err := eps.Delete([]byte(uid)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketExternals).Delete([]byte(uid)); err != nil {
			return err
		}
		inUse := false
		err := eps.ForEach(func(_, v []byte) error {
			var o endpointRecord
			if err := json.Unmarshal(v, &o); err != nil {
				return err
			}
			inUse = inUse || o.Namespace == rec.Namespace
			return nil
		})
		if err != nil {
			return fmt.Errorf("scanning endpoints: %w", err)
		}
		if !inUse {
			return tx.Bucket(bucketSubnets).Delete([]byte(rec.Namespace))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("releasing allocations for uid %s: %w", uid, err)
	}
	return nil
}

// Snapshot reads every allocation in one transaction.
func (s *Store) Snapshot(ctx context.Context) (Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return Snapshot{}, fmt.Errorf("reading network allocations: %w", err)
	}
	snap := Snapshot{Subnets: map[string]netip.Prefix{}}
	err := s.db.View(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketSubnets).ForEach(func(k, v []byte) error {
			p, err := netip.ParsePrefix(string(v))
			if err != nil {
				return fmt.Errorf("decoding subnet of %s: %w", k, err)
			}
			snap.Subnets[string(k)] = p
			return nil
		})
		if err != nil {
			return err
		}
		snap.Endpoints, err = allEndpoints(tx)
		return err
	})
	if err != nil {
		return Snapshot{}, fmt.Errorf("reading network allocations: %w", storeErr(err))
	}
	slices.SortFunc(snap.Endpoints, func(a, b Endpoint) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), cmp.Compare(a.UID, b.UID))
	})
	return snap, nil
}

// update runs fn in a read-write transaction after checking ctx.
func (s *Store) update(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return storeErr(s.db.Update(fn))
}

// subnetTx returns the namespace's subnet, allocating it inside tx.
func (s *Store) subnetTx(tx *bolt.Tx, namespace string) (netip.Prefix, error) {
	b := tx.Bucket(bucketSubnets)
	if raw := b.Get([]byte(namespace)); raw != nil {
		p, err := netip.ParsePrefix(string(raw))
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("decoding subnet of %s: %w", namespace, err)
		}
		return p, nil
	}
	var used []netip.Prefix
	err := b.ForEach(func(k, v []byte) error {
		p, err := netip.ParsePrefix(string(v))
		if err != nil {
			return fmt.Errorf("decoding subnet of %s: %w", k, err)
		}
		used = append(used, p)
		return nil
	})
	if err != nil {
		return netip.Prefix{}, err
	}
	p, err := network.AllocateSubnet(s.cfg.TenantPool, s.cfg.SubnetBits, used)
	if err != nil {
		return netip.Prefix{}, err
	}
	if err := b.Put([]byte(namespace), []byte(p.String())); err != nil {
		return netip.Prefix{}, fmt.Errorf("writing subnet: %w", err)
	}
	return p, nil
}

// allEndpoints decodes every endpoint with its subnet and external IP.
func allEndpoints(tx *bolt.Tx) ([]Endpoint, error) {
	var out []Endpoint
	err := tx.Bucket(bucketEndpoints).ForEach(func(k, v []byte) error {
		ep, err := decodeEndpoint(tx, string(k), v)
		out = append(out, ep)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("scanning endpoints: %w", err)
	}
	return out, nil
}

func decodeEndpoint(tx *bolt.Tx, uid string, raw []byte) (Endpoint, error) {
	var rec endpointRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return Endpoint{}, fmt.Errorf("decoding endpoint %s: %w", uid, err)
	}
	mac, err := net.ParseMAC(rec.MAC)
	if err != nil {
		return Endpoint{}, fmt.Errorf("decoding endpoint %s: %w", uid, err)
	}
	ip, err := netip.ParseAddr(rec.IP)
	if err != nil {
		return Endpoint{}, fmt.Errorf("decoding endpoint %s: %w", uid, err)
	}
	ep := Endpoint{VM: VM{UID: uid, Namespace: rec.Namespace, Name: rec.Name}, MAC: mac, IP: ip}
	if raw := tx.Bucket(bucketSubnets).Get([]byte(rec.Namespace)); raw != nil {
		if ep.Subnet, err = netip.ParsePrefix(string(raw)); err != nil {
			return Endpoint{}, fmt.Errorf("decoding subnet of %s: %w", rec.Namespace, err)
		}
	}
	if raw := tx.Bucket(bucketExternals).Get([]byte(uid)); raw != nil {
		if ep.External, err = parseAddr(raw); err != nil {
			return Endpoint{}, err
		}
	}
	return ep, nil
}

func parseAddr(raw []byte) (netip.Addr, error) {
	a, err := netip.ParseAddr(string(raw))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("decoding address %q: %w", raw, err)
	}
	return a, nil
}

// storeErr maps bbolt's closed-database error to ErrUnavailable.
func storeErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("network allocations are closed: %w", errdefs.ErrUnavailable)
	}
	return err
}
