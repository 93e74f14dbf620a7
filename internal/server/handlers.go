package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/manifest"
	"github.com/vmdhq/vmd/internal/registry"
)

// refKey is the echo context key under which handlers record the object a
// request is about, so the error handler can fill Status.details.
const refKey = "vmd.objectRef"

// ApplyResultHeader carries the outcome of a server-side apply
// (created|configured|unchanged); the status code alone cannot tell
// configured from unchanged.
const ApplyResultHeader = "Vmd-Apply-Result"

// ApplyPatchContentType is the only PATCH body type accepted: a full
// manifest to apply, as kubectl's server-side apply sends. Merge patches
// are refused rather than half-supported.
const ApplyPatchContentType = "application/apply-patch+yaml"

// resource resolves :plural, records the object reference and returns the
// kind. Only the two served plurals are accepted.
func resource(c echo.Context) (v1alpha1.Kind, error) {
	plural := c.Param("plural")
	for _, k := range v1alpha1.Kinds {
		if k.Plural() == plural {
			c.Set(refKey, objectRef{kind: k, name: c.Param("name")})
			return k, nil
		}
	}
	return "", &requestError{
		code:    http.StatusNotFound,
		reason:  v1alpha1.StatusReasonNotFound,
		message: fmt.Sprintf("the server could not find the requested resource %q", plural),
	}
}

// dryRun reads ?dryRun=All. Kubernetes accepts only "All"; anything else is
// refused so a typo never turns a dry run into a real write.
func dryRun(values []string) (bool, error) {
	for _, v := range values {
		if v != "All" {
			return false, badRequest(fmt.Sprintf("invalid dryRun value %q: only \"All\" is supported", v))
		}
	}
	return len(values) > 0, nil
}

// list serves GET on a collection, or a watch with ?watch=true.
func (s *Server) list(c echo.Context) error {
	kind, err := resource(c)
	if err != nil {
		return err
	}
	ns := c.Param("ns")
	if w := c.QueryParam("watch"); w == "true" || w == "1" {
		return s.watch(c, kind, ns, c.QueryParam("resourceVersion"))
	}
	objs, rv, err := s.svc.List(c.Request().Context(), kind, ns)
	if err != nil {
		return err
	}
	list := v1alpha1.List{
		TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: kind + "List"},
		Metadata: v1alpha1.ListMeta{ResourceVersion: rv},
		Items:    make([]json.RawMessage, 0, len(objs)),
	}
	for _, o := range objs {
		b, err := json.Marshal(o)
		if err != nil {
			return fmt.Errorf("encoding %s: %w", o.GetObjectMeta().Name, err)
		}
		list.Items = append(list.Items, b)
	}
	return c.JSON(http.StatusOK, list)
}

// get serves GET on one object.
func (s *Server) get(c echo.Context) error {
	kind, err := resource(c)
	if err != nil {
		return err
	}
	obj, err := s.svc.Get(c.Request().Context(), kind, c.Param("ns"), c.Param("name"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, obj)
}

// create serves POST on a collection.
func (s *Server) create(c echo.Context) error {
	kind, err := resource(c)
	if err != nil {
		return err
	}
	dry, err := dryRun(c.QueryParams()["dryRun"])
	if err != nil {
		return err
	}
	obj, err := s.decodeBody(c, kind)
	if err != nil {
		return err
	}
	c.Set(refKey, objectRef{kind: kind, name: obj.GetObjectMeta().Name})
	out, err := s.svc.Create(c.Request().Context(), obj, registry.WriteOptions{DryRun: dry})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, out)
}

// update serves PUT: a full replacement under an optional resourceVersion
// precondition.
func (s *Server) update(c echo.Context) error {
	kind, err := resource(c)
	if err != nil {
		return err
	}
	dry, err := dryRun(c.QueryParams()["dryRun"])
	if err != nil {
		return err
	}
	obj, err := s.decodeBody(c, kind)
	if err != nil {
		return err
	}
	out, err := s.svc.Update(c.Request().Context(), obj, registry.WriteOptions{DryRun: dry})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

// apply serves PATCH with an apply-patch body: create or update.
func (s *Server) apply(c echo.Context) error {
	kind, err := resource(c)
	if err != nil {
		return err
	}
	ct := c.Request().Header.Get(echo.HeaderContentType)
	if mt, _, _ := mime.ParseMediaType(ct); mt != ApplyPatchContentType {
		return &requestError{
			code:    http.StatusUnsupportedMediaType,
			reason:  v1alpha1.StatusReasonUnsupportedMediaType,
			message: fmt.Sprintf("unsupported patch type %q: only %s (server-side apply of a full manifest) is supported", ct, ApplyPatchContentType),
		}
	}
	dry, err := dryRun(c.QueryParams()["dryRun"])
	if err != nil {
		return err
	}
	obj, err := s.decodeBody(c, kind)
	if err != nil {
		return err
	}
	out, res, err := s.svc.Apply(c.Request().Context(), obj, registry.WriteOptions{DryRun: dry})
	if err != nil {
		return err
	}
	c.Response().Header().Set(ApplyResultHeader, string(res))
	code := http.StatusOK
	if res == registry.ApplyCreated {
		code = http.StatusCreated
	}
	return c.JSON(code, out)
}

// deleteOptions is the subset of Kubernetes' DeleteOptions body vmd reads.
type deleteOptions struct {
	Preconditions *struct {
		ResourceVersion *string `json:"resourceVersion"`
	} `json:"preconditions"`
	DryRun []string `json:"dryRun"`
}

// delete serves DELETE. The resourceVersion precondition may come as the
// ?resourceVersion= parameter or in a DeleteOptions body (what kubectl
// sends); both at once must agree.
func (s *Server) delete(c echo.Context) error {
	kind, err := resource(c)
	if err != nil {
		return err
	}
	dryValues := c.QueryParams()["dryRun"]
	rv := c.QueryParam("resourceVersion")
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		var do deleteOptions
		if err := yaml.Unmarshal(body, &do); err != nil {
			return badRequest(fmt.Sprintf("decoding delete options: %v", err))
		}
		if do.Preconditions != nil && do.Preconditions.ResourceVersion != nil {
			brv := *do.Preconditions.ResourceVersion
			if rv != "" && brv != rv {
				return badRequest(fmt.Sprintf("resourceVersion %q in the body does not match %q in the query", brv, rv))
			}
			rv = brv
		}
		dryValues = append(dryValues, do.DryRun...)
	}
	dry, err := dryRun(dryValues)
	if err != nil {
		return err
	}
	out, err := s.svc.Delete(c.Request().Context(), kind, c.Param("ns"), c.Param("name"),
		registry.DeleteOptions{DryRun: dry, PreconditionRV: rv})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

// readBody reads the whole request body within MaxBodyBytes.
func (s *Server) readBody(c echo.Context) ([]byte, error) {
	r := c.Request()
	if r.Body == nil {
		return nil, nil
	}
	b, err := io.ReadAll(http.MaxBytesReader(c.Response(), r.Body, s.opts.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, fmt.Errorf("request body larger than %d bytes: %w", mbe.Limit, err)
		}
		return nil, badRequest(fmt.Sprintf("reading request body: %v", err))
	}
	return b, nil
}

// decodeBody strictly decodes one manifest (YAML or JSON) and checks it
// against the URL: the kind must match :plural, metadata.namespace (when
// set) must equal :ns, and metadata.name must equal :name on PUT and
// PATCH. An empty namespace or name is taken from the URL.
func (s *Server) decodeBody(c echo.Context, kind v1alpha1.Kind) (v1alpha1.Object, error) {
	body, err := s.readBody(c)
	if err != nil {
		return nil, err
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return nil, badRequest("request body is empty: expected a " + string(kind) + " manifest")
	}
	obj, err := manifest.Decode(body)
	if err != nil {
		// Field-level problems (unknown field, wrong type) are 422 with
		// causes, like validation errors; input that is not a manifest at
		// all (a YAML syntax error, two documents) is a 400.
		if inv := (*errdefs.InvalidError)(nil); errors.As(err, &inv) {
			if obj != nil {
				// Report bad values with the unknown fields in one go.
				inv.Errors = mergeFieldErrors(inv.Errors, s.svc.Check(obj))
			}
			return nil, err
		}
		return nil, badRequest(fmt.Sprintf("decoding body: %v", err))
	}
	if got := obj.GetTypeMeta().Kind; got != kind {
		return nil, badRequest(fmt.Sprintf("kind %q in the body does not match the resource %q in the URL", got, kind.Plural()))
	}
	m := obj.GetObjectMeta()
	ns, name := c.Param("ns"), c.Param("name")
	switch m.Namespace {
	case "":
		m.Namespace = ns
	case ns:
	default:
		return nil, badRequest(fmt.Sprintf("metadata.namespace %q in the body does not match the namespace %q in the URL", m.Namespace, ns))
	}
	if name != "" {
		switch m.Name {
		case "":
			m.Name = name
		case name:
		default:
			return nil, badRequest(fmt.Sprintf("metadata.name %q in the body does not match the name %q in the URL", m.Name, name))
		}
	}
	return obj, nil
}

// mergeFieldErrors appends the validation errors that do not concern a
// path the decoder already reported (or one below it), so a dropped
// unknown field never shows up twice.
func mergeFieldErrors(decode, validate field.ErrorList) field.ErrorList {
	out := decode
	for _, v := range validate {
		dup := false
		for _, d := range decode {
			if v.Field == d.Field || strings.HasPrefix(v.Field, d.Field+".") || strings.HasPrefix(v.Field, d.Field+"[") {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, v)
		}
	}
	return out
}
