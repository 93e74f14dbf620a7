package events

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func disk(ns, name, uid string) *v1alpha1.VMDisk {
	return &v1alpha1.VMDisk{
		TypeMeta:   v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindVMDisk},
		ObjectMeta: v1alpha1.ObjectMeta{Namespace: ns, Name: name, UID: uid},
	}
}

func vm(ns, name string) *v1alpha1.VMInstance {
	return &v1alpha1.VMInstance{
		TypeMeta:   v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindVMInstance},
		ObjectMeta: v1alpha1.ObjectMeta{Namespace: ns, Name: name, UID: "uid-" + name},
	}
}

// summary renders events as "Type/Reason/Message xCount" for comparison.
func summary(evs []v1alpha1.Event) string {
	parts := make([]string, len(evs))
	for i, e := range evs {
		parts[i] = fmt.Sprintf("%s %s/%s:%s x%d", e.InvolvedObject.Name, e.Type, e.Reason, e.Message, e.Count)
	}
	return strings.Join(parts, "; ")
}

func TestRecordFoldsRepeats(t *testing.T) {
	type rec struct {
		obj          v1alpha1.Object
		typ, reason  string
		msg          string
		args         []any
		advanceAfter time.Duration
	}
	a, a2, b := disk("default", "a", "u1"), disk("default", "a", "u2"), disk("default", "b", "u3")
	tests := []struct {
		name string
		recs []rec
		want string
	}{
		{
			name: "identical repeats fold into one event",
			recs: []rec{
				{obj: a, typ: v1alpha1.EventTypeWarning, reason: "Retrying", msg: "dial: refused", advanceAfter: time.Second},
				{obj: a, typ: v1alpha1.EventTypeWarning, reason: "Retrying", msg: "dial: refused", advanceAfter: time.Second},
				{obj: a, typ: v1alpha1.EventTypeWarning, reason: "Retrying", msg: "dial: refused"},
			},
			want: "a Warning/Retrying:dial: refused x3",
		},
		{
			name: "a different message is a different event",
			recs: []rec{
				{obj: a, typ: v1alpha1.EventTypeWarning, reason: "Retrying", msg: "dial: refused", advanceAfter: time.Second},
				{obj: a, typ: v1alpha1.EventTypeWarning, reason: "Retrying", msg: "dial: timeout"},
			},
			want: "a Warning/Retrying:dial: refused x1; a Warning/Retrying:dial: timeout x1",
		},
		{
			name: "a different type or reason is a different event",
			recs: []rec{
				{obj: a, typ: v1alpha1.EventTypeNormal, reason: "Imported", msg: "m", advanceAfter: time.Second},
				{obj: a, typ: v1alpha1.EventTypeWarning, reason: "Imported", msg: "m", advanceAfter: time.Second},
				{obj: a, typ: v1alpha1.EventTypeNormal, reason: "Provisioned", msg: "m"},
			},
			want: "a Normal/Imported:m x1; a Warning/Imported:m x1; a Normal/Provisioned:m x1",
		},
		{
			name: "same name with another uid is another object",
			recs: []rec{
				{obj: a, typ: v1alpha1.EventTypeNormal, reason: "Imported", msg: "m", advanceAfter: time.Second},
				{obj: a2, typ: v1alpha1.EventTypeNormal, reason: "Imported", msg: "m"},
			},
			want: "a Normal/Imported:m x1; a Normal/Imported:m x1",
		},
		{
			name: "a repeat moves to the end of the list",
			recs: []rec{
				{obj: a, typ: v1alpha1.EventTypeNormal, reason: "One", msg: "m", advanceAfter: time.Second},
				{obj: b, typ: v1alpha1.EventTypeNormal, reason: "Two", msg: "m", advanceAfter: time.Second},
				{obj: a, typ: v1alpha1.EventTypeNormal, reason: "One", msg: "m"},
			},
			want: "b Normal/Two:m x1; a Normal/One:m x2",
		},
		{
			name: "message is formatted with args",
			recs: []rec{
				{obj: a, typ: v1alpha1.EventTypeNormal, reason: "VolumeGrown", msg: "grown from %d to %s", args: []any{1, "2 GiB"}},
			},
			want: "a Normal/VolumeGrown:grown from 1 to 2 GiB x1",
		},
		{
			name: "a message without args is taken literally",
			recs: []rec{
				{obj: a, typ: v1alpha1.EventTypeWarning, reason: "Retrying", msg: "100% done"},
			},
			want: "a Warning/Retrying:100% done x1",
		},
		{
			name: "an unknown type becomes Warning",
			recs: []rec{
				{obj: a, typ: "Error", reason: "Oops", msg: "m"},
			},
			want: "a Warning/Oops:m x1",
		},
		{
			name: "nil object is ignored",
			recs: []rec{
				{obj: nil, typ: v1alpha1.EventTypeNormal, reason: "X", msg: "m"},
			},
			want: "",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			r := New(Options{Now: clk.Now, Host: "h1"})
			start := clk.Now()
			for _, rc := range tc.recs {
				r.Record(rc.obj, rc.typ, rc.reason, rc.msg, rc.args...)
				clk.Advance(rc.advanceAfter)
			}
			got := r.List("", "", "")
			if s := summary(got); s != tc.want {
				t.Fatalf("events:\n got %s\nwant %s", s, tc.want)
			}
			names := map[string]bool{}
			for _, e := range got {
				if names[e.Name] {
					t.Errorf("duplicate event name %q", e.Name)
				}
				names[e.Name] = true
				if e.Kind != v1alpha1.KindEvent || e.APIVersion != v1alpha1.GroupVersion || e.Namespace != "default" {
					t.Errorf("type/namespace of %+v", e)
				}
				if e.Source != (v1alpha1.EventSource{Component: "vmd", Host: "h1"}) {
					t.Errorf("source = %+v", e.Source)
				}
				if !strings.HasPrefix(e.Name, e.InvolvedObject.Name+".") {
					t.Errorf("name %q does not start with the object's", e.Name)
				}
				if e.FirstTimestamp.Before(start) || e.LastTimestamp.Before(e.FirstTimestamp.Time) {
					t.Errorf("timestamps first %v last %v", e.FirstTimestamp, e.LastTimestamp)
				}
				if e.Count > 1 && !e.LastTimestamp.After(e.FirstTimestamp.Time) {
					t.Errorf("a repeated event must move LastTimestamp: %+v", e)
				}
			}
		})
	}
}

func TestInvolvedObject(t *testing.T) {
	r := New(Options{})
	r.Record(disk("", "d", "u"), v1alpha1.EventTypeNormal, "R", "m")
	got := r.List("", "", "")
	want := v1alpha1.ObjectReference{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindVMDisk, Namespace: "default", Name: "d", UID: "u"}
	if len(got) != 1 || got[0].InvolvedObject != want || got[0].Namespace != "default" {
		t.Fatalf("events %+v; want involved object %+v", got, want)
	}
}

func TestLongMessageIsTruncated(t *testing.T) {
	r := New(Options{})
	long := strings.Repeat("é", MaxMessageBytes) // 2 bytes a rune
	r.Record(disk("ns", "d", "u"), v1alpha1.EventTypeWarning, "R", "%s", long)
	msg := r.List("", "", "")[0].Message
	if len(msg) > MaxMessageBytes || !strings.HasSuffix(msg, "...") || !utf8.ValidString(msg) {
		t.Fatalf("message of %d bytes, valid %v, suffix %q", len(msg), utf8.ValidString(msg), msg[len(msg)-5:])
	}
}

func TestPerObjectLimit(t *testing.T) {
	clk := newClock()
	r := New(Options{Now: clk.Now, MaxPerObject: 3})
	a, b := disk("default", "a", "ua"), disk("default", "b", "ub")
	step := func(obj v1alpha1.Object, msg string) {
		r.Record(obj, v1alpha1.EventTypeNormal, "R", "%s", msg)
		clk.Advance(time.Second)
	}
	step(a, "1")
	step(a, "2")
	step(b, "b1")
	step(a, "3")
	step(a, "1") // seen again: now the most recent of a
	step(a, "4") // a has 4 distinct: the least recently seen ("2") goes
	step(b, "b2")
	if got, want := summary(r.List("", "", "")), "b Normal/R:b1 x1; a Normal/R:3 x1; a Normal/R:1 x2; a Normal/R:4 x1; b Normal/R:b2 x1"; got != want {
		t.Fatalf("events:\n got %s\nwant %s", got, want)
	}
	if r.Len() != 5 {
		t.Fatalf("Len = %d", r.Len())
	}
}

func TestTotalLimit(t *testing.T) {
	clk := newClock()
	r := New(Options{Now: clk.Now, MaxTotal: 4, MaxPerObject: 10})
	for i := range 6 {
		r.Record(disk("default", fmt.Sprintf("d%d", i), ""), v1alpha1.EventTypeNormal, "R", "m")
		clk.Advance(time.Second)
	}
	if got, want := summary(r.List("", "", "")), "d2 Normal/R:m x1; d3 Normal/R:m x1; d4 Normal/R:m x1; d5 Normal/R:m x1"; got != want {
		t.Fatalf("events:\n got %s\nwant %s", got, want)
	}
	// The evicted objects left no trace in the indexes.
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.byKey) != 4 || len(r.byObject) != 4 {
		t.Fatalf("indexes hold %d keys, %d objects", len(r.byKey), len(r.byObject))
	}
}

func TestTTLExpiry(t *testing.T) {
	clk := newClock()
	r := New(Options{Now: clk.Now}) // default TTL: one hour
	a, b := disk("default", "a", "ua"), disk("default", "b", "ub")
	r.Record(a, v1alpha1.EventTypeNormal, "Old", "m")
	r.Record(b, v1alpha1.EventTypeNormal, "Refreshed", "m")
	clk.Advance(50 * time.Minute)
	r.Record(b, v1alpha1.EventTypeNormal, "Refreshed", "m") // a repeat restarts the TTL
	r.Record(a, v1alpha1.EventTypeNormal, "New", "m")
	clk.Advance(10 * time.Minute) // "Old" is exactly one hour old now
	if got, want := summary(r.List("", "", "")), "b Normal/Refreshed:m x2; a Normal/New:m x1"; got != want {
		t.Fatalf("after 1h:\n got %s\nwant %s", got, want)
	}
	clk.Advance(50*time.Minute + time.Second)
	if got := r.List("", "", ""); len(got) != 0 || r.Len() != 0 {
		t.Fatalf("after 1h50m everything should be gone: %s", summary(got))
	}
	// An expired event does not fold a new recording into itself.
	r.Record(a, v1alpha1.EventTypeNormal, "New", "m")
	if got, want := summary(r.List("", "", "")), "a Normal/New:m x1"; got != want {
		t.Fatalf("after re-recording:\n got %s\nwant %s", got, want)
	}
}

func TestCustomTTL(t *testing.T) {
	clk := newClock()
	r := New(Options{Now: clk.Now, TTL: time.Minute})
	r.Record(disk("default", "a", ""), v1alpha1.EventTypeNormal, "R", "m")
	clk.Advance(59 * time.Second)
	if r.Len() != 1 {
		t.Fatal("expired too early")
	}
	clk.Advance(time.Second)
	if r.Len() != 0 {
		t.Fatal("not expired after the TTL")
	}
}

func TestListFilters(t *testing.T) {
	r := New(Options{})
	r.Record(disk("default", "data", "u1"), v1alpha1.EventTypeNormal, "R", "1")
	r.Record(vm("default", "data"), v1alpha1.EventTypeNormal, "R", "2")
	r.Record(disk("default", "root", "u2"), v1alpha1.EventTypeNormal, "R", "3")
	r.Record(disk("team", "data", "u3"), v1alpha1.EventTypeNormal, "R", "4")
	tests := []struct {
		name      string
		namespace string
		kind      v1alpha1.Kind
		object    string
		want      []string
	}{
		{name: "everything", want: []string{"1", "2", "3", "4"}},
		{name: "one namespace", namespace: "default", want: []string{"1", "2", "3"}},
		{name: "one kind everywhere", kind: v1alpha1.KindVMDisk, want: []string{"1", "3", "4"}},
		{name: "one name, any kind", namespace: "default", object: "data", want: []string{"1", "2"}},
		{name: "one object", namespace: "default", kind: v1alpha1.KindVMDisk, object: "data", want: []string{"1"}},
		{name: "no match", namespace: "other", want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, e := range r.List(tc.namespace, tc.kind, tc.object) {
				got = append(got, e.Message)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("List(%q, %q, %q) = %v, want %v", tc.namespace, tc.kind, tc.object, got, tc.want)
			}
		})
	}
}

func TestListReturnsCopies(t *testing.T) {
	r := New(Options{})
	r.Record(disk("default", "d", "u"), v1alpha1.EventTypeNormal, "R", "m")
	got := r.List("", "", "")
	got[0].Message = "changed"
	got[0].CreationTimestamp.Time = time.Time{}
	again := r.List("", "", "")[0]
	if again.Message != "m" || again.CreationTimestamp.IsZero() {
		t.Fatalf("List exposed the kept event: %+v", again)
	}
}

func TestNilRecorder(t *testing.T) {
	var r *Recorder
	r.Record(disk("default", "d", "u"), v1alpha1.EventTypeNormal, "R", "m")
	if got := r.List("", "", ""); got != nil || r.Len() != 0 {
		t.Fatalf("nil recorder kept %v", got)
	}
}

// TestConcurrentUse is meant for -race: recorders and listers in
// parallel, and no recording lost or double-counted.
func TestConcurrentUse(t *testing.T) {
	r := New(Options{MaxPerObject: 1000, MaxTotal: 1000})
	const writers, perWriter = 8, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				// Half the recordings repeat one event per writer.
				msg := "same"
				if i%2 == 1 {
					msg = fmt.Sprintf("m%d", i)
				}
				r.Record(disk("default", fmt.Sprintf("d%d", w), ""), v1alpha1.EventTypeNormal, "R", "%s", msg)
			}
		}()
		go func() {
			defer wg.Done()
			for range perWriter / 10 {
				_ = r.List("default", v1alpha1.KindVMDisk, fmt.Sprintf("d%d", w))
			}
		}()
	}
	wg.Wait()
	var total int32
	evs := r.List("", "", "")
	for _, e := range evs {
		total += e.Count
	}
	if total != writers*perWriter || len(evs) != writers*(perWriter/2+1) {
		t.Fatalf("%d events counting %d recordings; want %d events, %d recordings", len(evs), total, writers*(perWriter/2+1), writers*perWriter)
	}
}
