// Package config is vmd's daemon configuration: an embedded default that
// makes plain `vmd` work, optionally overlaid by a YAML file, VMD_*
// environment variables and command-line flags (in that order).
package config

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	"github.com/vmdhq/vmd/internal/errdefs"
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
	return errdefs.NewInvalid("config", "vmd", errs)
}
