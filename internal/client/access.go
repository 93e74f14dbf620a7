package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

// Upgrade protocols of the console and vnc subresources; the server's
// server.ConsoleProtocol and server.VNCProtocol.
const (
	ConsoleProtocol = "vmd-console"
	VNCProtocol     = "vmd-vnc"
)

// Console attaches to the serial console of a VMInstance and returns the
// session as a raw byte stream: Read returns what the guest prints, Write
// types into it, Close detaches. Only one session may be open per VM: a
// second fails with a conflict (errors.Is(err, errdefs.ErrConflict))
// unless force is set, which disconnects the first.
func (c *Client) Console(ctx context.Context, namespace, name string, force bool) (io.ReadWriteCloser, error) {
	q := url.Values{}
	if force {
		q.Set("force", "true")
	}
	return c.upgrade(ctx, namespace, name, "console", q, ConsoleProtocol)
}

// VNC opens a raw byte stream to the VNC server of a running VMInstance:
// the RFB protocol runs over it end to end (vmctl vnc serves it on a local
// TCP port for ordinary VNC viewers).
func (c *Client) VNC(ctx context.Context, namespace, name string) (io.ReadWriteCloser, error) {
	return c.upgrade(ctx, namespace, name, "vnc", nil, VNCProtocol)
}

// LogOptions select what Logs streams.
type LogOptions struct {
	// Follow keeps the stream open and sends what the guest writes next,
	// until ctx ends or the returned reader is closed.
	Follow bool
	// Tail, when not nil, starts with the last *Tail lines instead of the
	// whole log.
	Tail *int
}

// Logs streams the serial console log of a VMInstance. The caller closes
// the returned reader.
func (c *Client) Logs(ctx context.Context, namespace, name string, opts LogOptions) (io.ReadCloser, error) {
	path, err := subresourcePath(namespace, name, "log")
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	if opts.Follow {
		q.Set("follow", "true")
	}
	if opts.Tail != nil {
		q.Set("tail", strconv.Itoa(*opts.Tail))
	}
	//nolint:bodyclose // the body is the returned reader; the caller closes it
	resp, cancel, err := c.do(ctx, request{method: http.MethodGet, path: path, query: q, stream: true})
	if err != nil {
		return nil, err
	}
	return &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}, nil
}

// cancelOnClose releases the request's context with its body.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (r *cancelOnClose) Close() error {
	defer r.cancel()
	return r.ReadCloser.Close()
}

// subresourcePath is the path of a VMInstance subresource.
func subresourcePath(namespace, name, sub string) (string, error) {
	if namespace == "" {
		namespace = v1alpha1.DefaultNamespace
	}
	path, err := resourcePath(v1alpha1.KindVMInstance, namespace, name)
	if err != nil {
		return "", err
	}
	return path + "/" + sub, nil
}

// upgrade sends GET path with "Connection: Upgrade" and returns the
// connection once the server switched to proto. Any other answer is
// decoded as the usual Status error. Only the caller's ctx bounds the
// handshake: the request timeout would cut a session that is meant to
// last.
func (c *Client) upgrade(ctx context.Context, namespace, name, sub string, q url.Values, proto string) (io.ReadWriteCloser, error) {
	path, err := subresourcePath(namespace, name, sub)
	if err != nil {
		return nil, err
	}
	u := *c.base
	u.Path = c.base.Path + path
	u.RawQuery = q.Encode()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	hreq.Header.Set("Connection", "Upgrade")
	hreq.Header.Set("Upgrade", proto)
	hreq.Header.Set("User-Agent", c.userAgent)
	resp, err := c.http.Do(hreq)
	if err != nil {
		return nil, c.transportError(ctx, request{method: http.MethodGet, path: path}, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			return nil, fmt.Errorf("GET %s: server did not switch to %s (status %d)", path, proto, resp.StatusCode)
		}
		return nil, decodeStatusError(resp.StatusCode, data)
	}
	// net/http hands the connection over as the body of a 101 response.
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("GET %s: switching protocols: connection is not writable", path)
	}
	if got := resp.Header.Get("Upgrade"); !strings.EqualFold(got, proto) {
		_ = rwc.Close()
		return nil, fmt.Errorf("GET %s: server switched to %q, want %q", path, got, proto)
	}
	return rwc, nil
}
