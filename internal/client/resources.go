package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

// ObjectList is a decoded list response.
type ObjectList struct {
	// ResourceVersion is the store revision the list was read at; a watch
	// started from it misses no change.
	ResourceVersion string
	// Items are objects of the listed kind, sorted by namespace and name.
	Items []v1alpha1.Object
}

// ApplyResult says what a server-side apply did to the stored object.
type ApplyResult string

// Apply results, as the server reports them in the Vmd-Apply-Result header.
const (
	ApplyCreated    ApplyResult = "created"
	ApplyConfigured ApplyResult = "configured"
	ApplyUnchanged  ApplyResult = "unchanged"
)

// WriteOption modifies a Create, Update or Delete request.
type WriteOption func(*writeOptions)

type writeOptions struct {
	dryRun bool
}

// DryRun makes the server validate and compute the result of a write
// without storing it (`?dryRun=All`).
func DryRun() WriteOption { return func(o *writeOptions) { o.dryRun = true } }

// dryRunQuery returns the query string for a write.
func dryRunQuery(dryRun bool) url.Values {
	if !dryRun {
		return nil
	}
	return url.Values{"dryRun": {"All"}}
}

func collectWriteOptions(opts []WriteOption) writeOptions {
	var o writeOptions
	for _, f := range opts {
		f(&o)
	}
	return o
}

// DecodeObject decodes one object of the given kind from its JSON form.
// Decoding is lenient: a newer server may send fields this client does not
// know, and the strictness that matters is applied server-side to manifests.
func DecodeObject(kind v1alpha1.Kind, data []byte) (v1alpha1.Object, error) {
	obj, err := v1alpha1.NewObject(kind)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, obj); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", kind, err)
	}
	// The server always sends apiVersion and kind, but an object decoded
	// from a partial document (a bookmark) should still say what it is.
	tm := obj.GetTypeMeta()
	if tm.Kind == "" {
		tm.Kind = kind
	}
	if tm.APIVersion == "" {
		tm.APIVersion = v1alpha1.GroupVersion
	}
	return obj, nil
}

// Get returns one object. A missing object is a *StatusError matching
// errdefs.ErrNotFound.
func (c *Client) Get(ctx context.Context, kind v1alpha1.Kind, namespace, name string) (v1alpha1.Object, error) {
	path, err := resourcePath(kind, namespace, name)
	if err != nil {
		return nil, err
	}
	var raw json.RawMessage
	if _, _, err := c.call(ctx, request{method: http.MethodGet, path: path}, &raw); err != nil {
		return nil, err
	}
	return DecodeObject(kind, raw)
}

// GetVMInstance is Get for a VMInstance, typed.
func (c *Client) GetVMInstance(ctx context.Context, namespace, name string) (*v1alpha1.VMInstance, error) {
	obj, err := c.Get(ctx, v1alpha1.KindVMInstance, namespace, name)
	if err != nil {
		return nil, err
	}
	return obj.(*v1alpha1.VMInstance), nil
}

// GetVMDisk is Get for a VMDisk, typed.
func (c *Client) GetVMDisk(ctx context.Context, namespace, name string) (*v1alpha1.VMDisk, error) {
	obj, err := c.Get(ctx, v1alpha1.KindVMDisk, namespace, name)
	if err != nil {
		return nil, err
	}
	return obj.(*v1alpha1.VMDisk), nil
}

// List returns every object of kind in namespace; namespace "" lists all
// namespaces.
func (c *Client) List(ctx context.Context, kind v1alpha1.Kind, namespace string) (*ObjectList, error) {
	path, err := resourcePath(kind, namespace, "")
	if err != nil {
		return nil, err
	}
	var l v1alpha1.List
	if _, _, err := c.call(ctx, request{method: http.MethodGet, path: path}, &l); err != nil {
		return nil, err
	}
	out := &ObjectList{ResourceVersion: l.Metadata.ResourceVersion, Items: make([]v1alpha1.Object, 0, len(l.Items))}
	for i, raw := range l.Items {
		obj, err := DecodeObject(kind, raw)
		if err != nil {
			return nil, fmt.Errorf("decoding item %d of %s list: %w", i, kind.Plural(), err)
		}
		out.Items = append(out.Items, obj)
	}
	return out, nil
}

// Create stores a new object (POST). The namespace is obj's, or "default".
// It returns the object as stored, with uid, resourceVersion and defaults.
func (c *Client) Create(ctx context.Context, obj v1alpha1.Object, opts ...WriteOption) (v1alpha1.Object, error) {
	kind, ns, _, err := objectKey(obj)
	if err != nil {
		return nil, err
	}
	path, err := resourcePath(kind, ns, "")
	if err != nil {
		return nil, err
	}
	return c.writeObject(ctx, http.MethodPost, path, kind, obj, collectWriteOptions(opts))
}

// Update replaces an object (PUT). obj's metadata.resourceVersion is the
// precondition: a stale one fails with a *StatusError matching
// errdefs.ErrConflict, and an empty one is refused by the server.
func (c *Client) Update(ctx context.Context, obj v1alpha1.Object, opts ...WriteOption) (v1alpha1.Object, error) {
	kind, ns, name, err := objectKey(obj)
	if err != nil {
		return nil, err
	}
	path, err := resourcePath(kind, ns, name)
	if err != nil {
		return nil, err
	}
	return c.writeObject(ctx, http.MethodPut, path, kind, obj, collectWriteOptions(opts))
}

func (c *Client) writeObject(ctx context.Context, method, path string, kind v1alpha1.Kind, obj v1alpha1.Object, o writeOptions) (v1alpha1.Object, error) {
	if tm := obj.GetTypeMeta(); tm.Kind == "" || tm.APIVersion == "" {
		// The server reads apiVersion/kind first; fill them in on a copy
		// rather than surprise the caller by mutating its object.
		obj = obj.DeepCopyObject()
		*obj.GetTypeMeta() = v1alpha1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: kind}
	}
	body, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", kind, err)
	}
	var raw json.RawMessage
	req := request{method: method, path: path, query: dryRunQuery(o.dryRun), body: body, contentType: "application/json"}
	if _, _, err := c.call(ctx, req, &raw); err != nil {
		return nil, err
	}
	return DecodeObject(kind, raw)
}

// Apply is server-side apply: raw is one manifest document exactly as the
// user wrote it (YAML or JSON). The server creates the object or merges the
// document into the stored one, and reports which in the result. With
// dryRun the server validates and answers without storing.
func (c *Client) Apply(ctx context.Context, kind v1alpha1.Kind, namespace, name string, raw []byte, dryRun bool) (v1alpha1.Object, ApplyResult, error) {
	if namespace == "" {
		namespace = v1alpha1.DefaultNamespace
	}
	if name == "" {
		return nil, "", fmt.Errorf("applying %s: metadata.name is required", kind)
	}
	path, err := resourcePath(kind, namespace, name)
	if err != nil {
		return nil, "", err
	}
	var body json.RawMessage
	req := request{method: http.MethodPatch, path: path, query: dryRunQuery(dryRun), body: raw, contentType: ApplyPatchContentType}
	hdr, code, err := c.call(ctx, req, &body)
	if err != nil {
		return nil, "", err
	}
	obj, err := DecodeObject(kind, body)
	if err != nil {
		return nil, "", err
	}
	result := ApplyResult(hdr.Get(ApplyResultHeader))
	switch result {
	case ApplyCreated, ApplyConfigured, ApplyUnchanged:
	default:
		// An older or foreign server: the status code still tells
		// created from updated.
		result = ApplyConfigured
		if code == http.StatusCreated {
			result = ApplyCreated
		}
	}
	return obj, result, nil
}

// Delete requests deletion and returns the object as the server left it.
// An object with finalizers comes back with deletionTimestamp set and
// disappears later, once the controller has released its host resources;
// use WaitFor (or WaitForDeletion) to wait for that.
func (c *Client) Delete(ctx context.Context, kind v1alpha1.Kind, namespace, name string, opts ...WriteOption) (v1alpha1.Object, error) {
	path, err := resourcePath(kind, namespace, name)
	if err != nil {
		return nil, err
	}
	o := collectWriteOptions(opts)
	var raw json.RawMessage
	if _, _, err := c.call(ctx, request{method: http.MethodDelete, path: path, query: dryRunQuery(o.dryRun)}, &raw); err != nil {
		return nil, err
	}
	// Some servers answer a completed delete with a Status rather than
	// the object; that is success too.
	var probe struct {
		Kind string `json:"kind"`
	}
	if json.Unmarshal(raw, &probe) == nil && probe.Kind == "Status" {
		return nil, nil
	}
	return DecodeObject(kind, raw)
}

// objectKey returns kind, namespace (defaulted) and name of obj.
func objectKey(obj v1alpha1.Object) (v1alpha1.Kind, string, string, error) {
	if obj == nil {
		return "", "", "", fmt.Errorf("object is nil")
	}
	kind := obj.GetTypeMeta().Kind
	if kind == "" {
		switch obj.(type) {
		case *v1alpha1.VMInstance:
			kind = v1alpha1.KindVMInstance
		case *v1alpha1.VMDisk:
			kind = v1alpha1.KindVMDisk
		}
	}
	m := obj.GetObjectMeta()
	ns := m.Namespace
	if ns == "" {
		ns = v1alpha1.DefaultNamespace
	}
	if kind.Plural() == "" {
		return "", "", "", fmt.Errorf("object %q has unknown kind %q", m.Name, kind)
	}
	return kind, ns, m.Name, nil
}
