// Package images fetches, recognises and caches disk images, and holds the
// golden-image catalogue that VMDisk source.image names refer to.
package images

import (
	_ "embed"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

// goldenYAML is the golden-image table; golden.yaml's header explains
// every column and how minimum sizes were chosen.
//
//go:embed golden.yaml
var goldenYAML []byte

// ImageKind says how an image is used.
type ImageKind string

// Image kinds.
const (
	// KindCloud is a bootable disk image that configures itself with
	// cloud-init; it is copied into the VMDisk.
	KindCloud ImageKind = "cloud"
	// KindISO is an installer; the VMDisk becomes a read-only CD-ROM.
	KindISO ImageKind = "iso"
)

// ImageSource says which catalogue defines an image name.
type ImageSource string

// Image sources.
const (
	// SourceHikube names appear in Hikube's catalogue (some are also in
	// Cozystack's, which then supplies the URL).
	SourceHikube ImageSource = "hikube"
	// SourceCozystack names appear only in Cozystack's vm-default-images.
	SourceCozystack ImageSource = "cozystack"
	// SourceCozystackLegacy names are the unversioned images of the
	// Cozystack <= v0.41 VirtualMachine app.
	SourceCozystackLegacy ImageSource = "cozystack-legacy"
)

// GoldenImage is a named OS image a VMDisk can be created from, so users
// can write `source: {image: {name: ubuntu-2404}}` instead of a URL.
//
// The JSON tags are the schema of golden.yaml.
type GoldenImage struct {
	// Name is the source.image.name value.
	Name string `json:"name"`
	// OS is the distribution name ("Rocky Linux").
	OS string `json:"os"`
	// OSFamily is "linux" or "windows".
	OSFamily string `json:"osFamily"`
	// Version is the distribution release ("9", "24.04").
	Version string `json:"version"`
	// Kind is cloud or iso.
	Kind ImageKind `json:"kind"`
	// MinStorageQuantity is the smallest VMDisk storage as written ("4Gi").
	MinStorageQuantity string `json:"minStorage"`
	// MinStorage is MinStorageQuantity in bytes.
	MinStorage int64 `json:"-"`
	// URL is where the image is downloaded from (always https).
	URL string `json:"url"`
	// Verified is true when an upstream chart downloads this URL, false
	// for a best-guess candidate.
	Verified bool `json:"verified"`
	// Source is the catalogue that defines Name.
	Source ImageSource `json:"source"`
	// DefaultUser is the account that receives the SSH keys; empty when
	// unknown or when the OS has no SSH login.
	DefaultUser string `json:"defaultUser,omitempty"`
}

// goldenTable is the document shape of golden.yaml.
type goldenTable struct {
	Images []GoldenImage `json:"images"`
}

var (
	// goldenList is sorted by name and never mutated.
	goldenList  = mustParseGolden(goldenYAML)
	goldenIndex = func() map[string]int {
		idx := make(map[string]int, len(goldenList))
		for i, g := range goldenList {
			idx[g.Name] = i
		}
		return idx
	}()
)

// GoldenImages returns every golden image sorted by name. GoldenImage has
// no reference fields, so the copy is the caller's to modify.
func GoldenImages() []GoldenImage {
	return slices.Clone(goldenList)
}

// LookupGoldenImage returns the golden image called name.
func LookupGoldenImage(name string) (GoldenImage, bool) {
	i, ok := goldenIndex[name]
	if !ok {
		return GoldenImage{}, false
	}
	return goldenList[i], true
}

// goldenName is a DNS-1123 label that may also contain dots
// ("opensuse-leap-15.6").
var goldenName = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`)

// parseGolden decodes and checks a golden-image table: unknown keys,
// duplicate names, unknown enum values, sizes that are not whole bytes and
// URLs that are not absolute https URLs are errors. Images come back
// sorted by name. Keys match fields ignoring case, as in encoding/json.
func parseGolden(data []byte) ([]GoldenImage, error) {
	var table goldenTable
	if err := yaml.UnmarshalStrict(data, &table); err != nil {
		return nil, fmt.Errorf("decoding golden images: %w", err)
	}
	if len(table.Images) == 0 {
		return nil, errors.New("decoding golden images: table is empty")
	}
	seen := make(map[string]bool, len(table.Images))
	var errs []error
	for i := range table.Images {
		g := &table.Images[i]
		if seen[g.Name] {
			errs = append(errs, fmt.Errorf("golden image %q: duplicate name", g.Name))
		}
		seen[g.Name] = true
		for _, err := range g.complete() {
			errs = append(errs, fmt.Errorf("golden image %q: %w", g.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.SortFunc(table.Images, func(a, b GoldenImage) int { return strings.Compare(a.Name, b.Name) })
	return table.Images, nil
}

// complete fills MinStorage and returns every inconsistency of the row.
func (g *GoldenImage) complete() []error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(goldenName.MatchString(g.Name), "name must be lowercase alphanumerics, '-' and '.'")
	check(g.OS != "", "os is required")
	check(g.OSFamily == "linux" || g.OSFamily == "windows", "osFamily %q: must be linux or windows", g.OSFamily)
	check(g.Version != "", "version is required")
	check(g.Kind == KindCloud || g.Kind == KindISO, "kind %q: must be %s or %s", g.Kind, KindCloud, KindISO)
	check(slices.Contains([]ImageSource{SourceHikube, SourceCozystack, SourceCozystackLegacy}, g.Source), "source %q: unknown", g.Source)
	size, err := parseBytes(g.MinStorageQuantity)
	if err != nil {
		errs = append(errs, fmt.Errorf("minStorage: %w", err))
	}
	g.MinStorage = size
	// Plain http would let anyone on the path swap the guest's root disk.
	u, err := url.Parse(g.URL)
	check(err == nil && u.Scheme == "https" && u.Host != "" && u.User == nil, "url %q: must be an absolute https URL without credentials", g.URL)
	return errs
}

// parseBytes parses a positive Kubernetes quantity that is a whole number
// of bytes.
func parseBytes(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("quantity is required")
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("parsing quantity %q: %w", s, err)
	}
	// Value rounds up; comparing back rejects fractions of a byte.
	v := q.Value()
	if v <= 0 || resource.NewQuantity(v, resource.BinarySI).Cmp(q) != 0 {
		return 0, fmt.Errorf("quantity %q: must be a positive whole number of bytes", s)
	}
	return v, nil
}

// mustParseGolden panics on a malformed embedded table: it is compiled in,
// so this is a programming error, and the package tests parse it first.
func mustParseGolden(data []byte) []GoldenImage {
	list, err := parseGolden(data)
	if err != nil {
		panic(fmt.Sprintf("images: embedded golden table: %v", err))
	}
	return list
}
