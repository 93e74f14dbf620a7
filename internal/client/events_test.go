package client_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client/clienttest"
	"github.com/vmdhq/vmd/internal/errdefs"
)

func testEvent(ns string, kind v1alpha1.Kind, name, reason string) v1alpha1.Event {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	return v1alpha1.Event{
		ObjectMeta:     v1alpha1.ObjectMeta{Namespace: ns, Name: name + ".1"},
		InvolvedObject: v1alpha1.ObjectReference{Kind: kind, Namespace: ns, Name: name, UID: "uid-" + name},
		Type:           v1alpha1.EventTypeNormal, Reason: reason, Message: reason + " happened", Count: 3,
		FirstTimestamp: *v1alpha1.NewTime(now.Add(-time.Hour)), LastTimestamp: *v1alpha1.NewTime(now),
		Source: v1alpha1.EventSource{Component: "vmd"},
	}
}

func TestListEvents(t *testing.T) {
	srv := clienttest.NewServer(t)
	srv.AddEvent(testEvent("default", v1alpha1.KindVMDisk, "data", "Imported"))
	srv.AddEvent(testEvent("default", v1alpha1.KindVMInstance, "data", "Started"))
	srv.AddEvent(testEvent("default", v1alpha1.KindVMDisk, "root", "Retrying"))
	srv.AddEvent(testEvent("team", v1alpha1.KindVMDisk, "data", "Provisioned"))
	c := srv.Client(t)
	tests := []struct {
		name      string
		ns        string
		kind      v1alpha1.Kind
		object    string
		want      string
		wantQuery string
		wantErr   string
	}{
		{name: "every namespace", want: "Imported,Started,Retrying,Provisioned", wantQuery: "GET /apis/apps.cozystack.io/v1alpha1/events"},
		{name: "one namespace", ns: "default", want: "Imported,Started,Retrying", wantQuery: "GET /apis/apps.cozystack.io/v1alpha1/namespaces/default/events"},
		{name: "one object", ns: "default", kind: v1alpha1.KindVMDisk, object: "data", want: "Imported",
			wantQuery: "fieldSelector=involvedObject.kind%3DVMDisk%2CinvolvedObject.name%3Ddata"},
		{name: "by name only", ns: "default", object: "data", want: "Imported,Started", wantQuery: "fieldSelector=involvedObject.name%3Ddata"},
		{name: "none", ns: "empty", want: ""},
		{name: "slash in namespace", ns: "a/b", wantErr: "cannot contain '/'"},
		{name: "separator in name", ns: "default", object: "a,b", wantErr: "invalid name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			evs, err := c.ListEvents(t.Context(), tc.ns, tc.kind, tc.object)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ListEvents = %v, want error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var reasons []string
			for _, e := range evs {
				reasons = append(reasons, e.Reason)
			}
			if got := strings.Join(reasons, ","); got != tc.want {
				t.Fatalf("reasons %q, want %q", got, tc.want)
			}
			reqs := srv.Requests()
			if last := reqs[len(reqs)-1]; !strings.Contains(last, tc.wantQuery) {
				t.Fatalf("request %q lacks %q", last, tc.wantQuery)
			}
			if tc.want == "Imported" {
				want := testEvent("default", v1alpha1.KindVMDisk, "data", "Imported")
				e := evs[0]
				if e.Count != want.Count || !e.FirstTimestamp.Equal(want.FirstTimestamp.Time) || e.InvolvedObject != want.InvolvedObject || e.Message != want.Message {
					t.Fatalf("event %+v, want %+v", e, want)
				}
			}
		})
	}
}

func TestListEventsErrors(t *testing.T) {
	srv := clienttest.NewServer(t)
	srv.Intercept = func(r *http.Request) *v1alpha1.Status {
		return clienttest.Status(http.StatusNotImplemented, v1alpha1.StatusReasonNotImplemented, "listing events: not implemented")
	}
	_, err := srv.Client(t).ListEvents(t.Context(), "default", "", "")
	if !errors.Is(err, errdefs.ErrNotImplemented) {
		t.Fatalf("ListEvents = %v, want ErrNotImplemented", err)
	}
}
