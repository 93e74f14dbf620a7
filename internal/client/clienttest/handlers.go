package clienttest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client"
)

const apiPrefix = "/apis/" + v1alpha1.GroupVersion

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.Version)
	})
	mux.HandleFunc("GET "+apiPrefix+"/{plural}", s.list)
	mux.HandleFunc("GET "+apiPrefix+"/namespaces/{ns}/{plural}", s.list)
	mux.HandleFunc("POST "+apiPrefix+"/namespaces/{ns}/{plural}", s.create)
	mux.HandleFunc("GET "+apiPrefix+"/namespaces/{ns}/{plural}/{name}", s.get)
	mux.HandleFunc("PUT "+apiPrefix+"/namespaces/{ns}/{plural}/{name}", s.update)
	mux.HandleFunc("PATCH "+apiPrefix+"/namespaces/{ns}/{plural}/{name}", s.apply)
	mux.HandleFunc("DELETE "+apiPrefix+"/namespaces/{ns}/{plural}/{name}", s.delete)
	mux.HandleFunc("PUT "+apiPrefix+"/namespaces/{ns}/{plural}/{name}/upload", s.upload)
	mux.HandleFunc("GET "+apiPrefix+"/events", s.listEvents)
	mux.HandleFunc("GET "+apiPrefix+"/namespaces/{ns}/events", s.listEvents)
	mux.HandleFunc("GET "+imagesPrefix, s.listImages)
	mux.HandleFunc("POST "+imagesPrefix+"/{name}/pull", s.pullImage)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests = append(s.requests, r.Method+" "+r.URL.RequestURI())
		s.mu.Unlock()
		if s.Intercept != nil {
			if st := s.Intercept(r); st != nil {
				writeStatus(w, st)
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

// kindOf resolves the {plural} path segment, answering 404 when unknown.
func kindOf(w http.ResponseWriter, r *http.Request) (v1alpha1.Kind, bool) {
	p := r.PathValue("plural")
	for _, k := range v1alpha1.Kinds {
		if k.Plural() == p {
			return k, true
		}
	}
	writeStatus(w, Status(http.StatusNotFound, v1alpha1.StatusReasonNotFound, fmt.Sprintf("the server could not find the requested resource %q", p)))
	return "", false
}

func notFound(kind v1alpha1.Kind, name string) *v1alpha1.Status {
	st := Status(http.StatusNotFound, v1alpha1.StatusReasonNotFound, fmt.Sprintf("%s %q not found", kind.Plural(), name))
	st.Details = &v1alpha1.StatusDetails{Kind: kind.Plural(), Name: name}
	return st
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	kind, ok := kindOf(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	obj := s.Object(kind, r.PathValue("ns"), name)
	if obj == nil {
		writeStatus(w, notFound(kind, name))
		return
	}
	writeJSON(w, http.StatusOK, obj)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	kind, ok := kindOf(w, r)
	if !ok {
		return
	}
	ns := r.PathValue("ns")
	if r.URL.Query().Get("watch") == "true" {
		s.watch(w, r, kind, ns)
		return
	}
	s.mu.Lock()
	var items []v1alpha1.Object
	for k, o := range s.objects {
		if k.kind == kind && (ns == "" || k.namespace == ns) {
			items = append(items, o)
		}
	}
	slices.SortFunc(items, func(a, b v1alpha1.Object) int {
		am, bm := a.GetObjectMeta(), b.GetObjectMeta()
		return strings.Compare(am.Namespace+"/"+am.Name, bm.Namespace+"/"+bm.Name)
	})
	l := v1alpha1.List{
		TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: kind + "List"},
		Metadata: v1alpha1.ListMeta{ResourceVersion: strconv.FormatInt(s.rv, 10)},
		Items:    []json.RawMessage{},
	}
	for _, o := range items {
		data, err := json.Marshal(o)
		if err != nil {
			s.mu.Unlock()
			writeStatus(w, Status(http.StatusInternalServerError, v1alpha1.StatusReasonInternalError, err.Error()))
			return
		}
		l.Items = append(l.Items, data)
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, l)
}

// watch streams events after ?resourceVersion= as newline-delimited JSON.
func (s *Server) watch(w http.ResponseWriter, r *http.Request, kind v1alpha1.Kind, ns string) {
	s.mu.Lock()
	since := s.rv
	if v := r.URL.Query().Get("resourceVersion"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			s.mu.Unlock()
			writeStatus(w, Status(http.StatusBadRequest, v1alpha1.StatusReasonBadRequest, "invalid resourceVersion "+strconv.Quote(v)))
			return
		}
		since = n
	}
	if since < s.compacted {
		s.mu.Unlock()
		writeStatus(w, gone(since))
		return
	}
	expire, hangup := s.expire, s.hangup
	s.mu.Unlock()

	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	for {
		s.mu.Lock()
		var pending []event
		for _, e := range s.events {
			if e.rv > since && e.kind == kind && (ns == "" || e.namespace == ns) {
				pending = append(pending, e)
			}
		}
		changed := s.changed
		s.mu.Unlock()
		for _, e := range pending {
			if enc.Encode(v1alpha1.WatchEvent{Type: e.typ, Object: e.object}) != nil {
				return
			}
			since = e.rv
		}
		if flusher != nil {
			flusher.Flush()
		}
		select {
		case <-changed:
		case <-expire:
			data, _ := json.Marshal(gone(since))
			_ = enc.Encode(v1alpha1.WatchEvent{Type: v1alpha1.Error, Object: data})
			return
		case <-hangup:
			return
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		}
	}
}

func gone(rv int64) *v1alpha1.Status {
	return Status(http.StatusGone, v1alpha1.StatusReasonExpired, fmt.Sprintf("too old resource version: %d", rv))
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	kind, ok := kindOf(w, r)
	if !ok {
		return
	}
	obj, st := decodeBody(r, kind)
	if st != nil {
		writeStatus(w, st)
		return
	}
	m := obj.GetObjectMeta()
	m.Namespace = r.PathValue("ns")
	if st := s.validate(obj); st != nil {
		writeStatus(w, st)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := keyOf(obj)
	if _, exists := s.objects[k]; exists {
		writeStatus(w, Status(http.StatusConflict, v1alpha1.StatusReasonAlreadyExists, fmt.Sprintf("%s %q already exists", kind.Plural(), m.Name)))
		return
	}
	m.ResourceVersion = ""
	s.initMeta(obj)
	if !dryRun(r) {
		s.store(v1alpha1.Added, k, obj)
	}
	writeJSON(w, http.StatusCreated, obj)
}

func (s *Server) update(w http.ResponseWriter, r *http.Request) {
	kind, ok := kindOf(w, r)
	if !ok {
		return
	}
	obj, st := decodeBody(r, kind)
	if st != nil {
		writeStatus(w, st)
		return
	}
	m := obj.GetObjectMeta()
	m.Namespace, m.Name = r.PathValue("ns"), r.PathValue("name")
	if st := s.validate(obj); st != nil {
		writeStatus(w, st)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := keyOf(obj)
	cur, exists := s.objects[k]
	if !exists {
		writeStatus(w, notFound(kind, m.Name))
		return
	}
	cm := cur.GetObjectMeta()
	if m.ResourceVersion != cm.ResourceVersion {
		writeStatus(w, Status(http.StatusConflict, v1alpha1.StatusReasonConflict,
			fmt.Sprintf("Operation cannot be fulfilled on %s %q: the object has been modified; please apply your changes to the latest version and try again", kind.Plural(), m.Name)))
		return
	}
	next := s.merge(cur, obj)
	if !dryRun(r) {
		s.store(v1alpha1.Modified, k, next)
	}
	writeJSON(w, http.StatusOK, next)
}

// merge returns cur with obj's spec, labels, annotations and finalizers,
// bumping generation when the spec changed. Status stays the server's.
func (s *Server) merge(cur, obj v1alpha1.Object) v1alpha1.Object {
	next := obj.DeepCopyObject()
	next.CopyStatusFrom(cur)
	nm, cm := next.GetObjectMeta(), cur.GetObjectMeta()
	nm.UID, nm.CreationTimestamp, nm.DeletionTimestamp = cm.UID, cm.CreationTimestamp, cm.DeletionTimestamp
	nm.Generation = cm.Generation
	if !sameSpec(cur, next) {
		nm.Generation++
	}
	if nm.Finalizers == nil {
		nm.Finalizers = cm.Finalizers
	}
	nm.ResourceVersion = cm.ResourceVersion
	return next
}

func sameSpec(a, b v1alpha1.Object) bool {
	as, errA := a.SpecJSON()
	bs, errB := b.SpecJSON()
	return errA == nil && errB == nil && bytes.Equal(as, bs)
}

func (s *Server) apply(w http.ResponseWriter, r *http.Request) {
	kind, ok := kindOf(w, r)
	if !ok {
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != client.ApplyPatchContentType {
		writeStatus(w, Status(http.StatusUnsupportedMediaType, "UnsupportedMediaType", "unsupported patch type "+strconv.Quote(ct)))
		return
	}
	obj, st := decodeBody(r, kind)
	if st != nil {
		writeStatus(w, st)
		return
	}
	m := obj.GetObjectMeta()
	name, ns := r.PathValue("name"), r.PathValue("ns")
	if m.Name != name {
		writeStatus(w, Status(http.StatusBadRequest, v1alpha1.StatusReasonBadRequest, fmt.Sprintf("metadata.name %q does not match the name in the URL %q", m.Name, name)))
		return
	}
	if m.Namespace != "" && m.Namespace != ns {
		writeStatus(w, Status(http.StatusBadRequest, v1alpha1.StatusReasonBadRequest, fmt.Sprintf("metadata.namespace %q does not match the namespace in the URL %q", m.Namespace, ns)))
		return
	}
	m.Namespace = ns
	if st := s.validate(obj); st != nil {
		writeStatus(w, st)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := keyOf(obj)
	cur, exists := s.objects[k]
	if !exists {
		m.ResourceVersion = ""
		s.initMeta(obj)
		if !dryRun(r) {
			s.store(v1alpha1.Added, k, obj)
		}
		w.Header().Set(client.ApplyResultHeader, string(client.ApplyCreated))
		writeJSON(w, http.StatusCreated, obj)
		return
	}
	cm := cur.GetObjectMeta()
	if sameSpec(cur, obj) && maps.Equal(cm.Labels, m.Labels) && maps.Equal(cm.Annotations, m.Annotations) {
		w.Header().Set(client.ApplyResultHeader, string(client.ApplyUnchanged))
		writeJSON(w, http.StatusOK, cur)
		return
	}
	m.Finalizers = nil // apply does not own finalizers
	next := s.merge(cur, obj)
	if !dryRun(r) {
		s.store(v1alpha1.Modified, k, next)
	}
	w.Header().Set(client.ApplyResultHeader, string(client.ApplyConfigured))
	writeJSON(w, http.StatusOK, next)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	kind, ok := kindOf(w, r)
	if !ok {
		return
	}
	k := key{kind, r.PathValue("ns"), r.PathValue("name")}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, exists := s.objects[k]
	if !exists {
		writeStatus(w, notFound(kind, k.name))
		return
	}
	obj := cur.DeepCopyObject()
	m := obj.GetObjectMeta()
	switch {
	case dryRun(r):
		if len(m.Finalizers) > 0 && m.DeletionTimestamp == nil {
			m.DeletionTimestamp = v1alpha1.Now()
		}
	case len(m.Finalizers) > 0:
		if m.DeletionTimestamp == nil {
			m.DeletionTimestamp = v1alpha1.Now()
			s.store(v1alpha1.Modified, k, obj)
		}
	default:
		s.remove(k, obj)
	}
	writeJSON(w, http.StatusOK, obj)
}

func (s *Server) validate(obj v1alpha1.Object) *v1alpha1.Status {
	if s.Validate == nil {
		return nil
	}
	return s.Validate(obj)
}

func dryRun(r *http.Request) bool { return r.URL.Query().Get("dryRun") == "All" }

func readAll(r *http.Request) ([]byte, error) {
	return io.ReadAll(io.LimitReader(r.Body, 8<<20))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeStatus(w http.ResponseWriter, st *v1alpha1.Status) {
	writeJSON(w, st.Code, st)
}
