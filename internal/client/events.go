package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

// ListEvents returns the events the daemon keeps, least recently seen
// first. namespace "" means every namespace; kind and name, when not
// empty, narrow the list to events about objects of that kind and name
// (sent as a Kubernetes field selector on involvedObject).
//
// Events are best effort: the daemon keeps them in memory for about an
// hour, so an empty list does not mean nothing happened.
func (c *Client) ListEvents(ctx context.Context, namespace string, kind v1alpha1.Kind, name string) ([]v1alpha1.Event, error) {
	if strings.Contains(namespace, "/") {
		return nil, fmt.Errorf("listing events in %q: namespaces cannot contain '/'", namespace)
	}
	// A selector value cannot carry its own separators.
	if strings.ContainsAny(string(kind)+name, ",=!") {
		return nil, fmt.Errorf("listing events of %s %q: invalid name", kind, name)
	}
	path := "/apis/" + v1alpha1.GroupVersion
	if namespace != "" {
		path += "/namespaces/" + namespace
	}
	path += "/events"
	var terms []string
	if kind != "" {
		terms = append(terms, "involvedObject.kind="+string(kind))
	}
	if name != "" {
		terms = append(terms, "involvedObject.name="+name)
	}
	var q url.Values
	if len(terms) > 0 {
		q = url.Values{"fieldSelector": {strings.Join(terms, ",")}}
	}
	var l v1alpha1.EventList
	if _, _, err := c.call(ctx, request{method: http.MethodGet, path: path, query: q}, &l); err != nil {
		return nil, err
	}
	return l.Items, nil
}
