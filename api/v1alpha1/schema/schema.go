// Package schema derives JSON Schemas of the v1alpha1 manifests from the Go
// types: structure by reflection, descriptions from the doc comments,
// defaults by running the real defaulting code on an empty object. Deriving
// them keeps the published schema from drifting away from what vmd accepts.
package schema

//go:generate go run gen.go

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"reflect"
	"strings"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

// Schema is one JSON Schema node.
type Schema = map[string]any

// Generate returns the schemas keyed by file name ("vminstance.json",
// "vmdisk.json"). srcDir is the directory of package v1alpha1, read for
// doc comments.
func Generate(srcDir string) (map[string]Schema, error) {
	docs, err := fieldDocs(srcDir)
	if err != nil {
		return nil, err
	}
	g := &generator{docs: docs}
	out := map[string]Schema{}
	for _, k := range v1alpha1.Kinds {
		obj, err := v1alpha1.NewObject(k)
		if err != nil {
			return nil, err
		}
		// Defaults come from the real defaulting code.
		def, err := v1alpha1.NewObject(k)
		if err != nil {
			return nil, err
		}
		v1alpha1.SetDefaults(def)
		defaults, err := specDefaults(def)
		if err != nil {
			return nil, err
		}
		t := reflect.TypeOf(obj).Elem()
		specField, _ := t.FieldByName("Spec")
		spec := g.schemaFor(specField.Type)
		applyDefaults(spec, defaults)
		s := Schema{
			"$schema":              "https://json-schema.org/draft/2020-12/schema",
			"$id":                  "https://vmd.cozystack.io/schema/v1alpha1/" + strings.ToLower(string(k)) + ".json",
			"title":                string(k),
			"description":          g.typeDoc(t),
			"type":                 "object",
			"additionalProperties": false,
			"required":             []string{"apiVersion", "kind", "metadata"},
			"properties": Schema{
				"apiVersion": Schema{"const": v1alpha1.GroupVersion},
				"kind":       Schema{"const": string(k)},
				"metadata":   metadataSchema(k),
				"spec":       spec,
				"status":     Schema{"description": "Written by vmd; ignored when applied.", "type": "object"},
			},
		}
		out[strings.ToLower(string(k))+".json"] = s
	}
	return out, nil
}

func metadataSchema(k v1alpha1.Kind) Schema {
	strMap := Schema{"type": "object", "additionalProperties": Schema{"type": "string"}}
	return Schema{
		"type":     "object",
		"required": []string{"name"},
		"properties": Schema{
			"name": Schema{
				"description": "DNS-1035 label; the length limit is Cozystack's (Helm release name minus prefix).",
				"type":        "string", "pattern": "^[a-z]([-a-z0-9]*[a-z0-9])?$", "maxLength": k.MaxNameLength(),
			},
			"namespace":   Schema{"description": "The tenant; default \"default\".", "type": "string"},
			"labels":      strMap,
			"annotations": strMap,
		},
		// Server-owned fields (uid, resourceVersion, ...) may come back from
		// `vmctl get -o yaml`; they are accepted and ignored.
		"additionalProperties": true,
	}
}

type generator struct {
	docs map[string]map[string]string // type name -> field name -> doc
}

func (g *generator) typeDoc(t reflect.Type) string {
	return g.docs[t.Name()][""]
}

// schemaFor maps a Go type to its JSON Schema, honouring the custom JSON
// forms of Quantity, DiskRef and Time.
func (g *generator) schemaFor(t reflect.Type) Schema {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t {
	case reflect.TypeOf(v1alpha1.Quantity("")):
		return Schema{"anyOf": []Schema{{"type": "string"}, {"type": "integer"}}, "x-kubernetes-int-or-string": true}
	case reflect.TypeOf(v1alpha1.Time{}):
		return Schema{"type": "string", "format": "date-time"}
	case reflect.TypeOf(v1alpha1.RunStrategy("")):
		return Schema{"type": "string", "enum": v1alpha1.RunStrategies}
	case reflect.TypeOf(v1alpha1.ExternalMethod("")):
		return Schema{"type": "string", "enum": v1alpha1.ExternalMethods}
	case reflect.TypeOf(v1alpha1.DiskRef{}):
		return Schema{"anyOf": []Schema{{"type": "string", "description": "VMDisk name (Hikube form)"}, g.object(t)}}
	}
	switch t.Kind() {
	case reflect.Struct:
		return g.object(t)
	case reflect.Slice:
		return Schema{"type": "array", "items": g.schemaFor(t.Elem())}
	case reflect.Map:
		return Schema{"type": "object", "additionalProperties": g.schemaFor(t.Elem())}
	case reflect.String:
		return Schema{"type": "string"}
	case reflect.Bool:
		return Schema{"type": "boolean"}
	case reflect.Int, reflect.Int32, reflect.Int64:
		return Schema{"type": "integer"}
	}
	return Schema{}
}

func (g *generator) object(t reflect.Type) Schema {
	props := Schema{}
	var required []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || name == "" {
			continue
		}
		s := g.schemaFor(f.Type)
		if d := g.docs[t.Name()][f.Name]; d != "" {
			s["description"] = d
		}
		props[name] = s
		if !strings.Contains(opts, "omitempty") && f.Type.Kind() != reflect.Pointer && f.Type.Kind() != reflect.Struct {
			required = append(required, name)
		}
	}
	s := Schema{"type": "object", "additionalProperties": false, "properties": props}
	if d := g.typeDoc(t); d != "" {
		s["description"] = d
	}
	if len(required) > 0 {
		s["required"] = required
	}
	return s
}

// Marshal renders a schema the way the committed files are written:
// indented, without HTML escaping (descriptions contain <name>).
func Marshal(s Schema) ([]byte, error) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s); err != nil {
		return nil, err
	}
	return []byte(b.String()), nil
}

// specDefaults returns the defaulted spec of obj as generic JSON.
func specDefaults(obj v1alpha1.Object) (map[string]any, error) {
	b, err := obj.SpecJSON()
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}

func applyDefaults(spec Schema, defaults map[string]any) {
	props, _ := spec["properties"].(Schema)
	for k, v := range defaults {
		if p, ok := props[k].(Schema); ok {
			if m, isMap := v.(map[string]any); isMap && len(m) == 0 {
				continue // an empty object (blank source) says nothing useful
			}
			p["default"] = v
		}
	}
}

// fieldDocs parses the package's Go files and returns the doc comment of
// every struct type ("" key) and of each of its fields.
func fieldDocs(dir string) (map[string]map[string]string, error) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, dir, func(fi fs.FileInfo) bool {
		return !strings.HasSuffix(fi.Name(), "_test.go")
	}, parser.ParseComments)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", dir, err)
	}
	out := map[string]map[string]string{}
	for _, p := range pkgs {
		for _, f := range p.Files {
			for _, decl := range f.Decls {
				gd, ok := decl.(*ast.GenDecl)
				if !ok || gd.Tok != token.TYPE {
					continue
				}
				for _, spec := range gd.Specs {
					ts := spec.(*ast.TypeSpec)
					m := map[string]string{}
					d := ts.Doc
					if d == nil {
						d = gd.Doc
					}
					m[""] = clean(d)
					if st, ok := ts.Type.(*ast.StructType); ok {
						for _, fld := range st.Fields.List {
							for _, n := range fld.Names {
								m[n.Name] = clean(fld.Doc)
							}
						}
					}
					out[ts.Name.Name] = m
				}
			}
		}
	}
	return out, nil
}

func clean(cg *ast.CommentGroup) string {
	if cg == nil {
		return ""
	}
	return strings.Join(strings.Fields(cg.Text()), " ")
}
