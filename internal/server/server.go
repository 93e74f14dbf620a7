// Package server is vmd's HTTP API: Kubernetes-style paths under
// /apis/apps.cozystack.io/v1alpha1, plus /healthz, /version and /metrics.
// It only translates HTTP to calls on a narrow Service (implemented by
// internal/registry) and errors back to Kubernetes Status bodies, in one
// place (toStatus). It never touches the store or the host itself.
//
// Routes (B = /apis/apps.cozystack.io/v1alpha1, :plural = vminstances|vmdisks):
//
//	GET    B/:plural                          list across namespaces (?watch=true)
//	GET    B/namespaces/:ns/:plural           list (?watch=true[&resourceVersion=N])
//	POST   B/namespaces/:ns/:plural           create, 201 (?dryRun=All)
//	GET    B/namespaces/:ns/:plural/:name     get
//	PUT    B/namespaces/:ns/:plural/:name     update, rv precondition (?dryRun=All)
//	PATCH  B/namespaces/:ns/:plural/:name     server-side apply (application/apply-patch+yaml),
//	                                          201 created / 200 otherwise, Vmd-Apply-Result header
//	DELETE B/namespaces/:ns/:plural/:name     delete (?dryRun=All, resourceVersion precondition)
//	PUT    B/namespaces/:ns/vmdisks/:name/upload
//	                                          stream the data of an upload{} disk (octet-stream)
//	POST   B/namespaces/:ns/vminstances/:name/{start,stop,restart}
//	                                          power request recorded as annotations; answers the object
//	GET    B/namespaces/:ns/vminstances/:name/console   (?force=true)
//	GET    B/namespaces/:ns/vminstances/:name/vnc
//	                                          HTTP/1.1 Upgrade (vmd-console, vmd-vnc) to a raw
//	                                          byte stream: serial console, VNC socket
//	GET    B/namespaces/:ns/vminstances/:name/log       (?follow=true&tail=N)
//	                                          serial console log, text/plain stream
//	GET    B/events, B/namespaces/:ns/events  recorded events, least recently seen first
//	                                          (?fieldSelector=involvedObject.kind=K,involvedObject.name=N)
//	GET    /apis/vmd.cozystack.io/v1/images   golden images in the cache (?all=true: whole catalogue)
//	POST   /apis/vmd.cozystack.io/v1/images/:name/pull
//	                                          download into the cache, NDJSON progress stream
//	GET    /healthz, /version, /metrics
//
// Manifest bodies are YAML or JSON; responses are JSON; failures are
// Kubernetes Status objects.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/registry"
	"github.com/vmdhq/vmd/internal/state"
	"github.com/vmdhq/vmd/internal/storage"
)

// Service is what the server needs from the API layer; *registry.Registry
// implements it. Keeping it narrow (no status writes, no store) means the
// HTTP surface cannot do more than the registry allows a client to do.
type Service interface {
	Get(ctx context.Context, kind v1alpha1.Kind, ns, name string) (v1alpha1.Object, error)
	List(ctx context.Context, kind v1alpha1.Kind, ns string) ([]v1alpha1.Object, string, error)
	Create(ctx context.Context, obj v1alpha1.Object, opts registry.WriteOptions) (v1alpha1.Object, error)
	Update(ctx context.Context, obj v1alpha1.Object, opts registry.WriteOptions) (v1alpha1.Object, error)
	Apply(ctx context.Context, obj v1alpha1.Object, opts registry.WriteOptions) (v1alpha1.Object, registry.ApplyResult, error)
	Delete(ctx context.Context, kind v1alpha1.Kind, ns, name string, opts registry.DeleteOptions) (v1alpha1.Object, error)
	Watch(ctx context.Context, kind v1alpha1.Kind, ns, sinceRV string) (<-chan state.Event, error)
	// Check validates obj without storing it (create-time rules).
	Check(obj v1alpha1.Object) field.ErrorList
}

// VersionInfo is served on /version: the build of the daemon and the
// hypervisor it drives, so a bug report can start from one command.
type VersionInfo struct {
	Version    string `json:"version"`
	GitCommit  string `json:"gitCommit"`
	BuildDate  string `json:"buildDate"`
	GoVersion  string `json:"goVersion"`
	DomainType string `json:"domainType,omitempty"`
	LibvirtURI string `json:"libvirtURI,omitempty"`
}

// Defaults for Options.
const (
	DefaultBookmarkInterval = 30 * time.Second
	DefaultShutdownTimeout  = 10 * time.Second
	// DefaultMaxBodyBytes bounds a request body. Manifests are small; the
	// largest field is cloudInit, which cloud-init itself limits to far
	// less (NoCloud user-data is read into memory whole).
	DefaultMaxBodyBytes = 4 << 20
)

// Options configure a Server. The zero value is usable.
type Options struct {
	// Version is served on /version.
	Version VersionInfo
	// Logger receives request logs (debug) and failures (error); default
	// slog.Default().
	Logger *slog.Logger
	// Registerer receives the HTTP metrics; nil means a fresh private
	// registry. Pass a custom registry, never the global default: tests
	// build many servers in one process.
	Registerer prometheus.Registerer
	// Gatherer is what /metrics serves, so collectors the caller
	// registered (controller, Go runtime) are exposed beside the HTTP
	// ones. nil means Registerer itself when it is also a Gatherer (as
	// *prometheus.Registry is).
	Gatherer prometheus.Gatherer
	// Health, when set, is consulted by /healthz; a non-nil error turns
	// the answer into 503 with the error text.
	Health func() error
	// BookmarkInterval is how often an idle watch stream gets a BOOKMARK;
	// default DefaultBookmarkInterval.
	BookmarkInterval time.Duration
	// ShutdownTimeout bounds how long Serve waits for in-flight requests
	// after its context ends before closing connections; default
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// MaxBodyBytes bounds manifest and delete-option bodies (413
	// beyond); default DefaultMaxBodyBytes. Uploads have their own limit.
	MaxBodyBytes int64
	// MaxUploadBytes bounds a disk upload body (413 beyond); default
	// DefaultMaxUploadBytes.
	MaxUploadBytes int64
	// Uploads receives disk uploads; nil answers them 501 NotImplemented.
	Uploads storage.Uploads
	// Images is the golden-image cache behind the images API; nil
	// answers 501 NotImplemented.
	Images storage.Images
	// Events lists the recorded object events (the events routes); nil
	// answers 501 NotImplemented.
	Events EventLister
	// Access reaches guests (console, log and vnc subresources); nil
	// answers 501 NotImplemented.
	Access Access
}

// Server serves the API over any net.Listener (normally ListenUnix).
type Server struct {
	svc     Service
	opts    Options
	log     *slog.Logger
	echo    *echo.Echo
	metrics *httpMetrics

	// draining ends every watch stream when Serve begins shutting down;
	// http.Server.Shutdown alone would wait for them forever.
	draining context.Context
	drain    context.CancelFunc
}

// New builds a Server; call Serve to start it. It registers its metrics
// with opts.Registerer and panics if they are already registered there
// (a programming error, as with prometheus.MustRegister).
func New(svc Service, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.BookmarkInterval <= 0 {
		opts.BookmarkInterval = DefaultBookmarkInterval
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.MaxUploadBytes <= 0 {
		opts.MaxUploadBytes = DefaultMaxUploadBytes
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if opts.Gatherer == nil {
		if g, ok := opts.Registerer.(prometheus.Gatherer); ok {
			opts.Gatherer = g
		} else {
			opts.Gatherer = prometheus.Gatherers{} // serves nothing rather than the global registry
		}
	}
	s := &Server{svc: svc, opts: opts, log: opts.Logger, metrics: newHTTPMetrics(opts.Registerer)}
	s.draining, s.drain = context.WithCancel(context.Background())

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	e.Use(s.observe)
	e.GET("/healthz", s.healthz)
	e.GET("/version", s.version)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{})))

	const base = "/apis/" + v1alpha1.GroupVersion
	e.GET(base+"/:plural", s.list)
	e.GET(base+"/namespaces/:ns/:plural", s.list)
	e.POST(base+"/namespaces/:ns/:plural", s.create)
	e.GET(base+"/namespaces/:ns/:plural/:name", s.get)
	e.PUT(base+"/namespaces/:ns/:plural/:name", s.update)
	e.PATCH(base+"/namespaces/:ns/:plural/:name", s.apply)
	e.DELETE(base+"/namespaces/:ns/:plural/:name", s.delete)
	// Any :plural matches so other kinds get a clear "no upload
	// subresource" rather than a bare 404.
	e.PUT(base+"/namespaces/:ns/:plural/:name/upload", s.upload)
	e.POST(base+"/namespaces/:ns/:plural/:name/:action", s.power)
	e.GET(base+"/namespaces/:ns/:plural/:name/:sub", s.access)

	// Static segments win over :plural in echo's router.
	e.GET(base+"/events", s.listEvents)
	e.GET(base+"/namespaces/:ns/events", s.listEvents)

	e.GET(ImagesPath, s.listImages)
	e.POST(ImagesPath+"/:name/pull", s.pullImage)
	s.echo = e
	return s
}

// ServeHTTP lets tests and embedders use the server as a plain handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.echo.ServeHTTP(w, r) }

// Serve answers requests on l until ctx ends, then shuts down gracefully:
// it stops accepting, ends watch streams, and waits up to ShutdownTimeout
// for in-flight requests before closing what remains. It returns nil after
// a clean shutdown. Serve may be called once per Server; it closes l.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		// No WriteTimeout: watch streams are long-lived by design.
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()

	select {
	case err := <-errc:
		s.drain()
		return fmt.Errorf("serving http: %w", err)
	case <-ctx.Done():
	}
	s.drain()
	sctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
	defer cancel()
	err := hs.Shutdown(sctx)
	if err != nil {
		// Timed out: cut the stragglers.
		_ = hs.Close()
		err = fmt.Errorf("shutting down http: %w", err)
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, fmt.Errorf("serving http: %w", serr))
	}
	return err
}

// handleError is echo's HTTPErrorHandler: every failure, ours or echo's
// (unknown route, wrong method), leaves as a Status body.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		// A stream already started; the status line is gone.
		s.log.Debug("error after response started", "path", c.Request().URL.Path, "err", err)
		return
	}
	ref, _ := c.Get(refKey).(objectRef)
	st := toStatus(err, ref)
	s.logFailure(c, st, err)
	if werr := c.JSON(st.Code, st); werr != nil {
		s.log.Debug("writing error response", "err", werr)
	}
}

// logFailure logs server-side failures (5xx); client mistakes are the
// client's to read in the response.
func (s *Server) logFailure(c echo.Context, st v1alpha1.Status, err error) {
	if st.Code >= http.StatusInternalServerError {
		s.log.Error("request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "code", st.Code, "err", err)
	}
}

// observe recovers panics, logs each request at debug level and records
// the request metrics with the final status code.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		start := time.Now()
		func() {
			defer func() {
				if p := recover(); p != nil {
					err = fmt.Errorf("panic serving %s: %v", c.Request().URL.Path, p)
				}
			}()
			err = next(c)
		}()
		if err != nil {
			// Resolve the error here, not after the chain, so the
			// recorded code is the one the client gets.
			c.Error(err)
		}
		// Label by route template, never by raw path, and fold requests
		// no handler recognised (unknown path, unknown :plural) into one
		// "unmatched" series so clients cannot grow the label space.
		route := c.Path()
		code := c.Response().Status
		if route == "" || code == http.StatusNotFound && c.Get(refKey) == nil {
			route = "unmatched"
		}
		elapsed := time.Since(start)
		s.metrics.observe(route, metricMethod(c.Request().Method), code, elapsed)
		s.log.Debug("request", "method", c.Request().Method, "path", c.Request().URL.RequestURI(),
			"route", route, "code", code, "duration", elapsed)
		return nil
	}
}

// healthz answers 200 "ok", or 503 with the reason Options.Health gives.
func (s *Server) healthz(c echo.Context) error {
	if s.opts.Health != nil {
		if err := s.opts.Health(); err != nil {
			return c.String(http.StatusServiceUnavailable, err.Error())
		}
	}
	return c.String(http.StatusOK, "ok")
}

// version serves Options.Version.
func (s *Server) version(c echo.Context) error {
	return c.JSON(http.StatusOK, s.opts.Version)
}

// httpMetrics are the server's own collectors.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vmd_http_requests_total",
			Help: "HTTP requests by route template, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "vmd_http_request_duration_seconds",
			Help: "HTTP request latency by route template and method (watch streams count their whole life).",
			// 1 ms .. ~65 s: API calls are fast; the tail is watches.
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}, []string{"route", "method"}),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

// metricMethod bounds the method label to the standard methods.
func metricMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "OTHER"
}

func (m *httpMetrics) observe(route, method string, code int, d time.Duration) {
	m.requests.WithLabelValues(route, method, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(route, method).Observe(d.Seconds())
}
