// Package manifest reads VMInstance and VMDisk manifests the way kubectl
// users expect: multi-document YAML (or JSON), apiVersion and kind read
// first, then a strict decode that reports every unknown field and every
// type mismatch at once, each with its field path.
//
// Strictness is the point: Cozystack accepts `size: 100Gi` on a VMDisk (a
// field that does not exist) and silently creates a 5Gi disk. Here that
// manifest fails with `spec.size: Forbidden: unknown field`.
//
// Decoding does not default or validate; callers run v1alpha1.SetDefaults
// and v1alpha1.Validate afterwards.
package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
	"sigs.k8s.io/yaml"
)

// Document is one non-empty document of a YAML stream, with the identity
// read from it before any strict decoding, so a caller can say which object
// a later error belongs to.
type Document struct {
	// Raw is the document's text as written (YAML or JSON); Decode(Raw)
	// decodes it.
	Raw []byte
	// Index is the 0-based position among the stream's non-empty
	// documents (empty documents and comment-only ones are skipped).
	Index int
	// TypeMeta, Name and Namespace are read leniently: a missing or
	// non-string value is left empty here and reported by Decode.
	TypeMeta  v1alpha1.TypeMeta
	Name      string
	Namespace string
}

// DocumentError places an error in a multi-document stream. Line is the
// 1-based line of the stream where the document starts.
type DocumentError struct {
	// Index is the 0-based position among non-empty documents.
	Index int
	// Line is where the document starts in the stream (1-based).
	Line int
	// Err is what went wrong: a *SyntaxError or *errdefs.InvalidError.
	Err error
}

// Error names the document by its 1-based number, as people count.
func (e *DocumentError) Error() string {
	return fmt.Sprintf("document %d (line %d): %v", e.Index+1, e.Line, e.Err)
}

// Unwrap lets errors.As find an *errdefs.InvalidError inside.
func (e *DocumentError) Unwrap() error { return e.Err }

// SyntaxError is input that is not YAML or JSON, or has duplicate keys. It
// matches errdefs.ErrInvalid, so the server answers 400 (not 500).
type SyntaxError struct {
	Msg string
}

// Error returns the parser's message.
func (e *SyntaxError) Error() string { return e.Msg }

// Is makes errors.Is(err, errdefs.ErrInvalid) true.
func (e *SyntaxError) Is(target error) bool { return target == errdefs.ErrInvalid }

// document is a Document plus what decoding needs: the JSON form and the
// line it starts on.
type document struct {
	Document
	json []byte
	line int
}

// SplitDocuments splits a stream at `---` lines, skips documents that are
// empty or hold only comments, and reads apiVersion, kind, metadata.name
// and metadata.namespace of each. It fails on the first document that is
// not well-formed YAML, naming it.
func SplitDocuments(data []byte) ([]Document, error) {
	docs, err := split(data)
	if err != nil {
		return nil, err
	}
	out := make([]Document, len(docs))
	for i := range docs {
		out[i] = docs[i].Document
	}
	return out, nil
}

// Decode decodes exactly one document strictly. Unknown fields, type
// mismatches and bad apiVersion/kind come back together as one
// *errdefs.InvalidError. A `status` section is checked to be an object and
// then dropped: clients send back what `get -o yaml` printed, and status
// is the daemon's to write. (Read server responses with encoding/json, not
// with Decode.)
//
// On field-level errors (*errdefs.InvalidError) Decode may also return a
// non-nil object: the document decoded leniently, unknown fields dropped.
// It is for collecting validation errors alongside the decode errors and
// must never be stored.
func Decode(data []byte) (v1alpha1.Object, error) {
	docs, err := split(data)
	if err != nil {
		return nil, err
	}
	switch len(docs) {
	case 0:
		return nil, &SyntaxError{Msg: "no document: the input is empty"}
	case 1:
		return decodeJSON(docs[0].json)
	}
	return nil, &SyntaxError{Msg: fmt.Sprintf("expected one document, found %d", len(docs))}
}

// DecodeAll decodes every document of a stream strictly. It is all or
// nothing: when any document fails it returns no objects and an error
// joining one *DocumentError per bad document, so a user sees every problem
// of a file in one go.
func DecodeAll(data []byte) ([]v1alpha1.Object, error) {
	docs, err := split(data)
	if err != nil {
		return nil, err
	}
	objs := make([]v1alpha1.Object, 0, len(docs))
	var errs []error
	for _, d := range docs {
		obj, err := decodeJSON(d.json)
		if err != nil {
			errs = append(errs, &DocumentError{Index: d.Index, Line: d.line, Err: err})
			continue
		}
		objs = append(objs, obj)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return objs, nil
}

// split cuts the stream into documents, converts each to JSON (rejecting
// duplicate keys) and peeks at its identity.
func split(data []byte) ([]document, error) {
	var docs []document
	for _, c := range cutDocuments(data) {
		j, err := yaml.YAMLToJSONStrict(c.text)
		if err != nil {
			return nil, &DocumentError{Index: len(docs), Line: c.line, Err: &SyntaxError{Msg: shiftLines(err.Error(), c.line)}}
		}
		j = bytes.TrimSpace(j)
		if len(j) == 0 || string(j) == "null" {
			continue
		}
		d := document{Document: Document{Raw: c.text, Index: len(docs)}, json: j, line: c.line}
		d.TypeMeta, d.Name, d.Namespace = peek(j)
		docs = append(docs, d)
	}
	return docs, nil
}

// chunk is the text of one document and its first line in the stream.
type chunk struct {
	text []byte
	line int
}

// cutDocuments splits at document markers. By the YAML spec a `---` or
// `...` at the start of a line always ends a document, even inside a block
// scalar, so splitting by lines is exact. Text after `---` on the same line
// (`--- {a: 1}`, `--- |`) belongs to the new document.
func cutDocuments(data []byte) []chunk {
	var out []chunk
	cur := chunk{line: 1}
	lineNo := 0
	for len(data) > 0 {
		lineNo++
		i := bytes.IndexByte(data, '\n')
		var line []byte
		if i < 0 {
			line, data = data, nil
		} else {
			line, data = data[:i+1], data[i+1:]
		}
		trimmed := bytes.TrimRight(line, " \t\r\n")
		switch {
		case bytes.Equal(trimmed, []byte("---")) || bytes.HasPrefix(line, []byte("--- ")) || bytes.HasPrefix(line, []byte("---\t")):
			out = append(out, cur)
			cur = chunk{line: lineNo}
			if rest := bytes.TrimLeft(line[3:], " \t"); len(bytes.TrimSpace(rest)) > 0 && rest[0] != '#' {
				cur.text = append(cur.text, rest...)
			} else {
				cur.line = lineNo + 1
			}
		case bytes.Equal(trimmed, []byte("...")):
			out = append(out, cur)
			cur = chunk{line: lineNo + 1}
		default:
			cur.text = append(cur.text, line...)
		}
	}
	return append(out, cur)
}

// yamlLineRegexp finds the line numbers in the YAML library's messages.
var yamlLineRegexp = regexp.MustCompile(`line (\d+)`)

// shiftLines turns line numbers relative to a document into line numbers of
// the whole stream, so an editor can jump to them.
func shiftLines(msg string, first int) string {
	return yamlLineRegexp.ReplaceAllStringFunc(msg, func(s string) string {
		n, err := strconv.Atoi(s[len("line "):])
		if err != nil {
			return s
		}
		return "line " + strconv.Itoa(n+first-1)
	})
}

// peek reads apiVersion, kind, metadata.name and metadata.namespace
// without judging the document.
func peek(j []byte) (tm v1alpha1.TypeMeta, name, namespace string) {
	var top map[string]json.RawMessage
	if json.Unmarshal(j, &top) != nil {
		return tm, "", ""
	}
	str := func(raw json.RawMessage) string {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return ""
		}
		return s
	}
	tm.APIVersion = str(top["apiVersion"])
	tm.Kind = v1alpha1.Kind(str(top["kind"]))
	var meta map[string]json.RawMessage
	if json.Unmarshal(top["metadata"], &meta) == nil {
		name, namespace = str(meta["name"]), str(meta["namespace"])
	}
	return tm, name, namespace
}
