package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vmdhq/vmd/internal/client"
	buildinfo "github.com/vmdhq/vmd/internal/version"
)

// version overrides the build version when set with
// -ldflags "-X main.version=v1.2.3"; otherwise the version stamped into
// internal/version by the Makefile is used.
var version string

// clientVersion is vmctl's own version.
func clientVersion() string {
	if version != "" {
		return version
	}
	return buildinfo.Version
}

// versionInfo is the -o yaml|json form of `vmctl version`.
type versionInfo struct {
	ClientVersion buildinfo.Info        `json:"clientVersion"`
	ServerVersion *client.ServerVersion `json:"serverVersion,omitempty"`
}

func newVersionCmd(root *rootOptions) *cobra.Command {
	var clientOnly bool
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the client and server versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runVersion(cmd.Context(), root, clientOnly, output)
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print only the client version; do not contact vmd")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: yaml or json")
	return cmd
}

func runVersion(ctx context.Context, o *rootOptions, clientOnly bool, output string) error {
	if output != "" && output != outputYAML && output != outputJSON {
		return fmt.Errorf("--output must be 'yaml' or 'json'")
	}
	info := versionInfo{ClientVersion: buildinfo.Get()}
	info.ClientVersion.Version = clientVersion()
	var serverErr error
	if !clientOnly {
		c, err := o.client()
		if err != nil {
			return err
		}
		sv, err := c.Version(ctx)
		if err != nil {
			serverErr = err
		} else {
			info.ServerVersion = sv
		}
	}
	if output != "" {
		if err := encode(o.streams.Out, output, info); err != nil {
			return err
		}
		return serverErr
	}
	fmt.Fprintf(o.streams.Out, "Client Version: %s\n", info.ClientVersion.Version)
	if sv := info.ServerVersion; sv != nil {
		fmt.Fprintf(o.streams.Out, "Server Version: %s\n", sv.Version)
		if sv.DomainType != "" || sv.LibvirtURI != "" {
			fmt.Fprintf(o.streams.Out, "Hypervisor: %s (%s)\n", orNone(sv.DomainType), orNone(sv.LibvirtURI))
		}
	}
	return serverErr
}
