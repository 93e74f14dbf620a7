package libvirt

import (
	"errors"
	"fmt"

	"libvirt.org/go/libvirt"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// Error is a libvirt error translated into vmd's vocabulary. It keeps
// libvirt's code and message (what an operator searches for) and unwraps
// to the errdefs sentinel the code maps to, so callers outside this package
// decide with errors.Is(err, errdefs.ErrNotFound) and never import libvirt.
type Error struct {
	// Kind is the errdefs sentinel, or nil when the code has no meaning
	// beyond "libvirt failed" (an internal error of libvirt or qemu).
	Kind error
	// Code and Domain are libvirt's virErrorNumber and virErrorDomain.
	Code   libvirt.ErrorNumber
	Domain libvirt.ErrorDomain
	// Message is libvirt's text, e.g. "Domain not found: no domain with
	// matching name 'vm-instance-web'".
	Message string
}

// Error returns libvirt's message: it already says what failed and why,
// and the caller's wrapping adds what vmd was doing.
func (e *Error) Error() string { return e.Message }

// Unwrap exposes the sentinel to errors.Is.
func (e *Error) Unwrap() error { return e.Kind }

// errorKinds maps libvirt error codes to vmd's sentinels. Codes not listed
// stay unclassified (Kind nil): they are failures of libvirt or qemu that
// no caller can act on other than by reporting them.
var errorKinds = map[libvirt.ErrorNumber]error{
	libvirt.ERR_NO_DOMAIN:          errdefs.ErrNotFound,
	libvirt.ERR_NO_DOMAIN_METADATA: errdefs.ErrNotFound,
	libvirt.ERR_NO_STORAGE_VOL:     errdefs.ErrNotFound,
	libvirt.ERR_DEVICE_MISSING:     errdefs.ErrNotFound,

	libvirt.ERR_DOM_EXIST: errdefs.ErrAlreadyExists,

	// "domain is not running", "domain is already running", an active
	// console session: the request contradicts the domain's state.
	libvirt.ERR_OPERATION_INVALID: errdefs.ErrConflict,
	libvirt.ERR_RESOURCE_BUSY:     errdefs.ErrConflict,

	libvirt.ERR_XML_ERROR:          errdefs.ErrInvalid,
	libvirt.ERR_XML_DETAIL:         errdefs.ErrInvalid,
	libvirt.ERR_XML_INVALID_SCHEMA: errdefs.ErrInvalid,
	libvirt.ERR_INVALID_ARG:        errdefs.ErrInvalid,
	libvirt.ERR_CONFIG_UNSUPPORTED: errdefs.ErrInvalid,
	libvirt.ERR_NO_NAME:            errdefs.ErrInvalid,

	libvirt.ERR_NO_SUPPORT:            errdefs.ErrNotImplemented,
	libvirt.ERR_ARGUMENT_UNSUPPORTED:  errdefs.ErrNotImplemented,
	libvirt.ERR_OPERATION_UNSUPPORTED: errdefs.ErrNotImplemented,

	libvirt.ERR_OPERATION_DENIED: errdefs.ErrForbidden,
	libvirt.ERR_ACCESS_DENIED:    errdefs.ErrForbidden,
	libvirt.ERR_AUTH_FAILED:      errdefs.ErrForbidden,
	libvirt.ERR_AUTH_CANCELLED:   errdefs.ErrForbidden,

	libvirt.ERR_NO_CONNECT:         errdefs.ErrUnavailable,
	libvirt.ERR_INVALID_CONN:       errdefs.ErrUnavailable,
	libvirt.ERR_RPC:                errdefs.ErrUnavailable,
	libvirt.ERR_OPERATION_TIMEOUT:  errdefs.ErrUnavailable,
	libvirt.ERR_AGENT_UNRESPONSIVE: errdefs.ErrUnavailable,
	libvirt.ERR_AUTH_UNAVAILABLE:   errdefs.ErrUnavailable,
}

// translate turns a libvirt.Error into an *Error; other errors pass
// through unchanged.
func translate(err error) error {
	var lv libvirt.Error
	if !errors.As(err, &lv) {
		return err
	}
	kind := errorKinds[lv.Code]
	if isConnectionError(lv) {
		kind = errdefs.ErrUnavailable
	}
	return &Error{Kind: kind, Code: lv.Code, Domain: lv.Domain, Message: lv.Message}
}

// wrap translates err and prefixes what vmd was doing. nil stays nil.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", op, translate(err))
}

// isConnectionError reports whether err means the connection to libvirtd
// is gone (libvirtd stopped or restarted, socket closed, keepalive
// timeout), as opposed to libvirtd refusing the request. Such errors mark
// the connection dead and make the call retry after a reconnect.
//
// The transport layer (VIR_FROM_RPC, VIR_FROM_REMOTE) reports a vanished
// peer as a system error ("Cannot recv data: Connection reset by peer",
// "Cannot write data: Broken pipe") or an internal error ("client socket
// is closed"); the public API reports a connection closed under it as
// VIR_ERR_INVALID_CONN or VIR_ERR_NO_CONNECT.
func isConnectionError(err error) bool {
	var lv libvirt.Error
	if !errors.As(err, &lv) {
		return false
	}
	switch lv.Code {
	case libvirt.ERR_NO_CONNECT, libvirt.ERR_INVALID_CONN, libvirt.ERR_RPC:
		return true
	case libvirt.ERR_SYSTEM_ERROR, libvirt.ERR_INTERNAL_ERROR:
		return lv.Domain == libvirt.FROM_RPC || lv.Domain == libvirt.FROM_REMOTE
	}
	return false
}

// hasCode reports whether err carries the libvirt error code, before or
// after translation.
func hasCode(err error, code libvirt.ErrorNumber) bool {
	var lv libvirt.Error
	if errors.As(err, &lv) {
		return lv.Code == code
	}
	var e *Error
	return errors.As(err, &e) && e.Code == code
}
