// Package clienttest is a stateful, in-memory fake of vmd's HTTP API for
// tests of the client and of vmctl. It speaks the real wire protocol
// (Kubernetes-style paths, Status errors, server-side apply with the
// Vmd-Apply-Result header, dry run, finalizer-delayed deletion, watch
// streams with resourceVersion and 410 Gone, disk uploads, the golden-image
// list and NDJSON pulls) over a unix socket, so what is
// tested is the client's actual HTTP behaviour, not a mock's expectations.
//
// It is deliberately simple where the real server is strict: it does not
// default or validate objects (tests inject validation with Validate), and
// apply replaces spec, labels and annotations instead of merging fields.
package clienttest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client"
)

// Server is a fake vmd. Create it with NewServer; it stops when the test
// ends.
type Server struct {
	// Validate, when set, is called on every object about to be created
	// or updated (also in dry run); a non-nil Status rejects the write.
	Validate func(obj v1alpha1.Object) *v1alpha1.Status
	// Intercept, when set, sees every request first; returning a non-nil
	// Status answers the request with it (fault injection).
	Intercept func(r *http.Request) *v1alpha1.Status
	// Finalizers makes deletes leave the object in place with a
	// deletionTimestamp until Finalize is called, as vmd does while the
	// controller releases host resources.
	Finalizers bool
	// Version is what GET /version returns.
	Version client.ServerVersion
	// OnUpload, when set, is called (with the server locked) on the
	// stored copy of a VMDisk that just received data, to set its status
	// as the controller would. When nil, the disk becomes Ready with the
	// spec'd size, as after a successful conversion.
	OnUpload func(d *v1alpha1.VMDisk, data []byte)
	// PullSteps is how many progress lines a pull of an uncached image
	// sends before the image; default 4.
	PullSteps int

	socket string
	http   *httptest.Server
	done   chan struct{}

	mu        sync.Mutex
	rv        int64
	objects   map[key]v1alpha1.Object
	events    []event
	compacted int64         // watches from an rv below this get 410
	changed   chan struct{} // closed and replaced on every event
	expire    chan struct{} // closed to end every open watch with 410
	hangup    chan struct{} // closed to end every open watch cleanly
	requests  []string
	nextUID   int
	uploads   map[key][]byte
	images    map[string]client.Image // the catalogue; Ready ones are cached
	objEvents []v1alpha1.Event        // object events (AddEvent), not watch events
}

type key struct {
	kind      v1alpha1.Kind
	namespace string
	name      string
}

type event struct {
	rv        int64
	typ       v1alpha1.WatchEventType
	kind      v1alpha1.Kind
	namespace string
	object    json.RawMessage
}

// NewServer starts a fake vmd on a unix socket in a temporary directory
// and stops it when t ends.
func NewServer(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		socket:  filepath.Join(t.TempDir(), "vmd.sock"),
		done:    make(chan struct{}),
		objects: map[key]v1alpha1.Object{},
		uploads: map[key][]byte{},
		images:  map[string]client.Image{},
		changed: make(chan struct{}),
		expire:  make(chan struct{}),
		hangup:  make(chan struct{}),
		Version: client.ServerVersion{Version: "v0.0.0-test", GitCommit: "0000000", GoVersion: "go", DomainType: "qemu", LibvirtURI: "test:///default"},
	}
	ln, err := net.Listen("unix", s.socket)
	if err != nil {
		t.Fatalf("listening on %s: %v", s.socket, err)
	}
	s.http = httptest.NewUnstartedServer(s.routes())
	_ = s.http.Listener.Close() // replaced by the unix listener
	s.http.Listener = ln
	s.http.Start()
	t.Cleanup(func() {
		close(s.done) // ends open watch streams so Close does not block
		s.http.Close()
	})
	return s
}

// Socket returns the unix socket path the server listens on.
func (s *Server) Socket() string { return s.socket }

// Client returns a client connected to the server.
func (s *Server) Client(t testing.TB) *client.Client {
	t.Helper()
	c, err := client.New(client.Options{Socket: s.socket, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("creating client: %v", err)
	}
	return c
}

// Requests returns "METHOD path?query" for every request served so far.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// Put stores obj as if it had been created (uid, generation,
// resourceVersion, creationTimestamp are filled in when empty) and emits
// ADDED or MODIFIED. It returns the stored copy.
func (s *Server) Put(obj v1alpha1.Object) v1alpha1.Object {
	s.mu.Lock()
	defer s.mu.Unlock()
	obj = obj.DeepCopyObject()
	k := keyOf(obj)
	typ := v1alpha1.Modified
	if _, ok := s.objects[k]; !ok {
		typ = v1alpha1.Added
		s.initMeta(obj)
	}
	s.store(typ, k, obj)
	return obj.DeepCopyObject()
}

// Object returns a copy of the stored object, or nil.
func (s *Server) Object(kind v1alpha1.Kind, namespace, name string) v1alpha1.Object {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o, ok := s.objects[key{kind, namespace, name}]; ok {
		return o.DeepCopyObject()
	}
	return nil
}

// Mutate changes a stored object in place (typically its status, as the
// controller would) and emits MODIFIED. It reports whether the object
// existed.
func (s *Server) Mutate(kind v1alpha1.Kind, namespace, name string, f func(v1alpha1.Object)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key{kind, namespace, name}
	o, ok := s.objects[k]
	if !ok {
		return false
	}
	o = o.DeepCopyObject()
	f(o)
	s.store(v1alpha1.Modified, k, o)
	return true
}

// Finalize completes a pending deletion: the object disappears and DELETED
// is emitted. It reports whether there was a pending deletion.
func (s *Server) Finalize(kind v1alpha1.Kind, namespace, name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key{kind, namespace, name}
	o, ok := s.objects[k]
	if !ok || o.GetObjectMeta().DeletionTimestamp == nil {
		return false
	}
	o = o.DeepCopyObject()
	o.GetObjectMeta().Finalizers = nil
	s.remove(k, o)
	return true
}

// Compact forgets the event history: a watch from any resourceVersion
// older than the current one now gets 410 Gone.
func (s *Server) Compact() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.compacted = s.rv
	s.events = nil
}

// ExpireWatches compacts the history and ends every open watch with an
// ERROR event carrying 410 Gone, as a server does when a watcher falls
// behind its window.
func (s *Server) ExpireWatches() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.compacted = s.rv
	s.events = nil
	close(s.expire)
	s.expire = make(chan struct{})
}

// CloseWatches ends every open watch stream without an error event, as a
// server does on a timeout or restart; clients are expected to resume.
func (s *Server) CloseWatches() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.hangup)
	s.hangup = make(chan struct{})
}

// ResourceVersion returns the current store revision.
func (s *Server) ResourceVersion() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strconv.FormatInt(s.rv, 10)
}

// initMeta fills server-owned metadata of a new object. Callers hold mu.
func (s *Server) initMeta(obj v1alpha1.Object) {
	m := obj.GetObjectMeta()
	s.nextUID++
	if m.UID == "" {
		m.UID = fmt.Sprintf("00000000-0000-4000-8000-%012d", s.nextUID)
	}
	if m.Generation == 0 {
		m.Generation = 1
	}
	if m.CreationTimestamp == nil {
		m.CreationTimestamp = v1alpha1.Now()
	}
	if s.Finalizers && len(m.Finalizers) == 0 {
		m.Finalizers = []string{v1alpha1.CleanupFinalizer}
	}
	tm := obj.GetTypeMeta()
	tm.APIVersion = v1alpha1.GroupVersion
}

// store writes obj under a new resourceVersion and records the event.
// Callers hold mu.
func (s *Server) store(typ v1alpha1.WatchEventType, k key, obj v1alpha1.Object) {
	s.rv++
	obj.GetObjectMeta().ResourceVersion = strconv.FormatInt(s.rv, 10)
	s.objects[k] = obj
	s.record(typ, k, obj)
}

// remove deletes k, recording DELETED with obj's last state. Callers hold mu.
func (s *Server) remove(k key, obj v1alpha1.Object) {
	s.rv++
	obj.GetObjectMeta().ResourceVersion = strconv.FormatInt(s.rv, 10)
	delete(s.objects, k)
	s.record(v1alpha1.Deleted, k, obj)
}

func (s *Server) record(typ v1alpha1.WatchEventType, k key, obj v1alpha1.Object) {
	data, err := json.Marshal(obj)
	if err != nil {
		panic(fmt.Sprintf("clienttest: encoding %s: %v", k.name, err))
	}
	s.events = append(s.events, event{rv: s.rv, typ: typ, kind: k.kind, namespace: k.namespace, object: data})
	close(s.changed)
	s.changed = make(chan struct{})
}

func keyOf(obj v1alpha1.Object) key {
	m := obj.GetObjectMeta()
	return key{obj.GetTypeMeta().Kind, m.Namespace, m.Name}
}

// Status builds a failure Status the way vmd's server does.
func Status(code int, reason, message string, causes ...v1alpha1.StatusCause) *v1alpha1.Status {
	st := &v1alpha1.Status{
		TypeMeta: v1alpha1.TypeMeta{APIVersion: "v1", Kind: "Status"},
		Status:   "Failure", Code: code, Reason: reason, Message: message,
	}
	if len(causes) > 0 {
		st.Details = &v1alpha1.StatusDetails{Causes: causes}
	}
	return st
}

// Invalid builds the 422 Status vmd returns for an object failing
// validation, one cause per field error.
func Invalid(kind v1alpha1.Kind, name string, causes ...v1alpha1.StatusCause) *v1alpha1.Status {
	st := Status(http.StatusUnprocessableEntity, v1alpha1.StatusReasonInvalid, fmt.Sprintf("%s %q is invalid", kind, name), causes...)
	if st.Details == nil {
		st.Details = &v1alpha1.StatusDetails{}
	}
	st.Details.Kind, st.Details.Name = string(kind), name
	return st
}

// decodeBody reads a JSON or YAML object of kind from the request.
func decodeBody(r *http.Request, kind v1alpha1.Kind) (v1alpha1.Object, *v1alpha1.Status) {
	buf, err := readAll(r)
	if err != nil {
		return nil, Status(http.StatusBadRequest, v1alpha1.StatusReasonBadRequest, "reading body: "+err.Error())
	}
	data, err := yaml.YAMLToJSON(buf)
	if err != nil {
		return nil, Status(http.StatusBadRequest, v1alpha1.StatusReasonBadRequest, "decoding body: "+err.Error())
	}
	obj, err := client.DecodeObject(kind, data)
	if err != nil {
		return nil, Status(http.StatusBadRequest, v1alpha1.StatusReasonBadRequest, err.Error())
	}
	if got := obj.GetTypeMeta().Kind; got != kind {
		return nil, Status(http.StatusBadRequest, v1alpha1.StatusReasonBadRequest, fmt.Sprintf("kind %q does not match %s", got, kind.Plural()))
	}
	return obj, nil
}
