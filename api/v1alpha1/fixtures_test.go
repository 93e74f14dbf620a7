package v1alpha1_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/catalog"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/manifest"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// fixtures returns the files of a testdata directory, failing when there
// are none (a renamed directory must not turn the test into a no-op).
func fixtures(t *testing.T, dir string, min int) []string {
	t.Helper()
	var files []string
	for _, pat := range []string{"*.yaml", "*.json"} {
		m, err := filepath.Glob(filepath.Join("testdata", dir, pat))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	sort.Strings(files)
	if len(files) < min {
		t.Fatalf("testdata/%s holds %d fixtures, want at least %d", dir, len(files), min)
	}
	return files
}

// TestValidFixtures: every example manifest of the Hikube docs (seeds) and
// of the Cozystack dialect decodes strictly, validates before and after
// defaulting, and survives a JSON round trip unchanged.
func TestValidFixtures(t *testing.T) {
	cat := catalog.Default()
	for _, file := range fixtures(t, "valid", 30) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := manifest.DecodeAll(data)
			if err != nil {
				t.Fatalf("decoding: %v", err)
			}
			if len(objs) == 0 {
				t.Fatal("no objects decoded")
			}
			for _, obj := range objs {
				name := obj.GetObjectMeta().Name
				if errs := v1alpha1.Validate(obj, cat); len(errs) > 0 {
					t.Errorf("%s before defaulting: %v", name, errs.ToAggregate())
				}
				v1alpha1.SetDefaults(obj)
				if errs := v1alpha1.Validate(obj, cat); len(errs) > 0 {
					t.Errorf("%s after defaulting: %v", name, errs.ToAggregate())
				}
				if errs := v1alpha1.ValidateUpdate(obj, obj.DeepCopyObject(), cat); len(errs) > 0 {
					t.Errorf("%s as a no-op update: %v", name, errs.ToAggregate())
				}
				b, err := json.Marshal(obj)
				if err != nil {
					t.Fatalf("%s: marshal: %v", name, err)
				}
				back, err := manifest.Decode(b)
				if err != nil {
					t.Fatalf("%s: re-decoding own JSON: %v\n%s", name, err, b)
				}
				b2, err := json.Marshal(back)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(b, b2) {
					t.Errorf("%s: JSON round trip changed the object:\n%s\n%s", name, b, b2)
				}
			}
		})
	}
}

// want is one expected error of an invalid fixture: a field path (or
// "error" for a problem not tied to a field) and a substring of the message.
type want struct {
	path, substr string
}

// readWants parses the `# want: <path>: <substring>` header lines.
func readWants(t *testing.T, data []byte) []want {
	t.Helper()
	var ws []want
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		rest, ok := strings.CutPrefix(line, "# want:")
		if !ok {
			continue
		}
		path, substr, ok := strings.Cut(strings.TrimSpace(rest), ": ")
		if !ok || path == "" || substr == "" {
			t.Fatalf("malformed want line %q: need `# want: <path>: <substring>`", line)
		}
		ws = append(ws, want{path: path, substr: substr})
	}
	return ws
}

// problem is one error found in a fixture: a field path (or "error") and
// its full message.
type problem struct {
	path, msg string
}

// problems collects the field errors inside err (walking joined and
// wrapped errors); an error that carries no field errors becomes one
// problem with path "error".
func problems(err error) []problem {
	var out []problem
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, c := range j.Unwrap() {
				walk(c)
			}
			return
		}
		var inv *errdefs.InvalidError
		if errors.As(e, &inv) {
			for _, fe := range inv.Errors {
				out = append(out, problem{path: fe.Field, msg: e.Error()})
			}
			return
		}
		out = append(out, problem{path: "error", msg: e.Error()})
	}
	walk(err)
	return out
}

// fieldProblems turns validation errors into problems.
func fieldProblems(errs field.ErrorList) []problem {
	out := make([]problem, len(errs))
	for i, fe := range errs {
		out[i] = problem{path: fe.Field, msg: fe.Error()}
	}
	return out
}

// checkWants asserts that each wanted error is among the problems and that
// no problem has a path nobody wanted, so a fixture fails for exactly the
// reasons its header states.
func checkWants(t *testing.T, ws []want, got []problem) {
	t.Helper()
	if len(got) == 0 {
		t.Fatal("accepted, want it rejected")
	}
	for _, w := range ws {
		found := false
		for _, g := range got {
			if g.path == w.path && strings.Contains(g.msg, w.substr) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("missing error %s: ...%s...; got:\n%s", w.path, w.substr, render(got))
		}
	}
	for _, g := range got {
		expected := false
		for _, w := range ws {
			expected = expected || g.path == w.path
		}
		if !expected {
			t.Errorf("unexpected error at %s: %s", g.path, g.msg)
		}
	}
}

// render lists problems one per line for failure messages.
func render(ps []problem) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString("  " + p.path + " => " + p.msg + "\n")
	}
	return b.String()
}

// rejections decodes, defaults and validates a fixture and returns every
// problem found at the first stage that found any.
func rejections(t *testing.T, data []byte, cat v1alpha1.Catalog) []problem {
	t.Helper()
	objs, err := manifest.DecodeAll(data)
	if err != nil {
		return problems(err)
	}
	var got []problem
	for _, obj := range objs {
		errs := v1alpha1.Validate(obj, cat)
		// Defaulting must not change the verdict: the same fields are
		// wrong before and after (only hints such as "(the default)"
		// are lost once the default is filled in).
		v1alpha1.SetDefaults(obj)
		if a, b := paths(errs), paths(v1alpha1.Validate(obj, cat)); a != b {
			t.Errorf("error paths before defaulting %s, after %s", a, b)
		}
		got = append(got, fieldProblems(errs)...)
	}
	return got
}

// paths lists the field paths of errs, in order, for comparison.
func paths(errs field.ErrorList) string {
	ps := make([]string, len(errs))
	for i, fe := range errs {
		ps[i] = fe.Field
	}
	return strings.Join(ps, ",")
}

// TestInvalidFixtures: each manifest under testdata/invalid is rejected
// with exactly the errors its `# want:` lines name.
func TestInvalidFixtures(t *testing.T) {
	cat := catalog.Default()
	for _, file := range fixtures(t, "invalid", 45) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			ws := readWants(t, data)
			if len(ws) == 0 {
				t.Fatal("fixture has no `# want:` line")
			}
			checkWants(t, ws, rejections(t, data, cat))
		})
	}
}

// TestUpdateFixtures: each file under testdata/update holds the stored
// object and then the new one. Files with `# want:` lines must be refused
// by ValidateUpdate with those errors; files without must be accepted.
func TestUpdateFixtures(t *testing.T) {
	cat := catalog.Default()
	for _, file := range fixtures(t, "update", 6) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := manifest.DecodeAll(data)
			if err != nil {
				t.Fatalf("decoding: %v", err)
			}
			if len(objs) != 2 {
				t.Fatalf("want 2 documents (old, new), got %d", len(objs))
			}
			oldObj, newObj := objs[0], objs[1]
			v1alpha1.SetDefaults(oldObj)
			if errs := v1alpha1.Validate(oldObj, cat); len(errs) > 0 {
				t.Fatalf("old object is invalid: %v", errs.ToAggregate())
			}
			v1alpha1.SetDefaults(newObj)
			errs := v1alpha1.ValidateUpdate(newObj, oldObj, cat)
			ws := readWants(t, data)
			if len(ws) == 0 {
				if len(errs) > 0 {
					t.Fatalf("update refused: %v", errs.ToAggregate())
				}
				return
			}
			checkWants(t, ws, fieldProblems(errs))
		})
	}
}
