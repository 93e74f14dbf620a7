// Command vmd is the per-host daemon: it serves the VMInstance/VMDisk API on
// a unix socket, keeps desired state in bbolt and reconciles the host
// toward it. This file is the composition root and nothing else: it reads
// configuration, opens state, builds adapters and starts the controller and
// the server.
package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/vmdhq/vmd/internal/config"
	"github.com/vmdhq/vmd/internal/version"
)

func main() {
	if err := newRootCmd(os.Stdout, os.Stderr, os.LookupEnv).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "vmd:", err)
		os.Exit(1)
	}
}

// flags are the command-line overrides; empty means "not given".
type flags struct {
	configFile, stateDir, socket, libvirtURI, domainType, logLevel, logFormat, imageMirror string
	uplink, externalPool, tenantPool                                                       string
	printDefault, showVersion                                                              bool
}

func newRootCmd(stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) *cobra.Command {
	var f flags
	cmd := &cobra.Command{
		Use:   "vmd",
		Short: "vmd realises Hikube/Cozystack VMInstance and VMDisk objects on this host with libvirt",
		Long: `vmd serves the apps.cozystack.io/v1alpha1 VMInstance and VMDisk API on a unix
socket and makes the host match it: volumes, cloud-init seeds, libvirt domains
and nftables exposure. With no flags it runs with its embedded default
configuration (see --print-default-config).`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.showVersion {
				v := version.Get()
				_, err := fmt.Fprintf(stdout, "vmd %s (commit %s, built %s, %s)\n", v.Version, v.GitCommit, v.BuildDate, v.GoVersion)
				return err
			}
			if f.printDefault {
				_, err := stdout.Write(config.DefaultYAML())
				return err
			}
			cfg, err := loadConfig(f, lookupEnv)
			if err != nil {
				return err
			}
			log := newLogger(stderr, cfg.Log)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			ad, closeAdapters, err := realAdapters(ctx, cfg, log)
			if err != nil {
				return err
			}
			defer closeAdapters()
			// The API comes up at once; libvirt is connected in the
			// background (instances report it while it is unavailable).
			drv := startDriver(ctx, cfg, log)
			defer func() {
				if err := drv.Close(); err != nil {
					log.Warn("closing libvirt connection", "err", err)
				}
			}()
			ad.driver = drv
			return run(ctx, cfg, ad, log, nil)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.configFile, "config", "", "YAML configuration file layered over the embedded default (env VMD_CONFIG)")
	fl.StringVar(&f.stateDir, "state-dir", "", "directory for state.db and pools (env VMD_STATE_DIR; default /var/lib/vmd)")
	fl.StringVar(&f.socket, "socket", "", "API unix socket (env VMD_SOCKET; default /run/vmd/vmd.sock)")
	fl.StringVar(&f.libvirtURI, "libvirt-uri", "", "libvirt connection URI (env VMD_LIBVIRT_URI; default qemu:///system)")
	fl.StringVar(&f.domainType, "domain-type", "", "libvirt domain type: kvm or qemu (TCG) (env VMD_DOMAIN_TYPE; default kvm)")
	fl.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (env VMD_LOG_LEVEL)")
	fl.StringVar(&f.logFormat, "log-format", "", "text or json (env VMD_LOG_FORMAT)")
	fl.StringVar(&f.imageMirror, "image-mirror", "", "base URL golden image NAME is fetched from as URL/NAME.qcow2 (env VMD_IMAGE_MIRROR)")
	fl.StringVar(&f.uplink, "uplink", "", "interface for guest egress NAT and external IPs, or auto for the default route's (config network.uplink; default auto)")
	fl.StringVar(&f.externalPool, "external-pool", "", "external IPs as CIDR or FIRST-LAST (config network.externalPool; default none: external exposure disabled)")
	fl.StringVar(&f.tenantPool, "tenant-pool", "", "private IPv4 CIDR tenant subnets are carved from (config network.tenantPool; default 10.240.0.0/16)")
	fl.BoolVar(&f.printDefault, "print-default-config", false, "print the embedded default configuration and exit")
	fl.BoolVar(&f.showVersion, "version", false, "print the version and exit")
	return cmd
}

// loadConfig layers embedded default ← file ← environment ← flags and
// validates the result.
func loadConfig(f flags, lookupEnv func(string) (string, bool)) (*config.Config, error) {
	cfg := config.Default()
	file := f.configFile
	if file == "" {
		file, _ = lookupEnv("VMD_CONFIG")
	}
	if file != "" {
		if err := cfg.LoadFile(file); err != nil {
			return nil, err
		}
	}
	if err := cfg.LoadEnv(lookupEnv); err != nil {
		return nil, err
	}
	for _, o := range []struct {
		v   string
		dst *string
	}{
		{f.stateDir, &cfg.StateDir}, {f.socket, &cfg.Socket}, {f.libvirtURI, &cfg.LibvirtURI},
		{f.domainType, &cfg.DomainType}, {f.logLevel, &cfg.Log.Level}, {f.logFormat, &cfg.Log.Format},
		{f.imageMirror, &cfg.Images.Mirror}, {f.uplink, &cfg.Network.Uplink},
		{f.externalPool, &cfg.Network.ExternalPool}, {f.tenantPool, &cfg.Network.TenantPool},
	} {
		if o.v != "" {
			*o.dst = o.v
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func newLogger(w io.Writer, c config.LogConfig) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.ToUpper(c.Level))); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
