package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/state"
)

// writeStatus stores obj's status when it differs from before (a JSON
// snapshot taken when the object was read). Skipping no-op writes matters:
// every write is a watch event, and an event re-queues the key.
func writeStatus(ctx context.Context, store state.Store, obj v1alpha1.Object, before []byte) error {
	after, err := statusJSON(obj)
	if err != nil {
		return err
	}
	if bytes.Equal(before, after) {
		return nil
	}
	if err := store.UpdateStatus(ctx, obj); err != nil {
		return fmt.Errorf("writing status: %w", err)
	}
	return nil
}

// statusJSON snapshots the status of obj for writeStatus.
func statusJSON(obj v1alpha1.Object) ([]byte, error) {
	switch o := obj.(type) {
	case *v1alpha1.VMInstance:
		return json.Marshal(o.Status)
	case *v1alpha1.VMDisk:
		return json.Marshal(o.Status)
	}
	return nil, fmt.Errorf("unknown object type %T", obj)
}

// removeFinalizer drops the cleanup finalizer; the store deletes an object
// marked for deletion once its last finalizer is gone.
func removeFinalizer(ctx context.Context, store state.Store, obj v1alpha1.Object) error {
	m := obj.GetObjectMeta()
	i := slices.Index(m.Finalizers, v1alpha1.CleanupFinalizer)
	if i < 0 {
		return nil
	}
	m.Finalizers = slices.Delete(slices.Clone(m.Finalizers), i, i+1)
	if err := store.Update(ctx, obj); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("removing finalizer: %w", err)
	}
	return nil
}

// ensureFinalizer adds the cleanup finalizer to an object that lacks it
// (e.g. one stored by an older vmd). It reports whether it wrote.
func ensureFinalizer(ctx context.Context, store state.Store, obj v1alpha1.Object) (bool, error) {
	m := obj.GetObjectMeta()
	if slices.Contains(m.Finalizers, v1alpha1.CleanupFinalizer) {
		return false, nil
	}
	m.Finalizers = append(slices.Clone(m.Finalizers), v1alpha1.CleanupFinalizer)
	if err := store.Update(ctx, obj); err != nil {
		return false, fmt.Errorf("adding finalizer: %w", err)
	}
	return true, nil
}

// getObject reads key, returning (nil, nil) when it no longer exists.
func getObject(ctx context.Context, store state.Store, key Key) (v1alpha1.Object, error) {
	obj, err := store.Get(ctx, key.Kind, key.Namespace, key.Name)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", key, err)
	}
	return obj, nil
}
