package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/catalog"
	"github.com/vmdhq/vmd/internal/registry"
	"github.com/vmdhq/vmd/internal/server"
	"github.com/vmdhq/vmd/internal/state"
	"github.com/vmdhq/vmd/internal/state/statetest"
)

// The registry is the production Service.
var _ server.Service = (*registry.Registry)(nil)

const base = "/apis/apps.cozystack.io/v1alpha1"

// harness is a real daemon front end: bbolt store, registry, server on a
// unix socket in a temp dir, and an HTTP client dialing that socket.
type harness struct {
	store  *state.Bolt
	client *http.Client
	socket string
	stop   context.CancelFunc
	done   chan error
}

type harnessOpts struct {
	server server.Options
	state  state.Options
	// wrap, when set, decorates the registry (to inject delays or faults).
	wrap func(server.Service) server.Service
}

func start(t *testing.T, ho harnessOpts) *harness {
	t.Helper()
	st := statetest.Open(t, ho.state)
	reg := registry.New(st, catalog.Default(), registry.Options{})
	sock := filepath.Join(t.TempDir(), "vmd.sock")
	l, err := server.ListenUnix(sock, 0, -1)
	if err != nil {
		t.Fatalf("ListenUnix: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{store: st, socket: sock, stop: cancel, done: make(chan error, 1)}
	var svc server.Service = reg
	if ho.wrap != nil {
		svc = ho.wrap(reg)
	}
	srv := server.New(svc, ho.server)
	go func() { h.done <- srv.Serve(ctx, l) }()
	h.client = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	t.Cleanup(func() {
		h.shutdown(t)
		h.client.CloseIdleConnections()
	})
	return h
}

// shutdown ends Serve and checks it returned cleanly; safe to call twice.
func (h *harness) shutdown(t *testing.T) {
	t.Helper()
	if h.stop == nil {
		return
	}
	h.stop()
	h.stop = nil
	select {
	case err := <-h.done:
		if err != nil {
			t.Errorf("Serve returned %v, want nil after a clean shutdown", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return after shutdown")
	}
}

type response struct {
	code   int
	header http.Header
	body   []byte
}

func (h *harness) do(t *testing.T, method, path, contentType, body string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, "http://vmd"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: b}
}

const diskYAML = `apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: %NAME%
spec:
  source: {}
  storage: %SIZE%
`

func diskManifest(name, size string) string {
	return strings.NewReplacer("%NAME%", name, "%SIZE%", size).Replace(diskYAML)
}

// objMeta decodes metadata and spec.storage of a disk response.
type diskResp struct {
	Metadata v1alpha1.ObjectMeta `json:"metadata"`
	Spec     struct {
		Storage      string `json:"storage"`
		StorageClass string `json:"storageClass"`
	} `json:"spec"`
}

func TestAPI(t *testing.T) {
	h := start(t, harnessOpts{})
	disks := base + "/namespaces/default/vmdisks"

	// Seed one disk whose resourceVersion later requests refer to.
	seed := h.do(t, http.MethodPost, disks, "application/yaml", diskManifest("seed", "5Gi"))
	if seed.code != http.StatusCreated {
		t.Fatalf("seeding: %d %s", seed.code, seed.body)
	}
	var seeded diskResp
	if err := json.Unmarshal(seed.body, &seeded); err != nil {
		t.Fatal(err)
	}
	// Move the stored rv past the seed's.
	if r := h.do(t, http.MethodPut, disks+"/seed", "application/yaml", diskManifest("seed", "6Gi")); r.code != http.StatusOK {
		t.Fatalf("updating seed: %d %s", r.code, r.body)
	}
	staleRV := seeded.Metadata.ResourceVersion

	tests := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        string
		wantCode    int
		wantReason  string   // Status.reason for failures
		wantCauses  []string // field paths in details.causes
		wantHeader  [2]string
		check       func(t *testing.T, r response)
	}{
		{
			name: "create disk from YAML", method: http.MethodPost, path: disks, contentType: "application/yaml",
			body: diskManifest("data", "10Gi"), wantCode: http.StatusCreated,
			check: func(t *testing.T, r response) {
				var d diskResp
				mustJSON(t, r.body, &d)
				if d.Spec.StorageClass != "replicated" || d.Metadata.Generation != 1 || d.Metadata.Namespace != "default" {
					t.Errorf("created %+v, want defaults applied", d)
				}
			},
		},
		{
			name: "create from JSON", method: http.MethodPost, path: disks, contentType: "application/json",
			body:     `{"apiVersion":"apps.cozystack.io/v1alpha1","kind":"VMDisk","metadata":{"name":"json"},"spec":{"source":{}}}`,
			wantCode: http.StatusCreated,
		},
		{
			name: "create existing", method: http.MethodPost, path: disks, body: diskManifest("data", "10Gi"),
			wantCode: http.StatusConflict, wantReason: "AlreadyExists",
		},
		{
			name: "dry-run create", method: http.MethodPost, path: disks + "?dryRun=All", body: diskManifest("ghost", "1Gi"),
			wantCode: http.StatusCreated,
		},
		{
			name: "dry-run create stored nothing", method: http.MethodGet, path: disks + "/ghost",
			wantCode: http.StatusNotFound, wantReason: "NotFound",
			check: func(t *testing.T, r response) {
				st := mustStatus(t, r)
				if st.Details == nil || st.Details.Name != "ghost" || st.Details.Kind != "vmdisks" {
					t.Errorf("details = %+v, want vmdisks/ghost", st.Details)
				}
			},
		},
		{
			name: "invalid dryRun value", method: http.MethodPost, path: disks + "?dryRun=true", body: diskManifest("x", "1Gi"),
			wantCode: http.StatusBadRequest, wantReason: "BadRequest",
		},
		{
			name: "validation errors list every field", method: http.MethodPost, path: base + "/namespaces/default/vminstances",
			body:     "apiVersion: apps.cozystack.io/v1alpha1\nkind: VMInstance\nmetadata: {name: web}\nspec:\n  instanceType: u1.huge\n  runStrategy: Sometimes\n",
			wantCode: http.StatusUnprocessableEntity, wantReason: "Invalid",
			wantCauses: []string{"spec.instanceType", "spec.runStrategy"},
			check: func(t *testing.T, r response) {
				st := mustStatus(t, r)
				if st.Details.Kind != "VMInstance" || st.Details.Name != "web" {
					t.Errorf("details = %+v, want VMInstance web", st.Details)
				}
				for _, c := range st.Details.Causes {
					if c.Field == "spec.instanceType" && (c.Type != "FieldValueNotSupported" || !strings.Contains(c.Message, `"u1.huge"`)) {
						t.Errorf("instanceType cause = %+v, want FieldValueNotSupported naming the value", c)
					}
				}
			},
		},
		{
			name: "unknown field is a 422 naming it", method: http.MethodPost, path: disks,
			body:     "apiVersion: apps.cozystack.io/v1alpha1\nkind: VMDisk\nmetadata: {name: typo}\nspec:\n  storag: 5Gi\n",
			wantCode: http.StatusUnprocessableEntity, wantReason: "Invalid", wantCauses: []string{"spec.storag"},
		},
		{
			name: "YAML syntax error", method: http.MethodPost, path: disks, body: "kind: [unclosed\n",
			wantCode: http.StatusBadRequest, wantReason: "BadRequest",
		},
		{
			name: "empty body", method: http.MethodPost, path: disks,
			wantCode: http.StatusBadRequest, wantReason: "BadRequest",
		},
		{
			name: "kind does not match plural", method: http.MethodPost, path: base + "/namespaces/default/vminstances",
			body: diskManifest("d2", "1Gi"), wantCode: http.StatusBadRequest, wantReason: "BadRequest",
		},
		{
			name: "namespace does not match URL", method: http.MethodPost, path: base + "/namespaces/other/vmdisks",
			body:     strings.Replace(diskManifest("d3", "1Gi"), "metadata:\n", "metadata:\n  namespace: default\n", 1),
			wantCode: http.StatusBadRequest, wantReason: "BadRequest",
		},
		{
			name: "get", method: http.MethodGet, path: disks + "/data", wantCode: http.StatusOK,
			check: func(t *testing.T, r response) {
				var d diskResp
				mustJSON(t, r.body, &d)
				if d.Metadata.Name != "data" || d.Spec.Storage != "10Gi" {
					t.Errorf("got %+v", d)
				}
			},
		},
		{
			name: "unknown resource", method: http.MethodGet, path: base + "/namespaces/default/pods",
			wantCode: http.StatusNotFound, wantReason: "NotFound",
		},
		{
			name: "list namespace", method: http.MethodGet, path: disks, wantCode: http.StatusOK,
			check: func(t *testing.T, r response) {
				l := mustList(t, r)
				if l.Kind != "VMDiskList" || l.APIVersion != v1alpha1.GroupVersion || l.Metadata.ResourceVersion == "" {
					t.Errorf("list header = %+v %+v", l.TypeMeta, l.Metadata)
				}
				if names := itemNames(t, l); !slices.Equal(names, []string{"data", "json", "seed"}) {
					t.Errorf("items = %v, want [data json seed]", names)
				}
			},
		},
		{
			name: "list other namespace is empty, not null", method: http.MethodGet, path: base + "/namespaces/other/vmdisks",
			wantCode: http.StatusOK,
			check: func(t *testing.T, r response) {
				if !strings.Contains(string(r.body), `"items":[]`) {
					t.Errorf("body = %s, want an empty items array", r.body)
				}
			},
		},
		{
			name: "list all namespaces", method: http.MethodGet, path: base + "/vmdisks", wantCode: http.StatusOK,
			check: func(t *testing.T, r response) {
				if n := len(mustList(t, r).Items); n != 3 {
					t.Errorf("%d items, want 3", n)
				}
			},
		},
		{
			name: "stale PUT conflicts", method: http.MethodPut, path: disks + "/seed",
			body:     strings.Replace(diskManifest("seed", "7Gi"), "  name: seed\n", "  name: seed\n  resourceVersion: \""+staleRV+"\"\n", 1),
			wantCode: http.StatusConflict, wantReason: "Conflict",
		},
		{
			name: "PUT name must match URL", method: http.MethodPut, path: disks + "/seed", body: diskManifest("other", "7Gi"),
			wantCode: http.StatusBadRequest, wantReason: "BadRequest",
		},
		{
			name: "PUT missing object", method: http.MethodPut, path: disks + "/nope", body: diskManifest("nope", "7Gi"),
			wantCode: http.StatusNotFound, wantReason: "NotFound",
		},
		{
			name: "PUT bumps generation", method: http.MethodPut, path: disks + "/seed", body: diskManifest("seed", "8Gi"),
			wantCode: http.StatusOK,
			check: func(t *testing.T, r response) {
				var d diskResp
				mustJSON(t, r.body, &d)
				if d.Spec.Storage != "8Gi" || d.Metadata.Generation != 3 {
					t.Errorf("storage %s generation %d, want 8Gi / 3", d.Spec.Storage, d.Metadata.Generation)
				}
			},
		},
		{
			name: "PATCH needs the apply content type", method: http.MethodPatch, path: disks + "/app",
			contentType: "application/merge-patch+json", body: `{"spec":{}}`,
			wantCode: http.StatusUnsupportedMediaType, wantReason: "UnsupportedMediaType",
		},
		{
			name: "apply creates", method: http.MethodPatch, path: disks + "/app", contentType: server.ApplyPatchContentType,
			body: diskManifest("app", "5Gi"), wantCode: http.StatusCreated, wantHeader: [2]string{server.ApplyResultHeader, "created"},
		},
		{
			name: "apply again is unchanged", method: http.MethodPatch, path: disks + "/app", contentType: server.ApplyPatchContentType,
			body: diskManifest("app", "5Gi"), wantCode: http.StatusOK, wantHeader: [2]string{server.ApplyResultHeader, "unchanged"},
		},
		{
			name: "dry-run apply", method: http.MethodPatch, path: disks + "/app?dryRun=All", contentType: server.ApplyPatchContentType,
			body: diskManifest("app", "50Gi"), wantCode: http.StatusOK, wantHeader: [2]string{server.ApplyResultHeader, "configured"},
		},
		{
			name: "apply change configures (dry run did not stick)", method: http.MethodPatch, path: disks + "/app",
			contentType: server.ApplyPatchContentType + "; charset=utf-8",
			body:        diskManifest("app", "6Gi"), wantCode: http.StatusOK, wantHeader: [2]string{server.ApplyResultHeader, "configured"},
			check: func(t *testing.T, r response) {
				var d diskResp
				mustJSON(t, r.body, &d)
				if d.Metadata.Generation != 2 {
					t.Errorf("generation = %d, want 2 (the dry run must not have bumped it)", d.Metadata.Generation)
				}
			},
		},
		{
			name: "apply immutable storageClass", method: http.MethodPatch, path: disks + "/app", contentType: server.ApplyPatchContentType,
			body:     diskManifest("app", "6Gi") + "  storageClass: local\n",
			wantCode: http.StatusUnprocessableEntity, wantReason: "Invalid", wantCauses: []string{"spec.storageClass"},
		},
		{
			name: "dry-run delete", method: http.MethodDelete, path: disks + "/app?dryRun=All", wantCode: http.StatusOK,
		},
		{
			name: "dry-run delete left it alone", method: http.MethodGet, path: disks + "/app", wantCode: http.StatusOK,
			check: func(t *testing.T, r response) {
				var d diskResp
				mustJSON(t, r.body, &d)
				if d.Metadata.DeletionTimestamp != nil {
					t.Error("dry-run delete marked the object")
				}
			},
		},
		{
			name: "delete with stale precondition in the body", method: http.MethodDelete, path: disks + "/app",
			contentType: "application/json", body: `{"kind":"DeleteOptions","preconditions":{"resourceVersion":"` + staleRV + `"}}`,
			wantCode: http.StatusConflict, wantReason: "Conflict",
		},
		{
			name: "delete marks the object", method: http.MethodDelete, path: disks + "/app", wantCode: http.StatusOK,
			check: func(t *testing.T, r response) {
				var d diskResp
				mustJSON(t, r.body, &d)
				if d.Metadata.DeletionTimestamp == nil || !slices.Contains(d.Metadata.Finalizers, registry.Finalizer) {
					t.Errorf("metadata = %+v, want deletionTimestamp and the cleanup finalizer", d.Metadata)
				}
			},
		},
		{
			name: "apply to a deleting object conflicts", method: http.MethodPatch, path: disks + "/app", contentType: server.ApplyPatchContentType,
			body: diskManifest("app", "7Gi"), wantCode: http.StatusConflict, wantReason: "Conflict",
		},
		{
			name: "delete missing", method: http.MethodDelete, path: disks + "/nope", wantCode: http.StatusNotFound, wantReason: "NotFound",
		},
		{
			name: "echo 404 is a Status", method: http.MethodGet, path: "/nothing/here", wantCode: http.StatusNotFound, wantReason: "NotFound",
		},
		{
			name: "echo 405 is a Status", method: http.MethodPost, path: "/healthz", wantCode: http.StatusMethodNotAllowed, wantReason: "MethodNotAllowed",
		},
		{
			name: "body too large", method: http.MethodPost, path: disks,
			body:     diskManifest("big", "1Gi") + "# " + strings.Repeat("x", server.DefaultMaxBodyBytes) + "\n",
			wantCode: http.StatusRequestEntityTooLarge, wantReason: "RequestEntityTooLarge",
		},
		{
			name: "healthz", method: http.MethodGet, path: "/healthz", wantCode: http.StatusOK,
			check: func(t *testing.T, r response) {
				if string(r.body) != "ok" {
					t.Errorf("body = %q, want ok", r.body)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.do(t, tt.method, tt.path, tt.contentType, tt.body)
			if r.code != tt.wantCode {
				t.Fatalf("%s %s = %d, want %d; body %s", tt.method, tt.path, r.code, tt.wantCode, r.body)
			}
			if ct := r.header.Get("Content-Type"); tt.path != "/healthz" && !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type = %q, want JSON", ct)
			}
			if tt.wantReason != "" {
				st := mustStatus(t, r)
				if st.Reason != tt.wantReason || st.Code != tt.wantCode || st.Status != "Failure" || st.Kind != "Status" || st.APIVersion != "v1" || st.Message == "" {
					t.Errorf("Status = %+v, want reason %s code %d", st, tt.wantReason, tt.wantCode)
				}
				var got []string
				if st.Details != nil {
					for _, c := range st.Details.Causes {
						got = append(got, c.Field)
					}
				}
				for _, f := range tt.wantCauses {
					if !slices.Contains(got, f) {
						t.Errorf("causes %v lack field %s (message %q)", got, f, st.Message)
					}
				}
			}
			if tt.wantHeader[0] != "" {
				if v := r.header.Get(tt.wantHeader[0]); v != tt.wantHeader[1] {
					t.Errorf("%s = %q, want %q", tt.wantHeader[0], v, tt.wantHeader[1])
				}
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
}

func TestHealthzAndVersion(t *testing.T) {
	unhealthy := errors.New("libvirt: connection refused")
	tests := []struct {
		name     string
		health   func() error
		wantCode int
		wantBody string
	}{
		{name: "no check", wantCode: http.StatusOK, wantBody: "ok"},
		{name: "passing check", health: func() error { return nil }, wantCode: http.StatusOK, wantBody: "ok"},
		{name: "failing check", health: func() error { return unhealthy }, wantCode: http.StatusServiceUnavailable, wantBody: unhealthy.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := server.VersionInfo{Version: "1.2.3", GitCommit: "abc", BuildDate: "2025-01-01", GoVersion: "go1.25", DomainType: "kvm", LibvirtURI: "qemu:///system"}
			h := start(t, harnessOpts{server: server.Options{Health: tt.health, Version: v}})
			r := h.do(t, http.MethodGet, "/healthz", "", "")
			if r.code != tt.wantCode || string(r.body) != tt.wantBody {
				t.Errorf("/healthz = %d %q, want %d %q", r.code, r.body, tt.wantCode, tt.wantBody)
			}
			r = h.do(t, http.MethodGet, "/version", "", "")
			var got server.VersionInfo
			mustJSON(t, r.body, &got)
			if got != v {
				t.Errorf("/version = %+v, want %+v", got, v)
			}
			if !strings.Contains(string(r.body), `"libvirtURI":"qemu:///system"`) {
				t.Errorf("/version body %s lacks the camelCase libvirtURI field", r.body)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts func(reg *prometheus.Registry) server.Options
	}{
		{name: "registry as registerer", opts: func(reg *prometheus.Registry) server.Options { return server.Options{Registerer: reg} }},
		{name: "explicit gatherer", opts: func(reg *prometheus.Registry) server.Options {
			return server.Options{Registerer: prometheus.WrapRegistererWith(nil, reg), Gatherer: reg}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) { testMetrics(t, tt.opts) })
	}
}

func testMetrics(t *testing.T, opts func(*prometheus.Registry) server.Options) {
	reg := prometheus.NewRegistry()
	extra := prometheus.NewCounter(prometheus.CounterOpts{Name: "vmd_test_extra_total", Help: "registered by the caller"})
	reg.MustRegister(extra)
	h := start(t, harnessOpts{server: opts(reg)})
	h.do(t, http.MethodGet, base+"/namespaces/default/vmdisks/missing", "", "")
	h.do(t, http.MethodGet, base+"/vmdisks", "", "")
	r := h.do(t, http.MethodGet, "/metrics", "", "")
	if r.code != http.StatusOK {
		t.Fatalf("/metrics = %d", r.code)
	}
	for _, want := range []string{
		`vmd_http_requests_total{code="404",method="GET",route="/apis/apps.cozystack.io/v1alpha1/namespaces/:ns/:plural/:name"} 1`,
		`vmd_http_requests_total{code="200",method="GET",route="/apis/apps.cozystack.io/v1alpha1/:plural"} 1`,
		`vmd_http_request_duration_seconds_count{method="GET",route="/apis/apps.cozystack.io/v1alpha1/:plural"} 1`,
		`vmd_test_extra_total 0`,
	} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// watchStream reads newline-delimited watch events.
type watchStream struct {
	resp *http.Response
	sc   *bufio.Scanner
}

func (h *harness) watch(t *testing.T, path string) *watchStream {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://vmd"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("watch %s = %d %s", path, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("watch Content-Type = %q", ct)
	}
	return &watchStream{resp: resp, sc: bufio.NewScanner(resp.Body)}
}

// next returns the next event; ok is false at end of stream.
func (w *watchStream) next(t *testing.T) (ev v1alpha1.WatchEvent, meta v1alpha1.ObjectMeta, ok bool) {
	t.Helper()
	type result struct {
		line []byte
		ok   bool
	}
	ch := make(chan result, 1)
	go func() {
		ok := w.sc.Scan()
		ch <- result{append([]byte(nil), w.sc.Bytes()...), ok}
	}()
	select {
	case r := <-ch:
		if !r.ok {
			return ev, meta, false
		}
		mustJSON(t, r.line, &ev)
		var obj struct {
			Metadata v1alpha1.ObjectMeta `json:"metadata"`
		}
		mustJSON(t, ev.Object, &obj)
		return ev, obj.Metadata, true
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for a watch event")
	}
	return ev, meta, false
}

func TestWatchStream(t *testing.T) {
	h := start(t, harnessOpts{server: server.Options{BookmarkInterval: time.Hour}})
	disks := base + "/namespaces/default/vmdisks"
	if r := h.do(t, http.MethodPost, disks, "", diskManifest("before", "1Gi")); r.code != http.StatusCreated {
		t.Fatalf("create: %d %s", r.code, r.body)
	}
	list := mustList(t, h.do(t, http.MethodGet, disks, "", ""))

	// From the list's resourceVersion: only later changes.
	w := h.watch(t, disks+"?watch=true&resourceVersion="+list.Metadata.ResourceVersion)
	// Without a resourceVersion, across namespaces: from now on.
	all := h.watch(t, base+"/vmdisks?watch=1")

	h.do(t, http.MethodPost, disks, "", diskManifest("w", "1Gi"))
	h.do(t, http.MethodPut, disks+"/w", "", diskManifest("w", "2Gi"))
	h.do(t, http.MethodDelete, disks+"/w", "", "")
	// Play the controller: release and drop the finalizer.
	cur, err := h.store.Get(t.Context(), v1alpha1.KindVMDisk, "default", "w")
	if err != nil {
		t.Fatal(err)
	}
	cur.GetObjectMeta().Finalizers = nil
	if err := h.store.Update(t.Context(), cur); err != nil {
		t.Fatal(err)
	}

	type seen struct {
		typ  v1alpha1.WatchEventType
		name string
	}
	changes := []seen{{"ADDED", "w"}, {"MODIFIED", "w"}, {"MODIFIED", "w"}, {"DELETED", "w"}}
	for _, tc := range []struct {
		name   string
		stream *watchStream
		want   []seen
	}{
		{name: "from resourceVersion", stream: w, want: changes},
		{name: "from now", stream: all, want: changes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var lastRV uint64
			for i, want := range tc.want {
				ev, meta, ok := tc.stream.next(t)
				if !ok {
					t.Fatalf("event %d: stream ended", i)
				}
				if ev.Type != want.typ || meta.Name != want.name {
					t.Errorf("event %d = %s %q, want %s %q", i, ev.Type, meta.Name, want.typ, want.name)
				}
				rv, err := strconv.ParseUint(meta.ResourceVersion, 10, 64)
				if err != nil || rv < lastRV {
					t.Errorf("event %d rv %q goes back from %d", i, meta.ResourceVersion, lastRV)
				}
				lastRV = rv
			}
		})
	}

	// Shutdown ends open streams and Serve still returns cleanly.
	h.shutdown(t)
	for _, s := range []*watchStream{w, all} {
		if ev, _, ok := s.next(t); ok {
			t.Errorf("after shutdown got %s, want end of stream", ev.Type)
		}
	}
}

func TestWatchBookmark(t *testing.T) {
	h := start(t, harnessOpts{server: server.Options{BookmarkInterval: 20 * time.Millisecond}})
	disks := base + "/namespaces/default/vmdisks"
	created := h.do(t, http.MethodPost, disks, "", diskManifest("b", "1Gi"))
	var d diskResp
	mustJSON(t, created.body, &d)
	w := h.watch(t, disks+"?watch=true&resourceVersion="+d.Metadata.ResourceVersion)
	ev, meta, ok := w.next(t)
	if !ok || ev.Type != v1alpha1.Bookmark {
		t.Fatalf("first event on an idle stream = %s (ok %v), want BOOKMARK", ev.Type, ok)
	}
	if meta.ResourceVersion != d.Metadata.ResourceVersion || meta.Name != "" {
		t.Errorf("bookmark metadata = %+v, want only resourceVersion %s", meta, d.Metadata.ResourceVersion)
	}
}

func TestWatchGone(t *testing.T) {
	h := start(t, harnessOpts{state: state.Options{WatchWindow: 2}})
	disks := base + "/namespaces/default/vmdisks"
	for _, size := range []string{"1Gi", "2Gi", "3Gi", "4Gi", "5Gi"} {
		if r := h.do(t, http.MethodPatch, disks+"/g", server.ApplyPatchContentType, diskManifest("g", size)); r.code >= 300 {
			t.Fatalf("apply: %d %s", r.code, r.body)
		}
	}
	r := h.do(t, http.MethodGet, disks+"?watch=true&resourceVersion=1", "", "")
	if r.code != http.StatusGone {
		t.Fatalf("watch from an expired rv = %d %s, want 410", r.code, r.body)
	}
	if st := mustStatus(t, r); st.Reason != "Expired" || st.Code != http.StatusGone {
		t.Errorf("Status = %+v, want Expired 410", st)
	}
}

func TestListenUnix(t *testing.T) {
	t.Run("mode and group", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "run", "vmd", "vmd.sock")
		gid := os.Getgid()
		if os.Geteuid() == 0 {
			gid = 4242 // root may hand the socket to any group
		}
		l, err := server.ListenUnix(sock, 0, gid)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		fi, err := os.Stat(sock)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o660 || fi.Mode().Type() != os.ModeSocket {
			t.Errorf("socket mode = %v, want socket 0660", fi.Mode())
		}
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok && int(sys.Gid) != gid {
			t.Errorf("socket gid = %d, want %d", sys.Gid, gid)
		}
		di, err := os.Stat(filepath.Dir(sock))
		if err != nil || di.Mode().Perm() != 0o755 {
			t.Errorf("parent dir mode = %v (err %v), want 0755", di.Mode(), err)
		}
	})
	t.Run("explicit mode", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "vmd.sock")
		l, err := server.ListenUnix(sock, 0o600, -1)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if fi, _ := os.Stat(sock); fi.Mode().Perm() != 0o600 {
			t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
		}
	})
	t.Run("stale socket is replaced", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "vmd.sock")
		old, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		old.SetUnlinkOnClose(false) // simulate a crash: the file stays
		old.Close()
		if _, err := os.Stat(sock); err != nil {
			t.Fatalf("stale socket missing: %v", err)
		}
		l, err := server.ListenUnix(sock, 0, -1)
		if err != nil {
			t.Fatalf("ListenUnix over a stale socket: %v", err)
		}
		l.Close()
	})
	t.Run("live daemon is not disturbed", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "vmd.sock")
		first, err := server.ListenUnix(sock, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		defer first.Close()
		_, err = server.ListenUnix(sock, 0, -1)
		if !errors.Is(err, server.ErrDaemonRunning) || !strings.Contains(err.Error(), "another vmd is running on "+sock) {
			t.Fatalf("second ListenUnix error = %v, want 'another vmd is running on %s'", err, sock)
		}
		// The first listener still works.
		go func() {
			if c, err := first.Accept(); err == nil {
				c.Close()
			}
		}()
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatalf("first daemon's socket was disturbed: %v", err)
		}
		c.Close()
	})
	t.Run("regular file is never removed", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "vmd.sock")
		if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := server.ListenUnix(path, 0, -1); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Fatalf("ListenUnix over a file: %v, want a 'not a socket' error", err)
		}
		if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
			t.Errorf("file was touched: %q %v", b, err)
		}
	})
}

func mustJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
}

func mustStatus(t *testing.T, r response) v1alpha1.Status {
	t.Helper()
	var st v1alpha1.Status
	mustJSON(t, r.body, &st)
	return st
}

func mustList(t *testing.T, r response) v1alpha1.List {
	t.Helper()
	if r.code != http.StatusOK {
		t.Fatalf("list = %d %s", r.code, r.body)
	}
	var l v1alpha1.List
	mustJSON(t, r.body, &l)
	return l
}

func itemNames(t *testing.T, l v1alpha1.List) []string {
	t.Helper()
	var out []string
	for _, it := range l.Items {
		var o struct {
			Metadata v1alpha1.ObjectMeta `json:"metadata"`
		}
		mustJSON(t, it, &o)
		out = append(out, o.Metadata.Name)
	}
	return out
}

// slowService holds Get until released, to observe a request in flight.
type slowService struct {
	server.Service
	entered chan struct{}
	release chan struct{}
}

func (s *slowService) Get(ctx context.Context, kind v1alpha1.Kind, ns, name string) (v1alpha1.Object, error) {
	close(s.entered)
	<-s.release
	return s.Service.Get(ctx, kind, ns, name)
}

func TestShutdownFinishesInFlight(t *testing.T) {
	slow := &slowService{entered: make(chan struct{}), release: make(chan struct{})}
	h := start(t, harnessOpts{wrap: func(svc server.Service) server.Service { slow.Service = svc; return slow }})
	if r := h.do(t, http.MethodPost, base+"/namespaces/default/vmdisks", "", diskManifest("d", "1Gi")); r.code != http.StatusCreated {
		t.Fatalf("create: %d %s", r.code, r.body)
	}
	got := make(chan int, 1)
	go func() {
		// Not h.do: t.Fatal must not run outside the test goroutine.
		resp, err := h.client.Get("http://vmd" + base + "/namespaces/default/vmdisks/d")
		if err != nil {
			got <- -1
			return
		}
		resp.Body.Close()
		got <- resp.StatusCode
	}()
	<-slow.entered
	h.stop() // begin shutdown with the GET in flight
	// New connections are refused once the listener is closed.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("unix", h.socket)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("socket still accepts connections during shutdown")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-h.done:
		t.Fatalf("Serve returned (%v) before the in-flight request finished", err)
	default:
	}
	close(slow.release)
	if code := <-got; code != http.StatusOK {
		t.Errorf("in-flight GET = %d, want 200", code)
	}
	select {
	case err := <-h.done:
		if err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	h.stop = nil
}

// failingService fails every List with an unexpected error.
type failingService struct{ server.Service }

func (failingService) List(context.Context, v1alpha1.Kind, string) ([]v1alpha1.Object, string, error) {
	return nil, "", errors.New("reading bucket: checksum mismatch")
}

func TestInternalErrorCarriesMessage(t *testing.T) {
	h := start(t, harnessOpts{wrap: func(svc server.Service) server.Service { return failingService{svc} }})
	r := h.do(t, http.MethodGet, base+"/vmdisks", "", "")
	if r.code != http.StatusInternalServerError {
		t.Fatalf("code = %d, want 500", r.code)
	}
	if st := mustStatus(t, r); st.Reason != "InternalError" || st.Message != "reading bucket: checksum mismatch" {
		t.Errorf("Status = %+v, want InternalError with the cause", st)
	}
}
