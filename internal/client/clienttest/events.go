package clienttest

import (
	"net/http"
	"strings"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

// AddEvent keeps ev as if the daemon had recorded it; events are listed in
// the order they were added, as vmd lists them least recently seen first.
// Kind and APIVersion are filled in when empty.
func (s *Server) AddEvent(ev v1alpha1.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ev.Kind == "" {
		ev.TypeMeta = v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindEvent}
	}
	s.objEvents = append(s.objEvents, ev)
}

// listEvents serves GET .../events and .../namespaces/{ns}/events with the
// same fieldSelector subset as vmd (involvedObject.kind and .name, equality
// only); any other term is a 400, as there.
func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) {
	ns := r.PathValue("ns")
	var kind, name string
	if sel := r.URL.Query().Get("fieldSelector"); sel != "" {
		for term := range strings.SplitSeq(sel, ",") {
			k, v, ok := strings.Cut(term, "=")
			switch {
			case ok && k == "involvedObject.kind":
				kind = v
			case ok && k == "involvedObject.name":
				name = v
			default:
				writeStatus(w, Status(http.StatusBadRequest, v1alpha1.StatusReasonBadRequest, "invalid fieldSelector term "+term))
				return
			}
		}
	}
	s.mu.Lock()
	l := v1alpha1.EventList{
		TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindEventList},
		Items:    []v1alpha1.Event{},
	}
	for _, e := range s.objEvents {
		o := e.InvolvedObject
		if ns != "" && o.Namespace != ns || kind != "" && string(o.Kind) != kind || name != "" && o.Name != name {
			continue
		}
		l.Items = append(l.Items, e)
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, l)
}
