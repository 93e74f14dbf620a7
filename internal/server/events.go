package server

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
)

// EventLister is what the events routes need: *events.Recorder implements
// it. Empty arguments match anything. Reading only, so the HTTP surface
// can never forge an event.
type EventLister interface {
	List(namespace string, kind v1alpha1.Kind, name string) []v1alpha1.Event
}

// Field selector keys the events routes understand, as kubectl sends them
// (`kubectl get events --field-selector involvedObject.kind=Pod,...`).
const (
	fieldInvolvedKind = "involvedObject.kind"
	fieldInvolvedName = "involvedObject.name"
)

// eventFilter is a parsed ?fieldSelector=.
type eventFilter struct {
	kind v1alpha1.Kind
	name string
}

// listEvents serves GET B/events and B/namespaces/:ns/events: the events
// kept in memory (least recently seen first), narrowed by
// ?fieldSelector=involvedObject.kind=K,involvedObject.name=N.
func (s *Server) listEvents(c echo.Context) error {
	c.Set(refKey, objectRef{resource: "events"})
	if s.opts.Events == nil {
		return fmt.Errorf("listing events: %w", errdefs.ErrNotImplemented)
	}
	if w := c.QueryParam("watch"); w != "" && w != "false" && w != "0" {
		return fmt.Errorf("watching events: %w", errdefs.ErrNotImplemented)
	}
	f, err := parseEventSelector(c.QueryParam("fieldSelector"))
	if err != nil {
		return err
	}
	items := s.opts.Events.List(c.Param("ns"), f.kind, f.name)
	if items == nil {
		items = []v1alpha1.Event{} // "items": [] rather than null
	}
	return c.JSON(http.StatusOK, v1alpha1.EventList{
		TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindEventList},
		Items:    items,
	})
}

// parseEventSelector reads a Kubernetes field selector restricted to
// equality on involvedObject.kind and involvedObject.name. Anything else
// is a 400: silently ignoring a term would list events the caller asked
// to exclude.
func parseEventSelector(sel string) (eventFilter, error) {
	var f eventFilter
	seen := map[string]bool{}
	for term := range strings.SplitSeq(sel, ",") {
		term = strings.TrimSpace(term)
		if term == "" {
			continue
		}
		if strings.Contains(term, "!=") {
			return f, badRequest(fmt.Sprintf("invalid fieldSelector term %q: only equality (=) is supported", term))
		}
		key, value, ok := strings.Cut(term, "==")
		if !ok {
			key, value, ok = strings.Cut(term, "=")
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		switch {
		case !ok:
			return f, badRequest(fmt.Sprintf("invalid fieldSelector term %q: want key=value", term))
		case value == "":
			return f, badRequest(fmt.Sprintf("invalid fieldSelector term %q: the value is empty", term))
		case seen[key]:
			return f, badRequest(fmt.Sprintf("invalid fieldSelector: %s given twice", key))
		}
		seen[key] = true
		switch key {
		case fieldInvolvedKind:
			kind, known := v1alpha1.KindForResource(value)
			if !known {
				return f, badRequest(fmt.Sprintf("invalid fieldSelector: unknown kind %q (want %s or %s)", value, v1alpha1.KindVMInstance, v1alpha1.KindVMDisk))
			}
			f.kind = kind
		case fieldInvolvedName:
			f.name = value
		default:
			return f, badRequest(fmt.Sprintf("invalid fieldSelector: field %q is not supported (only %s and %s)", key, fieldInvolvedKind, fieldInvolvedName))
		}
	}
	return f, nil
}
