// Package config is vmd's daemon configuration: an embedded default that
// makes plain `vmd` work, optionally overlaid by a YAML file, VMD_*
// environment variables and command-line flags (in that order).
package config

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/network"
)

//go:embed default.yaml
var defaultYAML []byte

// DefaultYAML returns the embedded default configuration text (what
// `vmd --print-default-config` shows).
func DefaultYAML() []byte { return append([]byte(nil), defaultYAML...) }

// Config is the whole daemon configuration.
type Config struct {
	// StateDir holds state.db and, by default, the storage pools.
	StateDir string `json:"stateDir"`
	// Socket is the unix socket of the HTTP API.
	Socket string `json:"socket"`
	// SocketMode is the octal permission of the socket ("0660").
	SocketMode string `json:"socketMode"`
	// SocketGroup, when set, owns the socket so its members may use vmctl
	// without root.
	SocketGroup string `json:"socketGroup"`
	// LibvirtURI is the libvirt connection URI.
	LibvirtURI string `json:"libvirtURI"`
	// DomainType is kvm (hardware virtualisation) or qemu (TCG emulation,
	// for hosts whose /dev/kvm is missing or cannot boot guests).
	DomainType string `json:"domainType"`
	// Log configures the slog logger.
	Log LogConfig `json:"log"`
	// Controller tunes the reconcile loop.
	Controller ControllerConfig `json:"controller"`
	// StorageClasses maps a VMDisk spec.storageClass name to the pool that
	// holds its volumes. A file's entry replaces the embedded entry of the
	// same name as a whole; other embedded entries stay.
	StorageClasses map[string]StorageClass `json:"storageClasses"`
	// Images configures the golden-image cache and import scratch space.
	Images ImagesConfig `json:"images"`
	// Instances configures where per-VM files live and how VMs stop.
	Instances InstancesConfig `json:"instances"`
	// Network configures guest networking: per-namespace tenant networks
	// (ADR 0008) or, for back-compat, the interim single bridge.
	Network NetworkConfig `json:"network"`
	// Testing holds knobs for vmd's own test lab. They are never needed in
	// production and must stay unset there.
	Testing TestingConfig `json:"testing"`
}

// InstancesConfig configures VMInstance realisation.
type InstancesConfig struct {
	// Dir holds one directory per VMInstance (<dir>/<namespace>/<name>/:
	// cloud-init seed, serial log, EFI variables). Relative paths are
	// under StateDir (default "instances").
	Dir string `json:"dir"`
	// ShutdownTimeout is how long a guest may take to power off after the
	// ACPI button (stop, Halted, delete) before it is destroyed.
	ShutdownTimeout Duration `json:"shutdownTimeout"`
}

// NetworkConfig configures guest networking (ADR 0008). By default every
// namespace gets its own bridge and subnet carved from TenantPool, every
// VM a tap, a stable MAC and private IP (DHCP and cloud-init), egress NAT
// to Uplink, and, when asked, an external IP from ExternalPool.
//
// Bridge/Subnet select the older interim mode instead, kept so existing
// lab configurations keep working: every VM gets one NIC on Bridge, which
// must already exist with the first address of Subnet on it, and a static
// address from Subnet through cloud-init; no firewall, no DHCP, no
// external IPs. Setting Bridge turns the tenant networks off.
type NetworkConfig struct {
	// Uplink is the interface towards the outside world: guests' egress is
	// NATed to it and external IPs are added to it as /32. Empty means no
	// uplink: tenants still get their private networks (guest to guest
	// within a namespace, DHCP and DNS to the gateway) but no egress, and
	// external exposure is refused with the ExternalUnavailable condition.
	// UplinkAuto (the default) picks the interface of the IPv4 default
	// route when vmd starts, and no uplink when there is none: on a
	// one-NIC host guests get egress without any configuration.
	Uplink string `json:"uplink"`
	// TenantPool is the private IPv4 range tenant subnets are carved from.
	TenantPool string `json:"tenantPool"`
	// TenantSubnetBits is the prefix length of each namespace's subnet
	// (24 gives 253 VMs per namespace).
	TenantSubnetBits int `json:"tenantSubnetBits"`
	// ExternalPool is where external IPs come from: a CIDR
	// ("192.0.2.16/28", network and broadcast excluded), a range
	// ("192.0.2.10-192.0.2.20") or one address. Empty disables external
	// exposure (ExternalUnavailable).
	ExternalPool string `json:"externalPool"`
	// DNS lists the resolvers given to guests (DHCP and cloud-init).
	// Empty gives them their tenant gateway, where vmd runs a DNS
	// forwarder relaying to DNSUpstreams.
	DNS []string `json:"dns"`
	// DNSUpstreams are the resolvers vmd's gateway forwarder relays guest
	// queries to, as "IP" or "IP:port" ("[IPv6]:port"). Empty reads the
	// nameserver lines of /etc/resolv.conf at start; loopback resolvers
	// such as systemd-resolved's 127.0.0.53 work, because vmd, not the
	// guest, talks to them.
	DNSUpstreams []string `json:"dnsUpstreams"`

	// Bridge (deprecated) selects the interim single-bridge mode.
	Bridge string `json:"bridge"`
	// Subnet (deprecated) is the interim bridge's IPv4 subnet.
	Subnet string `json:"subnet"`
}

// UplinkAuto is the network.uplink value that means "the interface of the
// IPv4 default route", resolved at start (an interface cannot be called
// "auto": the name is reserved here on purpose).
const UplinkAuto = "auto"

// TenantNetworks reports whether guests get vmd's tenant networks rather
// than the interim bridge.
func (n NetworkConfig) TenantNetworks() bool { return n.Bridge == "" }

// ParsedNetwork is the tenant-network part of NetworkConfig, parsed.
type ParsedNetwork struct {
	Uplink           string
	TenantPool       netip.Prefix
	TenantSubnetBits int
	// ExternalPool is the zero range when external exposure is disabled.
	ExternalPool network.AddrRange
	DNS          []netip.Addr
	// DNSUpstreams is empty when the host's resolv.conf is to be used.
	DNSUpstreams []netip.AddrPort
}

// ParseNetwork parses the tenant-network settings (Validate reports the
// same problems with field paths).
func (n NetworkConfig) ParseNetwork() (ParsedNetwork, error) {
	out := ParsedNetwork{Uplink: n.Uplink, TenantSubnetBits: n.TenantSubnetBits}
	pool, err := netip.ParsePrefix(n.TenantPool)
	if err != nil {
		return out, fmt.Errorf("network.tenantPool: %w", err)
	}
	if !pool.Addr().Is4() || pool != pool.Masked() {
		return out, fmt.Errorf("network.tenantPool %s: must be an IPv4 prefix with no host bits set", n.TenantPool)
	}
	out.TenantPool = pool
	if out.TenantSubnetBits < pool.Bits() || out.TenantSubnetBits > 30 {
		return out, fmt.Errorf("network.tenantSubnetBits %d: must be between the pool's /%d and 30", out.TenantSubnetBits, pool.Bits())
	}
	if n.ExternalPool != "" {
		r, err := network.ParseAddrRange(n.ExternalPool)
		if err != nil {
			return out, fmt.Errorf("network.externalPool: %w", err)
		}
		if pool.Contains(r.First) || pool.Contains(r.Last) || r.Contains(pool.Addr()) {
			return out, fmt.Errorf("network.externalPool %s: overlaps the tenant pool %s", n.ExternalPool, pool)
		}
		out.ExternalPool = r
	}
	for i, d := range n.DNS {
		a, err := netip.ParseAddr(d)
		if err != nil || !a.Is4() {
			return out, fmt.Errorf("network.dns[%d] %q: must be an IPv4 address", i, d)
		}
		out.DNS = append(out.DNS, a)
	}
	for i, u := range n.DNSUpstreams {
		ap, err := parseUpstream(u)
		if err != nil {
			return out, fmt.Errorf("network.dnsUpstreams[%d] %q: %w", i, u, err)
		}
		out.DNSUpstreams = append(out.DNSUpstreams, ap)
	}
	return out, nil
}

// parseUpstream reads "IP" (port 53) or "IP:port" / "[IPv6]:port".
func parseUpstream(s string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return netip.AddrPort{}, errors.New("must not carry an IPv6 zone")
		}
		return netip.AddrPortFrom(a, 53), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, errors.New(`must be "IP" or "IP:port"`)
	}
	if ap.Port() == 0 || ap.Addr().Zone() != "" {
		return netip.AddrPort{}, errors.New("must have a non-zero port and no IPv6 zone")
	}
	return ap, nil
}

// TestingConfig is for vmd's test lab only.
type TestingConfig struct {
	// KernelBoot, when set, boots every guest from this kernel and initrd
	// (libvirt direct kernel boot) instead of its first disk, so the lab's
	// tiny kernel+initramfs guest can stand in for a cloud image. TEST
	// ONLY: it overrides what the VMInstance asks for.
	KernelBoot *KernelBoot `json:"kernelBoot,omitempty"`
	// GuestReadyMarker, when set, is one more serial-console line fragment
	// that makes GuestReady true (the tiny guest prints no cloud-init
	// line). TEST ONLY.
	GuestReadyMarker string `json:"guestReadyMarker,omitempty"`
}

// KernelBoot is a direct kernel boot.
type KernelBoot struct {
	Kernel  string `json:"kernel"`
	Initrd  string `json:"initrd"`
	Cmdline string `json:"cmdline"`
}

// InstancesDir is the absolute per-VM directory root.
func (c *Config) InstancesDir() string { return c.underState(orDefault(c.Instances.Dir, "instances")) }

// NetworkSubnet parses Network.Subnet (invalid when Bridge is unset).
func (c *Config) NetworkSubnet() (netip.Prefix, error) {
	p, err := netip.ParsePrefix(c.Network.Subnet)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("network.subnet: %w", err)
	}
	return p.Masked(), nil
}

// StorageClass is one directory pool.
type StorageClass struct {
	// Path is the pool directory. Relative or empty paths are resolved
	// under StateDir (empty means "pools/<class name>"), so --state-dir
	// moves the pools with the database.
	Path string `json:"path"`
	// Replicated says whether the backend behind Path really keeps more
	// than one copy (a replicated filesystem mounted there). vmd cannot
	// check it; it reports it on every disk's Replicated condition.
	Replicated bool `json:"replicated"`
	// Note is shown to users on the Replicated condition; it should say
	// plainly what the class does.
	Note string `json:"note"`
}

// ImagesConfig configures where golden images and imports live and where
// golden images are downloaded from.
type ImagesConfig struct {
	// CacheDir holds the immutable golden base images (default
	// <stateDir>/images; relative paths are under StateDir). It should be
	// on the same filesystem as the pools only for speed; overlays refer to
	// bases by absolute path.
	CacheDir string `json:"cacheDir"`
	// ScratchDir holds partial downloads and uploads (default
	// <stateDir>/scratch). It MUST be on the filesystem of CacheDir and the
	// pools for imports to be renamed instead of copied.
	ScratchDir string `json:"scratchDir"`
	// Mirror, when set, is a base URL from which golden image NAME is
	// fetched as Mirror/NAME.qcow2 instead of the catalogue URL: offline
	// hosts point it at their own mirror. Overrides still win.
	Mirror string `json:"mirror"`
	// Overrides replace the catalogue URL (and set a checksum) per golden
	// image name.
	Overrides map[string]ImageOverride `json:"overrides"`
	// Preload lists golden images pulled in the background at start-up.
	Preload []string `json:"preload"`
}

// ImageOverride is where one golden image comes from on this host.
type ImageOverride struct {
	// URL replaces the catalogue (and mirror) URL.
	URL string `json:"url"`
	// SHA256, when set, is checked against the downloaded bytes.
	SHA256 string `json:"sha256"`
}

// PoolPath returns the absolute directory of storage class name; relative
// and empty paths are resolved under StateDir.
func (c *Config) PoolPath(name string) string {
	p := c.StorageClasses[name].Path
	if p == "" {
		p = filepath.Join("pools", name)
	}
	return c.underState(p)
}

// ImageCacheDir is the absolute golden-image cache directory.
func (c *Config) ImageCacheDir() string { return c.underState(orDefault(c.Images.CacheDir, "images")) }

// ScratchDir is the absolute import scratch directory.
func (c *Config) ScratchDir() string { return c.underState(orDefault(c.Images.ScratchDir, "scratch")) }

func (c *Config) underState(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(c.StateDir, p)
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// LogConfig configures logging.
type LogConfig struct {
	// Level is debug, info, warn or error.
	Level string `json:"level"`
	// Format is text or json.
	Format string `json:"format"`
}

// ControllerConfig tunes the reconcile loop.
type ControllerConfig struct {
	// Workers reconcile this many objects in parallel.
	Workers int `json:"workers"`
	// ResyncPeriod re-examines every object this often (catches drift).
	ResyncPeriod Duration `json:"resyncPeriod"`
}

// Duration is a time.Duration written as "10m", "30s".
type Duration struct{ time.Duration }

// UnmarshalJSON parses a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes the Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// Default returns the embedded default configuration.
func Default() *Config {
	c := &Config{}
	if err := yaml.UnmarshalStrict(defaultYAML, c); err != nil {
		panic(fmt.Sprintf("embedded default config is broken: %v", err))
	}
	return c
}

// LoadFile overlays the YAML file at path onto c. Unknown keys are errors,
// so a typo never silently falls back to a default.
func (c *Config) LoadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	if err := yaml.UnmarshalStrict(b, c); err != nil {
		return fmt.Errorf("parsing config %s: %w", path, err)
	}
	return nil
}

// EnvVars maps each environment variable to the field it sets.
var EnvVars = map[string]func(c *Config, v string) error{
	"VMD_STATE_DIR":    func(c *Config, v string) error { c.StateDir = v; return nil },
	"VMD_SOCKET":       func(c *Config, v string) error { c.Socket = v; return nil },
	"VMD_LIBVIRT_URI":  func(c *Config, v string) error { c.LibvirtURI = v; return nil },
	"VMD_DOMAIN_TYPE":  func(c *Config, v string) error { c.DomainType = v; return nil },
	"VMD_LOG_LEVEL":    func(c *Config, v string) error { c.Log.Level = v; return nil },
	"VMD_LOG_FORMAT":   func(c *Config, v string) error { c.Log.Format = v; return nil },
	"VMD_SOCKET_GROUP": func(c *Config, v string) error { c.SocketGroup = v; return nil },
	"VMD_IMAGE_MIRROR": func(c *Config, v string) error { c.Images.Mirror = v; return nil },
	"VMD_WORKERS": func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("VMD_WORKERS: %w", err)
		}
		c.Controller.Workers = n
		return nil
	},
}

// LoadEnv applies VMD_* variables found by lookup (os.LookupEnv).
func (c *Config) LoadEnv(lookup func(string) (string, bool)) error {
	for name, set := range EnvVars {
		if v, ok := lookup(name); ok && v != "" {
			if err := set(c, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// Mode parses SocketMode.
func (c *Config) Mode() (os.FileMode, error) {
	m, err := strconv.ParseUint(c.SocketMode, 8, 32)
	if err != nil {
		return 0, fmt.Errorf("socketMode %q is not an octal mode", c.SocketMode)
	}
	return os.FileMode(m), nil
}

// StatePath is the bbolt database file.
func (c *Config) StatePath() string { return filepath.Join(c.StateDir, "state.db") }

// Validate returns every problem with the configuration at once.
func (c *Config) Validate() error {
	var errs field.ErrorList
	if !filepath.IsAbs(c.StateDir) {
		errs = append(errs, field.Invalid(field.NewPath("stateDir"), c.StateDir, "must be an absolute path"))
	}
	if !filepath.IsAbs(c.Socket) {
		errs = append(errs, field.Invalid(field.NewPath("socket"), c.Socket, "must be an absolute path"))
	}
	if m, err := c.Mode(); err != nil || m&^0o777 != 0 {
		errs = append(errs, field.Invalid(field.NewPath("socketMode"), c.SocketMode, "must be an octal permission such as 0660"))
	}
	if c.LibvirtURI == "" {
		errs = append(errs, field.Required(field.NewPath("libvirtURI"), ""))
	}
	if c.DomainType != "kvm" && c.DomainType != "qemu" {
		errs = append(errs, field.NotSupported(field.NewPath("domainType"), c.DomainType, []string{"kvm", "qemu"}))
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, field.NotSupported(field.NewPath("log", "level"), c.Log.Level, []string{"debug", "info", "warn", "error"}))
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		errs = append(errs, field.NotSupported(field.NewPath("log", "format"), c.Log.Format, []string{"text", "json"}))
	}
	if c.Controller.Workers < 1 || c.Controller.Workers > 64 {
		errs = append(errs, field.Invalid(field.NewPath("controller", "workers"), c.Controller.Workers, "must be between 1 and 64"))
	}
	if c.Controller.ResyncPeriod.Duration < time.Second {
		errs = append(errs, field.Invalid(field.NewPath("controller", "resyncPeriod"), c.Controller.ResyncPeriod.String(), "must be at least 1s"))
	}
	errs = append(errs, c.validateStorage()...)
	errs = append(errs, c.validateInstances()...)
	return errdefs.NewInvalid("config", "vmd", errs)
}

// className is what a storage class name may look like: it is written in
// VMDisk specs and used as a directory name.
var className = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// validateStorage checks storage classes and the image section.
func (c *Config) validateStorage() field.ErrorList {
	var errs field.ErrorList
	classes := field.NewPath("storageClasses")
	if len(c.StorageClasses) == 0 {
		errs = append(errs, field.Required(classes, "at least one storage class is needed"))
	}
	pools := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(c.StorageClasses)) {
		p := classes.Key(name)
		if !className.MatchString(name) {
			errs = append(errs, field.Invalid(p, name, "must be a DNS-1123 label"))
		}
		dir := c.PoolPath(name)
		if other, ok := pools[dir]; ok {
			errs = append(errs, field.Invalid(p.Child("path"), dir, "is also the pool of storage class "+other))
		}
		pools[dir] = name
	}
	img := field.NewPath("images")
	if m := c.Images.Mirror; m != "" {
		if u, err := url.Parse(m); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, field.Invalid(img.Child("mirror"), m, "must be an absolute http or https URL"))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Images.Overrides)) {
		o := c.Images.Overrides[name]
		p := img.Child("overrides").Key(name)
		if u, err := url.Parse(o.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, field.Invalid(p.Child("url"), o.URL, "must be an absolute http or https URL"))
		}
		if o.SHA256 != "" && !sha256Hex.MatchString(o.SHA256) {
			errs = append(errs, field.Invalid(p.Child("sha256"), o.SHA256, "must be 64 lowercase hex digits"))
		}
	}
	for i, name := range c.Images.Preload {
		if name == "" {
			errs = append(errs, field.Required(img.Child("preload").Index(i), ""))
		}
	}
	return errs
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// validateInstances checks the instances, network and testing sections.
func (c *Config) validateInstances() field.ErrorList {
	var errs field.ErrorList
	if c.Instances.ShutdownTimeout.Duration < time.Second {
		errs = append(errs, field.Invalid(field.NewPath("instances", "shutdownTimeout"), c.Instances.ShutdownTimeout.String(), "must be at least 1s"))
	}
	if c.Network.Bridge != "" {
		p := field.NewPath("network", "subnet")
		if sub, err := c.NetworkSubnet(); err != nil {
			errs = append(errs, field.Invalid(p, c.Network.Subnet, "must be an IPv4 CIDR such as 10.77.0.0/24"))
		} else if !sub.Addr().Is4() || sub.Bits() > 30 {
			errs = append(errs, field.Invalid(p, c.Network.Subnet, "must be IPv4 and at most /30"))
		}
	} else if c.Network.Subnet != "" {
		errs = append(errs, field.Required(field.NewPath("network", "bridge"), "a subnet needs its bridge"))
	} else if _, err := c.Network.ParseNetwork(); err != nil {
		errs = append(errs, field.Invalid(field.NewPath("network"), "", err.Error()))
	}
	if u := c.Network.Uplink; len(u) > 15 || strings.ContainsAny(u, "/ \t\n") {
		errs = append(errs, field.Invalid(field.NewPath("network", "uplink"), u, "must be an interface name of at most 15 bytes"))
	}
	if kb := c.Testing.KernelBoot; kb != nil {
		p := field.NewPath("testing", "kernelBoot")
		if !filepath.IsAbs(kb.Kernel) {
			errs = append(errs, field.Invalid(p.Child("kernel"), kb.Kernel, "must be an absolute path"))
		}
		if kb.Initrd != "" && !filepath.IsAbs(kb.Initrd) {
			errs = append(errs, field.Invalid(p.Child("initrd"), kb.Initrd, "must be an absolute path"))
		}
	}
	return errs
}
