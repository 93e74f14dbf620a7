package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
)

// StatusError is a failure reported by the server in a v1alpha1.Status
// body. It unwraps to the errdefs sentinel matching its reason, so callers
// write errors.Is(err, errdefs.ErrNotFound) without knowing HTTP.
type StatusError struct {
	Status v1alpha1.Status
}

// Error prints the summary and then every cause on its own line as
// "  * <field>: <message>", the layout kubectl uses for invalid objects.
func (e *StatusError) Error() string {
	causes := e.causes()
	if len(causes) == 0 {
		return e.summary()
	}
	var b strings.Builder
	b.WriteString(e.summary())
	b.WriteString(":")
	for _, c := range causes {
		b.WriteString("\n  * ")
		b.WriteString(formatCause(c))
	}
	return b.String()
}

// Reason returns the machine-readable reason, derived from the HTTP code
// when the server sent none.
func (e *StatusError) Reason() string {
	if e.Status.Reason != "" {
		return e.Status.Reason
	}
	return reasonForCode(e.Status.Code)
}

// Code returns the HTTP status code.
func (e *StatusError) Code() int { return e.Status.Code }

// Causes returns the field errors the server listed (nil if none).
func (e *StatusError) Causes() []v1alpha1.StatusCause { return e.causes() }

// Unwrap returns the errdefs sentinel for the reason, or nil.
func (e *StatusError) Unwrap() error { return sentinelFor(e.Reason(), e.Status.Code) }

func (e *StatusError) causes() []v1alpha1.StatusCause {
	if e.Status.Details == nil {
		return nil
	}
	return e.Status.Details.Causes
}

// summary is the first line of the message without any cause text the
// server already folded into it, so Error() never prints a cause twice.
func (e *StatusError) summary() string {
	msg := strings.TrimSpace(e.Status.Message)
	causes := e.causes()
	if len(causes) > 0 {
		d := e.Status.Details
		if e.Reason() == v1alpha1.StatusReasonInvalid && d.Kind != "" && d.Name != "" {
			return fmt.Sprintf("%s %q is invalid", d.Kind, d.Name)
		}
		msg, _, _ = strings.Cut(msg, "\n")
		for _, c := range causes {
			if t := ": " + formatCause(c); strings.HasSuffix(msg, t) {
				msg = strings.TrimSuffix(msg, t)
				break
			}
		}
		msg = strings.TrimSuffix(strings.TrimSpace(msg), ":")
	}
	if msg == "" {
		msg = http.StatusText(e.Status.Code)
	}
	if msg == "" {
		msg = "unknown error"
	}
	return msg
}

// formatCause renders one cause as "field: message", tolerating a message
// that already starts with its field.
func formatCause(c v1alpha1.StatusCause) string {
	if c.Field == "" || strings.HasPrefix(c.Message, c.Field+": ") {
		return c.Message
	}
	return c.Field + ": " + c.Message
}

// sentinelFor maps a Status reason (or, failing that, its code) to an
// errdefs sentinel. 409 is ErrAlreadyExists only when the reason says so;
// a bare 409 is a resourceVersion conflict.
func sentinelFor(reason string, code int) error {
	switch reason {
	case v1alpha1.StatusReasonNotFound:
		return errdefs.ErrNotFound
	case v1alpha1.StatusReasonAlreadyExists:
		return errdefs.ErrAlreadyExists
	case v1alpha1.StatusReasonConflict:
		return errdefs.ErrConflict
	case v1alpha1.StatusReasonInvalid, v1alpha1.StatusReasonBadRequest:
		return errdefs.ErrInvalid
	case v1alpha1.StatusReasonGone, v1alpha1.StatusReasonExpired:
		return errdefs.ErrGone
	case v1alpha1.StatusReasonForbidden:
		return errdefs.ErrForbidden
	case v1alpha1.StatusReasonServiceUnavailable, v1alpha1.StatusReasonTimeout:
		return errdefs.ErrUnavailable
	case v1alpha1.StatusReasonNotImplemented, v1alpha1.StatusReasonMethodNotAllowed:
		return errdefs.ErrNotImplemented
	}
	switch code {
	case http.StatusNotFound:
		return errdefs.ErrNotFound
	case http.StatusConflict:
		return errdefs.ErrConflict
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return errdefs.ErrInvalid
	case http.StatusGone:
		return errdefs.ErrGone
	case http.StatusForbidden:
		return errdefs.ErrForbidden
	case http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return errdefs.ErrUnavailable
	case http.StatusNotImplemented, http.StatusMethodNotAllowed:
		return errdefs.ErrNotImplemented
	}
	return nil
}

// reasonForCode names the reason Kubernetes would give a bare HTTP code.
func reasonForCode(code int) string {
	switch code {
	case http.StatusNotFound:
		return v1alpha1.StatusReasonNotFound
	case http.StatusConflict:
		return v1alpha1.StatusReasonConflict
	case http.StatusUnprocessableEntity:
		return v1alpha1.StatusReasonInvalid
	case http.StatusBadRequest:
		return v1alpha1.StatusReasonBadRequest
	case http.StatusGone:
		return v1alpha1.StatusReasonGone
	case http.StatusForbidden:
		return v1alpha1.StatusReasonForbidden
	case http.StatusServiceUnavailable:
		return v1alpha1.StatusReasonServiceUnavailable
	case http.StatusGatewayTimeout:
		return v1alpha1.StatusReasonTimeout
	case http.StatusNotImplemented:
		return v1alpha1.StatusReasonNotImplemented
	case http.StatusMethodNotAllowed:
		return v1alpha1.StatusReasonMethodNotAllowed
	case http.StatusInternalServerError:
		return v1alpha1.StatusReasonInternalError
	}
	return ""
}

// decodeStatusError turns a failed response into a *StatusError. Bodies that
// are not a Status (a proxy's HTML page, echo's {"message": ...}) still give
// a useful error carrying the HTTP code.
func decodeStatusError(code int, body []byte) error {
	var st v1alpha1.Status
	if err := json.Unmarshal(body, &st); err != nil || (st.Message == "" && st.Reason == "" && st.Code == 0) {
		st = v1alpha1.Status{Status: "Failure", Code: code, Message: strings.TrimSpace(string(body))}
		if len(st.Message) > 512 || !json.Valid(body) && strings.HasPrefix(st.Message, "<") {
			st.Message = ""
		}
	}
	if st.Code == 0 {
		st.Code = code
	}
	return &StatusError{Status: st}
}

// NewStatusError wraps a Status received some other way (a watch ERROR
// event) in a *StatusError.
func NewStatusError(st v1alpha1.Status) *StatusError { return &StatusError{Status: st} }

// ReasonOf returns the Status reason of err ("NotFound", "Invalid", ...) when
// err is or wraps a *StatusError, else "".
func ReasonOf(err error) string {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Reason()
	}
	return ""
}

// ConnectionError means the daemon could not be reached at all: the socket
// is missing, nobody listens, or permission was denied. It matches
// errdefs.ErrUnavailable.
type ConnectionError struct {
	// Address is the socket path or server URL that was dialled.
	Address string
	// Err is the dial error.
	Err error
}

// Error names the address and hints at the usual cause.
func (e *ConnectionError) Error() string {
	return fmt.Sprintf("cannot reach vmd at %s: %v (is vmd running?)", e.Address, e.Err)
}

// Unwrap exposes the dial error (e.g. syscall.ECONNREFUSED).
func (e *ConnectionError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, errdefs.ErrUnavailable) true.
func (e *ConnectionError) Is(target error) bool { return target == errdefs.ErrUnavailable }
