package server_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/events"
	"github.com/vmdhq/vmd/internal/server"
)

func eventDisk(ns, name string) *v1alpha1.VMDisk {
	return &v1alpha1.VMDisk{
		TypeMeta:   v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindVMDisk},
		ObjectMeta: v1alpha1.ObjectMeta{Namespace: ns, Name: name, UID: "uid-" + name},
	}
}

func TestListEvents(t *testing.T) {
	rec := events.New(events.Options{})
	rec.Record(eventDisk("default", "data"), v1alpha1.EventTypeNormal, "Imported", "m1")
	rec.Record(eventDisk("default", "data"), v1alpha1.EventTypeNormal, "Imported", "m1")
	rec.Record(eventDisk("default", "root"), v1alpha1.EventTypeWarning, "Retrying", "m2")
	rec.Record(&v1alpha1.VMInstance{TypeMeta: v1alpha1.TypeMeta{Kind: v1alpha1.KindVMInstance},
		ObjectMeta: v1alpha1.ObjectMeta{Namespace: "default", Name: "data"}}, v1alpha1.EventTypeNormal, "Started", "m3")
	rec.Record(eventDisk("team", "data"), v1alpha1.EventTypeNormal, "Imported", "m4")
	h := start(t, harnessOpts{server: server.Options{Events: rec}})

	sel := func(s string) string { return "?fieldSelector=" + url.QueryEscape(s) }
	tests := []struct {
		name     string
		path     string
		wantCode int
		want     string // messages in order
		wantErr  string
	}{
		{name: "every namespace", path: base + "/events", wantCode: http.StatusOK, want: "m1,m2,m3,m4"},
		{name: "one namespace", path: base + "/namespaces/default/events", wantCode: http.StatusOK, want: "m1,m2,m3"},
		{name: "empty namespace", path: base + "/namespaces/nobody/events", wantCode: http.StatusOK, want: ""},
		{name: "by kind and name", path: base + "/namespaces/default/events" + sel("involvedObject.kind=VMDisk,involvedObject.name=data"), wantCode: http.StatusOK, want: "m1"},
		{name: "by name, any kind", path: base + "/namespaces/default/events" + sel("involvedObject.name=data"), wantCode: http.StatusOK, want: "m1,m3"},
		{name: "by kind everywhere, == and spaces", path: base + "/events" + sel(" involvedObject.kind == VMDisk "), wantCode: http.StatusOK, want: "m1,m2,m4"},
		{name: "kind by short name", path: base + "/events" + sel("involvedObject.kind=vmi"), wantCode: http.StatusOK, want: "m3"},
		{name: "empty selector", path: base + "/events" + sel(""), wantCode: http.StatusOK, want: "m1,m2,m3,m4"},
		{name: "unsupported field", path: base + "/events" + sel("involvedObject.uid=x"), wantCode: http.StatusBadRequest, wantErr: "not supported"},
		{name: "inequality", path: base + "/events" + sel("involvedObject.name!=x"), wantCode: http.StatusBadRequest, wantErr: "only equality"},
		{name: "no value", path: base + "/events" + sel("involvedObject.name="), wantCode: http.StatusBadRequest, wantErr: "empty"},
		{name: "not key=value", path: base + "/events" + sel("involvedObject.name"), wantCode: http.StatusBadRequest, wantErr: "key=value"},
		{name: "key twice", path: base + "/events" + sel("involvedObject.name=a,involvedObject.name=b"), wantCode: http.StatusBadRequest, wantErr: "twice"},
		{name: "unknown kind", path: base + "/events" + sel("involvedObject.kind=Pod"), wantCode: http.StatusBadRequest, wantErr: "unknown kind"},
		{name: "watch", path: base + "/events?watch=true", wantCode: http.StatusNotImplemented, wantErr: "watching events"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(t, http.MethodGet, tc.path, "", "")
			if r.code != tc.wantCode {
				t.Fatalf("code = %d, want %d: %s", r.code, tc.wantCode, r.body)
			}
			if tc.wantCode != http.StatusOK {
				var st v1alpha1.Status
				mustJSON(t, r.body, &st)
				if st.Kind != "Status" || !strings.Contains(st.Message, tc.wantErr) || st.Code != tc.wantCode {
					t.Fatalf("status %+v, want message containing %q", st, tc.wantErr)
				}
				return
			}
			if !strings.Contains(string(r.body), `"items":[`) {
				t.Fatalf("items must be a list, even empty: %s", r.body)
			}
			var l v1alpha1.EventList
			mustJSON(t, r.body, &l)
			if l.APIVersion != v1alpha1.GroupVersion || l.Kind != v1alpha1.KindEventList {
				t.Fatalf("list type %s %s", l.APIVersion, l.Kind)
			}
			var msgs []string
			for _, e := range l.Items {
				msgs = append(msgs, e.Message)
			}
			if got := strings.Join(msgs, ","); got != tc.want {
				t.Fatalf("events %q, want %q", got, tc.want)
			}
			if tc.want == "m1" {
				e := l.Items[0]
				if e.Count != 2 || e.Type != v1alpha1.EventTypeNormal || e.Reason != "Imported" || e.InvolvedObject.UID != "uid-data" ||
					e.Source.Component != "vmd" || e.FirstTimestamp.IsZero() || e.LastTimestamp.IsZero() {
					t.Fatalf("event did not survive the wire: %+v", e)
				}
			}
		})
	}
}

func TestListEventsWithoutRecorder(t *testing.T) {
	h := start(t, harnessOpts{})
	r := h.do(t, http.MethodGet, base+"/namespaces/default/events", "", "")
	if r.code != http.StatusNotImplemented {
		t.Fatalf("code = %d, want 501: %s", r.code, r.body)
	}
}

// TestEventsRouteLeavesObjectsAlone: the static events segment must not
// shadow object routes, nor become a gettable object itself.
func TestEventsRouteLeavesObjectsAlone(t *testing.T) {
	h := start(t, harnessOpts{server: server.Options{Events: events.New(events.Options{})}})
	if r := h.do(t, http.MethodGet, base+"/namespaces/default/vmdisks", "", ""); r.code != http.StatusOK {
		t.Fatalf("list vmdisks: %d %s", r.code, r.body)
	}
	if r := h.do(t, http.MethodGet, base+"/namespaces/default/events/x", "", ""); r.code != http.StatusNotFound {
		t.Fatalf("get one event: %d %s", r.code, r.body)
	}
	if r := h.do(t, http.MethodPost, base+"/namespaces/default/events", "application/json", "{}"); r.code == http.StatusOK || r.code == http.StatusCreated {
		t.Fatalf("creating an event must fail: %d %s", r.code, r.body)
	}
}
