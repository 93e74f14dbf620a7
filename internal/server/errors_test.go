package server

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/labstack/echo/v4"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
)

func TestToStatus(t *testing.T) {
	invalid := errdefs.NewInvalid("VMDisk", "d", field.ErrorList{
		field.NotSupported(field.NewPath("spec", "storageClass"), "fast", []string{"local", "replicated"}),
		field.Required(field.NewPath("metadata", "name"), "name is required"),
	})
	tests := []struct {
		name       string
		err        error
		ref        objectRef
		wantCode   int
		wantReason string
		wantMsg    string
		wantCauses []v1alpha1.StatusCause
		wantDetail *v1alpha1.StatusDetails
	}{
		{
			name: "not found names the object", err: errdefs.NotFound("VMDisk", "default", "d"),
			ref:      objectRef{kind: v1alpha1.KindVMDisk, name: "d"},
			wantCode: http.StatusNotFound, wantReason: v1alpha1.StatusReasonNotFound, wantMsg: "VMDisk default/d: not found",
			wantDetail: &v1alpha1.StatusDetails{Kind: "vmdisks", Name: "d"},
		},
		{
			name: "wrapped already exists", err: fmt.Errorf("creating: %w", errdefs.AlreadyExists("VMDisk", "default", "d")),
			wantCode: http.StatusConflict, wantReason: v1alpha1.StatusReasonAlreadyExists,
		},
		{
			name: "conflict", err: errdefs.Conflict("VMInstance", "default", "web", "object is being deleted"),
			wantCode: http.StatusConflict, wantReason: v1alpha1.StatusReasonConflict,
			wantMsg: "VMInstance default/web: object is being deleted: conflict",
		},
		{
			name: "invalid lists causes with field paths and types", err: fmt.Errorf("applying: %w", invalid),
			ref:      objectRef{kind: v1alpha1.KindVMDisk, name: "ignored"},
			wantCode: http.StatusUnprocessableEntity, wantReason: v1alpha1.StatusReasonInvalid,
			wantCauses: []v1alpha1.StatusCause{
				{Field: "spec.storageClass", Type: "FieldValueNotSupported", Message: `Unsupported value: "fast": supported values: "local", "replicated"`},
				{Field: "metadata.name", Type: "FieldValueRequired", Message: "Required value: name is required"},
			},
		},
		{
			name: "bare ErrInvalid is still 422", err: fmt.Errorf("namespace a/b: %w", errdefs.ErrInvalid),
			wantCode: http.StatusUnprocessableEntity, wantReason: v1alpha1.StatusReasonInvalid,
		},
		{name: "gone", err: fmt.Errorf("watching: %w", errdefs.ErrGone), wantCode: http.StatusGone, wantReason: v1alpha1.StatusReasonExpired},
		{name: "unavailable", err: errdefs.ErrUnavailable, wantCode: http.StatusServiceUnavailable, wantReason: v1alpha1.StatusReasonServiceUnavailable},
		{name: "not implemented", err: errdefs.ErrNotImplemented, wantCode: http.StatusNotImplemented, wantReason: v1alpha1.StatusReasonNotImplemented},
		{name: "forbidden", err: errdefs.ErrForbidden, wantCode: http.StatusForbidden, wantReason: v1alpha1.StatusReasonForbidden},
		{name: "bad request", err: badRequest("kind mismatch"), wantCode: http.StatusBadRequest, wantReason: v1alpha1.StatusReasonBadRequest, wantMsg: "kind mismatch"},
		{
			name: "body too large", err: fmt.Errorf("reading: %w", &http.MaxBytesError{Limit: 10}),
			wantCode: http.StatusRequestEntityTooLarge, wantReason: v1alpha1.StatusReasonRequestEntityTooLarge,
		},
		{name: "echo 404", err: echo.ErrNotFound, wantCode: http.StatusNotFound, wantReason: v1alpha1.StatusReasonNotFound, wantMsg: "the server could not find the requested resource"},
		{name: "echo 405", err: echo.ErrMethodNotAllowed, wantCode: http.StatusMethodNotAllowed, wantReason: v1alpha1.StatusReasonMethodNotAllowed},
		{
			name: "anything else is a 500 with its message", err: errors.New("opening store: disk on fire"),
			wantCode: http.StatusInternalServerError, wantReason: v1alpha1.StatusReasonInternalError, wantMsg: "opening store: disk on fire",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := toStatus(tt.err, tt.ref)
			if st.Code != tt.wantCode || st.Reason != tt.wantReason {
				t.Errorf("code/reason = %d %s, want %d %s", st.Code, st.Reason, tt.wantCode, tt.wantReason)
			}
			if st.APIVersion != "v1" || st.Kind != "Status" || st.Status != "Failure" {
				t.Errorf("type/status = %s %s %s, want v1 Status Failure", st.APIVersion, st.Kind, st.Status)
			}
			if tt.wantMsg != "" && st.Message != tt.wantMsg {
				t.Errorf("message = %q, want %q", st.Message, tt.wantMsg)
			}
			if tt.wantCauses != nil {
				if st.Details == nil || st.Details.Kind != "VMDisk" || st.Details.Name != "d" {
					t.Fatalf("details = %+v, want kind/name of the invalid object", st.Details)
				}
				if fmt.Sprint(st.Details.Causes) != fmt.Sprint(tt.wantCauses) {
					t.Errorf("causes = %+v\nwant %+v", st.Details.Causes, tt.wantCauses)
				}
			}
			if tt.wantDetail != nil && (st.Details == nil || fmt.Sprint(*st.Details) != fmt.Sprint(*tt.wantDetail)) {
				t.Errorf("details = %+v, want %+v", st.Details, tt.wantDetail)
			}
		})
	}
}
