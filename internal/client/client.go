// Package client is the typed HTTP client of vmd's API. vmctl and the
// end-to-end tests talk to the daemon only through it, so the wire protocol
// (Kubernetes-style paths, Status error bodies, newline-delimited watch
// streams, server-side apply) is encoded in exactly one place on the client
// side.
//
// Every failure the server reports comes back as a *StatusError that
// matches the errdefs sentinel for its reason (errors.Is(err,
// errdefs.ErrNotFound) and so on); a daemon that cannot be reached comes back
// as a *ConnectionError naming the socket.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

// DefaultSocket is where vmd listens unless configured otherwise.
const DefaultSocket = "/run/vmd/vmd.sock"

// SocketEnv names the environment variable vmctl reads the socket path from
// when --socket is not given.
const SocketEnv = "VMD_SOCKET"

// ApplyResultHeader is the response header in which the server reports what
// a server-side apply did.
const ApplyResultHeader = "Vmd-Apply-Result"

// ApplyPatchContentType is the content type of a server-side apply body:
// the manifest document as the user wrote it (YAML or JSON).
const ApplyPatchContentType = "application/apply-patch+yaml"

// maxResponseBytes bounds a unary response body. Lists of a few thousand
// objects are far below it; anything larger is a broken or hostile server.
const maxResponseBytes = 64 << 20

// Options configure New. The zero value talks to DefaultSocket with no
// request timeout.
type Options struct {
	// Socket is the unix socket path of vmd. Empty means DefaultSocket,
	// unless Server is set.
	Socket string
	// Server is a base URL such as http://127.0.0.1:8080, used instead of
	// the socket (for tests and remote access through a tunnel).
	Server string
	// Timeout bounds each non-streaming request. Watches are bounded only
	// by their context, since they are meant to stay open. Zero means no
	// timeout beyond the caller's context.
	Timeout time.Duration
	// UserAgent is sent with every request; empty means "vmd-client".
	UserAgent string
}

// Client talks to one vmd. It is safe for concurrent use.
type Client struct {
	http      *http.Client
	base      *url.URL
	addr      string // what to name in "cannot reach vmd at ..."
	timeout   time.Duration
	userAgent string
}

// New returns a client for the daemon described by opts. It does not
// connect; the first request does.
func New(opts Options) (*Client, error) {
	c := &Client{timeout: opts.Timeout, userAgent: opts.UserAgent}
	if c.userAgent == "" {
		c.userAgent = "vmd-client"
	}
	if opts.Server != "" {
		u, err := url.Parse(opts.Server)
		if err != nil {
			return nil, fmt.Errorf("parsing server url %q: %w", opts.Server, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("parsing server url %q: want http(s)://host[:port]", opts.Server)
		}
		u.Path = strings.TrimSuffix(u.Path, "/")
		c.base, c.addr = u, u.String()
		c.http = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		return c, nil
	}
	socket := opts.Socket
	if socket == "" {
		socket = DefaultSocket
	}
	tr := &http.Transport{
		// The host part of the URL is ignored: every connection goes to
		// the socket.
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns:    8,
		IdleConnTimeout: 90 * time.Second,
		// How long an upload waits for "100 Continue" before sending
		// its body anyway (as http.DefaultTransport, which the Server
		// option clones, does).
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: 0, // watches legitimately wait; contexts bound requests
	}
	c.base = &url.URL{Scheme: "http", Host: "vmd"}
	c.addr = socket
	c.http = &http.Client{Transport: tr}
	return c, nil
}

// Address returns the socket path or server URL the client talks to, for
// messages.
func (c *Client) Address() string { return c.addr }

// resourcePath builds the Kubernetes-style path of a collection (name "")
// or of one object; namespace "" addresses every namespace.
func resourcePath(kind v1alpha1.Kind, namespace, name string) (string, error) {
	plural := kind.Plural()
	if plural == "" {
		return "", fmt.Errorf("unknown kind %q", kind)
	}
	// Path segments are set unescaped on url.URL.Path, which escapes them
	// on the wire; a slash would silently address another resource.
	if strings.Contains(namespace, "/") || strings.Contains(name, "/") {
		return "", fmt.Errorf("addressing %s %s/%s: names cannot contain '/'", plural, namespace, name)
	}
	var b strings.Builder
	b.WriteString("/apis/" + v1alpha1.GroupVersion)
	if namespace != "" {
		b.WriteString("/namespaces/" + namespace)
	}
	b.WriteString("/" + plural)
	if name != "" {
		if namespace == "" {
			return "", fmt.Errorf("addressing %s %q: namespace is required", plural, name)
		}
		b.WriteString("/" + name)
	}
	return b.String(), nil
}

// request describes one HTTP exchange.
type request struct {
	method      string
	path        string
	query       url.Values
	body        []byte
	contentType string
	// stream disables the per-request timeout (watches, uploads, pulls).
	stream bool
	// upload, when set, is streamed as the body instead of body, with
	// uploadSize bytes (negative: unknown, sent chunked). The request
	// then asks for "100 Continue", so a server that refuses the upload
	// says so before any byte of it is sent.
	upload     io.Reader
	uploadSize int64
}

// do sends req and returns the response for a 2xx status; anything else is
// turned into an error (and the body closed). The caller closes the body
// of a returned response and must call the returned cancel func when done.
func (c *Client) do(ctx context.Context, req request) (*http.Response, context.CancelFunc, error) {
	cancel := context.CancelFunc(func() {})
	if c.timeout > 0 && !req.stream {
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
	}
	u := *c.base
	u.Path = c.base.Path + req.path
	u.RawQuery = req.query.Encode()
	var body io.Reader
	switch {
	case req.upload != nil && req.uploadSize == 0:
		body = http.NoBody
	case req.upload != nil:
		// NopCloser: the transport closes request bodies, and the
		// caller's file is the caller's to close.
		body = io.NopCloser(req.upload)
	case req.body != nil:
		body = bytes.NewReader(req.body)
	}
	hreq, err := http.NewRequestWithContext(ctx, req.method, u.String(), body)
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("building request: %w", err)
	}
	if req.upload != nil {
		hreq.ContentLength = max(req.uploadSize, -1)
		if req.uploadSize != 0 {
			hreq.Header.Set("Expect", "100-continue")
		}
	}
	hreq.Header.Set("Accept", "application/json")
	hreq.Header.Set("User-Agent", c.userAgent)
	if req.contentType != "" {
		hreq.Header.Set("Content-Type", req.contentType)
	}
	resp, err := c.http.Do(hreq)
	if err != nil {
		cancel()
		return nil, nil, c.transportError(ctx, req, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer cancel()
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
		return nil, nil, decodeStatusError(resp.StatusCode, data)
	}
	return resp, cancel, nil
}

// transportError explains a request that got no HTTP response. A dial
// failure becomes a *ConnectionError; a cancelled or expired context is
// returned as such so callers can test it with errors.Is.
func (c *Client) transportError(ctx context.Context, req request, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s %s: %w", req.method, req.path, ctxErr)
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return &ConnectionError{Address: c.addr, Err: opErr.Err}
	}
	return fmt.Errorf("%s %s: %w", req.method, req.path, err)
}

// call performs a unary request and decodes the JSON response into out
// (unless out is nil). It returns the response headers and status code.
func (c *Client) call(ctx context.Context, req request, out any) (http.Header, int, error) {
	resp, cancel, err := c.do(ctx, req)
	if err != nil {
		return nil, 0, err
	}
	defer cancel()
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, 0, fmt.Errorf("reading response to %s %s: %w", req.method, req.path, err)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return nil, 0, fmt.Errorf("decoding response to %s %s: %w", req.method, req.path, err)
		}
	}
	return resp.Header, resp.StatusCode, nil
}

// Healthz returns nil when the daemon answers its liveness probe.
func (c *Client) Healthz(ctx context.Context) error {
	resp, cancel, err := c.do(ctx, request{method: http.MethodGet, path: "/healthz"})
	if err != nil {
		return err
	}
	defer cancel()
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return fmt.Errorf("reading /healthz: %w", err)
	}
	if s := strings.TrimSpace(string(data)); s != "ok" {
		return fmt.Errorf("vmd at %s is not healthy: %q", c.addr, s)
	}
	return nil
}

// ServerVersion is what GET /version reports about the daemon.
type ServerVersion struct {
	Version    string `json:"version"`
	GitCommit  string `json:"gitCommit,omitempty"`
	BuildDate  string `json:"buildDate,omitempty"`
	GoVersion  string `json:"goVersion,omitempty"`
	DomainType string `json:"domainType,omitempty"`
	LibvirtURI string `json:"libvirtURI,omitempty"`
}

// Version asks the daemon for its build and hypervisor information.
func (c *Client) Version(ctx context.Context) (*ServerVersion, error) {
	var v ServerVersion
	if _, _, err := c.call(ctx, request{method: http.MethodGet, path: "/version"}, &v); err != nil {
		return nil, err
	}
	return &v, nil
}
