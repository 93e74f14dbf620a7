package images

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultCacheDir is where images are cached when VMD_LAB_CACHE is not set. It is outside the
// repository on purpose: images are hundreds of MiB and shared by every checkout on the machine.
const DefaultCacheDir = "/var/cache/vmd-lab"

// CacheDirEnv names the environment variable that overrides DefaultCacheDir.
const CacheDirEnv = "VMD_LAB_CACHE"

// CacheDir returns the cache directory to use: $VMD_LAB_CACHE, or DefaultCacheDir.
func CacheDir() string {
	if d := os.Getenv(CacheDirEnv); d != "" {
		return d
	}
	return DefaultCacheDir
}

// lockPoll is how often a waiting Ensure retries a lock held by another build.
const lockPoll = 250 * time.Millisecond

// buildFunc runs one recipe: script is the materialised build.sh, outDir the empty directory the
// artifacts go to, and out receives the combined output of the build.
type buildFunc func(ctx context.Context, script, outDir string, out io.Writer) error

// Cache builds images on demand and keeps them, keyed by recipe, in one directory.
// A Cache is safe for concurrent use, also across processes.
type Cache struct {
	dir  string
	logf func(format string, args ...any)
	fsys fs.FS
	run  buildFunc
}

// NewCache returns a cache rooted at dir (created on first use). logf receives one line per build
// step and may be nil.
func NewCache(dir string, logf func(format string, args ...any)) *Cache {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Cache{dir: dir, logf: logf, fsys: recipes, run: runScript}
}

// Dir returns the cache directory.
func (c *Cache) Dir() string { return c.dir }

// Ensure returns the cache entry of the named image, building it first when no entry for the
// current recipe exists. Concurrent callers (goroutines or processes) of the same recipe wait
// for a single build. Cancelling ctx stops a running build and leaves no entry behind.
func (c *Cache) Ensure(ctx context.Context, name Name) (Image, error) {
	start := time.Now()
	files := Files(name)
	if files == nil {
		return Image{}, fmt.Errorf("ensuring image %q: unknown image", name)
	}
	key, err := recipeKey(c.fsys, string(name))
	if err != nil {
		return Image{}, fmt.Errorf("ensuring image %s: %w", name, err)
	}
	img := Image{Name: name, Key: key, Dir: filepath.Join(c.dir, entryName(name, key))}
	if complete(img.Dir, files) {
		img.Duration = time.Since(start)
		return img, nil
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return Image{}, fmt.Errorf("creating image cache: %w", err)
	}
	unlock, err := c.lock(ctx, img.Dir+".lock", name)
	if err != nil {
		return Image{}, fmt.Errorf("ensuring image %s: %w", name, err)
	}
	defer unlock()
	// Another process may have finished the build while this one waited for the lock.
	if complete(img.Dir, files) {
		img.Duration = time.Since(start)
		return img, nil
	}
	if err := c.build(ctx, img, files); err != nil {
		return Image{}, fmt.Errorf("building image %s: %w", name, err)
	}
	img.Built = true
	img.Duration = time.Since(start)
	return img, nil
}

// entryName is the directory name of a cache entry: readable, and unique per recipe.
func entryName(name Name, key string) string { return string(name) + "-" + key[:16] }

// complete reports whether dir holds every artifact; an entry is only ever renamed into place
// whole, so a directory missing a file was damaged by hand and is rebuilt.
func complete(dir string, files []string) bool {
	for _, f := range files {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || !st.Mode().IsRegular() {
			return false
		}
	}
	return true
}

// build runs the recipe into a temporary directory beside the entry and renames it into place.
// It must only run with the entry lock held.
func (c *Cache) build(ctx context.Context, img Image, files []string) error {
	base := filepath.Base(img.Dir)
	// Leftovers of builds killed before they could clean up: nobody else holds the lock.
	stale, _ := filepath.Glob(filepath.Join(c.dir, ".tmp-"+base+"-*"))
	for _, s := range stale {
		_ = os.RemoveAll(s)
	}
	// A damaged (incomplete) entry cannot be renamed over: remove it first.
	if err := os.RemoveAll(img.Dir); err != nil {
		return fmt.Errorf("removing incomplete entry: %w", err)
	}

	tmp, err := os.MkdirTemp(c.dir, ".tmp-"+base+"-")
	if err != nil {
		return fmt.Errorf("creating build directory: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = os.RemoveAll(tmp)
		}
	}()
	recipeDir, err := os.MkdirTemp("", "vmdlab-recipe-"+string(img.Name)+"-")
	if err != nil {
		return fmt.Errorf("creating recipe directory: %w", err)
	}
	defer func() { _ = os.RemoveAll(recipeDir) }()
	if err := writeRecipe(c.fsys, string(img.Name), recipeDir); err != nil {
		return fmt.Errorf("writing recipe: %w", err)
	}

	logFile, err := os.Create(filepath.Join(tmp, BuildLogFile))
	if err != nil {
		return fmt.Errorf("creating build log: %w", err)
	}
	last := &tail{n: 30}
	// The scripts print one line per step and send tool noise to their own log files, so every
	// line is worth showing live (and the last ones again if the build fails).
	lines := &lineWriter{fn: func(line string) {
		last.add(line)
		c.logf("%s: %s", img.Name, line)
	}}
	c.logf("building image %s (recipe %s) in %s", img.Name, img.Key[:16], tmp)
	runErr := c.run(ctx, filepath.Join(recipeDir, "build.sh"), tmp, io.MultiWriter(logFile, lines))
	lines.flush()
	if err := logFile.Close(); err != nil && runErr == nil {
		runErr = fmt.Errorf("writing build log: %w", err)
	}
	if runErr != nil {
		return fmt.Errorf("%w; last output:\n%s", runErr, last.String())
	}
	if !complete(tmp, files) {
		return fmt.Errorf("recipe finished without producing %s; last output:\n%s",
			strings.Join(files, ", "), last.String())
	}
	if err := os.WriteFile(filepath.Join(tmp, KeyFile), []byte(img.Key+"\n"), 0o644); err != nil {
		return fmt.Errorf("writing recipe key: %w", err)
	}
	// The temporary directory is private (0700); qemu and the HTTP server read the entry.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("opening build directory: %w", err)
	}
	if err := os.Rename(tmp, img.Dir); err != nil {
		return fmt.Errorf("publishing entry: %w", err)
	}
	committed = true
	return nil
}

// lock takes an exclusive flock on path, polling so that ctx can cancel the wait. Locks taken
// through separate open files conflict even inside one process, so goroutines are covered too.
// The lock file stays in place: deleting it would let two waiters lock different inodes.
func (c *Cache) lock(ctx context.Context, path string, name Name) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening lock: %w", err)
	}
	waiting := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		if !waiting {
			c.logf("image %s is being built by another process; waiting for %s", name, path)
			waiting = true
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("waiting for lock: %w", ctx.Err())
		case <-time.After(lockPoll):
		}
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close()
	}, nil
}

// runScript runs a recipe's build.sh with bash in its own process group. On cancellation the
// whole group gets SIGTERM, which the scripts turn into their cleanup (unmounting, freeing loop
// devices), and SIGKILL if it does not finish within a minute.
func runScript(ctx context.Context, script, outDir string, out io.Writer) error {
	cmd := exec.CommandContext(ctx, "bash", script, outDir)
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = time.Minute
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("running %s: %w (%w)", filepath.Base(script), ctx.Err(), err)
		}
		return fmt.Errorf("running %s: %w", filepath.Base(script), err)
	}
	return nil
}

// lineWriter calls fn with every complete line written to it; flush delivers an unterminated
// last line.
type lineWriter struct {
	mu   sync.Mutex
	fn   func(line string)
	part []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.part = append(w.part, p...)
	for {
		i := bytes.IndexByte(w.part, '\n')
		if i < 0 {
			break
		}
		w.fn(string(w.part[:i]))
		w.part = w.part[i+1:]
	}
	return len(p), nil
}

func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.part) > 0 {
		w.fn(string(w.part))
		w.part = nil
	}
}

// tail keeps the last n lines it is given, for error messages.
type tail struct {
	n     int
	lines []string
}

func (t *tail) add(line string) {
	t.lines = append(t.lines, line)
	if len(t.lines) > t.n {
		t.lines = t.lines[len(t.lines)-t.n:]
	}
}

func (t *tail) String() string { return strings.Join(t.lines, "\n") }
