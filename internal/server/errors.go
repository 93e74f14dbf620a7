package server

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
)

// requestError is an error the server itself detects in a request (bad
// query parameter, body not matching the URL, wrong content type). It
// carries its own HTTP code because no errdefs sentinel describes it.
type requestError struct {
	code    int
	reason  string
	message string
}

func (e *requestError) Error() string { return e.message }

// badRequest returns a 400 BadRequest error with message.
func badRequest(message string) error {
	return &requestError{code: http.StatusBadRequest, reason: v1alpha1.StatusReasonBadRequest, message: message}
}

// objectRef names the object a request is about, for Status.details.
type objectRef struct {
	kind v1alpha1.Kind
	// resource names the collection when it is not a v1alpha1 kind
	// ("images"); it wins over kind.
	resource string
	name     string
}

// plural is the collection name Status.details.kind carries, as
// Kubernetes does.
func (r objectRef) plural() string {
	if r.resource != "" {
		return r.resource
	}
	return r.kind.Plural()
}

// toStatus is the one place that maps an error to an HTTP code and a
// Status body. Vocabulary errors are matched with errors.Is/As, so any
// wrapping on the way up is fine.
//
// The message is always the error's own text, including for 500s: this is
// a local administration API on a root-owned socket, and hiding the cause
// from the operator would only send them to the logs for the same text.
func toStatus(err error, ref objectRef) v1alpha1.Status {
	st := v1alpha1.Status{
		TypeMeta: v1alpha1.TypeMeta{APIVersion: "v1", Kind: "Status"},
		Status:   "Failure",
		Message:  err.Error(),
	}
	if ref.plural() != "" || ref.name != "" {
		st.Details = &v1alpha1.StatusDetails{Kind: ref.plural(), Name: ref.name}
	}
	var (
		inv  *errdefs.InvalidError
		req  *requestError
		herr *echo.HTTPError
		mbe  *http.MaxBytesError
	)
	switch {
	case errors.As(err, &inv):
		st.Code, st.Reason = http.StatusUnprocessableEntity, v1alpha1.StatusReasonInvalid
		st.Details = &v1alpha1.StatusDetails{Kind: inv.Kind, Name: inv.Name}
		for _, fe := range inv.Errors {
			st.Details.Causes = append(st.Details.Causes, v1alpha1.StatusCause{
				Type:    string(fe.Type),
				Message: fe.ErrorBody(),
				Field:   fe.Field,
			})
		}
	case errors.As(err, &req):
		st.Code, st.Reason = req.code, req.reason
	case errors.As(err, &mbe):
		st.Code, st.Reason = http.StatusRequestEntityTooLarge, v1alpha1.StatusReasonRequestEntityTooLarge
	case errors.As(err, &herr):
		// echo's own errors: unmatched route (404), wrong method (405).
		st.Code = herr.Code
		st.Reason = reasonForCode(herr.Code)
		switch msg, ok := herr.Message.(string); {
		case herr.Code == http.StatusNotFound:
			st.Message = "the server could not find the requested resource"
		case ok:
			st.Message = msg
		}
	case errors.Is(err, errdefs.ErrNotFound):
		st.Code, st.Reason = http.StatusNotFound, v1alpha1.StatusReasonNotFound
	case errors.Is(err, errdefs.ErrAlreadyExists):
		st.Code, st.Reason = http.StatusConflict, v1alpha1.StatusReasonAlreadyExists
	case errors.Is(err, errdefs.ErrConflict):
		st.Code, st.Reason = http.StatusConflict, v1alpha1.StatusReasonConflict
	case errors.Is(err, errdefs.ErrInvalid):
		// An ErrInvalid without field detail still is a 422.
		st.Code, st.Reason = http.StatusUnprocessableEntity, v1alpha1.StatusReasonInvalid
	case errors.Is(err, errdefs.ErrGone):
		st.Code, st.Reason = http.StatusGone, v1alpha1.StatusReasonExpired
	case errors.Is(err, errdefs.ErrUnavailable):
		st.Code, st.Reason = http.StatusServiceUnavailable, v1alpha1.StatusReasonServiceUnavailable
	case errors.Is(err, errdefs.ErrNotImplemented):
		st.Code, st.Reason = http.StatusNotImplemented, v1alpha1.StatusReasonNotImplemented
	case errors.Is(err, errdefs.ErrForbidden):
		st.Code, st.Reason = http.StatusForbidden, v1alpha1.StatusReasonForbidden
	default:
		st.Code, st.Reason = http.StatusInternalServerError, v1alpha1.StatusReasonInternalError
	}
	return st
}

// reasonForCode names the Status reason of a bare HTTP code.
func reasonForCode(code int) string {
	switch code {
	case http.StatusBadRequest:
		return v1alpha1.StatusReasonBadRequest
	case http.StatusNotFound:
		return v1alpha1.StatusReasonNotFound
	case http.StatusMethodNotAllowed:
		return v1alpha1.StatusReasonMethodNotAllowed
	case http.StatusUnsupportedMediaType:
		return v1alpha1.StatusReasonUnsupportedMediaType
	case http.StatusRequestEntityTooLarge:
		return v1alpha1.StatusReasonRequestEntityTooLarge
	case http.StatusServiceUnavailable:
		return v1alpha1.StatusReasonServiceUnavailable
	}
	return v1alpha1.StatusReasonInternalError
}
