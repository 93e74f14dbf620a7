package images

import (
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
)

const gi = int64(1) << 30

// Upstream URLs from the reference §9.1 table and legacy list.
const (
	urlUbuntu2004   = "https://cloud-images.ubuntu.com/focal/current/focal-server-cloudimg-amd64.img"
	urlUbuntu2204   = "https://cloud-images.ubuntu.com/jammy/current/jammy-server-cloudimg-amd64.img"
	urlUbuntu2404   = "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img"
	urlRocky8       = "https://dl.rockylinux.org/pub/rocky/8/images/x86_64/Rocky-8-GenericCloud-Base.latest.x86_64.qcow2"
	urlRocky9       = "https://dl.rockylinux.org/pub/rocky/9/images/x86_64/Rocky-9-GenericCloud-Base.latest.x86_64.qcow2"
	urlRocky10      = "https://dl.rockylinux.org/pub/rocky/10/images/x86_64/Rocky-10-GenericCloud-Base.latest.x86_64.qcow2"
	urlAlma8        = "https://repo.almalinux.org/almalinux/8/cloud/x86_64/images/AlmaLinux-8-GenericCloud-latest.x86_64.qcow2"
	urlAlma9        = "https://repo.almalinux.org/almalinux/9/cloud/x86_64/images/AlmaLinux-9-GenericCloud-latest.x86_64.qcow2"
	urlAlma10       = "https://repo.almalinux.org/almalinux/10/cloud/x86_64/images/AlmaLinux-10-GenericCloud-latest.x86_64.qcow2"
	urlDebian12     = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-generic-amd64.qcow2"
	urlDebian13     = "https://cloud.debian.org/images/cloud/trixie/latest/debian-13-generic-amd64.qcow2"
	urlCentOS9      = "https://cloud.centos.org/centos/9-stream/x86_64/images/CentOS-Stream-GenericCloud-9-latest.x86_64.qcow2"
	urlCentOS10     = "https://cloud.centos.org/centos/10-stream/x86_64/images/CentOS-Stream-GenericCloud-10-latest.x86_64.qcow2"
	urlLeap156      = "https://download.opensuse.org/repositories/Cloud:/Images:/Leap_15.6/images/openSUSE-Leap-15.6.x86_64-NoCloud.qcow2"
	urlLeap160      = "https://download.opensuse.org/distribution/leap/16.0/appliances/Leap-16.0-Minimal-VM.x86_64-Cloud.qcow2"
	urlAlpine321    = "https://dl-cdn.alpinelinux.org/alpine/v3.21/releases/cloud/nocloud_alpine-3.21.7-x86_64-bios-cloudinit-r0.qcow2"
	urlCirros       = "https://download.cirros-cloud.net/0.6.2/cirros-0.6.2-x86_64-disk.img"
	urlFedora       = "https://download.fedoraproject.org/pub/fedora/linux/releases/42/Cloud/x86_64/images/Fedora-Cloud-Base-Generic-42-1.1.x86_64.qcow2"
	urlAlpineLegacy = "https://dl-cdn.alpinelinux.org/alpine/v3.20/releases/cloud/nocloud_alpine-3.20.8-x86_64-bios-cloudinit-r0.qcow2"
	urlTalosLegacy  = "https://github.com/siderolabs/talos/releases/download/v1.7.6/nocloud-amd64.raw.xz"
)

func TestGoldenImagesMatchReference(t *testing.T) {
	// One row per name in reference §9.2 (Hikube), §9.1 (Cozystack) and the
	// legacy list. url is checked where an upstream publishes it; empty
	// means a candidate URL (verified: false), checked only for shape.
	tests := []struct {
		name       string
		source     ImageSource
		kind       ImageKind
		minStorage int64
		url        string
		user       string
	}{
		// Hikube catalogue.
		{name: "almalinux-8", source: SourceHikube, kind: KindCloud, minStorage: 11 * gi, url: urlAlma8, user: "cloud-user"},
		{name: "almalinux-9", source: SourceHikube, kind: KindCloud, minStorage: 11 * gi, url: urlAlma9, user: "cloud-user"},
		{name: "almalinux-10", source: SourceHikube, kind: KindCloud, minStorage: 11 * gi, url: urlAlma10, user: "cloud-user"},
		{name: "rocky-8", source: SourceHikube, kind: KindCloud, minStorage: 11 * gi, url: urlRocky8, user: "cloud-user"},
		{name: "rocky-9", source: SourceHikube, kind: KindCloud, minStorage: 11 * gi, url: urlRocky9, user: "cloud-user"},
		{name: "rocky-10", source: SourceHikube, kind: KindCloud, minStorage: 11 * gi, url: urlRocky10, user: "cloud-user"},
		{name: "debian-11", source: SourceHikube, kind: KindCloud, minStorage: 4 * gi, user: "debian"},
		{name: "debian-12", source: SourceHikube, kind: KindCloud, minStorage: 4 * gi, url: urlDebian12, user: "debian"},
		{name: "debian-13", source: SourceHikube, kind: KindCloud, minStorage: 4 * gi, url: urlDebian13, user: "debian"},
		{name: "ubuntu-2204", source: SourceHikube, kind: KindCloud, minStorage: 4 * gi, url: urlUbuntu2204, user: "ubuntu"},
		{name: "ubuntu-2404", source: SourceHikube, kind: KindCloud, minStorage: 4 * gi, url: urlUbuntu2404, user: "ubuntu"},
		{name: "centos-stream-9", source: SourceHikube, kind: KindCloud, minStorage: 11 * gi, url: urlCentOS9, user: "cloud-user"},
		{name: "centos-stream-10", source: SourceHikube, kind: KindCloud, minStorage: 11 * gi, url: urlCentOS10, user: "cloud-user"},
		{name: "oracle-8", source: SourceHikube, kind: KindCloud, minStorage: 40 * gi},
		{name: "oracle-9", source: SourceHikube, kind: KindCloud, minStorage: 40 * gi},
		{name: "oracle-10", source: SourceHikube, kind: KindCloud, minStorage: 40 * gi},
		{name: "opensuse-156", source: SourceHikube, kind: KindCloud, minStorage: 1 * gi, url: urlLeap156},
		{name: "opensuse-160", source: SourceHikube, kind: KindCloud, minStorage: 2 * gi, url: urlLeap160},
		{name: "cloudlinux-8", source: SourceHikube, kind: KindCloud, minStorage: 8 * gi},
		{name: "cloudlinux-9", source: SourceHikube, kind: KindCloud, minStorage: 9 * gi},
		{name: "proxmox-8", source: SourceHikube, kind: KindISO, minStorage: 2 * gi},
		{name: "proxmox-9", source: SourceHikube, kind: KindISO, minStorage: 2 * gi},
		{name: "talos-112", source: SourceHikube, kind: KindCloud, minStorage: 8 * gi},
		// Cozystack default collection names Hikube does not use.
		{name: "ubuntu-20.04", source: SourceCozystack, kind: KindCloud, minStorage: 4 * gi, url: urlUbuntu2004, user: "ubuntu"},
		{name: "ubuntu-22.04", source: SourceCozystack, kind: KindCloud, minStorage: 4 * gi, url: urlUbuntu2204, user: "ubuntu"},
		{name: "ubuntu-24.04", source: SourceCozystack, kind: KindCloud, minStorage: 4 * gi, url: urlUbuntu2404, user: "ubuntu"},
		{name: "opensuse-leap-15.6", source: SourceCozystack, kind: KindCloud, minStorage: 1 * gi, url: urlLeap156},
		{name: "opensuse-leap-16.0", source: SourceCozystack, kind: KindCloud, minStorage: 2 * gi, url: urlLeap160},
		{name: "alpine-3.21", source: SourceCozystack, kind: KindCloud, minStorage: 1 * gi, url: urlAlpine321, user: "alpine"},
		// Legacy unversioned names.
		{name: "ubuntu", source: SourceCozystackLegacy, kind: KindCloud, minStorage: 4 * gi, url: urlUbuntu2404, user: "ubuntu"},
		{name: "cirros", source: SourceCozystackLegacy, kind: KindCloud, minStorage: 1 * gi, url: urlCirros, user: "cirros"},
		{name: "fedora", source: SourceCozystackLegacy, kind: KindCloud, minStorage: 6 * gi, url: urlFedora, user: "fedora"},
		{name: "alpine", source: SourceCozystackLegacy, kind: KindCloud, minStorage: 1 * gi, url: urlAlpineLegacy, user: "alpine"},
		{name: "talos", source: SourceCozystackLegacy, kind: KindCloud, minStorage: 8 * gi, url: urlTalosLegacy},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, ok := LookupGoldenImage(tc.name)
			if !ok {
				t.Fatalf("LookupGoldenImage(%q) not found", tc.name)
			}
			if g.Name != tc.name || g.Source != tc.source || g.Kind != tc.kind || g.MinStorage != tc.minStorage || g.DefaultUser != tc.user {
				t.Errorf("%s = %+v\nwant source %s kind %s minStorage %d user %q", tc.name, g, tc.source, tc.kind, tc.minStorage, tc.user)
			}
			// A URL an upstream publishes is verified; a candidate is not.
			if tc.url != "" && (g.URL != tc.url || !g.Verified) {
				t.Errorf("%s url = %q verified %v, want %q verified", tc.name, g.URL, g.Verified, tc.url)
			}
			if tc.url == "" && g.Verified {
				t.Errorf("%s: candidate URL %q is marked verified", tc.name, g.URL)
			}
			if g.OS == "" || g.Version == "" || g.OSFamily != "linux" {
				t.Errorf("%s: os %q version %q family %q", tc.name, g.OS, g.Version, g.OSFamily)
			}
		})
	}
	if n := len(GoldenImages()); n != len(tests) {
		t.Errorf("len(GoldenImages()) = %d, want the %d names of the reference", n, len(tests))
	}
}

func TestGoldenImageURLs(t *testing.T) {
	for _, g := range GoldenImages() {
		t.Run(g.Name, func(t *testing.T) {
			u, err := url.Parse(g.URL)
			if err != nil {
				t.Fatalf("url %q: %v", g.URL, err)
			}
			if u.Scheme != "https" || u.Host == "" || u.Path == "" || u.RawQuery != "" {
				t.Errorf("url %q is not a plain https download URL", g.URL)
			}
			// An installer must be an ISO file, a cloud image must not be.
			if iso := strings.HasSuffix(u.Path, ".iso"); iso != (g.Kind == KindISO) {
				t.Errorf("kind %s but URL path %q", g.Kind, u.Path)
			}
		})
	}
}

func TestGoldenImageVersionsMatchNames(t *testing.T) {
	// Versioned names carry their release: "ubuntu-2404" and "ubuntu-24.04"
	// both mean 24.04, "talos-112" means 1.12.
	for _, g := range GoldenImages() {
		if g.Source == SourceCozystackLegacy {
			continue
		}
		t.Run(g.Name, func(t *testing.T) {
			suffix := g.Name[strings.LastIndex(g.Name, "-")+1:]
			if suffix != g.Version && suffix != strings.ReplaceAll(g.Version, ".", "") {
				t.Errorf("name suffix %q does not match version %q", suffix, g.Version)
			}
		})
	}
}

func TestGoldenImagesSortedAndUnique(t *testing.T) {
	list := GoldenImages()
	names := make([]string, len(list))
	for i, g := range list {
		names[i] = g.Name
	}
	if !slices.IsSorted(names) {
		t.Errorf("GoldenImages() not sorted by name: %v", names)
	}
	if c := slices.Compact(slices.Clone(names)); len(c) != len(names) {
		t.Errorf("duplicate golden image names in %v", names)
	}
}

func TestLookupGoldenImageUnknown(t *testing.T) {
	for _, name := range []string{"", "Ubuntu-2404", "ubuntu-2604", "windows-2k25", "vm-default-images-ubuntu"} {
		t.Run(name, func(t *testing.T) {
			if g, ok := LookupGoldenImage(name); ok {
				t.Errorf("LookupGoldenImage(%q) = %s, want not found", name, g.Name)
			}
		})
	}
}

func TestGoldenImagesCopy(t *testing.T) {
	GoldenImages()[0].URL = "https://example.invalid/x"
	if GoldenImages()[0].URL == "https://example.invalid/x" {
		t.Errorf("mutating GoldenImages() changed the table")
	}
}

func TestParseGolden(t *testing.T) {
	const base = `name: img-1, os: OS, osFamily: linux, version: "1", kind: cloud, minStorage: 2Gi, url: "https://example.org/a.qcow2", verified: false, source: hikube`
	doc := func(row string) string { return "images:\n- {" + row + "}\n" }
	tests := []struct {
		name    string
		yaml    string
		wantErr string // empty: must parse
	}{
		{name: "minimal row", yaml: doc(base)},
		{name: "unknown key", yaml: doc(base + ", checksum: abc"), wantErr: `unknown field "checksum"`},
		{name: "unknown top-level key", yaml: doc(base) + "extra: true\n", wantErr: `unknown field "extra"`},
		{name: "duplicate yaml key", yaml: doc(base + ", kind: iso"), wantErr: `key "kind" already set`},
		{name: "wrong type", yaml: doc(strings.Replace(base, "verified: false", "verified: [yes]", 1)), wantErr: "cannot unmarshal"},
		{name: "empty table", yaml: "images: []\n", wantErr: "table is empty"},
		{name: "duplicate name", yaml: "images:\n- {" + base + "}\n- {" + base + "}\n", wantErr: "duplicate name"},
		{name: "bad name", yaml: doc(strings.Replace(base, "img-1", "Img_1", 1)), wantErr: "name must be"},
		{name: "missing os", yaml: doc(strings.Replace(base, "os: OS, ", "", 1)), wantErr: "os is required"},
		{name: "unknown family", yaml: doc(strings.Replace(base, "osFamily: linux", "osFamily: beos", 1)), wantErr: `osFamily "beos"`},
		{name: "missing version", yaml: doc(strings.Replace(base, `version: "1", `, "", 1)), wantErr: "version is required"},
		{name: "unknown kind", yaml: doc(strings.Replace(base, "kind: cloud", "kind: ova", 1)), wantErr: `kind "ova"`},
		{name: "unknown source", yaml: doc(strings.Replace(base, "source: hikube", "source: aws", 1)), wantErr: `source "aws"`},
		{name: "missing min storage", yaml: doc(strings.Replace(base, "minStorage: 2Gi, ", "", 1)), wantErr: "quantity is required"},
		{name: "bad min storage", yaml: doc(strings.Replace(base, "2Gi", "big", 1)), wantErr: "parsing quantity"},
		{name: "plain http", yaml: doc(strings.Replace(base, "https://", "http://", 1)), wantErr: "absolute https URL"},
		{name: "relative url", yaml: doc(strings.Replace(base, "https://example.org/a.qcow2", "a.qcow2", 1)), wantErr: "absolute https URL"},
		{name: "credentials in url", yaml: doc(strings.Replace(base, "https://", "https://user:pw@", 1)), wantErr: "without credentials"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseGolden([]byte(tc.yaml))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("parseGolden: %v", err)
				}
				if len(got) != 1 || got[0].MinStorage != 2*gi {
					t.Errorf("parseGolden = %+v", got)
				}
				return
			}
			if err == nil {
				t.Fatalf("parseGolden accepted the table, want error containing %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error = %q, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestEmbeddedGoldenParses(t *testing.T) {
	list, err := parseGolden(goldenYAML)
	if err != nil {
		t.Fatalf("parsing embedded golden.yaml: %v", err)
	}
	if !reflect.DeepEqual(list, GoldenImages()) {
		t.Errorf("re-parsing the embedded table gave a different result")
	}
}
