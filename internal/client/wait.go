package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
)

// ConditionFunc decides whether a wait is over. obj is the latest state of
// the object; deleted is true when the object no longer exists, in which
// case obj is its last known state or nil if it was never seen. Returning
// an error ends the wait with that error.
type ConditionFunc func(obj v1alpha1.Object, deleted bool) (bool, error)

// Back-off between watch reconnections, so a server that keeps closing
// streams (or is restarting) is not hammered.
const (
	minRetryDelay = 50 * time.Millisecond
	maxRetryDelay = 2 * time.Second
)

// WaitFor blocks until cond holds for the object kind namespace/name, ctx
// ends, or cond fails. It returns the last state seen (nil if the object
// was never seen).
//
// It lists, evaluates cond, then watches from the list's resourceVersion,
// so no change between the read and the watch is missed. A watch that
// ends is resumed from the last resourceVersion seen; one the server
// answers with 410 Gone (history compacted) triggers a fresh list. Once
// the first list succeeded, a daemon that cannot be reached (restarting)
// is retried with back-off until ctx ends.
func (c *Client) WaitFor(ctx context.Context, kind v1alpha1.Kind, namespace, name string, cond ConditionFunc) (v1alpha1.Object, error) {
	if namespace == "" {
		namespace = v1alpha1.DefaultNamespace
	}
	what := fmt.Sprintf("%s %s/%s", kind.Plural(), namespace, name)
	var last v1alpha1.Object
	delay := minRetryDelay
	listed := false
	for {
		list, err := c.List(ctx, kind, namespace)
		if err != nil {
			if listed && retryable(ctx, err) {
				if err := sleep(ctx, &delay); err != nil {
					return last, fmt.Errorf("waiting for %s: %w", what, err)
				}
				continue
			}
			return last, fmt.Errorf("waiting for %s: %w", what, err)
		}
		listed = true
		obj := findObject(list.Items, name)
		if obj != nil {
			last = obj
		}
		if done, err := cond(orLast(obj, last), obj == nil); err != nil || done {
			return last, err
		}
		obj, done, err := c.watchUntil(ctx, kind, namespace, name, list.ResourceVersion, cond, &delay)
		if obj != nil {
			last = obj
		}
		if err != nil {
			return last, fmt.Errorf("waiting for %s: %w", what, err)
		}
		if done {
			return last, nil
		}
		// The watch hit 410 Gone: list again. Back off a little in case
		// the server keeps compacting faster than we can follow.
		if err := sleep(ctx, &delay); err != nil {
			return last, fmt.Errorf("waiting for %s: %w", what, err)
		}
	}
}

// watchUntil watches from rv and evaluates cond on every event for name.
// It returns done when cond held, (false, nil) when the caller must list
// again (410 Gone), or an error. Streams that end are resumed from the
// last resourceVersion seen.
func (c *Client) watchUntil(ctx context.Context, kind v1alpha1.Kind, namespace, name, rv string,
	cond ConditionFunc, delay *time.Duration) (v1alpha1.Object, bool, error) {
	var last v1alpha1.Object
	for {
		wctx, cancel := context.WithCancel(ctx)
		ch, err := c.Watch(wctx, kind, namespace, rv)
		if err != nil {
			cancel()
			switch {
			case errors.Is(err, errdefs.ErrGone):
				return last, false, nil
			case retryable(ctx, err):
				if err := sleep(ctx, delay); err != nil {
					return last, false, err
				}
				continue
			}
			return last, false, err
		}
		progressed := false
		for ev := range ch {
			if ev.Type == v1alpha1.Error {
				cancel()
				if errors.Is(ev.Err, errdefs.ErrGone) {
					return last, false, nil
				}
				return last, false, ev.Err
			}
			if v := ev.ResourceVersion(); v != "" {
				rv = v
			}
			progressed = true
			if ev.Type == v1alpha1.Bookmark || ev.Object.GetObjectMeta().Name != name {
				continue
			}
			last = ev.Object
			done, err := cond(ev.Object, ev.Type == v1alpha1.Deleted)
			if err != nil || done {
				cancel()
				return last, done, err
			}
		}
		cancel()
		if ctx.Err() != nil {
			return last, false, ctx.Err()
		}
		if progressed {
			*delay = minRetryDelay
		}
		if err := sleep(ctx, delay); err != nil {
			return last, false, err
		}
	}
}

// WaitForDeletion waits until the object is gone. When uid is not empty,
// an object re-created under the same name (a different uid) also counts
// as the original being gone, as kubectl does.
func (c *Client) WaitForDeletion(ctx context.Context, kind v1alpha1.Kind, namespace, name, uid string) error {
	_, err := c.WaitFor(ctx, kind, namespace, name, func(obj v1alpha1.Object, deleted bool) (bool, error) {
		return deleted || (uid != "" && obj != nil && obj.GetObjectMeta().UID != uid), nil
	})
	return err
}

// ConditionIs returns a ConditionFunc that holds once the object's
// condition condType has the given status (compared case-insensitively,
// as kubectl does). A condition whose observedGeneration is older than the
// object's generation describes a previous spec and does not count, so a
// wait right after an apply does not return on stale status. A deleted
// object does not satisfy it; the wait continues in case it comes back.
func ConditionIs(condType string, status v1alpha1.ConditionStatus) ConditionFunc {
	return func(obj v1alpha1.Object, deleted bool) (bool, error) {
		if deleted || obj == nil {
			return false, nil
		}
		return ConditionMet(obj, condType, status), nil
	}
}

// ConditionMet reports whether obj's condition condType currently has the
// given status and was observed at the object's current generation.
func ConditionMet(obj v1alpha1.Object, condType string, status v1alpha1.ConditionStatus) bool {
	gen := obj.GetObjectMeta().Generation
	for _, c := range obj.GetConditions() {
		if !strings.EqualFold(c.Type, condType) {
			continue
		}
		if c.ObservedGeneration != 0 && gen != 0 && c.ObservedGeneration < gen {
			return false
		}
		return strings.EqualFold(string(c.Status), string(status))
	}
	return false
}

// findObject returns the object named name, or nil.
func findObject(items []v1alpha1.Object, name string) v1alpha1.Object {
	for _, o := range items {
		if o.GetObjectMeta().Name == name {
			return o
		}
	}
	return nil
}

// orLast returns obj, or last when obj is nil (deleted: report the last
// known state).
func orLast(obj, last v1alpha1.Object) v1alpha1.Object {
	if obj != nil {
		return obj
	}
	return last
}

// retryable reports whether err is a passing failure worth retrying: the
// daemon unreachable or briefly unavailable, while ctx is still alive.
func retryable(ctx context.Context, err error) bool {
	return ctx.Err() == nil && errors.Is(err, errdefs.ErrUnavailable)
}

// sleep waits for *delay (doubling it up to maxRetryDelay for next time)
// or until ctx ends.
func sleep(ctx context.Context, delay *time.Duration) error {
	t := time.NewTimer(*delay)
	defer t.Stop()
	*delay = min(*delay*2, maxRetryDelay)
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
