// Package images builds and caches the guest images the vmd test lab boots.
//
// Each image has a recipe: a directory next to this file (debian12/, tiny/) whose build.sh turns
// Debian packages into boot artifacts. The recipes are embedded into the Go package, so a test
// binary carries the exact recipe it was compiled with, and the cache key is the sha256 of those
// files: edit a recipe and the next run rebuilds, leave it alone and every run reuses the result.
//
// The cache lives outside the repository (DefaultCacheDir). An entry is built in a temporary
// directory beside its final name and renamed into place only when complete, so a crashed or
// cancelled build never leaves a half-written image behind; a lock file per entry makes
// concurrent test processes wait for one build instead of racing two.
package images

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"time"
)

// recipes holds the builder scripts and the files they install into the images.
//
//go:embed debian12 tiny
var recipes embed.FS

// Name identifies an image recipe.
type Name string

// The images the lab can build.
const (
	// Debian12 is a real Debian 12 cloud image (systemd, cloud-init with the NoCloud datasource
	// only, openssh-server) that boots from its own disk with extlinux. Artifact: DiskFile.
	Debian12 Name = "debian12"
	// Tiny is the Debian cloud kernel with a busybox initramfs that reads a NoCloud seed and
	// answers on TCP ports 22, 80 and 7777 with its instance-id. Artifacts: KernelFile, InitrdFile.
	Tiny Name = "tiny"
)

// All lists every image recipe, in the order the lab builds them (fastest first).
var All = []Name{Tiny, Debian12}

// Artifact file names inside a cache entry.
const (
	// DiskFile is the compressed qcow2 disk of Debian12 (about 120-140 MiB, 2 GiB virtual).
	DiskFile = "disk.qcow2"
	// KernelFile is the kernel of Tiny, booted with libvirt's direct kernel boot.
	KernelFile = "vmlinuz"
	// InitrdFile is the busybox initramfs of Tiny.
	InitrdFile = "initrd.img"
	// ManifestFile lists name<TAB>version of every Debian package that went into the image:
	// builds follow the live mirror, so this is what tells two cache entries apart.
	ManifestFile = "packages.txt"
	// BuildLogFile holds the complete output of the recipe's build.sh.
	BuildLogFile = "build.log"
	// KeyFile holds the full recipe key the entry was built from.
	KeyFile = "recipe.sha256"
)

// keyVersion is mixed into every recipe key. Bump it when the cache layout or the contract
// between this package and the build scripts changes, so old entries are not reused.
const keyVersion = "vmd-lab-image/v1"

// Image is a built (or reused) cache entry.
type Image struct {
	// Name is the recipe the entry was built from.
	Name Name
	// Key is the hex sha256 of the recipe files (see Key).
	Key string
	// Dir is the cache entry directory holding the artifacts; never modify files in it, guests
	// must use copy-on-write overlays.
	Dir string
	// Built is true when this call ran the build, false when it reused an existing entry.
	Built bool
	// Duration is how long the build took, or how long finding the entry took when reused.
	Duration time.Duration
}

// Path returns the absolute path of one artifact of the image (for example DiskFile).
func (i Image) Path(file string) string { return filepath.Join(i.Dir, file) }

// Files returns the artifact files the recipe of name produces, so callers and tests can check
// that an entry is complete.
func Files(name Name) []string {
	switch name {
	case Debian12:
		return []string{DiskFile, ManifestFile}
	case Tiny:
		return []string{KernelFile, InitrdFile, ManifestFile}
	default:
		return nil
	}
}

// Key returns the cache key of the named recipe: the hex sha256 of every file in its directory.
func Key(name Name) (string, error) {
	if Files(name) == nil {
		return "", fmt.Errorf("unknown image %q", name)
	}
	return recipeKey(recipes, string(name))
}

// recipeKey hashes keyVersion and, in lexical order, the slash path, mode and content of every
// regular file under dir. Paths are relative to dir, so renaming the directory keeps the key but
// renaming, adding, removing or editing a file changes it.
func recipeKey(fsys fs.FS, dir string) (string, error) {
	var files []string
	err := fs.WalkDir(fsys, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("listing recipe %s: %w", dir, err)
	}
	if len(files) == 0 {
		return "", fmt.Errorf("recipe %s has no files", dir)
	}
	sort.Strings(files)
	h := sha256.New()
	fmt.Fprintf(h, "%s\n", keyVersion)
	for _, p := range files {
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return "", fmt.Errorf("reading recipe file %s: %w", p, err)
		}
		rel := p[len(dir)+1:]
		fmt.Fprintf(h, "%s\x00%d\x00", rel, len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// writeRecipe materialises the embedded recipe dir into dst (an empty directory) so bash can run
// it. Scripts stay executable; everything else is read-only data.
func writeRecipe(fsys fs.FS, dir, dst string) error {
	return fs.WalkDir(fsys, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(dst, filepath.FromSlash(p[len(dir):]))
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if path.Ext(p) == ".sh" {
			mode = 0o755
		}
		return os.WriteFile(target, data, mode)
	})
}
