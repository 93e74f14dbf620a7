package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client/clienttest"
)

// sampleEvent is an event about kind/ns/name that first happened firstAgo
// and last lastAgo, count times.
func sampleEvent(ns string, kind v1alpha1.Kind, name, uid, typ, reason, msg string, count int32, firstAgo, lastAgo time.Duration) v1alpha1.Event {
	return v1alpha1.Event{
		ObjectMeta:     v1alpha1.ObjectMeta{Namespace: ns, Name: name + "." + reason},
		InvolvedObject: v1alpha1.ObjectReference{Kind: kind, Namespace: ns, Name: name, UID: uid},
		Type:           typ, Reason: reason, Message: msg, Count: count,
		FirstTimestamp: *at(firstAgo), LastTimestamp: *at(lastAgo),
		Source: v1alpha1.EventSource{Component: "vmd"},
	}
}

func eventsServer(t *testing.T) *clienttest.Server {
	t.Helper()
	srv := clienttest.NewServer(t)
	srv.AddEvent(sampleEvent("default", v1alpha1.KindVMDisk, "data", "u-old", v1alpha1.EventTypeNormal, "Imported", "from the disk's previous life", 1, 50*time.Minute, 50*time.Minute))
	srv.AddEvent(sampleEvent("default", v1alpha1.KindVMDisk, "data", "u-data", v1alpha1.EventTypeNormal, "ImportStarted", "importing from https://x.test/a.img", 1, 10*time.Minute, 10*time.Minute))
	srv.AddEvent(sampleEvent("default", v1alpha1.KindVMDisk, "data", "u-data", v1alpha1.EventTypeWarning, "Retrying", "downloading: connection\nrefused", 4, 8*time.Minute, 30*time.Second))
	srv.AddEvent(sampleEvent("default", v1alpha1.KindVMInstance, "web", "u-web", v1alpha1.EventTypeNormal, "Started", "domain started", 1, 2*time.Minute, 2*time.Minute))
	srv.AddEvent(sampleEvent("team", v1alpha1.KindVMDisk, "db", "u-db", v1alpha1.EventTypeNormal, "Provisioned", "created blank volume", 1, time.Minute, time.Minute))
	return srv
}

func TestEventsCommand(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    string
		wantErr string
		code    int
	}{
		{
			name: "default namespace, kubectl layout",
			args: []string{"events"},
			want: "" +
				"LAST SEEN          TYPE      REASON          OBJECT           MESSAGE\n" +
				"50m                Normal    Imported        VMDisk/data      from the disk's previous life\n" +
				"10m                Normal    ImportStarted   VMDisk/data      importing from https://x.test/a.img\n" +
				"30s (x4 over 8m)   Warning   Retrying        VMDisk/data      downloading: connection refused\n" +
				"2m                 Normal    Started         VMInstance/web   domain started\n",
		},
		{
			name: "every namespace",
			args: []string{"events", "-A", "--types", "normal"},
			want: "" +
				"NAMESPACE   LAST SEEN   TYPE     REASON          OBJECT           MESSAGE\n" +
				"default     50m         Normal   Imported        VMDisk/data      from the disk's previous life\n" +
				"default     10m         Normal   ImportStarted   VMDisk/data      importing from https://x.test/a.img\n" +
				"default     2m          Normal   Started         VMInstance/web   domain started\n" +
				"team        60s         Normal   Provisioned     VMDisk/db        created blank volume\n",
		},
		{
			name: "for one object, warnings only",
			args: []string{"events", "--for", "vmd/data", "--types", "Warning"},
			want: "" +
				"LAST SEEN          TYPE      REASON     OBJECT        MESSAGE\n" +
				"30s (x4 over 8m)   Warning   Retrying   VMDisk/data   downloading: connection refused\n",
		},
		{name: "other namespace", args: []string{"events", "-n", "team", "--for", "VMDisk/db"}, want: "60s         Normal   Provisioned   VMDisk/db   created blank volume"},
		{name: "nothing found", args: []string{"events", "-n", "empty"}, wantErr: "No events found in empty namespace.\n"},
		{name: "nothing found anywhere", args: []string{"events", "-A", "--types", "Warning", "-n", "x"}, want: "Retrying"},
		{name: "bad --for", args: []string{"events", "--for", "pod/x"}, wantErr: "want TYPE/NAME", code: 1},
		{name: "--for without a name", args: []string{"events", "--for", "vmdisk"}, wantErr: "want TYPE/NAME", code: 1},
		{name: "--for with -A", args: []string{"events", "-A", "--for", "vmdisk/data"}, wantErr: "cannot be combined with -A", code: 1},
		{name: "bad --types", args: []string{"events", "--types", "Error"}, wantErr: "want Normal or Warning", code: 1},
		{name: "no arguments", args: []string{"events", "data"}, wantErr: "unknown command", code: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := vmctl(t, eventsServer(t), "", tc.args...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %q", r.code, tc.code, r.err)
			}
			if tc.wantErr != "" && !strings.Contains(r.err, tc.wantErr) {
				t.Fatalf("stderr %q, want %q", r.err, tc.wantErr)
			}
			exact := tc.want == "" || strings.HasSuffix(tc.want, "\n")
			if exact && r.out != tc.want || !strings.Contains(r.out, tc.want) {
				t.Fatalf("output:\n%s\nwant:\n%s", r.out, tc.want)
			}
		})
	}
}

func TestDescribeShowsEvents(t *testing.T) {
	srv := eventsServer(t)
	d := sampleDisk("default", "data", time.Hour)
	d.ObjectMeta.UID = "u-data"
	srv.Put(d)
	srv.Put(sampleDisk("default", "quiet", time.Hour))
	out := execOK(t, srv, "describe", "vmd", "data")
	want := "" +
		"Events:\n" +
		"  TYPE      REASON          AGE                FROM   MESSAGE\n" +
		"  Normal    ImportStarted   10m                vmd    importing from https://x.test/a.img\n" +
		"  Warning   Retrying        30s (x4 over 8m)   vmd    downloading: connection refused\n"
	if !strings.HasSuffix(out, want) {
		t.Fatalf("describe does not end with the events table:\n%s\nwant suffix:\n%s", out, want)
	}
	if strings.Contains(out, "previous life") {
		t.Fatalf("events of another uid shown:\n%s", out)
	}
	if !strings.Contains(out, "Conditions:") || strings.Index(out, "Conditions:") > strings.Index(out, "Events:") {
		t.Fatalf("events must follow the existing description:\n%s", out)
	}
	if out := execOK(t, srv, "describe", "vmd", "quiet"); !strings.HasSuffix(out, "\nEvents:  <none>\n") {
		t.Fatalf("describe without events:\n%s", out)
	}
	// Describing every disk asks for each one's events.
	if out := execOK(t, srv, "describe", "vmd"); strings.Count(out, "Events:") != 2 {
		t.Fatalf("describe of all disks:\n%s", out)
	}
}

func TestDescribeWithoutEventsAPI(t *testing.T) {
	tests := []struct {
		name string
		code int
		want string
	}{
		{name: "daemon without events", code: http.StatusNotImplemented, want: ""},
		{name: "older daemon", code: http.StatusNotFound, want: ""},
		{name: "failure", code: http.StatusInternalServerError, want: "Events:  <unavailable: boom>\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := clienttest.NewServer(t)
			srv.Put(sampleDisk("default", "data", time.Hour))
			srv.Intercept = func(r *http.Request) *v1alpha1.Status {
				if strings.HasSuffix(r.URL.Path, "/events") {
					return clienttest.Status(tc.code, "", "boom")
				}
				return nil
			}
			out := execOK(t, srv, "describe", "vmd", "data")
			if !strings.Contains(out, "Conditions:") {
				t.Fatalf("description lost:\n%s", out)
			}
			tail := out[strings.LastIndex(out, "  Ready"):]
			tail = tail[strings.Index(tail, "\n")+1:]
			if tail != tc.want {
				t.Fatalf("after the conditions: %q, want %q", tail, tc.want)
			}
		})
	}
}
