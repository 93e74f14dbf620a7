package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/state"
)

// watch streams changes as newline-delimited v1alpha1.WatchEvent JSON,
// flushed per event. Errors from starting the watch (ErrGone for a
// resourceVersion outside the replay window) are returned before any byte
// is written, so they reach the client as a normal Status response. The
// stream ends when the client goes away, the source closes, or the server
// shuts down; the client resumes from the last resourceVersion it saw.
func (s *Server) watch(c echo.Context, kind v1alpha1.Kind, ns, sinceRV string) error {
	ctx, cancel := context.WithCancel(c.Request().Context())
	defer cancel()
	stop := context.AfterFunc(s.draining, cancel)
	defer stop()

	events, err := s.svc.Watch(ctx, kind, ns, sinceRV)
	if err != nil {
		return err
	}
	w := c.Response()
	w.Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	w.Flush()

	lastRV := sinceRV
	ticker := time.NewTicker(s.opts.BookmarkInterval)
	defer ticker.Stop()
	for {
		var ev state.Event
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-events:
			if !ok {
				return nil
			}
			ev = e
			if ev.ResourceVersion != "" {
				lastRV = ev.ResourceVersion
			}
		case <-ticker.C:
			if lastRV == "" {
				continue // nothing to resume from yet
			}
			b, err := v1alpha1.NewObject(kind)
			if err != nil {
				return err
			}
			b.GetObjectMeta().ResourceVersion = lastRV
			ev = state.Event{Type: v1alpha1.Bookmark, Object: b, ResourceVersion: lastRV}
		}
		line, err := encodeEvent(ev)
		if err != nil {
			// The status line is long gone; the best signal left is an
			// ERROR event, after which the stream ends.
			s.log.Error("encoding watch event", "kind", kind, "err", err)
			st, _ := json.Marshal(toStatus(err, objectRef{kind: kind}))
			line, _ = json.Marshal(v1alpha1.WatchEvent{Type: v1alpha1.Error, Object: st})
			_, _ = w.Write(append(line, '\n'))
			w.Flush()
			return nil
		}
		if _, err := w.Write(line); err != nil {
			return nil // client went away
		}
		w.Flush()
	}
}

// encodeEvent renders one stream line, newline included.
func encodeEvent(ev state.Event) ([]byte, error) {
	obj, err := json.Marshal(ev.Object)
	if err != nil {
		return nil, fmt.Errorf("encoding object: %w", err)
	}
	line, err := json.Marshal(v1alpha1.WatchEvent{Type: ev.Type, Object: obj})
	if err != nil {
		return nil, fmt.Errorf("encoding event: %w", err)
	}
	return append(line, '\n'), nil
}
