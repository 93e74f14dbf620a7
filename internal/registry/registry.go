// Package registry is vmd's API service layer: the one place that turns a
// client request into a store write. Every write goes through the same
// pipeline — sanitise server-owned fields, default, validate, then store —
// so the HTTP server, tests and any future front end cannot bypass
// validation or forge server-owned metadata.
//
// The registry knows nothing about HTTP; it speaks the errdefs vocabulary
// (ErrNotFound, ErrConflict, *errdefs.InvalidError, ...) and internal/server
// maps that to status codes.
package registry

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/state"
)

// Finalizer is added to every object on Create. A delete request then only
// marks the object (deletionTimestamp); the controller removes the finalizer
// once it has released what the object holds on the host (domain, volume,
// addresses), and only then does the store drop the object. So a delete never
// leaks host resources, even across a crash. It is the same string as
// v1alpha1.CleanupFinalizer, which the controller matches on; the alias keeps
// the registry's contract readable where it is enforced.
const Finalizer = v1alpha1.CleanupFinalizer

// DefaultApplyAttempts bounds Apply's optimistic-concurrency retry loop.
// Conflicts come only from the controller's own finalizer or status writes
// racing the apply, so a handful of attempts always suffices in practice;
// the bound keeps a pathological writer from spinning a request forever.
const DefaultApplyAttempts = 5

// Options tune a Registry. The zero value is valid.
type Options struct {
	// ApplyAttempts is how many times Apply re-reads and retries after
	// losing a resourceVersion race; default DefaultApplyAttempts.
	ApplyAttempts int
}

// WriteOptions modify Create, Update and Apply.
type WriteOptions struct {
	// DryRun runs decoding, defaulting, validation and every precondition
	// check but skips the store write; the call returns what would have
	// been stored (without a new resourceVersion or uid).
	DryRun bool
}

// DeleteOptions modify Delete.
type DeleteOptions struct {
	// DryRun checks existence and the precondition and returns the object
	// as the delete would leave it, without writing.
	DryRun bool
	// PreconditionRV, when non-empty, must equal the stored
	// resourceVersion (errdefs.ErrConflict otherwise).
	PreconditionRV string
}

// ApplyResult says what an Apply did; vmctl prints it after the object
// ("vminstance/web configured").
type ApplyResult string

// Apply results, lowercase because they are shown to users and sent in the
// Vmd-Apply-Result header as they are.
const (
	ApplyCreated    ApplyResult = "created"
	ApplyConfigured ApplyResult = "configured"
	ApplyUnchanged  ApplyResult = "unchanged"
)

// Registry validates and stores API objects. It is safe for concurrent use:
// all shared state lives in the Store, whose resourceVersion preconditions
// serialise conflicting writers.
type Registry struct {
	store state.Store
	cat   v1alpha1.Catalog
	opts  Options
}

// New returns a Registry writing to store and validating names against cat.
func New(store state.Store, cat v1alpha1.Catalog, opts Options) *Registry {
	if opts.ApplyAttempts <= 0 {
		opts.ApplyAttempts = DefaultApplyAttempts
	}
	return &Registry{store: store, cat: cat, opts: opts}
}

// Get returns the stored object. An empty namespace means the default one.
func (r *Registry) Get(ctx context.Context, kind v1alpha1.Kind, ns, name string) (v1alpha1.Object, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	obj, err := r.store.Get(ctx, kind, defaultNS(ns), name)
	if err != nil {
		return nil, withContext("getting "+ref(kind, defaultNS(ns), name), err)
	}
	return obj, nil
}

// List returns the objects of kind in ns ("" = every namespace) and the
// resourceVersion they were read at, from which a Watch misses nothing.
func (r *Registry) List(ctx context.Context, kind v1alpha1.Kind, ns string) ([]v1alpha1.Object, string, error) {
	if err := checkKind(kind); err != nil {
		return nil, "", err
	}
	objs, rv, err := r.store.List(ctx, kind, ns)
	if err != nil {
		return nil, "", withContext("listing "+kind.Plural(), err)
	}
	return objs, rv, nil
}

// Create defaults, validates and stores a new object. Server-owned metadata
// and status sent by the client are discarded; the object gets Finalizer.
func (r *Registry) Create(ctx context.Context, obj v1alpha1.Object, opts WriteOptions) (v1alpha1.Object, error) {
	o, err := r.prepareCreate(obj)
	if err != nil {
		return nil, err
	}
	m := o.GetObjectMeta()
	if opts.DryRun {
		// The store would refuse a taken name; so must a dry run.
		_, err := r.store.Get(ctx, o.GetTypeMeta().Kind, m.Namespace, m.Name)
		switch {
		case err == nil:
			return nil, errdefs.AlreadyExists(string(o.GetTypeMeta().Kind), m.Namespace, m.Name)
		case !errors.Is(err, errdefs.ErrNotFound):
			return nil, withContext("checking "+objRef(o), err)
		}
		m.Generation = 1
		m.CreationTimestamp = v1alpha1.Now()
		return o, nil
	}
	if err := r.store.Create(ctx, o); err != nil {
		return nil, withContext("creating "+objRef(o), err)
	}
	return o, nil
}

// Update replaces labels, annotations and spec of an existing object (PUT
// semantics: what the client omits is removed). A non-empty
// metadata.resourceVersion is a precondition; empty means unconditional.
// Status and server-owned metadata are kept from the stored object.
func (r *Registry) Update(ctx context.Context, obj v1alpha1.Object, opts WriteOptions) (v1alpha1.Object, error) {
	in, err := r.sanitize(obj)
	if err != nil {
		return nil, err
	}
	m := in.GetObjectMeta()
	cur, err := r.store.Get(ctx, in.GetTypeMeta().Kind, m.Namespace, m.Name)
	if err != nil {
		return nil, withContext("updating "+objRef(in), err)
	}
	out, err := r.prepareUpdate(in, cur)
	if err != nil {
		return nil, err
	}
	if opts.DryRun {
		return dryRunUpdated(out, cur)
	}
	if err := r.store.Update(ctx, out); err != nil {
		return nil, withContext("updating "+objRef(out), err)
	}
	return out, nil
}

// Apply creates the object or brings the stored one to the given labels,
// annotations and spec (a full manifest, as `kubectl apply` sends). Unlike
// Update it needs no resourceVersion: it reads the current one and retries
// on ErrConflict, because the only concurrent writer is normally the
// controller updating status or finalizers. A resourceVersion the client
// does send is honoured as a precondition and then not retried.
//
// When labels, annotations and spec equal the stored ones after defaulting,
// Apply writes nothing and returns ApplyUnchanged with the stored object, so
// re-applying a directory is free and wakes no controller.
func (r *Registry) Apply(ctx context.Context, obj v1alpha1.Object, opts WriteOptions) (v1alpha1.Object, ApplyResult, error) {
	in, err := r.sanitize(obj)
	if err != nil {
		return nil, "", err
	}
	kind, m := in.GetTypeMeta().Kind, in.GetObjectMeta()
	precondition := m.ResourceVersion
	var lastErr error
	for attempt := 0; attempt < r.opts.ApplyAttempts; attempt++ {
		cur, err := r.store.Get(ctx, kind, m.Namespace, m.Name)
		if errors.Is(err, errdefs.ErrNotFound) {
			if precondition != "" {
				// A precondition names a version that cannot exist.
				return nil, "", withContext("applying "+objRef(in), err)
			}
			created, err := r.Create(ctx, in, opts)
			if errors.Is(err, errdefs.ErrAlreadyExists) {
				lastErr = err // lost a create race: update what won
				continue
			}
			if err != nil {
				return nil, "", err
			}
			return created, ApplyCreated, nil
		}
		if err != nil {
			return nil, "", withContext("applying "+objRef(in), err)
		}
		next := in.DeepCopyObject()
		if precondition == "" {
			next.GetObjectMeta().ResourceVersion = cur.GetObjectMeta().ResourceVersion
		}
		out, err := r.prepareUpdate(next, cur)
		if err != nil {
			return nil, "", err
		}
		same, err := sameDesiredState(out, cur)
		if err != nil {
			return nil, "", err
		}
		if same {
			return cur, ApplyUnchanged, nil
		}
		if opts.DryRun {
			o, err := dryRunUpdated(out, cur)
			return o, ApplyConfigured, err
		}
		err = r.store.Update(ctx, out)
		if err == nil {
			return out, ApplyConfigured, nil
		}
		if precondition == "" && errors.Is(err, errdefs.ErrConflict) {
			lastErr = err
			continue
		}
		return nil, "", withContext("applying "+objRef(out), err)
	}
	return nil, "", fmt.Errorf("applying %s: giving up after %d attempts: %w", objRef(in), r.opts.ApplyAttempts, lastErr)
}

// Delete requests deletion. Objects carrying finalizers (every object
// created through the registry) are only marked and returned with
// deletionTimestamp set; the controller finishes the job.
func (r *Registry) Delete(ctx context.Context, kind v1alpha1.Kind, ns, name string, opts DeleteOptions) (v1alpha1.Object, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	ns = defaultNS(ns)
	if opts.DryRun {
		cur, err := r.store.Get(ctx, kind, ns, name)
		if err != nil {
			return nil, withContext("deleting "+ref(kind, ns, name), err)
		}
		cm := cur.GetObjectMeta()
		if opts.PreconditionRV != "" && opts.PreconditionRV != cm.ResourceVersion {
			return nil, staleConflict(cur)
		}
		if len(cm.Finalizers) > 0 && cm.DeletionTimestamp == nil {
			cm.DeletionTimestamp = v1alpha1.Now()
		}
		return cur, nil
	}
	obj, err := r.store.Delete(ctx, kind, ns, name, opts.PreconditionRV)
	if err != nil {
		return nil, withContext("deleting "+ref(kind, ns, name), err)
	}
	return obj, nil
}

// Watch streams changes of kind in ns ("" = every namespace) made after
// sinceRV; an empty sinceRV means "from now", as the Store defines it. A
// client that needs the current state lists first and watches from the
// list's resourceVersion, which misses nothing. A sinceRV older than the
// store's replay window fails with errdefs.ErrGone. The channel closes when
// ctx ends or the store closes.
func (r *Registry) Watch(ctx context.Context, kind v1alpha1.Kind, ns, sinceRV string) (<-chan state.Event, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	ch, err := r.store.Watch(ctx, kind, ns, sinceRV)
	if err != nil {
		return nil, withContext("watching "+kind.Plural(), err)
	}
	return ch, nil
}

// UpdateStatus stores obj's status under its resourceVersion precondition.
// It is for the controller: status is not validated (it is observed truth,
// not a request), and spec and metadata in obj are ignored by the store.
func (r *Registry) UpdateStatus(ctx context.Context, obj v1alpha1.Object) (v1alpha1.Object, error) {
	if err := checkKind(obj.GetTypeMeta().Kind); err != nil {
		return nil, err
	}
	o := obj.DeepCopyObject()
	if err := r.store.UpdateStatus(ctx, o); err != nil {
		return nil, withContext("updating status of "+objRef(o), err)
	}
	return o, nil
}

// sanitize returns a copy of a client object with type metadata checked,
// the namespace defaulted and status cleared: status is observed truth and
// only the controller writes it.
func (r *Registry) sanitize(obj v1alpha1.Object) (v1alpha1.Object, error) {
	if obj == nil {
		return nil, errors.New("no object given")
	}
	o := obj.DeepCopyObject()
	tm, m := o.GetTypeMeta(), o.GetObjectMeta()
	var errs field.ErrorList
	if tm.APIVersion != "" && tm.APIVersion != v1alpha1.GroupVersion {
		errs = append(errs, field.NotSupported(field.NewPath("apiVersion"), tm.APIVersion, []string{v1alpha1.GroupVersion}))
	}
	empty, err := v1alpha1.NewObject(tm.Kind)
	if err != nil {
		errs = append(errs, field.NotSupported(field.NewPath("kind"), string(tm.Kind), kindNames()))
	}
	if len(errs) > 0 {
		return nil, errdefs.NewInvalid(string(tm.Kind), m.Name, errs)
	}
	tm.APIVersion = v1alpha1.GroupVersion
	m.Namespace = defaultNS(m.Namespace)
	o.CopyStatusFrom(empty)
	return o, nil
}

// Check returns the create-time validation errors of obj (defaulted on a
// copy) without touching the store. The server uses it to report bad
// values together with the decoder's unknown-field errors in one answer.
func (r *Registry) Check(obj v1alpha1.Object) field.ErrorList {
	o := obj.DeepCopyObject()
	o.GetObjectMeta().Namespace = defaultNS(o.GetObjectMeta().Namespace)
	v1alpha1.SetDefaults(o)
	return v1alpha1.Validate(o, r.cat)
}

// prepareCreate sanitises, resets server-owned metadata, adds Finalizer,
// defaults and validates a new object.
func (r *Registry) prepareCreate(obj v1alpha1.Object) (v1alpha1.Object, error) {
	o, err := r.sanitize(obj)
	if err != nil {
		return nil, err
	}
	m := o.GetObjectMeta()
	m.UID, m.Generation, m.ResourceVersion = "", 0, ""
	m.CreationTimestamp, m.DeletionTimestamp = nil, nil
	m.Finalizers = []string{Finalizer}
	v1alpha1.SetDefaults(o)
	if errs := v1alpha1.Validate(o, r.cat); len(errs) > 0 {
		return nil, errdefs.NewInvalid(string(o.GetTypeMeta().Kind), m.Name, errs)
	}
	return o, nil
}

// prepareUpdate turns a sanitised client object into the object to store
// over cur: server-owned metadata and status come from cur, the
// resourceVersion precondition is checked, then defaults and update
// validation (immutable fields, no shrinking) apply.
func (r *Registry) prepareUpdate(in, cur v1alpha1.Object) (v1alpha1.Object, error) {
	out := in.DeepCopyObject()
	m, cm := out.GetObjectMeta(), cur.GetObjectMeta()
	if cm.DeletionTimestamp != nil {
		return nil, errdefs.Conflict(string(out.GetTypeMeta().Kind), cm.Namespace, cm.Name, "object is being deleted")
	}
	switch m.ResourceVersion {
	case "":
		m.ResourceVersion = cm.ResourceVersion
	case cm.ResourceVersion:
	default:
		return nil, staleConflict(cur)
	}
	m.UID, m.Generation = cm.UID, cm.Generation
	m.CreationTimestamp, m.DeletionTimestamp = cm.CreationTimestamp, cm.DeletionTimestamp
	m.Finalizers = slices.Clone(cm.Finalizers)
	out.CopyStatusFrom(cur)
	v1alpha1.SetDefaults(out)
	if errs := v1alpha1.ValidateUpdate(out, cur, r.cat); len(errs) > 0 {
		return nil, errdefs.NewInvalid(string(out.GetTypeMeta().Kind), m.Name, errs)
	}
	return out, nil
}

// dryRunUpdated fills in what the store would change on update: the
// generation moves only when the spec does.
func dryRunUpdated(out, cur v1alpha1.Object) (v1alpha1.Object, error) {
	specChanged, err := specDiffers(out, cur)
	if err != nil {
		return nil, err
	}
	if specChanged {
		out.GetObjectMeta().Generation = cur.GetObjectMeta().Generation + 1
	}
	return out, nil
}

// sameDesiredState reports whether a and b agree on everything a client
// controls: labels, annotations and spec. nil and empty maps are equal.
func sameDesiredState(a, b v1alpha1.Object) (bool, error) {
	am, bm := a.GetObjectMeta(), b.GetObjectMeta()
	if !maps.Equal(am.Labels, bm.Labels) || !maps.Equal(am.Annotations, bm.Annotations) {
		return false, nil
	}
	differs, err := specDiffers(a, b)
	return !differs, err
}

// specDiffers compares canonical spec JSON, the same test the store uses
// to decide whether to bump generation.
func specDiffers(a, b v1alpha1.Object) (bool, error) {
	as, err := a.SpecJSON()
	if err != nil {
		return false, fmt.Errorf("encoding spec: %w", err)
	}
	bs, err := b.SpecJSON()
	if err != nil {
		return false, fmt.Errorf("encoding spec: %w", err)
	}
	return string(as) != string(bs), nil
}

// staleConflict is the error for a resourceVersion precondition that no
// longer holds, worded as Kubernetes words it so users recognise it.
func staleConflict(cur v1alpha1.Object) error {
	m := cur.GetObjectMeta()
	return errdefs.Conflict(string(cur.GetTypeMeta().Kind), m.Namespace, m.Name,
		"the object has been modified; please apply your changes to the latest version and try again")
}

// checkKind refuses kinds the API does not serve, as a field error so the
// caller's error mapping stays uniform.
func checkKind(kind v1alpha1.Kind) error {
	if slices.Contains(v1alpha1.Kinds, kind) {
		return nil
	}
	return errdefs.NewInvalid(string(kind), "", field.ErrorList{
		field.NotSupported(field.NewPath("kind"), string(kind), kindNames()),
	})
}

func kindNames() []string {
	out := make([]string, len(v1alpha1.Kinds))
	for i, k := range v1alpha1.Kinds {
		out[i] = string(k)
	}
	return out
}

func defaultNS(ns string) string {
	if ns == "" {
		return v1alpha1.DefaultNamespace
	}
	return ns
}

func ref(kind v1alpha1.Kind, ns, name string) string {
	return fmt.Sprintf("%s %s/%s", kind, ns, name)
}

func objRef(o v1alpha1.Object) string {
	m := o.GetObjectMeta()
	return ref(o.GetTypeMeta().Kind, m.Namespace, m.Name)
}

// sentinels are the errdefs errors whose messages already name the object
// (errdefs.NotFound, Conflict, ...). They pass through unwrapped so the
// message a user sees is not "updating VMDisk a/b: VMDisk a/b: conflict".
var sentinels = []error{
	errdefs.ErrNotFound, errdefs.ErrAlreadyExists, errdefs.ErrConflict, errdefs.ErrInvalid,
	errdefs.ErrGone, errdefs.ErrForbidden, errdefs.ErrNotImplemented,
}

// withContext adds op as context to unexpected errors (I/O, encoding) and
// returns vocabulary errors unchanged.
func withContext(op string, err error) error {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return err
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}
