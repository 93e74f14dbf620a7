package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

// Event is one decoded line of a watch stream.
type Event struct {
	// Type is ADDED, MODIFIED, DELETED, BOOKMARK or ERROR.
	Type v1alpha1.WatchEventType
	// Object is the object after the change (for DELETED: its last
	// state; for BOOKMARK: an object carrying only a resourceVersion).
	// It is nil for ERROR events.
	Object v1alpha1.Object
	// Err is set on ERROR events: a *StatusError (matching errdefs.ErrGone
	// when the resourceVersion fell out of the server's window, after
	// which the caller must list again) or a decoding error. The stream
	// ends after an ERROR event.
	Err error
}

// ResourceVersion returns the resourceVersion the event carries, from
// which a new watch can resume, or "" for ERROR events.
func (e Event) ResourceVersion() string {
	if e.Object == nil {
		return ""
	}
	return e.Object.GetObjectMeta().ResourceVersion
}

// Watch streams changes to objects of kind in namespace ("" = every
// namespace) that happened after resourceVersion (as returned by List; ""
// means "from now"). The channel is closed when the server ends the stream,
// after an ERROR event, or when ctx is done; cancel ctx to stop watching,
// since the stream otherwise stays open. A resourceVersion the server no
// longer remembers fails at once with a *StatusError matching
// errdefs.ErrGone.
func (c *Client) Watch(ctx context.Context, kind v1alpha1.Kind, namespace, resourceVersion string) (<-chan Event, error) {
	path, err := resourcePath(kind, namespace, "")
	if err != nil {
		return nil, err
	}
	q := url.Values{"watch": {"true"}}
	if resourceVersion != "" {
		q.Set("resourceVersion", resourceVersion)
	}
	//nolint:bodyclose // the body is closed by the reading goroutine below
	resp, cancel, err := c.do(ctx, request{method: http.MethodGet, path: path, query: q, stream: true})
	if err != nil {
		return nil, err
	}
	ch := make(chan Event)
	go func() {
		defer close(ch)
		defer cancel()
		defer resp.Body.Close()
		readEvents(ctx, kind, resp.Body, ch)
	}()
	return ch, nil
}

// readEvents decodes newline-delimited WatchEvents from r onto ch until the
// stream ends, an ERROR event was delivered, or ctx is done.
func readEvents(ctx context.Context, kind v1alpha1.Kind, r io.Reader, ch chan<- Event) {
	dec := json.NewDecoder(r)
	for {
		var we v1alpha1.WatchEvent
		err := dec.Decode(&we)
		if err != nil {
			// io.EOF is the server ending the stream; a read error after
			// cancellation is our own doing. Neither is news to the caller.
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return
			}
			send(ctx, ch, Event{Type: v1alpha1.Error, Err: fmt.Errorf("reading %s watch stream: %w", kind.Plural(), err)})
			return
		}
		ev := decodeEvent(kind, we)
		if !send(ctx, ch, ev) || ev.Type == v1alpha1.Error {
			return
		}
	}
}

// decodeEvent turns a wire event into an Event; decoding failures become
// ERROR events so the consumer sees them in order.
func decodeEvent(kind v1alpha1.Kind, we v1alpha1.WatchEvent) Event {
	switch we.Type {
	case v1alpha1.Added, v1alpha1.Modified, v1alpha1.Deleted, v1alpha1.Bookmark:
		obj, err := DecodeObject(kind, we.Object)
		if err != nil {
			return Event{Type: v1alpha1.Error, Err: fmt.Errorf("decoding %s watch event: %w", we.Type, err)}
		}
		return Event{Type: we.Type, Object: obj}
	case v1alpha1.Error:
		var st v1alpha1.Status
		if err := json.Unmarshal(we.Object, &st); err != nil {
			return Event{Type: v1alpha1.Error, Err: fmt.Errorf("decoding watch error: %w", err)}
		}
		return Event{Type: v1alpha1.Error, Err: NewStatusError(st)}
	}
	return Event{Type: v1alpha1.Error, Err: fmt.Errorf("unknown watch event type %q", we.Type)}
}

// send delivers ev unless ctx ends first; it reports whether it delivered.
func send(ctx context.Context, ch chan<- Event, ev Event) bool {
	select {
	case ch <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}
