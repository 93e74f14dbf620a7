package server

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/registry"
)

// Power actions of POST .../vminstances/NAME/{start,stop,restart}.
const (
	PowerStart   = "start"
	PowerStop    = "stop"
	PowerRestart = "restart"
)

// powerConflictRetries bounds the read-modify-write retries of a power
// request racing other writers of the same object.
const powerConflictRetries = 5

// power serves POST .../vminstances/:name/:action: it records the request
// in the object's annotations (see v1alpha1.AnnotationRequestedState),
// where the controller picks it up; the answer is the updated object, and
// the power change follows asynchronously (`vmctl wait` observes it).
// start and stop apply to runStrategy Manual only, as KubeVirt's virtctl
// refuses to fight a strategy that decides by itself; restart applies to
// every running VM.
func (s *Server) power(c echo.Context) error {
	kind, err := resource(c)
	if err != nil {
		return err
	}
	action := c.Param("action")
	if kind != v1alpha1.KindVMInstance || (action != PowerStart && action != PowerStop && action != PowerRestart) {
		return &requestError{
			code:    http.StatusNotFound,
			reason:  v1alpha1.StatusReasonNotFound,
			message: fmt.Sprintf("%s have no %q subresource: vminstances have start, stop and restart", kind.Plural(), action),
		}
	}
	ctx := c.Request().Context()
	ns, name := c.Param("ns"), c.Param("name")
	for attempt := 0; ; attempt++ {
		obj, err := s.svc.Get(ctx, kind, ns, name)
		if err != nil {
			return err
		}
		vm := obj.(*v1alpha1.VMInstance)
		if err := requestPower(vm, action, time.Now()); err != nil {
			return err
		}
		out, err := s.svc.Update(ctx, vm, registry.WriteOptions{})
		if errors.Is(err, errdefs.ErrConflict) && attempt < powerConflictRetries {
			continue
		}
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, out)
	}
}

// requestPower writes the annotations for action on vm.
func requestPower(vm *v1alpha1.VMInstance, action string, now time.Time) error {
	if vm.ObjectMeta.DeletionTimestamp != nil {
		return fmt.Errorf("vminstance %q is being deleted: %w", vm.ObjectMeta.Name, errdefs.ErrConflict)
	}
	strategy := vm.Spec.RunStrategy
	if action != PowerRestart && strategy != v1alpha1.RunStrategyManual {
		return fmt.Errorf("%s applies to runStrategy Manual; vminstance %q has runStrategy %s: set spec.runStrategy instead (Halted to stop, Always to run): %w",
			action, vm.ObjectMeta.Name, strategy, errdefs.ErrConflict)
	}
	if action == PowerRestart && strategy == v1alpha1.RunStrategyHalted {
		return fmt.Errorf("vminstance %q has runStrategy Halted; nothing to restart: %w", vm.ObjectMeta.Name, errdefs.ErrConflict)
	}
	a := vm.ObjectMeta.Annotations
	if a == nil {
		a = map[string]string{}
	}
	stamp := now.UTC().Format(time.RFC3339Nano)
	switch action {
	case PowerStart:
		a[v1alpha1.AnnotationRequestedState], a[v1alpha1.AnnotationRequestedAt] = v1alpha1.RequestedRunning, stamp
	case PowerStop:
		a[v1alpha1.AnnotationRequestedState], a[v1alpha1.AnnotationRequestedAt] = v1alpha1.RequestedStopped, stamp
	case PowerRestart:
		a[v1alpha1.AnnotationRestartRequestedAt] = stamp
	}
	vm.ObjectMeta.Annotations = a
	return nil
}
