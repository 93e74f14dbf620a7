package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// decodeJSON decodes one document already converted to JSON: identity
// first, then the strict walk, then the typed unmarshal.
func decodeJSON(j []byte) (v1alpha1.Object, error) {
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber() // keep integers exact for range checks
	var top any
	if err := dec.Decode(&top); err != nil {
		return nil, &SyntaxError{Msg: "parsing document: " + err.Error()}
	}
	m, ok := top.(map[string]any)
	if !ok {
		return nil, &SyntaxError{Msg: fmt.Sprintf("a manifest must be a mapping at the top level, not %s", jsonType(top))}
	}
	_, name, _ := peek(j)

	kind, errs := readTypeMeta(m)
	if len(errs) > 0 {
		k := string(kind)
		if k == "" {
			k = "object"
		}
		return nil, errdefs.NewInvalid(k, name, errs)
	}
	obj, err := v1alpha1.NewObject(kind)
	if err != nil {
		return nil, err // unreachable: readTypeMeta accepted the kind
	}

	// status belongs to the daemon: it must be an object (so a mangled
	// file is noticed) and is otherwise ignored.
	if st, ok := m["status"]; ok {
		if _, isObj := st.(map[string]any); !isObj && st != nil {
			errs = append(errs, typeError(field.NewPath("status"), st, "object"))
		}
		delete(m, "status")
	}
	w := walker{}
	w.walk(m, reflect.TypeOf(obj).Elem(), nil)
	errs = append(errs, w.errs...)
	if len(errs) > 0 {
		// Hand back what a lenient decode makes of the document too, so
		// the caller can validate it and report every error in one answer
		// (unknown fields *and* bad values). Only when the lenient decode
		// fails (a type mismatch) is the object nil.
		var partial v1alpha1.Object
		if lenient, err := v1alpha1.NewObject(kind); err == nil {
			if clean, err := json.Marshal(m); err == nil && json.Unmarshal(clean, lenient) == nil {
				partial = lenient
			}
		}
		return partial, errdefs.NewInvalid(string(kind), name, errs)
	}

	// The walk proved the shape; encoding/json now does the conversion,
	// honouring the types' own UnmarshalJSON methods.
	clean, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("re-encoding %s %q: %w", kind, name, err)
	}
	if err := json.Unmarshal(clean, obj); err != nil {
		return nil, &SyntaxError{Msg: fmt.Sprintf("decoding %s %q: %v", kind, name, err)}
	}
	return obj, nil
}

// readTypeMeta checks apiVersion and kind before anything else, because
// the kind decides which schema the rest is checked against.
func readTypeMeta(m map[string]any) (v1alpha1.Kind, field.ErrorList) {
	var errs field.ErrorList
	avPath, kindPath := field.NewPath("apiVersion"), field.NewPath("kind")
	switch av := m["apiVersion"].(type) {
	case nil:
		errs = append(errs, field.Required(avPath, "must be "+v1alpha1.GroupVersion))
	case string:
		if av != v1alpha1.GroupVersion {
			errs = append(errs, field.NotSupported(avPath, av, []string{v1alpha1.GroupVersion}))
		}
	default:
		errs = append(errs, typeError(avPath, av, "string"))
	}
	var kind v1alpha1.Kind
	switch k := m["kind"].(type) {
	case nil:
		errs = append(errs, field.Required(kindPath, "must be one of "+kindList()))
	case string:
		kind = v1alpha1.Kind(k)
		if kind != v1alpha1.KindVMInstance && kind != v1alpha1.KindVMDisk {
			errs = append(errs, field.NotSupported(kindPath, k, v1alpha1.Kinds))
		}
	default:
		errs = append(errs, typeError(kindPath, k, "string"))
	}
	return kind, errs
}

// kindList names the served kinds for messages.
func kindList() string {
	s := make([]string, len(v1alpha1.Kinds))
	for i, k := range v1alpha1.Kinds {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}

// Types whose JSON form is not what their Go kind suggests; they have
// their own UnmarshalJSON and the walker knows what each accepts.
var (
	quantityType   = reflect.TypeOf(v1alpha1.Quantity(""))
	diskRefType    = reflect.TypeOf(v1alpha1.DiskRef{})
	timeType       = reflect.TypeOf(v1alpha1.Time{})
	diskSourceType = reflect.TypeOf(v1alpha1.DiskSource{})
	unmarshalerT   = reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()
)

// walker compares a decoded JSON value with a Go type by reflection over
// json tags and collects every difference with its path.
type walker struct {
	errs field.ErrorList
}

// walk checks v (from encoding/json with UseNumber) against t. A nil path
// is the document root.
func (w *walker) walk(v any, t reflect.Type, p *field.Path) {
	if v == nil {
		return // null: the field stays unset, as encoding/json does
	}
	switch t {
	case quantityType:
		switch v.(type) {
		case string, json.Number:
		default:
			w.errs = append(w.errs, typeError(p, v, "string or number"))
		}
		return
	case timeType:
		s, ok := v.(string)
		if !ok {
			w.errs = append(w.errs, typeError(p, v, "string"))
			return
		}
		if s != "" {
			if _, err := time.Parse(time.RFC3339, s); err != nil {
				w.errs = append(w.errs, field.Invalid(p, s, "must be an RFC 3339 time such as 2024-05-01T10:00:00Z"))
			}
		}
		return
	case diskRefType:
		switch dv := v.(type) {
		case string:
		case map[string]any:
			w.walkStruct(dv, t, p)
		default:
			w.errs = append(w.errs, typeError(p, v, "string or object"))
		}
		return
	}
	if t.Kind() != reflect.Pointer && t.Kind() != reflect.Struct && reflect.PointerTo(t).Implements(unmarshalerT) {
		return // a custom type this walker does not know: let it judge
	}

	switch t.Kind() {
	case reflect.Pointer:
		w.walk(v, t.Elem(), p)
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			w.errs = append(w.errs, typeError(p, v, "object"))
			return
		}
		w.walkStruct(m, t, p)
	case reflect.Slice:
		arr, ok := v.([]any)
		if !ok {
			w.errs = append(w.errs, typeError(p, v, "list"))
			return
		}
		for i, e := range arr {
			ip := p.Index(i)
			if e == nil {
				w.errs = append(w.errs, typeError(ip, e, describe(t.Elem())))
				continue
			}
			w.walk(e, t.Elem(), ip)
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			w.errs = append(w.errs, typeError(p, v, "object"))
			return
		}
		for _, k := range sortedKeys(m) {
			kp := child(p, k)
			if m[k] == nil {
				w.errs = append(w.errs, typeError(kp, nil, describe(t.Elem())))
				continue
			}
			w.walk(m[k], t.Elem(), kp)
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			w.errs = append(w.errs, typeError(p, v, "string"))
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			w.errs = append(w.errs, typeError(p, v, "boolean"))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			w.errs = append(w.errs, typeError(p, v, "integer"))
			return
		}
		if _, err := strconv.ParseInt(n.String(), 10, t.Bits()); err != nil {
			w.errs = append(w.errs, numberError(p, n, err))
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(json.Number)
		if !ok {
			w.errs = append(w.errs, typeError(p, v, "integer"))
			return
		}
		if _, err := strconv.ParseUint(n.String(), 10, t.Bits()); err != nil {
			w.errs = append(w.errs, numberError(p, n, err))
		}
	case reflect.Float32, reflect.Float64:
		if _, ok := v.(json.Number); !ok {
			w.errs = append(w.errs, typeError(p, v, "number"))
		}
	case reflect.Interface:
		// Anything goes (json.RawMessage-like holes).
	default:
		w.errs = append(w.errs, field.InternalError(p, fmt.Errorf("no strict decoding rule for Go type %s", t)))
	}
}

// walkStruct checks an object against a struct: every key must be a field,
// every value must fit its field.
func (w *walker) walkStruct(m map[string]any, t reflect.Type, p *field.Path) {
	fields := fieldsOf(t)
	for _, k := range sortedKeys(m) {
		kp := child(p, k)
		ft, ok := fields[k]
		if !ok {
			w.errs = append(w.errs, unknownField(kp, k, fields))
			continue
		}
		// A source member written as `upload:` (YAML null) would silently
		// become a blank disk; make the user write `upload: {}`.
		if t == diskSourceType && m[k] == nil {
			w.errs = append(w.errs, field.Invalid(kp, field.OmitValueType{}, fmt.Sprintf("must be an object, not null; write `%s: {}` for an empty one", k)))
			continue
		}
		w.walk(m[k], ft, kp)
	}
}

// unknownField reports a key the type does not have. It suggests the
// closest known field when the key looks like a typo of one (instancetype,
// storageClas, disk); otherwise it lists the known fields.
func unknownField(p *field.Path, key string, fields map[string]reflect.Type) *field.Error {
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	sort.Strings(names)
	best, bestDist := "", 3 // suggest only within two edits
	for _, name := range names {
		d := editDistance(strings.ToLower(key), strings.ToLower(name))
		if d < bestDist {
			best, bestDist = name, d
		}
	}
	switch {
	case best != "":
		return field.Forbidden(p, fmt.Sprintf("unknown field; did you mean %q?", best))
	case len(names) > 0:
		return field.Forbidden(p, "unknown field (known fields: "+strings.Join(names, ", ")+")")
	}
	return field.Forbidden(p, "unknown field (this object takes no fields)")
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// fieldCache memoises fieldsOf per struct type.
var fieldCache sync.Map // reflect.Type -> map[string]reflect.Type

// fieldsOf maps the JSON names of a struct's fields to their types, with
// the fields of embedded structs promoted as encoding/json does.
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	if f, ok := fieldCache.Load(t); ok {
		return f.(map[string]reflect.Type)
	}
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			for k, v := range fieldsOf(f.Type) {
				out[k] = v
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	fieldCache.Store(t, out)
	return out
}

// child extends a path; a nil path is the root.
func child(p *field.Path, name string) *field.Path {
	if p == nil {
		return field.NewPath(name)
	}
	return p.Child(name)
}

// typeError reports a value of the wrong JSON type.
func typeError(p *field.Path, v any, want string) *field.Error {
	return field.TypeInvalid(p, badValue(v), fmt.Sprintf("invalid type: expected %s, got %s", want, jsonType(v)))
}

// numberError reports a number that does not fit an integer field.
func numberError(p *field.Path, n json.Number, err error) *field.Error {
	if errors.Is(err, strconv.ErrRange) {
		return field.Invalid(p, n, "out of range")
	}
	return field.TypeInvalid(p, n, "invalid type: expected integer, got a fractional number")
}

// badValue keeps scalars for the message and omits composites, whose Go
// rendering would only confuse.
func badValue(v any) any {
	switch v.(type) {
	case string, bool, json.Number:
		return v
	}
	return field.OmitValueType{}
}

// describe names what a Go type expects, for null elements.
func describe(t reflect.Type) string {
	switch t {
	case quantityType:
		return "string or number"
	case diskRefType:
		return "string or object"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice:
		return "list"
	}
	return "object"
}

// jsonType names the JSON type of a decoded value.
func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case json.Number:
		return "number"
	case []any:
		return "list"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// sortedKeys returns the keys of m in order, so errors come out stable.
func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
