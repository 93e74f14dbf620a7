package images

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"
)

func TestRecipeKey(t *testing.T) {
	base := fstest.MapFS{
		"r/build.sh":  {Data: []byte("#!/bin/bash\necho hi\n")},
		"r/init":      {Data: []byte("#!/bin/sh\n")},
		"r/sub/a.cfg": {Data: []byte("a: 1\n")},
	}
	baseKey, err := recipeKey(base, "r")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		fsys fstest.MapFS
		dir  string
		same bool
	}{
		{name: "identical files", fsys: clone(base), dir: "r", same: true},
		{name: "directory renamed", fsys: move(base, "r", "other"), dir: "other", same: true},
		{name: "content edited", fsys: with(base, "r/init", "#!/bin/sh\necho\n"), dir: "r"},
		{name: "file added", fsys: with(base, "r/extra", ""), dir: "r"},
		{name: "file renamed", fsys: move(base, "r/init", "r/init2"), dir: "r"},
		{name: "content moved between files", fsys: with(with(base, "r/init", ""), "r/sub/a.cfg", "#!/bin/sh\na: 1\n"), dir: "r"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := recipeKey(tt.fsys, tt.dir)
			if err != nil {
				t.Fatal(err)
			}
			if (key == baseKey) != tt.same {
				t.Errorf("key %s vs base %s: same=%v, want %v", key, baseKey, key == baseKey, tt.same)
			}
		})
	}
}

func TestRecipeKeyErrors(t *testing.T) {
	tests := []struct {
		name string
		fsys fstest.MapFS
		dir  string
		want string
	}{
		{name: "missing directory", fsys: fstest.MapFS{"x/build.sh": {}}, dir: "r", want: "listing recipe r"},
		{name: "empty directory", fsys: fstest.MapFS{"r": {Mode: os.ModeDir}}, dir: "r", want: "has no files"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := recipeKey(tt.fsys, tt.dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestEmbeddedRecipes(t *testing.T) {
	keys := map[string]Name{}
	for _, name := range All {
		t.Run(string(name), func(t *testing.T) {
			key, err := Key(name)
			if err != nil {
				t.Fatal(err)
			}
			if len(key) != 64 {
				t.Errorf("key %q is not a hex sha256", key)
			}
			if other, dup := keys[key]; dup {
				t.Errorf("recipes %s and %s share key %s", name, other, key)
			}
			keys[key] = name
			if _, err := recipes.ReadFile(string(name) + "/build.sh"); err != nil {
				t.Errorf("recipe has no build.sh: %v", err)
			}
			if len(Files(name)) == 0 {
				t.Error("recipe declares no artifacts")
			}
		})
	}
	if _, err := Key("nope"); err == nil {
		t.Error("Key of an unknown image succeeded")
	}
}

func TestWriteRecipe(t *testing.T) {
	dst := t.TempDir()
	if err := writeRecipe(recipes, string(Tiny), dst); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dst, "build.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm()&0o100 == 0 {
		t.Errorf("build.sh mode %v is not executable", st.Mode())
	}
	want, _ := recipes.ReadFile("tiny/init")
	got, err := os.ReadFile(filepath.Join(dst, "init"))
	if err != nil || string(got) != string(want) {
		t.Errorf("init not copied verbatim (err %v)", err)
	}
}

// fakeBuilder records builds and writes the artifacts of the image it is asked for.
type fakeBuilder struct {
	builds atomic.Int32
	delay  time.Duration
	fail   error
	skip   string // artifact not to write
}

func (f *fakeBuilder) run(ctx context.Context, script, outDir string, out io.Writer) error {
	f.builds.Add(1)
	if _, err := os.Stat(script); err != nil {
		return fmt.Errorf("script not materialised: %w", err)
	}
	fmt.Fprintf(out, "[   0.0s] building into %s\n", outDir)
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	if f.fail != nil {
		fmt.Fprintln(out, "boom: something broke")
		return f.fail
	}
	for _, name := range Files(Tiny) {
		if name == f.skip {
			continue
		}
		if err := os.WriteFile(filepath.Join(outDir, name), []byte(name), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func newTestCache(t *testing.T, b *fakeBuilder) *Cache {
	t.Helper()
	c := NewCache(filepath.Join(t.TempDir(), "cache"), t.Logf)
	c.run = b.run
	return c
}

func TestEnsureBuildsOnceThenReuses(t *testing.T) {
	b := &fakeBuilder{}
	c := newTestCache(t, b)
	first, err := c.Ensure(t.Context(), Tiny)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Built {
		t.Error("first Ensure did not report a build")
	}
	second, err := c.Ensure(t.Context(), Tiny)
	if err != nil {
		t.Fatal(err)
	}
	if second.Built || second.Dir != first.Dir {
		t.Errorf("second Ensure = %+v, want a reuse of %s", second, first.Dir)
	}
	if n := b.builds.Load(); n != 1 {
		t.Errorf("builds = %d, want 1", n)
	}
	for _, f := range append(Files(Tiny), BuildLogFile, KeyFile) {
		if _, err := os.Stat(second.Path(f)); err != nil {
			t.Errorf("entry lacks %s: %v", f, err)
		}
	}
	key, _ := os.ReadFile(second.Path(KeyFile))
	if strings.TrimSpace(string(key)) != second.Key {
		t.Errorf("%s = %q, want %q", KeyFile, key, second.Key)
	}
	if st, err := os.Stat(second.Dir); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("entry dir mode = %v (err %v), want 0755", st.Mode(), err)
	}
}

func TestEnsureConcurrentCallersShareOneBuild(t *testing.T) {
	b := &fakeBuilder{delay: 300 * time.Millisecond}
	c := newTestCache(t, b)
	// A second Cache on the same directory stands in for another test process.
	other := NewCache(c.Dir(), t.Logf)
	other.run = b.run

	var wg sync.WaitGroup
	results := make([]Image, 6)
	errs := make([]error, len(results))
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cache := c
			if i%2 == 1 {
				cache = other
			}
			results[i], errs[i] = cache.Ensure(t.Context(), Tiny)
		}()
	}
	wg.Wait()
	built := 0
	for i := range results {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if results[i].Built {
			built++
		}
		if results[i].Dir != results[0].Dir {
			t.Errorf("caller %d got %s, caller 0 got %s", i, results[i].Dir, results[0].Dir)
		}
	}
	if n := b.builds.Load(); n != 1 || built != 1 {
		t.Errorf("builds = %d, callers reporting a build = %d; want 1 and 1", n, built)
	}
}

func TestEnsureFailureLeavesNothing(t *testing.T) {
	tests := []struct {
		name    string
		builder *fakeBuilder
		want    string
	}{
		{name: "script fails", builder: &fakeBuilder{fail: errors.New("exit status 1")}, want: "boom: something broke"},
		{name: "artifact missing", builder: &fakeBuilder{skip: InitrdFile}, want: "without producing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCache(t, tt.builder)
			_, err := c.Ensure(t.Context(), Tiny)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			assertOnlyLocks(t, c.Dir())
		})
	}
}

func TestEnsureCancelled(t *testing.T) {
	b := &fakeBuilder{delay: time.Minute}
	c := newTestCache(t, b)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.Ensure(ctx, Tiny); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	assertOnlyLocks(t, c.Dir())
}

func TestEnsureWaitsForLockUntilCancelled(t *testing.T) {
	c := newTestCache(t, &fakeBuilder{})
	if err := os.MkdirAll(c.Dir(), 0o755); err != nil {
		t.Fatal(err)
	}
	key, err := Key(Tiny)
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := c.lock(t.Context(), filepath.Join(c.Dir(), entryName(Tiny, key))+".lock", Tiny)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(t.Context(), 3*lockPoll)
	defer cancel()
	if _, err := c.Ensure(ctx, Tiny); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want to time out waiting for the lock", err)
	}
}

func TestEnsureReplacesStaleAndIncompleteEntries(t *testing.T) {
	b := &fakeBuilder{}
	c := newTestCache(t, b)
	key, err := Key(Tiny)
	if err != nil {
		t.Fatal(err)
	}
	entry := filepath.Join(c.Dir(), entryName(Tiny, key))
	staleTmp := filepath.Join(c.Dir(), ".tmp-"+entryName(Tiny, key)+"-123")
	for _, d := range []string{entry, staleTmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// An entry with only one artifact (damaged by hand) must be rebuilt, not reused.
	if err := os.WriteFile(filepath.Join(entry, KernelFile), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := c.Ensure(t.Context(), Tiny)
	if err != nil {
		t.Fatal(err)
	}
	if !img.Built || b.builds.Load() != 1 {
		t.Errorf("incomplete entry reused: %+v", img)
	}
	if _, err := os.Stat(staleTmp); !os.IsNotExist(err) {
		t.Errorf("stale build directory survived: %v", err)
	}
}

func TestCacheDir(t *testing.T) {
	tests := []struct {
		name string
		env  string
		want string
	}{
		{name: "default", env: "", want: DefaultCacheDir},
		{name: "override", env: "/tmp/elsewhere", want: "/tmp/elsewhere"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(CacheDirEnv, tt.env)
			if got := CacheDir(); got != tt.want {
				t.Errorf("CacheDir() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLineWriter(t *testing.T) {
	var got []string
	w := &lineWriter{fn: func(l string) { got = append(got, l) }}
	for _, chunk := range []string{"one\ntw", "o\n", "", "thr", "ee"} {
		if _, err := w.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	w.flush()
	if strings.Join(got, "|") != "one|two|three" {
		t.Errorf("lines = %q", got)
	}
}

// assertOnlyLocks fails unless dir holds nothing but lock files: no entry, no build directory.
func assertOnlyLocks(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".lock") {
			t.Errorf("cache holds %s after a failed build", e.Name())
		}
	}
}

func clone(m fstest.MapFS) fstest.MapFS {
	out := fstest.MapFS{}
	for k, v := range m {
		f := *v
		out[k] = &f
	}
	return out
}

func with(m fstest.MapFS, name, data string) fstest.MapFS {
	out := clone(m)
	out[name] = &fstest.MapFile{Data: []byte(data)}
	return out
}

// move renames a file, or every file under a directory prefix.
func move(m fstest.MapFS, from, to string) fstest.MapFS {
	out := fstest.MapFS{}
	for k, v := range m {
		f := *v
		switch {
		case k == from:
			out[to] = &f
		case strings.HasPrefix(k, from+"/"):
			out[to+k[len(from):]] = &f
		default:
			out[k] = &f
		}
	}
	return out
}
