package libvirt

import (
	"errors"
	"fmt"
	"testing"

	"libvirt.org/go/libvirt"

	"github.com/vmdhq/vmd/internal/errdefs"
)

func TestTranslate(t *testing.T) {
	sentinels := []error{
		errdefs.ErrNotFound, errdefs.ErrAlreadyExists, errdefs.ErrConflict, errdefs.ErrInvalid,
		errdefs.ErrUnavailable, errdefs.ErrNotImplemented, errdefs.ErrForbidden,
	}
	tests := []struct {
		name string
		err  libvirt.Error
		want error // nil: matches no sentinel
	}{
		{"no domain", libvirt.Error{Code: libvirt.ERR_NO_DOMAIN, Domain: libvirt.FROM_QEMU,
			Message: "Domain not found: no domain with matching name 'vm-instance-web'"}, errdefs.ErrNotFound},
		{"no metadata", libvirt.Error{Code: libvirt.ERR_NO_DOMAIN_METADATA, Domain: libvirt.FROM_DOMAIN}, errdefs.ErrNotFound},
		{"domain exists", libvirt.Error{Code: libvirt.ERR_DOM_EXIST, Domain: libvirt.FROM_DOMAIN}, errdefs.ErrAlreadyExists},
		{"not running", libvirt.Error{Code: libvirt.ERR_OPERATION_INVALID, Domain: libvirt.FROM_QEMU,
			Message: "Requested operation is not valid: domain is not running"}, errdefs.ErrConflict},
		{"schema", libvirt.Error{Code: libvirt.ERR_XML_INVALID_SCHEMA, Domain: libvirt.FROM_DOMAIN}, errdefs.ErrInvalid},
		{"xml detail", libvirt.Error{Code: libvirt.ERR_XML_DETAIL, Domain: libvirt.FROM_DOMAIN}, errdefs.ErrInvalid},
		{"invalid arg", libvirt.Error{Code: libvirt.ERR_INVALID_ARG, Domain: libvirt.FROM_QEMU,
			Message: "invalid argument: disk 'vdz' was not found in the domain"}, errdefs.ErrInvalid},
		{"unsupported", libvirt.Error{Code: libvirt.ERR_NO_SUPPORT, Domain: libvirt.FROM_QEMU}, errdefs.ErrNotImplemented},
		{"denied", libvirt.Error{Code: libvirt.ERR_ACCESS_DENIED, Domain: libvirt.FROM_ACCESS}, errdefs.ErrForbidden},
		{"no connect", libvirt.Error{Code: libvirt.ERR_NO_CONNECT, Domain: libvirt.FROM_REMOTE}, errdefs.ErrUnavailable},
		{"socket closed", libvirt.Error{Code: libvirt.ERR_INTERNAL_ERROR, Domain: libvirt.FROM_RPC,
			Message: "internal error: client socket is closed"}, errdefs.ErrUnavailable},
		{"connection reset", libvirt.Error{Code: libvirt.ERR_SYSTEM_ERROR, Domain: libvirt.FROM_RPC,
			Message: "Cannot recv data: Connection reset by peer"}, errdefs.ErrUnavailable},
		{"qemu internal error", libvirt.Error{Code: libvirt.ERR_INTERNAL_ERROR, Domain: libvirt.FROM_QEMU,
			Message: "internal error: qemu unexpectedly closed the monitor"}, nil},
		{"qemu system error", libvirt.Error{Code: libvirt.ERR_SYSTEM_ERROR, Domain: libvirt.FROM_QEMU,
			Message: "Cannot access storage file '/x.qcow2': No such file or directory"}, nil},
		{"operation failed", libvirt.Error{Code: libvirt.ERR_OPERATION_FAILED, Domain: libvirt.FROM_QEMU}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := wrap("starting domain vm-instance-web", tt.err)
			for _, s := range sentinels {
				want := tt.want != nil && errors.Is(s, tt.want)
				if got := errors.Is(err, s); got != want {
					t.Errorf("errors.Is(%v, %v) = %v", err, s, got)
				}
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != tt.err.Code || e.Message != tt.err.Message {
				t.Fatalf("errors.As(*Error) lost libvirt's code or message: %#v", e)
			}
			if want := "starting domain vm-instance-web: " + tt.err.Message; err.Error() != want {
				t.Errorf("Error() = %q, want %q", err, want)
			}
			if got, want := isConnectionError(tt.err), errors.Is(err, errdefs.ErrUnavailable); got != want {
				t.Errorf("isConnectionError = %v, want %v", got, want)
			}
			if !hasCode(err, tt.err.Code) || !hasCode(tt.err, tt.err.Code) {
				t.Errorf("hasCode(%v) = false", tt.err.Code)
			}
		})
	}
}

func TestWrapPassesOtherErrors(t *testing.T) {
	base := fmt.Errorf("no vmd metadata: %w", errdefs.ErrNotFound)
	err := wrap("reading vmd metadata of domain x", base)
	if !errors.Is(err, errdefs.ErrNotFound) || err.Error() != "reading vmd metadata of domain x: no vmd metadata: not found" {
		t.Errorf("wrap = %v", err)
	}
	if wrap("doing", nil) != nil {
		t.Error("wrap(nil) != nil")
	}
	if hasCode(base, libvirt.ERR_NO_DOMAIN) || isConnectionError(base) {
		t.Error("a non-libvirt error claims a libvirt code")
	}
}
