// Package state is vmd's durable record of desired and observed state.
// Every API write lands here (fsynced) before any controller acts on it, so a
// crash at any point converges on restart: the controller resyncs from the
// store.
//
// The Store interface is the port; bolt.go implements it with bbolt.
package state

import (
	"context"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

// SchemaVersion is the on-disk layout version written in the meta bucket.
// Open refuses a newer version and migrates an older one.
const SchemaVersion = 1

// Store keeps objects of every kind, keyed by (kind, namespace, name).
//
// resourceVersion is one store-wide counter, rendered as a decimal string; it
// increases on every write. Writes that carry a resourceVersion are
// conditional: a stale one fails with errdefs.ErrConflict.
type Store interface {
	// Create stores a new object. It sets uid, generation 1,
	// resourceVersion and creationTimestamp on obj. ErrAlreadyExists if the
	// key is taken.
	Create(ctx context.Context, obj v1alpha1.Object) error
	// Get returns a copy of the stored object. ErrNotFound if absent.
	Get(ctx context.Context, kind v1alpha1.Kind, namespace, name string) (v1alpha1.Object, error)
	// List returns the objects of a kind in namespace ("" = all namespaces),
	// sorted by namespace then name, and the resourceVersion they were read at.
	List(ctx context.Context, kind v1alpha1.Kind, namespace string) ([]v1alpha1.Object, string, error)
	// Update replaces metadata (labels, annotations, finalizers) and spec.
	// obj.resourceVersion must equal the stored one (ErrConflict otherwise).
	// Status is kept from the stored object. Generation is bumped only when
	// the spec changed. obj is updated with the stored result.
	Update(ctx context.Context, obj v1alpha1.Object) error
	// UpdateStatus replaces only the status, under the same
	// resourceVersion precondition. obj is updated with the stored result.
	UpdateStatus(ctx context.Context, obj v1alpha1.Object) error
	// Delete requests deletion. With finalizers present it sets
	// deletionTimestamp (once) and returns the object; the object goes away
	// when an Update removes the last finalizer. Without finalizers the
	// object is removed at once and returned. A non-empty
	// preconditionRV must match (ErrConflict otherwise).
	Delete(ctx context.Context, kind v1alpha1.Kind, namespace, name, preconditionRV string) (v1alpha1.Object, error)
	// Watch streams changes of a kind in namespace ("" = all) with a
	// resourceVersion greater than sinceRV ("" = from now). Events older
	// than the store's replay window fail with ErrGone. The channel closes
	// when ctx ends or the store closes.
	Watch(ctx context.Context, kind v1alpha1.Kind, namespace, sinceRV string) (<-chan Event, error)
	// Close releases the database.
	Close() error
}

// Event is one change seen by a watcher.
type Event struct {
	Type   v1alpha1.WatchEventType
	Object v1alpha1.Object
	// ResourceVersion of the write that produced the event.
	ResourceVersion string
}
