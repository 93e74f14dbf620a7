package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
)

// DefaultFileName is the name of the database file inside vmd's state
// directory. It is exported so the composition root and docs/internals.md
// agree on one name.
const DefaultFileName = "state.db"

// Defaults applied by Open to zero Options fields.
const (
	// DefaultLockTimeout bounds the wait for the database file lock. It is
	// short on purpose: the lock is only ever held by another live vmd, and
	// an operator who started a second one wants an error, not a hang.
	DefaultLockTimeout = time.Second
	// DefaultWatchWindow is how many recent events are kept for replay. It
	// covers a controller that re-watches after a short hiccup without a
	// full re-list.
	DefaultWatchWindow = 1024
	// DefaultWatchBuffer is the per-watcher channel capacity beyond the
	// replayed events. A watcher that falls further behind is closed.
	DefaultWatchBuffer = 256
)

// Bucket and key names of the on-disk layout (see docs/internals.md).
var (
	bucketMeta         = []byte("meta")
	keySchemaVersion   = []byte("schemaVersion")
	keyResourceVersion = []byte("resourceVersion")
)

// Options tunes Open. The zero value is valid: every zero field takes its
// default.
type Options struct {
	// LockTimeout is how long Open waits for the exclusive file lock
	// before failing (default DefaultLockTimeout).
	LockTimeout time.Duration
	// WatchWindow is the number of recent events kept for Watch replay
	// (default DefaultWatchWindow). A Watch from an older resourceVersion
	// fails with errdefs.ErrGone.
	WatchWindow int
	// WatchBuffer is each watcher's channel capacity on top of its replay
	// (default DefaultWatchBuffer). A watcher whose channel is full when an
	// event arrives is closed rather than allowed to block writers.
	WatchBuffer int
}

func (o Options) withDefaults() Options {
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.WatchWindow <= 0 {
		o.WatchWindow = DefaultWatchWindow
	}
	if o.WatchBuffer <= 0 {
		o.WatchBuffer = DefaultWatchBuffer
	}
	return o
}

// Bolt is the Store backed by one bbolt file. Every write is one fsynced
// bbolt transaction that also advances the store-wide resourceVersion
// counter, and watchers are told only after that transaction committed.
type Bolt struct {
	db   *bolt.DB
	path string
	// writeMu serialises write transactions together with the publication
	// of their event, so watchers see events in resourceVersion order and
	// Watch can take a consistent view of "everything committed so far".
	// bbolt already allows a single writer, so it costs no concurrency.
	writeMu sync.Mutex
	events  *broadcaster
}

var _ Store = (*Bolt)(nil)

// Open opens (creating if needed) the database at path, checks or
// initialises its schema and returns the store. The file is created with
// mode 0600 and its parent directory with 0700, since objects may carry
// cloud-init user data. If another process holds the database, Open fails
// after opts.LockTimeout with an error matching errdefs.ErrUnavailable.
func Open(path string, opts Options) (*Bolt, error) {
	return openWith(path, opts, SchemaVersion, migrations)
}

// openWith is Open with the target schema version and the migration list
// injectable, so tests can exercise a migration that production does not
// have yet.
func openWith(path string, opts Options, target int, migs []migration) (*Bolt, error) {
	opts = opts.withDefaults()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("opening store: creating state directory: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("opening store %s: database is locked by another process (is another vmd using this state directory?): %w",
			path, errdefs.ErrUnavailable)
	}
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	var rv uint64
	err = db.Update(func(tx *bolt.Tx) error {
		if err := prepareSchema(tx, target, migs); err != nil {
			return err
		}
		for _, k := range v1alpha1.Kinds {
			if _, err := tx.CreateBucketIfNotExists([]byte(k)); err != nil {
				return fmt.Errorf("creating bucket %s: %w", k, err)
			}
		}
		rv, err = readCounter(tx)
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	return &Bolt{db: db, path: path, events: newBroadcaster(rv, opts.WatchWindow, opts.WatchBuffer)}, nil
}

// Path returns the database file, for logs and diagnostics.
func (b *Bolt) Path() string { return b.path }

// Close ends every watch and releases the database and its file lock. It
// waits for an in-flight write to finish. Calling it again is harmless.
func (b *Bolt) Close() error {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	b.events.close()
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("closing store: %w", err)
	}
	return nil
}

// Create implements Store. It stores obj as given (including any status;
// the API layer strips client-supplied status) with the server-owned
// metadata set, and updates obj with the stored result.
func (b *Bolt) Create(ctx context.Context, obj v1alpha1.Object) error {
	kind, ns, name, err := identify(obj)
	if err != nil {
		return err
	}
	next := obj.DeepCopyObject()
	err = b.write(ctx, func(tx *bolt.Tx) (*record, error) {
		bk := tx.Bucket([]byte(kind))
		key := objectKey(ns, name)
		if bk.Get(key) != nil {
			return nil, errdefs.AlreadyExists(string(kind), ns, name)
		}
		rv, err := bumpCounter(tx)
		if err != nil {
			return nil, err
		}
		setTypeMeta(next, kind)
		m := next.GetObjectMeta()
		m.Namespace, m.Name = ns, name
		m.UID = uuid.NewString()
		m.Generation = 1
		m.CreationTimestamp = v1alpha1.Now()
		m.DeletionTimestamp = nil
		m.ResourceVersion = formatRV(rv)
		return put(bk, key, next, v1alpha1.Added, kind, rv)
	})
	if err != nil {
		return err
	}
	return assign(obj, next)
}

// Get implements Store.
func (b *Bolt) Get(ctx context.Context, kind v1alpha1.Kind, namespace, name string) (v1alpha1.Object, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ns := defaultNamespace(namespace)
	if err := validateKey(kind, ns, name); err != nil {
		return nil, err
	}
	var out v1alpha1.Object
	err := b.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket([]byte(kind)).Get(objectKey(ns, name))
		if raw == nil {
			return errdefs.NotFound(string(kind), ns, name)
		}
		var err error
		out, err = decode(kind, raw)
		return err
	})
	if err != nil {
		return nil, storeErr(err)
	}
	return out, nil
}

// List implements Store. Objects and the returned resourceVersion come from
// one read transaction, so a Watch from that resourceVersion misses nothing
// and replays nothing already listed.
func (b *Bolt) List(ctx context.Context, kind v1alpha1.Kind, namespace string) ([]v1alpha1.Object, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	if !knownKind(kind) {
		return nil, "", unknownKind(kind)
	}
	if strings.Contains(namespace, "/") {
		return nil, "", fmt.Errorf("namespace %q must not contain '/': %w", namespace, errdefs.ErrInvalid)
	}
	var (
		out []v1alpha1.Object
		rv  uint64
	)
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		if rv, err = readCounter(tx); err != nil {
			return err
		}
		c := tx.Bucket([]byte(kind)).Cursor()
		var prefix []byte
		if namespace != "" {
			prefix = []byte(namespace + "/")
		}
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			o, err := decode(kind, v)
			if err != nil {
				return fmt.Errorf("reading %s %s: %w", kind, k, err)
			}
			out = append(out, o)
		}
		return nil
	})
	if err != nil {
		return nil, "", storeErr(err)
	}
	// Keys are "<namespace>/<name>" and '-' sorts before '/', so byte order
	// is not (namespace, name) order across namespaces: sort explicitly.
	slices.SortFunc(out, func(a, b v1alpha1.Object) int {
		am, bm := a.GetObjectMeta(), b.GetObjectMeta()
		if c := strings.Compare(am.Namespace, bm.Namespace); c != 0 {
			return c
		}
		return strings.Compare(am.Name, bm.Name)
	})
	return out, formatRV(rv), nil
}

// Update implements Store.
//
// Besides the documented contract: a non-empty obj uid must match the
// stored one (ErrConflict), which stops an unconditional update from
// landing on a different object recreated under the same name; an update
// that would change nothing is not written (no new resourceVersion, no
// event), so controllers that re-apply the same state do not wake
// themselves up; and finalizers cannot be added to an object that is being
// deleted (ErrInvalid), as in Kubernetes, so deletion always terminates.
func (b *Bolt) Update(ctx context.Context, obj v1alpha1.Object) error {
	kind, ns, name, err := identify(obj)
	if err != nil {
		return err
	}
	spec, err := obj.SpecJSON()
	if err != nil {
		return fmt.Errorf("encoding spec: %w", err)
	}
	in := obj.GetObjectMeta()
	var result v1alpha1.Object
	err = b.write(ctx, func(tx *bolt.Tx) (*record, error) {
		bk, key, raw, stored, err := load(tx, kind, ns, name)
		if err != nil {
			return nil, err
		}
		sm := stored.GetObjectMeta()
		if err := checkPreconditions(kind, sm, in.ResourceVersion, in.UID); err != nil {
			return nil, err
		}
		if sm.DeletionTimestamp != nil {
			for _, f := range in.Finalizers {
				if !slices.Contains(sm.Finalizers, f) {
					return nil, fmt.Errorf("%s %s/%s is being deleted: finalizer %q cannot be added: %w",
						kind, ns, name, f, errdefs.ErrInvalid)
				}
			}
		}
		oldSpec, err := stored.SpecJSON()
		if err != nil {
			return nil, fmt.Errorf("encoding stored spec: %w", err)
		}
		next := obj.DeepCopyObject()
		next.CopyStatusFrom(stored)
		setTypeMeta(next, kind)
		m := next.GetObjectMeta()
		m.Namespace, m.Name = ns, name
		m.UID = sm.UID
		m.CreationTimestamp = sm.CreationTimestamp
		m.DeletionTimestamp = sm.DeletionTimestamp
		m.ResourceVersion = sm.ResourceVersion
		m.Generation = sm.Generation
		if !bytes.Equal(spec, oldSpec) {
			m.Generation++
		}
		if same, err := unchanged(next, raw); err != nil || same {
			result = stored
			return nil, err
		}
		rv, err := bumpCounter(tx)
		if err != nil {
			return nil, err
		}
		m.ResourceVersion = formatRV(rv)
		result = next
		if m.DeletionTimestamp != nil && len(m.Finalizers) == 0 {
			return remove(bk, key, next, kind, rv)
		}
		return put(bk, key, next, v1alpha1.Modified, kind, rv)
	})
	if err != nil {
		return err
	}
	return assign(obj, result)
}

// UpdateStatus implements Store. Like Update it honours a non-empty uid
// precondition and skips writes that change nothing.
func (b *Bolt) UpdateStatus(ctx context.Context, obj v1alpha1.Object) error {
	kind, ns, name, err := identify(obj)
	if err != nil {
		return err
	}
	in := obj.GetObjectMeta()
	var result v1alpha1.Object
	err = b.write(ctx, func(tx *bolt.Tx) (*record, error) {
		bk, key, raw, stored, err := load(tx, kind, ns, name)
		if err != nil {
			return nil, err
		}
		if err := checkPreconditions(kind, stored.GetObjectMeta(), in.ResourceVersion, in.UID); err != nil {
			return nil, err
		}
		// stored is a fresh decode, so it can become the new version; when
		// nothing changed it is exactly what is on disk.
		result = stored
		stored.CopyStatusFrom(obj)
		if same, err := unchanged(stored, raw); err != nil || same {
			return nil, err
		}
		rv, err := bumpCounter(tx)
		if err != nil {
			return nil, err
		}
		stored.GetObjectMeta().ResourceVersion = formatRV(rv)
		return put(bk, key, stored, v1alpha1.Modified, kind, rv)
	})
	if err != nil {
		return err
	}
	return assign(obj, result)
}

// Delete implements Store. A second delete of an object that is already
// being deleted writes nothing and returns it unchanged.
func (b *Bolt) Delete(ctx context.Context, kind v1alpha1.Kind, namespace, name, preconditionRV string) (v1alpha1.Object, error) {
	ns := defaultNamespace(namespace)
	if err := validateKey(kind, ns, name); err != nil {
		return nil, err
	}
	var result v1alpha1.Object
	err := b.write(ctx, func(tx *bolt.Tx) (*record, error) {
		bk, key, _, stored, err := load(tx, kind, ns, name)
		if err != nil {
			return nil, err
		}
		m := stored.GetObjectMeta()
		if err := checkPreconditions(kind, m, preconditionRV, ""); err != nil {
			return nil, err
		}
		result = stored
		if len(m.Finalizers) > 0 && m.DeletionTimestamp != nil {
			return nil, nil
		}
		rv, err := bumpCounter(tx)
		if err != nil {
			return nil, err
		}
		m.ResourceVersion = formatRV(rv)
		if len(m.Finalizers) > 0 {
			m.DeletionTimestamp = v1alpha1.Now()
			return put(bk, key, stored, v1alpha1.Modified, kind, rv)
		}
		return remove(bk, key, stored, kind, rv)
	})
	if err != nil {
		return nil, err
	}
	return result, nil
}

// Watch implements Store. Events are delivered in resourceVersion order. A
// watcher that does not keep up (its channel buffer is full) has its
// channel closed; the consumer then re-lists and watches again from the
// list's resourceVersion, as Kubernetes informers do. Writers never wait for
// watchers.
func (b *Bolt) Watch(ctx context.Context, kind v1alpha1.Kind, namespace, sinceRV string) (<-chan Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !knownKind(kind) {
		return nil, unknownKind(kind)
	}
	since, fromNow := uint64(0), sinceRV == ""
	if !fromNow {
		var err error
		if since, err = strconv.ParseUint(sinceRV, 10, 64); err != nil {
			return nil, fmt.Errorf("watching %s: resourceVersion %q is not a decimal number: %w",
				kind.Plural(), sinceRV, errdefs.ErrInvalid)
		}
	}
	// Holding writeMu means no write is between commit and publication,
	// so the broadcaster's position equals the last committed version.
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	ch, err := b.events.subscribe(ctx, kind, namespace, since, fromNow)
	if err != nil {
		return nil, fmt.Errorf("watching %s: %w", kind.Plural(), err)
	}
	return ch, nil
}

// write runs fn in one bbolt write transaction and, once it committed,
// publishes the record fn returned (nil means nothing was written). The
// context is honoured before the transaction starts; a started transaction
// always runs to completion so a write is never half-applied.
func (b *Bolt) write(ctx context.Context, fn func(tx *bolt.Tx) (*record, error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	var rec *record
	err := b.db.Update(func(tx *bolt.Tx) error {
		var err error
		rec, err = fn(tx)
		return err
	})
	if err != nil {
		return storeErr(err)
	}
	if rec != nil {
		b.events.publish(rec)
	}
	return nil
}

// storeErr maps bbolt's closed-database error to ErrUnavailable and leaves
// the rest (already errdefs-wrapped or carrying context) alone.
func storeErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("store is closed: %w", errdefs.ErrUnavailable)
	}
	return err
}

// load reads and decodes the object at (kind, ns, name) inside tx.
func load(tx *bolt.Tx, kind v1alpha1.Kind, ns, name string) (*bolt.Bucket, []byte, []byte, v1alpha1.Object, error) {
	bk := tx.Bucket([]byte(kind))
	key := objectKey(ns, name)
	raw := bk.Get(key)
	if raw == nil {
		return nil, nil, nil, nil, errdefs.NotFound(string(kind), ns, name)
	}
	obj, err := decode(kind, raw)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	return bk, key, raw, obj, nil
}

// put stores obj under key and returns the event record for it.
func put(bk *bolt.Bucket, key []byte, obj v1alpha1.Object, typ v1alpha1.WatchEventType, kind v1alpha1.Kind, rv uint64) (*record, error) {
	data, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encoding %s %s: %w", kind, key, err)
	}
	if err := bk.Put(key, data); err != nil {
		return nil, fmt.Errorf("writing %s %s: %w", kind, key, err)
	}
	return &record{rv: rv, typ: typ, kind: kind, namespace: obj.GetObjectMeta().Namespace, data: data}, nil
}

// remove deletes key and returns a DELETED record carrying obj's last
// state (with the deleting write's resourceVersion, as Kubernetes does).
func remove(bk *bolt.Bucket, key []byte, obj v1alpha1.Object, kind v1alpha1.Kind, rv uint64) (*record, error) {
	data, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encoding %s %s: %w", kind, key, err)
	}
	if err := bk.Delete(key); err != nil {
		return nil, fmt.Errorf("deleting %s %s: %w", kind, key, err)
	}
	return &record{rv: rv, typ: v1alpha1.Deleted, kind: kind, namespace: obj.GetObjectMeta().Namespace, data: data}, nil
}

// unchanged reports whether obj encodes to exactly the stored bytes.
func unchanged(obj v1alpha1.Object, raw []byte) (bool, error) {
	data, err := json.Marshal(obj)
	if err != nil {
		return false, fmt.Errorf("encoding object: %w", err)
	}
	return bytes.Equal(data, raw), nil
}

// checkPreconditions enforces the optional resourceVersion and uid
// preconditions of a write against the stored metadata.
func checkPreconditions(kind v1alpha1.Kind, stored *v1alpha1.ObjectMeta, rv, uid string) error {
	if rv != "" && rv != stored.ResourceVersion {
		return errdefs.Conflict(string(kind), stored.Namespace, stored.Name,
			fmt.Sprintf("resourceVersion %s is stale (stored %s); re-read and retry", rv, stored.ResourceVersion))
	}
	if uid != "" && uid != stored.UID {
		return errdefs.Conflict(string(kind), stored.Namespace, stored.Name,
			fmt.Sprintf("uid %s does not match the stored object (%s)", uid, stored.UID))
	}
	return nil
}

// readCounter returns the last resourceVersion handed out.
func readCounter(tx *bolt.Tx) (uint64, error) {
	raw := tx.Bucket(bucketMeta).Get(keyResourceVersion)
	if raw == nil {
		return 0, nil
	}
	rv, err := strconv.ParseUint(string(raw), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("reading resourceVersion counter %q: %w", raw, err)
	}
	return rv, nil
}

// bumpCounter advances the store-wide counter inside tx and returns the new
// value; it commits or rolls back together with the write that uses it.
func bumpCounter(tx *bolt.Tx) (uint64, error) {
	rv, err := readCounter(tx)
	if err != nil {
		return 0, err
	}
	rv++
	if err := tx.Bucket(bucketMeta).Put(keyResourceVersion, []byte(formatRV(rv))); err != nil {
		return 0, fmt.Errorf("writing resourceVersion counter: %w", err)
	}
	return rv, nil
}

func formatRV(rv uint64) string { return strconv.FormatUint(rv, 10) }

func objectKey(ns, name string) []byte { return []byte(ns + "/" + name) }

func defaultNamespace(ns string) string {
	if ns == "" {
		return v1alpha1.DefaultNamespace
	}
	return ns
}

// kindsByType maps each served Go type to its Kind, derived from
// v1alpha1.NewObject so a new kind needs no change here.
var kindsByType = func() map[reflect.Type]v1alpha1.Kind {
	m := make(map[reflect.Type]v1alpha1.Kind, len(v1alpha1.Kinds))
	for _, k := range v1alpha1.Kinds {
		o, err := v1alpha1.NewObject(k)
		if err != nil {
			panic(fmt.Sprintf("state: kind %s listed but not constructible: %v", k, err))
		}
		m[reflect.TypeOf(o)] = k
	}
	return m
}()

func knownKind(kind v1alpha1.Kind) bool { return slices.Contains(v1alpha1.Kinds, kind) }

func unknownKind(kind v1alpha1.Kind) error {
	return fmt.Errorf("unknown kind %q: %w", kind, errdefs.ErrInvalid)
}

// identify returns obj's kind (from its Go type, not the possibly empty
// TypeMeta) and its validated key, defaulting the namespace.
func identify(obj v1alpha1.Object) (v1alpha1.Kind, string, string, error) {
	if obj == nil {
		return "", "", "", fmt.Errorf("nil object: %w", errdefs.ErrInvalid)
	}
	kind, ok := kindsByType[reflect.TypeOf(obj)]
	if !ok {
		return "", "", "", fmt.Errorf("unsupported object type %T: %w", obj, errdefs.ErrInvalid)
	}
	// Every served type is a pointer (NewObject returns pointers).
	if reflect.ValueOf(obj).IsNil() {
		return "", "", "", fmt.Errorf("nil %s: %w", kind, errdefs.ErrInvalid)
	}
	m := obj.GetObjectMeta()
	ns := defaultNamespace(m.Namespace)
	if err := validateKey(kind, ns, m.Name); err != nil {
		return "", "", "", err
	}
	return kind, ns, m.Name, nil
}

// validateKey guards the key encoding: '/' separates namespace from name,
// so neither may contain it. Full name validation is the API's job.
func validateKey(kind v1alpha1.Kind, ns, name string) error {
	if !knownKind(kind) {
		return unknownKind(kind)
	}
	if name == "" {
		return fmt.Errorf("%s: metadata.name is required: %w", kind, errdefs.ErrInvalid)
	}
	if strings.Contains(ns, "/") || strings.Contains(name, "/") {
		return fmt.Errorf("%s %s/%s: namespace and name must not contain '/': %w", kind, ns, name, errdefs.ErrInvalid)
	}
	return nil
}

func setTypeMeta(obj v1alpha1.Object, kind v1alpha1.Kind) {
	tm := obj.GetTypeMeta()
	tm.APIVersion, tm.Kind = v1alpha1.GroupVersion, kind
}

// decode returns a fresh object of kind from its stored JSON.
func decode(kind v1alpha1.Kind, data []byte) (v1alpha1.Object, error) {
	obj, err := v1alpha1.NewObject(kind)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, obj); err != nil {
		return nil, fmt.Errorf("decoding stored %s: %w", kind, err)
	}
	return obj, nil
}

// assign overwrites *dst with *src (same concrete type), which is how the
// store hands the stored result back through the caller's object. src must
// not be referenced elsewhere afterwards.
func assign(dst, src v1alpha1.Object) error {
	dv, sv := reflect.ValueOf(dst), reflect.ValueOf(src)
	if dv.Type() != sv.Type() {
		return fmt.Errorf("assigning %T to %T: type mismatch", src, dst)
	}
	dv.Elem().Set(sv.Elem())
	return nil
}

// migration upgrades the layout from schema version from to from+1. It runs
// inside Open's write transaction, so a crash or an error leaves the file at
// the old version, untouched.
type migration struct {
	from        int
	description string
	apply       func(tx *bolt.Tx) error
}

// migrations lists every layout upgrade, one per version step. Version 1 is
// the first layout, so there is none yet; a change to the layout bumps
// SchemaVersion and appends the step from the previous version here,
// together with a test that opens a file of the previous version.
var migrations []migration

// prepareSchema initialises a new file at version target, refuses a file
// written by a newer vmd, and migrates an older one step by step.
func prepareSchema(tx *bolt.Tx, target int, migs []migration) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		// A new file, unless it holds someone else's buckets.
		err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			return fmt.Errorf("reading schema version: bucket %q without a meta bucket; this is not a vmd state file", name)
		})
		if err != nil {
			return err
		}
		if meta, err = tx.CreateBucket(bucketMeta); err != nil {
			return fmt.Errorf("creating bucket meta: %w", err)
		}
		return putSchemaVersion(meta, target)
	}
	raw := meta.Get(keySchemaVersion)
	if raw == nil {
		return fmt.Errorf("reading schema version: meta bucket has no %s key; this is not a vmd state file", keySchemaVersion)
	}
	have, err := strconv.Atoi(string(raw))
	if err != nil || have < 1 {
		return fmt.Errorf("reading schema version: invalid value %q", raw)
	}
	if have > target {
		return fmt.Errorf("state schema version %d is newer than this vmd supports (%d): it was written by a newer vmd; upgrade vmd or restore an older state file", have, target)
	}
	for v := have; v < target; v++ {
		i := slices.IndexFunc(migs, func(m migration) bool { return m.from == v })
		if i < 0 {
			return fmt.Errorf("migrating schema: no migration from version %d to %d", v, v+1)
		}
		if err := migs[i].apply(tx); err != nil {
			return fmt.Errorf("migrating schema from version %d (%s): %w", v, migs[i].description, err)
		}
	}
	if have == target {
		return nil
	}
	return putSchemaVersion(meta, target)
}

func putSchemaVersion(meta *bolt.Bucket, v int) error {
	if err := meta.Put(keySchemaVersion, []byte(strconv.Itoa(v))); err != nil {
		return fmt.Errorf("writing schema version: %w", err)
	}
	return nil
}
