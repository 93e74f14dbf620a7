// Package nft writes and reads vmd's nftables tables through netlink
// (google/nftables), never by shelling out to nft. It is the only package
// that imports the nftables library: it translates the typed
// network.Ruleset into kernel expressions and back, and knows nothing about
// VMs or tenants.
//
// Apply replaces every vmd table in ONE netlink transaction: for each owned
// table it queues "add (no-op if present), delete, add fresh with all sets,
// elements, chains and rules", then commits the batch. The kernel applies a
// batch atomically, so there is never a moment with half a ruleset (a VM
// switching PortList -> WholeIP -> PortList is never wide open, a restart
// never duplicates a rule), and a failed batch leaves the previous ruleset
// in place. Tables vmd does not own are never touched.
package nft

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/google/nftables"

	"github.com/vmdhq/vmd/internal/network"
)

// ownedFamilies are the families in which vmd owns a table named
// network.TableName. Apply deletes the owned tables the plan leaves out, so
// shrinking the plan cannot leave stale rules behind.
var ownedFamilies = []network.Family{network.FamilyBridge, network.FamilyIP}

// Firewall applies and reads vmd's tables in one network namespace.
// Calls are serialised: two concurrent Applies would otherwise race on the
// "what is there now" of the other's batch.
type Firewall struct {
	mu   sync.Mutex
	opts []nftables.ConnOption
}

// Option configures a Firewall.
type Option func(*Firewall)

// WithNetNSFd targets the network namespace behind fd (an open
// /run/netns/NAME) instead of the caller's. Tests use it to work in a
// throwaway namespace; the fd must stay open for the Firewall's lifetime.
func WithNetNSFd(fd int) Option {
	return func(f *Firewall) { f.opts = append(f.opts, nftables.WithNetNSFd(fd)) }
}

// New returns a Firewall for the current network namespace unless an
// option says otherwise. It does not talk to the kernel yet.
func New(opts ...Option) *Firewall {
	f := &Firewall{}
	for _, o := range opts {
		o(f)
	}
	return f
}

// conn opens a fresh netlink connection. A new one per call keeps each
// batch private to its call; nftables.Conn queues messages until Flush.
func (f *Firewall) conn() (*nftables.Conn, error) {
	c, err := nftables.New(f.opts...)
	if err != nil {
		return nil, fmt.Errorf("opening nftables netlink connection: %w", err)
	}
	return c, nil
}

// Apply makes the kernel's vmd tables exactly rs, atomically. rs must be
// valid (network.Ruleset.Validate) and contain only vmd-owned tables.
// Applying the same ruleset twice leaves one copy of everything.
func (f *Firewall) Apply(ctx context.Context, rs network.Ruleset) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("applying nftables ruleset: %w", err)
	}
	if err := rs.Validate(); err != nil {
		return fmt.Errorf("applying nftables ruleset: invalid ruleset: %w", err)
	}
	for _, t := range rs.Tables {
		if t.Name != network.TableName || !slices.Contains(ownedFamilies, t.Family) {
			return fmt.Errorf("applying nftables ruleset: table %s %s is not owned by vmd", t.Family, t.Name)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.conn()
	if err != nil {
		return err
	}
	queueDeleteOwned(c)
	for _, t := range rs.Tables {
		if err := queueTable(c, t); err != nil {
			return fmt.Errorf("applying nftables ruleset: %w", err)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("applying nftables ruleset: committing batch: %w", err)
	}
	return nil
}

// Remove deletes vmd's tables, if present, in one transaction. Other
// tables are untouched. Removing twice is not an error.
func (f *Firewall) Remove(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("removing nftables tables: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.conn()
	if err != nil {
		return err
	}
	queueDeleteOwned(c)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("removing nftables tables: committing batch: %w", err)
	}
	return nil
}

// queueDeleteOwned queues "add table; delete table" for every owned table.
// Deleting a missing table fails the whole batch (ENOENT), and listing
// first would race with other writers; adding first makes the delete always
// valid, exactly like `table ip vmd; delete table ip vmd` in an nft script.
func queueDeleteOwned(c *nftables.Conn) {
	for _, fam := range ownedFamilies {
		t := c.AddTable(&nftables.Table{Family: tableFamily(fam), Name: network.TableName})
		c.DelTable(t)
	}
}

// Dump renders what the kernel holds in vmd's tables in the syntax of
// network.Ruleset.String, so tests and `vmd debug` can compare kernel state
// with a plan byte for byte.
func (f *Firewall) Dump() (string, error) {
	rs, err := f.Read()
	if err != nil {
		return "", err
	}
	return rs.String(), nil
}

// Read decodes vmd's tables from the kernel into the typed model,
// normalized. Anything the model cannot express (a rule someone added by
// hand with an unsupported expression) is an error naming the rule, never
// silently dropped.
func (f *Firewall) Read() (network.Ruleset, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.conn()
	if err != nil {
		return network.Ruleset{}, err
	}
	tables, err := c.ListTables()
	if err != nil {
		return network.Ruleset{}, fmt.Errorf("listing nftables tables: %w", err)
	}
	var rs network.Ruleset
	for _, fam := range ownedFamilies {
		for _, kt := range tables {
			if kt.Name != network.TableName || kt.Family != tableFamily(fam) {
				continue
			}
			t, err := readTable(c, kt, fam)
			if err != nil {
				return network.Ruleset{}, fmt.Errorf("reading table %s %s: %w", fam, kt.Name, err)
			}
			rs.Tables = append(rs.Tables, t)
		}
	}
	rs.Normalize()
	return rs, nil
}
