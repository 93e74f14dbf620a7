// Package errdefs is vmd's one error vocabulary. Adapters translate what
// they see (libvirt codes, ENOENT, EEXIST, bbolt errors) into these sentinels
// and wrap them with context; internal/server maps them to HTTP status codes
// in one place; callers test them with errors.Is.
package errdefs

import (
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Sentinels. Wrap them with fmt.Errorf("...: %w", ErrX) to add context.
var (
	ErrNotFound       = errors.New("not found")
	ErrAlreadyExists  = errors.New("already exists")
	ErrConflict       = errors.New("conflict")
	ErrInvalid        = errors.New("invalid")
	ErrUnavailable    = errors.New("unavailable")
	ErrGone           = errors.New("gone")
	ErrNotImplemented = errors.New("not implemented")
	ErrForbidden      = errors.New("forbidden")
)

// InvalidError carries every field error of a rejected object. It matches
// ErrInvalid under errors.Is.
type InvalidError struct {
	Kind   string
	Name   string
	Errors field.ErrorList
}

// Error prints the errors one per line after a summary, as kubectl does.
func (e *InvalidError) Error() string {
	s := fmt.Sprintf("%s %q is invalid", e.Kind, e.Name)
	if len(e.Errors) == 1 {
		return s + ": " + e.Errors[0].Error()
	}
	for _, fe := range e.Errors {
		s += "\n  * " + fe.Error()
	}
	return s
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

// NewInvalid returns an *InvalidError, or nil when errs is empty.
func NewInvalid(kind, name string, errs field.ErrorList) error {
	if len(errs) == 0 {
		return nil
	}
	return &InvalidError{Kind: kind, Name: name, Errors: errs}
}

// NotFound returns an error matching ErrNotFound that names the object.
func NotFound(kind, namespace, name string) error {
	return fmt.Errorf("%s %s/%s: %w", kind, namespace, name, ErrNotFound)
}

// AlreadyExists returns an error matching ErrAlreadyExists.
func AlreadyExists(kind, namespace, name string) error {
	return fmt.Errorf("%s %s/%s: %w", kind, namespace, name, ErrAlreadyExists)
}

// Conflict returns an error matching ErrConflict with a reason.
func Conflict(kind, namespace, name, reason string) error {
	return fmt.Errorf("%s %s/%s: %s: %w", kind, namespace, name, reason, ErrConflict)
}
